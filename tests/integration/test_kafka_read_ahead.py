"""A Kafka source read ahead (:mod:`adaptd.read_ahead`) on the real broker, through both
clients: a second consumer joins the group while the first has its next batch read ahead,
and the partition callbacks that poll meets run between the first consumer's batches, never
while one is processed; no record of a revoked partition is handed out after
its revoke, and the two consumers, handing positions over as the daemon does, process every
record exactly once."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Collection, Mapping

import pytest

from adaptd.connectors.base import RecordRun, SinkMessage
from adaptd.connectors.kafka import kafka_sink, kafka_source, sink_options, source_options
from adaptd.read_ahead import ReadAhead
from tests.helpers import wait_for
from tests.integration.kafka_harness import CLIENTS

pytestmark = pytest.mark.parametrize("client", CLIENTS)

FAST_GROUP = "session_timeout_ms=6000&heartbeat_interval_ms=500&max_poll_interval_ms=20000"
PARTITIONS = 4
RECORDS = 20_000


class Replica:
    """One consumer of the group and the daemon's side of it: positions advance only for
    processed batches and are handed over through ``shared`` on revoke, as a checkpoint
    would hand them to the next owner."""

    def __init__(self, shared: dict[int, int], lock: threading.Lock) -> None:
        self.shared, self.lock = shared, lock
        self.owned: set[int] = set()
        self.positions: dict[int, int] = {}
        self.processed: list[tuple[int, int]] = []
        self.processing = False
        self.violations: list[str] = []
        self.revokes = 0

    def _check(self, what: str) -> None:
        if self.processing:
            self.violations.append(f"{what} while a batch was processed")

    def on_assigned(self, partitions: Collection[int]) -> Mapping[int, int]:
        self._check("on_assigned")
        self.owned.update(partitions)
        with self.lock:
            resume = {p: self.shared[p] for p in partitions if p in self.shared}
        self.positions.update(resume)
        return resume

    def on_revoked(self, partitions: Collection[int]) -> None:
        self._check("on_revoked")
        self.revokes += 1
        with self.lock:
            self.shared.update({p: n for p, n in self.positions.items() if p in partitions})
        self.owned.difference_update(partitions)

    def process(self, polled: object, work: Callable[[], object] = lambda: None) -> None:
        records = polled.records() if isinstance(polled, RecordRun) else polled
        self.processing = True
        work()
        for raw in records:  # type: ignore[attr-defined]
            if raw.partition not in self.owned:
                self.violations.append(f"record {raw.partition}@{raw.position} handed out "
                                       "while its partition was not owned")
            self.processed.append((raw.partition, raw.position))
            self.positions[raw.partition] = raw.position + 1
        self.processing = False


def test_a_rebalance_while_a_batch_is_read_ahead_runs_callbacks_between_batches(
        kafka_broker: str, kafka_topic: str, client: str) -> None:
    sink = kafka_sink(sink_options(
        f"kafka://{kafka_broker}/{kafka_topic}?partitions={PARTITIONS}&client={client}"))
    sink.write([SinkMessage(f'{{"i":{i}}}'.encode(), f"k{i % 16}".encode())
                for i in range(RECORDS)])
    sink.flush()
    sink.close()
    uri = f"kafka://{kafka_broker}/{kafka_topic}?group=ra-{client}&client={client}&{FAST_GROUP}"
    shared: dict[int, int] = {}
    lock = threading.Lock()
    first, second = Replica(shared, lock), Replica(shared, lock)
    served: list[bool] = []
    ahead = ReadAhead(kafka_source(source_options(uri)), lambda raws: raws)
    joined, stop = threading.Event(), threading.Event()

    def run_second() -> None:
        source = kafka_source(source_options(uri))
        source.open({}, second)
        try:
            while not stop.is_set():
                polled = source.poll_many(100, 0.1)
                if second.owned:
                    joined.set()
                second.process(polled)
        finally:
            source.close()

    # The first consumer's revokes see whether the read-ahead thread's poll met them.
    revoked = first.on_revoked

    def on_revoked(partitions: Collection[int]) -> None:
        served.append(ahead._halted)
        revoked(partitions)

    first.on_revoked = on_revoked  # type: ignore[method-assign]
    ahead.open({}, first)
    other = threading.Thread(target=run_second, daemon=True)
    try:
        while len(first.processed) + len(second.processed) < RECORDS or not joined.is_set():
            polled = ahead.poll_many(100, 0.1)
            if polled and not other.is_alive() and not joined.is_set():
                other.start()  # joins while the first has its next batch read ahead
            # Slow the first down until the second has partitions: its batches take a while,
            # and the rebalance meets the poll read ahead meanwhile.
            first.process(polled, lambda: joined.is_set() or joined.wait(0.02))
            assert len(first.processed) + len(second.processed) <= RECORDS
        wait_for(lambda: len(first.processed) + len(second.processed) == RECORDS, 30)
    finally:
        stop.set()
        ahead.close()
        other.join(30)
    assert (first.violations, second.violations) == ([], [])
    assert first.revokes >= 1 and any(served)  # a revoke met by a poll read ahead
    counts = Counter(first.processed + second.processed)
    assert len(counts) == RECORDS and set(counts.values()) == {1}
    assert second.processed  # the second consumer did take partitions over
