"""adaptd meta-train: from a source to a meta-state file that adaptd run starts from."""

from __future__ import annotations

import json

import numpy as np
import torch

from adaptd.cli import main
from adaptd.config import load_settings
from adaptd.learner import build_learner
from adaptd.meta import EPOCHS
from adaptd.meta.state import load
from adaptd.meta.train import meta_train
from adaptd.records import Record


def sinusoid_records(seed: int, tasks: int, per_task: int = 40) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for t in range(tasks):
        a, phase = rng.uniform(0.5, 2.0), rng.uniform(0, np.pi)
        for x in rng.uniform(-3, 3, size=per_task):
            out.append({"key": "s", "x": [float(x)], "y": float(a * np.sin(x + phase)), "task": t})
    return out


def test_meta_train_command_writes_a_file_run_can_use(tmp_path):
    src = tmp_path / "history.jsonl"
    lines = [json.dumps(r) for r in sinusoid_records(0, 12)]
    lines.insert(5, "not json")  # bad records are skipped, not fatal
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "meta.pt"
    code = main(["meta-train", "--source", f"jsonl:{src}", "--out", str(out), "--model", "mlp",
                 "--set", "learner.hidden=8"])
    assert code == 0
    state = load(out)
    assert state.tasks == 12 * EPOCHS and state.model["hidden"] == [8]  # each pass closes 12
    module_state = torch.load(out, weights_only=True)["module"]
    assert module_state["0.weight"].shape == (8, 1)
    learner = build_learner(load_settings(environ={}, flags={
        "model": "mlp", "meta": str(out), "learner.hidden": [8]}))
    assert learner.meta is not None and learner.meta.tasks == 12 * EPOCHS
    np.testing.assert_array_equal(learner.meta.theta0, state.theta0)


def test_meta_init_adapts_faster_than_random_init():
    train = [Record(x=tuple(r["x"]), y=r["y"], task=r["task"]) for r in sinusoid_records(1, 150)]
    meta = meta_train(train, model="mlp", epochs=2)
    test = [Record(x=tuple(r["x"]), y=r["y"], task=r["task"]) for r in sinusoid_records(2, 10)]

    def first_losses(meta_state):
        from adaptd.drift import DriftConfig
        from adaptd.learner.adaptive import AdaptiveLearner
        learner = AdaptiveLearner("mlp", "regression", drift=DriftConfig(detector="oracle"),
                                  meta_state=meta_state)
        out = learner.process_many(test)
        return np.mean([o.loss for i, o in enumerate(out) if i % 40 < 20])

    assert first_losses(meta) < 0.7 * first_losses(None)


def test_without_task_field_the_detector_segments():
    rng = np.random.default_rng(3)
    recs = [Record(x=(float(x),), y=float(5 * x if i < 300 else -5 * x))
            for i, x in enumerate(rng.normal(size=600))]
    state = meta_train(recs, model="linear")
    assert state.tasks >= 2  # the detected change, plus the last segment closed at the end
