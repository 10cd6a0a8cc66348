"""BatchHistogram is exposed exactly as prometheus-client's Histogram fed the same values."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from adaptd.batch_histogram import BatchHistogram
from adaptd.metrics import LATENCY_BUCKETS_S


def _lines(registry: CollectorRegistry) -> list[str]:
    # _created is the construction time of each, so it differs by construction.
    return [line for line in generate_latest(registry).decode().splitlines()
            if "_created" not in line]


def test_exposition_equals_the_client_histogram_on_the_same_observations() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batch = BatchHistogram("x_seconds", "Doc.", buckets=LATENCY_BUCKETS_S, registry=ours)
    client = Histogram("x_seconds", "Doc.", buckets=LATENCY_BUCKETS_S, registry=theirs)
    # Values on, between, below and above the bucket bounds.
    for value, count in [(0.0, 1), (LATENCY_BUCKETS_S[0], 3), (0.0003, 5), (0.02, 7),
                         (LATENCY_BUCKETS_S[-1], 2), (1e9, 1), (0.5, 0)]:
        batch.observe_many(value, count)
        for _ in range(count):
            client.observe(value)
    assert _lines(ours) == _lines(theirs)
    assert any(line.startswith("x_seconds_count 19.0") for line in _lines(ours))
