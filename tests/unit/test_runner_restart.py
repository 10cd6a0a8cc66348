"""Restarts over real files with the state database: a restart in the middle of a stream ends
exactly where an uninterrupted run ends (positions, meta-state, totals and key states from one
checkpoint); a checkpoint writes only the keys that changed. Damaged checkpoints:
tests/unit/test_generations.py."""

from __future__ import annotations

import json
import random
from pathlib import Path

from adaptd.checkpoint import CheckpointStore
from adaptd.runner import Runner, RunnerConfig
from tests.integration.kafka_harness import assert_same_state
from tests.unit.file_runs import file_runner
from tests.unit.store_files import stored


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


def stored_values(state_dir: Path) -> dict[str, tuple[str, int, int]]:
    """key → where its latest state is stored (segment or row, and the checkpoint)."""
    return stored(state_dir)


def test_a_restart_mid_stream_ends_where_an_uninterrupted_run_ends(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    write_stream(source, 400, seed=1)
    make_runner(tmp_path / "restarted", source).run()
    write_stream(source, 300, seed=2)
    restarted = make_runner(tmp_path / "restarted", source)
    assert restarted.run().records == 300
    straight = make_runner(tmp_path / "straight", source)
    assert straight.run().records == 700
    assert_same_state(restarted.learner.state_dict(), straight.learner.state_dict())
    assert restarted.learner.summary() == straight.learner.summary()
    ours = (tmp_path / "restarted" / "predictions.jsonl").read_text().splitlines()
    theirs = (tmp_path / "straight" / "predictions.jsonl").read_text().splitlines()
    assert ours == theirs


def test_a_checkpoint_writes_only_the_keys_that_changed(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    write_stream(source, 120, seed=1)
    make_runner(tmp_path, source).run()
    before = stored_values(tmp_path / "state")
    assert sorted(before) == list("abcd")
    with open(source, "a") as fh:  # more records of key "a" only
        fh.writelines(json.dumps({"key": "a", "x": [i / 30, 1.0, -1.0], "y": 0.5}) + "\n" for i in range(30))
    make_runner(tmp_path, source).run()
    after = stored_values(tmp_path / "state")
    assert after["a"] != before["a"]
    assert {k: after[k] for k in "bcd"} == {k: before[k] for k in "bcd"}
    restored = CheckpointStore(tmp_path / "state").load()
    assert restored.partitions[0].position == 150


def test_the_store_holds_key_states_per_partition_and_the_shared_state_once(
        tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    write_stream(source, 120, seed=1)
    make_runner(tmp_path, source).run()
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


def test_evicted_keys_come_back_from_the_store_after_a_restart(tmp_path: Path) -> None:
    evict_all = {"learner.idle_evict_s": 1e-9}  # every key leaves memory after a checkpoint
    source = tmp_path / "in.jsonl"
    write_stream(source, 200, seed=1, rare="z")
    make_runner(tmp_path / "evicting", source, **evict_all).run()
    assert CheckpointStore(tmp_path / "evicting" / "state").key_count(evicted=True) == 5
    write_stream(source, 200, seed=2, rare="z")
    evicting = make_runner(tmp_path / "evicting", source, **evict_all)
    straight = make_runner(tmp_path / "straight", source)
    assert evicting.run().records == 200 and straight.run().records == 400
    ours = (tmp_path / "evicting" / "predictions.jsonl").read_text().splitlines()
    theirs = (tmp_path / "straight" / "predictions.jsonl").read_text().splitlines()
    assert ours == theirs
