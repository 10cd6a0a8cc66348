"""Kafka URI options: one model for both clients, validated before anything connects.

URI (contract): ``kafka://HOST:PORT[,HOST:PORT…]/TOPIC[?group=G][&client=kafka-python|librdkafka]
[&option=value…]``. Every option means the same with either client; :meth:`KafkaClientOptions.
client_config` and :meth:`KafkaClientOptions.librdkafka_config` translate them into each
client's own names, so the two clients cannot drift apart in what a URI means.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

from adaptd.connectors.base import ParsedURI, parse_options, parse_uri
from adaptd.errors import ConfigError

Client = Literal["kafka-python", "librdkafka"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER"]


#: The default ``fetch_max_wait_ms``: how long the broker may hold a fetch that finds no new
#: records while records come. Tansu (the tests' broker) holds such a fetch for all of it, so
#: it is part of every record's latency there (see :class:`KafkaSourceOptions`).
FETCH_MAX_WAIT_MS = 10

#: kafka-python's default ``idle_fetch_max_wait_ms``: the wait once no record came for
#: :data:`IDLE_AFTER_S`. librdkafka fetches in C threads and wakes the daemon only for records:
#: an idle ``adaptd run`` on a 4-partition topic used 0.9% of a core at a 10-ms wait (0.2% at
#: 100). kafka-python returns each empty fetch to the daemon's loop: 13% of a core at 10 ms,
#: 6.6% at 25, 1.4% at 100 (CPU over 10 s); so it fetches with the short wait only while
#: records come.
IDLE_FETCH_MAX_WAIT_MS = 100

#: Seconds without a record after which kafka-python's source fetches with
#: ``idle_fetch_max_wait_ms``; the first records to come back wait out at most one such fetch.
IDLE_AFTER_S = 1.0


@dataclass(frozen=True)
class KafkaClientOptions:
    """Options both the source and the sink take. ``bootstrap`` and ``topic`` come from the URI.

    Times are milliseconds because that is what operators know from Kafka's own settings.
    """

    bootstrap: str
    topic: str
    #: Which Kafka client library does the I/O: pure-Python kafka-python (always installed), or
    #: librdkafka through confluent-kafka (``pip install 'adaptd[librdkafka]'``), the faster.
    client: Client = "kafka-python"
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

    @property
    def password(self) -> str | None:
        if self.sasl_plain_password_env is not None:
            return os.environ[self.sasl_plain_password_env]
        return self.sasl_plain_password

    def client_config(self) -> dict[str, Any]:
        """kafka-python keyword arguments common to KafkaConsumer, KafkaProducer and
        KafkaAdminClient."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap.split(","),
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
            "bootstrap_timeout_ms": self.bootstrap_timeout_ms,
            "reconnect_backoff_max_ms": self.reconnect_backoff_max_ms,
            "security_protocol": self.security_protocol,
            "ssl_check_hostname": self.ssl_check_hostname,
        }
        passthrough = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_plain_username,
            "sasl_plain_password": self.password,
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
            "ssl_password": self.ssl_password,
        }
        config.update({k: v for k, v in passthrough.items() if v is not None})
        return config

    def librdkafka_config(self) -> dict[str, Any]:
        """The same settings as librdkafka configuration properties (consumer, producer and
        admin client alike)."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "client.id": self.client_id,
            "socket.timeout.ms": self.request_timeout_ms,
            "reconnect.backoff.max.ms": self.reconnect_backoff_max_ms,
            "security.protocol": self.security_protocol,
            "ssl.endpoint.identification.algorithm":
                "https" if self.ssl_check_hostname else "none",
        }
        passthrough = {
            "sasl.mechanisms": self.sasl_mechanism,
            "sasl.username": self.sasl_plain_username,
            "sasl.password": self.password,
            "ssl.ca.location": self.ssl_cafile,
            "ssl.certificate.location": self.ssl_certfile,
            "ssl.key.location": self.ssl_keyfile,
            "ssl.key.password": self.ssl_password,
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
    #: Longest time the broker may hold a fetch that finds no new records, while records come.
    #: Apache Kafka answers a waiting fetch as soon as records arrive, so there this only paces
    #: an idle consumer. Other brokers answer it late: on Tansu, which the tests run, a record
    #: produced into an idle topic was read a median 98 ms later (at most 201) with a 500 ms
    #: wait, 13 (47) with 100 ms, 3 (7) with 10 ms; there the wait is part of every record's
    #: latency.
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS
    #: kafka-python only: the wait once no record came for :data:`IDLE_AFTER_S` (None: the
    #: larger of :data:`IDLE_FETCH_MAX_WAIT_MS` and ``fetch_max_wait_ms``), so that an idle
    #: daemon does not wake for an empty fetch every 10 ms.
    idle_fetch_max_wait_ms: int | None = None
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
        idle = self.idle_fetch_max_wait_ms
        if idle is not None and self.client != "kafka-python":
            raise ValueError("idle_fetch_max_wait_ms applies to client=kafka-python only "
                             "(librdkafka's empty fetches do not wake the daemon)")
        if idle is None:
            idle = max(self.fetch_max_wait_ms, IDLE_FETCH_MAX_WAIT_MS)
            if self.client != "kafka-python":
                idle = self.fetch_max_wait_ms
            object.__setattr__(self, "idle_fetch_max_wait_ms", idle)
        elif idle < self.fetch_max_wait_ms:
            raise ValueError(f"idle_fetch_max_wait_ms must be >= fetch_max_wait_ms="
                             f"{self.fetch_max_wait_ms}, got {idle}")
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
    """Sink options. ``partitions`` creates the topic with that many partitions if it is missing.

    The producer defaults favour throughput at a latency of milliseconds: predictions are
    small (~150 bytes) and come in polled batches of hundreds, so ``batch_bytes`` of 256 KiB
    (~1700 predictions) lets one request carry a whole polled batch per partition where
    kafka-python's 16 KiB default would cut it into many, and stays well under the 1 MiB
    request and message limits of brokers and clients; ``linger_ms`` of 5
    gathers a batch without adding visible latency; ``acks=all`` because a prediction the
    checkpoint counts as flushed must survive a broker failover. Compression is off by
    default: on a loopback or LAN link it costs more CPU than it saves (lz4 or zstd pay off
    across a WAN).
    """

    acks: Literal["0", "1", "all"] = "all"
    linger_ms: int = 5
    #: Upper bound of one produce batch (per partition), bytes.
    batch_bytes: int = 262_144
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
        if self.batch_bytes < 1024:
            raise ValueError(f"batch_bytes must be >= 1024, got {self.batch_bytes}")
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
