"""``adaptd run`` on Kafka, as real processes against a real broker.

End to end with dead letters; a restart resumes at the checkpointed positions; kill -9 mid
stream gives exactly-once effect on the state and at-least-once predictions; two daemons of one
group split the partitions and one takes over the other's; the broker going away (at start and
mid-run) costs readiness, not records.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pytest

from adaptd.broker import EmbeddedBroker, free_port
from adaptd.connectors.base import SourceRecord
from tests.helpers import scrape, wait_for
from tests.integration.kafka_harness import (
    CLIENTS,
    FAST_GROUP,
    FREQUENT_CHECKPOINTS,
    INDEPENDENT_KEYS,
    Daemon,
    TcpProxy,
    assert_same_state,
    checkpointed,
    key_states,
    make_records,
    produce,
    read_topic,
    wait_for_positions,
)

pytestmark = pytest.mark.integration


def uris(bootstrap: str, topic: str, group: str = "g",
         client: str = "kafka-python") -> tuple[str, ...]:
    """``--source/--sink/--dead-letter`` arguments for ``topic``-in/-out/-dead, all through
    ``client``."""
    return (
        f"kafka://{bootstrap}/{topic}-in?group={group}-{topic}&{FAST_GROUP}&client={client}",
        "--sink", f"kafka://{bootstrap}/{topic}-out?client={client}",
        "--dead-letter", f"kafka://{bootstrap}/{topic}-dead?client={client}",
    )


def ends_of(records: Iterable[SourceRecord]) -> dict[int, int]:
    """Next position after the last of ``records`` in each partition."""
    ends: dict[int, int] = {}
    for r in records:
        ends[r.partition] = max(ends.get(r.partition, 0), r.position + 1)
    return ends


def partition_ends(bootstrap: str, topic: str, n: int) -> dict[int, int]:
    """Next position after the last record of each partition (read back, not end offsets)."""
    return ends_of(read_topic(bootstrap, topic, n))


def positions_predicted(outputs: Iterable[SourceRecord]) -> Counter[tuple[int, int]]:
    """How many predictions each (partition, position) has among ``outputs``."""
    out: Counter[tuple[int, int]] = Counter()
    for r in outputs:
        body = json.loads(r.value)
        out[(body["partition"], body["position"])] += 1
    return out


def prediction_positions(bootstrap: str, topic: str, at_least: int) -> Counter[tuple[int, int]]:
    return positions_predicted(read_topic(bootstrap, f"{topic}-out", at_least))


@pytest.mark.parametrize("client", CLIENTS)
def test_end_to_end_with_dead_letters_then_a_restart_resumes_where_it_stopped(
        kafka_broker: str, kafka_topic: str, tmp_path: Path, client: str) -> None:
    good = make_records(600, seed=1)
    bad = {
        b"{not json": "not_json",
        b'{"key": "k1", "x": [NaN, 1, 2], "y": 1}': "non_finite",
        b'{"key": "k1", "x": [1, 2], "y": 1}': "feature_count",
        json.dumps({"key": "k1", "x": [1, 2, 3], "y": 1, "pad": "z" * 3000}).encode(): "oversized",
    }
    produce(kafka_broker, f"{kafka_topic}-in", [*good[:300], *bad, *good[300:]], partitions=2)
    total = len(good) + len(bad)
    inputs = read_topic(kafka_broker, f"{kafka_topic}-in", total)
    ends = ends_of(inputs)

    io = uris(kafka_broker, kafka_topic, client=client)
    daemon = Daemon(tmp_path, "a", *io, *FREQUENT_CHECKPOINTS,
                    "--set", "max_record_bytes=2000")
    try:
        wait_for(daemon.ready, 60, "/readyz")
        wait_for_positions(daemon.state_dir, ends, daemons=[daemon])
    finally:
        assert daemon.stop() == 0, daemon.log()

    outputs = read_topic(kafka_broker, f"{kafka_topic}-out", len(good))
    predictions = positions_predicted(outputs)
    good_positions = {(r.partition, r.position) for r in inputs if r.value not in bad}
    assert set(predictions) == good_positions
    by_position = {(r.partition, r.position): r for r in inputs}
    for out in outputs:  # keyed by the record key, carrying where the input came from
        body = json.loads(out.value)
        source = json.loads(by_position[(body["partition"], body["position"])].value)
        assert out.key == source["key"].encode() == body["key"].encode()

    dead = read_topic(kafka_broker, f"{kafka_topic}-dead", len(bad))
    # Dead letters are outputs, at least once like predictions: a rebalance of this one
    # consumer (a missed heartbeat on a loaded machine) replays from the checkpoint and
    # sends a record's dead letter again. Each bad record has one, and nothing else does.
    dead_positions = {(json.loads(m.value)["partition"], json.loads(m.value)["position"])
                      for m in dead}
    assert dead_positions == {(r.partition, r.position) for r in inputs if r.value in bad}
    for msg in dead:
        body = json.loads(msg.value)
        original = by_position[(body["partition"], body["position"])].value
        assert body["reason"] == bad[original]
        # Keyed as the input was, whether its batch came as a run of records or a list.
        assert msg.key == by_position[(body["partition"], body["position"])].key == b"raw"
        assert body.get("raw", "").encode() == original

    # New records while it was down; the restart must read those and only those.
    more = make_records(200, seed=2)
    produce(kafka_broker, f"{kafka_topic}-in", more, partitions=2)
    new_ends = partition_ends(kafka_broker, f"{kafka_topic}-in", total + len(more))
    again = Daemon(tmp_path, "b", *io, *FREQUENT_CHECKPOINTS,
                   "--set", "max_record_bytes=2000", state_dir=daemon.state_dir)
    try:
        wait_for_positions(again.state_dir, new_ends, daemons=[again])
        wait_for(lambda: all(("adaptd_consumer_lag_records", (("partition", str(p)),))
                             in scrape(f"{again.url}/metrics") for p in new_ends),
                 30, "a lag series per partition")
        samples = scrape(f"{again.url}/metrics")
    finally:
        assert again.stop() == 0, again.log()
    assert samples[("adaptd_records_consumed_total", ())] == len(more)
    assert samples[("adaptd_checkpoints_total", ())] >= 1
    assert samples[("adaptd_checkpoint_duration_seconds_count", ())] >= 1
    assert all(samples[("adaptd_consumer_lag_records", (("partition", str(p)),))] >= 0
               for p in new_ends)
    assert f"resuming at {dict(sorted(ends.items()))}" in again.log()


@pytest.mark.parametrize(("partitions", "client"), [
    (1, "kafka-python"), (3, "kafka-python"), (3, "librdkafka")])
def test_kill_9_mid_stream_then_restart_gives_exactly_once_state(
        kafka_broker: str, kafka_topic: str, tmp_path: Path, partitions: int,
        client: str) -> None:
    """One partition: the whole state must equal an uninterrupted run's. Several: records of
    different partitions interleave differently in any two runs, so keys learn independently
    (no shared meta-state) and every key's state must be equal."""
    records = make_records(4000, keys=6, seed=3)
    topic_in = f"{kafka_topic}-in"
    produce(kafka_broker, topic_in, records[:500], partitions=partitions)
    flags = (*FREQUENT_CHECKPOINTS, *(INDEPENDENT_KEYS if partitions > 1 else ()))

    # The rest arrives (at most ~1000 records/s) once the daemon is under way, so the kill
    # lands mid-stream and records keep coming while it is down.
    def trickle() -> None:
        for start in range(500, len(records), 250):
            produce(kafka_broker, topic_in, records[start:start + 250], partitions=partitions)
            time.sleep(0.25)

    def checkpointed_records(state_dir: Path) -> int:
        assert crashy.proc.poll() is None, crashy.log()
        return sum(s.position for s in checkpointed(state_dir).partitions.values())

    producer = threading.Thread(target=trickle)
    io = uris(kafka_broker, kafka_topic, client=client)
    straight = Daemon(tmp_path, "straight",
                      *uris(kafka_broker, kafka_topic, group="straight", client=client),
                      "--sink", f"kafka://{kafka_broker}/{kafka_topic}-straight?client={client}",
                      *flags)
    crashy = Daemon(tmp_path, "crashy", *io, *flags)
    try:
        wait_for(lambda: checkpointed_records(crashy.state_dir) >= 500, 90,
                 "a checkpoint of the first records")
        producer.start()
        wait_for(lambda: checkpointed_records(crashy.state_dir) >= 1000, 90,
                 "a checkpoint past 1000 records")
        crashy.kill()
        at_kill = sum(s.position for s in checkpointed(crashy.state_dir).partitions.values())
        producer.join()
        assert at_kill < len(records), "the kill came after the last record: not mid-stream"
        ends = partition_ends(kafka_broker, topic_in, len(records))
        restarted = Daemon(tmp_path, "restarted", *io, *flags,
                           state_dir=crashy.state_dir)
        try:
            wait_for_positions(restarted.state_dir, ends, daemons=[restarted])
        finally:
            assert restarted.stop() == 0, restarted.log()
        wait_for_positions(straight.state_dir, ends, daemons=[straight])
    finally:
        if producer.is_alive():
            producer.join()
        crashy.kill()
        assert straight.stop() == 0, straight.log()

    resumed, uninterrupted = checkpointed(crashy.state_dir), checkpointed(straight.state_dir)
    assert {p: s.position for p, s in resumed.partitions.items()} == ends
    assert {p: s.position for p, s in uninterrupted.partitions.items()} == ends
    if partitions == 1:
        assert_same_state(resumed.partitions[0].learner, uninterrupted.partitions[0].learner,
                          "partition 0 learner state")
        assert_same_state(resumed.shared, uninterrupted.shared, "shared state")
    mine, theirs = key_states(resumed), key_states(uninterrupted)
    assert mine.keys() == theirs.keys()
    for key in theirs:
        assert_same_state(mine[key], theirs[key], f"key {key}")

    predictions = prediction_positions(kafka_broker, kafka_topic, len(records))
    assert set(predictions) == {(p, i) for p, n in ends.items() for i in range(n)}


@pytest.mark.parametrize("client", CLIENTS)
def test_two_daemons_split_the_partitions_and_one_takes_over_the_other(
        kafka_broker: str, kafka_topic: str, tmp_path: Path, client: str) -> None:
    topic_in = f"{kafka_topic}-in"
    first, second = make_records(2000, keys=12, seed=4), make_records(1000, keys=12, seed=5)
    produce(kafka_broker, topic_in, first, partitions=4)
    ends = partition_ends(kafka_broker, topic_in, len(first))
    shared_dir = tmp_path / "shared-state"
    flags = (*FREQUENT_CHECKPOINTS, *INDEPENDENT_KEYS)
    io = uris(kafka_broker, kafka_topic, client=client)
    straight = Daemon(tmp_path, "straight",
                      *uris(kafka_broker, kafka_topic, group="straight", client=client),
                      "--sink", f"kafka://{kafka_broker}/{kafka_topic}-straight?client={client}",
                      *flags)
    a = Daemon(tmp_path, "a", *io, *flags, state_dir=shared_dir)
    b = Daemon(tmp_path, "b", *io, *flags, state_dir=shared_dir)
    try:
        wait_for(lambda: a.ready() and b.ready(), 60, "both daemons to own partitions")
        wait_for_positions(shared_dir, ends, daemons=[a, b])
        assert b.stop() == 0, b.log()
        produce(kafka_broker, topic_in, second, partitions=4)
        all_ends = partition_ends(kafka_broker, topic_in, len(first) + len(second))
        wait_for_positions(shared_dir, all_ends, daemons=[a])
        assert a.stop() == 0, a.log()
        wait_for_positions(straight.state_dir, all_ends, daemons=[straight])
    finally:
        for d in (a, b, straight):
            d.stop()

    took_over = checkpointed(shared_dir)
    reference = checkpointed(straight.state_dir)
    assert {p: s.position for p, s in took_over.partitions.items()} == all_ends
    mine, theirs = key_states(took_over), key_states(reference)
    assert mine.keys() == theirs.keys()
    for key in theirs:
        assert_same_state(mine[key], theirs[key], f"key {key}")
    predictions = prediction_positions(kafka_broker, kafka_topic, len(first) + len(second))
    assert set(predictions) == {(p, i) for p, n in all_ends.items() for i in range(n)}


@pytest.mark.parametrize("client", CLIENTS)
def test_broker_unreachable_at_start_and_lost_mid_run_costs_readiness_not_records(
        kafka_topic: str, tmp_path: Path, client: str) -> None:
    proxy_port = free_port()
    broker = EmbeddedBroker(advertised_port=proxy_port, log_path=tmp_path / "broker.log")
    broker.start()
    proxy = TcpProxy(broker.port, proxy_port)
    bootstrap = f"127.0.0.1:{proxy_port}"
    source, *outputs = uris(bootstrap, kafka_topic, client=client)
    # Each attempt to reach the source's broker gives up after 2 s (the default is 10 s), so
    # the daemon says "source unavailable" and retries soon after it starts.
    daemon = Daemon(tmp_path, "d", f"{source}&bootstrap_timeout_ms=2000", *outputs,
                    *FREQUENT_CHECKPOINTS,
                    "--set", "resilience.retry_backoff_max_s=1")
    try:
        # Nobody answers at start: the daemon waits, not ready, and does not crash.
        wait_for(lambda: "source unavailable" in daemon.log(), 30, "the unavailable log line")
        assert daemon.not_ready()
        proxy.start()
        records = make_records(800, seed=6)
        produce(bootstrap, f"{kafka_topic}-in", records[:400])
        wait_for_positions(daemon.state_dir, {0: 400}, daemons=[daemon])
        wait_for(daemon.ready, 30, "/readyz after the broker came")

        # The broker goes away mid-run.
        proxy.stop()
        wait_for(daemon.not_ready, 60, "/readyz to turn false while the broker is away")
        proxy.start()
        produce(bootstrap, f"{kafka_topic}-in", records[400:])
        wait_for_positions(daemon.state_dir, {0: 800}, daemons=[daemon])
        wait_for(daemon.ready, 30, "/readyz after the broker came back")
        predictions = prediction_positions(bootstrap, kafka_topic, 800)
    finally:
        code = daemon.stop()
        proxy.stop()
        broker.stop()
    assert code == 0, daemon.log()
    assert set(predictions) == {(0, i) for i in range(800)}
    assert "source available again" in daemon.log()
