"""Plain per-parameter AdaGrad on a linear model, one parameter vector per key.

A minimal learner: the runner's tests drive it where the engine's behaviour is beside the
point. The daemon itself runs :class:`adaptd.learner.adaptive.AdaptiveLearner` (whose shadow
baseline is the same update). The update is AdaGrad (Duchi, Hazan, Singer 2011, "Adaptive
Subgradient Methods for Online Learning and Stochastic Optimization", JMLR 12),
``A += g²;  θ −= sqrt(lr²/A) ⊙ g`` with ``A`` starting at ``eps``: the engine's step
(:func:`adaptd.learner.step.step_rows`) with ``B = lr²``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from adaptd.learner import LearnerSummary, NoPending, Outcome, Outcomes
from adaptd.learner.step import step_rows
from adaptd.records import Record, RecordBatch, TaskKind


class AdaGradLearner:
    """Linear or logistic model per key with per-parameter AdaGrad steps.

    Args:
        task: ``regression`` (squared loss) or ``classification`` (log loss, sigmoid output).
        lr: AdaGrad's global step size.
        eps: initial accumulator value, keeps the first steps bounded.
    """

    def __init__(self, task: TaskKind = "regression", lr: float = 0.1, eps: float = 1e-6) -> None:
        self.task = task
        self.lr = lr
        self.eps = eps
        self._theta: dict[str, np.ndarray] = {}
        self._accum: dict[str, np.ndarray] = {}
        self._cumulative_loss = 0.0
        self._recent_loss = 0.0
        self._n_losses = 0
        self._skipped = 0
        #: Features are not kept: a delayed label finds none.
        self.pending = NoPending()

    def _params(self, key: str, n_features: int) -> tuple[np.ndarray, np.ndarray]:
        theta = self._theta.get(key)
        if theta is None:
            # The last entry is the bias.
            theta = self._theta[key] = np.zeros(n_features + 1)
            self._accum[key] = np.full(n_features + 1, self.eps)
        return theta, self._accum[key]

    def process_many(self, records: Sequence[Record]) -> Outcomes:
        return self.process_batch(RecordBatch.from_records(records))

    def process_batch(self, batch: RecordBatch) -> Outcomes:
        out = []
        for key, row, label in zip(batch.keys, batch.X, batch.y.tolist(), strict=True):
            theta, accum = self._params(key, len(row))
            x = np.append(row, 1.0)
            z = float(x @ theta)
            y_pred = z if self.task == "regression" else _sigmoid(z)
            if math.isnan(label):
                out.append(Outcome(y_pred=y_pred))
                continue
            if self.task == "regression":
                loss = (y_pred - label) ** 2
                g = 2.0 * (y_pred - label) * x
            else:
                p = min(max(y_pred, 1e-12), 1 - 1e-12)
                loss = -(label * math.log(p) + (1 - label) * math.log(1 - p))
                g = (y_pred - label) * x
            B = np.full(len(theta), self.lr * self.lr)
            # A step with a non-finite result is not taken (step_rows leaves the row as it was).
            learned = math.isfinite(loss) and bool(
                step_rows(theta[None], accum[None], g[None], B, B, 1, 1.0, 1.0)[0])
            if learned:
                self._record_loss(loss)
            else:
                self._skipped += 1
            out.append(Outcome(y_pred=y_pred, loss=loss if learned else None, learned=learned))
        return Outcomes.from_list(out)

    def _record_loss(self, loss: float) -> None:
        self._cumulative_loss += loss
        self._n_losses += 1
        # Exponential average over roughly the last 100 losses.
        alpha = max(0.01, 1.0 / self._n_losses)
        self._recent_loss += alpha * (loss - self._recent_loss)

    def summary(self) -> LearnerSummary:
        return LearnerSummary(
            cumulative_loss=self._cumulative_loss,
            prequential_loss=self._recent_loss if self._n_losses else None,
            active_keys=len(self._theta),
            skipped_updates=self._skipped,
        )

    def state_dict(self, keys: Collection[str] | None = None) -> dict[str, Any]:
        chosen = self._theta.keys() if keys is None else [k for k in keys if k in self._theta]
        return {
            "kind": "adagrad",
            "totals": [self._cumulative_loss, self._recent_loss, self._n_losses, self._skipped],
            "keys": {k: (self._theta[k].copy(), self._accum[k].copy()) for k in chosen},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._cumulative_loss, self._recent_loss, self._n_losses, self._skipped = state["totals"]
        for key, (theta, accum) in state["keys"].items():
            self._theta[key] = np.array(theta, dtype=np.float64)
            self._accum[key] = np.array(accum, dtype=np.float64)

    def forget(self, keys: Collection[str]) -> None:
        for key in keys:
            self._theta.pop(key, None)
            self._accum.pop(key, None)

    def keys(self) -> Collection[str]:
        return self._theta.keys()

    def evict_idle(self, now: float | None = None) -> dict[str, Any]:
        """Nothing: this learner keeps every key (it is a comparator, not the daemon's state)."""
        return {}

    def take_evicted(self) -> dict[str, Any]:
        return {}


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)
