"""The arena: every key's task state as rows of a few arrays, one :class:`Arena` tuple of them.

Each key owns a *slot*, one row of every array (plus the next row for its shadow baseline,
which uses only ``BASE_FIELDS``). The tuple is what compiled code takes
(:mod:`adaptd.learner.kernel`); the wave path indexes the same arrays. Shapes per row:
``theta, A, gsq, u_prev`` ``(P,)``; the support window ``WX`` ``(k, d)`` and ``WY, WM, WL``
``(k,)`` (features, labels, mask, prequential losses; ``wpos`` is the next position, a
ring); the hindsight buffer ``HX`` ``(h, d)``, ``HY, HL`` ``(h,)`` (0 wide when off; laid
out ring row by ring row for ``HY, HL``: :func:`_ring_major`), ``hpos``, ``hcount``; and
counters: ``seg`` (segment index), ``seg_len``, ``seg_loss``, ``recov`` (records since a
reset while recovering, −1 otherwise), ``ref_loss`` (the last closed segment's mean loss),
``task_of`` (oracle: the current task), ``last_seen`` (clock seconds).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from adaptd.learner.pages import copy_rows, small_pages


class Arena(NamedTuple):
    theta: np.ndarray
    A: np.ndarray
    WX: np.ndarray
    WY: np.ndarray
    WM: np.ndarray
    WL: np.ndarray
    wpos: np.ndarray
    seg: np.ndarray
    seg_len: np.ndarray
    seg_loss: np.ndarray
    gsq: np.ndarray
    u_prev: np.ndarray
    ref_loss: np.ndarray
    recov: np.ndarray
    task_of: np.ndarray
    last_seen: np.ndarray
    HX: np.ndarray
    HY: np.ndarray
    HL: np.ndarray
    hpos: np.ndarray
    hcount: np.ndarray


# Per-row layout: name → (trailing shape key, dtype, fill). Shape keys: "" scalar, "P"
# parameters, "k" window, "kd" window features, "h"/"hd" the hindsight buffer.
LAYOUT: dict[str, tuple[str, Any, float]] = {
    "theta": ("P", np.float64, 0.0), "A": ("P", np.float64, 1.0),
    "WX": ("kd", np.float64, 0.0), "WY": ("k", np.float64, 0.0),
    "WM": ("k", np.float64, 0.0), "WL": ("k", np.float64, 0.0), "wpos": ("", np.int64, 0),
    "seg": ("", np.int64, 0), "seg_len": ("", np.int64, 0), "seg_loss": ("", np.float64, 0.0),
    "gsq": ("P", np.float64, 0.0), "u_prev": ("P", np.float64, 0.0),
    "ref_loss": ("", np.float64, 0.0), "recov": ("", np.int64, -1),
    "task_of": ("", np.int64, -1), "last_seen": ("", np.float64, 0.0),
    "HX": ("hd", np.float64, 0.0), "HY": ("h", np.float64, 0.0), "HL": ("h", np.float64, 0.0),
    "hpos": ("", np.int64, 0), "hcount": ("", np.int64, 0),
}
assert tuple(LAYOUT) == Arena._fields
#: The fields a baseline row uses.
BASE_FIELDS = ("theta", "A", "WX", "WY", "WM", "wpos")


def _shapes(P: int, k: int, d: int, h: int) -> dict[str, tuple[int, ...]]:
    return {"": (), "P": (P,), "k": (k,), "kd": (k, d), "h": (h,), "hd": (h, d)}


def row_bytes(P: int, k: int, d: int, h: int) -> int:
    """The bytes of address space one row of every field takes (most of a row's hindsight
    buffer is never resident: see :func:`_ring_major` and :func:`reset_rows`)."""
    shapes = _shapes(P, k, d, h)
    return sum(int(np.prod(shapes[key], dtype=np.int64)) * np.dtype(dtype).itemsize
               for key, dtype, _ in LAYOUT.values())


def grow_arena(old: Arena | None, rows: int, P: int, k: int, d: int, h: int) -> Arena:
    """An arena of ``rows`` rows holding ``old``'s rows first (new rows at their fill)."""
    shapes = _shapes(P, k, d, h)
    arrays = []
    # The rings' rows any key may have filled: only those are copied (see _copy_rings).
    extent = np.zeros(0, dtype=np.int64) if old is None else \
        ring_extent(old, np.arange(len(old.seg)))
    with small_pages():
        for name, (shape_key, dtype, fill) in LAYOUT.items():
            shape = (rows, *shapes[shape_key])
            if name in RINGS:
                ring = _ring_major(shape, dtype) if name in RING_MAJOR else \
                    np.zeros(shape, dtype=dtype)
                arrays.append(ring if old is None else _copy_rings(ring, getattr(old, name),
                                                                    extent))
            else:
                arrays.append(_field(old, name, shape, dtype, fill))
    return Arena(*arrays)


#: The rings laid out ring row by ring row (:func:`_ring_major`).
RING_MAJOR = ("HY", "HL")


def kernel_arrays(arena: Arena) -> tuple[np.ndarray, ...]:
    """The arena as compiled code takes it (:func:`adaptd.learner.kernel.process`): a plain
    tuple, with the ring-major rings (:data:`RING_MAJOR`) as their C-ordered ``(h, rows)``
    transposes, indexed ``[position, slot]`` there. The ``(rows, h)`` views are F-ordered, but
    NumPy also calls them C-ordered when 0 wide (hindsight off) or one row, and Numba compiles
    the kernel once per layout it is given: the transposes are C-ordered in every case, so one
    compiled kernel serves them all (each compile costs about a minute)."""
    return tuple(array.T if name in RING_MAJOR else array
                 for name, array in zip(Arena._fields, arena, strict=True))


def _ring_major(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Zeros of ``shape`` (rows, h) laid out ring row by ring row: element ``[s, j]`` of every
    key's ring lies next to ``[s + 1, j]``. Keys fill their rings from the front, and with many
    keys most have one or two records: their rings' first rows are then a few pages for all of
    them, where rows of 1.6 kB made every page resident (2 x 308 MiB at 100k live keys, for 8
    bytes a key). A key's whole ring (a segment's hindsight fit, packing a busy key) is read in
    strides instead: a few µs, once a segment or a checkpoint. ``HX`` stays key by key: its
    rows are wider than a page, so a baseline row's (never used) stay untouched, where this
    layout would interleave them with the keys' and make them resident once rings fill."""
    return np.zeros(shape[::-1], dtype=dtype).T


def _copy_rings(new: np.ndarray, prev: np.ndarray, extent: np.ndarray) -> np.ndarray:
    """``new[:len(prev)] = prev`` for a zero-filled ring array ``new``, copying each row's
    first ``extent`` rows only (the rest are zeros, see :func:`ring_extent`): rows filled a
    little (most, with many keys) in one step, up to the most any of them filled; rows that
    may be full (a key past its first segment) in one step; the others one by one. Pages of
    rows never filled stay untouched, so not resident."""
    full = extent >= prev.shape[1]
    few = (extent > 0) & (extent <= _FEW_RING_ROWS) & ~full
    if few.any():
        upto = int(extent[few].max())
        new[np.flatnonzero(few), :upto] = prev[few, :upto]
    if full.any():
        rows = np.flatnonzero(full)
        new[rows] = prev[rows]
    some = ~(few | full) & (extent > 0)
    for s, n in zip(np.flatnonzero(some).tolist(), extent[some].tolist(), strict=True):
        new[s, :n] = prev[s, :n]
    return new


def _field(old: Arena | None, name: str, shape: tuple[int, ...], dtype: Any,
           fill: float) -> np.ndarray:
    """One field of shape ``shape`` at ``fill``, ``old``'s rows of it first."""
    # np.zeros takes pages lazily from the OS; most fields start at zero.
    new = np.zeros(shape, dtype=dtype) if fill == 0 else np.full(shape, fill, dtype=dtype)
    if old is not None:
        prev = getattr(old, name)
        if fill == 0:
            copy_rows(new, prev)
        else:
            new[: len(prev)] = prev
    return new


def row_state(arena: Arena, s: int, names: tuple[str, ...] = Arena._fields) -> dict[str, Any]:
    """Copies of row ``s`` of the fields ``names`` (plain data for checkpoints)."""
    return {name: np.copy(getattr(arena, name)[s]) for name in names}


def set_row_state(arena: Arena, s: int, state: Mapping[str, Any],
                  names: tuple[str, ...] = Arena._fields) -> None:
    """Row ``s`` from :func:`row_state`'s output. Of the hindsight buffer only the rows the
    state fills, and those the slot's last key may have filled, are written (as
    :func:`reset_rows` does): writing whole rows of zeros touched every page of a slot, so a
    restart that read ``max_keys`` keys back from the store held the whole buffer of each in
    memory (3.1 GiB against 1.3 for as many new keys)."""
    rings = [name for name in RINGS if name in names]
    if rings:  # both before the row's seg and hcount change
        was = int(ring_extent(arena, np.array([s]))[0])
        fills = arena.HX.shape[1] if int(state["seg"]) != 0 else int(state["hcount"])
    for name in names:
        if name in rings:
            ring = getattr(arena, name)
            ring[s, :fills] = state[name][:fills]
            if was > fills:
                ring[s, fills:was] = 0
        else:
            getattr(arena, name)[s] = state[name]



#: The hindsight buffer: rows a key appends to (see adaptd.learner.packing for why it matters).
RINGS = ("HX", "HY", "HL")


def ring_extent(arena: Arena, rows: np.ndarray) -> np.ndarray:
    """Per row of ``rows``: how many of its hindsight buffer's rows may be non-zero. A key
    fills its buffer from row 0 (``hcount`` rows) until its first segment closes, and
    restarts at row 0 after, so only then may any row hold an older segment's record."""
    return np.where(arena.seg[rows] == 0, arena.hcount[rows], arena.HX.shape[1])


#: A ring filled this far is cleared with others alike, up to the most any of them filled
#: (zeroing a few rows more than it filled touches at most the page after its last one).
_FEW_RING_ROWS = 16


def reset_rows(arena: Arena, rows: np.ndarray, names: tuple[str, ...] = Arena._fields) -> None:
    """The fields ``names`` of ``rows`` back to their fill, for a fresh key in a slot another
    key left. Of the hindsight buffer only the rows the other key may have filled
    (:func:`ring_extent`) are zeroed, so pages of a slot never used stay untouched."""
    rings = [getattr(arena, name) for name in RINGS if name in names]
    used = ring_extent(arena, rows) if rings else rows[:0]
    # Rows the other key filled a few of (most, with many keys): one step for all of them.
    few = (used > 0) & (used <= _FEW_RING_ROWS)
    if few.any():
        upto = int(used[few].max())
        for ring in rings:
            ring[rows[few], :upto] = 0
    many = used > _FEW_RING_ROWS
    for s, n in zip(rows[many].tolist(), used[many].tolist(), strict=True):
        for ring in rings:
            ring[s, :n] = 0
    for name in names:
        if name not in RINGS:
            getattr(arena, name)[rows] = LAYOUT[name][2]
