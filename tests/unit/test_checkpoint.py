"""The state database on real files: one transaction per checkpoint, incremental key writes,
evicted keys flagged in place, damaged values refused with a message naming them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from adaptd.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    CheckpointStore,
    PartitionChanges,
    decode,
    encode,
)


def changes(position: int, **states: int) -> PartitionChanges:
    return PartitionChanges(position=position, states=dict(states))


def test_a_checkpoint_adds_to_the_keys_already_stored(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    first = store.save({"learner": "s1"}, {0: changes(10, a=1, b=2), 1: changes(20, c=3)})
    second = store.save({"learner": "s2"}, {0: changes(15, a=5)})
    assert second > first
    restored = CheckpointStore(tmp_path).load()
    assert restored.shared == {"learner": "s2"} and restored.checkpoint == second
    assert {p: s.position for p, s in restored.partitions.items()} == {0: 15, 1: 20}
    assert restored.partitions[0].learner["keys"] == {"a": 5, "b": 2}
    assert restored.partitions[0].checkpoint == second and restored.partitions[1].checkpoint == first
    only_1 = CheckpointStore(tmp_path).load([1])
    assert list(only_1.partitions) == [1] and only_1.partitions[1].keys == ["c"]


def test_evicted_keys_are_not_loaded_but_read_back_one_by_one(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save({}, {0: PartitionChanges(position=3, states={"a": 1, "b": 2},
                                        labels={"b": [("r1", 5.0, "b", (1.0,))]})})
    store.mark_evicted(0, ["b"])
    restored = store.load([0]).partitions[0]
    assert restored.learner["keys"] == {"a": 1}
    # The evicted key's pending label still waits in memory for its label.
    assert restored.learner["labels"] == [("r1", 5.0, "b", (1.0,))]
    assert store.get(0, "b") == 2 and store.get(0, "nope") is None
    assert store.key_count(evicted=True) == 1 and store.key_count() == 2
    store.save({}, {0: changes(4, b=7)})  # the key came back and changed
    assert store.load([0]).partitions[0].learner["keys"] == {"a": 1, "b": 7}


def test_a_failed_write_leaves_the_previous_checkpoint_whole(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save({"learner": "old"}, {0: changes(10, a=1)})

    class Unpicklable:
        def __reduce__(self):
            raise OSError("no space left on device")

    with pytest.raises(OSError):
        store.save({"learner": "new"}, {0: changes(20, a=2, b=Unpicklable())})
    restored = CheckpointStore(tmp_path).load()
    assert restored.shared == {"learner": "old"}
    assert restored.partitions[0].position == 10
    assert restored.partitions[0].learner["keys"] == {"a": 1}


def test_a_damaged_value_names_the_database_partition_and_key(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save({}, {2: changes(10, a=1)})
    with sqlite3.connect(tmp_path / "state.db") as db:
        (blob,) = db.execute("SELECT value FROM keys").fetchone()
        damaged = bytearray(blob)
        damaged[-1] ^= 0x01
        db.execute("UPDATE keys SET value = ?", (bytes(damaged),))
    with pytest.raises(CheckpointError, match=r"state\.db: partition 2 key 'a' is corrupt"):
        CheckpointStore(tmp_path).load([2])


def test_values_are_checked_before_they_are_unpickled() -> None:
    blob = bytearray(encode({"x": 1}))
    blob[8:10] = (FORMAT_VERSION + 1).to_bytes(2, "little")
    with pytest.raises(CheckpointError, match=f"has format {FORMAT_VERSION + 1}, expected"):
        decode(bytes(blob), "here")
    with pytest.raises(CheckpointError, match="is not an adaptd checkpoint value"):
        decode(b"\x80\x05garbage-garbage-garbage-garbage-garbage", "here")


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(CheckpointError, match="state.db is not a usable state database"):
        CheckpointStore(tmp_path).load()


def test_nothing_saved_means_nothing_restored_and_nothing_created(tmp_path: Path) -> None:
    restored = CheckpointStore(tmp_path / "absent").load([0, 1])
    assert restored.partitions == {} and restored.shared is None
    assert not (tmp_path / "absent").exists()


def test_a_reader_in_another_connection_sees_whole_checkpoints(tmp_path: Path) -> None:
    writer, reader = CheckpointStore(tmp_path), CheckpointStore(tmp_path)
    writer.save({"n": 1}, {0: changes(1, a=1)})
    assert reader.load().partitions[0].position == 1
    writer.save({"n": 2}, {0: changes(2, a=2)})
    again = reader.load()
    assert again.shared == {"n": 2} and again.partitions[0].learner["keys"] == {"a": 2}


def test_a_restored_checkpoint_is_not_this_replica_s_own(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.apply_restored(0, changes(7, a=1), checkpoint=5, changelog_offset=3,
                         shared={"learner": "theirs"})
    restored = store.load()
    assert restored.shared == {"learner": "theirs"} and restored.local is None
    # Restored keys wait on disk until their records come.
    assert restored.partitions[0].learner["keys"] == {} and store.get(0, "a") == 1
    assert store.changelog_mark(0) == (3, 5)
    store.save({"learner": "mine"}, {0: changes(8, a=2)}, local={"replica": "r1"})
    again = store.load()
    assert again.shared == {"learner": "mine"} and again.local == {"replica": "r1"}
    assert store.changelog_mark(0) is None  # written without a changelog
    store.drop_partition(0)
    assert store.load().partitions == {} and store.get(0, "a") is None
