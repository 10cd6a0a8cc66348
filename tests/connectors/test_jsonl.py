"""``jsonl:`` beyond the conformance suite: following a growing file, partial last lines, line
numbers across read chunks, and the sink's file handling."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from adaptd.connectors.base import SinkMessage
from adaptd.connectors.jsonl import READ_CHUNK_BYTES
from adaptd.connectors.registry import open_sink, open_source
from adaptd.errors import ConfigError, SinkError


def values(records: list) -> list[bytes]:
    return [r.value for r in records]


def test_following_hands_out_a_line_only_once_its_newline_is_written(tmp_path: Path) -> None:
    path = tmp_path / "growing.jsonl"
    path.write_bytes(b'{"x":[0]}\n\n{"x":[2]}\n{"x":')
    source = open_source(f"jsonl:{path}?follow=true")
    source.open({})
    assert [(r.position, r.value) for r in source.poll(10, 0.0)] == [
        (0, b'{"x":[0]}'), (2, b'{"x":[2]}')
    ]
    assert source.poll(10, 0.0) == []
    assert not source.exhausted
    with path.open("ab") as f:
        f.write(b'[3]}\n{"x":[4]}\n')
    assert [(r.position, r.value) for r in source.poll(10, 0.0)] == [
        (3, b'{"x":[3]}'), (4, b'{"x":[4]}')
    ]
    assert not source.exhausted
    source.close()


def test_following_resumes_at_a_line_that_is_not_written_yet(tmp_path: Path) -> None:
    path = tmp_path / "growing.jsonl"
    path.write_bytes(b"a\nb\n")
    source = open_source(f"jsonl:{path}?follow=true")
    source.open({0: 3})
    assert source.poll(10, 0.0) == []
    with path.open("ab") as f:
        f.write(b"c\nd\ne\n")
    assert [(r.position, r.value) for r in source.poll(10, 0.0)] == [(3, b"d"), (4, b"e")]
    source.close()


def test_without_follow_a_last_line_without_newline_is_a_record(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"x":[0]}\r\n{"x":[1]}')
    source = open_source(f"jsonl:{path}")
    source.open({})
    assert not source.exhausted
    assert values(source.poll(1, 0.0)) == [b'{"x":[0]}']  # no \r: the line end is not data
    assert values(source.poll(1, 0.0)) == [b'{"x":[1]}']
    assert source.exhausted
    source.close()


def test_line_numbers_hold_across_read_chunks(tmp_path: Path) -> None:
    lines = [b'{"x":[%d],"pad":"%s"}' % (i, b"p" * (i % 97)) for i in range(4000)]
    lines[1500] = b""
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert path.stat().st_size > 3 * READ_CHUNK_BYTES
    source = open_source(f"jsonl:{path}")
    source.open({0: 1234})
    got = []
    while not source.exhausted:
        got += source.poll(333, 0.0)
    source.close()
    want = [(i, line) for i, line in enumerate(lines) if i >= 1234 and line]
    assert [(r.position, r.value) for r in got] == want


def test_resuming_past_the_end_logs_and_ends(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "short.jsonl"
    path.write_bytes(b"a\nb\n")
    source = open_source(f"jsonl:{path}")
    source.open({0: 10})
    with caplog.at_level(logging.WARNING, logger="adaptd.connectors.jsonl"):
        assert source.poll(10, 0.0) == []
    assert source.exhausted
    assert "only 2 lines" in caplog.text and "line 10" in caplog.text
    source.close()


def test_a_missing_file_fails_at_open_naming_it(tmp_path: Path) -> None:
    source = open_source(f"jsonl:{tmp_path / 'missing.jsonl'}")  # building does not touch it
    with pytest.raises(ConfigError, match="missing.jsonl.*does not exist"):
        source.open({})
    source.close()


def test_poll_before_open_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="before open"):
        open_source(f"jsonl:{tmp_path / 'x.jsonl'}").poll(1, 0.0)


@pytest.mark.parametrize(
    ("uri", "names"),
    [("jsonl:", "path"), ("jsonl:x.jsonl?follow=maybe", "follow"),
     ("jsonl:x.jsonl?follow=1&fsync=no", "fsync")],
)
def test_bad_source_uris(uri: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        open_source(uri)


def test_the_sink_appends_and_creates_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "out.jsonl"
    first = open_sink(f"jsonl:{path}")
    first.write([SinkMessage(b"1"), SinkMessage(b"2")])
    first.close()
    second = open_sink(f"jsonl:{path}")
    second.write([SinkMessage(b"3")])
    second.flush()
    assert path.read_bytes() == b"1\n2\n3\n"
    second.close()


def test_the_sink_refuses_values_that_would_break_lines(tmp_path: Path) -> None:
    sink = open_sink(f"jsonl:{tmp_path / 'out.jsonl'}")
    with pytest.raises(SinkError, match="newline"):
        sink.write([SinkMessage(b"ok"), SinkMessage(b"two\nlines")])
    sink.close()
    assert (tmp_path / "out.jsonl").read_bytes() == b""  # nothing of the bad batch


def test_a_sink_that_cannot_be_created_fails_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ConfigError, match="file/out.jsonl"):
        open_sink(f"jsonl:{tmp_path / 'file' / 'out.jsonl'}")
    with pytest.raises(ConfigError, match="unknown option 'follow'"):
        open_sink(f"jsonl:{tmp_path / 'out.jsonl'}?follow=true")



def test_truncating_a_followed_file_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "growing.jsonl"
    path.write_bytes(b"a\nb\n")
    source = open_source(f"jsonl:{path}?follow=true")
    source.open({})
    assert values(source.poll(10, 0.0)) == [b"a", b"b"]
    path.write_bytes(b"")  # truncated in place, as `> file` does
    with caplog.at_level(logging.WARNING, logger="adaptd.connectors.jsonl"):
        assert source.poll(10, 0.0) == []
        assert source.poll(10, 0.0) == []
    assert caplog.text.count("shrank") == 1
    source.close()


def test_written_lines_are_synced_in_the_background_and_flushed_whole(tmp_path: Path) -> None:
    from adaptd.connectors.jsonl import WRITEBACK_BYTES

    path = tmp_path / "out.jsonl"
    sink = open_sink(f"jsonl:{path}")
    line = b'{"y_pred":0.5,"pad":"' + b"p" * 1000 + b'"}'
    count = WRITEBACK_BYTES // len(line) + 10
    sink.write([SinkMessage(value=line)] * count)
    assert sink._writeback is not None  # past WRITEBACK_BYTES: a sync started
    sink.write([SinkMessage(value=b'{"last":1}')])
    sink.flush()
    assert sink._writeback is None
    assert path.read_bytes() == (line + b"\n") * count + b'{"last":1}\n'
    sink.close()


def test_an_error_of_the_background_sync_fails_the_next_flush(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel reports a failed write-back once: if the background sync swallowed it, the
    # checkpoint's own fsync could succeed although lines were lost, and commit past them.
    # (A real EIO cannot be made here: the failing call is replaced.)
    import errno
    import os

    from adaptd.connectors.jsonl import WRITEBACK_BYTES

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    sink = open_sink(f"jsonl:{tmp_path / 'out.jsonl'}")
    sink.write([SinkMessage(value=b"x" * WRITEBACK_BYTES)])
    with pytest.raises(SinkError, match="flush failed: .*Input/output error"):
        sink.flush()
    sink.flush()  # reported once; the file itself is fine
    sink.close()
