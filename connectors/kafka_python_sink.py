"""The kafka-python sink: whole record batches into the producer, without a ``send`` per message.

``KafkaProducer.send`` costs about 40 µs a message in pure Python (validation, partitioner,
size estimate, a future per message, locks), more than the daemon spends on a record
otherwise. A written batch of predictions is already encoded, so :class:`BatchAppender`
writes each partition's messages into a record batch (compiled, :mod:`.kafka_python_fill`, for
keyed messages without headers; :func:`.fill_batch` for the rest) and hands that batch to the
producer's accumulator, whose sender thread then does what it does for any batch: idempotent
sequence numbers, the produce request, retries, delivery timeout. While a partition's last
batch still waits in the accumulator (its linger not over), the next write goes on filling it,
as ``send`` does. Success or failure is one future per batch.

This reaches into kafka-python internals (``_accumulator``, ``_sender``), so
:meth:`BatchAppender.supported` checks they are there; the sink falls back to ``send`` per
message if a kafka-python release moves them.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from adaptd.connectors.base import SinkMessage
from adaptd.connectors.kafka_common import KafkaSinkBase
from adaptd.connectors.kafka_python import ensure_topic, quiet_client_logs
from adaptd.connectors.kafka_python_fill import Packed, Rows, fill_rows
from adaptd.connectors.kafka_python_records import Messages, can_fill, fill_batch
from adaptd.errors import SinkError, UnavailableError

log = logging.getLogger(__name__)


def failed_in_batch(messages: Messages | Rows | Sequence[SinkMessage], future: Any
                    ) -> list[tuple[SinkMessage, Any]]:
    """The messages of a completed batch that were not delivered, with why.

    kafka-python completes a batch's future with ``(base_offset, timestamp_ms,
    record_exceptions)``; a failed batch (expired, rejected) has ``record_exceptions``, which
    gives each record's error.
    """
    if future.exception is not None:
        return [(messages[i], future.exception) for i in range(len(messages))]
    record_exceptions = future.value[2] if isinstance(future.value, tuple) else None
    if record_exceptions is None:
        return []
    base = messages.base if isinstance(messages, Rows) else 0  # shares the batch
    return [(messages[i], e) for i in range(len(messages))
            if (e := record_exceptions(base + i)) is not None]


def _fill_packed(builder: Any, packed: Packed, rows: Any, start: int, now_ms: int
                 ) -> tuple[int, int]:
    return fill_rows(builder._builder, packed, rows, start, now_ms)


class BatchAppender:
    """Encodes messages into record batches, per partition, for one producer and topic.

    Called by one thread at a time (the sink's; see :class:`KafkaSinkBase`); the accumulator's
    per-partition lock guards what its sender thread shares.
    """

    def __init__(self, producer: Any, topic: str) -> None:
        self._producer = producer
        self._accumulator = producer._accumulator
        self._topic = topic
        config = self._accumulator.config
        self._magic = config["message_version"]
        self._compression = config["compression_attrs"]
        self._batch_bytes = config["batch_size"]
        # key → partition, as the Java client's murmur2 partitioner picks it; valid while the
        # topic's partition count stays the same.
        self._partition_of: dict[bytes, int] = {}
        self._partitions: list[int] = []
        #: Whether this append queued a new batch (the sender is woken for it).
        self._created = False
        from kafka.record.memory_records import MemoryRecordsBuilder

        #: Whether this producer's batches are v2 builders fill_rows can write.
        self._fills = can_fill(MemoryRecordsBuilder(self._magic, self._compression,
                                                    self._batch_bytes)._builder)

    @staticmethod
    def supported(producer: Any) -> bool:
        accumulator = getattr(producer, "_accumulator", None)
        return (accumulator is not None and hasattr(producer, "_sender")
                and hasattr(producer._sender, "add_topic")
                and hasattr(getattr(producer, "_metadata", None), "partitions_for_topic")
                and hasattr(producer._metadata, "request_update")
                and hasattr(accumulator, "_batches") and hasattr(accumulator, "_incomplete")
                and hasattr(accumulator, "_tp_lock")
                and {"message_version", "compression_attrs", "batch_size"}
                <= set(getattr(accumulator, "config", {})))

    def known_partitions(self) -> list[int] | None:
        """The topic's partitions, or None while the producer has not learned them: then it is
        asked to, and the caller holds the messages. Never blocks.

        ``KafkaProducer.partitions_for`` waits for the answer on the daemon's thread; the first
        write would wait there about 0.1 s (longer for a topic the broker creates on that
        request), with nothing learned meanwhile. Here the sender fetches the metadata while the
        daemon goes on with the next batch, as librdkafka does."""
        producer = self._producer
        partitions = producer._metadata.partitions_for_topic(self._topic)
        if partitions:
            return sorted(partitions)
        producer._sender.add_topic(self._topic)
        producer._metadata.request_update()
        producer._sender.wakeup()
        return None

    def _partition(self, key: bytes | None) -> int:
        if key is None:
            return random.choice(self._partitions)
        partition = self._partition_of.get(key)
        if partition is None:
            from kafka.partitioner.default import murmur2

            partition = self._partitions[(murmur2(key) & 0x7FFFFFFF) % len(self._partitions)]
            self._partition_of[key] = partition
        return partition

    def append(self, messages: Messages) -> list[tuple[Messages | Rows, Any]] | None:
        """Append ``messages`` as record batches; returns (messages, batch future) pairs, or
        None (nothing appended) while the producer does not know the topic's partitions yet
        (:meth:`known_partitions`). Never waits for the broker."""
        partitions = self.known_partitions()
        if partitions is None:
            return None
        if partitions != self._partitions:
            self._partitions = partitions
            self._partition_of.clear()
        now_ms = int(time.time() * 1000)
        packed = Packed.of(messages.values, messages.keys) if messages.headers is None \
            and self._fills else None
        out: list[tuple[Messages | Rows, Any]] = []
        if packed is not None:  # compiled, a partition at a time (kafka_python_fill)
            by_partition = packed.partition_rows([self._partition(k) for k in packed.keys])
            for p, rows in by_partition.items():
                start = self._continue(p, packed, rows, now_ms, out)
                while start < len(rows):
                    batch, end = self._batch(p, partial(
                        _fill_packed, packed=packed, rows=rows, start=start, now_ms=now_ms))
                    out.append((Rows(packed, rows[start:end]), batch.produce_future))
                    start = end
        else:
            for p, group in self._groups(messages).items():
                start = 0
                while start < len(group):
                    batch, end = self._batch(p, partial(
                        self._fill, group=group, start=start, now_ms=now_ms))
                    out.append((group.slice(start, end) if start or end < len(group)
                                else group, batch.produce_future))
                    start = end
        if self._created:
            # As kafka-python's send: the sender learns of a new batch now (it may be asleep
            # with nothing to send); one that grew is sent when its linger ends anyway.
            self._created = False
            self._producer._sender.wakeup()
        return out

    def _continue(self, partition: int, packed: Packed, rows: Any, now_ms: int,
                  out: list[tuple[Messages | Rows, Any]]) -> int:
        """Write the first of ``rows`` into the partition's last batch while it waits in the
        accumulator (not drained, not closed, room left); returns how many went there."""
        from kafka.structs import TopicPartition

        tp = TopicPartition(self._topic, partition)
        accumulator = self._accumulator
        with accumulator._tp_lock(tp):  # the sender drains (and closes) under this lock
            queue = accumulator._batches.get(tp)
            last = queue[-1] if queue else None
            if last is None or last.attempts or last.records._closed \
                    or not can_fill(last.records._builder):
                return 0
            builder = last.records
            base = builder._next_offset
            end, largest = fill_rows(builder._builder, packed, rows, 0, now_ms)
            if end == 0:
                return 0
            builder._next_offset = builder._builder._num_records
            last.max_record_size = max(last.max_record_size, largest)
            last.last_append = time.monotonic()
        out.append((Rows(packed, rows[:end], base), last.produce_future))
        return int(end)

    def _groups(self, messages: Messages) -> dict[int, Messages]:
        """``messages`` by partition, in order."""
        partition_of, partition = self._partition_of, self._partition
        rows: dict[int, list[int]] = {}
        for i, key in enumerate(messages.keys):
            p = partition_of.get(key) if key is not None else None
            rows.setdefault(partition(key) if p is None else p, []).append(i)
        if len(rows) == 1:
            return {p: messages for p in rows}
        return {p: messages.select(group_rows) for p, group_rows in rows.items()}

    @staticmethod
    def _fill(builder: Any, group: Messages, start: int, now_ms: int) -> tuple[int, int]:
        """:func:`fill_batch`, or kafka-python's own ``append`` per message where the builder
        is not one it knows (message format v0/v1, or a kafka-python whose builder differs)."""
        if can_fill(builder._builder):
            return fill_batch(builder._builder, group, start, now_ms)
        append = builder.append
        end = start
        while end < len(group):
            msg = group[end]
            if append(now_ms, msg.key, msg.value, list(msg.headers)) is None:
                break
            end += 1
        return end, 0

    def _batch(self, partition: int, fill: Callable[[Any], tuple[int, int]]) -> tuple[Any, int]:
        """One batch of records ``fill`` writes into a fresh builder (as many as fit), queued
        in the accumulator; returns it and where ``fill`` stopped."""
        from kafka.producer.producer_batch import ProducerBatch
        from kafka.record.memory_records import MemoryRecordsBuilder
        from kafka.structs import TopicPartition

        builder = MemoryRecordsBuilder(self._magic, self._compression, self._batch_bytes)
        end, largest = fill(builder)
        if largest:  # filled past kafka-python's own append: tell its wrapper the count
            builder._next_offset = builder._builder._num_records
        tp = TopicPartition(self._topic, partition)
        batch = ProducerBatch(tp, builder)
        batch.max_record_size = largest
        accumulator = self._accumulator
        with accumulator._tp_lock(tp):
            accumulator._batches[tp].append(batch)
            accumulator._incomplete.add(batch)
        self._created = True
        return batch, end


class KafkaPythonSink(KafkaSinkBase):
    """Produces through kafka-python's ``KafkaProducer``.

    Written messages go to the producer as whole record batches (:class:`BatchAppender`),
    one future per batch; with a kafka-python whose internals differ, through ``send``, one
    future per message. Either way no callback runs per message: the futures of each write
    are kept together and looked at from the daemon's thread (:meth:`_collect`), the last
    one first.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (messages, futures), oldest first: one future per message, or one for all of them.
        self._chunks: deque[tuple[Messages | list[SinkMessage], list[Any]]] = deque()
        self._unacked = 0
        self._batches: BatchAppender | None = None

    def _create_producer(self) -> Any:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        o = self.options
        config = o.client_config()
        config.update(
            acks="all" if o.acks == "all" else int(o.acks),
            linger_ms=o.linger_ms,
            batch_size=o.batch_bytes,
            compression_type=o.compression_type,
            delivery_timeout_ms=o.delivery_timeout_ms,
            # send() must not block the daemon for long: a full buffer is backpressure,
            # reported through backlog(), not a minute-long stall.
            max_block_ms=1_000,
        )
        if o.partitions is not None:
            ensure_topic(o, o.partitions)
        quiet_client_logs()
        try:
            producer = KafkaProducer(**config)
        except KafkaError as exc:
            raise UnavailableError(f"{o.where}: no broker reachable: {exc}") from exc
        self._batches = BatchAppender(producer, o.topic) if BatchAppender.supported(producer) \
            else None
        return producer

    def _send(self, producer: Any, waiting: deque[SinkMessage]) -> None:
        if self._batches is None:
            self._send_each(producer, waiting)
        elif self._append(Messages.of(waiting)):
            waiting.clear()

    def _send_columns(self, producer: Any, values: list[bytes],
                      keys: Sequence[bytes | None]) -> int:
        if self._batches is None:
            return super()._send_columns(producer, values, keys)
        return len(values) if self._append(Messages(values, keys)) else 0

    def _append(self, messages: Messages) -> bool:
        """Hand ``messages`` to the producer as record batches; False (none taken) if it does
        not know the topic's partitions yet."""
        from kafka.errors import KafkaError

        assert self._batches is not None
        try:
            batches = self._batches.append(messages)
        except KafkaError as exc:  # an invalid topic name, say: everything waits, in backlog
            log.debug("%s: producer did not take the messages: %s", self.options.where, exc)
            return False
        if batches is None:  # the topic's metadata is on its way: everything waits, in backlog
            return False
        self._chunks.extend((batch_messages, [future]) for batch_messages, future in batches)
        self._unacked += len(messages)
        return True

    def _send_each(self, producer: Any, waiting: deque[SinkMessage]) -> None:
        """The public path: ``send`` per message."""
        from kafka.errors import KafkaError

        send = producer.send
        topic = self.options.topic
        sent: list[SinkMessage] = []
        futures: list[Any] = []
        try:
            while waiting:
                msg = waiting[0]
                futures.append(send(topic, msg.value, msg.key, list(msg.headers) or None))
                sent.append(waiting.popleft())
        except KafkaError as exc:
            # Buffer full or no metadata in time: the rest waits here, counted in backlog.
            log.debug("%s: producer did not take a message: %s", self.options.where, exc)
        if sent:
            self._chunks.append((sent, futures))
            self._unacked += len(sent)

    def _collect(self) -> None:
        chunks = self._chunks
        while chunks:
            messages, futures = chunks[0]
            # Batches of one partition complete in order (idempotent producer), so the last
            # future being done usually means all are; check every one only then.
            if not futures[-1].is_done or not all(f.is_done for f in futures):
                return
            chunks.popleft()
            self._unacked -= len(messages)
            if len(futures) == 1:  # one future for the whole batch (or its one message)
                self._failed.extend(failed_in_batch(messages, futures[0]))
                continue
            self._failed.extend((messages[i], f.exception) for i, f in enumerate(futures)
                                if f.exception is not None)

    def _in_flight(self) -> int:
        return self._unacked

    def _flush_producer(self, timeout_s: float) -> None:
        from kafka.errors import KafkaError

        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise SinkError(f"{self.options.where}: flush failed: {exc}") from exc

    def _close_producer(self, producer: Any, timeout_s: float) -> None:
        # What it could not deliver in time fails its futures, which _collect requeues.
        producer.close(timeout=timeout_s)
