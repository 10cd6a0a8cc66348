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
from collections.abc import Collection
from itertools import compress, repeat
from typing import Any

import numpy as np

from adaptd.drift import NullBank, PageHinkleyBank, PHState
from adaptd.learner.adaptive import AdaptiveLearner
from adaptd.learner.arena import BASE_FIELDS, RINGS, Arena, ring_extent
from adaptd.state_codec import Rings, pack_rows, pack_state

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
    # No bank yet: the learner has not seen a record (nor set up its arena).
    bank = getattr(learner, "bank", None)
    if type(learner) is not AdaptiveLearner or not isinstance(bank, (PageHinkleyBank, NullBank)):
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
    slots = found[held]
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
    blocks: list[tuple[tuple[str, ...], np.ndarray]] = [
        ((name,), getattr(arena, name)[slots]) for name in Arena._fields
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
        blocks += [(("detector", name), getattr(ph, name)[slots]) for name in PHState._fields]
        rest["detector"] = {}
    else:
        rest["detector"] = None
    if learner.classes is not None:
        rest["classes"] = len(learner.classes)
    if learner.regret.baseline:
        blocks += [(("baseline", name), getattr(arena, name)[slots + 1]) for name in BASE_FIELDS]
        rest["baseline"] = {}
    if learner.concepts is None:
        out.update(pack_rows(live, blocks, rest, rings))
        return out
    # Most keys have stored no concept: they pack as one group, and keys whose ``since`` is
    # equal share one part (pickled once).
    concepts, slot_list = learner.concepts, slots.tolist()
    if concepts.states.keys().isdisjoint(slot_list) and concepts.since.keys().isdisjoint(
            slot_list):  # none has (many new keys): one group, no per-key step
        out.update(pack_rows(live, [*blocks, (("library", "states"), np.empty((len(live), 0, 0)))],
                             {**rest, "library": {"since": None}}, rings))
        return out
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
