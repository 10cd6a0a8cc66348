"""Checkpoints written behind the record path (adaptd.save_behind): a position is committed only
once the store holds it, and a write that fails is retried with every key it held.

Real files and a real, full tmpfs (skipped where this process may not mount); the source is the
real jsonl source with its ``commit`` noting what the store holds at that moment.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from adaptd.checkpoint import CheckpointStore
from adaptd.connectors.jsonl import JsonlSource, JsonlSourceOptions
from adaptd.connectors.registry import open_sink
from adaptd.learner.adagrad import AdaGradLearner
from adaptd.metrics import Metrics
from adaptd.records import RecordDecoder
from adaptd.runner import Runner, RunnerConfig
from adaptd.settings import ResilienceConfig
from tests.unit.test_lost_state import fill, tmpfs

# Key "early" has records only among the first 60: the checkpoint due at 100 is the last to
# hold its changes from records 50–59, so if that one is lost, they are too.
LINES = [json.dumps({"key": "early" if i < 60 and i % 2 else f"k{i % 3}", "x": [i % 7, 1.0],
                     "y": i % 3}) for i in range(200)]


class NotingSource(JsonlSource):
    """The jsonl source, noting at each commit the positions it is given and those the state
    dir holds then (read through a connection of its own)."""

    def __init__(self, path: Path, state_dir: Path,
                 on_commit: Callable[[int], None] = lambda n: None) -> None:
        super().__init__(JsonlSourceOptions(str(path)))
        self.state_dir = state_dir
        self.on_commit = on_commit
        self.commits: list[tuple[dict[int, int], dict[int, int]]] = []

    def commit(self, next_positions: Mapping[int, int]) -> None:
        held = CheckpointStore(self.state_dir).load()
        self.commits.append((dict(next_positions),
                             {p: s.position for p, s in held.partitions.items()}))
        self.on_commit(len(self.commits))


def run(tmp_path: Path, state_dir: Path, on_commit: Callable[[int], None] = lambda n: None,
        sleep: Callable[[float], None] = lambda s: None) -> tuple[Runner, NotingSource]:
    source_path = tmp_path / "in.jsonl"
    source_path.write_text("\n".join(LINES) + "\n")
    source = NotingSource(source_path, state_dir, on_commit)
    runner = Runner(source=source, learner=AdaGradLearner(), decoder=RecordDecoder(),
                    metrics=Metrics(CollectorRegistry()), store=CheckpointStore(state_dir),
                    sink=open_sink(f"jsonl:{tmp_path / 'predictions.jsonl'}"),
                    config=RunnerConfig(batch_size=10, poll_timeout_s=0.0,
                                        checkpoint_every_records=50, checkpoint_max_share=1.0,
                                        give_up_after_s=60.0,
                                        resilience=ResilienceConfig(retry_backoff_initial_s=0.01,
                                                                    retry_backoff_max_s=0.05)),
                    sleep=sleep)
    runner.run()
    return runner, source


def stored_keys(state_dir: Path) -> dict[str, object]:
    restored = CheckpointStore(state_dir).load()
    return {k: v for p in restored.partitions.values() for k, v in p.learner["keys"].items()}


def test_positions_are_committed_once_the_store_holds_them(tmp_path: Path) -> None:
    runner, source = run(tmp_path, tmp_path / "state")
    assert runner.summary.checkpoints == len(source.commits) >= 4
    for given, held in source.commits:
        assert given == held  # never ahead of the store, nor behind it
    assert source.commits[-1][0] == {0: len(LINES)}


def test_a_write_that_fails_behind_is_retried_with_every_key_it_held(tmp_path: Path) -> None:
    (tmp_path / "reference").mkdir()
    reference, _ = run(tmp_path / "reference", tmp_path / "reference" / "state")
    with tmpfs(tmp_path / "mnt", "size=4m") as mnt:  # room for the WAL between its truncations
        (mnt / "state").mkdir()

        def full_after_first(commits: int) -> None:
            if commits == 1:  # the next checkpoint, written behind, finds the disk full
                fill(mnt)

        def freed(_: float) -> None:  # the retry's backoff: the disk is given room again
            for filler in mnt.glob("filler-*"):
                filler.unlink()

        runner, source = run(tmp_path, mnt / "state", full_after_first, freed)
        assert runner.metrics.checkpoint_failures._value.get() >= 1
        for given, held in source.commits:
            assert given == held
        assert source.commits[-1][0] == {0: len(LINES)}
        # "early" changed last before the failed checkpoint: the retry wrote it all the same.
        np.testing.assert_equal(stored_keys(mnt / "state"),
                                stored_keys(tmp_path / "reference" / "state"))
    assert runner.summary.records == reference.summary.records
