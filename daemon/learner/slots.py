"""Slots: keys taking arena rows and leaving them (:class:`adaptd.learner.adaptive.AdaptiveLearner`).

A key takes a slot when its first record (or its first since it left) arrives: its evicted
state if the learner still holds it, else a fresh task. Fresh keys of a batch are set up
together, every field at its fill first, since a slot another key left keeps that key's rows.

Beyond ``max_keys`` the least recently seen keys leave, a sixteenth of ``max_keys`` beyond
what is needed at a time (so the scan of every live key that finds them is not paid at every
batch of new keys). A key unchanged since the last
checkpoint (:meth:`~adaptd.learner.adaptive.AdaptiveLearner.mark_saved`) leaves without a copy:
the store holds its state and reads it back when the key returns. A changed one is packed (all
of them in one gather per field, as a checkpoint packs) and held until a checkpoint writes it.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Sequence
from itertools import compress, repeat
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptd.errors import ArenaMemoryError
from adaptd.learner.arena import BASE_FIELDS, Arena, reset_rows
from adaptd.learner.segments import start_task

if TYPE_CHECKING:
    from adaptd.learner.adaptive import AdaptiveLearner


#: The fields :func:`start_task` sets, and the baseline's start
#: (:meth:`~adaptd.learner.adaptive.AdaptiveLearner._start_baseline`) of its row.
_STARTED = ("theta", "A", "WM", "WL", "wpos", "seg_len", "seg_loss", "gsq", "u_prev", "recov")
_BASE_STARTED = ("theta", "A", "WM", "wpos")
#: The fields a fresh key's rows are reset to their fill before those starts set the others:
#: each field is a scattered write per new key, and setting the same ones twice was half of
#: a new key's reset (``tests/unit/test_eviction.py`` holds a reused slot equal to a fresh one).
_RESET = tuple(name for name in Arena._fields if name not in _STARTED)
_BASE_RESET = tuple(name for name in BASE_FIELDS if name not in _BASE_STARTED)


def admit_many(lrn: AdaptiveLearner, keys: Sequence[str]) -> np.ndarray:
    """Give each of ``keys`` (distinct, none holding a slot) a slot; returns the slots."""
    if len(lrn._free) < len(keys):
        # Doubling, but not far beyond max_keys: growing copies every row. Past a quarter of
        # max_keys, straight to it (the room eviction keeps): with many new keys the last two
        # doublings copied three times as many rows as all before them (a twentieth of a
        # distinct-keys run). Slots are handed out in the same order either way.
        need = lrn._capacity + len(keys) - len(lrn._free)
        most = lrn.config.max_keys + len(keys)
        target = max(need, min(lrn._capacity * 2, most))
        size = most if target >= lrn.config.max_keys // 4 else target
        try:
            lrn._grow(size, lrn.arena)
        except ArenaMemoryError:
            if size == target:
                raise
            # No room for all of max_keys at once (its address space, not yet its pages):
            # the keys here now may still fit; if not, this raises the same for them.
            lrn._grow(target, lrn.arena)
    # The slots in the order pop() would give them, taken at once: a batch of new keys costs
    # a few C-level steps, not a Python step per key.
    free, n = lrn._free, len(keys)
    taken = free[len(free) - n:]
    del free[len(free) - n:]
    taken.reverse()
    slots = np.array(taken, dtype=np.int64) * lrn._rows_per_key
    slot_list = slots.tolist()
    lrn._slot_of.update(zip(keys, slot_list))
    lrn._key_of.update(zip(slot_list, keys))
    cold = lrn._cold
    if cold and not cold.keys().isdisjoint(keys):
        fresh = []
        for key, s in zip(keys, slot_list, strict=True):
            state = cold.pop(key, None)
            if state is not None:
                lrn._set_task_state(s, state)
            else:
                fresh.append(s)
        rows = np.array(fresh, dtype=np.int64)
    else:
        rows = slots
    if len(rows):
        reset_rows(lrn.arena, rows, _RESET)
        if lrn.regret.baseline:
            reset_rows(lrn.arena, rows + 1, _BASE_RESET)
        start_task(lrn, rows)
        if lrn.regret.baseline:
            lrn._start_baseline(rows + 1)  # type: ignore[arg-type]
    return slots


def evict_lru(lrn: AdaptiveLearner, count: int) -> None:
    """Let the ``count`` least recently seen keys go, and a sixteenth of ``max_keys`` more (see
    the module note): finding them scans every live key, so it is done every few batches of
    new keys, not at each."""
    oldest = _least_recent(lrn, count + lrn.config.max_keys // 16)
    clean = unchanged(lrn, oldest)
    keys = list(map(lrn._key_of.__getitem__, oldest.tolist()))
    from adaptd.learner.packing import packable, packed_live_states  # it imports the learner

    # Changed since the last checkpoint written, but packed unchanged by the one in flight.
    reused = _packed_in_flight(lrn, keys, oldest, clean) if packable(lrn) else {}
    lrn._cold.update(reused)
    to_pack = ~clean
    if reused:
        to_pack &= ~np.fromiter(map(reused.__contains__, keys), dtype=bool, count=len(keys))
    changed_flags = to_pack.tolist()
    changed = list(compress(keys, changed_flags))
    packed = packed_live_states(lrn, changed, oldest[to_pack]) if changed else {}
    if packed is None:  # not all rows of the arena (another detector): key by key
        for key, s in compress(zip(keys, oldest.tolist()), changed_flags):
            lrn._cold[key] = lrn._task_state(s)
    else:
        lrn._cold.update(packed)  # exactly the changed keys, all live
    lrn._dropped.extend(compress(keys, clean.tolist()))
    release_many(lrn, keys, oldest)
    lrn.totals.evicted += len(oldest)


def _least_recent(lrn: AdaptiveLearner, count: int) -> np.ndarray:
    """The slots of the ``count`` least recently seen keys (all live ones if fewer), least
    recent first. Read from the arena's clock column with free slots masked, not from the
    dict of live keys: finding them is a few NumPy passes, no Python step per key."""
    per_key = lrn._rows_per_key
    live_count = len(lrn._slot_of)
    count = min(live_count, count)
    seen = lrn.arena.last_seen[::per_key][:lrn._capacity].copy()
    if lrn._capacity - len(lrn._free) == live_count:  # every slot live or free, as it is
        seen[np.asarray(lrn._free, dtype=np.int64)] = np.inf
    else:  # (a slot neither: left out all the same)
        live = np.zeros(len(seen), dtype=bool)
        live[np.fromiter(lrn._slot_of.values(), dtype=np.int64, count=live_count) // per_key] = 1
        seen[~live] = np.inf
    if count < live_count:
        at = np.argpartition(seen, count - 1)[:count]
    else:
        at = np.flatnonzero(seen != np.inf)
    at = at[np.argsort(seen[at], kind="stable")]
    return at * per_key


def release_many(lrn: AdaptiveLearner, keys: list[str], slots: np.ndarray) -> None:
    """Free the ``slots`` of ``keys`` (:meth:`AdaptiveLearner._release` of each, at once)."""
    slot_list = slots.tolist()
    # Deleted by C-level maps (drained by a zero-length deque): thousands of keys at a time.
    deque(map(lrn._key_of.__delitem__, slot_list), maxlen=0)
    deque(map(lrn._slot_of.__delitem__, keys), maxlen=0)
    lrn._free.extend((slots // lrn._rows_per_key).tolist())
    concepts = lrn.concepts
    if concepts is not None and not (concepts.states.keys().isdisjoint(slot_list)
                                     and concepts.since.keys().isdisjoint(slot_list)):
        for s in slot_list:
            concepts.drop(s)


def _packed_in_flight(lrn: AdaptiveLearner, keys: list[str], slots: np.ndarray,
                      clean: np.ndarray) -> dict[str, Any]:
    """Of ``keys`` (in ``slots``) not ``clean``, those the checkpoint in flight packed and
    that did not change since: key → the value it packed (a key's whole state, as eviction
    would pack it). They leave with that value, kept until a checkpoint writes them as any
    other changed key's: should the write in flight fail, the next one writes them."""
    saving = lrn._saving
    if saving is None or clean.all():
        return {}
    (at, classes), packed = saving
    if len(lrn.classes or ()) != classes:
        return {}
    since = (~clean) & (lrn.arena.last_seen[slots] < at)
    candidates = list(compress(keys, since.tolist()))
    out: dict[str, Any] = {}
    for states in packed:  # (one mapping per partition; C-level maps, no Python step per key)
        values = list(map(states.get, candidates))
        # By identity: ``None in values`` would compare each packed row with None.
        held = list(map(operator.is_not, values, repeat(None)))
        out.update(zip(candidates, values) if all(held) else
                   zip(compress(candidates, held), compress(values, held)))
    return out


def unchanged(lrn: AdaptiveLearner, slots: np.ndarray) -> np.ndarray:
    """Which of ``slots`` hold the state the last checkpoint wrote: unchanged since (every
    change is a batch that sets ``last_seen``, after which the clock only moves on; a new
    class changes every key)."""
    if lrn._saved_at is None or len(lrn.classes or ()) != lrn._saved_classes:
        return np.zeros(len(slots), dtype=bool)
    return lrn.arena.last_seen[slots] < lrn._saved_at
