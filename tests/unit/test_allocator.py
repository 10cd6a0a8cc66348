"""The allocator's settings at start (:mod:`adaptd.allocator`), in processes of their own."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

TUNE = "from adaptd import allocator; print(','.join(allocator.tune()))"


def _tuned(env: dict[str, str]) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", TUNE], env={**clean, **env},
                         capture_output=True, text=True, check=True).stdout.strip()
    return out.split(",") if out else []


def test_every_setting_is_applied_on_glibc() -> None:
    assert _tuned({}) == ["MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"]


def test_a_setting_in_the_environment_wins() -> None:
    assert _tuned({"MALLOC_TRIM_THRESHOLD_": "4096"}) == ["MALLOC_MMAP_THRESHOLD_"]
