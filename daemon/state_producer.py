"""The state topics' producer through librdkafka, for a run whose Kafka source uses it.

The changelog and the meta topic write through kafka-python's producer interface: ``send``
returns a future whose ``get`` gives the record's offset, ``flush`` waits for everything sent.
kafka-python sends from a Python thread, so every checkpoint's publish waited for that thread
to be scheduled and to build and parse its requests in Python: 25–80 ms of a checkpoint on a
busy machine, the longest part of it, with the daemon's thread stalled. This class offers the
same interface over confluent-kafka's ``Producer``, whose I/O runs in C threads.

Order across retries comes, as with the kafka-python producer, from one request in flight per
connection: a retried batch never lands after a later one (a checkpoint's key states after its
commit marker). Idempotence would do it too, but an idempotent producer created with no broker
connection up waits half a second for its producer id, and this one is used at once.
Failures raise kafka-python's errors, which the changelog and the meta topic handle.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kafka.errors import KafkaError, KafkaTimeoutError

log = logging.getLogger(__name__)


class Sent:
    """A sent record's future: :meth:`get` waits for its acknowledgement."""

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self.done = False
        self.error: Any = None
        #: The record's offset, once acknowledged.
        self.offset = -1

    def delivered(self, err: Any, msg: Any) -> None:
        # Called inside the producer's poll/flush, on the thread that waits.
        self.done, self.error = True, err
        if err is None:
            self.offset = msg.offset()

    def get(self, timeout: float) -> Sent:
        """Wait up to ``timeout`` seconds; self once acknowledged, else KafkaError."""
        deadline = time.monotonic() + timeout
        while not self.done:
            left = deadline - time.monotonic()
            if left <= 0:
                raise KafkaTimeoutError(f"no acknowledgement within {timeout:.0f} s")
            self._producer.flush(left)
        if self.error is not None:
            raise KafkaError(str(self.error))
        return self


class LibrdkafkaStateProducer:
    """kafka-python's ``send``/``flush``/``close``, over a librdkafka producer.

    Args:
        config: librdkafka properties of the connection (brokers, client id, security).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        import confluent_kafka as ck

        self._producer = ck.Producer({
            **config, "acks": "all",
            "enable.idempotence": False, "max.in.flight.requests.per.connection": 1,
            "linger.ms": 5, "message.max.bytes": 16 << 20, "partitioner": "murmur2_random",
            "logger": log})

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
             partition: int | None = None) -> Sent:
        """Queue one record (to ``partition``, else by key); never blocks for long."""
        sent = Sent(self._producer)
        while True:
            try:
                self._producer.produce(topic, value, key, partition=-1 if partition is None
                                       else partition, on_delivery=sent.delivered)
                return sent
            except BufferError:  # the queue is full: let deliveries make room
                self._producer.poll(0.05)

    def partitions_for(self, topic: str, timeout_s: float = 10.0) -> set[int]:
        """The partitions of ``topic``, asked of the broker: the producer then holds its
        leaders' connections and metadata (kafka-python's ``partitions_for``). Blocks."""
        import confluent_kafka as ck

        try:
            metadata = self._producer.list_topics(topic, timeout=timeout_s)
        except ck.KafkaException as exc:  # kafka-python's errors out, as everywhere here
            raise KafkaError(str(exc)) from None
        return set(metadata.topics[topic].partitions)

    def flush(self, timeout: float | None = None) -> None:
        """Wait for every record sent; KafkaTimeoutError if some are left after ``timeout``."""
        left = self._producer.flush(-1 if timeout is None else timeout)
        if left:
            raise KafkaTimeoutError(f"{left} records not acknowledged within {timeout} s")

    def close(self) -> None:
        if self._producer.flush(5):
            log.warning("state producer closed with records not acknowledged")
