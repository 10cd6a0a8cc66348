"""``stdin:`` and ``stdout:`` beyond the conformance suite: pipes that fill up over time, streams
without a file descriptor, resuming live, and leaving the process's streams open."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator

import pytest

from adaptd.connectors.base import SinkMessage
from adaptd.connectors.registry import open_sink, open_source
from adaptd.connectors.stdio import StdinSource, StdoutSink
from adaptd.errors import ConfigError, SinkError

Pipe = tuple[io.BufferedReader, io.FileIO]


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    read_fd, write_fd = os.pipe()
    reader, writer = os.fdopen(read_fd, "rb"), os.fdopen(write_fd, "wb", buffering=0)
    yield reader, writer
    reader.close()
    if not writer.closed:
        writer.close()


def test_lines_that_arrive_later_are_read_then_the_end(pipe: Pipe) -> None:
    reader, writer = pipe
    source = StdinSource(reader, clock_us=lambda: 0)
    source.open({})
    assert source.poll(10, 0.0) == []
    writer.write(b'{"x":[1]}\n\n{"x":')
    assert [(r.position, r.value) for r in source.poll(10, 0.0)] == [(0, b'{"x":[1]}')]
    writer.write(b"[3]}\n")
    assert [(r.position, r.value) for r in source.poll(10, 0.0)] == [(1, b'{"x":[3]}')]
    assert not source.exhausted
    writer.write(b"last")
    writer.close()
    assert [(r.position, r.value) for r in source.poll(10, 0.0)] == [(2, b"last")]
    assert source.exhausted
    source.close()
    assert not reader.closed, "the source must not close a stream it does not own"


def test_records_in_hand_are_returned_without_waiting_for_more(pipe: Pipe) -> None:
    reader, writer = pipe
    writer.write(b"a\nb\n")
    source = StdinSource(reader)
    source.open({})
    started = time.monotonic()
    assert [r.value for r in source.poll(100, 30.0)] == [b"a", b"b"]
    # Behavioural bound: it returned because it had records, not because 30 s passed.
    assert time.monotonic() - started < 10.0
    source.close()


def test_a_stream_without_a_file_descriptor_is_read_too() -> None:
    source = StdinSource(io.BytesIO(b"a\n\nb\nc"), clock_us=lambda: 0)
    source.open({})
    got = []
    while not source.exhausted:
        got += source.poll(2, 0.0)
    assert [(r.position, r.value) for r in got] == [(0, b"a"), (1, b"b"), (2, b"c")]
    source.close()


def test_stdin_resumes_live_above_the_checkpointed_position() -> None:
    # A restart keeps the learned state: the new input's records are numbered above the
    # checkpoint's position (a floor), or above the clock when that is higher.
    source = StdinSource(io.BytesIO(b"a\nb\n"), clock_us=lambda: 7)
    source.open({0: 1_000})
    assert [r.position for r in source.poll(10, 0.0)] == [1_000, 1_001]
    source.close()
    source = StdinSource(io.BytesIO(b"c\n"), clock_us=lambda: 5_000)
    source.open({0: 1_002})
    assert [r.position for r in source.poll(10, 0.0)] == [5_000]
    with pytest.raises(ConfigError, match="only partition 0"):
        StdinSource(io.BytesIO(b"")).open({3: 1})


@pytest.mark.parametrize(
    ("uri", "names"),
    [("stdin:file.txt", "no path"), ("stdin:?x=1", "unknown option 'x'"),
     ("stdout:-", "no path"), ("stdout:?flush=1", "unknown option 'flush'")],
)
def test_bad_uris(uri: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        (open_source if uri.startswith("stdin") else open_sink)(uri)


def test_stdout_writes_one_line_per_message_and_leaves_the_stream_open() -> None:
    stream = io.BytesIO()
    sink = StdoutSink(stream)
    sink.write([SinkMessage(b'{"y_pred":1}'), SinkMessage(b'{"y_pred":2}')])
    sink.flush()
    assert stream.getvalue() == b'{"y_pred":1}\n{"y_pred":2}\n'
    with pytest.raises(SinkError, match="newline"):
        sink.write([SinkMessage(b"a\nb")])
    sink.close()
    sink.close()
    assert not stream.closed
    with pytest.raises(SinkError, match="after close"):
        sink.write([SinkMessage(b"{}")])


def test_stdout_failures_are_sink_errors() -> None:
    stream = io.BytesIO()
    sink = StdoutSink(stream)
    stream.close()  # e.g. the reader of the pipe went away
    with pytest.raises(SinkError, match="write failed"):
        sink.write([SinkMessage(b"{}")])
