"""The last resort for a record the learner cannot process: find it, and go on without it.

The decoder refuses every record known to break the learner (see
:mod:`adaptd.records.fields`). Should another one get through, ``process_batch`` raises, and
without this module the daemon would die on it, restart, replay it from the checkpoint and die
again, for ever.

How: when ``process_batch`` raises, :func:`learn_isolating` compares the learner's counts
(:meth:`~adaptd.learner.Learner.summary`: updates, skipped updates, drift events, meta updates,
cumulative loss) with those taken before the batch. Unchanged counts mean no labelled record of
the batch was learned, so running its records again one at a time learns each once: the records
that go through are learned and predicted, a record that raises on its own (again with the
counts unchanged) is returned as unprocessable, and the batch goes on.

Guarantee and its limit: a batch is re-run only when the counts show it changed nothing. The
engine counts a record's update right after applying it (the compiled kernel per run of
records, the NumPy waves per wave), and every failure seen so far comes before the first
update (setting up rows, joining labels, building the task column). If the counts did move,
the learner is half way through the batch and re-running it would learn records twice: the
error propagates, the runner keeps the previous checkpoint and exits non-zero. So do a
:class:`~adaptd.errors.ConfigError` and a ``MemoryError`` (the task state outgrowing the
machine: :class:`~adaptd.errors.ArenaMemoryError`): no record is at fault, and each would fail
alike on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from adaptd.connectors.base import SinkMessage, SourceRecord
from adaptd.errors import ConfigError, RecordError
from adaptd.learner import Learner, Outcomes
from adaptd.records import RecordBatch, TaskKind, predictions

#: Where a record that cannot be processed goes: the runner's dead-lettering ``reject``.
Reject = Callable[[SourceRecord, RecordError], None]

log = logging.getLogger(__name__)


def learned_counts(learner: Learner) -> tuple[Any, ...]:
    """What changes when the learner learns anything (and nothing else)."""
    s = learner.summary()
    return (s.updates, s.skipped_updates, s.drift_events, s.meta_updates, s.cumulative_loss,
            s.baseline_loss)


def rows(batch: RecordBatch, start: int, stop: int) -> RecordBatch:
    """Rows ``start:stop`` of ``batch`` as a batch of their own."""
    return RecordBatch(batch.keys[start:stop], batch.X[start:stop], batch.y[start:stop],
                       batch.ids[start:stop], batch.tasks[start:stop])


def select(batch: RecordBatch, keep: list[int]) -> RecordBatch:
    """The rows ``keep`` of ``batch``, in that order."""
    return RecordBatch([batch.keys[i] for i in keep], batch.X[keep], batch.y[keep],
                       [batch.ids[i] for i in keep], [batch.tasks[i] for i in keep])


def concat(parts: list[Outcomes]) -> Outcomes:
    """One :class:`Outcomes` of ``parts`` in order."""
    if not parts:
        return Outcomes.empty(0)
    return Outcomes(*(np.concatenate([getattr(p, name) for p in parts]) for name in
                      ("y_pred", "loss", "segment", "drift", "learned", "recovered_after")))


def learn_isolating(learner: Learner, good: list[SourceRecord], batch: RecordBatch,
                    reject: Reject) -> tuple[Outcomes, list[SourceRecord], RecordBatch]:
    """Learn ``batch`` (rows of the records ``good``); a record the learner cannot process is
    handed to ``reject`` as ``unprocessable``. Returns the outcomes and the records and rows
    they belong to. Raises what ``process_batch`` raised when the learner may be half way
    through the batch."""
    outcomes, failed = _learn(learner, batch)
    if not failed:
        return outcomes, good, batch
    for i, exc in failed.items():
        log.error("partition %d position %d: the learner cannot process this record, "
                  "dead-lettered: %s: %s", good[i].partition, good[i].position,
                  type(exc).__name__, exc)
        reject(good[i], RecordError(
            "unprocessable", f"the learner failed on it: {type(exc).__name__}: {exc}"))
    keep = [i for i in range(len(good)) if i not in failed]
    return outcomes, [good[i] for i in keep], select(batch, keep)


def _learn(learner: Learner, batch: RecordBatch) -> tuple[Outcomes, dict[int, BaseException]]:
    """Outcomes of the rows learned, and the rows that could not be (index → error)."""
    before = learned_counts(learner)
    try:
        return learner.process_batch(batch), {}
    except (ConfigError, MemoryError):  # no record's fault: every re-run would fail alike
        raise
    except Exception as exc:  # any failure of a record is isolated below
        if learned_counts(learner) != before:
            raise
        if len(batch) == 1:
            return Outcomes.empty(0), {0: exc}
        log.warning("a batch of %d records failed before learning anything (%s: %s); "
                    "re-running its records one at a time", len(batch), type(exc).__name__, exc)
    parts: list[Outcomes] = []
    failed: dict[int, BaseException] = {}
    for i in range(len(batch)):
        before = learned_counts(learner)
        try:
            parts.append(learner.process_batch(rows(batch, i, i + 1)))
        except Exception as exc:  # the culprit is dead-lettered by the caller
            if learned_counts(learner) != before:
                raise
            failed[i] = exc
    return concat(parts), failed


def encode_isolating(good: list[SourceRecord], batch: RecordBatch, outcomes: Outcomes,
                     task: TaskKind, reject: Reject) -> list[SinkMessage]:
    """The batch's prediction messages. Should one not encode (the decoder lets through
    nothing known to fail), it goes to ``reject`` as ``unprocessable`` (learned from, not
    predicted) and the others are returned."""
    try:
        return predictions(good, batch, outcomes, task)
    except (TypeError, ValueError):  # orjson's JSONEncodeError is a TypeError
        pass
    messages: list[SinkMessage] = []
    for i, raw in enumerate(good):
        try:
            messages += predictions([raw], rows(batch, i, i + 1), outcomes[i:i + 1], task)
        except (TypeError, ValueError) as exc:
            reject(raw, RecordError("unprocessable", f"learned from, but its prediction "
                                    f"cannot be encoded: {type(exc).__name__}: {exc}"))
    return messages
