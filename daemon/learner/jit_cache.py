"""Numba's cached machine code, dropped when any of the package's sources changed.

Numba keys a cached function on the stamp (modification time and size) of the one file that
defines it, and nothing else: a compiled function that calls compiled functions of another
module keeps their old code, inlined into its own, after that other module changed (Numba's
documentation, "Notes on caching": "changes in other files are not detected"). With a
checkout updated in place (``git pull``, a branch switched, an edit) the daemon would then
predict with a mix of old and new code and say nothing. So the package remembers a digest of
its sources' stamps next to the cache, and when it differs it deletes its own cached code
before anything is compiled or loaded: the next batches compile afresh (a few seconds, once).
A fresh install has no cache to drop; installing over an old one rewrites every file, which
changes the digest too.

Best effort: a package directory that cannot be written is left as it is (Numba then keeps its
cache elsewhere, or none); ``NUMBA_CACHE_DIR`` (the user's own cache place) is left alone.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path

#: Where the digest is kept, in the package's own ``__pycache__``.
DIGEST_FILE = "adaptd-sources.digest"
#: Numba's index and data files.
CACHE_SUFFIXES = (".nbi", ".nbc")


def package_roots() -> list[Path]:
    """The directories of ``adaptd`` and ``adaptd.connectors`` (installed apart: see
    ``pyproject.toml``)."""
    roots: list[Path] = []
    for name in ("adaptd", "adaptd.connectors"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            roots.extend(Path(p) for p in spec.submodule_search_locations)
    return roots


def sources_digest(roots: Iterable[Path]) -> str:
    """A digest of every ``.py`` file's path, size and modification time under ``roots``."""
    h = hashlib.blake2b(digest_size=16)
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            st = path.stat()
            h.update(f"{path.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def drop_stale_cache(roots: list[Path] | None = None) -> int:
    """Delete the package's Numba cache files if its sources changed since they were made;
    returns how many were deleted."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return 0
    roots = package_roots() if roots is None else roots
    if not roots:
        return 0
    digest = sources_digest(roots)
    marker = roots[0] / "__pycache__" / DIGEST_FILE
    try:
        if marker.read_text() == digest:
            return 0
    except OSError:
        pass
    dropped = 0
    try:
        for root in roots:
            for cached in root.rglob("__pycache__/*"):
                if cached.suffix in CACHE_SUFFIXES:
                    cached.unlink(missing_ok=True)
                    dropped += 1
        marker.parent.mkdir(exist_ok=True)
        tmp = marker.with_name(f"{DIGEST_FILE}.{os.getpid()}")
        tmp.write_text(digest)
        os.replace(tmp, marker)  # another process starting at once writes the same digest
    except OSError:  # a read-only install: Numba finds its own place, or does not cache
        pass
    return dropped
