"""Numba's cache of the package, dropped when a source changes (adaptd.learner.jit_cache)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from adaptd.learner.jit_cache import DIGEST_FILE, drop_stale_cache

CALLEE = "from numba import njit\n\n@njit(cache=True)\ndef f():\n    return {value}\n"
CALLER = "from numba import njit\nfrom callee import f\n\n@njit(cache=True)\ndef g():\n    return f()\n"
RUN = ("import sys; sys.path.insert(0, {root!r}); from pathlib import Path; "
       "from adaptd.learner.jit_cache import drop_stale_cache; "
       "{drop}from caller import g; print(g())")


def _g(root: Path, drop: bool) -> str:
    code = RUN.format(root=str(root),
                      drop=f"drop_stale_cache([Path({str(root)!r})]); " if drop else "")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env=env).stdout.strip()


def _edit_callee(root: Path, value: int) -> None:
    path = root / "callee.py"
    before = path.stat().st_mtime_ns
    path.write_text(CALLEE.format(value=value))
    os.utime(path, ns=(before + 10**9, before + 10**9))  # a later stamp, whatever the clock


def test_numba_keeps_a_callers_stale_code_and_the_digest_drops_it(tmp_path: Path) -> None:
    """The hazard itself (Numba checks only the caller's own file), then the fix."""
    stale, fixed = tmp_path / "stale", tmp_path / "fixed"
    for root in (stale, fixed):
        root.mkdir()
        (root / "callee.py").write_text(CALLEE.format(value=1))
        (root / "caller.py").write_text(CALLER)
    assert _g(stale, drop=False) == "1" and _g(fixed, drop=True) == "1"
    _edit_callee(stale, 2)
    _edit_callee(fixed, 2)
    assert _g(stale, drop=False) == "1"  # the cached caller still has the old callee inlined
    assert _g(fixed, drop=True) == "2"


def test_cache_files_go_only_when_the_sources_change(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("x = 1\n")
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    files = [cache / "m.f-1.py312.nbi", cache / "m.f-1.py312.1.nbc", cache / "m.cpython-312.pyc"]
    for f in files:
        f.write_bytes(b"cached")
    assert drop_stale_cache([tmp_path]) == 2  # no digest yet: what is cached is unknown
    assert [f.exists() for f in files] == [False, False, True]
    assert (cache / DIGEST_FILE).exists()
    files[0].write_bytes(b"cached")
    assert drop_stale_cache([tmp_path]) == 0  # nothing changed: the cache stays
    assert files[0].exists()
    source = tmp_path / "m.py"
    st = source.stat().st_mtime_ns
    os.utime(source, ns=(st + 10**9, st + 10**9))
    assert drop_stale_cache([tmp_path]) == 1
    assert not files[0].exists()


LOADER = ("import sys; sys.path.insert(0, {root!r}); from adaptd.learner.jit import load_cached; "
          "import kernel; loaded = load_cached(); print(loaded, len(kernel.f.signatures), "
          "sum(kernel.f.stats.cache_hits.values()), sum(kernel.f.stats.cache_misses.values()), "
          "kernel.f(2.0))")


def test_the_cached_code_of_the_signatures_called_before_loads_ahead_of_the_first_call(
        tmp_path: Path) -> None:
    """``load_cached`` (run on a thread while the source opens) loads what an earlier process
    compiled, from the cache, before the function is called; nothing is cached at first."""
    (tmp_path / "kernel.py").write_text(
        "from adaptd.learner.jit import njit\n\n@njit()\ndef f(x):\n    return x + 1\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}

    def run() -> list[str]:
        return subprocess.run([sys.executable, "-c", LOADER.format(root=str(tmp_path))],
                              capture_output=True, text=True, check=True, env=env
                              ).stdout.split()

    assert run() == ["0", "0", "0", "0", "3.0"]  # nothing cached: the call compiles (and caches)
    assert run() == ["1", "1", "1", "0", "3.0"]  # loaded from the cache before the call
