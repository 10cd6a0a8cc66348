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

- features: the statistics include the chunk being processed — features are known at
  prediction time, so nothing about a label leaks (river's ``StandardScaler`` order);
- targets: prediction and learning use the statistics from *before* the chunk, so a record's
  label never shapes its own prediction. A chunk is the whole batch once the statistics hold at
  least as many labels as the batch has records; before that the batch is cut into chunks of
  1, 1, 2, 4, … records (:func:`chunks`), so the first records do not share one blind scale.
  The scale is constant within a chunk, so a scaled squared loss times ``std_y²`` is the
  user's loss exactly, and the learner's totals convert chunk by chunk.

>>> s = Standardizer(2)
>>> s.features(np.array([[1000.0, 1.0], [3000.0, 3.0]])).tolist()
[[-1.0, -1.0], [1.0, 1.0]]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptd.learner import Outcomes

if TYPE_CHECKING:
    from adaptd.learner.adaptive import AdaptiveLearner

Run = Callable[["AdaptiveLearner", np.ndarray, np.ndarray, np.ndarray, "np.ndarray | None",
                Outcomes], None]

#: Largest block of a batch transformed at once (elements), so wide records stay in memory.
_BLOCK_ELEMENTS = 1 << 22


class RunningMoments:
    """Count, mean and sum of squared deviations ``m2`` of columns (Welford / Chan et al.)."""

    def __init__(self, d: int) -> None:
        self.count = 0.0
        self.mean = np.zeros(d)
        self.m2 = np.zeros(d)

    def update(self, X: np.ndarray) -> None:
        """Fold the rows of ``X`` ``(n, d)`` in (non-finite rows are left out)."""
        X = X[np.isfinite(X).all(axis=1)]
        n = float(len(X))
        if not n:
            return
        mean_b = X.mean(axis=0)
        m2_b = ((X - mean_b) ** 2).sum(axis=0)
        total = self.count + n
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2_b + delta * delta * (self.count * n / total)
        self.count = total

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

    def features(self, X: np.ndarray) -> np.ndarray:
        """Fold ``X`` ``(n, d)`` into the statistics, then return it standardized."""
        if self.x is None:
            return X
        rows = max(1, _BLOCK_ELEMENTS // max(X.shape[1], 1))
        out = np.empty_like(X, dtype=np.float64)
        for lo in range(0, len(X), rows):
            block = X[lo : lo + rows]
            self.x.update(block)
            out[lo : lo + rows] = (block - self.x.mean) / self.x.std()
        return out

    def target_scale(self) -> tuple[float, float]:
        """``(shift, scale)`` mapping a standardized target back: ``y = shift + scale·z``.

        With one label seen the deviation is unknown: the scale is then ``max(|mean|, 1)`` (for
        that record's prediction only: see :meth:`can_learn`)."""
        assert self.y is not None
        if self.y.count < 1:
            return 0.0, 1.0
        mean = float(self.y.mean[0])
        if self.y.count < 2:
            return mean, max(abs(mean), 1.0)
        return mean, float(self.y.std()[0])

    def can_learn(self) -> bool:
        """Whether the target scale is known: two labels seen. Before, learning on a guessed
        scale would fill AdaGrad's accumulators with gradients of the wrong size for good."""
        return self.y is None or self.y.count >= 2

    def learn_targets(self, y: np.ndarray) -> None:
        """Fold the labels of a processed chunk in (NaN: unlabelled, left out)."""
        assert self.y is not None
        self.y.update(y[:, None])

    def labels_seen(self) -> float:
        return 0.0 if self.y is None else self.y.count

    def state_dict(self) -> dict[str, Any]:
        return {"x": None if self.x is None else self.x.to_dict(),
                "y": None if self.y is None else self.y.to_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.x is not None and state.get("x") is not None:
            self.x.load(state["x"])
        if self.y is not None and state.get("y") is not None:
            self.y.load(state["y"])


def run_standardized(lrn: AdaptiveLearner, run: Run, slots: np.ndarray, X: np.ndarray,
                     ys: np.ndarray, tasks: np.ndarray | None, out: Outcomes) -> None:
    """``run`` (a path of :mod:`adaptd.learner.paths`) on standardized features and targets,
    with predictions, losses and the learner's totals mapped back to the user's units.

    The first two labelled records ever seen have no target scale to learn with: they are
    predicted and folded into the statistics but not learned from (``learned`` false).
    """
    sc = lrn.scaler
    assert sc is not None
    Xs = sc.features(X)
    if sc.y is None:
        run(lrn, slots, Xs, ys, tasks, out)
        return
    tot = lrn.totals
    for lo, hi in chunks(len(ys), sc.labels_seen()):
        shift, scale = sc.target_scale()
        y = ys[lo:hi]
        z = (y - shift) / scale if sc.can_learn() else np.full_like(y, np.nan)
        part = out[lo:hi]  # views: the path writes into ``out``
        tot.unit = scale * scale
        try:
            run(lrn, slots[lo:hi], Xs[lo:hi], z, None if tasks is None else tasks[lo:hi], part)
        finally:
            tot.unit = 1.0
        part.y_pred *= scale
        part.y_pred += shift
        part.loss *= scale * scale
        sc.learn_targets(y)


def chunks(n: int, labels_seen: float) -> Iterator[tuple[int, int]]:
    """``[lo, hi)`` pieces of an ``n``-record batch, each no longer than the labels seen before
    it (at least 1), so target statistics are never frozen over more records than they rest on.

    >>> list(chunks(10, 0))
    [(0, 1), (1, 2), (2, 4), (4, 8), (8, 10)]
    >>> list(chunks(10, 300))
    [(0, 10)]
    """
    lo, seen = 0, labels_seen
    while lo < n:
        hi = min(n, lo + max(1, int(seen)))
        yield lo, hi
        seen += hi - lo
        lo = hi
