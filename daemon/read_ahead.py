"""Reading ahead: while the runner learns from one batch, a second thread polls the next one
and decodes it into columns, so a two-core machine reads, parses and learns at the same time.

The runner's loop stays on one thread; :class:`ReadAhead` is a :class:`Source` wrapped
around the real one. Each :meth:`~ReadAhead.poll_many` hands out the batch read ahead (or
polls, if none is) and, when that batch held records, starts reading the next one on the
thread, then passes it through ``prepare`` (the runner's decode into columns:
:func:`adaptd.batch_path.decode_ahead`), whose compiled scan runs without the GIL. Reading
ahead stops at the first empty poll, so an idle or paused source is polled as before, on the
runner's thread.

Nothing the runner guarantees changes:

* **Positions.** The runner advances a partition's position only for the batches it has
  processed, so a checkpoint never covers a batch read ahead; a batch read ahead and not yet
  handed out when the run stops is read again by the next run (the wrapped source is
  seekable: see :func:`read_ahead`).
* **Order.** Batches are handed out in the order they were read, and an error the poll met on
  the thread is raised by the ``poll_many`` that would have returned that batch.
* **One call at a time.** Every call into the wrapped source holds one lock, so none overlaps
  another, as the connector contract promises connectors; a call from the runner waits for a
  poll in progress on the thread (a file's poll does not block).

Only a source that says so is wrapped (class attribute ``polls_on_any_thread = True``): its
``poll_many`` may run on another thread than its other methods (never at the same time), it is
seekable, and its partitions are fixed (no listener callback from ``poll``, which would
checkpoint from the wrong thread).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeAlias

from adaptd.connectors.base import PartitionListener, RecordRun, Replay, Source, SourceRecord

Polled: TypeAlias = list[SourceRecord] | RecordRun
Prepare: TypeAlias = Callable[[Polled], Polled]


def read_ahead(source: Source, prepare: Prepare) -> Source:
    """``source`` wrapped in a :class:`ReadAhead` if it allows polls from another thread and
    is seekable with fixed partitions (see the module docstring), else ``source`` itself."""
    if getattr(source, "polls_on_any_thread", False) and source.replay == "seekable":
        return ReadAhead(source, prepare)
    return source


class ReadAhead(Source):
    """Polls ``source`` one batch ahead on a thread of its own; see the module docstring.

    Args:
        source: the source read (not yet opened).
        prepare: called on the thread with each non-empty batch polled; what it returns is
            what :meth:`poll_many` hands out (the same records, with work done on them).
    """

    def __init__(self, source: Source, prepare: Prepare) -> None:
        self.source = source
        self._prepare = prepare
        self._lock = threading.Lock()  # held by every call into the wrapped source
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="adaptd-read-ahead")
        self._ahead: Future[Polled] | None = None  # the next batch, being read or read
        self._paused = False

    @property
    def replay(self) -> Replay:  # type: ignore[override]
        return self.source.replay

    def _poll(self, max_records: int, timeout_s: float) -> Polled:
        with self._lock:
            raws = self.source.poll_many(max_records, timeout_s)
        return self._prepare(raws) if raws else raws

    def poll_many(self, max_records: int, timeout_s: float) -> Polled:
        """The batch read ahead, else one polled now; then, if it holds records, start reading
        the next. Blocks until the batch is read (and prepared); raises what its poll raised."""
        if self._paused:
            # Hand out nothing, as a paused source does, and keep what was read ahead.
            time.sleep(max(timeout_s, 0.0))
            return []
        ahead, self._ahead = self._ahead, None
        raws = ahead.result() if ahead is not None else self._poll(max_records, timeout_s)
        if raws:
            self._ahead = self._thread.submit(self._poll, max_records, timeout_s)
        return raws

    def poll(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        raws = self.poll_many(max_records, timeout_s)
        return raws.records() if isinstance(raws, RecordRun) else raws

    @property
    def exhausted(self) -> bool:
        """The wrapped source's, once nothing read ahead is left to hand out."""
        ahead = self._ahead
        if ahead is not None and (ahead.exception() is not None or ahead.result()):
            return False
        with self._lock:
            return self.source.exhausted

    def close(self) -> None:
        """Wait for a poll in progress (the batch it read is dropped), then close the source.
        Idempotent."""
        self._ahead = None
        self._thread.shutdown(wait=True)
        with self._lock:
            self.source.close()

    # -- the rest of the contract, one call at a time -----------------------------------

    def open(self, start_positions: Mapping[int, int],
             listener: PartitionListener | None = None) -> None:
        with self._lock:
            self.source.open(start_positions, listener)

    def commit(self, next_positions: Mapping[int, int]) -> None:
        with self._lock:
            self.source.commit(next_positions)

    def limit_record_bytes(self, max_bytes: int) -> None:
        with self._lock:
            self.source.limit_record_bytes(max_bytes)

    def commit_due(self) -> bool:
        with self._lock:
            return self.source.commit_due()

    def lag(self) -> Mapping[int, int]:
        with self._lock:
            return self.source.lag()

    def assigned(self) -> Collection[int]:
        with self._lock:
            return self.source.assigned()

    def pause(self) -> None:
        self._paused = True
        with self._lock:
            self.source.pause()

    def resume(self) -> None:
        self._paused = False
        with self._lock:
            self.source.resume()
