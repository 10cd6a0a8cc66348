"""Huge lines and cut lines in jsonl files: a line over ``max_record_bytes`` is streamed past
(never held whole) and dead-lettered as ``oversized`` with its first bytes and its length; a
prediction file whose last line a crash cut short is repaired before the next append."""

from __future__ import annotations

import json
import logging
import tracemalloc
from pathlib import Path

import pytest

from adaptd.connectors.base import SinkMessage
from adaptd.connectors.registry import open_sink
from adaptd.connectors.sequential import LineSplitter
from tests.unit.trust_runs import run_lines

MIB = 1 << 20


def test_a_50_mb_line_is_dead_lettered_with_bounded_memory(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    with open(tmp_path / "in.jsonl", "wb") as fh:  # written in pieces: nothing big in memory
        fh.write(b'{"x":[1,2],"y":1}\n{"x":[')
        fh.writelines(b"1," * 1_000_000 for _ in range(25))  # 50 MB in all
        fh.write(b'1],"y":1}\n{"x":[3,4],"y":2}\n')
    run_lines(tmp_path / "warm-up", [b'{"x":[1,2]}'])  # imports and compiles: not the line's
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline, _ = tracemalloc.get_traced_memory()
        run = run_lines(tmp_path, None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    [dead] = run.dead_letters
    assert dead["reason"] == "oversized" and dead["position"] == 1
    assert dead["original_length"] == 50_000_015
    assert len(dead["raw"]) == MIB and dead["raw"].startswith('{"x":[1,1,')
    assert [p["position"] for p in run.predictions] == [0, 2]
    # The splitter's 1 MiB prefix and its dead letter (orjson reserves several times a
    # string's length to encode it): about 17 MiB here, whatever the line's length. The old
    # splitter held the whole line (and copied it per 64 KiB read, which made it quadratic).
    assert peak - baseline < 32 * MIB, f"peak {(peak - baseline) / MIB:.0f} MiB"


def test_the_splitter_holds_at_most_the_limit_of_a_long_line() -> None:
    lines = LineSplitter(max_line_bytes=1000)
    tracemalloc.start()
    try:
        chunk = b"a" * 65536
        tracemalloc.reset_peak()
        for _ in range(300):  # a 20 MB line, fed as a file source feeds it
            lines.feed(chunk)
        lines.feed(b"tail\nnext\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024, f"peak {peak} bytes"
    [long, nxt] = lines.take(10)
    assert long.truncated_from == 300 * 65536 + 4 and long.value == b"a" * 1000
    assert (nxt.value, nxt.truncated_from, nxt.position) == (b"next", None, 1)


def test_lines_split_the_same_whatever_the_chunks() -> None:
    data = b'{"a":1}\n\n{"b":2}\r\n' + b"z" * 50 + b"\n" + b"tail"
    expected = None
    for size in (1, 2, 3, 7, 64, len(data)):
        lines = LineSplitter(max_line_bytes=20)
        for i in range(0, len(data), size):
            lines.feed(data[i:i + size])
        got = [(r.position, r.value, r.truncated_from) for r in lines.take(10, at_eof=True)]
        expected = expected or got
        assert got == expected, size
    assert expected == [(0, b'{"a":1}', None), (2, b'{"b":2}', None), (3, b"z" * 20, 50),
                        (4, b"tail", None)]


def test_a_partial_last_line_is_cut_before_appending(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "predictions.jsonl"
    path.write_bytes(b'{"id":"1"}\n{"id":"2"}\n{"id":"3","y_pr')  # a crash mid-write
    with caplog.at_level(logging.WARNING):
        sink = open_sink(f"jsonl:{path}")
    sink.write([SinkMessage(b'{"id":"3"}')])
    sink.close()
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["1", "2", "3"]
    assert "cut a partial last line of 15 bytes" in caplog.text


def test_a_whole_file_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    for content in (b"", b"{}\n", b"no newline at all"):
        path.write_bytes(content)
        sink = open_sink(f"jsonl:{path}")
        sink.write([SinkMessage(b"{}")])
        sink.close()
        kept = content if content.endswith(b"\n") else b""
        assert path.read_bytes() == kept + b"{}\n"
