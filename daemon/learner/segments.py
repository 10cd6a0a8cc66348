"""Segments: a key's task starts at the meta-state and ends at a drift alarm (or an oracle task
change), when it is folded into the meta-state and the comparator is fitted on it.

On close (:func:`close_segment`): the meta update (:meth:`adaptd.meta.state.MetaState.update`:
Reptile or first-order MAML with the ARUBA statistics) when the segment is long enough, the
hindsight comparator's fit on the segment's buffered records (:mod:`adaptd.regret`), then a new
task at ``θ = θ0``, ``A = G/c`` with an empty window and a fresh detector
(:func:`start_task`), optionally seeded with the last ``drift.carry`` records of the old
window and one inner step on them (:func:`seed_window`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from adaptd.learner.concepts import restart
from adaptd.learner.models import LinearFamily
from adaptd.learner.step import step_rows
from adaptd.regret import hindsight_loss, linear_hindsight_losses

if TYPE_CHECKING:
    from adaptd.learner.adaptive import AdaptiveLearner
    from adaptd.learner.totals import Totals


def start_task(lrn: AdaptiveLearner, s: int | np.ndarray) -> None:
    """Reset slot ``s`` (or the slots ``s``) to a new task at θ0 with A = G/c (its baseline
    row is untouched)."""
    a, meta = lrn.arena, lrn.meta
    assert meta is not None
    a.theta[s] = meta.theta0
    a.A[s] = meta.G / lrn.config.c
    a.WM[s] = 0.0
    a.WL[s] = 0.0
    a.wpos[s] = 0
    a.seg_len[s] = 0
    a.seg_loss[s] = 0.0
    a.gsq[s] = 0.0
    a.u_prev[s] = 0.0
    a.recov[s] = -1
    lrn.bank.reset(np.atleast_1d(s))


def close_segment(lrn: AdaptiveLearner, s: int) -> None:
    """Close slot ``s``'s segment: meta-update, hindsight fit, new task from θ0."""
    a, fam, meta = lrn.arena, lrn.family, lrn.meta
    assert fam is not None and meta is not None
    tot = lrn.totals
    seg_len = int(a.seg_len[s])
    mc = lrn.meta_config
    if mc.enabled and seg_len >= mc.min_segment:
        final_grad = None
        if mc.algorithm == "fomaml":
            final_grad = fam.loss_grad(a.theta[s : s + 1], a.WX[s : s + 1], a.WY[s : s + 1],
                                       a.WM[s : s + 1])[1][0]
        meta.update(mc, a.theta[s].copy(), a.gsq[s].copy(), final_grad)
        tot.meta_updates += 1
    if lrn.regret.hindsight and a.hcount[s]:
        _fit_hindsight(lrn, s)
    a.ref_loss[s] = a.seg_loss[s] / max(seg_len, 1)
    a.seg[s] += 1
    tot.drift_events += 1
    # The oracle closes exactly at the change: nothing in the window belongs to the new task.
    carry = 0 if lrn.drift.detector == "oracle" else lrn.drift.carry
    carried = _latest(lrn, s, carry) if carry else None
    theta_end = a.theta[s].copy()
    start_task(lrn, s)
    if lrn.concepts is not None:
        restart(lrn, s, theta_end, seg_len)
    a.recov[s] = 0
    if carried is not None:
        seed_window(lrn, s, *carried)


def _fit_hindsight(lrn: AdaptiveLearner, s: int) -> None:
    """Add the best fixed model's loss on slot ``s``'s buffered records, and adaptd's own, to
    the hindsight totals; empty the buffer. During a batch whose baselines run on the second
    thread a fit of an MLP or of log loss runs there too, on copies, and is added when the
    batch ends (:meth:`adaptd.learner.shadow.Shadow.later`): nothing reads these totals
    meanwhile, and the sums are the same. A linear regression's fit (one ridge solve, about
    0.1 ms) runs on this thread: handing it over cost more, the thread's Python taking the GIL
    from this one's (16 keys, a drift per 172 records: 0.83× the CPU and less wall time in 3
    of 3 alternating runs of ``benchmarks/engine_batches.py``); in the compiled kernel's
    batches it waits for the batch's end, with the other segments the batch closes
    (:class:`LinearFits`)."""
    a, fam = lrn.arena, lrn.family
    assert fam is not None
    count, buf = int(a.hcount[s]), lrn.regret.buffer
    start = (int(a.hpos[s]) - count) % buf
    # Copies: the buffer refills meanwhile. Oldest first: a slice unless the ring wrapped.
    order: slice | np.ndarray = slice(start, start + count) if start + count <= buf \
        else (start + np.arange(count)) % buf
    X, Y = a.HX[s, order].copy(), a.HY[s, order].copy()
    adaptd = float(a.HL[s, order].sum())
    add = partial(_add_hindsight, lrn.totals, adaptd, lrn.totals.unit)
    linear = isinstance(fam, LinearFamily) and fam.task == "regression"
    if linear and lrn.fits is not None:
        lrn.fits.add(X, Y, a.theta[s].copy(), add)
        a.hcount[s] = 0
        a.hpos[s] = 0
        return
    fit = partial(hindsight_loss, fam, lrn.regret, X, Y, a.theta[s].copy())
    if lrn.side is not None and not linear:
        lrn.side.later(fit, add)
    else:
        add(fit())
    a.hcount[s] = 0
    a.hpos[s] = 0


class LinearFits:
    """The hindsight fits of the linear regression segments a kernel batch closes, made when
    the batch ends (:meth:`done`), stacked by length (:func:`~adaptd.regret.
    linear_hindsight_losses`), and added to the totals in the order the segments closed: the
    same sums as fitting each at its close (nothing reads those totals during a batch), for a
    share of NumPy's per-call cost, and all the less a fit the more segments a batch closes."""

    __slots__ = ("_fits", "_lrn")

    def __init__(self, lrn: AdaptiveLearner) -> None:
        self._lrn = lrn
        self._fits: list[tuple[np.ndarray, np.ndarray, np.ndarray, Callable[[float], None]]] = []

    def add(self, X: np.ndarray, Y: np.ndarray, theta_end: np.ndarray,
            then: Callable[[float], None]) -> None:
        """A closed segment's records (copies), final parameters, and what takes its loss."""
        self._fits.append((X, Y, theta_end, then))

    def done(self) -> None:
        """Fit them all, then hand each loss on in order."""
        fits, self._fits = self._fits, []
        if not fits:
            return
        fam = self._lrn.family
        assert isinstance(fam, LinearFamily)
        by_length: dict[int, list[int]] = {}
        for j, (_, Y, _, _) in enumerate(fits):
            by_length.setdefault(len(Y), []).append(j)
        losses = [0.0] * len(fits)
        for group in by_length.values():
            rows = [fits[j] for j in group]
            if len(rows) == 1:  # (most batches of a few hundred records) views, not copies
                X, Y, theta = rows[0][0][None], rows[0][1][None], rows[0][2][None]
            else:
                X, Y, theta = (np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]),
                               np.stack([r[2] for r in rows]))
            stacked = linear_hindsight_losses(fam, self._lrn.regret, X, Y, theta)
            for j, loss in zip(group, stacked):
                losses[j] = loss
        for (_, _, _, then), loss in zip(fits, losses):
            then(loss)


def _add_hindsight(tot: Totals, adaptd: float, unit: float, fitted: float) -> None:
    """A closed segment's fitted and own losses into the totals (``unit``: back to the user's
    units, for standardized targets)."""
    if math.isfinite(fitted) and math.isfinite(adaptd):
        tot.hindsight += fitted * unit
        tot.hindsight_adaptd += adaptd * unit


def _latest(lrn: AdaptiveLearner, s: int, m: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The ``m`` most recent window entries of slot ``s``, oldest first (or None)."""
    a, k = lrn.arena, lrn.config.window
    wpos, WM = int(a.wpos[s]), a.WM[s]
    # Python's ints: NumPy's calls cost more than the arithmetic on these few positions.
    order = [p for p in ((wpos - 1 - q) % k for q in range(min(m, k))) if WM[p] > 0]
    if not order:
        return None
    order.reverse()
    first = order[0]
    # A slice where the entries are adjacent (one carried record: always), else a gather.
    at: slice | list[int] = slice(first, first + len(order)) \
        if order[-1] - first == len(order) - 1 else order
    return a.WX[s, at].copy(), a.WY[s, at].copy(), a.WL[s, at].copy()


def seed_window(lrn: AdaptiveLearner, s: int, X: np.ndarray, Y: np.ndarray, L: np.ndarray
                ) -> None:
    """Start slot ``s``'s new segment with carried records and one inner step on them."""
    a, fam, meta = lrn.arena, lrn.family, lrn.meta
    assert fam is not None and meta is not None
    m = len(Y)
    a.WX[s, :m], a.WY[s, :m], a.WL[s, :m], a.WM[s, :m] = X, Y, L, 1.0
    a.wpos[s] = m % lrn.config.window
    with np.errstate(all="ignore"):
        _, g = fam.loss_grad(a.theta[s : s + 1], a.WX[s : s + 1], a.WY[s : s + 1],
                             a.WM[s : s + 1])
    theta, A = a.theta[s : s + 1].copy(), a.A[s : s + 1].copy()
    if step_rows(theta, A, g, meta.B, meta.B, 1, lrn.config.c, meta.alpha)[0]:
        a.theta[s], a.A[s] = theta[0], A[0]
        a.gsq[s] += g[0] * g[0]
