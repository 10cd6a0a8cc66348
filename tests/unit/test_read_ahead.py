"""Reading a file ahead on a second thread (:mod:`adaptd.read_ahead`): the same records in the
same order as polling it directly, an error in its place, nothing lost or repeated around a
pause, columns decoded ahead used only for the layout they were decoded for; and, through
the CLI, with predictions written behind (:mod:`adaptd.write_behind`), a run stopped by
SIGTERM has predicted exactly the positions its checkpoint covers, and a run killed with
``kill -9`` and restarted predicts every position as an uninterrupted run does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from adaptd.batch_path import DecodedRun, decode_ahead, run_columns
from adaptd.checkpoint import CheckpointStore
from adaptd.connectors.base import RecordRun, SourceRecord, UnavailableError
from adaptd.connectors.jsonl import JsonlConnector, JsonlSource
from adaptd.connectors.stdio import StdinSource
from adaptd.read_ahead import ReadAhead, read_ahead
from adaptd.records import RecordDecoder
from tests.helpers import wait_for


def write_lines(path: Path, n: int, d: int = 3, keys: int = 1) -> list[bytes]:
    rng = np.random.default_rng(7)
    lines = [json.dumps({"x": rng.normal(size=d).round(6).tolist(), "y": int(i % 3 == 0),
                         **({"key": f"k{i % keys}"} if keys > 1 else {})}).encode()
             for i in range(n)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


def drain(source: ReadAhead | JsonlSource, batch: int) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    while True:
        raws = source.poll_many(batch, 0.0)
        if not raws:
            if source.exhausted:
                return out
            continue
        records = raws.records() if isinstance(raws, RecordRun) else raws
        out += [(r.position, r.value) for r in records]


def test_read_ahead_hands_out_what_the_source_does_in_order(tmp_path: Path) -> None:
    lines = write_lines(tmp_path / "in.jsonl", 5000)
    decoder = RecordDecoder(n_features=3)
    prepared: list[int] = []

    def prepare(raws: RecordRun | list[SourceRecord]) -> RecordRun | list[SourceRecord]:
        prepared.append(len(raws))
        return decode_ahead(decoder, raws)

    source = read_ahead(JsonlConnector.source(f"jsonl:{tmp_path / 'in.jsonl'}"), prepare)
    assert isinstance(source, ReadAhead)
    source.open({0: 10})
    got = drain(source, 512)
    assert got == list(enumerate(lines))[10:]
    assert sum(prepared) == len(lines) - 10  # every batch went through prepare on the thread
    source.close()
    source.close()  # idempotent


class FailingSource(JsonlSource):
    """A file whose ``fail_at``-th poll raises once (the service away, say)."""

    polls_on_any_thread = True
    fail_at = 3

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.polls = 0

    def poll_many(self, max_records: int, timeout_s: float) -> list[SourceRecord] | RecordRun:
        self.polls += 1
        if self.polls == self.fail_at:
            raise UnavailableError("away for a moment")
        return super().poll_many(max_records, timeout_s)


def test_an_error_met_ahead_is_raised_in_its_place(tmp_path: Path) -> None:
    lines = write_lines(tmp_path / "in.jsonl", 1000)
    source = ReadAhead(FailingSource(JsonlConnector.source(f"jsonl:{tmp_path}/in.jsonl").options),
                       lambda raws: raws)
    source.open({})
    first = source.poll_many(100, 0.0)
    second = source.poll_many(100, 0.0)
    with pytest.raises(UnavailableError):
        source.poll_many(100, 0.0)
    rest = drain(source, 100)
    got = [(r.position, r.value) for run in (first, second)
           for r in (run.records() if isinstance(run, RecordRun) else run)] + rest
    assert got == list(enumerate(lines))
    source.close()


def test_a_paused_source_keeps_what_was_read_ahead(tmp_path: Path) -> None:
    lines = write_lines(tmp_path / "in.jsonl", 600)
    source = read_ahead(JsonlConnector.source(f"jsonl:{tmp_path}/in.jsonl"), lambda raws: raws)
    source.open({})
    first = source.poll_many(200, 0.0)  # the next 200 are being read ahead
    source.pause()
    assert source.poll_many(200, 0.0) == []
    assert not source.exhausted
    source.resume()
    got = [(r.position, r.value) for r in first.records()] + drain(source, 200)  # type: ignore[union-attr]
    assert got == list(enumerate(lines))
    source.close()


class CountingSource(JsonlSource):
    polls_on_any_thread = True

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.committed: list[Mapping[int, int]] = []

    def commit(self, next_positions: Mapping[int, int]) -> None:
        self.committed.append(dict(next_positions))


def test_other_calls_reach_the_source(tmp_path: Path) -> None:
    write_lines(tmp_path / "in.jsonl", 10)
    inner = CountingSource(JsonlConnector.source(f"jsonl:{tmp_path}/in.jsonl").options)
    source = ReadAhead(inner, lambda raws: raws)
    source.limit_record_bytes(1000)
    source.open({})
    source.commit({0: 4})
    assert inner.committed == [{0: 4}]
    assert (source.lag(), list(source.assigned()), source.commit_due(), source.replay) == \
        ({}, [0], False, "seekable")
    assert len(drain(source, 4)) == 10
    source.close()


def test_only_sources_that_allow_it_are_read_ahead(tmp_path: Path) -> None:
    class Plain(JsonlSource):
        polls_on_any_thread = False

    path = tmp_path / "in.jsonl"
    path.write_bytes(b"")
    options = JsonlConnector.source(f"jsonl:{path}").options
    plain = Plain(options)
    assert read_ahead(plain, lambda raws: raws) is plain
    stdin = StdinSource(stream=open(path, "rb"))  # noqa: SIM115  # live: never read ahead
    assert read_ahead(stdin, lambda raws: raws) is stdin
    stdin.close()


def test_columns_decoded_before_the_layout_was_fixed_are_decoded_again(tmp_path: Path) -> None:
    write_lines(tmp_path / "in.jsonl", 50)
    source = JsonlConnector.source(f"jsonl:{tmp_path}/in.jsonl")
    source.open({})
    run = source.poll_many(50, 0.0)
    decoder = RecordDecoder()  # no layout yet: the lean decode takes nothing
    ahead = decode_ahead(decoder, run)
    assert isinstance(ahead, DecodedRun) and ahead.columns is None
    decoder.restore_layout({"n_features": 3})  # fixed meanwhile (by a record, say)
    batch = run_columns(decoder, ahead)
    assert batch is not None and batch.X.shape == (50, 3)
    # Decoded for the layout of now: taken as it is.
    again = decode_ahead(decoder, run)
    assert run_columns(decoder, again) is again.columns  # type: ignore[union-attr]
    source.close()


def predictions_by_position(path: Path) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for line in path.read_bytes().splitlines():
        out[json.loads(line)["position"]] = line  # the last one of a position wins
    return out


def adaptd_run(tmp_path: Path, source: Path, out: Path, state: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ADAPTD_CHECKPOINT_EVERY_RECORDS": "5000", "ADAPTD_BATCH_SIZE": "512"}
    return subprocess.Popen(
        [sys.executable, "-m", "adaptd", "run", "--source", f"jsonl:{source}", "--sink",
         f"jsonl:{out}", "--task", "classification", "--model", "logistic", "--state-dir",
         str(state), "--metrics-port", "off"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def lines_in(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_a_run_killed_and_restarted_predicts_as_an_uninterrupted_one(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    lines = write_lines(source, 200_000, d=5, keys=4)
    whole = adaptd_run(tmp_path, source, tmp_path / "whole.jsonl", tmp_path / "whole-state")
    assert whole.wait(timeout=300) == 0, whole.stderr.read()  # type: ignore[union-attr]
    proc = adaptd_run(tmp_path, source, tmp_path / "out.jsonl", tmp_path / "state")
    try:
        # Killed in the middle of the file, checkpoints taken (one every 5,000 records), a
        # batch read ahead, and predictions written past the last checkpoint.
        wait_for(lambda: lines_in(tmp_path / "out.jsonl") >= 30_000 or proc.poll() is not None,
                 what="predictions", timeout_s=300)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    resumed_at = CheckpointStore(tmp_path / "state").load().partitions[0].position
    assert 0 < resumed_at < len(lines)
    restarted = adaptd_run(tmp_path, source, tmp_path / "out.jsonl", tmp_path / "state")
    assert restarted.wait(timeout=300) == 0, restarted.stderr.read()  # type: ignore[union-attr]
    expected = predictions_by_position(tmp_path / "whole.jsonl")
    assert len(expected) == len(lines)
    assert predictions_by_position(tmp_path / "out.jsonl") == expected


def test_a_stopped_run_has_predicted_exactly_what_its_checkpoint_covers(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    lines = write_lines(source, 200_000, d=5, keys=4)
    proc = adaptd_run(tmp_path, source, tmp_path / "out.jsonl", tmp_path / "state")
    try:
        wait_for(lambda: lines_in(tmp_path / "out.jsonl") >= 30_000 or proc.poll() is not None,
                 what="predictions", timeout_s=300)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr.decode()
    resumed_at = CheckpointStore(tmp_path / "state").load().partitions[0].position
    assert resumed_at < len(lines), "the run ended before it could be stopped"
    # Every batch read ahead and not processed is left for the next run; every one processed
    # was written before the final checkpoint.
    assert sorted(predictions_by_position(tmp_path / "out.jsonl")) == list(range(resumed_at))
