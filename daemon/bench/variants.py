"""adaptd's settings tried on the real streams: what helps without changing the engine.

Each variant is ``adaptd run --task …`` (model ``auto`` by default, no ``--meta`` file) with
a few settings changed, plus standardizing features in front of the model
(:func:`adaptd.bench.engine.standardized`), and for regression the target too
(:func:`adaptd.bench.engine.target_scales`): diagnostics kept from before the engine
standardized online itself. They run on the streams whose :attr:`Stream.real` is true and are
reported in their own table, next to the peers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from adaptd.bench.engine import AdaptdLearner
from adaptd.bench.protocol import LearnerSpec
from adaptd.bench.streams import Stream
from adaptd.drift import DEFAULT_PH_RELATIVE, DEFAULT_PH_THRESHOLD


@dataclass(frozen=True)
class Variant:
    """Settings on top of ``--task``; ``ph_factor`` scales the task's default Page-Hinkley λ
    (raw 50 for classification, relative 20 for regression)."""

    name: str
    description: str
    flags: dict[str, Any] = field(default_factory=dict)
    standardize: bool = False
    standardize_target: bool = False
    ph_factor: float | None = None
    regression_only: bool = False

    def runs_on(self, stream: Stream) -> bool:
        return stream.real and (stream.task == "regression" or not self.regression_only)

    def settings(self, stream: Stream) -> dict[str, Any]:
        """The flags ``adaptd run`` would get for this variant on ``stream``."""
        flags: dict[str, Any] = {
            "task": stream.task,
            # The bench scores every learner itself (see adaptd_flags).
            "regret.baseline": False,
            "regret.hindsight": False,
            **self.flags,
        }
        if self.ph_factor is not None:
            default = DEFAULT_PH_THRESHOLD[DEFAULT_PH_RELATIVE[stream.task]]
            flags["drift.ph_threshold"] = default * self.ph_factor
        return flags


NO_DRIFT = {"drift.detector": "none", "meta_learning.enabled": False}

#: The grid, in report order. ``v:default`` is what ``adaptd run --task T`` does.
GRID: tuple[Variant, ...] = (
    Variant("v:default", "adaptd run --task T (model linear: logistic for classification)"),
    Variant("v:mlp", "--model mlp", {"model": "mlp"}),
    Variant("v:scaled", "features standardized in front (running mean/std per key)",
            standardize=True),
    Variant("v:scaled-mlp", "standardized, --model mlp", {"model": "mlp"}, standardize=True),
    Variant("v:scaled-xy", "features and target standardized (target: river's "
            "TargetStandardScaler rule)", standardize=True, standardize_target=True,
            regression_only=True),
    Variant("v:scaled-xy-mlp", "features and target standardized, --model mlp",
            {"model": "mlp"}, standardize=True, standardize_target=True, regression_only=True),
    Variant("v:no-meta", "meta_learning.enabled = false (reset to the random init)",
            {"meta_learning.enabled": False}),
    Variant("v:no-drift", "no detector, no meta-learning: plain AdaGrad", NO_DRIFT),
    Variant("v:scaled-no-drift", "standardized, plain AdaGrad", NO_DRIFT, standardize=True),
    Variant("v:ph×0.2", "drift.ph_threshold = 0.2 × default", ph_factor=0.2),
    Variant("v:ph×5", "drift.ph_threshold = 5 × default", ph_factor=5.0),
    Variant("v:lr0.03", "learner.lr = 0.03", {"learner.lr": 0.03}),
    Variant("v:lr0.5", "learner.lr = 0.5", {"learner.lr": 0.5}),
    Variant("v:window1", "learner.window = 1 (one record per step)", {"learner.window": 1}),
    Variant("v:window50", "learner.window = 50", {"learner.window": 50}),
    Variant("v:scaled-lr0.5", "standardized, learner.lr = 0.5", {"learner.lr": 0.5},
            standardize=True),
    Variant("v:scaled-window1", "standardized, learner.window = 1", {"learner.window": 1},
            standardize=True),
)


def _build(variant: Variant) -> Callable[[Stream, Any], AdaptdLearner]:
    def build(stream: Stream, meta: Any) -> AdaptdLearner:
        return AdaptdLearner(variant.settings(stream), reports_alarms=False,
                             standardize=variant.standardize,
                             standardize_target=variant.standardize_target)

    return build


VARIANTS: tuple[LearnerSpec, ...] = tuple(
    LearnerSpec(name=v.name, group="variant", description=v.description, build=_build(v),
                runs_on=v.runs_on)
    for v in GRID
)
