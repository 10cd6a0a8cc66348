"""Predictions written behind on a second thread (:mod:`adaptd.write_behind`) against the same
run written on the runner's thread: the same bytes, and a write that fails (a sink on
``/dev/full``) stops the run the same way, with no checkpoint past it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from adaptd.checkpoint import CheckpointStore
from adaptd.config import load_settings
from adaptd.connectors.jsonl import JsonlConnector, JsonlSink
from adaptd.connectors.registry import open_source
from adaptd.errors import SinkError
from adaptd.learner import build_learner
from adaptd.metrics import Metrics
from adaptd.records import RecordDecoder
from adaptd.runner import Runner, RunnerConfig


class OwnThreadSink(JsonlSink):
    """The jsonl sink, written on the runner's thread."""

    writes_on_any_thread = False


def runner(root: Path, sink: JsonlSink) -> Runner:
    settings = load_settings(environ={}, flags={"model": "logistic",
                                                "task": "classification"})
    return Runner(
        source=open_source(f"jsonl:{root / 'in.jsonl'}"), learner=build_learner(settings),
        decoder=RecordDecoder(task="classification"), metrics=Metrics(CollectorRegistry()),
        store=CheckpointStore(root / "state"), sink=sink,
        config=RunnerConfig(task="classification", batch_size=100, poll_timeout_s=0.0,
                            checkpoint_every_records=1000))


def write_input(root: Path, n: int) -> None:
    root.mkdir()
    (root / "in.jsonl").write_bytes(b"".join(
        json.dumps({"x": [i % 7, (i * 3) % 11 / 10], "y": i % 2, "key": f"k{i % 3}"}).encode()
        + b"\n" for i in range(n)))


def test_written_behind_or_not_the_same_bytes(tmp_path: Path) -> None:
    for name in ("behind", "own"):
        write_input(tmp_path / name, 5000)
        out = f"jsonl:{tmp_path / name / 'out.jsonl'}"
        sink = JsonlConnector.sink(out) if name == "behind" else \
            OwnThreadSink(JsonlConnector.sink(out).options)
        summary = runner(tmp_path / name, sink).run()
        assert (summary.records, summary.predictions, summary.checkpoints) == (5000, 5000, 6)
    assert (tmp_path / "behind" / "out.jsonl").read_bytes() == \
        (tmp_path / "own" / "out.jsonl").read_bytes()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
@pytest.mark.parametrize("sink_class", [JsonlSink, OwnThreadSink])
def test_a_failed_write_stops_the_run_without_a_checkpoint_past_it(
        tmp_path: Path, sink_class: type[JsonlSink]) -> None:
    write_input(tmp_path / "run", 5000)
    sink = sink_class(JsonlConnector.sink("jsonl:/dev/full").options)
    run = runner(tmp_path / "run", sink)
    with pytest.raises(SinkError, match="No space left"):
        run.run()
    # The first batch's write failed: no checkpoint was taken at all.
    assert not CheckpointStore(tmp_path / "run" / "state").load().partitions
