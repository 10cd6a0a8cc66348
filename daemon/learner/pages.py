"""Fresh arrays whose memory becomes resident only where written.

A key's rows (the arena's, the neighbours' windows, the trees' leaves) are mostly zeros while
the key has few records. Arrays made by :func:`numpy.zeros` take their pages from the OS on
first write, so rows never written cost no memory, provided the pages are small ones
(:func:`small_pages`) and growing an array copies only what is non-zero
(:func:`copy_rows`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

# NumPy asks the kernel for huge pages for large arrays (NUMPY_MADVISE_HUGEPAGE); this switch
# (NumPy >= 1.20, private) turns that off and on: see small_pages.
_set_madvise_hugepage: Callable[[bool], bool] | None = getattr(importlib.import_module(
    "numpy._core.multiarray" if np.__version__ >= "2" else "numpy.core.multiarray"),
    "_set_madvise_hugepage", None)


@contextmanager
def small_pages() -> Iterator[None]:
    """Arrays allocated meanwhile get ordinary 4 kB pages. With huge pages (2 MB, NumPy's
    default where the kernel lets a process ask), one record written to a key's hindsight
    buffer makes the 2 MB around it resident: measured, 100k keys' arena was all resident
    (4.5 GiB) where its used pages are a third of that."""
    if _set_madvise_hugepage is None:
        yield
        return
    before = _set_madvise_hugepage(False)
    try:
        yield
    finally:
        _set_madvise_hugepage(before)


#: Rows at least this wide (bytes) are copied element by element where non-zero on growth.
PAGE = 4096


def copy_nonzero(new: np.ndarray, prev: np.ndarray, block: int = 1024) -> None:
    """``new[:len(prev)] = prev`` for a zero-filled ``new``, writing only the non-zero entries:
    a row wider than a page (a long window of many features) is mostly zeros while a key has
    few records, and its pages stay untouched, so not resident."""
    for lo in range(0, len(prev), block):
        part = prev[lo:lo + block]
        mask = part != 0
        if mask.any():
            np.copyto(new[lo:lo + len(part)], part, where=mask)


def copy_rows(new: np.ndarray, prev: np.ndarray) -> None:
    """``new[:len(prev)] = prev`` for a zero-filled ``new``: where a row spans a page
    (:data:`PAGE`), with :func:`copy_nonzero`, so the pages of rows still mostly zeros stay
    untouched; narrower rows in one step."""
    if len(prev) and prev[:1].nbytes >= PAGE:
        copy_nonzero(new, prev)
    else:
        new[:len(prev)] = prev
