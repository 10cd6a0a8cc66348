"""The latency benchmark's stage trace names every record of a batch by where it came from."""

from __future__ import annotations

from adaptd.connectors.base import SourceRecord
from benchmarks.latency_trace import _runs, breakdown


def _records(*where: tuple[int, int]) -> list[SourceRecord]:
    return [SourceRecord(partition, position, b"{}") for partition, position in where]


def test_a_mixed_list_is_one_stretch_per_partition_change() -> None:
    polled = _records((0, 7), (0, 8), (3, 2), (3, 3), (3, 4), (0, 9), (1, 5))
    assert _runs(polled) == [(0, 7, 2), (3, 2, 3), (0, 9, 1), (1, 5, 1)]


def test_breakdown_gives_each_partition_its_own_times() -> None:
    # One batch of two partitions, polled 10 ms after it was sent and read back 30 ms after.
    polled = _records((0, 0), (3, 0))
    events = [("polled", p, first, n, 1.010) for p, first, n in _runs(polled)]
    sent = {(0, 0): 1000, (3, 0): 1000, (0, 1): 1000}
    received = {(0, 0): 1040, (3, 0): 1040, (0, 1): 1040}
    table = breakdown(events, sent, received)
    # (0, 1) was not in the batch: left out, not given the batch's times.
    assert table.startswith("2 records:")
    assert "| sent → polled | 10.0 | 10.0 |" in table
    assert "total by partition (p50 / p99): 0: 40 / 40, 3: 40 / 40" in table
