"""The segment store (format 6) on real files: a run killed with SIGKILL mid-stream resumes
exactly; a missing or damaged segment file falls back to the checkpoint before as a whole; a
store written by the previous format is read as it is and its run goes on as that adaptd's did."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adaptd.checkpoint import CheckpointStore, PartitionChanges
from adaptd.runner import RunnerConfig
from tests.unit.file_runs import file_runner
from tests.unit.store_files import segments
from tests.unit.test_runner_restart import write_stream

FORMAT_5 = Path(__file__).parent / "data" / "format5"
FLAGS = {"model": "linear", "learner.standardize": False, "learner.standardize_target": False}


def test_a_format_5_store_is_read_as_it_is_and_the_run_goes_on_as_that_adaptd_s(
        tmp_path: Path) -> None:
    """data/format5 was written by adaptd at b52ff14 (format 5: a row per key, two keys
    evicted) after 400 records, and holds that adaptd's predictions of the 200 records after
    them (data/format5/make.py). This adaptd resumes from it and predicts them alike."""
    source = tmp_path / "in.jsonl"
    write_stream(source, 400, seed=1, rare="r")
    write_stream(source, 200, seed=2)
    (tmp_path / "state").mkdir()
    for name in ("state.db", "meta.pt"):
        shutil.copy(FORMAT_5 / name, tmp_path / "state" / name)
    store = CheckpointStore(tmp_path / "state")
    assert store.key_count() == 5 and store.key_count(evicted=True) == 2  # a and r
    config = RunnerConfig(batch_size=16, poll_timeout_s=0.01, checkpoint_every_records=50)
    runner = file_runner(tmp_path, source, config, **FLAGS, **{"learner.max_keys": 3})
    assert runner.run().records == 200
    ours = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert ours == (FORMAT_5 / "predictions_after.jsonl").read_text().splitlines()
    assert CheckpointStore(tmp_path / "state").load().partitions[0].position == 600


def test_a_missing_segment_file_falls_back_to_the_checkpoint_before(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save({"n": 1}, {0: PartitionChanges(1, {"a": 1, "b": 1})}, checkpoint=1)
    store.save({"n": 2}, {0: PartitionChanges(2, {"a": 2})}, checkpoint=2)
    last = segments(tmp_path)[-1]
    assert last["checkpoint"] == 2
    (tmp_path / "segments" / f"{last['id']}.seg").unlink()
    restored = CheckpointStore(tmp_path).load()
    assert restored.fell_back_from == 2 and restored.shared == {"n": 1}
    assert restored.partitions[0].learner["keys"] == {"a": 1, "b": 1}
    # The next checkpoint sweeps the file of no row and writes on from checkpoint 1.
    again = CheckpointStore(tmp_path)
    again.save({"n": 3}, {0: PartitionChanges(3, {"b": 3})}, checkpoint=3)
    named = {f"{s['id']}.seg" for s in segments(tmp_path)}
    assert {p.name for p in (tmp_path / "segments").iterdir()} == named
    assert CheckpointStore(tmp_path).load().partitions[0].learner["keys"] == {"a": 1, "b": 3}


def distinct_records(path: Path, n: int) -> None:
    """``n`` records, most of a key of their own, every tenth of one of ten busy keys."""
    with open(path, "w") as fh:
        for i in range(n):
            key = f"busy{i % 10}" if i % 10 == 0 else f"k{i}"
            x = [((i * 7) % 13) / 13, ((i * 5) % 11) / 11, 1.0]
            fh.write(json.dumps({"key": key, "x": x, "y": x[0] - 2 * x[1]}) + "\n")


def cli(source: Path, state: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "adaptd", "run", "--source", f"jsonl:{source}",
            "--sink", f"jsonl:{out}", "--state-dir", str(state), "--metrics-port", "0",
            "--model", "linear", "--set", "learner.standardize=false",
            "--set", "learner.standardize_target=false", "--set", "learner.max_keys=500",
            "--set", "checkpoint_every_records=1000", "--set", "checkpoint.max_time_share=1"]


def last_predictions(path: Path) -> dict[int, str]:
    """position → the last prediction written for it (predictions are at-least-once)."""
    out = {}
    for line in path.read_text().splitlines():
        out[json.loads(line)["position"]] = line
    return out


def test_a_run_killed_mid_stream_resumes_exactly(tmp_path: Path) -> None:
    """SIGKILL once a few checkpoints are on disk (keys evicted into segments), then a restart:
    every position's last prediction is the one of a run never interrupted."""
    source = tmp_path / "in.jsonl"
    distinct_records(source, 40_000)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTD_")}
    straight = subprocess.run(cli(source, tmp_path / "s-state", tmp_path / "s.jsonl"),
                              env=env, capture_output=True, text=True, timeout=600, check=False)
    assert straight.returncode == 0, straight.stderr[-3000:]

    killed = subprocess.Popen(cli(source, tmp_path / "k-state", tmp_path / "k.jsonl"), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    files = tmp_path / "k-state" / "segments"
    try:
        while killed.poll() is None and len(list(files.glob("*.seg")) if files.is_dir()
                                            else ()) < 3:
            time.sleep(0.01)  # waits for a state of the run, never decides anything by time
        killed.send_signal(signal.SIGKILL)
    finally:
        killed.wait()
    if killed.returncode != -signal.SIGKILL:
        pytest.fail(f"the run ended before it was killed ({killed.returncode}): nothing tested")
    assert CheckpointStore(tmp_path / "k-state").load().partitions[0].position < 40_000
    resumed = subprocess.run(cli(source, tmp_path / "k-state", tmp_path / "k.jsonl"), env=env, check=False,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert last_predictions(tmp_path / "k.jsonl") == last_predictions(tmp_path / "s.jsonl")
