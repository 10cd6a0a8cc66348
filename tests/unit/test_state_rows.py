"""A key's state as a head and chunks of its hindsight buffer (adaptd.state_rows): a checkpoint
rewrites only the chunks a key appended to, reads give back the exact state, a damaged chunk
falls back to the previous generation as a whole; keys evicted unchanged since a checkpoint
leave memory without a copy and come back from the store exactly."""

from __future__ import annotations

import copy
import itertools
import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adaptd.checkpoint import CheckpointError, CheckpointStore, PartitionChanges
from adaptd.learner.adaptive import AdaptiveLearner
from adaptd.partitions import partition_part
from adaptd.records import RecordBatch
from adaptd.runner import RunnerConfig
from adaptd.settings import LearnerConfig
from adaptd.state_codec import SplitState, spec_apart, unpack_state
from adaptd.state_rows import SplitHead
from adaptd.state_values import decode, encode
from tests.unit.file_runs import file_runner
from tests.unit.store_files import segments
from tests.unit.test_eviction import write_stream
from tests.unit.test_state_codec import _equal

D = 10  # 96 bytes a buffer row: 21 rows a chunk, 10 chunks of a 200-row buffer


def feed(learner: AdaptiveLearner, keys: list[str], seed: int) -> None:
    rng = np.random.default_rng(seed)
    for lo in range(0, len(keys), 256):
        part = keys[lo:lo + 256]
        X = rng.normal(size=(len(part), D))
        y = (X[:, 0] + rng.normal(size=len(part)) > 0).astype(float)
        learner.process_batch(RecordBatch(keys=part, X=X, y=y, ids=[None] * len(part),
                                          tasks=[None] * len(part)))


def logistic(**config: Any) -> AdaptiveLearner:
    return AdaptiveLearner(model="logistic", task="classification",
                           config=LearnerConfig(**config), clock=itertools.count().__next__)


def save(store: CheckpointStore, learner: AdaptiveLearner, keys: list[str],
         checkpoint: int) -> None:
    part = partition_part(learner, keys)
    store.save({}, {0: PartitionChanges(position=checkpoint, states=part["keys"])},
               checkpoint=checkpoint)


def state_of(learner: AdaptiveLearner, key: str) -> dict[str, Any]:
    state = learner.state_dict([key])["keys"][key]
    state.pop("last_seen")
    return state


def stored(store: CheckpointStore, key: str) -> dict[str, Any]:
    state = unpack_state(store.get(0, key))
    state.pop("last_seen")
    return state


def chunk_rows(path: Path, checkpoint: int) -> list[tuple[str, int]]:
    with sqlite3.connect(path / "state.db") as db:
        return db.execute("SELECT key, chunk FROM chunks WHERE checkpoint = ?"
                          " ORDER BY key, chunk", (checkpoint,)).fetchall()


def test_a_checkpoint_rewrites_only_the_chunks_a_key_appended_to(tmp_path: Path) -> None:
    learner = logistic()
    keys = [f"k{i}" for i in range(20)]
    feed(learner, [k for _ in range(250) for k in keys], seed=0)  # every buffer full
    store = CheckpointStore(tmp_path)
    save(store, learner, keys, 1)
    assert len(chunk_rows(tmp_path, 1)) == 20 * 10
    feed(learner, ["k0"] * 30, seed=1)  # 30 rows appended: 2 or 3 chunks of 21 rows
    packed = partition_part(learner, ["k0"])["keys"]["k0"]
    assert isinstance(packed, SplitState) and len(packed.chunks) == 10
    save(store, learner, keys, 2)  # all keys handed over, k0 alone changed
    written = chunk_rows(tmp_path, 2)
    assert {k for k, _ in written} == {"k0"} and 2 <= len(written) <= 3
    with sqlite3.connect(tmp_path / "state.db") as db:
        heads = db.execute("SELECT count(*) FROM keys WHERE checkpoint = 2").fetchone()[0]
    assert heads == 20  # a head is always written: it is small
    for key in ("k0", "k1"):  # read back exactly, by a store that remembers nothing
        _equal(state_of(learner, key), stored(CheckpointStore(tmp_path), key), key)


def test_a_damaged_chunk_falls_back_whole_and_the_store_forgets_what_it_wrote(
        tmp_path: Path) -> None:
    """A chunk of the last checkpoint damaged: the load is the checkpoint before, every key
    as it was; the same store then writes the next checkpoint's chunks from what the rollback
    left, not from what it remembered writing before."""
    learner = logistic()
    keys = [f"k{i}" for i in range(5)]
    feed(learner, [k for _ in range(120) for k in keys], seed=0)
    store = CheckpointStore(tmp_path)
    save(store, learner, keys, 1)
    before = {k: state_of(learner, k) for k in keys}
    shared = copy.deepcopy(learner.state_dict(keys=()))  # meta-state, statistics
    feed(learner, ["k0"] * 40, seed=1)
    save(store, learner, ["k0"], 2)
    after = state_of(learner, "k0")
    (key, chunk), *_ = chunk_rows(tmp_path, 2)
    with sqlite3.connect(tmp_path / "state.db") as db:
        (value,) = db.execute("SELECT value FROM chunks WHERE key = ? AND chunk = ?",
                              (key, chunk)).fetchone()
        flipped = bytearray(value)
        flipped[-1] ^= 0xFF
        db.execute("UPDATE chunks SET value = ? WHERE key = ? AND chunk = ?",
                   (bytes(flipped), key, chunk))

    restored = store.load()
    assert restored.fell_back_from == 2
    for k in keys:
        got = unpack_state(restored.partitions[0].learner["keys"][k])
        got.pop("last_seen")
        _equal(before[k], got, k)
    # The same 40 records again give the state checkpoint 2 held; its chunks must be
    # written again, although this store wrote those very bytes before the rollback.
    again = logistic()
    again.load_state_dict({**shared, "keys": {
        k: unpack_state(restored.partitions[0].learner["keys"][k]) for k in keys}})
    feed(again, ["k0"] * 40, seed=1)
    _equal(after, state_of(again, "k0"))
    save(store, again, ["k0"], 3)
    _equal(after, stored(CheckpointStore(tmp_path), "k0"))


def test_keys_unchanged_since_a_checkpoint_leave_without_a_copy() -> None:
    learner = logistic(max_keys=6)
    feed(learner, [f"k{i}" for i in range(6)] * 3, seed=0)
    learner.mark_saved()
    feed(learner, ["k0", "k1"], seed=1)  # changed since the checkpoint
    left = {k: state_of(learner, k) for k in ("k0", "k1")}
    feed(learner, [f"n{i}" for i in range(6)], seed=2)  # six new keys: six leave
    assert set(learner.take_dropped()) == {"k2", "k3", "k4", "k5"}
    evicted = learner.take_evicted()
    assert set(evicted) == {"k0", "k1"}
    for k, state in evicted.items():
        got = unpack_state(state)
        got.pop("last_seen")
        _equal(left[k], got, k)


@pytest.mark.parametrize("old_records", [5, 30])  # rings cleared together, or one by one
def test_a_fresh_key_in_a_slot_another_key_left_starts_clean(old_records: int) -> None:
    learner = logistic(max_keys=4)
    feed(learner, [f"old{i}" for i in range(4)] * old_records, seed=0)
    feed(learner, [f"new{i}" for i in range(4)], seed=1)  # in the slots the old keys left
    fresh = logistic()
    feed(fresh, ["new0"], seed=1)
    mine, theirs = state_of(learner, "new0"), state_of(fresh, "new0")
    for name in ("hcount", "hpos", "WM", "seg", "seg_len", "ref_loss", "recov"):
        np.testing.assert_array_equal(mine[name], theirs[name], err_msg=name)
    assert int(mine["hcount"]) == 1  # its one record, none of the old key's
    for name in ("HX", "HY", "HL"):
        assert not mine[name][1:].any(), name


def test_keys_evicted_by_max_keys_come_back_exactly(tmp_path: Path) -> None:
    """Through the runner, with checkpoints between: the keys let go of when more than
    max_keys are live (unchanged since a checkpoint, or not) are read back from the store."""
    source = tmp_path / "in.jsonl"
    write_stream(source, 600)
    config = RunnerConfig(batch_size=5, poll_timeout_s=0.01, checkpoint_every_records=15)
    assert_same_predictions_evicting(tmp_path, source, config, max_keys=2, evictions=50)


def assert_same_predictions_evicting(tmp_path: Path, source: Path, config: RunnerConfig,
                                     max_keys: int, evictions: int) -> None:
    """A run with ``max_keys`` evicts more than ``evictions`` keys and predicts exactly as
    one that keeps every key."""
    outputs = []
    for name, limit in (("few", max_keys), ("all", 10_000)):
        root = tmp_path / name
        runner = file_runner(root, source, config, model="linear",
                             **{"learner.max_keys": limit})
        runner.run()
        outputs.append([json.loads(line) for line in
                        (root / "predictions.jsonl").read_text().splitlines()])
        if limit == max_keys:
            assert runner.learner.summary().evicted_keys > evictions
    assert outputs[0] == outputs[1]


def test_a_key_with_few_records_is_one_row_naming_its_spec(tmp_path: Path) -> None:
    """Keys whose hindsight buffer fits one chunk (here: 1 and 20 records) are one packed
    value each, with no chunk rows; keys beyond it (30 records) are split. Every value names
    the model's spec, stored once; a store that remembers nothing reads them back exactly."""
    learner = logistic()
    few, some, many = ["f0", "f1"], ["s0"], ["m0"]
    feed(learner, few + some * 20 + many * 30, seed=0)
    keys = few + some + many
    packed = partition_part(learner, keys)["keys"]
    assert [isinstance(packed[k], SplitState) for k in keys] == [False, False, False, True]
    store = CheckpointStore(tmp_path)
    save(store, learner, keys, 1)
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert {k for (k,) in db.execute("SELECT DISTINCT key FROM chunks")} == {"m0"}
        assert {k for (k,) in db.execute("SELECT key FROM keys")} == {"m0"}  # split: rows
        specs = db.execute("SELECT count(*) FROM shared WHERE name LIKE 'spec:%'").fetchone()[0]
    assert 1 <= specs <= 2  # the split key's head and chunks: one spec each
    # The others are one segment, which holds their spec (about 800 bytes) once.
    (segment,) = segments(tmp_path)
    assert segment["keys"] == [k for k in packed if k != "m0"]
    data = (tmp_path / "segments" / f"{segment['id']}.seg").read_bytes()
    spec, _, _ = spec_apart(bytes(packed["f0"]))
    assert len(spec) > 500 and data.count(spec) == 1
    for key in keys:
        _equal(state_of(learner, key), stored(CheckpointStore(tmp_path), key), key)


def test_many_keys_leave_a_sixteenth_of_max_keys_at_a_time_and_come_back_exactly(
        tmp_path: Path) -> None:
    """Beyond max_keys 32, two more keys than needed leave at a time (the LRU scan runs every
    few batches); through the runner, with checkpoints between, the predictions are those of
    a run that keeps every key."""
    source = tmp_path / "in.jsonl"
    rng = np.random.default_rng(5)
    with open(source, "w") as fh:
        for i in range(1500):
            x = rng.normal(size=3).round(4).tolist()
            fh.write(json.dumps({"id": i, "key": f"k{rng.integers(80)}", "x": x,
                                 "y": float(x[0] - x[1])}) + "\n")
    learner = logistic(max_keys=32)
    feed(learner, [f"k{i}" for i in range(33)], seed=0)
    assert len(learner.keys()) == 32 - 2
    config = RunnerConfig(batch_size=9, poll_timeout_s=0.01, checkpoint_every_records=40)
    assert_same_predictions_evicting(tmp_path, source, config, max_keys=32, evictions=300)


def test_a_value_naming_a_spec_the_store_lacks_is_named(tmp_path: Path) -> None:
    learner = logistic()
    feed(learner, ["a"] * 30, seed=0)  # split: rows naming specs the store keeps in ``shared``
    store = CheckpointStore(tmp_path)
    save(store, learner, ["a"], 1)
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("DELETE FROM shared WHERE name LIKE 'spec:%'")
    with pytest.raises(CheckpointError, match="key 'a' names spec [0-9a-f]{32}, which the"):
        CheckpointStore(tmp_path).get(0, "a")


def test_growing_the_arena_keeps_every_ring_row_a_key_filled() -> None:
    """The arena grows (64 → 128 → … keys) while keys fill their hindsight buffers a little,
    to the brim, or past a first segment: every key's state is the one a learner that never
    grew holds (rings copied only as far as each key filled them)."""
    small = logistic()
    large = AdaptiveLearner(model="logistic", task="classification", n_features=D,
                            clock=itertools.count().__next__)
    large._grow(1024, large.arena)  # room for every key from the start
    rng = np.random.default_rng(3)
    keys = [f"k{i}" for i in range(300)]
    stream = [k for k in keys for _ in range(int(rng.choice([1, 3, 17, 40, 250])))]
    stream = [stream[i] for i in rng.permutation(len(stream))]
    for learner in (small, large):
        feed(learner, stream, seed=4)
    assert small._capacity < large._capacity == 1024  # small grew 64 → 128 → 256 → 512
    for key in keys:
        _equal(state_of(large, key), state_of(small, key), key)


def test_a_refused_checkpoint_keeps_the_keys_that_were_to_leave_and_the_next_writes_them(
        tmp_path: Path) -> None:
    """Keys let go of (max_keys 2) are written, flagged, by the next checkpoint; when the disk
    refuses one (four times here), they are live again, nothing is lost: the run predicts
    as one that keeps every key, and its store gives back each key's final state, bit for
    bit, evicted or not."""
    source = tmp_path / "in.jsonl"
    write_stream(source, 400)
    config = RunnerConfig(batch_size=5, poll_timeout_s=0.01, checkpoint_every_records=15)
    outputs, stores = [], []
    for name, limit in (("few", 2), ("all", 10_000)):
        runner = file_runner(tmp_path / name, source, config, model="linear",
                             **{"learner.max_keys": limit})
        store = runner.partitions.store
        save, calls = store.save, itertools.count()

        def refusing(*args: Any, save: Any = save, calls: Any = calls, **kw: Any) -> int:
            if next(calls) in (2, 5, 8, 11):
                raise OSError("disk refused (test)")
            return save(*args, **kw)

        store.save = refusing  # type: ignore[method-assign]
        runner.run()
        outputs.append((tmp_path / name / "predictions.jsonl").read_text())
        stores.append(CheckpointStore(tmp_path / name / "state"))
        if limit == 2:
            assert runner.learner.summary().evicted_keys > 50
            assert stores[-1].key_count(evicted=True) >= 4
    assert outputs[0] == outputs[1]
    for key in "abcdef":
        few, every = (unpack_state(s.get(0, key)) for s in stores)
        few.pop("last_seen")
        every.pop("last_seen")
        _equal(every, few, key)


def test_a_split_key_s_head_is_raw_bytes_and_a_pickled_one_still_reads(tmp_path: Path) -> None:
    """The ``keys`` row of a split key holds its head as raw bytes behind a magic (no
    pickle); a row an older adaptd wrote, with the head pickled, reads back the same."""
    learner = logistic()
    feed(learner, ["a"] * 60, seed=0)
    store = CheckpointStore(tmp_path)
    save(store, learner, ["a"], 1)
    with sqlite3.connect(tmp_path / "state.db") as db:
        (value,) = db.execute("SELECT value FROM keys WHERE key = 'a'").fetchone()
        head = decode(value, "a")
        assert type(head) is bytes and head.startswith(b"ADKH")
        old = SplitHead.from_bytes(head)
        assert old is not None and old.chunks == 10
        db.execute("UPDATE keys SET value = ? WHERE key = 'a'", (encode(old),))  # pickled
    _equal(state_of(learner, "a"), stored(CheckpointStore(tmp_path), "a"), "a")
