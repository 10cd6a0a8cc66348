"""Conformance cases: for every connector scheme, how to build its source and sink over known
content. ``test_conformance.py`` runs the same checks over every entry of :data:`CASES`, and
fails if a connector that loads has no entry, so a new connector cannot skip the suite.

To add a connector: add one :class:`Conformance` entry whose factories build

* a :class:`SourceCase`: a not-yet-opened source over :data:`RECORDS` (or over any content
  whose records it lists), and a source that has nothing to give right now;
* a :class:`SinkCase`: an opened sink, and a way to read back what it has made durable.

Factories get a :class:`CaseContext` (``tmp_path``, ``monkeypatch``, ``request`` for fixtures
such as ``kafka_broker``) and register their own cleanup with :meth:`CaseContext.closing`.
"""

from __future__ import annotations

import io
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adaptd.connectors.base import Sink, SinkMessage, Source, SourceRecord
from adaptd.connectors.registry import open_sink, open_source
from adaptd.records import encode

#: Known content: 25 record values, the first 20 of which are written with blank lines
#: among them by line-oriented cases.
RECORDS: list[bytes] = [
    encode({"key": f"k{i % 3}", "id": f"r{i}", "x": [i, i / 2], "y": i % 2}) for i in range(25)
]

#: After which record indices line-oriented cases put a blank line (positions skip it).
BLANK_AFTER = (3, 4, 11)


@dataclass(frozen=True)
class CaseContext:
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch
    request: pytest.FixtureRequest

    def closing(self, obj: Any) -> Any:
        """Close ``obj`` when the test ends; returns it."""
        self.request.addfinalizer(obj.close)
        return obj


@dataclass(frozen=True)
class SourceCase:
    """How to read known content from a connector.

    Args:
        build: a new, unopened source over ``expected``; may be called several times.
        expected: every record of the content, in position order within each partition.
        build_empty: a new, unopened source that has nothing to give when polled.
        seekable: the source can open at a position > 0 (else it must refuse with ConfigError).
        finite: the source is ``exhausted`` once ``expected`` has been read.
    """

    build: Callable[[], Source]
    expected: list[SourceRecord]
    build_empty: Callable[[], Source]
    seekable: bool = True
    finite: bool = True


@dataclass(frozen=True)
class SinkCase:
    """How to write to a connector and see what it made durable.

    Args:
        build: a new, open sink.
        read_back: ``read_back(count)``: the values made durable so far, in write order (a
            remote sink may wait for up to ``count`` of them to arrive).
    """

    build: Callable[[], Sink]
    read_back: Callable[[int], list[bytes]]


@dataclass(frozen=True)
class Conformance:
    """One connector's entry.

    Args:
        uri: ``uri(tmp_path)``: any valid URI of the scheme, used to check that options are
            validated before anything is opened (it need not be reachable).
        source: builds the :class:`SourceCase` (None: the connector has no source).
        sink: builds the :class:`SinkCase` (None: the connector has no sink).
    """

    uri: Callable[[Path], str]
    source: Callable[[CaseContext], SourceCase] | None = None
    sink: Callable[[CaseContext], SinkCase] | None = None


# --- line-oriented content (jsonl, stdin) ---------------------------------------------------


def lines_content(values: list[bytes] = RECORDS[:20]) -> tuple[bytes, list[SourceRecord]]:
    """The bytes of a line-oriented input with blank lines, and the records it holds."""
    lines: list[bytes] = []
    expected: list[SourceRecord] = []
    for i, value in enumerate(values):
        expected.append(SourceRecord(partition=0, position=len(lines), value=value))
        lines.append(value)
        if i in BLANK_AFTER:
            lines.append(b"  " if i == 4 else b"")
    return b"".join(line + b"\n" for line in lines), expected


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

    return SourceCase(build=build, expected=expected, build_empty=build_empty, seekable=False)


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
    def build(ctx: CaseContext) -> SinkCase:
        uri = _kafka_topic_uri(ctx, client)
        return SinkCase(
            build=lambda: open_sink(f"{uri}&partitions=1"),
            read_back=lambda count: [r.value for r in _kafka_read(uri, count)],
        )
    return build


def case_scheme(name: str) -> str:
    """The URI scheme of a case: its name up to a ``+`` (``kafka+librdkafka`` is ``kafka``
    through another client)."""
    return name.partition("+")[0]


CASES: dict[str, Conformance] = {
    "jsonl": Conformance(
        uri=lambda tmp: f"jsonl:{tmp / 'never' / 'created.jsonl'}",
        source=_jsonl_source,
        sink=_jsonl_sink,
    ),
    "stdin": Conformance(uri=lambda tmp: "stdin:", source=_stdin_source),
    "stdout": Conformance(uri=lambda tmp: "stdout:", sink=_stdout_sink),
    "synthetic": Conformance(uri=lambda tmp: SYNTHETIC_URI, source=_synthetic_source),
    "kafka": Conformance(
        uri=lambda tmp: "kafka://127.0.0.1:9/never-used",
        source=_kafka_source("kafka-python"),
        sink=_kafka_sink("kafka-python"),
    ),
    # The same connector through its other client: the contract must hold for both.
    "kafka+librdkafka": Conformance(
        uri=lambda tmp: "kafka://127.0.0.1:9/never-used?client=librdkafka",
        source=_kafka_source("librdkafka"),
        sink=_kafka_sink("librdkafka"),
    ),
}


@pytest.fixture
def case_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> CaseContext:
    return CaseContext(tmp_path=tmp_path, monkeypatch=monkeypatch, request=request)
