"""Writing behind: a learned batch's predictions are encoded into one buffer and written to
the sink on a second thread while the runner goes on with the next batch (with
:mod:`adaptd.read_ahead`, a two-core machine reads, learns and writes at the same time).

At most one batch is in flight, and the runner waits for it (:meth:`WriteBehind.wait`) before
it hands over the next one, before anything goes to the dead-letter sink, and before a
checkpoint flushes the sinks. So the sinks get every byte in the order the runner's own thread
would write them, and a checkpoint never commits a position whose prediction is not flushed.
A batch whose shape has no one-buffer encoding (:func:`adaptd.batch_path.encode_lean` says
None) is encoded message by message in that wait, on the runner's thread, where a message
that cannot be encoded is dead-lettered in its place; so is a batch with class probabilities
(multi-class), at once: they are named by the learner's classes, which change as it learns.
What a batch handed over is encoded from (its records, its rows, the outcomes' arrays) is
its own, never changed after. An error the write met is raised by the wait.

Only a sink that says so is written behind (class attribute ``writes_on_any_thread = True``):
its ``write_encoded`` may run on another thread than its other methods, never at the same
time as them except ``backlog`` and ``flush`` (sink backpressure flushes the sinks without
waiting for a write in progress: :meth:`adaptd.faults.Faults.relieve_backpressure`), which
must be safe to call meanwhile.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from adaptd.batch_path import Polled, Reject, encode_each, encode_lean
from adaptd.connectors.base import Sink

if TYPE_CHECKING:
    from adaptd.learner import Outcomes
    from adaptd.records import RecordBatch, TaskKind


def write_behind(sink: Sink | None, task: TaskKind, reject: Reject) -> WriteBehind | None:
    """A :class:`WriteBehind` for ``sink`` if it allows writes from another thread, else None
    (the runner then writes on its own thread)."""
    if sink is not None and getattr(sink, "writes_on_any_thread", False):
        return WriteBehind(sink, task, reject)
    return None


class WriteBehind:
    """Writes each learned batch's predictions to ``sink`` on a thread; see the module
    docstring.

    Args:
        sink: where predictions go.
        task: the prediction format's task.
        reject: where a prediction that cannot be encoded goes (the dead-letter path).
    """

    def __init__(self, sink: Sink, task: TaskKind, reject: Reject) -> None:
        self.sink = sink
        self.task: TaskKind = task
        self._reject = reject
        self._thread = ThreadPoolExecutor(max_workers=1,
                                          thread_name_prefix="adaptd-write-behind")
        self._in_flight: tuple[Polled, RecordBatch, Outcomes, Future[bool]] | None = None

    def write(self, good: Polled, batch: RecordBatch, outcomes: Outcomes) -> int:
        """Hand over a learned batch (its records, rows and outcomes, none of which the caller
        changes after); returns once the batch before is written, with what :meth:`wait`
        returned for it."""
        unsent = self.wait()
        if outcomes.probas is not None:
            # Class probabilities are named by the learner's classes, which the next batch may
            # add to: encoded now (message by message: no one-buffer encoding has them).
            return unsent + self._write_each(good, batch, outcomes)
        self._in_flight = (good, batch, outcomes,
                           self._thread.submit(self._encode_and_write, good, batch, outcomes))
        return unsent

    def _encode_and_write(self, good: Polled, batch: RecordBatch, outcomes: Outcomes) -> bool:
        encoded = encode_lean(good, batch, outcomes, self.task)
        if encoded is None:
            return False
        self.sink.write_encoded(encoded)
        return True

    def wait(self) -> int:
        """Wait for the batch in flight, if any, to be written (message by message, here, when
        it has no one-buffer encoding); returns how many of its predictions were dead-lettered
        instead. Raises what its write raised."""
        if self._in_flight is None:
            return 0
        good, batch, outcomes, written = self._in_flight
        self._in_flight = None
        return 0 if written.result() else self._write_each(good, batch, outcomes)

    def _write_each(self, good: Polled, batch: RecordBatch, outcomes: Outcomes) -> int:
        messages = encode_each(good, batch, outcomes, self.task, self._reject)
        self.sink.write(messages)
        return len(good) - len(messages)

    def close(self) -> None:
        """Wait for a write in progress to end, without raising its error or writing what was
        not written (the run is ending on an error). Idempotent."""
        self._in_flight = None
        self._thread.shutdown(wait=True)
