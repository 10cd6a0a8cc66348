"""``--model auto``: an exponentially weighted average forecaster over candidate learners.

Nobody tunes a model per stream before starting the daemon, and no one family wins on every
stream (the bench's real streams: a linear model on chessweka, the MLP on Bananas, the last
label on WaterFlow and ChickWeights). So by default each key mixes N experts with weights
``w_i ∝ exp(−η L_i)``, ``L_i`` the expert's cumulative loss on that key — Hedge (Freund &
Schapire 1997, "A decision-theoretic generalization of on-line learning"; Cesa-Bianchi &
Lugosi 2006, *Prediction, Learning, and Games* §2), whose regret to the best expert is
``O(√(T ln N))`` for bounded losses, and ``ln N / η`` when the loss is η-exp-concave in the
prediction, which it is for the mixture of probabilities under log loss with η = 1 (Vovk's
aggregating algorithm is then Bayes' rule) and for squared loss on a bounded range
(Kivinen & Warmuth 1999, "Averaging expert predictions"). After each update a share
``SHARE`` of the weight is spread evenly (fixed share, Herbster & Warmuth 1998, "Tracking the
best expert"), so a key whose best expert changes with a drift follows within
``O(log(1/SHARE))`` records instead of paying back its whole lead.

The experts:

- ``linear`` and ``mlp``: each its own :class:`~adaptd.learner.adaptive.AdaptiveLearner` with
  its own meta-state, fed every record;
- ``prior``: the key's running label mean (regression) or Laplace's rule of succession for
  P(y = 1) (classification);
- ``last``: the key's last label (regression), or for classification the last label with the
  key's Laplace-estimated probability that a label repeats.

Classification mixes probabilities (η = 1 on log loss); regression mixes predictions, with the
squared loss measured in units of the running label variance and capped at ``LOSS_CAP``
(bounded losses, as the bound assumes), η = ``ETA_REGRESSION``.

``drift``, ``segment``, ``recovered_after`` and ``learned`` of each outcome are the
``linear`` candidate's (its detector is the one the drift metrics count); ``y_pred`` and
``loss`` are the mixture's.

State: each candidate's shared part under ``candidates``; per key, under ``keys``, the Hedge
weights and the simple experts' counts with every candidate's task state, so a key's whole
state moves with its partition (:mod:`adaptd.partitions`). The candidates keep identical
delayed-label entries (they see the same records): saved once.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from adaptd.learner import LearnerSummary, Outcomes
from adaptd.learner.adaptive import AdaptiveLearner
from adaptd.learner.models import P_CLIP, TaskKind
from adaptd.learner.scaling import RunningMoments
from adaptd.learner.totals import Totals
from adaptd.meta.state import MetaState
from adaptd.records import Record, RecordBatch

STATE_KIND = "adaptd-hedge"
STATE_VERSION = 1
#: The learners mixed, in order; the first one's drift alarms are the ensemble's.
CANDIDATES = ("linear", "mlp")
EXPERTS = (*CANDIDATES, "prior", "last")
#: Fixed-share mixing per labelled record (Herbster & Warmuth 1998).
SHARE = 1e-3
#: Regression: η on squared loss in units of the label variance, and the cap on that loss.
ETA_REGRESSION = 0.5
LOSS_CAP = 8.0


class KeyWeights:
    """One key's Hedge weights and the counts behind its ``prior`` and ``last`` experts."""

    __slots__ = ("w", "n", "mean", "last", "pairs", "repeats")

    def __init__(self) -> None:
        self.w = np.full(len(EXPERTS), 1.0 / len(EXPERTS))
        self.n = 0.0  # labels seen
        self.mean = 0.0  # their mean
        self.last = math.nan
        self.pairs = 0.0  # consecutive label pairs, and how many repeated (classification)
        self.repeats = 0.0

    def simple_predictions(self, task: TaskKind, fallback: float) -> tuple[float, float]:
        """``prior`` and ``last`` before this record's label (``fallback``: no label yet)."""
        if task == "classification":
            prior = (self.mean * self.n + 1.0) / (self.n + 2.0)
            if math.isnan(self.last):
                return prior, 0.5
            stay = (self.repeats + 1.0) / (self.pairs + 2.0)
            return prior, stay if self.last == 1.0 else 1.0 - stay
        if not self.n:
            return fallback, fallback
        return self.mean, self.last

    def learn(self, y: float) -> None:
        if not math.isnan(self.last):
            self.pairs += 1.0
            self.repeats += float(self.last == y)
        self.n += 1.0
        self.mean += (y - self.mean) / self.n
        self.last = y

    def to_dict(self) -> dict[str, Any]:
        return {"w": self.w.tolist(), "n": self.n, "mean": self.mean, "last": self.last,
                "pairs": self.pairs, "repeats": self.repeats}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> KeyWeights:
        k = cls()
        w = np.asarray(state["w"], dtype=np.float64)
        if len(w) == len(EXPERTS):
            k.w = w
        for name in ("n", "mean", "last", "pairs", "repeats"):
            setattr(k, name, float(state[name]))
        return k


def expert_losses(task: TaskKind, preds: np.ndarray, y: float, variance: float) -> np.ndarray:
    """The loss Hedge charges each expert: log loss, or squared loss per unit of variance,
    capped (``preds``: the experts' predictions, ``(N,)``)."""
    if task == "classification":
        p = np.minimum(np.maximum(preds, P_CLIP), 1.0 - P_CLIP)
        return -np.log(p if y == 1.0 else 1.0 - p)
    return np.minimum((preds - y) ** 2 / variance, LOSS_CAP)


class HedgeLearner:
    """The ``auto`` model: Hedge per key over :data:`EXPERTS`. Implements
    :class:`adaptd.learner.Learner`; called from one thread only.

    Args: as :class:`AdaptiveLearner`'s, but ``meta_states`` maps a candidate name to the
    meta-state it starts from (``--meta`` made for that family).
    """

    def __init__(self, task: TaskKind = "regression", n_features: int | None = None,
                 meta_states: Mapping[str, MetaState] | None = None, **sections: Any) -> None:
        self.task = task
        # The linear candidate of a classification task is the logistic family.
        family = {"linear": "logistic" if task == "classification" else "linear", "mlp": "mlp"}
        given = {("linear" if name == "logistic" else name): state
                 for name, state in (meta_states or {}).items()}
        self.candidates = {
            name: AdaptiveLearner(family[name], task, n_features, meta_state=given.get(name),
                                  **sections)
            for name in CANDIDATES}
        self.main = self.candidates[CANDIDATES[0]]
        self.eta = 1.0 if task == "classification" else ETA_REGRESSION
        self._weights: dict[str, KeyWeights] = {}
        self._cold: dict[str, dict[str, Any]] = {}  # Hedge states of evicted keys
        self.totals = Totals()
        self.labels = RunningMoments(1)  # regression: the unit of the charged loss

    def describe(self) -> dict[str, Any]:
        return {"model": "auto", "task": self.task, "n_features": self.main.n_features,
                "candidates": list(CANDIDATES)}

    def process_many(self, records: Sequence[Record]) -> Outcomes:
        return self.process_batch(RecordBatch.from_records(records))

    def process_batch(self, batch: RecordBatch) -> Outcomes:
        """Each candidate predicts and learns the batch; then, record by record in order, each
        key's mixture predicts and its weights learn. Blocks for the compute only."""
        outs = [c.process_batch(batch) for c in self.candidates.values()]
        main = outs[0]
        n = len(main)
        if not n:
            return main
        cand = np.stack([o.y_pred for o in outs], axis=1)
        y_pred = np.empty(n)
        loss = np.full(n, np.nan)
        keys, ys = batch.keys, batch.y
        for i in range(n):
            k = self._weights.get(keys[i])
            if k is None:
                k = self._weights[keys[i]] = KeyWeights()
            fallback = float(self.labels.mean[0]) if self.labels.count else 0.0
            preds = np.concatenate([cand[i], k.simple_predictions(self.task, fallback)])
            mix = float(k.w @ preds)
            y_pred[i] = mix
            y = float(ys[i])
            if math.isnan(y) or math.isnan(main.loss[i]):
                continue  # unlabelled, or skipped by the candidates (non-finite values)
            variance = max(float(self.labels.std()[0]) ** 2, 1e-12) if self.labels.count >= 2 \
                else max(y * y, 1.0)
            w = k.w * np.exp(-self.eta * expert_losses(self.task, preds, y, variance))
            total = float(w.sum())
            w = w / total if total > 0 and math.isfinite(total) else np.full_like(w, 1.0)
            k.w = (1.0 - SHARE) * w / w.sum() + SHARE / len(w)
            loss[i] = float(expert_losses(self.task, np.array([mix]), y, 1.0)[0]) \
                if self.task == "classification" else (mix - y) ** 2
            k.learn(y)
            if self.task == "regression":
                self.labels.update(np.array([[y]]))
        self.totals.add_losses(loss[~np.isnan(loss)])
        return Outcomes(y_pred, loss, main.segment, main.drift, main.learned, main.recovered_after)

    def close_segments(self, keys: Collection[str] | None = None) -> None:
        for c in self.candidates.values():
            c.close_segments(keys)

    # ------------------------------------------------------------------ keys and eviction

    def keys(self) -> Collection[str]:
        return self.main.keys()

    def forget(self, keys: Collection[str]) -> None:
        for c in self.candidates.values():
            c.forget(keys)
        for key in keys:
            self._weights.pop(key, None)
            self._cold.pop(key, None)

    def evict_idle(self, now: float | None = None) -> dict[str, Any]:
        """Evict idle keys from every candidate (they see the same keys at the same times)."""
        return self._merge_keys({name: c.evict_idle(now) for name, c in self.candidates.items()},
                                evicted=True)

    def take_evicted(self) -> dict[str, Any]:
        merged = self._merge_keys(
            {name: c.take_evicted() for name, c in self.candidates.items()}, evicted=True)
        for key in merged:
            self._cold.pop(key, None)
        return merged

    def _merge_keys(self, per_candidate: Mapping[str, Mapping[str, Any]], evicted: bool
                    ) -> dict[str, Any]:
        """``{key: {"hedge": …, "candidates": {name: task state}}}`` from per-candidate states.
        ``evicted``: the keys left the candidates' memory; their Hedge state moves to the
        cold store too (until :meth:`take_evicted` hands it over)."""
        merged: dict[str, Any] = {}
        for name, states in per_candidate.items():
            for key, state in states.items():
                merged.setdefault(key, {"candidates": {}})["candidates"][name] = state
        for key, entry in merged.items():
            k = self._weights.get(key)
            entry["hedge"] = self._cold.get(key) if k is None else k.to_dict()
            if evicted and key not in self.main.keys() and k is not None:
                self._cold[key] = entry["hedge"]
                del self._weights[key]
        return merged

    # ------------------------------------------------------------------ state

    def state_dict(self, keys: Collection[str] | None = None) -> dict[str, Any]:
        """Shared parts of the candidates, totals, and per key its weights and task states."""
        shared: dict[str, Any] = {}
        per_candidate: dict[str, Any] = {}
        for name, c in self.candidates.items():
            state = c.state_dict(keys)
            per_candidate[name] = state.pop("keys")
            state["labels"] = {**state["labels"], "entries": []}
            shared[name] = state
        entries = self.main.pending.state_dict(keys)["entries"]
        return {
            "kind": STATE_KIND,
            "version": STATE_VERSION,
            "model": self.describe(),
            "candidates": shared,
            "totals": self.totals.to_dict(),
            "label_moments": self.labels.to_dict(),
            "keys": self._merge_keys(per_candidate, evicted=False),
            "labels": {**shared[CANDIDATES[0]]["labels"], "entries": entries},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("kind") != STATE_KIND:
            raise ValueError(f"learner state has kind {state.get('kind')!r}, expected "
                             f"{STATE_KIND!r} (--model auto)")
        for name, c in self.candidates.items():
            c.load_state_dict({
                **state["candidates"][name],
                "keys": {key: entry["candidates"][name] for key, entry in state["keys"].items()
                         if name in entry["candidates"]},
                "labels": {**state["candidates"][name]["labels"],
                           "entries": state["labels"]["entries"]},
            })
        self.totals = Totals.from_dict(state["totals"])
        self.labels.load(state["label_moments"])
        for key, entry in state["keys"].items():
            self._cold.pop(key, None)
            if entry.get("hedge") is not None:
                self._weights[key] = KeyWeights.from_dict(entry["hedge"])

    def summary(self) -> LearnerSummary:
        """The main candidate's figures, with the mixture's own losses and updates, the meta
        updates of every candidate, and the mean weight of each expert over live keys."""
        s = self.main.summary()
        tot = self.totals
        s.cumulative_loss = tot.loss
        s.prequential_loss = tot.recent if tot.n else None
        s.updates = tot.n
        s.meta_updates = sum(c.summary().meta_updates for c in self.candidates.values())
        live = [self._weights[k].w for k in self.main.keys() if k in self._weights]
        mean = np.mean(live, axis=0) if live else np.full(len(EXPERTS), 1.0 / len(EXPERTS))
        s.candidate_weights = dict(zip(EXPERTS, mean.tolist(), strict=True))
        return s
