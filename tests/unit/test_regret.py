"""Comparators: the shadow baseline and the hindsight fit."""

from __future__ import annotations

import numpy as np

from adaptd.learner.adaptive import AdaptiveLearner
from adaptd.learner.models import LinearFamily, MLPFamily, initial_parameters, pointwise_loss
from adaptd.records import Record
from adaptd.regret import hindsight_loss, linear_hindsight_losses
from adaptd.settings import DriftConfig, LearnerConfig, MetaConfig, RegretConfig

# The engine's own math, without the online standardization in front (test_scaling.py).
RAW_FLAGS = {"standardize": False, "standardize_target": False}
RAW = LearnerConfig(**RAW_FLAGS)


def test_linear_hindsight_is_least_squares():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    Y = X @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.1 * rng.normal(size=50)
    fam = LinearFamily(3, "regression")
    got = hindsight_loss(fam, RegretConfig(), X, Y, np.zeros(4))
    Xb = np.hstack([X, np.ones((50, 1))])
    w, *_ = np.linalg.lstsq(Xb, Y, rcond=None)
    assert np.isclose(got, ((Xb @ w - Y) ** 2).sum(), rtol=1e-6)


def test_stacked_linear_fits_have_each_fit_s_bits():
    """A batch's closed segments are fitted as one stack (segments.LinearFits): each value must
    be the one fit's, bit for bit, at any scale and length; a singular one is NaN alone."""
    rng = np.random.default_rng(2)
    fam = LinearFamily(10, "regression")
    for k, n, scale in [(1, 200, 1.0), (2, 200, 1e-3), (7, 57, 1e3), (24, 200, 1.0), (3, 4, 1.0)]:
        X = rng.normal(size=(k, n, 10)) * scale
        Y = rng.normal(size=(k, n)) * 5
        thetas = rng.normal(size=(k, 11))
        one_by_one = [hindsight_loss(fam, RegretConfig(), X[j], Y[j], thetas[j])
                      for j in range(k)]
        assert linear_hindsight_losses(fam, RegretConfig(), X, Y, thetas) == one_by_one
    X = rng.normal(size=(3, 20, 10))
    X[1] = np.inf  # no finite fit for this one: NaN, as alone, and the others as alone
    Y, thetas = rng.normal(size=(3, 20)), rng.normal(size=(3, 11))
    got = linear_hindsight_losses(fam, RegretConfig(), X, Y, thetas)
    alone = [hindsight_loss(fam, RegretConfig(), X[j], Y[j], thetas[j]) for j in range(3)]
    assert np.isnan(got[1]) and np.isnan(alone[1])
    assert [got[0], got[2]] == [alone[0], alone[2]]


def test_mlp_and_logistic_hindsight_never_worse_than_theta_end():
    rng = np.random.default_rng(1)
    X = rng.uniform(-3, 3, size=(80, 1))
    for fam, Y in [
        (MLPFamily(1, (8,), "tanh", "regression"), np.sin(X[:, 0])),
        (MLPFamily(1, (8,), "tanh", "classification"), (X[:, 0] > 0.5).astype(float)),
        (LinearFamily(1, "classification"), (X[:, 0] > 0.5).astype(float)),
    ]:
        theta = initial_parameters(fam, 0)
        own = pointwise_loss(fam.task, fam.forward(theta[None], X[None])[0], Y).sum()
        fitted = hindsight_loss(fam, RegretConfig(), X, Y, theta)
        assert fitted < own


def test_baseline_is_adagrad_never_reset():
    rng = np.random.default_rng(2)
    recs = [Record(x=(float(x),), y=float(3 * x if i < 150 else -3 * x), task=int(i >= 150))
            for i, x in enumerate(rng.normal(size=300))]
    for window in (1, LearnerConfig().window):  # textbook AdaGrad (default), or the engine's
        learner = AdaptiveLearner("linear", "regression", config=RAW, drift=DriftConfig(detector="oracle"),
                                  regret=RegretConfig(baseline_window=window))
        learner.process_many(recs)
        plain = AdaptiveLearner("linear", "regression", drift=DriftConfig(detector="none"),
                                meta=MetaConfig(enabled=False),
                                config=LearnerConfig(**RAW_FLAGS, window=window),
                                regret=RegretConfig(baseline=False, hindsight=False))
        plain.process_many(recs)
        assert np.isclose(learner.summary().baseline_loss, plain.summary().cumulative_loss)
        assert learner.summary().drift_events == 1


def test_hindsight_regret_sums_closed_segments_only():
    recs = [Record(x=(float(i % 5),), y=float(i % 5), task=i // 100) for i in range(250)]
    learner = AdaptiveLearner("linear", "regression", config=RAW, drift=DriftConfig(detector="oracle"),
                              regret=RegretConfig(buffer=30))
    out = learner.process_many(recs)
    s = learner.summary()
    assert s.hindsight_loss is not None and s.hindsight_loss < 1e-6  # y = x is fit exactly
    closed = [i for i, r in enumerate(recs[:200]) if i % 100 >= 70]  # last 30 of each segment
    assert np.isclose(s.hindsight_regret, sum(out[i].loss for i in closed) - s.hindsight_loss)


def test_the_fit_s_helpers_are_numpy_s_expressions() -> None:
    """_lower is ``np.nanmin`` of the two losses when either is finite (else NaN), and
    _with_intercept is ``np.hstack`` with a column of ones, bit for bit."""
    from adaptd.regret import _lower, _with_intercept

    values = [0.0, 1.5, 2.5, np.inf, np.nan]
    for a in values:
        for b in values:
            pair = np.array([a, b])
            want = float(np.nanmin(pair)) if np.isfinite(pair).any() else float("nan")
            assert np.float64(_lower(a, b)).tobytes() == np.float64(want).tobytes()
    F = np.random.default_rng(0).normal(size=(7, 3))
    want_b = np.hstack([F, np.ones((7, 1))])
    got_b = _with_intercept(F)
    assert got_b.tobytes() == want_b.tobytes() and got_b.flags.c_contiguous
