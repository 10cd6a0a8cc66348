"""The meta-state shared by all keys of a model, and its update when a segment closes.

The meta-state is the initialization θ0 and the ARUBA statistics B, G from which each new
task's per-parameter step sizes come (Khodak, Balcan, Talwalkar 2019, "Adaptive
Gradient-Based Meta-Learning Methods", NeurIPS). On the close of a long enough segment, with
t the number of tasks closed so far::

    B  ← (1−d)·B + ½(θ_end − θ0)² + ε²/(t+1)^p
    G  ← (1−d)·G + Σ_seg g²       + ζ²/(t+1)^p
    θ0 ← θ0 + β·(θ_end − θ0)          Reptile (Nichol, Achiam, Schulman 2018, arXiv:1803.02999)
    θ0 ← θ0 − β·∇L(θ_end; W)          first-order MAML (Finn, Abbeel, Levine 2017, ICML)

and a new task starts at ``θ = θ0`` with ``A = G / c``. Before any meta-learning ``B = lr²``
and ``G = c·eps``, which makes the inner rule plain AdaGrad.

The file written by ``adaptd meta-train --out FILE`` and read by ``adaptd run --meta FILE`` is a
``torch.save`` of plain tensors and numbers (loadable with ``weights_only=True``); its ``module``
entry is the ``state_dict`` of the model's ``nn.Module`` at θ0, for users who want the
initialization as a PyTorch model. Only :func:`save` and :func:`load` import torch: the
meta-state itself, and the copy inside checkpoints (:meth:`MetaState.to_dict`), is NumPy.

>>> s = MetaState.initial(np.zeros(2), lr=0.1, eps=1e-6, c=1.0, model={"model": "linear"})
>>> s.update(MetaConfig(), theta_end=np.array([1.0, -1.0]), grad_sq_sum=np.ones(2))
>>> s.theta0.tolist(), s.tasks
([0.3, -0.3], 1)
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adaptd.settings import MetaConfig

FILE_FORMAT = "adaptd-meta/1"


@dataclass
class MetaState:
    """θ0, B, G (each ``(P,)``), the count of closed tasks and the hypergradient multiplier.

    ``model`` describes the family the vectors belong to (model, task, n_features, hidden,
    activation) so that a file is never applied to a different model.
    """

    theta0: np.ndarray
    B: np.ndarray
    G: np.ndarray
    tasks: int = 0
    alpha: float = 1.0
    model: dict[str, Any] = field(default_factory=dict)
    #: The feature/target statistics θ0 was learned under (:mod:`adaptd.learner.scaling`),
    #: as plain lists; ``None`` when standardization was off or the state predates it.
    scaler: dict[str, Any] | None = None

    @classmethod
    def initial(cls, theta0: np.ndarray, lr: float, eps: float, c: float,
                model: Mapping[str, Any]) -> MetaState:
        """The state before any meta-learning: plain AdaGrad (``B = lr²``, ``A₀ = G/c = eps``)."""
        P = len(theta0)
        return cls(theta0=np.array(theta0, dtype=np.float64), B=np.full(P, lr * lr),
                   G=np.full(P, c * eps), model=dict(model))

    def update(self, config: MetaConfig, theta_end: np.ndarray, grad_sq_sum: np.ndarray,
               final_grad: np.ndarray | None = None) -> None:
        """Fold one closed task into the meta-state. Called by the learner on segment close.

        Args:
            theta_end: the task's parameters at close, ``(P,)``.
            grad_sq_sum: Σ g² over the task's inner steps, ``(P,)``.
            final_grad: ∇L(θ_end; W) on the final support window (needed for ``fomaml``).
        """
        delta = theta_end - self.theta0
        if config.learn_rates:
            shrink = 1.0 - config.decay
            scale = (self.tasks + 1.0) ** config.power
            self.B = shrink * self.B + 0.5 * delta * delta + config.epsilon**2 / scale
            self.G = shrink * self.G + grad_sq_sum + config.zeta**2 / scale
        if config.algorithm == "fomaml":
            if final_grad is None:
                raise ValueError("fomaml needs the final support-window gradient")
            self.theta0 = self.theta0 - config.step * final_grad
        else:
            self.theta0 = self.theta0 + config.step * delta
        self.tasks += 1

    def to_dict(self) -> dict[str, Any]:
        """Plain, picklable copy (NumPy arrays and numbers)."""
        return {"theta0": self.theta0.copy(), "B": self.B.copy(), "G": self.G.copy(),
                "tasks": self.tasks, "alpha": self.alpha, "model": dict(self.model),
                "scaler": self.scaler}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> MetaState:
        return cls(theta0=np.asarray(state["theta0"], dtype=np.float64).copy(),
                   B=np.asarray(state["B"], dtype=np.float64).copy(),
                   G=np.asarray(state["G"], dtype=np.float64).copy(),
                   tasks=int(state["tasks"]), alpha=float(state["alpha"]),
                   model=dict(state.get("model", {})), scaler=state.get("scaler"))

    def check_compatible(self, model: Mapping[str, Any], where: str) -> None:
        """Raise ``ValueError`` if this state was made for another model than ``model``."""
        for k, v in model.items():
            mine = self.model.get(k)
            if k in self.model and _norm(mine) != _norm(v):
                raise ValueError(f"{where}: meta-state is for {k}={mine!r}, this model has {v!r}")


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def average(states: Sequence[MetaState], weights: Sequence[float] | None = None) -> MetaState:
    """The mean of several replicas' meta-states: federated averaging (McMahan et al. 2017,
    "Communication-Efficient Learning of Deep Networks from Decentralized Data", AISTATS) of
    Reptile / ARUBA meta-states, whose meta-updates are online averages and so average across
    replicas the same way. The one averaging of meta-states (:mod:`adaptd.meta_sync` merges
    the group's with it).

    ``weights`` are the tasks each state contributes (a replica's own); θ0, B, G and α are
    their weighted means, ``tasks`` their sum, and the standardization statistics the states
    carry are pooled exactly (:func:`pool_moments`), each state's counted once. Without
    ``weights`` the states are equal views of one history: plain means, the largest task
    count, the first state's statistics.

    >>> a = MetaState(np.array([0.0]), np.array([1.0]), np.array([2.0]), tasks=9,
    ...               scaler={"x": {"count": 2, "mean": [0.0], "m2": [2.0]}, "y": None})
    >>> b = MetaState(np.array([4.0]), np.array([1.0]), np.array([2.0]), tasks=9,
    ...               scaler={"x": {"count": 2, "mean": [2.0], "m2": [2.0]}, "y": None})
    >>> m = average([a, b], [1, 3])
    >>> m.theta0.tolist(), m.B.tolist(), m.tasks, m.scaler["x"]["mean"], m.scaler["x"]["m2"]
    ([3.0], [1.0], 4, [1.0], [8.0])
    """
    if not states:
        raise ValueError("average needs at least one meta-state")
    w = np.ones(len(states)) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(w) != len(states) or not w.sum() > 0 or (w < 0).any():
        raise ValueError(f"average needs one non-negative weight per state, with a positive "
                         f"sum; got {w.tolist()} for {len(states)} states")
    w = w / w.sum()

    def mean(name: str) -> np.ndarray:
        return np.sum([wi * np.asarray(getattr(s, name), dtype=np.float64)
                       for wi, s in zip(w, states, strict=True)], axis=0)

    scaler = states[0].scaler
    if weights is not None and any(s.scaler for s in states):
        scaler = {part: _plain(pool_moments([_arrays(s.scaler.get(part)) for s in states
                                             if s.scaler]))
                  for part in ("x", "y")}
    return MetaState(
        theta0=mean("theta0"), B=mean("B"), G=mean("G"),
        tasks=max(s.tasks for s in states) if weights is None else round(sum(weights)),
        alpha=float(sum(wi * s.alpha for wi, s in zip(w, states, strict=True))),
        model=dict(states[0].model), scaler=scaler,
    )


#: Running moments of columns: {"count": n, "mean": (d,), "m2": (d,) Σ squared deviations}.
Moments = dict[str, Any]


def pool_moments(parts: Sequence[Moments | None]) -> Moments | None:
    """The moments of the union of the disjoint samples ``parts`` describe (Chan, Golub,
    LeVeque 1979, "Updating formulae and a pairwise algorithm for computing sample
    variances"); None parts (no sample) and parts of another width than the first are left
    out. None when nothing is left.

    >>> pool_moments([{"count": 2, "mean": [0.0], "m2": [2.0]},
    ...               {"count": 2, "mean": [2.0], "m2": [2.0]}])["m2"].tolist()
    [8.0]
    """
    total: Moments | None = None
    for part in parts:
        if part is None or float(part["count"]) <= 0:
            continue
        n = float(part["count"])
        mean = np.asarray(part["mean"], dtype=np.float64)
        m2 = np.asarray(part["m2"], dtype=np.float64)
        if total is None:
            total = {"count": n, "mean": mean.copy(), "m2": m2.copy()}
            continue
        if mean.shape != total["mean"].shape:
            continue
        count = total["count"] + n
        delta = mean - total["mean"]
        total = {"count": count, "mean": total["mean"] + delta * (n / count),
                 "m2": total["m2"] + m2 + delta * delta * (total["count"] * n / count)}
    return total


def moments_without(total: Moments | None, part: Moments | None) -> Moments | None:
    """The moments of ``total``'s sample without the sub-sample ``part`` (the inverse of
    :func:`pool_moments`; rounding can leave m2 a hair below 0, which is clipped).

    >>> rest = moments_without({"count": 4, "mean": [1.0], "m2": [8.0]},
    ...                        {"count": 2, "mean": [2.0], "m2": [2.0]})
    >>> rest["count"], rest["mean"].tolist(), rest["m2"].tolist()
    (2.0, [0.0], [2.0])
    """
    if total is None or part is None or float(part["count"]) <= 0:
        return total
    n, k = float(total["count"]), float(part["count"])
    mean_t = np.asarray(total["mean"], dtype=np.float64)
    mean_p = np.asarray(part["mean"], dtype=np.float64)
    if k >= n or mean_t.shape != mean_p.shape:
        return None if k >= n else total
    rest = n - k
    mean_r = (n * mean_t - k * mean_p) / rest
    delta = mean_r - mean_p
    m2 = np.asarray(total["m2"], dtype=np.float64) - np.asarray(part["m2"]) \
        - delta * delta * (k * rest / n)
    return {"count": rest, "mean": mean_r, "m2": np.maximum(m2, 0.0)}


def _arrays(moments: Mapping[str, Any] | None) -> Moments | None:
    return None if moments is None else {"count": float(moments["count"]),
                                         "mean": np.asarray(moments["mean"], dtype=np.float64),
                                         "m2": np.asarray(moments["m2"], dtype=np.float64)}


def _plain(moments: Moments | None) -> dict[str, Any] | None:
    """As :meth:`adaptd.learner.scaling.Standardizer.statistics` writes them (plain lists)."""
    return None if moments is None else {"count": float(moments["count"]),
                                         "mean": np.asarray(moments["mean"]).tolist(),
                                         "m2": np.asarray(moments["m2"]).tolist()}


def save(state: MetaState, path: str | os.PathLike[str], module_state: Mapping[str, Any] | None
         = None) -> Path:
    """Write ``state`` to ``path`` (atomically: temporary file, then rename). Imports torch."""
    import torch  # the file format is torch's; nothing else here needs it

    path = Path(path)
    payload: dict[str, Any] = {
        "format": FILE_FORMAT,
        "theta0": torch.from_numpy(state.theta0.copy()),
        "B": torch.from_numpy(state.B.copy()),
        "G": torch.from_numpy(state.G.copy()),
        "tasks": state.tasks,
        "alpha": state.alpha,
        "model": {k: list(v) if isinstance(v, tuple) else v for k, v in state.model.items()},
    }
    if module_state is not None:
        payload["module"] = dict(module_state)
    if state.scaler is not None:  # optional: files without it still load
        payload["scaler"] = state.scaler
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load(path: str | os.PathLike[str]) -> MetaState:
    """Read a file written by :func:`save`. Raises ``ValueError`` naming the file if it is not one.

    Imports torch (the file format is torch's)."""
    import torch

    try:
        payload = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"meta-state file {str(path)!r} does not exist") from None
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise ValueError(f"meta-state file {str(path)!r} is not readable: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
        raise ValueError(f"meta-state file {str(path)!r} is not an {FILE_FORMAT} file")
    return MetaState(
        theta0=payload["theta0"].double().numpy().copy(),
        B=payload["B"].double().numpy().copy(),
        G=payload["G"].double().numpy().copy(),
        tasks=int(payload["tasks"]),
        alpha=float(payload["alpha"]),
        model=dict(payload["model"]),
        scaler=payload.get("scaler"),
    )
