"""The daemon's Prometheus metrics, registered on a registry that is passed in.

Names and labels follow the contract table in ARCHITECTURE.md. Labels stay bounded: a reason
from :data:`adaptd.records.REASONS`, a learner or comparator name, a partition number — never a
record key. Times are in seconds, counters end in ``_total``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from adaptd.batch_histogram import BatchHistogram
from adaptd.learner import LearnerSummary, Outcomes
from adaptd.records import REASONS

#: Per-record latency spans sub-millisecond (in-process batches) to seconds (slow sinks).
LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                     0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

#: Samples to recover after a drift: a few records (good meta-init) to hundreds.
RECOVERY_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class Metrics:
    """All metrics of one daemon. Updated from the runner's thread; scraped from the HTTP thread."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.records_consumed = Counter(
            "adaptd_records_consumed_total", "Records read from sources.", registry=registry)
        self.predictions = Counter(
            "adaptd_predictions_total", "Predictions emitted.", registry=registry)
        self.updates = Counter(
            "adaptd_updates_total", "Labelled records learned from.", registry=registry)
        self.skipped_updates = Counter(
            "adaptd_skipped_updates_total",
            "Labelled records whose update was skipped because a loss or gradient was not finite.",
            registry=registry)
        self.records_rejected = Counter(
            "adaptd_records_rejected_total", "Bad records sent to the dead-letter sink, by reason.",
            ["reason"], registry=registry)
        for reason in REASONS:
            # Series exist from the start so rate() and alerts see a zero, not an absence.
            self.records_rejected.labels(reason)
        self.drift_events = Counter(
            "adaptd_drift_events_total", "Drift alarms (segments closed).", registry=registry)
        self.meta_updates = Counter(
            "adaptd_meta_updates_total", "Meta-state updates.", registry=registry)
        self.cumulative_loss = Gauge(
            "adaptd_cumulative_loss", "Summed prequential loss.", ["learner"], registry=registry)
        self.regret = Gauge(
            "adaptd_regret", "Cumulative loss minus the comparator's.", ["comparator"],
            registry=registry)
        self.prequential_loss = Gauge(
            "adaptd_prequential_loss", "Recent mean prequential loss.", registry=registry)
        self.accuracy = Gauge(
            "adaptd_accuracy", "Recent accuracy of the predictions of labelled records "
            "(classification; an exponential average over about 100 records).",
            registry=registry)
        self.active_keys = Gauge(
            "adaptd_active_keys", "Keys with live task state.", registry=registry)
        self.checkpoints = Counter(
            "adaptd_checkpoints_total", "Checkpoints written.", registry=registry)
        self.checkpoint_failures = Counter(
            "adaptd_checkpoint_failures_total",
            "Checkpoints aborted (a sink could not flush or the state could not be written).",
            registry=registry)
        self.checkpoint_duration = Histogram(
            "adaptd_checkpoint_duration_seconds",
            "Time to flush sinks, write the checkpoint and commit positions.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=registry)
        self.record_latency = BatchHistogram(
            "adaptd_record_latency_seconds", "Time from decode to learned, per record.",
            buckets=LATENCY_BUCKETS_S, registry=registry)
        self.samples_to_recover = Histogram(
            "adaptd_samples_to_recover",
            "Labelled records after a drift reset until a key's window loss is back at the "
            "closed segment's mean loss.",
            buckets=RECOVERY_BUCKETS, registry=registry)
        self.labels_expired = Counter(
            "adaptd_delayed_labels_expired_total",
            "Predictions whose delayed label never came within the TTL (or were dropped at "
            "capacity).", registry=registry)
        self.consumer_lag = Gauge(
            "adaptd_consumer_lag_records", "Records behind the end of each assigned partition.",
            ["partition"], registry=registry)
        self.evicted_keys = Counter(
            "adaptd_evicted_keys_total",
            "Keys whose task state left memory for the state dir (idle for learner.idle_evict_s, "
            "or beyond learner.max_keys).", registry=registry)
        self.meta_tasks = Gauge(
            "adaptd_meta_tasks",
            "Tasks folded into the meta-state this replica uses (its own and those merged from "
            "the group's other replicas).", registry=registry)
        self.concept_reuses = Counter(
            "adaptd_concept_reuses_total",
            "Drift resets that started from a stored task state instead of θ0 (--model auto: "
            "summed over its linear and MLP candidates, each of which resets on its own).",
            registry=registry)
        self.candidate_weight = Gauge(
            "adaptd_candidate_weight",
            "--model auto: Hedge weight of each expert, averaged over live keys (each key "
            "counts once, however many records it has).", ["candidate"],
            registry=registry)
        self._totals_seen: dict[Counter, int] = {}
        # The labelled series set after every batch, looked up once each: ``labels()`` takes
        # a lock and checks its arguments, a fifth of a batch's accounting. Made when first
        # set, so a series nothing sets (the baseline's, when it is off) is not exposed.
        self._series: dict[tuple[Gauge, str], Any] = {}

    def observe_batch(
        self, outcomes: Outcomes, summary: LearnerSummary, latency_s: float
    ) -> None:
        """Account for one processed batch. Called by the runner after the sink write."""
        n_learned = int(np.count_nonzero(outcomes.learned))
        n_drift = int(np.count_nonzero(outcomes.drift))
        self.predictions.inc(len(outcomes))
        if n_learned:
            self.updates.inc(n_learned)
        if n_drift:
            self.drift_events.inc(n_drift)
        self.observe_totals(summary)
        self._set(self.cumulative_loss, "adaptd", summary.cumulative_loss)
        if summary.baseline_loss is not None:
            self._set(self.cumulative_loss, "baseline", summary.baseline_loss)
            self._set(self.regret, "baseline", summary.cumulative_loss - summary.baseline_loss)
        if summary.hindsight_regret is not None:
            self._set(self.regret, "hindsight", summary.hindsight_regret)
        if summary.prequential_loss is not None:
            self.prequential_loss.set(summary.prequential_loss)
        if summary.accuracy is not None:
            self.accuracy.set(summary.accuracy)
        # All records of a batch are learned together, so they share one latency figure.
        self.record_latency.observe_many(latency_s, len(outcomes))
        recovered = outcomes.recovered_after
        for count in recovered[recovered >= 0].tolist():
            self.samples_to_recover.observe(count)

    def _set(self, gauge: Gauge, label: str, value: float) -> None:
        series = self._series.get((gauge, label))
        if series is None:
            series = self._series[gauge, label] = gauge.labels(label)
        series.set(value)

    def observe_totals(self, summary: LearnerSummary) -> None:
        """Move the counters behind the learner's running totals (after a batch, and after
        an eviction pass). Learners keep totals; counters only move forward, so each gets
        what is new since the last call."""
        self.active_keys.set(summary.active_keys)
        for name, weight in (summary.candidate_weights or {}).items():
            self.candidate_weight.labels(name).set(weight)
        for counter, total in ((self.meta_updates, summary.meta_updates),
                               (self.skipped_updates, summary.skipped_updates),
                               (self.labels_expired, summary.delayed_labels_expired),
                               (self.evicted_keys, summary.evicted_keys),
                               (self.concept_reuses, summary.concept_reuses)):
            seen = self._totals_seen.get(counter, 0)
            if total > seen:
                counter.inc(total - seen)
            self._totals_seen[counter] = total

    def reject(self, reason: str) -> None:
        self.records_rejected.labels(reason).inc()

    def set_lag(self, lag: Mapping[int, int], owned: Iterable[int] = ()) -> None:
        """Set lag for the partitions in ``lag``; drop series of partitions no longer owned."""
        keep = {str(p) for p in owned} | {str(p) for p in lag}
        for labels in list(self.consumer_lag._metrics):
            if labels[0] not in keep:
                self.consumer_lag.remove(*labels)
        for partition, value in lag.items():
            self.consumer_lag.labels(str(partition)).set(value)
