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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from adaptd.checkpoint import CheckpointError, decode, encode
from adaptd.state_topics import TopicClients, topic_name

log = logging.getLogger(__name__)


def weighted_average(states: Sequence[Mapping[str, Any]], weights: Sequence[float]
                     ) -> dict[str, Any]:
    """The meta-state (``MetaState.to_dict()`` form) whose θ0, B, G and α are the
    ``weights``-weighted means of ``states``; ``tasks`` is the sum of the weights.

    >>> a = {"theta0": np.array([0.0]), "B": np.array([1.0]), "G": np.array([2.0]),
    ...      "tasks": 9, "alpha": 1.0, "model": {"model": "linear"}}
    >>> b = {**a, "theta0": np.array([4.0])}
    >>> merged = weighted_average([a, b], [1, 3])
    >>> merged["theta0"].tolist(), merged["B"].tolist(), merged["tasks"]
    ([3.0], [1.0], 4)
    """
    w = np.asarray(weights, dtype=np.float64)
    if not len(states) or w.sum() <= 0:
        raise ValueError(f"weighted_average needs states with positive total weight, got {w}")
    w = w / w.sum()
    merged: dict[str, Any] = {
        name: np.sum([wi * np.asarray(s[name], dtype=np.float64) for wi, s in
                      zip(w, states, strict=True)], axis=0)
        for name in ("theta0", "B", "G")
    }
    merged["alpha"] = float(sum(wi * float(s["alpha"]) for wi, s in zip(w, states, strict=True)))
    merged["tasks"] = round(sum(weights))
    merged["model"] = dict(states[0].get("model", {}))
    return merged


class MetaSync:
    """This replica's side of the group's meta topic. Runner thread only; :meth:`merge` blocks
    on the broker.

    Args:
        bootstrap, topic, group: the Kafka source's brokers, topic and consumer group.
        interval_s: seconds between merges (see :meth:`due`).
        clock: monotonic seconds; injected by tests.
    """

    def __init__(self, bootstrap: str, topic: str, group: str | None, interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.bootstrap = bootstrap
        self.topic = topic_name(topic, group, "meta")
        self.interval_s = interval_s
        self.clock = clock
        #: Stable across restarts of one state dir (restored with the shared state).
        self.replica = secrets.token_hex(8)
        #: Tasks in this replica's meta-state that other replicas closed.
        self.foreign = 0
        self._last_merge = -float("inf")
        self.clients = TopicClients(bootstrap, self.topic, lambda _: 1)

    # -- what the checkpoint keeps -------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {"replica": self.replica, "foreign": self.foreign}

    def restore(self, state: Mapping[str, Any] | None) -> None:
        if state:
            self.replica, self.foreign = str(state["replica"]), int(state["foreign"])

    # -- merging -------------------------------------------------------------------------

    def due(self) -> bool:
        return self.clock() - self._last_merge >= self.interval_s

    def merge(self, meta: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """Publish ``meta`` (this replica's live meta-state; None before its first record)
        with its own task count, read the group's latest records and return their weighted
        mean, or None when no replica has closed a task yet. Raises OSError when the broker
        is away."""
        self._last_merge = self.clock()
        own = 0 if meta is None else max(int(meta["tasks"]) - self.foreign, 0)
        producer, consumer = self.clients.get()
        record = {"replica": self.replica, "own": own, "meta": None if meta is None else dict(meta)}
        try:
            # Publishing first also marks how far to read: up to this replica's own record.
            mine = producer.send(self.topic, key=self.replica.encode(), partition=0,
                                 value=encode(record)).get(timeout=30)
            published = self._read_to(consumer, mine.offset)
        except KafkaError as exc:
            raise OSError(f"meta topic {self.topic}: {exc}") from None
        published[self.replica] = record
        entries = [e for e in published.values() if e["own"] > 0]
        if not entries:
            return None
        merged = weighted_average([e["meta"] for e in entries], [e["own"] for e in entries])
        self.foreign = merged["tasks"] - own
        log.info("meta-state merged from %d replicas: %d tasks (%d own)", len(entries),
                 merged["tasks"], own)
        return merged

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
