"""The compiled record loop for the built-in families (Numba).

The batched waves of :mod:`adaptd.learner.waves` pay NumPy's per-call overhead (about 60
calls per step, 1-3 µs each here) once per wave, which is once per *record* when a batch holds
one key. For the built-in families (linear, logistic, MLP) the whole record path — predict,
loss, support-window gradient (:mod:`adaptd.learner.network`), the inner step for the key and
its baseline row (:mod:`adaptd.learner.step`), recovery tracking, Page-Hinkley
(:func:`adaptd.drift.ph_update`) — runs here record by record in arrival order, on the same
compiled pieces the other paths call. It stops at each event that needs Python (a drift alarm,
an oracle task change) and the learner resumes it after handling the event. The keys' shadow
baseline rows can instead run apart, for a whole batch on a second thread
(:func:`process_shadow`, :mod:`adaptd.learner.shadow`).

State comes in as a few named tuples of arrays: the :class:`~adaptd.learner.arena.Arena`,
the batch (:class:`Batch`), the options (:class:`Params`, :class:`~adaptd.learner.network.Net`),
the detector (:class:`~adaptd.drift.PHState`, :class:`~adaptd.drift.PHParams`) and the
outputs (:class:`Out`).

Used when the family is a built-in one, the detector is ``page_hinkley``, ``oracle`` or
``none``, and the hypergradient is off; otherwise the wave path runs.
``tests/unit/test_learner.py`` checks that both paths give the same results.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from adaptd.drift import PHParams, PHState, ph_update
from adaptd.learner.arena import Arena
from adaptd.learner.jit import njit
from adaptd.learner.lanes import LANES
from adaptd.learner.network import Net, class_loss, loss, predict, predict_classes
from adaptd.learner.reuse import Library, probe
from adaptd.learner.step import step_row, undo_row
from adaptd.learner.window import window_grad

#: Event codes returned with the index of the record that raised them.
EVENT_NONE = 0
EVENT_TASK_CHANGE = 1  # oracle: close the segment *before* this record
EVENT_ALARM = 2  # detector alarm raised by this record: close the segment after it
EVENT_PROBE = 3  # this record's segment is due a concept probe (adaptd.learner.concepts)
# (returned only when Params.probe_here is off: the kernel probes itself otherwise)


class Batch(NamedTuple):
    slots: np.ndarray  # (n,) int64: each record's main row
    X: np.ndarray  # (n, d)
    Y: np.ndarray  # (n,), NaN where unlabelled
    labelled: np.ndarray  # (n,) bool
    tasks: np.ndarray  # (n,) int64, −1 where unknown (read by the oracle only)
    unit: np.ndarray  # (n,) factor from a record's losses to the user's units (see scaling)


class Params(NamedTuple):
    B: np.ndarray  # (P,) the meta-state's B
    B_base: np.ndarray  # (P,) lr², the baseline's B
    c: float
    alpha: float
    baseline: bool  # rows s + 1 are the keys' shadow baselines
    base_window: int
    oracle: bool
    ph_on: bool
    warmup: int
    horizon: int  # recovery given up after this many records
    probe: int  # a post-alarm segment is probed at each of its first `probe` records
    probe_here: bool  # ... by the kernel (adaptd.learner.reuse), else by returning EVENT_PROBE
    reuse_ratio: float  # the probe's ratio (adaptd.learner.concepts.REUSE_RATIO)


class Out(NamedTuple):
    """The batch's :class:`~adaptd.learner.Outcomes` columns, and ``acc`` = [skipped updates,
    summed baseline loss, concept reuses, slots moved (``Library.moved``), cuts] of this call.

    A cut is a probe the kernel ran itself: the record ``cuts[j]`` after which it would have
    returned EVENT_PROBE, and ``cut_base[j]`` the baseline's loss summed since the previous
    cut (``acc[1]`` then restarts). The learner's totals add each stretch between cuts as it
    added each call's records, so they keep their bits (see :mod:`adaptd.learner.paths`)."""

    y_pred: np.ndarray
    loss: np.ndarray
    learned: np.ndarray
    segment: np.ndarray
    recovered: np.ndarray
    acc: np.ndarray
    probas: np.ndarray  # (n, K) multi-class probabilities ((n, 0) otherwise)
    cuts: np.ndarray  # (n,) int64
    cut_base: np.ndarray  # (n,)


class Scratch(NamedTuple):
    acts: np.ndarray  # (layers, width) activations
    delta: np.ndarray
    delta_next: np.ndarray
    g: np.ndarray  # (P,) gradient
    old: np.ndarray  # (3, P) a row's θ, A, Σ g² before a step (see step.step_row)
    old_x: np.ndarray  # the window entry an append overwrote, for a skipped step
    old_ym: np.ndarray  # its label and mask
    window: np.ndarray  # (k,)
    zs: np.ndarray  # (width,) the output layer's values: logits, then probabilities
    lanes: np.ndarray  # (layers, width·LANES) several window entries' activations, lanes innermost
    lane_zs: np.ndarray  # (width·LANES,) and their outputs
    members: np.ndarray  # (LANES,) int64: the window position of each lane
    lane_delta: np.ndarray  # (width·LANES,) their errors at a layer's outputs
    lane_next: np.ndarray  # (width·LANES,) and the products that give the layer below's
    entry_acts: np.ndarray  # (k, layers, width) each window entry's input to each layer
    entry_zs: np.ndarray  # (k, width) its outputs
    entry_delta: np.ndarray  # (k, layers, width) its error at each layer's outputs


def scratch(L_out: np.ndarray, d: int, k: int, P: int) -> Scratch:
    """Working arrays for :func:`process` (whose contents do not outlive a record)."""
    width = max(d, int(L_out.max()))
    layers = L_out.shape[0]
    return Scratch(np.empty((layers, width)), np.empty(width), np.empty(width),
                   np.empty(P), np.empty((3, P)), np.empty(d), np.empty(2), np.empty(k),
                   np.empty(width), np.zeros((layers, width * LANES)),
                   np.zeros(width * LANES), np.zeros(LANES, dtype=np.int64),
                   np.zeros(width * LANES), np.zeros(width * LANES),
                   np.empty((k, layers, width)), np.empty((k, width)),
                   np.empty((k, layers, width)))


@njit(nogil=True, refcounts=False)
def process(i0, b, ar, par, net, ph, php, out, sc, lib):  # type: ignore[no-untyped-def]
    """Process records ``i0 …`` until the end or an event; returns ``(index, event)``.

    Takes the named tuples as plain tuples (``tuple(batch)``, the arena as
    :func:`~adaptd.learner.arena.kernel_arrays` gives it: ``HY``, ``HL`` as ``(h, rows)``, …)
    and names them again here:
    Numba's dispatcher types a plain tuple in C but a named tuple in Python, about 1 µs per
    array, 25 µs per call for these. ``lib``: the concept library's arrays
    (:class:`~adaptd.learner.reuse.Library`), read when ``par.probe_here``."""
    return _process(i0, Batch(*b), Arena(*ar), Params(*par), Net(*net), PHState(*ph),
                    PHParams(*php), Out(*out), Scratch(*sc), Library(*lib))


@njit(refcounts=False)
def _process(i0, b, ar, par, net, ph, php, out, sc, lib):  # type: ignore[no-untyped-def]
    n = b.slots.shape[0]
    for i in range(i0, n):
        s = b.slots[i]
        if par.oracle and b.tasks[i] >= 0:
            if ar.task_of[s] >= 0 and ar.task_of[s] != b.tasks[i]:
                return i, EVENT_TASK_CHANGE
            ar.task_of[s] = b.tasks[i]
        out.segment[i] = ar.seg[s]
        yp = _predict(ar, s, b, i, net, sc)
        if net.classes:  # the class index is the prediction; its probabilities go out too
            for u in range(net.classes):
                out.probas[i, u] = sc.zs[u]
        out.y_pred[i] = yp
        if not b.labelled[i]:
            continue
        ok, main_loss = _learn_row(i, s, yp, True, b, ar, par, net, sc)
        if par.baseline:
            yb = _predict(ar, s + 1, b, i, net, sc)
            ok_b, base_loss = _learn_row(i, s + 1, yb, False, b, ar, par, net, sc)
            if ok_b:
                out.acc[1] += base_loss * b.unit[i]
        if not ok:
            out.acc[0] += 1.0
            continue
        _account(i, s, main_loss, b, ar, par, out)
        if (par.ph_on and ar.seg_len[s] > par.warmup and not ph.alarm[s]
                and ph_update(ph, php, s, main_loss)):
            return i, EVENT_ALARM
        if _probe_due(ar, par, s):
            if not par.probe_here:
                return i, EVENT_PROBE
            c = int(out.acc[4])
            out.cuts[c] = i
            out.cut_base[c] = out.acc[1]
            out.acc[1] = 0.0
            out.acc[4] += 1.0
            probe(s, ar, lib, par.reuse_ratio, net, sc.acts, sc.zs, sc.window, out.acc)
    return n, EVENT_NONE


@njit(nogil=True, refcounts=False)
def process_shadow(b, ar, par, net, losses, sc):  # type: ignore[no-untyped-def]
    """The shadow baseline rows' share of :func:`process`, for the whole batch at once: each
    labelled record ``i`` predicted and learned on row ``slots[i] + 1``, in order, its loss
    (times ``unit[i]``) in ``losses[i]``, NaN where the row did not step (or the record is
    unlabelled). Called with ``par.baseline`` off in :func:`process` (see
    :mod:`adaptd.learner.shadow`): a baseline row reads and writes only itself and the
    batch, never the key's row or anything an event changes, so the rows end as they would."""
    _process_shadow(Batch(*b), Arena(*ar), Params(*par), Net(*net), losses, Scratch(*sc))


@njit(refcounts=False)
def _process_shadow(b, ar, par, net, losses, sc):  # type: ignore[no-untyped-def]
    for i in range(b.slots.shape[0]):
        losses[i] = np.nan
        if not b.labelled[i]:
            continue
        r = b.slots[i] + 1
        yb = _predict(ar, r, b, i, net, sc)
        ok_b, base_loss = _learn_row(i, r, yb, False, b, ar, par, net, sc)
        if ok_b:  # finite (a stepped row's loss is), so NaN marks only the others
            losses[i] = base_loss * b.unit[i]


@njit()
def shadow_sum(losses, lo, hi):  # type: ignore[no-untyped-def]
    """``out.acc[1]`` of a :func:`process` call over records ``lo … hi − 1`` with the baseline
    on: the stepped rows' losses added in record order (the same bits)."""
    acc = 0.0
    for i in range(lo, min(hi, losses.shape[0])):  # the last call's range ends one past n
        if not math.isnan(losses[i]):
            acc += losses[i]
    return acc


@njit(inline=True)
def _probe_due(ar, par, s):  # type: ignore[no-untyped-def]
    """Slot ``s``'s segment after an alarm is within its first ``par.probe`` records: the
    concept library's choice is made now, at this record, whatever the batch size."""
    return ar.seg_len[s] <= par.probe and ar.seg[s] > 0


@njit(inline=True)
def _predict(ar, r, b, i, net, sc):  # type: ignore[no-untyped-def]
    """Row ``r``'s prediction for record ``i``: the value, P(y = 1), or (multi-class) the most
    probable class with the probabilities left in ``sc.zs``."""
    if net.classes:
        return float(predict_classes(ar.theta, r, b.X, i, sc.acts, net, sc.zs))
    return predict(ar.theta, r, b.X, i, sc.acts, net, sc.zs)


@njit(inline=True)
def _learn_row(i, r, yp, main, b, ar, par, net, sc):  # type: ignore[no-untyped-def]
    """Learn record ``i`` on row ``r`` (the key's, ``main``, or its baseline's), predicted
    ``yp``: append it to the window, take the step. Returns ``(stepped, loss)``; a
    non-finite loss or step leaves the row as it was."""
    y = b.Y[i]
    value = class_loss(sc.zs, y) if net.classes else loss(yp, y, net.logistic)
    kk = ar.WX.shape[1] if main else par.base_window
    # The shadow baseline's default one-record window: the gradient is the record's own, the
    # sum the window path takes (0.0 + ...: the same bits, signed zeros included), with
    # nothing stored (its window is never read back).
    windowed = main or not (kk == 1 and net.single)
    pos = ar.wpos[r]
    g = sc.g
    if windowed:
        _append(ar, r, pos, b.X, i, y, sc)
        window_grad(ar.theta, r, ar.WX, ar.WY, ar.WM, kk, net, g, pos, yp, sc)
    else:
        e = yp - y if net.logistic else 2.0 * (yp - y)
        d = b.X.shape[1]
        for j in range(d):
            g[j] = 0.0 + e * b.X[i, j]
        g[d] = 0.0 + e
    # A non-finite loss rejects the step whatever it is: not computed. A key's row adds g² to
    # its segment's Σ g² in the step's pass (the baseline's is not kept).
    if main:
        stepped = math.isfinite(value) and step_row(ar.theta, ar.A, r, g, par.B, par.c,
                                                    par.alpha, sc.old, ar.gsq)
        if not stepped and math.isfinite(value):
            undo_row(ar.theta, ar.A, r, sc.old, ar.gsq)
    else:
        stepped = math.isfinite(value) and step_row(ar.theta, ar.A, r, g, par.B_base, par.c,
                                                    1.0, sc.old)
        if not stepped and math.isfinite(value):
            undo_row(ar.theta, ar.A, r, sc.old)
    if not stepped:
        if windowed:
            _restore(ar, r, pos, sc)
        return False, value
    if windowed:
        ar.wpos[r] = (pos + 1) % kk
    if main:
        ar.WL[r, pos] = value
    return True, value


@njit(inline=True)
def _append(ar, r, pos, X, i, y, sc):  # type: ignore[no-untyped-def]
    """Write record ``X[i]``, ``y`` at window position ``pos``, keeping what it overwrites in
    ``sc``."""
    for j in range(X.shape[1]):
        sc.old_x[j] = ar.WX[r, pos, j]
        ar.WX[r, pos, j] = X[i, j]
    sc.old_ym[0] = ar.WY[r, pos]
    sc.old_ym[1] = ar.WM[r, pos]
    ar.WY[r, pos] = y
    ar.WM[r, pos] = 1.0


@njit(inline=True)
def _restore(ar, r, pos, sc):  # type: ignore[no-untyped-def]
    """Undo :func:`_append` (the step was skipped)."""
    for j in range(sc.old_x.shape[0]):
        ar.WX[r, pos, j] = sc.old_x[j]
    ar.WY[r, pos] = sc.old_ym[0]
    ar.WM[r, pos] = sc.old_ym[1]


@njit(inline=True)
def _account(i, s, value, b, ar, par, out):  # type: ignore[no-untyped-def]
    """After slot ``s`` learned record ``i``: outputs, hindsight buffer, segment totals, and
    samples to recover (records since the reset until the window's mean loss is back at or
    below the closed segment's)."""
    out.loss[i] = value
    out.learned[i] = True
    hsize = ar.HY.shape[0]  # (h, rows): see arena.kernel_arrays
    if hsize:
        hp = ar.hpos[s]
        for j in range(b.X.shape[1]):
            ar.HX[s, hp, j] = b.X[i, j]
        ar.HY[hp, s] = b.Y[i]
        ar.HL[hp, s] = value
        ar.hpos[s] = (hp + 1) % hsize
        ar.hcount[s] = min(ar.hcount[s] + 1, hsize)
    ar.seg_len[s] += 1
    ar.seg_loss[s] += value
    if ar.recov[s] < 0:
        return
    cnt = ar.recov[s] + 1
    wsum = 0.0
    wcount = 0.0
    for m in range(ar.WX.shape[1]):
        wsum += ar.WL[s, m] * ar.WM[s, m]
        wcount += ar.WM[s, m]
    if wsum / max(wcount, 1.0) <= ar.ref_loss[s]:
        out.recovered[i] = cnt
        ar.recov[s] = -1
    elif cnt >= par.horizon:
        ar.recov[s] = -1
    else:
        ar.recov[s] = cnt
