"""A compiled online forest per key from :mod:`adaptd.learner.trees`'s trees: a study, not wired in.

Built for issue #11 to test whether a forest expert closes ``--model auto``'s gap to river's
ARF on river's Phishing stream (``benchmarks/forest_study.py`` runs it beside the recorded
experts of ``auto``; the answer, in ``benchmarks/results/real_streams.md``, is no).

Online bagging (Oza & Russell 2001, "Online bagging and boosting", AISTATS) of :data:`TREES`
Hoeffding trees, each record learned by each tree with a weight drawn from Poisson(λ = 6) as
in the adaptive random forest (Gomes et al. 2017, "Adaptive random forests for evolving data
stream classification", Machine Learning 106), ARF's split confidence δ = 0.01, and
optionally ARF's random subspaces (:data:`SUBSPACE` "sqrt": each leaf splits on and predicts
from its own ``⌊√d⌋ + 1`` features, MOA's size). Votes are the trees' Krichevsky–Trofimov-
smoothed leaf probabilities weighted by each tree's rate of right answers (ARF's weighted
vote). The trees restart at the key's drift alarm (no per-tree detectors: river's ARF found
3 drifts on river Phishing and scored the same without them).

Randomness is a hash (splitmix64, Steele, Lea & Flood 2014) of the tree, the key's record
count and the node: a key's draws follow from its state alone, so a restored key draws as
one that never stopped. :data:`SALT` changes every draw (a seed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from adaptd.learner import trees
from adaptd.learner.jit import njit
from adaptd.learner.trees import FIELDS, Trees

#: Trees a key's forest holds (ARF's default: 10).
TREES = 10
#: Poisson rate of each tree's weight for a record (ARF's λ).
LAMBDA = 6.0
#: Split confidence of the forest's trees (ARF's).
DELTA = 0.01
#: Leaves each tree may grow, at most.
LEAVES = 32
#: "all": every leaf splits on and predicts from all features (plain online bagging);
#: "sqrt": its own random ``⌊√d⌋ + 1`` of them (ARF's random subspaces, MOA's size).
SUBSPACE = "all"
#: Changes every random draw.
SALT = 1


def features(d: int) -> int:
    """Features a leaf uses under :data:`SUBSPACE`."""
    return d if SUBSPACE == "all" else min(int(math.sqrt(d)) + 1, d)


@njit()
def _hash(a: int, b: int, c: int) -> float:
    """A uniform draw in [0, 1) from three integers (splitmix64's finalizer, chained)."""
    z = np.uint64(0)
    for v in (a, b, c):
        z = z ^ np.uint64(v)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit()
def _poisson(u: float, lam: float) -> int:
    """Poisson(``lam``) by inversion of its CDF at ``u``."""
    k = 0
    p = math.exp(-lam)
    cdf = p
    while u > cdf and k < 100:
        k += 1
        p *= lam / k
        cdf += p
    return k


@njit()
def _subspace(use: np.ndarray, perm: np.ndarray, a: int, b: int, c: int) -> None:
    """The first ``len(use)`` of a random permutation of the features into ``use``
    (Fisher–Yates, partial)."""
    d = len(perm)
    if len(use) == d:  # no subspace: every feature, in order
        for f in range(d):
            use[f] = f
        return
    for f in range(d):
        perm[f] = f
    for j in range(len(use)):
        r = j + int(_hash(a, b, c * 64 + j) * (d - j))
        perm[j], perm[r] = perm[r], perm[j]
        use[j] = perm[j]


@njit()
def forest_batch(slots: np.ndarray, X: np.ndarray, ys: np.ndarray, learn: np.ndarray,
                 reset: np.ndarray, n_classes: int, M: int, lam: float, k_feat: int,
                 salt: int, rule: np.ndarray, seen: np.ndarray, votes: np.ndarray,
                 feat: np.ndarray, thr: np.ndarray, left: np.ndarray, leaf: np.ndarray,
                 size: np.ndarray, cw: np.ndarray, gauss: np.ndarray, count: np.ndarray,
                 out: np.ndarray) -> None:
    """Predict each record by its key's forest (key row ``s``: tree rows ``s·M … s·M + M − 1``),
    then learn it if ``learn``, then restart the key's trees if ``reset``. ``votes``
    ``(rows·M, 2)``: each tree's right answers and answers; ``seen`` ``(rows, 2)``: each
    key's records and restarts. Each leaf splits on and predicts from its own ``k_feat``
    features. ``out`` as
    :func:`adaptd.learner.trees.tree_batch`'s."""
    K = max(n_classes, 2)
    mode = int(rule[3])
    d = X.shape[1]
    freq = np.empty(K)
    nb = np.empty(K)
    acc = np.empty(K)
    perm = np.empty(d, dtype=np.int64)
    uses = np.empty((M, min(k_feat, d)), dtype=np.int64)
    nodes = np.empty(M, dtype=np.int64)
    right = np.empty(M, dtype=np.bool_)
    for i in range(len(slots)):
        s = slots[i]
        x = X[i]
        acc[:] = 0.0
        total = 0.0
        y = int(ys[i])
        for m in range(M):
            r = s * M + m
            node = trees._leaf_of(feat[r], thr[r], left[r], x)
            nodes[m] = node
            _subspace(uses[m], perm, m, node, int(seen[s, 1]))
            slot = leaf[r, node]
            p = trees._leaf_proba(cw[r, slot], gauss[r, slot], count[r, slot], x, K, mode,
                                  freq, nb, uses[m])
            n = cw[r, slot, :K].sum()
            weight = (votes[r, 0] + 1.0) / (votes[r, 1] + 2.0)
            top = 0
            for c in range(K):
                acc[c] += weight * (n * p[c] + 0.5) / (n + 0.5 * K)
                if p[c] > p[top]:
                    top = c
            total += weight
            right[m] = top == y
        if n_classes == 2 and out.shape[1] == 1:
            out[i, 0] = acc[1] / total
        else:
            for c in range(n_classes):
                out[i, c] = acc[c] / total
        if learn[i]:
            for m in range(M):
                r = s * M + m
                votes[r, 0] += 1.0 if right[m] else 0.0
                votes[r, 1] += 1.0
                k = _poisson(_hash(m, int(seen[s, 0]), salt), lam)
                if k == 0:
                    continue
                node = nodes[m]
                slot = leaf[r, node]
                # freq and nb again for this tree (the other trees' overwrote them).
                trees._leaf_proba(cw[r, slot], gauss[r, slot], count[r, slot], x, K, mode,
                                  freq, nb, uses[m])
                trees._learn_leaf(cw[r, slot], gauss[r, slot], count[r, slot], x, y, K, mode,
                                  freq, nb, float(k))
                trees._try_split(r, node, feat, thr, left, leaf, size, cw, gauss, count, K,
                                 rule, uses[m])
            seen[s, 0] += 1.0
        if reset[i]:
            seen[s, 1] += 1.0
            for m in range(M):
                r = s * M + m
                trees._clear(r, feat, leaf, size, cw, gauss, count)
                votes[r] = 0.0


class Forest:
    """Per-key forests for :func:`forest_batch`: key row ``s`` owns tree rows ``s·M …``
    of one :class:`~adaptd.learner.trees.Trees` (which keeps the memory budget)."""

    def __init__(self, n_features: int, n_trees: int | None = None) -> None:
        self.d = n_features
        self.M = TREES if n_trees is None else n_trees
        self.trees = Trees(n_features, LEAVES)
        self.trees.rule[1] = DELTA
        self.votes = np.zeros((0, 2))
        self.seen = np.zeros((0, 2))

    def grow(self, rows: int) -> None:
        old = len(self.seen)
        if rows <= old:
            return
        self.trees.grow(rows * self.M)
        self.votes = np.concatenate([self.votes, np.zeros(((rows - old) * self.M, 2))])
        self.seen = np.concatenate([self.seen, np.zeros((rows - old, 2))])

    def clear(self, s: int) -> None:
        for m in range(self.M):
            self.trees.clear(s * self.M + m)
        self.votes[s * self.M:(s + 1) * self.M] = 0.0
        self.seen[s] = 0.0

    def run(self, slots: np.ndarray, X: np.ndarray, ys: np.ndarray, learn: np.ndarray,
            reset: np.ndarray, n_classes: int, columns: bool = False) -> np.ndarray:
        self.trees.ensure_classes(n_classes)
        out = np.empty((len(slots), n_classes if n_classes > 2 or columns else 1))
        forest_batch(slots, np.ascontiguousarray(X, dtype=np.float64), ys, learn, reset,
                     n_classes, self.M, LAMBDA, features(self.d), SALT, self.trees.rule,
                     self.seen, self.votes,
                     *(self.trees.arrays[k] for k in FIELDS), out)
        return out

    def get_state(self, s: int) -> dict[str, Any]:
        M = self.M
        return {"trees": [self.trees.get_state(s * M + m) for m in range(M)],
                "votes": self.votes[s * M:(s + 1) * M].copy(), "seen": self.seen[s].copy()}

    def set_state(self, s: int, state: Mapping[str, Any]) -> None:
        self.clear(s)
        if len(state["trees"]) != self.M:
            return
        for m, tree in enumerate(state["trees"]):
            self.trees.set_state(s * self.M + m, tree)
        self.votes[s * self.M:(s + 1) * self.M] = state["votes"]
        self.seen[s] = state["seen"]
