"""The librdkafka client (``client=librdkafka``, through confluent-kafka): source and admin;
the sink is :mod:`adaptd.connectors.kafka_librdkafka_sink`.

librdkafka does fetching, batching, compression and retries in C threads that do not hold
the GIL, so the daemon's thread only pays for the per-record calls into it. Semantics are the
kafka-python client's, through the same shared glue: the daemon's positions win over the
group's offsets, rebalance callbacks run inside ``poll`` on the daemon's thread, a failed
delivery comes back to the sink and is sent again.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from adaptd.connectors.base import PartitionListener, RecordRun, SourceRecord
from adaptd.connectors.kafka_common import KafkaSourceBase
from adaptd.connectors.kafka_options import (
    KafkaClientOptions,
    KafkaSourceOptions,
)
from adaptd.errors import ConfigError, UnavailableError

log = logging.getLogger(__name__)

try:
    import confluent_kafka as ck

    # The consumer's metadata answer is made of these classes: imported at the first
    # ``list_topics``, that is while the source opens, otherwise.
    import confluent_kafka.admin  # noqa: F401
except ImportError:  # pragma: no cover - the librdkafka extra is a dev dependency
    ck = None  # type: ignore[assignment]

#: librdkafka needs a group id even for a consumer that only assigns partitions; with
#: ``assign`` it never joins that group, and without ``group`` in the URI nothing is committed.
_NO_GROUP = "adaptd-assign-only"

#: The fewest messages of several partitions a poll splits into one run per partition. Each
#: batch costs the daemon about a millisecond whatever its size, and a record of a list about
#: a microsecond more than one of a run: records trickling in (a few dozen a consume, from
#: every partition) go as one list, not as a batch per partition, which at 23k records/s took
#: the daemon's loop from idle half the time to saturated.
SPLIT_FROM = 1024

if ck is not None:
    # Unbound methods: ``map`` calls them in C, with no attribute lookup per message.
    _value, _partition, _error = ck.Message.value, ck.Message.partition, ck.Message.error


def _record(m: Any) -> SourceRecord:
    """A librdkafka message as a :class:`SourceRecord`; a tombstone (no value) reads as no
    bytes, as with kafka-python: the decoder rejects it as data."""
    value = m.value()
    return SourceRecord(m.partition(), m.offset(), b"" if value is None else value, m.key(),
                        m.timestamp()[1])


@dataclass(slots=True)
class MessageRun(RecordRun):
    """A :class:`RecordRun` of librdkafka messages: ``values`` taken out in C, and the
    messages kept, so a record taken out of the run (to be dead-lettered, say) keeps its Kafka
    key and timestamp."""

    messages: list[Any] = field(default_factory=list)

    def __getitem__(self, i: int) -> SourceRecord:
        return _record(self.messages[i])

    def records(self) -> list[SourceRecord]:
        return list(map(_record, self.messages))


def client_config(options: KafkaClientOptions) -> dict[str, Any]:
    """The options' librdkafka properties, with librdkafka's own log lines sent to this
    module's logger (served inside poll) instead of straight to stderr."""
    return {**options.librdkafka_config(), "logger": log}


def require_client() -> None:
    """ConfigError (one line, naming the extra) if confluent-kafka is not installed."""
    if ck is None:
        raise ConfigError("kafka URI option client=librdkafka needs confluent-kafka: "
                          "pip install 'adaptd[librdkafka]'")


def ensure_topic(options: KafkaClientOptions, partitions: int) -> bool:
    """Create ``options.topic`` with ``partitions`` partitions unless it exists. Blocks.

    Returns True if it was created. Raises :class:`UnavailableError` if no broker answers.
    """
    require_client()
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(client_config(options))
    timeout_s = options.bootstrap_timeout_ms / 1000
    try:
        metadata = admin.list_topics(timeout=timeout_s)
        topic = metadata.topics.get(options.topic)
        if topic is not None and topic.error is None:
            return False
        futures = admin.create_topics([NewTopic(options.topic, partitions, 1)])
        futures[options.topic].result(timeout=options.request_timeout_ms / 1000)
    except ck.KafkaException as exc:
        if exc.args and exc.args[0].code() == ck.KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise UnavailableError(f"{options.where}: no broker reachable or creating the topic "
                               f"failed: {exc}") from exc
    log.info("created topic %s with %d partitions", options.where, partitions)
    return True


class LibrdkafkaSource(KafkaSourceBase):
    """Reads one topic through confluent-kafka's ``Consumer``. Called from one thread."""

    _consumer: Any  # set up by KafkaSourceBase
    #: Set by the client's error callback when every broker is down; cleared by records or a
    #: successful metadata request. librdkafka retries by itself meanwhile.
    _brokers_down = False

    def __init__(self, options: KafkaSourceOptions) -> None:
        super().__init__(options)
        #: Messages fetched but not returned yet (see :meth:`poll_many`), in fetch order.
        self._held: list[Any] = []

    def open(
        self, start_positions: Mapping[int, int], listener: PartitionListener | None = None
    ) -> None:
        """Connect and subscribe (with a group) or assign every partition (without). Blocks
        up to ``bootstrap_timeout_ms``; raises :class:`UnavailableError` if no broker answers."""
        require_client()
        if self._consumer is not None:
            return
        self._listener = listener
        self._start_positions = dict(start_positions)
        o = self.options
        config = client_config(o)
        config.update({
            "group.id": o.group or _NO_GROUP,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # Reading must not create topics (with the broker's default partition count).
            "allow.auto.create.topics": False,
            "auto.offset.reset": o.auto_offset_reset,
            "fetch.wait.max.ms": o.fetch_max_wait_ms,
            "session.timeout.ms": o.session_timeout_ms,
            "heartbeat.interval.ms": o.heartbeat_ms,
            "max.poll.interval.ms": max(o.max_poll_interval_ms, o.session_timeout_ms),
            "error_cb": self._on_error,
            "on_commit": self._on_commit,
        })
        consumer: Any = ck.Consumer(config)
        try:
            partitions = self._topic_partitions(consumer, o.bootstrap_timeout_ms / 1000)
            self._consumer = consumer
            if o.group is not None:
                consumer.subscribe([o.topic], on_assign=self._cb_assign,
                                   on_revoke=self._cb_revoke, on_lost=self._cb_lost)
                log.info("%s: joining consumer group %r", o.where, o.group)
            elif not partitions:
                raise UnavailableError(f"{o.where}: the topic does not exist (yet)")
            else:
                self._on_assigned(partitions)
        except BaseException:
            self._consumer = None
            consumer.close()
            raise

    def _topic_partitions(self, consumer: Any, timeout_s: float) -> list[int]:
        """The topic's partitions from a metadata request; UnavailableError if no broker."""
        try:
            metadata = consumer.list_topics(self.options.topic, timeout=timeout_s)
        except ck.KafkaException as exc:
            raise UnavailableError(f"{self.options.where}: no broker reachable: {exc}") from exc
        self._brokers_down = False
        topic = metadata.topics.get(self.options.topic)
        if topic is None or topic.error is not None:
            return []
        return sorted(topic.partitions)

    def close(self) -> None:
        # Leaving the group runs the revoke callback; the daemon has checkpointed already
        # and must not be called back while it shuts down.
        self._listener = None
        self._held = []
        self._commit_last()
        self._release(lambda consumer: consumer.close())

    def poll(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        """Fetch up to ``max_records``. Rebalance callbacks run inside this call."""
        polled = self.poll_many(max_records, timeout_s)
        return polled.records() if isinstance(polled, RecordRun) else polled

    def poll_many(self, max_records: int, timeout_s: float) -> list[SourceRecord] | RecordRun:
        """:meth:`poll`, as one :class:`MessageRun` of one partition's consecutive positions
        whenever the messages allow: then no Python object is built per record beyond
        librdkafka's own message. A consume of :data:`SPLIT_FROM` messages or more that drew
        from several partitions (a third of them, polling 4,096 of 4 partitions) returns the
        first partition's run and keeps the rest for the next poll, which returns at once; a
        smaller one is one list, one batch."""
        messages = self._take_held(max_records) or self._fetch(max_records, timeout_s)
        if not messages:
            return []
        partitions = list(map(_partition, messages))
        first = messages[0]
        n = len(messages)
        partition = first.partition()
        one = partitions.count(partition) == n
        if not one and n >= SPLIT_FROM:
            # Where the next partition's block starts (a consume returns each partition's
            # fetched messages together); the rest waits for the next poll.
            n = min(partitions.index(q) for q in set(partitions) if q != partition)
            messages, self._held = messages[:n], messages[n:] + self._held
            one = True
        # No error event among them (checked first: an event has no offset, and a poll while
        # the brokers are down can return only events), consecutive positions (compaction and
        # transaction markers leave gaps: then a list), no tombstone (the list path reads it
        # as no bytes).
        if one and not any(map(_error, messages)) \
                and messages[-1].offset() - first.offset() == n - 1:
            values = list(map(_value, messages))
            if values.count(None) == 0:
                self._returned += n
                return MessageRun(partition, first.offset(), values, messages)
        out = [_record(m) for m in messages if m.error() is None]
        if len(out) < n:
            self._log_errors(messages)
        self._returned += len(out)
        return out

    def _take_held(self, max_records: int) -> list[Any]:
        """Up to ``max_records`` of the messages a poll fetched but did not return (none
        while paused: backpressure holds them too)."""
        if not self._held or self._paused:
            return []
        taken, self._held = self._held[:max_records], self._held[max_records:]
        return taken

    def _drop_held(self, partitions: Collection[int]) -> None:
        """Forget held messages of partitions this source no longer owns: their next owner
        resumes them from the checkpoint."""
        gone = set(partitions)
        if any(p in gone for p in map(_partition, self._held)):
            self._held = [m for m in self._held if m.partition() not in gone]

    def _fetch(self, max_records: int, timeout_s: float) -> list[Any]:
        """Up to ``max_records`` messages (see :meth:`_consume`), error events included."""
        max_records = self._budget(max_records)
        if max_records <= 0:
            return []
        try:
            messages = self._consume(max_records, timeout_s)
        except ck.KafkaException as exc:
            raise UnavailableError(f"{self.options.where}: {exc}") from exc
        if not messages:
            if self._brokers_down:
                # Tells "no new records" from "no broker" for /readyz and the logs.
                self._topic_partitions(self._consumer, min(timeout_s, 1.0))
            return []
        self._brokers_down = False
        return messages

    def _consume(self, max_records: int, timeout_s: float) -> list[Any]:
        """What is fetched already, up to ``max_records``; if nothing is, wait up to
        ``timeout_s`` for the first message only. ``consume(n, timeout)`` alone would wait
        until ``n`` messages came, which at a modest rate holds every record back for most of
        the timeout (tens of milliseconds of latency at a few thousand records a second)."""
        consumer = self._consumer
        messages: list[Any] = consumer.consume(max_records, 0)
        if messages or timeout_s <= 0:
            return messages
        first = consumer.poll(timeout_s)
        if first is None:
            return []
        return [first, *consumer.consume(max_records - 1, 0)] if max_records > 1 else [first]

    def _log_errors(self, messages: Sequence[Any]) -> None:
        for m in messages:
            err = m.error()
            if err is not None and err.code() != ck.KafkaError._PARTITION_EOF:
                log.warning("%s: consumer error: %s", self.options.where, err)

    def _on_error(self, err: Any) -> None:
        # librdkafka reports transport errors here and retries by itself.
        if err.code() == ck.KafkaError._ALL_BROKERS_DOWN:
            self._brokers_down = True
        log.debug("%s: client error: %s", self.options.where, err)

    def _on_commit(self, err: Any, _partitions: Any) -> None:
        # An asynchronous commit's outcome, served inside consume on this thread.
        if err is not None:
            log.warning("%s: committing offsets failed (the checkpoint holds them): %s",
                        self.options.where, err)

    def _commit(self, positions: Mapping[int, int], wait: bool) -> None:
        offsets = [ck.TopicPartition(self.options.topic, p, n) for p, n in positions.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=not wait)
        except ck.KafkaException as exc:
            log.warning("%s: committing offsets failed (the checkpoint holds them): %s",
                        self.options.where, exc)

    # -- partitions (librdkafka calls these inside consume, on this thread) -----------------

    def _cb_assign(self, _consumer: Any, tps: list[Any]) -> None:
        self._on_assigned([tp.partition for tp in tps])

    def _cb_revoke(self, _consumer: Any, tps: list[Any]) -> None:
        self._drop_held([tp.partition for tp in tps])
        self._revoked([tp.partition for tp in tps])

    def _cb_lost(self, _consumer: Any, tps: list[Any]) -> None:
        self._drop_held([tp.partition for tp in tps])
        self._lost([tp.partition for tp in tps])

    def _on_assigned(self, partitions: Sequence[int]) -> None:
        """Assign at the daemon's positions, else at the reset policy's end of the log."""
        known, _unknown = self._positions_for(partitions)
        reset = ck.OFFSET_BEGINNING if self.options.auto_offset_reset == "earliest" \
            else ck.OFFSET_END
        topic = self.options.topic
        tps = [ck.TopicPartition(topic, p, known.get(p, reset)) for p in partitions]
        self._consumer.assign(tps)
        if self._paused:
            self._consumer.pause(tps)

    def _tps(self) -> list[Any]:
        return [ck.TopicPartition(self.options.topic, p) for p in sorted(self._assigned)]

    def lag(self) -> Mapping[int, int]:
        """Records behind the high-water mark of the last fetch (no broker round trip), the
        ones fetched but not returned yet included."""
        if self._consumer is None or not self._assigned:
            return {}
        out = {}
        held = Counter(map(_partition, self._held))
        for tp in self._consumer.position(self._tps()):
            if tp.offset < 0:  # not fetched since the assignment yet
                continue
            _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                out[tp.partition] = max(0, high - tp.offset) + held[tp.partition]
        return out

    def pause(self) -> None:
        self._paused = True
        if self._consumer is not None and self._assigned:
            self._consumer.pause(self._tps())

    def resume(self) -> None:
        self._paused = False
        if self._consumer is not None and self._assigned:
            self._consumer.resume(self._tps())
