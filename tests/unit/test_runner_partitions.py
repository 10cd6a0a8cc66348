"""The runner as a partition listener, on real files: a revoked partition is checkpointed,
its keys forgotten and its lag series removed; a lost one is forgotten without a checkpoint;
an assigned one is loaded from the newest checkpoint holding it."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import CollectorRegistry

from adaptd.checkpoint import CheckpointStore
from adaptd.connectors.base import SourceRecord
from adaptd.connectors.registry import open_sink, open_source
from adaptd.learner.adagrad import AdaGradLearner
from adaptd.metrics import Metrics
from adaptd.records import Record, RecordBatch, RecordDecoder
from adaptd.runner import Runner
from tests.integration.kafka_harness import assert_same_state


def record(partition: int, position: int, key: str) -> SourceRecord:
    body = {"key": key, "x": [position / 10, 1.0], "y": position / 5}
    return SourceRecord(partition=partition, position=position, value=json.dumps(body).encode())


def route(runner: Runner, partition: int, *keys: str) -> None:
    """Records of ``keys`` reach the partitions as the runner's batches do (before the
    learner): a key not in memory is read from the store then."""
    batch = RecordBatch.from_records([Record(x=(0.0, 1.0), key=k) for k in keys])
    runner.partitions.route(batch, [partition] * len(keys))


def make_runner(tmp_path: Path, registry: CollectorRegistry,
                state_dir: Path | None = None) -> Runner:
    (tmp_path / "in.jsonl").write_text("")
    return Runner(
        source=open_source(f"jsonl:{tmp_path / 'in.jsonl'}"),
        learner=AdaGradLearner(),
        decoder=RecordDecoder(),
        metrics=Metrics(registry),
        store=CheckpointStore(state_dir or tmp_path / "state"),
        sink=open_sink(f"jsonl:{tmp_path / 'predictions.jsonl'}"),
    )


def test_revoke_checkpoints_forgets_keys_and_drops_the_lag_series(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    runner = make_runner(tmp_path, registry)
    assert runner.on_assigned([0, 1]) == {}
    runner.process([record(0, 0, "a"), record(1, 0, "b"), record(0, 1, "a"), record(1, 1, "c")])
    runner.metrics.set_lag({0: 5, 1: 7}, runner.partitions.owned)
    assert registry.get_sample_value("adaptd_consumer_lag_records", {"partition": "1"}) == 7
    revoked = runner.learner.state_dict(["b", "c"])["keys"]

    runner.on_revoked([1])

    assert set(runner.learner.keys()) == {"a"} and runner.partitions.owned == {0}
    assert registry.get_sample_value("adaptd_consumer_lag_records", {"partition": "1"}) is None
    assert registry.get_sample_value("adaptd_consumer_lag_records", {"partition": "0"}) == 5
    saved = CheckpointStore(tmp_path / "state").load([1]).partitions[1]
    assert saved.position == 2 and sorted(saved.keys) == ["b", "c"]

    # Assigned again (say, after another daemon had it): resumed from that checkpoint, its
    # keys read from it when their records come.
    assert runner.on_assigned([1]) == {1: 2}
    assert set(runner.learner.keys()) == {"a"}
    route(runner, 1, "b", "c")
    assert set(runner.learner.keys()) == {"a", "b", "c"}
    assert_same_state(runner.learner.state_dict(["b", "c"])["keys"], revoked)


def test_a_lost_partition_is_forgotten_without_a_checkpoint(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, CollectorRegistry())
    runner.on_assigned([0, 1])
    runner.process([record(0, 0, "a"), record(1, 0, "b")])
    runner.on_lost([1])
    assert set(runner.learner.keys()) == {"a"} and runner.partitions.owned == {0}
    assert CheckpointStore(tmp_path / "state").load().partitions == {}


def test_a_later_assignment_does_not_roll_back_the_live_shared_state(tmp_path: Path) -> None:
    # Another replica checkpointed partition 1 (with its own shared totals) into the shared dir.
    (tmp_path / "other").mkdir()
    other = make_runner(tmp_path / "other", CollectorRegistry(), state_dir=tmp_path / "state")
    other.on_assigned([1])
    other.process([record(1, 0, "b")])
    assert other.checkpoint()

    runner = make_runner(tmp_path, CollectorRegistry())
    runner.on_assigned([0])
    runner.process([record(0, i, "a") for i in range(20)])
    live_loss = runner.learner.summary().cumulative_loss
    assert runner.on_assigned([1]) == {1: 1}
    assert runner.learner.summary().cumulative_loss == live_loss
    route(runner, 1, "b")  # read from the other replica's checkpoint
    assert set(runner.learner.keys()) == {"a", "b"}


def test_the_first_assignment_takes_the_shared_state_even_without_its_partitions(
        tmp_path: Path) -> None:
    first = make_runner(tmp_path, CollectorRegistry())
    first.on_assigned([0])
    first.process([record(0, i, "a") for i in range(20)])
    assert first.checkpoint()
    saved_loss = first.learner.summary().cumulative_loss

    later = make_runner(tmp_path, CollectorRegistry())
    assert later.on_assigned([3]) == {}  # a partition nobody checkpointed
    assert later.learner.summary().cumulative_loss == saved_loss
