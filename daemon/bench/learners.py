"""Every benchmarked learner behind one interface: run a stream test-then-train, time it.

adaptd's four variants are built from settings alone, exactly as ``adaptd run`` would build
them (:func:`adaptd.learner.build_learner`), and driven through ``process_many`` in batches of
the runner's default size. Peers are river's linear model, adaptive random forest and Hoeffding
adaptive tree, and Vowpal Wabbit with its default (adaptive, normalized, invariant) updates.
Peers keep one model per record key, as adaptd keeps one task state per key.

Every learner gets its input already in its own native form (daemon records, river dicts, VW
text lines) before the clock starts, so the timed loop is predict + learn only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from adaptd.bench.streams import Stream, StreamData
from adaptd.records import TaskKind

#: The runner's default batch size: adaptd sees the stream in batches like in production.
BATCH_SIZE = 256


@dataclass
class Trace:
    """What one learner did on one stream.

    ``y_pred`` (n,) is the prediction made before the record's label was learned (P(y=1) for
    classification); ``alarms`` (n,) marks records on which the learner's drift detector fired,
    or is ``None`` when the learner exposes no detector; ``seconds`` is the timed loop.
    """

    y_pred: np.ndarray
    alarms: np.ndarray | None
    seconds: float


class BenchLearner(Protocol):
    """A learner under test: fresh state per :meth:`run`."""

    def run(self, data: StreamData) -> Trace:
        """Predict then learn every record of ``data`` in order; blocks until done."""
        ...


@dataclass(frozen=True)
class LearnerSpec:
    """A named learner and how to build it for a stream.

    ``build(stream, meta_file)`` returns a fresh learner; ``meta_file`` is the meta-state
    written by meta-training on the stream's held-out data (``None`` when not trained).
    ``group`` is ``adaptd`` (adaptd and its ablations) or ``peer`` (other libraries).
    """

    name: str
    group: str
    description: str
    build: Callable[[Stream, Path | None], BenchLearner]
    uses_meta: bool = False


# ---------------------------------------------------------------------------------------------
# adaptd


#: Settings (dotted keys, as flags) of each adaptd variant on top of the stream's model/task,
#: as documented in :class:`adaptd.learner.config.LearnerConfig`. The two AdaGrad variants get
#: no meta-state file, so they start (and the reset one restarts) from the random init.
ADAPTD_VARIANTS: Mapping[str, Mapping[str, Any]] = {
    "adaptd": {},
    "adaptd-oracle": {"drift.detector": "oracle"},
    "adagrad": {"drift.detector": "none", "meta_learning.enabled": False},
    "adagrad-reset": {"meta_learning.enabled": False},
}


class AdaptdLearner:
    """One of adaptd's variants, built from settings by :func:`adaptd.learner.build_learner`.

    ``reports_alarms`` is false for the variants whose alarms say nothing about detection
    (no detector, or the oracle, whose alarms are the true change points).
    """

    def __init__(self, flags: Mapping[str, Any], reports_alarms: bool) -> None:
        self.flags = dict(flags)
        self.reports_alarms = reports_alarms

    def run(self, data: StreamData) -> Trace:
        from adaptd.config import load_settings
        from adaptd.learner import build_learner

        learner = build_learner(load_settings(environ={}, flags=self.flags))
        records = data.records
        y_pred = np.empty(len(records))
        alarms = np.zeros(len(records), dtype=bool)
        start = time.perf_counter()
        for lo in range(0, len(records), BATCH_SIZE):
            outcomes = learner.process_many(records[lo : lo + BATCH_SIZE])
            for i, out in enumerate(outcomes, lo):
                y_pred[i] = out.y_pred
                alarms[i] = out.drift
        seconds = time.perf_counter() - start
        return Trace(y_pred=y_pred, alarms=alarms if self.reports_alarms else None,
                     seconds=seconds)


#: The variants that run a real drift detector.
DETECTING_VARIANTS = ("adaptd", "adagrad-reset")


def adaptd_flags(variant: str, stream: Stream, meta_file: Path | None) -> dict[str, Any]:
    """The settings flags of ``variant`` on ``stream`` (meta-state only where the variant uses it)."""
    # The bench scores every learner itself; adaptd's own shadow baseline and hindsight fits
    # would only charge it for work no peer does.
    flags: dict[str, Any] = {
        "task": stream.task,
        "model": stream.model,
        "regret.baseline": False,
        "regret.hindsight": False,
    }
    flags.update(ADAPTD_VARIANTS[variant])
    if meta_file is not None and variant in ("adaptd", "adaptd-oracle"):
        flags["meta"] = str(meta_file)
    return flags


def _adaptd_spec(variant: str, description: str) -> LearnerSpec:
    return LearnerSpec(
        name=variant,
        group="adaptd",
        description=description,
        build=lambda stream, meta: AdaptdLearner(
            adaptd_flags(variant, stream, meta), reports_alarms=variant in DETECTING_VARIANTS
        ),
        uses_meta=variant in ("adaptd", "adaptd-oracle"),
    )


# ---------------------------------------------------------------------------------------------
# river


def feature_dicts(X: np.ndarray) -> list[dict[str, float]]:
    """river's input: one ``{"x0": …, "x1": …}`` dict per row."""
    names = [f"x{j}" for j in range(X.shape[1])]
    return [dict(zip(names, row, strict=True)) for row in X.tolist()]


class RiverLearner:
    """A river estimator, one clone per key, ``predict_*_one`` then ``learn_one``."""

    def __init__(self, task: TaskKind, make: Callable[[], Any]) -> None:
        self.task = task
        self.make = make

    def run(self, data: StreamData) -> Trace:
        xs = feature_dicts(data.X)
        keys = data.keys.tolist()
        regression = self.task == "regression"
        ys: list[Any] = data.y.tolist() if regression else [bool(v) for v in data.y.tolist()]
        models: dict[str, Any] = {}
        y_pred = np.empty(len(xs))
        start = time.perf_counter()
        for i, (x, y, key) in enumerate(zip(xs, ys, keys, strict=True)):
            model = models.get(key)
            if model is None:
                model = models[key] = self.make()
            if regression:
                y_pred[i] = model.predict_one(x)
            else:
                # An untrained classifier returns {}: no opinion is P = 0.5.
                y_pred[i] = model.predict_proba_one(x).get(True, 0.5)
            model.learn_one(x, y)
        seconds = time.perf_counter() - start
        return Trace(y_pred=y_pred, alarms=None, seconds=seconds)


def _river_linear(task: TaskKind) -> Any:
    from river import linear_model, optim

    if task == "regression":
        return linear_model.LinearRegression(optimizer=optim.AdaGrad())
    return linear_model.LogisticRegression(optimizer=optim.AdaGrad())


def _river_arf(task: TaskKind) -> Any:
    from river import forest

    return forest.ARFRegressor(seed=0) if task == "regression" else forest.ARFClassifier(seed=0)


def _river_hat(task: TaskKind) -> Any:
    from river import tree

    if task == "regression":
        return tree.HoeffdingAdaptiveTreeRegressor(seed=0)
    return tree.HoeffdingAdaptiveTreeClassifier(seed=0)


def _river_spec(name: str, description: str, factory: Callable[[TaskKind], Any]) -> LearnerSpec:
    return LearnerSpec(
        name=name,
        group="peer",
        description=description,
        build=lambda stream, meta: RiverLearner(stream.task, lambda: factory(stream.task)),
    )


# ---------------------------------------------------------------------------------------------
# Vowpal Wabbit


class VowpalWabbitLearner:
    """Vowpal Wabbit, one workspace per key, default (adaptive, normalized, invariant) updates.

    Classification uses ``--loss_function logistic --link logistic`` so that predictions are
    probabilities; labels are -1/+1 in VW's text format.
    """

    def __init__(self, task: TaskKind) -> None:
        self.task = task

    def run(self, data: StreamData) -> Trace:
        from vowpalwabbit import Workspace

        args = "--quiet" if self.task == "regression" else (
            "--quiet --loss_function logistic --link logistic"
        )
        features = [
            "| " + " ".join(f"x{j}:{v!r}" for j, v in enumerate(row)) for row in data.X.tolist()
        ]
        if self.task == "regression":
            labels = [repr(v) for v in data.y.tolist()]
        else:
            labels = ["1" if v else "-1" for v in data.y.tolist()]
        examples = [f"{lab} {feat}" for lab, feat in zip(labels, features, strict=True)]
        keys = data.keys.tolist()
        workspaces: dict[str, Any] = {}
        y_pred = np.empty(len(features))
        start = time.perf_counter()
        for i, key in enumerate(keys):
            vw = workspaces.get(key)
            if vw is None:
                vw = workspaces[key] = Workspace(args)
            y_pred[i] = vw.predict(features[i])
            vw.learn(examples[i])
        seconds = time.perf_counter() - start
        for vw in workspaces.values():
            vw.finish()
        return Trace(y_pred=y_pred, alarms=None, seconds=seconds)


# ---------------------------------------------------------------------------------------------

#: Every learner of the suite, in report order. ``river-linear`` is the throughput reference.
LEARNERS: tuple[LearnerSpec, ...] = (
    _adaptd_spec("adaptd", "meta-learned init and per-parameter rates, online drift detector"),
    _adaptd_spec("adaptd-oracle", "adaptd with the true change points instead of the detector"),
    _adaptd_spec("adagrad", "plain AdaGrad, never reset (adaptd's baseline)"),
    _adaptd_spec("adagrad-reset", "plain AdaGrad reset to a random init at each detected drift"),
    _river_spec(
        "river-linear", "river LinearRegression / LogisticRegression, optim.AdaGrad", _river_linear
    ),
    _river_spec("river-arf", "river ARFRegressor / ARFClassifier (10 trees)", _river_arf),
    _river_spec(
        "river-hat", "river HoeffdingAdaptiveTreeRegressor / Classifier", _river_hat
    ),
    LearnerSpec(
        name="vw",
        group="peer",
        description="Vowpal Wabbit, default adaptive/normalized/invariant updates",
        build=lambda stream, meta: VowpalWabbitLearner(stream.task),
    ),
)

#: The learner whose records/s every other learner's is divided by.
REFERENCE_LEARNER = "river-linear"


def learner_specs(names: list[str] | None = None) -> list[LearnerSpec]:
    """The specs named (all when ``None``), in suite order; unknown names raise ValueError."""
    if names is None:
        return list(LEARNERS)
    known = {spec.name: spec for spec in LEARNERS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown learners {unknown}; known: {sorted(known)}")
    return [spec for spec in LEARNERS if spec.name in names]
