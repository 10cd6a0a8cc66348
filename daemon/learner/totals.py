"""Running sums behind :meth:`adaptd.learner.adaptive.AdaptiveLearner.summary`.

>>> t = Totals()
>>> t.add_losses(np.array([1.0, 3.0]))
>>> t.loss, t.n, t.recent
(4.0, 2, 2.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from adaptd.learner.jit import njit
from adaptd.learner.target_scales import pairwise_sum

#: Prequential loss is an exponential average over about this many recent losses.
PREQUENTIAL_SPAN = 100


#: The exponential average's weights ``a·(1 − a)^(N−1−i)``, oldest first, for the largest N
#: asked so far: the last ``m`` are the weights of ``m`` losses. Building them was most of an
#: :meth:`Totals.add_losses` call, which runs after every event of a batch (a drift alarm, a
#: concept probe). Each weight is one elementwise power, the same bits wherever it sits
#: (``tests/unit/test_totals_weights.py`` checks the slices against fresh arrays).
_weights: np.ndarray = np.empty(0)


def _last_weights(m: int) -> np.ndarray:
    """The weights of ``m`` losses (a read-only view)."""
    global _weights
    if m > len(_weights):
        a = 1.0 / PREQUENTIAL_SPAN
        size = max(m, 2 * len(_weights), 1024)
        table = a * (1.0 - a) ** np.arange(size - 1, -1, -1)
        table.flags.writeable = False
        _weights = table
    return _weights[len(_weights) - m :]


class Totals:
    """Loss sums and event counts, saved with the learner's state."""

    _NAMES = ("loss", "n", "recent", "baseline", "hindsight", "hindsight_adaptd", "skipped",
              "meta_updates", "drift_events", "evicted", "accuracy", "scored", "concept_reuses")

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
        self.accuracy = 0.0  # classification: recent share of correct predictions
        self.scored = 0
        self.concept_reuses = 0
        #: Factor from the losses the paths see to the user's units: the target variance of
        #: the chunk being processed when regression targets are standardized
        #: (:mod:`adaptd.learner.scaling`), else 1. Transient: never saved.
        self.unit = 1.0

    def add_hits(self, hits: np.ndarray) -> None:
        """Add whether each learned prediction was right (classification), in order, to the
        ``accuracy`` average: the plain mean over the first PREQUENTIAL_SPAN, then exponential
        with weight 1/PREQUENTIAL_SPAN, as ``recent`` averages the losses."""
        hits = hits.astype(np.float64)
        k = min(max(PREQUENTIAL_SPAN - self.scored, 0), len(hits))
        if k:
            total = self.accuracy * self.scored + float(hits[:k].sum())
            self.accuracy = total / (self.scored + k)
        rest = hits[k:]
        if len(rest):
            a = 1.0 / PREQUENTIAL_SPAN
            weights = a * (1.0 - a) ** np.arange(len(rest) - 1, -1, -1)
            self.accuracy = (1.0 - a) ** len(rest) * self.accuracy + float(weights @ rest)
        self.scored += len(hits)

    def add_baseline(self, loss: float) -> None:
        """Add the shadow baseline's summed loss of some records (in the paths' units)."""
        self.baseline += loss * self.unit

    def add_losses(self, losses: np.ndarray) -> None:
        """Add losses in order; ``recent`` is an exponential average (weight 1/n while
        n < PREQUENTIAL_SPAN, so it starts as the plain mean), in the user's units."""
        if self.unit != 1.0:
            losses = losses * self.unit
        self._add(losses)

    def add_runs(self, losses: np.ndarray, lengths: np.ndarray, sums: np.ndarray) -> None:
        """:meth:`add_losses` of consecutive runs of ``losses``, one after the other, with the
        same bits: run ``r`` is the next ``lengths[r]`` values, summing to ``sums[r]`` (as
        ``np.sum`` sums them: :func:`gather_runs`). The kernel's records arrive in such runs
        (:mod:`adaptd.learner.paths`), about nine per drift alarm."""
        lo = 0
        for m, total in zip(lengths.tolist(), sums.tolist()):
            if not m:
                continue
            run = losses[lo : lo + m]
            lo += m
            if self.n < PREQUENTIAL_SPAN or self.unit != 1.0:
                self.add_losses(run)
            else:
                self._steady(run, total)

    def _add(self, losses: np.ndarray) -> None:
        i = 0
        while self.n < PREQUENTIAL_SPAN and i < len(losses):
            v = float(losses[i])
            self.n += 1
            self.loss += v
            self.recent += (v - self.recent) / self.n
            i += 1
        losses = losses[i:]
        if len(losses):
            self._steady(losses, float(losses.sum()))

    def _steady(self, losses: np.ndarray, total: float) -> None:
        """Past the warm-up: ``losses`` (summing to ``total``) into the average in one step."""
        m = len(losses)
        a = 1.0 / PREQUENTIAL_SPAN
        self.recent = (1.0 - a) ** m * self.recent + float(_last_weights(m) @ losses)
        self.loss += total
        self.n += m

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._NAMES}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Totals:
        t = cls()
        for name in cls._NAMES:
            setattr(t, name, type(getattr(t, name))(state.get(name, getattr(t, name))))
        return t


@njit(nogil=True)
def gather_runs(learned, loss, units, lo, ends, values, lengths, sums):  # type: ignore[no-untyped-def]
    """The losses of the learned records among ``lo … ends[-1] − 1`` (``loss[i] · units[i]``)
    into ``values``, run by run (run ``r`` ends before record ``ends[r]``): each run's count
    in ``lengths``, its ``np.sum`` in ``sums``. Returns how many values there are."""
    k = 0
    start = lo
    for r in range(ends.shape[0]):
        hi = min(ends[r], learned.shape[0])
        first = k
        for i in range(start, hi):
            if learned[i]:
                values[k] = loss[i] * units[i]
                k += 1
        lengths[r] = k - first
        sums[r] = 0.0 + pairwise_sum(values, first, k - first)
        start = max(start, hi)
    return k
