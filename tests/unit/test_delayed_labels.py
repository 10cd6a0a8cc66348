"""A record with ``id`` and ``y`` and no ``x`` is the delayed label of features kept under that
id (ARCHITECTURE, Records); it used to be rejected as ``missing_x`` and the label was lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.trust_runs import run_lines


@pytest.mark.parametrize("batch_size", [1, 64])  # joined across batches, and within one
def test_a_label_without_features_joins_the_kept_ones(tmp_path: Path, batch_size: int) -> None:
    lines = [json.dumps(r).encode() for r in (
        {"id": "a", "key": "k", "x": [1.0, 2.0]},
        {"id": "b", "key": "k", "x": [3.0, 4.0]},
        {"id": "a", "y": 2.5},
        {"id": "missing", "y": 1.0},
        {"id": "a", "y": 2.5},  # already labelled: nothing kept any more
    )]
    run = run_lines(tmp_path, lines, batch_size=batch_size)
    labelled = [p for p in run.predictions if "loss" in p]
    assert [(p["id"], p["key"], p["position"]) for p in labelled] == [("a", "k", 2)]
    assert run.summary.updates == 1
    assert [(d["reason"], d["position"]) for d in run.dead_letters] == \
        [("label_unmatched", 3), ("label_unmatched", 4)]
    assert json.loads(run.dead_letters[0]["raw"]) == {"id": "missing", "y": 1.0}
    assert run.summary.records == 5 and run.summary.predictions == 3


def test_a_kept_label_survives_a_restart(tmp_path: Path) -> None:
    first = [json.dumps({"id": "r1", "x": [1.0, 2.0]}).encode()]
    run_lines(tmp_path, first)
    run = run_lines(tmp_path, first + [json.dumps({"id": "r1", "y": 1.0}).encode()])
    assert [p["position"] for p in run.predictions] == [0, 1]  # the second run: line 1 only
    assert run.summary.updates == 1 and not run.dead_letters


def test_a_record_without_x_and_without_a_label_is_still_missing_x(tmp_path: Path) -> None:
    run = run_lines(tmp_path, [b'{"id":"a"}', b'{"y":1}'])
    assert [d["reason"] for d in run.dead_letters] == ["missing_x", "missing_x"]


@pytest.mark.parametrize("model", ["auto", "linear", "adagrad"])
def test_every_learner_shows_the_features_it_keeps(model: str) -> None:
    """``Learner.pending``: what the runner and the partitions read for delayed labels."""
    from adaptd.config import load_settings
    from adaptd.learner import build_learner
    from adaptd.learner.adagrad import AdaGradLearner
    from adaptd.records import Record

    if model == "adagrad":  # the plain baseline keeps nothing: its labels go unmatched
        learner = AdaGradLearner()
    else:
        learner = build_learner(load_settings(environ={}, flags={"model": model}))
    learner.process_many([Record(key="k", x=(1.0, 2.0), id="r1")])
    pending = learner.pending
    if model == "adagrad":
        assert len(pending) == 0 and pending.key_of("r1") is None and pending.take("r1") is None
    else:
        assert len(pending) == 1 and pending.key_of("r1") == "k"
        assert pending.take("r1") == ("k", (1.0, 2.0)) and len(pending) == 0
