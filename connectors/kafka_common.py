"""What the two Kafka clients share: the partition-listener glue of a source, and the
retry-and-backlog bookkeeping of a sink. Each client module (``kafka_python``,
``kafka_librdkafka``) only adds the calls into its library.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import abstractmethod
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from adaptd.connectors.base import (
    EncodedBatch,
    PartitionListener,
    RecordRun,
    Sink,
    SinkMessage,
    Source,
    SourceRecord,
)
from adaptd.connectors.kafka_options import KafkaSinkOptions, KafkaSourceOptions
from adaptd.errors import SinkError, UnavailableError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class KafkaRecordRun(RecordRun):
    """A :class:`RecordRun` that keeps the records as polled, so one taken out of it (to be
    dead-lettered, say) keeps its Kafka key and timestamp."""

    polled: list[SourceRecord] = field(default_factory=list)

    def __getitem__(self, i: int) -> SourceRecord:
        return self.polled[i]

    def records(self) -> list[SourceRecord]:
        return self.polled


def as_run(records: list[SourceRecord]) -> list[SourceRecord] | RecordRun:
    """``records`` as one run when they are consecutive positions of one partition (a poll
    that drew from one partition, and no gap: compaction and transaction markers leave gaps),
    so the daemon decodes them in columns; else the list as it is."""
    if not records:
        return records
    first = records[0]
    if (records[-1].position - first.position != len(records) - 1
            or len({r.partition for r in records}) != 1):
        return records
    return KafkaRecordRun(first.partition, first.position, [r.value for r in records],
                          records)


class KafkaSourceBase(Source):
    """Partition bookkeeping both clients share. Called from one thread at a time: the
    daemon reads a batch ahead on a second thread (:mod:`adaptd.read_ahead`), which hands the
    rebalance callbacks that run inside ``poll`` to the daemon's thread, so they never run
    alongside record work. Polled while paused: the poll keeps the consumer in its group and
    runs those callbacks."""

    polls_on_any_thread = True
    calls_listener_from_poll = True

    def __init__(self, options: KafkaSourceOptions) -> None:
        self.options = options
        #: The client's consumer while open.
        self._consumer: Any = None
        self._listener: PartitionListener | None = None
        self._start_positions: dict[int, int] = {}
        self._paused = False
        self._assigned: set[int] = set()
        self._returned = 0
        #: The positions last committed without waiting: committed again, waiting, at close.
        self._last_commit: dict[int, int] = {}

    def _budget(self, max_records: int) -> int:
        """How many records this poll may return under ``limit``; UnavailableError if the
        source is not open (the daemon retries opening it)."""
        if self._consumer is None:
            raise UnavailableError(f"{self.options.where}: the source is not open")
        if self.options.limit is None:
            return max_records
        return min(max_records, self.options.limit - self._returned)

    @property
    def exhausted(self) -> bool:
        return self.options.limit is not None and self._returned >= self.options.limit

    def poll_many(self, max_records: int, timeout_s: float) -> list[SourceRecord] | RecordRun:
        """:meth:`poll`, as one run when that is what it returned (see :func:`as_run`)."""
        return as_run(self.poll(max_records, timeout_s))

    def assigned(self) -> Collection[int]:
        return sorted(self._assigned)

    def _release(self, close_consumer: Callable[[Any], None]) -> None:
        """Close the consumer (idempotent); a failure is logged: the broker may be gone, and
        nothing is left to save (the daemon has checkpointed)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                close_consumer(consumer)
            except Exception:
                log.warning("%s: closing the consumer failed", self.options.where, exc_info=True)
        self._assigned.clear()

    def _positions_for(self, partitions: Sequence[int]) -> tuple[dict[int, int], list[int]]:
        """On assignment: where each partition resumes — the daemon's checkpoint, else the
        positions the source was opened at — and which have none (the reset policy decides).

        The group's committed offsets are never used: without a checkpoint they would resume
        a partition whose state is gone.
        """
        self._assigned.update(partitions)
        positions = dict(self._start_positions)
        if self._listener is not None:
            positions.update(self._listener.on_assigned(partitions))
        known = {p: positions[p] for p in partitions if p in positions}
        unknown = [p for p in partitions if p not in positions]
        log.info("%s: assigned partitions %s at positions %s", self.options.where,
                 sorted(partitions), {p: known.get(p, self.options.auto_offset_reset)
                                      for p in sorted(partitions)})
        return known, unknown

    def _revoked(self, partitions: Collection[int]) -> None:
        """Before partitions are taken away: the daemon flushes, checkpoints and commits."""
        if not partitions:
            return  # kafka-python says so before the first assignment, too
        log.info("%s: partitions %s are being revoked", self.options.where, sorted(partitions))
        if self._listener is not None:
            self._listener.on_revoked(partitions)
        self._assigned.difference_update(partitions)

    def _lost(self, partitions: Collection[int]) -> None:
        # Lost, not revoked (our group session expired): another member may own them already,
        # so nothing may be checkpointed or committed for them. A listener with ``on_lost``
        # just lets go; one without it is told they were revoked.
        if not partitions:
            return
        log.warning("%s: partitions %s were lost (group session expired)", self.options.where,
                    sorted(partitions))
        on_lost = getattr(self._listener, "on_lost", None)
        if on_lost is not None:
            on_lost(partitions)
        elif self._listener is not None:
            self._listener.on_revoked(partitions)
        self._assigned.difference_update(partitions)

    def commit(self, next_positions: Mapping[int, int]) -> None:
        """Commit the group's offsets to the checkpointed positions, for lag tools and
        operators, without waiting for the broker: a checkpoint's stall (the records held
        back meanwhile) is one round trip shorter. Failure is logged, not raised: the
        checkpoint is the truth, and the daemon resumes from it, never from these offsets.
        :meth:`close` commits the last positions again and waits."""
        positions = self._committable(next_positions)
        if self._consumer is None or not positions:
            return
        self._last_commit.update(positions)
        self._commit(positions, wait=False)

    def _commit_last(self) -> None:
        """Before the consumer closes: the last committed positions of the partitions still
        owned, waiting for the broker, so lag tools see where the run stopped."""
        positions = self._committable(self._last_commit)
        self._last_commit = {}
        if self._consumer is not None and positions:
            self._commit(positions, wait=True)

    def _commit(self, positions: Mapping[int, int], wait: bool) -> None:
        """Send the client's offset commit; log (not raise) a failure."""
        raise NotImplementedError

    def _committable(self, next_positions: Mapping[int, int]) -> dict[int, int]:
        """Positions worth committing: only a group has offsets, only for owned partitions."""
        if self.options.group is None:
            return {}
        return {p: n for p, n in next_positions.items() if p in self._assigned}


class KafkaSinkBase(Sink):
    """Produces messages to one topic without per-message bookkeeping on the hot path.

    ``write`` never blocks on the broker: messages the producer cannot take yet (no broker
    at start, full buffer) wait here; deliveries that fail come back through
    :meth:`_collect` and are sent again, with a fresh producer, so a prediction is lost only if
    the process dies, which the checkpoint order covers.

    Written behind (:mod:`adaptd.write_behind`): :meth:`write_encoded` runs on a thread of its
    own, and the daemon's thread may call :meth:`backlog` and :meth:`flush` meanwhile; all
    three hold ``_lock``. Every other method is called once no write is in progress.
    """

    writes_on_any_thread = True

    def __init__(self, options: KafkaSinkOptions) -> None:
        self.options = options
        self._producer: Any = None
        # Not yet handed to the producer (no broker yet, full buffer, or a failed delivery).
        self._waiting: deque[SinkMessage] = deque()
        # Failed deliveries the client reported, waiting to be sent again.
        self._failed: deque[tuple[SinkMessage, object]] = deque()
        self._resent = 0
        self._next_connect_at = 0.0
        self._closed = False
        # Held by write_encoded and backlog, the calls that may overlap (see the docstring).
        self._lock = threading.RLock()

    # -- what each client provides ---------------------------------------------------------

    @abstractmethod
    def _create_producer(self) -> Any:
        """A new producer (creating the topic if asked); UnavailableError if no broker."""

    @abstractmethod
    def _send(self, producer: Any, waiting: deque[SinkMessage]) -> None:
        """Hand messages from the left of ``waiting`` to the producer, popping each one it
        took; stop (without raising) at the first it does not take."""

    def _send_columns(self, producer: Any, values: list[bytes],
                      keys: Sequence[bytes | None]) -> int:
        """Hand messages given as columns (no headers) to the producer, in order; returns how
        many it took (the rest wait in the sink). The default goes through :meth:`_send`."""
        waiting = deque(map(SinkMessage, values, keys))
        self._send(producer, waiting)
        return len(values) - len(waiting)

    @abstractmethod
    def _collect(self) -> None:
        """Account for finished deliveries; append failed ones to ``_failed``. Non-blocking;
        called with or without a producer (after a close, for what the old one returned)."""

    @abstractmethod
    def _in_flight(self) -> int:
        """Messages the producer holds that are not acknowledged yet."""

    @abstractmethod
    def _flush_producer(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the producer's deliveries; SinkError on client errors."""

    @abstractmethod
    def _close_producer(self, producer: Any, timeout_s: float) -> None:
        """Close a producer; what it still holds must end up in ``_failed`` (or be sent)."""

    # -- shared ------------------------------------------------------------------------------

    def _connect(self) -> bool:
        """Create the producer if there is none; False (and a log line) while no broker answers."""
        if self._producer is not None:
            return True
        now = time.monotonic()
        if now < self._next_connect_at:
            return False
        try:
            self._producer = self._create_producer()
        except UnavailableError as exc:
            self._next_connect_at = now + self.options.reconnect_backoff_max_ms / 1000
            log.warning("%s: sink cannot reach a broker, holding %d messages: %s",
                        self.options.where, len(self._waiting), exc)
            return False
        log.info("%s: sink connected (%s)", self.options.where, self.options.client)
        return True

    def write(self, messages: Sequence[SinkMessage]) -> None:
        """Queue messages; never blocks on the broker for long. See :meth:`backlog`."""
        if self._closed:
            raise SinkError(f"{self.options.where}: write after close")
        self._waiting.extend(messages)
        self._drain()

    def write_encoded(self, batch: EncodedBatch) -> None:
        """Queue a pre-encoded batch: its values go to the producer as columns, with no
        message object each, unless earlier messages still wait (order is kept)."""
        with self._lock:
            self._write_encoded(batch)

    def _write_encoded(self, batch: EncodedBatch) -> None:
        if self._closed:
            raise SinkError(f"{self.options.where}: write after close")
        self._drain()
        if self._waiting or not self._connect():
            self._waiting.extend(batch.messages())
            return
        values, keys = batch.values(), batch.keys
        taken = self._send_columns(self._producer, values, keys)
        if taken < len(values):
            self._waiting.extend(map(SinkMessage, values[taken:], keys[taken:]))

    def _drain(self) -> None:
        """Hand waiting and failed messages to the producer while it accepts them."""
        self._collect()
        if self._failed:
            failed = list(self._failed)
            self._failed.clear()
            self._resent += len(failed)
            log.warning("%s: %d deliveries failed (first: %s); sending them again with a new "
                        "producer", self.options.where, len(failed), failed[0][1])
            self._waiting.extendleft(msg for msg, _ in reversed(failed))
            # Some failures leave a producer unusable for good (an idempotent producer whose
            # id the broker forgot, after a broker lost its state): start afresh.
            self._discard_producer()
        if self._waiting and self._connect():
            self._send(self._producer, self._waiting)

    def _discard_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            # Nothing to wait for: what it still holds fails over to the retry queue.
            self._close_producer(producer, 0)
        except Exception:  # a broken producer may fail to close; it is dropped either way
            log.debug("%s: closing a failed producer raised", self.options.where, exc_info=True)

    @property
    def failed_deliveries(self) -> int:
        """Deliveries the client reported failed (sent again, or waiting to be), over the
        sink's life."""
        with self._lock:
            self._collect()
            return self._resent + len(self._failed)

    def backlog(self) -> int:
        """Messages written but not yet acknowledged by the broker."""
        with self._lock:
            self._collect()
            return len(self._waiting) + len(self._failed) + self._in_flight()

    def flush(self) -> None:
        """Block until every message written so far is acknowledged; raises SinkError after
        ``flush_timeout_ms``. Failed deliveries are sent again meanwhile. Holds ``_lock``: the
        daemon's backpressure flushes while a write may be in progress behind it."""
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        deadline = time.monotonic() + self.options.flush_timeout_ms / 1000
        while True:
            self._drain()
            if self._producer is not None:
                self._flush_producer(max(0.001, deadline - time.monotonic()))
            if self.backlog() == 0:
                return
            if time.monotonic() >= deadline:
                raise SinkError(
                    f"{self.options.where}: {self.backlog()} messages not acknowledged within "
                    f"flush_timeout_ms={self.options.flush_timeout_ms}"
                )
            time.sleep(0.05)  # failed deliveries came back; give the reconnect a moment

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                self._close_producer(producer, 5)
            except Exception:
                log.warning("%s: closing the producer failed", self.options.where, exc_info=True)
        backlog = self.backlog()
        if backlog:
            log.warning("%s: closed with %d messages not delivered", self.options.where, backlog)
