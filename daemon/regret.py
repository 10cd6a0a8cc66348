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

from dataclasses import dataclass

import numpy as np

from daemon.learner.models import Family, LinearFamily, MLPFamily, pointwise_loss


@dataclass
class RegretConfig:
    """The ``[regret]`` settings section.

    Args:
        baseline: run the shadow baseline (costs one more row per step).
        baseline_window: records in the baseline's gradient. 1 (default) is textbook AdaGrad
            (Duchi, Hazan, Singer 2011) on each record's own gradient; ``learner.window``
            makes it the engine with resets and meta-learning switched off (the benchmarks'
            "AdaGrad never reset" variant).
        hindsight: fit the hindsight comparator on each closed segment.
        buffer: records of a segment kept for the hindsight fit (the most recent ones); they
            are part of each key's checkpointed state, so this bounds checkpoint size too.
        hindsight_steps: Newton steps of the classification fit (AdaGrad steps for user modules).
        hindsight_lr: AdaGrad step size of the user-module fit.
    """

    baseline: bool = True
    baseline_window: int = 1
    hindsight: bool = True
    buffer: int = 200
    hindsight_steps: int = 20
    hindsight_lr: float = 0.05

    def __post_init__(self) -> None:
        if self.baseline_window < 1:
            raise ValueError(f"baseline_window must be >= 1, got {self.baseline_window}")
        if self.buffer < 1:
            raise ValueError(f"buffer must be >= 1, got {self.buffer}")
        if self.hindsight_steps < 0:
            raise ValueError(f"hindsight_steps must be >= 0, got {self.hindsight_steps}")
        if not self.hindsight_lr > 0:
            raise ValueError(f"hindsight_lr must be > 0, got {self.hindsight_lr}")


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
    if isinstance(family, LinearFamily):
        F = X
    elif isinstance(family, MLPFamily):
        F = family.features(theta_end[None, :], X[None])[0]
    else:
        return _gradient_fit(family, config, X, Y, theta_end)
    Fb = np.hstack([F, np.ones((len(Y), 1))])
    ridge = 1e-6 * np.eye(Fb.shape[1])
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
    return float(np.nanmin([fitted, own])) if np.isfinite([fitted, own]).any() else float("nan")


def _gradient_fit(family: Family, config: RegretConfig, X: np.ndarray, Y: np.ndarray,
                  theta_end: np.ndarray) -> float:
    theta = theta_end[None, :].copy()
    Xr, Yr, Mr = X[None], Y[None], np.ones((1, len(Y)))
    accum = np.full_like(theta, 1e-8)
    best = float(family.loss_grad(theta, Xr, Yr, Mr)[0][0])
    for _ in range(config.hindsight_steps):
        accum_next = accum
        loss, g = family.loss_grad(theta, Xr, Yr, Mr)
        if not (np.all(np.isfinite(g)) and np.isfinite(loss[0])):
            break
        best = min(best, float(loss[0]))
        accum_next = accum + g * g
        theta = theta - config.hindsight_lr * g / np.sqrt(accum_next)
        accum = accum_next
    return best * len(Y)
