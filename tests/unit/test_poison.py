"""Poison records: each must be dead-lettered with its reason and bytes, never stop the daemon,
and never stop it again after a restart (it used to crash, replay the record and crash again)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from adaptd.checkpoint import CheckpointStore
from adaptd.connectors.registry import open_sink, open_source
from adaptd.learner import Outcomes
from adaptd.learner.adagrad import AdaGradLearner
from adaptd.metrics import Metrics
from adaptd.records import REASONS, RecordBatch, RecordDecoder
from adaptd.runner import Runner, RunnerConfig
from tests.unit.trust_runs import read_jsonl, run_lines

GOOD = [json.dumps({"id": f"g{i}", "x": [i, 1.0], "y": i % 2}).encode() for i in range(5)]

#: The records that crashed the daemon on main, as the bytes on the wire, and their reasons.
CORPUS = [
    (b'{"id":"\\udc00","x":[1,2],"y":1}', "bad_id"),  # TypeError encoding the prediction
    (b'{"key":"\\ud800","x":[1,2],"y":1}', "bad_key"),  # UnicodeEncodeError in key storage
    (b'{"id":' + b"[" * 1000 + b"]" * 1000 + b',"x":[1,2]}', "bad_id"),  # RecursionError
    (b'{"task":1e300,"x":[1,2],"y":1}', "bad_task"),  # OverflowError, oracle detector
    (b'{"x":{"\\udc00":1,"b":2},"y":1}', "bad_x"),  # a feature name the layout cannot save
    (b'{"id":true,"x":[1,2]}', "bad_id"),
    (b'{"id":1e400,"x":[1,2]}', "bad_id"),  # Infinity via the standard parser
    (b'{"task":-3,"x":[1,2],"y":1}', "bad_task"),  # -1 means "no task" to the learner
    (b'{"task":2.5,"x":[1,2],"y":1}', "bad_task"),
    (b'{"x":[1,2],"y":"\\udc00"}', "bad_y"),  # a class label no prediction could carry
    (b'{"x":[1,2],"y":-1e300}', "bad_y"),  # found by the fuzz: a class shown as a huge integer
]


@pytest.mark.parametrize(("line", "reason"), CORPUS)
def test_a_poison_record_is_dead_lettered_and_the_stream_goes_on(
        tmp_path: Path, line: bytes, reason: str) -> None:
    flags = {"drift.detector": "oracle", "task": "classification"}
    lines = GOOD[:2] + [line] + GOOD[2:]
    run = run_lines(tmp_path, lines, **flags)
    assert [d["reason"] for d in run.dead_letters] == [reason]
    assert run.dead_letters[0]["position"] == 2
    assert run.dead_letters[0]["raw"].encode() == line or \
        json.loads(run.dead_letters[0]["raw"]) == json.loads(line)
    assert [p["id"] for p in run.predictions] == [f"g{i}" for i in range(5)]
    assert run.summary.records == 6 and run.summary.rejected == 1
    # A restart on the same state dir finds nothing left to do, and does not crash either.
    again = run_lines(tmp_path, lines, **flags)
    assert again.summary.records == 0


def test_the_dead_letter_keeps_the_original_bytes_of_a_surrogate_id(tmp_path: Path) -> None:
    line = b'{"id":"\\udc00","x":[1,2],"y":1}'
    dead = run_lines(tmp_path, [line]).dead_letters[0]
    assert dead["raw"] == line.decode()  # the JSON escape as written, not the decoded character


def test_new_reasons_are_in_the_bounded_list() -> None:
    for reason in ("bad_id", "bad_key", "bad_task", "unprocessable", "label_unmatched"):
        assert reason in REASONS


class FailsOnKey(AdaGradLearner):
    """A real learner that raises, before learning anything, on records of one key: the
    stand-in for a record the decoder lets through and the engine cannot process."""

    def process_batch(self, batch: RecordBatch) -> Outcomes:
        if "poison" in batch.keys:
            raise ZeroDivisionError("cannot learn this record")
        return super().process_batch(batch)


def _run(tmp_path: Path, lines: list[bytes]) -> Runner:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(line + b"\n" for line in lines))
    return Runner(source=open_source(f"jsonl:{source}"), learner=FailsOnKey(),
                  decoder=RecordDecoder(), metrics=Metrics(CollectorRegistry()),
                  store=CheckpointStore(tmp_path / "state"),
                  sink=open_sink(f"jsonl:{tmp_path / 'predictions.jsonl'}"),
                  dead_letter=open_sink(f"jsonl:{tmp_path / 'dead.jsonl'}"),
                  config=RunnerConfig(batch_size=64, poll_timeout_s=0.0))


def test_a_record_the_learner_cannot_process_is_isolated_and_dead_lettered(
        tmp_path: Path) -> None:
    poison = b'{"key":"poison","x":[1,2],"y":1}'
    lines = GOOD[:3] + [poison] + GOOD[3:]
    summary = _run(tmp_path, lines).run()
    dead = read_jsonl(tmp_path / "dead.jsonl")
    assert [(d["reason"], d["position"]) for d in dead] == [("unprocessable", 3)]
    assert "ZeroDivisionError" in dead[0]["detail"]
    predicted = read_jsonl(tmp_path / "predictions.jsonl")
    assert [p["id"] for p in predicted] == [f"g{i}" for i in range(5)]
    # Each good record learned exactly once: the failed batch learned nothing, its re-run once.
    assert summary.updates == 5 and summary.rejected == 1 and summary.checkpoints >= 1
