"""A Prometheus histogram that takes one value for many observations at once.

Every record of a batch is decoded, learned and emitted together, so they share one latency.
prometheus-client's ``Histogram.observe`` takes one observation per call, which cost a Python
call (and a lock) per record on the hot path. This collector adds ``count`` observations of
one value in one step and is exposed exactly as a client ``Histogram`` would be (buckets,
``_count``, ``_sum``, ``_created``), so dashboards and recording rules see no difference.

>>> from prometheus_client import CollectorRegistry, generate_latest
>>> registry = CollectorRegistry()
>>> h = BatchHistogram("demo_seconds", "Demo.", buckets=(0.1, 1.0), registry=registry)
>>> h.observe_many(0.5, 3)
>>> [line for line in generate_latest(registry).decode().splitlines()
...  if line.startswith("demo_seconds_") and "created" not in line]
['demo_seconds_bucket{le="0.1"} 0.0', 'demo_seconds_bucket{le="1.0"} 3.0', \
'demo_seconds_bucket{le="+Inf"} 3.0', 'demo_seconds_count 3.0', 'demo_seconds_sum 1.5']
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString


class BatchHistogram:
    """A histogram without labels whose observations arrive in batches of one value.

    Args:
        name: the metric name, without suffixes.
        documentation: its help text.
        buckets: finite upper bounds, increasing; ``+Inf`` is added.
        registry: where it is registered (never a hidden global).
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float],
                 registry: CollectorRegistry) -> None:
        bounds = [float(b) for b in buckets]
        if bounds != sorted(set(bounds)):
            raise ValueError(f"{name}: buckets must be increasing, got {list(buckets)}")
        self.name = name
        self.documentation = documentation
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; last is +Inf
        self._sum = 0.0
        self._created = time.time()
        # Scrapes come from the HTTP server's thread.
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, value: float, count: int) -> None:
        """Record ``count`` observations of ``value``. Never blocks for long."""
        if count <= 0:
            return
        index = bisect.bisect_left(self._bounds, value)
        with self._lock:
            self._counts[index] += count
            self._sum += value * count

    def collect(self) -> Iterator[Metric]:
        """The histogram in the client's exposition: cumulative buckets, count and sum."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, n in zip([*map(floatToGoString, self._bounds), "+Inf"], counts, strict=True):
            cumulative += n
            buckets.append((bound, float(cumulative)))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, total, timestamp=None)
        family.add_sample(f"{self.name}_created", {}, self._created)
        yield family
