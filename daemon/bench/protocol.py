"""What every benchmarked learner shares: its trace, its protocol and its spec.

Kept apart from the registry (:mod:`adaptd.bench.learners`) so that the peer and variant
modules can build specs without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from adaptd.bench.streams import Stream, StreamData


@dataclass
class Trace:
    """What one learner did on one stream.

    ``y_pred`` is the prediction made before the record's label was learned: (n,) regression
    outputs or P(y=1) for a binary stream, (n, K) class probabilities for a K-class stream.
    ``alarms`` (n,) marks records on which the learner's drift detector fired, or is ``None``
    when the learner exposes no detector; ``seconds`` is the timed loop.
    """

    y_pred: np.ndarray
    alarms: np.ndarray | None
    seconds: float


class Unsupported(Exception):
    """The learner cannot run this stream at all (e.g. a user module on a multi-class stream:
    it has one output). Reported as "unable", not as a failure."""


class BenchLearner(Protocol):
    """A learner under test: fresh state per :meth:`run`."""

    def run(self, data: StreamData) -> Trace:
        """Predict then learn every record of ``data`` in order; blocks until done.

        Raises :class:`Unsupported` when the learner cannot take the stream."""
        ...


@dataclass(frozen=True)
class LearnerSpec:
    """A named learner and how to build it for a stream.

    ``build(stream, meta_file)`` returns a fresh learner; ``meta_file`` is the meta-state
    written by meta-training on the stream's held-out data (``None`` when not trained).
    ``group`` is ``adaptd`` (adaptd and its ablations), ``peer`` (other libraries),
    ``baseline`` (trivial predictors every learner must beat) or ``variant`` (adaptd settings
    tried on the real streams only, reported in their own table). ``runs_on`` says which
    streams the learner is run on (all unless given).
    """

    name: str
    group: str
    description: str
    build: Callable[[Stream, Path | None], BenchLearner]
    uses_meta: bool = False
    runs_on: Callable[[Stream], bool] = lambda stream: True


def feature_dicts(X: np.ndarray) -> list[dict[str, float]]:
    """river's input: one ``{"x0": …, "x1": …}`` dict per row."""
    names = [f"x{j}" for j in range(X.shape[1])]
    return [dict(zip(names, row, strict=True)) for row in X.tolist()]
