"""The ``knn`` expert of ``--model auto`` (adaptd.learner.neighbours) and its place in Hedge."""

from __future__ import annotations

import numpy as np

from adaptd.config import load_settings
from adaptd.learner import build_learner
from adaptd.learner import neighbours as nb
from adaptd.learner.ensemble import EXPERTS, HedgeLearner
from adaptd.learner.neighbours import Neighbours
from adaptd.partitions import combine, partition_part, shared_part
from adaptd.records import Record
from adaptd.state_codec import unpack_state


def _run(store: Neighbours, X: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    n = len(y)
    out, _ = store.run(np.zeros(n, dtype=np.int64), X, y, np.ones(n, dtype=bool), n_classes,
                       np.zeros(3))
    return out


def test_vote_of_the_nearest_on_raw_scales() -> None:
    """Two features on scales 1000 apart; only the small one decides the class. Standardized
    distances find the right neighbours; raw ones would be ruled by the big, useless one."""
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.uniform(0, 1, 600), rng.uniform(0, 1000, 600)])
    y = (X[:, 0] > 0.5).astype(float)
    store = Neighbours(2, window=200, k=5)
    store.grow(1)
    p = _run(store, X, y, 2)[:, 0]
    late = slice(300, None)
    assert np.mean((p[late] >= 0.5) == (y[late] == 1)) > 0.9
    # Smoothed: never certain, so a wrong vote costs a bounded log loss.
    assert p.min() > 0 and p.max() < 1


def test_window_forgets_an_old_concept_and_shrinks_to_the_budget(monkeypatch) -> None:
    store = Neighbours(1, window=50, k=3)
    store.grow(1)
    X = np.zeros((120, 1))
    y = np.r_[np.zeros(60), np.ones(60)]
    p = _run(store, X, y, 2)[:, 0]
    assert p[-1] > 0.8  # only the new concept's labels are left in the window
    state = store.get_state(0)
    assert len(state["Y"]) == 50 and state["Y"].tolist() == [0.0] * 0 + [1.0] * 50
    monkeypatch.setattr(nb, "ROW_BUDGET", 64)
    monkeypatch.setattr(nb, "MIN_WINDOW", 16)
    store.grow(4)  # 64 rows over 4 keys: 16 a key, the newest kept
    assert store.window == 16
    assert store.get_state(0)["Y"].tolist() == [1.0] * 16


def test_state_round_trip_is_exact() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(90, 3))
    y = rng.integers(0, 4, 90).astype(float)
    a, b = Neighbours(3, window=40, k=5), Neighbours(3, window=40, k=5)
    a.grow(2)
    b.grow(2)
    _run(a, X[:70], y[:70], 4)
    b.set_state(0, a.get_state(0))
    np.testing.assert_array_equal(_run(a, X[70:], y[70:], 4), _run(b, X[70:], y[70:], 4))


def rings(n: int, seed: int) -> list[Record]:
    """Three classes on concentric rings: no linear boundary, a local one."""
    rng = np.random.default_rng(seed)
    labels = ["inner", "middle", "outer"]
    out = []
    for i in range(n):
        c = int(rng.integers(3))
        angle = rng.uniform(0, 2 * np.pi)
        r = c + 1 + 0.15 * rng.normal()
        out.append(Record(key=f"k{i % 2}", x=(r * np.cos(angle), r * np.sin(angle)),
                          y=labels[c]))
    return out


def _cells(n: int, seed: int) -> list[Record]:
    """Three classes dealt at random to the cells of a 6×6 grid: a boundary the online linear
    and MLP models do not learn in a few thousand records, the neighbours' vote at once."""
    rng = np.random.default_rng(seed)
    deal = rng.integers(0, 3, size=(6, 6))
    out = []
    for i in range(n):
        x = rng.uniform(0, 6, size=2)
        out.append(Record(key=f"k{i % 2}", x=tuple(x.tolist()),
                          y=["a", "b", "c"][deal[int(x[0]), int(x[1])]]))
    return out


def test_multi_class_hedge_weights_move_to_the_neighbours() -> None:
    learner = build_learner(load_settings(environ={}, flags={"task": "classification"}))
    assert isinstance(learner, HedgeLearner)
    records = _cells(3000, 2)
    outs = [learner.process_many(records[lo : lo + 256]) for lo in range(0, 3000, 256)]
    assert learner.multiclass
    probas = np.concatenate([o.probas for o in outs])
    assert np.allclose(probas.sum(axis=1), 1.0)
    weights = learner.summary().candidate_weights
    assert weights is not None and set(weights) == set(EXPERTS)
    assert weights["knn"] > 0.5, weights
    labels = outs[-1].classes.labels
    hits = [labels[int(np.argmax(p))] == r.y for p, r in zip(probas[1500:], records[1500:],
                                                              strict=True)]
    assert np.mean(hits) > 0.9


def test_multi_class_state_round_trips_through_the_partition_split() -> None:
    """Each key's window and weights move with its partition: a learner rebuilt from the
    parts predicts exactly as the original."""
    records = rings(900, 3)
    a = build_learner(load_settings(environ={}, flags={"task": "classification"}))
    assert isinstance(a, HedgeLearner)
    a.process_many(records[:700])
    parts = [partition_part(a, ["k0"]), partition_part(a, ["k1"])]
    # Key states travel packed (adaptd.state_codec); the window is in there.
    assert unpack_state(parts[0]["keys"]["k0"])["hedge"]["knn"]["Y"].shape == (350,)
    b = build_learner(load_settings(environ={}, flags={"task": "classification"}))
    assert isinstance(b, HedgeLearner)
    b.load_state_dict(combine(shared_part(a), parts))
    out_a, out_b = a.process_many(records[700:]), b.process_many(records[700:])
    assert out_a.probas is not None and out_b.probas is not None
    np.testing.assert_array_equal(out_a.probas, out_b.probas)
    assert a.summary().candidate_weights == b.summary().candidate_weights


def test_delayed_labels_teach_the_neighbours_the_kept_features() -> None:
    learner = HedgeLearner("classification")
    twin = HedgeLearner("classification")
    rng = np.random.default_rng(4)
    X = rng.normal(size=(40, 2))
    y = (X[:, 0] > 0).astype(float)
    learner.process_many([Record(x=tuple(x), id=f"r{i}") for i, x in enumerate(X.tolist())])
    # The labels carry other features: the kept ones are learned.
    learner.process_many([Record(x=(9.0, 9.0), y=float(v), id=f"r{i}")
                          for i, v in enumerate(y.tolist())])
    twin.process_many([Record(x=(9.0, 9.0)) for _ in range(40)])  # same moments
    twin.process_many([Record(x=tuple(x), y=float(v)) for x, v in zip(X.tolist(), y.tolist(),
                                                                        strict=True)])
    assert learner.knn is not None and twin.knn is not None
    np.testing.assert_array_equal(learner.knn.get_state(0)["X"], twin.knn.get_state(0)["X"])
    np.testing.assert_array_equal(learner.knn.get_state(0)["Y"], y)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_a_new_keys_window_takes_memory_as_it_fills() -> None:
    """Room for 256 keys' windows (1024 records of 30 features: 60 MiB, more than malloc's
    largest threshold, so fresh pages) costs next to nothing until written; one record a
    key then makes about a page a key resident, not its whole 245 kB window. The rows kept
    from before the growth keep their bits."""
    store = Neighbours(30)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 30))
    y = (X[:, 0] > 0).astype(float)
    store.grow(2)
    store.run(np.array([0, 1] * 150), X, y, np.ones(300, dtype=bool), 2, np.zeros(3))
    kept = [store.get_state(s) for s in range(2)]
    before = _resident_bytes()
    store.grow(256)
    assert store.window == 1024 and store.WX.nbytes == 60 * 2**20
    assert _resident_bytes() - before < 8 * 2**20
    for s in range(2):
        for name, value in store.get_state(s).items():
            np.testing.assert_array_equal(value, kept[s][name])
    slots = np.arange(2, 256)
    store.run(slots, X[:254], y[:254], np.ones(254, dtype=bool), 2, np.zeros(3))
    assert _resident_bytes() - before < 16 * 2**20
