"""The README's first example is run as written and prints the closing line the README shows."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def quick_start() -> tuple[list[str], str]:
    """The first ``adaptd run`` command of the Quick start and the ``done:`` line shown after it."""
    section = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    command = next(line for line in section.splitlines() if line.startswith("adaptd run "))
    closing = next(line for line in section.splitlines() if line.startswith("adaptd run: done:"))
    return shlex.split(command)[1:], closing


def without_speed(line: str) -> str:
    return re.sub(r", [\d,]+ records/s$", "", line.strip())


def test_the_first_example_prints_the_line_the_readme_shows_and_adaptd_wins(tmp_path: Path) -> None:
    args, closing = quick_start()
    assert "(adaptd ahead)" in closing, "the first example should show adaptd winning"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTD_")}
    # Off the default port and state dir, which other tests and daemons may be using.
    result = subprocess.run(
        [sys.executable, "-m", "adaptd", *args, "--metrics-port", "off",
         "--state-dir", str(tmp_path / "state")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stderr.strip().splitlines()[-1]
    assert without_speed(printed) == without_speed(closing)
