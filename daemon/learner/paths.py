"""The two ways a batch goes through the engine, with the same rules and the same results.

- :func:`run_kernel`: the compiled record loop (:mod:`adaptd.learner.kernel`) for the
  built-in families, records in arrival order, back to Python only for drift alarms and oracle
  task changes.
- :func:`run_waves`: any family (a user ``nn.Module``), any detector (ADWIN, KSWIN), the
  hypergradient. Wave j holds the j-th record of every key present in the batch, so a wave has
  each key at most once and the keys' records stay strictly in order across waves. One wave is
  one batched step: a gather of the keys' rows, closed-form (or autograd) predictions and
  support-window gradients for all of them at once (:mod:`adaptd.learner.models`), the inner
  step (:func:`adaptd.learner.step.step_rows`, the kernel's own), a scatter back. With many
  interleaved keys a wave covers hundreds of records; with one key each wave is one record and
  NumPy's per-call overhead dominates (see ``benchmarks/engine_speed.py``).

Both give the same results record for record with one key, or with many keys while the
meta-state is frozen; with meta-learning on, waves reorder records *across* keys, so a segment
close may reach another key's step one record earlier or later.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from adaptd.drift import PageHinkleyBank, PHParams, PHState
from adaptd.learner import Outcomes, kernel, shadow
from adaptd.learner.arena import kernel_arrays
from adaptd.learner.concepts import PROBE, REUSE_RATIO, probe_due, reconsider
from adaptd.learner.jit import read_only
from adaptd.learner.models import Family, multiclass_loss, pointwise_loss
from adaptd.learner.segments import LinearFits, close_segment
from adaptd.learner.step import step_rows, unscaled_steps
from adaptd.learner.totals import gather_runs
from adaptd.settings import DriftConfig

if TYPE_CHECKING:
    from adaptd.learner.adaptive import AdaptiveLearner
    from adaptd.learner.totals import Totals

#: A recovery not reached after this many records of a new segment is given up on.
RECOVERY_HORIZON = 1000
# What the kernel is given when the detector is not Page-Hinkley (it does not read them).
_NO_PH = (PHState.empty(1), PHParams.of(DriftConfig()))


def run_kernel(lrn: AdaptiveLearner, slots: np.ndarray, X: np.ndarray, ys: np.ndarray,
               tasks: np.ndarray | None, out: Outcomes, unit: np.ndarray | None = None) -> None:
    """The whole batch through the compiled kernel, handling its events in Python.

    ``unit`` (n,): each record's factor from the kernel's losses to the user's units, for
    regression targets standardized with statistics that change within the batch
    (:func:`adaptd.learner.scaling.run_standardized`); None: ``lrn.totals.unit`` for all."""
    n = len(slots)
    tot = lrn.totals
    units = np.full(n, tot.unit) if unit is None else unit
    batch = kernel.Batch(slots, read_only(X), ys, ~np.isnan(ys),
                         tasks if tasks is not None else np.full(n, -1, dtype=np.int64), units)
    bank = lrn.bank
    ph_state, ph_params = (bank.state, bank.params) if isinstance(bank, PageHinkleyBank) \
        else _NO_PH
    acc = np.zeros(5)
    K = lrn.net.classes
    if K:
        out.probas = np.zeros((n, K))
    result = kernel.Out(out.y_pred, out.loss, out.learned, out.segment, out.recovered_after, acc,
                        out.probas if K else _NO_PROBAS, np.empty(n, dtype=np.int64),
                        np.empty(n))
    unit_before = tot.unit
    tot.unit = 1.0  # the kernel's sums and the losses below are converted record by record
    # The baseline rows (and segments' hindsight fits) on the second thread meanwhile, when
    # they go there (see shadow).
    par = _params(lrn, tasks is not None)
    side = shadow.Shadow(lrn, batch, par) if shadow.wanted(lrn, batch.labelled) else None
    lrn.side = side
    fits = lrn.fits = LinearFits(lrn)  # the segments' hindsight fits, when the batch ends
    try:
        _events(lrn, batch, result, units, tasks is not None, ph_state, ph_params, out,
                side)
        lrn.fits = None
        fits.done()  # while the second thread may still run the baselines
        if side is not None:
            side.join(tot)
            side = None
    finally:
        lrn.side = lrn.fits = None
        if side is not None:  # failed: the thread must be done with the arena all the same
            side.join(None)
        tot.unit = unit_before
        # Failed: the segments closed before are fitted all the same, as when each was at its
        # close (from copies: the arena is not read). Done already otherwise.
        fits.done()


def _events(lrn: AdaptiveLearner, batch: kernel.Batch, result: kernel.Out,
            units: np.ndarray, oracle: bool, ph_state: PHState, ph_params: PHParams,
            out: Outcomes, side: shadow.Shadow | None) -> None:
    """Run the kernel from record 0, handling each event it stops at, until the batch ends
    (the baseline rows too, unless ``side`` runs them).

    The totals add the records of each stretch the kernel ran (from a call's start or a cut,
    to the next cut, event or the end: see :class:`adaptd.learner.kernel.Out`) in one go, as
    when each probe was a return to Python: an exponential average and a sum added per
    stretch have the bits of their stretches."""
    tot, slots, acc = lrn.totals, batch.slots, result.acc
    # The kernel's arguments as plain tuples, built once: nothing an event does replaces the
    # arrays in them but the meta-state's (a segment close: ``par`` is built again then) and
    # the library's (a close may store a state: ``lib`` too).
    args = (tuple(batch), kernel_arrays(lrn.arena))
    rest = (tuple(lrn.net), tuple(ph_state), tuple(ph_params), tuple(result), lrn.scratch)
    lib = _library(lrn, len(slots))  # (before _params: it reads the library's misfits)
    par = tuple(_params(lrn, oracle, side is None))
    i = 0
    while True:
        acc[:] = 0.0
        end, event = kernel.process(i, *args, par, *rest, lib)
        stop = end if event == kernel.EVENT_TASK_CHANGE else end + 1
        tot.skipped += int(acc[0])
        if acc[2] or acc[3]:
            assert lrn.concepts is not None
            tot.concept_reuses += int(acc[2])
            lrn.concepts.take_moves(int(acc[3]))
        _add_stretches(tot, result, units, i, stop, side)
        if event == kernel.EVENT_NONE:
            return
        s = int(slots[end])
        if event == kernel.EVENT_PROBE:
            reconsider(lrn, s)
            i = end + 1
            continue
        tot.unit = float(units[end])  # a segment's hindsight totals, in the user's units
        try:
            close_segment(lrn, s)
        finally:
            tot.unit = 1.0
        out.drift[end] = True
        lib = _library(lrn, len(slots))
        par = tuple(_params(lrn, oracle, side is None))
        if event == kernel.EVENT_TASK_CHANGE:
            lrn.arena.task_of[s] = batch.tasks[end]
            i = end
        else:
            i = end + 1


def _add_stretches(tot: Totals, result: kernel.Out, units: np.ndarray, lo: int, stop: int,
                   side: shadow.Shadow | None) -> None:
    """The records ``lo … stop − 1`` of a kernel call into the totals, stretch by stretch
    (see :func:`_events`): the keys' losses (in the user's units) and the baselines' sums
    (or, when ``side`` runs the baselines, the ranges for it)."""
    n_cuts = int(result.acc[4])
    ends = np.empty(n_cuts + 1, dtype=np.int64)
    ends[:n_cuts] = result.cuts[:n_cuts]
    ends[:n_cuts] += 1
    ends[n_cuts] = stop
    if side is None:
        for base in result.cut_base[:n_cuts].tolist():
            tot.add_baseline(base)
        tot.add_baseline(float(result.acc[1]))
    else:  # added after the batch, in this order (Shadow.join)
        bounds = ends.tolist()
        side.calls.extend(zip([lo, *bounds[:-1]], bounds))
    values = np.empty(max(stop - lo, 0))
    lengths = np.empty(n_cuts + 1, dtype=np.int64)
    sums = np.empty(n_cuts + 1)
    if gather_runs(result.learned, result.loss, units, lo, ends, values, lengths, sums):
        tot.add_runs(values, lengths, sums)


def _library(lrn: AdaptiveLearner, n: int) -> tuple[np.ndarray, ...]:
    """The concept library's arrays for the kernel (placeholders when reuse is off)."""
    if lrn.concepts is None:
        return _NO_LIBRARY
    assert lrn.family is not None
    return tuple(lrn.concepts.arrays(len(lrn.arena.theta), lrn.family.n_params, n))


_NO_LIBRARY = (np.full(0, -1, dtype=np.int64), np.zeros(0, dtype=np.int64),
               np.empty((0, 0, 0)), np.full(0, -1, dtype=np.int64), np.empty(0, dtype=np.int64))
_NO_PROBAS = np.empty((0, 0))


def _params(lrn: AdaptiveLearner, oracle: bool, baseline: bool = True) -> kernel.Params:
    """The kernel's options; read again after each event (a segment close moves B).
    ``baseline`` false: the baseline rows are left to the shadow thread."""
    meta = lrn.meta
    assert meta is not None
    lib = lrn.concepts
    return kernel.Params(meta.B, lrn.B_base, float(lrn.config.c), float(meta.alpha),
                         bool(lrn.regret.baseline and baseline),
                         int(lrn.regret.baseline_window), oracle,
                         isinstance(lrn.bank, PageHinkleyBank), int(lrn.drift.warmup),
                         RECOVERY_HORIZON, PROBE if lib is not None else 0,
                         lib is not None and not lib.misfits, REUSE_RATIO[lrn.task])


def wave_indices(slots: np.ndarray) -> list[np.ndarray]:
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


def run_waves(lrn: AdaptiveLearner, slots: np.ndarray, X: np.ndarray, ys: np.ndarray,
              tasks: np.ndarray | None, out: Outcomes) -> None:
    """The whole batch as waves (see the module docstring)."""
    if lrn.classes is not None:
        out.probas = np.zeros((len(slots), len(lrn.classes)))
    for idx in wave_indices(slots):
        _wave(lrn, idx, slots[idx], X, ys, tasks, out)
        if lrn.concepts is not None:  # each key is at most once in a wave: the kernel's record
            for s in probe_due(lrn, slots[idx]).tolist():
                reconsider(lrn, s)


class _Rows(NamedTuple):
    """A wave's labelled rows: the keys' (``n_main`` of them), then their baselines'."""

    rows: np.ndarray
    x: np.ndarray
    y: np.ndarray
    loss: np.ndarray  # prequential
    slots: np.ndarray  # the keys' main rows (n_main,)
    records: np.ndarray  # their records' indices in the batch (n_main,)
    n_main: int


def _wave(lrn: AdaptiveLearner, idx: np.ndarray, s: np.ndarray, X: np.ndarray, ys: np.ndarray,
          tasks: np.ndarray | None, out: Outcomes) -> None:
    """One batched step over records ``idx`` (distinct keys, main rows ``s``)."""
    if tasks is not None:  # oracle: a change of the task field closes the segment first
        _task_changes(lrn, idx, s, tasks, out)
    out.segment[idx] = lrn.arena.seg[s]
    rows = _predict(lrn, idx, s, X[idx], ys[idx], out)
    if rows is None:
        return
    g, u, ok = _step(lrn, rows)
    _account(lrn, rows, g, u, ok, X, ys, out)


def _task_changes(lrn: AdaptiveLearner, idx: np.ndarray, s: np.ndarray, tasks: np.ndarray,
                  out: Outcomes) -> None:
    t = tasks[idx]
    prev = lrn.arena.task_of[s]
    change = (t >= 0) & (prev >= 0) & (t != prev)
    if change.any():
        for j in np.flatnonzero(change).tolist():
            close_segment(lrn, int(s[j]))
            out.drift[idx[j]] = True
    known = t >= 0
    lrn.arena.task_of[s[known]] = t[known]


def _predict(lrn: AdaptiveLearner, idx: np.ndarray, s: np.ndarray, Xw: np.ndarray,
             y: np.ndarray, out: Outcomes) -> _Rows | None:
    """Predict every record of the wave; the labelled rows to learn from (None if none)."""
    fam, theta = lrn.family, lrn.arena.theta
    assert fam is not None
    lab = ~np.isnan(y)
    nl = int(lab.sum())
    if nl == 0:
        _emit(out, idx, _outputs(fam, theta.take(s, 0), Xw))
        return None
    all_lab = nl == len(s)
    sl = s if all_lab else s[lab]
    il = idx if all_lab else idx[lab]
    xl = Xw if all_lab else Xw[lab]
    yl = y if all_lab else y[lab]
    K = len(s)
    if lrn.regret.baseline:
        # Prediction rows: every record's key, then the baseline rows of the labelled ones.
        pred = _outputs(fam, theta.take(np.concatenate([s, sl + 1]), 0),
                        np.concatenate([Xw, xl]))
        lrows = np.concatenate([sl, sl + 1])
        ly = np.concatenate([yl, yl])
        lx = np.concatenate([xl, xl])
        lpred = np.concatenate([pred[:K] if all_lab else pred[:K][lab], pred[K:]])
    else:
        pred = _outputs(fam, theta.take(s, 0), Xw)
        lrows, ly, lx = sl, yl, xl
        lpred = pred if all_lab else pred[lab]
    _emit(out, idx, pred[:K])
    loss = multiclass_loss(lpred, ly) if out.probas is not None else \
        pointwise_loss(lrn.task, lpred, ly)
    return _Rows(lrows, lx, ly, loss, sl, il, nl)


def _outputs(fam: Family, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Each row's output for its record ``X`` ``(R, d)``: ``(R,)``, or ``(R, K)`` class
    probabilities for a multi-class family."""
    return fam.forward(theta, X[:, None, :])[:, 0]


def _emit(out: Outcomes, idx: np.ndarray, pred: np.ndarray) -> None:
    """Predictions of records ``idx``: the outputs, or the most probable classes and their
    probabilities."""
    if out.probas is None:
        out.y_pred[idx] = pred
    else:
        out.y_pred[idx] = pred.argmax(axis=1)
        out.probas[idx] = pred


def _step(lrn: AdaptiveLearner, r: _Rows) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Append each row's record to its window and take the inner step; scatter the rows that
    stay finite back into the arena. Returns the gradients ``(R, P)``, the unscaled steps of
    the main rows (hypergradient only) and which rows stepped ``(R,)``."""
    a, fam, meta, cfg = lrn.arena, lrn.family, lrn.meta, lrn.config
    assert fam is not None and meta is not None
    # Append to gathered copies of the windows; the arena changes only for rows whose update
    # turns out finite.
    pos = a.wpos.take(r.rows)
    R = np.arange(len(r.rows))
    WX, WY, WM = a.WX.take(r.rows, 0), a.WY.take(r.rows, 0), a.WM.take(r.rows, 0)
    WX[R, pos] = r.x
    WY[R, pos] = r.y
    WM[R, pos] = 1.0
    th = a.theta.take(r.rows, 0)
    _, g = fam.loss_grad(th, WX, WY, WM)
    A = a.A.take(r.rows, 0)
    ok = step_rows(th, A, g, meta.B, lrn.B_base, r.n_main, cfg.c, meta.alpha)
    u = unscaled_steps(A[: r.n_main], g[: r.n_main], meta.B) if cfg.hypergradient else None
    ok &= np.isfinite(r.loss)
    keep = ok if not ok.all() else slice(None)
    rows, pos = r.rows[keep], pos[keep]
    a.theta[rows] = th[keep]
    a.A[rows] = A[keep]
    a.WX[rows, pos] = r.x[keep]
    a.WY[rows, pos] = r.y[keep]
    a.WM[rows, pos] = 1.0
    # Rows are the keys' (window k) then their baselines' (regret.baseline_window).
    modulus: np.ndarray | int = cfg.window if not lrn.regret.baseline else np.where(
        rows % 2 == 0, cfg.window, lrn.regret.baseline_window)
    a.wpos[rows] = (pos + 1) % modulus
    return g, u, ok


def _account(lrn: AdaptiveLearner, r: _Rows, g: np.ndarray, u: np.ndarray | None,
             ok: np.ndarray, X: np.ndarray, ys: np.ndarray, out: Outcomes) -> None:
    """Outputs, totals, hypergradient, hindsight buffer, recovery and drift for the main rows
    that stepped."""
    a, tot, nl = lrn.arena, lrn.totals, r.n_main
    okm = ok[:nl]
    if okm.all():
        sm, lm, im, gm = r.slots, r.loss[:nl], r.records, g[:nl]
    else:
        tot.skipped += int((~okm).sum())
        sm, lm, im, gm = r.slots[okm], r.loss[:nl][okm], r.records[okm], g[:nl][okm]
    a.WL[sm, (a.wpos[sm] - 1) % lrn.config.window] = lm  # where _step just wrote
    out.loss[im] = lm
    out.learned[im] = True
    tot.add_losses(lm)
    if lrn.regret.baseline:
        tot.add_baseline(float(r.loss[nl:][ok[nl:]].sum()))
    a.gsq[sm] += gm * gm
    a.seg_len[sm] += 1
    a.seg_loss[sm] += lm
    if u is not None and len(sm):
        # Baydin et al. 2018: dL/dα = −g_t · u_{t−1}, so α ← α + β_h·g_t·u_{t−1}.
        meta = lrn.meta
        assert meta is not None
        hyper = float(np.einsum("rp,rp->r", gm, a.u_prev[sm]).mean())
        if math.isfinite(hyper):
            step = lrn.config.hypergradient_lr
            meta.alpha = min(max(meta.alpha + step * hyper, 0.05), 20.0)
        a.u_prev[sm] = u[okm]
    if lrn.regret.hindsight and len(sm):
        buf = lrn.regret.buffer
        hp = a.hpos[sm]
        a.HX[sm, hp] = X[im]
        a.HY[sm, hp] = ys[im]
        a.HL[sm, hp] = lm
        a.hpos[sm] = (hp + 1) % buf
        a.hcount[sm] = np.minimum(a.hcount[sm] + 1, buf)
    _track_recovery(lrn, sm, im, out)
    _detect(lrn, sm, lm, im, out)


def _track_recovery(lrn: AdaptiveLearner, sm: np.ndarray, im: np.ndarray, out: Outcomes
                    ) -> None:
    """Samples to recover: records after a reset until the mean loss over the support window
    is back at or below the closed segment's mean loss."""
    a = lrn.arena
    rec = a.recov[sm] >= 0
    if not rec.any():
        return
    sr, ir = sm[rec], im[rec]
    count = a.recov[sr] + 1
    wm = a.WM[sr]
    mean = (a.WL[sr] * wm).sum(axis=1) / np.maximum(wm.sum(axis=1), 1.0)
    done = mean <= a.ref_loss[sr]
    out.recovered_after[ir[done]] = count[done]
    count[done | (count >= RECOVERY_HORIZON)] = -1
    a.recov[sr] = count


def _detect(lrn: AdaptiveLearner, sm: np.ndarray, lm: np.ndarray, im: np.ndarray,
            out: Outcomes) -> None:
    """Feed the losses of keys past their segment's warm-up to the detector; close the
    segments that alarm."""
    if lrn.drift.detector in ("oracle", "none") or not len(sm):
        return
    seg_len = lrn.arena.seg_len[sm]
    if seg_len.min() <= lrn.drift.warmup:
        watch = seg_len > lrn.drift.warmup
        if not watch.any():
            return
        sm, lm, im = sm[watch], lm[watch], im[watch]
    alarms = lrn.bank.update(sm, lm)
    if alarms.any():
        for slot, row in zip(sm[alarms].tolist(), im[alarms].tolist()):
            close_segment(lrn, slot)
            out.drift[row] = True
