"""The ``knn`` expert of :mod:`adaptd.learner.ensemble`: nearest neighbours in a sliding window.

Trees win where the boundary is local and not linear (river's Bananas, Phishing); a linear
model and a small MLP trained online reach such boundaries slowly. A k-nearest-neighbour
vote over the key's last :data:`WINDOW` labelled records is the cheapest learner that
represents any boundary at once, and forgets an old concept as the window slides: kNN over a
sliding window is the short-term memory of SAM-kNN (Losing, Hammer & Wersing 2016, "KNN
classifier with self adjusting memory for heterogeneous concept drift", ICDM) and the base of
kNN with ADWIN windows (Bifet et al. 2013, "Efficient data stream classification via
probabilistic adaptive windows"). Here the window is fixed and Hedge decides, per key, how
much the vote counts next to the parametric models.

Distances are Euclidean on features standardized by the key's running mean and deviation
(Welford's update), so raw scales (0..1000 next to 0..1) do not let one feature decide; a
feature with no spread yet counts for nothing. Classification: the class frequencies among
the ``k`` nearest, Krichevsky–Trofimov smoothed (add ½ per class) so that the log loss Hedge
charges stays bounded; regression: the neighbours' mean label.

State per key (a row of each array, saved with the key): the window's features ``X``
``(W, d)`` and labels ``Y`` ``(W,)``, the ring's fill and head, and the feature moments. The
memory is ``W·(d+1)`` floats a key: ``W`` = :data:`WINDOW` (1024; 170 KB with 20 features) up
to 256 keys, then :data:`ROW_BUDGET` shared over the keys (at least 64 records a key).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from adaptd.learner.jit import njit
from adaptd.learner.key_rows import grown

#: Labelled records kept per key, at most.
WINDOW = 1024
#: Window rows kept over all keys: beyond ``ROW_BUDGET / WINDOW`` keys, every key's window
#: shrinks (to no less than :data:`MIN_WINDOW`), so memory stays bounded with many keys.
ROW_BUDGET = 1 << 18
MIN_WINDOW = 64
#: Neighbours that vote.
K = 9
#: Columns of ``ring``: records in the window, the next slot to write, features seen.
FILL, HEAD, SEEN = range(3)


@njit()
def _scales(mean: np.ndarray, m2: np.ndarray, seen: float, inv: np.ndarray) -> None:
    for f in range(len(inv)):
        sd = np.sqrt(m2[f] / seen) if seen > 1 else 0.0
        inv[f] = 1.0 / sd if sd > 1e-12 * max(abs(mean[f]), 1.0) else 0.0


@njit()
def knn_batch(slots: np.ndarray, X: np.ndarray, ys: np.ndarray, learn: np.ndarray, WX: np.ndarray, WY: np.ndarray, ring: np.ndarray,
              mean: np.ndarray, m2: np.ndarray, n_classes: int, k: int, label_count: float,
              label_mean: float, out: np.ndarray, prior: np.ndarray) -> None:
    """Predict each record from its key's window, then add it if ``learn``.

    ``X`` ``(n, d)``: the features (a delayed label's: those kept for its id); ``ys``: labels
    (class indices when ``n_classes`` > 0); ``out`` ``(n, C)``: class probabilities
    (``C = n_classes``; binary: ``C = 1``, P(y = 1), unless the caller asks for both columns)
    or ``(n, 1)`` the regression prediction; while the key's window is empty, the mean of every
    label learnt before the record (``label_count`` and ``label_mean`` at the batch's start,
    then counted on record by record: the same running mean as the Hedge's ``labels``, so a
    prediction does not depend on where a batch starts).
    Multi-class also fills ``prior`` ``(n, K)``: the class frequencies of the whole window
    (smoothed as the vote)."""
    n, d = X.shape
    W = WX.shape[1]
    inv = np.empty(d)
    best_d = np.empty(k)
    best_j = np.empty(k, dtype=np.int64)
    C = max(n_classes, 2)
    votes = np.empty(C)
    for i in range(n):
        s = slots[i]
        seen = ring[s, SEEN]
        # The record's own features are known when predicting: they join the moments first.
        seen += 1.0
        for f in range(d):
            delta = X[i, f] - mean[s, f]
            mean[s, f] += delta / seen
            m2[s, f] += delta * (X[i, f] - mean[s, f])
        ring[s, SEEN] = seen
        _scales(mean[s], m2[s], seen, inv)
        m = int(ring[s, FILL])
        found = 0
        for j in range(m):
            dist = 0.0
            for f in range(d):
                z = (X[i, f] - WX[s, j, f]) * inv[f]
                dist += z * z
            if found < k:
                at = found
                found += 1
            elif dist < best_d[k - 1]:
                at = k - 1
            else:
                continue
            while at > 0 and best_d[at - 1] > dist:  # insertion into the sorted k best
                best_d[at] = best_d[at - 1]
                best_j[at] = best_j[at - 1]
                at -= 1
            best_d[at] = dist
            best_j[at] = j
        if n_classes > 0:
            for c in range(C):
                votes[c] = 0.5
            for r in range(found):
                votes[int(WY[s, best_j[r]])] += 1.0
            total = found + 0.5 * C
            if n_classes == 2 and out.shape[1] == 1:
                out[i, 0] = votes[1] / total
            else:
                for c in range(n_classes):
                    out[i, c] = votes[c] / total
                    prior[i, c] = 0.5
                for j in range(m):
                    prior[i, int(WY[s, j])] += 1.0
                for c in range(n_classes):
                    prior[i, c] /= m + 0.5 * n_classes
        else:
            acc = 0.0
            for r in range(found):
                acc += WY[s, best_j[r]]
            out[i, 0] = acc / found if found else (label_mean if label_count > 0 else 0.0)
        if not learn[i]:
            continue
        if n_classes == 0:
            label_count += 1.0
            label_mean += (ys[i] - label_mean) / label_count
        h = int(ring[s, HEAD])
        for f in range(d):
            WX[s, h, f] = X[i, f]
        WY[s, h] = ys[i]
        ring[s, HEAD] = (h + 1) % W
        ring[s, FILL] = min(m + 1, W)


class Neighbours:
    """Per-key windows for :func:`knn_batch`, in rows that grow as keys arrive; a freed row
    is reused. Called from the ensemble's thread only."""

    def __init__(self, n_features: int, window: int | None = None, k: int | None = None
                 ) -> None:
        self.d = n_features
        self.window = WINDOW if window is None else window
        self.k = K if k is None else k
        self.WX, self.WY, self.ring, self.mean, self.m2 = self._empty(0).values()

    def grow(self, rows: int) -> None:
        """Room for ``rows`` keys (existing rows kept; windows cut to the budget)."""
        old = len(self.ring)
        if rows <= old:
            return
        window = max(MIN_WINDOW, min(self.window, ROW_BUDGET // rows))
        if window < self.window:
            self._shrink(window)
        arrays = grown({"WX": self.WX, "WY": self.WY, "ring": self.ring, "mean": self.mean,
                        "m2": self.m2}, self._empty, rows)
        self.WX, self.WY, self.ring, self.mean, self.m2 = arrays.values()

    def _empty(self, rows: int) -> dict[str, np.ndarray]:
        """Zeroed arrays for ``rows`` keys (pages untouched until written)."""
        return {"WX": np.zeros((rows, self.window, self.d)), "WY": np.zeros((rows, self.window)),
                "ring": np.zeros((rows, 3)), "mean": np.zeros((rows, self.d)),
                "m2": np.zeros((rows, self.d))}

    def _shrink(self, window: int) -> None:
        """Every key's window cut to its newest ``window`` records."""
        states = [self.get_state(s) for s in range(len(self.ring))]
        self.window = window
        self.WX = np.zeros((len(states), window, self.d))
        self.WY = np.zeros((len(states), window))
        for s, state in enumerate(states):
            self.set_state(s, state)

    def clear(self, s: int) -> None:
        """Row ``s`` as a new key's."""
        self.ring[s] = 0.0
        self.mean[s] = 0.0
        self.m2[s] = 0.0

    def run(self, slots: np.ndarray, X: np.ndarray, ys: np.ndarray, learn: np.ndarray,
            n_classes: int, labels: np.ndarray, columns: bool = False
            ) -> tuple[np.ndarray, np.ndarray]:
        """Predictions ``(n, C)`` and, multi-class, the window's class frequencies (see
        :func:`knn_batch`); learns the records ``learn`` marks. ``labels``: the count and mean
        of every label learnt so far (regression's fallback for a key with an empty window)."""
        C = n_classes if n_classes > 2 or (columns and n_classes) else 1
        out = np.empty((len(slots), C))
        prior = np.empty((len(slots), C))
        knn_batch(slots, np.ascontiguousarray(X, dtype=np.float64), ys, learn, self.WX,
                  self.WY, self.ring, self.mean, self.m2, n_classes, self.k, float(labels[0]),
                  float(labels[1]), out, prior)
        return out, prior

    def get_state(self, s: int) -> dict[str, Any]:
        """Row ``s`` as plain data: only the filled part of the window, oldest first."""
        fill, head = int(self.ring[s, FILL]), int(self.ring[s, HEAD])
        order = (np.arange(fill) + (head - fill)) % self.window
        return {"X": self.WX[s, order].copy(), "Y": self.WY[s, order].copy(),
                "seen": float(self.ring[s, SEEN]), "mean": self.mean[s].copy(),
                "m2": self.m2[s].copy()}

    def set_state(self, s: int, state: Mapping[str, Any]) -> None:
        """Row ``s`` from :meth:`get_state`'s output (a longer saved window keeps its newest)."""
        X = np.asarray(state["X"], dtype=np.float64).reshape(-1, self.d)[-self.window:]
        Y = np.asarray(state["Y"], dtype=np.float64)[-self.window:]
        fill = len(Y)
        self.WX[s, :fill] = X
        self.WY[s, :fill] = Y
        self.ring[s] = (fill, fill % self.window, float(state["seen"]))
        self.mean[s] = state["mean"]
        self.m2[s] = state["m2"]
