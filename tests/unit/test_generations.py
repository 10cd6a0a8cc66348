"""A damaged checkpoint on real files: the daemon resumes from the checkpoint before it as a
whole, exactly as a run resumed from that older checkpoint would; with no whole checkpoint left,
or a state.db SQLite cannot open, it stops with one line and exit 2.

The store's side (which values are checked, what is rolled back): tests/unit/test_checkpoint.py.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from adaptd.checkpoint import CheckpointStore
from adaptd.runner import Runner, RunnerConfig
from tests.integration.kafka_harness import assert_same_state
from tests.unit.file_runs import file_runner
from tests.unit.test_cli_errors import adaptd, one_line_error
from tests.unit.test_runner_restart import write_stream

# One engine, raw targets, no shared scaling statistics: state compared exactly.
FLAGS = {"model": "linear", "learner.standardize": False, "learner.standardize_target": False}


def runner(root: Path, source: Path) -> Runner:
    """A run that checkpoints only when its source ends: one run, one checkpoint."""
    config = RunnerConfig(batch_size=16, poll_timeout_s=0.01, checkpoint_every_records=10**9,
                          checkpoint_interval_s=1e9)
    return file_runner(root, source, config, **FLAGS)


def flip(db_path: Path, table: str, column: str, where: str) -> None:
    """Flip one byte in the middle of a stored value, as a bad disk would."""
    with sqlite3.connect(db_path) as db:
        (blob,) = db.execute(f"SELECT {column} FROM {table} WHERE {where}").fetchone()
        flipped = bytearray(blob)
        flipped[len(flipped) // 2] ^= 0x01
        db.execute(f"UPDATE {table} SET {column} = ? WHERE {where}", (bytes(flipped),))


def test_a_damaged_last_checkpoint_resumes_from_the_one_before_as_a_whole(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "in.jsonl"
    write_stream(source, 400, seed=1)
    damaged, reference = tmp_path / "damaged", tmp_path / "reference"
    assert runner(damaged, source).run().records == 400  # checkpoint A at position 400
    shutil.copytree(damaged, reference)  # what checkpoint A left, for a run resumed from it
    write_stream(source, 300, seed=2)
    assert runner(damaged, source).run().records == 300  # checkpoint B at position 700
    store = damaged / "state" / "state.db"
    with sqlite3.connect(store) as db:
        (latest,) = db.execute("SELECT checkpoint FROM shared WHERE name = 'state'").fetchone()
        (written_by_b,) = db.execute("SELECT checkpoint FROM keys WHERE key = 'b'").fetchone()
    assert written_by_b == latest
    flip(store, "keys", "value", "key = 'b'")
    write_stream(source, 100, seed=3)

    caplog.clear()
    restarted = runner(damaged, source)
    assert restarted.run().records == 400  # from A's position 400, not B's 700
    fallbacks = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(fallbacks) == 1, fallbacks
    assert fallbacks[0].startswith(f"state dir {damaged / 'state'}: checkpoint {latest} ")
    assert "partition 0 key 'b' is corrupt: checksum mismatch" in fallbacks[0]

    resumed = runner(reference, source)
    assert resumed.run().records == 400
    assert_same_state(restarted.learner.state_dict(), resumed.learner.state_dict())
    assert restarted.learner.summary() == resumed.learner.summary()
    ours = (damaged / "predictions.jsonl").read_text().splitlines()
    theirs = (reference / "predictions.jsonl").read_text().splitlines()
    assert len(ours) == 400 + 300 + 400
    assert ours[:400] + ours[700:] == theirs
    # The checkpoint at the end of the restarted run is whole again: a plain load reads it.
    assert CheckpointStore(damaged / "state").load().partitions[0].position == 800


@pytest.fixture(scope="module")
def cli_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir written by `adaptd run` over 500 records: checkpoints at 192 and 384 (the
    first batches of 64 past 150 records since the last) and at the end."""
    root = tmp_path_factory.mktemp("cli")
    write_stream(root / "in.jsonl", 500, seed=1)
    result = adaptd(*run_args(root / "state"), cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root


def run_args(state_dir: Path) -> list[str]:
    return ["run", "--source", "jsonl:in.jsonl", "--state-dir", str(state_dir), "--model",
            "linear", "--metrics-port", "off", "--batch-size", "64",
            "--set", "checkpoint_every_records=150",
            # Exactly every 150 records (no pause scaled to their cost): the test knows where.
            "--set", "checkpoint.max_time_share=1"]


def copy_of(cli_state: Path, name: str) -> Path:
    state_dir = cli_state / name
    shutil.copytree(cli_state / "state", state_dir)
    return state_dir


def test_the_cli_falls_back_once_and_goes_on(cli_state: Path) -> None:
    state_dir = copy_of(cli_state, "fallback")
    flip(state_dir / "state.db", "shared", "value", "name = 'state'")
    with sqlite3.connect(state_dir / "state.db") as db:
        (resume,) = db.execute("SELECT prev_position FROM partitions").fetchone()
    result = adaptd(*run_args(state_dir), cwd=cli_state)
    assert result.returncode == 0, result.stderr[-3000:]
    damaged = [line for line in result.stderr.splitlines() if "is damaged" in line]
    assert len(damaged) == 1 and f"state dir {state_dir}: checkpoint " in damaged[0]
    assert "the state state is corrupt: checksum mismatch" in damaged[0]
    # Resumed where the checkpoint before the last one was.
    assert resume == 384
    assert f"adaptd run: done: {500 - resume} records" in result.stderr


def test_the_cli_stops_with_one_line_when_no_whole_checkpoint_is_left(cli_state: Path) -> None:
    state_dir = copy_of(cli_state, "both")
    for column in ("value", "prev_value"):
        flip(state_dir / "state.db", "keys", column, "key = 'b'")
    line = one_line_error(adaptd(*run_args(state_dir), cwd=cli_state))
    assert line.startswith(f"adaptd run: {state_dir / 'state.db'} has no whole checkpoint left: "
                           f"in checkpoint ")
    assert line.endswith("partition 0 key 'b' is corrupt: checksum mismatch; pass --fresh to "
                         "move the state dir aside and start over")


def test_a_state_db_sqlite_cannot_open_is_one_line(cli_state: Path) -> None:
    state_dir = copy_of(cli_state, "header")
    assert not (state_dir / "state.db-wal").exists()  # closed cleanly: all in the file
    with open(state_dir / "state.db", "r+b") as fh:
        fh.write(b"\xde\xad\xbe\xef" * 8)  # the SQLite header's magic string and page size
    line = one_line_error(adaptd(*run_args(state_dir), cwd=cli_state))
    assert line == (f"adaptd run: {state_dir / 'state.db'} is not a usable state database (file "
                    f"is not a database); pass --fresh to move the state dir aside and start over")
