"""Assembles a daemon from settings: connectors, learner, metrics, HTTP server, signals.

``run`` and ``demo`` both start the daemon through :func:`serve`, so they behave alike.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry

from adaptd.checkpoint import CheckpointStore
from adaptd.connectors.base import Sink
from adaptd.connectors.registry import open_sink, open_source
from adaptd.http import MetricsServer
from adaptd.learner import build_learner
from adaptd.learner.jit import load_cached_meanwhile, wait_for_loader
from adaptd.learner.warm_up import compile_engine
from adaptd.metrics import Metrics
from adaptd.records import RecordDecoder
from adaptd.runner import Runner, RunnerConfig, RunSummary
from adaptd.settings import Settings

if TYPE_CHECKING:
    from adaptd.changelog import Changelog
    from adaptd.meta_sync import MetaSync
    from adaptd.state_topics import StateClients

log = logging.getLogger(__name__)


def build_runner(settings: Settings, metrics: Metrics) -> Runner:
    """Build every part of a run from validated settings. Raises ConfigError on bad URIs."""
    if settings.source is None:
        from adaptd.errors import ConfigError

        raise ConfigError("source is required: pass --source URI or set ADAPTD_SOURCE")
    # The state topics' clients connect on their own thread while the rest is built and the
    # source opens (their topics are declared by the changelog and the meta topic first).
    state_clients = state_clients_for(settings)
    changelog = changelog_for(settings, state_clients)
    meta_sync = meta_sync_for(settings, state_clients)
    if state_clients is not None:
        state_clients.connect_behind()
    state_dir = Path(settings.state_dir)
    dead_letter_uri = settings.dead_letter or f"jsonl:{state_dir / 'dead-letter.jsonl'}"
    sinks: list[Sink] = []
    try:
        source = open_source(settings.source)
        sink = open_sink(settings.sink) if settings.sink else None
        if sink is not None:
            sinks.append(sink)
        dead_letter = open_sink(dead_letter_uri)
    except Exception:
        for opened in sinks:
            opened.close()
        if state_clients is not None:
            state_clients.close()
        raise
    return Runner(
        source=source,
        learner=build_learner(settings),
        decoder=RecordDecoder(
            n_features=settings.n_features,
            task=settings.task,
            max_record_bytes=settings.max_record_bytes,
        ),
        metrics=metrics,
        store=CheckpointStore(state_dir),
        sink=sink,
        dead_letter=dead_letter,
        config=RunnerConfig.from_settings(settings),
        changelog=changelog,
        meta_sync=meta_sync,
    )


def state_clients_for(settings: Settings) -> StateClients | None:
    """One set of state-topic clients for the changelog and the meta topic of a Kafka source."""
    uri = urlsplit(settings.source or "")
    if uri.scheme != "kafka":
        return None
    from adaptd.connectors.kafka_options import source_options
    from adaptd.state_topics import StateClients  # kafka-python, for Kafka sources only

    options = source_options(settings.source or "")
    return StateClients(uri.netloc, options.client, options)


def changelog_for(settings: Settings, clients: StateClients | None = None) -> Changelog | None:
    """The changelog of a Kafka source (``checkpoint.changelog``), else None."""
    uri = urlsplit(settings.source or "")
    if uri.scheme != "kafka" or not settings.checkpoint.changelog:
        return None
    from adaptd.changelog import Changelog  # kafka-python, for Kafka sources only

    group = parse_qs(uri.query).get("group", [None])[0]
    return Changelog(uri.netloc, uri.path.lstrip("/"), group, clients=clients)


def meta_sync_for(settings: Settings, clients: StateClients | None = None) -> MetaSync | None:
    """The meta topic of a Kafka source with meta-learning on (``checkpoint.meta_topic``)."""
    uri = urlsplit(settings.source or "")
    if (uri.scheme != "kafka" or not settings.checkpoint.meta_topic
            or not settings.meta_learning.enabled):
        return None
    from adaptd.meta_sync import MetaSync  # kafka-python, for Kafka sources only

    group = parse_qs(uri.query).get("group", [None])[0]
    return MetaSync(uri.netloc, uri.path.lstrip("/"), group,
                    interval_s=settings.checkpoint.meta_merge_interval_s, clients=clients)


@contextmanager
def stop_on_signals(request_stop: Callable[[], None]) -> Iterator[None]:
    """First SIGTERM/SIGINT asks for a clean stop; a second one exits at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if received:
            log.warning("second signal %d: exiting at once", signum)
            os._exit(1)
        received.append(signum)
        log.info("signal %d: stopping after this batch", signum)
        request_stop()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def serve(settings: Settings, on_started: Callable[[MetricsServer | None], None] | None = None) -> RunSummary:
    """Run the daemon until its source ends or a signal stops it. Blocks.

    ``on_started`` is called once the HTTP server listens (with None when metrics are off).
    """
    # The engine's compiled code loads, in the order the first batch calls it, while the
    # runner is built and opens the source (a Kafka client's connections, the changelog's
    # restore, the meta merge: network waits), and while a file's first batch is read.
    load_cached_meanwhile(settings.model)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    runner = build_runner(settings, metrics)
    server = None
    if settings.metrics_port is not None:
        server = MetricsServer(registry, runner.ready, settings.metrics_host,
                               settings.metrics_port).start()
    try:
        if on_started is not None:
            on_started(server)
        # Before the source opens: a first batch compiling for a minute on the runner's thread
        # would keep a group's consumer unpolled past max_poll_interval_ms (see warm_up).
        compile_engine(settings)
        # Everything imported and built: the heap's hundreds of thousands of long-lived objects
        # (torch, numba, the clients' modules) leave the collector's generations. Each full
        # collection scanned them all: 150–250 ms between two batches, twice in a 100k-record
        # run, every record polled meanwhile held back.
        gc.freeze()
        with stop_on_signals(runner.request_stop):
            return runner.run()
    finally:
        if server is not None:
            server.stop()
        wait_for_loader()
