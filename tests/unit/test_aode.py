"""The ``aode`` expert of ``--model auto`` (adaptd.learner.aode) and its place in Hedge."""

from __future__ import annotations

import numpy as np

from adaptd.learner import aode
from adaptd.learner.aode import Aode
from adaptd.learner.ensemble import EXPERTS, HedgeLearner
from adaptd.records import Record


def _run(store: Aode, X: np.ndarray, y: np.ndarray, n_classes: int = 2, key: int = 0,
         reset: np.ndarray | None = None) -> np.ndarray:
    n = len(y)
    return store.run(np.full(n, key, dtype=np.int64), X, y, np.ones(n, dtype=bool),
                     np.zeros(n, dtype=bool) if reset is None else reset, n_classes)


def _xor_codes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three-valued codes; the label is whether the first two codes agree (with two useless
    codes): no single feature says anything about the label, a pair says all of it."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 3, size=(n, 4)).astype(float) / 2.0  # values 0, 0.5, 1
    return X, (X[:, 0] == X[:, 1]).astype(float)


def _accuracy(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((p[:, 0] >= 0.5) == (y >= 0.5)))


def test_learns_a_pair_of_codes_that_naive_bayes_cannot() -> None:
    X, y = _xor_codes(1500, 0)
    store = Aode(4)
    store.grow(1)
    p = _run(store, X, y)
    assert _accuracy(p[-500:], y[-500:]) > 0.97
    vals = store.arrays["vals"][0]  # a cell per code, in the order first seen
    assert (np.sort(vals[:, :3], axis=1) == [0.0, 0.5, 1.0]).all()
    assert np.isnan(vals[:, 3:]).all()

    naive = Aode(4)
    naive.grow(1)
    naive._fit_budget(10 ** 9, 2)  # too many keys for pair tables: naive Bayes
    assert naive.arrays["pairs"].shape[1] == 0
    q = _run(naive, X, y)
    # Each code alone is independent of the label: naive Bayes predicts its base rate, 1/3.
    assert _accuracy(q[-500:], y[-500:]) < 0.75


def test_a_many_valued_feature_is_counted_by_z_score_quartiles() -> None:
    rng = np.random.default_rng(1)
    X = np.column_stack([rng.normal(50.0, 10.0, 3000), rng.integers(0, 2, 3000)])
    y = (X[:, 0] > 50.0).astype(float)
    store = Aode(2)
    store.grow(1)
    p = _run(store, X, y)
    assert (store.arrays["vals"][0, 0] == aode.NUMERIC).all()  # turned numeric
    assert sorted(store.arrays["vals"][0, 1, :2]) == [0.0, 1.0]
    # The cut at the mean is a quartile boundary: the cells separate the classes exactly.
    assert _accuracy(p[-1000:], y[-1000:]) > 0.98


def test_keys_classes_state_and_reset() -> None:
    """Keys learn apart; a third class widens the counts; a saved row predicts as the live
    one; a reset forgets the classes but keeps the features' values."""
    X, y = _xor_codes(600, 2)
    store = Aode(4)
    store.grow(2)
    _run(store, X, y, key=0)
    flipped = _run(store, X, 1.0 - y, key=1)
    assert _accuracy(flipped[-200:], 1.0 - y[-200:]) == 1.0

    ys3 = np.where(X[:, 2] == 1.0, 2.0, y)
    p3 = _run(store, X, ys3, n_classes=3, key=0)
    assert p3.shape == (600, 3) and np.allclose(p3.sum(axis=1), 1.0)

    copy = Aode(4)
    copy.grow(1)
    copy.set_state(0, store.get_state(0))
    learn = np.zeros(50, dtype=bool)
    zero = np.zeros(50, dtype=np.int64)
    a = store.run(zero, X[:50], ys3[:50], learn, learn, 3)
    b = copy.run(zero, X[:50], ys3[:50], learn, learn, 3)
    np.testing.assert_array_equal(a, b)

    reset = np.zeros(600, dtype=bool)
    reset[-1] = True
    _run(store, X, ys3, n_classes=3, key=0, reset=reset)
    assert store.arrays["prior"][0].sum() == 0.0 and store.arrays["pairs"][0].sum() == 0.0
    assert not np.isnan(store.arrays["vals"][0, 0, 0])


def test_the_ensemble_weighs_it_for_classification_only() -> None:
    """The label is the sign of x0·x1: the quadrants are cells of the two features, so AODE
    holds it exactly from a few records each (the linear expert cannot represent it)."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(2000, 2))
    y = (X[:, 0] * X[:, 1] > 0).astype(float)
    records = [Record(x=tuple(x), y=float(t)) for x, t in zip(X.tolist(), y.tolist(),
                                                              strict=True)]
    learner = HedgeLearner("classification")
    out = np.concatenate([learner.process_many(records[lo:lo + 256]).y_pred
                          for lo in range(0, 2000, 256)])
    weights = learner.summary().candidate_weights
    assert weights is not None and set(weights) == set(EXPERTS)
    assert max(weights, key=weights.__getitem__) == "aode" and weights["linear"] < 0.01
    assert np.mean((out[-500:] >= 0.5) == y[-500:]) > 0.97

    reg = HedgeLearner("regression")
    reg.process_many(records)
    assert reg.aode is None
    assert reg._W[list(reg._slot.values()), EXPERTS.index("aode")].max() == 0.0
