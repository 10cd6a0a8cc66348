"""The real benchmark streams: vendored CSVs and the datasets shipped inside the river wheel.

Nothing here downloads. The CSVs in ``data/`` are public concept-drift benchmarks (see
``data/README.md``); river's ``FileDataset`` classes read files bundled with river itself
(``river.datasets.Phishing``, ``Bananas``, ``ImageSegments``, ``TrumpApproval``,
``ChickWeights``, ``WaterFlow``). Each loader yields the suite's record dicts
(``{"key", "x", "y", "task"}``) in stream order; labels of classification streams are class
indices ``0 … K-1`` (binary: 0/1, the positive class 1), so one scorer serves every learner.

Real streams have one history: the seed changes nothing, and there is no held-out period, so
adaptd runs on them as a user would start it, without a ``--meta`` file (only ``--task``).
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
from collections.abc import Iterable, Iterator
from importlib import resources
from typing import Any

#: Vendored CSV streams: file name → what it is (the last column is the 0/1 label).
CSV_STREAMS = {
    "chessweka.csv": "a player's online chess games, raw scales (~0..1000), drift (Žliobaitė 2011)",
    "LUdata.csv": "Luxembourg internet-usage survey over time, features in [0, 1] (Žliobaitė 2011)",
    "phishing.csv": "UCI phishing web pages, one-hot features, little drift (a control)",
}


def csv_rows(file: str) -> list[list[str]]:
    """The rows of a vendored CSV (header dropped), from the installed package data."""
    text = resources.files("adaptd.bench").joinpath("data", file).read_text()
    rows = list(csv.reader(text.splitlines()))
    return rows[1:]


def vendored_csv(seed: int, n: int, meta: bool, file: str) -> Iterator[dict[str, Any]]:
    """A vendored CSV as records: features are every column but the last, the label the last."""
    del seed, meta  # one history, no held-out period
    for row in itertools.islice(csv_rows(file), n):
        yield {"key": "default", "x": [float(v) for v in row[:-1]], "y": int(float(row[-1])),
               "task": None}


def _class_index(labels: Iterable[Any]) -> dict[Any, int]:
    """Label → index: sorted for a stable order (``False``/``True`` → 0/1)."""
    return {label: i for i, label in enumerate(sorted(set(labels), key=str))}


def _river_rows(name: str) -> list[tuple[dict[str, Any], Any]]:
    from river import datasets

    return list(getattr(datasets, name)())


def river_classification(seed: int, n: int, meta: bool, dataset: str
                         ) -> Iterator[dict[str, Any]]:
    """A river classification dataset, features in the order of the first record."""
    del seed, meta
    rows = _river_rows(dataset)
    index = _class_index(y for _, y in rows)
    if set(index) == {False, True}:
        index = {False: 0, True: 1}
    names = list(rows[0][0])
    for x, y in rows[:n]:
        yield {"key": "default", "x": [float(x[k]) for k in names], "y": index[y], "task": None}


def trump_approval(seed: int, n: int, meta: bool) -> Iterator[dict[str, Any]]:
    """river's TrumpApproval: tomorrow's approval from five polls and the date (raw scales:
    ``ordinal_date`` is about 7.4e5, which is the point: a learner must cope with it)."""
    del seed, meta
    rows = _river_rows("TrumpApproval")
    names = list(rows[0][0])
    for x, y in rows[:n]:
        yield {"key": "default", "x": [float(x[k]) for k in names], "y": float(y), "task": None}


def chick_weights(seed: int, n: int, meta: bool) -> Iterator[dict[str, Any]]:
    """river's ChickWeights: one key per chick, weight from time and diet (578 records)."""
    del seed, meta
    for x, y in _river_rows("ChickWeights")[:n]:
        yield {"key": f"chick{x['chick']}", "x": [float(x["time"]), float(x["diet"])],
               "y": float(y), "task": None}


#: Lags of the water-flow series used as features.
WATERFLOW_LAGS = 3


def water_flow(seed: int, n: int, meta: bool) -> Iterator[dict[str, Any]]:
    """river's WaterFlow: the next hour's flow from the last three and the hour of day.

    The dataset's only feature is a timestamp, so the stream is made autoregressive (as
    river's time-series examples do); the hour enters as sin/cos so it has no seam at 0h.
    """
    import math

    del seed, meta
    rows = _river_rows("WaterFlow")
    flows = [float(y) for _, y in rows]
    for t in range(WATERFLOW_LAGS, min(len(rows), WATERFLOW_LAGS + n)):
        when: dt.datetime = rows[t][0]["Time"]
        angle = 2 * math.pi * when.hour / 24
        lags = flows[t - WATERFLOW_LAGS : t]
        yield {"key": "default", "x": [*lags, math.sin(angle), math.cos(angle)], "y": flows[t],
               "task": None}
