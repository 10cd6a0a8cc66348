"""Delayed labels: joins with the features used at prediction time, TTL and capacity."""

from __future__ import annotations

import numpy as np
import pytest

from adaptd.labels import PendingLabels
from adaptd.learner.adaptive import AdaptiveLearner
from adaptd.records import Record
from adaptd.settings import LabelsConfig, LearnerConfig


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_join_learns_with_the_kept_features():
    clock = Clock()
    # Raw engine: with standardized targets the first label ever is predicted, not learned
    # (no scale yet), and this test is about the join.
    raw = LearnerConfig(standardize=False, standardize_target=False)
    learner = AdaptiveLearner("linear", "regression", n_features=1, clock=clock, config=raw)
    twin = AdaptiveLearner("linear", "regression", n_features=1, clock=clock, config=raw)
    out = learner.process_many([Record(x=(2.0,), id="r1", key="a")])
    assert out[0].loss is None and not out[0].learned
    # The label record's own x is ignored in favour of the features predicted on.
    out = learner.process_many([Record(x=(99.0,), y=1.0, id="r1", key="other")])
    assert out[0].learned
    twin.process_many([Record(x=(2.0,), y=1.0, key="a")])
    np.testing.assert_array_equal(learner.arena.theta[learner._slot_of["a"]],
                                  twin.arena.theta[twin._slot_of["a"]])
    assert learner.summary().delayed_labels_joined == 1


def test_expired_and_unknown_ids():
    clock = Clock()
    learner = AdaptiveLearner("linear", "regression", n_features=1, clock=clock,
                              labels=LabelsConfig(ttl_s=10.0),
                              config=LearnerConfig(standardize=False, standardize_target=False))
    learner.process_many([Record(x=(2.0,), id="r1"), Record(x=(3.0,), id="r2")])
    clock.now = 11.0
    out = learner.process_many([Record(x=(2.0,), y=1.0, id="r1")])
    # Expired: the label is learned as an ordinary record with its own features.
    assert out[0].learned
    s = learner.summary()
    assert s.delayed_labels_expired == 2 and s.delayed_labels_joined == 0
    assert len(learner.pending) == 0


def test_capacity_drops_the_oldest():
    pending = PendingLabels(LabelsConfig(capacity=2), clock=Clock())
    for rid in "abc":
        pending.put(rid, "k", (1.0,))
    assert pending.take("a") is None and pending.take("c") == ("k", (1.0,))
    assert pending.expired == 1 and pending.joined == 1


def test_state_round_trip_keeps_remaining_ttl():
    clock = Clock()
    pending = PendingLabels(LabelsConfig(ttl_s=10.0), clock=clock)
    pending.put("a", "k1", (1.0,))
    clock.now = 4.0
    pending.put("b", "k2", (2.0,))
    saved = pending.state_dict(keys=["k1"])
    other_clock = Clock()
    other_clock.now = 100.0
    back = PendingLabels(LabelsConfig(ttl_s=10.0), clock=other_clock)
    back.load_state_dict(saved)
    other_clock.now = 105.0
    assert back.take("a") == ("k1", (1.0,)) and back.take("b") is None
    other_clock.now = 107.0
    back.put("c", "k", (0.0,))
    back.load_state_dict({"entries": [("d", 0.5, "k", (0.0,))], "expired": 0, "joined": 0})
    other_clock.now = 108.0
    assert back.expire() == 1 and back.take("c") is not None


def test_config_validation():
    with pytest.raises(ValueError, match="ttl_s must be > 0, got 0"):
        LabelsConfig(ttl_s=0)
