"""adaptd's state topics on a real broker: the changelog and the meta topic are created in one
request, before the state producer bootstraps, so its first sends need no metadata round (and
no wait for its backoff); a topic that exists already is kept as it is."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka import KafkaConsumer

from adaptd.changelog import Changelog
from adaptd.checkpoint import CheckpointStore
from adaptd.meta_sync import MetaSync
from adaptd.state_topics import StateClients, ensure_topic
from tests.integration.kafka_harness import produce

pytestmark = pytest.mark.integration


def test_declared_topics_are_created_together_before_the_producer(
        kafka_broker: str, kafka_topic: str) -> None:
    produce(kafka_broker, kafka_topic, [{"key": "k", "x": [1.0], "y": 1.0}], partitions=3)
    clients = StateClients(kafka_broker)
    changelog = Changelog(kafka_broker, kafka_topic, "g", clients=clients)
    meta = MetaSync(kafka_broker, kafka_topic, "g", clients=clients)
    # The meta topic exists already (another replica made it), with a partition count the
    # daemon would not give it: found, not created again, left as it is.
    ensure_topic(kafka_broker, meta.topic, 2)
    try:
        producer, _ = clients.get()
        assert clients.created(changelog.topic) and clients.created(meta.topic)
        # Known from the producer's bootstrap: a send there waits for no metadata.
        assert producer._metadata.partitions_for_topic(changelog.topic) == {0, 1, 2}
        assert producer._metadata.partitions_for_topic(meta.topic) == {0, 1}
        fence = producer.send(changelog.topic, key=b"f", value=b"{}", partition=2)
        assert fence.get(timeout=10).offset == 0
    finally:
        changelog.close()
        meta.close()
    check = KafkaConsumer(bootstrap_servers=kafka_broker)
    try:
        assert check.partitions_for_topic(changelog.topic) == {0, 1, 2}
        assert check.partitions_for_topic(meta.topic) == {0, 1}
    finally:
        check.close()


def test_a_topic_declared_after_the_clients_connected_is_created_on_first_use(
        kafka_broker: str, kafka_topic: str) -> None:
    produce(kafka_broker, kafka_topic, [{"key": "k", "x": [1.0], "y": 1.0}], partitions=2)
    clients = StateClients(kafka_broker)
    changelog = Changelog(kafka_broker, kafka_topic, "g", clients=clients)
    try:
        clients.get()
        meta = MetaSync(kafka_broker, kafka_topic, "g", clients=clients)
        assert not clients.created(meta.topic)
        producer, _ = meta.clients.get()
        assert clients.created(meta.topic)
        assert producer.send(meta.topic, key=b"r", value=b"{}", partition=0).get(
            timeout=10).offset == 0
    finally:
        changelog.close()


@pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])
def test_a_changelog_waits_for_its_source_topic_to_get_its_partition_count(
        kafka_broker: str, kafka_topic: str, tmp_path: Path, client: str) -> None:
    """A daemon started before its input topic exists connects its state clients (the meta
    topic) first: the changelog was made then with 1 partition, and the first assignment of
    the source's partition 1 raised ValueError in the producer."""
    clients = StateClients(kafka_broker, client)
    changelog = Changelog(kafka_broker, kafka_topic, "g", clients=clients)
    meta = MetaSync(kafka_broker, kafka_topic, "g", clients=clients)
    try:
        clients.get()
        assert clients.created(meta.topic) and not clients.created(changelog.topic)
        produce(kafka_broker, kafka_topic, [{"key": "k", "x": [1.0], "y": 1.0}], partitions=3)
        assert changelog.restore_all([0, 1, 2], CheckpointStore(tmp_path / "s")) == {
            0: 0, 1: 0, 2: 0}
        _, consumer = clients.get()
        assert consumer.partitions_for_topic(changelog.topic) == {0, 1, 2}
    finally:
        changelog.close()
        meta.close()


def test_a_changelog_narrower_than_its_source_is_refused_with_what_to_do(
        kafka_broker: str, kafka_topic: str, tmp_path: Path) -> None:
    produce(kafka_broker, kafka_topic, [{"key": "k", "x": [1.0], "y": 1.0}], partitions=3)
    changelog = Changelog(kafka_broker, kafka_topic, "g")
    ensure_topic(kafka_broker, changelog.topic, 2)  # made when the source had 2 partitions
    try:
        with pytest.raises(OSError, match=r"has 2 partitions, but source .* partitions \[2\] "
                                          r"were assigned.*add partitions"):
            changelog.restore_all([0, 2], CheckpointStore(tmp_path / "s"))
    finally:
        changelog.close()


@pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])
def test_clients_connected_behind_are_the_ones_the_first_get_hands_out(
        kafka_broker: str, kafka_topic: str, client: str) -> None:
    """``connect_behind`` connects, creates the declared topics and learns the changelog's
    partitions on its own thread; the first ``get`` waits for it and hands out those clients,
    whose first send lands."""
    produce(kafka_broker, kafka_topic, [{"key": "k", "x": [1.0], "y": 1.0}], partitions=3)
    clients = StateClients(kafka_broker, client)
    changelog = Changelog(kafka_broker, kafka_topic, "g", clients=clients)
    meta = MetaSync(kafka_broker, kafka_topic, "g", clients=clients)
    try:
        clients.connect_behind()
        connecting = clients._connecting
        assert connecting is not None
        producer, consumer = clients.get()
        assert not connecting.is_alive() and clients._connecting is None
        assert clients.created(changelog.topic) and clients.created(meta.topic)
        assert clients.get() == (producer, consumer)  # connected once
        assert consumer.partitions_for_topic(changelog.topic) == {0, 1, 2}
        assert producer.send(changelog.topic, key=b"f", value=b"{}", partition=1).get(
            timeout=10).offset == 0
    finally:
        changelog.close()
        meta.close()


def test_a_failed_connection_behind_is_met_again_and_raised_by_the_first_get(
        kafka_broker: str, kafka_topic: str) -> None:
    """The thread swallows its failure (no traceback on a thread nobody joins for it); the
    first ``get`` connects again, on its own thread, and raises what it meets."""
    from adaptd.connectors.kafka_options import source_options

    uri = (f"kafka://{kafka_broker}/{kafka_topic}?security_protocol=SASL_PLAINTEXT"
           "&sasl_mechanism=PLAIN&sasl_plain_username=u&sasl_plain_password=p"
           "&bootstrap_timeout_ms=1000")
    clients = StateClients(kafka_broker, "kafka-python", source_options(uri))
    MetaSync(kafka_broker, kafka_topic, None, clients=clients)
    clients.connect_behind()
    with pytest.raises(OSError, match="broker unavailable"):
        clients.get()
    clients.close()
    assert clients._connecting is None
