"""A state dir that cannot keep the state stops the daemon, never an exit 0.

Real file systems, as root or not: a state dir under a regular file (``Not a directory``
whoever runs it), and, where this process may mount, a read-only tmpfs and a full one (a
tmpfs of a few pages filled to ENOSPC). ``chmod`` is not used: root writes through it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from adaptd.checkpoint import CheckpointStore
from adaptd.connectors.registry import open_sink, open_source
from adaptd.errors import StateLostError
from adaptd.learner.adagrad import AdaGradLearner
from adaptd.metrics import Metrics
from adaptd.records import RecordDecoder
from adaptd.runner import Runner, RunnerConfig
from adaptd.settings import ResilienceConfig

LINES = [json.dumps({"x": [i, 1.0], "y": i % 3}) for i in range(200)]


def adaptd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTD_")}
    return subprocess.run([sys.executable, "-m", "adaptd", *args], check=False, cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120)


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if " INFO " not in line]


@contextlib.contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``where`` with ``options``; skips the test where mounting is not
    permitted (not root, or no CAP_SYS_ADMIN in this container)."""
    where.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path) -> None:
    """Write to ``directory`` until its file system is full."""
    fd = os.open(directory / f"filler-{uuid.uuid4().hex}", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)


def test_a_state_dir_under_a_regular_file_is_refused_at_start(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text("\n".join(LINES) + "\n")
    (tmp_path / "a-file").write_text("")
    result = adaptd("run", "--source", "jsonl:in.jsonl", "--state-dir", "a-file/state",
                    "--metrics-port", "off", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert error_lines(result) == [
        ("adaptd run: --state-dir a-file/state: cannot write there: Not a directory: 'a-file/state'; "
        "expected a writable directory for checkpoints")]


@pytest.mark.parametrize("options", ["ro,size=256k", "size=64k"])
def test_a_read_only_or_full_state_dir_is_refused_at_start(tmp_path: Path, options: str) -> None:
    (tmp_path / "in.jsonl").write_text("\n".join(LINES) + "\n")
    with tmpfs(tmp_path / "mnt", options) as mnt:
        if "ro" not in options:
            fill(mnt)
        result = adaptd("run", "--source", "jsonl:in.jsonl", "--state-dir", "mnt/state",
                        "--dead-letter", "jsonl:dead.jsonl", "--metrics-port", "off",
                        cwd=tmp_path)
    reason = "Read-only file system" if "ro" in options else "No space left on device"
    assert result.returncode == 2, result.stderr[-3000:]
    [line] = error_lines(result)
    assert line.startswith("adaptd run: --state-dir mnt/state: cannot write there: ") and \
        reason in line, line


def runner_on(tmp_path: Path, state_dir: Path, every: int, give_up_after_s: float) -> Runner:
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(LINES) + "\n")
    return Runner(source=open_source(f"jsonl:{source}"), learner=AdaGradLearner(),
                  decoder=RecordDecoder(), metrics=Metrics(CollectorRegistry()),
                  store=CheckpointStore(state_dir),
                  sink=open_sink(f"jsonl:{tmp_path / 'predictions.jsonl'}"),
                  config=RunnerConfig(batch_size=10, poll_timeout_s=0.0,
                                      checkpoint_every_records=every,
                                      give_up_after_s=give_up_after_s,
                                      resilience=ResilienceConfig(retry_backoff_initial_s=0.01,
                                                                  retry_backoff_max_s=0.05)))


def test_checkpoints_refused_mid_run_are_retried_then_stop_the_run(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "size=128k") as mnt:
        runner = runner_on(tmp_path, mnt / "state", every=50, give_up_after_s=0.2)
        (mnt / "state").mkdir()
        fill(mnt)  # the disk fills after the start-up probe would have passed
        with pytest.raises(StateLostError) as err:
            runner.run()
    message = str(err.value)
    assert message.startswith(f"state dir {str(mnt / 'state')!r}: checkpoints failed for ")
    # The OS's words, or SQLite's when the state database is what found the disk full.
    assert "No space left on device" in message or "database or disk is full" in message
    failures = runner.metrics.checkpoint_failures._value.get()
    assert failures >= 2  # retried with backoff before giving up
    # It stopped polling: far from the whole file was read (it used to read all of it).
    assert runner.summary.records < len(LINES) and runner.summary.checkpoints == 0


def test_a_final_checkpoint_that_fails_is_not_a_clean_exit(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    # No checkpoint is due before the end: only the one at exit, which cannot be written.
    runner = runner_on(tmp_path, blocker / "state", every=10_000, give_up_after_s=60)
    with pytest.raises(StateLostError, match="the final checkpoint failed"):
        runner.run()
    assert runner.summary.records == len(LINES)


def test_a_sink_that_cannot_flush_at_the_end_is_not_a_clean_exit(tmp_path: Path) -> None:
    # Twenty predictions stay in the sink's buffer until the final checkpoint flushes them, onto
    # a full disk: the run used to print "done" (exit 0) after a traceback from closing the sink.
    (tmp_path / "in.jsonl").write_text("\n".join(LINES[:20]) + "\n")
    with tmpfs(tmp_path / "mnt", "size=64k") as mnt:
        (mnt / "out.jsonl").touch()
        fill(mnt)
        result = adaptd("run", "--source", "jsonl:in.jsonl", "--sink", "jsonl:mnt/out.jsonl",
                        "--state-dir", "state", "--metrics-port", "off", cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert error_lines(result)[-1] == (
        "adaptd run: stopped: the final checkpoint failed: jsonl sink 'mnt/out.jsonl': flush "
        "failed: [Errno 28] No space left on device; positions since the previous checkpoint "
        "are not committed: a restart replays them")
    assert CheckpointStore(tmp_path / "state").load().partitions == {}


def test_not_ready_while_the_state_dir_refuses_checkpoints(tmp_path: Path) -> None:
    """/readyz reads Runner.ready: false from a refused checkpoint until one is written."""
    # 1 MB: a new state.db (32 kB pages, one or more per table and index) and its log take
    # about 0.6 MB with the first checkpoint.
    with tmpfs(tmp_path / "mnt", "size=1m") as mnt:
        runner = runner_on(tmp_path, mnt / "state", every=10_000, give_up_after_s=60.0)
        runner.open()
        runner.process(runner.faults.poll(runner.source, 10, 0.0) or [])
        assert runner.checkpoint() and runner.ready()
        fill(mnt)
        runner.process(runner.faults.poll(runner.source, 10, 0.0) or [])
        assert not runner.checkpoint()
        assert not runner.ready()
        for filler in mnt.glob("filler-*"):
            filler.unlink()
        assert runner.checkpoint() and runner.ready()
        runner.source.close()
