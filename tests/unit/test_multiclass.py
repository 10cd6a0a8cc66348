"""Multi-class classification: labels, softmax gradients, class growth, predictions, state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from adaptd.connectors.base import SourceRecord
from adaptd.learner import kernel
from adaptd.learner.adaptive import AdaptiveLearner
from adaptd.learner.classes import ClassIndex, widen
from adaptd.learner.models import SoftmaxFamily, build_family, initial_parameters
from adaptd.learner.network import net_of
from adaptd.learner.window import window_grad
from adaptd.records import Record, RecordBatch, RecordDecoder, predictions
from adaptd.settings import LearnerConfig

D, K, N = 4, 3, 6


def _window(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(1, N, D))
    Y = rng.integers(0, K, size=(1, N)).astype(np.float64)
    M = np.ones((1, N))
    M[0, 2] = 0.0  # a masked entry must not count
    return X, Y, M


def _numeric_grad(fam: SoftmaxFamily, theta: np.ndarray, X: np.ndarray, Y: np.ndarray,
                  M: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of the mean window loss."""
    g = np.empty(fam.n_params)
    for q in range(fam.n_params):
        up, down = theta.copy(), theta.copy()
        up[0, q] += h
        down[0, q] -= h
        g[q] = (fam.loss_grad(up, X, Y, M)[0][0] - fam.loss_grad(down, X, Y, M)[0][0]) / (2 * h)
    return g


@pytest.mark.parametrize("model,hidden", [("linear", ()), ("mlp", (5,)), ("mlp", (5, 3))])
def test_softmax_gradients_match_finite_differences(model: str, hidden: tuple[int, ...]) -> None:
    fam = build_family(model, "classification", D, hidden or (1,), "tanh", classes=K)
    assert isinstance(fam, SoftmaxFamily)
    theta = initial_parameters(fam, 3)[None, :] * 3.0  # away from zero: non-trivial softmax
    X, Y, M = _window(1)
    numeric = _numeric_grad(fam, theta, X, Y, M)
    _, closed = fam.loss_grad(theta, X, Y, M)
    np.testing.assert_allclose(closed[0], numeric, rtol=1e-5, atol=1e-8)
    # The compiled kernel's window gradient is the same closed form.
    net = net_of(fam)
    sc = kernel.scratch(net.L_out, D, N, fam.n_params)
    g = np.empty(fam.n_params)
    window_grad(theta, 0, X, Y, M, N, net, g, -1, 0.0, sc)
    np.testing.assert_allclose(g, closed[0], rtol=1e-12, atol=1e-14)


def test_label_identity() -> None:
    index = ClassIndex()
    # 1, 1.0 and true are one class; the string "1" is another, keyed with its quotes.
    assert index.add([1.0, 1.0, True, "1", "b"]) == [1.0, "1", "b"]
    assert index.labels == [1, "1", "b"]
    assert index.proba_keys == ["1", '"1"', "b"]
    assert index.targets(np.array([True, "1", None, 1.0], dtype=object)).tolist()[:2] == [0, 1]
    assert ClassIndex([2.5]).labels == [2.5]


def _records(n: int, seed: int, labels: list, d: int = D) -> list[Record]:
    """Records whose label is the argmax of the first len(labels) features."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.normal(size=d)
        out.append(Record(x=tuple(x.tolist()), y=labels[int(np.argmax(x[: len(labels)]))]))
    return out


def test_a_binary_stream_switches_to_softmax_keeping_its_predictions() -> None:
    lrn = AdaptiveLearner(model="linear", task="classification", n_features=D)
    lrn.process_many(_records(100, 0, [0.0, 1.0]))
    probe = _records(5, 1, [0.0, 1.0])
    before = lrn.process_many([Record(x=r.x) for r in probe]).y_pred  # P(y = 1)
    theta_before = lrn.arena.theta[0].copy()
    a_before = lrn.arena.A[0].copy()
    # A batch with a new label: the model grows to classes 0, 1, "c" before predicting.
    out = lrn.process_many([*[Record(x=r.x) for r in probe], Record(x=probe[0].x, y="c")])
    assert lrn.classes is not None and lrn.classes.labels == [0, 1, "c"]
    assert out.probas is not None and out.probas.shape == (6, 3)
    np.testing.assert_allclose(out.probas.sum(axis=1), 1.0)
    # The third class starts unlikely (p = 1/(K²+1) at equal logits), so the old odds hold:
    # P(1) / (P(0) + P(1)) is the binary model's P(y = 1).
    p = out.probas[:5]
    np.testing.assert_allclose(p[:, 1] / (p[:, 0] + p[:, 1]), before, rtol=1e-12)
    # θ's class 0 row is zero, class 1's the binary weights; A's class 0 copies class 1.
    P = D + 1
    assert lrn.family is not None and lrn.family.n_params == 3 * P
    theta = widen(theta_before[None], (0, D, 1), 0, 3, None)[0]
    np.testing.assert_array_equal(theta[:D], 0.0)
    np.testing.assert_array_equal(theta[D : 2 * D], theta_before[:D])
    A = widen(a_before[None], (0, D, 1), 0, 3, 1e-6)[0]
    np.testing.assert_array_equal(A[:D], A[D : 2 * D])
    assert lrn.meta is not None
    for vec in (lrn.meta.theta0, lrn.meta.B, lrn.meta.G, lrn.B_base, lrn._init):
        assert vec.shape == (3 * P,)
    assert lrn.arena.theta.shape[1] == lrn.arena.A.shape[1] == lrn.arena.gsq.shape[1] == 3 * P


def test_classes_grow_mid_stream_and_are_learned() -> None:
    lrn = AdaptiveLearner(model="mlp", task="classification", n_features=D,
                          config=LearnerConfig(hidden=[8]))
    lrn.process_many(_records(300, 0, ["a", "b"]))
    assert lrn.classes is not None and lrn.classes.labels == ["a", "b"]
    lrn.process_many(_records(300, 1, ["a", "b", "c", "d"]))
    assert lrn.classes.labels[:2] == ["a", "b"] and sorted(lrn.classes.labels[2:]) == ["c", "d"]
    out = lrn.process_many(_records(300, 2, ["a", "b", "c", "d"]))
    truth = [lrn.classes.index[r.y] for r in _records(300, 2, ["a", "b", "c", "d"])]
    accuracy = float((out.y_pred == np.array(truth)).mean())
    assert accuracy > 0.6, accuracy  # chance is 0.25


def _raw(i: int) -> SourceRecord:
    return SourceRecord(partition=0, position=i, value=b"{}")


def test_prediction_formats() -> None:
    binary = AdaptiveLearner(model="linear", task="classification", n_features=D)
    recs = _records(20, 0, [0.0, 1.0])
    out = binary.process_many(recs)
    body = json.loads(predictions([_raw(i) for i in range(20)], RecordBatch.from_records(recs),
                                  out, "classification")[-1].value)
    assert set(body) == {"id", "key", "partition", "position", "segment", "y_pred", "proba",
                         "loss"}
    assert body["y_pred"] in (0, 1)

    multi = AdaptiveLearner(model="linear", task="classification", n_features=D)
    recs = _records(20, 0, ["x", 7, 2.5])
    out = multi.process_many(recs)
    msgs = predictions([_raw(i) for i in range(20)], RecordBatch.from_records(recs), out,
                       "classification")
    for msg in msgs:
        body = json.loads(msg.value)
        assert "proba" not in body
        assert set(body["probas"]) == {"x", "7", "2.5"}
        assert sum(body["probas"].values()) == pytest.approx(1.0)
        assert body["y_pred"] in ("x", 7, 2.5)
        assert max(body["probas"], key=body["probas"].get) == json.dumps(body["y_pred"]).strip('"')


def test_checkpoint_round_trip_keeps_the_classes() -> None:
    stream = _records(200, 0, ["b", "a"]) + _records(200, 1, ["b", "a", 3])
    whole = AdaptiveLearner(model="linear", task="classification", n_features=D)
    first = AdaptiveLearner(model="linear", task="classification", n_features=D)
    expected = whole.process_many(stream)
    head = first.process_many(stream[:300])
    restarted = AdaptiveLearner(model="linear", task="classification", n_features=D)
    restarted.load_state_dict(first.state_dict())
    assert restarted.classes is not None and restarted.classes.labels == ["b", "a", 3]
    tail = restarted.process_many(stream[300:])
    np.testing.assert_array_equal(np.concatenate([head.y_pred, tail.y_pred]), expected.y_pred)
    np.testing.assert_array_equal(np.concatenate([head.loss, tail.loss]), expected.loss)


def test_an_evicted_key_comes_back_widened() -> None:
    lrn = AdaptiveLearner(model="linear", task="classification", n_features=D)
    lrn.process_many([Record(x=r.x, y=r.y, key="old") for r in _records(50, 0, [0.0, 1.0])])
    lrn.evict_idle(now=1e12)
    assert "old" not in list(lrn.keys())
    lrn.process_many([Record(x=r.x, y=r.y, key="new") for r in _records(50, 1, ["a", "b"])])
    out = lrn.process_many([Record(x=r.x, y=r.y, key="old") for r in _records(5, 2, [0.0])])
    assert out.probas is not None and out.probas.shape[1] == 4
    np.testing.assert_allclose(out.probas.sum(axis=1), 1.0)


def test_adaptd_run_on_string_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    lines = []
    for i in range(300):
        x = rng.normal(size=3)
        lines.append(json.dumps({"id": f"r{i}", "x": x.tolist(),
                                 "y": ["red", "green", "blue"][int(np.argmax(x))]}))
    lines.append(json.dumps({"id": "u", "x": [3.0, 0.0, 0.0]}))  # unlabelled
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTD_")}
    done = subprocess.run(
        [sys.executable, "-m", "adaptd", "run", "--source", "jsonl:in.jsonl", "--sink",
         "jsonl:out.jsonl", "--task", "classification", "--state-dir", "state",
         "--metrics-port", "off"],  # another daemon on this machine may hold the default
        cwd=tmp_path, env=env, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(out) == 301
    assert out[-1]["y_pred"] == "red" and "loss" not in out[-1]
    assert set(out[-1]["probas"]) == {"red", "green", "blue"}
    hits = sum(o["y_pred"] == json.loads(line)["y"] for o, line in zip(out[200:300],
                                                                       lines[200:300]))
    assert hits > 70


def test_the_decoder_keeps_string_labels_apart_from_numbers() -> None:
    decoder = RecordDecoder(task="classification")
    recs = [decoder.decode(raw) for raw in (b'{"x":[1],"y":"2"}', b'{"x":[1],"y":2}')]
    batch = RecordBatch.from_records(recs)
    assert batch.y.dtype == object and batch.y.tolist() == ["2", 2.0]


def test_the_river_classifier_is_multi_class() -> None:
    from river import datasets, evaluate, metrics, preprocessing

    from adaptd.estimator import AdaptdClassifier

    model = preprocessing.StandardScaler() | AdaptdClassifier()
    score = evaluate.progressive_val_score(datasets.ImageSegments(), model, metrics.Accuracy())
    assert score.get() > 0.75
    proba = model.predict_proba_one(next(iter(datasets.ImageSegments()))[0])
    assert len(proba) == 7 and sum(proba.values()) == pytest.approx(1.0)


def test_accuracy_is_summarized_for_classification() -> None:
    lrn = AdaptiveLearner(model="linear", task="classification", n_features=D)
    lrn.process_many(_records(400, 0, ["a", "b", "c"]))
    accuracy = lrn.summary().accuracy
    assert accuracy is not None and 0.6 < accuracy <= 1.0
    binary = AdaptiveLearner(model="linear", task="classification", n_features=D)
    binary.process_many(_records(400, 0, [0.0, 1.0]))
    assert (binary.summary().accuracy or 0.0) > 0.8
    assert AdaptiveLearner(n_features=D).summary().accuracy is None


def test_a_saved_meta_state_brings_its_classes(tmp_path: Path) -> None:
    from adaptd.meta.state import load, save

    lrn = AdaptiveLearner(model="linear", task="classification", n_features=D)
    lrn.process_many(_records(200, 0, ["a", "b", 3]))
    assert lrn.meta is not None
    save(lrn.meta, tmp_path / "meta.pt")
    again = AdaptiveLearner(model="linear", task="classification",
                            meta_state=load(tmp_path / "meta.pt"))
    assert again.classes is not None and again.classes.labels == lrn.classes.labels  # type: ignore[union-attr]
    out = again.process_many(_records(50, 1, ["a", "b", 3]))
    assert out.probas is not None and out.probas.shape == (50, 3)
    # The nn.Module twin at θ0 (what meta-train saves for PyTorch users) has K outputs.
    from adaptd.meta.train import module_state

    weights = module_state(lrn.meta, "linear", "classification")
    assert tuple(weights["0.weight"].shape) == (3, D)


@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_the_waves_give_the_kernels_results(model: str) -> None:
    stream = _records(150, 0, [0.0, 1.0]) + _records(250, 1, ["a", 0.0, 1.0, "b"])
    outs = []
    for compiled in (True, False):
        lrn = AdaptiveLearner(model=model, task="classification", n_features=D,
                              config=LearnerConfig(kernel=compiled, hidden=[6]))
        parts = [lrn.process_many(stream[lo : lo + 100]) for lo in range(0, 400, 100)]
        outs.append(parts)
    for fast, slow in zip(*outs, strict=True):
        np.testing.assert_allclose(fast.y_pred, slow.y_pred, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(fast.loss, slow.loss, rtol=1e-9, atol=1e-12)
        if fast.probas is not None:
            np.testing.assert_allclose(fast.probas, slow.probas, rtol=1e-9, atol=1e-12)


def test_adwin_runs_multi_class_on_the_waves() -> None:
    from adaptd.settings import DriftConfig

    lrn = AdaptiveLearner(model="linear", task="classification", n_features=D,
                          drift=DriftConfig(detector="adwin"))
    out = lrn.process_many(_records(300, 0, ["a", "b", "c"]))
    assert out.probas is not None and np.isfinite(out.loss).all()


def test_the_accuracy_gauge() -> None:
    from prometheus_client import CollectorRegistry

    from adaptd.metrics import Metrics

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    lrn = AdaptiveLearner(model="linear", task="classification", n_features=D)
    out = lrn.process_many(_records(300, 0, ["a", "b", "c"]))
    metrics.observe_batch(out, lrn.summary(), 0.001)
    value = registry.get_sample_value("adaptd_accuracy")
    assert value is not None and value == lrn.summary().accuracy
    assert registry.get_sample_value("adaptd_cumulative_loss", {"learner": "adaptd"}) == \
        pytest.approx(float(np.nansum(out.loss)))


def test_a_binary_key_state_saved_before_a_fresh_switch_starts_again() -> None:
    lrn = AdaptiveLearner(model="linear", task="classification", n_features=D)
    lrn.process_many([Record(x=(0.0,) * D, key="idle")])  # admitted, nothing learned
    saved = lrn.state_dict(["idle"])["keys"]["idle"]
    lrn.forget(["idle"])
    lrn.process_many(_records(20, 0, ["only"]))  # one class: K = 1
    lrn.load_state_dict({**lrn.state_dict(()), "keys": {"idle": saved}})
    out = lrn.process_many([Record(x=(0.0,) * D, key="idle")])
    assert out.probas is not None and out.probas.tolist() == [[1.0]]
