"""kafka-python's sink sends a written batch at once when its partition's batch before it is
acknowledged (Nagle's rule, per partition): a write is a whole polled batch of one partition, so
waiting out the producer's linger for more would only add it to every prediction's latency.
A batch written while the one before is unacknowledged lingers (``linger_ms``) and gathers."""

from __future__ import annotations

from adaptd.connectors.base import EncodedBatch, SinkMessage
from adaptd.connectors.kafka import kafka_sink, sink_options
from tests.helpers import wait_for

#: Far longer than the test waits for a written batch to be acknowledged.
LONG_LINGER_MS = 120_000


def linger_uri(broker: str, topic: str) -> str:
    return (f"kafka://{broker}/{topic}?client=kafka-python&partitions=3"
            f"&linger_ms={LONG_LINGER_MS}&delivery_timeout_ms={LONG_LINGER_MS + 60_000}")


def test_a_written_batch_is_acknowledged_without_waiting_out_the_linger(
        kafka_broker: str, kafka_topic: str) -> None:
    sink = kafka_sink(sink_options(linger_uri(kafka_broker, kafka_topic)))
    try:
        sink.write([SinkMessage(b'{"i":-1}', b"k0")])
        sink.flush()  # the producer knows the topic's partitions from here on
        values = [f'{{"i":{i}}}'.encode() for i in range(300)]
        keys = [f"k{i % 7}".encode() for i in range(300)]
        sink.write_encoded(EncodedBatch(b"".join(v + b"\n" for v in values), keys))
        assert sink.backlog() == 300
        # No flush: the batches go because they were written (the partitions' batches before
        # are acknowledged), not because anyone waits for them.
        wait_for(lambda: sink.backlog() == 0, timeout_s=30,
                 what=f"the written batch to be acknowledged (linger_ms={LONG_LINGER_MS})")
    finally:
        sink.close()

