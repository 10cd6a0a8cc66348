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

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from adaptd.learner.arena import BASE_FIELDS, reset_rows
from adaptd.learner.segments import start_task

if TYPE_CHECKING:
    from adaptd.learner.adaptive import AdaptiveLearner


def admit_many(lrn: AdaptiveLearner, keys: Sequence[str]) -> np.ndarray:
    """Give each of ``keys`` (distinct, none holding a slot) a slot; returns the slots."""
    if len(lrn._free) < len(keys):
        # Doubling, but not far beyond max_keys: growing copies every row.
        need = lrn._capacity + len(keys) - len(lrn._free)
        lrn._grow(max(need, min(lrn._capacity * 2, lrn.config.max_keys + len(keys))), lrn.arena)
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
        reset_rows(lrn.arena, rows)
        if lrn.regret.baseline:
            reset_rows(lrn.arena, rows + 1, BASE_FIELDS)
        start_task(lrn, rows)
        if lrn.regret.baseline:
            lrn._start_baseline(rows + 1)  # type: ignore[arg-type]
    return slots


def evict_lru(lrn: AdaptiveLearner, count: int) -> None:
    """Let the ``count`` least recently seen keys go, and a sixteenth of ``max_keys`` more (see
    the module note): finding them scans every live key, so it is done every few batches of
    new keys, not at each."""
    live = np.fromiter(lrn._slot_of.values(), dtype=np.int64, count=len(lrn._slot_of))
    count = min(len(live), count + lrn.config.max_keys // 16)
    seen = lrn.arena.last_seen[live]
    oldest = live[np.argpartition(seen, count - 1)[:count]] if count < len(live) else live
    oldest = oldest[np.argsort(lrn.arena.last_seen[oldest], kind="stable")]
    clean = unchanged(lrn, oldest).tolist()
    keys = [lrn._key_of[s] for s in oldest.tolist()]
    from adaptd.learner.packing import packed_task_states  # it imports the learner

    changed = [k for k, saved in zip(keys, clean, strict=True) if not saved]
    packed = packed_task_states(lrn, changed) if changed else {}
    if changed:
        for key, s, saved in zip(keys, oldest.tolist(), clean, strict=True):
            if not saved:
                lrn._cold[key] = packed[key] if packed is not None else lrn._task_state(s)
        lrn._dropped.extend(k for k, saved in zip(keys, clean, strict=True) if saved)
    else:
        lrn._dropped.extend(keys)
    release_many(lrn, keys, oldest)
    lrn.totals.evicted += len(oldest)


def release_many(lrn: AdaptiveLearner, keys: list[str], slots: np.ndarray) -> None:
    """Free the ``slots`` of ``keys`` (:meth:`AdaptiveLearner._release` of each, at once)."""
    slot_list = slots.tolist()
    for s in slot_list:
        del lrn._key_of[s]
    for key in keys:
        del lrn._slot_of[key]
    lrn._free.extend((slots // lrn._rows_per_key).tolist())
    concepts = lrn.concepts
    if concepts is not None and not (concepts.states.keys().isdisjoint(slot_list)
                                     and concepts.since.keys().isdisjoint(slot_list)):
        for s in slot_list:
            concepts.drop(s)


def unchanged(lrn: AdaptiveLearner, slots: np.ndarray) -> np.ndarray:
    """Which of ``slots`` hold the state the last checkpoint wrote: unchanged since (every
    change is a batch that sets ``last_seen``, after which the clock only moves on; a new
    class changes every key)."""
    if lrn._saved_at is None or len(lrn.classes or ()) != lrn._saved_classes:
        return np.zeros(len(slots), dtype=bool)
    return lrn.arena.last_seen[slots] < lrn._saved_at
