"""The HTTP endpoints on ``--metrics-port``: ``/metrics``, ``/healthz``, ``/readyz`` and ``/``.

``/healthz`` answers 200 while the process serves at all; ``/readyz`` answers 200 only once the
state is loaded and the source has partitions (503 otherwise, e.g. while the broker is away);
``/`` is the live page (``daemon/static/live.html``), which plots the metrics it scrapes from
``/metrics`` in the browser. ``/history`` gives it the samples of the minutes before it was
opened (:class:`History`), so that a page opened late, or after ``adaptd demo``'s stream has
ended, still draws the run.
"""

from __future__ import annotations

import errno
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from adaptd.errors import StartError

log = logging.getLogger(__name__)

#: The samples the live page plots or counts (see ``scrape`` in live.html): all /history keeps.
HISTORY_SAMPLES = frozenset({
    "adaptd_records_consumed_total", "adaptd_updates_total", "adaptd_drift_events_total",
    "adaptd_prequential_loss", "adaptd_regret", "adaptd_cumulative_loss",
    "adaptd_candidate_weight",
})


class History:
    """The live page's samples every ``interval_s`` over the last ``window_s``, taken from a
    background thread while the server runs. The page parses them as it parses /metrics, so the
    series are computed in one place (the page).
    """

    def __init__(self, registry: CollectorRegistry, interval_s: float = 2.0,
                 window_s: float = 600.0) -> None:
        self.registry = registry
        self.interval_s = interval_s
        self._entries: deque[tuple[float, str]] = deque(maxlen=int(window_s / interval_s) + 1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self, now_s: float) -> None:
        """Keep the current values of :data:`HISTORY_SAMPLES`, in the Prometheus text format."""
        lines = []
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name in HISTORY_SAMPLES:
                    labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(sample.labels.items()))
                    name = f"{sample.name}{{{labels}}}" if labels else sample.name
                    lines.append(f"{name} {sample.value!r}")
        with self._lock:
            self._entries.append((now_s, "\n".join(lines)))

    def to_json(self) -> bytes:
        """``[{"t_ms": …, "metrics": "…"}, …]``, oldest first."""
        with self._lock:
            entries = list(self._entries)
        return json.dumps([{"t_ms": round(t * 1000), "metrics": m} for t, m in entries]).encode()

    def start(self) -> None:
        """Sample now and then every ``interval_s`` until :meth:`stop`. Returns at once."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="adaptd-history", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while True:
            self.sample(time.time())
            if self._stop.wait(self.interval_s):
                return


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsServer:
    """Serves the endpoints from a background thread. ``ready`` is polled on each ``/readyz``.

    Args:
        registry: the registry whose metrics ``/metrics`` exposes.
        ready: returns True when the daemon is ready to do its work.
        host, port: where to listen; port 0 picks a free port (see :attr:`port`).
        history: the samples behind /history; a new one on ``registry`` if None (the demo hands
            the run's history to the server that keeps its page up afterwards).

    Raises :class:`StartError` naming ``host:port`` when it cannot listen there.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        host: str = "127.0.0.1",
        port: int = 0,
        history: History | None = None,
    ) -> None:
        self.registry = registry
        self.ready = ready
        self.history = history if history is not None else History(registry)
        #: The body of a 503 /readyz; the live page shows it. ``adaptd demo`` sets "finished"
        #: while it keeps the page up after its stream has ended.
        self.not_ready_reason = "not ready"
        self._server = _listen(host, port, self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="adaptd-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        return f"http://{host}:{self.port}"

    def start(self) -> MetricsServer:
        self.history.start()
        self._thread.start()
        log.info("serving metrics on %s/metrics, live page on %s/", self.url, self.url)
        return self

    def stop(self) -> None:
        """Stop serving. Blocks until the serving thread has ended."""
        self._server.shutdown()
        self._server.server_close()
        self.history.stop()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(server.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b"ok\n", "text/plain; charset=utf-8")
                elif path == "/readyz":
                    ok = server.ready()
                    body = "ready" if ok else server.not_ready_reason
                    self._send(200 if ok else 503, f"{body}\n".encode(),
                               "text/plain; charset=utf-8")
                elif path == "/history":
                    self._send(200, server.history.to_json(), "application/json")
                elif path in ("/", "/index.html"):
                    self._send(200, _live_page(), "text/html; charset=utf-8")
                else:
                    self._send(404, b"not found\n", "text/plain; charset=utf-8")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("http: " + format, *args)

        return Handler


def _listen(host: str, port: int, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """Bind the server. A port in use is the usual first-run failure (two daemons on the
    default port), so it is reported as one line that says what to pass instead."""
    try:
        return ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StartError(f"metrics port {host}:{port} is already in use; pass "
                             f"--metrics-port N (0 picks a free one) or --metrics-port off") from None
        raise StartError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; "
                         f"check --metrics-host and --metrics-port") from None


def _live_page() -> bytes:
    # The import package is adaptd (the repo folder daemon/ is not importable once installed).
    page = resources.files("adaptd").joinpath("static", "live.html")
    if page.is_file():
        return page.read_bytes()
    return b"<!doctype html><title>adaptd</title><p>See <a href='/metrics'>/metrics</a>.</p>"
