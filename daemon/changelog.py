"""The changelog topic of a Kafka source: key states travel with their partition.

Each checkpoint appends, to partition p of ``<topic>.<group>.adaptd-changelog`` (created with
the source topic's partition count and ``cleanup.policy=compact``), the states of p's keys that
changed, then one commit marker holding p's next position, the shared state and the layout.
A replica assigned p brings its local store (:mod:`adaptd.checkpoint`, a cache here) up to date
from the changelog before loading p, so a partition's keys move with it to whichever replica
gets it, and no volume is shared (the Kafka Streams / Quix Streams pattern).

Tansu, the broker the tests run, neither isolates aborted transactions (a ``read_committed``
consumer reads them) nor reports reliable end offsets (both tested), so neither is used:

* **Checkpoint ids and commit markers.** Every record carries its writer's epoch and the
  checkpoint id; a checkpoint's key states are applied only once its marker has been read, in
  marker order. Records of a checkpoint whose writer died before its marker are never applied:
  the position they would go with was never published either, so the new owner replays those
  records from the previous marker's position. Key states and position are restored together
  or not at all.
* **Fences.** A replica restoring p first appends a fence record; its offset is the replica's
  epoch for p, and the end of what it must read (no end-offset query). A record of an older
  epoch behind a newer fence comes from a replica that lost p without knowing it yet (a
  zombie), and is ignored.
* **Cache.** The local store remembers, per partition, the offset of the last marker it
  applied or wrote. A restore reads only what follows it, after checking that the marker there
  is the checkpoint the store holds (else the store's copy of p is dropped and p is read whole).

* **Compaction keys that alternate.** Markers are keyed by epoch and checkpoint id and fences
  by a random id, so compaction never removes one. A key's state record is keyed ``s/<epoch>/<slot>/<key>``, and
  each key alternates between slot 0 and slot 1: the writer sends a key's next state to the
  slot its last *committed* state is not in, and flips the key's slot only once the broker has
  acknowledged that checkpoint's marker. A publish that fails (the marker may or may not have
  landed) ends the writer's epoch: its next checkpoint first appends a new fence.

Why a compacting broker cannot make a restore wrong. Compaction keeps, per compaction key, at
least the last record, and keeps the log order of what it keeps. Take any key ``a`` of p and
its last committed state R (written at checkpoint C, epoch E, slot x). (1) R survives: within
E one writer sends ``a`` to slot x again only after a later write of ``a`` to the other slot
was committed, which contradicts R being the last; a half-written checkpoint after C writes
``a`` to the other slot; another epoch's records have other compaction keys; and the writer
of E sends nothing to E's keys once a publish of E failed. (2) C's marker survives (never
compacted) and follows R. (3) Every record of ``a`` the replay applies after R belongs to a
checkpoint with a marker, hence committed, hence — R being the last committed — to an older
epoch's zombie, which the fence rule drops. So the replay ends with R for every key, with the
position of the last marker: a half-written tail is ignored, compacted or not. The cost: a
key's records of an epoch stay until the key is written again in that epoch, so a partition
that changed owner keeps up to two records per key per past owner (keys × reassignments).

Values are :func:`adaptd.checkpoint.encode` blobs (checksummed pickles): only the daemon's
group may write these topics.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from adaptd.checkpoint import (
    CheckpointError,
    CheckpointStore,
    PartitionChanges,
    decode,
    encode,
)
from adaptd.state_topics import StateClients, TopicClients, topic_name

log = logging.getLogger(__name__)

_FENCE, _STATE, _MARK = "fence", "state", "mark"


@dataclass
class _Checkpoint:
    """Key records of one (epoch, checkpoint) read so far, waiting for their marker."""

    states: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, list[Any]] = field(default_factory=dict)


def apply_records(records: Iterable[tuple[int, dict[str, Any]]], partition: int,
                  store: CheckpointStore, replace: bool) -> int:
    """Apply the complete checkpoints among ``records`` ((offset, decoded value) of one
    changelog partition, in log order, compacted or not) to ``store``; returns how many. With
    ``replace``, the store's copy is dropped before the first (a changelog with no complete
    checkpoint leaves it: written before the changelog was, it is all there is)."""
    pending: dict[tuple[int, int], _Checkpoint] = {}
    newest_fence = -1
    applied = 0
    for offset, value in records:
        kind = value["kind"]
        if kind == _FENCE:
            newest_fence = offset
            continue
        if kind not in (_STATE, _MARK):
            continue
        if value["epoch"] < newest_fence:
            continue  # written by a replica that had lost the partition: fenced off
        at = (value["epoch"], value["checkpoint"])
        if kind == _STATE:
            entry = pending.setdefault(at, _Checkpoint())
            entry.states[value["key"]] = value["state"]
            if value["labels"]:
                entry.labels[value["key"]] = value["labels"]
        elif kind == _MARK:
            done = pending.pop(at, _Checkpoint())
            if replace:
                store.drop_partition(partition)
                replace = False
            store.apply_restored(
                partition, PartitionChanges(value["position"], done.states, done.labels),
                checkpoint=value["checkpoint"], changelog_offset=offset, shared=value["shared"])
            applied += 1
    if pending:
        log.warning("partition %d: %d incomplete checkpoints in changelog %s ignored (their "
                    "writer stopped before its commit marker)", partition, len(pending),
                    store.path)
    return applied


class Changelog:
    """The changelog of one Kafka source topic and group. Runner thread only; every method
    blocks on the broker.

    Args:
        bootstrap: ``HOST:PORT[,…]`` of the source's brokers.
        topic: the source topic.
        group: the source's consumer group (None: no group).
        read_timeout_s: longest wait for a restore read to reach its fence.
        clients: the cluster's state-topic clients, shared with the meta topic (None: its own).
    """

    def __init__(self, bootstrap: str, topic: str, group: str | None,
                 read_timeout_s: float = 60.0, clients: StateClients | None = None) -> None:
        self.bootstrap = bootstrap
        self.source_topic = topic
        self.topic = topic_name(topic, group, "changelog")
        self.read_timeout_s = read_timeout_s
        #: partition → this replica's epoch (the offset of its fence) while it owns it.
        self.epochs: dict[int, int] = {}
        #: partition → keys whose next state goes to slot 1 in this epoch (others: slot 0).
        self._slot_one: dict[int, set[str]] = {}
        self.clients = TopicClients(clients or StateClients(bootstrap), self.topic,
                                    self._source_partitions)

    def _source_partitions(self, consumer: KafkaConsumer) -> int:
        # One changelog partition per source partition: a key's state stays with its partition.
        # 0 while the source topic does not exist: the changelog is made once it does (at the
        # first assignment), not with a guessed count its partitions may outnumber.
        return len(consumer.partitions_for_topic(self.source_topic) or ())

    def close(self) -> None:
        self.clients.close()

    # -- restore -------------------------------------------------------------------------

    def restore(self, partition: int, store: CheckpointStore) -> int:
        """Bring ``store``'s copy of ``partition`` up to the last complete checkpoint in the
        changelog; returns how many checkpoints were applied. Called on assignment, before the
        partition is loaded. Raises OSError when the broker is away."""
        return self.restore_all([partition], store)[partition]

    def restore_all(self, partitions: Collection[int], store: CheckpointStore) -> dict[int, int]:
        """:meth:`restore` of each of ``partitions``, their fences written together: one
        round trip to the broker, not one per partition. Returns partition → checkpoints
        applied."""
        _, consumer = self.clients.get()
        fences = self._fences(partitions)
        applied = {}
        for partition, fence in fences.items():
            start = self._cache_start(partition, store, consumer)
            applied[partition] = apply_records(
                self._read(consumer, partition, start, fence - 1), partition, store,
                replace=start == 0)
            log.info("partition %d restored from changelog %s offsets %d..%d: %d checkpoints "
                     "applied", partition, self.topic, start, fence, applied[partition])
        return applied

    def _fence(self, partition: int) -> int:
        """Append a fence to ``partition``; its offset is this replica's new epoch there."""
        return self._fences([partition])[partition]

    def _fences(self, partitions: Collection[int]) -> dict[int, int]:
        """Append a fence to each of ``partitions``, all sent before waiting for any; each
        one's offset is this replica's new epoch in its partition."""
        producer, consumer = self.clients.get()
        self._check_width(consumer, partitions)
        try:
            # Its own compaction key (never compacted away): a zombie's records after it must
            # stay recognizable as fenced off.
            sent = {p: producer.send(self.topic, key=f"f/{uuid.uuid4().hex}".encode(),
                                     partition=p, value=encode({"kind": _FENCE}))
                    for p in sorted(partitions)}
            offsets = {p: int(future.get(timeout=30).offset) for p, future in sent.items()}
        except KafkaError as exc:
            raise OSError(f"changelog {self.topic}{sorted(partitions)}: fence not written "
                          f"({exc})") from None
        for p, offset in offsets.items():
            self.epochs[p] = offset
            self._slot_one[p] = set()  # no key has a record of this epoch yet
        return offsets

    def _check_width(self, consumer: KafkaConsumer, partitions: Collection[int]) -> None:
        """Raise OSError, saying what to do, when the changelog has fewer partitions than the
        source: the source topic grew after its changelog was made, and a key's state must
        stay in its own partition's changelog (adaptd does not repartition it)."""
        have = consumer.partitions_for_topic(self.topic)
        missing = sorted(set(partitions) - have)
        if missing:
            raise OSError(
                f"changelog {self.topic} has {len(have)} partitions, but source "
                f"{self.source_topic} partitions {missing} were assigned: the source topic "
                f"grew after its changelog was made; add partitions to the changelog so that "
                f"it has as many as {self.source_topic}")

    def _cache_start(self, partition: int, store: CheckpointStore,
                     consumer: KafkaConsumer) -> int:
        """Where the replay starts: after the marker the local store last applied, if that
        marker is the checkpoint the store holds; else 0 (the whole partition)."""
        held = store.changelog_mark(partition)
        if held is not None:
            offset, checkpoint = held
            records = list(self._read(consumer, partition, offset, offset))
            if records and records[0][1].get("checkpoint") == checkpoint \
                    and records[0][1].get("kind") == _MARK:
                return offset + 1
            log.warning("partition %d: the state dir's copy is not in changelog %s; "
                        "restoring it whole", partition, self.topic)
        return 0

    def _read(self, consumer: KafkaConsumer, partition: int, first: int,
              last: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """Decoded records at offsets ``first``..``last`` of one changelog partition, as read."""
        if last < first:
            return
        tp = TopicPartition(self.topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, first)
        deadline = time.monotonic() + self.read_timeout_s
        while consumer.position(tp) <= last:
            if time.monotonic() > deadline:
                raise OSError(f"changelog {self.topic}[{partition}]: offset {last} not reached "
                              f"in {self.read_timeout_s:.0f} s")
            for record in consumer.poll(timeout_ms=200).get(tp, ()):
                if first <= record.offset <= last:
                    yield record.offset, self._decode(record.value, partition, record.offset)

    def _decode(self, blob: bytes | None, partition: int, offset: int) -> dict[str, Any]:
        if blob is None:  # a tombstone: nothing to restore
            return {"kind": "tombstone"}
        try:
            return dict(decode(blob, f"changelog {self.topic}[{partition}]@{offset}"))
        except CheckpointError as exc:
            raise OSError(str(exc)) from None

    # -- publish -------------------------------------------------------------------------

    def publish(self, checkpoint: int, changes: Mapping[int, PartitionChanges],
                shared: Mapping[str, Any]) -> dict[int, int]:
        """Append each partition's changed key states, then its commit marker; wait until the
        broker has them all. Returns partition → offset of its marker. Raises OSError when the
        broker refuses (the checkpoint is then not committed)."""
        producer, _ = self.clients.get()
        markers, sent = {}, {}
        try:
            for p, change in changes.items():
                if p not in self.epochs:  # a failed publish ended the last epoch
                    self._fence(p)
                epoch, one = self.epochs[p], self._slot_one[p]
                sent[p] = self._send_states(producer, p, epoch, checkpoint, change, one)
                markers[p] = producer.send(
                    self.topic, partition=p, key=f"m/{epoch}/{checkpoint}".encode(),
                    value=encode({"kind": _MARK, "epoch": epoch, "checkpoint": checkpoint,
                                  "position": change.position, "shared": dict(shared)}))
            producer.flush(timeout=30)
            offsets = {p: future.get(timeout=30).offset for p, future in markers.items()}
        except (KafkaError, OSError) as exc:
            for p in changes:  # whether the marker landed is unknown: never write here again
                self.epochs.pop(p, None)
            raise OSError(f"changelog {self.topic}: checkpoint {checkpoint} not published "
                          f"({exc})") from None
        for p, (to_one, to_zero) in sent.items():  # committed: the keys' slots flip
            self._slot_one[p] -= to_zero
            self._slot_one[p] |= to_one
        return offsets

    def _send_states(self, producer: Any, p: int, epoch: int, checkpoint: int,
                     change: PartitionChanges, one: set[str]) -> tuple[set[str], set[str]]:
        """Send the changed key states of ``p``, each to the slot its committed state is not
        in (slot 1 for the keys in ``one``). Returns, for once the checkpoint is committed, the
        keys whose next state goes to slot 1 and those whose next goes to slot 0."""
        next_one: set[str] = set()
        next_zero: set[str] = set()
        for key, state in change.states.items():
            slot = 1 if key in one else 0
            (next_zero if slot else next_one).add(key)
            producer.send(self.topic, partition=p, key=f"s/{epoch}/{slot}/{key}".encode(),
                          value=encode({"kind": _STATE, "epoch": epoch,
                                        "checkpoint": checkpoint, "key": key, "state": state,
                                        "labels": change.labels.get(key, [])}))
        return next_one, next_zero

    def release(self, partitions: list[int]) -> None:
        """Forget the epochs of partitions this replica no longer owns."""
        for p in partitions:
            self.epochs.pop(p, None)
            self._slot_one.pop(p, None)
