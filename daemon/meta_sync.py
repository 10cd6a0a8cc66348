"""One meta-state across the replicas of a group: publish to a compacted topic, merge by tasks.

Every replica learns its meta-state (θ0, B, G) from the tasks its own keys close. On a schedule
and at start it publishes that state with the count of tasks it closed itself to the compacted
topic ``<topic>.<group>.adaptd-meta`` (keyed by replica), reads every replica's latest record
and takes their average weighted by those counts: federated averaging (McMahan et al. 2017,
"Communication-Efficient Learning of Deep Networks from Decentralized Data", AISTATS) of
Reptile / ARUBA meta-states (Khodak, Balcan, Talwalkar 2019, "Adaptive Gradient-Based
Meta-Learning Methods", NeurIPS, whose meta-updates are online averages and so average across
replicas the same way). A new replica starts from the merged state.

The merged state's task count is the sum of the replicas' own counts, so a task is counted once
however often states are merged: a replica's own count is its meta-state's count minus the
tasks it took from others at its last merge (``foreign``), kept with the checkpoint's shared
state. A replica's record stays after it leaves: its tasks were learned, they stay in the mean.

Values are :func:`adaptd.checkpoint.encode` blobs; only the daemon's group may write the topic.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from adaptd.checkpoint import CheckpointError, decode, encode
from adaptd.meta.state import MetaState, Moments, average, moments_without, pool_moments
from adaptd.shared_moments import live_moments, with_moments
from adaptd.state_topics import StateClients, TopicClients, topic_name

log = logging.getLogger(__name__)


class MetaSync:
    """This replica's side of the group's meta topic. Runner thread only; :meth:`merge` blocks
    on the broker.

    Args:
        bootstrap, topic, group: the Kafka source's brokers, topic and consumer group.
        interval_s: seconds between merges (see :meth:`due`).
        clock: monotonic seconds; injected by tests.
        clients: the cluster's state-topic clients, shared with the changelog (None: its own).
    """

    def __init__(self, bootstrap: str, topic: str, group: str | None, interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic,
                 clients: StateClients | None = None) -> None:
        self.bootstrap = bootstrap
        self.topic = topic_name(topic, group, "meta")
        self.interval_s = interval_s
        self.clock = clock
        #: Stable across restarts of one state dir (restored with the shared state).
        self.replica = secrets.token_hex(8)
        #: Tasks in this replica's meta-state that other replicas closed.
        self.foreign = 0
        #: The same for the running moments: the others' share of each, by place.
        self.foreign_moments: dict[str, Moments | None] = {}
        self._last_merge = -float("inf")
        self.clients = TopicClients(clients or StateClients(bootstrap), self.topic, lambda _: 1)

    # -- what the checkpoint keeps -------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {"replica": self.replica, "foreign": self.foreign,
                "foreign_moments": self.foreign_moments}

    def restore(self, state: Mapping[str, Any] | None) -> None:
        if state:
            self.replica, self.foreign = str(state["replica"]), int(state["foreign"])
            self.foreign_moments = dict(state.get("foreign_moments") or {})

    # -- merging -------------------------------------------------------------------------

    def due(self) -> bool:
        return self.clock() - self._last_merge >= self.interval_s

    def merge(self, shared: Mapping[str, Any]) -> dict[str, Any] | None:
        """Publish this replica's part of ``shared`` (its learner's live shared state): its
        meta-state with its own task count and its own share of the running moments
        (:func:`live_moments`); read the group's latest records; return ``shared``'s
        meta-state and moments replaced by the group's (meta-states averaged by tasks, moments
        pooled), or None when the group has nothing to merge yet. Raises OSError when the
        broker is away."""
        self._last_merge = self.clock()
        meta = shared.get("meta")
        own = 0 if meta is None else max(int(meta["tasks"]) - self.foreign, 0)
        live = live_moments(shared)
        mine = {where: moments_without(m, self.foreign_moments.get(where))
                for where, m in live.items()}
        producer, consumer = self.clients.get()
        record = {"replica": self.replica, "own": own, "moments": mine,
                  "meta": None if meta is None else dict(meta)}
        try:
            # Publishing first also marks how far to read: up to this replica's own record.
            sent = producer.send(self.topic, key=self.replica.encode(), partition=0,
                                 value=encode(record)).get(timeout=30)
            # At offset 0 it is the topic's first record: nothing of the others' to read.
            published = self._read_to(consumer, sent.offset) if sent.offset > 0 else {}
        except KafkaError as exc:
            raise OSError(f"meta topic {self.topic}: {exc}") from None
        published[self.replica] = record
        pooled = {where: pool_moments([e.get("moments", {}).get(where)
                                       for e in published.values()]) for where in live}
        merged_moments = {where: m for where, m in pooled.items() if m is not None}
        self.foreign_moments = {where: moments_without(m, mine[where])
                                for where, m in merged_moments.items()}
        out = with_moments(shared, merged_moments)
        entries = [e for e in published.values() if e["own"] > 0 and e["meta"] is not None]
        if entries:
            merged = average([MetaState.from_dict(e["meta"]) for e in entries],
                             [e["own"] for e in entries])
            self.foreign = merged.tasks - own
            # The statistics a meta-state carries stay this replica's: the live ones are
            # merged above, and meta.pt is written with them (adaptd.partitions).
            merged.scaler = meta.get("scaler") if meta is not None else None
            out["meta"] = merged.to_dict()
            log.info("meta-state merged from %d replicas: %d tasks (%d own)", len(entries),
                     merged.tasks, own)
        elif not merged_moments:
            return None
        return out

    def _read_to(self, consumer: KafkaConsumer, last: int) -> dict[str, dict[str, Any]]:
        """Every replica's latest record up to offset ``last`` (this replica's own)."""
        tp = TopicPartition(self.topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        latest: dict[str, dict[str, Any]] = {}
        deadline = self.clock() + 60.0
        while consumer.position(tp) <= last:
            if self.clock() > deadline:
                raise OSError(f"meta topic {self.topic}: offset {last} not reached in 60 s")
            for record in consumer.poll(timeout_ms=200).get(tp, ()):
                if record.value is None or record.offset > last:
                    continue
                try:
                    entry = decode(record.value, f"meta topic {self.topic}@{record.offset}")
                except CheckpointError as exc:
                    log.error("ignored: %s", exc)
                    continue
                latest[entry["replica"]] = entry
        return latest

    def close(self) -> None:
        self.clients.close()
