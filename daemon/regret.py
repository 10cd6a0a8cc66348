"""Regret against two comparators: a shadow baseline learner and the best fixed model in hindsight.

- The *baseline* is plain AdaGrad (per-record gradients by default, ``baseline_window``) from
  a fixed init, never reset and never meta-learned, run
  by the learner on the same labelled records (its rows live next to the keys' own rows, so
  it costs one more row per batched step). ``regret{comparator="baseline"}`` is adaptd's
  cumulative loss minus the baseline's.
- The *hindsight* comparator fits the best fixed model on each closed segment's records (the
  last ``buffer`` of them) and ``regret{comparator="hindsight"}`` sums, over closed segments,
  adaptd's loss on those records minus the fitted model's. For linear regression the fit is
  exact (ridge with a tiny penalty); the MLP's comparator keeps the segment's final hidden
  layers and fits the output layer exactly (see :func:`hindsight_loss`).
"""

from __future__ import annotations

import math

import numpy as np

from adaptd.learner.models import (
    Family,
    LinearFamily,
    MLPFamily,
    SoftmaxFamily,
    multiclass_loss,
    pointwise_loss,
    softmax,
)
from adaptd.learner.step import step_rows
from adaptd.settings import RegretConfig


def hindsight_loss(family: Family, config: RegretConfig, X: np.ndarray, Y: np.ndarray,
                   theta_end: np.ndarray) -> float:
    """See :func:`_fit`; NaN when no finite comparator loss could be computed (the caller
    then leaves the segment out of the hindsight regret)."""
    with np.errstate(all="ignore"):
        try:
            value = _fit(family, config, X, Y, theta_end)
        except np.linalg.LinAlgError:
            return float("nan")
    return value if np.isfinite(value) else float("nan")


def linear_hindsight_losses(family: LinearFamily, config: RegretConfig, X: np.ndarray,
                            Y: np.ndarray, thetas: np.ndarray) -> list[float]:
    """:func:`hindsight_loss` of a linear regression ``family`` for each of ``k`` segments of
    the same length at once: ``X`` ``(k, n, d)``, ``Y`` ``(k, n)``, ``thetas`` ``(k, d + 1)``.

    The same bits, segment by segment: a stacked ``matmul`` or ``solve`` runs the same BLAS or
    LAPACK call on each matrix of the stack as on one matrix alone (``tests/unit/test_regret.py``
    checks), so only NumPy's per-call cost is shared: about 90 µs a fit one by one, 50 µs
    each for two, 17 µs for 24 (the segments a batch closes: 1-2 at 100k records/s in small
    batches, dozens once a backlog makes them big). A singular system in the stack (a
    ``LinAlgError``) sends the stack one by one."""
    k, n, d = X.shape
    with np.errstate(all="ignore"):
        Fb = np.empty((k, n, d + 1))  # _with_intercept's, per segment
        Fb[:, :, :d] = X
        Fb[:, :, d] = 1.0
        FbT = Fb.transpose(0, 2, 1)
        try:
            w = np.linalg.solve(FbT @ Fb + _ridge(d + 1), FbT @ Y[:, :, None])
        except np.linalg.LinAlgError:
            return [hindsight_loss(family, config, X[j], Y[j], thetas[j]) for j in range(k)]
        fitted = (((Fb @ w)[..., 0] - Y) ** 2).sum(axis=1)
        # LinearFamily.forward's matmul and intercept, then pointwise_loss, per segment.
        own = (((X @ thetas[:, :d, None])[..., 0] + thetas[:, d, None] - Y) ** 2).sum(axis=1)
    values = [_lower(f, o) for f, o in zip(fitted.tolist(), own.tolist())]
    return [v if math.isfinite(v) else float("nan") for v in values]


def _fit(family: Family, config: RegretConfig, X: np.ndarray, Y: np.ndarray,
         theta_end: np.ndarray) -> float:
    """Summed loss on ``(X (n, d), Y (n,))`` of the best fixed model we can fit to them.

    Called on segment close; blocks for the fit. The comparator class is the model family
    with the segment's final hidden layers frozen (all of it for the linear models): its output
    layer is then a linear model in known features, fitted exactly — ridge least squares for
    regression, ``hindsight_steps`` Newton steps (IRLS) for classification. The class contains
    θ_end itself, so the comparator is never worse than where adaptd ended. Other families
    (user modules) get ``hindsight_steps`` full-batch AdaGrad steps from θ_end.
    """
    if isinstance(family, SoftmaxFamily):
        return _multinomial_fit(family, config, X, Y, theta_end)
    if isinstance(family, LinearFamily):
        F = X
    elif isinstance(family, MLPFamily):
        F = family.features(theta_end[None, :], X[None])[0]
    else:
        return _gradient_fit(family, config, X, Y, theta_end)
    Fb = _with_intercept(F)
    ridge = _ridge(Fb.shape[1])
    if family.task == "regression":
        w = np.linalg.solve(Fb.T @ Fb + ridge, Fb.T @ Y)
        fitted = float(((Fb @ w - Y) ** 2).sum())
    else:
        w = np.zeros(Fb.shape[1])
        for _ in range(config.hindsight_steps):
            p = 1.0 / (1.0 + np.exp(-np.clip(Fb @ w, -30.0, 30.0)))
            hess = (Fb * (p * (1.0 - p))[:, None]).T @ Fb + ridge
            w = w - np.linalg.solve(hess, Fb.T @ (p - Y) + ridge @ w)
        p = 1.0 / (1.0 + np.exp(-np.clip(Fb @ w, -30.0, 30.0)))
        fitted = float(pointwise_loss("classification", p, Y).sum())
    own = float(pointwise_loss(family.task, family.forward(theta_end[None, :], X[None])[0], Y).sum())
    return _lower(fitted, own)


def _lower(fitted: float, own: float) -> float:
    """``np.nanmin([fitted, own])`` if either is finite, else NaN (for two floats, without
    NumPy's per-call cost: it was a tenth of a linear fit)."""
    if not (math.isfinite(fitted) or math.isfinite(own)):
        return float("nan")
    if math.isnan(fitted):
        return own
    if math.isnan(own):
        return fitted
    return min(fitted, own)


def _with_intercept(F: np.ndarray) -> np.ndarray:
    """``F`` ``(n, f)`` with a column of ones after it, ``(n, f + 1)``, a new C-ordered array
    (``np.hstack``'s values and layout)."""
    n, f = F.shape
    Fb = np.empty((n, f + 1))
    Fb[:, :f] = F
    Fb[:, f] = 1.0
    return Fb


_RIDGES: dict[int, np.ndarray] = {}


def _ridge(f: int) -> np.ndarray:
    """``1e-6 · I`` of size ``f`` (read-only, made once per size)."""
    ridge = _RIDGES.get(f)
    if ridge is None:
        ridge = _RIDGES[f] = 1e-6 * np.eye(f)
        ridge.flags.writeable = False
    return ridge


def _multinomial_fit(family: SoftmaxFamily, config: RegretConfig, X: np.ndarray, Y: np.ndarray,
                     theta_end: np.ndarray) -> float:
    """:func:`_fit` for multi-class: multinomial logistic regression on the frozen features,
    ``hindsight_steps`` Newton steps with the full ``K(f+1)`` Hessian
    ``Σ_n (diag p_n − p_n p_nᵀ) ⊗ x_n x_nᵀ`` (Bishop 2006, §4.3.4, eq. 4.110), ridge 1e-6
    (the softmax's parameters are defined up to a shift, so the Hessian alone is singular)."""
    K = family.classes
    F = X if not family.hidden else family.features(theta_end[None, :], X[None])[0]
    Fb = _with_intercept(F)
    f = Fb.shape[1]
    n = len(Y)
    onehot = np.eye(K)[Y.astype(np.int64)]
    W = np.zeros((K, f))
    ridge = _ridge(K * f)
    outer = (Fb[:, :, None] * Fb[:, None, :]).reshape(n, f * f)  # x_n x_nᵀ, flattened
    for _ in range(config.hindsight_steps):
        p = softmax(Fb @ W.T)
        grad = ((p - onehot).T @ Fb).ravel()
        S = p[:, :, None] * np.eye(K)[None] - p[:, :, None] * p[:, None, :]
        # Σ_n S_n ⊗ x_n x_nᵀ as one matrix product (50× faster than the equivalent einsum).
        hess = (S.reshape(n, K * K).T @ outer).reshape(K, K, f, f).transpose(0, 2, 1, 3)
        hess = hess.reshape(K * f, K * f) + ridge
        W = W - np.linalg.solve(hess, grad + ridge @ W.ravel()).reshape(K, f)
    fitted = float(multiclass_loss(softmax(Fb @ W.T), Y).sum())
    own = float(multiclass_loss(family.forward(theta_end[None, :], X[None])[0], Y).sum())
    return _lower(fitted, own)


def _gradient_fit(family: Family, config: RegretConfig, X: np.ndarray, Y: np.ndarray,
                  theta_end: np.ndarray) -> float:
    """The lowest summed loss of ``hindsight_steps`` full-batch AdaGrad steps from θ_end (the
    engine's step, :func:`adaptd.learner.step.step_rows`, with ``B = hindsight_lr²``)."""
    theta = theta_end[None, :].copy()
    Xr, Yr, Mr = X[None], Y[None], np.ones((1, len(Y)))
    accum = np.full_like(theta, 1e-8)
    B = np.full(theta.shape[1], config.hindsight_lr**2)
    best = float(family.loss_grad(theta, Xr, Yr, Mr)[0][0])
    for _ in range(config.hindsight_steps):
        loss, g = family.loss_grad(theta, Xr, Yr, Mr)
        if not np.isfinite(loss[0]):
            break
        best = min(best, float(loss[0]))
        if not step_rows(theta, accum, np.ascontiguousarray(g), B, B, 1, 1.0, 1.0)[0]:
            break
    return best * len(Y)
