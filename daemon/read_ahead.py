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
* **One call at a time.** No call into the wrapped source overlaps another, as the connector
  contract promises connectors; a call from the runner waits for a poll in progress on the
  thread.
* **Partition changes between batches.** A Kafka client calls the partition listener back
  inside ``poll`` (librdkafka on the polling thread, kafka-python on its I/O thread while the
  polling thread waits), so a poll read ahead meets them while the runner may be processing a
  batch. Such a callback waits until the runner's thread comes back for its next batch (or
  makes any other call into the source), which then halts until the callback has run
  (checkpoint on revoke, state restore on assign): it never runs alongside record work, and
  the runner's state is touched by one thread at a time. The calls a callback makes into the
  source go straight through, as they do from inside any callback. A batch already read ahead
  is only ever held while the runner polls the source itself (paused); a callback then drops
  its records of the partitions it names: revoked ones are the next owner's, and assigned ones
  are sought back to the checkpoint and read again.

Only a source that says so is wrapped (class attribute ``polls_on_any_thread = True``): its
``poll_many`` may run on another thread than its other methods (never at the same time), and
it is seekable. One that must be polled while paused, because its poll keeps it in a group
and calls its listener back (``calls_listener_from_poll = True``: Kafka), is polled on the
runner's thread while paused; any other paused source is not polled.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeAlias, TypeVar

from adaptd.connectors.base import PartitionListener, RecordRun, Replay, Source, SourceRecord

Polled: TypeAlias = list[SourceRecord] | RecordRun
Prepare: TypeAlias = Callable[[Polled], Polled]
T = TypeVar("T")


def read_ahead(source: Source, prepare: Prepare) -> Source:
    """``source`` wrapped in a :class:`ReadAhead` if it allows polls from another thread and
    is seekable (see the module docstring), else ``source`` itself."""
    if getattr(source, "polls_on_any_thread", False) and source.replay == "seekable":
        return ReadAhead(source, prepare)
    return source


def without_partitions(polled: Polled, gone: Collection[int]) -> Polled:
    """``polled`` less its records of the partitions ``gone``."""
    if isinstance(polled, RecordRun):
        return [] if polled.partition in gone else polled
    if not any(raw.partition in gone for raw in polled):
        return polled
    return [raw for raw in polled if raw.partition not in gone]


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
        self._polls_paused = bool(getattr(source, "calls_listener_from_poll", False))
        # Guards the fields below; notified whenever one of them changes.
        self._cond = threading.Condition()
        self._busy = False  # a call into the wrapped source is in progress ...
        self._thread_polls = False  # ... and it is the read-ahead thread's poll
        self._waiting = 0  # callbacks met by that poll, waiting for the runner's thread to halt
        self._halted = False  # the runner's thread waits while one of them runs
        self._callback_thread: int | None = None  # the thread running a callback
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="adaptd-read-ahead")
        self._ahead: Future[Polled] | None = None  # the next batch, being read or read
        self._paused = False

    @property
    def replay(self) -> Replay:  # type: ignore[override]
        return self.source.replay

    # -- the read-ahead thread -------------------------------------------------------------

    def _poll_ahead(self, max_records: int, timeout_s: float) -> Polled:
        with self._cond:
            while self._busy:
                self._cond.wait()
            self._busy = self._thread_polls = True
        try:
            raws = self.source.poll_many(max_records, timeout_s)
        finally:
            with self._cond:
                self._busy = self._thread_polls = False
                self._cond.notify_all()
        return self._prepare(raws) if raws else raws

    def _notify(self, _done: object = None) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- listener callbacks ----------------------------------------------------------------

    def _callback(self, call: Callable[[], T], partitions: Collection[int]) -> T:
        """Run a listener callback where the client calls it back, once the runner's thread is
        where it may be: inside a call into the source itself, or halted between batches
        (:meth:`_halt`) when the thread's poll met it; calls the callback makes into this
        source go straight through."""
        me = threading.get_ident()
        halts = self._thread_polls and me != self._callback_thread
        if halts:
            with self._cond:
                self._waiting += 1
                self._cond.notify_all()
                while not self._halted:
                    self._cond.wait()
        outer, self._callback_thread = self._callback_thread, me
        try:
            self._drop_ahead(partitions)
            return call()
        finally:
            self._callback_thread = outer
            if halts:
                with self._cond:
                    self._waiting -= 1
                    self._halted = self._waiting > 0
                    self._cond.notify_all()

    def _halt(self) -> None:
        """Let the callbacks the thread's poll met run, waiting meanwhile; called on the
        runner's thread holding ``_cond`` (released while waiting)."""
        self._halted = True
        self._cond.notify_all()
        while self._halted:
            self._cond.wait()

    def _drop_ahead(self, partitions: Collection[int]) -> None:
        """Forget what the batch read ahead holds of ``partitions`` (see the module docstring)."""
        ahead = self._ahead
        if ahead is None or not ahead.done() or ahead.exception() is not None:
            return
        kept = without_partitions(ahead.result(), set(partitions))
        if kept is not ahead.result():
            self._ahead = _done(kept) if kept else None

    # -- the runner's thread ---------------------------------------------------------------

    def _until_done(self, ahead: Future[Polled]) -> Future[Polled]:
        """``ahead`` once its poll is over, halting for the callbacks it meets meanwhile."""
        with self._cond:
            while not ahead.done():
                if self._waiting:
                    self._halt()
                else:
                    self._cond.wait()
        return ahead

    def _call(self, method: Callable[..., T], *args: Any) -> T:
        """``method(*args)`` on the wrapped source once no other call is in progress; straight
        through from a callback (the client is inside its callback, where calls are allowed)."""
        if threading.get_ident() == self._callback_thread:
            return method(*args)
        with self._cond:
            while self._busy:
                if self._waiting:
                    self._halt()
                else:
                    self._cond.wait()
            self._busy = True
        try:
            return method(*args)
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def poll_many(self, max_records: int, timeout_s: float) -> Polled:
        """The batch read ahead, else one polled now; then, if it holds records, start reading
        the next. Blocks until the batch is read (and prepared), running the partition
        callbacks its poll meets; raises what its poll raised."""
        if self._paused:
            return self._poll_paused(max_records, timeout_s)
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            raws = self._until_done(ahead).result()
        else:
            raws = self._call(self.source.poll_many, max_records, timeout_s)
            raws = self._prepare(raws) if raws else raws
        if raws:
            self._ahead = self._thread.submit(self._poll_ahead, max_records, timeout_s)
            self._ahead.add_done_callback(self._notify)
        return raws

    def _poll_paused(self, max_records: int, timeout_s: float) -> Polled:
        """Hand out nothing, as a paused source does, and keep what was read ahead; a source
        whose poll keeps it in its group is polled (it returns nothing while paused)."""
        if not self._polls_paused:
            time.sleep(max(timeout_s, 0.0))
            return []
        if self._ahead is not None:
            self._until_done(self._ahead)  # its poll ends; its batch is kept
        raws = self._call(self.source.poll_many, max_records, timeout_s)
        if not raws:
            return raws
        # A source that hands out records while paused: after what was read ahead, in order.
        raws = self._prepare(raws)
        if self._ahead is None:
            return raws
        out = self._ahead.result()
        self._ahead = _done(raws)
        return out

    def poll(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        raws = self.poll_many(max_records, timeout_s)
        return raws.records() if isinstance(raws, RecordRun) else raws

    @property
    def exhausted(self) -> bool:
        """The wrapped source's, once nothing read ahead is left to hand out."""
        ahead = self._ahead
        if ahead is not None and (self._until_done(ahead).exception() is not None
                                  or ahead.result()):
            return False  # a batch (or the error of its poll) is left to hand out
        return self._call(lambda: self.source.exhausted)

    def close(self) -> None:
        """Wait for a poll in progress (the batch it read is dropped), then close the source.
        Idempotent."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:  # its batch (or error) is dropped: the next run reads it again
            self._until_done(ahead)
        self._thread.shutdown(wait=True)
        self._call(self.source.close)

    # -- the rest of the contract, one call at a time -----------------------------------

    def open(self, start_positions: Mapping[int, int],
             listener: PartitionListener | None = None) -> None:
        wrapped = None if listener is None else _Listener(self, listener)
        self._call(self.source.open, start_positions, wrapped)

    def commit(self, next_positions: Mapping[int, int]) -> None:
        self._call(self.source.commit, next_positions)

    def limit_record_bytes(self, max_bytes: int) -> None:
        self._call(self.source.limit_record_bytes, max_bytes)

    def commit_due(self) -> bool:
        return self._call(self.source.commit_due)

    def lag(self) -> Mapping[int, int]:
        return self._call(self.source.lag)

    def assigned(self) -> Collection[int]:
        return self._call(self.source.assigned)

    def pause(self) -> None:
        self._paused = True
        self._call(self.source.pause)

    def resume(self) -> None:
        self._paused = False
        self._call(self.source.resume)


def _done(polled: Polled) -> Future[Polled]:
    future: Future[Polled] = Future()
    future.set_result(polled)
    return future


class _Listener:
    """The runner's partition listener as the wrapped source sees it: no callback runs while
    the runner's thread processes a batch (:meth:`ReadAhead._callback`)."""

    def __init__(self, ahead: ReadAhead, listener: PartitionListener) -> None:
        self._ahead = ahead
        self._listener = listener

    def on_assigned(self, partitions: Collection[int]) -> Mapping[int, int]:
        return self._ahead._callback(lambda: self._listener.on_assigned(partitions), partitions)

    def on_revoked(self, partitions: Collection[int]) -> None:
        self._ahead._callback(lambda: self._listener.on_revoked(partitions), partitions)

    def on_lost(self, partitions: Collection[int]) -> None:
        on_lost = getattr(self._listener, "on_lost", self._listener.on_revoked)
        self._ahead._callback(lambda: on_lost(partitions), partitions)
