"""The ``[learner]`` settings section."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LearnerConfig:
    """Step-size settings of the learner.

    Args:
        lr: global step size (AdaGrad's ``lr``; ``B = lr²`` before any meta-learning).
        eps: initial value of the per-parameter accumulators.
    """

    lr: float = 0.1
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
