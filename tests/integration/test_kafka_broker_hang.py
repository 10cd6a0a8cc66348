"""A broker that hangs (process frozen: connections open, nothing answered) under a running
daemon: the daemon keeps its state, stays up, and goes on exactly where it was once the broker
answers again. Unlike the broker-lost test (connections refused), nothing fails fast here."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from adaptd.broker import EmbeddedBroker
from tests.helpers import wait_for
from tests.integration.kafka_harness import (
    CLIENTS,
    FAST_GROUP,
    FREQUENT_CHECKPOINTS,
    Daemon,
    make_records,
    produce,
)
from tests.integration.test_kafka_daemon import prediction_positions, uris, wait_for_positions

pytestmark = pytest.mark.integration

#: The consumers' session timeout (``uris`` puts FAST_GROUP in the source URI).
SESSION_TIMEOUT_S = int(re.findall(r"session_timeout_ms=(\d+)", FAST_GROUP)[0]) / 1000


@pytest.mark.parametrize("client", CLIENTS)
def test_a_frozen_broker_costs_time_not_records(kafka_topic: str, tmp_path: Path,
                                                client: str) -> None:
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log").start()
    pid = broker.pid
    assert pid is not None
    daemon = Daemon(tmp_path, "d", *uris(broker.bootstrap, kafka_topic, client=client),
                    *FREQUENT_CHECKPOINTS,
                    "--set", "resilience.retry_backoff_max_s=1",
                    # Every labelled record an update (standardized targets: from the third).
                    "--model", "linear", "--set", "learner.standardize_target=false")
    try:
        records = make_records(800, seed=8)
        produce(broker.bootstrap, f"{kafka_topic}-in", records[:400])
        wait_for_positions(daemon.state_dir, {0: 400}, daemons=[daemon])
        os.kill(pid, signal.SIGSTOP)
        try:
            # Frozen for longer than the consumer's session timeout (FAST_GROUP's 6 s), with
            # margin: the group has to expire it. Nothing to poll for: the broker says nothing.
            time.sleep(1.5 * SESSION_TIMEOUT_S)
            assert daemon.proc.poll() is None, daemon.log()
        finally:
            os.kill(pid, signal.SIGCONT)
        produce(broker.bootstrap, f"{kafka_topic}-in", records[400:])
        wait_for_positions(daemon.state_dir, {0: 800}, daemons=[daemon])
        wait_for(daemon.ready, 60, "/readyz after the broker thawed")
        predictions = prediction_positions(broker.bootstrap, kafka_topic, 800)
    finally:
        code = daemon.stop()
        broker.stop()
    assert code == 0, daemon.log()
    assert set(predictions) == {(0, i) for i in range(800)}
    assert "800 records, 800 predictions, 800 updates" in daemon.log()
