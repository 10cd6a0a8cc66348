"""adaptd's learner: per-key tasks, drift segmentation, meta-learned init and step sizes, regret.

Each key owns a *slot*: one row of the arena (:mod:`adaptd.learner.arena`), plus the next
row for its shadow baseline. A batch goes through the compiled kernel or through NumPy waves
(:mod:`adaptd.learner.paths`), which apply the same rules with the same results; segment
closes are :mod:`adaptd.learner.segments`'.

Per labelled record of a key (order of :meth:`AdaptiveLearner.process_many`):

1. predict with the current θ (the loss is prequential), for the key and its baseline row;
2. append the record to the key's support window W (last ``window`` labelled records of the
   current segment) and take the inner step ``g = ∇L(θ; W); A += c·g²; θ −= α·sqrt(B/A) ⊙ g``
   (Khodak, Balcan, Talwalkar 2019; plain AdaGrad when ``B = lr²``), or skip it, leaving the
   state unchanged, when the loss, the gradient or the result is not finite;
3. feed the loss to the key's drift detector (after the segment's warm-up); on an alarm close
   the segment: fold it into the meta-state (:mod:`adaptd.meta.state`), fit the hindsight
   comparator on it (:mod:`adaptd.regret`), and start the next task at ``θ0`` with
   ``A = G/c``, an empty window and a fresh detector.

The baseline (plain AdaGrad on the last ``regret.baseline_window`` records, never reset) has its
own row per key, stepped alongside the key's row.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptd.drift import DEFAULT_PH_RELATIVE, DEFAULT_PH_THRESHOLD, DetectorBank, build_bank
from adaptd.errors import ArenaMemoryError
from adaptd.labels import PendingLabels
from adaptd.learner import LearnerSummary, Outcomes, growth, kernel, paths
from adaptd.learner import slots as key_slots
from adaptd.learner.arena import (
    BASE_FIELDS,
    Arena,
    grow_arena,
    row_bytes,
    row_state,
    set_row_state,
)
from adaptd.learner.classes import ClassIndex
from adaptd.learner.concepts import ConceptLibrary
from adaptd.learner.jit import COMPILED
from adaptd.learner.models import Family, TaskKind, build_family, initial_parameters
from adaptd.learner.network import Net, net_of
from adaptd.learner.scaling import Standardizer, run_standardized
from adaptd.learner.segments import LinearFits, close_segment
from adaptd.learner.totals import Totals
from adaptd.meta.state import MetaState
from adaptd.records import Record, RecordBatch
from adaptd.settings import DriftConfig, LabelsConfig, LearnerConfig, MetaConfig, RegretConfig
from adaptd.state_codec import unpack_state

if TYPE_CHECKING:
    from torch import nn

    from adaptd.learner.shadow import Shadow

log = logging.getLogger(__name__)

STATE_KIND = "adaptd-adaptive"
STATE_VERSION = 1

class AdaptiveLearner:
    """The engine. Implements :class:`adaptd.learner.Learner`; called from one thread only.

    Args:
        model: ``linear``, ``logistic`` or ``mlp`` (ignored when ``module`` is given).
        task: ``regression`` or ``classification``.
        n_features: features per record; ``None`` takes it from the first record.
        config, drift, meta, regret, labels: the settings sections.
        meta_state: a meta-state to start from (``--meta FILE``); else a random init.
        module: a user ``nn.Module`` trained through autograd instead of a built-in family.
        clock: monotonic seconds, for idle eviction and label TTLs (injected by tests).
    """

    # Set up with the first record (or n_features): see _setup.
    arena: Arena
    bank: DetectorBank
    net: Net  # built-in families only
    scratch: tuple[np.ndarray, ...]  # the kernel's working arrays
    B_base: np.ndarray  # lr²: the shadow baseline's B
    scaler: Standardizer | None  # shared feature/target statistics (learner.standardize*)
    concepts: ConceptLibrary | None  # closed task states per slot (meta_learning.library)
    side: Shadow | None = None  # the running batch's work on the second thread (shadow.py)
    fits: LinearFits | None = None  # the running batch's hindsight fits (segments.py)

    def __init__(
        self,
        model: str = "linear",
        task: TaskKind = "regression",
        n_features: int | None = None,
        config: LearnerConfig | None = None,
        drift: DriftConfig | None = None,
        meta: MetaConfig | None = None,
        regret: RegretConfig | None = None,
        labels: LabelsConfig | None = None,
        meta_state: MetaState | None = None,
        module: nn.Module | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = "logistic" if model == "logistic" else model
        self.task: TaskKind = "classification" if model == "logistic" else task
        self.config = config or LearnerConfig()
        self.drift = drift or DriftConfig()
        if self.drift.ph_relative is None:
            self.drift = dataclasses.replace(
                self.drift, ph_relative=DEFAULT_PH_RELATIVE[self.task])
        if self.drift.ph_threshold is None:
            self.drift = dataclasses.replace(
                self.drift, ph_threshold=DEFAULT_PH_THRESHOLD[bool(self.drift.ph_relative)])
        self.meta_config = meta or MetaConfig()
        self.regret = regret or RegretConfig()
        if self.regret.baseline_window > self.config.window:
            raise ValueError(f"regret.baseline_window ({self.regret.baseline_window}) must be "
                             f"<= learner.window ({self.config.window})")
        self.clock = clock
        self.pending = PendingLabels(labels or LabelsConfig(), clock)
        self._user_module = module
        self._given_meta = meta_state
        self.family: Family | None = None
        self.meta: MetaState | None = None
        self.n_features = n_features
        self._slot_of: dict[str, int] = {}
        self._key_of: dict[int, str] = {}
        self._free: list[int] = []
        self._capacity = 0
        # Evicted keys' states (packed, adaptd.state_codec) until a checkpoint writes them.
        self._cold: dict[str, Any] = {}
        # Keys let go of whose state the store already holds (see mark_saved): no copy kept.
        self._dropped: list[str] = []
        # Clock reading of the last checkpoint that wrote every changed key (None: none yet),
        # and the class count then (a new class changes every key's state).
        self._saved_at: float | None = None
        self._saved_classes = 0
        # The checkpoint being written: its mark and the key states it packed (see saving).
        self._saving: tuple[tuple[float, int], list[Mapping[str, Any]]] | None = None
        self.classes: ClassIndex | None = None  # multi-class only: see adaptd.learner.growth
        # Built by _setup; None until the first record (a checkpoint may come before it).
        self.scaler = None
        self.concepts = None
        self.totals = Totals()
        if meta_state is not None and n_features is None:
            self.n_features = int(meta_state.model.get("n_features", 0)) or None
        if self.n_features is not None:
            self._setup(self.n_features)

    # ------------------------------------------------------------------ setup and slots

    def describe(self) -> dict[str, Any]:
        """The model descriptor stored with meta-states and checkpoints."""
        d: dict[str, Any] = {"model": self.model, "task": self.task, "n_features": self.n_features}
        if self.model == "mlp":
            d["hidden"] = [int(h) for h in self.config.hidden]
            d["activation"] = self.config.activation
        if self._user_module is not None:
            d["model"] = f"module:{type(self._user_module).__name__}"
        return d

    def _setup(self, n_features: int) -> None:
        """Build the family, the initial meta-state and the arena once n_features is known."""
        self.n_features = n_features
        if self._user_module is not None:
            from adaptd.learner.autograd import AutogradFamily  # torch: only for a user module

            self.family = AutogradFamily(self._user_module, self.task)
        else:
            self.classes = growth.given_classes(self._given_meta)
            self.family = build_family(self.model, self.task, n_features, self.config.hidden,
                                       self.config.activation, len(self.classes or ()))
        self._init = initial_parameters(self.family, self.config.init_seed)
        if self._given_meta is not None:
            self._given_meta.check_compatible(self.describe(), "--meta")
            if len(self._given_meta.theta0) != self.family.n_params:
                raise ValueError(
                    f"--meta: meta-state has {len(self._given_meta.theta0)} parameters, "
                    f"model has {self.family.n_params}")
            self.meta = self._given_meta
        else:
            self.meta = MetaState.initial(self._init, self.config.lr, self.config.eps,
                                          self.config.c, self.describe())
        self.bank: DetectorBank = build_bank(self.drift)
        self.concepts = ConceptLibrary(self.meta_config.library) \
            if self.meta_config.library else None
        target = self.config.standardize_target and self.task == "regression"
        # Shared by every key and task, kept across resets (see adaptd.learner.scaling).
        self.scaler = Standardizer(n_features, self.config.standardize, target) \
            if self.config.standardize or target else None
        if self.scaler is not None and self.meta is not None and self.meta.scaler is not None:
            self.scaler.load_statistics(self.meta.scaler)
        builtin = hasattr(self.family, "layers")  # linear, logistic, MLP: not a user module
        self._kernel = kernel.process if (
            COMPILED and self.config.kernel and builtin
            and self.drift.detector in ("page_hinkley", "oracle", "none")
            and not self.config.hypergradient) else None
        if builtin:
            self.net = net_of(self.family)
            # The kernel's working arrays, allocated once (as a plain tuple: see kernel.process).
            self.scratch = tuple(kernel.scratch(self.net.L_out, n_features, self.config.window,
                                                self.family.n_params))
        self.B_base = np.full(self.family.n_params, self.config.lr * self.config.lr)
        self._rows_per_key = 2 if self.regret.baseline else 1
        self._grow(64, None)

    def _grow(self, keys_capacity: int, old: Arena | None) -> None:
        """Room for ``keys_capacity`` keys, ``old``'s rows first (the arena doubles when full)."""
        assert self.family is not None and self.n_features is not None
        rows = keys_capacity * self._rows_per_key
        shape = (self.family.n_params, self.config.window, self.n_features,
                 self.regret.buffer if self.regret.hindsight else 0)
        try:
            self.arena = grow_arena(old, rows, *shape)
        except MemoryError:
            raise ArenaMemoryError(self.config.max_keys, keys_capacity,
                                   rows * row_bytes(*shape), len(self._slot_of)) from None
        self._free.extend(range(keys_capacity - 1, self._capacity - 1, -1))
        self._capacity = keys_capacity
        self.bank.grow(rows)

    def _admit_many(self, keys: Sequence[str]) -> np.ndarray:
        """Give each of ``keys`` a slot (:func:`adaptd.learner.slots.admit_many`)."""
        return key_slots.admit_many(self, keys)

    def _start_baseline(self, b: int) -> None:
        """A fresh shadow baseline in row ``b``: the seeded init, plain AdaGrad's A₀ = eps."""
        a = self.arena
        a.theta[b] = self._init
        a.A[b] = self.config.eps
        a.WM[b] = 0.0
        a.wpos[b] = 0

    def _release(self, s: int) -> None:
        key = self._key_of.pop(s)
        del self._slot_of[key]
        self._free.append(s // self._rows_per_key)
        if self.concepts is not None:
            self.concepts.drop(s)

    # ------------------------------------------------------------------ the record path

    def process_many(self, records: Sequence[Record]) -> Outcomes:
        """:meth:`process_batch` on the columns of ``records``."""
        return self.process_batch(RecordBatch.from_records(records))

    def process_batch(self, batch: RecordBatch) -> Outcomes:
        """Predict then learn each record in order; see the module docstring. Blocks for the
        compute only (no I/O)."""
        n = len(batch)
        if not n:
            return Outcomes.empty(0)
        if self.family is None:
            self._setup(batch.X.shape[1])
        d = self.n_features
        if batch.X.shape[1] != d:
            raise ValueError(f"records have {batch.X.shape[1]} features, the model expects {d}")
        self.pending.expire()
        if self.task == "classification":  # labels → class indices once multi-class
            batch = dataclasses.replace(batch, y=growth.class_targets(self, batch.y))
        keys, X, ys = batch.keys, batch.X, batch.y
        if batch.ids.count(None) != n:
            keys, X = self.pending.join(batch)
        slot_of = self._slot_of
        # map(dict.get) runs in C: this line is per record.
        slot_list = list(map(slot_of.get, keys))
        if None in slot_list:
            # Every key new (distinct keys): the new keys found in C, once.
            new = list(dict.fromkeys(keys if slot_list.count(None) == n else
                                     (k for k, s in zip(keys, slot_list) if s is None)))
            admitted = self._admit_many(new)
            # Each record of its own new key: the slots as admitted, not looked up again.
            slots = admitted if len(new) == n else np.array(
                list(map(slot_of.__getitem__, keys)), dtype=np.int64)
        else:
            slots = np.array(slot_list, dtype=np.int64)
        tasks = np.array([-1 if t is None else t for t in batch.tasks], dtype=np.int64) \
            if self.drift.detector == "oracle" else None
        out = Outcomes.empty(n)
        with np.errstate(all="ignore"):  # non-finite values are detected and skipped below
            run = paths.run_kernel if self._kernel is not None else paths.run_waves
            if self.scaler is not None:
                run_standardized(self, run, slots, X, ys, tasks, out)
            else:
                run(self, slots, X, ys, tasks, out)
        out.classes = self.classes
        if self.task == "classification":
            self.totals.add_hits(growth.hits(out, ys))
        self.arena.last_seen[slots] = self.clock()
        if len(self._slot_of) > self.config.max_keys:
            self._evict_lru(len(self._slot_of) - self.config.max_keys)
        return out

    def close_segments(self, keys: Collection[str] | None = None) -> None:
        """Close the open segment of ``keys`` (all if None), as if each had drifted now.

        Used at the end of offline meta-training, so the last task of each key counts."""
        for key in list(self._slot_of) if keys is None else keys:
            s = self._slot_of.get(key)
            if s is not None and self.arena.seg_len[s] > 0:
                close_segment(self, s)

    # ------------------------------------------------------------------ eviction

    def _evict_lru(self, count: int) -> None:
        key_slots.evict_lru(self, count)

    def save_mark(self) -> tuple[float, int]:
        """What :meth:`mark_saved` records, taken when a checkpoint packs the states (its write
        may finish later, on another thread, while records go on changing keys)."""
        return self.clock(), len(self.classes or ())

    def mark_saved(self, mark: tuple[float, int] | None = None) -> None:
        """Called once a checkpoint has written the state of every key that changed since the
        previous one (before ``mark``, from :meth:`save_mark`; None: now): a key unchanged from
        then on can leave memory without a copy (the store holds it), see :meth:`take_dropped`."""
        self._saved_at, self._saved_classes = self.save_mark() if mark is None else mark
        self._saving = None

    def saving(self, mark: tuple[float, int] | None,
               packed: Iterable[Mapping[str, Any]] = ()) -> None:
        """A checkpoint packed the states ``packed`` (key → packed state, one mapping per
        partition) at ``mark`` and is being written (None: no checkpoint in flight). Until
        :meth:`mark_saved`, a key evicted unchanged since ``mark`` takes its value from there
        rather than being packed again: without it, the keys the LRU let go of while a
        checkpoint was written (about 40% of a distinct-keys run's) were packed twice."""
        self._saving = None if mark is None else (mark, list(packed))

    @property
    def evictions_waiting(self) -> int:
        """Keys let go of whose changed state waits in memory for a checkpoint to write it."""
        return len(self._cold)

    @property
    def evictions_full(self) -> bool:
        """Whether as many changed states wait for a checkpoint as keys may be live
        (``max_keys``): the checkpoint is then due whatever its count or time. Otherwise a
        stream of new keys piles up the states of every key let go of until the next
        checkpoint (100,000 records by default): ``max_keys`` bounded only the live ones."""
        return len(self._cold) >= self.config.max_keys

    def take_dropped(self) -> list[str]:
        """Hand over (and forget) the keys let go of without a copy since the last call: their
        state is the one the store holds, to be read back from there when they return."""
        dropped, self._dropped = self._dropped, []
        return dropped

    def evict_idle(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """Evict keys unseen for ``idle_evict_s``; returns their task states (for the checkpoint).

        The states are also kept compactly by the learner (and saved by :meth:`state_dict`),
        so a key that comes back resumes where it was; :meth:`take_evicted` hands them over
        for good. Called by the runner between batches; never blocks.
        """
        now = self.clock() if now is None else now
        cutoff = now - self.config.idle_evict_s
        gone: dict[str, dict[str, Any]] = {}
        if not self._slot_of:  # (no arena before the first record)
            return gone
        live = np.fromiter(self._slot_of.values(), dtype=np.int64, count=len(self._slot_of))
        for s in live[self.arena.last_seen[live] < cutoff].tolist():  # one scan, in C
            key = self._key_of[s]
            gone[key] = self._cold[key] = self._task_state(s)
            self._release(s)
            self.totals.evicted += 1
        return gone

    def take_evicted(self) -> dict[str, Any]:
        """Hand over (and forget) the states of evicted keys, once the caller has persisted them."""
        cold, self._cold = self._cold, {}
        return cold

    # ------------------------------------------------------------------ state

    def _task_state(self, s: int) -> dict[str, Any]:
        state = row_state(self.arena, s)
        state["detector"] = self.bank.get_state(s)
        if self.classes is not None:
            state["classes"] = len(self.classes)
        if self.concepts is not None:
            state["library"] = self.concepts.get_state(s)
        if self.regret.baseline:
            state["baseline"] = row_state(self.arena, s + 1, BASE_FIELDS)
        return state

    def _set_task_state(self, s: int, state: Any) -> None:
        state = growth.task_state_for(self, dict(unpack_state(state)))
        set_row_state(self.arena, s, state)
        self.bank.set_state(s, state["detector"])
        if self.concepts is not None:
            self.concepts.set_state(s, state.get("library"))
        if self.regret.baseline:
            base = state.get("baseline")
            if base is None:  # saved without a baseline: start one
                self._start_baseline(s + 1)
            else:
                set_row_state(self.arena, s + 1, base, BASE_FIELDS)

    def state_dict(self, keys: Collection[str] | None = None) -> dict[str, Any]:
        """Meta-state, totals and the task states of ``keys`` (all if None), plain data."""
        chosen = list(self._slot_of) if keys is None else [k for k in keys if k in self._slot_of]
        held = self._cold if keys is None else {k: self._cold[k] for k in keys if k in self._cold}
        cold = {k: unpack_state(v) for k, v in held.items()}  # packed when evicted
        return {
            "kind": STATE_KIND,
            "version": STATE_VERSION,
            "model": self.describe(),
            "meta": None if self.meta is None else self.meta.to_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "totals": self.totals.to_dict(),
            "keys": {**cold, **{k: self._task_state(self._slot_of[k]) for k in chosen}},
            "labels": self.pending.state_dict(keys),
            "classes": None if self.classes is None else self.classes.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take the meta-state and totals; add (or replace) the task states in ``state``."""
        if state.get("kind") != STATE_KIND:
            raise ValueError(f"learner state has kind {state.get('kind')!r}, expected {STATE_KIND!r}")
        model = state["model"]
        if self.family is None:
            if model.get("n_features") is None:
                return  # saved before any record was seen: nothing to restore
            self._setup(int(model["n_features"]))
        mine = self.describe()
        for k in ("model", "task", "n_features", "hidden", "activation"):
            if k in model and model.get(k) != mine.get(k):
                raise ValueError(f"learner state is for {k}={model.get(k)!r}, this model has "
                                 f"{mine.get(k)!r}")
        if state.get("classes") is not None:
            growth.restore(self, state["classes"])
        if state["meta"] is not None:
            self.meta = MetaState.from_dict(state["meta"])
        if state.get("scaler") is not None and self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.totals = Totals.from_dict(state["totals"])
        states = state["keys"]
        slot_of = self._slot_of
        new = [key for key in states if key not in slot_of]
        if new:
            # At once: one key at a time, each past a full arena grew it by one row, copying
            # every row (a batch's keys read back from the store, beside max_keys in memory,
            # cost a second each at 100k keys).
            self._admit_many(new)
        for key, task_state in states.items():
            s = slot_of[key]
            self._set_task_state(s, task_state)
            # Counts as changed until the next checkpoint: a fallback to the previous
            # generation rewrites it then, so it must not leave memory uncopied before.
            self.arena.last_seen[s] = self.clock()
        self.pending.load_state_dict(state["labels"])

    def forget(self, keys: Collection[str]) -> None:
        if self._dropped:
            gone = set(keys)
            self._dropped = [k for k in self._dropped if k not in gone]
        for key in keys:
            s = self._slot_of.get(key)
            if s is not None:
                self._release(s)
            self._cold.pop(key, None)
        self.pending.forget(keys)

    def keys(self) -> Collection[str]:
        return self._slot_of.keys()

    def summary(self) -> LearnerSummary:
        tot = self.totals
        return LearnerSummary(
            cumulative_loss=tot.loss,
            baseline_loss=tot.baseline if self.regret.baseline else None,
            hindsight_regret=(tot.hindsight_adaptd - tot.hindsight) if self.regret.hindsight
            else None,
            prequential_loss=tot.recent if tot.n else None,
            active_keys=len(self._slot_of),
            meta_updates=tot.meta_updates,
            skipped_updates=tot.skipped,
            updates=tot.n,
            drift_events=tot.drift_events,
            hindsight_loss=tot.hindsight if self.regret.hindsight else None,
            delayed_labels_joined=self.pending.joined,
            delayed_labels_expired=self.pending.expired,
            evicted_keys=tot.evicted,
            concept_reuses=tot.concept_reuses,
            step_multiplier=self.meta.alpha if self.meta is not None else 1.0,
            accuracy=tot.accuracy if tot.scored else None,
        )
