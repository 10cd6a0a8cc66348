"""Sink backpressure with real brokers: predictions go to a broker that is not there yet, so
they cannot be acknowledged; the runner must pause its Kafka source instead of reading on,
abort checkpoints that cannot flush, and once the broker appears drain, resume and finish with
every prediction delivered."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from adaptd.broker import EmbeddedBroker, free_port
from adaptd.checkpoint import CheckpointStore
from adaptd.connectors.kafka import kafka_sink, kafka_source, sink_options, source_options
from adaptd.learner.adagrad import AdaGradLearner
from adaptd.metrics import Metrics
from adaptd.records import RecordDecoder
from adaptd.runner import Runner, RunnerConfig
from adaptd.settings import ResilienceConfig
from tests.helpers import wait_for
from tests.integration.kafka_harness import CLIENTS, TcpProxy, make_records, produce, read_topic

pytestmark = pytest.mark.integration

LIMIT = 200
BATCH = 50


@pytest.mark.parametrize("client", CLIENTS)
def test_a_backed_up_sink_pauses_the_source_then_everything_is_delivered(
        kafka_broker: str, kafka_topic: str, tmp_path: Path, client: str) -> None:
    records = make_records(2000, seed=8)
    produce(kafka_broker, f"{kafka_topic}-in", records)
    proxy_port = free_port()
    sink = kafka_sink(sink_options(
        f"kafka://127.0.0.1:{proxy_port}/{kafka_topic}-out?client={client}&partitions=1"
        "&flush_timeout_ms=300"
        "&bootstrap_timeout_ms=300&reconnect_backoff_max_ms=300"))
    registry = CollectorRegistry()
    runner = Runner(
        source=kafka_source(source_options(
            f"kafka://{kafka_broker}/{kafka_topic}-in?limit={len(records)}&client={client}")),
        learner=AdaGradLearner(),
        decoder=RecordDecoder(),
        metrics=Metrics(registry),
        store=CheckpointStore(tmp_path / "state"),
        sink=sink,
        config=RunnerConfig(
            batch_size=BATCH, poll_timeout_s=0.05, checkpoint_interval_s=0.3,
            resilience=ResilienceConfig(retry_backoff_initial_s=0.05, retry_backoff_max_s=0.2,
                                        sink_backlog_limit=LIMIT)),
    )
    done: list[object] = []
    thread = threading.Thread(target=lambda: done.append(runner.run()), daemon=True)
    thread.start()
    broker = EmbeddedBroker(advertised_port=proxy_port, log_path=tmp_path / "broker.log")
    proxy = TcpProxy(0, proxy_port)
    try:
        wait_for(lambda: runner.faults.paused, 30, "the source to be paused")
        # Paused: it keeps polling (group membership) but reads nothing more.
        read_so_far = runner.summary.records
        wait_for(lambda: registry.get_sample_value("adaptd_checkpoint_failures_total") >= 2,
                 30, "checkpoints to be aborted while the sink cannot flush")
        assert runner.summary.records == read_so_far
        # Written behind (adaptd.write_behind), a batch counts in the sink's backlog once the
        # next one is processed: the pause comes at most one batch later than on one thread.
        assert LIMIT < read_so_far <= LIMIT + 2 * BATCH
        assert runner.summary.checkpoints == 0, "a checkpoint got past a sink that cannot flush"

        broker.start()
        proxy.target_port = broker.port
        proxy.start()
        thread.join(timeout=60)
        assert not thread.is_alive(), "the run did not finish once the sink could drain"
    finally:
        runner.request_stop()
        thread.join(timeout=30)
        predictions = (read_topic(f"127.0.0.1:{proxy_port}", f"{kafka_topic}-out", len(records))
                       if broker.running else [])
        proxy.stop()
        broker.stop()
    # Everything was read, so the source was resumed after the pause.
    assert done and runner.summary.records == len(records)
    positions = {json.loads(p.value)["position"] for p in predictions}
    assert positions == set(range(len(records)))
    restored = CheckpointStore(tmp_path / "state").load()
    assert restored.partitions[0].position == len(records)
    assert registry.get_sample_value("adaptd_consumer_lag_records", {"partition": "0"}) is not None
