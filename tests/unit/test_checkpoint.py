"""The state database on real files: one transaction per checkpoint, incremental key writes,
evicted keys noted in a table of their own, damaged values refused with a message naming them."""

from __future__ import annotations

import hashlib
import pickle
import sqlite3
import struct
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
from tests.unit.store_files import flip, segments


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
    flip(tmp_path, "a")
    with pytest.raises(CheckpointError,
                       match=r"state\.db: partition 2 key segment \d+ is corrupt"):
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


def damage(path: Path, key: str, column: str = "value") -> None:
    """Flip one byte in the middle of the segment holding ``key``'s latest state (``column``
    "labels": its labels; "prev_value": the segment holding the one before), as a bad disk
    would."""
    if column == "prev_value":
        flip(path, key, "value", generation=-2)
    else:
        flip(path, key, column)


def three_generations(path: Path) -> tuple[CheckpointStore, list[int]]:
    """Checkpoints 1, 2, 3 of a store. The last one changes key a, creates key n and partition
    2, rewrites the shared and local states and the labels of b, and writes key e, which is
    then evicted; key c is left as checkpoint 1 wrote it."""
    store = CheckpointStore(path)
    ids = [
        store.save({"n": 1}, {0: changes(10, a=1, b=1, c=1, e=1)}, checkpoint=1, local={"l": 1}),
        store.save({"n": 2}, {0: PartitionChanges(20, {"a": 2, "b": 2},
                                                  {"b": [("r2", 1.0, "b", (2.0,))]})},
                   checkpoint=2, local={"l": 2}),
        store.save({"n": 3}, {0: PartitionChanges(30, {"a": 3, "b": 3, "n": 3, "e": 3},
                                                  {"b": [("r3", 1.0, "b", (3.0,))]}),
                              2: changes(5, z=3)}, checkpoint=3, local={"l": 3}),
    ]
    store.mark_evicted(0, ["e"])
    store.close()
    return store, ids


def as_loaded(restored) -> dict:
    return {"shared": restored.shared, "local": restored.local, "checkpoint": restored.checkpoint,
            "partitions": {p: (s.position, s.checkpoint, s.learner)
                           for p, s in restored.partitions.items()}}


# What checkpoint 2 left, whole: key e was live then, keys n and z and partition 2 did not exist.
CHECKPOINT_2 = {"shared": {"n": 2}, "local": {"l": 2}, "checkpoint": 2, "partitions": {0: (
    20, 2, {"keys": {"a": 2, "b": 2, "c": 1, "e": 1}, "labels": [("r2", 1.0, "b", (2.0,))]})}}


@pytest.mark.parametrize("where", [("a", "value"), ("b", "labels"), ("e", "value"),
                                   ("z", "value"), ("n", "value")])
def test_a_damaged_value_of_the_last_checkpoint_loads_the_one_before_whole(
        tmp_path: Path, where: tuple[str, str], caplog: pytest.LogCaptureFixture) -> None:
    """Whatever value of checkpoint 3 is damaged (a changed key, a key's labels, a key evicted
    since, a key of a partition checkpoint 3 created), the load is checkpoint 2 exactly."""
    three_generations(tmp_path)
    damage(tmp_path, *where)
    restored = CheckpointStore(tmp_path).load()
    assert as_loaded(restored) == CHECKPOINT_2 and restored.fell_back_from == 3
    fallbacks = [r for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(fallbacks) == 1
    assert fallbacks[0].getMessage().startswith(
        f"state dir {tmp_path}: checkpoint 3 is damaged ({tmp_path / 'state.db'}: partition ")
    assert "resuming from the one before it, checkpoint 2, as a whole" in fallbacks[0].getMessage()
    # The store was rolled back: checkpoint 2 is now the last one, read again without a word.
    caplog.clear()
    store = CheckpointStore(tmp_path)
    assert as_loaded(store.load()) == CHECKPOINT_2 and not caplog.records
    assert store.get(0, "e") == 1 and store.get(0, "n") is None and store.get(2, "z") is None
    # The next checkpoint builds on checkpoint 2: a later fallback returns to what it wrote.
    store.save({"n": 4}, {0: changes(40, a=4)}, checkpoint=4, local={"l": 4})
    store.save({"n": 5}, {0: changes(50, c=5)}, checkpoint=5, local={"l": 5})
    damage(tmp_path, "c")
    again = CheckpointStore(tmp_path).load()
    assert again.shared == {"n": 4} and again.partitions[0].position == 40
    assert again.partitions[0].learner["keys"] == {"a": 4, "b": 2, "c": 1, "e": 1}


def test_the_shared_state_damaged_falls_back_too(tmp_path: Path) -> None:
    three_generations(tmp_path)
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("UPDATE shared SET value = substr(value, 1, 30) WHERE name = 'state'")
    assert as_loaded(CheckpointStore(tmp_path).load()) == CHECKPOINT_2


@pytest.mark.parametrize("second", [("a", "prev_value"), ("c", "prev_value")])
def test_no_whole_checkpoint_left_is_refused_and_the_store_left_as_it_was(
        tmp_path: Path, second: tuple[str, str]) -> None:
    """Checkpoint 3 damaged, and checkpoint 2 too: in a value only it holds (a's previous
    one) or in one both share (c, unchanged since checkpoint 1, whose copy checkpoint 3's
    compaction made is damaged too)."""
    three_generations(tmp_path)
    damage(tmp_path, "b")
    damage(tmp_path, *second)
    with sqlite3.connect(tmp_path / "state.db") as db:
        before = db.execute("SELECT * FROM segments ORDER BY id").fetchall()
    with pytest.raises(CheckpointError, match=(
            r"state\.db has no whole checkpoint left: in checkpoint 3, .*partition 0 key "
            r"segment \d+ is corrupt: checksum mismatch; in the one before it, 2, .*partition 0 "
            r"key segment \d+ is corrupt: checksum mismatch; pass --fresh")):
        CheckpointStore(tmp_path).load()
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("SELECT * FROM segments ORDER BY id").fetchall() == before


def test_a_first_checkpoint_damaged_has_nothing_to_fall_back_to(tmp_path: Path) -> None:
    CheckpointStore(tmp_path).save({}, {0: changes(10, a=1)}, checkpoint=1)
    damage(tmp_path, "a")
    with pytest.raises(CheckpointError, match=(
            r"has no whole checkpoint: .*partition 0 key segment \d+ is corrupt: checksum "
            r"mismatch, and "
            r"no older checkpoint is kept to fall back to; pass --fresh")):
        CheckpointStore(tmp_path).load()


def test_a_checkpoint_writes_one_segment_per_partition_of_the_keys_it_changes(
        tmp_path: Path) -> None:
    """Each checkpoint appends one segment per partition it writes, holding exactly the keys
    that changed; the segments of earlier checkpoints are not rewritten, and one none of whose
    keys is current any more is dropped once two newer checkpoints exist."""
    three_generations(tmp_path)
    written = [(s["checkpoint"], s["partition"], s["keys"], s["marks"], s["dead_since"])
               for s in segments(tmp_path)]
    # Checkpoint 3 left one key of checkpoint 1's segment current (c): copied (compacted).
    assert written == [(1, 0, ["a", "b", "c", "e"], [], 3), (2, 0, ["a", "b"], [], 3),
                       (3, 0, ["a", "b", "n", "e"], [], None), (3, 2, ["z"], [], None),
                       (3, 0, ["c"], [], None), (3, 0, [], ["e"], None)]
    store = CheckpointStore(tmp_path)
    for n in (4, 5, 6):
        store.save({"n": n}, {0: changes(10 * n, a=n, b=n)}, checkpoint=n)
        if n == 5:  # checkpoint 4's segment died at 5: kept for a fallback to 4
            assert [(s["checkpoint"], s["dead_since"]) for s in segments(tmp_path)] == [
                (3, None), (3, None), (3, None), (3, None), (4, 5), (5, None)]
    assert [s["checkpoint"] for s in segments(tmp_path)] == [3, 3, 3, 3, 5, 6]
    assert CheckpointStore(tmp_path).load().partitions[0].learner["keys"] == {
        "a": 6, "b": 6, "c": 1, "n": 3}


def test_a_mostly_stale_segment_is_compacted_into_the_checkpoint_that_finds_it(
        tmp_path: Path) -> None:
    """Once fewer than half the keys of a segment are current there, its current keys are
    copied into a segment of the checkpoint being written; a fallback from that checkpoint
    restores the segment as it was."""
    store = CheckpointStore(tmp_path)
    store.save({"n": 1}, {0: changes(1, a=1, b=1, c=1, d=1, e=1)}, checkpoint=1)
    store.save({"n": 2}, {0: changes(2, a=2, b=2, c=2)}, checkpoint=2)
    assert [(s["checkpoint"], s["keys"], s["dead_since"]) for s in segments(tmp_path)] == [
        (1, ["a", "b", "c", "d", "e"], 2), (2, ["a", "b", "c"], None),
        (2, ["d", "e"], None)]
    assert CheckpointStore(tmp_path).load().partitions[0].learner["keys"] == {
        "a": 2, "b": 2, "c": 2, "d": 1, "e": 1}
    store.save({"n": 3}, {0: changes(3, a=3)}, checkpoint=3)
    assert [s["checkpoint"] for s in segments(tmp_path)] == [2, 2, 3]  # 1 dead since 2
    flip(tmp_path, "a")  # checkpoint 3 damaged: back to 2, its compacted segment whole
    assert CheckpointStore(tmp_path).load().partitions[0].learner["keys"] == {
        "a": 2, "b": 2, "c": 2, "d": 1, "e": 1}


def test_an_eviction_is_a_mark_undone_with_the_checkpoint_that_rewrote_the_key(
        tmp_path: Path) -> None:
    """Evicting a key unchanged writes its name as a mark, never its value; a key written
    again after it is live; a fallback from the checkpoint that rewrote it brings it back
    live (the keys that checkpoint wrote are rewritten at the next one)."""
    store = CheckpointStore(tmp_path)
    store.save({}, {0: changes(1, a=1, b=2)})
    store.mark_evicted(0, ["a", "b"])
    assert [(s["keys"], s["marks"]) for s in segments(tmp_path)] == [
        (["a", "b"], []), ([], ["a", "b"])]
    assert store.key_count(evicted=True) == 2
    store.save({}, {0: changes(2, a=5)})  # a came back and changed
    assert store.load([0]).partitions[0].learner["keys"] == {"a": 5}
    assert store.key_count(evicted=True) == 1
    flip(tmp_path, "a")  # damage what checkpoint 2 wrote
    restored = CheckpointStore(tmp_path).load([0])
    assert restored.fell_back_from is not None
    assert restored.partitions[0].learner["keys"] == {"a": 1}  # live again, b still out
    assert store.get(0, "b") == 2


def test_a_format_4_value_is_still_read_and_its_damage_found() -> None:
    """Values written before CRC-32 (format 4, BLAKE2b-128) are read as they are: a store
    written by an older adaptd loads, and a flipped bit in one of its values is named."""
    payload = pickle.dumps({"x": 1}, protocol=pickle.HIGHEST_PROTOCOL)
    old = struct.pack("<8sHHQ16s", b"ADAPTDCK", 4, 0, len(payload),
                      hashlib.blake2b(payload, digest_size=16).digest()) + payload
    assert decode(old, "here") == {"x": 1}
    assert int.from_bytes(encode({"x": 1})[8:10], "little") == FORMAT_VERSION == 6
    damaged = bytearray(old)
    damaged[-2] ^= 0x04
    with pytest.raises(CheckpointError, match="here is corrupt: checksum mismatch"):
        decode(bytes(damaged), "here")


def test_keys_that_left_memory_are_noted_in_the_checkpoint_s_own_transaction(
        tmp_path: Path) -> None:
    """A key that left memory with a changed state is written flagged evicted; one that left
    unchanged is a mark in the segment: both in the transaction of the checkpoint, which is
    the only one (a crash before it leaves the keys live, with the same states)."""
    store = CheckpointStore(tmp_path)
    store.save({}, {0: changes(1, a=1, b=2, c=3)})
    statements: list[str] = []
    db = store._connect(create=False)
    assert db is not None
    db.set_trace_callback(statements.append)
    store.save({}, {0: PartitionChanges(position=2, states={"a": 10, "c": 30},
                                        evicted={"a", "b"})})
    db.set_trace_callback(None)
    assert sum(s.startswith("BEGIN") for s in statements) == 1
    written = [(s["keys"], s["evicted"], s["marks"]) for s in segments(tmp_path)[1:]]
    # Then b, the one key current in checkpoint 1's segment, is copied out of it (compacted),
    # out of memory as its mark says.
    assert written == [(["a", "c"], [True, False], ["b"]), (["b"], [True], [])]
    restored = CheckpointStore(tmp_path).load([0])
    assert restored.partitions[0].learner["keys"] == {"c": 30}  # a and b stay on disk
    assert (store.get(0, "a"), store.get(0, "b")) == (10, 2)
    assert store.key_count(evicted=True) == 2


def test_a_new_store_has_32_kb_pages_and_one_created_before_keeps_its_own(
        tmp_path: Path) -> None:
    """Large pages keep a busy key's row (value and previous value) off overflow chains; a
    state.db created with 4 kB pages (by an older adaptd) is used as it is, its log copied
    into it at the same 32 MB."""
    new = CheckpointStore(tmp_path / "new")
    new.save({}, {0: changes(1, a=1)})
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    with sqlite3.connect(old_dir / "state.db") as db:
        db.execute("PRAGMA page_size=4096")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE placeholder (x)")
    old = CheckpointStore(old_dir)
    old.save({}, {0: changes(1, a=1)})
    for store, page in ((new, 32768), (old, 4096)):
        db = store._connect(create=False)
        assert db is not None
        assert db.execute("PRAGMA page_size").fetchone()[0] == page
        assert db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] * page == 32 << 20
        assert CheckpointStore(store.state_dir).load([0]).partitions[0].learner["keys"] == {
            "a": 1}
