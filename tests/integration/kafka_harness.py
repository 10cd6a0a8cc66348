"""Helpers for the Kafka integration tests: records, producing, reading a topic back, running
a real ``adaptd run`` process, and comparing learner states exactly."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from adaptd.checkpoint import CheckpointStore, Restored
from adaptd.connectors.base import SinkMessage, SourceRecord
from adaptd.connectors.kafka import kafka_sink, kafka_source, sink_options, source_options
from adaptd.errors import UnavailableError
from adaptd.state_codec import unpack_state
from tests.helpers import free_port, http_get, wait_for

REPO = Path(__file__).resolve().parents[2]

#: Every Kafka integration test that matters runs through both clients.
CLIENTS = ("kafka-python", "librdkafka")

#: Consumer-group timeouts short enough that joins and takeovers take seconds, not minutes.
FAST_GROUP = "session_timeout_ms=6000&heartbeat_interval_ms=500&max_poll_interval_ms=30000"

#: Frequent checkpoints, so a kill lands between two of them with work done since the last.
FREQUENT_CHECKPOINTS = ("--set", "checkpoint_every_records=300",
                        "--set", "checkpoint_interval_s=0.3")

#: Keys learn independently of each other (one engine: --model auto's Hedge shares label
#: moments across keys; no shared meta-state, no shared standardization statistics, no resets),
#: so per-key state does not depend on how records of different partitions interleave, nor on
#: which replica saw which partition.
INDEPENDENT_KEYS = ("--model", "linear",
                    "--set", "meta_learning.enabled=false", "--set", "drift.detector=none",
                    "--set", "learner.standardize=false",
                    "--set", "learner.standardize_target=false")


def make_records(n: int, keys: int = 6, n_features: int = 3, seed: int = 0) -> list[dict]:
    """Labelled linear records; each key has its own weights."""
    rng = random.Random(seed)
    weights = {f"k{k}": [rng.uniform(-2, 2) for _ in range(n_features)] for k in range(keys)}
    out = []
    for i in range(n):
        key = f"k{rng.randrange(keys)}"
        x = [round(rng.uniform(-1, 1), 6) for _ in range(n_features)]
        y = sum(w * v for w, v in zip(weights[key], x, strict=True)) + rng.gauss(0, 0.05)
        out.append({"key": key, "id": f"r{i}", "x": x, "y": round(y, 6)})
    return out


def produce(bootstrap: str, topic: str, records: Iterable[dict | bytes],
            partitions: int = 1) -> int:
    """Write records keyed by their key (raw bytes unkeyed); creates the topic. Blocks."""
    sink = kafka_sink(sink_options(f"kafka://{bootstrap}/{topic}?partitions={partitions}"))
    n = 0
    try:
        batch = []
        for rec in records:
            if isinstance(rec, bytes):
                batch.append(SinkMessage(value=rec, key=b"raw"))
            else:
                batch.append(SinkMessage(value=json.dumps(rec).encode(),
                                         key=rec["key"].encode()))
            n += 1
        sink.write(batch)
        sink.flush()
    finally:
        sink.close()
    return n


def read_topic(bootstrap: str, topic: str, at_least: int, timeout_s: float = 60.0,
               settle_s: float = 0.5) -> list[SourceRecord]:
    """Every record of a topic from the start: waits for ``at_least`` records, then reads on
    until nothing new arrives for ``settle_s`` (counting records, since the broker's end
    offsets can trail them)."""
    source = kafka_source(source_options(f"kafka://{bootstrap}/{topic}"))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            source.open({}, None)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    out: list[SourceRecord] = []
    try:
        quiet_since = time.monotonic()
        while True:
            try:
                got = source.poll(1000, 0.2)
            except UnavailableError:  # a broker just back (a proxy restarted): not yet joined
                got = []
            out.extend(got)
            now = time.monotonic()
            if got:
                quiet_since = now
            if len(out) >= at_least and now - quiet_since >= settle_s:
                return out
            assert now < deadline, f"read {len(out)} of at least {at_least} records of {topic}"
    finally:
        source.close()


class Daemon:
    """One ``adaptd run`` process with its metrics port; its log goes to a file."""

    def __init__(self, tmp: Path, name: str, source: str, *args: str,
                 state_dir: Path | None = None) -> None:
        self.port = free_port()
        self.state_dir = state_dir or tmp / f"{name}-state"
        self.log_path = tmp / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTD_")}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, "-m", "adaptd", "run", "--source", source,
               "--state-dir", str(self.state_dir), "--metrics-port", str(self.port), *args]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL,
                                         stderr=log)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        assert self.proc.poll() is None, f"daemon exited early:\n{self.log()}"
        return http_get(f"{self.url}/readyz", timeout_s=2)[0] == 200

    def not_ready(self) -> bool:
        assert self.proc.poll() is None, f"daemon exited early:\n{self.log()}"
        status = http_get(f"{self.url}/readyz", timeout_s=2)[0]
        return status == 503

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait; the clean path flushes, checkpoints and commits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"daemon did not stop in {timeout_s}s:\n{self.log()}") from None

    def kill(self) -> None:
        """SIGKILL: no flush, no checkpoint, no goodbye to the group."""
        self.proc.kill()
        self.proc.wait(timeout=30)


def checkpointed(state_dir: Path) -> Restored:
    return CheckpointStore(state_dir).load()


def wait_for_positions(state_dir: Path, ends: dict[int, int], timeout_s: float = 90.0,
                       daemons: Sequence[Daemon] = ()) -> Restored:
    """Wait until the checkpoints in ``state_dir`` reach ``ends`` (partition → next position)."""
    def reached() -> bool:
        for d in daemons:
            assert d.proc.poll() is None, f"daemon exited early:\n{d.log()}"
        restored = checkpointed(state_dir)
        return all(p in restored.partitions and restored.partitions[p].position >= n
                   for p, n in ends.items())
    wait_for(reached, timeout_s, f"checkpoints in {state_dir} to reach {ends}")
    return checkpointed(state_dir)


#: Wall-clock bookkeeping in learner state (for idle-key eviction): when a record was
#: processed, not what it did to the model, so it differs between any two runs.
WALL_CLOCK_FIELDS = frozenset({"last_seen"})

#: Running loss totals are summed per polled batch, so their last bits depend on where batches
#: split, which differs between any two runs; they are compared to 1e-9 relative. A record
#: counted twice or not at all moves them by a whole loss, far beyond that.
BATCH_SUMMED_FIELDS = frozenset({"totals"})


def assert_same_state(a: Any, b: Any, where: str = "state", rel_tol: float = 0.0) -> None:
    """Exact equality of nested plain data, numpy arrays and torch tensors (wall-clock
    bookkeeping aside; batch-summed totals to ``1e-9`` relative). Packed task states (as the
    store holds them) are compared unpacked."""
    a, b = unpack_state(a), unpack_state(b)
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (
            f"{where}: keys differ: {sorted(map(str, a))} vs {sorted(map(str, b))}")
        for k in a:
            if k not in WALL_CLOCK_FIELDS:
                tol = 1e-9 if k in BATCH_SUMMED_FIELDS else rel_tol
                assert_same_state(a[k], b[k], f"{where}[{k!r}]", tol)
        return
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]", rel_tol)
        return
    if rel_tol and isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=rel_tol), f"{where}: {a!r} != {b!r}"
        return
    if hasattr(a, "shape"):  # numpy array or torch tensor
        import numpy as np

        left = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
        right = b.detach().cpu().numpy() if hasattr(b, "detach") else np.asarray(b)
        assert left.shape == right.shape and np.array_equal(left, right, equal_nan=True), (
            f"{where}: arrays differ (max abs diff "
            f"{np.max(np.abs(left - right)) if left.shape == right.shape else 'shape'})")
        return
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return  # both NaN
    assert a == b, f"{where}: {a!r} != {b!r}"


def key_states(restored: Restored) -> dict[str, Any]:
    """key → task state, over every partition of a checkpoint."""
    out: dict[str, Any] = {}
    for state in restored.partitions.values():
        for key in state.keys:
            out[key] = unpack_state(state.learner["keys"][key])
    return out


class TcpProxy:
    """A loopback TCP relay in front of a broker, to cut and restore the network.

    ``stop`` closes the listening socket and every relayed connection (clients then get
    connection refused, as from a broker that is down); ``start`` listens again on the same
    port. The broker advertises the proxy's port, so every client connection goes through it.
    """

    def __init__(self, target_port: int, port: int | None = None) -> None:
        import socket
        import threading

        self._socket_mod = socket
        self._threading = threading
        self.target_port = target_port
        self.port = port or free_port()
        self._server: Any = None
        self._conns: list[Any] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        socket = self._socket_mod
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        self._threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: Any) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # stopped
            try:
                upstream = self._socket_mod.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                self._threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def stop(self) -> None:
        if self._server is not None:
            # close() alone does not wake a thread blocked in accept(): the socket would go
            # on accepting. shutdown() does.
            try:
                self._server.shutdown(self._socket_mod.SHUT_RDWR)
            except OSError:
                pass
            self._server.close()
            self._server = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(self._socket_mod.SHUT_RDWR)
            except OSError:
                pass
            s.close()
