"""Idle keys leave memory for the state dir after a checkpoint and come back when their records
do, with the very state they left with: predictions equal those of a run that never evicts."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from adaptd.checkpoint import CheckpointStore
from adaptd.learner.adaptive import AdaptiveLearner
from adaptd.learner.arena import BASE_FIELDS, Arena, row_state
from adaptd.records import Record
from adaptd.runner import Runner, RunnerConfig
from adaptd.settings import LearnerConfig
from tests.unit.file_runs import file_runner


def write_stream(path: Path, n: int, seed: int = 3) -> None:
    rng = random.Random(seed)
    weights = {k: [rng.uniform(-2, 2) for _ in range(3)] for k in "abcdef"}
    with open(path, "a") as fh:
        for i in range(n):
            key = rng.choice("abcdef")
            x = [rng.gauss(0, 1) for _ in range(3)]
            y = sum(w * v for w, v in zip(weights[key], x, strict=True))
            fh.write(json.dumps({"id": i, "key": key, "x": x, "y": y}) + "\n")


def run(state_dir: Path, source: Path, idle_evict_s: float) -> tuple[Runner, list[dict]]:
    config = RunnerConfig(batch_size=7, poll_timeout_s=0.01, checkpoint_every_records=20)
    runner = file_runner(state_dir, source, config, **{"learner.idle_evict_s": idle_evict_s})
    runner.run()
    out = state_dir / "predictions.jsonl"
    return runner, [json.loads(line) for line in out.read_text().splitlines()]


def test_evicted_keys_come_back_with_their_state(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    write_stream(source, 300)
    (tmp_path / "evicting").mkdir()
    (tmp_path / "keeping").mkdir()
    # Every key is idle by the time a checkpoint ends: all are evicted after each checkpoint.
    evicting, evicted_predictions = run(tmp_path / "evicting", source, idle_evict_s=1e-9)
    keeping, kept_predictions = run(tmp_path / "keeping", source, idle_evict_s=3600.0)

    # Evicted keys live in the state database's segments, flagged, not in a file each.
    store = CheckpointStore(tmp_path / "evicting" / "state")
    assert store.key_count(evicted=True) == 6 and store.key_count() == 6
    assert sorted(p.name for p in (tmp_path / "evicting" / "state").iterdir()) == [
        "meta.pt", "segments", "state.db", "state.db-shm", "state.db-wal"]
    # The segments of the two checkpoints kept, one per checkpoint and partition (and one
    # compaction at most): not a file per key.
    assert 1 <= len(list((tmp_path / "evicting" / "state" / "segments").iterdir())) <= 4
    assert len(evicting.learner.keys()) == 0  # the final checkpoint let every key go
    assert len(keeping.learner.keys()) == 6
    assert evicted_predictions == kept_predictions
    evictions = evicting.metrics.registry.get_sample_value("adaptd_evicted_keys_total")
    assert evictions == evicting.learner.summary().evicted_keys >= 6
    assert keeping.metrics.registry.get_sample_value("adaptd_evicted_keys_total") == 0
    assert evicting.metrics.registry.get_sample_value("adaptd_active_keys") == 0

    # A restart finds the evicted keys on disk, not in the checkpoint, and goes on exactly.
    write_stream(source, 100, seed=4)
    _, resumed = run(tmp_path / "evicting", source, idle_evict_s=1e-9)
    (tmp_path / "straight").mkdir()
    _, straight = run(tmp_path / "straight", source, idle_evict_s=3600.0)
    assert len(resumed) == len(straight) == 400  # the sink file appends across runs
    assert resumed[300:] == straight[300:]


def test_the_least_recently_seen_keys_leave_beyond_max_keys() -> None:
    """Beyond ``max_keys`` the least recently seen live keys leave (a sixteenth of
    ``max_keys`` more than needed), never a slot that a forgotten key freed; a reference
    model of the clock says which."""
    now = [0.0]
    learner = AdaptiveLearner(config=LearnerConfig(max_keys=16), clock=lambda: now[0])
    rng = random.Random(7)
    last_seen: dict[str, float] = {}
    for t in range(60):
        now[0] = float(t)
        keys = [f"n{t}"] + rng.sample(sorted(last_seen), min(2, len(last_seen)))
        before = set(learner.keys())
        learner.process_many([Record(x=(rng.gauss(0, 1), 1.0), y=rng.gauss(0, 1), key=k)
                              for k in keys])
        last_seen.update(dict.fromkeys(keys, float(t)))
        live = before | set(keys)
        if len(live) > 16:  # len - 16 + 1 of the least recently seen (ties: any of them)
            left = live - set(learner.keys())
            assert len(left) == len(live) - 16 + 1, t
            assert max(map(last_seen.__getitem__, left)) <= min(map(last_seen.__getitem__, live - left)), t
        else:
            assert set(learner.keys()) == live, t
        if t % 9 == 4:  # a forgotten key frees a slot in the middle of the arena
            gone = sorted(learner.keys())[len(learner.keys()) // 2]
            learner.forget([gone])
            del last_seen[gone]
        for key in set(last_seen) - set(learner.keys()):
            del last_seen[key]


def test_states_let_go_of_wait_for_a_checkpoint_no_more_than_max_keys(tmp_path: Path) -> None:
    # Every record a new key, no checkpoint due by count or time: before, the states of every
    # key let go of stayed in memory until one was (100,000 records by default), so
    # ``max_keys`` bounded only the live keys (gigabytes with the default model).
    source = tmp_path / "in.jsonl"
    rng = random.Random(5)
    with open(source, "w") as fh:
        for i in range(240):
            x = [rng.gauss(0, 1) for _ in range(3)]
            fh.write(json.dumps({"key": f"k{i}", "x": x, "y": sum(x)}) + "\n")
    config = RunnerConfig(batch_size=7, poll_timeout_s=0.01, checkpoint_every_records=10**9,
                          checkpoint_interval_s=1e9)
    runner = file_runner(tmp_path, source, config, **{"learner.max_keys": 8})
    waiting: list[int] = []
    maybe_checkpoint = runner.maybe_checkpoint

    def spy() -> None:
        waiting.append(runner.learner.evictions_waiting)
        maybe_checkpoint()

    runner.maybe_checkpoint = spy  # type: ignore[method-assign]
    runner.run()
    assert len(waiting) >= 240 // 7 and max(waiting) >= 8  # keys were let go of
    assert max(waiting) <= 8 + 7  # at most max_keys, plus one batch's new keys
    checkpoints = runner.metrics.registry.get_sample_value("adaptd_checkpoints_total")
    assert checkpoints is not None and checkpoints >= 240 // (8 + 7)
    store = CheckpointStore(tmp_path / "state")
    assert store.key_count() == 240  # every key's state written, none lost


def test_a_slot_another_key_left_starts_a_key_as_a_fresh_one_does() -> None:
    """A new key in a slot a busy key left (segments closed, rings wrapped, every field
    written) gets the very rows a new key gets in a slot never used: the admission resets only
    the fields the task's start does not set, so this holds the two lists together."""
    learner = AdaptiveLearner(config=LearnerConfig(max_keys=64))
    rng = random.Random(11)
    for t in range(600):  # the label's sign flips every 150 records: drift, closed segments
        x = (rng.gauss(0, 1), rng.gauss(0, 1))
        sign = 1.0 if (t // 150) % 2 == 0 else -1.0
        learner.process_many([Record(x=x, y=sign * (x[0] - x[1]) + rng.gauss(0, 0.1),
                                     key="busy")])
    old = learner._slot_of["busy"]
    arena = learner.arena
    assert arena.seg[old] > 0 and arena.hcount[old] > 0 and arena.WM[old].all()
    learner.forget(["busy"])
    reused, fresh = learner._admit_many(["reused", "fresh"]).tolist()
    assert reused == old and fresh != old
    for offset, names in ((0, Arena._fields), (1, BASE_FIELDS)):
        got, want = row_state(arena, reused + offset, names), row_state(arena, fresh + offset, names)
        for name in names:
            assert np.array_equal(got[name], want[name]), (offset, name)



def test_a_state_set_in_a_slot_a_busier_key_left_is_that_state_exactly() -> None:
    """Setting a key's state writes only the hindsight rows it fills and those the slot's last
    key filled (so a never-used slot's pages stay untouched): a state of few rows set where a
    key with a wrapped buffer was reads back as it was given, and as in a never-used slot."""
    from adaptd.learner.arena import set_row_state

    learner = AdaptiveLearner(config=LearnerConfig(max_keys=64))
    rng = random.Random(5)
    for t in range(600):  # drift: segments close, the busy key's buffer wraps
        x = (rng.gauss(0, 1), rng.gauss(0, 1))
        sign = 1.0 if (t // 150) % 2 == 0 else -1.0
        learner.process_many([Record(x=x, y=sign * (x[0] - x[1]), key="busy")])
    for _ in range(3):
        learner.process_many([Record(x=(rng.gauss(0, 1), 1.0), y=1.0, key="few")])
    arena = learner.arena
    busy, few = learner._slot_of["busy"], learner._slot_of["few"]
    assert arena.seg[busy] > 0 and arena.seg[few] == 0 and 0 < arena.hcount[few] < 10
    state = row_state(arena, few)
    spare = learner._admit_many(["spare"])[0]  # a slot never used
    for s in (busy, spare):
        set_row_state(arena, s, state)
        got = row_state(arena, s)
        for name in Arena._fields:
            assert np.array_equal(got[name], state[name]), (s, name)


def test_new_keys_run_on_while_a_checkpoint_is_written_and_known_ones_wait_for_it(
        tmp_path: Path) -> None:
    # A batch of keys never seen needs nothing of the store: it is routed while the checkpoint
    # in flight is still being written. A key that checkpoint lets go of is read back from the
    # store only once that write is over, with the state it wrote.
    import threading

    from adaptd.config import load_settings
    from adaptd.connectors.base import SourceRecord
    from adaptd.learner import build_learner
    from adaptd.partitions import Partitions
    from adaptd.records import RecordBatch, RecordDecoder

    learner = build_learner(load_settings(environ={}, flags={"learner.max_keys": 4}))
    parts = Partitions(CheckpointStore(tmp_path / "state"), learner, RecordDecoder())
    parts.assign([0])
    rng = np.random.default_rng(0)

    def feed(keys: list[str], at: int) -> None:
        batch = RecordBatch(keys, rng.normal(size=(len(keys), 3)), rng.normal(size=len(keys)),
                            [None] * len(keys), [None] * len(keys))
        parts.route(batch, [0] * len(keys))
        learner.process_batch(batch)
        parts.advance([SourceRecord(0, at + i, b"") for i in range(len(keys))])

    feed(["a", "b", "c", "d"], 0)
    feed(["e", "f", "g", "h"], 4)  # a, b, c, d leave memory, changed: the checkpoint writes them
    gate, write = threading.Event(), parts._behind._write
    parts._behind._write = lambda snapshot: (gate.wait(10), write(snapshot))  # type: ignore
    parts.save_behind()
    feed(["i", "j"], 8)
    assert parts._behind.busy and not gate.is_set()  # routed while the write waits
    threading.Timer(0.2, gate.set).start()
    before = parts.store.key_count()
    feed(["a"], 10)  # waits for the write, then reads "a" back
    assert gate.is_set() and not parts._behind.busy and before == 0
    assert parts.saved() is not None
    assert "a" in list(learner.keys()) and parts.store.key_count() >= 4



@pytest.mark.parametrize("fails", [False, True], ids=["write lands", "write fails"])
def test_keys_let_go_of_while_a_checkpoint_is_written_leave_with_the_value_it_packed(
        tmp_path: Path, fails: bool) -> None:
    # Keys the checkpoint in flight packed and that did not change since are not packed again
    # when the LRU lets them go meanwhile: they leave with that very value. Whether that write
    # lands or fails, they come back with the state they left with (equal to a learner that
    # never let them go), and a failed write's keys are written by the next checkpoint.
    import threading

    from adaptd.config import load_settings
    from adaptd.connectors.base import SourceRecord
    from adaptd.learner import build_learner
    from adaptd.partitions import Partitions
    from adaptd.records import RecordBatch, RecordDecoder
    from adaptd.state_codec import unpack_state

    learners = [build_learner(load_settings(environ={}, flags={
        "model": "linear", "task": "regression", "learner.max_keys": n})) for n in (4, 100)]
    parts = Partitions(CheckpointStore(tmp_path / "state"), learners[0], RecordDecoder())
    parts.assign([0])
    rng = np.random.default_rng(1)

    def feed(keys: list[str], at: int) -> list[np.ndarray]:
        batch = RecordBatch(keys, rng.normal(size=(len(keys), 3)), rng.normal(size=len(keys)),
                            [None] * len(keys), [None] * len(keys))
        parts.route(batch, [0] * len(keys))
        outs = [np.asarray(lrn.process_batch(batch).y_pred) for lrn in learners]
        parts.advance([SourceRecord(0, at + i, b"") for i in range(len(keys))])
        return outs

    feed(["a", "b", "c", "d"], 0)
    gate, write = threading.Event(), parts._behind._write

    def held_write(snapshot: object) -> None:
        gate.wait(10)
        if fails:
            raise OSError("disk full")
        write(snapshot)  # type: ignore[arg-type]

    parts._behind._write = held_write  # type: ignore[method-assign]
    parts.save_behind()  # packs a, b, c, d; written once the gate opens
    packed = dict(parts._behind._snapshot.changes[0].states)  # type: ignore[union-attr]
    feed(["e", "f", "g", "h"], 4)  # a, b, c, d leave memory meanwhile
    assert parts._behind.busy and set(packed) == {"a", "b", "c", "d"}
    cold = learners[0]._cold  # type: ignore[attr-defined]
    assert all(cold[k] is value for k, value in packed.items())  # not packed again
    gate.set()
    if fails:
        with pytest.raises(OSError):
            parts.saved()
    else:
        assert parts.saved() is not None
    parts._behind._write = write  # type: ignore[method-assign]
    parts.save()
    stored = parts.store.get_many(0, ["a", "b", "c", "d"])
    assert set(stored) == set(packed)  # written by this checkpoint if not by the one before
    for key, value in packed.items():
        np.testing.assert_equal(dict(unpack_state(stored[key])), dict(unpack_state(value)))
    evicted, never = feed(["a", "b", "c", "d"], 8)
    np.testing.assert_array_equal(evicted, never)
