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


def test_breakdown_gives_the_daemons_own_span_per_record() -> None:
    # Two batches: decoded 1 and 5 ms after being polled, appended 3 and 20 ms after that.
    events = [("polled", 0, 0, 1, 1.000), ("decoded", 0, 0, 1, 1.001),
              ("appended", 0, 0, 1, 1.004),
              ("polled", 0, 1, 1, 1.000), ("decoded", 0, 1, 1, 1.005),
              ("appended", 0, 1, 1, 1.025)]
    sent = {(0, 0): 990, (0, 1): 990}
    received = {(0, 0): 1010, (0, 1): 1030}
    table = breakdown(events, sent, received)
    # p50 of (3, 20) is their mean, p99 numpy's interpolation; the slowest 1 % (by total)
    # is the second record alone.
    assert "| adaptd: decoded → appended (decode → emitted) | 11.5 | 19.8 | 20.0 |" in table
    assert "| adaptd: polled → appended | 14.5 | 24.8 | 25.0 |" in table
