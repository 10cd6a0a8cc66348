"""A runner over real files (a jsonl source, jsonl prediction and dead-letter sinks), for the
tests of records that must never stop the daemon."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from adaptd.checkpoint import CheckpointStore
from adaptd.config import load_settings
from adaptd.connectors.registry import open_sink, open_source
from adaptd.learner import build_learner
from adaptd.metrics import Metrics
from adaptd.records import RecordDecoder
from adaptd.runner import Runner, RunnerConfig, RunSummary


@dataclass
class FileRun:
    summary: RunSummary
    predictions: list[dict[str, Any]]
    dead_letters: list[dict[str, Any]]


def run_lines(root: Path, lines: list[bytes] | None, batch_size: int = 64,
              **flags: Any) -> FileRun:
    """Write ``lines`` to ``root/in.jsonl`` (None: it is written already) and run a daemon
    over it to its end."""
    root.mkdir(parents=True, exist_ok=True)
    source = root / "in.jsonl"
    if lines is not None:
        source.write_bytes(b"".join(line + b"\n" for line in lines))
    # One engine whose every labelled record is an update: these tests count updates exactly,
    # and standardized targets are learned from the third label on.
    flags = {"model": "linear", "learner.standardize_target": False, **flags}
    settings = load_settings(environ={}, flags=flags)
    runner = Runner(
        source=open_source(f"jsonl:{source}"),
        learner=build_learner(settings),
        decoder=RecordDecoder(n_features=settings.n_features, task=settings.task,
                              max_record_bytes=settings.max_record_bytes),
        metrics=Metrics(CollectorRegistry()),
        store=CheckpointStore(root / "state"),
        sink=open_sink(f"jsonl:{root / 'predictions.jsonl'}"),
        dead_letter=open_sink(f"jsonl:{root / 'dead.jsonl'}"),
        config=RunnerConfig(task=settings.task, batch_size=batch_size, poll_timeout_s=0.0),
    )
    summary = runner.run()
    return FileRun(summary, read_jsonl(root / "predictions.jsonl"), read_jsonl(root / "dead.jsonl"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
