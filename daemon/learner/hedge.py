"""The Hedge update of :mod:`adaptd.learner.ensemble`, per record, compiled.

One record at a time, in stream order, because a key's weights after a record depend on its
loss: a Python loop over the batch cost about 34 µs a record (small-array NumPy calls); this
costs about a microsecond. The why of each rule (η, the loss units, fixed share, the simple
experts) is in :mod:`adaptd.learner.ensemble`.

Per key, one row of ``W`` (the experts' weights), of ``past`` (the mean of its past posteriors)
and of ``rows``: the label count, the label mean, the last label, and (classification) the
count of consecutive label pairs and of repeats among them; regression also has the
exponentiated-gradient weights ``G`` with their own past posteriors, and ``top``, the weights
of its three mixtures; the stream's Hedge row ``S`` is every key's (:func:`hedge_regression`). ``labels`` = ``(count, mean, m2)`` of every
label (regression: the unit of the charged loss, Welford's update).
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
def _predictions(cand: np.ndarray, i: int, rows: np.ndarray, s: int, labels: np.ndarray,
                 classification: bool, preds: np.ndarray) -> None:
    """Every expert's prediction of record ``i`` (key row ``s``) into ``preds``: the
    candidates' from ``cand``, then the simple experts'."""
    n_cand = cand.shape[1]
    for j in range(n_cand):
        preds[j] = cand[i, j]
    _simple(rows, s, labels, classification, preds, n_cand)


@njit()
def _per_expert(cand: np.ndarray, E: int) -> tuple[np.ndarray, np.ndarray]:
    """Scratch rows of ``E`` experts' predictions and charged losses, once ``cand`` is known
    to give one column a candidate expert (the candidates', then prior and last)."""
    if cand.shape[1] + 2 != E:
        raise ValueError("one column of predictions a candidate expert")
    return np.empty(E), np.empty(E)


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
def _reweigh(W: np.ndarray, s: int, charged: np.ndarray, eta: float) -> float:
    """Key row ``s`` of ``W`` after the loss update ``w_j ← w_j e^(−η ℓ_j)``; returns the new
    total (not yet normalized)."""
    total = 0.0
    for j in range(W.shape[1]):
        W[s, j] *= np.exp(-eta * charged[j])
        total += W[s, j]
    return total


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
    total = _reweigh(W, s, charged, eta)
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
                W: np.ndarray, past: np.ndarray, rows: np.ndarray, eta: float, share: float,
                to_past: float, p_clip: float, y_pred: np.ndarray, loss: np.ndarray) -> None:
    """Binary classification: mix P(class 1), then learn on log loss, record by record.
    ``cand`` ``(n, C)``: the candidates' predictions; ``skip``: labelled records the candidates
    skipped (non-finite values), not charged. Writes ``y_pred`` and ``loss`` (left as they
    are where a record is not charged)."""
    n = cand.shape[0]
    E = W.shape[1]
    preds, charged = _per_expert(cand, E)
    unused = np.zeros(3)  # every label's moments: regression's
    for i in range(n):
        s = slots[i]
        _predictions(cand, i, rows, s, unused, True, preds)
        mix = 0.0
        for j in range(E):
            mix += W[s, j] * preds[j]
        y_pred[i] = mix
        y = ys[i]
        if np.isnan(y) or skip[i]:
            continue
        for j in range(E):
            charged[j] = _log_loss(preds[j], y, p_clip)
        loss[i] = _log_loss(mix, y, p_clip)
        _learn(W, past, s, charged, eta, share, rows[s, COUNT], to_past)
        _count_label(rows, s, y)
        rows[s, MEAN] += (y - rows[s, MEAN]) / rows[s, COUNT]


@njit()
def hedge_regression(slots: np.ndarray, cand: np.ndarray, ys: np.ndarray, skip: np.ndarray,
                     W: np.ndarray, past: np.ndarray, G: np.ndarray, g_past: np.ndarray,
                     S: np.ndarray, s_past: np.ndarray, top: np.ndarray, rows: np.ndarray, labels: np.ndarray, eta: float,
                     eta_eg: float, eta_top: float, share: float, to_past: float, cap: float,
                     y_pred: np.ndarray, loss: np.ndarray) -> None:
    """Regression, record by record: three mixtures of the same experts, and a mixture of them.

    - ``W``: Hedge on each expert's own squared loss, which follows the key's best expert (of
      the moment: mixing past posteriors).
    - ``S`` (one row, every key's): the same Hedge on every key's losses: which expert suits
      the stream, learnt from all its keys at once, where a key's own Hedge pays its regret
      ``ln N / η`` once per key (sp500, ten keys whose best forecast is their running mean).
    - ``G``: exponentiated gradient on the gradient of the mixture's own squared loss in its
      weights, ``2 (ŷ − y) p_j`` (Kivinen & Warmuth 1997, "Exponentiated gradient versus
      gradient descent for linear predictors", Inf. Comput. 132: regret to the best *convex
      combination* of the experts, which can beat every one of them when their errors
      differ).
    - ``top`` (three weights per key): Hedge over the three mixtures' predictions. The squared
      loss of a bounded prediction is exp-concave, so a weighted average of forecasters this
      way is within a constant ``ln 3 / η`` of the best of them (Kivinen & Warmuth 1999,
      "Averaging expert predictions", EuroCOLT; Cesa-Bianchi & Lugosi 2006, §3.3), and below
      every one when they err differently.

    Losses are in units of the label variance (:func:`_unit`), capped at ``cap``; the EG
    gradients are charged from the least of them (which leaves the normalized update as it
    is) and capped at ``cap`` too. ``W`` and ``G`` both mix their share back as
    :func:`_learn` says, ``G`` to its own past posteriors. Writes ``y_pred`` and ``loss``."""
    n = cand.shape[0]
    E = W.shape[1]
    preds, charged = _per_expert(cand, E)
    three = np.empty(3)
    for i in range(n):
        s = slots[i]
        _predictions(cand, i, rows, s, labels, False, preds)
        h = 0.0
        g = 0.0
        st = 0.0
        for j in range(E):
            h += W[s, j] * preds[j]
            g += G[s, j] * preds[j]
            st += S[0, j] * preds[j]
        mix = top[s, 0] * h + top[s, 1] * g + top[s, 2] * st
        y_pred[i] = mix
        y = ys[i]
        if np.isnan(y) or skip[i]:
            continue
        var = _unit(labels, y)
        loss[i] = (mix - y) ** 2
        seen = rows[s, COUNT]
        for j in range(E):
            charged[j] = min((preds[j] - y) ** 2 / var, cap)
        _learn(W, past, s, charged, eta, share, seen, to_past)
        _learn(S, s_past, 0, charged, eta, share, labels[0], to_past)
        grad = 2.0 * (g - y) / var
        low = np.inf  # the gradients are charged from the least of the weighted experts'
        for j in range(E):
            charged[j] = grad * preds[j]
            if G[s, j] > 0.0:
                low = min(low, charged[j])
        for j in range(E):
            charged[j] = min(max(charged[j] - low, 0.0), cap)
        _learn(G, g_past, s, charged, eta_eg, share, seen, to_past)
        three[0] = min((h - y) ** 2 / var, cap)
        three[1] = min((g - y) ** 2 / var, cap)
        three[2] = min((st - y) ** 2 / var, cap)
        total = _reweigh(top, s, three, eta_top)
        for j in range(3):
            top[s, j] = top[s, j] / total if total > 0.0 and np.isfinite(total) else 1.0 / 3
        _count_label(rows, s, y)
        rows[s, MEAN] += (y - rows[s, MEAN]) / rows[s, COUNT]
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
