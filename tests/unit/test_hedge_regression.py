"""Regression's mixture of mixtures (adaptd.learner.hedge.hedge_regression): below every
expert when they err differently, and close to the running mean on noise over many keys."""

from __future__ import annotations

import numpy as np

from adaptd.learner.ensemble import CLASSIFICATION_ONLY, EXPERTS, ROW_FIELDS, HedgeLearner
from adaptd.learner.hedge import LAST, hedge_regression
from adaptd.records import Record
from adaptd.settings import RegretConfig


def _run(cand: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """One key through ``hedge_regression`` from uniform weights (no tree or AODE): its
    predictions."""
    E = len(EXPERTS)
    start = np.full((1, E), 1.0 / (E - len(CLASSIFICATION_ONLY)))
    start[0, [EXPERTS.index(e) for e in CLASSIFICATION_ONLY]] = 0.0
    rows = np.zeros((1, len(ROW_FIELDS)))
    rows[0, LAST] = np.nan
    y_pred, loss = np.empty(len(ys)), np.full(len(ys), np.nan)
    hedge_regression(np.zeros(len(ys), dtype=np.int64), cand, ys, np.zeros(len(ys), bool),
                     start.copy(), start.copy(), start.copy(), start.copy(), start.copy(),
                     start.copy(), np.full((1, 3), 1.0 / 3), rows, np.zeros(3), 0.5, 0.5,
                     0.25, 1e-3, 1.0, 8.0, y_pred, loss)
    return y_pred


def test_two_experts_that_err_differently_are_combined_below_both() -> None:
    """linear = y + 1 and mlp = y − 2: Hedge alone would follow the linear expert (squared
    error 1); the convex combination 2/3 · linear + 1/3 · mlp is exact, and exponentiated
    gradient finds it."""
    rng = np.random.default_rng(0)
    ys = rng.normal(size=4000) * 3.0
    zero = np.zeros_like(ys)  # the tree's and the AODE's columns
    cand = np.stack([ys + 1.0, ys - 2.0, ys + 5.0, zero, zero], axis=1)
    err = (_run(cand, ys) - ys) ** 2
    assert err[2000:].mean() < 0.1, err[2000:].mean()  # each expert alone: 1, 4 and 25


def test_noise_over_many_keys_is_no_worse_than_each_keys_running_mean() -> None:
    """Fifty keys of noise around their own level: the running mean is the best forecast,
    and every other expert fits noise. The stream's Hedge row learns that from every key's
    losses at once; each key's Hedge alone paid to learn it fifty times (main before the
    stream's row: 4.8 % above the running mean here; now 2.6 %)."""
    rng = np.random.default_rng(3)
    level = {f"k{i}": float(rng.normal() * 5.0) for i in range(50)}
    records = []
    for i in range(20_000):
        key = f"k{rng.integers(50)}"
        records.append(Record(x=tuple(rng.normal(size=3).tolist()),
                              y=level[key] + float(rng.normal()), key=key))
    learner = HedgeLearner("regression", regret=RegretConfig(baseline=False, hindsight=False))
    y_pred = np.concatenate([learner.process_many(records[lo : lo + 256]).y_pred
                             for lo in range(0, len(records), 256)])
    excess, base = _excess(records, y_pred)
    assert excess < 0.035 * base, excess / base


def _excess(records: list[Record], y_pred: np.ndarray) -> tuple[float, float]:
    """The squared loss of ``y_pred`` over that of each key's running mean, and the running
    mean's, summed over every record but each key's first (where there is no mean yet)."""
    count: dict[str, int] = {}
    mean: dict[str, float] = {}
    excess = base = 0.0
    for r, p in zip(records, y_pred, strict=True):
        n, m = count.get(r.key, 0), mean.get(r.key, 0.0)
        if n:
            excess += (r.y - p) ** 2 - (r.y - m) ** 2
            base += (r.y - m) ** 2
        count[r.key], mean[r.key] = n + 1, m + (r.y - m) / (n + 1)
    return excess, base
