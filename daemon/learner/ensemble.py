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
best expert"; classification) or to the mean of the key's past weights (mixing past
posteriors, Bousquet & Warmuth 2002; regression, see :data:`SHARE_TO_PAST`), so a key whose
best expert changes with a drift follows within ``O(log(1/SHARE))`` records instead of paying
back its whole lead.

The experts:

- ``linear`` and ``mlp``: each its own :class:`~adaptd.learner.adaptive.AdaptiveLearner` with
  its own meta-state, fed every record;
- ``knn``: a vote of the nearest of the key's last labelled records on standardized features
  (:mod:`adaptd.learner.neighbours`): the local, non-linear boundaries trees win on, at once;
- ``tree``: a Hoeffding tree per key (:mod:`adaptd.learner.trees`): axis-aligned boundaries
  on a few of many features, where the vote weighs every feature alike (LUdata: 0.984 without
  it, 0.994 with it). Classification only: a regression key holds its weight at 0, and
  :func:`task_experts` leaves it out of the weights shown;
- ``aode``: averaged one-dependence estimators per key (:mod:`adaptd.learner.aode`): counts of
  each feature's values (or z-score quartiles) and of each pair's, by class: few-valued
  features (flags, codes) learnt from a handful of records (river's Phishing: 0.895 without
  it, 0.922 with it). Classification only, as the tree;
- ``prior``: the key's running label mean (regression) or Laplace's rule of succession for
  P(y = 1) (binary); multi-class: the class frequencies of the neighbours' window;
- ``last``: the key's last label (regression), or for classification the last label with the
  key's Laplace-estimated probability that a label repeats.

Classification mixes probabilities (η = 1 on log loss), multi-class ones too, in the linear
candidate's class order (every candidate discovers the classes from the same records in the
same order); regression mixes predictions, with the squared loss measured in units of the
running label variance and capped at ``LOSS_CAP`` (bounded losses, as the bound assumes),
η = ``ETA_REGRESSION``. Regression also runs exponentiated gradient over the same experts
(regret to their best convex combination, not just the best one) and one Hedge over every
key's losses (which expert suits the stream, learnt from all keys at once), and predicts
with a Hedge mixture of the three mixtures (:func:`adaptd.learner.hedge.hedge_regression`):
a key whose experts err differently gets below every one of them, a key with one clearly
best expert (the last label on WaterFlow) stays within a constant of it, and many keys share
what each would otherwise learn alone.

``drift``, ``segment``, ``recovered_after`` and ``learned`` of each outcome are the
``linear`` candidate's (its detector is the one the drift metrics count); ``y_pred`` and
``loss`` are the mixture's.

State: each candidate's shared part under ``candidates``; per key, under ``keys``, the Hedge
weights and the mean of its past ones, the simple experts' counts, the neighbours' window and
the tree (``hedge``; regression: also the exponentiated-gradient weights, their past
mean and the three mixtures' weights) with every candidate's task state, so a key's whole state moves with its
partition (:mod:`adaptd.partitions`). Only the first candidate keeps the regret
comparators (shadow baseline, hindsight buffer): the ensemble reports its regret figures, and
the MLP's cost a key two parameter-sized rows more (:func:`_unreported`). The candidates keep identical
delayed-label entries (they see the same records): saved once. A delayed label's Hedge
update is charged to the key its label record names.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from adaptd.learner import LearnerSummary, Outcomes
from adaptd.learner.adaptive import AdaptiveLearner
from adaptd.learner.aode import Aode
from adaptd.learner.hedge import LAST, hedge_batch, hedge_classes, hedge_regression
from adaptd.learner.models import P_CLIP, TaskKind
from adaptd.learner.neighbours import Neighbours
from adaptd.learner.totals import Totals
from adaptd.learner.trees import Trees
from adaptd.meta.state import MetaState
from adaptd.records import Record, RecordBatch
from adaptd.settings import DriftConfig, RegretConfig
from adaptd.state_codec import unpack_state

log = logging.getLogger(__name__)

STATE_KIND = "adaptd-hedge"
STATE_VERSION = 1
#: The learners mixed, in order; the first one's drift alarms are the ensemble's.
CANDIDATES = ("linear", "mlp")
EXPERTS = (*CANDIDATES, "knn", "tree", "aode", "prior", "last")
#: Experts of classification only: a regression key holds their weights at 0.
CLASSIFICATION_ONLY = ("tree", "aode")
#: Experts added since states were first saved, in the order they were added: a state with
#: fewer weights predates the last of them (see :meth:`HedgeLearner._saved_weights`).
ADDED = ("tree", "aode")


def task_experts(task: TaskKind) -> tuple[str, ...]:
    """The experts a task mixes (those ``adaptd_candidate_weight`` and the live page show):
    all of :data:`EXPERTS` for classification; regression has no tree or AODE (their columns
    of the weights are held at 0)."""
    return EXPERTS if task == "classification" else tuple(
        e for e in EXPERTS if e not in CLASSIFICATION_ONLY)

#: The candidates' Page-Hinkley λ on raw log loss when unset (see :func:`_candidate_drift`).
#: Measured, the default against λ = 50 (river's): SEA 0.921 / 0.918, LED 0.749 / 0.728,
#: Agrawal 0.896 / 0.891, rotating hyperplane 0.937 / 0.934, every bench stream equal or better.
CLASSIFICATION_PH_THRESHOLD = 100.0
#: Fixed-share mixing per labelled record (Herbster & Warmuth 1998).
SHARE = 1e-3
#: The part of the share mixed back to the mean of a key's past posteriors rather than evenly
#: (:func:`adaptd.learner.hedge._learn`), per task. Regression: all of it (Bousquet & Warmuth's
#: mixing past posteriors). On WaterFlow the best expert (the last label) wins only at rare
#: level shifts; over the calm stretches between them every expert is about as good, so fixed
#: share kept spreading weight evenly (about 8 % off the last label, against 0.07 % now) and
#: the mixture paid 3.5 % more than the last label (now 0.05 %). Classification: none (fixed
#: share); mixing past posteriors there measured ±0.15 pts, phishing −0.14 pts.
SHARE_TO_PAST = {"regression": 1.0, "classification": 0.0}
#: Classification: η on log loss (1: the aggregating algorithm, Bayes' rule over experts).
ETA_CLASSIFICATION = 1.0
#: Regression: η on squared loss in units of the label variance, and the cap on that loss.
ETA_REGRESSION = 0.5
LOSS_CAP = 8.0
#: Regression: η of the exponentiated-gradient mixture (on its loss gradient, same units), and
#: of the Hedge over the three mixtures. Measured on every regression stream of the bench and
#: the held-out set against each key's Hedge alone (MSE ratio): TrumpApproval 0.9998,
#: WaterFlow 0.9989, ChickWeights 0.830, AirlinePassengers 0.977, sinusoids 0.94–0.97,
#: friedman 0.92–0.94, linear tasks 0.98–0.996, sp500 0.987. Without the stream's row: sp500
#: 1.002 (its ten keys' best forecast is their running mean, 0.995: each key's Hedge paid to
#: learn that alone), ChickWeights 0.955. A top η of 0.5 follows the best mixture more and
#: mixes less: WaterFlow 0.9999, ChickWeights 0.871.
ETA_EG = 0.5
ETA_TOP = 0.25


#: A key's Hedge state as saved: the row fields of :mod:`adaptd.learner.hedge`.
ROW_FIELDS = ("n", "mean", "last", "pairs", "repeats")


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
        sections = {**sections, "drift": _candidate_drift(task, sections.get("drift"))}
        regret = sections.get("regret") or RegretConfig()
        self.candidates = {
            name: AdaptiveLearner(family[name], task, n_features, meta_state=given.get(name),
                                  **{**sections, "regret": regret if name == CANDIDATES[0]
                                     else _unreported(regret)})
            for name in CANDIDATES}
        self.main = self.candidates[CANDIDATES[0]]
        self.pending = _CandidatesPending(list(self.candidates.values()))
        self.eta = ETA_CLASSIFICATION if task == "classification" else ETA_REGRESSION
        self.to_past = SHARE_TO_PAST[task]
        #: Set once a label other than 0/1 arrives: Hedge then mixes class probabilities.
        self.multiclass = False
        self._slot: dict[str, int] = {}  # key -> row of _W and _rows
        self._free: list[int] = []
        self._W = np.empty((0, len(EXPERTS)))
        self._past = np.empty((0, len(EXPERTS)))  # per key: the mean of its past posteriors
        self._rows = np.empty((0, len(ROW_FIELDS)))
        # Regression only: exponentiated-gradient weights, their past mean, and per key the
        # weights of the two mixtures (Hedge's, EG's).
        self._G = np.empty((0, len(EXPERTS)))
        self._g_past = np.empty((0, len(EXPERTS)))
        self._top = np.empty((0, 3))
        # Regression: the stream's Hedge row over every key's losses, and its past mean.
        self._stream = np.empty((1, len(EXPERTS)))
        self._stream_past = np.empty((1, len(EXPERTS)))
        self._cold: dict[str, dict[str, Any]] = {}  # Hedge states of evicted keys
        self.totals = Totals()
        self.labels = np.zeros(3)  # count, mean, m2 of every label (regression's loss unit)
        self.knn: Neighbours | None = None  # made once the feature count is known
        # A key's first weights: uniform, except that regression holds the classification
        # only experts at 0; with all of the share going to past posteriors they stay there.
        self._start = np.full(len(EXPERTS), 1.0 / len(EXPERTS))
        if task != "classification":
            self._start[:] = 1.0 / (len(EXPERTS) - len(CLASSIFICATION_ONLY))
            self._start[[EXPERTS.index(e) for e in CLASSIFICATION_ONLY]] = 0.0
        self.tree: Trees | None = None  # made with the neighbours
        self.aode: Aode | None = None  # made with the neighbours
        self._stream[0] = self._stream_past[0] = self._start

    def _admit(self, key: str, state: Mapping[str, Any] | None = None) -> int:
        """The row of ``key`` (a fresh one, or ``state`` as saved by :meth:`_key_state`)."""
        s = self._slot.get(key)
        if s is None:
            if not self._free:
                old = len(self._W)
                grow = max(old, 16)
                self._W = np.concatenate([self._W, np.empty((grow, len(EXPERTS)))])
                self._past = np.concatenate([self._past, np.empty((grow, len(EXPERTS)))])
                self._rows = np.concatenate([self._rows, np.empty((grow, len(ROW_FIELDS)))])
                self._G = np.concatenate([self._G, np.empty((grow, len(EXPERTS)))])
                self._g_past = np.concatenate([self._g_past, np.empty((grow, len(EXPERTS)))])
                self._top = np.concatenate([self._top, np.empty((grow, 3))])
                self._free = list(range(old + grow - 1, old - 1, -1))
            s = self._slot[key] = self._free.pop()
            self._W[s] = self._past[s] = self._G[s] = self._g_past[s] = self._start
            self._top[s] = 1.0 / 3
            self._rows[s] = 0.0
            self._rows[s, LAST] = np.nan
            self._clear_rows([s])
        if state is not None:
            w = self._saved_weights(state["w"])
            if w is not None:
                self._W[s] = w
                # Saved before past posteriors were kept: the weights stand in for them.
                self._past[s] = self._saved_weights(state.get("past", w))
            self._rows[s] = [float(state[f]) for f in ROW_FIELDS]
            if state.get("eg") is not None:  # saved before: EG starts afresh
                self._G[s] = state["eg"]
                self._g_past[s] = state["eg_past"]
                self._top[s] = state["top"]
            if state.get("knn") is not None and self._knn_for(len(state["knn"]["mean"])):
                assert self.knn is not None
                self.knn.set_state(s, state["knn"])
                if state.get("tree") is not None and self.tree is not None:
                    self.tree.set_state(s, state["tree"])
                if state.get("aode") is not None and self.aode is not None:
                    self.aode.set_state(s, state["aode"])
        return s

    def _saved_weights(self, saved: Sequence[float]) -> np.ndarray | None:
        """Weights as saved; a state saved before an expert of :data:`ADDED` existed gets
        that expert's starting weight, the others scaled to make room."""
        w = np.asarray(saved, dtype=np.float64)
        missing = len(EXPERTS) - len(w)
        if not 0 <= missing <= len(ADDED):
            return None
        new = [EXPERTS.index(name) for name in ADDED[len(ADDED) - missing:]]
        out = np.empty(len(EXPERTS))
        out[new] = self._start[new]
        out[[j for j in range(len(EXPERTS)) if j not in new]] = w * (1.0 - out[new].sum())
        return out

    def _knn_for(self, n_features: int) -> bool:
        """Make the neighbours' rows (and, classification, the trees' and AODE's) once the
        feature count is known; false if it differs."""
        if self.knn is None:
            self.knn = Neighbours(n_features)
            if self.task == "classification":  # a regression key's tree and AODE weigh nothing
                self.tree = Trees(n_features)
                self.aode = Aode(n_features)
            self._clear_rows(self._slot.values())
        return self.knn.d == n_features

    def _clear_rows(self, slots: Iterable[int]) -> None:
        """The neighbours', trees' and AODE's rows (those made yet) sized to the weights' and
        cleared at ``slots``, as new keys'."""
        for rows in (self.knn, self.tree, self.aode):
            if rows is not None:
                rows.grow(len(self._W))
                for s in slots:
                    rows.clear(s)

    def _key_state(self, key: str) -> dict[str, Any] | None:
        s = self._slot.get(key)
        if s is None:
            return self._cold.get(key)
        regression = self.task != "classification"
        return {"w": self._W[s].tolist(), "past": self._past[s].tolist(),
                **dict(zip(ROW_FIELDS, self._rows[s].tolist(), strict=True)),
                "knn": None if self.knn is None else self.knn.get_state(s),
                "tree": None if self.tree is None else self.tree.get_state(s),
                "aode": None if self.aode is None else self.aode.get_state(s),
                "eg": self._G[s].tolist() if regression else None,
                "eg_past": self._g_past[s].tolist() if regression else None,
                "top": self._top[s].tolist() if regression else None}

    def _drop(self, key: str) -> None:
        s = self._slot.pop(key, None)
        if s is not None:
            self._free.append(s)

    def describe(self) -> dict[str, Any]:
        return {"model": "auto", "task": self.task, "n_features": self.main.n_features,
                "candidates": list(CANDIDATES)}

    def process_many(self, records: Sequence[Record]) -> Outcomes:
        return self.process_batch(RecordBatch.from_records(records))

    def process_batch(self, batch: RecordBatch) -> Outcomes:
        """Each candidate predicts and learns the batch; then, record by record in order, each
        key's mixture predicts and its weights learn. Blocks for the compute only."""
        view = self._learn_view(batch)
        outs = [c.process_batch(batch) for c in self.candidates.values()]
        main = outs[0]
        n = len(main)
        if not n:
            return main
        slot_list = [self._slot.get(k) for k in batch.keys]
        if None in slot_list:
            slot_list = [self._admit(k) if s is None else s
                         for k, s in zip(batch.keys, slot_list, strict=True)]
        slots = np.array(slot_list, dtype=np.int64)
        skip = np.isnan(main.loss)
        if main.probas is not None:
            if not self.multiclass:
                log.info("--model auto: multi-class labels; the experts mix class "
                         "probabilities from here")
            self.multiclass = True
            return self._mix_classes(batch, view, slots, skip, outs)
        ys = np.asarray(batch.y, dtype=np.float64)
        knn, _, tree, aode = self._neighbours(batch, view, slots, ys, ~skip, main.drift,
                                              2 if self.task == "classification" else 0)
        cand = np.stack([*(o.y_pred for o in outs), knn[:, 0], tree[:, 0], aode[:, 0]],
                        axis=1)
        y_pred = np.empty(n)
        loss = np.full(n, np.nan)
        if self.task == "classification":
            hedge_batch(slots, cand, ys, skip, self._W, self._past, self._rows, self.eta, SHARE,
                        self.to_past, P_CLIP, y_pred, loss)
        else:
            hedge_regression(slots, cand, ys, skip, self._W, self._past, self._G, self._g_past,
                             self._stream, self._stream_past, self._top, self._rows, self.labels, self.eta, ETA_EG, ETA_TOP,
                             SHARE, self.to_past, LOSS_CAP, y_pred, loss)
        self.totals.add_losses(loss[~np.isnan(loss)])
        return Outcomes(y_pred, loss, main.segment, main.drift, main.learned, main.recovered_after)

    def _mix_classes(self, batch: RecordBatch, view: tuple[list[str], np.ndarray],
                     slots: np.ndarray, skip: np.ndarray, outs: list[Outcomes]) -> Outcomes:
        """Multi-class: Hedge over the experts' class probabilities, in the linear candidate's
        class order (every candidate discovers the classes from the same records, in the same
        order); ``prior`` is the key's recent class frequencies (the neighbours' window)."""
        main = outs[0]
        classes = main.classes
        assert classes is not None and main.probas is not None
        n, K = main.probas.shape
        ys = classes.targets(np.asarray(batch.y, dtype=object))
        knn, prior, tree, aode = self._neighbours(batch, view, slots, ys, ~skip, main.drift,
                                                  K, columns=True)
        P = np.empty((n, len(EXPERTS), K))
        for j, o in enumerate(outs):
            assert o.probas is not None and o.classes.labels == classes.labels
            P[:, j] = o.probas
        P[:, len(outs)] = knn
        P[:, len(outs) + 1] = tree
        P[:, len(outs) + 2] = aode
        P[:, len(outs) + 3] = prior
        mix = np.empty((n, K))
        loss = np.full(n, np.nan)
        hedge_classes(slots, P, ys, skip, self._W, self._past, self._rows, self.eta, SHARE,
                      self.to_past, P_CLIP, mix, loss)
        self.totals.add_losses(loss[~np.isnan(loss)])
        self.totals.add_hits(np.argmax(mix, axis=1)[~np.isnan(ys)] == ys[~np.isnan(ys)])
        out = Outcomes(np.argmax(mix, axis=1).astype(np.float64), loss, main.segment,
                       main.drift, main.learned, main.recovered_after)
        out.probas, out.classes = mix, classes
        return out

    def _learn_view(self, batch: RecordBatch) -> tuple[list[str], np.ndarray]:
        """The keys and features each record is learned with: a delayed label's are those
        kept for its id (looked up before the candidates take them), else its own."""
        keys, X = batch.keys, batch.X
        if batch.ids.count(None) == len(batch):
            return keys, X
        self.main.pending.expire()
        keys, X = list(keys), X.copy()
        kept: dict[str, tuple[str, tuple[float, ...]]] = {}
        for i, rid in enumerate(batch.ids):
            if rid is None:
                continue
            if np.isnan(batch.y[i]) if batch.y.dtype.kind == "f" else batch.y[i] is None:
                kept[rid] = (keys[i], tuple(X[i].tolist()))
                continue
            joined = kept.pop(rid, None) or self.main.pending.peek(rid)
            if joined is not None:
                keys[i], X[i] = joined
        return keys, X

    def _neighbours(self, batch: RecordBatch, view: tuple[list[str], np.ndarray],
                    slots: np.ndarray, ys: np.ndarray, learn: np.ndarray, alarms: np.ndarray,
                    n_classes: int, columns: bool = False
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The knn, tree and AODE experts' predictions (see :meth:`Neighbours.run`,
        :meth:`Trees.run`, :meth:`Aode.run`), each record predicted and learned under the key
        and features of ``view``; ``columns``: one column per class even with two (multi-class
        mode whose labels are two so far; binary mode's is one column, P(y = 1)). A key's tree
        and AODE counts restart after a record on which the key's drift alarm (``alarms``)
        fired. Regression: no tree or AODE, their predictions are 0 (as their weights are)."""
        keys, X = view
        if not self._knn_for(X.shape[1]):
            raise ValueError(f"records have {X.shape[1]} features, the model expects "
                             f"{self.knn.d if self.knn else 0}")
        assert self.knn is not None
        if keys is not batch.keys:
            slots = np.array([self._admit(k) for k in keys], dtype=np.int64)
        X = np.nan_to_num(X, posinf=0.0, neginf=0.0)
        ys = np.nan_to_num(ys)
        knn, prior = self.knn.run(slots, X, ys, learn, n_classes, self.labels, columns)
        if self.tree is None or self.aode is None:
            none = np.zeros((len(slots), 1))
            return knn, prior, none, none
        return (knn, prior, self.tree.run(slots, X, ys, learn, alarms, n_classes, columns),
                self.aode.run(slots, X, ys, learn, alarms, n_classes, columns))

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
            self._drop(key)
            self._cold.pop(key, None)

    def evict_idle(self, now: float | None = None) -> dict[str, Any]:
        """Evict idle keys from every candidate (they see the same keys at the same times)."""
        return self._merge_keys({name: c.evict_idle(now) for name, c in self.candidates.items()},
                                evicted=True)

    @property
    def evictions_waiting(self) -> int:
        """Keys let go of whose state waits in memory for a checkpoint to write it (the
        runner does not defer a checkpoint then); every candidate holds the same keys."""
        return self.main.evictions_waiting

    @property
    def evictions_full(self) -> bool:
        """See :attr:`AdaptiveLearner.evictions_full` (every candidate holds the same keys)."""
        return self.main.evictions_full

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
        live = self.keys()
        for key, entry in merged.items():
            entry["hedge"] = self._key_state(key)
            if evicted and key not in live and key in self._slot:
                self._cold[key] = entry["hedge"]
                self._drop(key)
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
            # The linear candidate's meta-state is the one the replica publishes, merges with
            # its group's and writes to STATE_DIR/meta.pt (a --meta file of that family).
            "meta": shared[CANDIDATES[0]]["meta"],
            "totals": self.totals.to_dict(),
            "label_moments": self.labels.tolist(),
            "stream_weights": {"w": self._stream[0].tolist(),
                               "past": self._stream_past[0].tolist()},
            "keys": self._merge_keys(per_candidate, evicted=False),
            "labels": {**shared[CANDIDATES[0]]["labels"], "entries": entries},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("kind") != STATE_KIND:
            raise ValueError(f"learner state has kind {state.get('kind')!r}, expected "
                             f"{STATE_KIND!r} (--model auto)")
        candidates = dict(state["candidates"])
        if state.get("meta") is not None:  # e.g. the group's merged meta-state
            candidates[CANDIDATES[0]] = {**candidates[CANDIDATES[0]], "meta": state["meta"]}
        for name, c in self.candidates.items():
            c.load_state_dict({
                **candidates[name],
                "keys": {key: entry["candidates"][name] if name == CANDIDATES[0]
                         else _without_comparators(entry["candidates"][name])
                         for key, entry in state["keys"].items() if name in entry["candidates"]},
                "labels": {**state["candidates"][name]["labels"],
                           "entries": state["labels"]["entries"]},
            })
        self.totals = Totals.from_dict(state["totals"])
        self.labels = np.asarray(state["label_moments"], dtype=np.float64).copy()
        stream = state.get("stream_weights")  # saved before it existed: it starts afresh
        if stream is not None:
            self._stream[0] = stream["w"]
            self._stream_past[0] = stream["past"]
        for key, entry in state["keys"].items():
            self._cold.pop(key, None)
            if entry.get("hedge") is not None:
                self._admit(key, entry["hedge"])

    def summary(self) -> LearnerSummary:
        """The main candidate's figures, with the mixture's own losses and updates, the meta
        updates of every candidate, and the mean weight of each expert over live keys."""
        s = self.main.summary()
        tot = self.totals
        s.cumulative_loss = tot.loss
        s.prequential_loss = tot.recent if tot.n else None
        s.updates = tot.n
        each = [c.summary() for c in self.candidates.values()]
        s.meta_updates = sum(c.meta_updates for c in each)
        s.concept_reuses = sum(c.concept_reuses for c in each)
        rows = [self._slot[k] for k in self.keys() if k in self._slot]
        live = self._W[rows]
        if self.task != "classification":  # what the prediction gives each expert
            top = self._top[rows]
            live = top[:, :1] * live + top[:, 1:2] * self._G[rows] + top[:, 2:] * self._stream
        # fsum is exactly rounded: the same keys in another order (restored from a
        # checkpoint) give the same figures.
        mean = [math.fsum(col) / len(live) for col in live.T.tolist()] if len(live) else \
            self._start.tolist()
        names = task_experts(self.task)
        s.candidate_weights = {name: w for name, w in zip(EXPERTS, mean, strict=True)
                               if name in names}
        return s


def _candidate_drift(task: TaskKind, drift: DriftConfig | None) -> DriftConfig:
    """The candidates' detector: as configured, except that an unset classification threshold
    (raw log loss) is :data:`CLASSIFICATION_PH_THRESHOLD` instead of river's 50. Inside the
    mixture a false alarm costs as much as it does alone (a candidate restarts from θ0), while
    a late alarm costs less: the window of the neighbours, the last-label expert and fixed
    share follow a change at once."""
    drift = drift or DriftConfig()
    if task == "classification" and drift.ph_threshold is None and not drift.ph_relative:
        drift = dataclasses.replace(drift, ph_threshold=CLASSIFICATION_PH_THRESHOLD)
    return drift


def _unreported(regret: RegretConfig) -> RegretConfig:
    """A candidate's regret settings other than the first's: no shadow baseline, no hindsight
    buffer. The ensemble reports the first candidate's regret figures only
    (:meth:`HedgeLearner.summary`), so the MLP's baseline (two more parameter-sized rows a
    key: 34 kB of its 86 kB packed with 10 features, and a second MLP step a record) and its
    hindsight buffer (up to 19 kB a key) fed nothing anyone reads. The MLP's own rows run the
    same steps either way: a baseline row reads and writes only itself (as when it runs on the
    shadow thread), the buffer is written and fitted, never read back."""
    return dataclasses.replace(regret, baseline=False, hindsight=False)


def _without_comparators(state: Any) -> Any:
    """A candidate's key state as :func:`_unreported` keeps it: one saved before (with its
    baseline and a filled hindsight buffer) loses both; one saved since passes as it is."""
    task = unpack_state(state)
    if "baseline" not in task and not len(task["HY"]):
        return state
    task = {k: v for k, v in task.items() if k != "baseline"}
    for name in ("HX", "HY", "HL"):
        task[name] = task[name][:0]
    task["hpos"] = task["hpos"] * 0
    task["hcount"] = task["hcount"] * 0
    return task


class _CandidatesPending:
    """The delayed-label view the runner and partitions use (``take``, ``key_of``): every
    candidate keeps the same features under the same ids, since all see the same records, so
    a label taken for one is taken for all."""

    def __init__(self, candidates: list[AdaptiveLearner]) -> None:
        self._all = candidates

    def __len__(self) -> int:
        return len(self._all[0].pending)

    def take(self, record_id: str) -> tuple[str, tuple[float, ...]] | None:
        kept = [c.pending.take(record_id) for c in self._all]
        return kept[0]

    def key_of(self, record_id: str) -> str | None:
        return self._all[0].pending.key_of(record_id)
