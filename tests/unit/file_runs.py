"""A daemon's runner over real files, for tests of what survives a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from adaptd.checkpoint import CheckpointStore
from adaptd.config import load_settings
from adaptd.connectors.registry import open_sink, open_source
from adaptd.learner import build_learner
from adaptd.metrics import Metrics
from adaptd.records import RecordDecoder
from adaptd.runner import Runner, RunnerConfig


def file_runner(root: Path, source: Path, config: RunnerConfig, **flags: Any) -> Runner:
    """A runner with the learner the settings ``flags`` ask for: reads the JSON lines in
    ``source``, keeps its state in ``root/state`` and appends its predictions to
    ``root/predictions.jsonl``."""
    settings = load_settings(environ={}, flags=flags)
    return Runner(
        source=open_source(f"jsonl:{source}"),
        learner=build_learner(settings),
        decoder=RecordDecoder(),
        metrics=Metrics(CollectorRegistry()),
        store=CheckpointStore(root / "state"),
        sink=open_sink(f"jsonl:{root / 'predictions.jsonl'}"),
        config=config,
    )
