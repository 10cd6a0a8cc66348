"""The engine compiled before the source opens on an empty cache (adaptd.learner.warm_up)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

#: A run of ``serve`` in a process of its own (compiled signatures are counted per process),
#: with the warm-up told the cache is empty: it must compile (or load) exactly what the run's
#: first batch then calls, so that batch adds no second signature.
RUN = """
import json, sys
from adaptd.learner import kernel, warm_up
from adaptd.service import serve
from adaptd.settings import Settings
warm_up.kernel_cached = lambda: False
ran = []
real = warm_up.compile_engine
def counted(settings):
    seconds = real(settings)
    ran.append((seconds, len(kernel.process.signatures)))
    return seconds
import adaptd.service
adaptd.service.compile_engine = counted
source, sink, state, model, task = sys.argv[1:]
summary = serve(Settings(source="jsonl:" + source, sink="jsonl:" + sink, state_dir=state,
                         metrics_port=None, model=model, task=task))
print(json.dumps({"warm_up": ran, "records": summary.records,
                  "after": len(kernel.process.signatures)}), flush=True)
# As the CLI ends a run (adaptd.cli._exit_now): no interpreter teardown, which could meet the
# start-up loader thread still loading cached code for a run this short (SIGSEGV in LLVM).
import os
os._exit(0)
"""


@pytest.mark.parametrize(("model", "task"), [("logistic", "classification"),
                                             ("mlp", "regression"), ("auto", "classification")])
def test_the_warm_up_compiles_what_the_first_batch_calls(tmp_path: Path, model: str,
                                                         task: str) -> None:
    rng = np.random.default_rng(3)
    source = tmp_path / "in.jsonl"
    with source.open("w") as fh:
        for i in range(300):
            y = int(rng.random() < 0.5) if task == "classification" else float(rng.normal())
            fh.write(json.dumps({"key": f"k{i % 7}", "x": rng.normal(size=4).round(3).tolist(),
                                 "y": y}) + "\n")
    out = subprocess.run([sys.executable, "-c", RUN, str(source), str(tmp_path / "out.jsonl"),
                          str(tmp_path / "state"), model, task],
                         check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["records"] == 300
    [(seconds, kernels)] = result["warm_up"]
    assert seconds is not None and seconds >= 0  # it ran
    assert kernels == 1  # the kernel is compiled (or loaded) before the source opens ...
    # ... for the very argument types of the run's batches: none of them compiled another.
    # (Other compiled functions are also loaded from the cache by the start-up loader thread
    # meanwhile, so only the kernel's count tells what the batches added.)
    assert result["after"] == 1
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 300


def test_nothing_is_compiled_ahead_when_the_kernel_is_cached_or_not_used(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from adaptd.learner import warm_up
    from adaptd.settings import LearnerConfig, Settings

    called: list[object] = []
    monkeypatch.setattr("adaptd.learner.build_learner", lambda s: called.append(s))
    monkeypatch.setattr(warm_up, "kernel_cached", lambda: True)
    assert warm_up.compile_engine(Settings(model="logistic", task="classification")) is None
    monkeypatch.setattr(warm_up, "kernel_cached", lambda: False)
    assert warm_up.compile_engine(Settings(model="logistic", task="classification",
                                           learner=LearnerConfig(kernel=False))) is None
    assert called == []  # no throwaway learner was even built
