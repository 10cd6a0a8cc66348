"""Concept reuse (adaptd.learner.concepts): a recurring concept restarts from its stored state."""

from __future__ import annotations

import numpy as np
import pytest

from adaptd.learner.adaptive import AdaptiveLearner
from adaptd.records import Record
from adaptd.settings import LearnerConfig, MetaConfig, RegretConfig


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
    assert reuse.summary().cumulative_loss < 0.8 * fresh.summary().cumulative_loss


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
    assert 1 <= len(saved) <= 2
    twin = AdaptiveLearner("linear", "regression", meta=MetaConfig(library=2),
                           regret=RegretConfig(baseline=False, hindsight=False))
    twin.load_state_dict(state)
    assert twin.state_dict()["keys"]["default"]["library"] == saved
