"""Whole record batches into a kafka-python producer, without a ``send`` per message.

``KafkaProducer.send`` costs about 40 µs a message in pure Python (validation, partitioner,
size estimate, a future per message, locks), more than the daemon spends on a record
otherwise. A written batch of predictions is already encoded, so :class:`BatchAppender`
encodes each partition's messages into one record batch (``MemoryRecordsBuilder``: the only
per-message work) and hands that batch to the producer's accumulator, whose sender thread then
does what it does for any batch: idempotent sequence numbers, the produce request, retries,
delivery timeout. Success or failure is one future per batch.

This reaches into kafka-python internals (``_accumulator``, ``_sender``), so
:meth:`BatchAppender.supported` checks they are there; the sink falls back to ``send`` per
message if a kafka-python release moves them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

from adaptd.connectors.base import SinkMessage
from adaptd.errors import SinkError


def failed_in_batch(messages: list[SinkMessage], future: Any) -> list[tuple[SinkMessage, Any]]:
    """The messages of a completed batch that were not delivered, with why.

    kafka-python completes a batch's future with ``(base_offset, timestamp_ms,
    record_exceptions)``; a failed batch (expired, rejected) has ``record_exceptions``, which
    gives each record's error.
    """
    if future.exception is not None:
        return [(m, future.exception) for m in messages]
    record_exceptions = future.value[2] if isinstance(future.value, tuple) else None
    if record_exceptions is None:
        return []
    return [(m, e) for i, m in enumerate(messages) if (e := record_exceptions(i)) is not None]


class BatchAppender:
    """Encodes messages into record batches, per partition, for one producer and topic.

    Called from the daemon's thread; the accumulator's per-partition lock guards what its
    sender thread shares.
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

    @staticmethod
    def supported(producer: Any) -> bool:
        accumulator = getattr(producer, "_accumulator", None)
        return (accumulator is not None and hasattr(producer, "_sender")
                and hasattr(accumulator, "_batches") and hasattr(accumulator, "_incomplete")
                and hasattr(accumulator, "_tp_lock")
                and {"message_version", "compression_attrs", "batch_size"}
                <= set(getattr(accumulator, "config", {})))

    def _partition(self, key: bytes | None) -> int:
        if key is None:
            return random.choice(self._partitions)
        partition = self._partition_of.get(key)
        if partition is None:
            from kafka.partitioner.default import murmur2

            partition = self._partitions[(murmur2(key) & 0x7FFFFFFF) % len(self._partitions)]
            self._partition_of[key] = partition
        return partition

    def append(self, messages: Sequence[SinkMessage]) -> list[tuple[list[SinkMessage], Any]]:
        """Append ``messages`` as record batches; returns (messages, batch future) pairs.

        Blocks up to the producer's ``max_block_ms`` for the topic's metadata the first time;
        raises kafka-python's ``KafkaTimeoutError`` if it does not come (nothing appended).
        """
        partitions = sorted(self._producer.partitions_for(self._topic))
        if partitions != self._partitions:
            self._partitions = partitions
            self._partition_of.clear()
        by_partition: dict[int, list[SinkMessage]] = {}
        for msg in messages:
            by_partition.setdefault(self._partition(msg.key), []).append(msg)
        now_ms = int(time.time() * 1000)
        out = []
        for partition, group in by_partition.items():
            start = 0
            while start < len(group):
                batch, end = self._batch(partition, group, start, now_ms)
                out.append((group[start:end], batch.produce_future))
                start = end
        self._producer._sender.wakeup()
        return out

    def _batch(self, partition: int, group: list[SinkMessage], start: int,
               now_ms: int) -> tuple[Any, int]:
        """One batch of ``group[start:end]`` (as many as fit), queued in the accumulator."""
        from kafka.producer.producer_batch import ProducerBatch
        from kafka.record.memory_records import MemoryRecordsBuilder
        from kafka.structs import TopicPartition

        builder = MemoryRecordsBuilder(self._magic, self._compression, self._batch_bytes)
        append = builder.append
        end = start
        for msg in group[start:]:
            if append(now_ms, msg.key, msg.value, list(msg.headers)) is None:
                break
            end += 1
        if end == start:
            raise SinkError(f"kafka://{self._topic}: a message of {len(group[start].value)} "
                            f"bytes does not fit batch_bytes={self._batch_bytes}")
        tp = TopicPartition(self._topic, partition)
        batch = ProducerBatch(tp, builder)
        accumulator = self._accumulator
        with accumulator._tp_lock(tp):
            accumulator._batches[tp].append(batch)
            accumulator._incomplete.add(batch)
        return batch, end
