"""One conformance suite over every connector: the contract of ``connectors/base.py``.

The cases (how to build each connector over known content) are in ``conftest.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from adaptd.connectors.base import SinkMessage, Source, SourceRecord
from adaptd.connectors.registry import available, connector, open_sink, open_source
from adaptd.errors import ConfigError, SinkError
from tests.connectors.conftest import CASES, RECORDS, CaseContext, SourceCase, case_scheme

#: Timeout given to polls that are expected to come back empty.
EMPTY_POLL_TIMEOUT_S = 0.3
#: Slack allowed on top of a poll's timeout: a behavioural bound (poll must not hang on an
#: empty source), generous enough for a loaded CI machine; not a speed measurement.
POLL_SLACK_S = 3.0
#: How long reading known content may take before the test gives up (remote brokers).
READ_DEADLINE_S = 30.0


def _loads(case: str) -> bool:
    try:
        connector(case_scheme(case))
    except ConfigError:
        return False
    return True


SOURCE_SCHEMES = sorted(s for s, c in CASES.items() if c.source is not None and _loads(s))
SINK_SCHEMES = sorted(s for s, c in CASES.items() if c.sink is not None and _loads(s))

T = TypeVar("T")


def within(seconds: float, call: Callable[[], T]) -> tuple[T, float]:
    """Run ``call`` on a thread; fail (instead of hanging) if it takes longer than ``seconds``.

    Returns its result and the time it took.
    """
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


def read(source: Source, count: int, max_records: int = 7) -> list[SourceRecord]:
    """Poll until ``count`` records came, the source is exhausted, or the deadline passes."""
    out: list[SourceRecord] = []
    deadline = time.monotonic() + READ_DEADLINE_S
    while len(out) < count and time.monotonic() < deadline:
        batch, _ = within(POLL_SLACK_S + 1.0, lambda: source.poll(max_records, 0.2))
        assert len(batch) <= max_records, "poll returned more than max_records"
        out += batch
        if not batch and source.exhausted:
            break
    return out


def comparable(records: list[SourceRecord], expected: list[SourceRecord]) -> list[tuple]:
    """(partition, position, value[, key]) — the key only where the case says what it is."""
    with_key = any(r.key is not None for r in expected)
    return [(r.partition, r.position, r.value) + ((r.key,) if with_key else ()) for r in records]


def in_partition(records: list[SourceRecord], partition: int) -> list[SourceRecord]:
    return [r for r in records if r.partition == partition]


@pytest.fixture
def source_case(request: pytest.FixtureRequest, case_context: CaseContext) -> SourceCase:
    factory = CASES[request.param].source
    assert factory is not None
    return factory(case_context)


# --- coverage -------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", sorted(available()))
def test_every_connector_that_loads_has_a_conformance_case(scheme: str) -> None:
    if not _loads(scheme):
        pytest.skip(f"connector {scheme!r} does not load here")
    assert scheme in CASES, f"add a conformance case for {scheme!r} to tests/connectors/conftest.py"
    cls = connector(scheme)
    assert cls.can_source() == (CASES[scheme].source is not None), "source case vs connector"
    assert cls.can_sink() == (CASES[scheme].sink is not None), "sink case vs connector"
    assert cls.scheme == scheme
    assert cls.description.strip() and "\n" not in cls.description


# --- options --------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", sorted(s for s in CASES if _loads(s)))
def test_unknown_option_is_rejected_before_anything_opens(scheme: str, tmp_path: Path) -> None:
    uri = CASES[scheme].uri(tmp_path)
    bad = uri + ("&" if "?" in uri else "?") + "no_such_option=1"
    cls = connector(case_scheme(scheme))
    if cls.can_source():
        with pytest.raises(ConfigError, match="no_such_option"):
            open_source(bad)
    if cls.can_sink():
        with pytest.raises(ConfigError, match="no_such_option"):
            open_sink(bad)
    assert list(tmp_path.iterdir()) == [], "a rejected URI created files"


# --- sources --------------------------------------------------------------------------------


@pytest.mark.parametrize("source_case", SOURCE_SCHEMES, indirect=True)
def test_empty_poll_returns_within_its_timeout(source_case: SourceCase) -> None:
    source = source_case.build_empty()
    source.open({})
    try:
        records, elapsed = within(
            EMPTY_POLL_TIMEOUT_S + POLL_SLACK_S,
            lambda: source.poll(10, EMPTY_POLL_TIMEOUT_S),
        )
    finally:
        source.close()
    assert records == []
    assert elapsed < EMPTY_POLL_TIMEOUT_S + POLL_SLACK_S


@pytest.mark.parametrize("source_case", SOURCE_SCHEMES, indirect=True)
def test_every_record_comes_once_in_position_order(source_case: SourceCase) -> None:
    expected = source_case.expected
    source = source_case.build()
    source.open({})
    try:
        records = read(source, len(expected))
        if source_case.finite:
            assert source.exhausted
            assert source.poll(10, 0.05) == []
    finally:
        source.close()
    for partition in {r.partition for r in expected}:
        positions = [r.position for r in in_partition(records, partition)]
        assert positions == sorted(set(positions)), f"partition {partition} out of order"
    assert sorted(comparable(records, expected)) == sorted(comparable(expected, expected))


@pytest.mark.parametrize("source_case", SOURCE_SCHEMES, indirect=True)
def test_reopening_resumes_exactly_at_the_next_position(source_case: SourceCase) -> None:
    expected = source_case.expected
    partition = expected[0].partition
    wanted = in_partition(expected, partition)
    first = source_case.build()
    first.open({})
    try:
        head = in_partition(read(first, 5, max_records=5), partition)
    finally:
        first.close()
    assert head, "nothing read before the restart"
    resume_at = head[-1].position + 1
    if not source_case.seekable:
        with pytest.raises(ConfigError, match=str(resume_at)):
            source_case.build().open({partition: resume_at})
        return
    second = source_case.build()
    second.open({partition: resume_at})
    try:
        rest = in_partition(read(second, len(wanted) - len(head)), partition)
    finally:
        second.close()
    assert comparable(head + rest, expected) == comparable(wanted, expected)


@pytest.mark.parametrize("source_case", SOURCE_SCHEMES, indirect=True)
def test_opening_at_any_position_starts_at_the_first_record_there(
    source_case: SourceCase,
) -> None:
    if not source_case.seekable:
        pytest.skip("this source cannot seek; the resume test checks it refuses")
    expected = source_case.expected
    partition = expected[0].partition
    wanted = in_partition(expected, partition)
    end = wanted[-1].position + 1
    # Every position, including ones that hold no record (blank lines), and the end.
    for start in sorted({0, 1, wanted[len(wanted) // 2].position - 1, end - 1, end}):
        source = source_case.build()
        source.open({partition: start})
        try:
            after = [r for r in wanted if r.position >= start]
            got = in_partition(read(source, len(after)), partition)
        finally:
            source.close()
        assert comparable(got, expected) == comparable(after, expected), f"start {start}"


@pytest.mark.parametrize("source_case", SOURCE_SCHEMES, indirect=True)
def test_a_paused_source_gives_nothing_until_resumed(source_case: SourceCase) -> None:
    expected = source_case.expected
    source = source_case.build()
    source.open({})
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
    assert sorted(comparable(head + rest, expected)) == sorted(comparable(expected, expected))


@pytest.mark.parametrize("source_case", SOURCE_SCHEMES, indirect=True)
def test_source_close_is_idempotent(source_case: SourceCase) -> None:
    never_opened = source_case.build()
    never_opened.close()
    never_opened.close()
    source = source_case.build()
    source.open({})
    read(source, 1)
    source.close()
    source.close()


# --- sinks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SINK_SCHEMES)
def test_flush_makes_written_records_durable(scheme: str, case_context: CaseContext) -> None:
    factory = CASES[scheme].sink
    assert factory is not None
    case = factory(case_context)
    sink = case.build()
    try:
        sink.write([SinkMessage(value=v, key=b"k") for v in RECORDS[:10]])
        sink.write([])
        sink.write([SinkMessage(value=v, key=b"k") for v in RECORDS[10:]])
        within(60.0, sink.flush)
        assert sink.backlog() == 0
        # Read back before close: flush alone must have made them durable.
        assert case.read_back(len(RECORDS)) == RECORDS
    finally:
        sink.close()
    sink.close()
    sink.flush()
    with pytest.raises(SinkError):
        sink.write([SinkMessage(value=b"{}")])
