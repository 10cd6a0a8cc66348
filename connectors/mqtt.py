"""``mqtt://HOST[:PORT]/TOPIC`` — records from and predictions to an MQTT 3.1.1 broker, through
paho-mqtt (the ``adaptd[mqtt]`` extra). ``docs/connectors.md`` has the options and broker setup.

Source, ``?qos=1`` (default): *acknowledged*. A persistent session (``clean_session=False``
under ``?client_id=``, by default ``adaptd-TOPIC``) at QoS 1 with manual acknowledgements, sent
only in ``commit``, after a checkpoint holds the records: the broker redelivers whatever a crash
left unacknowledged and keeps what is published while the daemon is down. The broker sends at
most its window of unacknowledged messages (mosquitto's ``max_inflight_messages``, 20 by
default; ``?inflight=``): once half of it is held, ``commit_due`` asks for a checkpoint, so the
stream does not stall until the periodic one. A broker that lost the session (restarted without
persistence) cannot redeliver; that is logged.

Source, ``?qos=0``: *live*. A clean session; what is published while the daemon is away is lost,
and while paused at most ``?max_queued=`` messages wait (more are dropped and logged).

Positions: :class:`~adaptd.connectors.sequential.LivePositions` on partition 0, never reused.

Sink: publishes at ``?qos=`` (default 1: ``flush`` waits, at most ``?flush_timeout_s=``, for the
broker's acknowledgements). It connects on first use and reconnects by itself; while the broker
is away messages wait in memory and ``flush`` raises ``SinkError``. MQTT 3.1.1 has no headers:
keys and headers are not sent (a dead letter's reason is in its body too).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from adaptd.connectors.base import (
    Connector,
    ParsedURI,
    PartitionListener,
    Sink,
    SinkMessage,
    Source,
    SourceRecord,
    parse_options,
    parse_uri,
)
from adaptd.connectors.sequential import Inbox, LivePositions, Pausable, start_position
from adaptd.errors import ConfigError, SinkError, UnavailableError

log = logging.getLogger(__name__)

DEFAULT_PORT = 1883
#: Seconds between paho's reconnection attempts, growing from the first to the second.
RECONNECT_DELAY_S = (1, 8)
#: paho's MQTT_ERR_NO_CONN: published while not connected.
NO_CONN = 4


@dataclass(frozen=True, slots=True)
class MqttOptions:
    """Options of both roles. ``host``, ``port``, ``topic`` come from the URI's target.

    Args:
        qos: 1 (acknowledged, persistent session) or 0 (live).
        client_id: the MQTT client id; a QoS 1 source must keep it across restarts (its session
            lives under it). Default: ``adaptd-TOPIC`` for a source, random for a sink.
        keepalive_s: MQTT keepalive: how soon a silent broker counts as gone.
        username, password: for brokers that require them.
        connect_timeout_s: how long ``open`` waits for the broker to accept the subscription.
    """

    host: str
    port: int
    topic: str
    qos: Literal[0, 1] = 1
    client_id: str = ""
    keepalive_s: int = 30
    username: str | None = None
    password: str | None = None
    connect_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.host or not self.topic:
            raise ValueError("expected mqtt://HOST[:PORT]/TOPIC")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        if self.keepalive_s < 5 or self.connect_timeout_s <= 0:
            raise ValueError("keepalive_s must be >= 5 and connect_timeout_s > 0")

    @property
    def where(self) -> str:
        return f"mqtt://{self.host}:{self.port}/{self.topic}"


@dataclass(frozen=True, slots=True)
class MqttSourceOptions(MqttOptions):
    """Source options. ``inflight``: the broker's window of unacknowledged QoS 1 messages;
    ``max_queued``: messages a QoS 0 source keeps while paused."""

    inflight: int = 20
    max_queued: int = 100_000

    def __post_init__(self) -> None:
        MqttOptions.__post_init__(self)
        if any(c in self.topic for c in "+#") and self.qos == 1 and not self.client_id:
            raise ValueError("a wildcard topic needs an explicit client_id for its session")
        if self.inflight < 1 or self.max_queued < 1:
            raise ValueError("inflight and max_queued must be >= 1")


@dataclass(frozen=True, slots=True)
class MqttSinkOptions(MqttOptions):
    """Sink options. ``flush_timeout_s``: how long ``flush`` waits for acknowledgements."""

    flush_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        MqttOptions.__post_init__(self)
        if any(c in self.topic for c in "+#"):
            raise ValueError(f"cannot publish to a wildcard topic {self.topic!r}")
        if self.flush_timeout_s <= 0:
            raise ValueError(f"flush_timeout_s must be > 0, got {self.flush_timeout_s}")


def _parse(parsed: ParsedURI, options_cls: type[Any]) -> Any:
    host_port, slash, topic = parsed.target.removeprefix("//").partition("/")
    if not parsed.target.startswith("//") or not slash:
        raise ConfigError(f"{parsed.uri!r}: expected mqtt://HOST[:PORT]/TOPIC")
    host, colon, port_text = host_port.rpartition(":")
    if not colon:
        host, port_text = host_port, str(DEFAULT_PORT)
    if not port_text.isdigit():
        raise ConfigError(f"{parsed.uri!r}: port must be a number, got {port_text!r}")
    return parse_options(options_cls, parsed, host=host, port=int(port_text), topic=topic)


def _client(options: MqttOptions, client_id: str, persistent: bool) -> Any:
    """A paho client (MQTT 3.1.1), not yet connected."""
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise ConfigError(f"{options.where}: needs paho-mqtt: pip install 'adaptd[mqtt]'") from None
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=not persistent, protocol=mqtt.MQTTv311,
                         manual_ack=persistent)
    client.reconnect_delay_set(*RECONNECT_DELAY_S)
    if options.username is not None:
        client.username_pw_set(options.username, options.password)
    return client


@dataclass(frozen=True, slots=True)
class _Arrival:
    mid: int
    payload: bytes
    session: int


class MqttSource(Pausable, Source):
    """Subscribes to one topic (filter); see the module docstring. paho calls back from its
    network thread: callbacks only fill the inbox and the connection flags."""

    def __init__(self, options: MqttSourceOptions) -> None:
        self.options = options
        self.replay = "acknowledged" if options.qos == 1 else "live"
        self._client: Any = None
        self._inbox: Inbox[_Arrival] = Inbox(None if options.qos == 1 else options.max_queued)
        self._positions = LivePositions()
        #: (position, mid, session) of records handed out and not yet acknowledged, in order.
        self._unacked: deque[tuple[int, int, int]] = deque()
        self._lock = threading.Lock()  # guards the three below, shared with paho's thread
        self._held: set[int] = set()  # mids of this session queued or handed out, not acked
        self._ack_lost: set[int] = set()  # mids committed while disconnected: ack on redelivery
        self._session = 0  # bumped when the broker starts a new session: old mids mean nothing
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._refused = ""
        self._dropped_reported = 0

    def open(
        self, start_positions: Mapping[int, int], listener: PartitionListener | None = None
    ) -> None:
        """Connect and subscribe; blocks until the broker acknowledged the subscription.
        Raises ``UnavailableError`` if it cannot be reached within ``connect_timeout_s``."""
        o = self.options
        self._positions = LivePositions(start_position(f"mqtt source {o.where}", start_positions))
        self.close()
        self._subscribed.clear()
        self._refused = ""
        client = _client(o, o.client_id or f"adaptd-{o.topic}", persistent=o.qos == 1)
        client.on_connect, client.on_disconnect = self._on_connect, self._on_disconnect
        client.on_subscribe, client.on_message = self._on_subscribe, self._on_message
        try:
            client.connect(o.host, o.port, o.keepalive_s)
        except OSError as exc:
            raise UnavailableError(f"mqtt source {o.where}: cannot connect: {exc}") from exc
        self._client = client
        client.loop_start()
        if not self._subscribed.wait(o.connect_timeout_s) or self._refused:
            self.close()
            reason = self._refused or f"no subscription within {o.connect_timeout_s} s"
            raise UnavailableError(f"mqtt source {o.where}: {reason}")
        log.info("mqtt source %s: subscribed at QoS %d (%s)", o.where, o.qos, self.replay)

    # paho's network thread -------------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._refused = f"broker refused the connection: {reason}"
            self._subscribed.set()  # wake open(), which reports it
            return
        with self._lock:
            if self.options.qos == 1 and not flags.session_present and self._held:
                log.warning("mqtt source %s: the broker lost the session; %d unacknowledged "
                            "records will not be redelivered", self.options.where, len(self._held))
                self._held.clear()
                self._ack_lost.clear()
                self._session += 1
        self._connected.set()
        client.subscribe(self.options.topic, qos=self.options.qos)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if any(r.is_failure for r in reasons):
            self._refused = f"broker refused the subscription: {reasons}"
        self._subscribed.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self._connected.is_set():
            log.warning("mqtt source %s: disconnected (%s); reconnecting", self.options.where, reason)
        self._connected.clear()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            if self.options.qos == 1 and message.dup and message.mid in self._ack_lost:
                # Committed while we were away: acknowledge the redelivery, do not process it.
                self._ack_lost.discard(message.mid)
                client.ack(message.mid, 1)
                return
            if self.options.qos == 1 and message.dup and message.mid in self._held:
                return  # a redelivery of a message we already hold
            if self.options.qos == 1:
                self._held.add(message.mid)
            session = self._session
        self._inbox.put(_Arrival(message.mid, message.payload, session))

    # the daemon's thread ---------------------------------------------------------------

    def poll(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        """Records received, waiting up to ``timeout_s``; ``UnavailableError`` once nothing is
        left and the broker is away (paho keeps reconnecting)."""
        if self._client is None:
            raise RuntimeError(f"mqtt source {self.options.where}: poll() outside open() ... close()")
        if self.paused_wait(timeout_s):
            return []
        if not len(self._inbox) and not self._connected.is_set():
            raise UnavailableError(f"mqtt source {self.options.where}: broker unreachable")
        out = []
        for arrival in self._inbox.take(max_records, timeout_s):
            position = self._positions.take()
            if self.options.qos == 1:
                self._unacked.append((position, arrival.mid, arrival.session))
            out.append(SourceRecord(partition=0, position=position, value=arrival.payload))
        if self._inbox.dropped > self._dropped_reported:
            log.warning("mqtt source %s: %d messages dropped so far (queue full while paused)",
                        self.options.where, self._inbox.dropped)
            self._dropped_reported = self._inbox.dropped
        return out

    def commit(self, next_positions: Mapping[int, int]) -> None:
        """Acknowledge every record below ``next_positions[0]``, in the order received."""
        upto = next_positions.get(0)
        if upto is None or self._client is None:
            return
        connected = self._client.is_connected()
        with self._lock:
            while self._unacked and self._unacked[0][0] < upto:
                _, mid, session = self._unacked.popleft()
                if session != self._session:
                    continue  # from a session the broker forgot: nothing to acknowledge
                self._held.discard(mid)
                if not connected or self._client.ack(mid, 1) != 0:
                    self._ack_lost.add(mid)

    def commit_due(self) -> bool:
        """True once half the broker's in-flight window waits for acknowledgement."""
        held = len(self._unacked) + len(self._inbox)
        return bool(self._unacked) and held >= max(1, self.options.inflight // 2)

    def _sync(self, client: Any, timeout_s: float = 2.0) -> None:
        """Wait until the broker has processed our acknowledgements: it answers packets of one
        connection in order, so the reply to a (no-op) unsubscribe means it has them. Without
        this, a client taking the session over at once (a quick restart) may overtake them."""
        done = threading.Event()
        client.on_unsubscribe = lambda *_: done.set()
        client.unsubscribe(f"{self.options.topic}/adaptd-sync-never-published")
        if not done.wait(timeout_s):
            log.warning("mqtt source %s: acknowledgements not confirmed within %.0f s on close",
                        self.options.where, timeout_s)

    def lag(self) -> Mapping[int, int]:
        """Messages received and not yet polled."""
        return {0: len(self._inbox)}

    def close(self) -> None:
        """Disconnect; a QoS 1 session stays on the broker with what was not acknowledged.
        Records received and not yet polled are dropped (the broker redelivers them at QoS 1)."""
        client, self._client = self._client, None
        if client is not None and self.options.qos == 1 and self._connected.is_set():
            self._sync(client)
        self._connected.clear()  # first: the disconnect below is not an outage to report
        if client is not None:
            client.disconnect()
            client.loop_stop()
        self._unacked.clear()
        with self._lock:
            self._held.clear()
            self._ack_lost.clear()
        self._inbox.take(len(self._inbox), 0.0)


class MqttSink(Sink):
    """Publishes message values to one topic; see the module docstring."""

    def __init__(self, options: MqttSinkOptions) -> None:
        self.options = options
        self._client: Any = None
        self._pending: deque[Any] = deque()  # paho MQTTMessageInfo, in publish order
        self._closed = False

    def _connected_client(self) -> Any:
        """The client, created and set connecting (in the background) on first use."""
        if self._client is None:
            o = self.options
            client = _client(o, o.client_id, persistent=False)
            client.max_inflight_messages_set(1000)  # our own window; the broker may use less
            client.connect_async(o.host, o.port, o.keepalive_s)
            client.loop_start()
            self._client = client
        return self._client

    def write(self, messages: Sequence[SinkMessage]) -> None:
        """Hand the messages to paho, which sends them now or once connected."""
        if self._closed:
            raise SinkError(f"mqtt sink {self.options.where}: write() after close()")
        client = self._connected_client()
        for message in messages:
            info = client.publish(self.options.topic, message.value, qos=self.options.qos)
            if info.rc == NO_CONN and self.options.qos == 1:
                info.rc = 0  # paho keeps QoS 1 messages and sends them once connected
            elif info.rc not in (0, NO_CONN):  # a QoS 0 one is lost: flush reports it
                raise SinkError(f"mqtt sink {self.options.where}: publish failed (paho rc {info.rc})")
            self._pending.append(info)

    def _drop_published(self) -> None:
        while self._pending and self._pending[0].rc == 0 and self._pending[0].is_published():
            self._pending.popleft()

    def flush(self) -> None:
        """Wait for the broker to acknowledge everything written; ``SinkError`` after
        ``flush_timeout_s`` (broker away, or a QoS 0 message written while it was)."""
        if self._closed or self._client is None:
            return
        deadline = time.monotonic() + self.options.flush_timeout_s
        self._drop_published()
        while self._pending:
            if self._pending[0].rc != 0:
                lost = self._pending.popleft()
                raise SinkError(f"mqtt sink {self.options.where}: message {lost.mid} not sent "
                                f"(paho rc {lost.rc}, broker unreachable)")
            if time.monotonic() > deadline:
                raise SinkError(
                    f"mqtt sink {self.options.where}: {len(self._pending)} messages not "
                    f"acknowledged within {self.options.flush_timeout_s} s (broker unreachable?)")
            self._pending[0].wait_for_publish(min(0.1, self.options.flush_timeout_s))
            self._drop_published()

    def backlog(self) -> int:
        """Messages written and not yet acknowledged by the broker."""
        self._drop_published()
        return len(self._pending)

    def close(self) -> None:
        """Flush what can be flushed (within ``flush_timeout_s``), then disconnect. Idempotent."""
        if self._closed:
            return
        try:
            self.flush()
        except SinkError as exc:
            log.warning("%s; closing anyway", exc)
        finally:
            self._closed = True
            if self._client is not None:
                self._client.disconnect()
                self._client.loop_stop()
                self._client = None
            self._pending.clear()


class MqttConnector(Connector):
    """``mqtt://HOST[:PORT]/TOPIC[?qos=1|0&client_id=…]``: an MQTT 3.1.1 topic."""

    scheme = "mqtt"
    description = "MQTT 3.1.1 topic (QoS 1 persistent session, acknowledged on checkpoint; ?qos=0: live)"
    replay = ("acknowledged", "live")

    @classmethod
    def source(cls, uri: str) -> MqttSource:
        return MqttSource(_parse(parse_uri(uri), MqttSourceOptions))

    @classmethod
    def sink(cls, uri: str) -> MqttSink:
        return MqttSink(_parse(parse_uri(uri), MqttSinkOptions))
