"""Kafka: a source that joins a consumer group, and a sink for predictions and dead letters.

URI (contract): ``kafka://HOST:PORT[,HOST:PORT…]/TOPIC[?group=G&option=value…]``.

Source. With ``group`` the source subscribes as a member of that consumer group; without it,
it reads every partition of the topic itself. Either way it tells the daemon's
:class:`~adaptd.connectors.base.PartitionListener` which partitions it now owns, and seeks each to the
position the daemon returns (the one stored in the daemon's checkpoint) — never to the group's
committed offsets, which only trail the checkpoint for the benefit of lag tools. Partitions the
daemon has no checkpoint of start where ``auto_offset_reset`` says. Auto-commit is off.
Before partitions are taken away the listener is told first, so the daemon can flush, checkpoint
and commit them.

Sink. Messages are produced keyed by their key (so one record key stays on one partition) with
their headers. ``write`` never blocks on the broker: messages the producer cannot take yet (broker
down at start) wait in the sink, and deliveries that fail are kept and sent again, so a
prediction is lost only if the process dies, which the checkpoint order covers. ``flush`` blocks
until everything written is acknowledged or raises :class:`~adaptd.errors.SinkError`.
:meth:`KafkaSink.backlog` tells the daemon how much is unacknowledged, so it can pause the source.

Security settings (``security_protocol``, ``sasl_*``, ``ssl_*``) are passed to kafka-python as
they are; ``sasl_plain_password_env`` names an environment variable holding the password so it
need not appear in the URI.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kafka import ConsumerRebalanceListener

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
from adaptd.errors import ConfigError, SinkError, UnavailableError

log = logging.getLogger(__name__)

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER"]


class _OncePerInterval(logging.Filter):
    """Lets each distinct kafka-python message template through once per ``interval_s``.

    While a broker is down kafka-python logs every reconnect attempt, thousands of lines a
    second; the daemon's own log lines say what is going on, once.
    """

    def __init__(self, interval_s: float = 30.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL:
            return True
        now = time.monotonic()
        template = (record.name, str(record.msg))
        if now - self._last.get(template, -self.interval_s) < self.interval_s:
            return False
        if len(self._last) > 10_000:  # bounded even if templates vary
            self._last.clear()
        self._last[template] = now
        return True


_QUIET = _OncePerInterval()


def quiet_client_logs() -> None:
    """Rate-limit kafka-python's own log lines. Idempotent; called once its modules are
    imported (a logger's filters do not apply to its children, so each gets the filter)."""
    for name, logger in list(logging.root.manager.loggerDict.items()):
        ours = name == "kafka" or name.startswith("kafka.")
        if ours and isinstance(logger, logging.Logger) and _QUIET not in logger.filters:
            logger.addFilter(_QUIET)


@dataclass(frozen=True)
class KafkaClientOptions:
    """Options both the source and the sink take. ``bootstrap`` and ``topic`` come from the URI.

    Times are milliseconds because that is what operators know from Kafka's own settings.
    """

    bootstrap: str
    topic: str
    client_id: str = "adaptd"
    request_timeout_ms: int = 30_000
    #: How long opening waits for the first broker before it reports the broker unavailable.
    bootstrap_timeout_ms: int = 10_000
    reconnect_backoff_max_ms: int = 5_000
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None
    sasl_plain_password_env: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = None
    ssl_check_hostname: bool = True

    def __post_init__(self) -> None:
        if not self.topic or "/" in self.topic:
            raise ValueError(f"topic must be one non-empty name, got {self.topic!r}")
        for hostport in self.bootstrap.split(","):
            host, sep, port = hostport.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"broker address must be HOST:PORT, got {hostport!r}")
        for name in ("request_timeout_ms", "bootstrap_timeout_ms", "reconnect_backoff_max_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.sasl_mechanism is not None and not self.security_protocol.startswith("SASL"):
            raise ValueError(
                f"sasl_mechanism needs security_protocol SASL_PLAINTEXT or SASL_SSL, "
                f"got {self.security_protocol}"
            )
        if self.sasl_plain_password_env is not None and self.sasl_plain_password is not None:
            raise ValueError("give sasl_plain_password or sasl_plain_password_env, not both")
        if (self.sasl_plain_password_env is not None
                and self.sasl_plain_password_env not in os.environ):
            raise ValueError(
                f"sasl_plain_password_env names {self.sasl_plain_password_env!r}, "
                f"which is not set in the environment"
            )

    def client_config(self) -> dict[str, Any]:
        """Keyword arguments common to KafkaConsumer, KafkaProducer and KafkaAdminClient."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap.split(","),
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
            "bootstrap_timeout_ms": self.bootstrap_timeout_ms,
            "reconnect_backoff_max_ms": self.reconnect_backoff_max_ms,
            "security_protocol": self.security_protocol,
            "ssl_check_hostname": self.ssl_check_hostname,
        }
        password = self.sasl_plain_password
        if self.sasl_plain_password_env is not None:
            password = os.environ[self.sasl_plain_password_env]
        passthrough = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_plain_username,
            "sasl_plain_password": password,
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
            "ssl_password": self.ssl_password,
        }
        config.update({k: v for k, v in passthrough.items() if v is not None})
        return config

    @property
    def where(self) -> str:
        return f"kafka://{self.bootstrap}/{self.topic}"


@dataclass(frozen=True)
class KafkaSourceOptions(KafkaClientOptions):
    """Source options.

    ``session_timeout_ms`` and ``max_poll_interval_ms`` bound how long a dead member keeps its
    partitions; ``heartbeat_interval_ms`` defaults to a third of the session timeout.
    """

    group: str | None = None
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    max_poll_records: int = 500
    fetch_max_wait_ms: int = 100
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int | None = None
    max_poll_interval_ms: int = 300_000
    #: Stop after this many records (then ``exhausted``): a bounded replay, or a demo that
    #: ends by itself. Counted per process, from where it started.
    limit: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.group is not None and not self.group:
            raise ValueError("group must be a non-empty name, got ''")
        for name in ("max_poll_records", "session_timeout_ms", "max_poll_interval_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.fetch_max_wait_ms < 0:
            raise ValueError(f"fetch_max_wait_ms must be >= 0, got {self.fetch_max_wait_ms}")
        heartbeat = self.heartbeat_ms
        if not 0 < heartbeat < self.session_timeout_ms:
            raise ValueError(
                f"heartbeat_interval_ms must be in (0, session_timeout_ms="
                f"{self.session_timeout_ms}), got {heartbeat}"
            )

    @property
    def heartbeat_ms(self) -> int:
        if self.heartbeat_interval_ms is not None:
            return self.heartbeat_interval_ms
        return max(1, self.session_timeout_ms // 3)


@dataclass(frozen=True)
class KafkaSinkOptions(KafkaClientOptions):
    """Sink options. ``partitions`` creates the topic with that many partitions if it is missing."""

    acks: Literal["0", "1", "all"] = "all"
    linger_ms: int = 5
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    partitions: int | None = None
    #: How long ``flush`` waits for acknowledgements before it reports failure.
    flush_timeout_ms: int = 30_000
    #: How long the producer keeps retrying one message before handing it back to the sink,
    #: which then sends it again (with a fresh producer).
    delivery_timeout_ms: int = 120_000

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.linger_ms < 0:
            raise ValueError(f"linger_ms must be >= 0, got {self.linger_ms}")
        if self.partitions is not None and self.partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {self.partitions}")
        if self.flush_timeout_ms < 1:
            raise ValueError(f"flush_timeout_ms must be >= 1, got {self.flush_timeout_ms}")
        if self.delivery_timeout_ms < self.linger_ms + self.request_timeout_ms:
            raise ValueError(
                f"delivery_timeout_ms must be >= linger_ms + request_timeout_ms = "
                f"{self.linger_ms + self.request_timeout_ms}, got {self.delivery_timeout_ms}")


def _split_target(parsed: ParsedURI) -> tuple[str, str]:
    """``//HOST:PORT/TOPIC`` → (bootstrap, topic)."""
    target = parsed.target
    if not target.startswith("//"):
        raise ConfigError(f"{parsed.uri!r}: expected kafka://HOST:PORT/TOPIC")
    bootstrap, sep, topic = target[2:].partition("/")
    if not sep or not bootstrap or not topic:
        raise ConfigError(f"{parsed.uri!r}: expected kafka://HOST:PORT/TOPIC")
    return bootstrap, topic


def source_options(uri: str) -> KafkaSourceOptions:
    """Parse and validate a source URI; raises :class:`ConfigError` naming the bad option."""
    parsed = parse_uri(uri)
    bootstrap, topic = _split_target(parsed)
    return parse_options(KafkaSourceOptions, parsed, bootstrap=bootstrap, topic=topic)


def sink_options(uri: str) -> KafkaSinkOptions:
    """Parse and validate a sink URI; raises :class:`ConfigError` naming the bad option."""
    parsed = parse_uri(uri)
    bootstrap, topic = _split_target(parsed)
    return parse_options(KafkaSinkOptions, parsed, bootstrap=bootstrap, topic=topic)


def ensure_topic(options: KafkaClientOptions, partitions: int) -> bool:
    """Create ``options.topic`` with ``partitions`` partitions unless it exists. Blocks.

    Returns True if it was created. Raises :class:`UnavailableError` if no broker answers.
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    try:
        admin = KafkaAdminClient(**options.client_config())
    except KafkaError as exc:
        raise UnavailableError(f"{options.where}: no broker reachable: {exc}") from exc
    try:
        if options.topic in admin.list_topics():
            return False
        admin.create_topics([NewTopic(options.topic, partitions, 1)])
        log.info("created topic %s with %d partitions", options.where, partitions)
        return True
    except TopicAlreadyExistsError:
        return False
    except KafkaError as exc:
        raise UnavailableError(f"{options.where}: creating the topic failed: {exc}") from exc
    finally:
        admin.close()


class KafkaSource(Source):
    """Reads one topic through kafka-python. Called from the daemon's thread only.

    Raises :class:`UnavailableError` from :meth:`open` and :meth:`poll` while no broker can be
    reached; the daemon retries with backoff, and the consumer reconnects by itself.
    """

    def __init__(self, options: KafkaSourceOptions) -> None:
        self.options = options
        self._consumer: Any = None
        self._listener: PartitionListener | None = None
        self._start_positions: dict[int, int] = {}
        self._paused = False
        self._assigned: set[int] = set()
        self._in_rebalance = False
        self._returned = 0

    # -- lifecycle -----------------------------------------------------------------------

    def open(
        self, start_positions: Mapping[int, int], listener: PartitionListener | None = None
    ) -> None:
        """Connect and subscribe (with a group) or assign every partition (without). Blocks
        up to ``bootstrap_timeout_ms``; raises :class:`UnavailableError` if no broker answers.
        Calling it again after a failure retries."""
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        if self._consumer is not None:
            return
        self._listener = listener
        self._start_positions = dict(start_positions)
        o = self.options
        config = o.client_config()
        config.update(
            group_id=o.group,
            enable_auto_commit=False,
            # Reading must not create topics (with the broker's default partition count).
            allow_auto_create_topics=False,
            auto_offset_reset=o.auto_offset_reset,
            max_poll_records=o.max_poll_records,
            fetch_max_wait_ms=o.fetch_max_wait_ms,
            session_timeout_ms=o.session_timeout_ms,
            heartbeat_interval_ms=o.heartbeat_ms,
            max_poll_interval_ms=o.max_poll_interval_ms,
        )
        quiet_client_logs()
        try:
            consumer = KafkaConsumer(**config)
        except KafkaError as exc:
            raise UnavailableError(f"{o.where}: no broker reachable: {exc}") from exc
        quiet_client_logs()
        try:
            if o.group is not None:
                consumer.subscribe([o.topic], listener=_Rebalance(self))
                log.info("%s: joining consumer group %r", o.where, o.group)
            else:
                partitions = consumer.partitions_for_topic(o.topic)
                if not partitions:
                    raise UnavailableError(f"{o.where}: the topic does not exist (yet)")
                self._consumer = consumer
                consumer.assign([self._tp(p) for p in sorted(partitions)])
                self._on_assigned(sorted(partitions))
        except KafkaError as exc:
            consumer.close(autocommit=False)
            self._consumer = None
            raise UnavailableError(f"{o.where}: {exc}") from exc
        except BaseException:
            consumer.close(autocommit=False)
            self._consumer = None
            raise
        self._consumer = consumer

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close(autocommit=False)
            except Exception:  # the broker may be gone; nothing left to save here
                log.warning("%s: closing the consumer failed", self.options.where, exc_info=True)
        self._assigned.clear()

    # -- records -------------------------------------------------------------------------

    def poll(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        """Fetch up to ``max_records``. Rebalance callbacks run inside this call."""
        from kafka.errors import KafkaError

        if self._consumer is None:
            raise UnavailableError(f"{self.options.where}: the source is not open")
        if self.options.limit is not None:
            max_records = min(max_records, self.options.limit - self._returned)
            if max_records <= 0:
                return []
        try:
            batches = self._consumer.poll(
                timeout_ms=int(timeout_s * 1000), max_records=max_records
            )
        except KafkaError as exc:
            raise UnavailableError(f"{self.options.where}: {exc}") from exc
        if not batches and not self._broker_connected():
            raise UnavailableError(f"{self.options.where}: no connection to any broker")
        out: list[SourceRecord] = []
        for tp, messages in batches.items():
            out.extend(
                SourceRecord(
                    partition=tp.partition,
                    position=m.offset,
                    value=m.value,
                    key=m.key,
                    timestamp_ms=m.timestamp,
                )
                for m in messages
            )
        self._returned += len(out)
        return out

    @property
    def exhausted(self) -> bool:
        return self.options.limit is not None and self._returned >= self.options.limit

    def _broker_connected(self) -> bool:
        # kafka-python reports no error while it cannot reach a broker: it retries inside
        # poll() and returns nothing. Looking at its connections is the only way to tell
        # "no new records" from "no broker", which /readyz and the logs must tell apart.
        client = getattr(self._consumer, "_client", None)
        if client is None:
            return True
        brokers = [b.node_id for b in client.cluster.brokers()]
        if not brokers:
            return False
        return any(client.connected(node) for node in brokers)

    def commit(self, next_positions: Mapping[int, int]) -> None:
        """Commit the group's offsets to the checkpointed positions, for lag tools and
        operators. Failure is logged, not raised: the checkpoint is the truth."""
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        if self._consumer is None or self.options.group is None:
            return
        offsets = {
            self._tp(p): OffsetAndMetadata(n, "", -1)
            for p, n in next_positions.items()
            if p in self._assigned
        }
        if not offsets:
            return
        try:
            if self._in_rebalance:
                # Rebalance callbacks run on kafka-python's I/O thread, which cannot wait for
                # its own commit; fire it off, the checkpoint already holds the positions.
                self._consumer.commit_async(offsets)
            else:
                self._consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("%s: committing offsets failed (the checkpoint holds them): %s",
                        self.options.where, exc)

    # -- partitions ----------------------------------------------------------------------

    def _tp(self, partition: int) -> Any:
        from kafka import TopicPartition

        return TopicPartition(self.options.topic, partition)

    def _on_assigned(self, partitions: Sequence[int]) -> None:
        """Seek newly assigned partitions to the daemon's positions, else to the reset policy."""
        self._assigned.update(partitions)
        positions = dict(self._start_positions)
        if self._listener is not None:
            positions.update(self._listener.on_assigned(partitions))
        consumer = self._consumer
        unknown = []
        for p in partitions:
            if p in positions:
                consumer.seek(self._tp(p), positions[p])
            else:
                unknown.append(self._tp(p))
        # Without a checkpoint the reset policy decides, not the group's committed offsets:
        # committed offsets without a checkpoint mean the state that went with them is gone.
        if unknown and self.options.auto_offset_reset == "earliest":
            consumer.seek_to_beginning(*unknown)
        elif unknown:
            consumer.seek_to_end(*unknown)
        if self._paused:
            consumer.pause(*[self._tp(p) for p in partitions])
        log.info("%s: assigned partitions %s at positions %s", self.options.where,
                 sorted(partitions), {p: positions.get(p, self.options.auto_offset_reset)
                                      for p in sorted(partitions)})

    def _on_revoked(self, partitions: Sequence[int]) -> None:
        if not partitions:
            return  # kafka-python says so before the first assignment, too
        log.info("%s: partitions %s are being revoked", self.options.where, sorted(partitions))
        if self._listener is not None and partitions:
            self._listener.on_revoked(partitions)
        self._assigned.difference_update(partitions)

    def _on_lost(self, partitions: Sequence[int]) -> None:
        # Lost, not revoked (our group session expired): another member may own them already,
        # so nothing may be checkpointed or committed for them. A listener with ``on_lost``
        # just lets go; one without it is told they were revoked.
        log.warning("%s: partitions %s were lost (group session expired)", self.options.where,
                    sorted(partitions))
        on_lost = getattr(self._listener, "on_lost", None)
        if on_lost is not None:
            on_lost(partitions)
        elif self._listener is not None:
            self._listener.on_revoked(partitions)
        self._assigned.difference_update(partitions)

    def assigned(self) -> Collection[int]:
        return sorted(self._assigned)

    def lag(self) -> Mapping[int, int]:
        """Records behind the high-water mark the last fetch reported. Approximate: some
        brokers (Tansu) report a high-water mark that trails the last batch."""
        from kafka.errors import KafkaError

        if self._consumer is None:
            return {}
        out = {}
        for p in self._assigned:
            tp = self._tp(p)
            high = self._consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = self._consumer.position(tp, timeout_ms=0)
            except KafkaError:  # position unknown until the first fetch after a seek
                position = None
            if position is not None:
                out[p] = max(0, int(high) - int(position))
        return out

    def pause(self) -> None:
        self._paused = True
        if self._consumer is not None:
            self._consumer.pause(*[self._tp(p) for p in self._assigned])

    def resume(self) -> None:
        self._paused = False
        if self._consumer is not None:
            self._consumer.resume(*self._consumer.paused())


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Adapts kafka-python's ConsumerRebalanceListener to :class:`PartitionListener`."""

    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    # kafka-python calls these on its I/O thread, but only while the daemon's thread waits
    # inside KafkaConsumer.poll(), so they never run alongside record processing.

    def on_partitions_revoked(self, revoked: Collection[Any]) -> None:
        self._call(self.source._on_revoked, revoked)

    def on_partitions_assigned(self, assigned: Collection[Any]) -> None:
        self._call(self.source._on_assigned, assigned)

    def on_partitions_lost(self, lost: Collection[Any]) -> None:
        self._call(self.source._on_lost, lost)

    def _call(self, method: Any, tps: Collection[Any]) -> None:
        self.source._in_rebalance = True
        try:
            method([tp.partition for tp in tps])
        finally:
            self.source._in_rebalance = False


class KafkaSink(Sink):
    """Produces messages to one topic. Called from the daemon's thread; delivery callbacks
    run on the producer's I/O thread and only touch counters and the retry queue."""

    def __init__(self, options: KafkaSinkOptions) -> None:
        self.options = options
        self._producer: Any = None
        # Messages not yet handed to the producer (no broker yet, or a failed delivery).
        self._waiting: deque[SinkMessage] = deque()
        # Written by the daemon's thread only / by the I/O thread only, so no lock is needed.
        self._sent = 0
        self._acked = 0
        self._failed: deque[tuple[SinkMessage, Exception]] = deque()
        self._next_connect_at = 0.0
        self._closed = False

    def _connect(self) -> bool:
        """Create the producer if there is none; False (and a log line) while no broker answers."""
        if self._producer is not None:
            return True
        now = time.monotonic()
        if now < self._next_connect_at:
            return False
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        o = self.options
        config = o.client_config()
        config.update(
            acks="all" if o.acks == "all" else int(o.acks),
            linger_ms=o.linger_ms,
            compression_type=o.compression_type,
            delivery_timeout_ms=o.delivery_timeout_ms,
            # send() must not block the daemon for long: a full buffer is backpressure,
            # reported through backlog(), not a minute-long stall.
            max_block_ms=1_000,
        )
        try:
            if o.partitions is not None:
                ensure_topic(o, o.partitions)
            quiet_client_logs()
            self._producer = KafkaProducer(**config)
        except (KafkaError, UnavailableError) as exc:
            self._next_connect_at = now + o.reconnect_backoff_max_ms / 1000
            log.warning("%s: sink cannot reach a broker, holding %d messages: %s",
                        o.where, len(self._waiting), exc)
            return False
        log.info("%s: sink connected", o.where)
        return True

    def write(self, messages: Sequence[SinkMessage]) -> None:
        """Queue messages; never blocks on the broker for long. See :meth:`backlog`."""
        if self._closed:
            raise SinkError(f"{self.options.where}: write after close")
        self._waiting.extend(messages)
        self._drain()

    def _drain(self) -> None:
        """Hand waiting and failed messages to the producer while it accepts them."""
        from kafka.errors import KafkaError

        if self._failed:
            failed = []
            while self._failed:
                failed.append(self._failed.popleft())
            log.warning("%s: %d deliveries failed (first: %s); sending them again with a new "
                        "producer", self.options.where, len(failed), failed[0][1])
            self._waiting.extendleft(msg for msg, _ in reversed(failed))
            # Some failures leave a producer unusable for good (an idempotent producer whose
            # id the broker forgot, after a broker lost its state): start afresh.
            self._discard_producer()
        if not self._waiting or not self._connect():
            return
        producer = self._producer
        topic = self.options.topic
        while self._waiting:
            msg = self._waiting[0]
            try:
                future = producer.send(
                    topic, value=msg.value, key=msg.key, headers=list(msg.headers)
                )
            except KafkaError as exc:
                # Buffer full or no metadata in time: the rest waits here, counted in backlog.
                log.debug("%s: producer did not take a message: %s", self.options.where, exc)
                return
            self._waiting.popleft()
            self._sent += 1
            future.add_callback(self._on_acked)
            future.add_errback(self._on_failed, msg)

    def _on_acked(self, _metadata: Any) -> None:
        self._acked += 1

    def _on_failed(self, msg: SinkMessage, exc: Exception) -> None:
        # kafka-python calls errbacks with the bound arguments first, the exception last.
        self._failed.append((msg, exc))
        self._acked += 1  # no longer in flight; it is counted again when re-sent

    def _discard_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            # Nothing to wait for: what it still holds fails over to the retry queue.
            producer.close(timeout=0)
        except Exception:  # a broken producer may fail to close; it is dropped either way
            log.debug("%s: closing a failed producer raised", self.options.where, exc_info=True)

    def backlog(self) -> int:
        """Messages written but not yet acknowledged by the broker."""
        return len(self._waiting) + len(self._failed) + (self._sent - self._acked)

    def flush(self) -> None:
        """Block until every message written so far is acknowledged; raises SinkError after
        ``flush_timeout_ms``. Failed deliveries are sent again meanwhile."""
        from kafka.errors import KafkaError

        deadline = time.monotonic() + self.options.flush_timeout_ms / 1000
        while True:
            self._drain()
            if self._producer is not None:
                remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
                try:
                    self._producer.flush(timeout=remaining_ms / 1000)
                except KafkaError as exc:
                    raise SinkError(f"{self.options.where}: flush failed: {exc}") from exc
            if self.backlog() == 0:
                return
            if time.monotonic() >= deadline:
                raise SinkError(
                    f"{self.options.where}: {self.backlog()} messages not acknowledged within "
                    f"flush_timeout_ms={self.options.flush_timeout_ms}"
                )
            time.sleep(0.05)  # failed deliveries came back; give the reconnect a moment

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=5)
            except Exception:
                log.warning("%s: closing the producer failed", self.options.where, exc_info=True)
        if self.backlog():
            log.warning("%s: closed with %d messages not delivered", self.options.where,
                        self.backlog())


class KafkaConnector(Connector):
    scheme = "kafka"
    description = "Apache Kafka topics: consumer-group source, keyed producer sink"

    @classmethod
    def source(cls, uri: str) -> Source:
        return KafkaSource(source_options(uri))

    @classmethod
    def sink(cls, uri: str) -> Sink:
        return KafkaSink(sink_options(uri))

