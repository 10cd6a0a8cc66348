"""Held-out streams: what the ``auto`` default was validated on but never tuned on.

The bench's real streams are what the default is scored on; a default tuned until it wins
there says little about a stream it has not seen. These streams are kept apart: river's
bundled datasets that the bench does not use (``Shuttle``, ``AirlinePassengers``) and river's
drifting generators (``river.datasets.synth``), each shaped like one of the held-out streams
the lead runs (features in [0, 1]; raw scales to about 10⁵; many classes on a short stream).
Nothing is downloaded. Labels are class indices ``0 … K-1`` as in :mod:`adaptd.bench.real`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from adaptd.bench.streams import StreamData
from adaptd.records import TaskKind

Rows = Iterable[tuple[dict[Any, Any], Any]]


def _records(rows: Rows, n: int, classification: bool) -> Iterator[dict[str, Any]]:
    rows = list(itertools.islice(rows, n))
    names = list(rows[0][0])
    index: dict[Any, int] = {}
    if classification:
        labels = sorted({y for _, y in rows}, key=str)
        index = {False: 0, True: 1} if set(labels) <= {False, True} else \
            {label: i for i, label in enumerate(labels)}
    for x, y in rows:
        yield {"key": "default", "x": [float(x[k]) for k in names],
               "y": index[y] if classification else float(y), "task": None}


def _drifting(make: Callable[[int, int], Any], concepts: tuple[int, ...], n: int,
              width: int) -> Rows:
    """``concepts`` of a generator chained by river's ConceptDriftStream, evenly spaced, each
    change a sigmoid of ``width`` records (Bifet et al. 2009, MOA's drift model)."""
    from river.datasets import synth

    stream = make(concepts[-1], len(concepts))
    step = n // len(concepts)
    for i in range(len(concepts) - 2, -1, -1):
        stream = synth.ConceptDriftStream(stream=make(concepts[i], i), drift_stream=stream,
                                          position=step, width=width, seed=i)
    return stream


def _airline(n: int) -> Iterator[dict[str, Any]]:
    """Monthly passengers from the last 12 months and the month as sin/cos (like WaterFlow)."""
    from river import datasets

    ys = [float(y) for _, y in datasets.AirlinePassengers()]
    rows = list(datasets.AirlinePassengers())
    for t in range(12, min(len(ys), 12 + n)):
        when: dt.datetime = rows[t][0]["month"]
        angle = 2 * math.pi * when.month / 12
        yield {"key": "default", "x": [*ys[t - 12 : t], math.sin(angle), math.cos(angle)],
               "y": ys[t], "task": None}


def _cls(rows: Callable[[], Rows], n: int) -> Callable[[], StreamData]:
    return lambda: StreamData.from_dicts(_records(rows(), n, True))


def heldout_streams() -> list[tuple[str, TaskKind, str, Callable[[], StreamData]]]:
    """``(name, task, note, load)`` of every held-out stream."""
    from river import datasets
    from river.datasets import synth

    def agrawal() -> Rows:
        return _drifting(lambda f, s: synth.Agrawal(classification_function=f, seed=s,
                                                    balance_classes=False),
                         (0, 2, 5, 8), 18_000, 500)

    def hyperplane() -> Rows:
        return synth.Hyperplane(seed=7, n_features=10, n_drift_features=4, mag_change=0.001,
                                noise_percentage=0.05)

    def sine() -> Rows:
        return _drifting(lambda f, s: synth.Sine(classification_function=f, seed=s),
                         (0, 1, 2, 3), 10_000, 100)

    def mixed() -> Rows:
        return _drifting(lambda f, s: synth.Mixed(classification_function=f, seed=s),
                         (0, 1, 0), 10_000, 100)

    def led() -> Rows:
        return synth.LEDDrift(seed=3, noise_percentage=0.1, irrelevant_features=True,
                              n_drift_features=4)

    def rbf40() -> Rows:
        return synth.RandomRBFDrift(seed_model=11, seed_sample=12, n_classes=40, n_features=20,
                                    n_centroids=80, change_speed=0.0005, n_drift_centroids=20)

    return [
        ("Shuttle 20k", "classification",
         "river Shuttle (bundled), 7 classes, raw scales, first 20,000",
         _cls(datasets.Shuttle, 20_000)),
        ("Agrawal drift", "classification",
         "Agrawal functions 0→2→5→8, raw scales to 10⁵ (like B), 18k", _cls(agrawal, 18_000)),
        ("Hyperplane", "classification",
         "rotating hyperplane, 10 features in [0, 1] (like A), 20k", _cls(hyperplane, 20_000)),
        ("Sine drift", "classification", "SINE functions 0→1→2→3, 2 features in [0, 1], 10k",
         _cls(sine, 10_000)),
        ("Mixed drift", "classification", "MIXED functions 0→1→0, 4 features, 10k",
         _cls(mixed, 10_000)),
        ("LED drift", "classification",
         "LEDDrift, 10 classes, 24 binary features, 4 drifting, 10k", _cls(led, 10_000)),
        ("Waveform", "classification", "Waveform, 3 classes, 21 noisy features, 10k",
         _cls(lambda: synth.Waveform(seed=5), 10_000)),
        ("RBF 40 classes", "classification",
         "RandomRBFDrift, 40 classes (34 own a centroid), 20 features, 4k (like C)", _cls(rbf40, 4_000)),
        ("AirlinePassengers", "regression", "river AirlinePassengers (bundled), 12 lags",
         lambda: StreamData.from_dicts(_airline(1_000))),
    ]
