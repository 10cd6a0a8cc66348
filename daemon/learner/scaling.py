"""Online standardization of features and regression targets, shared by every key and task.

The model family sees ``(x − mean) / std`` per feature and, for regression, learns
``(y − mean_y) / std_y``; its output is mapped back to the user's units. The statistics are
running means and variances (Welford 1962, "Note on a method for calculating corrected sums of
squares and products", Technometrics 4(3); merged per chunk with Chan, Golub, LeVeque 1979's
pairwise update).

What is shared and why: one :class:`Standardizer` per learner, across keys and across tasks,
saved once with the meta-state in the shared part of a checkpoint. It is *not* reset at a
drift alarm. A meta-learned θ0 is a function of standardized inputs: it means the same thing in
every task only if every task standardizes with the same statistics; per-key or per-task
statistics would also restart from nothing at every reset, exactly when a new task has the
fewest records (the bench's ChickWeights measured shared statistics at a third of per-key ones).

When statistics are taken (what leaks what):

- features: per record, the statistics of every record up to and including it — features are
  known at prediction time, so nothing about a label leaks (river's ``StandardScaler`` order);
- targets: prediction and learning use statistics frozen per block of the stream (1, 2, 4, …,
  16 records, then every 16: :func:`chunks`; 16 rather than 64 because a level shift is then
  learned unclipped within 16 records: WaterFlow MSE 82 against 110 with 64), from the records *before* the block, so a
  record's label never shapes its own prediction. Within a block the scale is constant, so a
  scaled squared loss times ``std_y²`` is the user's loss exactly; the learner's totals convert
  record by record (the kernel takes each record's factor; the waves run block by block).
  Both rules depend on the order of records only, never on how they were batched.

>>> s = Standardizer(2)
>>> s.features(np.array([[1000.0, 1.0], [3000.0, 3.0]])).tolist()
[[0.0, 0.0], [1.0, 1.0]]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptd.learner import Outcomes
from adaptd.learner.jit import njit, read_only
from adaptd.learner.paths import run_kernel
from adaptd.learner.target_scales import TARGET_BLOCK, frozen_scales
from adaptd.meta.state import pool_moments

if TYPE_CHECKING:
    from adaptd.learner.adaptive import AdaptiveLearner
    from adaptd.learner.totals import Totals

Run = Callable[["AdaptiveLearner", np.ndarray, np.ndarray, np.ndarray, "np.ndarray | None",
                Outcomes], None]

#: Largest block of a batch transformed at once (elements), so wide records stay in memory.
_BLOCK_ELEMENTS = 1 << 22
#: Standardized targets are learned clipped to ±this many deviations (see run_standardized).
TARGET_CLIP = 3.0


@njit(nogil=True)  # the read-ahead and write-behind threads run meanwhile
def _welford_rows(X: np.ndarray, fold: np.ndarray, count: np.ndarray, mean: np.ndarray,
                  m2: np.ndarray, out: np.ndarray) -> None:
    """Row i of ``X`` standardized by the moments including it; Welford's update (in place on
    ``count[0]``, ``mean``, ``m2``) is kept only where ``fold[i]``, so an unlabelled row is a
    peek that changes nothing. Rows with a non-finite squared deviation are left out of the
    moments (and come out as they are)."""
    n, d = X.shape
    mean_i = np.empty(d)
    m2_i = np.empty(d)
    for i in range(n):
        ok = True
        for j in range(d):
            dev = X[i, j] - mean[j]
            if not np.isfinite(dev * dev):
                ok = False
        c = count[0] + 1.0 if ok else count[0]
        for j in range(d):
            mean_i[j] = mean[j]
            m2_i[j] = m2[j]
            if ok:
                delta = X[i, j] - mean[j]
                mean_i[j] += delta / c
                m2_i[j] += delta * (X[i, j] - mean_i[j])
        for j in range(d):
            sd = np.sqrt(m2_i[j] / c) if c >= 2 else 1.0
            if not sd > 1e-12 * max(abs(mean_i[j]), 1.0):
                sd = 1.0
            out[i, j] = (X[i, j] - mean_i[j]) / sd if ok else X[i, j]
        if ok and fold[i]:
            count[0] = c
            for j in range(d):
                mean[j] = mean_i[j]
                m2[j] = m2_i[j]


class RunningMoments:
    """Count, mean and sum of squared deviations ``m2`` of columns (Welford per row; a block
    of rows merged with :func:`~adaptd.meta.state.pool_moments`, Chan et al.)."""

    def __init__(self, d: int) -> None:
        self.count = 0.0
        self.mean = np.zeros(d)
        self.m2 = np.zeros(d)

    def update(self, X: np.ndarray) -> None:
        """Fold the rows of ``X`` ``(n, d)`` in. Rows whose squared deviation is not finite
        (NaN, inf, 1e300) are left out: one absurd record must not poison statistics that
        every key shares for good (its own update is skipped downstream anyway)."""
        with np.errstate(all="ignore"):
            X = X[np.isfinite((X - self.mean) ** 2).all(axis=1)]
        if not len(X):
            return
        mean_b = X.mean(axis=0)
        pooled = pool_moments([
            {"count": self.count, "mean": self.mean, "m2": self.m2},
            {"count": float(len(X)), "mean": mean_b, "m2": ((X - mean_b) ** 2).sum(axis=0)}])
        assert pooled is not None  # the rows' part has a count
        self.count, self.mean, self.m2 = pooled["count"], pooled["mean"], pooled["m2"]

    def standardize_each(self, X: np.ndarray, fold: np.ndarray) -> np.ndarray:
        """Row i of ``X`` standardized by the moments of the folded rows before it and row i
        itself; rows where ``fold`` is true are folded in, one Welford step per row (compiled:
        the same bits whatever the batching, so a restart replays exactly)."""
        out = np.empty_like(X, dtype=np.float64)
        state = np.array([self.count])
        _welford_rows(read_only(np.ascontiguousarray(X, dtype=np.float64)),
                      np.ascontiguousarray(fold, dtype=np.bool_), state, self.mean, self.m2, out)
        self.count = float(state[0])
        return out

    def std(self) -> np.ndarray:
        """Population deviation; 1 where it is not yet defined or zero (only centred then)."""
        if self.count < 2:
            return np.ones_like(self.mean)
        sd = np.sqrt(self.m2 / self.count)
        return np.where(sd > 1e-12 * np.maximum(np.abs(self.mean), 1.0), sd, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean.copy(), "m2": self.m2.copy()}

    def load(self, state: Mapping[str, Any]) -> None:
        self.count = float(state["count"])
        self.mean = np.asarray(state["mean"], dtype=np.float64).copy()
        self.m2 = np.asarray(state["m2"], dtype=np.float64).copy()


class Standardizer:
    """The learner's shared feature (and, for regression, target) statistics.

    Args:
        d: features per record.
        features: standardize features (else :meth:`features` returns them as they are).
        target: standardize regression targets.
    """

    def __init__(self, d: int, features: bool = True, target: bool = False) -> None:
        self.x = RunningMoments(d) if features else None
        self.y = RunningMoments(1) if target else None
        #: Labelled records that went through :func:`run_standardized` (blocks are cut by it).
        self.records = 0
        #: Labels of the current, unfinished block: folded in when it ends, so a block split
        #: across two batches is still predicted with the statistics from its start.
        self.block_labels: list[float] = []

    def features(self, X: np.ndarray, labelled: np.ndarray | None = None) -> np.ndarray:
        """Standardize each row of ``X`` ``(n, d)`` with the statistics of the labelled rows
        before it and the row itself, per record, so the result does not depend on how the
        stream was cut into batches (a restart replays the same values). Only ``labelled``
        rows (all if None) are folded in: predicting a record without its label changes
        nothing, so predicting it twice, or then learning it, sees the same features."""
        if self.x is None:
            return X
        fold = np.ones(len(X), dtype=bool) if labelled is None else labelled
        rows = max(1, _BLOCK_ELEMENTS // max(X.shape[1], 1))
        out = np.empty_like(X, dtype=np.float64)
        for lo in range(0, len(X), rows):
            out[lo : lo + rows] = self.x.standardize_each(X[lo : lo + rows],
                                                          fold[lo : lo + rows])
        return out

    def labels_seen(self) -> float:
        return 0.0 if self.y is None else self.y.count

    def statistics(self) -> dict[str, Any]:
        """The moments alone, as plain lists (what a meta-state file carries)."""
        def plain(m: RunningMoments | None) -> dict[str, Any] | None:
            return None if m is None else {"count": m.count, "mean": m.mean.tolist(),
                                           "m2": m.m2.tolist()}
        return {"x": plain(self.x), "y": plain(self.y)}

    def load_statistics(self, state: Mapping[str, Any]) -> None:
        """Start from the moments a meta-state was learned under (see :meth:`statistics`):
        a meta-learned θ0 is a function of standardized inputs, and means the same thing here
        only under the same statistics. Feature and target moments load independently."""
        for mine, theirs in ((self.x, state.get("x")), (self.y, state.get("y"))):
            if mine is not None and theirs is not None and len(theirs["mean"]) == len(mine.mean):
                mine.load(theirs)

    def state_dict(self) -> dict[str, Any]:
        return {"x": None if self.x is None else self.x.to_dict(),
                "y": None if self.y is None else self.y.to_dict(), "records": self.records,
                "block_labels": list(self.block_labels)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.x is not None and state.get("x") is not None:
            self.x.load(state["x"])
        if self.y is not None and state.get("y") is not None:
            self.y.load(state["y"])
        self.records = int(state.get("records", 0))
        self.block_labels = [float(v) for v in state.get("block_labels", ())]


def run_standardized(lrn: AdaptiveLearner, run: Run, slots: np.ndarray, X: np.ndarray,
                     ys: np.ndarray, tasks: np.ndarray | None, out: Outcomes) -> None:
    """``run`` (a path of :mod:`adaptd.learner.paths`) on standardized features and targets,
    with predictions, losses and the learner's totals mapped back to the user's units.

    The first two labelled records ever seen have no target scale to learn with: they are
    predicted (their ``loss`` counts) and folded into the statistics but not learned from
    (``learned`` false).

    The target statistics depend on the labels alone, so every record's block scale is known
    before any is learned: the compiled kernel takes the whole batch at once with a factor
    per record (a call per block of 16 records cost about 8 µs a record in Python); the
    batched waves run block by block.
    """
    sc = lrn.scaler
    assert sc is not None
    Xs = sc.features(X, ~np.isnan(ys))
    if sc.y is None:
        run(lrn, slots, Xs, ys, tasks, out)
        return
    tot = lrn.totals
    labelled = ~np.isnan(ys)
    compiled = run is run_kernel  # (not narrowed: run_kernel takes ``unit`` besides)
    shift, scale, learnable, blocks = _target_blocks(sc, ys, labelled, not compiled)
    # Clipped: a label far outside what the statistics have seen (a level shift the
    # block's frozen scale does not know yet) is learned as a Huber-like bounded target
    # (Huber 1964) rather than fill AdaGrad's accumulators with one gradient of hundreds of
    # deviations, which never leaves them (the bench's WaterFlow; sinusoid seed 3).
    z = np.where(learnable, np.clip((ys - shift) / scale, -TARGET_CLIP, TARGET_CLIP), np.nan)
    unit = scale * scale
    early = labelled & ~learnable
    # The early records come before every learnable one, and the totals' ``recent`` averages
    # losses in stream order: their losses go in before the rest's, so the kernel runs the
    # batch in two calls, up to the last early record and after it. Added after the whole
    # batch instead, they weighed by where the stream's first batch happened to end (a
    # restarted daemon's ``recent`` differed from an uninterrupted one's in the fifth digit).
    cut = int(np.flatnonzero(early)[-1]) + 1 if early.any() else 0
    for lo, hi in [(0, cut), (cut, len(ys))] if compiled else blocks:
        if lo == hi:
            continue
        part = out[lo:hi]  # views: the path writes into ``out``
        if compiled:
            run_kernel(lrn, slots[lo:hi], Xs[lo:hi], z[lo:hi],
                       None if tasks is None else tasks[lo:hi], part, unit[lo:hi])
        else:
            tot.unit = float(unit[lo])
            try:
                run(lrn, slots[lo:hi], Xs[lo:hi], z[lo:hi],
                    None if tasks is None else tasks[lo:hi], part)
            finally:
                tot.unit = 1.0
        _to_user_units(tot, part, ys[lo:hi], shift[lo:hi], scale[lo:hi], early[lo:hi])


def _to_user_units(tot: Totals, out: Outcomes, ys: np.ndarray, shift: np.ndarray,
                   scale: np.ndarray, early: np.ndarray) -> None:
    """Predictions and losses of a piece the path ran back in the user's units; the early
    records' losses into the totals."""
    out.y_pred *= scale
    out.y_pred += shift
    out.loss *= scale * scale
    user = (out.y_pred - ys) ** 2
    # Predicted, not learned (no target scale yet): the user's loss still counts.
    if early.any():
        out.loss[early] = user[early]
        tot.add_losses(user[early])
    # Clipped targets: the loss reported and summed is the user's, unclipped.
    done = np.flatnonzero(~np.isnan(ys) & ~early & ~np.isnan(out.loss))
    tot.loss += float((user[done] - out.loss[done]).sum())
    out.loss[done] = user[done]


def _target_blocks(sc: Standardizer, ys: np.ndarray, labelled: np.ndarray, blocks: bool
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Each record's target ``shift`` and ``scale`` (its block's: see :func:`chunks`) and
    whether it can be learned, in one compiled pass (:func:`frozen_scales`); the blocks'
    ``[lo, hi)`` when ``blocks`` (else none). Folds the labels into ``sc``."""
    y = sc.y
    assert y is not None
    n, before = len(ys), sc.records
    shift, scale = np.empty(n), np.empty(n)
    learnable = np.empty(n, dtype=bool)
    moments = np.array([y.count, y.mean[0], y.m2[0]])
    k = len(sc.block_labels)
    pending = np.empty(k + n)
    pending[:k] = sc.block_labels
    records, k = frozen_scales(ys, labelled, before, moments, pending, k, shift, scale,
                               learnable)
    sc.records = int(records)
    sc.block_labels = pending[:k].tolist()
    if moments[0] != y.count:  # a block ended: new arrays, as RunningMoments.update makes
        y.count, y.mean, y.m2 = float(moments[0]), moments[1:2].copy(), moments[2:3].copy()
    return shift, scale, learnable, list(chunks(n, before, labelled)) if blocks else []


def chunks(n: int, before: int, labelled: np.ndarray | None = None
           ) -> Iterator[tuple[int, int]]:
    """``[lo, hi)`` pieces of an ``n``-record batch, cut where the learner's count of labelled
    records (``before`` at the batch's start; ``labelled`` marks them, all if None) crosses a
    block boundary: 1, 2, 4, …, 16, then every
    ``TARGET_BLOCK`` records. The target statistics are frozen within a block. Boundaries
    belong to the stream, not to its batches, so any batching (and a restart) gives the same
    results; the doubling start keeps the first blocks no longer than the labels behind them.

    >>> list(chunks(10, 0))
    [(0, 1), (1, 2), (2, 4), (4, 8), (8, 10)]
    >>> list(chunks(40, 10))
    [(0, 6), (6, 22), (22, 38), (38, 40)]
    """
    # Labels seen after each record; unlabelled records (predicted only) do not count, so
    # predicting a record before learning it moves no boundary.
    seen = before + np.cumsum(np.ones(n, dtype=np.int64) if labelled is None else labelled)
    lo = 0
    while lo < n:
        p = int(seen[lo - 1]) if lo else before
        edge = 1 << p.bit_length() if p < TARGET_BLOCK else (p // TARGET_BLOCK + 1) * TARGET_BLOCK
        hi = min(n, int(np.searchsorted(seen, edge, side="left")) + 1)
        yield lo, hi
        lo = hi
