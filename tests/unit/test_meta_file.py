"""STATE_DIR/meta.pt: written at checkpoints in the ``--meta`` format without importing torch,
read by torch and by ``adaptd run --meta``."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from adaptd import meta_file
from adaptd.config import load_settings
from adaptd.learner import build_learner
from adaptd.meta import state as meta_state
from adaptd.runner import RunnerConfig
from tests.unit.file_runs import file_runner


def sample_state() -> meta_state.MetaState:
    return meta_state.MetaState(
        theta0=np.array([0.5, -1.25, 3.0]), B=np.array([1e-2, 2e-2, 3e-2]),
        G=np.array([4.0, 5.0, 6.0]), tasks=7, alpha=1.5,
        model={"model": "mlp", "task": "regression", "n_features": 3, "hidden": (4, 4)})


def test_torch_loads_what_meta_state_save_writes(tmp_path: Path) -> None:
    state = sample_state()
    ours = meta_file.write(state.to_dict(), tmp_path / "meta.pt")
    theirs = meta_state.save(state, tmp_path / "reference.pt")
    mine, reference = (torch.load(p, weights_only=True) for p in (ours, theirs))
    assert mine.keys() == reference.keys()
    for k, v in reference.items():
        if isinstance(v, torch.Tensor):
            assert mine[k].dtype == v.dtype and torch.equal(mine[k], v), k
        else:
            assert mine[k] == v, k
    # Storages are aligned as torch aligns them: the file can be memory-mapped.
    assert torch.equal(torch.load(ours, weights_only=True, mmap=True)["G"], reference["G"])
    loaded = meta_state.load(ours)
    assert loaded.tasks == 7 and np.array_equal(loaded.theta0, state.theta0)


def test_writing_meta_pt_never_imports_torch(tmp_path: Path) -> None:
    code = ("import sys, numpy as np; from adaptd import meta_file; "
            "meta_file.write({'theta0': np.zeros(2), 'B': np.ones(2), 'G': np.ones(2), "
            f"'tasks': 1, 'alpha': 1.0, 'model': {{}}}}, {str(tmp_path / 'm.pt')!r}); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert torch.load(tmp_path / "m.pt", weights_only=True)["tasks"] == 1


def test_a_run_writes_meta_pt_that_run_meta_loads(tmp_path: Path) -> None:
    rng = random.Random(5)
    source = tmp_path / "in.jsonl"
    with open(source, "w") as fh:
        for i in range(600):
            sign = 1 if (i // 150) % 2 == 0 else -1  # weights flip: segments close, meta moves
            x = [rng.gauss(0, 1) for _ in range(3)]
            fh.write(json.dumps({"key": "k", "x": x, "y": sign * sum(x)}) + "\n")
    runner = file_runner(tmp_path, source, RunnerConfig(batch_size=32, poll_timeout_s=0.01,
                                                        checkpoint_every_records=100))
    runner.run()
    path = tmp_path / "state" / "meta.pt"
    live = runner.learner.state_dict(keys=())["meta"]
    assert live["tasks"] >= 1
    assert runner.metrics.registry.get_sample_value("adaptd_meta_tasks") == live["tasks"]
    learner = build_learner(load_settings(environ={}, flags={"meta": str(path)}))
    started_from = learner.state_dict(keys=())["meta"]
    assert started_from["tasks"] == live["tasks"]
    for name in ("theta0", "B", "G"):
        assert np.array_equal(started_from[name], live[name]), name
