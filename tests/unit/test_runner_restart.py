"""Restarts over real files when the newest checkpoint is damaged: the daemon must resume from
the previous generation as a whole (positions, meta-state and totals alike), so that it ends
exactly where a daemon restarted from that generation alone ends."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from adaptd.checkpoint import CheckpointStore
from adaptd.runner import Runner, RunnerConfig
from tests.integration.kafka_harness import assert_same_state
from tests.unit.file_runs import file_runner


def write_stream(path: Path, n: int, seed: int, rare: str = "") -> None:
    """Labelled records of four keys whose weights flip half way: drifts, segments, meta.
    Key ``rare`` has the first three records and no other."""
    rng = random.Random(seed)
    weights = {k: [rng.uniform(-2, 2) for _ in range(3)] for k in "abcd" + rare}
    with open(path, "a") as fh:
        for i in range(n):
            key = rare if rare and i < 3 else rng.choice("abcd")
            sign = 1 if i < n // 2 else -1
            x = [rng.gauss(0, 1) for _ in range(3)]
            y = sign * sum(w * v for w, v in zip(weights[key], x, strict=True))
            fh.write(json.dumps({"id": f"{seed}-{i}", "key": key, "x": x, "y": y}) + "\n")


def make_runner(root: Path, source: Path, checkpoint_every_records: int = 50,
                **flags: float) -> Runner:
    config = RunnerConfig(batch_size=16, poll_timeout_s=0.01,
                          checkpoint_every_records=checkpoint_every_records)
    return file_runner(root, source, config, **flags)


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


@pytest.mark.parametrize("damage", [flip_a_byte, truncate])
def test_a_damaged_partition_file_restarts_from_the_previous_generation_whole(
        tmp_path: Path, damage: Callable[[Path], None]) -> None:
    source = tmp_path / "in.jsonl"
    write_stream(source, 400, seed=1)
    damaged_root, reference_root = tmp_path / "damaged", tmp_path / "reference"
    make_runner(damaged_root, source).run()
    (newest, newest_dir), (previous, _) = CheckpointStore(damaged_root / "state").generations()[:2]
    newest_shared = CheckpointStore(damaged_root / "state").load([0]).shared
    # The reference restarts from the previous generation with no trace of the newest one.
    shutil.copytree(damaged_root, reference_root)
    shutil.rmtree(reference_root / "state" / newest_dir.name)
    damage(newest_dir / "p0.pkl")

    damaged, reference = make_runner(damaged_root, source), make_runner(reference_root, source)
    assert damaged.on_assigned([0]) == reference.on_assigned([0])
    assert damaged.partitions.next_positions[0] < 400, "the newest generation was used"
    assert_same_state(damaged.learner.state_dict(), reference.learner.state_dict())
    assert damaged.decoder.layout() == reference.decoder.layout()
    # The newest shared state (meta-state, totals) was readable, and is not what was loaded.
    assert newest_shared is not None
    assert newest_shared["learner"]["totals"] != damaged.learner.state_dict()["totals"]
    assert damaged.learner.summary() == reference.learner.summary()

    # Both go on over the same records, and end in the same state with the same predictions.
    write_stream(source, 100, seed=2)
    done = make_runner(damaged_root, source)
    expected = make_runner(reference_root, source)
    assert done.run().records == expected.run().records > 100
    assert_same_state(done.learner.state_dict(), expected.learner.state_dict())
    ours = (damaged_root / "predictions.jsonl").read_text().splitlines()
    theirs = (reference_root / "predictions.jsonl").read_text().splitlines()
    assert ours == theirs
    assert newest > previous


def test_partition_files_hold_their_keys_and_the_shared_file_the_rest(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    write_stream(source, 120, seed=1)
    runner = make_runner(tmp_path, source)
    runner.run()
    restored = CheckpointStore(tmp_path / "state").load()
    assert set(restored.partitions[0].learner) == {"keys", "labels"}
    assert sorted(restored.partitions[0].learner["keys"]) == list("abcd")
    assert restored.shared is not None
    shared = restored.shared["learner"]
    assert "keys" not in shared and shared["labels"]["entries"] == []
    # The default (--model auto) holds one shared part per candidate learner.
    assert all(part["meta"] is not None for part in shared["candidates"].values())
    assert shared["totals"]
    assert restored.shared["decoder"] == {"n_features": 3, "feature_names": None}


def test_evicted_keys_resume_from_the_generation_their_partition_resumes_from(
        tmp_path: Path) -> None:
    evict_all = {"learner.idle_evict_s": 1e-9}  # every key leaves memory after a checkpoint
    source = tmp_path / "in.jsonl"
    write_stream(source, 200, seed=1, rare="z")
    damaged_root, reference_root = tmp_path / "damaged", tmp_path / "reference"
    make_runner(damaged_root, source, **evict_all).run()
    # "z" was evicted at an early checkpoint and is not in the last one: its state is on disk.
    shutil.copytree(damaged_root, reference_root)
    write_stream(source, 200, seed=2, rare="z")
    # One more generation, after which "z" is evicted again with the records it had since.
    make_runner(damaged_root, source, checkpoint_every_records=10**6, **evict_all).run()
    newest_dir = CheckpointStore(damaged_root / "state").generations()[0][1]
    flip_a_byte(newest_dir / "p0.pkl")

    damaged = make_runner(damaged_root, source, **evict_all)
    reference = make_runner(reference_root, source, **evict_all)
    assert damaged.run().records == reference.run().records == 200
    assert damaged.learner.summary() == reference.learner.summary()
    ours = (damaged_root / "predictions.jsonl").read_text().splitlines()
    theirs = (reference_root / "predictions.jsonl").read_text().splitlines()
    assert ours[-200:] == theirs[-200:]
