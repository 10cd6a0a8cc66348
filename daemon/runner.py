"""The runner: the path every record takes, top to bottom.

Per batch: poll → decode → predict and learn (test-then-train, per record) → emit predictions
→ account. Bad records go to the dead-letter sink with their reason and original bytes; the
stream goes on. Every ``checkpoint_every_records`` records or ``checkpoint_interval_s`` seconds,
and on the way out: flush sinks → write the checkpoint (state + next positions) → commit the
source's positions. A sink that cannot flush aborts that checkpoint, so positions are never
committed ahead of what the sinks hold.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connectors.base import Sink, SinkMessage, Source, SourceRecord
from daemon.checkpoint import CheckpointStore
from daemon.errors import RecordError, SinkError
from daemon.learner import Learner, Outcome
from daemon.metrics import Metrics
from daemon.records import Record, RecordDecoder, TaskKind, encode

log = logging.getLogger(__name__)


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


class Runner:
    """Drives one source through one learner. Single-threaded; :meth:`request_stop` is the
    only method safe to call from elsewhere (a signal handler).

    Args:
        source: not yet opened; the runner opens it at the checkpoint's positions.
        learner: the model state; restored from the checkpoint if there is one.
        decoder: validates records; its inferred feature layout is checkpointed too.
        metrics: where counts go.
        store: the checkpoint store.
        sink: predictions go here (None: predictions are counted, not emitted).
        dead_letter: rejected records go here.
        task: ``classification`` adds ``proba`` and a 0/1 ``y_pred`` to prediction records.
        clock: monotonic seconds; injected by tests.
    """

    def __init__(
        self,
        source: Source,
        learner: Learner,
        decoder: RecordDecoder,
        metrics: Metrics,
        store: CheckpointStore,
        sink: Sink | None = None,
        dead_letter: Sink | None = None,
        task: TaskKind = "regression",
        batch_size: int = 256,
        poll_timeout_s: float = 0.2,
        checkpoint_every_records: int = 10_000,
        checkpoint_interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.learner = learner
        self.decoder = decoder
        self.metrics = metrics
        self.store = store
        self.sink = sink
        self.dead_letter = dead_letter
        self.task = task
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.checkpoint_every_records = checkpoint_every_records
        self.checkpoint_interval_s = checkpoint_interval_s
        self.clock = clock
        self.next_positions: dict[int, int] = {}
        self.summary = RunSummary()
        self._stop = False
        self._ready = False
        # False while a batch is half applied: a checkpoint then would count records twice.
        self._consistent = True
        self._since_checkpoint = 0
        self._last_checkpoint_at = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    def ready(self) -> bool:
        """State loaded and source opened; read by ``/readyz`` from the HTTP thread."""
        return self._ready

    def request_stop(self) -> None:
        """Ask the loop to stop after the current batch; it then checkpoints and returns."""
        self._stop = True

    def run(self) -> RunSummary:
        """Restore, process until the source is exhausted or a stop is requested, checkpoint.

        Blocks for the whole run. Returns the summary; raises on infrastructure failures after
        a best-effort checkpoint.
        """
        started = self.clock()
        try:
            self.restore()
            self.source.open(dict(self.next_positions))
        except BaseException:
            self._close()
            raise
        self._ready = True
        self._last_checkpoint_at = self.clock()
        log.info("running from positions %s", self.next_positions or "at the start")
        try:
            while not self._stop:
                raws = self.source.poll(self.batch_size, self.poll_timeout_s)
                if raws:
                    self.process(raws)
                elif self.source.exhausted:
                    log.info("source exhausted")
                    break
                self.maybe_checkpoint()
        finally:
            self._ready = False
            self.summary.elapsed_s = self.clock() - started
            try:
                if self._consistent:
                    self.checkpoint()
                else:
                    log.error("a batch failed half way: keeping the previous checkpoint")
            finally:
                self._close()
        return self.summary

    def _close(self) -> None:
        for part in (self.source, self.sink, self.dead_letter):
            if part is not None:
                try:
                    part.close()
                except Exception:  # closing must not hide the error that got us here
                    log.exception("closing %s failed", type(part).__name__)

    # -- the record path -------------------------------------------------------------------

    def process(self, raws: list[SourceRecord]) -> list[Outcome]:
        """Decode, predict and learn, emit, and account for one polled batch."""
        decoded_at = self.clock()
        self._consistent = False
        self.metrics.records_consumed.inc(len(raws))
        self.summary.records += len(raws)
        good: list[SourceRecord] = []
        records: list[Record] = []
        for raw in raws:
            try:
                records.append(self.decoder.decode(raw.value))
                good.append(raw)
            except RecordError as err:
                self.reject(raw, err)
        outcomes = self.learner.process_many(records) if records else []
        if self.sink is not None and outcomes:
            self.sink.write([self.prediction(raw, rec, out)
                             for raw, rec, out in zip(good, records, outcomes, strict=True)])
        for raw in raws:
            self.next_positions[raw.partition] = raw.position + 1
        learner_summary = self.learner.summary()
        self.metrics.observe_batch(outcomes, learner_summary, self.clock() - decoded_at)
        self._account(outcomes, learner_summary)
        self._since_checkpoint += len(raws)
        self._consistent = True
        return outcomes

    def prediction(self, raw: SourceRecord, record: Record, outcome: Outcome) -> SinkMessage:
        """The prediction record for one input; carries (partition, position) for de-duplication."""
        body: dict[str, Any] = {
            "id": record.id,
            "key": record.key,
            "partition": raw.partition,
            "position": raw.position,
            "segment": outcome.segment,
        }
        if self.task == "classification":
            body["y_pred"] = int(outcome.y_pred >= 0.5)
            body["proba"] = outcome.y_pred
        else:
            body["y_pred"] = outcome.y_pred
        if outcome.loss is not None:
            body["loss"] = outcome.loss
        return SinkMessage(value=encode(body), key=record.key.encode())

    def reject(self, raw: SourceRecord, err: RecordError) -> None:
        """Send a bad record to the dead-letter sink with its reason and original bytes."""
        log.debug("rejected partition %d position %d: %s", raw.partition, raw.position, err)
        self.metrics.reject(err.reason)
        self.summary.rejected += 1
        if self.dead_letter is None:
            return
        body: dict[str, Any] = {
            "reason": err.reason,
            "detail": err.detail,
            "partition": raw.partition,
            "position": raw.position,
        }
        try:
            body["raw"] = raw.value.decode("utf-8")
        except UnicodeDecodeError:
            body["raw_base64"] = base64.b64encode(raw.value).decode("ascii")
        headers = (
            ("adaptd.reason", err.reason.encode()),
            ("adaptd.partition", str(raw.partition).encode()),
            ("adaptd.position", str(raw.position).encode()),
        )
        self.dead_letter.write([SinkMessage(value=encode(body), key=raw.key, headers=headers)])

    def _account(self, outcomes: list[Outcome], learner_summary: Any) -> None:
        s = self.summary
        s.predictions += len(outcomes)
        s.updates += sum(1 for o in outcomes if o.learned)
        s.drifts += sum(1 for o in outcomes if o.drift)
        s.cumulative_loss = learner_summary.cumulative_loss
        s.baseline_loss = learner_summary.baseline_loss
        s.hindsight_regret = learner_summary.hindsight_regret

    # -- checkpoints -----------------------------------------------------------------------

    def maybe_checkpoint(self) -> None:
        due_by_count = self._since_checkpoint >= self.checkpoint_every_records
        due_by_time = self.clock() - self._last_checkpoint_at >= self.checkpoint_interval_s
        if due_by_count or (due_by_time and self._since_checkpoint):
            self.checkpoint()
        if due_by_time:
            self.metrics.set_lag(self.source.lag(), self.source.assigned())
            self._last_checkpoint_at = self.clock()

    def checkpoint(self) -> bool:
        """Flush sinks → write state and positions → commit positions. False if aborted."""
        try:
            for sink in (self.sink, self.dead_letter):
                if sink is not None:
                    sink.flush()
            self.store.save({
                "positions": dict(self.next_positions),
                "learner": self.learner.state_dict(),
                "decoder": {"n_features": self.decoder.n_features,
                            "feature_names": self.decoder.feature_names},
            })
        except (SinkError, OSError) as exc:
            self.metrics.checkpoint_failures.inc()
            log.error("checkpoint aborted, positions not committed: %s", exc)
            return False
        self.source.commit(dict(self.next_positions))
        self.metrics.checkpoints.inc()
        self.summary.checkpoints += 1
        self._since_checkpoint = 0
        self._last_checkpoint_at = self.clock()
        log.debug("checkpoint at positions %s", self.next_positions)
        return True

    def restore(self) -> None:
        """Load the last checkpoint, if any, into the learner, decoder and positions."""
        payload = self.store.load()
        if payload is None:
            log.info("no checkpoint in %s: starting fresh", self.store.state_dir)
            return
        self.learner.load_state_dict(payload["learner"])
        decoder_state = payload.get("decoder", {})
        if self.decoder.n_features is None and decoder_state.get("n_features") is not None:
            self.decoder.n_features = decoder_state["n_features"]
            self.decoder.feature_names = decoder_state.get("feature_names")
        self.next_positions = {int(p): int(n) for p, n in payload["positions"].items()}
        log.info("restored checkpoint %s", self.store.path)
