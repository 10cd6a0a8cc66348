"""adaptd's learner: per-key tasks, drift segmentation, meta-learned init and step sizes, regret.

Each key owns a *slot*: one row in each of the arena arrays below (plus one for its shadow
baseline). Two evaluations of the same per-record rules:

- the compiled kernel (:mod:`adaptd.learner.kernel`) for the built-in families: records in
  arrival order, back to Python only for drift alarms and oracle task changes;
- *waves* (any family, e.g. a user ``nn.Module``, ADWIN/KSWIN, the hypergradient): wave j holds
  the j-th record of every key present in the batch, so a wave has each key at most once and
  the keys' records stay strictly in order across waves. One wave is one batched step: a
  gather of the keys' rows, closed-form (or autograd) predictions and support-window gradients
  for all of them at once (:mod:`adaptd.learner.models`), the ARUBA++ step, a scatter back.
  With many interleaved keys a wave covers hundreds of records; with one key each wave is one
  record and NumPy's per-call overhead dominates (see ``benchmarks/engine_speed.py``).

Both give the same results record for record with one key, or with many keys while the
meta-state is frozen; with meta-learning on, waves reorder records *across* keys, so a segment
close may reach another key's step one record earlier or later.

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
import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptd.drift import DEFAULT_PH_RELATIVE, DEFAULT_PH_THRESHOLD, PageHinkleyBank, build_bank
from adaptd.labels import PendingLabels
from adaptd.learner import LearnerSummary, Outcomes, kernel
from adaptd.learner.models import (
    Family,
    LinearFamily,
    MLPFamily,
    TaskKind,
    build_family,
    initial_parameters,
    pointwise_loss,
)
from adaptd.meta.state import MetaState
from adaptd.records import Record, RecordBatch
from adaptd.regret import hindsight_loss
from adaptd.settings import DriftConfig, LabelsConfig, LearnerConfig, MetaConfig, RegretConfig

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

STATE_KIND = "adaptd-adaptive"
STATE_VERSION = 1
#: A recovery not reached after this many records of a new segment is given up on.
RECOVERY_HORIZON = 1000
#: Prequential loss is an exponential average over about this many recent losses.
PREQUENTIAL_SPAN = 100

# Per-slot arrays: name → (trailing shape key, dtype, fill). Shape keys: "" scalar, "P"
# parameters, "k" window, "kd" window features.
_FIELDS: dict[str, tuple[str, Any, float]] = {
    "theta": ("P", np.float64, 0.0),
    "A": ("P", np.float64, 1.0),
    "WX": ("kd", np.float64, 0.0),
    "WY": ("k", np.float64, 0.0),
    "WM": ("k", np.float64, 0.0),
    "WL": ("k", np.float64, 0.0),
    "wpos": ("", np.int64, 0),
    "seg": ("", np.int64, 0),
    "seg_len": ("", np.int64, 0),
    "seg_loss": ("", np.float64, 0.0),
    "gsq": ("P", np.float64, 0.0),
    "u_prev": ("P", np.float64, 0.0),
    "ref_loss": ("", np.float64, 0.0),
    "recov": ("", np.int64, -1),
    "task_of": ("", np.int64, -1),
    "last_seen": ("", np.float64, 0.0),
    # The hindsight buffer: the segment's last ``regret.buffer`` records (ring), 0 wide if off.
    "HX": ("hd", np.float64, 0.0),
    "HY": ("h", np.float64, 0.0),
    "HL": ("h", np.float64, 0.0),
    "hpos": ("", np.int64, 0),
    "hcount": ("", np.int64, 0),
}
_BASE_FIELDS = ("theta", "A", "WX", "WY", "WM", "wpos")
# Stand-ins for the Page-Hinkley arrays when the kernel runs without that detector.
_NO_PH = (*(np.zeros(1) for _ in range(7)), np.zeros(1, dtype=bool))


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

    # The arena: per-slot rows, bound as attributes by _grow (see _FIELDS for the shapes).
    theta: np.ndarray
    A: np.ndarray
    WX: np.ndarray
    WY: np.ndarray
    WM: np.ndarray
    WL: np.ndarray
    wpos: np.ndarray
    seg: np.ndarray
    seg_len: np.ndarray
    seg_loss: np.ndarray
    gsq: np.ndarray
    u_prev: np.ndarray
    ref_loss: np.ndarray
    recov: np.ndarray
    task_of: np.ndarray
    last_seen: np.ndarray
    HX: np.ndarray
    HY: np.ndarray
    HL: np.ndarray
    hpos: np.ndarray
    hcount: np.ndarray

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
        self._cold: dict[str, dict[str, Any]] = {}
        self._totals = _Totals()
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
            self.family = build_family(self.model, self.task, n_features,
                                       self.config.hidden, self.config.activation)
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
        self._bank = build_bank(self.drift)
        self._kernel = kernel.process if (
            kernel.process is not None and self.config.kernel
            and isinstance(self.family, (LinearFamily, MLPFamily))
            and self.drift.detector in ("page_hinkley", "oracle", "none")
            and not self.config.hypergradient) else None
        fam = self.family
        if isinstance(fam, MLPFamily):
            specs = fam.layers
            act = 0 if fam.activation == "tanh" else 1
        else:
            specs, act = [(0, n_features, 1)], 0
        self._layers = (np.array([o for o, _, _ in specs], dtype=np.int64),
                        np.array([i for _, i, _ in specs], dtype=np.int64),
                        np.array([f for _, _, f in specs], dtype=np.int64), act)
        self._rows_per_key = 2 if self.regret.baseline else 1
        self._arrays: dict[str, np.ndarray] = {}
        self._grow(64)

    def _shape(self, key: str) -> tuple[int, ...]:
        assert self.family is not None and self.n_features is not None
        k = self.config.window
        h = self.regret.buffer if self.regret.hindsight else 0
        return {"": (), "P": (self.family.n_params,), "k": (k,),
                "kd": (k, self.n_features), "h": (h,), "hd": (h, self.n_features)}[key]

    def _grow(self, keys_capacity: int) -> None:
        rows = keys_capacity * self._rows_per_key
        for name, (shape_key, dtype, fill) in _FIELDS.items():
            shape = (rows, *self._shape(shape_key))
            # np.zeros takes pages lazily from the OS; most fields start at zero.
            new = np.zeros(shape, dtype=dtype) if fill == 0 else np.full(shape, fill, dtype=dtype)
            old = self._arrays.get(name)
            if old is not None:
                new[: len(old)] = old
            self._arrays[name] = new
        self._free.extend(range(keys_capacity - 1, self._capacity - 1, -1))
        self._capacity = keys_capacity
        self._bank.grow(rows)
        self.__dict__.update(self._arrays)  # self.theta, self.A, … are the arena arrays

    def _admit(self, key: str) -> int:
        """Give ``key`` a slot: its evicted state if it has one, else a fresh task."""
        if not self._free:
            self._grow(self._capacity * 2)
        j = self._free.pop()
        s = j * self._rows_per_key
        self._slot_of[key] = s
        self._key_of[s] = key
        cold = self._cold.pop(key, None)
        if cold is not None:
            self._set_task_state(s, cold)
            return s
        self._start_task(s)
        self.seg[s] = 0
        self.task_of[s] = -1
        if self.regret.baseline:
            b = s + 1
            self.theta[b] = self._init
            self.A[b] = self.config.eps
            self.WM[b] = 0.0
            self.wpos[b] = 0
        return s

    def _start_task(self, s: int) -> None:
        """Reset slot ``s`` to a new task at θ0 with A = G/c (its baseline row is untouched)."""
        assert self.meta is not None
        self.theta[s] = self.meta.theta0
        self.A[s] = self.meta.G / self.config.c
        self.WM[s] = 0.0
        self.WL[s] = 0.0
        self.wpos[s] = 0
        self.seg_len[s] = 0
        self.seg_loss[s] = 0.0
        self.gsq[s] = 0.0
        self.u_prev[s] = 0.0
        self.recov[s] = -1
        self._bank.reset(np.array([s]))

    def _release(self, s: int) -> None:
        key = self._key_of.pop(s)
        del self._slot_of[key]
        self._free.append(s // self._rows_per_key)

    # ------------------------------------------------------------------ the record path

    def process_many(self, records: Sequence[Record]) -> Outcomes:
        """:meth:`process_batch` on the columns of ``records``."""
        return self.process_batch(RecordBatch.from_records(records))

    def process_batch(self, batch: RecordBatch) -> Outcomes:
        """Predict then learn each record in order; see the module docstring. Blocks for the
        compute only (no I/O). Records of different keys are batched into waves."""
        n = len(batch)
        if not n:
            return Outcomes.empty(0)
        if self.family is None:
            self._setup(batch.X.shape[1])
        d = self.n_features
        if batch.X.shape[1] != d:
            raise ValueError(f"records have {batch.X.shape[1]} features, the model expects {d}")
        self.pending.expire()
        keys, X, ys = batch.keys, batch.X, batch.y
        if batch.ids.count(None) != n:
            keys, X = self._join_delayed(batch)
        slot_of = self._slot_of
        # map(dict.get) runs in C: this line is per record.
        slot_list = list(map(slot_of.get, keys))
        if None in slot_list:
            for i, k in enumerate(keys):
                if slot_list[i] is None:
                    slot = slot_of.get(k)
                    slot_list[i] = self._admit(k) if slot is None else slot
        slots = np.array(slot_list, dtype=np.int64)
        tasks = np.array([-1 if t is None else t for t in batch.tasks], dtype=np.int64) \
            if self.drift.detector == "oracle" else None
        out = Outcomes.empty(n)
        with np.errstate(all="ignore"):  # non-finite values are detected and skipped below
            if self._kernel is not None:
                self._run_kernel(slots, X, ys, tasks, out)
            else:
                for idx in _waves(slots):
                    self._wave(idx, slots[idx], X, ys, tasks, out)
        self.last_seen[slots] = self.clock()
        if len(self._slot_of) > self.config.max_keys:
            self._evict_lru(len(self._slot_of) - self.config.max_keys)
        return out

    def _run_kernel(self, slots: np.ndarray, X: np.ndarray, ys: np.ndarray,
                    tasks: np.ndarray | None, out: Outcomes) -> None:
        """The whole batch through the compiled kernel, handling its events in Python."""
        meta = self.meta
        assert meta is not None and self._kernel is not None
        n = len(slots)
        labelled = ~np.isnan(ys)
        task_arr = tasks if tasks is not None else np.full(n, -1, dtype=np.int64)
        ph = self._bank if isinstance(self._bank, PageHinkleyBank) else None
        cfg, dcfg, tot = self.config, self.drift, self._totals
        lr2 = cfg.lr * cfg.lr
        ph_mode = {"up": 0, "down": 1, "both": 2}[dcfg.ph_mode]
        acc = np.zeros(2)
        i = 0
        while True:
            ph_arrays = (ph.n, ph.mean, ph.up, ph.down, ph.min_up, ph.max_down, ph.scale,
                         ph.alarm) \
                if ph is not None else _NO_PH
            acc[:] = 0.0
            end, event = self._kernel(
                i, slots, X, ys, labelled, task_arr, tasks is not None,
                self.theta, self.A, self.WX, self.WY, self.WM, self.WL, self.wpos, self.seg,
                self.seg_len, self.seg_loss, self.gsq, self.recov, self.ref_loss, self.task_of,
                self.HX, self.HY, self.HL, self.hpos, self.hcount, self.regret.baseline_window,
                meta.B, lr2, cfg.c, meta.alpha, self.task == "classification",
                int(self.regret.baseline), *self._layers, ph is not None, *ph_arrays,
                dcfg.ph_threshold, dcfg.ph_delta, dcfg.ph_alpha, float(dcfg.ph_min_instances),
                bool(dcfg.ph_relative),
                ph_mode, dcfg.warmup, RECOVERY_HORIZON,
                out.y_pred, out.loss, out.learned, out.segment, out.recovered_after, acc)
            stop = end + 1 if event == kernel.EVENT_ALARM else end
            tot.skipped += int(acc[0])
            tot.baseline += float(acc[1])
            done = np.flatnonzero(out.learned[i:stop]) + i
            if len(done):
                tot.add_losses(out.loss[done])
            if event == kernel.EVENT_NONE:
                return
            s = int(slots[end])
            self._close_segment(s)
            out.drift[end] = True
            if event == kernel.EVENT_TASK_CHANGE:
                self.task_of[s] = task_arr[end]
                i = end
            else:
                i = end + 1

    def _join_delayed(self, batch: RecordBatch) -> tuple[list[str], np.ndarray]:
        """Keep features of unlabelled records with an id; swap in the kept key and features for
        labels that arrive later. Returns the keys and features to learn with (copies where
        changed: the batch stays as decoded, for the prediction records)."""
        keys, X = batch.keys, batch.X
        copied = False
        for i, rid in enumerate(batch.ids):
            if rid is None:
                continue
            if math.isnan(batch.y[i]):
                self.pending.put(rid, batch.keys[i], tuple(batch.X[i].tolist()))
                continue
            joined = self.pending.take(rid)
            if joined is None:
                continue
            if not copied:
                keys, X, copied = list(keys), X.copy(), True
            keys[i], X[i] = joined
        return keys, X

    def _wave(self, idx: np.ndarray, s: np.ndarray, X: np.ndarray, ys: np.ndarray,
              tasks: np.ndarray | None, out: Outcomes) -> None:
        """One batched step over records ``idx`` (distinct keys, main rows ``s``)."""
        fam = self.family
        meta = self.meta
        assert fam is not None and meta is not None
        cfg = self.config
        tot = self._totals
        if tasks is not None:  # oracle: a change of the task field closes the segment first
            t = tasks[idx]
            prev = self.task_of[s]
            change = (t >= 0) & (prev >= 0) & (t != prev)
            if change.any():
                for j in np.flatnonzero(change).tolist():
                    self._close_segment(int(s[j]))
                    out.drift[idx[j]] = True
            known = t >= 0
            self.task_of[s[known]] = t[known]
        Xw = X[idx]
        y = ys[idx]
        lab = ~np.isnan(y)
        out.segment[idx] = self.seg[s]
        nl = int(lab.sum())
        base = self.regret.baseline
        if nl == 0:
            out.y_pred[idx] = fam.forward(self.theta.take(s, 0), Xw[:, None, :])[:, 0]
            return
        all_lab = nl == len(s)
        sl = s if all_lab else s[lab]
        il = idx if all_lab else idx[lab]
        xl = Xw if all_lab else Xw[lab]
        yl = y if all_lab else y[lab]
        K = len(s)
        if base:
            # Prediction rows: every record's key, then the baseline rows of the labelled ones.
            pred = fam.forward(self.theta.take(np.concatenate([s, sl + 1]), 0),
                               np.concatenate([Xw, xl])[:, None, :])[:, 0]
            lrows = np.concatenate([sl, sl + 1])
            ly = np.concatenate([yl, yl])
            lx = np.concatenate([xl, xl])
            lpred = np.concatenate([pred[:K] if all_lab else pred[:K][lab], pred[K:]])
        else:
            pred = fam.forward(self.theta.take(s, 0), Xw[:, None, :])[:, 0]
            lrows, ly, lx = sl, yl, xl
            lpred = pred if all_lab else pred[lab]
        out.y_pred[idx] = pred[:K]
        ploss = pointwise_loss(self.task, lpred, ly)
        # Append the record to gathered copies of the windows; the arena changes only for rows
        # whose update turns out finite.
        pos = self.wpos.take(lrows)
        R = np.arange(len(lrows))
        WX = self.WX.take(lrows, 0)
        WY = self.WY.take(lrows, 0)
        WM = self.WM.take(lrows, 0)
        WX[R, pos] = lx
        WY[R, pos] = ly
        WM[R, pos] = 1.0
        th = self.theta.take(lrows, 0)
        _, g = fam.loss_grad(th, WX, WY, WM)
        A = self.A.take(lrows, 0)
        A += cfg.c * g * g
        if base:
            B = np.empty_like(A)
            B[:nl] = meta.B
            B[nl:] = cfg.lr * cfg.lr
            u = np.sqrt(B / A) * g
            scaled = u.copy()
            scaled[:nl] *= meta.alpha
        else:
            u = np.sqrt(meta.B / A) * g
            scaled = u * meta.alpha if meta.alpha != 1.0 else u
        th -= scaled
        ok = np.isfinite(ploss) & np.isfinite(th).all(axis=1) & np.isfinite(A).all(axis=1)
        all_ok = bool(ok.all())
        if not all_ok:
            tot.skipped += int((~ok[:nl]).sum())
            lrows, pos, th, A, lx, ly = lrows[ok], pos[ok], th[ok], A[ok], lx[ok], ly[ok]
        self.theta[lrows] = th
        self.A[lrows] = A
        self.WX[lrows, pos] = lx
        self.WY[lrows, pos] = ly
        self.WM[lrows, pos] = 1.0
        # Rows are the keys' (window k) then their baselines' (regret.baseline_window).
        modulus: np.ndarray | int = cfg.window if not base else np.where(
            lrows % 2 == 0, cfg.window, self.regret.baseline_window)
        self.wpos[lrows] = (pos + 1) % modulus
        # Main rows: accounting, hypergradient, drift.
        okm = ok[:nl]
        if all_ok:
            sm, lm, im, gm, pm = sl, ploss[:nl], il, g[:nl], pos[:nl]
        else:
            sm, lm, im, gm = sl[okm], ploss[:nl][okm], il[okm], g[:nl][okm]
            pm = pos[: int(okm.sum())]
        self.WL[sm, pm] = lm
        out.loss[im] = lm
        out.learned[im] = True
        tot.add_losses(lm)
        if base:
            tot.baseline += float(ploss[nl:][ok[nl:]].sum())
        self.gsq[sm] += gm * gm
        self.seg_len[sm] += 1
        self.seg_loss[sm] += lm
        if cfg.hypergradient and len(sm):
            # Baydin et al. 2018: dL/dα = −g_t · u_{t−1}, so α ← α + β_h·g_t·u_{t−1}.
            hyper = float(np.einsum("rp,rp->r", gm, self.u_prev[sm]).mean())
            if math.isfinite(hyper):
                meta.alpha = min(max(meta.alpha + cfg.hypergradient_lr * hyper, 0.05), 20.0)
            self.u_prev[sm] = u[:nl][okm]
        if self.regret.hindsight and len(sm):
            hp = self.hpos[sm]
            self.HX[sm, hp] = X[im]
            self.HY[sm, hp] = ys[im]
            self.HL[sm, hp] = lm
            self.hpos[sm] = (hp + 1) % self.regret.buffer
            self.hcount[sm] = np.minimum(self.hcount[sm] + 1, self.regret.buffer)
        self._track_recovery(sm, im, out)
        if tasks is not None or self.drift.detector == "none" or not len(sm):
            return
        seg_len = self.seg_len[sm]
        if seg_len.min() > self.drift.warmup:
            alarms = self._bank.update(sm, lm)
            if alarms.any():
                for slot, row in zip(sm[alarms].tolist(), im[alarms].tolist()):
                    self._close_segment(slot)
                    out.drift[row] = True
            return
        watch = seg_len > self.drift.warmup
        if not watch.any():
            return
        alarms = self._bank.update(sm[watch], lm[watch])
        for slot, row in zip(sm[watch][alarms].tolist(), im[watch][alarms].tolist()):
            self._close_segment(slot)
            out.drift[row] = True

    def _track_recovery(self, sm: np.ndarray, im: np.ndarray, out: Outcomes) -> None:
        """Samples to recover: records after a reset until the mean loss over the support window
        is back at or below the closed segment's mean loss."""
        rec = self.recov[sm] >= 0
        if not rec.any():
            return
        sr, ir = sm[rec], im[rec]
        count = self.recov[sr] + 1
        wm = self.WM[sr]
        mean = (self.WL[sr] * wm).sum(axis=1) / np.maximum(wm.sum(axis=1), 1.0)
        done = mean <= self.ref_loss[sr]
        out.recovered_after[ir[done]] = count[done]
        count[done | (count >= RECOVERY_HORIZON)] = -1
        self.recov[sr] = count

    def _close_segment(self, s: int) -> None:
        """Close slot ``s``'s segment: meta-update, hindsight fit, new task from θ0."""
        fam, meta = self.family, self.meta
        assert fam is not None and meta is not None
        tot = self._totals
        seg_len = int(self.seg_len[s])
        if self.meta_config.enabled and seg_len >= self.meta_config.min_segment:
            final_grad = None
            if self.meta_config.algorithm == "fomaml":
                final_grad = fam.loss_grad(self.theta[s : s + 1], self.WX[s : s + 1],
                                           self.WY[s : s + 1], self.WM[s : s + 1])[1][0]
            meta.update(self.meta_config, self.theta[s].copy(), self.gsq[s].copy(), final_grad)
            tot.meta_updates += 1
        count = int(self.hcount[s])
        if self.regret.hindsight and count:
            buf = self.regret.buffer
            order = (self.hpos[s] - count + np.arange(count)) % buf
            fitted = hindsight_loss(fam, self.regret, self.HX[s, order], self.HY[s, order],
                                    self.theta[s].copy())
            adaptd = float(self.HL[s, order].sum())
            if math.isfinite(fitted) and math.isfinite(adaptd):
                tot.hindsight += fitted
                tot.hindsight_adaptd += adaptd
            self.hcount[s] = 0
            self.hpos[s] = 0
        self.ref_loss[s] = self.seg_loss[s] / max(seg_len, 1)
        self.seg[s] += 1
        tot.drift_events += 1
        # The oracle closes exactly at the change: nothing in the window belongs to the new task.
        carry = 0 if self.drift.detector == "oracle" else self.drift.carry
        carried = self._latest(s, carry) if carry else None
        self._start_task(s)
        self.recov[s] = 0
        if carried is not None:
            self._seed_window(s, *carried)

    def _latest(self, s: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The ``m`` most recent window entries of slot ``s``, oldest first (or None)."""
        k = self.config.window
        order = (self.wpos[s] - 1 - np.arange(min(m, k))) % k
        order = order[self.WM[s, order] > 0][::-1]
        if not len(order):
            return None
        return self.WX[s, order].copy(), self.WY[s, order].copy(), self.WL[s, order].copy()

    def _seed_window(self, s: int, X: np.ndarray, Y: np.ndarray, L: np.ndarray) -> None:
        """Start slot ``s``'s new segment with carried records and one inner step on them."""
        fam, meta = self.family, self.meta
        assert fam is not None and meta is not None
        m = len(Y)
        self.WX[s, :m], self.WY[s, :m], self.WL[s, :m], self.WM[s, :m] = X, Y, L, 1.0
        self.wpos[s] = m % self.config.window
        with np.errstate(all="ignore"):
            _, g = fam.loss_grad(self.theta[s : s + 1], self.WX[s : s + 1], self.WY[s : s + 1],
                                 self.WM[s : s + 1])
            A = self.A[s] + self.config.c * g[0] * g[0]
            new = self.theta[s] - meta.alpha * np.sqrt(meta.B / A) * g[0]
        if np.isfinite(new).all() and np.isfinite(A).all():
            self.theta[s], self.A[s] = new, A
            self.gsq[s] += g[0] * g[0]

    def close_segments(self, keys: Collection[str] | None = None) -> None:
        """Close the open segment of ``keys`` (all if None), as if each had drifted now.

        Used at the end of offline meta-training, so the last task of each key counts."""
        for key in list(self._slot_of) if keys is None else keys:
            s = self._slot_of.get(key)
            if s is not None and self.seg_len[s] > 0:
                self._close_segment(s)

    # ------------------------------------------------------------------ eviction

    def _evict_lru(self, count: int) -> None:
        live = np.array(list(self._slot_of.values()), dtype=np.int64)
        oldest = live[np.argsort(self.last_seen[live], kind="stable")[:count]]
        for s in oldest.tolist():
            key = self._key_of[s]
            self._cold[key] = self._task_state(s)
            self._release(s)
            self._totals.evicted += 1

    def evict_idle(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """Evict keys unseen for ``idle_evict_s``; returns their task states (for the checkpoint).

        The states are also kept compactly by the learner (and saved by :meth:`state_dict`),
        so a key that comes back resumes where it was; :meth:`take_evicted` hands them over
        for good. Called by the runner between batches; never blocks.
        """
        now = self.clock() if now is None else now
        cutoff = now - self.config.idle_evict_s
        gone = {}
        for key, s in list(self._slot_of.items()):
            if self.last_seen[s] < cutoff:
                gone[key] = self._cold[key] = self._task_state(s)
                self._release(s)
                self._totals.evicted += 1
        return gone

    def take_evicted(self) -> dict[str, dict[str, Any]]:
        """Hand over (and forget) the states of evicted keys, once the caller has persisted them."""
        cold, self._cold = self._cold, {}
        return cold

    # ------------------------------------------------------------------ state

    def _task_state(self, s: int) -> dict[str, Any]:
        state: dict[str, Any] = {name: np.copy(self._arrays[name][s]) for name in _FIELDS}
        state["detector"] = self._bank.get_state(s)
        if self.regret.baseline:
            state["baseline"] = {name: np.copy(self._arrays[name][s + 1]) for name in _BASE_FIELDS}
        return state

    def _set_task_state(self, s: int, state: Mapping[str, Any]) -> None:
        for name in _FIELDS:
            self._arrays[name][s] = state[name]
        self._bank.set_state(s, state["detector"])
        if self.regret.baseline:
            base = state.get("baseline")
            if base is None:  # saved without a baseline: start one
                self.theta[s + 1], self.A[s + 1] = self._init, self.config.eps
                self.WM[s + 1], self.wpos[s + 1] = 0.0, 0
            else:
                for name in _BASE_FIELDS:
                    self._arrays[name][s + 1] = base[name]

    def state_dict(self, keys: Collection[str] | None = None) -> dict[str, Any]:
        """Meta-state, totals and the task states of ``keys`` (all if None), plain data."""
        chosen = list(self._slot_of) if keys is None else [k for k in keys if k in self._slot_of]
        cold = self._cold if keys is None else {k: self._cold[k] for k in keys if k in self._cold}
        return {
            "kind": STATE_KIND,
            "version": STATE_VERSION,
            "model": self.describe(),
            "meta": None if self.meta is None else self.meta.to_dict(),
            "totals": self._totals.to_dict(),
            "keys": {**cold, **{k: self._task_state(self._slot_of[k]) for k in chosen}},
            "labels": self.pending.state_dict(keys),
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
        if state["meta"] is not None:
            self.meta = MetaState.from_dict(state["meta"])
        self._totals = _Totals.from_dict(state["totals"])
        for key, task_state in state["keys"].items():
            s = self._slot_of.get(key)
            if s is None:
                s = self._admit(key)
            self._set_task_state(s, task_state)
        self.pending.load_state_dict(state["labels"])

    def forget(self, keys: Collection[str]) -> None:
        for key in keys:
            s = self._slot_of.get(key)
            if s is not None:
                self._release(s)
            self._cold.pop(key, None)
        self.pending.forget(keys)

    def keys(self) -> Collection[str]:
        return self._slot_of.keys()

    def summary(self) -> LearnerSummary:
        tot = self._totals
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
            step_multiplier=self.meta.alpha if self.meta is not None else 1.0,
        )


def _waves(slots: np.ndarray) -> list[np.ndarray]:
    """Record indices per wave: wave j holds the j-th record of each slot, in batch order."""
    n = len(slots)
    by_slot = np.argsort(slots, kind="stable")
    sorted_slots = slots[by_slot]
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(sorted_slots[1:], sorted_slots[:-1], out=first[1:])
    if first.all():
        return [np.arange(n)]
    # Wave of each record = how many earlier records of its key this batch holds.
    run_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    waves = np.empty(n, dtype=np.int64)
    waves[by_slot] = np.arange(n) - run_start
    order = np.argsort(waves, kind="stable")
    bounds = np.searchsorted(waves[order], np.arange(1, waves.max() + 1))
    return np.split(order, bounds)


class _Totals:
    """Running sums behind :meth:`AdaptiveLearner.summary`."""

    _NAMES = ("loss", "n", "recent", "baseline", "hindsight", "hindsight_adaptd", "skipped",
              "meta_updates", "drift_events", "evicted")

    def __init__(self) -> None:
        self.loss = 0.0
        self.n = 0
        self.recent = 0.0
        self.baseline = 0.0
        self.hindsight = 0.0
        self.hindsight_adaptd = 0.0
        self.skipped = 0
        self.meta_updates = 0
        self.drift_events = 0
        self.evicted = 0

    def add_losses(self, losses: np.ndarray) -> None:
        """Add losses in order; ``recent`` is an exponential average (weight 1/n while
        n < PREQUENTIAL_SPAN, so it starts as the plain mean)."""
        i = 0
        while self.n < PREQUENTIAL_SPAN and i < len(losses):
            v = float(losses[i])
            self.n += 1
            self.loss += v
            self.recent += (v - self.recent) / self.n
            i += 1
        losses = losses[i:]
        m = len(losses)
        if not m:
            return
        a = 1.0 / PREQUENTIAL_SPAN
        weights = a * (1.0 - a) ** np.arange(m - 1, -1, -1)
        self.recent = (1.0 - a) ** m * self.recent + float(weights @ losses)
        self.loss += float(losses.sum())
        self.n += m

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._NAMES}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> _Totals:
        t = cls()
        for name in cls._NAMES:
            setattr(t, name, type(getattr(t, name))(state.get(name, getattr(t, name))))
        return t
