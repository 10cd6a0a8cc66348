"""adaptd's own Kafka topics (the changelog and the meta topic): names, creation, clients.

Both are compacted topics per source topic and consumer group, written and read with
kafka-python directly (not through a connector: they hold state, not records).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)


def topic_name(topic: str, group: str | None, kind: str) -> str:
    """``<topic>.<group>.adaptd-<kind>`` (``<topic>.adaptd-<kind>`` without a group).

    >>> topic_name("records", "g", "changelog")
    'records.g.adaptd-changelog'
    """
    return f"{topic}.{group}.adaptd-{kind}" if group else f"{topic}.adaptd-{kind}"


def ensure_topic(bootstrap: str, name: str, partitions: int) -> None:
    """Create compacted topic ``name`` unless it exists. Blocks; raises OSError when the broker
    refuses."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="adaptd-state")
    except KafkaError as exc:
        raise OSError(f"{bootstrap}: cannot create topic {name} ({exc})") from None
    try:
        admin.create_topics([NewTopic(name, partitions, 1,
                                      topic_configs={"cleanup.policy": "compact"})])
        log.info("created compacted topic %s (%d partitions)", name, partitions)
    except TopicAlreadyExistsError:
        pass
    except KafkaError as exc:
        raise OSError(f"{bootstrap}: cannot create topic {name} ({exc})") from None
    finally:
        admin.close()


class TopicClients:
    """A producer and a consumer for one of these topics, created with the topic on first use.

    Args:
        bootstrap: the brokers.
        topic: the topic's name.
        partitions: how many partitions the topic gets, asked of a connected consumer.
    """

    def __init__(self, bootstrap: str, topic: str,
                 partitions: Callable[[KafkaConsumer], int]) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self._producer: KafkaProducer | None = None
        self._consumer: KafkaConsumer | None = None

    def get(self) -> tuple[KafkaProducer, KafkaConsumer]:
        """The connected clients. Blocks; raises OSError when the broker is away."""
        if self._producer is None or self._consumer is None:
            try:
                consumer = KafkaConsumer(bootstrap_servers=self.bootstrap,
                                         enable_auto_commit=False, client_id="adaptd-state")
                ensure_topic(self.bootstrap, self.topic, self.partitions(consumer))
                # One request in flight: a retried batch never lands after a later one (a
                # checkpoint's key states after its commit marker).
                self._producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                               linger_ms=5, max_request_size=16 << 20,
                                               max_in_flight_requests_per_connection=1,
                                               client_id="adaptd-state")
                self._consumer = consumer
            except KafkaError as exc:
                raise OSError(f"{self.topic}: broker unavailable ({exc})") from None
        return self._producer, self._consumer

    def close(self) -> None:
        for client in (self._producer, self._consumer):
            if client is not None:
                client.close()
        self._producer = self._consumer = None
