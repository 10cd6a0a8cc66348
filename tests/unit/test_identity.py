"""A state dir knows what it belongs to: another source, model family or feature layout is
refused at start (it used to resume a second file at the first one's line 2000, with the first
one's model); ``--fresh`` moves the old state aside and starts over."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from adaptd import identity


def adaptd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTD_")}
    return subprocess.run([sys.executable, "-m", "adaptd", "run", "--metrics-port", "off", *args],
                          check=False, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def write_stream(path: Path, n: int, n_features: int = 2) -> None:
    path.write_text("".join(json.dumps({"x": [i] + [1.0] * (n_features - 1), "y": i % 3}) + "\n"
                            for i in range(n)))


def errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if " INFO " not in line
            and " WARNING " not in line]


def test_another_source_is_refused_and_fresh_starts_over(tmp_path: Path) -> None:
    write_stream(tmp_path / "a.jsonl", 300)
    write_stream(tmp_path / "b.jsonl", 100)
    first = adaptd("--source", "jsonl:a.jsonl", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    stored = identity.read(tmp_path / "adaptd-state")
    assert stored is not None
    assert stored["source"] == {"scheme": "jsonl", "path": str(tmp_path / "a.jsonl")}
    assert stored["layout"]["n_features"] == 2  # recorded once the first record fixed it

    second = adaptd("--source", "jsonl:b.jsonl", cwd=tmp_path)
    assert second.returncode == 2, second.stderr[-3000:]
    assert errors(second) == [
        (f"adaptd run: --state-dir adaptd-state holds the state of source jsonl "
        f"path={tmp_path / 'a.jsonl'}, model auto/regression, 2 features; this run is source "
        f"jsonl path={tmp_path / 'b.jsonl'}, model auto/regression, features from the first "
        f"record (source differ): pass --fresh to move the old state aside and start over, or "
        f"another --state-dir")]

    fresh = adaptd("--source", "jsonl:b.jsonl", "--fresh", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert "100 records" in fresh.stderr  # from its first line, not the other file's line 300
    [moved] = tmp_path.glob("adaptd-state.replaced-*")
    assert identity.read(moved)["source"]["path"] == str(tmp_path / "a.jsonl")  # type: ignore[index]
    assert identity.read(tmp_path / "adaptd-state")["source"]["path"] == \
        str(tmp_path / "b.jsonl")  # type: ignore[index]


def test_the_same_source_resumes_and_another_model_or_layout_is_refused(tmp_path: Path) -> None:
    write_stream(tmp_path / "a.jsonl", 50)
    assert adaptd("--source", "jsonl:a.jsonl", cwd=tmp_path).returncode == 0
    again = adaptd("--source", f"jsonl:{tmp_path / 'a.jsonl'}?follow=false", cwd=tmp_path)
    assert again.returncode == 0 and "0 records" in again.stderr, again.stderr[-3000:]
    mlp = adaptd("--source", "jsonl:a.jsonl", "--model", "mlp", cwd=tmp_path)
    assert mlp.returncode == 2 and "(model differ)" in errors(mlp)[0], mlp.stderr[-3000:]
    wide = adaptd("--source", "jsonl:a.jsonl", "--n-features", "3", cwd=tmp_path)
    assert wide.returncode == 2 and "(layout differ)" in errors(wide)[0], wide.stderr[-3000:]


def test_kafka_identity_is_topic_and_group_not_the_brokers() -> None:
    one = identity.source_identity("kafka://10.0.0.1:9092/events?group=g")
    other = identity.source_identity("kafka://broker.internal:19092,b2:9092/events?group=g")
    assert one == other == {"scheme": "kafka", "topic": "events", "group": "g"}
    assert identity.source_identity("kafka://h:1/events?group=h") != one
