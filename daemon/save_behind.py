"""Checkpoints written behind the record path: one at a time, on a worker thread.

A checkpoint has a part that needs the live learner and a part that only waits on the disk and
the broker. :meth:`adaptd.partitions.Partitions.snapshot` does the first on the runner's thread:
it packs the changed keys and the shared state into a :class:`Snapshot` that nothing changes
afterwards (packed values are bytes; anything else is copied here, :func:`freeze`). The second
— the store's transaction and fsync, the changelog's append and flush, ``meta.pt`` — runs here
while the runner reads and learns the next records. The runner commits the snapshot's positions
to the source only once :meth:`SaveBehind.wait` has returned it (the quix-streams order: flush
sinks, write state, flush the changelog producer, commit offsets), so a committed position
never covers a state that is not durable.

At most one checkpoint is in flight: the next one, a revocation, an assignment, a read of an
evicted key from the store, a meta-state merge and the close all wait for it first (they use
the store or the state topics' clients, which are one thread's at a time). A write that fails
hands its exception to the runner with the snapshot, so that the keys it held are written
again by the next attempt: the runner then retries and gives up exactly as when a checkpoint
written on its own thread fails, and no later checkpoint is committed past the failed one.
"""

from __future__ import annotations

import pickle
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from adaptd.checkpoint import PartitionChanges
from adaptd.state_codec import PackedRow, SplitState


@dataclass
class Snapshot:
    """One checkpoint as packed on the runner's thread, and what undoes its bookkeeping.

    ``changes``, ``shared``, ``local`` and ``meta`` are written; ``positions`` are committed
    once they are; ``cold``, ``touched``, ``dropped`` and ``evicted`` are what the partitions
    took for it (the keys to write again and to bring back if the write fails); ``mark`` is
    the learner's :meth:`~adaptd.learner.adaptive.AdaptiveLearner.save_mark` at packing time.
    """

    number: int
    shared: dict[str, Any]
    changes: dict[int, PartitionChanges]
    local: dict[str, Any]
    positions: dict[int, int]
    started_s: float
    meta: dict[str, Any] | None = None
    cold: dict[str, Any] = field(default_factory=dict)
    touched: dict[int, set[str]] = field(default_factory=dict)
    dropped: dict[int, set[str]] = field(default_factory=dict)
    evicted: dict[int, set[str]] = field(default_factory=dict)
    mark: Any = None
    #: Clock reading once the write was done (0: not yet).
    written_s: float = 0.0


def freeze(value: Any) -> Any:
    """``value`` with nothing shared with the live learner: a packed state (bytes, or a row of
    a packed group, whose columns packing built for this checkpoint alone) as it is,
    anything else through a pickle round trip (a deep copy; the shared state is a few kB)."""
    if isinstance(value, (bytes, PackedRow, SplitState)):
        return value
    return pickle.loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


_PACKED = frozenset((bytes, PackedRow, SplitState))


def frozen_changes(change: PartitionChanges) -> PartitionChanges:
    """``change`` with its states and labels frozen (packed states are bytes already)."""
    # Packing builds a fresh dict of packed values (bytes, rows of a group packed for this
    # checkpoint alone): nothing in it is the learner's, so it is taken as it is, without a
    # step per key (up to max_keys of them).
    states = change.states if _PACKED.issuperset(map(type, change.states.values())) else \
        {k: freeze(v) for k, v in change.states.items()}
    labels = freeze(change.labels) if change.labels else {}
    return PartitionChanges(position=change.position, states=states, labels=labels,
                            evicted=frozenset(change.evicted))


class SaveBehind:
    """The worker thread and the one checkpoint in flight. Runner thread only (the job runs on
    the worker); :meth:`wait` blocks until the job is done.

    Args:
        write: writes a snapshot durably; runs on the worker; raises when it could not.
        clock: monotonic seconds, read when a write is done.
    """

    def __init__(self, write: Callable[[Snapshot], Any], clock: Callable[[], float]) -> None:
        self._write = write
        self._clock = clock
        self._snapshot: Snapshot | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._jobs: queue.SimpleQueue[Snapshot | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        #: Called on the worker thread as soon as a snapshot is durable, before :meth:`wait`
        #: hands it back (the checkpoint metrics: a reader of the state dir may see it first).
        self.on_written: Callable[[Snapshot], None] | None = None

    @property
    def busy(self) -> bool:
        """A snapshot was started and not yet handed back by :meth:`wait`."""
        return self._snapshot is not None

    def done(self) -> bool:
        """A snapshot was started and :meth:`wait` would not block."""
        return self._snapshot is not None and self._done.is_set()

    def start(self, snapshot: Snapshot) -> None:
        """Write ``snapshot`` on the worker thread; the one before must have been waited for.
        Never blocks."""
        assert self._snapshot is None, "one checkpoint in flight at a time"
        self._snapshot, self._error = snapshot, None
        self._done.clear()
        if self._thread is None:
            # One thread for the run (a thread's start waits for it to be scheduled: tens of
            # ms on a loaded machine); a daemon, so a run that stops on an error never hangs.
            self._thread = threading.Thread(target=self._serve, name="adaptd-checkpoint",
                                            daemon=True)
            self._thread.start()
        self._jobs.put(snapshot)

    def _serve(self) -> None:
        while (snapshot := self._jobs.get()) is not None:
            try:
                self._write(snapshot)
                snapshot.written_s = self._clock()
                if self.on_written is not None:
                    self.on_written(snapshot)
            except BaseException as exc:  # noqa: BLE001 (handed to the runner's thread by wait())
                self._error = exc
            finally:
                self._done.set()

    def wait(self) -> tuple[Snapshot | None, BaseException | None]:
        """The snapshot in flight once written, with the exception its write raised (None: it
        is durable); (None, None) when none is in flight. Blocks until it is done."""
        snapshot = self._snapshot
        if snapshot is None:
            return None, None
        self._done.wait()
        self._snapshot = None
        error, self._error = self._error, None
        return snapshot, error

    def close(self) -> None:
        """Wait for the write in flight (its outcome is dropped: call :meth:`wait` first to
        have it) and end the worker thread."""
        if self._snapshot is not None:
            self._done.wait()
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
