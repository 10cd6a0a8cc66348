"""The changelog topic on a real broker: restores apply complete checkpoints only, ignore a
writer that was fenced off, and read only what follows the state dir's own last checkpoint;
and they stay right when a compacting broker keeps only the last record of each key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kafka import TopicPartition

from adaptd.changelog import Changelog, apply_records
from adaptd.checkpoint import CheckpointStore, PartitionChanges, decode, encode
from adaptd.state_topics import StateClients
from tests.integration.kafka_harness import produce

pytestmark = pytest.mark.integration


def publish(log: Changelog, checkpoint: int, position: int, **states: int) -> None:
    log.publish(checkpoint, {0: PartitionChanges(position, dict(states))}, {"learner": "s"})


def restored(log: Changelog, tmp: Path, name: str) -> tuple[int, dict[str, int], int]:
    """(position, key states, checkpoints applied) of partition 0 restored into a new store."""
    store = CheckpointStore(tmp / name)
    applied = log.restore(0, store)
    part = store.load([0]).partitions[0]
    return part.position, {k: store.get(0, k) for k in "abcd" if store.get(0, k) is not None}, \
        applied


@pytest.fixture(params=["kafka-python", "librdkafka"])
def changelog(kafka_broker: str, kafka_topic: str, request: pytest.FixtureRequest):
    """Changelogs of one topic, written with the producer of the source's client (kafka-python's,
    or librdkafka's behind the same interface: :mod:`adaptd.state_producer`)."""
    produce(kafka_broker, kafka_topic, [{"key": "k", "x": [1.0], "y": 1.0}], partitions=1)
    logs: list[Changelog] = []

    def make() -> Changelog:
        clients = StateClients(kafka_broker, request.param)
        logs.append(Changelog(kafka_broker, kafka_topic, "g", clients=clients))
        return logs[-1]

    yield make
    for log in logs:
        log.close()


def test_a_half_written_checkpoint_is_never_applied(changelog, tmp_path: Path) -> None:
    writer = changelog()
    writer.restore(0, CheckpointStore(tmp_path / "writer"))
    publish(writer, 1, 10, a=1, b=1)
    publish(writer, 2, 20, a=2)
    # A third checkpoint whose writer died before its commit marker: key states, no marker.
    producer, _ = writer.clients.get()
    producer.send(writer.topic, partition=0, key=b"s/b", value=encode(
        {"kind": "state", "epoch": writer.epochs[0], "checkpoint": 3, "key": "b", "state": 3,
         "labels": []})).get(timeout=10)
    assert restored(changelog(), tmp_path, "reader") == (20, {"a": 2, "b": 1}, 2)


def test_a_fenced_off_writer_is_ignored(changelog, tmp_path: Path) -> None:
    old_owner, new_owner = changelog(), changelog()
    old_owner.restore(0, CheckpointStore(tmp_path / "old"))
    publish(old_owner, 1, 10, a=1)
    new_owner.restore(0, CheckpointStore(tmp_path / "new"))  # the partition moved
    publish(old_owner, 2, 15, a=99)  # the old owner has not noticed yet: a zombie
    publish(new_owner, 3, 12, b=2)
    assert restored(changelog(), tmp_path, "reader") == (12, {"a": 1, "b": 2}, 2)


def test_a_current_state_dir_reads_only_the_tail(changelog, tmp_path: Path) -> None:
    writer, writer_store = changelog(), CheckpointStore(tmp_path / "writer")
    writer.restore(0, writer_store)
    publish(writer, 1, 10, a=1)
    store = CheckpointStore(tmp_path / "cache")
    assert changelog().restore(0, store) == 1  # the partition moved here ...
    writer.restore(0, writer_store)  # ... and back
    publish(writer, 2, 20, b=2)
    publish(writer, 3, 30, a=3)
    assert changelog().restore(0, store) == 2  # checkpoint 1 is not read again
    part = store.load([0]).partitions[0]
    assert part.position == 30 and (store.get(0, "a"), store.get(0, "b")) == (3, 2)


def _log(log: Changelog) -> list[tuple[int, bytes, dict[str, Any]]]:
    """Every record of changelog partition 0 as (offset, key, value), read from the broker up
    to a fence appended for the purpose (the broker's end offsets are not relied on)."""
    end = log._fence(0)
    _, consumer = log.clients.get()
    tp = TopicPartition(log.topic, 0)
    consumer.assign([tp])
    consumer.seek(tp, 0)
    out = []
    while consumer.position(tp) <= end:
        for record in consumer.poll(timeout_ms=200).get(tp, ()):
            if record.offset <= end:
                out.append((record.offset, record.key, dict(decode(record.value, "test"))))
    return out


def _compact(records: list[tuple[int, bytes, dict[str, Any]]],
             key=lambda key, value: key) -> list[tuple[int, dict[str, Any]]]:
    """The worst a compacting broker may leave: the last record of each compaction key only,
    in log order (what Kafka's log compaction guarantees, and no more)."""
    last = {key(k, v): offset for offset, k, v in records}
    return [(offset, v) for offset, k, v in records if last[key(k, v)] == offset]


def test_compaction_cannot_trade_a_committed_state_for_a_half_written_one(
        changelog, tmp_path: Path) -> None:
    writer = changelog()
    writer.restore(0, CheckpointStore(tmp_path / "writer"))
    publish(writer, 1, 10, a=1, b=1)
    publish(writer, 2, 20, a=2)
    publish(writer, 3, 30, b=3)
    # Checkpoint 4 dies half written: both keys' states are sent, its marker never is.
    producer, _ = writer.clients.get()
    writer._send_states(producer, 0, writer.epochs[0], 4,
                        PartitionChanges(40, {"a": 4, "b": 4}), writer._slot_one[0])
    producer.flush(timeout=10)
    new_owner = changelog()  # the partition moves ...
    new_owner.restore(0, CheckpointStore(tmp_path / "new"))
    publish(new_owner, 5, 35, a=5)
    publish(writer, 6, 45, a=99, b=99)  # ... and the old owner, a zombie, writes on
    records = _log(changelog())

    def restore(compacted: list[tuple[int, dict[str, Any]]], name: str) -> tuple[Any, ...]:
        store = CheckpointStore(tmp_path / name)
        apply_records(compacted, 0, store, replace=True)
        return store.load([0]).partitions[0].position, store.get(0, "a"), store.get(0, "b")

    expected = (35, 5, 3)  # checkpoint 5 over 3: the last complete one of each key
    assert restore([(o, v) for o, _, v in records], "whole") == expected
    assert restore(_compact(records), "compacted") == expected
    # Keyed by key alone, as before, the same compaction loses committed states.
    by_key = _compact(records, key=lambda k, v: v.get("key") or k)
    assert restore(by_key, "keyed-by-key") != expected


@pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])
def test_the_state_clients_speak_the_sources_security_protocol(kafka_broker: str,
                                                                kafka_topic: str,
                                                                client: str) -> None:
    """The changelog's and meta topic's clients are made from the source URI's options, its
    security settings included: a cluster that makes the source authenticate makes them too.
    Told to authenticate (SASL) to this broker, which has no such user, they cannot connect
    (before, they ignored it and connected in plaintext); told nothing, they connect."""
    from adaptd.service import state_clients_for
    from adaptd.settings import Settings

    base = f"kafka://{kafka_broker}/{kafka_topic}?group=g&client={client}"
    plain = state_clients_for(Settings(source=base))
    assert plain is not None and plain.client == client
    try:
        plain.get()
    finally:
        plain.close()
    sasl = state_clients_for(Settings(
        source=f"{base}&security_protocol=SASL_PLAINTEXT&sasl_mechanism=PLAIN"
               "&sasl_plain_username=u&sasl_plain_password=p&bootstrap_timeout_ms=2000"))
    assert sasl is not None and sasl.options is not None
    assert sasl.options.security_protocol == "SASL_PLAINTEXT"
    with pytest.raises(OSError, match="broker unavailable"):
        sasl.get()
    sasl.close()


def test_restoring_several_partitions_fences_each_and_restores_each(
        kafka_broker: str, kafka_topic: str, tmp_path: Path) -> None:
    """``restore_all`` sends the fences of every assigned partition before it waits for any:
    each partition gets its own epoch, a writer there is fenced off, and each partition's
    checkpoints come back to its own position and keys."""
    topic = f"{kafka_topic}-three"
    produce(kafka_broker, topic, [{"key": f"k{i}", "x": [1.0], "y": 1.0} for i in range(9)],
            partitions=3)
    logs = [Changelog(kafka_broker, topic, "g", clients=StateClients(kafka_broker, client))
            for client in ("librdkafka", "librdkafka", "kafka-python")]
    writer, new_owner, reader = logs
    try:
        assert writer.restore_all([0, 1, 2], CheckpointStore(tmp_path / "w")) == \
            {0: 0, 1: 0, 2: 0}
        assert writer.epochs == {0: 0, 1: 0, 2: 0}
        writer.publish(1, {p: PartitionChanges(10 + p, {f"k{p}": p}) for p in range(3)},
                       {"learner": "s"})
        new_owner.restore_all([1, 2], CheckpointStore(tmp_path / "n"))
        assert new_owner.epochs == {1: 3, 2: 3}  # after the writer's fence, state, marker
        writer.publish(2, {p: PartitionChanges(20 + p, {f"k{p}": 99}) for p in range(3)},
                       {"learner": "s"})  # a zombie in partitions 1 and 2
        store = CheckpointStore(tmp_path / "r")
        assert reader.restore_all([0, 1, 2], store) == {0: 2, 1: 1, 2: 1}
        parts = store.load([0, 1, 2]).partitions
        assert {p: parts[p].position for p in range(3)} == {0: 20, 1: 11, 2: 12}
        assert [store.get(p, f"k{p}") for p in range(3)] == [99, 1, 2]
    finally:
        for log in logs:
            log.close()
