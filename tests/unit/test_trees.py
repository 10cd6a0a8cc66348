"""The ``tree`` expert of ``--model auto`` (adaptd.learner.trees) and its place in Hedge."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from adaptd.config import load_settings
from adaptd.learner import build_learner, trees
from adaptd.learner.adaptive import AdaptiveLearner
from adaptd.learner.ensemble import EXPERTS, HedgeLearner
from adaptd.learner.trees import Trees
from adaptd.partitions import combine, partition_part, shared_part
from adaptd.records import Record
from adaptd.runner import Runner, RunnerConfig
from adaptd.state_codec import unpack_state
from tests.unit.file_runs import file_runner


def _run(store: Trees, X: np.ndarray, y: np.ndarray, n_classes: int,
         reset: np.ndarray | None = None) -> np.ndarray:
    n = len(y)
    return store.run(np.zeros(n, dtype=np.int64), X, y, np.ones(n, dtype=bool),
                     np.zeros(n, dtype=bool) if reset is None else reset, n_classes)


def _checkerboard(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two cuts, one on each of two features on scales 1000 apart, XOR-ed (with a third,
    useless feature): no linear boundary, two axis-aligned splits a level."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.uniform(0, 1, n), rng.uniform(0, 1000, n), rng.normal(size=n)])
    y = ((X[:, 0] > 0.3) != (X[:, 1] > 600)).astype(float)
    return X, y


def test_learns_axis_aligned_splits_where_a_linear_model_fails() -> None:
    X, y = _checkerboard(8000, 0)
    store = Trees(3)
    store.grow(1)
    p = _run(store, X, y, 2)[:, 0]
    late = slice(6000, None)  # a Hoeffding tree splits only when the bound allows: slowly
    tree_hits = np.mean((p[late] >= 0.5) == (y[late] == 1))
    linear = AdaptiveLearner("logistic", "classification", 3)
    out = linear.process_many([Record(x=tuple(x), y=float(v))
                               for x, v in zip(X.tolist(), y.tolist(), strict=True)])
    linear_hits = np.mean((out.y_pred[late] >= 0.5) == (y[late] == 1))
    assert tree_hits > 0.93 and linear_hits < 0.75, (tree_hits, linear_hits)
    assert store.get_state(0)["feat"][0] in (0, 1)  # the root splits on a deciding feature
    # Smoothed: never certain, so a wrong answer costs a bounded log loss.
    assert p.min() > 0 and p.max() < 1


def _step(n: int, seed: int, d: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Labels from one threshold on the first of ``d`` features: one clear split."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, size=(n, d))
    return X, (X[:, 0] > 0.4).astype(float)


def test_restarts_at_an_alarm() -> None:
    X, y = _step(600, 1)
    store = Trees(3)
    store.grow(1)
    reset = np.zeros(600, dtype=bool)
    reset[-1] = True
    _run(store, X[:300], y[:300], 2)
    assert len(store.get_state(0)["feat"]) > 1  # grown
    _run(store, X[300:], y[300:], 2, reset[300:])
    state = store.get_state(0)
    assert state["feat"].tolist() == [-1] and state["cw"].sum() == 0


def test_many_keys_share_a_memory_budget(monkeypatch) -> None:
    X, y = _step(400, 6)
    store = Trees(3, leaves=8)
    store.grow(2)
    _run(store, X, y, 2)
    grown = store.get_state(0)
    assert len(grown["cw"]) == 2  # split once
    monkeypatch.setattr(trees, "FLOAT_BUDGET", 8 * 5 * 2 * 3)  # one leaf of 2 classes, 3
    monkeypatch.setattr(trees, "MIN_LEAVES", 1)               # features, for each of 8 keys
    store.grow(8)  # 1 leaf a key: the grown tree restarts
    assert store.leaves == 1 and store.arrays["cw"].shape[:2] == (8, 1)
    assert store.get_state(0)["feat"].tolist() == [-1]
    single = {"feat": [-1], "thr": [0.0], "left": [0], "leaf": [0], "cw": grown["cw"][:1],
              "gauss": grown["gauss"][:1], "count": grown["count"][:1]}
    store.set_state(1, single)  # a one-leaf tree fits and is kept
    np.testing.assert_array_equal(store.get_state(1)["gauss"], grown["gauss"][:1])
    store.ensure_classes(4)  # twice the classes: still one leaf, the one-leaf tree kept
    assert store.leaves == 1 and store.arrays["gauss"].shape[:3] == (8, 1, 4)
    np.testing.assert_array_equal(store.get_state(1)["cw"][:, :2], grown["cw"][:1])


def test_a_class_first_seen_mid_stream_gets_its_own_leaves() -> None:
    """Two classes split on feature 0; from record 1500 a third class fills x0 > 0.7."""
    rng = np.random.default_rng(2)
    X = rng.uniform(0, 1, size=(4000, 2))
    y = (X[:, 0] > 0.4).astype(float)
    y[1500:][X[1500:, 0] > 0.7] = 2.0
    store = Trees(2)
    store.grow(1)
    first = _run(store, X[:1500], y[:1500], 2)
    assert first.shape == (1500, 1)
    p = _run(store, X[1500:], y[1500:], 3)
    assert p.shape == (2500, 3) and np.allclose(p.sum(axis=1), 1.0)
    late = slice(1000, None)
    assert np.mean(np.argmax(p[late], axis=1) == y[1500:][late]) > 0.9


def test_state_round_trip_is_exact() -> None:
    X, y = _step(900, 3)
    y[X[:, 0] > 0.8] = 2.0
    a, b = Trees(3), Trees(3)
    a.grow(2)
    b.grow(2)
    _run(a, X[:600], y[:600], 3)
    assert len(a.get_state(0)["feat"]) > 1
    b.set_state(0, a.get_state(0))
    np.testing.assert_array_equal(_run(a, X[600:], y[600:], 3), _run(b, X[600:], y[600:], 3))
    for name in ("feat", "thr", "cw", "gauss", "count"):
        np.testing.assert_array_equal(a.get_state(0)[name], b.get_state(0)[name])


def _records(n: int, seed: int) -> list[Record]:
    """Two keys; a step on one of 20 features: the tree's concept (one split, pure leaves),
    approached by the linear and MLP models through a steepening sigmoid only, and blurred
    for the neighbours by the 19 others."""
    X, y = _step(n, seed, d=20)
    return [Record(key=f"k{i % 2}", x=tuple(x), y=float(v))
            for i, (x, v) in enumerate(zip(X.tolist(), y.tolist(), strict=True))]


def test_hedge_moves_to_the_tree_and_restores_bit_for_bit() -> None:
    """Inside ``auto``: the tree wins the weight on an axis-aligned concept, and a learner
    rebuilt from the partition parts (packed key states) predicts exactly as the original."""
    records = _records(5000, 4)
    flags = {"task": "classification"}
    a = build_learner(load_settings(environ={}, flags=flags))
    assert isinstance(a, HedgeLearner)
    a.process_many(records[:4000])
    weights = a.summary().candidate_weights
    assert weights is not None and set(weights) == set(EXPERTS)
    assert weights["tree"] > 0.9, weights
    parts = [partition_part(a, ["k0"]), partition_part(a, ["k1"])]
    assert len(unpack_state(parts[0]["keys"]["k0"])["hedge"]["tree"]["feat"]) > 1
    b = build_learner(load_settings(environ={}, flags=flags))
    assert isinstance(b, HedgeLearner)
    b.load_state_dict(combine(shared_part(a), parts))
    out_a, out_b = a.process_many(records[4000:]), b.process_many(records[4000:])
    np.testing.assert_array_equal(out_a.y_pred, out_b.y_pred)
    assert a.summary().candidate_weights == b.summary().candidate_weights
    hits = np.mean((out_a.y_pred >= 0.5) == np.array([r.y for r in records[4000:]]))
    assert hits > 0.97


def test_regression_holds_the_tree_at_zero_weight() -> None:
    rng = np.random.default_rng(5)
    learner = HedgeLearner("regression")
    X = rng.normal(size=(600, 2))
    learner.process_many([Record(x=tuple(x), y=float(x[0] > 0) * 10 + rng.normal())
                          for x in X.tolist()])
    weights = learner.summary().candidate_weights
    assert weights is not None and "tree" not in weights  # not shown: not an expert here
    assert learner.tree is None and learner._W[list(learner._slot.values()), EXPERTS.index("tree")].max() == 0.0
    assert abs(sum(weights.values()) - 1.0) < 1e-12


def test_weights_saved_before_the_tree_existed_make_room_for_it() -> None:
    """A state saved before the tree (five weights) gets the tree's and the AODE's starting
    weights; one saved before the AODE (six) gets the AODE's."""
    learner = HedgeLearner("classification")
    new = [EXPERTS.index("tree"), EXPERTS.index("aode")]
    old = [0.5, 0.2, 0.1, 0.1, 0.1]  # linear, mlp, knn, prior, last
    w = learner._saved_weights(old)
    assert w is not None and len(w) == len(EXPERTS) and abs(w.sum() - 1.0) < 1e-12
    np.testing.assert_allclose(w[new], 1.0 / len(EXPERTS))
    np.testing.assert_allclose(np.delete(w, new), np.array(old) * (1 - 2.0 / len(EXPERTS)))
    six = [0.5, 0.2, 0.1, 0.1, 0.05, 0.05]  # linear, mlp, knn, tree, prior, last
    w = learner._saved_weights(six)
    assert w is not None and w[new[1]] == 1.0 / len(EXPERTS)
    np.testing.assert_allclose(np.delete(w, new[1]), np.array(six) * (1 - 1.0 / len(EXPERTS)))
    assert learner._saved_weights([1.0, 0.0]) is None


def test_two_string_labels_mix_two_columns_per_expert() -> None:
    """Labels other than 0/1 put Hedge in multi-class mode even when only two occur: every
    expert then gives both classes' probabilities (the kNN and tree gave P(class 1) alone,
    broadcast over both columns: probabilities summing to 0.83, accuracy 0.73 here)."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(300, 3))
    labels = np.where(X[:, 0] > 0, "a", "b")
    out = HedgeLearner("classification").process_many(
        [Record(x=tuple(x), y=str(v)) for x, v in zip(X.tolist(), labels, strict=True)])
    assert out.probas is not None and out.probas.shape == (300, 2)
    np.testing.assert_allclose(out.probas.sum(axis=1), 1.0)
    assert out.classes is not None
    predicted = np.array(out.classes.labels)[np.argmax(out.probas, axis=1)]
    assert np.mean(predicted[100:] == labels[100:]) > 0.9


def test_a_restart_through_the_state_database_ends_where_a_straight_run_ends(
        tmp_path: Path) -> None:
    """Classification through the runner and its SQLite checkpoints: the keys' trees (grown
    by then) are saved and restored, and the restarted run's predictions are the straight
    run's, byte for byte."""
    source = tmp_path / "in.jsonl"

    def append(lo: int, hi: int) -> None:
        X, y = _step(hi, 8, d=4)  # the same records again, cut where the run stops
        with open(source, "a") as fh:
            fh.writelines(json.dumps({"key": "ab"[i % 2], "x": X[i].tolist(),
                                     "y": int(y[i])}) + "\n" for i in range(lo, hi))

    def runner(name: str) -> Runner:
        return file_runner(tmp_path / name, source,
                           RunnerConfig(batch_size=64, poll_timeout_s=0.01,
                                        checkpoint_every_records=200),
                           task="classification")

    append(0, 768)  # whole batches: the running totals then add up in the same groups
    runner("restarted").run()
    append(768, 1408)
    restarted = runner("restarted")
    assert restarted.run().records == 640
    straight = runner("straight")
    assert straight.run().records == 1408
    learner = restarted.learner
    assert isinstance(learner, HedgeLearner) and learner.tree is not None
    assert int(learner.tree.arrays["size"][:, 1].max()) > 1  # the trees had split
    ours = (tmp_path / "restarted" / "predictions.jsonl").read_text().splitlines()
    theirs = (tmp_path / "straight" / "predictions.jsonl").read_text().splitlines()
    assert len(ours) == 1408 and ours == theirs
    assert restarted.learner.summary() == straight.learner.summary()
