"""The ``tree`` expert of :mod:`adaptd.learner.ensemble`: one Hoeffding tree per key, compiled.

Where a stream's boundary is axis-aligned on a few features (river's Phishing, LUdata), trees
win: the kNN vote weighs every standardized feature alike and the linear and MLP models
approach a step slowly. A Hoeffding tree (Domingos & Hulten 2000, "Mining high-speed data
streams", KDD) splits a leaf once the Hoeffding bound
``ε = sqrt(R² ln(1/δ) / 2n)`` (``R = log2 K``, the range of the information gain with ``K``
classes) says that the best split's gain beats the second best's (or no split's) by more than
``ε``, or ``ε < τ`` (a tie). Candidate splits come from one Gaussian per class and feature at
each leaf, as river's and MOA's ``GaussianSplitter``: :data:`N_SPLITS` thresholds evenly
between the leaf's smallest and largest value of the feature, each side's class weights from
the Gaussians' CDF (Pfahringer, Holmes & Kirkby 2008, "Handling numeric attributes in
Hoeffding trees"). The leaves predict "naive Bayes adaptive" (Gama, Rocha & Medas 2003): the
class frequencies or naive Bayes over the same Gaussians, whichever has been right more often
at that leaf, smoothed by Krichevsky–Trofimov (add ½ a class) so that the log loss Hedge
charges stays bounded. Parameters are river's ``HoeffdingTreeClassifier`` defaults (δ = 10⁻⁷,
τ = 0.05, max share to split 0.99) except the grace period: 50 records, not 200, since a key
may see only a few thousand records (measured inside ``auto``: LUdata 0.984 with 200, 0.991
with 50).

The tree never forgets by itself: a key's tree restarts at the key's drift alarm (the linear
candidate's detector), as HAT or ARF restart a subtree or a tree at their own detectors'.

Classification only: a regression task keeps the tree's Hedge weight at 0
(:mod:`adaptd.learner.ensemble`). Classes are discovered online: the class dimension of the
leaf statistics grows (:meth:`Trees.ensure_classes`).

State per key (a row of each array, saved with the key): the nodes (split feature, threshold,
left child, leaf slot) and, per leaf slot, class weights, per class and feature the Gaussian's
weight, mean, M2, smallest and largest value, and the leaf's counts of right answers and
weight at its last split attempt. At most :data:`LEAVES` leaves a key (so ``5·L·K·d`` floats:
118 KB with 46 features, 2 classes); a full tree stops growing and its leaves keep learning.
All keys' leaf statistics together hold at most :data:`FLOAT_BUDGET` floats (32 MiB): beyond
that (many keys, many classes or features) every key's tree may grow fewer leaves, at least
:data:`MIN_LEAVES`, as the neighbours' windows shrink beyond 256 keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from adaptd.learner.jit import njit
from adaptd.learner.key_rows import KeyRows

#: Leaves a key's tree may grow, at most (nodes: ``2·LEAVES − 1``).
LEAVES = 32
#: Floats of leaf statistics kept over all keys (``rows · leaves · 5·K·d``): beyond it every
#: key's tree may grow fewer leaves (no fewer than :data:`MIN_LEAVES`), so memory stays
#: bounded with many keys.
FLOAT_BUDGET = 1 << 22
MIN_LEAVES = 4
GRACE = 50.0
DELTA = 1e-7
TAU = 0.05
#: Thresholds tried per feature between the leaf's extremes (river's ``n_splits``).
N_SPLITS = 10
#: No split is tried at a leaf whose majority class holds this share or more.
MAX_SHARE = 0.99
#: A split must leave at least this share of the leaf's weight on each side.
MIN_BRANCH = 0.01
#: Leaf predictions (see :func:`_leaf_proba`).
FREQUENCIES, BAYES, ADAPTIVE = range(3)
LEAF = ADAPTIVE
#: Columns of ``count``: right answers of the class frequencies, of naive Bayes; weight at the
#: last split attempt.
MC, NB, EVAL = range(3)
#: Columns of ``gauss``'s last axis.
GW, GMEAN, GM2, GMIN, GMAX = range(5)


@njit()
def _leaf_of(feat: np.ndarray, thr: np.ndarray, left: np.ndarray, x: np.ndarray) -> int:
    node = 0
    while feat[node] >= 0:
        node = left[node] + (0 if x[feat[node]] <= thr[node] else 1)
    return node


@njit()
def _gauss_log_pdf(g: np.ndarray, x: float, floor: float) -> float:
    # M2 may sit a hair below 0 after a first weighted record (w·x / w rounds off x): read 0.
    sd = max(math.sqrt(max(g[GM2], 0.0) / g[GW]), floor) if g[GW] > 1.0 else floor
    z = (x - g[GMEAN]) / sd
    return -0.5 * z * z - math.log(sd)


@njit()
def _feature_range(gauss: np.ndarray, f: int, K: int) -> tuple[float, float]:
    """The least and greatest value of feature ``f`` seen at a leaf, over the classes with
    records there (``inf, -inf`` when none has)."""
    lo, hi = np.inf, -np.inf
    for c in range(K):
        if gauss[c, f, GW] > 0.0:
            lo = min(lo, gauss[c, f, GMIN])
            hi = max(hi, gauss[c, f, GMAX])
    return lo, hi


@njit()
def _has_records(gauss: np.ndarray, c: int) -> bool:
    """Whether class ``c`` has records of its own at this leaf (not only weight from a split;
    never with no features)."""
    return gauss.shape[1] > 0 and gauss[c, 0, GW] > 0.0


@njit()
def _naive_bayes(cw: np.ndarray, gauss: np.ndarray, x: np.ndarray, K: int,
                 out: np.ndarray, use: np.ndarray) -> None:
    """Naive Bayes' class probabilities for ``x`` at a leaf into ``out[:K]``: the class
    weights times each feature's Gaussian density; a class without records of its own at the
    leaf has likelihood 0, as in river's. A leaf with no such class (a new one) gives its
    class weights, normalized. Over the features ``use`` lists (all for the tree expert; a
    forest's leaf its own random subspace)."""
    seen = False
    for c in range(K):
        seen = seen or _has_records(gauss, c)
    n = cw[:K].sum()
    if not seen:
        for c in range(K):
            out[c] = cw[c] / n
        return
    for c in range(K):
        out[c] = math.log(cw[c] / n) if _has_records(gauss, c) else -np.inf
    for f in use:
        lo, hi = _feature_range(gauss, f, K)
        floor = 1e-3 * (hi - lo) + 1e-9  # a deviation of 0 (one value seen) made finite
        for c in range(K):
            if gauss[c, f, GW] > 0.0:
                out[c] += _gauss_log_pdf(gauss[c, f], x[f], floor)
    top = out[:K].max()
    total = 0.0
    for c in range(K):
        out[c] = math.exp(out[c] - top) if _has_records(gauss, c) else 0.0
        total += out[c]
    for c in range(K):
        out[c] /= total


@njit()
def _leaf_proba(cw: np.ndarray, gauss: np.ndarray, count: np.ndarray, x: np.ndarray,
                K: int, mode: int, freq: np.ndarray, nb: np.ndarray, use: np.ndarray
                ) -> np.ndarray:
    """The leaf's class probabilities for ``x``, unsmoothed, by ``mode``: the class
    frequencies (:data:`FREQUENCIES`), naive Bayes (:data:`BAYES`), or whichever of the two
    has been right more often at this leaf, naive Bayes on a tie (:data:`ADAPTIVE`). Fills
    ``freq`` and (unless frequencies only) ``nb``, and returns the one chosen. An empty leaf:
    uniform."""
    n = cw[:K].sum()
    for c in range(K):
        freq[c] = cw[c] / n if n > 0.0 else 1.0 / K
    if n <= 0.0 or mode == FREQUENCIES:
        return freq
    _naive_bayes(cw, gauss, x, K, nb, use)
    if mode == BAYES or count[NB] >= count[MC]:
        return nb
    return freq


@njit()
def _left_weight(g: np.ndarray, v: float) -> float:
    """The weight of one class's Gaussian ``g`` at or below ``v``: all of it beyond the
    class's largest value, none below its smallest, else its CDF at ``v``."""
    if g[GW] <= 0.0 or v < g[GMIN]:
        return 0.0
    if v >= g[GMAX]:
        return g[GW]
    sd = math.sqrt(max(g[GM2], 0.0) / g[GW]) if g[GW] > 1.0 else 0.0
    if not sd > 0.0:
        return g[GW] if v >= g[GMEAN] else 0.0
    return g[GW] * 0.5 * (1.0 + math.erf((v - g[GMEAN]) / (sd * math.sqrt(2.0))))


@njit()
def _entropy(w: np.ndarray) -> float:
    n = w.sum()
    h = 0.0
    for v in w:
        if v > 0.0:
            h -= v / n * math.log2(v / n)
    return h


@njit()
def _best_split(cw: np.ndarray, gauss: np.ndarray, K: int, use: np.ndarray
                ) -> tuple[int, float, float, float]:
    """(feature, threshold, its gain, the runner-up feature's gain (0: no split)) of a leaf,
    among the features ``use`` lists (all of them for the tree expert; a random subspace in
    the study forest of ``benchmarks/forest_expert.py``)."""
    n = cw[:K].sum()
    pre = _entropy(cw[:K])
    lhs = np.empty(K)
    rhs = np.empty(K)
    best_f, best_v, best, second = -1, 0.0, 0.0, 0.0
    for f in use:
        lo, hi = _feature_range(gauss, f, K)
        if not hi > lo:
            continue
        f_best, f_v = -np.inf, 0.0
        for i in range(N_SPLITS):
            v = lo + (hi - lo) * (i + 1) / (N_SPLITS + 1)
            for c in range(K):
                lhs[c] = _left_weight(gauss[c, f], v)
                rhs[c] = cw[c] - lhs[c] if cw[c] > lhs[c] else 0.0
            nl, nr = lhs.sum(), rhs.sum()
            if nl < MIN_BRANCH * n or nr < MIN_BRANCH * n:
                continue
            gain = pre - (nl * _entropy(lhs) + nr * _entropy(rhs)) / (nl + nr)
            if gain > f_best:
                f_best, f_v = gain, v
        if f_best > best:
            second = best
            best_f, best_v, best = f, f_v, f_best
        elif f_best > second:
            second = f_best
    return best_f, best_v, best, second


@njit()
def _learn_leaf(cw: np.ndarray, gauss: np.ndarray, count: np.ndarray, x: np.ndarray,
                y: int, K: int, mode: int, freq: np.ndarray, nb: np.ndarray,
                w: float) -> None:
    """Count which leaf predictor was right (``mode`` :data:`ADAPTIVE`; ``freq`` and ``nb``:
    their predictions for ``x``, from :func:`_leaf_proba`), then add ``(x, y)`` with weight
    ``w`` (1 for the tree expert; a bagged forest's trees draw it, ``benchmarks/forest_expert.py``;
    weighted Welford: West 1979, "Updating mean and variance estimates")."""
    if mode == ADAPTIVE and cw[:K].sum() > 0.0:
        count[MC] += w if freq[y] >= freq[:K].max() else 0.0
        count[NB] += w if nb[y] >= nb[:K].max() else 0.0
    cw[y] += w
    g = gauss[y]
    for f in range(len(x)):
        if g[f, GW] == 0.0:
            g[f, GMIN] = g[f, GMAX] = x[f]
        g[f, GW] += w
        delta = x[f] - g[f, GMEAN]
        g[f, GMEAN] += w * delta / g[f, GW]
        g[f, GM2] += w * delta * (x[f] - g[f, GMEAN])
        g[f, GMIN] = min(g[f, GMIN], x[f])
        g[f, GMAX] = max(g[f, GMAX], x[f])


@njit()
def _try_split(s: int, node: int, feat: np.ndarray, thr: np.ndarray, left: np.ndarray,
               leaf: np.ndarray, size: np.ndarray, cw: np.ndarray, gauss: np.ndarray,
               count: np.ndarray, K: int, rule: np.ndarray, use: np.ndarray) -> None:
    """Split leaf ``node`` of key row ``s`` if the Hoeffding bound allows and room is left;
    ``rule``: the grace period, δ and τ; ``use``: the features it may split on."""
    slot = leaf[s, node]
    n = cw[s, slot, :K].sum()
    grace, delta, tau = rule[0], rule[1], rule[2]
    if n - count[s, slot, EVAL] < grace:
        return
    count[s, slot, EVAL] = n
    L = cw.shape[1]
    if size[s, 1] >= L or cw[s, slot, :K].max() >= MAX_SHARE * n:
        return
    f, v, best, second = _best_split(cw[s, slot], gauss[s, slot], K, use)
    if f < 0:
        return
    R = math.log2(max(K, 2))
    eps = math.sqrt(R * R * math.log(1.0 / delta) / (2.0 * n))
    if not (best - second > eps or eps < tau):
        return
    # Children: the left one takes the parent's leaf slot, the right one a new one; each
    # starts from the class weights the Gaussians put on its side.
    lhs = np.empty(K)
    for c in range(K):
        lhs[c] = _left_weight(gauss[s, slot, c, f], v)
    new_slot = int(size[s, 1])
    a = int(size[s, 0])
    feat[s, node], thr[s, node], left[s, node] = f, v, a
    feat[s, a] = feat[s, a + 1] = -1
    leaf[s, a], leaf[s, a + 1] = slot, new_slot
    for c in range(K):
        cw[s, new_slot, c] = max(cw[s, slot, c] - lhs[c], 0.0)
        cw[s, slot, c] = lhs[c]
    gauss[s, slot] = 0.0
    gauss[s, new_slot] = 0.0
    count[s, slot] = 0.0
    count[s, new_slot] = 0.0
    size[s, 0] += 2
    size[s, 1] += 1


@njit()
def _clear(s: int, feat: np.ndarray, leaf: np.ndarray, size: np.ndarray, cw: np.ndarray,
           gauss: np.ndarray, count: np.ndarray) -> None:
    feat[s, 0] = -1
    leaf[s, 0] = 0
    size[s, 0] = 1
    size[s, 1] = 1
    cw[s] = 0.0
    gauss[s] = 0.0
    count[s] = 0.0


@njit()
def tree_batch(slots: np.ndarray, X: np.ndarray, ys: np.ndarray, learn: np.ndarray,
               reset: np.ndarray, n_classes: int, rule: np.ndarray, feat: np.ndarray, thr: np.ndarray,
               left: np.ndarray, leaf: np.ndarray, size: np.ndarray, cw: np.ndarray,
               gauss: np.ndarray, count: np.ndarray, out: np.ndarray) -> None:
    """Predict each record from its key's tree, then learn it if ``learn``, then restart the
    key's tree if ``reset`` (its drift alarm on that record). ``ys``: class indices;
    ``out`` ``(n, C)``: P(y = 1) (``C = 1``) or the ``n_classes`` probabilities."""
    K = max(n_classes, 2)
    mode = int(rule[3])
    freq = np.empty(K)
    nb = np.empty(K)
    use = np.arange(X.shape[1])
    for i in range(len(slots)):
        s = slots[i]
        x = X[i]
        node = _leaf_of(feat[s], thr[s], left[s], x)
        slot = leaf[s, node]
        p = _leaf_proba(cw[s, slot], gauss[s, slot], count[s, slot], x, K, mode, freq, nb,
                        use)
        n = cw[s, slot, :K].sum()
        # Krichevsky–Trofimov: a bounded log loss from the first record.
        if n_classes == 2 and out.shape[1] == 1:
            out[i, 0] = (n * p[1] + 0.5) / (n + 0.5 * K)
        else:
            for c in range(n_classes):
                out[i, c] = (n * p[c] + 0.5) / (n + 0.5 * K)
        if learn[i]:
            _learn_leaf(cw[s, slot], gauss[s, slot], count[s, slot], x, int(ys[i]), K, mode,
                        freq, nb, 1.0)
            _try_split(s, node, feat, thr, left, leaf, size, cw, gauss, count, K, rule, use)
        if reset[i]:
            _clear(s, feat, leaf, size, cw, gauss, count)


#: The arrays of a key's tree, in the order :func:`tree_batch` takes them.
FIELDS = ("feat", "thr", "left", "leaf", "size", "cw", "gauss", "count")


class Trees(KeyRows):
    """Per-key trees for :func:`tree_batch`, in rows that grow as keys arrive; a freed row is
    reused. Called from the ensemble's thread only."""

    def __init__(self, n_features: int, leaves: int | None = None) -> None:
        self.d = n_features
        self.leaves = LEAVES if leaves is None else leaves
        self.classes = 2
        self.rule = np.array([GRACE, DELTA, TAU, LEAF])
        self.arrays = self._empty(0)

    def _empty(self, rows: int) -> dict[str, np.ndarray]:
        N, L, K = 2 * self.leaves - 1, self.leaves, self.classes
        return {"feat": np.full((rows, N), -1, dtype=np.int64),
                "thr": np.zeros((rows, N)),
                "left": np.zeros((rows, N), dtype=np.int64),
                "leaf": np.zeros((rows, N), dtype=np.int64),
                "size": np.ones((rows, 2), dtype=np.int64),
                "cw": np.zeros((rows, L, K)),
                "gauss": np.zeros((rows, L, K, self.d, 5)),
                "count": np.zeros((rows, L, 3))}

    def _widen(self, extra: int) -> None:
        cw, gauss = self.arrays["cw"], self.arrays["gauss"]
        self.arrays["cw"] = np.pad(cw, ((0, 0), (0, 0), (0, extra)))
        self.arrays["gauss"] = np.pad(gauss, ((0, 0), (0, 0), (0, extra), (0, 0), (0, 0)))

    def _fit_budget(self, rows: int, n_classes: int) -> None:
        """Fewer leaves a key if ``rows`` keys of ``n_classes`` would pass
        :data:`FLOAT_BUDGET`: the existing rows are rebuilt, and a tree with more leaves than
        that restarts."""
        per_leaf = 5 * n_classes * max(self.d, 1)
        leaves = max(MIN_LEAVES, min(self.leaves, FLOAT_BUDGET // (max(rows, 1) * per_leaf)))
        if leaves >= self.leaves:
            return
        states = [self.get_state(s) for s in range(self.n_rows())]
        self.leaves = leaves
        self.arrays = self._empty(len(states))
        for s, state in enumerate(states):
            self.set_state(s, state)

    def clear(self, s: int) -> None:
        """Row ``s`` as a new key's: one empty leaf."""
        a = self.arrays
        _clear(s, a["feat"], a["leaf"], a["size"], a["cw"], a["gauss"], a["count"])

    def _batch(self, slots: np.ndarray, X: np.ndarray, ys: np.ndarray, learn: np.ndarray,
               reset: np.ndarray, n_classes: int, out: np.ndarray) -> None:
        tree_batch(slots, X, ys, learn, reset, n_classes, self.rule,
                   *(self.arrays[k] for k in FIELDS), out)

    def get_state(self, s: int) -> dict[str, Any]:
        """Row ``s`` as plain data: the used nodes and leaf slots only."""
        a = self.arrays
        nodes, slots = (int(v) for v in a["size"][s])
        return {"feat": a["feat"][s, :nodes].copy(), "thr": a["thr"][s, :nodes].copy(),
                "left": a["left"][s, :nodes].copy(), "leaf": a["leaf"][s, :nodes].copy(),
                "cw": a["cw"][s, :slots].copy(), "gauss": a["gauss"][s, :slots].copy(),
                "count": a["count"][s, :slots].copy()}

    def set_state(self, s: int, state: Mapping[str, Any]) -> None:
        """Row ``s`` from :meth:`get_state`'s output (a tree saved with more leaves than this
        one holds restarts)."""
        cw = np.asarray(state["cw"], dtype=np.float64)
        nodes, slots, K = len(state["feat"]), cw.shape[0], cw.shape[1]
        self.ensure_classes(K)
        self.clear(s)
        if slots > self.leaves:
            return
        a = self.arrays
        for name in ("feat", "thr", "left", "leaf"):
            a[name][s, :nodes] = state[name]
        a["size"][s] = (nodes, slots)
        a["cw"][s, :slots, :K] = cw
        a["gauss"][s, :slots, :K] = np.asarray(state["gauss"], dtype=np.float64)
        a["count"][s, :slots] = state["count"]
