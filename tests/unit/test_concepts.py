"""Concept reuse (adaptd.learner.concepts): a recurring concept restarts from its stored state."""

from __future__ import annotations

import numpy as np
import pytest

from adaptd.learner.adaptive import AdaptiveLearner
from adaptd.records import Record
from adaptd.settings import DriftConfig, LearnerConfig, MetaConfig, RegretConfig


def _recurring(seed: int, n: int, period: int) -> list[Record]:
    """Two concepts, y = w·x and y = v·x, alternating every ``period`` records."""
    rng = np.random.default_rng(seed)
    w, v = np.array([2.0, -1.0, 0.5]), np.array([-1.5, 2.0, 1.0])
    out = []
    for i in range(n):
        x = rng.normal(size=3)
        coef = w if (i // period) % 2 == 0 else v
        out.append(Record(x=tuple(x.tolist()), y=float(coef @ x + 0.05 * rng.normal())))
    return out


def _run(records: list[Record], library: int, batch: int = 8, kernel: bool = True
         ) -> AdaptiveLearner:
    lrn = AdaptiveLearner("linear", "regression", meta=MetaConfig(library=library),
                          regret=RegretConfig(baseline=False, hindsight=False),
                          config=LearnerConfig(kernel=kernel))
    for lo in range(0, len(records), batch):
        lrn.process_many(records[lo : lo + batch])
    return lrn


@pytest.mark.parametrize("batch", [8, 256])
def test_a_recurring_concept_restarts_from_its_stored_state(batch: int) -> None:
    """Short segments (150 records): at batch 256 a choice made at batch ends came after most
    of a segment; made at the segment's PROBE-th record it saves as much as at batch 8."""
    records = _recurring(0, 3000, period=150)
    reuse, fresh = _run(records, 4, batch), _run(records, 0, batch)
    assert fresh.summary().concept_reuses == 0
    assert reuse.summary().drift_events > 3
    assert reuse.summary().concept_reuses > 0
    # 0.82 at the default window of 5 (the probe scores stored states on at most the window's
    # records), 0.72 at window 10.
    assert reuse.summary().cumulative_loss < 0.85 * fresh.summary().cumulative_loss


def test_the_choice_does_not_depend_on_the_batch_size_or_the_path() -> None:
    """The probe is at the same record in every batching and in the kernel and wave paths."""
    records = _recurring(2, 2000, period=150)
    runs = [_run(records, 4, batch, kernel) for batch in (1, 256) for kernel in (True, False)]
    first = runs[0].summary()
    assert first.concept_reuses > 0
    for other in runs[1:]:
        assert other.summary().concept_reuses == first.concept_reuses
        assert other.summary().cumulative_loss == pytest.approx(first.cumulative_loss)


def test_the_library_is_bounded_and_saved_with_the_key() -> None:
    lrn = _run(_recurring(1, 4000, period=400), library=2)
    state = lrn.state_dict()
    saved = state["keys"]["default"]["library"]
    assert 1 <= len(saved["states"]) <= 2
    twin = AdaptiveLearner("linear", "regression", meta=MetaConfig(library=2),
                           regret=RegretConfig(baseline=False, hindsight=False))
    twin.load_state_dict(state)
    again = twin.state_dict()["keys"]["default"]["library"]
    assert again["since"] == saved["since"]
    np.testing.assert_array_equal(again["states"], saved["states"])


def _twin(lrn: AdaptiveLearner, library: int = 4) -> AdaptiveLearner:
    twin = AdaptiveLearner("linear", "regression", meta=MetaConfig(library=library),
                           regret=RegretConfig(baseline=False, hindsight=False))
    twin.load_state_dict(lrn.state_dict())
    return twin


def test_a_checkpoint_between_an_alarm_and_its_probes_changes_nothing() -> None:
    """Restored after every 3 records (so inside many a segment's first 8): the same moves,
    the same losses as one learner that never stopped."""
    records = _recurring(3, 1800, period=150)
    straight = _run(records, 4, batch=3)
    restored = AdaptiveLearner("linear", "regression", meta=MetaConfig(library=4),
                               regret=RegretConfig(baseline=False, hindsight=False))
    for lo in range(0, len(records), 3):
        restored.process_many(records[lo : lo + 3])
        restored = _twin(restored)
    assert straight.summary().concept_reuses > 0
    assert restored.summary().concept_reuses == straight.summary().concept_reuses
    assert restored.summary().cumulative_loss == pytest.approx(straight.summary().cumulative_loss)


def test_the_library_moves_with_an_evicted_key() -> None:
    """Evicted (max_keys) and back: the key's stored states come back with it."""
    lrn = AdaptiveLearner("linear", "regression", meta=MetaConfig(library=4),
                          regret=RegretConfig(baseline=False, hindsight=False),
                          config=LearnerConfig(max_keys=1))
    records = _recurring(4, 1500, period=150)
    for lo in range(0, len(records), 50):
        lrn.process_many(records[lo : lo + 50])
    before = lrn.state_dict()["keys"]["default"]["library"]
    assert len(before["states"])
    lrn.process_many([Record(x=(0.0, 0.0, 0.0), y=0.0, key="other")])
    assert "default" not in lrn._slot_of
    lrn.process_many([Record(x=(0.0, 0.0, 0.0), y=None, key="default")])
    back = lrn.state_dict()["keys"]["default"]["library"]
    np.testing.assert_array_equal(back["states"], before["states"])


def test_a_class_first_seen_later_drops_the_states_stored_before_it() -> None:
    """Binary concepts stored, then a third class widens θ: the old states no longer fit and
    are dropped, the stream goes on, and states stored after the growth are reused."""
    rng = np.random.default_rng(5)
    # Meta step 0.1: at the default 0.3, θ0 learns these two alternating tasks well enough
    # that no stored state beats it by REUSE_RATIO, and the growth below needs stored states.
    lrn = AdaptiveLearner("logistic", "classification", meta=MetaConfig(library=4, step=0.1),
                          drift=DriftConfig(detector="oracle"),
                          regret=RegretConfig(baseline=False, hindsight=False))

    def segment(task: int, labels: int, n: int = 120) -> list[Record]:
        out = []
        for _ in range(n):
            x = rng.normal(size=2)
            y = int(x[0] > 0) if task % 2 == 0 else int(x[1] > 0)
            if labels == 3 and x[0] + x[1] > 1.5:
                y = 2
            out.append(Record(x=tuple(x.tolist()), y=float(y), task=task))
        return out

    for task in (0, 1, 0, 1):
        lrn.process_many(segment(task, 2))
    before = lrn.summary().concept_reuses
    assert before > 0
    for task in (2, 3, 2, 3, 2, 3):
        lrn.process_many(segment(task, 3))
    P = lrn.family.n_params
    saved = lrn.state_dict()["keys"]["default"]["library"]["states"]
    assert len(saved) and saved.shape[1] == P
    assert lrn.summary().concept_reuses > before


@pytest.mark.parametrize("model,task,classes", [("linear", "regression", 0),
                                                ("logistic", "classification", 0),
                                                ("mlp", "regression", 0),
                                                ("linear", "classification", 4)])
def test_the_compiled_choice_is_the_numpy_losses_choice(model: str, task: str,
                                                        classes: int) -> None:
    """The kernel's rules score the stored states as the family's NumPy forward does (to
    rounding), so the choice (the best state, and whether it beats the current loss) is the
    same on random states, windows, masks, window positions and ratios."""
    from adaptd.learner.concepts import MIN_RECORDS, _module_losses, _recent, choose
    from adaptd.learner.kernel import Scratch

    lrn = AdaptiveLearner(model, task, n_features=4, meta=MetaConfig(library=8))
    if classes:  # a multi-class model: labels 0 … K−1 seen once each
        lrn.process_many([Record(x=(0.0, 0.0, 0.0, 0.0), y=float(c)) for c in range(classes)])
    else:
        lrn.process_many([Record(x=(0.0, 0.0, 0.0, 0.0), y=0.0)])
    fam = lrn.family
    assert fam is not None
    rng = np.random.default_rng(11)
    sc = Scratch(*lrn.scratch)
    moved = 0
    for _ in range(400):
        R, k, m = int(rng.integers(1, 9)), 10, int(rng.integers(3, 11))
        states = rng.normal(scale=rng.choice([0.1, 1.0, 5.0]), size=(R, fam.n_params))
        if rng.random() < 0.2:
            states[int(rng.integers(R))] = states[0]  # a tie: the first is chosen
        X = rng.normal(size=(k, 4))
        Y = (rng.integers(0, classes, size=k) if classes else
             rng.integers(0, 2, size=k) if task == "classification" else
             rng.normal(size=k)).astype(np.float64)
        WM = (rng.random(k) < 0.85).astype(np.float64)
        WL = rng.exponential(scale=rng.choice([0.1, 10.0, 1000.0]), size=k)
        wpos = int(rng.integers(k))
        recent = _recent(WM, wpos, m)
        want = -1
        if len(recent) >= MIN_RECORDS:
            losses = _module_losses(lrn, states, X[recent], Y[recent])
            best = int(np.argmin(losses))
            want = best if losses[best] < 0.03 * float(WL[recent].mean()) else -1
        got = choose(states, X, Y, WM, WL, wpos, m, 0.03, tuple(lrn.net), sc.acts, sc.zs,
                     np.empty(k))
        assert got == want
        moved += want >= 0
    assert moved > 20  # both outcomes were tried


@pytest.mark.parametrize("batch", [7, 300])
def test_the_kernel_s_own_probes_are_the_python_probes_bit_for_bit(
        batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel probes in place (adaptd.learner.reuse) where it returned to Python for each
    probe before: predictions, losses, totals and the saved libraries are the same bits
    (three interleaved keys, the baselines serial at batch 7 and on the thread at 300)."""
    from adaptd.learner import paths

    rng = np.random.default_rng(5)
    base = _recurring(3, 2400, period=150)
    records = [Record(x=r.x, y=r.y, key=f"k{int(rng.integers(3))}") for r in base]

    def run() -> tuple[list[bytes], str, dict[str, object]]:
        lrn = AdaptiveLearner("linear", "regression", meta=MetaConfig(library=4))
        outs = [lrn.process_many(records[lo : lo + batch])
                for lo in range(0, len(records), batch)]
        arrays = [np.concatenate([getattr(o, f) for o in outs]).tobytes()
                  for f in ("y_pred", "loss", "drift", "segment", "recovered_after")]
        keys = lrn.state_dict()["keys"]
        libraries = {k: (v["library"]["states"].tobytes(), v["library"]["since"])
                     for k, v in keys.items()}
        return arrays, repr(lrn.summary()), libraries

    in_kernel = run()
    params = paths._params
    monkeypatch.setattr(paths, "_params", lambda *a: params(*a)._replace(probe_here=False))
    in_python = run()
    assert "concept_reuses=0" not in in_kernel[1]
    assert in_kernel == in_python
