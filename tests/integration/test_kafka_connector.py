"""The Kafka connector against a real broker: keyed produce with headers, reading every
partition, seeking to the daemon's positions instead of the group's offsets, commit, options."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from pathlib import Path

import pytest

from adaptd.broker import EmbeddedBroker, free_port
from adaptd.connectors.base import EncodedBatch, RecordRun, SinkMessage, SourceRecord
from adaptd.connectors.kafka import kafka_sink, kafka_source, sink_options, source_options
from adaptd.connectors.kafka_common import KafkaSourceBase
from adaptd.errors import UnavailableError
from tests.helpers import wait_for
from tests.integration.kafka_harness import CLIENTS, TcpProxy, read_topic

#: Each test runs through both clients, against the same broker.
pytestmark = pytest.mark.parametrize("client", CLIENTS)

FAST_GROUP = "session_timeout_ms=6000&heartbeat_interval_ms=500&max_poll_interval_ms=20000"


class Positions:
    """A PartitionListener that hands out fixed positions and records what it was told."""

    def __init__(self, positions: Mapping[int, int] | None = None) -> None:
        self.positions = dict(positions or {})
        self.assigned: list[list[int]] = []
        self.revoked: list[list[int]] = []

    def on_assigned(self, partitions: Collection[int]) -> Mapping[int, int]:
        self.assigned.append(sorted(partitions))
        return {p: n for p, n in self.positions.items() if p in partitions}

    def on_revoked(self, partitions: Collection[int]) -> None:
        self.revoked.append(sorted(partitions))


def produce(bootstrap: str, topic: str, n: int, partitions: int = 3,
            client: str = "kafka-python") -> None:
    sink = kafka_sink(sink_options(
        f"kafka://{bootstrap}/{topic}?partitions={partitions}&client={client}"))
    sink.write([
        SinkMessage(value=f'{{"i":{i}}}'.encode(), key=f"k{i % 5}".encode(),
                    headers=(("n", str(i).encode()),))
        for i in range(n)
    ])
    sink.flush()
    assert sink.backlog() == 0
    sink.close()


def where_kafka_python_puts(bootstrap: str, topic: str, keys: set[bytes], partitions: int
                            ) -> dict[bytes | None, int]:
    """The partition kafka-python's own ``KafkaProducer.send`` (its default partitioner, the
    Java client's murmur2) gives each key, on a new topic of ``partitions`` partitions."""
    from kafka import KafkaProducer

    from adaptd.connectors.kafka import ensure_topic

    ensure_topic(sink_options(f"kafka://{bootstrap}/{topic}"), partitions)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        return {key: producer.send(topic, b"", key).get(timeout=30).partition for key in keys}
    finally:
        producer.close()


def read_all(source: KafkaSourceBase, n: int, timeout_s: float = 30.0) -> list[SourceRecord]:
    out: list[SourceRecord] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n:
        assert time.monotonic() < deadline, f"read {len(out)} of {n} records"
        out.extend(source.poll(500, 0.2))
    return out



def read_with(client: str, broker: str, topic: str, n: int) -> list[SourceRecord]:
    """``n`` records of ``topic`` read by a fresh source of ``client`` (the harness's
    :func:`read_topic` reads with the default client), closed after."""
    source = kafka_source(source_options(f"kafka://{broker}/{topic}?client={client}"))
    source.open({}, None)
    try:
        return read_all(source, n)
    finally:
        source.close()

def test_every_record_comes_back_keyed_and_in_order_per_partition(
        kafka_broker: str, kafka_topic: str, client: str) -> None:
    produce(kafka_broker, kafka_topic, 300, client=client)
    source = kafka_source(source_options(f"kafka://{kafka_broker}/{kafka_topic}?client={client}"))
    listener = Positions()
    source.open({}, listener)
    try:
        records = read_all(source, 300)
    finally:
        source.close()
    assert listener.assigned == [[0, 1, 2]]
    assert sorted(int(r.value[5:-1]) for r in records) == list(range(300))
    by_key: dict[bytes | None, set[int]] = {}
    for r in records:
        by_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(parts) == 1 for parts in by_key.values()), "a key spans partitions"
    for p in range(3):
        positions = [r.position for r in records if r.partition == p]
        assert positions == list(range(len(positions)))


def test_the_daemons_positions_win_over_the_groups_committed_offsets(
        kafka_broker: str, kafka_topic: str, client: str) -> None:
    produce(kafka_broker, kafka_topic, 90, partitions=1, client=client)
    uri = (f"kafka://{kafka_broker}/{kafka_topic}?group=g-{kafka_topic}&{FAST_GROUP}"
           f"&client={client}")
    first = kafka_source(source_options(uri))
    first.open({}, Positions())
    try:
        assert len(read_all(first, 90)) == 90
        first.commit({0: 80})
    finally:
        first.close()
    # The group has committed 80, but the checkpoint says 30: the source must start at 30.
    second = kafka_source(source_options(uri))
    listener = Positions({0: 30})
    second.open({}, listener)
    try:
        records = read_all(second, 60)
    finally:
        second.close()
    assert [r.position for r in records] == list(range(30, 90))
    assert listener.assigned == [[0]]


def test_pause_stops_fetching_until_resume(kafka_broker: str, kafka_topic: str,
                                           client: str) -> None:
    produce(kafka_broker, kafka_topic, 50, partitions=1, client=client)
    source = kafka_source(source_options(f"kafka://{kafka_broker}/{kafka_topic}?client={client}"))
    source.open({0: 0}, None)
    try:
        source.pause()
        assert source.poll(100, 0.5) == []
        source.resume()
        assert len(read_all(source, 50)) == 50
    finally:
        source.close()


def test_an_unreachable_broker_is_reported_as_unavailable(kafka_topic: str,
                                                          client: str) -> None:
    uri = f"kafka://127.0.0.1:{free_port()}/{kafka_topic}?bootstrap_timeout_ms=300&client={client}"
    source = kafka_source(source_options(uri))
    with pytest.raises(UnavailableError, match="no broker reachable"):
        source.open({}, None)
    sink = kafka_sink(sink_options(uri))
    sink.write([SinkMessage(value=b"{}")])  # held, not lost, not raised
    assert sink.backlog() == 1
    sink.close()


def test_deliveries_that_fail_while_the_broker_is_away_are_sent_again(
        kafka_topic: str, tmp_path: Path, client: str) -> None:
    proxy_port = free_port()
    with EmbeddedBroker(advertised_port=proxy_port, log_path=tmp_path / "broker.log") as broker:
        proxy = TcpProxy(broker.port, proxy_port)
        proxy.start()
        bootstrap = f"127.0.0.1:{proxy_port}"
        sink = kafka_sink(sink_options(
            f"kafka://{bootstrap}/{kafka_topic}?client={client}&partitions=1"
            "&request_timeout_ms=500"
            "&delivery_timeout_ms=1000&flush_timeout_ms=20000&reconnect_backoff_max_ms=200"))
        try:
            sink.write([SinkMessage(value=f"before-{i}".encode()) for i in range(10)])
            sink.flush()
            proxy.stop()
            sink.write([SinkMessage(value=f"during-{i}".encode()) for i in range(30)])
            # The daemon writes predictions pre-encoded: those are kept and resent alike.
            sink.write_encoded(EncodedBatch(
                b"".join(f"during-{i}\n".encode() for i in range(30, 50)), [None] * 20))
            wait_for(lambda: sink.failed_deliveries > 0, 20, "deliveries to fail")
            assert sink.backlog() == 50
            proxy.start()
            sink.flush()
            assert sink.backlog() == 0
        finally:
            sink.close()
            values = {r.value for r in read_topic(bootstrap, kafka_topic, 60)}
            proxy.stop()
    assert {f"before-{i}".encode() for i in range(10)} <= values
    assert {f"during-{i}".encode() for i in range(50)} <= values


def test_the_first_write_to_a_topic_not_created_yet_does_not_wait_for_it(
        kafka_broker: str, kafka_topic: str, client: str) -> None:
    sink = kafka_sink(sink_options(f"kafka://{kafka_broker}/{kafka_topic}?client={client}"))
    values = [f'{{"i":{i}}}'.encode() for i in range(50)]
    keys = [f"k{i % 5}".encode() for i in range(50)]
    sink.write_encoded(EncodedBatch(b"".join(v + b"\n" for v in values), keys))
    if client == "kafka-python":
        # The broker creates the topic when the producer first asks for it: the messages
        # wait in the sink meanwhile, where KafkaProducer.partitions_for would hold the
        # daemon's thread (only the daemon's thread takes them out of the sink).
        assert len(sink._waiting) == 50
    assert sink.backlog() == 50
    sink.flush()
    assert sink.backlog() == 0
    sink.close()
    records = read_with(client, kafka_broker, kafka_topic, 50)
    assert sorted((r.value, r.key) for r in records) == sorted(zip(values, keys))


def test_an_encoded_batch_lands_like_the_same_messages_written_one_by_one(
        kafka_broker: str, kafka_topic: str, client: str) -> None:
    uri = f"kafka://{kafka_broker}/{kafka_topic}?partitions=3&client={client}"
    sink = kafka_sink(sink_options(uri))
    values = [f'{{"i":{i}}}'.encode() for i in range(400)]
    keys = [f"k{i % 7}".encode() for i in range(400)]
    sink.write(list(map(SinkMessage, values[:200], keys[:200])))
    sink.write_encoded(EncodedBatch(b"".join(v + b"\n" for v in values[200:]), keys[200:]))
    sink.flush()
    assert sink.backlog() == 0
    sink.close()
    records = read_with(client, kafka_broker, kafka_topic, 400)
    assert sorted((int(r.value[5:-1]), r.key) for r in records) == list(zip(range(400), keys))
    partition_of_key: dict[bytes | None, set[int]] = {}
    for r in records:
        partition_of_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(p) == 1 for p in partition_of_key.values()), "a key spans partitions"
    assert {k: p.pop() for k, p in partition_of_key.items()} == \
        where_kafka_python_puts(kafka_broker, f"{kafka_topic}-oracle", set(keys), 3)
    for p in range(3):
        in_partition = [int(r.value[5:-1]) for r in sorted(records, key=lambda r: r.position)
                        if r.partition == p]
        assert in_partition == sorted(in_partition), "written order not kept"


def read_runs(source: KafkaSourceBase, runs: list[RecordRun], n: int, max_records: int,
              deadline: float) -> None:
    """Poll until ``runs`` hold ``n`` records; every poll that returns records returns a run
    of one partition's consecutive positions."""
    while sum(map(len, runs)) < n:
        assert time.monotonic() < deadline, f"read {sum(map(len, runs))} of {n} records"
        polled = source.poll_many(max_records, 0.2)
        if polled:
            assert isinstance(polled, RecordRun), "one partition, no gaps: a run"
            runs.append(polled)


def test_a_poll_from_one_partition_is_a_run_that_keeps_keys_and_timestamps(
        kafka_broker: str, kafka_topic: str, client: str) -> None:
    produce(kafka_broker, kafka_topic, 120, partitions=1, client=client)
    source = kafka_source(source_options(f"kafka://{kafka_broker}/{kafka_topic}?client={client}"))
    source.open({0: 20}, None)
    runs: list[RecordRun] = []
    try:
        read_runs(source, runs, 100, 500, time.monotonic() + 30)
    finally:
        source.close()
    assert [r.position for run in runs for r in run.records()] == list(range(20, 120))
    for run in runs:
        assert run.values == [r.value for r in run.records()]
        assert run[0].key is not None and run[0].timestamp_ms is not None
    assert [(r.key, r.value) for run in runs for r in run.records()] == [
        (f"k{i % 5}".encode(), f'{{"i":{i}}}'.encode()) for i in range(20, 120)]


def test_a_poll_over_several_partitions_is_one_partitions_run_and_the_rest_comes_next(
        kafka_broker: str, kafka_topic: str, client: str) -> None:
    """librdkafka's consume returns what it fetched of every partition together: the source
    returns the first partition's run and holds the rest for the next polls (none while
    paused). Every poll is a run; every record comes once, in order in its partition; the
    held ones count in the lag."""
    if client != "librdkafka":
        pytest.skip("kafka-python's polls are as_run's (kafka_common)")
    from adaptd.connectors.kafka_librdkafka import SPLIT_FROM

    n = 3 * SPLIT_FROM  # a consume of fewer is one list (one batch), not runs
    produce(kafka_broker, kafka_topic, n, partitions=3, client=client)
    source = kafka_source(source_options(f"kafka://{kafka_broker}/{kafka_topic}?client={client}"))
    source.open({0: 0, 1: 0, 2: 0}, None)
    runs: list[RecordRun] = []
    try:
        deadline = time.monotonic() + 30
        while not runs:
            assert time.monotonic() < deadline, "records did not come"
            time.sleep(0.5)  # time to fetch every partition, so the consume spans them
            polled = source.poll_many(n, 0.2)
            if polled:
                assert isinstance(polled, RecordRun), "a run of one partition"
                runs.append(polled)
        held = n - len(runs[0])
        assert held > 0, "the consume drew from one partition only"
        assert sum(source.lag().values()) == held
        source.pause()
        assert source.poll_many(n, 0.2) == []
        source.resume()
        read_runs(source, runs, n, n, deadline)
    finally:
        source.close()
    records = [r for run in runs for r in run.records()]
    for p in range(3):
        positions = [r.position for r in records if r.partition == p]
        assert positions == list(range(len(positions))), f"partition {p}"
    assert sorted(int(r.value[5:-1]) for r in records) == list(range(n))


@pytest.mark.parametrize("internals", ["producer", "fetcher"])
def test_kafka_pythons_per_message_fallbacks_deliver_as_well(
        kafka_broker: str, kafka_topic: str, client: str, internals: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A kafka-python release without the internals the batch paths use: ``send`` per message,
    or records read through kafka-python's own ``ConsumerRecord``."""
    if client != "kafka-python":
        pytest.skip("only kafka-python has fallback paths")
    from adaptd.connectors import kafka_python_records
    from adaptd.connectors.kafka_python_sink import BatchAppender

    if internals == "producer":
        monkeypatch.setattr(BatchAppender, "supported", staticmethod(lambda _producer: False))
    else:
        monkeypatch.setattr(kafka_python_records, "install", lambda _consumer: None)
    produce(kafka_broker, kafka_topic, 200, client=client)
    records = read_with(client, kafka_broker, kafka_topic, 200)
    assert sorted(int(r.value[5:-1]) for r in records) == list(range(200))


def test_a_tombstone_reads_as_no_bytes(kafka_broker: str, kafka_topic: str, client: str) -> None:
    """A message without a value (a compacted topic's delete marker) is a record of no bytes,
    which the daemon dead-letters as data, through either client, in a run or alone."""
    from confluent_kafka import Producer

    produce(kafka_broker, kafka_topic, 3, partitions=1, client=client)
    producer = Producer({"bootstrap.servers": kafka_broker})
    producer.produce(kafka_topic, None, b"gone")
    assert producer.flush(30) == 0
    records = read_with(client, kafka_broker, kafka_topic, 4)
    assert [(r.position, r.key, r.value) for r in records][3] == (3, b"gone", b"")
