"""The ``adaptd`` command as users run it: real processes, real files, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from adaptd.checkpoint import CheckpointStore
from tests.helpers import free_port, http_get, scrape, wait_for

ADAPTD = [sys.executable, "-m", "adaptd"]


def adaptd(*args: str, cwd: Path, timeout_s: float = 120, **kwargs: object) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTD_")}
    return subprocess.run([*ADAPTD, *args], check=False, cwd=cwd, capture_output=True, timeout=timeout_s,
                          env=env, **kwargs)  # type: ignore[call-overload]


def test_synthetic_stream_to_stdout_prints_one_prediction_per_record(tmp_path: Path) -> None:
    result = adaptd("run", "--source", "synthetic:sinusoid?seed=1&n=2000", "--sink", "stdout:",
                    "--state-dir", str(tmp_path / "state"), "--metrics-port", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 2000
    predictions = [json.loads(line) for line in lines]
    assert [p["position"] for p in predictions] == list(range(2000))
    assert all(isinstance(p["y_pred"], float) and "loss" in p for p in predictions)
    assert CheckpointStore(tmp_path / "state").load().partitions


def test_jsonl_with_malformed_lines(tmp_path: Path) -> None:
    good = [json.dumps({"id": i, "x": [i, 1], "y": i % 3}) for i in range(50)]
    bad = ["not json", '{"x": "abc"}', '{"x": [1, 2, 3]}', "\xff\xfe", '{"x": [Infinity, 1]}']
    lines = good[:10] + bad[:2] + good[10:30] + bad[2:] + good[30:]
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(line.encode("utf-8", "surrogateescape") for line in lines) + b"\n")
    result = adaptd("run", "--source", f"jsonl:{source}", "--sink", f"jsonl:{tmp_path / 'out.jsonl'}",
                    "--state-dir", str(tmp_path / "state"), "--metrics-port", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(p["id"] for p in out) == sorted(str(i) for i in range(50))
    dead = [json.loads(line)
            for line in (tmp_path / "state" / "dead-letter.jsonl").read_text().splitlines()]
    assert len(dead) == len(bad)
    assert {d["reason"] for d in dead} == {"not_json", "bad_x", "feature_count", "non_finite"}
    assert "55 records" in result.stderr.decode() and "5 rejected" in result.stderr.decode()


def test_a_sink_on_dev_null_takes_every_checkpoint(tmp_path: Path) -> None:
    # A device has no blocks to fsync (it fails with EINVAL): before, every checkpoint's flush
    # failed there and the run ended without a checkpoint.
    result = adaptd("run", "--source", "synthetic:sinusoid?seed=1&n=3000", "--sink", "jsonl:/dev/null",
                    "--state-dir", str(tmp_path / "state"), "--metrics-port", "0",
                    "--set", "checkpoint_every_records=1000", cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    restored = CheckpointStore(tmp_path / "state").load()
    # Three on the way (every 1,000 records) and the final one.
    assert restored.checkpoint >= 4 and restored.partitions[0].position == 3000, restored


def test_connectors_lists_the_builtins(tmp_path: Path) -> None:
    result = adaptd("connectors", cwd=tmp_path)
    assert result.returncode == 0
    listed = {line.split()[0]: line for line in result.stdout.decode().splitlines()}
    for scheme in ("jsonl", "stdin", "stdout", "synthetic"):
        assert scheme in listed and "failed" not in listed[scheme]


def test_bad_configuration_exits_2_naming_the_key(tmp_path: Path) -> None:
    result = adaptd("run", "--source", "synthetic:sinusoid?n=1", "--set", "learner.lr=-3",
                    cwd=tmp_path)
    assert result.returncode == 2
    assert "learner.lr must be > 0, got -3.0 (from the command line)" in result.stderr.decode()
    result = adaptd("run", "--source", "nosuch:thing", cwd=tmp_path)
    assert result.returncode == 2 and "no connector for scheme 'nosuch'" in result.stderr.decode()


def start_daemon(tmp_path: Path, *extra: str, stdout: int = subprocess.DEVNULL) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTD_")}
    proc = subprocess.Popen(
        [*ADAPTD, "run", "--source", "synthetic:sinusoid?seed=2", "--state-dir",
         str(tmp_path / "state"), "--metrics-port", str(port), *extra],
        cwd=tmp_path, env=env, stdout=stdout, stderr=subprocess.PIPE)
    return proc, port


def test_sigterm_stops_cleanly_with_a_checkpoint(tmp_path: Path) -> None:
    proc, port = start_daemon(tmp_path)
    try:
        wait_for(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, what="/readyz")
        wait_for(lambda: scrape(f"http://127.0.0.1:{port}/metrics")
                 [("adaptd_updates_total", ())] > 1000, what="updates")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr.decode()
    assert b"stopping after this batch" in stderr
    assert CheckpointStore(tmp_path / "state").load().partitions


STUCK_DAEMON = """
import sys, time
from adaptd.service import stop_on_signals
# A daemon whose clean stop never finishes (a sink that hangs, say): it ignores the stop request.
with stop_on_signals(lambda: None):
    print("ready", flush=True)
    while True:
        time.sleep(0.01)
"""


def test_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", STUCK_DAEMON], cwd=Path(__file__).parents[2],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1.0)  # the first signal only asks to stop
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    stderr = proc.stderr.read()  # type: ignore[union-attr]
    assert proc.returncode == 1, stderr.decode()
