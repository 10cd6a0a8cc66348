"""The Hedge update of :mod:`adaptd.learner.ensemble`, per record, compiled.

One record at a time, in stream order, because a key's weights after a record depend on its
loss: a Python loop over the batch cost about 34 µs a record (small-array NumPy calls); this
costs about a microsecond. The why of each rule (η, the loss units, fixed share, the simple
experts) is in :mod:`adaptd.learner.ensemble`.

Per key, one row of ``W`` (the experts' weights), of ``past`` (the mean of its past posteriors)
and of ``rows``: the label count, the
label mean, the last label, and (classification) the count of consecutive label pairs and of
repeats among them. ``labels`` = ``(count, mean, m2)`` of every label (regression: the unit
of the charged loss, Welford's update).
"""

from __future__ import annotations

import numpy as np

from adaptd.learner.jit import njit

#: Columns of a key's row in ``rows``.
COUNT, MEAN, LAST, PAIRS, REPEATS = range(5)


@njit()
def _simple(rows: np.ndarray, s: int, labels: np.ndarray, classification: bool,
            preds: np.ndarray, at: int) -> None:
    """``prior`` and ``last`` of key row ``s`` into ``preds[at]``, ``preds[at + 1]``."""
    cnt, m, last = rows[s, COUNT], rows[s, MEAN], rows[s, LAST]
    if classification:  # Laplace's rule of succession; the last label with P(repeat)
        preds[at] = (m * cnt + 1.0) / (cnt + 2.0)
        if np.isnan(last):
            preds[at + 1] = 0.5
        else:
            stay = (rows[s, REPEATS] + 1.0) / (rows[s, PAIRS] + 2.0)
            preds[at + 1] = stay if last == 1.0 else 1.0 - stay
        return
    fallback = labels[1] if labels[0] > 0 else 0.0  # a new key: every key's mean so far
    preds[at] = m if cnt > 0 else fallback
    preds[at + 1] = last if cnt > 0 else fallback


@njit()
def _unit(labels: np.ndarray, y: float) -> float:
    """The label variance the squared loss is measured in (``y²`` floored at 1 before two
    labels; a zero deviation counts as 1, as in :class:`~adaptd.learner.scaling.RunningMoments`)."""
    if labels[0] < 2:
        return max(y * y, 1.0)
    sd = np.sqrt(labels[2] / labels[0])
    if not sd > 1e-12 * max(abs(labels[1]), 1.0):
        sd = 1.0
    return max(sd * sd, 1e-12)


@njit()
def _log_loss(p: float, y: float, p_clip: float) -> float:
    p = min(max(p, p_clip), 1.0 - p_clip)
    return -np.log(p) if y == 1.0 else -np.log(1.0 - p)


@njit()
def _learn(W: np.ndarray, past: np.ndarray, s: int, charged: np.ndarray, eta: float,
           share: float, seen: float, to_past: float) -> None:
    """Key row ``s``: the loss update ``w_j ∝ w_j e^(−η ℓ_j)``, then a share of the weight
    mixed back: the fraction ``to_past`` of it to the mean of the key's past posteriors
    ``past`` (the start's uniform one included: ``seen`` labels before this one made
    ``seen + 1`` of them), the rest evenly. ``to_past`` = 1 is "mixing past posteriors" with
    the uniform past (Bousquet & Warmuth 2002, "Tracking a small set of experts by mixing
    past posteriors", JMLR 3: regret to the best sequence of switches among a *small set*
    of experts, paying for a return to a once-good expert far less than for a new one);
    0 is fixed share. A vanished total (every weight underflowed) starts over."""
    E = W.shape[1]
    total = 0.0
    for j in range(E):
        W[s, j] *= np.exp(-eta * charged[j])
        total += W[s, j]
    if not (total > 0.0 and np.isfinite(total)):
        for j in range(E):
            W[s, j] = 1.0 / E
        return
    for j in range(E):  # written so that to_past = 0 rounds as fixed share always did
        w = W[s, j]
        W[s, j] = (1.0 - share) * w / total + share * to_past * past[s, j] \
            + share * (1.0 - to_past) / E
        past[s, j] += (w / total - past[s, j]) / (seen + 2.0)


@njit()
def _count_label(rows: np.ndarray, s: int, y: float) -> None:
    """Key row ``s`` after label ``y``: its count, its last label, and the consecutive pairs
    and repeats the ``last`` expert's repeat rate comes from (the mean is the caller's)."""
    last = rows[s, LAST]
    if not np.isnan(last):
        rows[s, PAIRS] += 1.0
        rows[s, REPEATS] += 1.0 if last == y else 0.0
    rows[s, COUNT] += 1.0
    rows[s, LAST] = y


@njit()
def hedge_batch(slots: np.ndarray, cand: np.ndarray, ys: np.ndarray, skip: np.ndarray,
                W: np.ndarray, past: np.ndarray, rows: np.ndarray, labels: np.ndarray,
                classification: bool, eta: float, share: float, to_past: float, cap: float,
                p_clip: float, y_pred: np.ndarray, loss: np.ndarray) -> None:
    """Mix, then learn, record by record. ``cand`` ``(n, C)``: the candidates' predictions;
    ``skip``: labelled records the candidates skipped (non-finite values), not charged.
    Writes ``y_pred`` and ``loss`` (left as they are where a record is not charged)."""
    n, n_cand = cand.shape
    E = W.shape[1]
    preds = np.empty(E)
    charged = np.empty(E)
    for i in range(n):
        s = slots[i]
        for j in range(n_cand):
            preds[j] = cand[i, j]
        _simple(rows, s, labels, classification, preds, n_cand)
        mix = 0.0
        for j in range(E):
            mix += W[s, j] * preds[j]
        y_pred[i] = mix
        y = ys[i]
        if np.isnan(y) or skip[i]:
            continue
        if classification:
            for j in range(E):
                charged[j] = _log_loss(preds[j], y, p_clip)
            loss[i] = _log_loss(mix, y, p_clip)
        else:
            var = _unit(labels, y)
            for j in range(E):
                charged[j] = min((preds[j] - y) ** 2 / var, cap)
            loss[i] = (mix - y) ** 2
        _learn(W, past, s, charged, eta, share, rows[s, COUNT], to_past)
        _count_label(rows, s, y)
        rows[s, MEAN] += (y - rows[s, MEAN]) / rows[s, COUNT]
        if not classification:
            labels[0] += 1.0
            delta = y - labels[1]
            labels[1] += delta / labels[0]
            labels[2] += delta * (y - labels[1])


@njit()
def hedge_classes(slots: np.ndarray, P: np.ndarray, ys: np.ndarray, skip: np.ndarray,
                  W: np.ndarray, past: np.ndarray, rows: np.ndarray, eta: float, share: float,
                  to_past: float, p_clip: float, mix: np.ndarray, loss: np.ndarray) -> None:
    """Multi-class: mix the experts' class probabilities ``P`` ``(n, E, K)`` (the ``last``
    expert's row is filled here from the key's last label and repeat rate), then learn on
    the log loss of the true class. ``ys``: class indices (NaN: unlabelled). Writes
    ``mix`` ``(n, K)`` and ``loss``."""
    n, E, K = P.shape
    charged = np.empty(E)
    for i in range(n):
        s = slots[i]
        last = rows[s, LAST]
        if np.isnan(last) or K < 2:
            for c in range(K):
                P[i, E - 1, c] = 1.0 / K
        else:
            stay = (rows[s, REPEATS] + 1.0) / (rows[s, PAIRS] + 2.0)
            for c in range(K):
                P[i, E - 1, c] = (1.0 - stay) / (K - 1)
            P[i, E - 1, int(last)] = stay
        for c in range(K):
            acc = 0.0
            for j in range(E):
                acc += W[s, j] * P[i, j, c]
            mix[i, c] = acc
        y = ys[i]
        if np.isnan(y) or skip[i]:
            continue
        t = int(y)
        for j in range(E):
            charged[j] = -np.log(min(max(P[i, j, t], p_clip), 1.0))
        loss[i] = -np.log(min(max(mix[i, t], p_clip), 1.0))
        _learn(W, past, s, charged, eta, share, rows[s, COUNT], to_past)
        _count_label(rows, s, y)
