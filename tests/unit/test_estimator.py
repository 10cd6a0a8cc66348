"""adaptd's river estimators: same predictions as the daemon's engine, river's conventions."""

from __future__ import annotations

import itertools
import pickle
from typing import Any

import numpy as np
import pytest
from river import checks, datasets, evaluate, metrics, preprocessing
from river.checks import clf, common

from adaptd.bench.streams import real_streams
from adaptd.config import load_settings
from adaptd.estimator import AdaptdClassifier, AdaptdRegressor
from adaptd.learner import build_learner
from adaptd.records import Record

SETTINGS = {"model": "linear", "regret.baseline": False, "regret.hindsight": False}


def _chess() -> tuple[list[dict[str, float]], list[int], list[Record]]:
    """chessweka (raw scales, drift: the detector fires on it) as dicts and daemon records."""
    stream = next(s for s in real_streams(quick=False) if s.name == "chessweka")
    data = stream.load(seed=0, n=10_000)
    # Zero-padded names sort in column order, the order the daemon's records have.
    xs = [{f"f{j:02d}": v for j, v in enumerate(row)} for row in data.X.tolist()]
    return xs, [int(v) for v in data.y.tolist()], data.records


def test_classifier_predicts_what_the_daemon_predicts_and_learns_once() -> None:
    xs, ys, records = _chess()
    # Standardized, chessweka raises no alarm at the default threshold; a lower one makes the
    # detector fire, so the drift count is compared too.
    drift = {"drift.ph_threshold": 5.0}
    daemon = build_learner(load_settings(environ={}, flags={"task": "classification",
                                                            **SETTINGS, **drift}))
    expected = np.concatenate([daemon.process_many(records[i : i + 256]).y_pred
                               for i in range(0, len(records), 256)])
    model = AdaptdClassifier(model="linear", settings=drift)
    got = []
    for x, y in zip(xs, ys, strict=True):
        # Predicting twice must change nothing: an unlabelled record is never learned.
        model.predict_proba_one(x)
        got.append(model.predict_proba_one(x)[True])
        model.learn_one(x, y)
    assert np.array(got) == pytest.approx(expected, abs=1e-12)
    assert model.n_drifts == daemon.summary().drift_events > 0


def test_regressor_predicts_what_the_daemon_predicts() -> None:
    rows = list(itertools.islice(datasets.TrumpApproval(), 300))
    names = sorted(rows[0][0])
    records = [Record(x=tuple(float(x[k]) for k in names), y=float(y)) for x, y in rows]
    daemon = build_learner(load_settings(environ={}, flags={"task": "regression", **SETTINGS}))
    expected = daemon.process_many(records).y_pred
    model = AdaptdRegressor(model="linear")
    got = []
    for x, y in rows:
        got.append(model.predict_one(x))
        model.learn_one(x, y)
    assert np.array(got) == pytest.approx(expected, abs=1e-9)


def test_runs_inside_progressive_val_score_and_a_pipeline() -> None:
    dataset = list(itertools.islice(datasets.Phishing(), 400))
    model = preprocessing.StandardScaler() | AdaptdClassifier()
    score = evaluate.progressive_val_score(dataset, model, metrics.Accuracy())
    # The same loop by hand, on a fresh pipeline, scores the same.
    by_hand = preprocessing.StandardScaler() | AdaptdClassifier()
    accuracy = metrics.Accuracy()
    for x, y in dataset:
        accuracy.update(y, by_hand.predict_one(x))
        by_hand.learn_one(x, y)
    assert score.get() == accuracy.get() > 0.8


def test_features_are_fixed_by_the_first_record() -> None:
    model = AdaptdRegressor()
    model.learn_one({"b": 1.0, "a": 2.0}, 1.0)
    # An unseen feature is ignored; a missing one counts as 0.
    assert model.predict_one({"a": 2.0, "b": 1.0, "new": 99.0}) == \
        model.predict_one({"b": 1.0, "a": 2.0})
    assert model.predict_one({"a": 2.0}) == model.predict_one({"a": 2.0, "b": 0.0})


def test_labels_are_discovered_online() -> None:
    model = AdaptdClassifier()
    assert set(model.predict_proba_one({"x": 1.0})) == {False, True}
    model.learn_one({"x": 1.0}, "spam")
    assert set(model.predict_proba_one({"x": 1.0})) == {"spam"}
    model.learn_one({"x": -1.0}, "ham")
    proba = model.predict_proba_one({"x": 1.0})
    assert set(proba) == {"spam", "ham"} and sum(proba.values()) == pytest.approx(1.0)
    # A third label switches the engine to softmax over all three, in order of appearance.
    model.learn_one({"x": 0.0}, "eggs")
    proba = model.predict_proba_one({"x": 1.0})
    assert list(proba) == ["spam", "ham", "eggs"] and sum(proba.values()) == pytest.approx(1.0)
    assert model.predict_one({"x": 1.0}) in proba


def test_settings_are_validated_at_construction() -> None:
    from adaptd.errors import ConfigError

    with pytest.raises(ConfigError, match="learner.lr must be > 0"):
        AdaptdClassifier(settings={"learner.lr": -1.0})


def test_rivers_estimator_checks_pass() -> None:
    # river's checks that need no scikit-learn, then its dataset checks on river's own data.
    for model, dataset, extra in (
        (AdaptdClassifier(), datasets.Phishing(),
         (clf.check_predict_proba_one, clf.check_predict_proba_one_binary,
          clf.check_classifier_tracks_seen_labels)),
        (AdaptdRegressor(), datasets.TrumpApproval(), ()),
    ):
        param_checks = _param_checks(model)
        assert len(param_checks) >= 14  # repr, clone, pickling round trip, params, doc, …
        for check in param_checks:
            check(model.clone())
        data = list(itertools.islice(dataset, 150))
        for check in (common.check_learn_one, common.check_pickling,
                      common.check_shuffle_features_no_impact, common.check_emerging_features,
                      common.check_disappearing_features, common.check_predict_one_pure,
                      common.check_predict_one_before_any_learn,
                      common.check_clone_is_independent, *extra):
            check(model.clone(), data)


def _param_checks(model: object) -> list[Any]:
    """river's checks up to its dataset checks (those import scikit-learn's datasets)."""
    out: list[Any] = []
    # yield_checks imports scikit-learn when it reaches the dataset checks: keep what came before.
    try:
        out.extend(checks.yield_checks(model))
    except ModuleNotFoundError:
        pass
    return out


def test_pickled_classifier_continues_identically() -> None:
    xs, ys, _ = _chess()
    model = AdaptdClassifier()
    for x, y in zip(xs[:100], ys[:100], strict=True):
        model.learn_one(x, y)
    copy = pickle.loads(pickle.dumps(model))
    for x, y in zip(xs[100:200], ys[100:200], strict=True):
        assert copy.predict_proba_one(x) == model.predict_proba_one(x)
        model.learn_one(x, y)
        copy.learn_one(x, y)
