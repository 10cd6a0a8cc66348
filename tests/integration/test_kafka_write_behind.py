"""Predictions produced to Kafka from the write-behind thread (:mod:`adaptd.write_behind`), on
the real broker through both clients, when deliveries start failing mid-run (the broker cut
off behind a proxy): no checkpoint commits a position whose prediction is not delivered, the
run stops with the sink's error, and the restart delivers the rest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from adaptd.broker import EmbeddedBroker, free_port
from adaptd.checkpoint import CheckpointStore
from adaptd.config import load_settings
from adaptd.connectors.base import RecordRun, SourceRecord
from adaptd.connectors.jsonl import JsonlConnector, JsonlSource
from adaptd.connectors.kafka import ensure_topic, kafka_sink, sink_options
from adaptd.errors import SinkError
from adaptd.learner import build_learner
from adaptd.metrics import Metrics
from adaptd.records import RecordDecoder
from adaptd.runner import Runner, RunnerConfig
from adaptd.write_behind import WriteBehind
from tests.integration.kafka_harness import CLIENTS, TcpProxy, read_topic

RECORDS = 2500  # few batches after the cut: each waits out the flush timeout
CUT_AT = 2000  # the broker is cut off once the source is polled past this position


class CuttingSource(JsonlSource):
    """The jsonl source (read ahead), stopping ``proxy`` when first polled past CUT_AT."""

    proxy: TcpProxy | None = None

    def poll_many(self, max_records: int, timeout_s: float) -> list[SourceRecord] | RecordRun:
        polled = super().poll_many(max_records, timeout_s)
        if self.proxy is not None and polled and polled[-1].position >= CUT_AT:
            self.proxy.stop()
            self.proxy = None
        return polled


def run(root: Path, bootstrap: str, topic: str, client: str,
        proxy: TcpProxy | None) -> Runner:
    settings = load_settings(environ={}, flags={"model": "logistic",
                                                "task": "classification"})
    source = CuttingSource(JsonlConnector.source(f"jsonl:{root / 'in.jsonl'}").options)
    source.proxy = proxy
    # The topic exists already (a sink that may create it asks the broker on every reconnect).
    sink = kafka_sink(sink_options(
        f"kafka://{bootstrap}/{topic}?client={client}&request_timeout_ms=500"
        "&delivery_timeout_ms=1000&flush_timeout_ms=2000&reconnect_backoff_max_ms=200"
        "&bootstrap_timeout_ms=500"))
    return Runner(
        source=source, learner=build_learner(settings),
        decoder=RecordDecoder(task="classification"), metrics=Metrics(CollectorRegistry()),
        store=CheckpointStore(root / "state"), sink=sink,
        config=RunnerConfig(task="classification", batch_size=100, poll_timeout_s=0.0,
                            checkpoint_every_records=500))


def predicted(bootstrap: str, topic: str, at_least: int) -> set[int]:
    return {json.loads(r.value)["position"] for r in read_topic(bootstrap, topic, at_least)}


@pytest.mark.parametrize("client", CLIENTS)
def test_deliveries_failing_behind_the_runner_commit_no_position_past_them(
        tmp_path: Path, kafka_topic: str, client: str) -> None:
    (tmp_path / "in.jsonl").write_bytes(b"".join(
        json.dumps({"x": [i % 7, (i * 3) % 11 / 10], "y": i % 2}).encode() + b"\n"
        for i in range(RECORDS)))
    proxy_port = free_port()
    with EmbeddedBroker(advertised_port=proxy_port, log_path=tmp_path / "broker.log") as broker:
        proxy = TcpProxy(broker.port, proxy_port)
        proxy.start()
        bootstrap = f"127.0.0.1:{proxy_port}"
        ensure_topic(sink_options(f"kafka://{bootstrap}/{kafka_topic}?client={client}"), 1)
        try:
            first = run(tmp_path, bootstrap, kafka_topic, client, proxy)
            assert isinstance(first._behind, WriteBehind)  # the sink is written behind
            with pytest.raises(SinkError, match="final checkpoint failed"):
                first.run()
            assert first.summary.records == RECORDS
            kept = CheckpointStore(tmp_path / "state").load().partitions[0].position
            # Checkpoints went on until the cut, and none after it.
            assert 0 < kept <= CUT_AT + 100
            proxy.start()
            # Every position a checkpoint holds has its prediction delivered.
            assert set(range(kept)) <= predicted(bootstrap, kafka_topic, kept)
            second = run(tmp_path, bootstrap, kafka_topic, client, None)
            assert second.run().records == RECORDS - kept
            assert set(range(RECORDS)) <= predicted(bootstrap, kafka_topic, RECORDS)
        finally:
            proxy.stop()
