"""The Kafka client choice: one URI option, the same settings in each client's own names, and a
one-line error naming the extra when confluent-kafka is missing."""

from __future__ import annotations

import pytest

from adaptd.connectors import kafka_librdkafka, kafka_librdkafka_sink
from adaptd.connectors.kafka import KafkaConnector
from adaptd.connectors.kafka_options import sink_options, source_options
from adaptd.errors import ConfigError


def test_the_client_is_chosen_per_uri_and_defaults_to_kafka_python() -> None:
    assert source_options("kafka://h:9092/t").client == "kafka-python"
    assert sink_options("kafka://h:9092/t?client=librdkafka").client == "librdkafka"
    with pytest.raises(ConfigError, match="'client' must be one of"):
        source_options("kafka://h:9092/t?client=java")


def test_security_settings_reach_librdkafka_under_its_own_names(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_PASSWORD_FOR_TEST", "s3cret")
    config = source_options(
        "kafka://a:9093,b:9093/t?client=librdkafka&security_protocol=SASL_SSL"
        "&sasl_mechanism=SCRAM-SHA-512&sasl_plain_username=u"
        "&sasl_plain_password_env=KAFKA_PASSWORD_FOR_TEST&ssl_cafile=/etc/ca.pem"
        "&ssl_check_hostname=false").librdkafka_config()
    assert config["bootstrap.servers"] == "a:9093,b:9093"
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanisms"] == "SCRAM-SHA-512"
    assert config["sasl.username"] == "u"
    assert config["sasl.password"] == "s3cret"
    assert config["ssl.ca.location"] == "/etc/ca.pem"
    assert config["ssl.endpoint.identification.algorithm"] == "none"


def test_a_missing_confluent_kafka_is_one_line_naming_the_extra(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_librdkafka, "ck", None)
    for build in (KafkaConnector.source, KafkaConnector.sink):
        with pytest.raises(ConfigError, match=r"pip install 'adaptd\[librdkafka\]'") as info:
            build("kafka://h:9092/t?client=librdkafka")
        assert "\n" not in str(info.value)


def test_a_full_librdkafka_queue_keeps_the_rest_of_an_encoded_batch_in_order() -> None:
    """Produce driven from C stops at the first message the producer's queue refuses; what
    it took and what waits add up to the batch, and the waiting ones keep their order. A real
    producer with a ten-message queue, no broker behind it (nothing is delivered)."""
    from confluent_kafka import Producer

    from adaptd.broker import free_port
    from adaptd.connectors.base import EncodedBatch

    uri = f"kafka://127.0.0.1:{free_port()}/t?client=librdkafka"
    sink = KafkaConnector.sink(uri)
    assert isinstance(sink, kafka_librdkafka_sink.LibrdkafkaSink)
    sink._discard_producer()
    sink._producer = Producer({"bootstrap.servers": sink.options.bootstrap,
                               "queue.buffering.max.messages": 10})
    values = [f'{{"i":{i}}}'.encode() for i in range(25)]
    sink.write_encoded(EncodedBatch(b"".join(v + b"\n" for v in values), [b"k"] * 25))
    # The queue took ten; the rest wait, in order. (librdkafka's len(), part of the backlog,
    # also counts its own requests in flight, such as a metadata request to the absent
    # broker: once in a full-suite run it was 11.)
    assert [m.value for m in sink._waiting] == values[10:]
    assert sink.backlog() >= 25
    sink._producer.purge()
    sink._producer = None
    sink.close()


def test_kafka_python_lines_are_rate_limited_per_template_whatever_numbers_they_carry() -> None:
    """kafka-python formats some messages itself ("Task <… at 0x7f…> ran for 0.122s"): lines
    that differ only in numbers and addresses are one template, let through once an interval;
    another message is not held back by it."""
    import logging

    from adaptd.connectors.kafka_python import _OncePerInterval

    once = _OncePerInterval(interval_s=3600)

    def line(msg: str) -> logging.LogRecord:
        return logging.LogRecord("kafka.net.selector", logging.WARNING, __file__, 1, msg, None,
                                 None)

    slow = "Task <kafka.net.selector.Task object at 0x{:x}> ran for {}s (>0.100s threshold)"
    assert once.filter(line(slow.format(0x7EFF505FE6D0, 0.122)))
    assert not once.filter(line(slow.format(0x7EFF409DBB10, 0.189)))
    assert once.filter(line("Unable to connect to node 1"))
    assert not once.filter(line("Unable to connect to node 2"))
    assert once.filter(logging.LogRecord("kafka.x", logging.CRITICAL, __file__, 1,
                                         slow.format(1, 2), None, None))
