"""The ``aode`` expert of :mod:`adaptd.learner.ensemble`: averaged one-dependence estimators
per key, compiled.

Many real streams carry few-valued features: flags, ordinal codes, answers scored -1/0/1
(river's Phishing: nine features of two or three values each; UCI phishing: thirty). Two
records rarely share every value (river's Phishing: 625 patterns in 1,250 records), so the
kNN vote and a young tree generalize slowly, and a linear model cannot weigh a middle value
apart from the two ends. Naive Bayes counts each value's classes and learns from a handful of
records, but assumes the features independent given the class. AODE (Webb, Boughton & Wang
2005, "Not so naive Bayes: aggregating one-dependence estimators", Machine Learning 58)
averages, over every feature ``p`` as the "super-parent", the one-dependence model

    P(y, x) ∝ Σ_p  P̂(y, x_p) · Π_{j≠p} P̂(x_j | y, x_p)

which relaxes that assumption at the cost of pairwise counts, and keeps naive Bayes' one
pass, no search and no forgetting of what a key has seen. Estimates are Laplace's
(``+ ALPHA`` per cell); a parent value seen fewer than :data:`MIN_PARENT` times is skipped
(Webb's ``m``; 1 measured best on river's Phishing, where records are few).

Each feature becomes one of :data:`CELLS` cells: while a key has seen no more than
``CELLS`` distinct values of it, a cell per value (a flag, a code); at the next new value the
feature is counted as numeric from then on, its counts restart, and its cell is the
quartile of a standard normal its z-score falls in (Welford's running mean and variance of
the key). Measured inside ``auto``, replayed offline: river's Phishing 0.8952 → 0.9224
(AODE alone 0.924; river's ARF 0.912, MOA's SRP 0.915).

The counts never forget by themselves: a key's counts restart at the key's drift alarm (the
linear candidate's detector), as its tree does. Classes are discovered online (the class
axis grows). Classification only.

State per key (a row of each array): the value of each cell (NaN: unused; a numeric
feature's cells are all ``-inf``), the running moments, per class the record count, per
feature, cell and class the count, and per pair of features ``p < j`` and their cells and
class the joint count: ``d(d−1)/2 · CELLS² · K`` floats (1,440 for ten features and two
classes). The pair tables of all keys together hold at most :data:`FLOAT_BUDGET` floats;
beyond that (many keys or features) the pairs are dropped and every key goes on as naive
Bayes over its per-feature counts, which it keeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from adaptd.learner.jit import njit
from adaptd.learner.key_rows import KeyRows

#: Cells a feature's values fall in (values of a few-valued feature, else z-score quartiles).
CELLS = 4
#: The quartiles of a standard normal: the cells of a numeric feature's z-score.
CUTS = np.array([-0.6744897501960817, 0.0, 0.6744897501960817])
#: Laplace's estimate: counts added per cell.
ALPHA = 1.0
#: Records a parent's value needs to stand as a super-parent (Webb's ``m``).
MIN_PARENT = 1.0
#: Floats of pair counts kept over all keys: beyond it every key is naive Bayes.
FLOAT_BUDGET = 1 << 22
#: A numeric feature's cell values (``moments``: records, then per feature mean, then M2).
NUMERIC = -np.inf


@njit()
def _pair(p: int, j: int, d: int) -> int:
    """Index of the pair ``p < j`` among ``d`` features' ``d(d−1)/2``."""
    return p * d - (p * (p + 1)) // 2 + (j - p - 1)


@njit()
def _cells(vals: np.ndarray, moments: np.ndarray, x: np.ndarray, learn: bool,
           cell: np.ndarray, counts: np.ndarray, pairs: np.ndarray) -> None:
    """Each feature's cell of ``x`` into ``cell`` (-1: a value not seen, at prediction);
    ``learn`` admits a new value, or turns the feature numeric (its counts cleared)."""
    d = x.shape[0]
    n = moments[0]
    for f in range(d):
        v = x[f]
        if vals[f, 0] != NUMERIC:
            c = -1
            for k in range(CELLS):
                if vals[f, k] == v:
                    c = k
                    break
                if np.isnan(vals[f, k]):
                    if learn:
                        vals[f, k] = v
                        c = k
                    break
            if c >= 0 or not learn:
                cell[f] = c
                continue
            vals[f, :] = NUMERIC  # a fifth value: numeric from here, its counts restart
            counts[f] = 0.0
            if pairs.shape[0]:
                for g in range(d):
                    if g != f:
                        pairs[_pair(min(f, g), max(f, g), d)] = 0.0
        sd = np.sqrt(moments[1 + d + f] / n) if n > 1 else 0.0
        z = (v - moments[1 + f]) / sd if sd > 0.0 else 0.0
        c = 0
        while c < CELLS - 1 and z > CUTS[c]:
            c += 1
        cell[f] = c


@njit()
def _widths(vals: np.ndarray, width: np.ndarray) -> None:
    """Cells each feature has so far (Laplace's denominator) into ``width``."""
    for f in range(vals.shape[0]):
        if vals[f, 0] == NUMERIC:
            width[f] = CELLS
            continue
        k = 0
        while k < CELLS and not np.isnan(vals[f, k]):
            k += 1
        width[f] = max(k, 1)


#: A product of estimates is rescaled by this when it falls below its inverse: one logarithm
#: a parent and class instead of one a factor, with no underflow for any number of features.
RESCALE = 1e250
LOG_RESCALE = np.log(RESCALE)


@njit()
def _one_dependence(prior: np.ndarray, counts: np.ndarray, pairs: np.ndarray,
                    cell: np.ndarray, width: np.ndarray, p: int, c: int, n: float,
                    K: int) -> float:
    """log P̂(y = c, x) under the model whose super-parent is feature ``p``; with no pair
    tables, naive Bayes' (``p`` is then ignored and the class count is the parent)."""
    d = cell.shape[0]
    scale = 0.0
    if pairs.shape[0] == 0:
        nc = prior[c]
        v = (nc + ALPHA) / (n + ALPHA * K)
        for j in range(d):
            b = cell[j]
            if b >= 0:
                v *= (counts[j, b, c] + ALPHA) / (nc + ALPHA * width[j])
                if v < 1.0 / RESCALE:
                    v *= RESCALE
                    scale += 1.0
        return np.log(v) - scale * LOG_RESCALE
    a = cell[p]
    cp = counts[p, a, c]
    v = (cp + ALPHA) / (n + ALPHA * K * width[p])
    for j in range(d):
        b = cell[j]
        if j == p or b < 0:
            continue
        joint = pairs[_pair(p, j, d), a, b, c] if p < j else pairs[_pair(j, p, d), b, a, c]
        v *= (joint + ALPHA) / (cp + ALPHA * width[j])
        if v < 1.0 / RESCALE:
            v *= RESCALE
            scale += 1.0
    return np.log(v) - scale * LOG_RESCALE


@njit()
def _proba(vals: np.ndarray, prior: np.ndarray, counts: np.ndarray, pairs: np.ndarray,
           cell: np.ndarray, K: int, out: np.ndarray, lp: np.ndarray,
           width: np.ndarray) -> None:
    """The class probabilities of the record whose cells are ``cell`` into ``out[:K]``:
    the mean of the one-dependence models over the parents seen :data:`MIN_PARENT` times
    (summed in log space against a running maximum); naive Bayes once the pair tables are
    dropped; the Laplace prior before any parent stands."""
    d = cell.shape[0]
    n = 0.0
    for c in range(K):
        n += prior[c]
        out[c] = 0.0
    _widths(vals, width)
    parents = 0
    top = -np.inf
    for p in range(d if pairs.shape[0] else 1):
        if pairs.shape[0]:
            a = cell[p]
            if a < 0:
                continue
            seen = 0.0
            for c in range(K):
                seen += counts[p, a, c]
            if seen < MIN_PARENT:
                continue
        m = -np.inf
        for c in range(K):
            lp[c] = _one_dependence(prior, counts, pairs, cell, width, p, c, n, K)
            m = max(m, lp[c])
        if m > top:  # rescale what was summed to the new maximum
            for c in range(K):
                out[c] *= np.exp(top - m)
            top = m
        for c in range(K):
            out[c] += np.exp(lp[c] - top)
        parents += 1
    total = 0.0
    for c in range(K):
        if parents == 0:
            out[c] = (prior[c] + 1.0) / (n + K)
        total += out[c]
    for c in range(K):
        out[c] /= total


@njit()
def _learn(vals: np.ndarray, moments: np.ndarray, prior: np.ndarray, counts: np.ndarray,
           pairs: np.ndarray, cell: np.ndarray, x: np.ndarray, y: int) -> None:
    d = x.shape[0]
    prior[y] += 1.0
    for f in range(d):
        counts[f, cell[f], y] += 1.0
        if pairs.shape[0]:
            for j in range(f + 1, d):
                pairs[_pair(f, j, d), cell[f], cell[j], y] += 1.0
    moments[0] += 1.0
    n = moments[0]
    for f in range(d):  # Welford
        delta = x[f] - moments[1 + f]
        moments[1 + f] += delta / n
        moments[1 + d + f] += delta * (x[f] - moments[1 + f])


@njit()
def aode_batch(slots: np.ndarray, X: np.ndarray, ys: np.ndarray, learn: np.ndarray,
               reset: np.ndarray, n_classes: int, vals: np.ndarray, moments: np.ndarray,
               prior: np.ndarray, counts: np.ndarray, pairs: np.ndarray,
               out: np.ndarray) -> None:
    """Predict each record from its key's counts, then learn it if ``learn``, then restart
    the key's counts if ``reset`` (its drift alarm on that record; the values and moments
    stay: they describe the features, not the concept). ``ys``: class indices; ``out``
    ``(n, C)``: P(y = 1) (``C = 1``) or the ``n_classes`` probabilities."""
    K = max(n_classes, 2)
    d = X.shape[1]
    cell = np.empty(d, dtype=np.int64)
    width = np.empty(d)
    p = np.empty(K)
    lp = np.empty(K)
    for i in range(len(slots)):
        s = slots[i]
        x = X[i]
        rows = pairs[s]  # (0, …) once the pair tables are dropped: naive Bayes
        _cells(vals[s], moments[s], x, False, cell, counts[s], rows)
        _proba(vals[s], prior[s], counts[s], rows, cell, K, p, lp, width)
        if n_classes == 2 and out.shape[1] == 1:
            out[i, 0] = p[1]
        else:
            for c in range(n_classes):
                out[i, c] = p[c]
        if learn[i]:
            for f in range(d):
                if cell[f] < 0:  # a value not seen yet: admit it (or turn its feature numeric)
                    _cells(vals[s], moments[s], x, True, cell, counts[s], rows)
                    break
            _learn(vals[s], moments[s], prior[s], counts[s], rows, cell, x, int(ys[i]))
        if reset[i]:
            prior[s] = 0.0
            counts[s] = 0.0
            rows[:] = 0.0


#: The arrays of a key's counts, in the order :func:`aode_batch` takes them.
FIELDS = ("vals", "moments", "prior", "counts", "pairs")


class Aode(KeyRows):
    """Per-key AODE counts for :func:`aode_batch`, in rows that grow as keys arrive; a freed
    row is reused. Called from the ensemble's thread only."""

    def __init__(self, n_features: int) -> None:
        self.d = n_features
        self.classes = 2
        self.pairs = True
        self.arrays = self._empty(0)

    def _empty(self, rows: int) -> dict[str, np.ndarray]:
        d, K = self.d, self.classes
        return {"vals": np.full((rows, d, CELLS), np.nan),
                "moments": np.zeros((rows, 1 + 2 * d)),
                "prior": np.zeros((rows, K)),
                "counts": np.zeros((rows, d, CELLS, K)),
                "pairs": np.zeros((rows, self._n_pairs(), CELLS, CELLS, K))}

    def _n_pairs(self) -> int:
        return self.d * (self.d - 1) // 2 if self.pairs else 0

    def _widen(self, extra: int) -> None:
        for name in ("prior", "counts", "pairs"):
            a = self.arrays[name]
            self.arrays[name] = np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, extra)])

    def _fit_budget(self, rows: int, n_classes: int) -> None:
        """Drop every key's pair tables (naive Bayes from here) if ``rows`` keys of
        ``n_classes`` would pass :data:`FLOAT_BUDGET`."""
        if self.pairs and rows * self._n_pairs() * CELLS * CELLS * n_classes > FLOAT_BUDGET:
            self.pairs = False
            a = self.arrays["pairs"]
            self.arrays["pairs"] = np.zeros(a.shape[:1] + (0,) + a.shape[2:])

    def clear(self, s: int) -> None:
        """Row ``s`` as a new key's."""
        a = self.arrays
        a["vals"][s] = np.nan
        for name in ("moments", "prior", "counts", "pairs"):
            a[name][s] = 0.0

    def _batch(self, slots: np.ndarray, X: np.ndarray, ys: np.ndarray, learn: np.ndarray,
               reset: np.ndarray, n_classes: int, out: np.ndarray) -> None:
        aode_batch(slots, X, ys, learn, reset, n_classes, *(self.arrays[k] for k in FIELDS),
                   out)

    def get_state(self, s: int) -> dict[str, Any]:
        """Row ``s`` as plain data."""
        return {k: self.arrays[k][s].copy() for k in FIELDS}

    def set_state(self, s: int, state: Mapping[str, Any]) -> None:
        """Row ``s`` from :meth:`get_state`'s output; pair tables saved while this process
        holds none are left out (naive Bayes), and a state without them starts them empty."""
        prior = np.asarray(state["prior"], dtype=np.float64)
        self.ensure_classes(len(prior))
        self.clear(s)
        K = len(prior)
        a = self.arrays
        a["vals"][s] = state["vals"]
        a["moments"][s] = state["moments"]
        a["prior"][s, :K] = prior
        a["counts"][s, ..., :K] = state["counts"]
        pairs = np.asarray(state["pairs"], dtype=np.float64)
        if self.pairs and pairs.shape[0] == a["pairs"].shape[1]:
            a["pairs"][s, ..., :K] = pairs
