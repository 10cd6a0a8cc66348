"""The runner over real files: bad records dead-lettered with reasons, counters agree, restart
resumes at the checkpointed position, and the metrics endpoint serves what happened."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import CollectorRegistry

from adaptd.checkpoint import CheckpointStore
from adaptd.connectors.registry import open_sink, open_source
from adaptd.http import MetricsServer
from adaptd.learner.adagrad import AdaGradLearner
from adaptd.metrics import Metrics
from adaptd.records import RecordDecoder
from adaptd.runner import Runner, RunnerConfig
from tests.helpers import http_get, scrape

GOOD = [json.dumps({"id": f"r{i}", "key": "a" if i % 2 else "b", "x": [i / 10, 1.0], "y": i / 5})
        for i in range(20)]
BAD = {
    3: ("{not json", "not_json"),
    7: (json.dumps({"x": [1.0, "two"], "y": 1}), "bad_x"),
    11: (json.dumps({"x": [1.0, 2.0, 3.0], "y": 1}), "feature_count"),
    12: (json.dumps({"y": 1}), "missing_x"),
    15: ('{"x": [NaN, 1.0], "y": 1}', "non_finite"),
    17: (json.dumps([1, 2]), "not_object"),
}


def mixed_lines() -> list[str]:
    lines = list(GOOD)
    for position in sorted(BAD):
        lines.insert(position, BAD[position][0])
    return lines


def make_runner(tmp_path: Path, source_file: Path, registry: CollectorRegistry | None = None,
                batch_size: int = 4) -> Runner:
    return Runner(
        source=open_source(f"jsonl:{source_file}"),
        learner=AdaGradLearner(),
        decoder=RecordDecoder(),
        metrics=Metrics(registry or CollectorRegistry()),
        store=CheckpointStore(tmp_path / "state"),
        sink=open_sink(f"jsonl:{tmp_path / 'predictions.jsonl'}"),
        dead_letter=open_sink(f"jsonl:{tmp_path / 'dead.jsonl'}"),
        config=RunnerConfig(batch_size=batch_size, poll_timeout_s=0.01),
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_bad_records_are_dead_lettered_and_the_stream_goes_on(tmp_path: Path) -> None:
    source_file = tmp_path / "in.jsonl"
    lines = mixed_lines()
    source_file.write_text("\n".join(lines) + "\n")
    registry = CollectorRegistry()
    runner = make_runner(tmp_path, source_file, registry)
    server = MetricsServer(registry, runner.ready).start()
    try:
        summary = runner.run()
        samples = scrape(f"{server.url}/metrics")
        assert http_get(f"{server.url}/healthz")[0] == 200
        assert http_get(f"{server.url}/readyz")[0] == 503  # the run is over
    finally:
        server.stop()

    predictions = read_jsonl(tmp_path / "predictions.jsonl")
    dead = read_jsonl(tmp_path / "dead.jsonl")
    assert [p["id"] for p in predictions] == [f"r{i}" for i in range(20)]
    assert all("loss" in p and p["partition"] == 0 for p in predictions)
    bad_positions = {i for i, line in enumerate(lines) if line in {b for b, _ in BAD.values()}}
    assert {d["position"] for d in dead} == bad_positions
    by_position = {d["position"]: d for d in dead}
    for position in bad_positions:
        raw, reason = lines[position], next(r for b, r in BAD.values() if b == lines[position])
        assert by_position[position]["reason"] == reason
        assert by_position[position]["raw"] == raw  # the original bytes, untouched
        assert by_position[position]["detail"]
    assert summary.records == len(lines) and summary.rejected == len(BAD)
    assert summary.predictions == summary.updates == len(GOOD)

    assert samples[("adaptd_records_consumed_total", ())] == len(lines)
    assert samples[("adaptd_predictions_total", ())] == len(GOOD)
    assert samples[("adaptd_updates_total", ())] == len(GOOD)
    for _, reason in BAD.values():
        assert samples[("adaptd_records_rejected_total", (("reason", reason),))] == 1
    assert samples[("adaptd_record_latency_seconds_count", ())] == len(GOOD)
    assert samples[("adaptd_checkpoints_total", ())] >= 1
    assert samples[("adaptd_cumulative_loss", (("learner", "adaptd"),))] > 0
    assert samples[("adaptd_active_keys", ())] == 2


def test_a_restart_resumes_after_the_last_checkpointed_record(tmp_path: Path) -> None:
    source_file = tmp_path / "in.jsonl"
    source_file.write_text("\n".join(GOOD[:12]) + "\n")
    first = make_runner(tmp_path, source_file).run()
    assert first.records == 12
    # New records arrive after the daemon stopped; the next run must see only those.
    with open(source_file, "a") as fh:
        fh.write("\n".join(GOOD[12:]) + "\n")
    resumed = make_runner(tmp_path, source_file)
    assert resumed.run().records == len(GOOD) - 12

    uninterrupted_dir = tmp_path / "once"
    uninterrupted_dir.mkdir()
    straight = make_runner(uninterrupted_dir, source_file)
    assert straight.run().records == len(GOOD)
    assert resumed.partitions.next_positions == straight.partitions.next_positions == {
        0: len(GOOD)}
    resumed_state = resumed.learner.state_dict()
    straight_state = straight.learner.state_dict()
    assert resumed_state["totals"] == straight_state["totals"]
    for key, (theta, accum) in straight_state["keys"].items():
        assert (resumed_state["keys"][key][0] == theta).all()
        assert (resumed_state["keys"][key][1] == accum).all()
