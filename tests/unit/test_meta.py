"""The meta-state: ARUBA/Reptile/FOMAML update, save/load round trip, averaging."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptd.learner.adaptive import AdaptiveLearner
from adaptd.meta.state import MetaState, average, load, save
from adaptd.records import Record
from adaptd.settings import LearnerConfig, MetaConfig

# The engine's own math, without the online standardization in front (test_scaling.py).
RAW_FLAGS = {"standardize": False, "standardize_target": False}
RAW = LearnerConfig(**RAW_FLAGS)


def state() -> MetaState:
    return MetaState(theta0=np.array([1.0, -1.0]), B=np.array([0.5, 0.25]),
                     G=np.array([2.0, 4.0]), tasks=3, model={"model": "linear", "n_features": 1})


def test_reptile_update_matches_formula():
    s = state()
    cfg = MetaConfig(step=0.5, decay=0.1, epsilon=0.2, zeta=0.4, power=1.0)
    s.update(cfg, theta_end=np.array([2.0, -3.0]), grad_sq_sum=np.array([1.0, 1.5]))
    delta = np.array([1.0, -2.0])
    np.testing.assert_allclose(s.B, 0.9 * np.array([0.5, 0.25]) + 0.5 * delta**2 + 0.04 / 4)
    np.testing.assert_allclose(s.G, 0.9 * np.array([2.0, 4.0]) + np.array([1.0, 1.5]) + 0.16 / 4)
    np.testing.assert_allclose(s.theta0, np.array([1.5, -2.0]))
    assert s.tasks == 4


def test_fomaml_uses_the_final_gradient_and_rates_can_be_frozen():
    s = state()
    cfg = MetaConfig(algorithm="fomaml", step=0.1, learn_rates=False)
    s.update(cfg, theta_end=np.zeros(2), grad_sq_sum=np.ones(2), final_grad=np.array([2.0, -4.0]))
    np.testing.assert_allclose(s.theta0, [0.8, -0.6])
    np.testing.assert_allclose(s.B, [0.5, 0.25])
    with pytest.raises(ValueError, match="fomaml needs"):
        s.update(cfg, np.zeros(2), np.ones(2))


def test_initial_state_is_plain_adagrad():
    s = MetaState.initial(np.zeros(3), lr=0.1, eps=1e-6, c=2.0, model={})
    np.testing.assert_allclose(s.B, 0.01)
    np.testing.assert_allclose(s.G / 2.0, 1e-6)


def test_save_load_round_trip(tmp_path):
    s = state()
    path = save(s, tmp_path / "m.pt", module_state={"0.weight": torch.ones(1, 1)})
    payload = torch.load(path, weights_only=True)  # plain tensors and numbers only
    assert set(payload) >= {"theta0", "B", "G", "module"}
    back = load(path)
    np.testing.assert_array_equal(back.theta0, s.theta0)
    np.testing.assert_array_equal(back.B, s.B)
    np.testing.assert_array_equal(back.G, s.G)
    assert (back.tasks, back.alpha, back.model) == (s.tasks, s.alpha, s.model)
    assert not list(tmp_path.glob("*.tmp"))


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load(bad)


def test_meta_state_for_another_model_is_refused():
    with pytest.raises(ValueError, match="n_features=1"):
        AdaptiveLearner("linear", "regression", config=RAW, n_features=3, meta_state=state())


def test_learner_starts_new_tasks_from_meta_state():
    s = state()
    learner = AdaptiveLearner("linear", "regression", config=RAW, meta_state=s)
    learner.process_many([Record(x=(0.0,), y=0.0, key="a")])
    slot = learner._slot_of["a"]
    # One step from θ0 with A = G/c: the bias moved, the weight (x = 0) did not.
    assert learner.arena.theta[slot][0] == 1.0 and learner.arena.theta[slot][1] != -1.0
    assert learner.state_dict()["meta"]["tasks"] == 3


def test_average_of_replicas():
    a, b = state(), state()
    b.theta0 = np.array([3.0, 1.0])
    b.tasks = 7
    m = average([a, b])  # without weights: equal views of one history
    np.testing.assert_allclose(m.theta0, [2.0, 0.0])
    assert m.tasks == 7
    with pytest.raises(ValueError):
        average([])


def test_config_validation():
    with pytest.raises(ValueError, match="step must be in \\(0, 1\\], got 2"):
        MetaConfig(step=2)
    with pytest.raises(ValueError, match="decay must be in \\[0, 1\\)"):
        MetaConfig(decay=1.0)
