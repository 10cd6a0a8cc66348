"""Fault handling with an injected clock: backoff doubles up to its cap and resets once the
source answers; a backed-up sink pauses the source until it drains below half the limit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from adaptd.connectors.base import PartitionListener, Sink, SinkMessage, Source, SourceRecord
from adaptd.errors import SinkError, UnavailableError
from adaptd.faults import Faults
from adaptd.settings import ResilienceConfig


class ScriptedSource(Source):
    """Unavailable for the first ``outages`` calls, then one record per poll."""

    def __init__(self, outages: int) -> None:
        self.outages = outages
        self.paused = False

    def open(self, start_positions: Mapping[int, int],
             listener: PartitionListener | None = None) -> None:
        self._maybe_fail()

    def poll(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        self._maybe_fail()
        return [SourceRecord(partition=0, position=0, value=b"{}")]

    def _maybe_fail(self) -> None:
        if self.outages:
            self.outages -= 1
            raise UnavailableError("broker away")

    def close(self) -> None:
        pass

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False


class SlowSink(Sink):
    """Holds ``backlog`` messages; each flush acknowledges ``per_flush`` of them, and fails
    while any are left."""

    def __init__(self, backlog: int, per_flush: int) -> None:
        self.held, self.per_flush = backlog, per_flush

    def write(self, messages: Sequence[SinkMessage]) -> None:
        self.held += len(messages)

    def flush(self) -> None:
        self.held = max(0, self.held - self.per_flush)
        if self.held:
            raise SinkError(f"{self.held} messages not acknowledged")

    def close(self) -> None:
        pass

    def backlog(self) -> int:
        return self.held


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def faults(time: FakeTime, limit: int = 100) -> Faults:
    config = ResilienceConfig(retry_backoff_initial_s=0.1, retry_backoff_max_s=0.4,
                              sink_backlog_limit=limit)
    return Faults(config, time.clock, time.sleep, stopping=lambda: False)


def test_backoff_doubles_to_its_cap_and_resets_once_the_source_answers() -> None:
    time = FakeTime()
    handler, source = faults(time), ScriptedSource(outages=4)
    waited = []
    for _ in range(4):
        before = time.now
        assert handler.poll(source, 10, 0.1) == []
        assert not handler.available
        waited.append(round(time.now - before, 6))
    assert waited == [0.1, 0.2, 0.4, 0.4]
    assert len(handler.poll(source, 10, 0.1)) == 1 and handler.available
    source.outages = 1
    before = time.now
    handler.poll(source, 10, 0.1)
    assert round(time.now - before, 6) == 0.1


def test_open_is_retried_until_the_source_answers() -> None:
    time = FakeTime()
    handler, source = faults(time), ScriptedSource(outages=2)
    attempts = [handler.open(source, {}, listener=None) for _ in range(3)]  # type: ignore[arg-type]
    assert attempts == [False, False, True] and handler.available


def test_a_backed_up_sink_pauses_the_source_until_it_drains_below_half() -> None:
    time = FakeTime()
    handler, source, sink = faults(time, limit=100), ScriptedSource(outages=0), SlowSink(180, 40)
    handler.relieve_backpressure(source, [sink])
    assert source.paused and handler.paused and sink.held == 140
    assert time.slept, "a failed flush waits before the next try"
    handler.relieve_backpressure(source, [sink])
    assert sink.held == 100 and source.paused  # below the limit, not yet below half
    handler.relieve_backpressure(source, [sink])
    assert source.paused
    sink.held = 50
    handler.relieve_backpressure(source, [sink])
    assert not source.paused and not handler.paused
