"""The shadow baselines (and hindsight fits) on their own thread give the serial kernel's
results, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from adaptd.connectors.synthetic import generate
from adaptd.learner import shadow
from adaptd.learner.adaptive import AdaptiveLearner
from adaptd.records import Record
from adaptd.settings import DriftConfig, LearnerConfig, RegretConfig


def _records(task: str, keys: int, raw: bool) -> list[Record]:
    """A drifting sinusoid (tasks known, for the oracle), some records unlabelled and one
    with a NaN feature (the key's row and the baseline's skip it)."""
    stream = generate("sinusoid", seed=5, n=1500, keys=keys, hazard=0.01)
    recs = []
    for i, r in enumerate(stream):
        y = None if i % 29 == 0 else (float(r["y"] > 0) if task == "classification"
                                      else float(r["y"]))
        recs.append(Record(x=tuple(r["x"]), y=y, key=r.get("key", "default"),
                           task=r.get("task")))
    if raw:  # (standardized, it would be a NaN in every later record's features)
        recs[700] = Record(x=(float("nan"),), y=1.0, key=recs[700].key, task=recs[700].task)
    return recs


def _run(recs: list[Record], task: str, detector: str, baseline_window: int, raw: bool,
         threaded: bool) -> tuple[list[np.ndarray], AdaptiveLearner]:
    learner = AdaptiveLearner(
        "mlp", task, config=LearnerConfig(hidden=[8, 6], standardize=not raw,
                                          standardize_target=not raw),
        drift=DriftConfig(detector=detector, ph_threshold=20.0),
        regret=RegretConfig(baseline_window=baseline_window, baseline_thread=threaded))
    columns = []
    for i in range(0, len(recs), 200):
        o = learner.process_many(recs[i : i + 200])
        columns += [o.y_pred, o.loss, o.drift, o.segment, o.learned, o.recovered_after]
    return columns, learner


@pytest.mark.parametrize("task,detector,keys,baseline_window,raw", [
    ("regression", "page_hinkley", 1, 1, False),  # standardized targets: a unit per record
    ("classification", "page_hinkley", 1, 3, True),
    ("regression", "oracle", 3, 1, True),  # task changes stop the kernel before a record
    ("classification", "none", 3, 3, False),
])
def test_threaded_baselines_equal_serial(monkeypatch, task, detector, keys, baseline_window,
                                         raw):
    monkeypatch.setattr(shadow, "PARALLEL", True)  # also on a one-CPU machine
    used = []

    class Counted(shadow.Shadow):
        def join(self, tot):  # type: ignore[no-untyped-def]
            used.append(len(self.calls))
            super().join(tot)

    monkeypatch.setattr(shadow, "Shadow", Counted)
    recs = _records(task, keys, raw)
    serial_out, serial = _run(recs, task, detector, baseline_window, raw, False)
    assert not used
    threaded_out, threaded = _run(recs, task, detector, baseline_window, raw, True)
    assert len(used) == 8  # every batch went to the thread
    if detector != "none":
        assert max(used) > 1  # events: several kernel calls in a batch, one sum each
        assert serial.summary().drift_events >= 2
        assert serial.totals.hindsight != 0.0  # segments' fits, on the thread too
    for a, b in zip(serial_out, threaded_out, strict=True):
        assert a.tobytes() == b.tobytes()
    assert serial.totals.to_dict() == threaded.totals.to_dict()
    assert np.isfinite(serial.totals.baseline) and serial.totals.baseline != 0.0
    if raw:  # the NaN record
        assert serial.totals.skipped >= 1
    for name, a in serial.arena._asdict().items():
        if name == "last_seen":  # the clock
            continue
        assert a.tobytes() == getattr(threaded.arena, name).tobytes(), name
    for name in ("theta0", "B", "G"):
        assert getattr(serial.meta, name).tobytes() == getattr(threaded.meta, name).tobytes()


def test_small_batches_and_one_cpu_stay_serial(monkeypatch):
    """Below MIN_LABELLED labelled records, or with one CPU, the kernel runs the baselines
    itself (a hand-over would cost more than it saves)."""
    learner = AdaptiveLearner("mlp", "regression", config=LearnerConfig(hidden=[4]))
    labelled = np.ones(shadow.MIN_LABELLED, dtype=bool)
    monkeypatch.setattr(shadow, "PARALLEL", True)
    assert shadow.wanted(learner, labelled)
    assert not shadow.wanted(learner, labelled[1:])
    monkeypatch.setattr(shadow, "PARALLEL", False)
    assert not shadow.wanted(learner, labelled)


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_linear_models_stay_serial(monkeypatch, task):
    """A linear model's baseline row costs less than handing it to the thread, at any size."""
    monkeypatch.setattr(shadow, "PARALLEL", True)
    learner = AdaptiveLearner("linear", task)
    learner.process_many([Record(x=(1.0, 2.0), y=1.0)])  # builds the family
    assert not shadow.wanted(learner, np.ones(4096, dtype=bool))
