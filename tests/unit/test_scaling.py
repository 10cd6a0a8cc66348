"""Online standardization: Welford statistics, scale invariance, resets and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

from adaptd.learner.adaptive import AdaptiveLearner
from adaptd.learner.scaling import RunningMoments, Standardizer, chunks
from adaptd.records import Record
from adaptd.settings import DriftConfig, LearnerConfig, RegretConfig


def _stream(seed: int, n: int, x_scale: float = 1.0, y_shift: float = 0.0,
            y_scale: float = 1.0, keys: int = 1) -> list[Record]:
    """y = w·x + noise; w flips at the middle (one drift), keys interleaved."""
    rng = np.random.default_rng(seed)
    w = np.array([1.0, -2.0, 0.5])
    out = []
    for i in range(n):
        x = rng.normal(size=3)
        wi = w if i < n // 2 else -w
        y = float(wi @ x + 0.1 * rng.normal())
        out.append(Record(x=tuple((x * x_scale).tolist()), y=y * y_scale + y_shift,
                          key=f"k{i % keys}"))
    return out


def _run(records: list[Record], **cfg: object) -> tuple[AdaptiveLearner, np.ndarray, np.ndarray]:
    lrn = AdaptiveLearner("linear", "regression", config=LearnerConfig(**cfg),  # type: ignore[arg-type]
                          drift=DriftConfig(), regret=RegretConfig())
    outs = [lrn.process_many(records[i : i + 256]) for i in range(0, len(records), 256)]
    return (lrn, np.concatenate([o.y_pred for o in outs]),
            np.concatenate([o.loss for o in outs]))


def test_running_moments_match_numpy_in_any_chunking() -> None:
    X = np.random.default_rng(0).normal(loc=1000.0, scale=3.0, size=(500, 4))
    m = RunningMoments(4)
    for lo, hi in ((0, 1), (1, 7), (7, 300), (300, 500)):
        m.update(X[lo:hi])
    np.testing.assert_allclose(m.mean, X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(m.std(), X.std(axis=0), rtol=1e-9)


def test_chunks_never_outgrow_the_labels_behind_them() -> None:
    assert list(chunks(5, 0)) == [(0, 1), (1, 2), (2, 4), (4, 5)]
    assert list(chunks(20, 256)) == [(0, 16), (16, 20)]


def test_results_do_not_depend_on_batching() -> None:
    records = _stream(7, 700, x_scale=30.0, y_shift=50.0, keys=2)
    _, p1, _ = _run(records)
    lrn = AdaptiveLearner("linear", "regression", drift=DriftConfig(), regret=RegretConfig())
    outs = [lrn.process_many(records[i : i + 7]) for i in range(0, 700, 7)]
    np.testing.assert_allclose(np.concatenate([o.y_pred for o in outs]), p1, rtol=1e-9)


def test_features_times_1000_give_the_same_predictions() -> None:
    base = _stream(1, 2000)
    scaled = [Record(x=tuple(v * 1000.0 for v in r.x), y=r.y, key=r.key) for r in base]
    _, p1, l1 = _run(base)
    _, p2, l2 = _run(scaled)
    np.testing.assert_allclose(p1, p2, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(l1, l2, rtol=1e-6, atol=1e-9)


def test_target_near_1000_learns_like_one_near_1_in_user_units() -> None:
    lrn1, p1, l1 = _run(_stream(2, 2000))
    lrn2, p2, l2 = _run(_stream(2, 2000, y_shift=1000.0, y_scale=100.0))
    # Same standardized problem: predictions map back affinely, losses scale by 100².
    np.testing.assert_allclose(p2[2:], p1[2:] * 100.0 + 1000.0, rtol=1e-6)
    np.testing.assert_allclose(l2[2:], l1[2:] * 1e4, rtol=1e-5)
    s1, s2 = lrn1.summary(), lrn2.summary()
    # The first two records are predicted blind (no target scale yet): not affine.
    np.testing.assert_allclose(s2.cumulative_loss - l2[:2].sum(),
                               (s1.cumulative_loss - l1[:2].sum()) * 1e4, rtol=1e-6)
    assert s1.baseline_loss is not None and s2.baseline_loss is not None
    np.testing.assert_allclose(s2.baseline_loss, s1.baseline_loss * 1e4, rtol=1e-6)
    # The reported loss is the user's: (y_pred - y)².
    ys = np.array([r.y for r in _stream(2, 2000, y_shift=1000.0, y_scale=100.0)])
    np.testing.assert_allclose(l2[2:], (p2[2:] - ys[2:]) ** 2, rtol=1e-9)
    # Late in the stream the fit is good in the user's units (noise σ = 10 there).
    assert np.mean(l2[-500:]) < 30 * 100.0


def test_statistics_survive_drift_resets_and_a_state_dict_round_trip() -> None:
    records = _stream(3, 1500, x_scale=50.0, y_shift=7.0, keys=3)
    lrn, _, _ = _run(records)
    assert lrn.summary().drift_events >= 1
    sc = lrn.scaler
    assert sc is not None and sc.x is not None and sc.y is not None
    # Every record, across resets and keys (the last block's labels wait for its end).
    assert sc.x.count == 1500 and sc.y.count + len(sc.block_labels) == 1500 == sc.records
    state = lrn.state_dict()
    twin = AdaptiveLearner("linear", "regression", drift=DriftConfig(), regret=RegretConfig())
    twin.load_state_dict(state)
    more = _stream(4, 300, x_scale=50.0, y_shift=7.0, keys=3)
    a, b = lrn.process_many(more), twin.process_many(more)
    np.testing.assert_array_equal(a.y_pred, b.y_pred)
    assert twin.scaler is not None
    assert twin.scaler.records == 1800


def test_shared_state_holds_the_statistics_once() -> None:
    lrn, _, _ = _run(_stream(5, 600, keys=4))
    shared = lrn.state_dict(keys=())
    assert shared["keys"] == {} and shared["scaler"]["x"]["count"] == 600


def test_off_feeds_features_as_they_come() -> None:
    lrn, _, _ = _run(_stream(6, 300), standardize=False, standardize_target=False)
    assert lrn.scaler is None and lrn.state_dict()["scaler"] is None


def test_classification_standardizes_features_only() -> None:
    lrn = AdaptiveLearner("logistic", "classification")
    recs = [Record(x=(float(i % 7) * 100.0, 1.0), y=float(i % 2)) for i in range(50)]
    out = lrn.process_many(recs)
    assert lrn.scaler is not None and lrn.scaler.y is None
    assert ((out.y_pred > 0) & (out.y_pred < 1)).all()


def test_standardizer_leaves_out_non_finite_rows() -> None:
    s = Standardizer(2)
    s.features(np.array([[1.0, 2.0], [np.inf, 0.0], [3.0, 4.0]]))
    assert s.x is not None and s.x.count == 2


def test_meta_train_hands_its_statistics_to_the_learner_through_the_file(tmp_path) -> None:
    from adaptd.meta.state import load, save
    from adaptd.meta.train import meta_train

    history = _stream(3, 600, x_scale=30.0, y_shift=50.0)
    meta = meta_train(history, model="linear", task="regression")
    assert meta.scaler is not None and meta.scaler["x"]["count"] == 600
    loaded = load(save(meta, tmp_path / "meta.pt"))
    assert loaded.scaler == meta.scaler
    lrn = AdaptiveLearner("linear", "regression", meta_state=loaded, regret=RegretConfig())
    lrn.process_many(_stream(4, 1))  # the model is built at the first record
    assert lrn.scaler is not None and lrn.scaler.x is not None
    assert lrn.scaler.x.count == 601  # meta-train's 600 records, then this one
    np.testing.assert_allclose(lrn.scaler.x.mean, meta.scaler["x"]["mean"], atol=1.0)


def test_a_level_shift_is_learned_clipped_but_reported_in_user_units() -> None:
    calm = [Record(x=(float(i % 3),), y=100.0 + 0.01 * (i % 5)) for i in range(64)]
    shifted = Record(x=(0.0,), y=24.0)
    lrn = AdaptiveLearner("linear", "regression", regret=RegretConfig(baseline=False))
    first = lrn.process_many(calm)
    out = lrn.process_many([shifted])
    assert out[0].loss == (out[0].y_pred - 24.0) ** 2  # the user's loss, not the clipped one
    reported = float(np.nansum(first.loss)) + float(out.loss[0])
    assert abs(lrn.summary().cumulative_loss - reported) < 1e-6 * reported
    # one absurd deviation (thousands of sigmas) did not blow up the model's parameters
    after = lrn.process_many([Record(x=(0.0,), y=100.0)])
    assert abs(after[0].y_pred - 100.0) < 80.0


def test_the_kernel_and_the_waves_report_the_same_totals_in_user_units() -> None:
    # The kernel takes a batch's target blocks at once with a loss factor per record, the
    # waves block by block: predictions, losses and every total (the shadow baseline's and
    # the hindsight fits' included) must agree, in the user's units. One key: with several,
    # the waves reorder records across keys (see adaptd.learner.paths).
    records = _stream(3, 900, x_scale=5.0, y_shift=300.0, y_scale=40.0)
    kernel, p_kernel, l_kernel = _run(records, kernel=True)
    waves, p_waves, l_waves = _run(records, kernel=False)
    np.testing.assert_allclose(p_kernel, p_waves, rtol=1e-9)
    np.testing.assert_allclose(l_kernel, l_waves, rtol=1e-7, atol=1e-9)
    a, b = kernel.summary(), waves.summary()
    assert a.drift_events == b.drift_events >= 1
    assert abs(a.cumulative_loss - np.nansum(l_kernel)) < 1e-9 * a.cumulative_loss
    for name in ("cumulative_loss", "baseline_loss", "hindsight_loss", "hindsight_regret",
                 "prequential_loss"):
        assert abs(getattr(a, name) - getattr(b, name)) <= 1e-7 * abs(getattr(b, name)), name


@pytest.mark.parametrize("kernel", [True, False])
def test_the_running_totals_do_not_depend_on_where_the_first_batch_ends(kernel: bool) -> None:
    # The first two labels ever are predicted without a target scale and not learned; their
    # losses must enter the exponential average before the learned records after them, not
    # at the end of whatever batch they came in (a restarted daemon's prequential loss then
    # differed from an uninterrupted one's). One key for the waves: with several they reorder
    # records across keys (see adaptd.learner.paths).
    records = _stream(5, 600, y_shift=50.0, y_scale=3.0, keys=3 if kernel else 1)
    whole = AdaptiveLearner("linear", "regression", config=LearnerConfig(kernel=kernel),
                            drift=DriftConfig(), regret=RegretConfig())
    whole.process_many(records)
    split = AdaptiveLearner("linear", "regression", config=LearnerConfig(kernel=kernel),
                            drift=DriftConfig(), regret=RegretConfig())
    for i in range(0, len(records), 7):
        split.process_many(records[i:i + 7])
    a, b = whole.totals.to_dict(), split.totals.to_dict()
    assert a.keys() == b.keys()
    for name, value in a.items():
        assert value == pytest.approx(b[name], rel=1e-12), name
