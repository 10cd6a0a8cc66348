"""The case types of the conformance suite: how a connector under test is built."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adaptd.connectors.base import Sink, Source, SourceRecord
from adaptd.records import encode

#: Known content a case may use: 25 record values.
RECORDS: list[bytes] = [
    encode({"key": f"k{i % 3}", "id": f"r{i}", "x": [i, i / 2], "y": i % 2}) for i in range(25)
]


@dataclass(frozen=True)
class CaseContext:
    """What case factories may use: a temporary directory, ``monkeypatch``, and ``request``
    (``request.getfixturevalue("my_broker")`` starts a broker fixture)."""

    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch
    request: pytest.FixtureRequest

    def closing(self, obj: Any) -> Any:
        """Close ``obj`` when the test ends; returns it."""
        self.request.addfinalizer(obj.close)
        return obj


@dataclass(frozen=True)
class SourceCase:
    """How to read known content from a connector's source.

    Args:
        build: a new, unopened source. Seekable: over ``expected``, the same content each
            time. Acknowledged: the same subscription each time (same client id), so what one
            did not acknowledge is redelivered to the next. Live: over content of its own
            (stdin: the same input again), or fed by ``send``.
        expected: the records of the content, in position order within each partition. For
            sources that are not seekable only partition and value are compared.
        build_empty: a new, unopened source that has nothing to give when polled.
        send: for push sources: ``send(values)`` publishes values to the open source's topic
            (called after ``open``; for acknowledged sources once, for live ones after each
            ``open``). ``None`` when ``build`` already holds the content.
        build_unreachable: a new, unopened source whose service is down (a closed port), to
            check that ``open`` or ``poll`` raises ``UnavailableError``; ``None`` to skip.
        finite: the source is ``exhausted`` once ``expected`` has been read.
    """

    build: Callable[[], Source]
    expected: Sequence[SourceRecord]
    build_empty: Callable[[], Source]
    send: Callable[[Sequence[bytes]], None] | None = None
    build_unreachable: Callable[[], Source] | None = None
    finite: bool = True


@dataclass(frozen=True)
class SinkCase:
    """How to write to a connector's sink and see what it made durable.

    Args:
        build: a new sink (not yet written to).
        read_back: ``read_back(count)``: the values made durable so far, in write order (a
            remote sink may wait for up to ``count`` of them to arrive).
        build_unreachable: a new sink whose service is down, with a short flush timeout, to
            check that it connects lazily and fails in ``flush``; ``None`` to skip.
        ordered: the service keeps write order. MQTT does not across a redelivery (a QoS 1
            message resent after a reconnect arrives after later ones), so its cases check
            that every record arrived, in any order.
    """

    build: Callable[[], Sink]
    read_back: Callable[[int], list[bytes]]
    build_unreachable: Callable[[], Sink] | None = None
    ordered: bool = True


@dataclass(frozen=True)
class ConnectorCase:
    """One connector under test.

    Args:
        scheme: its URI scheme, as registered.
        uri: any valid URI of the scheme, used to check that options are validated before
            anything is opened (it need not be reachable).
        source: builds the :class:`SourceCase` (None: the connector has no source).
        sink: builds the :class:`SinkCase` (None: the connector has no sink).
    """

    scheme: str
    uri: str
    source: Callable[[CaseContext], SourceCase] | None = None
    sink: Callable[[CaseContext], SinkCase] | None = None


def lines_content(
    values: Sequence[bytes] = RECORDS[:20], blank_after: Sequence[int] = (3, 4, 11)
) -> tuple[bytes, list[SourceRecord]]:
    """Bytes of a line-oriented input with blank lines after the given record indices, and the
    records it holds (position = 0-based line number, blank lines keep theirs)."""
    lines: list[bytes] = []
    expected: list[SourceRecord] = []
    for i, value in enumerate(values):
        expected.append(SourceRecord(partition=0, position=len(lines), value=value))
        lines.append(value)
        if i in blank_after:
            lines.append(b"  " if len(lines) % 2 else b"")  # blank or whitespace
    return b"".join(line + b"\n" for line in lines), expected
