"""Partitions and their resume state: the one owner of what a restart needs.

The runner reads records; this module knows where each came from and what must be saved so that
a restart resumes exactly. It tracks the partitions this daemon owns, the next position to read
in each, which partition each key's records come from and which keys changed since the last
checkpoint; it loads that state when partitions are assigned, forgets it when they go, writes
each checkpoint (see :mod:`adaptd.checkpoint`), and lets idle keys go to the store and back.

An assignment loads no key state: positions, the shared state and the pending delayed labels
only. Each key comes back from the store when a record of it (or a label joining to it) comes,
as an evicted key does, so a restart holds at most ``learner.max_keys`` keys however many the
store holds, and the first record is read without waiting for every key to be decoded.

What a checkpoint holds:

* the shared state: the learner's shared state (meta-state, totals, the counts of delayed
  labels), from ``learner.state_dict(keys=())``, and the decoder's feature layout;
* per partition: its next position, and the task states and pending delayed labels of the keys
  that changed since the previous checkpoint (the store keeps the others from before).

:func:`shared_part`, :func:`partition_part` and :func:`combine` split the learner's
``state_dict`` that way and put it back together on load. Every checkpoint also writes
``STATE_DIR/meta.pt``, the meta-state in the ``--meta`` format (:mod:`adaptd.meta_file`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from itertools import compress
from typing import TYPE_CHECKING, Any

from adaptd import meta_file
from adaptd.checkpoint import CheckpointStore, PartitionChanges, Restored
from adaptd.collector import cyclic_gc_paused
from adaptd.connectors.base import SourceRecord
from adaptd.key_index import HashSet, hash_keys
from adaptd.key_sets import on_partition, take, unknown
from adaptd.learner import Learner
from adaptd.learner.packing import packed_task_states
from adaptd.records import RecordBatch, RecordDecoder
from adaptd.save_behind import SaveBehind, Snapshot, freeze, frozen_changes
from adaptd.shared_moments import live_moments, statistics_of
from adaptd.state_codec import pack_state, unpack_state

if TYPE_CHECKING:  # kafka-python is imported only by a run whose source is Kafka
    from adaptd.changelog import Changelog
    from adaptd.meta_sync import MetaSync

log = logging.getLogger(__name__)

META_FILE = "meta.pt"

def shared_part(learner: Learner) -> dict[str, Any]:
    """What every key shares: ``state_dict(keys=())`` without task states or label entries."""
    state = learner.state_dict(keys=())
    state.pop("keys", None)
    if "labels" in state:  # the counts of joined and expired labels are shared; entries are not
        state["labels"] = {**state["labels"], "entries": []}
    return state


def partition_part(learner: Learner, keys: Collection[str]) -> dict[str, Any]:
    """What belongs to one partition: the task states (packed, :mod:`adaptd.state_codec`) and
    pending labels of its ``keys``."""
    packed = packed_task_states(learner, keys)
    if packed is not None:  # the arena's rows, packed at once
        part: dict[str, Any] = {"keys": packed}
        pending = learner.pending
        part["labels"] = pending.state_dict(keys)["entries"] if len(pending) else []
        return part
    state = learner.state_dict(keys)
    part = {"keys": {k: pack_state(v) for k, v in state["keys"].items()}}
    if "labels" in state:
        part["labels"] = state["labels"]["entries"]
    return part


def combine(shared: Mapping[str, Any], parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A ``state_dict`` for ``learner.load_state_dict``: ``shared`` with the keys and pending
    labels of ``parts`` (the inverse of :func:`shared_part` and :func:`partition_part`; packed
    task states are unpacked).

    >>> state = combine({"totals": [1.0], "labels": {"entries": [], "joined": 2}},
    ...                 [{"keys": {"a": 1}, "labels": ["r1"]}, {"keys": {"b": 2}, "labels": []}])
    >>> state["totals"], state["keys"], state["labels"]
    ([1.0], {'a': 1, 'b': 2}, {'entries': ['r1'], 'joined': 2})
    """
    keys: dict[str, Any] = {}
    entries: list[Any] = []
    for part in parts:
        keys.update((k, unpack_state(v)) for k, v in part["keys"].items())
        entries.extend(part.get("labels", ()))
    state = {**shared, "keys": keys}
    if "labels" in shared:
        state["labels"] = {**shared["labels"], "entries": entries}
    return state


class Partitions:
    """Owned partitions, next positions, key → partition, changed keys, and the store behind
    them. Runner thread only (a checkpoint's write runs behind on a worker thread,
    :mod:`adaptd.save_behind`); every method may block on the state directory's disk.

    Args:
        store: the state database; read on assignment, written by :meth:`save`.
        learner: whose state is split into shared and per-partition parts.
        decoder: whose feature layout is saved with the shared state.
        changelog: a Kafka source's changelog topic: partitions are restored from it on
            assignment (the store is then a cache) and every checkpoint is published to it.
        meta_sync: a Kafka source's meta topic, through which replicas merge meta-states.
        clock: monotonic seconds (when a checkpoint's write was done).
    """

    def __init__(self, store: CheckpointStore, learner: Learner, decoder: RecordDecoder,
                 changelog: Changelog | None = None, meta_sync: MetaSync | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.changelog = changelog
        self.meta_sync = meta_sync
        self.learner = learner
        self.decoder = decoder
        #: partition → position of the next record to read, for partitions owned here.
        self.next_positions: dict[int, int] = {}
        #: Partitions whose state is loaded here.
        self.owned: set[int] = set()
        #: Which partition each key's records come from, so its state is saved with it.
        self.key_partition: dict[str, int] = {}
        #: partition → keys whose state changed since the last checkpoint: all a save writes.
        self.touched: dict[int, set[str]] = {}
        #: partition → keys the learner let go of without a copy (the store holds their
        #: state), to be flagged as evicted in the store after the next checkpoint.
        self.dropped: dict[int, set[str]] = {}
        # The shared state is taken from the store once; later it is the live one.
        self._shared_loaded = False
        self._meta_written: Any = None
        #: Keys the last checkpoint noted as out of memory (for :meth:`evict`'s count).
        self._evicted = 0
        #: Keys with pending labels loaded at an assignment → their partition: a label may
        #: join one not in memory (its partition is then known), and a release forgets them.
        self.label_partition: dict[str, int] = {}
        #: partition → keys a fall back rolled back, written again at the next checkpoint
        #: (from the store for those not in memory).
        self._rolled_back: dict[int, set[str]] = {}
        #: ``hash()`` of every key the store may hold: those it held at the last assignment
        #: and every key seen since (None: to be read from the store at the next batch). A
        #: key not among them is new, so it needs no read of the store, nor to wait for the
        #: checkpoint in flight.
        self._stored: HashSet | None = None
        # The checkpoint in flight, and the last one written, waiting for the runner.
        self._behind = SaveBehind(self._write, clock)
        self._outcome: tuple[Snapshot, BaseException | None] | None = None

    # -- assignment ----------------------------------------------------------------------

    def assign(self, partitions: Collection[int]) -> dict[int, int]:
        """Load the last checkpoint of each new partition; return where each of ``partitions``
        resumes (those left out start where the source's policy says).

        Called before any record of these partitions is polled. The shared state comes from
        the store only at the first assignment; later it stays the live one, so a second
        assignment does not roll it back. Raises CheckpointError when a stored value is damaged.
        """
        self.settle()  # the store and the changelog's clients are one thread's at a time
        requested = sorted(partitions)
        new = [p for p in requested if p not in self.owned]
        if self.changelog is not None and new:
            self.changelog.restore_all(new, self.store)
        restored = self.store.load(new, lazy=True)
        self._stored = None  # the store may hold keys of the new partitions
        parts = [state.learner for _, state in sorted(restored.partitions.items())]
        first = not self._shared_loaded
        if first and restored.shared is not None:
            self.learner.load_state_dict(combine(self._adopted(restored), parts))
            self.decoder.restore_layout(restored.shared.get("decoder", {}))
        elif parts:
            self.learner.load_state_dict(combine(shared_part(self.learner), parts))
        self._shared_loaded = True
        if first:  # a replica starts from the group's merged meta-state
            self.sync_meta(force=True)
        for p, state in restored.partitions.items():
            self.label_partition.update((entry[2], p) for entry in state.learner["labels"])
            if restored.fell_back_from is not None:  # rewritten at the next checkpoint (and
                self._rolled_back[p] = set(restored.rolled_back.get(p, ()))  # to its changelog)
            self.next_positions[p] = state.position
        self.owned.update(new)
        resume = {p: self.next_positions[p] for p in requested if p in self.next_positions}
        log.info("partitions %s assigned; resuming at %s (others from the start) from "
                 "checkpoints %s", requested, resume,
                 {p: state.checkpoint for p, state in sorted(restored.partitions.items())})
        return resume

    def _adopted(self, restored: Restored) -> dict[str, Any]:
        """The shared learner state a first assignment takes. From a checkpoint this state dir
        wrote, all of it; from another replica's (restored from the changelog into an empty
        state dir), its model and meta-state, which are the group's, but not its totals."""
        assert restored.shared is not None
        theirs = restored.shared["learner"]
        if restored.local is not None:
            if self.meta_sync is not None:
                self.meta_sync.restore(restored.local.get("meta_sync"))
            return dict(theirs)
        meta = theirs.get("meta")
        if self.meta_sync is not None and meta is not None:
            self.meta_sync.foreign = int(meta["tasks"])  # none of those tasks are this replica's
        return {**shared_part(self.learner), "model": theirs.get("model"), "meta": meta}

    def release(self, partitions: Collection[int]) -> None:
        """Forget ``partitions`` and their keys' state. Called once they are checkpointed
        (revoked) or when another daemon may own them already (lost); never writes."""
        self.settle()
        gone = set(partitions) & self.owned
        keys = [k for k, p in self.key_partition.items() if p in gone]
        # With the pending labels of their keys never loaded (the store keeps them).
        labelled = [k for k, p in self.label_partition.items() if p in gone]
        self.learner.forget(keys + labelled)
        for key in keys:
            del self.key_partition[key]
        for key in labelled:
            del self.label_partition[key]
        for p in gone:
            self.next_positions.pop(p, None)
            self.touched.pop(p, None)
            self.dropped.pop(p, None)
            self._rolled_back.pop(p, None)
        if self.changelog is not None:
            self.changelog.release(sorted(gone))
        self.owned -= gone
        log.info("partitions %s released (%d keys forgotten)", sorted(gone), len(keys))

    def close(self) -> None:
        """Close the Kafka clients and the store. Called once the source is closed."""
        self.settle()
        self._behind.close()
        for part in (self.changelog, self.meta_sync):
            if part is not None:
                part.close()
        self.store.close()

    # -- the record path -----------------------------------------------------------------

    def route(self, batch: RecordBatch, partitions: Sequence[int]) -> None:
        """Note which partition each decoded record's key comes from and that its state is
        about to change; a key not in memory (evicted, or not loaded since the assignment)
        gets its state back from the store. So does the key a delayed label joins to, which
        may not be the label record's own. Called per batch, before the learner sees it."""
        routed = batch.keys
        joined, joined_partitions = self._joined(batch, partitions)
        if joined:
            routed, partitions = [*routed, *joined], [*partitions, *joined_partitions]
        self._take_dropped()
        if self._stored is None:
            self.settle()
            self._stored = HashSet(len(self.key_partition))
            self._stored.add(self.store.key_hashes())
            self._stored.add(hash_keys(self.key_partition))
        while True:
            missing = self._missing(routed, partitions)
            hashes = {p: hash_keys(keys) for p, keys in missing.items()}
            stored = {p: self._stored.contains(h) for p, h in hashes.items()}
            if not (self._behind.busy and any(s.any() for s in stored.values())):
                break
            # A key to read from the store may be one the checkpoint in flight writes (or,
            # if that fails, one that comes back to memory): settled first. A key never
            # seen here is in neither, so a batch of new keys runs on meanwhile.
            self.settle()
        key_partition, touched = self.key_partition, self.touched
        for p, keys in missing.items():
            key_partition.update(dict.fromkeys(keys, p))
            self._stored.add_new(hashes[p][~stored[p]])  # from now on they may be in the store
        if partitions and partitions.count(partitions[0]) == len(partitions):
            touched.setdefault(partitions[0], set()).update(routed)
        else:
            for key, p in zip(routed, partitions, strict=True):
                touched.setdefault(p, set()).add(key)
        for p, keys in missing.items():
            found = stored[p]
            if found.any():  # (the others are new: the store has never held them)
                states = self.store.get_many(
                    p, keys if found.all() else list(compress(keys, found.tolist())))
                if states:
                    self._restore_keys(states)

    def _missing(self, keys: Sequence[str], partitions: Sequence[int]) -> dict[int, list[str]]:
        """partition → the distinct ``keys`` not in memory, each under the partition of its
        first record, in order of first appearance."""
        key_partition = self.key_partition
        if partitions and partitions.count(partitions[0]) == len(partitions):
            # One partition (a run of a file): in set operations.
            new = unknown(keys, key_partition)
            return {partitions[0]: new} if new else {}
        missing: dict[int, list[str]] = {}
        first: set[str] = set()
        for key, p in zip(keys, partitions, strict=True):
            if key not in key_partition and key not in first:
                first.add(key)
                missing.setdefault(p, []).append(key)
        return missing

    def _take_dropped(self) -> None:
        """The keys the learner let go of without a copy leave ``key_partition`` (a record of
        one reads it back from the store) and wait to be flagged as evicted there."""
        take_dropped = getattr(self.learner, "take_dropped", None)
        dropped = take_dropped() if take_dropped is not None else ()
        for p, keys in take(self.key_partition, dropped).items() if dropped else ():
            self.dropped.setdefault(p, set()).update(keys)

    def _joined(self, batch: RecordBatch, partitions: Sequence[int]
                ) -> tuple[list[str], list[int]]:
        """The keys ``batch``'s delayed labels join to (the keys their features were kept
        under, which the learner's state changes for: not always the label record's own key),
        each with its partition: the one it is in memory under, or was loaded with at the
        assignment, else the label record's."""
        pending = self.learner.pending
        if not len(pending) or batch.ids.count(None) == len(batch):
            return [], []
        keys: list[str] = []
        found: list[int] = []
        key_partition, label_partition = self.key_partition, self.label_partition
        for rid, y, p in zip(batch.ids, batch.y.tolist(), partitions, strict=True):
            if rid is None or not _is_label(y):
                continue
            key = pending.key_of(rid)
            if key is not None:
                keys.append(key)
                found.append(key_partition.get(key, label_partition.get(key, p)))
        return keys, found

    def advance(self, raws: Iterable[SourceRecord]) -> None:
        """Move past ``raws`` (decoded or rejected alike): called once their batch is learned
        and emitted, so a checkpoint never holds a position ahead of the state."""
        for raw in raws:
            self.next_positions[raw.partition] = raw.position + 1

    def positions(self) -> dict[int, int]:
        """Next positions of the owned partitions: what a checkpoint commits."""
        return {p: n for p, n in self.next_positions.items() if p in self.owned}

    # -- checkpoints ---------------------------------------------------------------------

    def save(self) -> int:
        """Write one checkpoint on this thread (:meth:`save_behind`, then :meth:`saved`);
        returns its id. Raises OSError when the disk refuses (nothing is forgotten then: the
        keys that were to leave are live again, and the next checkpoint writes them)."""
        self.save_behind()
        snapshot = self.saved()
        assert snapshot is not None
        return snapshot.number

    def save_behind(self, started_s: float = 0.0) -> None:
        """Pack one checkpoint here — the shared state, and per owned partition its position,
        the keys that changed since the last one and the keys that left memory since (idle
        ones are let go of first) — and write it on the worker thread (then ``meta.pt`` if the
        meta-state moved). The one before must have been handed back by :meth:`saved`."""
        assert self._outcome is None and not self._behind.busy
        shared = {"learner": shared_part(self.learner), "decoder": self.decoder.layout()}
        self.learner.evict_idle()
        cold = self.learner.take_evicted()
        self._take_dropped()
        try:
            # An object per changed key (up to max_keys), no cycle among them: unpaused, a young
            # collection every 700 and a full one every few checkpoints (5% of distinct keys).
            with cyclic_gc_paused():
                changes, leaving = {}, {}
                for p in self.owned:
                    if p in self.next_positions:
                        changes[p], leaving[p] = self._changes(p, cold)
        except BaseException:
            if cold:
                self._restore_keys(cold)
            raise
        mark = getattr(self.learner, "save_mark", None)
        # Written at every checkpoint: its presence says this state dir has checkpointed.
        local = {} if self.meta_sync is None else {"meta_sync": self.meta_sync.state()}
        meta = shared["learner"].get("meta")
        snapshot = Snapshot(
            number=self.store.next_checkpoint(), shared=freeze(shared),
            changes={p: frozen_changes(c) for p, c in changes.items()}, local=freeze(local),
            positions=self.positions(), started_s=started_s, cold=cold,
            meta=freeze(self._meta_content(meta, shared["learner"])),
            mark=None if mark is None else mark())
        if snapshot.meta is not None:
            self._meta_written = meta
        saving = getattr(self.learner, "saving", None)
        if saving is not None and snapshot.mark is not None:
            saving(snapshot.mark, [change.states for change in snapshot.changes.values()])
        # What the snapshot holds is no longer changed since the last checkpoint; if its write
        # fails, _unsaved gives it back.
        for p in changes:
            snapshot.touched[p] = self.touched.pop(p, set())
            snapshot.dropped[p] = self.dropped.pop(p, set())
            snapshot.evicted[p] = leaving[p]
            for key in snapshot.evicted[p]:
                del self.key_partition[key]
        self._behind.start(snapshot)

    def _write(self, snapshot: Snapshot) -> None:
        """The durable part of a checkpoint, on the worker thread: the changelog first (the
        local store is its cache), then the store's transaction, then ``meta.pt``."""
        offsets = None
        if self.changelog is not None:
            offsets = self.changelog.publish(snapshot.number, snapshot.changes, snapshot.shared)
        self.store.save(snapshot.shared, snapshot.changes, checkpoint=snapshot.number,
                        changelog_offsets=offsets, local=snapshot.local)
        if snapshot.meta is not None:
            meta_file.write(snapshot.meta, self.store.state_dir / META_FILE)

    def on_written(self, callback: Callable[[Snapshot], None]) -> None:
        """Call ``callback`` (on the worker thread) with each checkpoint once it is durable."""
        self._behind.on_written = callback

    @property
    def save_done(self) -> bool:
        """A checkpoint's write is over and :meth:`saved` would not block."""
        return self._outcome is not None or self._behind.done()

    def settle(self) -> None:
        """Wait for the checkpoint in flight, if any, and take its outcome into account (its
        keys are saved, or changed again); :meth:`saved` hands it to the runner."""
        snapshot, error = self._behind.wait()
        if snapshot is None:
            return
        if error is None:
            self._saved(snapshot)
        else:
            self._unsaved(snapshot)
        self._outcome = snapshot, error

    def saved(self) -> Snapshot | None:
        """The last checkpoint started, once written (None: none since the last call). Blocks
        until it is; raises what its write raised (OSError when the disk refused)."""
        self.settle()
        outcome, self._outcome = self._outcome, None
        if outcome is None:
            return None
        snapshot, error = outcome
        if error is not None:
            raise error
        return snapshot

    def _saved(self, snapshot: Snapshot) -> None:
        self._evicted = sum(len(change.evicted) for change in snapshot.changes.values())
        for p in snapshot.changes:  # rewritten: the store and the changelog agree again
            self._rolled_back.pop(p, None)
        saved = getattr(self.learner, "mark_saved", None)
        if saved is not None:  # every key changed before the snapshot is in the store now
            saved(snapshot.mark)

    def _unsaved(self, snapshot: Snapshot) -> None:
        """Undo what :meth:`save_behind` took for ``snapshot``: its keys count as changed
        again, and the keys it was to let go of are live again."""
        for p, keys in snapshot.touched.items():
            self.touched.setdefault(p, set()).update(keys)
        for p, keys in snapshot.dropped.items():
            self.dropped.setdefault(p, set()).update(keys)
        for p, keys in snapshot.evicted.items():
            self.key_partition.update((k, p) for k in keys if k in snapshot.cold)
        if snapshot.cold:
            self._restore_keys(snapshot.cold)
        self._meta_written = None
        saving = getattr(self.learner, "saving", None)
        if saving is not None:
            saving(None)

    def _changes(self, p: int, cold: Mapping[str, Any]) -> tuple[PartitionChanges, set[str]]:
        """What the checkpoint writes for ``p``: the keys that changed (``cold``: the states of
        keys let go of, waiting to be written) and the keys that left memory; and those of
        them that ``key_partition`` holds (they leave it with the snapshot)."""
        touched = self.touched.get(p, set())
        part = partition_part(self.learner, touched)
        labels: dict[str, list[Any]] = {}
        for entry in part.get("labels", ()):  # (id, seconds left, key, x)
            labels.setdefault(entry[2], []).append(entry)
        states = part["keys"]
        key_partition = self.key_partition
        # Out of memory from this checkpoint on: keys let go of with their state (written
        # here if it changed since the last checkpoint) and without (dropped, unchanged; one
        # that came back since is live again).
        leaving = on_partition(key_partition, cold, p)
        written = list(leaving & touched)
        states.update(zip(written, map(pack_state, map(cold.__getitem__, written))))
        back = self._rolled_back_states(p, states)
        states.update(back)
        dropped = self.dropped.get(p, set())
        # One pass each, each key's hash cached.
        evicted = leaving.union(dropped.difference(key_partition))
        evicted.update(back)  # (out of memory, and they stay out of it)
        if back:
            entries = self.learner.state_dict(list(back)).get("labels", {}).get("entries", ())
            for entry in entries:
                labels.setdefault(entry[2], []).append(entry)
        return PartitionChanges(position=self.next_positions[p], states=states,
                                labels=labels, evicted=evicted), leaving

    def _rolled_back_states(self, p: int, states: Mapping[str, Any]) -> dict[str, Any]:
        """The stored states of the keys of ``p`` a fall back rolled back that ``states`` (the
        keys written from memory) lacks: not loaded since, so not in memory (every key loaded
        is changed, and stays so until a checkpoint is written). The store holds the state
        this partition resumed from, to be written again with the next checkpoint."""
        rolled_back = self._rolled_back.get(p)
        if not rolled_back:
            return {}
        return self.store.get_many(p, [k for k in rolled_back if k not in states])

    def sync_meta(self, force: bool = False) -> bool:
        """Merge the group's published meta-states and running moments (standardization
        statistics, the auto model's label moments) into the live ones when a merge is due (or
        ``force``), and rewrite ``meta.pt``; True if they changed. Called on the
        runner's timer and at the first assignment; a broker fault costs one merge, logged."""
        if self.meta_sync is None or not (force or self.meta_sync.due()):
            return False
        self.settle()  # the state topics' clients (and meta.pt) are one thread's at a time
        shared = shared_part(self.learner)
        try:
            merged = self.meta_sync.merge(shared)
        except OSError as exc:
            log.warning("meta-state not merged this time: %s", exc)
            return False
        if merged is None:
            return False
        meta = merged.get("meta")
        if shared.get("meta") is None and meta is not None:
            # No record yet: the merged state's model sets it up.
            merged["model"] = {**meta["model"], **{k: v for k, v in shared["model"].items()
                                                   if v is not None}}
        try:
            self.learner.load_state_dict(combine(merged, []))
        except (ValueError, KeyError) as exc:
            log.error("the group's meta-state does not fit this model, not merged: %s", exc)
            return False
        self._write_meta(meta)
        return True

    def _write_meta(self, meta: Mapping[str, Any] | None) -> None:
        content = self._meta_content(meta, shared_part(self.learner))
        if content is not None:
            meta_file.write(content, self.store.state_dir / META_FILE)
            self._meta_written = meta

    def _meta_content(self, meta: Mapping[str, Any] | None,
                      shared: Mapping[str, Any]) -> dict[str, Any] | None:
        """What ``meta.pt`` gets for ``meta`` with ``shared`` (the learner's shared state):
        None when it did not move, so an idle replica does not rewrite it at every checkpoint."""
        if meta is None or _same(meta, self._meta_written):
            return None
        # With the live standardization statistics (merged across replicas with a meta
        # topic): θ0 is learned under them, so a deployment taking meta.pt needs them.
        statistics = statistics_of(live_moments(shared))
        return dict(meta) if statistics is None else {**meta, "scaler": statistics}

    @property
    def meta_tasks(self) -> int:
        """Tasks folded into the live meta-state (0 before any, or without meta-learning)."""
        meta = shared_part(self.learner).get("meta")
        return 0 if meta is None else int(meta["tasks"])

    def evict(self) -> int:
        """How many keys left memory at the last checkpoint (:meth:`save` notes them in its
        transaction, so a key's eviction costs no write of its own); logs it. Called right
        after a checkpoint."""
        count, self._evicted = self._evicted, 0
        if count:
            log.info("evicted %d idle keys to %s", count, self.store.path)
        return count

    def evictions_waiting(self) -> bool:
        """Whether keys the learner let go of wait in memory for the next checkpoint (their
        state changed since the last one): the runner then does not defer it."""
        return bool(getattr(self.learner, "evictions_waiting", 0))

    def evictions_full(self) -> bool:
        """Whether as many keys let go of wait in memory as may be live: a checkpoint is due
        (``AdaptiveLearner.evictions_full``)."""
        return bool(getattr(self.learner, "evictions_full", False))

    def _restore_keys(self, states: Mapping[str, Any]) -> None:
        # load_state_dict also takes shared state: hand it the live one so nothing rolls back.
        self.learner.load_state_dict(combine(shared_part(self.learner), [{"keys": states}]))


def _same(a: Any, b: Any) -> bool:
    """Equal meta-state dicts (NumPy arrays compared by value)."""
    if b is None or a.keys() != b.keys():
        return False
    for k, v in a.items():
        if hasattr(v, "shape"):
            if not (hasattr(b[k], "shape") and v.shape == b[k].shape and (v == b[k]).all()):
                return False
        elif v != b[k]:
            return False
    return True


def _is_label(y: float | str | None) -> bool:
    """Whether a ``y`` column entry is a label: a float column marks "none" with NaN, an
    object column (string labels) with ``None``."""
    return y is not None and not (isinstance(y, float) and math.isnan(y))
