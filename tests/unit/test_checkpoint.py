"""Checkpoint generations on real files: atomic layout, newest-per-partition loading across
writers, damaged and foreign-format files skipped for the whole previous generation, pruning."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest

from adaptd.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    CheckpointStore,
    PartitionState,
    read_file,
)


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


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def garble(path: Path) -> None:
    path.write_bytes(b"\x80\x05garbage")


@pytest.mark.parametrize("damage", [flip_a_byte, truncate, garble])
def test_a_damaged_partition_file_falls_back_to_the_whole_previous_generation(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, damage) -> None:
    store = CheckpointStore(tmp_path)
    store.save({"learner": "old"}, {0: state(10, "a"), 1: state(11, "b")})
    newest = store.save({"learner": "new"}, {0: state(20, "a"), 1: state(21, "b")})
    damage(newest / "p1.pkl")
    with caplog.at_level(logging.ERROR):
        restored = store.load([0, 1])
        again = store.load()
    # Never partition 0 and the shared state from the newest, partition 1 from the older one.
    for loaded in (restored, again):
        assert {p: s.position for p, s in loaded.partitions.items()} == {0: 10, 1: 11}
        assert loaded.shared == {"learner": "old"}
    assert str(newest / "p1.pkl") in caplog.text
    assert caplog.text.count(str(newest / "p1.pkl")) == 1, "an unreadable file is logged once"


def test_a_partition_not_in_the_damaged_file_still_comes_from_the_newest_generation(
        tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save({"learner": "old"}, {0: state(10, "a"), 1: state(11, "b")})
    newest = store.save({"learner": "new"}, {0: state(20, "a"), 1: state(21, "b")})
    flip_a_byte(newest / "p1.pkl")
    # A replica assigned only partition 0 does not need the damaged file.
    only_0 = store.load([0])
    assert only_0.partitions[0].position == 20 and only_0.shared == {"learner": "new"}


def test_the_shared_state_of_an_unusable_generation_is_not_taken(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    only = store.save({"learner": "only"}, {0: state(20, "a")})
    flip_a_byte(only / "p0.pkl")
    restored = store.load([0])
    # Its shared state counts partition 0's records: without them it would count them twice.
    assert restored.partitions == {} and restored.shared is None


def test_a_foreign_format_version_is_reported_and_skipped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = CheckpointStore(tmp_path)
    store.save({"learner": "old"}, {0: state(10, "a")})
    newest = store.save({"learner": "new"}, {0: state(20, "a")})
    shared = newest / "shared.pkl"
    header = bytearray(shared.read_bytes())
    header[8:12] = (FORMAT_VERSION + 1).to_bytes(4, "little")
    shared.write_bytes(bytes(header))
    with caplog.at_level(logging.ERROR):
        restored = store.load()
    assert restored.partitions[0].position == 10 and restored.shared == {"learner": "old"}
    assert f"has format {FORMAT_VERSION + 1}, expected {FORMAT_VERSION}" in caplog.text


def test_a_plain_pickle_from_an_older_version_is_refused(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    newest = store.save({"learner": "new"}, {0: state(20, "a")})
    with open(newest / "p0.pkl", "wb") as fh:
        pickle.dump({"format": 2, "position": 20}, fh)
    with pytest.raises(CheckpointError, match="is not an adaptd checkpoint file"):
        read_file(newest / "p0.pkl")


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
