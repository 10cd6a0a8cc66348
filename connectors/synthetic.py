"""``synthetic:NAME?seed=S&n=N&…`` — deterministic drifting streams for demos, tests, benchmarks.

Every stream is a single partition 0 whose position is the record index. A stream is a pure
function of its options: the same seed gives the same records, ``n`` only cuts the stream
short (the first ``n`` records of the unbounded stream), and a source opened at position
``p`` yields exactly records ``p, p+1, …``. Each record is a JSON object::

    {"key": "k0", "x": [1.3], "y": 0.42, "task": 0}

where ``task`` is the true index of the task the record was drawn from, counted per key, so
that benchmarks can score drift detection. With ``keys=K`` there are ``K`` independent keys
``k0`` … ``k{K-1}``, each with its own sequence of tasks; records are interleaved uniformly at
random among them.

Streams (options common to all: ``seed`` (int ≥ 0, default 0), ``n`` (records; absent means
unbounded), ``keys`` (default 1)):

``sinusoid``
    Switching sinusoid regression, the standard few-shot regression family (Finn, Abbeel,
    Levine 2017, "Model-Agnostic Meta-Learning", §5.1): ``y = A·sin(x + φ) + ε`` with
    ``A ~ U[0.1, 5]``, ``φ ~ U[0, π]``, ``x ~ U[−5, 5]``, ``ε ~ N(0, 0.05)``. Each record of a
    key starts a new task for that key with probability ``hazard`` (default 0.01), as in the
    change-point model of Adams and MacKay (2007, "Bayesian Online Changepoint Detection").
``linear-tasks``
    Linear regression in ``d`` dimensions (default 30): ``y = w·x + ε`` with ``x ~ N(0, I)``,
    ``ε ~ N(0, noise²)`` (``noise`` default 0.1) and per-task weights
    ``w = w̄ + spread·s ⊙ z``, ``z ~ N(0, I)``, ``s = geomspace(1, 0.05, d)``: tasks share a
    mean ``w̄ ~ N(0, I)`` (fixed by the seed) and differ mostly along a few directions — the
    setting where a meta-learned initialization and per-coordinate step sizes pay off
    (Khodak, Balcan, Talwalkar 2019, "Adaptive Gradient-Based Meta-Learning Methods").
    Segment lengths are geometric with mean ``1/hazard`` (``hazard`` default 0.005).
``friedman``
    river's :class:`~river.datasets.synth.FriedmanDrift` (Ikonomovska, Gama, Džeroski 2011),
    one generator per key: ``drift_type`` ``lea`` (default), ``gra`` or ``gsg``; ``position``
    the per-key record counts at which concepts change (default 1000, 2000, 3000 — or, when
    ``n`` is given, spread evenly over the ``n / keys`` records each key gets); ``task`` is the
    index of the segment between drift positions. ``hazard`` does not apply. With one key the
    stream is exactly ``FriedmanDrift(seed=seed)``. river's generator cannot seek, so opening
    this stream at position ``p`` replays the ``p`` records before it (a few seconds per
    million); the other streams skip ahead in blocks (well under a second per million).

Benchmarks use the same streams without a connector::

    >>> from adaptd.connectors.synthetic import generate
    >>> [sorted(r) for r in generate("sinusoid", seed=1, n=2)]
    [['key', 'task', 'x', 'y'], ['key', 'task', 'x', 'y']]
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from adaptd.connectors.base import (
    Connector,
    PartitionListener,
    Source,
    SourceRecord,
    parse_options,
    parse_uri,
)
from adaptd.connectors.sequential import Pausable, start_position
from adaptd.connectors.synthetic_streams import (
    FriedmanOptions,
    LinearTasksOptions,
    Record,
    SinusoidOptions,
    StreamOptions,
    friedman_records,
    linear_tasks_records,
    sinusoid_records,
)
from adaptd.errors import ConfigError
from adaptd.records import encode

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class StreamSpec:
    """A named stream: its options dataclass and its record generator.

    ``records(options, start)`` yields records ``start, start+1, …`` up to ``options.n``.
    """

    options: type[StreamOptions]
    records: Callable[[Any, int], Iterator[Record]]
    description: str


STREAMS: Mapping[str, StreamSpec] = {
    "sinusoid": StreamSpec(SinusoidOptions, sinusoid_records, "switching sinusoid regression"),
    "linear-tasks": StreamSpec(
        LinearTasksOptions, linear_tasks_records, "linear regression tasks around a shared mean"
    ),
    "friedman": StreamSpec(FriedmanOptions, friedman_records, "river's FriedmanDrift"),
}


def _spec(name: str, where: str) -> StreamSpec:
    try:
        return STREAMS[name]
    except KeyError:
        raise ConfigError(
            f"{where}: unknown synthetic stream {name!r}; known: {sorted(STREAMS)}"
        ) from None


def generate(
    name: str, seed: int = 0, n: int | None = None, *, start: int = 0, **options: Any
) -> Iterator[Record]:
    """Records ``start, start+1, …`` of a synthetic stream, as dicts; see the module docstring.

    Raises :class:`ConfigError` naming the option for unknown or invalid options.
    """
    where = f"synthetic stream {name!r}"
    spec = _spec(name, where)
    known = {f.name for f in dataclasses.fields(spec.options)}
    for option in options:
        if option not in known or option in ("seed", "n"):
            raise ConfigError(
                f"{where}: unknown option {option!r}; known options: {sorted(known)}"
            )
    if start < 0:
        raise ConfigError(f"{where}: start must be >= 0, got {start}")
    try:
        parsed = spec.options(seed=seed, n=n, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return spec.records(parsed, start)


class SyntheticSource(Pausable, Source):
    """Serves a synthetic stream as partition 0, position = record index.

    ``poll`` never waits, except while paused.
    """

    def __init__(self, name: str, spec: StreamSpec, options: StreamOptions) -> None:
        self.name = name
        self.spec = spec
        self.options = options
        self._records: Iterator[Record] | None = None
        self._next = 0

    def open(
        self, start_positions: Mapping[int, int], listener: PartitionListener | None = None
    ) -> None:
        """Position the stream at ``start_positions[0]`` (0 if absent)."""
        start = start_position(f"synthetic source {self.name!r}", start_positions)
        self._records = self.spec.records(self.options, start)
        self._next = start
        log.info("synthetic stream %s (%s) from record %d", self.name, self.options, start)

    def poll(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        """The next ``max_records`` records at once; ``[]`` only when the stream has ended."""
        if self._records is None:
            raise RuntimeError(f"synthetic source {self.name!r}: poll() outside open() … close()")
        if self.paused_wait(timeout_s):
            return []
        out = []
        for position, record in enumerate(itertools.islice(self._records, max_records), self._next):
            out.append(
                SourceRecord(
                    partition=0, position=position, value=encode(record),
                    key=record["key"].encode(),
                )
            )
        self._next += len(out)
        return out

    @property
    def exhausted(self) -> bool:
        """True once ``n`` records were handed out (never for an unbounded stream)."""
        return self.options.n is not None and self._next >= self.options.n

    def lag(self) -> Mapping[int, int]:
        if self.options.n is None or self._records is None:
            return {}
        return {0: max(self.options.n - self._next, 0)}

    def close(self) -> None:
        """Drop the generator. Idempotent."""
        self._records = None


class SyntheticConnector(Connector):
    """``synthetic:NAME?seed=S&n=N&…``: a deterministic drifting stream."""

    scheme = "synthetic"
    description = (
        "deterministic drifting streams: " + ", ".join(sorted(STREAMS))
        + " (?seed=S&n=N&keys=K&…)"
    )

    @classmethod
    def source(cls, uri: str) -> SyntheticSource:
        parsed = parse_uri(uri)
        spec = _spec(parsed.target, repr(uri))
        return SyntheticSource(parsed.target, spec, parse_options(spec.options, parsed))
