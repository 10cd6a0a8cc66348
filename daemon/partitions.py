"""Partitions and their resume state: the one owner of what a restart needs.

The runner reads records; this module knows where each came from and what must be saved so that
a restart resumes exactly. It tracks the partitions this daemon owns, the next position to read
in each, and which partition each key's records come from; it loads that state when partitions
are assigned, forgets it when they go, builds what a checkpoint writes, and moves idle keys to
:class:`~adaptd.evicted.EvictedKeys` and back.

What a checkpoint holds, and where (see :mod:`adaptd.checkpoint`):

* the generation's shared file: the learner's shared state (meta-state, totals, the counts of
  delayed labels), from ``learner.state_dict(keys=())``, and the decoder's feature layout;
* each partition's file: its next position, its keys, their task states and their pending
  delayed labels.

:func:`shared_part`, :func:`partition_part` and :func:`combine` split the learner's
``state_dict`` that way and put it back together on load; the shared part is written once per
checkpoint, not once per partition.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from adaptd.checkpoint import CheckpointStore, PartitionState
from adaptd.connectors.base import SourceRecord
from adaptd.evicted import EvictedKeys
from adaptd.learner import Learner
from adaptd.records import RecordDecoder

log = logging.getLogger(__name__)


def shared_part(learner: Learner) -> dict[str, Any]:
    """What every key shares: ``state_dict(keys=())`` without task states or label entries."""
    state = learner.state_dict(keys=())
    state.pop("keys", None)
    if "labels" in state:  # the counts of joined and expired labels are shared; entries are not
        state["labels"] = {**state["labels"], "entries": []}
    return state


def partition_part(learner: Learner, keys: Collection[str]) -> dict[str, Any]:
    """What belongs to one partition: the task states and pending labels of its ``keys``."""
    state = learner.state_dict(keys)
    part: dict[str, Any] = {"keys": state["keys"]}
    if "labels" in state:
        part["labels"] = state["labels"]["entries"]
    return part


def combine(shared: Mapping[str, Any], parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A ``state_dict`` for ``learner.load_state_dict``: ``shared`` with the keys and pending
    labels of ``parts`` (the inverse of :func:`shared_part` and :func:`partition_part`).

    >>> state = combine({"totals": [1.0], "labels": {"entries": [], "joined": 2}},
    ...                 [{"keys": {"a": 1}, "labels": ["r1"]}, {"keys": {"b": 2}, "labels": []}])
    >>> state["totals"], state["keys"], state["labels"]
    ([1.0], {'a': 1, 'b': 2}, {'entries': ['r1'], 'joined': 2})
    """
    keys: dict[str, Any] = {}
    entries: list[Any] = []
    for part in parts:
        keys.update(part["keys"])
        entries.extend(part.get("labels", ()))
    state = {**shared, "keys": keys}
    if "labels" in shared:
        state["labels"] = {**shared["labels"], "entries": entries}
    return state


class Partitions:
    """Owned partitions, next positions, key → partition, and the state files behind them.
    Runner thread only; every method may block on the state directory's disk.

    Args:
        store: the checkpoint generations; read on assignment, written by :meth:`save`.
        learner: whose state is split into shared and per-partition parts.
        decoder: whose feature layout is saved with the shared state.
    """

    def __init__(self, store: CheckpointStore, learner: Learner, decoder: RecordDecoder) -> None:
        self.store = store
        self.learner = learner
        self.decoder = decoder
        self.evicted = EvictedKeys(store.state_dir, keep=store.keep)
        #: partition → position of the next record to read, for partitions owned here.
        self.next_positions: dict[int, int] = {}
        #: Partitions whose state is loaded here.
        self.owned: set[int] = set()
        #: Which partition each key's records come from, so its state is saved with it.
        self.key_partition: dict[str, int] = {}
        # The shared state is taken from a checkpoint once; later it is the live one.
        self._shared_loaded = False

    # -- assignment ----------------------------------------------------------------------

    def assign(self, partitions: Collection[int]) -> dict[int, int]:
        """Load the newest usable checkpoint of each new partition; return where each of
        ``partitions`` resumes (those left out start where the source's policy says).

        Called before any record of these partitions is polled. The shared state comes from
        the checkpoint only at the first assignment (with the partitions of that generation,
        see :meth:`CheckpointStore.load`); later it stays the live one, so a second assignment
        does not roll it back.
        """
        requested = sorted(partitions)
        new = [p for p in requested if p not in self.owned]
        restored = self.store.load(new)
        parts = [state.learner for _, state in sorted(restored.partitions.items())]
        if not self._shared_loaded and restored.shared is not None:
            self.learner.load_state_dict(combine(restored.shared["learner"], parts))
            self.decoder.restore_layout(restored.shared.get("decoder", {}))
        elif parts:
            self.learner.load_state_dict(combine(shared_part(self.learner), parts))
        self._shared_loaded = True
        for p, state in restored.partitions.items():
            for key in state.keys:
                self.key_partition[key] = p
            self.next_positions[p] = state.position
        for p in new:
            state = restored.partitions.get(p)
            self.evicted.open_partition(p, None if state is None else state.generation)
        self.owned.update(new)
        resume = {p: self.next_positions[p] for p in requested if p in self.next_positions}
        log.info("partitions %s assigned; resuming at %s (others from the start) from "
                 "checkpoint generations %s", requested, resume,
                 {p: state.generation for p, state in sorted(restored.partitions.items())})
        return resume

    def release(self, partitions: Collection[int]) -> None:
        """Forget ``partitions`` and their keys' state. Called once they are checkpointed
        (revoked) or when another daemon may own them already (lost); never writes."""
        gone = set(partitions) & self.owned
        keys = [k for k, p in self.key_partition.items() if p in gone]
        self.learner.forget(keys)
        for key in keys:
            del self.key_partition[key]
        for p in gone:
            self.next_positions.pop(p, None)
            self.evicted.close_partition(p)
        self.owned -= gone
        log.info("partitions %s released (%d keys forgotten)", sorted(gone), len(keys))

    # -- the record path -----------------------------------------------------------------

    def route(self, keys: Sequence[str], partitions: Sequence[int]) -> None:
        """Note which partition each decoded record's key comes from; a key seen for the first
        time since it was evicted gets its state back from disk. Called per batch, before
        the learner sees it."""
        key_partition = self.key_partition
        for key, p in zip(keys, partitions, strict=True):
            if key not in key_partition:
                state = self.evicted.get(p, key)
                if state is not None:
                    self._restore_keys({key: state})
            key_partition[key] = p

    def advance(self, raws: Iterable[SourceRecord]) -> None:
        """Move past ``raws`` (decoded or rejected alike): called once their batch is learned
        and emitted, so a checkpoint never holds a position ahead of the state."""
        for raw in raws:
            self.next_positions[raw.partition] = raw.position + 1

    def positions(self) -> dict[int, int]:
        """Next positions of the owned partitions: what a checkpoint commits."""
        return {p: n for p, n in self.next_positions.items() if p in self.owned}

    # -- checkpoints ---------------------------------------------------------------------

    def save(self) -> None:
        """Write one checkpoint generation: the shared state once, then per owned partition its
        position and its keys' state. Raises OSError when the disk refuses."""
        shared = {"learner": shared_part(self.learner), "decoder": self.decoder.layout()}
        keys_of: dict[int, list[str]] = {p: [] for p in self.owned}
        for key, p in self.key_partition.items():
            if p in keys_of:
                keys_of[p].append(key)
        self.store.save(shared, {
            p: PartitionState(position=self.next_positions[p], keys=keys,
                              learner=partition_part(self.learner, keys))
            for p, keys in keys_of.items()
            if p in self.next_positions
        })

    def evict(self) -> int:
        """Move the keys the learner let go to disk; returns how many. Called right after a
        checkpoint, so each state written equals the one that checkpoint holds."""
        self.learner.evict_idle()
        states = self.learner.take_evicted()
        by_partition: dict[int, dict[str, Any]] = {}
        for key, state in states.items():
            p = self.key_partition.get(key)
            if p is not None:
                by_partition.setdefault(p, {})[key] = state
        for p, group in by_partition.items():
            try:
                self.evicted.put(p, group, self.store.last_generation)
            except OSError as exc:
                # Keep them live rather than lose them; the next checkpoint tries again.
                log.error("could not write evicted key states of partition %d: %s", p, exc)
                self._restore_keys(group)
                continue
            for key in group:
                del self.key_partition[key]
        if states:
            log.info("evicted %d idle keys to %s", len(states), self.evicted.root)
        return len(states)

    def _restore_keys(self, states: Mapping[str, Any]) -> None:
        # load_state_dict also takes shared state: hand it the live one so nothing rolls back.
        self.learner.load_state_dict(combine(shared_part(self.learner), [{"keys": states}]))
