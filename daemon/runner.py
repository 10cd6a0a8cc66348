"""The runner: the path every record takes, top to bottom.

Per batch: poll → decode → learn (predict then train, per record) → emit predictions →
account → maybe checkpoint (a file's or a Kafka topic's next batch is read and decoded
meanwhile on a second thread, and a batch's predictions written on a third:
:mod:`adaptd.read_ahead`, :mod:`adaptd.write_behind`). Bad records go to the dead-letter sink with their reason and
original bytes; the stream goes on. How a batch is decoded, routed and encoded (in columns
and one buffer where it can be, else record by record) is :mod:`adaptd.batch_path`'s.
Every ``checkpoint_every_records`` records or ``checkpoint_interval_s`` seconds, on the way
out, and before partitions are taken away: flush sinks → write the checkpoint (shared state
once, then position and key states per partition) → commit the source's positions → evict
idle keys. A sink that cannot flush aborts that checkpoint, so positions are never committed
ahead of what the sinks hold. The checkpoints due by count or time are written behind, on a
worker thread, while the next records are read (:mod:`adaptd.save_behind`): their positions
are committed once they are durable, at the first poll after; the others wait for theirs.

Who owns what the loop touches:

* :class:`~adaptd.partitions.Partitions`: owned partitions, positions, key → partition, every
  byte of resume state (checkpoints and evicted keys);
* :class:`~adaptd.faults.Faults`: retry backoff while the source is away, sink backpressure;
* :mod:`adaptd.records`: decoding, and the prediction and dead-letter message formats.

Partitions come and go (Kafka consumer groups): the runner is the source's
:class:`~adaptd.connectors.base.PartitionListener` and hands each callback to ``Partitions``,
checkpointing first when partitions are revoked.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptd import batch_path, identity
from adaptd.batch_path import Polled
from adaptd.checkpoint import CheckpointStore
from adaptd.collector import cyclic_gc_paused
from adaptd.connectors.base import EncodedBatch, RecordRun, Sink, Source, SourceRecord
from adaptd.errors import AdaptdError, RecordError, SinkError, StateLostError
from adaptd.faults import Faults
from adaptd.isolation import learn_isolating
from adaptd.learner import Learner, LearnerSummary, Outcomes
from adaptd.metrics import Metrics
from adaptd.partitions import Partitions
from adaptd.read_ahead import read_ahead
from adaptd.records import RecordBatch, RecordDecoder, TaskKind, dead_letter
from adaptd.save_behind import Snapshot
from adaptd.settings import ResilienceConfig
from adaptd.write_behind import write_behind

if TYPE_CHECKING:  # kafka-python is imported only by a run whose source is Kafka
    from adaptd.changelog import Changelog
    from adaptd.meta_sync import MetaSync

log = logging.getLogger(__name__)


@dataclass
class RunnerConfig:
    """How the loop paces itself. Defaults are the settings' defaults.

    Args:
        task: ``classification`` adds ``proba`` and a 0/1 ``y_pred`` to predictions.
        batch_size: most records per poll.
        poll_timeout_s: longest wait of one poll.
        checkpoint_every_records: a checkpoint is due after this many records ...
        checkpoint_interval_s: ... or this many seconds, whichever comes first.
        checkpoint_max_share: ... but one due by count waits until the time since the last
            is at least ``(1 − share)/share`` times what that one took (1: no pause).
        resilience: retry backoff and sink backpressure settings.
        give_up_after_s: how long the state dir may refuse checkpoints before the run stops
            with :class:`~adaptd.errors.StateLostError`.
    """

    task: TaskKind = "regression"
    batch_size: int = 4096
    poll_timeout_s: float = 0.2
    checkpoint_every_records: int = 100_000
    checkpoint_interval_s: float = 30.0
    checkpoint_max_share: float = 1.0
    resilience: ResilienceConfig = field(default_factory=ResilienceConfig)
    give_up_after_s: float = 60.0

    @classmethod
    def from_settings(cls, settings: Any) -> RunnerConfig:
        """The loop's part of :class:`~adaptd.settings.Settings`."""
        return cls(task=settings.task, batch_size=settings.batch_size,
                   poll_timeout_s=settings.poll_timeout_s,
                   checkpoint_every_records=settings.checkpoint_every_records,
                   checkpoint_interval_s=settings.checkpoint_interval_s,
                   checkpoint_max_share=settings.checkpoint.max_time_share,
                   resilience=settings.resilience,
                   give_up_after_s=settings.checkpoint.give_up_after_s)


@dataclass
class RunSummary:
    """What a run did, for the CLI's closing line and for tests."""

    records: int = 0
    predictions: int = 0
    updates: int = 0
    rejected: int = 0
    drifts: int = 0
    checkpoints: int = 0
    cumulative_loss: float = 0.0
    baseline_loss: float | None = None
    hindsight_regret: float | None = None
    elapsed_s: float = 0.0

    @property
    def records_per_s(self) -> float:
        return self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def add(self, outcomes: Outcomes, totals: LearnerSummary) -> None:
        """Count one learned batch; the learner's running totals replace the loss figures."""
        self.predictions += len(outcomes)
        self.updates += int(np.count_nonzero(outcomes.learned))  # (cheaper than a bool sum)
        self.drifts += int(np.count_nonzero(outcomes.drift))
        self.cumulative_loss = totals.cumulative_loss
        self.baseline_loss = totals.baseline_loss
        self.hindsight_regret = totals.hindsight_regret


class Runner:
    """Drives one source through one learner. Its loop runs on one thread (a file or topic is
    read ahead and its predictions written behind on two more: :mod:`adaptd.read_ahead`,
    :mod:`adaptd.write_behind`); :meth:`request_stop` and
    :meth:`ready` are the only methods safe to call from elsewhere (a signal handler, HTTP).

    Args:
        source: not yet opened; the runner opens it at the checkpoint's positions.
        learner: the model state; restored from the checkpoint if there is one.
        decoder: validates records; its inferred feature layout is checkpointed too.
        metrics: where counts go.
        store: the checkpoint store (owned from here on by :class:`Partitions`).
        sink: predictions go here (None: predictions are counted, not emitted).
        dead_letter: rejected records go here.
        config: pacing, checkpoint timing and fault settings.
        clock: monotonic seconds; injected by tests.
        sleep: waits between retries; injected by tests.
        changelog: a Kafka source's changelog topic (see :mod:`adaptd.changelog`).
        meta_sync: a Kafka source's meta topic (see :mod:`adaptd.meta_sync`).
    """

    def __init__(self, source: Source, learner: Learner, decoder: RecordDecoder,
                 metrics: Metrics, store: CheckpointStore, sink: Sink | None = None,
                 dead_letter: Sink | None = None, config: RunnerConfig | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 changelog: Changelog | None = None, meta_sync: MetaSync | None = None) -> None:
        # A file or Kafka topic is read and decoded a batch ahead on a second thread (adaptd.read_ahead).
        self.source = read_ahead(source, functools.partial(batch_path.decode_ahead, decoder))
        self.learner = learner
        self.decoder = decoder
        self.metrics = metrics
        self.sink = sink
        self.dead_letter = dead_letter
        self.sinks = [s for s in (sink, dead_letter) if s is not None]
        self.config = config or RunnerConfig()
        # ... and its predictions encoded and written behind on a third (adaptd.write_behind).
        self._behind = write_behind(sink, self.config.task, self.reject)
        self.clock = clock
        self._stop = False
        self.partitions = Partitions(store, learner, decoder, changelog, meta_sync, clock)
        self.partitions.on_written(self._written)
        self.state_dir = store.state_dir
        # Why the last checkpoint failed when the state dir refused it (None: it did not).
        self._state_error: Exception | None = None
        #: Why the last checkpoint could not flush a sink (None: it could).
        self._sink_error: SinkError | None = None
        # Set once checkpoints are given up on: no final checkpoint is attempted then.
        self._state_lost = False
        # True once the state dir's identity holds the feature layout (or it has no identity).
        self._layout_recorded = False
        self.faults = Faults(self.config.resilience, clock, sleep, lambda: self._stop)
        self.summary = RunSummary()
        self._opened = False
        # False while a batch is half applied: a checkpoint then would count records twice.
        self._consistent = True
        self._since_checkpoint = 0
        self._last_checkpoint_at = 0.0
        # No checkpoint due by count alone before this clock reading (checkpoint_max_share).
        self._paused_until = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    def ready(self) -> bool:
        """State loaded, source reachable, partitions assigned and the last checkpoint written
        (a state dir refusing checkpoints loses what is read meanwhile); read by ``/readyz``."""
        return (self._opened and self.faults.available and bool(self.partitions.owned)
                and self._state_error is None)

    def request_stop(self) -> None:
        """Ask the loop to stop after the current batch; it then checkpoints and returns."""
        self._stop = True

    def run(self) -> RunSummary:
        """Open, process until the source is exhausted or a stop is requested, checkpoint.

        Blocks for the whole run, riding out an unavailable source. Returns the summary;
        anything but a fault the runner knows how to wait out propagates after a best-effort
        checkpoint.
        """
        started = self.clock()
        final_ok = True
        try:
            self.open()
            self._last_checkpoint_at = self.clock()
            while not self._stop:
                raws = self.faults.poll(self.source, self.config.batch_size,
                                        self.config.poll_timeout_s)
                if raws:
                    self.process(raws)
                elif self.faults.available and self.source.exhausted:
                    log.info("source exhausted")
                    break
                self.faults.relieve_backpressure(self.source, self.sinks)
                self.maybe_checkpoint()
        finally:
            self.summary.elapsed_s = self.clock() - started
            try:
                if self._opened and self._consistent and not self._state_lost:
                    final_ok = self.checkpoint()
                elif self._opened and not self._state_lost:
                    log.error("a batch failed half way: keeping the previous checkpoint")
            finally:
                self._opened = False
                self._close()
        # Reached only when nothing else is propagating: exit 0 would claim a kept state.
        if not final_ok and self._state_error is not None:
            raise StateLostError(self._lost_message("the final checkpoint failed"))
        if not final_ok and self._sink_error is not None:
            raise SinkError(f"the final checkpoint failed: {self._sink_error}; positions since "
                            "the previous checkpoint are not committed: a restart replays them")
        return self.summary

    def open(self) -> None:
        """Load the state of the source's static partitions and open it; retries while the
        source is unavailable, until it opens or a stop is requested. Blocks."""
        # Files and synthetic streams know their partitions up front; Kafka tells us through
        # on_assigned once it has them.
        # Sources that assemble records from bytes stop holding one past the decoder's limit.
        self.source.limit_record_bytes(self.decoder.max_record_bytes)
        static = list(self.source.assigned())
        positions = self.on_assigned(static) if static else {}
        while not self._stop:
            if self.faults.open(self.source, positions, listener=self):
                self._opened = True
                log.info("source open")
                return

    def _close(self) -> None:
        if self._behind is not None:  # no write in progress once the sinks close
            self._behind.close()
        # The source first: closing it revokes its partitions, which checkpoints them.
        for part in (self.source, *self.sinks, self.partitions):
            try:
                part.close()
            except (AdaptdError, OSError) as exc:  # a fault the run already reported or will
                log.error("closing %s failed: %s", type(part).__name__, exc)
            except Exception:  # closing must not hide the error that got us here
                log.exception("closing %s failed", type(part).__name__)

    # -- partitions (PartitionListener) --------------------------------------------------

    def on_assigned(self, partitions: Collection[int]) -> Mapping[int, int]:
        """Called by the source before any record of ``partitions`` is polled: load their
        checkpoints; returns where each resumes. Blocks on the state directory."""
        return self.partitions.assign(partitions)

    def on_revoked(self, partitions: Collection[int]) -> None:
        """Called by the source before partitions go to another consumer: checkpoint (flushing
        sinks and committing), then forget them. If the checkpoint fails, the next owner
        resumes from the previous one and replays: the state is still right, predictions may
        repeat."""
        # Nothing processed since the last checkpoint: it already holds these partitions.
        if self._consistent and self._since_checkpoint and not self.checkpoint():
            log.warning("partitions %s handed over without a fresh checkpoint: the next owner "
                        "replays them from the previous one", sorted(partitions))
        self.on_lost(partitions)

    def on_lost(self, partitions: Collection[int]) -> None:
        """Forget partitions without checkpointing them: another consumer may own them already
        (the group session expired), and a checkpoint from here could overwrite its newer one.
        A checkpoint in flight is waited for first (and committed, where still owned)."""
        self._collect()
        self.partitions.release(partitions)
        owned = self.partitions.owned
        self.metrics.set_lag({p: n for p, n in self.source.lag().items() if p in owned}, owned)

    # -- the record path -------------------------------------------------------------------

    def process(self, raws: Polled) -> Outcomes:
        """Decode, learn, emit, and account for one polled batch. Blocks on the sink write."""
        with cyclic_gc_paused():
            return self._process(raws)

    def _process(self, raws: Polled) -> Outcomes:
        decoded_at = self.clock()
        self._consistent = False
        self.metrics.records_consumed.inc(len(raws))
        self.summary.records += len(raws)
        good, batch = self.decode(raws)
        self.route(good, batch)
        outcomes, good, batch = self.learn(good, batch)
        unsent = 0  # learned from, but dead-lettered: their predictions could not be encoded
        if self.sink is not None and good:
            unsent = self.emit(good, batch, outcomes)
        # A run's last record carries its partition's next position.
        self.partitions.advance([raws[-1]] if isinstance(raws, RecordRun) else raws)
        totals = self.learner.summary()
        self.metrics.observe_batch(outcomes, totals, self.clock() - decoded_at)
        self.summary.add(outcomes, totals)
        self.summary.predictions -= unsent
        self._since_checkpoint += len(raws)
        self._consistent = True
        return outcomes

    def decode(self, raws: Polled) -> tuple[Polled, RecordBatch]:
        """The records that decode, and their columns; the others are rejected on the way
        (:func:`adaptd.batch_path.decode`)."""
        return batch_path.decode(self.decoder, self.learner.pending, raws, self.reject)

    def route(self, good: Polled, batch: RecordBatch) -> None:
        """Tell :class:`Partitions` which partition each record's key comes from."""
        self.partitions.route(*batch_path.routing(good, batch))

    def learn(self, good: Polled, batch: RecordBatch
              ) -> tuple[Outcomes, Polled, RecordBatch]:
        """Predict and learn ``batch``; a record the learner cannot process is dead-lettered
        as ``unprocessable`` and left out (see :mod:`adaptd.isolation` for when that is safe).
        Returns the outcomes with the records and rows they belong to."""
        if not good:
            return Outcomes.empty(0), good, batch
        return learn_isolating(self.learner, good, batch, self.reject)

    def emit(self, good: Polled, batch: RecordBatch, outcomes: Outcomes) -> int:
        """Write the batch's predictions to the sink (one buffer where the batch's shape
        allows: :func:`adaptd.batch_path.encode`). Returns how many were dead-lettered."""
        assert self.sink is not None
        if self._behind is not None:  # this batch's count comes with the next's
            return self._behind.write(good, batch, outcomes)
        encoded = batch_path.encode(good, batch, outcomes, self.config.task, self.reject)
        if isinstance(encoded, EncodedBatch):
            self.sink.write_encoded(encoded)
            return 0
        self.sink.write(encoded)
        return len(good) - len(encoded)

    def reject(self, raw: SourceRecord, err: RecordError) -> None:
        """Count a bad record and send it to the dead-letter sink with its original bytes."""
        self.settle_writes()  # the predictions of the batch before come first
        log.debug("rejected partition %d position %d: %s", raw.partition, raw.position, err)
        self.metrics.reject(err.reason)
        self.summary.rejected += 1
        if self.dead_letter is not None:
            self.dead_letter.write([dead_letter(raw, err)])

    def settle_writes(self) -> None:
        """Wait until the predictions written behind are written; a write that failed leaves
        the run without a final checkpoint, as a batch that failed half way does."""
        if self._behind is None:
            return
        try:
            self.summary.predictions -= self._behind.wait()
        except BaseException:
            self._consistent = False
            raise

    # -- checkpoints -----------------------------------------------------------------------

    def maybe_checkpoint(self) -> None:
        """Checkpoint when due by record count, by time (with records since the last), or
        because an acknowledged source asks for it; refresh the lag gauges on the same timer.
        Called after every poll."""
        pending = self._since_checkpoint > 0
        due_by_count = self._since_checkpoint >= self.config.checkpoint_every_records
        elapsed_s = self.clock() - self._last_checkpoint_at
        due_by_time = elapsed_s >= self.config.checkpoint_interval_s
        # An acknowledged source acknowledges only in commit, and its broker stops delivering
        # once its window of unacknowledged messages is full (MQTT: 20 by default).
        due_by_source = pending and self.source.commit_due()
        # The pause defers only the count's checkpoints, and none while evicted keys wait in
        # memory for one: what a checkpoint costs may grow with what it waits for.
        paused = self.clock() < self._paused_until and not self.partitions.evictions_waiting()
        # As many states of keys let go of wait in memory as keys may be live: written now,
        # so memory stays bounded by max_keys whatever the count (many distinct keys).
        due_by_evictions = pending and self.partitions.evictions_full()
        if self.partitions.save_done and not self._collect():
            self.checkpoint_or_give_up()  # the one written behind failed: retried from here
        if (due_by_source or due_by_evictions or (due_by_time and pending)
                or (due_by_count and not paused)):
            self.checkpoint_or_give_up(behind=True)
        if due_by_time:
            self.metrics.set_lag(self.source.lag(), self.partitions.owned)
            if self.partitions.sync_meta():
                self.metrics.meta_tasks.set(self.partitions.meta_tasks)
            self._last_checkpoint_at = self.clock()

    def checkpoint_or_give_up(self, behind: bool = False) -> None:
        """:meth:`checkpoint` (``behind``: written behind); while the state dir refuses it,
        retry with backoff, polling nothing meanwhile, for up to ``give_up_after_s``, then
        raise :class:`~adaptd.errors.StateLostError`. A sink that cannot flush is not retried
        here: the next due checkpoint tries again, as the source's faults are ridden out."""
        first_failure_at: float | None = None
        wait_s = self.config.resilience.retry_backoff_initial_s
        while not self.checkpoint(behind) and self._state_error is not None:
            now = self.clock()
            first_failure_at = now if first_failure_at is None else first_failure_at
            if self._stop or now - first_failure_at >= self.config.give_up_after_s:
                self._state_lost = True
                raise StateLostError(self._lost_message(
                    f"checkpoints failed for {now - first_failure_at:.0f} s"))
            self.faults.wait(wait_s)
            wait_s = min(wait_s * 2, self.config.resilience.retry_backoff_max_s)

    def _lost_message(self, what: str) -> str:
        assert self._state_error is not None
        err = self._state_error
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        return (f"state dir {str(self.state_dir)!r}: {what} ({type(err).__name__}: {reason}); "
                f"what was read since the last checkpoint is not kept: a restart replays it "
                f"(seekable and acknowledged sources) once the state dir takes writes")

    def checkpoint(self, behind: bool = False) -> bool:
        """Flush sinks → write state and positions → commit positions → evict idle keys.
        Returns False if aborted (a sink could not flush, the disk refused). With ``behind``,
        the write is started on the worker thread and :meth:`_collect` commits it later.
        Waits for the checkpoint in flight first; blocks."""
        started = self.clock()
        if not self._collect():  # the one in flight failed: this one writes its keys again
            return False
        self._state_error = self._sink_error = None
        self.settle_writes()
        try:
            for sink in self.sinks:
                sink.flush()
        except SinkError as exc:
            self._sink_error = exc
            self.metrics.checkpoint_failures.inc()
            log.error("checkpoint aborted, positions not committed: %s", exc)
            return False
        self.partitions.save_behind(started)
        self._since_checkpoint = 0
        self._last_checkpoint_at = self.clock()
        return True if behind else self._collect()

    def _written(self, snapshot: Snapshot) -> None:
        """Count a checkpoint as soon as it is durable (called on the worker thread: the
        metrics are thread-safe), so the counter never lags behind what the state dir holds."""
        self.metrics.checkpoints.inc()
        self.metrics.checkpoint_duration.observe(snapshot.written_s - snapshot.started_s)

    def _collect(self) -> bool:
        """Wait for the checkpoint in flight; once it is durable, commit its positions and
        account for it. False if its write failed (the state dir or the changelog refused)."""
        try:
            snapshot = self.partitions.saved()
        except (OSError, sqlite3.Error) as exc:  # the state dir refused: disk full, read-only
            self._state_error = exc
            self.metrics.checkpoint_failures.inc()
            log.error("checkpoint aborted, positions not committed: state dir %s: %s",
                      self.state_dir, exc)
            return False
        if snapshot is None:
            return True
        self.source.commit(snapshot.positions)
        self.summary.checkpoints += 1
        took_s = snapshot.written_s - snapshot.started_s
        share = self.config.checkpoint_max_share
        self._paused_until = snapshot.written_s + took_s * (1 - share) / share
        log.debug("checkpoint at positions %s", snapshot.positions)
        self.partitions.evict()
        self.metrics.observe_totals(self.learner.summary())
        self.metrics.meta_tasks.set(self.partitions.meta_tasks)
        if not self._layout_recorded:
            self._layout_recorded = identity.record_layout(Path(self.state_dir),
                                                           self.decoder.layout())
        return True
