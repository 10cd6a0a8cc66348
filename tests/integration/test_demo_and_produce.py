"""``adaptd demo`` and ``adaptd produce`` as a user runs them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import http_get
from tests.integration.kafka_harness import REPO, read_topic

pytestmark = pytest.mark.integration


def adaptd(*args: str, cwd: Path, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTD_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "adaptd", *args], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout_s)


def test_demo_runs_on_its_own_broker_and_prints_a_summary(tmp_path: Path) -> None:
    result = adaptd("demo", "--records", "3000", "--metrics-port", "0", "--linger-s", "0",
                    "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    out = result.stdout
    assert "embedded Kafka broker (Tansu) on 127.0.0.1:" in out
    assert "/metrics" in out and "live page http://127.0.0.1:" in out
    assert "produced 3000 records; daemon: 3000 records, 3000 predictions" in out
    assert "drifts" in out and "regret vs baseline" in out
    assert (tmp_path / "state" / "state.db").exists(), "no checkpoint written"


def test_demo_keeps_its_page_up_after_the_stream_quietly_and_cleans_up(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTD_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "adaptd", "demo", "--records", "2000", "--metrics-port", "0"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 180
        while not any("the live page stays up" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, lines
            lines.append(proc.stdout.readline())
        out = "".join(lines)
        assert "for 300 s (Ctrl-C ends the demo now)" in out, out
        url = re.search(r"live page (http://\S+)/\n", out).group(1)  # type: ignore[union-attr]
        state_dir = Path(re.search(r"checkpoints and logs in (\S+) \(removed at exit",
                                   out).group(1))  # type: ignore[union-attr]
        assert state_dir.is_dir()
        # The stream is over: the page and the final metrics are still served.
        assert http_get(f"{url}/readyz") == (503, b"finished\n")
        status, page = http_get(f"{url}/")
        assert status == 200 and b"adaptd" in page
        assert b"adaptd_records_consumed_total 2000.0" in http_get(f"{url}/metrics")[1]
        # A page opened now still gets the run: the samples kept while it streamed.
        history = json.loads(http_get(f"{url}/history")[1])
        assert "adaptd_records_consumed_total 2000.0" in history[-1]["metrics"]
        assert any("adaptd_records_consumed_total 0.0" in h["metrics"] for h in history[:2]), history
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert not state_dir.exists(), "the demo left its temporary directory behind"
    # The Kafka client's INFO lines (about 60 of them) no longer bury the addresses.
    assert not [line for line in stderr.splitlines() if " INFO kafka." in line], stderr[-3000:]


def test_produce_replays_a_file_into_a_topic_keyed_by_record_key(
        kafka_broker: str, kafka_topic: str, tmp_path: Path) -> None:
    records = [{"key": f"k{i % 5}", "x": [i, 1.0], "y": i} for i in range(300)]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = adaptd("produce", "--source", f"jsonl:{path}",
                    "--sink", f"kafka://{kafka_broker}/{kafka_topic}", "--partitions", "3",
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "300 records into" in result.stdout
    back = read_topic(kafka_broker, kafka_topic, 300)
    assert len(back) == 300
    partitions_of: dict[bytes, set[int]] = {}
    for r in back:
        assert r.key == json.loads(r.value)["key"].encode()
        partitions_of.setdefault(r.key or b"", set()).add(r.partition)
    assert all(len(p) == 1 for p in partitions_of.values())
    assert len({p for ps in partitions_of.values() for p in ps}) > 1, "one partition only"
