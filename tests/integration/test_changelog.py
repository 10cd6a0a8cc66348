"""The changelog topic on a real broker: restores apply complete checkpoints only, ignore a
writer that was fenced off, and read only what follows the state dir's own last checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaptd.changelog import Changelog
from adaptd.checkpoint import CheckpointStore, PartitionChanges, encode
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


@pytest.fixture
def changelog(kafka_broker: str, kafka_topic: str):
    produce(kafka_broker, kafka_topic, [{"key": "k", "x": [1.0], "y": 1.0}], partitions=1)
    logs: list[Changelog] = []

    def make() -> Changelog:
        logs.append(Changelog(kafka_broker, kafka_topic, "g"))
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
