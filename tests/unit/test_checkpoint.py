"""Checkpoint generations on real files: atomic layout, newest-per-partition loading across
writers, corrupt and foreign-format files skipped for the previous good one, pruning."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest

from adaptd.checkpoint import FORMAT_VERSION, CheckpointStore, PartitionState


def state(position: int, tag: str) -> PartitionState:
    return PartitionState(position=position, keys=[tag], learner={"keys": {tag: position}})


def test_each_partition_comes_from_its_newest_generation(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=5)
    store.save({"learner": "s1"}, {0: state(10, "a"), 1: state(20, "b")})
    # Another writer (a second daemon) later checkpoints partition 1 only.
    CheckpointStore(tmp_path, keep=5).save({"learner": "s2"}, {1: state(25, "b")})
    restored = store.load()
    assert {p: s.position for p, s in restored.partitions.items()} == {0: 10, 1: 25}
    assert restored.shared == {"learner": "s2"}
    only_0 = store.load([0])
    assert list(only_0.partitions) == [0] and only_0.shared == {"learner": "s1"}
    assert not list(tmp_path.glob("tmp-*")), "temporary directories left behind"


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_good_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = CheckpointStore(tmp_path)
    store.save({"learner": "old"}, {0: state(10, "a")})
    newest = store.save({"learner": "new"}, {0: state(20, "a")})
    (newest / "p0.pkl").write_bytes(b"\x80\x05garbage")
    with caplog.at_level(logging.ERROR):
        restored = store.load([0])
    assert restored.partitions[0].position == 10
    assert f"{newest / 'p0.pkl'} is unreadable" in caplog.text


def test_a_foreign_format_version_is_reported_and_skipped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = CheckpointStore(tmp_path)
    store.save({"learner": "old"}, {0: state(10, "a")})
    newest = store.save({"learner": "new"}, {0: state(20, "a")})
    with open(newest / "shared.pkl", "wb") as fh:
        pickle.dump({"format": FORMAT_VERSION + 1, "state": {}}, fh)
    with caplog.at_level(logging.ERROR):
        restored = store.load()
    assert restored.partitions[0].position == 10 and restored.shared == {"learner": "old"}
    assert f"has format {FORMAT_VERSION + 1}, expected {FORMAT_VERSION}" in caplog.text


def test_pruning_keeps_the_newest_generations_of_every_partition(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=2)
    store.save({}, {0: state(1, "a"), 1: state(1, "b")})  # the only copy of partition 1 soon
    for position in range(2, 6):
        store.save({}, {0: state(position, "a")})
    gens = store.generations()
    held = [sorted(p.stem for p in gen_dir.glob("p*.pkl")) for _, gen_dir in gens]
    assert held == [["p0"], ["p0"], ["p0", "p1"]]
    assert store.load().partitions[1].position == 1
    assert store.load().partitions[0].position == 5


def test_nothing_saved_means_nothing_restored(tmp_path: Path) -> None:
    restored = CheckpointStore(tmp_path / "absent").load([0, 1])
    assert restored.partitions == {} and restored.shared is None


def test_generations_left_half_written_by_a_dead_writer_are_cleaned_up(tmp_path: Path) -> None:
    import os

    store = CheckpointStore(tmp_path)
    old = tmp_path / "tmp-00000000000000000001-999999"
    old.mkdir(parents=True)
    (old / "p0.pkl").write_bytes(b"half")
    os.utime(old, (0, 0))
    fresh = tmp_path / "tmp-00000000000000000002-999998"  # maybe another writer, right now
    fresh.mkdir()
    store.save({}, {0: state(1, "a")})
    assert not old.exists() and fresh.exists()
    assert store.load().partitions[0].position == 1


def test_a_writer_never_removes_another_live_writers_generation_in_progress(tmp_path: Path) -> None:
    # Replicas in containers are each pid 1: two stores in this one process stand for them.
    mine, theirs = CheckpointStore(tmp_path), CheckpointStore(tmp_path)
    assert mine.writer != theirs.writer
    in_progress = tmp_path / f"tmp-00000000000000000005-{theirs.writer}"
    in_progress.mkdir()
    left_by_me = tmp_path / f"tmp-00000000000000000004-{mine.writer}"
    left_by_me.mkdir()
    mine.save({}, {0: state(1, "a")})
    assert in_progress.exists()
    assert not left_by_me.exists()
