"""adaptd's own Kafka topics (the changelog and the meta topic): names, creation, clients.

Both are compacted topics per source topic and consumer group, written and read with
kafka-python directly (not through a connector: they hold state, not records).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kafka import KafkaConsumer, KafkaProducer
from kafka import errors as kafka_errors
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

if TYPE_CHECKING:
    from adaptd.connectors.kafka_options import KafkaClientOptions

log = logging.getLogger(__name__)


#: The client id of adaptd's state-topic clients (brokers' quotas and logs tell them apart).
STATE_CLIENT_ID = "adaptd-state"


def topic_name(topic: str, group: str | None, kind: str) -> str:
    """``<topic>.<group>.adaptd-<kind>`` (``<topic>.adaptd-<kind>`` without a group).

    >>> topic_name("records", "g", "changelog")
    'records.g.adaptd-changelog'
    """
    return f"{topic}.{group}.adaptd-{kind}" if group else f"{topic}.adaptd-{kind}"


def ensure_topic(bootstrap: str, name: str, partitions: int) -> None:
    """Create compacted topic ``name`` unless it exists. Blocks; raises OSError when the broker
    refuses."""
    clients = StateClients(bootstrap)
    try:
        clients.ensure_topic(name, partitions)
    finally:
        clients.close()


class StateClients:
    """The kafka-python clients of adaptd's own topics on one cluster: one producer, one
    consumer, and an admin client once a topic is created. The changelog and the meta topic
    share them (the daemon passes one to both): every client bootstraps on its own (connections,
    API version probes, metadata), and six of them took a third of a second of each start.

    The topics its users declare (:meth:`declare`) are created together, in one request, before
    the producer exists: a producer learns the topics the broker has at its bootstrap, whereas
    one bootstrapped before a topic was created waits out its metadata backoff
    (``retry_backoff_ms``, 100 ms) before its first send there can learn it — once for the
    changelog's fences and again for the meta topic's record, 0.2 s of every fresh start.

    Args:
        bootstrap: the brokers.
        client: the source's Kafka client: with ``librdkafka`` the producer is librdkafka's
            (:class:`~adaptd.state_producer.LibrdkafkaStateProducer`, same interface), so a
            checkpoint's publish does not wait on kafka-python's sender thread.
        options: the source's client options, whose security settings (SASL, SSL) and
            timeouts every state client takes too: a cluster that asks the source to
            authenticate asks these clients as well. None: plaintext to ``bootstrap``.
    """

    def __init__(self, bootstrap: str, client: str = "kafka-python",
                 options: KafkaClientOptions | None = None) -> None:
        self.bootstrap = bootstrap
        self.client = client
        self.options = options
        self._producer: Any = None
        self._consumer: KafkaConsumer | None = None
        self._admin: KafkaAdminClient | None = None
        #: Topic name → its partition count, asked of the connected consumer: created by the
        #: first :meth:`get` (and again after a :meth:`close`).
        self._declared: dict[str, Callable[[KafkaConsumer], int]] = {}
        self._created: set[str] = set()
        #: The thread connecting them ahead of their first use (:meth:`connect_behind`).
        self._connecting: threading.Thread | None = None

    def declare(self, name: str, partitions: Callable[[KafkaConsumer], int]) -> None:
        """Have compacted topic ``name`` created with the others by the first :meth:`get`."""
        self._declared[name] = partitions

    def created(self, name: str) -> bool:
        """Whether topic ``name`` was created (or found) since the clients connected."""
        return name in self._created

    def connect_behind(self) -> None:
        """Start connecting the clients, creating the declared topics and learning their
        partitions' leaders on a thread of their own, while the daemon does the rest of its
        start (the source's connection and group join): these are sequential round trips,
        57–160 ms that the first assignment's restore otherwise waited for. The first
        :meth:`get` (or :meth:`close`) waits for the thread; a failure there is left to that
        :meth:`get` to meet again and raise. Does not block."""
        if self._connecting is None and self._producer is None and self._declared:
            self._connecting = threading.Thread(target=self._connect_quietly,
                                                name="adaptd-state-connect", daemon=True)
            self._connecting.start()

    def _connect_quietly(self) -> None:
        try:
            producer, _ = self._connect()
            for name in self._created:  # the producer's first send there finds them known
                producer.partitions_for(name)
        except Exception as exc:  # noqa: BLE001 - whatever it was, the first get() meets it again
            log.debug("state topics not connected ahead (%s): retried on first use", exc)

    def _joined(self) -> None:
        """Wait for :meth:`connect_behind`'s thread: the clients are one thread's at a time."""
        if self._connecting is not None:
            self._connecting.join()
            self._connecting = None

    def get(self) -> tuple[Any, KafkaConsumer]:
        """The connected clients (a producer with kafka-python's interface), every declared
        topic created. Blocks; raises OSError when the broker is away or refuses a topic."""
        self._joined()
        return self._connect()

    def _connect(self) -> tuple[Any, KafkaConsumer]:
        if self._producer is None or self._consumer is None:
            try:
                consumer = self._consumer or KafkaConsumer(
                    **self._config(), enable_auto_commit=False)
                self._consumer = consumer
                # Before the producer: it then knows them from its bootstrap (class docstring).
                # A copy: a topic declared meanwhile (connect_behind's thread) is made on use.
                counts = {name: partitions(consumer) for name, partitions
                          in list(self._declared.items()) if name not in self._created}
                # A count of 0 (its source topic is not there yet): made on its first use.
                self._create({name: n for name, n in counts.items() if n})
                self._producer = self._new_producer()
            except KafkaError as exc:
                raise OSError(f"{self.bootstrap}: broker unavailable ({exc})") from None
        return self._producer, self._consumer

    def _new_producer(self) -> Any:
        if self.client == "librdkafka":
            from adaptd.state_producer import LibrdkafkaStateProducer

            base = self.options.librdkafka_config() if self.options is not None else {
                "bootstrap.servers": self.bootstrap}
            return LibrdkafkaStateProducer({**base, "client.id": STATE_CLIENT_ID})
        # One request in flight: a retried batch never lands after a later one (a checkpoint's
        # key states after its commit marker).
        return KafkaProducer(**self._config(), acks="all", linger_ms=5,
                             max_request_size=16 << 20, max_in_flight_requests_per_connection=1)

    def _config(self) -> dict[str, Any]:
        """kafka-python's keyword arguments for every client of these topics."""
        base = self.options.client_config() if self.options is not None else {
            "bootstrap_servers": self.bootstrap}
        return {**base, "client_id": STATE_CLIENT_ID}

    def ensure_topic(self, name: str, partitions: int) -> None:
        """Create compacted topic ``name`` unless it exists. Blocks; raises OSError when the
        broker refuses."""
        if name not in self._created:
            self._create({name: partitions})

    def _create(self, partitions: dict[str, int]) -> None:
        """Create the compacted topics ``partitions`` names (with that many partitions each)
        that do not exist, in one request. Blocks; raises OSError when the broker refuses."""
        if not partitions:
            return
        try:
            if self._admin is None:
                self._admin = KafkaAdminClient(**self._config())
            answer = self._admin.create_topics(
                [NewTopic(name, n, 1, topic_configs={"cleanup.policy": "compact"})
                 for name, n in partitions.items()], raise_errors=False)
        except KafkaError as exc:
            raise OSError(f"{self.bootstrap}: cannot create topics {sorted(partitions)} "
                          f"({exc})") from None
        for topic in answer["topics"]:
            name, error = topic["name"], kafka_errors.for_code(topic["error_code"])
            if error is kafka_errors.NoError:
                log.info("created compacted topic %s (%d partitions)", name, partitions[name])
            elif error is not TopicAlreadyExistsError:
                raise OSError(f"{self.bootstrap}: cannot create topic {name} ({error.__name__}: "
                              f"{topic.get('error_message') or error.description})")
            self._created.add(name)

    def close(self) -> None:
        """Close the clients (idempotent: each user of a shared instance closes it)."""
        self._joined()
        for client in (self._producer, self._consumer, self._admin):
            if client is not None:
                client.close()
        self._producer = self._consumer = self._admin = None
        self._created.clear()  # a broker that lost them (kept in memory) gets them again


class TopicClients:
    """The producer and consumer for one of these topics, created with the topic on first use.

    Args:
        clients: the cluster's clients (shared with the other state topic, or its own).
        topic: the topic's name.
        partitions: how many partitions the topic gets, asked of a connected consumer (0: not
            known yet; the topic is made on first use).
    """

    def __init__(self, clients: StateClients, topic: str,
                 partitions: Callable[[KafkaConsumer], int]) -> None:
        self.clients = clients
        self.topic = topic
        self.partitions = partitions
        self._ready = False
        clients.declare(topic, partitions)

    def get(self) -> tuple[Any, KafkaConsumer]:
        """The connected clients, the topic created. Blocks; raises OSError when the broker
        is away."""
        producer, consumer = self.clients.get()
        if not self._ready:
            # Created by the clients' first get, unless they were connected before this topic
            # was declared (or reconnected since): then here, alone.
            if not self.clients.created(self.topic):
                try:
                    partitions = self.partitions(consumer)
                except KafkaError as exc:
                    raise OSError(f"{self.topic}: broker unavailable ({exc})") from None
                if not partitions:
                    raise OSError(f"{self.topic}: the topic it follows is not known to the "
                                  f"broker (yet)")
                self.clients.ensure_topic(self.topic, partitions)
            self._ready = True
        return producer, consumer

    def close(self) -> None:
        self._ready = False
        self.clients.close()
