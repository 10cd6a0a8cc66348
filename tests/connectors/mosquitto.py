"""A real mosquitto broker for tests, on a free loopback port, its state in a temporary dir.

``TEST_MQTT_BROKER=HOST:PORT`` names an external broker instead, for the tests that do not
restart it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from tests.helpers import free_port

EXTERNAL_BROKER_ENV = "TEST_MQTT_BROKER"


class Mosquitto:
    """``mosquitto -c CONFIG`` with persistence on, anonymous clients, default in-flight window.

    ``stop`` is a clean shutdown (mosquitto writes its sessions to disk), ``kill`` is not.
    """

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise RuntimeError("mosquitto is not installed: run `make system-deps`")
        self.binary = binary
        self.port = port or free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            # Run as root (CI), mosquitto would drop to a `mosquitto` user who cannot write here.
            "user root\n"
        )
        self.log_path = workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the process
        self._proc = subprocess.Popen([self.binary, "-c", str(self.config)],
                                      stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log_path.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout_s} s")

    def stop(self) -> None:
        """Clean shutdown: sessions and queued messages are saved."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()


def publish(address: str, topic: str, values: Sequence[bytes], qos: int = 1) -> None:
    """Publish values with an independent paho client and wait for the broker to have them."""
    import paho.mqtt.client as mqtt

    host, _, port = address.rpartition(":")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-pub-{uuid.uuid4().hex[:8]}")
    client.connect(host, int(port))
    client.loop_start()
    try:
        infos = [client.publish(topic, v, qos=qos) for v in values]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


class Subscriber:
    """An independent paho client collecting what arrives on a topic: QoS 1 in a persistent
    session, so that nothing is missed across a broker restart."""

    def __init__(self, address: str, topic: str) -> None:
        import paho.mqtt.client as mqtt

        host, _, port = address.rpartition(":")
        self.received: list[bytes] = []
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=f"test-sub-{uuid.uuid4().hex[:8]}", clean_session=False)
        self._client.reconnect_delay_set(0.2, 1)
        subscribed: list[bool] = []
        self._client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, qos=1)
        self._client.on_subscribe = lambda c, u, m, r, p: subscribed.append(True)
        self._client.on_message = lambda c, u, msg: self.received.append(msg.payload)
        self._client.connect(host, int(port))
        self._client.loop_start()
        deadline = time.monotonic() + 10
        while not subscribed and time.monotonic() < deadline:
            time.sleep(0.02)
        assert subscribed, f"test subscriber: no subscription to {topic} on {address}"

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[bytes]:
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.received)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def external_broker() -> str | None:
    return os.environ.get(EXTERNAL_BROKER_ENV) or None
