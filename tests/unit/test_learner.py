"""The engine: step rule, closed-form gradients, waves, segments, state, non-finite inputs."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from adaptd.config import load_settings
from adaptd.learner import build_learner
from adaptd.learner.adaptive import AdaptiveLearner
from adaptd.learner.autograd import AutogradFamily, flatten_module, load_flat
from adaptd.learner.models import LinearFamily, MLPFamily, initial_parameters
from adaptd.meta.state import MetaState
from adaptd.records import Record
from adaptd.settings import DriftConfig, LearnerConfig, MetaConfig, RegretConfig

NO_REGRET = RegretConfig(baseline=False, hindsight=False)
# The engine's own math, without the online standardization in front (test_scaling.py).
RAW_FLAGS = {"standardize": False, "standardize_target": False}
RAW = LearnerConfig(**RAW_FLAGS)


def linear_stream(seed: int, n: int, keys: int = 1, change_at: int | None = None) -> list[Record]:
    """y = w·x + noise per key, with w flipping sign at ``change_at`` (task 0 → 1)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(keys, 3))
    out = []
    for i in range(n):
        k = int(rng.integers(keys))
        x = rng.normal(size=3)
        task = int(change_at is not None and i >= change_at)
        wk = -3 * w[k] if task else w[k]
        out.append(Record(x=tuple(x.tolist()), y=float(x @ wk + 0.1 * rng.normal()),
                          key=f"k{k}", task=task))
    return out


# ---------------------------------------------------------------- closed forms vs autograd

@pytest.mark.parametrize("family", [
    LinearFamily(3, "regression"),
    LinearFamily(3, "classification"),
    MLPFamily(3, (5, 4), "tanh", "regression"),
    MLPFamily(3, (6,), "relu", "classification"),
], ids=["linear", "logistic", "mlp-tanh", "mlp-relu-cls"])
def test_closed_form_gradients_match_autograd(family):
    rng = np.random.default_rng(0)
    auto = AutogradFamily(family.module(), family.task)
    R, n = 4, 7
    theta = rng.normal(size=(R, family.n_params))
    X = rng.normal(size=(R, n, 3))
    Y = (rng.random((R, n)) < 0.5).astype(float)
    M = (rng.random((R, n)) < 0.7).astype(float)
    loss, g = family.loss_grad(theta, X, Y, M)
    loss_a, g_a = auto.loss_grad(theta, X, Y, M)
    np.testing.assert_allclose(g, g_a, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(loss, loss_a, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(family.forward(theta, X), auto.forward(theta, X), atol=1e-12)


def test_flat_layout_is_the_modules():
    family = MLPFamily(2, (3,), "tanh", "regression")
    module = family.module()
    flat = flatten_module(module)
    x = torch.randn(5, 2, dtype=torch.float64)
    expected = module.double()(x)[:, 0].detach().numpy()
    got = family.forward(flat[None], x.numpy()[None])[0]
    np.testing.assert_allclose(got, expected, atol=1e-12)
    other = load_flat(family.module().double(), flat)
    np.testing.assert_allclose(flatten_module(other), flat)


@pytest.mark.parametrize("family", [
    LinearFamily(5, "regression"), LinearFamily(1, "classification"),
    MLPFamily(3, (40, 40), "tanh", "regression"), MLPFamily(7, (8, 6), "relu", "classification"),
], ids=["linear", "logistic-1", "mlp-40-40", "mlp-relu"])
@pytest.mark.parametrize("seed", [0, 7, 2**33 + 1, -3])
def test_initial_parameters_are_torchs_without_torch(family, seed):
    """The built-in families draw PyTorch's initialization bit for bit, without importing torch."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        expected = flatten_module(family.module())
    assert initial_parameters(family, seed).tobytes() == expected.tobytes()


# ---------------------------------------------------------------- the step rule

def test_step_rule_matches_hand_computation():
    meta = MetaState(theta0=np.array([0.5, 0.1]), B=np.array([0.04, 0.09]),
                     G=np.array([2.0, 1.0]))
    learner = AdaptiveLearner("linear", "regression", n_features=1,
                              config=LearnerConfig(**RAW_FLAGS, c=2.0, window=1), meta_state=meta,
                              regret=NO_REGRET)
    out = learner.process_many([Record(x=(2.0,), y=1.0)])
    # z = 0.5·2 + 0.1 = 1.1; loss = 0.01; dL/dz = 0.2; g = (0.4, 0.2)
    assert out[0].y_pred == pytest.approx(1.1)
    assert out[0].loss == pytest.approx(0.01)
    A = np.array([2.0 / 2 + 2 * 0.4**2, 1.0 / 2 + 2 * 0.2**2])  # A = G/c + c·g²
    theta = np.array([0.5 - math.sqrt(0.04 / A[0]) * 0.4, 0.1 - math.sqrt(0.09 / A[1]) * 0.2])
    s = learner._slot_of["default"]
    np.testing.assert_allclose(learner.arena.theta[s], theta, rtol=1e-12)
    np.testing.assert_allclose(learner.arena.A[s], A, rtol=1e-12)


def test_plain_adagrad_is_the_special_case():
    """B = lr², A₀ = eps, c = 1, window 1: exactly the textbook AdaGrad update."""
    recs = linear_stream(1, 50)
    cfg = LearnerConfig(**RAW_FLAGS, lr=0.2, eps=1e-6, window=1)
    learner = AdaptiveLearner("linear", "regression", n_features=3, config=cfg,
                              drift=DriftConfig(detector="none"), meta=MetaConfig(enabled=False),
                              regret=NO_REGRET)
    theta = learner.meta.theta0.copy()
    accum = np.full(4, 1e-6)
    for r in recs:
        x = np.append(r.x, 1.0)
        g = 2 * (x @ theta - r.y) * x
        accum += g * g
        theta -= 0.2 * g / np.sqrt(accum)
    learner.process_many(recs)
    np.testing.assert_allclose(learner.arena.theta[learner._slot_of["k0"]], theta, rtol=1e-10)


def test_window_gradient_uses_last_k_records():
    meta = MetaState(theta0=np.zeros(2), B=np.full(2, 1e-30), G=np.ones(2))  # ~no movement
    learner = AdaptiveLearner("linear", "regression", n_features=1,
                              config=LearnerConfig(**RAW_FLAGS, window=3), meta_state=meta, regret=NO_REGRET)
    learner.process_many([Record(x=(float(i),), y=1.0) for i in range(1, 6)])
    s = learner._slot_of["default"]
    assert sorted(learner.arena.WX[s, :, 0].tolist()) == [3.0, 4.0, 5.0]
    assert learner.arena.WM[s].sum() == 3


# ---------------------------------------------------------------- waves

def test_interleaved_batch_equals_each_key_alone():
    """Batching keys into waves never changes any key's result."""
    recs = linear_stream(2, 600, keys=5, change_at=300)

    def run(batches):
        learner = AdaptiveLearner("mlp", "regression", n_features=3,
                                  config=LearnerConfig(**RAW_FLAGS, hidden=[8]),
                                  drift=DriftConfig(ph_threshold=3.0), regret=NO_REGRET,
                                  meta=MetaConfig(enabled=False))
        outs = []
        for b in batches:
            outs += learner.process_many(b)
        return outs, learner

    together, l1 = run([recs[i : i + 97] for i in range(0, len(recs), 97)])
    for key in {r.key for r in recs}:
        mine = [i for i, r in enumerate(recs) if r.key == key]
        alone, l2 = run([[recs[i]] for i in mine])
        assert [together[i].y_pred for i in mine] == pytest.approx([o.y_pred for o in alone],
                                                                     rel=1e-9)
        assert [together[i].drift for i in mine] == [o.drift for o in alone]
        np.testing.assert_allclose(l1.arena.theta[l1._slot_of[key]], l2.arena.theta[l2._slot_of[key]])
    assert any(o.drift for o in together)


# ---------------------------------------------------------------- segments and meta-updates

def test_oracle_segment_close_makes_exactly_one_meta_update():
    recs = linear_stream(3, 200, change_at=120)
    learner = AdaptiveLearner("linear", "regression", config=RAW, drift=DriftConfig(detector="oracle"),
                              meta=MetaConfig(min_segment=10), regret=NO_REGRET)
    theta0_before = learner.meta.theta0.copy() if learner.meta is not None else None
    out = learner.process_many(recs)
    assert [i for i, o in enumerate(out) if o.drift] == [120]
    assert learner.summary().meta_updates == 1
    assert learner.meta.tasks == 1
    assert out[119].segment == 0 and out[120].segment == 1
    assert theta0_before is None or not np.allclose(learner.meta.theta0, theta0_before)


def test_detector_closes_segment_at_exact_index_and_restarts_from_theta0():
    recs = linear_stream(4, 400, change_at=250)
    learner = AdaptiveLearner("linear", "regression", config=RAW, n_features=3,
                              drift=DriftConfig(ph_threshold=20.0), regret=NO_REGRET)
    out = []
    for i in range(0, len(recs), 64):
        out += learner.process_many(recs[i : i + 64])
    alarms = [i for i, o in enumerate(out) if o.drift]
    assert alarms == [251]
    assert learner.summary().meta_updates == 1
    assert learner.summary().drift_events == 1
    assert out[251].segment == 0 and out[252].segment == 1
    recovered = [o.recovered_after for o in out if o.recovered_after is not None]
    assert recovered == [36]


def test_short_segment_does_not_update_meta():
    recs = linear_stream(3, 30, change_at=5)
    learner = AdaptiveLearner("linear", "regression", config=RAW, drift=DriftConfig(detector="oracle"),
                              meta=MetaConfig(min_segment=10), regret=NO_REGRET)
    out = learner.process_many(recs)
    assert sum(o.drift for o in out) == 1
    assert learner.summary().meta_updates == 0


def test_unlabelled_records_are_predicted_not_learned():
    learner = AdaptiveLearner("logistic", "classification", config=RAW, n_features=2)
    out = learner.process_many([Record(x=(1.0, 2.0)), Record(x=(1.0, 2.0), y=1.0)])
    assert out[0].loss is None and not out[0].learned and 0 < out[0].y_pred < 1
    assert out[1].learned and out[1].loss == pytest.approx(-math.log(out[1].y_pred))
    assert learner.summary().updates == 1


# ---------------------------------------------------------------- non-finite inputs

def test_non_finite_update_is_skipped_and_state_unchanged():
    learner = AdaptiveLearner("linear", "regression", config=RAW, n_features=1, clock=lambda: 5.0)
    learner.process_many([Record(x=(1.0,), y=1.0), Record(x=(2.0,), y=0.5)])
    before = pickle.dumps(learner.state_dict()["keys"])
    out = learner.process_many([Record(x=(1e300,), y=1e300)])  # loss overflows to inf
    assert not out[0].learned and out[0].loss is None
    assert learner.summary().skipped_updates == 1
    assert pickle.dumps(learner.state_dict()["keys"]) == before
    assert learner.summary().updates == 2


# ---------------------------------------------------------------- state

def test_state_round_trip_per_key_and_meta():
    recs = linear_stream(5, 300, keys=4, change_at=150)
    a = AdaptiveLearner("mlp", "regression", config=LearnerConfig(**RAW_FLAGS, hidden=[6]),
                        drift=DriftConfig(detector="oracle"))
    a.process_many(recs[:200])
    b = AdaptiveLearner("mlp", "regression", config=LearnerConfig(**RAW_FLAGS, hidden=[6]),
                        drift=DriftConfig(detector="oracle"))
    # Two partitions' checkpoints: each carries the meta-state; task states merge.
    half = sorted(a.keys())[:2]
    b.load_state_dict(pickle.loads(pickle.dumps(a.state_dict(half))))
    b.load_state_dict(pickle.loads(pickle.dumps(a.state_dict(sorted(a.keys())[2:]))))
    assert sorted(b.keys()) == sorted(a.keys())
    np.testing.assert_array_equal(b.meta.theta0, a.meta.theta0)
    out_a = a.process_many(recs[200:])
    out_b = b.process_many(recs[200:])
    assert [o.y_pred for o in out_a] == [o.y_pred for o in out_b]
    b.forget(half)
    assert sorted(b.keys()) == sorted(a.keys())[2:]


def test_eviction_lru_cap_and_idle_with_reload():
    now = [0.0]
    learner = AdaptiveLearner("linear", "regression", n_features=1,
                              config=LearnerConfig(**RAW_FLAGS, max_keys=2, idle_evict_s=10.0),
                              clock=lambda: now[0])
    for i, key in enumerate(["a", "b", "c"]):
        now[0] = float(i)
        learner.process_many([Record(x=(1.0,), y=2.0, key=key)] * 3)
    assert sorted(learner.keys()) == ["b", "c"]  # "a" least recently seen
    assert "a" in learner.state_dict()["keys"]  # evicted state still checkpointed
    theta_a = learner.state_dict()["keys"]["a"]["theta"]
    learner.process_many([Record(x=(1.0,), y=2.0, key="a")])  # reloaded, not restarted
    assert learner.state_dict()["keys"]["a"]["seg_len"] == 4
    assert not np.array_equal(theta_a, learner.state_dict()["keys"]["a"]["theta"])
    now[0] = 100.0
    gone = learner.evict_idle()
    assert sorted(gone) == ["a", "c"]  # "b" went when "a" came back over the cap
    assert sorted(learner.take_evicted()) == ["a", "b", "c"] and len(learner.keys()) == 0
    assert learner.state_dict()["keys"] == {}
    assert learner.summary().evicted_keys == 4


def test_user_module_through_autograd():
    module = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))
    learner = AdaptiveLearner(task="regression", module=module, regret=NO_REGRET)
    recs = [Record(x=(float(i % 3), 1.0), y=float(i % 3)) for i in range(60)]
    out = learner.process_many(recs)
    assert np.mean([o.loss for o in out[-10:]]) < np.mean([o.loss for o in out[:10]])


def test_build_learner_from_settings_variants():
    base = {"model": "mlp", "learner.hidden": [4]}
    for extra, (detector, meta_on) in {
        (): ("page_hinkley", True),
        (("drift.detector", "oracle"),): ("oracle", True),
        (("drift.detector", "none"), ("meta_learning.enabled", False)): ("none", False),
        (("meta_learning.enabled", False),): ("page_hinkley", False),
    }.items():
        learner = build_learner(load_settings(environ={}, flags={**base, **dict(extra)}))
        assert isinstance(learner, AdaptiveLearner)
        assert learner.drift.detector == detector and learner.meta_config.enabled is meta_on


def test_summary_exposes_comparators():
    recs = linear_stream(6, 400, change_at=200)
    learner = AdaptiveLearner("linear", "regression", config=RAW, drift=DriftConfig(detector="oracle"))
    learner.process_many(recs)
    s = learner.summary()
    assert s.baseline_loss is not None and s.baseline_loss > s.cumulative_loss
    assert s.hindsight_loss is not None and s.hindsight_regret is not None
    assert s.hindsight_regret > 0  # adaptd pays to learn; the best fixed fit does not
    assert s.prequential_loss is not None and s.updates == 400


def test_samples_to_recover_reaches_prometheus():
    from prometheus_client import CollectorRegistry, generate_latest

    from adaptd.metrics import Metrics

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    recs = linear_stream(4, 400, change_at=250)
    learner = AdaptiveLearner("linear", "regression", config=RAW, n_features=3,
                              drift=DriftConfig(ph_threshold=20.0), regret=NO_REGRET)
    for i in range(0, len(recs), 64):
        metrics.observe_batch(learner.process_many(recs[i : i + 64]), learner.summary(), 0.001)
    text = generate_latest(registry).decode()
    assert "adaptd_samples_to_recover_count 1.0" in text
    assert "adaptd_samples_to_recover_sum 36.0" in text
    assert "adaptd_drift_events_total 1.0" in text


def test_hypergradient_and_fomaml_paths():
    recs = linear_stream(7, 300, keys=3, change_at=150)
    learner = AdaptiveLearner("linear", "regression",
                              config=LearnerConfig(**RAW_FLAGS, hypergradient=True, hypergradient_lr=1e-2),
                              drift=DriftConfig(detector="oracle"),
                              meta=MetaConfig(algorithm="fomaml"), regret=NO_REGRET)
    out = learner.process_many(recs)
    assert learner.meta.alpha != 1.0 and learner.summary().step_multiplier == learner.meta.alpha
    assert learner.summary().meta_updates == 3 == sum(o.drift for o in out)
    assert all(o.learned for o in out)


@pytest.mark.parametrize("model,detector,keys", [
    ("linear", "page_hinkley", 1), ("logistic", "page_hinkley", 1), ("linear", "oracle", 1),
    ("logistic", "none", 1), ("linear", "page_hinkley", 4), ("logistic", "oracle", 4),
    ("mlp", "page_hinkley", 1), ("mlp", "oracle", 4), ("mlp-relu", "page_hinkley", 1),
])
def test_compiled_kernel_equals_batched_waves(model, detector, keys):
    """The per-record kernel and the NumPy waves are two evaluations of the same engine.

    With several keys and meta-learning on, the two may differ legitimately: waves reorder
    records across keys (never within one), and a segment close moves the shared meta-state
    between them. So the multi-key cases freeze the meta-state.
    """
    recs = linear_stream(8, 900, keys=keys, change_at=450)
    if model == "logistic":
        recs = [Record(x=r.x, y=float(r.y > 0), key=r.key, task=r.task) for r in recs]
    recs[100] = Record(x=(1e300, 1e300, 1e300), y=recs[100].y, key="k0")  # skipped update
    for i in range(0, 900, 37):
        recs[i] = Record(x=recs[i].x, key=recs[i].key, task=recs[i].task)  # unlabelled
    task = "classification" if model == "logistic" else "regression"
    act = "relu" if model.endswith("relu") else "tanh"
    model = model.split("-")[0]

    def run(use_kernel):
        cfg = LearnerConfig(**RAW_FLAGS, kernel=use_kernel, hidden=[6, 5], activation=act)
        learner = AdaptiveLearner(model, task, config=cfg,
                                  drift=DriftConfig(detector=detector, ph_threshold=20.0),
                                  meta=MetaConfig(enabled=keys == 1),
                                  # Both baseline windows: 3 goes through the window
                                  # machinery, 1 (the default) through the kernel's shortcut.
                                  regret=RegretConfig(baseline_window=3 if keys == 1 else 1))
        outs = []
        for i in range(0, len(recs), 128):
            outs += learner.process_many(recs[i : i + 128])
        return outs, learner

    fast, lk = run(True)
    slow, lw = run(False)
    assert lk._kernel is not None and lw._kernel is None
    assert [o.drift for o in fast] == [o.drift for o in slow]
    assert [o.segment for o in fast] == [o.segment for o in slow]
    assert [o.learned for o in fast] == [o.learned for o in slow]
    assert [o.recovered_after for o in fast] == [o.recovered_after for o in slow]
    np.testing.assert_allclose([o.y_pred for o in fast], [o.y_pred for o in slow], rtol=1e-9)
    sk, sw = lk.summary(), lw.summary()
    for name in ("cumulative_loss", "baseline_loss", "hindsight_loss", "hindsight_regret"):
        assert getattr(sk, name) == pytest.approx(getattr(sw, name), rel=1e-9)
    for name in ("skipped_updates", "meta_updates", "drift_events", "updates"):
        assert getattr(sk, name) == getattr(sw, name)
    if model == "linear":
        assert sk.skipped_updates == 1
    if detector != "none":
        assert sk.drift_events >= 1
    np.testing.assert_allclose(lk.meta.theta0, lw.meta.theta0, rtol=1e-9)
