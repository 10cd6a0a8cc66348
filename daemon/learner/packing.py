"""Many keys' task states packed at once, straight from the arena: the checkpoint's fast path.

:meth:`AdaptiveLearner._task_state` copies a key's row field by field into a dict (about 35
small arrays and floats) and the checkpoint then packs that dict: fine for a few keys, but with
a thousand changed keys per checkpoint those per-array steps were most of a run's time. Here
each field is gathered for all the keys in one NumPy index and cut into per-key byte strings
by :func:`adaptd.state_codec.pack_rows`. What :func:`adaptd.state_codec.unpack_state` returns
for a key is the dict ``_task_state`` builds (detector statistics as 0-d arrays instead of
floats, which ``set_state`` takes alike); ``tests/unit/test_state_codec.py`` holds the two equal.

Only the configurations whose task state is all rows of arrays take this path: Page-Hinkley
or no detector. A key's concept library (``meta_learning.library``, on by default) holds a
varying number of stored states, so keys are packed in groups of equal library shape (at most
``library + 1`` groups), each key with its own ``since``. Any other learner (the auto model's
Hedge, a river detector per key) returns None and is packed key by key.

The hindsight buffer (``HX``, ``HY``, ``HL``: 200 records, 90% of a logistic key's bytes) is
packed as chunks of about :data:`CHUNK_BYTES` (a :class:`adaptd.state_codec.SplitState`), so
a checkpoint rewrites only the chunks a key appended to since the last one.
"""

from __future__ import annotations

import operator
from collections.abc import Collection, Iterable
from itertools import compress, repeat
from typing import Any

import numpy as np

from adaptd.drift import NullBank, PageHinkleyBank, PHState
from adaptd.learner.adaptive import AdaptiveLearner
from adaptd.learner.arena import BASE_FIELDS, RINGS, Arena, ring_extent
from adaptd.learner.jit import COMPILED, njit
from adaptd.state_codec import Rings, pack_rows, pack_state, packed_columns

#: About how many bytes of the ring buffers (arena.RINGS) per chunk: small enough that a key's
#: few appends between two checkpoints touch one or two chunks, large enough that a chunk's
#: row in the store costs little beside its bytes.
CHUNK_BYTES = 2048
#: Keys packed at a time. The gathers and their cuts are a few copies of each key's ~2 kB row:
#: for 100k keys at once, arrays of hundreds of MB, each taken from the OS as fresh pages
#: (mmap) and given back (measured: a third of a distinct-keys run's CPU was the kernel's);
#: in slices this size they come from the heap's reused memory and stay in cache.
CHUNK_KEYS = 4096


def packed_task_states(learner: Any, keys: Collection[str]) -> dict[str, Any] | None:
    """key → packed task state for ``keys`` (those the learner holds, live or just evicted);
    None when ``learner``'s task states are not all arena rows. Never blocks."""
    if not packable(learner):
        return None
    cold, slot_of = learner._cold, learner._slot_of
    # Set operations, not a Python step per key: with many new keys per checkpoint those
    # steps were a tenth of a key's cost.
    out = {k: pack_state(cold[k]) for k in cold.keys() & keys if k not in slot_of} if cold else {}
    # One lookup per key (a set intersection and then a lookup was two, each a cache miss
    # on the key's string with 100k keys).
    found = np.fromiter(map(slot_of.get, keys, repeat(-1)), dtype=np.int64, count=len(keys))
    held = found >= 0
    if not held.any():
        return out
    live = list(compress(keys, held.tolist())) if not held.all() else list(keys)
    out.update(_packed_slots(learner, live, found[held]))
    return out


def packed_live_states(learner: Any, keys: list[str], slots: np.ndarray
                       ) -> dict[str, Any] | None:
    """:func:`packed_task_states` of live ``keys`` whose slots the caller knows (``slots``:
    eviction found the keys by them), without looking them up."""
    return _packed_slots(learner, keys, slots) if packable(learner) else None


def packable(learner: Any) -> bool:
    """Whether ``learner``'s task states are all arena rows (packed by this module)."""
    # No bank yet: the learner has not seen a record (nor set up its arena).
    bank = getattr(learner, "bank", None)
    return type(learner) is AdaptiveLearner and isinstance(bank, (PageHinkleyBank, NullBank))


def _packed_slots(learner: AdaptiveLearner, live: list[str], slots: np.ndarray
                  ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if len(live) > 1:  # gathered in slot order: the arena's rows read front to back
        order = np.argsort(slots, kind="stable")
        slots = slots[order]
        live = list(operator.itemgetter(*order.tolist())(live))
    for lo in range(0, len(live), CHUNK_KEYS):
        out.update(_packed_live(learner, live[lo:lo + CHUNK_KEYS], slots[lo:lo + CHUNK_KEYS]))
    return out


def _packed_live(learner: AdaptiveLearner, live: list[str], slots: np.ndarray) -> dict[str, Any]:
    """key → packed task state for ``live`` keys, in arena rows ``slots`` (ascending)."""
    bank = learner.bank
    out: dict[str, Any] = {}
    arena: Arena = learner.arena
    ringed = arena.HX.shape[1] > 0
    # Each block as (path, the array holding it, the keys' rows there): cut where it lies.
    sources: list[_Source] = [((name,), getattr(arena, name), slots) for name in Arena._fields
                              if not (ringed and name in RINGS)]
    rings = None
    if ringed:
        arrays = [((name,), getattr(arena, name)) for name in RINGS]
        row_bytes = sum(r.itemsize * r[0, 0].size for _, r in arrays)
        rings = Rings(arrays, slots, ring_extent(arena, slots),
                      max(1, CHUNK_BYTES // row_bytes))
    rest: dict[str, Any] = {}
    if isinstance(bank, PageHinkleyBank):
        ph = bank.state
        sources += [(("detector", name), getattr(ph, name), slots) for name in PHState._fields]
        rest["detector"] = {}
    else:
        rest["detector"] = None
    if learner.classes is not None:
        rest["classes"] = len(learner.classes)
    if learner.regret.baseline:
        sources += [(("baseline", name), getattr(arena, name), slots + 1)
                    for name in BASE_FIELDS]
        rest["baseline"] = {}
    if learner.concepts is None:
        out.update(_pack_at(live, sources, rest, rings))
        return out
    # Most keys have stored no concept: they pack as one group, and keys whose ``since`` is
    # equal share one part (pickled once).
    concepts, slot_list = learner.concepts, slots.tolist()
    if concepts.states.keys().isdisjoint(slot_list) and concepts.since.keys().isdisjoint(
            slot_list):  # none has (many new keys): one group, no per-key step
        none = np.empty((1, 0, 0))
        out.update(_pack_at(live, [*sources, (("library", "states"), none,
                                              np.zeros(len(live), dtype=np.int64))],
                            {**rest, "library": {"since": None}}, rings))
        return out
    blocks = _gathered(sources)
    libraries = {i: concepts.get_state(s) for i, s in enumerate(slot_list)
                 if concepts.states.get(s)}
    groups: dict[tuple[int, ...], list[int]] = {(0, 0): []}
    for i in range(len(slot_list)):
        shape = libraries[i]["states"].shape if i in libraries else (0, 0)
        groups.setdefault(shape, []).append(i)
    parts: dict[Any, dict[str, Any]] = {}
    for shape, members in groups.items():
        if not members:
            continue
        rows = np.asarray(members, dtype=np.int64)
        stored = np.stack([libraries[i]["states"] for i in members]) if shape != (0, 0) \
            else np.empty((len(members), 0, 0))
        since = [concepts.since.get(slot_list[i]) for i in members]
        out.update(pack_rows(
            [live[i] for i in members],
            [(path, block[rows]) for path, block in blocks] + [(("library", "states"), stored)],
            [parts.setdefault(t, {**rest, "library": {"since": t}}) for t in since],
            None if rings is None else rings._replace(at=rings.at[rows],
                                                      extent=rings.extent[rows])))
    return out


#: A block of :func:`adaptd.state_codec.pack_rows` where it lies: (path, array, rows), key
#: i's value being ``array[rows[i]]``.
_Source = tuple[tuple[str, ...], np.ndarray, np.ndarray]


def _gathered(sources: list[_Source]) -> list[tuple[tuple[str, ...], np.ndarray]]:
    return [(path, array[rows]) for path, array, rows in sources]


def _pack_at(keys: list[str], sources: list[_Source], rest: dict[str, Any],
             rings: Rings | None) -> dict[str, Any]:
    """:func:`adaptd.state_codec.pack_rows` of blocks given where they lie (the same values,
    byte for byte: ``tests/unit/test_state_codec.py``). Keys whose rings fit in one chunk
    (all of them, with many new keys) are cut straight from the arena by compiled loops
    (:func:`_cut_at`): gathering each block's whole rows first and then cutting them to
    their used width, as ``pack_rows`` does, was two thirds of packing a checkpoint of new
    keys. Others (split keys, a block of neither 1- nor 8-byte items) go through
    ``pack_rows``."""
    if not COMPILED or any(array.itemsize not in (1, 8) for _, array, _ in sources):
        return pack_rows(keys, _gathered(sources), rest, rings)
    if rings is None:
        return _cut_at(keys, [(path, array, rows, None) for path, array, rows in sources],
                       rest, {})
    whole = rings.extent <= rings.rows
    if not whole.all():
        if not whole.any():
            return pack_rows(keys, _gathered(sources), rest, rings)
        return _pack_parts(keys, sources, rest, rings,  # as pack_rows
                           (np.flatnonzero(whole), np.flatnonzero(~whole)))
    # In groups of equal extent, as pack_rows does (its _pack_whole).
    shapes = {path: ring.shape[1:] for path, ring in rings.arrays}
    extents = np.unique(rings.extent)
    if len(extents) == 1:
        return _cut_at(keys, [*((path, array, rows, None) for path, array, rows in sources),
                              *((path, ring, rings.at, int(extents[0]))
                                for path, ring in rings.arrays)], rest, shapes)
    return _pack_parts(keys, sources, rest, rings,
                       [np.flatnonzero(rings.extent == extent) for extent in extents.tolist()])


def _pack_parts(keys: list[str], sources: list[_Source], rest: dict[str, Any], rings: Rings,
                parts: Iterable[np.ndarray]) -> dict[str, Any]:
    """:func:`_pack_at` of each part (an array of indices into ``keys``) on its own."""
    out: dict[str, Any] = {}
    for members in parts:
        out.update(_pack_at([keys[i] for i in members.tolist()],
                            [(path, array, rows[members]) for path, array, rows in sources],
                            rest, rings._replace(at=rings.at[members],
                                                 extent=rings.extent[members])))
    return out


def _cut_at(keys: list[str], sources: list[tuple[tuple[str, ...], np.ndarray, np.ndarray,
                                                 int | None]],
            rest: dict[str, Any], shapes: dict[tuple[str, ...], tuple[int, ...]]
            ) -> dict[str, Any]:
    """What ``_pack`` with ``columns`` gives for the blocks ``array[rows]`` of ``sources``
    (cut to their first ``used`` entries on axis 1 when ``used`` is not None: a ring), each
    cut to the most any key uses of it, read where they lie."""
    n = len(keys)
    blocks = []
    for path, array, rows, used in sources:
        row_shape = array.shape[1:] if used is None else (used, *array.shape[2:])
        items = int(np.prod(row_shape, dtype=np.int64))
        blocks.append((items * array.itemsize % 8 != 0, path, array, rows, row_shape, items))
    blocks.sort(key=lambda block: block[0])  # (stable) whole 8-byte words first, as _pack
    spec = tuple((path, array.dtype.str, shapes.get(path, row_shape))
                 for _, path, array, _, row_shape, _ in blocks)
    words = sum(1 for block in blocks if not block[0])
    flat = [(array.reshape(len(array), -1).view(np.uint64 if array.itemsize == 8 else np.uint8),
             rows, items) for _, _, array, rows, _, items in blocks]
    widths = [_widest_at(src, rows, items) for src, rows, items in flat]
    data: list[bytes | memoryview] = []
    for lo, hi, dtype in ((0, words, np.uint64), (words, len(flat), np.uint8)):
        width = sum(widths[lo:hi])
        if not width:
            data.append(b"")
            continue
        cut = np.empty((n, width), dtype=dtype)
        at = 0
        for (src, rows, _), w in zip(flat[lo:hi], widths[lo:hi], strict=True):
            if w:
                _copy_at(src, rows, w, cut, at)
                at += w
        # The cut's own memory, not a copy of it (a store writes it as it is).
        data.append(cut.reshape(-1).view(np.uint8).data)
    byte_widths = [w * (8 if j < words else 1) for j, w in enumerate(widths)]
    return packed_columns(keys, spec, rest, byte_widths, words, data[0], data[1])


@njit(refcounts=False)
def _widest_at(src: np.ndarray, rows: np.ndarray, items: int) -> int:  # pragma: no cover
    """Of rows ``rows`` of ``src`` (2-D), the first ``items`` items of each: how many, up to
    the last any of them has non-zero (``state_codec._widest`` of their gather)."""
    widest = 0
    for r in rows:
        j = items
        while j > widest and src[r, j - 1] == 0:
            j -= 1
        if j > widest:
            widest = j
            if widest == items:
                break
    return widest


@njit(refcounts=False)
def _copy_at(src: np.ndarray, rows: np.ndarray, width: int, out: np.ndarray,
             at: int) -> None:  # pragma: no cover
    """``out[i, at:at + width] = src[rows[i], :width]`` for each i."""
    for i in range(len(rows)):
        r = rows[i]
        for j in range(width):
            out[i, at + j] = src[r, j]
