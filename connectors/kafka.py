"""Kafka: a source that joins a consumer group, and a sink for predictions and dead letters.

URI (contract): ``kafka://HOST:PORT[,HOST:PORT…]/TOPIC[?group=G][&client=kafka-python|librdkafka]
[&option=value…]``; the options are in :mod:`adaptd.connectors.kafka_options`.

Two clients, one behaviour. ``client=kafka-python`` (the default) is pure Python and always
installed; ``client=librdkafka`` uses confluent-kafka (``pip install 'adaptd[librdkafka]'``),
whose C threads fetch and produce without the GIL: several times the throughput.

Source. With ``group`` the source subscribes as a member of that consumer group; without it,
it reads every partition of the topic itself. Either way it tells the daemon's
:class:`~adaptd.connectors.base.PartitionListener` which partitions it now owns, and seeks each to
the position the daemon returns (the one stored in the daemon's checkpoint) — never to the
group's committed offsets, which only trail the checkpoint for the benefit of lag tools.
Partitions the daemon has no checkpoint of start where ``auto_offset_reset`` says. Auto-commit
is off. Before partitions are taken away the listener is told first, so the daemon can flush,
checkpoint and commit them; partitions lost with an expired session are only let go.

Sink. Messages are produced keyed by their key (the Java client's murmur2 partitioner with
either client, so one record key stays on one partition) with their headers. ``write`` never
blocks on the broker: messages the producer cannot take yet (broker down at start) wait in the
sink, and deliveries that fail are kept and sent again, so a prediction is lost only if the
process dies, which the checkpoint order covers. ``flush`` blocks until everything written is
acknowledged or raises :class:`~adaptd.errors.SinkError`. ``backlog`` tells the daemon how much
is unacknowledged, so it can pause the source.

Security settings (``security_protocol``, ``sasl_*``, ``ssl_*``) are passed to the client as
they are; ``sasl_plain_password_env`` names an environment variable holding the password so it
need not appear in the URI.
"""

from __future__ import annotations

from adaptd.connectors.base import Connector, Sink, Source
from adaptd.connectors.kafka_common import KafkaSinkBase, KafkaSourceBase
from adaptd.connectors.kafka_options import (
    KafkaClientOptions,
    KafkaSinkOptions,
    KafkaSourceOptions,
    sink_options,
    source_options,
)

__all__ = [
    "KafkaConnector", "ensure_topic", "kafka_sink", "kafka_source", "sink_options",
    "source_options",
]


def kafka_source(options: KafkaSourceOptions) -> KafkaSourceBase:
    """A source (not yet open) through the client the options name."""
    if options.client == "librdkafka":
        from adaptd.connectors.kafka_librdkafka import LibrdkafkaSource, require_client

        require_client()
        return LibrdkafkaSource(options)
    from adaptd.connectors.kafka_python import KafkaPythonSource

    return KafkaPythonSource(options)


def kafka_sink(options: KafkaSinkOptions) -> KafkaSinkBase:
    """A sink through the client the options name; it connects on its first write."""
    if options.client == "librdkafka":
        from adaptd.connectors.kafka_librdkafka import require_client
        from adaptd.connectors.kafka_librdkafka_sink import LibrdkafkaSink

        require_client()
        return LibrdkafkaSink(options)
    from adaptd.connectors.kafka_python_sink import KafkaPythonSink

    return KafkaPythonSink(options)


def ensure_topic(options: KafkaClientOptions, partitions: int) -> bool:
    """Create the topic with ``partitions`` partitions unless it exists (through the client
    the options name). Blocks; True if it was created; UnavailableError if no broker answers."""
    if options.client == "librdkafka":
        from adaptd.connectors import kafka_librdkafka

        return kafka_librdkafka.ensure_topic(options, partitions)
    from adaptd.connectors import kafka_python

    return kafka_python.ensure_topic(options, partitions)


class KafkaConnector(Connector):
    scheme = "kafka"
    description = (
        "Apache Kafka topics: consumer-group source, keyed producer sink; "
        "client=kafka-python (default) or librdkafka")

    @classmethod
    def source(cls, uri: str) -> Source:
        return kafka_source(source_options(uri))

    @classmethod
    def sink(cls, uri: str) -> Sink:
        return kafka_sink(sink_options(uri))
