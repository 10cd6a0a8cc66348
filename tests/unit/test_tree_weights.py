"""adaptd.learner.trees' leaves learn weighted records and split on a given feature list
(what a bagged forest of its trees needs: ``benchmarks/forest_expert.py``)."""

from __future__ import annotations

import math

import numpy as np

from adaptd.learner import trees
from adaptd.learner.trees import ADAPTIVE, GM2, GMAX, GMEAN, GMIN, GW


def _leaf(K: int, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(K), np.zeros((K, d, 5)), np.zeros(3)


def _learn(leaf: tuple[np.ndarray, np.ndarray, np.ndarray], x: np.ndarray, y: int,
           w: float) -> None:
    cw, gauss, count = leaf
    K = len(cw)
    freq, nb = np.empty(K), np.empty(K)
    use = np.arange(len(x))
    trees._leaf_proba(cw, gauss, count, x, K, ADAPTIVE, freq, nb, use)
    trees._learn_leaf(cw, gauss, count, x, y, K, ADAPTIVE, freq, nb, w)


def test_a_weighted_record_counts_as_that_many_copies() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)) * [1.0, 100.0, 0.01]
    ys = rng.integers(0, 2, 40)
    weights = rng.integers(1, 5, 40)
    weighted, copied = _leaf(2, 3), _leaf(2, 3)
    for x, y, w in zip(X, ys.tolist(), weights.tolist(), strict=True):
        _learn(weighted, x, y, float(w))
        for _ in range(w):
            _learn(copied, x, y, 1.0)
    # The class weights and Gaussians (the right-answer counts differ: each copy is judged
    # after the one before it was learned).
    for a, b in zip(weighted[:2], copied[:2], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert weighted[1][0, 0, GW] == weights[ys == 0].sum()


def test_a_split_is_chosen_among_the_listed_features_only() -> None:
    rng = np.random.default_rng(1)
    X = rng.uniform(0, 1, size=(400, 2))
    leaf = _leaf(2, 2)
    for x in X:  # feature 0 decides the label, feature 1 is noise
        _learn(leaf, x, int(x[0] > 0.5), 1.0)
    cw, gauss, _ = leaf
    assert trees._best_split(cw, gauss, 2, np.array([0, 1]))[0] == 0
    f, _, gain, _ = trees._best_split(cw, gauss, 2, np.array([1]))
    assert f == 1 and gain < 0.1


def test_a_first_weighted_record_whose_deviation_rounds_below_zero_stays_finite() -> None:
    """Weighted Welford's first step ``mean = w·x / w`` may round off ``x``, leaving M2 a hair
    below 0; the deviation is read as 0 then, not as NaN."""
    found = None
    for x in np.linspace(0.1, 10.0, 2000):
        for w in range(2, 12):
            leaf = _leaf(2, 1)
            _learn(leaf, np.array([x]), 0, float(w))
            if leaf[1][0, 0, GM2] < 0.0:
                found = leaf
                break
        if found is not None:
            break
    assert found is not None, "no case rounds M2 below 0: the guard is untested"
    g = found[1][0, 0]
    assert g[GMIN] == g[GMAX] and g[GMEAN] != 0.0
    assert math.isfinite(trees._gauss_log_pdf(g, 1.0, 1e-3))
    assert math.isfinite(trees._left_weight(g, g[GMEAN] + 1e-9))
