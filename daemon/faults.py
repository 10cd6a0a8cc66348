"""Fault handling: riding out an unavailable source, and pausing it while the sinks back up.

Infrastructure faults are waited out, never turned into lost records: while the source raises
:class:`~adaptd.errors.UnavailableError` (broker away) the daemon is not ready, logs, and retries
with exponential backoff; nothing is lost because nothing past the checkpoint was committed.
While the sinks hold more than ``sink_backlog_limit`` unacknowledged messages the source is
paused (it keeps its group membership) until they drain below half of it, so memory stays
bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from adaptd.connectors.base import PartitionListener, RecordRun, Sink, Source, SourceRecord
from adaptd.errors import SinkError, UnavailableError
from adaptd.settings import ResilienceConfig

log = logging.getLogger(__name__)


@dataclass
class Faults:
    """Retry backoff for the source and backpressure from the sinks. Runner thread only.

    Args:
        config: backoff bounds and the sink backlog limit.
        clock: monotonic seconds; injected by tests.
        sleep: waits between retries; injected by tests.
        stopping: true once a stop was requested; waits end early then.
    """

    config: ResilienceConfig
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    stopping: Callable[[], bool]
    #: False from the first UnavailableError until the source answers again.
    available: bool = field(default=True, init=False)
    #: True while the source is paused for the sinks' sake.
    paused: bool = field(default=False, init=False)
    _unavailable_since: float = field(default=0.0, init=False)
    _backoff_s: float = field(init=False)

    def __post_init__(self) -> None:
        self._backoff_s = self.config.retry_backoff_initial_s

    # -- the source --------------------------------------------------------------------

    def open(self, source: Source, positions: Mapping[int, int],
             listener: PartitionListener) -> bool:
        """Open ``source`` at ``positions``; False (after a backoff wait) if it is unavailable.
        Blocks for the open and the wait."""
        try:
            source.open(positions, listener=listener)
        except UnavailableError as exc:
            self._wait_for_source(exc)
            return False
        self._mark_available()
        return True

    def poll(self, source: Source, max_records: int, timeout_s: float
             ) -> list[SourceRecord] | RecordRun:
        """One poll (:meth:`~adaptd.connectors.base.Source.poll_many`); an unavailable source
        costs a backoff wait and yields no records. Blocks up to ``timeout_s`` (plus the wait)."""
        try:
            raws = source.poll_many(max_records, timeout_s)
        except UnavailableError as exc:
            self._wait_for_source(exc)
            return []
        self._mark_available()
        return raws

    def _wait_for_source(self, exc: UnavailableError) -> None:
        now = self.clock()
        if self.available:
            self.available = False
            self._unavailable_since = now
            log.warning("source unavailable, not ready; retrying with backoff: %s", exc)
        else:
            log.info("source still unavailable after %.1f s (next retry in %.1f s): %s",
                     now - self._unavailable_since, self._backoff_s, exc)
        self._back_off()

    def _mark_available(self) -> None:
        if not self.available:
            log.warning("source available again after %.1f s; ready",
                        self.clock() - self._unavailable_since)
        self.available = True
        self._backoff_s = self.config.retry_backoff_initial_s

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, cut short by a stop request (honoured within 0.1 s)."""
        deadline = self.clock() + seconds
        while not self.stopping() and (left_s := deadline - self.clock()) > 0:
            self.sleep(min(0.1, left_s))

    def _back_off(self) -> None:
        """Wait the current backoff (cut short by a stop request), then double it."""
        self.wait(self._backoff_s)
        self._backoff_s = min(self._backoff_s * 2, self.config.retry_backoff_max_s)

    # -- the sinks ---------------------------------------------------------------------

    def relieve_backpressure(self, source: Source, sinks: Sequence[Sink]) -> None:
        """Pause the source while the sinks hold too much; flush them; resume once drained.
        Called after every poll; blocks for the flush and, if it fails, a backoff wait."""
        limit = self.config.sink_backlog_limit
        backlog = sum(s.backlog() for s in sinks)
        if backlog <= limit:
            if self.paused and backlog <= limit // 2:
                source.resume()
                self.paused = False
                log.info("sink backlog drained; source resumed")
            return
        if not self.paused:
            source.pause()
            self.paused = True
            log.warning("sink backlog %d > %d messages; source paused", backlog, limit)
        try:
            for sink in sinks:
                sink.flush()
        except SinkError as exc:
            log.warning("sink still backed up: %s", exc)
            self._back_off()

