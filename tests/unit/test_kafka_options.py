"""Kafka URI options: validated before anything connects, security settings passed through."""

from __future__ import annotations

import pytest

from adaptd.connectors.kafka import source_options
from adaptd.errors import ConfigError


@pytest.mark.parametrize(("uri", "message"), [
    ("kafka://h:9092/t?session_timeout_ms=900&heartbeat_interval_ms=900",
     "heartbeat_interval_ms must be in"),
    ("kafka://h:9092/t?max_poll_records=0", "max_poll_records must be >= 1"),
    ("kafka://h:9092/t?auto_offset_reset=middle", "auto_offset_reset' must be one of"),
    ("kafka://h:9092/t?sasl_mechanism=PLAIN", "sasl_mechanism needs security_protocol"),
    ("kafka://h:9092/t?colour=red", "unknown option 'colour'"),
    ("kafka://h/t", "broker address must be HOST:PORT"),
    ("kafka://h:9092", "expected kafka://HOST:PORT/TOPIC"),
    ("kafka://h:9092/t?sasl_plain_password_env=ADAPTD_TEST_UNSET_VARIABLE",
     "not set in the environment"),
])
def test_bad_options_fail_before_open_naming_the_option(uri: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        source_options(uri)


def test_security_settings_pass_through_to_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_PASSWORD_FOR_TEST", "s3cret")
    options = source_options(
        "kafka://a:9093,b:9093/t?security_protocol=SASL_SSL&sasl_mechanism=SCRAM-SHA-512"
        "&sasl_plain_username=u&sasl_plain_password_env=KAFKA_PASSWORD_FOR_TEST"
        "&ssl_cafile=/etc/ca.pem")
    config = options.client_config()
    assert config["bootstrap_servers"] == ["a:9093", "b:9093"]
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_password"] == "s3cret"
    assert config["ssl_cafile"] == "/etc/ca.pem"


def test_the_fetch_wait_is_short_while_records_come_and_kafka_pythons_long_when_idle() -> None:
    kpy = source_options("kafka://h:9092/t")
    assert (kpy.fetch_max_wait_ms, kpy.idle_fetch_max_wait_ms) == (10, 100)
    rdk = source_options("kafka://h:9092/t?client=librdkafka")
    assert (rdk.fetch_max_wait_ms, rdk.idle_fetch_max_wait_ms) == (10, 10)
    assert source_options(
        "kafka://h:9092/t?client=librdkafka&fetch_max_wait_ms=250").fetch_max_wait_ms == 250
    # A wait given above the idle default is the idle one too.
    assert source_options("kafka://h:9092/t?fetch_max_wait_ms=250").idle_fetch_max_wait_ms == 250
    assert source_options(
        "kafka://h:9092/t?idle_fetch_max_wait_ms=500").idle_fetch_max_wait_ms == 500
    assert source_options("kafka://h:9092/t?fetch_max_wait_ms=0").fetch_max_wait_ms == 0
    with pytest.raises(ConfigError, match="fetch_max_wait_ms must be >= 0"):
        source_options("kafka://h:9092/t?fetch_max_wait_ms=-1")
    with pytest.raises(ConfigError, match="idle_fetch_max_wait_ms must be >= fetch_max_wait_ms"):
        source_options("kafka://h:9092/t?fetch_max_wait_ms=50&idle_fetch_max_wait_ms=20")
    with pytest.raises(ConfigError, match="idle_fetch_max_wait_ms applies to client=kafka-python"):
        source_options("kafka://h:9092/t?client=librdkafka&idle_fetch_max_wait_ms=100")
