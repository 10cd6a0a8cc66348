"""``stdin:`` and ``stdout:`` — records from standard input, messages to standard output.

``stdin:`` is a single-partition *live* source (contract v2): a pipe cannot seek, so a restart
keeps the learned state and goes on with whatever the new standard input holds. Positions are
:class:`~adaptd.connectors.sequential.LivePositions` (arrival time in microseconds, above the
start position), not line numbers, so a restarted run never reuses a position of an earlier
one. Blank lines are skipped. It is exhausted at end of input. ``stdout:`` writes one message
value per line.

Both read and write the binary buffers (``sys.stdin.buffer``, ``sys.stdout.buffer``); tests
pass their own streams to the constructors.
"""

from __future__ import annotations

import io
import os
import select
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from adaptd.connectors.base import (
    Connector,
    EncodedBatch,
    ParsedURI,
    PartitionListener,
    RecordRun,
    Sink,
    SinkMessage,
    Source,
    SourceRecord,
    parse_options,
    parse_uri,
)
from adaptd.connectors.sequential import LineSplitter, LivePositions, Pausable, start_position
from adaptd.errors import ConfigError, SinkError

#: Bytes read per system call.
READ_CHUNK_BYTES = 1 << 16


@dataclass(frozen=True, slots=True)
class StdioOptions:
    """``stdin:`` and ``stdout:`` take no options; any given is reported as unknown."""


def _parse(parsed: ParsedURI) -> StdioOptions:
    if parsed.target:
        raise ConfigError(
            f"{parsed.uri!r}: {parsed.scheme} takes no path, expected {parsed.scheme}:"
        )
    return parse_options(StdioOptions, parsed)


class StdinSource(Pausable, Source):
    """Reads records line by line from a binary stream (standard input by default); live.

    Args:
        stream: a binary stream; ``None`` means ``sys.stdin.buffer``. A stream with a file
            descriptor (a pipe, a terminal, a file) is read with ``select`` so that ``poll``
            honours its timeout; other streams (``io.BytesIO``) must not block on read.
        clock_us: the clock positions come from (microseconds); tests pass a fixed one.
    """

    replay = "live"

    def __init__(
        self, stream: BinaryIO | None = None, clock_us: Callable[[], int] | None = None
    ) -> None:
        self._clock_us = clock_us
        self._stream: BinaryIO = sys.stdin.buffer if stream is None else stream
        try:
            self._fd: int | None = self._stream.fileno()
        except (io.UnsupportedOperation, AttributeError):
            self._fd = None
        self._lines = LineSplitter()
        self._positions = LivePositions()
        self._eof = False
        self._opened = False
        self._closed = False

    def open(
        self, start_positions: Mapping[int, int], listener: PartitionListener | None = None
    ) -> None:
        """Start reading at the first line; positions handed out are at least the start
        position of partition 0 (a live source's floor). Does not block."""
        floor = start_position("stdin source", start_positions)
        self._positions = LivePositions(floor, self._clock_us)
        self._opened = True

    def poll(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        """Return the lines available, waiting up to ``timeout_s`` for the first one."""
        records = self.poll_many(max_records, timeout_s)
        return records.records() if isinstance(records, RecordRun) else records

    def poll_many(self, max_records: int, timeout_s: float) -> list[SourceRecord] | RecordRun:
        """:meth:`poll`, as one :class:`RecordRun` when the lines are plain (the common case):
        its records take consecutive positions, the first one from the clock."""
        if not self._opened or self._closed:
            raise RuntimeError("stdin source: poll() outside open() ... close()")
        if self.paused_wait(timeout_s):
            return []
        deadline = time.monotonic() + max(timeout_s, 0.0)
        while self._lines.complete < max_records and not self._eof:
            # Once something is in hand, top up only with what is already there.
            wait_s = 0.0 if self._lines.complete else deadline - time.monotonic()
            chunk = self._read(wait_s)
            if chunk is None:
                break
            if chunk:
                self._lines.feed(chunk)
            else:
                self._eof = True
        lines = self._lines.take_many(max_records, at_eof=self._eof)
        if isinstance(lines, RecordRun):
            lines.first_position = self._positions.take_many(len(lines))
            return lines
        return [SourceRecord(partition=0, position=self._positions.take(), value=line.value,
                             truncated_from=line.truncated_from) for line in lines]

    def _read(self, wait_s: float) -> bytes | None:
        """Bytes read (``b""`` at end of input), or ``None`` if none came within ``wait_s``."""
        if self._fd is None:
            read1 = getattr(self._stream, "read1", self._stream.read)
            return read1(READ_CHUNK_BYTES)
        ready, _, _ = select.select([self._fd], [], [], max(wait_s, 0.0))
        if not ready:
            return None
        return os.read(self._fd, READ_CHUNK_BYTES)

    def limit_record_bytes(self, max_bytes: int) -> None:
        """Keep at most ``max_bytes`` of a longer line (see :class:`LineSplitter`)."""
        self._lines.max_line_bytes = max_bytes

    @property
    def exhausted(self) -> bool:
        """True once the input has ended and every line was handed out."""
        return self._eof and not self._lines.has_lines

    def close(self) -> None:
        """Stop reading. Idempotent; the stream itself belongs to the caller and stays open."""
        self._closed = True


class StdoutSink(Sink):
    """Writes one message value per line to a binary stream (standard output by default).

    Args:
        stream: a binary stream; ``None`` means ``sys.stdout.buffer``.
    """

    def __init__(self, stream: BinaryIO | None = None) -> None:
        if stream is None:
            # Text printed earlier must come out before our bytes.
            sys.stdout.flush()
            stream = sys.stdout.buffer
        self._stream: BinaryIO = stream
        self._closed = False

    def write(self, messages: Sequence[SinkMessage]) -> None:
        """Write the values, one per line (buffered by the stream)."""
        if self._closed:
            raise SinkError("stdout sink: write() after close()")
        for message in messages:
            if b"\n" in message.value:
                raise SinkError(
                    "stdout sink: a message value contains a newline; expected one record per line"
                )
        try:
            self._stream.write(b"".join(m.value + b"\n" for m in messages))
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed under us
            raise SinkError(f"stdout sink: write failed: {exc}") from exc

    def write_encoded(self, batch: EncodedBatch) -> None:
        """Write a pre-encoded batch as it is: its lines are already one message each."""
        if self._closed:
            raise SinkError("stdout sink: write() after close()")
        try:
            self._stream.write(batch.lines)
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed under us
            raise SinkError(f"stdout sink: write failed: {exc}") from exc

    def flush(self) -> None:
        """Hand the buffered lines to the OS; blocks while a pipe to a slow reader is full."""
        if self._closed:
            return
        try:
            self._stream.flush()
        except (OSError, ValueError) as exc:
            raise SinkError(f"stdout sink: flush failed: {exc}") from exc

    def close(self) -> None:
        """Flush. Idempotent; the stream itself belongs to the caller and stays open."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True


class StdinConnector(Connector):
    """``stdin:``: one JSON record per line on standard input."""

    scheme = "stdin"
    description = "standard input, one JSON record per line (live: a restart goes on from new input)"
    replay = ("live",)

    @classmethod
    def source(cls, uri: str) -> StdinSource:
        _parse(parse_uri(uri))
        return StdinSource()


class StdoutConnector(Connector):
    """``stdout:``: one message per line on standard output."""

    scheme = "stdout"
    description = "standard output, one JSON message per line"

    @classmethod
    def sink(cls, uri: str) -> StdoutSink:
        _parse(parse_uri(uri))
        return StdoutSink()
