"""The built-in connectors' conformance cases, and the brokers they need.

``test_conformance.py`` runs the shipped suite (:mod:`adaptd.connectors.conformance`) over every
entry of :data:`CASES` and fails if a built-in connector has none. Third-party connectors
installed next to adaptd are not this suite's business: they run the same suite in their own
package (``docs/connectors.md``).
"""

from __future__ import annotations

import io
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from adaptd.connectors.base import Sink, SinkMessage, Source, SourceRecord
from adaptd.connectors.conformance import (
    RECORDS,
    CaseContext,
    ConnectorCase,
    SinkCase,
    SourceCase,
    lines_content,
)
from adaptd.connectors.registry import open_sink, open_source
from adaptd.records import encode
from tests.connectors.mosquitto import Mosquitto, Subscriber, external_broker, publish
from tests.helpers import free_port


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``HOST:PORT`` of a mosquitto shared by the session (or ``TEST_MQTT_BROKER``)."""
    external = external_broker()
    if external:
        yield external
        return
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    try:
        yield broker.address
    finally:
        broker.stop()


# --- line-oriented content (jsonl, stdin) ---------------------------------------------------


def _jsonl_source(ctx: CaseContext) -> SourceCase:
    content, expected = lines_content()
    path = ctx.tmp_path / "in.jsonl"
    path.write_bytes(content)
    empty = ctx.tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    return SourceCase(
        build=lambda: open_source(f"jsonl:{path}"),
        expected=expected,
        # Following an empty file is the case where poll has to wait.
        build_empty=lambda: open_source(f"jsonl:{empty}?follow=true"),
    )


def _jsonl_sink(ctx: CaseContext) -> SinkCase:
    path = ctx.tmp_path / "nested" / "dirs" / "out.jsonl"
    return SinkCase(
        build=lambda: open_sink(f"jsonl:{path}"),
        read_back=lambda _count: path.read_bytes().splitlines() if path.exists() else [],
    )


def _stdin_from_pipe(ctx: CaseContext, content: bytes, close_writer: bool) -> None:
    """Make ``sys.stdin`` a real pipe holding ``content``."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, content)  # small: fits the pipe buffer
    writer = ctx.closing(os.fdopen(write_fd, "wb"))
    if close_writer:
        writer.close()
    reader = ctx.closing(io.TextIOWrapper(os.fdopen(read_fd, "rb")))
    ctx.monkeypatch.setattr(sys, "stdin", reader)


def _stdin_source(ctx: CaseContext) -> SourceCase:
    content, expected = lines_content()

    def build() -> Source:
        _stdin_from_pipe(ctx, content, close_writer=True)
        return open_source("stdin:")

    def build_empty() -> Source:
        _stdin_from_pipe(ctx, b"", close_writer=False)
        return open_source("stdin:")

    return SourceCase(build=build, expected=expected, build_empty=build_empty)


def _stdout_sink(ctx: CaseContext) -> SinkCase:
    path = ctx.tmp_path / "stdout.txt"

    def build() -> Sink:
        captured = ctx.closing(io.TextIOWrapper(open(path, "wb")))  # noqa: SIM115
        ctx.monkeypatch.setattr(sys, "stdout", captured)
        return open_sink("stdout:")

    return SinkCase(build=build, read_back=lambda _count: path.read_bytes().splitlines())


# --- synthetic ------------------------------------------------------------------------------

SYNTHETIC_URI = "synthetic:sinusoid?seed=7&n=40&keys=3"


def _synthetic_source(ctx: CaseContext) -> SourceCase:
    from adaptd.connectors.synthetic import generate

    expected = [
        SourceRecord(partition=0, position=i, value=encode(record), key=record["key"].encode())
        for i, record in enumerate(generate("sinusoid", seed=7, n=40, keys=3))
    ]
    return SourceCase(
        build=lambda: open_source(SYNTHETIC_URI),
        expected=expected,
        build_empty=lambda: open_source("synthetic:sinusoid?seed=7&n=0"),
    )


# --- kafka ----------------------------------------------------------------------------------


def _kafka_topic_uri(ctx: CaseContext, client: str) -> str:
    bootstrap = ctx.request.getfixturevalue("kafka_broker")
    return f"kafka://{bootstrap}/conformance-{uuid.uuid4().hex[:12]}?client={client}"


def _kafka_read(uri: str, count: int, timeout_s: float = 30.0) -> list[SourceRecord]:
    """Read ``count`` records of a topic from the beginning (fewer if time runs out)."""
    source = open_source(uri)
    source.open({})
    try:
        out: list[SourceRecord] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < count and time.monotonic() < deadline:
            out += source.poll(count - len(out), 0.2)
        return out
    finally:
        source.close()


def _kafka_source(client: str) -> Callable[[CaseContext], SourceCase]:
    """The Kafka source case through one client (``client=`` in the URI)."""
    def build(ctx: CaseContext) -> SourceCase:
        from adaptd.connectors.kafka import ensure_topic, sink_options

        uri = _kafka_topic_uri(ctx, client)
        sink = open_sink(f"{uri}&partitions=1")
        # One key: one partition, so positions are 0..n-1 in write order.
        sink.write([SinkMessage(value=v, key=b"k") for v in RECORDS])
        sink.flush()
        sink.close()
        empty_uri = _kafka_topic_uri(ctx, client)
        ensure_topic(sink_options(empty_uri), partitions=1)
        return SourceCase(
            build=lambda: open_source(uri),
            expected=[SourceRecord(0, i, v, key=b"k") for i, v in enumerate(RECORDS)],
            build_empty=lambda: open_source(empty_uri),
            finite=False,
        )
    return build


def _kafka_sink(client: str) -> Callable[[CaseContext], SinkCase]:
    """The Kafka sink case through one client."""
    def build(ctx: CaseContext) -> SinkCase:
        uri = _kafka_topic_uri(ctx, client)
        return SinkCase(
            build=lambda: open_sink(f"{uri}&partitions=1"),
            read_back=lambda count: [r.value for r in _kafka_read(uri, count)],
        )
    return build


# --- mqtt -----------------------------------------------------------------------------------


def _mqtt_source(options: str) -> Callable[[CaseContext], SourceCase]:
    def case(ctx: CaseContext) -> SourceCase:
        address = ctx.request.getfixturevalue("mosquitto")
        topic = f"conformance/{uuid.uuid4().hex[:12]}"
        # Each case its own session: a persistent one would carry over another test's topics.
        uri = f"mqtt://{address}/{topic}?{options}&client_id=c-{topic}"
        return SourceCase(
            build=lambda: open_source(uri),
            expected=[SourceRecord(0, i, v) for i, v in enumerate(RECORDS)],
            build_empty=lambda: open_source(f"mqtt://{address}/{topic}-empty?{options}"
                                            f"&client_id=c-{topic}-empty"),
            send=lambda values: publish(address, topic, values),
            build_unreachable=lambda: open_source(
                f"mqtt://127.0.0.1:{free_port()}/{topic}?{options}&connect_timeout_s=2"),
            finite=False,
        )
    return case


def _mqtt_sink(ctx: CaseContext) -> SinkCase:
    address = ctx.request.getfixturevalue("mosquitto")
    topic = f"conformance/{uuid.uuid4().hex[:12]}"
    subscriber = ctx.closing(Subscriber(address, topic))
    return SinkCase(
        build=lambda: open_sink(f"mqtt://{address}/{topic}"),
        read_back=lambda count: subscriber.wait_for(count),
        build_unreachable=lambda: open_sink(
            f"mqtt://127.0.0.1:{free_port()}/{topic}?flush_timeout_s=1"),
        ordered=False,
    )


MQTT_URI = "mqtt://127.0.0.1:9/never-used"

#: Every built-in scheme → its case; ``mqtt-qos0`` runs the mqtt connector's live mode too.
CASES: dict[str, ConnectorCase] = {
    "jsonl": ConnectorCase("jsonl", "jsonl:never/created.jsonl", _jsonl_source, _jsonl_sink),
    "stdin": ConnectorCase("stdin", "stdin:", source=_stdin_source),
    "stdout": ConnectorCase("stdout", "stdout:", sink=_stdout_sink),
    "synthetic": ConnectorCase("synthetic", SYNTHETIC_URI, source=_synthetic_source),
    "kafka": ConnectorCase("kafka", "kafka://127.0.0.1:9/never-used",
                           _kafka_source("kafka-python"), _kafka_sink("kafka-python")),
    # The same connector through its other client: the contract holds for both.
    "kafka-librdkafka": ConnectorCase("kafka", "kafka://127.0.0.1:9/never-used?client=librdkafka",
                                      _kafka_source("librdkafka"), _kafka_sink("librdkafka")),
    "mqtt": ConnectorCase("mqtt", MQTT_URI, _mqtt_source("qos=1"), _mqtt_sink),
    "mqtt-qos0": ConnectorCase("mqtt", MQTT_URI + "?qos=0", _mqtt_source("qos=0"), _mqtt_sink),
}
