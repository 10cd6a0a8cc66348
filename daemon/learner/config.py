"""The ``[learner]`` settings section."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class LearnerConfig:
    """Model shape, inner step rule and per-key state bounds of the learner.

    The inner step on each labelled record, on the key's support window W (the last
    ``window`` labelled records of its current segment), is ARUBA++'s
    ``g = ∇L(θ; W);  A += c·g²;  θ −= α·sqrt(B/A) ⊙ g`` (see :mod:`daemon.meta.state`).

    The benchmark variants are built from config alone:

    - adaptd: defaults (``meta.enabled = true``, ``drift.detector = "page_hinkley"``) plus
      ``--meta FILE`` from ``adaptd meta-train``.
    - oracle change points: ``drift.detector = "oracle"`` (segments by the records' ``task``).
    - plain AdaGrad never reset: ``drift.detector = "none"``, ``meta.enabled = false``.
    - plain AdaGrad reset at each detected drift to its random init:
      ``meta.enabled = false`` (and no ``--meta`` file).

    Args:
        lr: AdaGrad's step size; ``B = lr²`` before any meta-learning and for the baseline.
        eps: initial value of the accumulators A before any meta-learning.
        c: the weight of g² in ``A += c·g²`` (and ``A₀ = G/c`` at a task's start).
        window: support-window length k.
        hidden: hidden-layer widths of the ``mlp`` model.
        activation: ``tanh`` or ``relu`` for the ``mlp`` hidden units.
        init_seed: seed of the random initialization (when no meta-state file is given).
        hypergradient: adapt a global step multiplier α online (Baydin et al. 2018, "Online
            Learning Rate Adaptation with Hypergradient Descent", ICLR).
        hypergradient_lr: the hypergradient step size β_h.
        max_keys: most keys with live task state; the least recently seen are evicted beyond.
            Each live key holds two rows (its own and the shadow baseline's) of about
            ``8·(4P + k·(d+3) + buffer·(d+2))`` bytes: P parameters, k = ``window``, d features,
            ``regret.buffer`` hindsight records (about 25 kB for logistic d = 10, 120 kB for
            the 1-40-40-1 MLP).
        idle_evict_s: a key unseen this long is evicted by :meth:`evict_idle`.
        kernel: use the compiled per-record kernel (:mod:`daemon.learner.kernel`) where it
            applies (linear/logistic, Page-Hinkley/oracle/none, no hypergradient); same results
            as the batched NumPy path, much less overhead per record.
    """

    lr: float = 0.1
    eps: float = 1e-6
    c: float = 1.0
    window: int = 10
    hidden: list[int] = field(default_factory=lambda: [40, 40])
    activation: Literal["tanh", "relu"] = "tanh"
    init_seed: int = 0
    hypergradient: bool = False
    hypergradient_lr: float = 1e-3
    max_keys: int = 10_000
    idle_evict_s: float = 3600.0
    kernel: bool = True

    def __post_init__(self) -> None:
        for name in ("lr", "eps", "c", "hypergradient_lr", "idle_evict_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if not self.hidden or any(int(h) < 1 for h in self.hidden):
            raise ValueError(f"hidden must be a non-empty list of widths >= 1, got {self.hidden}")
        if self.max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {self.max_keys}")
