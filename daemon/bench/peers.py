"""The learners adaptd is measured against: other libraries and trivial baselines.

Peers are river's linear models (plain, and after a ``StandardScaler`` as river's docs
recommend), its adaptive random forest (Gomes et al. 2017) and Hoeffding adaptive tree
(Bifet and Gavaldà 2009), and Vowpal Wabbit with its default (adaptive, normalized,
invariant) updates. Baselines are the majority class (running class frequencies) or running
mean, and the last label seen (the "no-change" classifier of Žliobaitė 2011, persistence for
regression). Every learner keeps one model per record key, as adaptd keeps one task state per
key, and gets its input already in its own native form before the clock starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from adaptd.bench.protocol import LearnerSpec, Trace, feature_dicts
from adaptd.bench.streams import StreamData
from adaptd.records import TaskKind

# ---------------------------------------------------------------------------------------------
# river


class RiverLearner:
    """A river estimator, one clone per key, ``predict_*_one`` then ``learn_one``.

    Classification labels go in as ``bool`` on binary streams and as the class index on
    multi-class ones; ``y_pred`` holds P(True), or the (n, K) probabilities.
    """

    def __init__(self, task: TaskKind, make: Callable[[int], Any]) -> None:
        self.task = task
        self.make = make

    def run(self, data: StreamData) -> Trace:
        xs = feature_dicts(data.X)
        keys = data.keys.tolist()
        k = data.n_classes if self.task == "classification" else 0
        if self.task == "regression":
            ys: list[Any] = data.y.tolist()
        elif k <= 2:
            ys = [bool(v) for v in data.y.tolist()]
        else:
            ys = [int(v) for v in data.y.tolist()]
        models: dict[str, Any] = {}
        y_pred = np.empty((len(xs), k) if k > 2 else len(xs))
        start = time.perf_counter()
        for i, (x, y, key) in enumerate(zip(xs, ys, keys, strict=True)):
            model = models.get(key)
            if model is None:
                model = models[key] = self.make(k)
            if self.task == "regression":
                y_pred[i] = model.predict_one(x)
            elif k <= 2:
                # An untrained classifier returns {}: no opinion is P = 0.5.
                y_pred[i] = model.predict_proba_one(x).get(True, 0.5)
            else:
                proba = model.predict_proba_one(x)
                y_pred[i] = [proba.get(c, 0.0) for c in range(k)]
            model.learn_one(x, y)
        seconds = time.perf_counter() - start
        if k > 2:
            y_pred = _normalise(y_pred)
        return Trace(y_pred=y_pred, alarms=None, seconds=seconds)


def _normalise(P: np.ndarray) -> np.ndarray:
    """Rows summing to 1; a row with no mass (no opinion yet, or unseen classes) is uniform."""
    total = P.sum(axis=1, keepdims=True)
    return np.where(total > 0, P / np.where(total > 0, total, 1.0), 1.0 / P.shape[1])


def _river_linear(task: TaskKind, k: int) -> Any:
    from river import linear_model, optim

    if task == "regression":
        return linear_model.LinearRegression(optimizer=optim.AdaGrad())
    if k > 2:
        return linear_model.SoftmaxRegression(optimizer=optim.AdaGrad())
    return linear_model.LogisticRegression(optimizer=optim.AdaGrad())


def _river_scaled_linear(task: TaskKind, k: int) -> Any:
    """river's recommended linear pipeline: standardize, then the default (SGD) linear model."""
    from river import linear_model, preprocessing

    if task == "regression":
        model: Any = linear_model.LinearRegression()
    elif k > 2:
        model = linear_model.SoftmaxRegression()
    else:
        model = linear_model.LogisticRegression()
    return preprocessing.StandardScaler() | model


def _river_arf(task: TaskKind, k: int) -> Any:
    from river import forest

    if task == "regression":
        return forest.ARFRegressor(n_models=10, seed=0)
    return forest.ARFClassifier(n_models=10, seed=0)


def _river_hat(task: TaskKind, k: int) -> Any:
    from river import tree

    if task == "regression":
        return tree.HoeffdingAdaptiveTreeRegressor(seed=0)
    return tree.HoeffdingAdaptiveTreeClassifier(seed=0)


def _river_spec(name: str, description: str, factory: Callable[[TaskKind, int], Any]
                ) -> LearnerSpec:
    return LearnerSpec(
        name=name,
        group="peer",
        description=description,
        build=lambda stream, meta: RiverLearner(stream.task, lambda k: factory(stream.task, k)),
    )


# ---------------------------------------------------------------------------------------------
# Vowpal Wabbit


class VowpalWabbitLearner:
    """Vowpal Wabbit, one workspace per key, default (adaptive, normalized, invariant) updates.

    Binary classification uses ``--loss_function logistic --link logistic`` so that
    predictions are probabilities (labels -1/+1); K classes use one-against-all with
    probabilities (``--oaa K --probabilities``, labels 1…K), K taken from the stream.
    """

    def __init__(self, task: TaskKind) -> None:
        self.task = task

    def _args_and_labels(self, data: StreamData) -> tuple[str, list[str], int]:
        if self.task == "regression":
            return "--quiet", [repr(v) for v in data.y.tolist()], 0
        k = data.n_classes
        if k > 2:
            labels = [str(int(v) + 1) for v in data.y.tolist()]
            return f"--quiet --oaa {k} --probabilities --loss_function logistic", labels, k
        labels = ["1" if v else "-1" for v in data.y.tolist()]
        return "--quiet --loss_function logistic --link logistic", labels, 0

    def run(self, data: StreamData) -> Trace:
        from vowpalwabbit import Workspace

        args, labels, k = self._args_and_labels(data)
        features = [
            "| " + " ".join(f"x{j}:{v!r}" for j, v in enumerate(row)) for row in data.X.tolist()
        ]
        examples = [f"{lab} {feat}" for lab, feat in zip(labels, features, strict=True)]
        keys = data.keys.tolist()
        workspaces: dict[str, Any] = {}
        y_pred = np.empty((len(features), k) if k else len(features))
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
        if k:
            y_pred = _normalise(y_pred)
        return Trace(y_pred=y_pred, alarms=None, seconds=seconds)


# ---------------------------------------------------------------------------------------------
# baselines


class _Baseline:
    """The baselines' loop: per-key state, predict from it, then fold the label in.

    ``k`` is 0 for regression, else the number of classes; a prediction is a value, P(y=1),
    or a (k,) probability row."""

    def __init__(self, task: TaskKind) -> None:
        self.task = task

    def predict(self, state: Any, k: int) -> Any:
        raise NotImplementedError

    def update(self, state: Any, y: float, k: int) -> Any:
        raise NotImplementedError

    def run(self, data: StreamData) -> Trace:
        k = 0 if self.task == "regression" else data.n_classes
        ys = data.y.tolist()
        states: dict[str, Any] = {}
        y_pred = np.empty((len(ys), k) if k > 2 else len(ys))
        start = time.perf_counter()
        for i, (key, y) in enumerate(zip(data.keys.tolist(), ys, strict=True)):
            state = states.get(key)
            y_pred[i] = self.predict(state, k)
            states[key] = self.update(state, y, k)
        return Trace(y_pred=y_pred, alarms=None, seconds=time.perf_counter() - start)


class MajorityLearner(_Baseline):
    """Running class frequencies per key (Laplace-smoothed, so the log loss stays finite), or
    the running mean for regression: the floor every learner must clear."""

    def predict(self, state: Any, k: int) -> Any:
        if k == 0:
            return state[1] / state[0] if state else 0.0
        counts = np.ones(max(k, 2)) if state is None else state
        p = counts / counts.sum()
        return p[1] if k <= 2 else p

    def update(self, state: Any, y: float, k: int) -> Any:
        if k == 0:
            n, total = state or (0, 0.0)
            return n + 1, total + y
        counts = np.ones(max(k, 2)) if state is None else state
        counts[int(y)] += 1.0
        return counts


class LastLabelLearner(_Baseline):
    """Predicts each key's previous label with certainty (P = 1), or its previous value."""

    def predict(self, state: Any, k: int) -> Any:
        if k <= 2:
            return (0.0 if k == 0 else 0.5) if state is None else state
        row = np.full(k, 1.0 / k) if state is None else np.eye(k)[int(state)]
        return row

    def update(self, state: Any, y: float, k: int) -> Any:
        return y


PEERS: tuple[LearnerSpec, ...] = (
    _river_spec(
        "river-linear", "river LinearRegression / LogisticRegression / SoftmaxRegression, "
        "optim.AdaGrad", _river_linear
    ),
    _river_spec(
        "river-scaled-linear", "river StandardScaler | LinearRegression / LogisticRegression / "
        "SoftmaxRegression, default SGD", _river_scaled_linear
    ),
    _river_spec("river-arf", "river ARFRegressor / ARFClassifier (n_models=10)", _river_arf),
    _river_spec(
        "river-hat", "river HoeffdingAdaptiveTreeRegressor / Classifier", _river_hat
    ),
    LearnerSpec(
        name="vw",
        group="peer",
        description="Vowpal Wabbit, default adaptive/normalized/invariant updates "
                    "(--oaa K --probabilities for K classes)",
        build=lambda stream, meta: VowpalWabbitLearner(stream.task),
    ),
    LearnerSpec(
        name="majority",
        group="baseline",
        description="running class frequencies (Laplace-smoothed) per key, or running mean",
        build=lambda stream, meta: MajorityLearner(stream.task),
    ),
    LearnerSpec(
        name="last-label",
        group="baseline",
        description="the key's previous label with P = 1 (no-change), or its previous value",
        build=lambda stream, meta: LastLabelLearner(stream.task),
    ),
)
