"""The jsonl source's runs of lines read as one buffer (:class:`~adaptd.connectors.base.LineRun`)
against what the file holds: for files of plain lines with blank lines, lines starting with
whitespace, carriage returns and over-long lines here and there, read in batches of any size,
from any start, followed while a writer appends half lines, every record comes out once, at
its line number, with its bytes (or its first bytes and its length, when too long)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from adaptd.connectors.base import LineRun, RecordRun
from adaptd.connectors.jsonl import JsonlConnector, JsonlSource

LIMIT = 300


def plain(rng: random.Random) -> bytes:
    return b'{"x":[%d,%d],"y":%d}' % (rng.randrange(1000), rng.randrange(10**6), rng.randrange(2))


def odd(rng: random.Random) -> bytes:
    return rng.choice([b"", b"   ", b"\t", b' {"x":[1]}', b'{"x":[2]}\r', b"x" * (LIMIT + 5),
                       b"\x0c", b"[1]"])


def lines_of(rng: random.Random, n: int, odd_share: float) -> list[bytes]:
    return [odd(rng) if rng.random() < odd_share else plain(rng) for _ in range(n)]


def expected(lines: list[bytes], start: int) -> list[tuple[int, bytes, int | None]]:
    """What the daemon must get: each line that is not blank, at its line number, without its
    carriage return, its first LIMIT bytes and its length when longer."""
    out = []
    for i, line in enumerate(lines[start:], start):
        if len(line) > LIMIT:
            out.append((i, line[:LIMIT], len(line)))
            continue
        line = line[:-1] if line.endswith(b"\r") else line
        if line.strip():
            out.append((i, line, None))
    return out


def read_all(source: JsonlSource, rng: random.Random) -> tuple[list[tuple[int, bytes, int | None]],
                                                                 int]:
    out = []
    runs = 0
    while not source.exhausted:
        polled = source.poll_many(rng.choice([1, 3, 64, 500, 4096]), 0.0)
        runs += isinstance(polled, LineRun)
        records = polled.records() if isinstance(polled, RecordRun) else polled
        out += [(r.position, r.value, r.truncated_from) for r in records]
    return out, runs


@pytest.mark.parametrize("seed", range(12))
def test_every_line_comes_out_once_at_its_position(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    lines = lines_of(rng, rng.choice([10, 2000, 20_000]), odd_share=rng.choice([0, 0.001, 0.05]))
    ending = rng.choice([b"\n", b""])  # a last line with or without its newline
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + ending)
    start = rng.choice([0, 0, 1, len(lines) // 2])
    source = JsonlConnector.source(f"jsonl:{path}")
    source.limit_record_bytes(LIMIT)
    source.open({0: start})
    got, runs = read_all(source, rng)
    source.close()
    assert got == expected(lines, start)
    if len(lines) >= 20_000 and not any(line.endswith(b"\r") for line in lines):
        assert runs  # the plain stretches went as runs of lines (a CR file goes line by line)


def test_a_followed_file_with_half_written_lines(tmp_path: Path) -> None:
    rng = random.Random(3)
    lines = lines_of(rng, 3000, odd_share=0.0)
    data = b"".join(line + b"\n" for line in lines)
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"")
    source = JsonlConnector.source(f"jsonl:{path}?follow=true")
    source.limit_record_bytes(LIMIT)
    source.open({})
    got: list[tuple[int, bytes, int | None]] = []
    written = 0
    with open(path, "ab") as out:
        while written < len(data):
            step = rng.choice([1, 7, 100, 5000])  # cuts lines anywhere
            out.write(data[written:written + step])
            out.flush()
            written += step
            polled = source.poll_many(rng.choice([2, 100, 4096]), 0.0)
            records = polled.records() if isinstance(polled, RecordRun) else polled
            got += [(r.position, r.value, r.truncated_from) for r in records]
    while len(got) < len(lines):
        polled = source.poll_many(4096, 0.0)
        records = polled.records() if isinstance(polled, RecordRun) else polled
        got += [(r.position, r.value, r.truncated_from) for r in records]
    source.close()
    assert got == expected(lines, 0)
