"""The runner: the path every record takes, top to bottom.

Per batch: poll → decode → predict and learn (test-then-train, per record) → emit predictions
→ account. Bad records go to the dead-letter sink with their reason and original bytes; the
stream goes on. Every ``checkpoint_every_records`` records or ``checkpoint_interval_s`` seconds,
on the way out, and before partitions are taken away: flush sinks → write the checkpoint
(state + next position, per partition) → commit the source's positions. A sink that cannot
flush aborts that checkpoint, so positions are never committed ahead of what the sinks hold.

Partitions come and go (Kafka consumer groups): the runner is the source's
:class:`~adaptd.connectors.base.PartitionListener`. On assignment it loads each partition's state from
the checkpoint and hands back the position to resume at; on revocation it checkpoints, then
forgets those partitions' keys.

Faults: while the source reports :class:`~adaptd.errors.UnavailableError` (broker away) the
runner is not ready, logs, and retries with exponential backoff; nothing is lost because
nothing past the checkpoint was committed. While the sinks hold more than
``sink_backlog_limit`` unacknowledged messages, the source is paused (it keeps its group
membership) until they drain, so memory stays bounded.

Memory for task state is bounded too: right after each checkpoint, keys the learner evicted
(idle too long, or beyond its cap) are written to :class:`~adaptd.evicted.EvictedKeys` and
dropped; a record of such a key loads its state back before it is processed.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from adaptd.checkpoint import CheckpointStore, PartitionState
from adaptd.connectors.base import Sink, SinkMessage, Source, SourceRecord
from adaptd.errors import RecordError, SinkError, UnavailableError
from adaptd.evicted import EvictedKeys
from adaptd.learner import Learner, Outcomes
from adaptd.metrics import Metrics
from adaptd.records import BatchBuilder, RecordBatch, RecordDecoder, TaskKind, encode
from adaptd.settings import ResilienceConfig

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
    """Drives one source through one learner. Single-threaded; :meth:`request_stop` and
    :meth:`ready` are the only methods safe to call from elsewhere (a signal handler, HTTP).

    Args:
        source: not yet opened; the runner opens it at the checkpoint's positions.
        learner: the model state; restored from the checkpoint if there is one.
        decoder: validates records; its inferred feature layout is checkpointed too.
        metrics: where counts go.
        store: the checkpoint store.
        sink: predictions go here (None: predictions are counted, not emitted).
        dead_letter: rejected records go here.
        task: ``classification`` adds ``proba`` and a 0/1 ``y_pred`` to prediction records.
        resilience: retry backoff and sink backpressure settings.
        clock: monotonic seconds; injected by tests.
        sleep: waits between retries; injected by tests.
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
        resilience: ResilienceConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.source = source
        self.learner = learner
        self.decoder = decoder
        self.metrics = metrics
        self.store = store
        self.evicted = EvictedKeys(store.state_dir)
        self.sink = sink
        self.dead_letter = dead_letter
        self.sinks = [s for s in (sink, dead_letter) if s is not None]
        self.task = task
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.checkpoint_every_records = checkpoint_every_records
        self.checkpoint_interval_s = checkpoint_interval_s
        self.resilience = resilience or ResilienceConfig()
        self.clock = clock
        self.sleep = sleep
        #: partition → position of the next record to read, for partitions this runner owns.
        self.next_positions: dict[int, int] = {}
        #: Partitions whose state is loaded here.
        self.owned: set[int] = set()
        #: Which partition each key's records come from, so its state is saved with it.
        self.key_partition: dict[str, int] = {}
        self.summary = RunSummary()
        self._stop = False
        self._opened = False
        self._available = True
        self._unavailable_since = 0.0
        self._backoff_s = self.resilience.retry_backoff_initial_s
        self._paused = False
        self._shared_loaded = False
        # False while a batch is half applied: a checkpoint then would count records twice.
        self._consistent = True
        self._since_checkpoint = 0
        self._last_checkpoint_at = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    def ready(self) -> bool:
        """State loaded, source reachable and partitions assigned; read by ``/readyz``."""
        return self._opened and self._available and bool(self.owned)

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
        try:
            self.open()
            self._last_checkpoint_at = self.clock()
            while not self._stop:
                raws = self.poll()
                if raws:
                    self.process(raws)
                elif self._available and self.source.exhausted:
                    log.info("source exhausted")
                    break
                self.relieve_backpressure()
                self.maybe_checkpoint()
        finally:
            self.summary.elapsed_s = self.clock() - started
            try:
                if not self._opened:
                    pass
                elif self._consistent:
                    self.checkpoint()
                else:
                    log.error("a batch failed half way: keeping the previous checkpoint")
            finally:
                self._opened = False
                self._close()
        return self.summary

    def open(self) -> None:
        """Load the state of the source's static partitions and open it; retries while the
        source is unavailable, until it opens or a stop is requested."""
        # Files and synthetic streams know their partitions up front; Kafka tells us through
        # on_assigned once it has them.
        static = list(self.source.assigned())
        positions = self.on_assigned(static) if static else {}
        while not self._stop:
            try:
                self.source.open(positions, listener=self)
            except UnavailableError as exc:
                self._wait_for_source(exc)
                continue
            self._opened = True
            self._mark_available()
            log.info("source open")
            return

    def _close(self) -> None:
        parts: list[Source | Sink] = [self.source, *self.sinks]
        for part in parts:
            try:
                part.close()
            except Exception:  # closing must not hide the error that got us here
                log.exception("closing %s failed", type(part).__name__)

    # -- faults --------------------------------------------------------------------------

    def poll(self) -> list[SourceRecord]:
        """One poll; an unavailable source costs a backoff wait and yields no records."""
        try:
            raws = self.source.poll(self.batch_size, self.poll_timeout_s)
        except UnavailableError as exc:
            self._wait_for_source(exc)
            return []
        self._mark_available()
        return raws

    def _wait_for_source(self, exc: UnavailableError) -> None:
        now = self.clock()
        if self._available:
            self._available = False
            self._unavailable_since = now
            log.warning("source unavailable, not ready; retrying with backoff: %s", exc)
        else:
            log.info("source still unavailable after %.1f s (next retry in %.1f s): %s",
                     now - self._unavailable_since, self._backoff_s, exc)
        self._sleep_unless_stopped(self._backoff_s)
        self._backoff_s = min(self._backoff_s * 2, self.resilience.retry_backoff_max_s)

    def _mark_available(self) -> None:
        if not self._available:
            log.warning("source available again after %.1f s; ready",
                        self.clock() - self._unavailable_since)
        self._available = True
        self._backoff_s = self.resilience.retry_backoff_initial_s

    def _sleep_unless_stopped(self, seconds: float) -> None:
        deadline = self.clock() + seconds
        while not self._stop and self.clock() < deadline:
            self.sleep(min(0.1, seconds))

    def backlog(self) -> int:
        return sum(s.backlog() for s in self.sinks)

    def relieve_backpressure(self) -> None:
        """Pause the source while the sinks hold too much; flush them; resume once drained."""
        limit = self.resilience.sink_backlog_limit
        if self.backlog() <= limit:
            if self._paused and self.backlog() <= limit // 2:
                self.source.resume()
                self._paused = False
                log.info("sink backlog drained; source resumed")
            return
        if not self._paused:
            self.source.pause()
            self._paused = True
            log.warning("sink backlog %d > %d messages; source paused", self.backlog(), limit)
        try:
            for sink in self.sinks:
                sink.flush()
        except SinkError as exc:
            log.warning("sink still backed up: %s", exc)
            self._sleep_unless_stopped(self._backoff_s)
            self._backoff_s = min(self._backoff_s * 2, self.resilience.retry_backoff_max_s)

    # -- partitions (PartitionListener) --------------------------------------------------

    def on_assigned(self, partitions: Collection[int]) -> Mapping[int, int]:
        """Load the newest checkpoint of each partition; return where each resumes.

        Called by the source before any record of these partitions is polled. The state every
        key shares comes from the checkpoint only when nothing is loaded yet; later it stays
        the live one, so a second assignment does not roll it back.
        """
        requested = sorted(partitions)
        new = [p for p in requested if p not in self.owned]
        restored = self.store.load(new)
        live_shared = self.learner.state_dict(keys=()) if self._shared_loaded else None
        for p, state in sorted(restored.partitions.items()):
            self.learner.load_state_dict(state.learner)
            for key in state.keys:
                self.key_partition[key] = p
            self.next_positions[p] = state.position
        if live_shared is not None:
            self.learner.load_state_dict(live_shared)
        else:
            # First assignment: the shared state comes from the checkpoint even when none of
            # these partitions is in it (the group gave this replica other partitions).
            shared = restored.shared or self.store.load(()).shared
            if shared is not None:
                self.learner.load_state_dict(shared["learner"])
                self._restore_decoder(shared.get("decoder", {}))
        self._shared_loaded = True
        for p in new:
            self.evicted.open_partition(p)
        self.owned.update(new)
        resume = {p: self.next_positions[p] for p in requested if p in self.next_positions}
        log.info("partitions %s assigned; resuming at %s (others from the start)",
                 requested, resume)
        return resume

    def on_revoked(self, partitions: Collection[int]) -> None:
        """Checkpoint (flushing sinks and committing), then forget these partitions' keys.

        Called by the source before the partitions go to another consumer. If the checkpoint
        fails, the next owner resumes from the previous one and replays: the state is still
        right, predictions may repeat.
        """
        # Nothing processed since the last checkpoint: it already holds these partitions.
        if self._consistent and self._since_checkpoint and not self.checkpoint():
            log.warning("partitions %s handed over without a fresh checkpoint: the next owner "
                        "replays them from the previous one", sorted(partitions))
        self.on_lost(partitions)

    def on_lost(self, partitions: Collection[int]) -> None:
        """Forget partitions without checkpointing them: another consumer may own them already
        (the group session expired), and a checkpoint from here could overwrite its newer one."""
        gone = set(partitions) & self.owned
        keys = [k for k, p in self.key_partition.items() if p in gone]
        self.learner.forget(keys)
        for key in keys:
            del self.key_partition[key]
        for p in gone:
            self.next_positions.pop(p, None)
            self.evicted.close_partition(p)
        self.owned -= gone
        self.metrics.set_lag({p: n for p, n in self.source.lag().items() if p in self.owned},
                             self.owned)
        log.info("partitions %s released (%d keys forgotten)", sorted(gone), len(keys))

    # -- the record path -------------------------------------------------------------------

    def process(self, raws: list[SourceRecord]) -> Outcomes:
        """Decode, predict and learn, emit, and account for one polled batch."""
        decoded_at = self.clock()
        self._consistent = False
        self.metrics.records_consumed.inc(len(raws))
        self.summary.records += len(raws)
        good: list[SourceRecord] = []
        builder = BatchBuilder()
        keys = builder.keys
        for raw in raws:
            try:
                self.decoder.decode_into(raw.value, builder)
            except RecordError as err:
                self.reject(raw, err)
                continue
            good.append(raw)
            key = keys[-1]
            if key not in self.key_partition:
                self._bring_back(key, raw.partition)
            self.key_partition[key] = raw.partition
        batch = builder.build()
        outcomes = self.learner.process_batch(batch) if good else Outcomes.empty(0)
        if self.sink is not None and good:
            self.sink.write(self.predictions(good, batch, outcomes))
        for raw in raws:
            self.next_positions[raw.partition] = raw.position + 1
        learner_summary = self.learner.summary()
        self.metrics.observe_batch(outcomes, learner_summary, self.clock() - decoded_at)
        self._account(outcomes, learner_summary)
        self._since_checkpoint += len(raws)
        self._consistent = True
        return outcomes

    def predictions(self, raws: list[SourceRecord], batch: RecordBatch,
                    outcomes: Outcomes) -> list[SinkMessage]:
        """The prediction record of each input; each carries (partition, position) for
        de-duplication downstream."""
        classify = self.task == "classification"
        messages = []
        for raw, key, rid, y_pred, loss, segment in zip(
                raws, batch.keys, batch.ids, outcomes.y_pred.tolist(), outcomes.losses(),
                outcomes.segment.tolist(), strict=True):
            body: dict[str, Any] = {
                "id": rid,
                "key": key,
                "partition": raw.partition,
                "position": raw.position,
                "segment": segment,
            }
            if classify:
                body["y_pred"] = int(y_pred >= 0.5)
                body["proba"] = y_pred
            else:
                body["y_pred"] = y_pred
            if loss is not None:
                body["loss"] = loss
            messages.append(SinkMessage(value=encode(body), key=key.encode()))
        return messages

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

    def _account(self, outcomes: Outcomes, learner_summary: Any) -> None:
        s = self.summary
        s.predictions += len(outcomes)
        s.updates += int(outcomes.learned.sum())
        s.drifts += int(outcomes.drift.sum())
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
            self.metrics.set_lag(self.source.lag(), self.owned)
            self._last_checkpoint_at = self.clock()

    def checkpoint(self) -> bool:
        """Flush sinks → write state and positions → commit positions. False if aborted."""
        started = self.clock()
        try:
            for sink in self.sinks:
                sink.flush()
            self.store.save(self._shared_state(), self._partition_states())
        except (SinkError, OSError) as exc:
            self.metrics.checkpoint_failures.inc()
            log.error("checkpoint aborted, positions not committed: %s", exc)
            return False
        self.source.commit({p: n for p, n in self.next_positions.items() if p in self.owned})
        self.metrics.checkpoints.inc()
        self.metrics.checkpoint_duration.observe(self.clock() - started)
        self.summary.checkpoints += 1
        self._since_checkpoint = 0
        self._last_checkpoint_at = self.clock()
        log.debug("checkpoint at positions %s", self.next_positions)
        self._evict()
        return True

    def _evict(self) -> None:
        """Move the keys the learner let go to disk. Called right after a checkpoint, so each
        state written equals the one that checkpoint holds."""
        self.learner.evict_idle()
        self.metrics.observe_totals(self.learner.summary())
        states = self.learner.take_evicted()
        by_partition: dict[int, dict[str, Any]] = {}
        for key, state in states.items():
            p = self.key_partition.get(key)
            if p is not None:
                by_partition.setdefault(p, {})[key] = state
        for p, group in by_partition.items():
            try:
                self.evicted.put(p, group)
            except OSError as exc:
                # Keep them live rather than lose them; the next checkpoint tries again.
                log.error("could not write evicted key states of partition %d: %s", p, exc)
                self._restore_keys(group)
                continue
            for key in group:
                del self.key_partition[key]
        if states:
            log.info("evicted %d idle keys to %s", len(states), self.evicted.root)

    def _bring_back(self, key: str, partition: int) -> None:
        state = self.evicted.get(partition, key)
        if state is not None:
            self._restore_keys({key: state})

    def _restore_keys(self, states: Mapping[str, Any]) -> None:
        # load_state_dict also takes shared state: hand it the live one so nothing rolls back.
        self.learner.load_state_dict({**self.learner.state_dict(keys=()), "keys": dict(states)})

    def _shared_state(self) -> dict[str, Any]:
        return {
            "learner": self.learner.state_dict(keys=()),
            "decoder": {"n_features": self.decoder.n_features,
                        "feature_names": self.decoder.feature_names},
        }

    def _partition_states(self) -> dict[int, PartitionState]:
        keys_of: dict[int, list[str]] = {p: [] for p in self.owned}
        for key, p in self.key_partition.items():
            if p in keys_of:
                keys_of[p].append(key)
        return {
            p: PartitionState(position=self.next_positions[p], keys=keys,
                              learner=self.learner.state_dict(keys))
            for p, keys in keys_of.items()
            if p in self.next_positions
        }

    def _restore_decoder(self, state: Mapping[str, Any]) -> None:
        if self.decoder.n_features is None and state.get("n_features") is not None:
            self.decoder.n_features = state["n_features"]
            self.decoder.feature_names = state.get("feature_names")
