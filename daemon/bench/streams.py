"""The benchmark streams, materialised in memory so that every learner sees the same records.

Each :class:`Stream` names a family and its options, the model adaptd runs on it, the
comparator class of the hindsight fit, and how to build an evaluation stream for a seed and a
meta-training stream from held-out data (other seeds, or for the real stream an earlier
period). Synthetic families come from :func:`adaptd.connectors.synthetic.generate`; the
classification stream is river's SEA generator switched between its four concepts (abrupt,
recurring); the real stream is river's offline copy of daily S&P 500 returns
(``river/datasets/sp500.csv.gz``, shipped inside the river wheel: nothing is downloaded).
"""

from __future__ import annotations

import csv
import gzip
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adaptd.bench import real
from adaptd.records import Record, TaskKind

#: Seeds the evaluation streams use; meta-training uses ``META_SEED_OFFSET + i`` instead, so
#: adaptd never meta-trains on a stream it is scored on.
META_SEED_OFFSET = 10_000


@dataclass
class StreamData:
    """One materialised stream.

    ``X`` is (n, d) float64, ``y`` (n,), ``keys`` (n,) str, ``tasks`` (n,) int with -1 where
    the record carries no true task; ``records`` are the same rows as daemon records.
    """

    X: np.ndarray
    y: np.ndarray
    keys: np.ndarray
    tasks: np.ndarray
    records: list[Record] = field(repr=False)

    @classmethod
    def from_dicts(cls, rows: Iterable[dict[str, Any]]) -> StreamData:
        """Build from ``{"key", "x", "y", "task"}`` dicts (the synthetic connector's records)."""
        records = [
            Record(
                x=tuple(float(v) for v in row["x"]),
                y=float(row["y"]),
                key=str(row.get("key", "default")),
                task=None if row.get("task") is None else int(row["task"]),
            )
            for row in rows
        ]
        if not records:
            raise ValueError("a benchmark stream needs at least one record")
        return cls(
            X=np.array([r.x for r in records], dtype=np.float64),
            y=np.array([r.y for r in records], dtype=np.float64),
            keys=np.array([r.key for r in records]),
            tasks=np.array([-1 if r.task is None else r.task for r in records], dtype=np.int64),
            records=records,
        )

    def __len__(self) -> int:
        return len(self.records)

    @property
    def n_classes(self) -> int:
        """Classes of a classification stream (labels are indices ``0 … K-1``)."""
        return int(self.y.max()) + 1

    def head(self, n: int) -> StreamData:
        """The first ``n`` records."""
        return StreamData(
            self.X[:n], self.y[:n], self.keys[:n], self.tasks[:n], self.records[:n]
        )


Basis = Callable[[np.ndarray], np.ndarray]


def identity_basis(X: np.ndarray) -> np.ndarray:
    """The raw features: the hindsight fit is a linear (or logistic) model."""
    return X


def sinusoid_basis(X: np.ndarray) -> np.ndarray:
    """``[sin x, cos x]``: every task ``A·sin(x + φ)`` is linear in these, so the fit is exact."""
    return np.column_stack([np.sin(X[:, 0]), np.cos(X[:, 0])])


def friedman_basis(X: np.ndarray) -> np.ndarray:
    """Features, squares, pairwise products and ``sin(π xᵢxⱼ)``: covers every Friedman concept."""
    i, j = np.triu_indices(X.shape[1], k=1)
    prod = X[:, i] * X[:, j]
    return np.column_stack([X, X * X, prod, np.sin(np.pi * prod)])


@dataclass(frozen=True)
class Stream:
    """A benchmark stream: a family with options, and how adaptd and the comparator see it.

    Args:
        name: the row label in the report, e.g. ``sinusoid h=0.01``.
        family: ``sinusoid``, ``linear-tasks``, ``friedman``, ``sea`` or ``sp500``.
        task: ``regression`` or ``classification``.
        model: the model adaptd runs (``auto``, ``linear``, ``logistic`` or ``mlp``).
        options: passed to the family's generator.
        basis: feature map of the hindsight comparator (a linear / logistic fit on it).
        note: one sentence for the report.
        seeded: false for the real streams, whose seed changes nothing.
        meta_trained: whether adaptd meta-trains on held-out data first (other seeds, or
            an earlier period); false for real streams that have no held-out period, where
            adaptd starts as ``adaptd run --task …`` does.
    """

    name: str
    family: str
    task: TaskKind
    model: str
    options: tuple[tuple[str, Any], ...] = ()
    basis: Basis = identity_basis
    note: str = ""
    seeded: bool = True
    meta_trained: bool = True

    @property
    def real(self) -> bool:
        """A recorded history rather than a generator (the adaptd variant grid runs on these)."""
        return not self.seeded

    def load(self, seed: int, n: int) -> StreamData:
        """The evaluation stream for ``seed`` with (at most) ``n`` records."""
        return StreamData.from_dicts(_FAMILIES[self.family](seed, n, False, **dict(self.options)))

    def load_meta(self, index: int, n: int) -> StreamData:
        """The ``index``-th held-out meta-training stream (a seed never evaluated on)."""
        seed = META_SEED_OFFSET + index
        return StreamData.from_dicts(_FAMILIES[self.family](seed, n, True, **dict(self.options)))


def _synthetic(name: str) -> Callable[..., Iterator[dict[str, Any]]]:
    def make(seed: int, n: int, meta: bool, **options: Any) -> Iterator[dict[str, Any]]:
        # Imported here so that listing the suite does not need the connector's dependencies.
        from adaptd.connectors.synthetic import generate

        # FriedmanDrift's drift points are spread over ``n`` by the connector.
        return generate(name, seed=seed, n=n, **options)

    return make


#: SEA's four concepts (thresholds 8, 9, 7, 9.5), visited twice: abrupt and recurring drift.
SEA_CONCEPTS = (0, 1, 2, 3, 0, 1, 2, 3)
#: STAGGER's three boolean concepts, each revisited: recurring drift on categorical features.
STAGGER_CONCEPTS = (0, 1, 2, 0, 1, 2, 0, 1, 2)


def _recurring(
    make: Callable[[int, int], Iterable[tuple[dict[str, Any], Any]]],
    concepts: tuple[int, ...], seed: int, n: int,
) -> Iterator[dict[str, Any]]:
    """Switch between generators ``make(concept, seed)`` every ``n / len(concepts)`` records.

    ``task`` is the concept index, so a recurring concept carries its earlier task number.
    Each concept keeps one generator, so a revisit continues its sample sequence.
    """
    generators = {c: iter(make(c, seed * 10 + c)) for c in set(concepts)}
    length = max(1, n // len(concepts))
    for i in range(n):
        concept = concepts[min(i // length, len(concepts) - 1)]
        x, y = next(generators[concept])
        yield {"key": "default", "x": [float(x[k]) for k in sorted(x)], "y": int(y),
               "task": concept}


def _sea(seed: int, n: int, meta: bool, noise: float = 0.05) -> Iterator[dict[str, Any]]:
    """River's SEA generator switched between its concepts (:data:`SEA_CONCEPTS`)."""
    from river.datasets import synth

    return _recurring(lambda c, s: synth.SEA(variant=c, noise=noise, seed=s), SEA_CONCEPTS,
                      seed, n)


def _stagger(seed: int, n: int, meta: bool) -> Iterator[dict[str, Any]]:
    """River's STAGGER (Schlimmer and Granger 1986) cycling its three concepts three times."""
    from river.datasets import synth

    return _recurring(
        lambda c, s: synth.STAGGER(classification_function=c, seed=s, balance_classes=False),
        STAGGER_CONCEPTS, seed, n)


def _rbf_drift(seed: int, n: int, meta: bool, n_classes: int = 5) -> Iterator[dict[str, Any]]:
    """River's RandomRBFDrift: ``n_classes`` classes, 10 features, every centroid moving
    (incremental drift), a multi-class stream."""
    from river.datasets import synth

    gen = synth.RandomRBFDrift(seed_model=seed, seed_sample=seed + 1, n_classes=n_classes,
                               n_features=10, n_centroids=50, change_speed=0.001,
                               n_drift_centroids=50)
    for x, y in itertools.islice(gen, n):
        yield {"key": "default", "x": [float(x[k]) for k in sorted(x)], "y": int(y),
               "task": None}


#: The ten tickers of river's SP500Stocks, in the file's column order.
SP500_TICKERS = ("AAPL", "AMZN", "IBM", "INTC", "JNJ", "JPM", "KO", "MSFT", "WMT", "XOM")
#: Share of trading days (the earliest) used for meta-training; the rest is evaluated.
SP500_META_SHARE = 0.3
SP500_LAGS = 3


def sp500_returns() -> np.ndarray:
    """Daily returns in percent, (days, 10), from the CSV shipped in the river wheel."""
    from river.datasets import SP500Stocks

    with gzip.open(SP500Stocks().path, "rt", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return np.array([[float(row[t]) for t in SP500_TICKERS] for row in rows], dtype=np.float64)


def _sp500(seed: int, n: int, meta: bool) -> Iterator[dict[str, Any]]:
    """One key per ticker, days interleaved: predict a ticker's next-day return.

    Features for ticker k on day t: its returns on days t, t-1, t-2 and the equal-weighted
    market return on day t. The seed is ignored (there is one history); ``meta`` selects the
    earliest :data:`SP500_META_SHARE` of the days, the evaluation stream is the rest, cut to
    ``n`` records.
    """
    returns = sp500_returns()
    market = returns.mean(axis=1)
    days = range(SP500_LAGS - 1, len(returns) - 1)
    split = int(len(returns) * SP500_META_SHARE)
    chosen = [t for t in days if (t < split) == meta]
    count = 0
    for t in chosen:
        for k, ticker in enumerate(SP500_TICKERS):
            if count >= n:
                return
            lags = [returns[t - lag, k] for lag in range(SP500_LAGS)]
            yield {"key": ticker, "x": [*lags, market[t]], "y": returns[t + 1, k], "task": None}
            count += 1


_FAMILIES: dict[str, Callable[..., Iterator[dict[str, Any]]]] = {
    "sinusoid": _synthetic("sinusoid"),
    "linear-tasks": _synthetic("linear-tasks"),
    "friedman": _synthetic("friedman"),
    "sea": _sea,
    "stagger": _stagger,
    "rbf-drift": _rbf_drift,
    "sp500": _sp500,
    "csv": real.vendored_csv,
    "river-classification": real.river_classification,
    "trump-approval": real.trump_approval,
    "chick-weights": real.chick_weights,
    "water-flow": real.water_flow,
}


def suite_streams(quick: bool) -> list[Stream]:
    """The streams of the quick or the full suite, in report order."""
    hazards = (0.01,) if quick else (0.005, 0.01, 0.05)
    spreads = (1.0,) if quick else (0.3, 1.0, 3.0)
    drifts = ("lea",) if quick else ("lea", "gra", "gsg")
    streams = [
        Stream(
            f"sinusoid h={h}", "sinusoid", "regression", "mlp", (("hazard", h),),
            sinusoid_basis, f"switching sinusoid, a new task with probability {h} per record",
        )
        for h in hazards
    ]
    streams += [
        Stream(
            f"linear-tasks spread={s}", "linear-tasks", "regression", "linear",
            (("d", 30), ("spread", s)), identity_basis,
            f"d=30 linear tasks, anisotropic task spread {s}, hazard 0.005",
        )
        for s in spreads
    ]
    friedman_notes = {
        "lea": "local expanding abrupt drift",
        "gra": "global recurring abrupt drift",
        "gsg": "global slow gradual drift",
    }
    streams += [
        Stream(
            f"friedman {d}", "friedman", "regression", "mlp", (("drift_type", d),),
            friedman_basis, f"river FriedmanDrift, {friedman_notes[d]}, drifts spread over the stream",
        )
        for d in drifts
    ]
    streams.append(
        Stream(
            "sea", "sea", "classification", "logistic", (), identity_basis,
            "river SEA, 4 concepts visited twice (abrupt, recurring), 5% label noise",
        )
    )
    if not quick:
        streams.append(Stream(
            "stagger", "stagger", "classification", "logistic", (), identity_basis,
            "river STAGGER, 3 concepts cycled 3 times (recurring), categorical features"))
        streams.append(Stream(
            "rbf-drift 5 classes", "rbf-drift", "classification", "logistic", (),
            identity_basis,
            "river RandomRBFDrift, 5 classes, 10 features, every centroid moving (multi-class)",
            meta_trained=False))
    streams.append(
        Stream(
            "sp500", "sp500", "regression", "linear", (), identity_basis,
            "river SP500Stocks (offline, in the river wheel): 10 tickers as keys, next-day return",
            seeded=False,
        )
    )
    return streams + real_streams(quick)


def real_streams(quick: bool) -> list[Stream]:
    """Recorded histories without a held-out period: adaptd runs them with ``--task`` only
    (model ``auto``, the default), as a user would start it."""
    def real_stream(name: str, family: str, task: TaskKind, note: str,
                    options: tuple[tuple[str, Any], ...] = ()) -> Stream:
        return Stream(name, family, task, "auto", options, identity_basis, note,
                      seeded=False, meta_trained=False)

    csvs = [
        real_stream(file.removesuffix(".csv").lower(), "csv", "classification", note,
                    (("file", file),))
        for file, note in real.CSV_STREAMS.items()
    ]
    river_cls = [
        real_stream(f"river {name}", "river-classification", "classification", note,
                    (("dataset", name),))
        for name, note in (
            ("Phishing", "river Phishing (1,250 pages, 9 features in [0, 1])"),
            ("Bananas", "river Bananas (5,300 points, 2 features, non-linear boundary)"),
            ("ImageSegments",
             "river ImageSegments, 7 classes, 18 raw-scale features (multi-class)"),
        )
    ]
    regression = [
        real_stream("river TrumpApproval", "trump-approval", "regression",
                    "river TrumpApproval: approval from 5 polls and the raw ordinal date"),
        real_stream("river ChickWeights", "chick-weights", "regression",
                    "river ChickWeights: a chick's weight from time and diet, one key per chick"),
        real_stream("river WaterFlow", "water-flow", "regression",
                    "river WaterFlow: next hour's flow from 3 lags and the hour of day"),
    ]
    if quick:
        # One raw-scale binary stream and the multi-class path, kept short.
        return [csvs[0], river_cls[2]]
    return csvs + river_cls + regression
