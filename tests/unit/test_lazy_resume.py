"""A restart loads no key state: each key comes back from the store when a record of it, or a
delayed label joining to it, comes. On real files through the runner: a run interrupted and
resumed with many more keys in the store than ``learner.max_keys`` predicts exactly as an
uninterrupted one, and holds no key between the assignment and the first record; after a fall
back, the keys the damaged checkpoint wrote are written again though none is loaded."""

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
from tests.unit.store_files import stored
from tests.unit.test_generations import FLAGS, flip
from tests.unit.test_runner_restart import write_stream as write_four_keys

KEYS = [f"k{i}" for i in range(60)]
#: Keys whose features are kept for a delayed label at the end of the first part, and whose
#: own records never come again: only their labels load them after the restart.
KEPT = [f"q{i}" for i in range(8)]
MAX_KEYS = 12


def write_first(path: Path, seed: int = 5) -> None:
    """Labelled records of 60 keys and 8 more, then an unlabelled record (with an id) of each
    of the 8: their features wait in the store for their labels."""
    rng = random.Random(seed)
    with open(path, "a") as fh:
        for i in range(600):
            key = rng.choice(KEYS + KEPT)
            fh.write(_line(rng, f"a{i}", key, labelled=True))
        for key in KEPT:
            fh.write(_line(rng, f"kept-{key}", key, labelled=False))


def write_second(path: Path, seed: int = 6) -> None:
    """Records of the 60 keys with the 8 delayed labels among them: half as a bare label (the
    record takes the kept key), half with features and a key of their own (the learner learns
    with the kept key and features, so the key to load is not the record's)."""
    rng = random.Random(seed)
    lines = [_line(rng, f"b{i}", rng.choice(KEYS), labelled=True) for i in range(300)]
    for n, key in enumerate(KEPT):
        label = {"id": f"kept-{key}", "y": rng.uniform(-3, 3)}
        if n % 2:
            label |= {"key": rng.choice(KEYS), "x": [rng.gauss(0, 1) for _ in range(3)]}
        lines.insert(20 + 35 * n, json.dumps(label) + "\n")
    with open(path, "a") as fh:
        fh.writelines(lines)


def _line(rng: random.Random, rid: str, key: str, labelled: bool) -> str:
    x = [rng.gauss(0, 1) for _ in range(3)]
    record: dict[str, object] = {"id": rid, "key": key, "x": x}
    if labelled:
        record["y"] = (1 + int(key[1:]) % 5) * x[0] - x[1]
    return json.dumps(record) + "\n"


def runner(root: Path, source: Path, max_keys: int, **flags: object) -> Runner:
    config = RunnerConfig(batch_size=16, poll_timeout_s=0.01, checkpoint_every_records=50)
    return file_runner(root, source, config, **{"learner.max_keys": max_keys, **flags})


def watch_assignment(run: Runner) -> list[tuple[int, float | None]]:
    """(keys the learner holds, the active keys gauge) right after each assignment, before
    any record is read."""
    seen: list[tuple[int, float | None]] = []
    assign: Callable = run.on_assigned

    def assigned(partitions):  # type: ignore[no-untyped-def]
        resume = assign(partitions)
        run.metrics.active_keys.set(run.learner.summary().active_keys)
        seen.append((len(run.learner.keys()),
                     run.metrics.registry.get_sample_value("adaptd_active_keys")))
        return resume

    run.on_assigned = assigned  # type: ignore[method-assign]
    return seen


def predictions(root: Path) -> list[str]:
    return (root / "predictions.jsonl").read_text().splitlines()


#: A linear model without shared scaling: its predictions do not depend on which keys are in
#: memory, so a run that never evicts is the reference. The auto model's do (it learns across
#: the keys in memory): its reference evicts as the restarted run does.
LINEAR = {"model": "linear", "learner.standardize": False, "learner.standardize_target": False}


@pytest.mark.parametrize(("first_max_keys", "flags", "straight_max_keys"), [
    (1000, LINEAR, 1000), (MAX_KEYS, LINEAR, 1000), (MAX_KEYS, {}, MAX_KEYS)],
    ids=["all-live-linear", "evicted-linear", "evicted-auto"])
def test_a_resume_loads_keys_as_their_records_come_and_predicts_as_a_straight_run(
        tmp_path: Path, first_max_keys: int, flags: dict[str, object],
        straight_max_keys: int) -> None:
    """With ``first_max_keys`` 1000 every key is live in the checkpoint (68, against 12 that
    may be in memory after the restart); with 12 most of them are evicted there. A key loaded
    wrongly (fresh, or not at all where a label joins to it) predicts otherwise."""
    source = tmp_path / "in.jsonl"
    write_first(source)
    restarted, straight = tmp_path / "restarted", tmp_path / "straight"
    assert runner(restarted, source, first_max_keys, **flags).run().records == 608
    store = CheckpointStore(restarted / "state")
    assert store.key_count() == len(KEYS) + len(KEPT)
    if first_max_keys > len(KEYS):
        assert store.key_count(evicted=False) == len(KEYS) + len(KEPT)
    kept = [e[0] for p in store.load().partitions.values() for e in p.learner["labels"]]
    assert sorted(kept) == sorted(f"kept-{key}" for key in KEPT)
    store.close()

    write_second(source)
    resumed = runner(restarted, source, MAX_KEYS, **flags)
    held = watch_assignment(resumed)
    summary = resumed.run()
    assert summary.records == 308
    assert held == [(0, 0.0)]  # the assignment loaded no key
    assert summary.updates == 308  # every delayed label joined
    assert len(resumed.learner.keys()) <= MAX_KEYS

    assert runner(straight, source, straight_max_keys, **flags).run().records == 916
    ours, theirs = predictions(restarted), predictions(straight)
    assert len(ours) == 916
    assert ours == theirs
    # The kept keys were changed by their labels only: their states after the resumed run are
    # those of the straight run.
    mine, others = CheckpointStore(restarted / "state"), CheckpointStore(straight / "state")
    for key in KEPT:
        assert_same_state(mine.get_many(0, [key])[key], others.get_many(0, [key])[key], key)


def test_keys_rolled_back_and_never_seen_again_are_rewritten_with_the_states_resumed_from(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Checkpoint B writes keys a-d and is damaged; the records after A (where the run resumes
    from) are of "a" only, so b, c and d are never loaded: the next checkpoint writes them
    again all the same, with A's states (a changelog may hold B's)."""
    source, b_source = tmp_path / "in.jsonl", tmp_path / "b.jsonl"
    write_four_keys(source, 400, seed=1)
    root = tmp_path / "damaged"
    config = RunnerConfig(batch_size=16, poll_timeout_s=0.01, checkpoint_every_records=10**9,
                          checkpoint_interval_s=1e9)

    def run(path: Path) -> Runner:
        return file_runner(root, path, config, **FLAGS)

    assert run(source).run().records == 400  # checkpoint A
    a_states = _states(root / "state", "bcd")
    shutil.copy(source, b_source)
    write_four_keys(b_source, 300, seed=2)
    assert run(b_source).run().records == 300  # checkpoint B writes every key
    b_id = stored(root / "state")["b"][2]
    with pytest.raises(AssertionError):
        assert_same_state(_states(root / "state", "bcd"), a_states)
    flip(root / "state" / "state.db", "shared", "value", "name = 'state'")
    with open(source, "a") as fh:  # after A: records of "a" only
        fh.writelines(json.dumps({"key": "a", "x": [i / 10, 1.0, -1.0], "y": 0.5}) + "\n"
                      for i in range(10))

    caplog.clear()
    resumed = run(source)
    held = watch_assignment(resumed)
    assert resumed.run().records == 10
    assert sum("is damaged" in r.getMessage() for r in caplog.records) == 1
    assert held == [(0, 0.0)]
    assert sorted(resumed.learner.keys()) == ["a"]  # b, c and d were never loaded
    after = stored(root / "state")
    assert after["a"][2] > b_id
    assert all(after[k][2] == after["a"][2] for k in "bcd")  # written again, by this run
    assert_same_state(_states(root / "state", "bcd"), a_states)  # with the states resumed from
    # Out of memory, as the store says: a restart (eager or lazy) finds them where they are.
    assert CheckpointStore(root / "state").key_count(evicted=True) == 3


def _states(state_dir: Path, keys: str) -> dict[str, object]:
    """The stored states of ``keys`` (partition 0), read as a restart reads them."""
    store = CheckpointStore(state_dir)
    try:
        return {k: store.get_many(0, [k])[k] for k in keys}
    finally:
        store.close()
