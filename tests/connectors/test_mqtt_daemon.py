"""``adaptd run`` between MQTT topics on a real mosquitto: records published by an independent
client come back as predictions, through a kill -9 of the daemon, a broker restart and a sink
that is away.

The runner commits (acknowledges) only at checkpoints, so the tests checkpoint every few
records; mosquitto keeps its default window of 20 unacknowledged messages.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from adaptd import runner
from tests.connectors.mosquitto import Mosquitto, Subscriber, publish
from tests.helpers import free_port, http_get, scrape, wait_for

pytestmark = pytest.mark.integration

ADAPTD = [sys.executable, "-m", "adaptd"]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A mosquitto of this test's own, which it may restart."""
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


def records(start: int, count: int) -> list[bytes]:
    return [json.dumps({"key": f"k{i % 3}", "id": f"r{i}", "x": [i % 7, 1.0], "y": i % 5 / 5})
            .encode() for i in range(start, start + count)]


def start_daemon(tmp_path: Path, source: str, sink: str, *extra: str) -> subprocess.Popen[bytes]:
    """Start ``adaptd run``; returns once it is ready (subscribed: its session exists).
    Checkpoints every 10 records unless ``extra`` says otherwise (later flags win)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTD_")}
    port = free_port()
    with open(tmp_path / "daemon.log", "ab") as log:
        proc = subprocess.Popen(
            [*ADAPTD, "run", "--source", source, "--sink", sink, "--state-dir",
             str(tmp_path / "state"), "--metrics-port", str(port),
             "--set", "checkpoint_every_records=10", "--set", "checkpoint_interval_s=1", *extra],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_for(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200 or proc.poll() is not None,
             timeout_s=60, what="daemon ready")
    assert proc.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
    proc.metrics_port = port  # type: ignore[attr-defined]
    return proc


def stop(proc: subprocess.Popen[bytes], tmp_path: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, (tmp_path / "daemon.log").read_text()[-3000:]


def predicted(subscriber: Subscriber, ids: set[str], tmp_path: Path, timeout_s: float = 60) -> list[dict]:
    """Wait until every id in ``ids`` was predicted; return all predictions received."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = [json.loads(v) for v in subscriber.received]
        if ids <= {p["id"] for p in out}:
            return out
        time.sleep(0.05)
    missing = sorted(ids - {json.loads(v)["id"] for v in subscriber.received})
    raise AssertionError(f"{len(missing)} records never predicted, e.g. {missing[:5]}; daemon log: "
                         f"{(tmp_path / 'daemon.log').read_text()[-3000:]}")


def assert_positions_name_one_record(predictions: list[dict]) -> None:
    named: dict[tuple[int, int], str] = {}
    for p in predictions:
        first = named.setdefault((p["partition"], p["position"]), p["id"])
        assert first == p["id"], f"{(p['partition'], p['position'])} names {first} and {p['id']}"


def topics() -> tuple[str, str]:
    run = uuid.uuid4().hex[:8]
    return f"adaptd/{run}/in", f"adaptd/{run}/out"


def test_records_published_to_mqtt_come_back_as_predictions(broker: Mosquitto, tmp_path: Path) -> None:
    topic_in, topic_out = topics()
    subscriber = Subscriber(broker.address, topic_out)
    dead = Subscriber(broker.address, topic_out + "-dead")
    proc = start_daemon(tmp_path, f"mqtt://{broker.address}/{topic_in}",
                        f"mqtt://{broker.address}/{topic_out}",
                        "--dead-letter", f"mqtt://{broker.address}/{topic_out}-dead")
    try:
        publish(broker.address, topic_in, [*records(0, 50), b"not json", *records(50, 50)])
        out = predicted(subscriber, {f"r{i}" for i in range(100)}, tmp_path)
        dead_letters = [json.loads(v) for v in dead.wait_for(1)]
    finally:
        stop(proc, tmp_path)
        subscriber.close()
        dead.close()
    assert all("y_pred" in p and "loss" in p for p in out)
    assert [d["reason"] for d in dead_letters] == ["not_json"]
    assert_positions_name_one_record(out)


def test_kill_9_loses_no_record_and_reuses_no_position(broker: Mosquitto, tmp_path: Path) -> None:
    topic_in, topic_out = topics()
    subscriber = Subscriber(broker.address, topic_out)
    source, sink = f"mqtt://{broker.address}/{topic_in}", f"mqtt://{broker.address}/{topic_out}"
    proc = start_daemon(tmp_path, source, sink)
    try:
        publish(broker.address, topic_in, records(0, 1))
        predicted(subscriber, {"r0"}, tmp_path)
        publish(broker.address, topic_in, records(1, 199))
        subscriber.wait_for(60)
    finally:
        proc.kill()
        proc.wait()
    # While it is down: more records, kept by the broker in the daemon's session.
    publish(broker.address, topic_in, records(200, 100))
    proc = start_daemon(tmp_path, source, sink)
    try:
        out = predicted(subscriber, {f"r{i}" for i in range(300)}, tmp_path)
    finally:
        stop(proc, tmp_path)
        subscriber.close()
    assert_positions_name_one_record(out)


def test_a_broker_restart_loses_no_record(broker: Mosquitto, tmp_path: Path) -> None:
    topic_in, topic_out = topics()
    subscriber = Subscriber(broker.address, topic_out)
    proc = start_daemon(tmp_path, f"mqtt://{broker.address}/{topic_in}",
                        f"mqtt://{broker.address}/{topic_out}")
    try:
        publish(broker.address, topic_in, records(0, 50))
        predicted(subscriber, {f"r{i}" for i in range(50)}, tmp_path)
        broker.restart()  # clean: mosquitto saves its sessions
        publish(broker.address, topic_in, records(50, 50))
        out = predicted(subscriber, {f"r{i}" for i in range(100)}, tmp_path)
        assert proc.poll() is None, "the daemon must ride out a broker restart"
    finally:
        stop(proc, tmp_path)
        subscriber.close()
    assert_positions_name_one_record(out)


def test_a_sink_broker_that_is_away_holds_the_source_back_and_loses_nothing(
    broker: Mosquitto, tmp_path: Path
) -> None:
    sink_broker = Mosquitto(tmp_path / "sink-mosquitto").start()
    topic_in, topic_out = topics()
    subscriber = Subscriber(sink_broker.address, topic_out)  # its session outlives the outage
    sink_broker.stop()
    proc = start_daemon(tmp_path, f"mqtt://{broker.address}/{topic_in}",
                        f"mqtt://{sink_broker.address}/{topic_out}?flush_timeout_s=1",
                        "--set", "resilience.sink_backlog_limit=5")
    try:
        publish(broker.address, topic_in, records(0, 150))
        metrics = f"http://127.0.0.1:{proc.metrics_port}/metrics"  # type: ignore[attr-defined]
        wait_for(lambda: "source paused" in (tmp_path / "daemon.log").read_text(), timeout_s=30,
                 what="source paused")
        time.sleep(2)
        # Nothing is acknowledged while no checkpoint can flush, so the source broker sends no
        # more than its window of 20: memory stays bounded and the rest waits at the broker.
        assert scrape(metrics)[("adaptd_records_consumed_total", ())] <= 20
        assert proc.poll() is None, "a sink that is away must not crash the daemon"
        sink_broker.start()
        predicted(subscriber, {f"r{i}" for i in range(150)}, tmp_path)
    finally:
        stop(proc, tmp_path)
        subscriber.close()
        sink_broker.stop()


@pytest.mark.skipif("commit_due" not in inspect.getsource(runner),
                    reason="the runner does not poll Source.commit_due yet")
def test_commit_due_keeps_the_stream_flowing_between_periodic_checkpoints(
    broker: Mosquitto, tmp_path: Path
) -> None:
    # Checkpoints by count or time would come far too late: only the source's commit_due can
    # release mosquitto's window of 20 unacknowledged messages.
    topic_in, topic_out = topics()
    subscriber = Subscriber(broker.address, topic_out)
    proc = start_daemon(tmp_path, f"mqtt://{broker.address}/{topic_in}",
                        f"mqtt://{broker.address}/{topic_out}",
                        "--set", "checkpoint_every_records=100000", "--set", "checkpoint_interval_s=600")
    try:
        publish(broker.address, topic_in, records(0, 200))
        predicted(subscriber, {f"r{i}" for i in range(200)}, tmp_path, timeout_s=60)
    finally:
        stop(proc, tmp_path)
        subscriber.close()
