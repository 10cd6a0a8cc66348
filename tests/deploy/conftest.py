"""Fixtures for the deploy tests: a real adaptd consuming a drifting stream from a real broker.

``running_daemon`` is shared by the Prometheus and metric-consistency tests (one daemon per
session keeps the suite fast): a uuid-named topic with two partitions on the ``kafka_broker``
fixture's broker, filled with a seeded ``linear-tasks`` stream (abrupt task switches, so drift
alarms, meta-updates and the hindsight comparator all happen) plus a few malformed records (so
rejections happen), consumed by ``adaptd run`` started as users start it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import free_port, http_get, scrape, wait_for

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RULES_DIR = DEPLOY / "prometheus" / "rules"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "adaptd.json"

#: The driving stream: enough task switches per key for the detector to fire several times.
STREAM_URI = "synthetic:linear-tasks?seed=11&n=6000&keys=2"
MALFORMED = (b"not json", b'{"x": "abc", "y": 1}', b'{"x": [1e999], "y": 0}')


def require_tool(name: str, package: str) -> str:
    """Path of a system tool the test runs for real; fails (never skips) when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name!r} is not installed: these tests run the real tool. Run `make test`, which "
            f"installs the Debian package {package!r} when it is missing (or: apt-get install "
            f"--no-install-recommends {package}).",
            pytrace=False,
        )
    return path


def adaptd_env() -> dict[str, str]:
    """The test process's environment without ADAPTD_* settings that would change the run."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ADAPTD_")}


@dataclass(frozen=True)
class RunningDaemon:
    url: str
    port: int
    records_sent: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def stream_records(uri: str) -> list[bytes]:
    """Every record of a finite source, as the bytes a producer would send."""
    from adaptd.connectors.registry import open_source

    source = open_source(uri)
    source.open({})
    values: list[bytes] = []
    try:
        while batch := source.poll(1000, 0.1):
            values.extend(r.value for r in batch)
    finally:
        source.close()
    return values


def fill_topic(bootstrap: str, topic: str, values: list[bytes], partitions: int) -> None:
    """Create ``topic`` and write ``values`` keyed by their record key (malformed: key ``bad``)."""
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for value in values:
            try:
                key = str(json.loads(value)["key"]).encode()
            except (ValueError, KeyError, TypeError):
                key = b"bad"
            producer.send(topic, value, key=key)
        producer.flush()
    finally:
        producer.close()


def start_daemon(args: list[str], log_path: Path, cwd: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``adaptd run ARGS --metrics-port N`` and wait for ``/healthz``. Returns the base URL."""
    port = free_port()
    log_file = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "adaptd", "run", *args, "--metrics-port", str(port)],
        cwd=cwd, env=adaptd_env(), stdout=log_file, stderr=subprocess.STDOUT,
    )
    log_file.close()
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(
                f"adaptd exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
        return http_get(f"{url}/healthz", timeout_s=1)[0] == 200

    wait_for(healthy, timeout_s=60, what=f"adaptd /healthz on {url}")
    return proc, url


def stop_daemon(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM (clean stop: flush, checkpoint, commit), then SIGKILL if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def consumed(url: str) -> float:
    return scrape(f"{url}/metrics").get(("adaptd_records_consumed_total", ()), 0.0)


@pytest.fixture(scope="session")
def running_daemon(
    kafka_broker: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningDaemon]:
    """adaptd on Kafka, after it has consumed the whole drifting stream; it keeps running."""
    work = tmp_path_factory.mktemp("deploy-daemon")
    topic = f"adaptd-deploy-{uuid.uuid4().hex[:12]}"
    values = stream_records(STREAM_URI)
    # Malformed records in the middle, so rejections are counted while the stream goes on.
    middle = len(values) // 2
    values = values[:middle] + list(MALFORMED) + values[middle:]
    fill_topic(kafka_broker, topic, values, partitions=2)
    log_path = work / "daemon.log"
    proc, url = start_daemon(
        ["--source", f"kafka://{kafka_broker}/{topic}?group=deploy-{topic}",
         "--state-dir", str(work / "state"),
         # Lag is refreshed at each timed checkpoint; every second keeps the test short.
         "--set", "checkpoint_interval_s=1"],
        log_path, cwd=work,
    )
    try:
        wait_for(lambda: consumed(url) >= len(values), timeout_s=180,
                 what=f"adaptd to consume {len(values)} records (log: {log_path})")
        wait_for(lambda: any(name == "adaptd_consumer_lag_records"
                             for name, _ in scrape(f"{url}/metrics")),
                 timeout_s=30, what=f"adaptd to report consumer lag (log: {log_path})")
        yield RunningDaemon(url=url, port=int(url.rsplit(":", 1)[1]), records_sent=len(values),
                            log_path=log_path)
    finally:
        stop_daemon(proc)
