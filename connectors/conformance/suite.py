"""The checks: :class:`ConnectorConformance`, one test class that a connector's test module
subclasses, providing the ``connector_case`` fixture (see the package docstring)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import pytest

from adaptd.connectors.base import REPLAY_KINDS, SinkMessage, Source, SourceRecord
from adaptd.connectors.conformance.cases import (
    RECORDS,
    CaseContext,
    ConnectorCase,
    SinkCase,
    SourceCase,
)
from adaptd.connectors.registry import connector, open_sink, open_source
from adaptd.errors import ConfigError, SinkError, UnavailableError

#: Timeout given to polls that are expected to come back empty.
EMPTY_POLL_TIMEOUT_S = 0.3
#: Slack allowed on top of a poll's timeout: a behavioural bound (poll must not hang), generous
#: enough for a loaded CI machine; not a speed measurement.
POLL_SLACK_S = 3.0
#: How long reading known content may take before the check gives up (remote brokers).
READ_DEADLINE_S = 30.0
#: How long a sink whose service is down may take to fail its flush.
UNREACHABLE_FLUSH_S = 60.0

T = TypeVar("T")


def within(seconds: float, call: Callable[[], T]) -> tuple[T, float]:
    """Run ``call`` on a thread; fail (instead of hanging) if it takes longer than ``seconds``.
    Returns its result and the time it took."""
    outcome: dict[str, object] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            outcome["result"] = call()
        except Exception as exc:  # noqa: BLE001 - re-raised in the test's thread
            outcome["error"] = exc
        outcome["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"call did not return within {seconds}s"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"], outcome["elapsed"]  # type: ignore[return-value]


def read(source: Source, count: int, max_records: int = 7, commit: bool = True) -> list[SourceRecord]:
    """Poll until ``count`` records came, the source is exhausted, or the deadline passes.

    Like the runner, commits what was read whenever the source says a commit is due (unless
    ``commit`` is False)."""
    out: list[SourceRecord] = []
    deadline = time.monotonic() + READ_DEADLINE_S
    while len(out) < count and time.monotonic() < deadline:
        wanted = min(max_records, count - len(out))
        batch, _ = within(POLL_SLACK_S + 1.0, lambda n=wanted: source.poll(n, 0.2))  # type: ignore[misc]
        assert len(batch) <= wanted, "poll returned more than max_records"
        out += batch
        if commit and out and source.commit_due():
            source.commit(next_positions(out))
        if not batch and source.exhausted:
            break
    return out


def next_positions(records: Sequence[SourceRecord]) -> dict[int, int]:
    """The ``next_positions`` the runner would commit after these records."""
    return {r.partition: r.position + 1 for r in records}


def values_by_partition(records: Sequence[SourceRecord]) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    for r in records:
        out.setdefault(r.partition, []).append(r.value)
    return out


def exact(records: Sequence[SourceRecord], expected: Sequence[SourceRecord]) -> list[tuple]:
    """(partition, position, value[, key]) — the key only where the case says what it is."""
    with_key = any(r.key is not None for r in expected)
    return sorted((r.partition, r.position, r.value) + ((r.key,) if with_key else ()) for r in records)


def assert_increasing(records: Sequence[SourceRecord]) -> None:
    for partition in {r.partition for r in records}:
        positions = [r.position for r in records if r.partition == partition]
        assert positions == sorted(set(positions)), f"partition {partition}: positions not increasing"


class ConnectorConformance:
    """The contract's checks. Subclass it and provide a ``connector_case`` fixture returning a
    :class:`ConnectorCase`; checks that do not apply to the connector are skipped."""

    @pytest.fixture
    def source_case(self, connector_case: ConnectorCase, conformance_context: CaseContext) -> SourceCase:
        if connector_case.source is None:
            pytest.skip(f"{connector_case.scheme} has no source")
        return connector_case.source(conformance_context)

    @pytest.fixture
    def sink_case(self, connector_case: ConnectorCase, conformance_context: CaseContext) -> SinkCase:
        if connector_case.sink is None:
            pytest.skip(f"{connector_case.scheme} has no sink")
        return connector_case.sink(conformance_context)

    @staticmethod
    def opened(case: SourceCase, start: dict[int, int] | None = None, send: bool = True) -> Source:
        """A new source of the case, opened (at ``start``) and, for push cases, sent the content."""
        source = case.build()
        source.open(start or {})
        if send and case.send is not None:
            case.send([r.value for r in case.expected])
        return source

    def opened_if(self, case: SourceCase, kind: str) -> Source:
        """Like :meth:`opened`, but skips the check unless the source replays as ``kind``."""
        source = self.opened(case)
        if source.replay != kind:
            source.close()
            pytest.skip(f"not a {kind} source ({source.replay})")
        return source

    # --- registration and options -------------------------------------------------------

    def test_connector_is_registered_as_its_case_says(self, connector_case: ConnectorCase) -> None:
        cls = connector(connector_case.scheme)
        assert cls.scheme == connector_case.scheme
        assert cls.description.strip() and "\n" not in cls.description, "description: one line"
        assert cls.replay and set(cls.replay) <= set(REPLAY_KINDS), f"replay kinds: {cls.replay}"
        assert cls.can_source() == (connector_case.source is not None), "source case vs connector"
        assert cls.can_sink() == (connector_case.sink is not None), "sink case vs connector"

    def test_unknown_option_is_rejected_before_anything_opens(
        self, connector_case: ConnectorCase, conformance_context: CaseContext
    ) -> None:
        # Relative paths in the URI land in the temporary directory, where the check looks.
        conformance_context.monkeypatch.chdir(conformance_context.tmp_path)
        before = sorted(conformance_context.tmp_path.rglob("*"))
        uri = connector_case.uri
        bad = uri + ("&" if "?" in uri else "?") + "no_such_option=1"
        cls = connector(connector_case.scheme)
        if cls.can_source():
            with pytest.raises(ConfigError, match="no_such_option"):
                open_source(bad)
        if cls.can_sink():
            with pytest.raises(ConfigError, match="no_such_option"):
                open_sink(bad)
        assert sorted(conformance_context.tmp_path.rglob("*")) == before, "a rejected URI made files"

    # --- sources: every kind ------------------------------------------------------------

    def test_source_declares_a_replay_kind_its_connector_lists(
        self, connector_case: ConnectorCase, source_case: SourceCase
    ) -> None:
        source = source_case.build()
        try:
            assert source.replay in connector(connector_case.scheme).replay
        finally:
            source.close()

    def test_empty_poll_returns_within_its_timeout(self, source_case: SourceCase) -> None:
        source = source_case.build_empty()
        source.open({})
        try:
            records, elapsed = within(
                EMPTY_POLL_TIMEOUT_S + POLL_SLACK_S, lambda: source.poll(10, EMPTY_POLL_TIMEOUT_S)
            )
        finally:
            source.close()
        assert records == []
        assert elapsed < EMPTY_POLL_TIMEOUT_S + POLL_SLACK_S

    def test_every_record_comes_once_in_position_order(self, source_case: SourceCase) -> None:
        expected = source_case.expected
        source = self.opened(source_case)
        try:
            records = read(source, len(expected))
            if source_case.finite:
                # It may learn that it is at the end on one more (empty) poll, as the runner
                # does: it asks `exhausted` only after a poll came back empty.
                assert source.poll(10, 0.05) == []
                assert source.exhausted
        finally:
            source.close()
        assert_increasing(records)
        if source.replay == "seekable":
            assert exact(records, expected) == exact(expected, expected)
        else:
            assert values_by_partition(records) == values_by_partition(expected)

    def test_a_paused_source_gives_nothing_until_resumed(self, source_case: SourceCase) -> None:
        expected = source_case.expected
        source = self.opened(source_case)
        try:
            head = read(source, 2, max_records=2)
            source.pause()
            for _ in range(2):
                paused, _ = within(
                    EMPTY_POLL_TIMEOUT_S + POLL_SLACK_S, lambda: source.poll(10, EMPTY_POLL_TIMEOUT_S)
                )
                assert paused == []
            source.resume()
            rest = read(source, len(expected) - len(head))
        finally:
            source.close()
        assert values_by_partition(head + rest) == values_by_partition(expected)

    def test_source_close_is_idempotent(self, source_case: SourceCase) -> None:
        never_opened = source_case.build()
        never_opened.close()
        never_opened.close()
        source = self.opened(source_case)
        read(source, 1)
        source.close()
        source.close()

    def test_an_unreachable_service_is_unavailable_not_a_crash(self, source_case: SourceCase) -> None:
        if source_case.build_unreachable is None:
            pytest.skip("the case gives no unreachable source")
        source = source_case.build_unreachable()
        try:
            with pytest.raises(UnavailableError):
                within(READ_DEADLINE_S, lambda: (source.open({}), source.poll(10, 0.2)))
        finally:
            source.close()

    # --- sources: by replay kind --------------------------------------------------------

    def test_seekable_reopening_resumes_exactly_at_the_next_position(self, source_case: SourceCase) -> None:
        expected = source_case.expected
        first = self.opened_if(source_case, "seekable")
        partition = expected[0].partition
        try:
            head = [r for r in read(first, 5, max_records=5) if r.partition == partition]
        finally:
            first.close()
        assert head, "nothing read before the restart"
        second = self.opened(source_case, {partition: head[-1].position + 1})
        wanted = [r for r in expected if r.partition == partition]
        try:
            rest = [r for r in read(second, len(wanted) - len(head)) if r.partition == partition]
        finally:
            second.close()
        assert exact(head + rest, expected) == exact(wanted, expected)

    def test_seekable_opening_at_any_position_starts_at_the_first_record_there(
        self, source_case: SourceCase
    ) -> None:
        if source_case.build().replay != "seekable":
            pytest.skip("not a seekable source")
        partition = source_case.expected[0].partition
        wanted = [r for r in source_case.expected if r.partition == partition]
        end = wanted[-1].position + 1
        # Every kind of position, including ones that hold no record (blank lines), and the end.
        for start in sorted({0, 1, wanted[len(wanted) // 2].position - 1, end - 1, end}):
            source = self.opened(source_case, {partition: start})
            try:
                after = [r for r in wanted if r.position >= start]
                got = [r for r in read(source, len(after)) if r.partition == partition]
            finally:
                source.close()
            assert exact(got, source_case.expected) == exact(after, source_case.expected), f"start {start}"

    def test_acknowledged_redelivers_exactly_what_was_not_committed(self, source_case: SourceCase) -> None:
        expected = source_case.expected
        first = self.opened_if(source_case, "acknowledged")
        try:
            head = read(first, 5, max_records=5, commit=False)
            assert len(head) == 5, "nothing read before the restart"
            first.commit(next_positions(head[:3]))
        finally:
            first.close()
        # As after a crash: the checkpoint holds the first three records, not the next two.
        second = self.opened(source_case, next_positions(head[:3]), send=False)
        try:
            rest = read(second, len(expected) - 3)
        finally:
            second.close()
        assert values_by_partition(head[:3] + rest) == values_by_partition(expected)
        assert min(r.position for r in rest) > max(r.position for r in head), "a position was reused"

    def test_live_restart_never_reuses_a_position(self, source_case: SourceCase) -> None:
        first = self.opened_if(source_case, "live")
        try:
            head = read(first, 3)
        finally:
            first.close()
        assert head, "nothing read before the restart"
        # A crash before any checkpoint: the daemon opens the source with no positions at all.
        again = self.opened(source_case)
        try:
            after_crash = read(again, 3)
        finally:
            again.close()
        assert after_crash and min(r.position for r in after_crash) > max(r.position for r in head)
        # A checkpoint far ahead (another clock): positions start at it, as a floor.
        floor = {r.partition: r.position + 10**9 for r in after_crash}
        resumed = self.opened(source_case, floor)
        try:
            later = read(resumed, 3)
        finally:
            resumed.close()
        assert later and all(r.position >= floor.get(r.partition, 0) for r in later)

    # --- sinks --------------------------------------------------------------------------

    def test_flush_makes_written_records_durable(self, sink_case: SinkCase) -> None:
        sink = sink_case.build()
        try:
            sink.write([SinkMessage(value=v, key=b"k") for v in RECORDS[:10]])
            sink.write([])
            sink.write([SinkMessage(value=v, key=b"k") for v in RECORDS[10:]])
            within(60.0, sink.flush)
            assert sink.backlog() == 0
            # Read back before close: flush alone must have made them durable.
            durable = sink_case.read_back(len(RECORDS))
            if sink_case.ordered:
                assert durable == RECORDS
            else:
                assert sorted(durable) == sorted(RECORDS)
        finally:
            sink.close()
        sink.close()
        sink.flush()
        with pytest.raises(SinkError):
            sink.write([SinkMessage(value=b"{}")])

    def test_a_sink_connects_lazily_and_fails_in_flush(self, sink_case: SinkCase) -> None:
        if sink_case.build_unreachable is None:
            pytest.skip("the case gives no unreachable sink")
        sink = sink_case.build_unreachable()  # must not raise: nothing connects yet
        try:
            sink.write([SinkMessage(value=RECORDS[0])])
            with pytest.raises(SinkError):
                within(UNREACHABLE_FLUSH_S, sink.flush)
        finally:
            # close() must return (it may report the failed final flush as a SinkError).
            try:
                within(UNREACHABLE_FLUSH_S, sink.close)
            except SinkError:
                pass
