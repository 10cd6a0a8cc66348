"""The learner protocol the runner drives, and the factory that builds the configured one.

The runner hands a learner each batch of decoded records in arrival order, as columns (a
:class:`~adaptd.records.RecordBatch`); the learner
predicts each record with the state before that record's label is seen (test-then-train,
so the loss it reports is prequential), learns from the labelled ones, and reports an
:class:`Outcome` per record, as the columns of one :class:`Outcomes`.

The engine (:func:`build_learner` builds it), one concept per module:

- ``adaptive``: :class:`~adaptd.learner.adaptive.AdaptiveLearner`, the public API (slots,
  state, eviction); ``arena``: the per-key rows; ``totals``: the running sums.
- ``paths``: how a batch goes through — the compiled kernel's driver, or NumPy waves;
  ``kernel``: the compiled record loop; ``segments``: a segment's close and a task's start.
- ``step``: the inner step (ARUBA++ / AdaGrad), the one implementation every path calls;
  ``network``: the built-in families' per-row math, compiled; ``models``: the same families
  over many rows with NumPy; ``autograd``: torch — a user ``nn.Module`` and the module twins;
  ``jit``: how the compiled pieces are compiled.
- ``classes``: multi-class labels (identity, the label → class-index mapping, how an output
  layer widens); ``growth``: labels to class indices and class growth in the engine.
- ``adagrad``: a minimal AdaGrad learner for tests of the runner.

Page-Hinkley is :mod:`adaptd.drift`'s, the meta update :mod:`adaptd.meta.state`'s.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, overload

import numpy as np

from adaptd.records import Record, RecordBatch


@dataclass(slots=True)
class Outcome:
    """What happened to one record.

    ``y_pred`` is the regression output, P(y = 1) for binary classification, or the most
    probable class index for multi-class (see :class:`Outcomes`). ``loss`` is the
    prequential loss when the record had a label, else ``None``. ``segment`` is the index of
    the key's current task; ``drift`` is true when this record's loss raised a drift alarm.
    ``learned`` is false for a labelled record whose update was skipped (non-finite values).
    ``recovered_after`` is set on the record at which the key's loss recovered after a drift:
    the number of labelled records since the reset (for the samples-to-recover histogram).
    """

    y_pred: float
    loss: float | None = None
    segment: int = 0
    drift: bool = False
    learned: bool = False
    recovered_after: int | None = None


class Outcomes(Sequence[Outcome]):
    """The outcomes of one batch as columns, one NumPy array per field of :class:`Outcome`.

    A learner fills arrays anyway; handing them over as they are spares a Python object per
    record (about 0.25 µs each, a quarter of the engine's whole per-record budget with many
    keys). Consumers that look at every record use the columns (``y_pred.tolist()``,
    ``learned.sum()``); indexing or iterating gives :class:`Outcome` views for the rest.

    Encodings: ``loss`` is NaN where a record had no label or its update was skipped
    (``learned`` false), ``recovered_after`` is −1 where the record recovered nothing.

    Multi-class: ``y_pred`` is the predicted class index, ``probas`` the class probabilities
    ``(n, K)`` and ``classes`` the :class:`~adaptd.learner.classes.ClassIndex` naming them
    (both ``None`` otherwise).
    """

    __slots__ = ("classes", "drift", "learned", "loss", "probas", "recovered_after", "segment",
                 "y_pred")

    def __init__(self, y_pred: np.ndarray, loss: np.ndarray | None = None,
                 segment: np.ndarray | None = None, drift: np.ndarray | None = None,
                 learned: np.ndarray | None = None,
                 recovered_after: np.ndarray | None = None) -> None:
        n = len(y_pred)
        self.y_pred = np.asarray(y_pred, dtype=np.float64)
        self.loss = np.full(n, np.nan) if loss is None else loss
        self.segment = np.zeros(n, dtype=np.int64) if segment is None else segment
        self.drift = np.zeros(n, dtype=bool) if drift is None else drift
        self.learned = np.zeros(n, dtype=bool) if learned is None else learned
        self.recovered_after = np.full(n, -1, dtype=np.int64) if recovered_after is None \
            else recovered_after
        self.probas: np.ndarray | None = None
        self.classes: Any = None

    @classmethod
    def empty(cls, n: int) -> Outcomes:
        """``n`` outcomes to be filled in: predictions 0, nothing learned."""
        return cls(np.zeros(n))

    @classmethod
    def from_list(cls, outcomes: Sequence[Outcome]) -> Outcomes:
        """Columns from per-record outcomes (for learners that work one record at a time)."""
        return cls(
            np.array([o.y_pred for o in outcomes], dtype=np.float64),
            np.array([np.nan if o.loss is None else o.loss for o in outcomes], dtype=np.float64),
            np.array([o.segment for o in outcomes], dtype=np.int64),
            np.array([o.drift for o in outcomes], dtype=bool),
            np.array([o.learned for o in outcomes], dtype=bool),
            np.array([-1 if o.recovered_after is None else o.recovered_after
                      for o in outcomes], dtype=np.int64),
        )

    def losses(self) -> list[float | None]:
        """``loss`` as Python values, ``None`` where there is none."""
        missing = np.isnan(self.loss)
        if not missing.any():
            return self.loss.tolist()
        values: np.ndarray = self.loss.astype(object)
        values[missing] = None
        return values.tolist()

    def __len__(self) -> int:
        return len(self.y_pred)

    @overload
    def __getitem__(self, i: int) -> Outcome: ...

    @overload
    def __getitem__(self, i: slice) -> Outcomes: ...

    def __getitem__(self, i: int | slice) -> Outcome | Outcomes:
        if isinstance(i, slice):
            part = Outcomes(self.y_pred[i], self.loss[i], self.segment[i], self.drift[i],
                            self.learned[i], self.recovered_after[i])
            part.probas = None if self.probas is None else self.probas[i]
            part.classes = self.classes
            return part
        loss = float(self.loss[i])
        recovered = int(self.recovered_after[i])
        return Outcome(float(self.y_pred[i]), None if math.isnan(loss) else loss,
                       int(self.segment[i]), bool(self.drift[i]), bool(self.learned[i]),
                       None if recovered < 0 else recovered)

    def __repr__(self) -> str:
        return f"Outcomes({len(self)} records, {int(self.learned.sum())} learned)"


@dataclass(slots=True)
class LearnerSummary:
    """Running totals the runner exports as gauges. ``None`` where a learner has no such figure.

    ``baseline_loss`` is the shadow baseline's cumulative loss on the same labelled records;
    ``hindsight_loss`` the best fixed model's loss on closed segments' buffered records and
    ``hindsight_regret`` adaptd's loss on those records minus it. ``updates`` counts learned
    records, ``drift_events`` closed segments; ``step_multiplier`` is the hypergradient α
    (1 when off); ``accuracy`` the recent share of right predictions (classification);
    ``concept_reuses`` resets that started from a stored task state; ``candidate_weights`` the
    mean Hedge weight per expert (``--model auto``). Counts only grow, so the runner turns
    their differences into counters.
    """

    cumulative_loss: float = 0.0
    baseline_loss: float | None = None
    hindsight_regret: float | None = None
    prequential_loss: float | None = None
    active_keys: int = 0
    meta_updates: int = 0
    skipped_updates: int = 0
    updates: int = 0
    drift_events: int = 0
    hindsight_loss: float | None = None
    delayed_labels_joined: int = 0
    delayed_labels_expired: int = 0
    evicted_keys: int = 0
    step_multiplier: float = 1.0
    accuracy: float | None = None
    candidate_weights: dict[str, float] | None = None
    concept_reuses: int = 0


class PendingFeatures(Protocol):
    """The features a learner keeps under record ids until their delayed labels arrive (see
    :class:`adaptd.labels.PendingLabels`). The runner takes them out for a label record that
    carries only ``id`` and ``y``; the partitions note which key such a label changes."""

    def __len__(self) -> int:
        """How many ids have features kept."""
        ...

    def key_of(self, record_id: str) -> str | None:
        """The key whose features are kept under ``record_id``, or None."""
        ...

    def take(self, record_id: str) -> tuple[str, tuple[float, ...]] | None:
        """``(key, x)`` kept under ``record_id``, removed; None if nothing is kept."""
        ...


class NoPending:
    """The :class:`PendingFeatures` of a learner that keeps none: every delayed label is
    unmatched (dead-lettered as ``label_unmatched``)."""

    def __len__(self) -> int:
        return 0

    def key_of(self, record_id: str) -> str | None:
        return None

    def take(self, record_id: str) -> tuple[str, tuple[float, ...]] | None:
        return None


class Learner(Protocol):
    """What the runner needs of a learner. Called from the runner's thread only."""

    @property
    def pending(self) -> PendingFeatures:
        """Features kept for delayed labels (:class:`NoPending` if the learner keeps none)."""
        ...

    def process_batch(self, batch: RecordBatch) -> Outcomes:
        """Predict then learn each record, in order. Records of one key are applied in order."""
        ...

    def process_many(self, records: Sequence[Record]) -> Outcomes:
        """:meth:`process_batch` on ``RecordBatch.from_records(records)``."""
        ...

    def summary(self) -> LearnerSummary:
        """Current totals; cheap, called once per batch."""
        ...

    def state_dict(self, keys: Collection[str] | None = None) -> dict[str, Any]:
        """Everything needed to resume: shared state plus the task state of ``keys`` (all if None)."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore shared state and add the task states in ``state`` (other keys are kept)."""
        ...

    def forget(self, keys: Collection[str]) -> None:
        """Drop the task state of ``keys`` (their partition was revoked)."""
        ...

    def keys(self) -> Collection[str]:
        """Keys with live task state."""
        ...

    def evict_idle(self, now: float | None = None) -> dict[str, Any]:
        """Let go of keys unseen for the configured idle time; called after each checkpoint."""
        ...

    def take_evicted(self) -> dict[str, Any]:
        """Hand over (and drop) the task states of every key evicted so far, for the disk."""
        ...


def build_learner(settings: Any) -> Learner:
    """The learner the settings ask for (``settings`` is a :class:`adaptd.config.Settings`).

    ``settings.meta`` names a meta-state file written by ``adaptd meta-train``; without it
    the learner starts from a seeded random init with plain-AdaGrad step sizes.
    """
    from adaptd.learner.adaptive import AdaptiveLearner
    from adaptd.meta.state import load

    sections = {"config": settings.learner, "drift": settings.drift,
                "meta": settings.meta_learning, "regret": settings.regret,
                "labels": settings.labels}
    meta_state = load(settings.meta) if settings.meta else None
    if settings.model == "auto":
        from adaptd.learner.ensemble import HedgeLearner

        # A --meta file is made for one family: the candidate of that family starts from it.
        family = None if meta_state is None else meta_state.model.get("model")
        return HedgeLearner(settings.task, settings.n_features,
                            meta_states={family: meta_state} if family else None, **sections)
    return AdaptiveLearner(model=settings.model, task=settings.task,
                           n_features=settings.n_features, meta_state=meta_state, **sections)
