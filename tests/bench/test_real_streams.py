"""The real streams, the baselines, the multi-class scoring and the standardizing diagnostic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adaptd.bench.engine import AdaptdLearner, standardized
from adaptd.bench.measures import record_losses
from adaptd.bench.peers import LastLabelLearner, MajorityLearner, VowpalWabbitLearner
from adaptd.bench.streams import StreamData, real_streams


def _stream(keys: list[str], X: list[list[float]], y: list[float]) -> StreamData:
    return StreamData.from_dicts(
        {"key": k, "x": x, "y": v, "task": None} for k, x, v in zip(keys, X, y, strict=True))


@pytest.mark.parametrize(("name", "records", "features"), [
    ("chessweka", 503, 8), ("ludata", 1_901, 31), ("phishing", 11_055, 46),
])
def test_vendored_csvs_load_whole_from_the_package(name: str, records: int,
                                                   features: int) -> None:
    stream = next(s for s in real_streams(quick=False) if s.name == name)
    data = stream.load(seed=0, n=100_000)
    assert data.X.shape == (records, features)
    assert set(np.unique(data.y).tolist()) == {0.0, 1.0}
    assert stream.real and not stream.meta_trained


def test_river_image_segments_has_seven_class_indices() -> None:
    stream = next(s for s in real_streams(quick=False) if s.name == "river ImageSegments")
    data = stream.load(seed=0, n=100_000)
    assert len(data) == 2_310 and data.n_classes == 7
    assert np.bincount(data.y.astype(int)).tolist() == [330] * 7


def test_multi_class_log_loss_takes_the_true_class_probability() -> None:
    P = np.array([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0]])
    y = np.array([1.0, 1.0])
    assert record_losses("classification", y, P).tolist() == pytest.approx([math.log(4), 0.0])


def test_standardized_uses_each_keys_running_mean_and_deviation() -> None:
    data = _stream(["a", "a", "b", "a"], [[1.0], [3.0], [100.0], [5.0]], [0, 1, 0, 1])
    z = [r.x[0] for r in standardized(data)]
    # a: 1 alone is only centred; after 1, 3: mean 2, std 1; after 1, 3, 5: mean 3, std √(8/3).
    assert z == pytest.approx([0.0, 1.0, 0.0, 2.0 / math.sqrt(8 / 3)])


def test_majority_and_last_label_baselines() -> None:
    data = _stream(["k"] * 4, [[0.0]] * 4, [1, 1, 0, 1])
    majority = MajorityLearner("classification").run(data).y_pred
    # Laplace-smoothed P(y=1): 1/2, 2/3, 3/4, then 3/5 after the 0.
    assert majority.tolist() == pytest.approx([0.5, 2 / 3, 3 / 4, 3 / 5])
    assert LastLabelLearner("classification").run(data).y_pred.tolist() == [0.5, 1, 1, 0]
    mean = MajorityLearner("regression").run(_stream(["k"] * 3, [[0.0]] * 3, [2, 4, 9]))
    assert mean.y_pred.tolist() == [0.0, 2.0, 3.0]


def test_adaptd_and_vw_give_class_probabilities_on_multi_class() -> None:
    data = _stream(["k"] * 6, [[float(i)] for i in range(6)], [0, 1, 2, 0, 1, 2])
    flags = {"task": "classification", "regret.baseline": False, "regret.hindsight": False}
    for P in (AdaptdLearner(flags, reports_alarms=False).run(data).y_pred,
              VowpalWabbitLearner("classification").run(data).y_pred):
        assert P.shape == (6, 3)
        assert P.sum(axis=1) == pytest.approx(np.ones(6))


def test_target_scales_use_only_the_labels_before_each_record() -> None:
    from adaptd.bench.engine import target_scales

    data = _stream(["a", "a", "b", "a"], [[0.0]] * 4, [1.0, 3.0, 7.0, 5.0])
    shift, scale = target_scales(data)
    # a: nothing before → (0, 1); after 1 → (1, std 0 → 1); after 1, 3 → (2, 1); b: first.
    assert shift.tolist() == [0.0, 1.0, 0.0, 2.0]
    assert scale.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_held_out_streams_load_and_are_not_bench_streams() -> None:
    """The validation streams of the default: class indices 0 … K-1, the sizes stated, and
    none of them scored in the bench (so the default was not tuned on them)."""
    from adaptd.bench.heldout import heldout_streams

    bench = {s.name for s in real_streams(quick=False)}
    sizes = {"Shuttle 20k": (20_000, 9), "Agrawal drift": (18_000, 9), "LED drift": (10_000, 24),
             "RBF 40 classes": (4_000, 20), "AirlinePassengers": (132, 14)}
    for name, task, _, load in heldout_streams():
        assert name not in bench
        data = load()
        if name in sizes:
            assert data.X.shape == sizes[name], name
        if task == "classification":
            labels = np.unique(data.y)
            assert labels.tolist() == list(range(len(labels))), name
    # 80 centroids dealt 40 classes: 34 of them own one.
    assert len(np.unique(next(load for n, _, _, load in heldout_streams()
                              if n == "RBF 40 classes")().y)) == 34
