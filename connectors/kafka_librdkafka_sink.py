"""The librdkafka client's sink (``client=librdkafka``, through confluent-kafka's ``Producer``).

Delivery reports are asked for failures only (``delivery.report.only.error``): the sink counts
what is unacknowledged from the producer's queue length, so a success costs no Python call.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from itertools import repeat
from typing import Any

from adaptd.connectors.base import SinkMessage
from adaptd.connectors.kafka_common import KafkaSinkBase
from adaptd.connectors.kafka_librdkafka import ck, client_config, ensure_topic, require_client
from adaptd.connectors.kafka_options import KafkaSinkOptions

log = logging.getLogger(__name__)


class LibrdkafkaSink(KafkaSinkBase):
    """Produces through confluent-kafka's ``Producer``; the options' settings, translated.

    The producer is created with the sink (unless the topic may have to be created first,
    which blocks on the broker): creating it does not block, and an idempotent producer
    created with no broker connection up yet retries getting its producer id only after
    half a second (librdkafka's timer), holding every message back meanwhile. Created at
    start, it has its id before the daemon's first batch is learned.
    """

    def __init__(self, options: KafkaSinkOptions) -> None:
        super().__init__(options)
        if options.partitions is None:
            self._connect()

    def _create_producer(self) -> Any:
        require_client()
        o = self.options
        config = client_config(o)
        config.update({
            "acks": o.acks,
            # Idempotence keeps batches of a partition in order across retries; it needs acks=all.
            "enable.idempotence": o.acks == "all",
            "linger.ms": o.linger_ms,
            "batch.size": o.batch_bytes,
            "compression.type": o.compression_type or "none",
            "message.timeout.ms": o.delivery_timeout_ms,
            "request.timeout.ms": o.request_timeout_ms,
            # The Java client's (and kafka-python's) partitioner, so a key lands on the same
            # partition whichever client produced it; librdkafka's default hashes differently.
            "partitioner": "murmur2_random",
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery_failed,
        })
        if o.partitions is not None:
            ensure_topic(o, o.partitions)
        return ck.Producer(config)

    def _on_delivery_failed(self, err: Any, msg: Any) -> None:
        # Called inside producer.poll()/flush(), for failures only: on the thread writing behind
        # (holding the sink's lock) or on the daemon's, never on both at once.
        headers = tuple(msg.headers() or ())
        self._failed.append((SinkMessage(msg.value(), msg.key(), headers), err))

    def _send(self, producer: Any, waiting: deque[SinkMessage]) -> None:
        produce = producer.produce
        topic = self.options.topic
        try:
            while waiting:
                msg = waiting[0]
                if msg.headers:
                    produce(topic, msg.value, msg.key, headers=list(msg.headers))
                else:
                    produce(topic, msg.value, msg.key)
                waiting.popleft()
        except BufferError:
            # The producer's queue is full: the rest waits here, counted in backlog.
            log.debug("%s: producer queue full, %d messages wait", self.options.where,
                      len(waiting))
        producer.poll(0)

    def _send_columns(self, producer: Any, values: list[bytes],
                      keys: Sequence[bytes | None]) -> int:
        # ``map`` drives the calls into the producer from C: no Python loop step per message.
        # It takes the next value before it calls, so when the queue is full, the value it
        # was given is the first of those left: how many were taken follows from what is left.
        pending = iter(values)
        try:
            deque(map(producer.produce, repeat(self.options.topic), pending, keys), maxlen=0)
            taken = len(values)
        except BufferError:
            taken = len(values) - len(list(pending)) - 1
            log.debug("%s: producer queue full, %d messages wait", self.options.where,
                      len(values) - taken)
        producer.poll(0)
        return taken

    def _collect(self) -> None:
        if self._producer is not None:
            self._producer.poll(0)

    def _in_flight(self) -> int:
        return len(self._producer) if self._producer is not None else 0

    def _flush_producer(self, timeout_s: float) -> None:
        self._producer.flush(timeout_s)

    def _close_producer(self, producer: Any, timeout_s: float) -> None:
        if timeout_s > 0:
            producer.flush(timeout_s)
        # What is left comes back as failed deliveries (_PURGE_*), so nothing is dropped
        # silently: a discarded producer's messages are sent again with the next one.
        producer.purge()
        producer.poll(0)
