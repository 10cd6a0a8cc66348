"""The Kafka client choice: one URI option, the same settings in each client's own names, and a
one-line error naming the extra when confluent-kafka is missing."""

from __future__ import annotations

import pytest

from adaptd.connectors import kafka_librdkafka
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
