"""kafka-python's source on the real broker: it never creates its input topic, and it fetches
with the short wait while records come and the idle one once none come."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping

import pytest
from kafka import KafkaAdminClient

from adaptd.connectors import kafka_python
from adaptd.connectors.base import RecordRun, SourceRecord
from adaptd.connectors.kafka import kafka_source, source_options
from tests.integration.kafka_harness import produce

RECORD = {"key": "k", "x": [1.0], "y": 1.0}


class _FromStart:
    def on_assigned(self, partitions: Collection[int]) -> Mapping[int, int]:
        return {}

    def on_revoked(self, partitions: Collection[int]) -> None:
        pass


def _poll_until(source: kafka_python.KafkaPythonSource, n: int, timeout_s: float = 60.0
                ) -> list[SourceRecord]:
    got: list[SourceRecord] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n:
        assert time.monotonic() < deadline, f"polled {len(got)} of {n} records"
        polled = source.poll_many(100, 0.2)
        got += polled.records() if isinstance(polled, RecordRun) else polled
    return got


def test_a_source_started_before_its_topic_exists_does_not_create_it(
        kafka_broker: str, kafka_topic: str) -> None:
    """kafka-python 3.0 asked the broker to create every topic its metadata requests named,
    whatever ``allow_auto_create_topics`` said: the daemon created its input topic with the
    broker's default partition count (4 on Tansu), and the user's producer then wrote into
    those instead of the 1 it asked for."""
    uri = f"kafka://{kafka_broker}/{kafka_topic}?group=g-{kafka_topic}&session_timeout_ms=6000"
    source = kafka_source(source_options(uri))
    source.open({}, _FromStart())
    try:
        for _ in range(5):  # the subscription's metadata requests name the topic
            assert source.poll_many(100, 0.2) == []
        admin = KafkaAdminClient(bootstrap_servers=kafka_broker)
        try:
            assert kafka_topic not in admin.list_topics()
        finally:
            admin.close()
        produce(kafka_broker, kafka_topic, [RECORD] * 3, partitions=1)
        records = _poll_until(source, 3)
    finally:
        source.close()
    assert {(r.partition, r.position) for r in records} == {(0, 0), (0, 1), (0, 2)}


def test_kafka_python_fetches_with_the_short_wait_while_records_come(
        kafka_broker: str, kafka_topic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_python, "IDLE_AFTER_S", 0.0)  # idle at the first empty poll
    produce(kafka_broker, kafka_topic, [RECORD] * 3)
    source = kafka_source(source_options(f"kafka://{kafka_broker}/{kafka_topic}"))
    assert isinstance(source, kafka_python.KafkaPythonSource)
    source.open({}, _FromStart())
    try:
        config = source._fetch_config
        assert config is not None
        _poll_until(source, 3)
        assert config["fetch_max_wait_ms"] == 10
        assert source.poll_many(100, 0.2) == []
        assert config["fetch_max_wait_ms"] == 100
        produce(kafka_broker, kafka_topic, [RECORD])
        _poll_until(source, 1)
        assert config["fetch_max_wait_ms"] == 10
    finally:
        source.close()
