"""adaptd's engine as river estimators: ``learn_one`` / ``predict_one`` over dict features.

:class:`AdaptdClassifier` and :class:`AdaptdRegressor` wrap the learner ``adaptd run`` builds
(:func:`adaptd.learner.build_learner` from the same settings), with one task state under one
key and the meta-state the engine keeps, so that adaptd runs inside
:func:`river.evaluate.progressive_val_score`, river pipelines
(``preprocessing.StandardScaler() | AdaptdClassifier()``) and any code written for river.

The engine predicts and learns in one call: a labelled record is predicted with the state
before its label, then learned (test-then-train). ``predict_one`` hands it an unlabelled record
(y = NaN), which the engine only predicts; ``learn_one`` hands it the labelled record, which it
predicts again from the same state (the same value) and learns once. So a stream run through
``predict_one`` then ``learn_one`` gets exactly the predictions ``adaptd run`` emits for it.

Features: the first record seen fixes the features (sorted by name); features not in it are
ignored, missing ones count as 0 (as river's linear models treat absent features).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from river import base

from adaptd.records import DEFAULT_KEY, RecordBatch

__all__ = ["AdaptdClassifier", "AdaptdRegressor"]



def _boolish(label: Any) -> bool:
    """``True``/``False``/``1``/``0``: labels whose positive class is known in advance."""
    return isinstance(label, bool) or (isinstance(label, (int, float)) and label in (0, 1))


class _Unseen:
    """A label slot not yet discovered (``None`` may be a label); one instance, kept by pickle."""

    def __repr__(self) -> str:
        return "<unseen>"

    def __reduce__(self) -> str:
        return "_EMPTY"


_EMPTY: Any = _Unseen()


class _Engine:
    """The shared core: settings → learner, dict features → one-record batches.

    Built at the first record, when the number of features is known."""

    def __init__(self, task: str, model: str, meta: str | None,
                 settings: Mapping[str, Any] | None) -> None:
        from adaptd.config import load_settings
        from adaptd.learner import build_learner

        flags: dict[str, Any] = {
            # The shadow baseline and hindsight fits serve the daemon's regret gauges, which
            # an estimator has no place to export: they would only cost time.
            "regret.baseline": False,
            "regret.hindsight": False,
            **(settings or {}),
            "task": task,
            "model": model,
            "meta": meta,
        }
        self.learner = build_learner(load_settings(environ={}, flags=flags))
        self.features: list[Any] | None = None
        self.drifts = 0

    def _batch(self, x: Mapping[Any, Any], y: float) -> RecordBatch:
        if self.features is None:
            # Sorted, so that the order a dict happens to list its keys in changes nothing.
            self.features = sorted(x, key=str)
        row = np.array([[float(x.get(f, 0.0)) for f in self.features]], dtype=np.float64)
        return RecordBatch([DEFAULT_KEY], row, np.array([y]), [None], [None])

    def predict(self, x: Mapping[Any, Any]) -> float:
        """The engine's output for ``x`` without learning (an unlabelled record)."""
        return float(self.outcome(x).y_pred[0])

    def outcome(self, x: Mapping[Any, Any]) -> Any:
        """The engine's :class:`~adaptd.learner.Outcomes` for ``x`` as an unlabelled record."""
        return self.learner.process_batch(self._batch(x, math.nan))

    def learn(self, x: Mapping[Any, Any], y: float) -> None:
        """Test-then-train on one labelled record; counts the drift alarms it raises."""
        out = self.learner.process_batch(self._batch(x, y))
        self.drifts += int(out.drift[0])


class _AdaptdEstimator:
    """Constructor and state shared by the classifier and the regressor.

    Args:
        model: ``auto`` (the daemon's default: Hedge per key over its experts, see
            :mod:`adaptd.learner.ensemble`), ``linear`` (logistic for the classifier),
            ``logistic`` or ``mlp``.
        meta: a meta-state file written by ``adaptd meta-train`` (``--meta FILE``); without
            it the engine starts from a seeded random init and meta-learns online.
        settings: any other ``adaptd run`` setting by its dotted name, e.g.
            ``{"learner.lr": 0.05, "drift.ph_threshold": 20}``; validated as the daemon does.
    """

    _task = "regression"

    def __init__(self, model: str = "auto", meta: str | None = None,
                 settings: dict[str, Any] | None = None) -> None:
        self.model = model
        self.meta = meta
        self.settings = settings
        # Validates the settings now, so a wrong key fails here and not at the first record.
        self._engine = _Engine(self._task, model, meta, settings)

    @property
    def n_drifts(self) -> int:
        """Drift alarms so far: each closed a segment (a task) and reset the model."""
        return self._engine.drifts

    @property
    def engine(self) -> Any:
        """The underlying :class:`adaptd.learner.Learner` (for ``state_dict`` and the like)."""
        return self._engine.learner


class AdaptdClassifier(_AdaptdEstimator, base.Classifier):
    """adaptd's engine as a river classifier, binary or multi-class.

    Labels are discovered online: ``True``/``1`` is the positive class and ``False``/``0``
    the negative one; other labels are mapped in order of appearance (the first seen is
    negative), and until one is seen its probability is not reported. While there are two
    labels the engine is the binary logistic model; a third switches it to softmax over all
    of them (see :mod:`adaptd.learner.classes`), as ``adaptd run`` does.

    Examples
    --------

    >>> from river import datasets, evaluate, metrics, preprocessing
    >>> from adaptd.estimator import AdaptdClassifier

    >>> model = preprocessing.StandardScaler() | AdaptdClassifier()
    >>> evaluate.progressive_val_score(datasets.Phishing(), model, metrics.Accuracy())
    Accuracy: 92.08%

    Without the scaler: the engine standardizes features itself (``learner.standardize``):

    >>> model = AdaptdClassifier()
    >>> evaluate.progressive_val_score(datasets.Phishing(), model, metrics.Accuracy())
    Accuracy: 92.24%
    >>> model.n_drifts
    0

    One engine instead of the mixture (``model="linear"``: logistic regression):

    >>> model = AdaptdClassifier(model="linear")
    >>> evaluate.progressive_val_score(datasets.Phishing(), model, metrics.Accuracy())
    Accuracy: 89.52%
    """

    _task = "classification"

    def __init__(self, model: str = "auto", meta: str | None = None,
                 settings: dict[str, Any] | None = None) -> None:
        super().__init__(model, meta, settings)
        # [negative, positive, then the other labels in order of appearance], _EMPTY until
        # discovered. The engine numbers classes in the same order (0/1 first), so the index
        # handed to it is its class index too.
        self._classes: list[Any] = [_EMPTY, _EMPTY]

    def _index(self, y: Any) -> float:
        if _boolish(y) and self._classes[int(y)] in (_EMPTY, y):
            index = int(y)
        elif y in self._classes:
            index = self._classes.index(y)
        elif _EMPTY in self._classes:
            index = self._classes.index(_EMPTY)
        else:
            index = len(self._classes)
            self._classes.append(y)
        self._classes[index] = y
        return float(index)

    def learn_one(self, x: dict[Any, Any], y: base.typing.ClfTarget) -> None:
        self._engine.learn(x, self._index(y))

    def predict_proba_one(self, x: dict[Any, Any], **kwargs: Any
                          ) -> dict[base.typing.ClfTarget, float]:
        """P of ``False`` and ``True`` (as river's binary classifiers answer, from the first
        record on), or of the labels seen so far when they are not booleans or 0/1."""
        out = self._engine.outcome(x)
        if out.probas is not None:  # multi-class: the engine's classes are ours, in order
            return dict(zip(self._classes, out.probas[0].tolist(), strict=True))
        negative, positive = self._classes
        p = float(out.y_pred[0])
        if all(c is _EMPTY or _boolish(c) for c in self._classes):
            negative = False if negative is _EMPTY else negative
            positive = True if positive is _EMPTY else positive
        proba = {}
        if negative is not _EMPTY:
            proba[negative] = 1.0 - p
        if positive is not _EMPTY:
            proba[positive] = p
        return proba

    def predict_one(self, x: dict[Any, Any], **kwargs: Any) -> base.typing.ClfTarget | None:
        proba = self.predict_proba_one(x)
        return max(proba, key=proba.__getitem__) if proba else None


class AdaptdRegressor(_AdaptdEstimator, base.Regressor):
    """adaptd's engine as a river regressor.

    Examples
    --------

    >>> from river import datasets, evaluate, metrics, preprocessing
    >>> from adaptd.estimator import AdaptdRegressor

    The engine standardizes features and targets itself (``learner.standardize``,
    ``learner.standardize_target``), so river's scalers in front change little:

    >>> model = preprocessing.TargetStandardScaler(
    ...     preprocessing.StandardScaler() | AdaptdRegressor())
    >>> evaluate.progressive_val_score(datasets.TrumpApproval(), model, metrics.MAE())
    MAE: 0.194014

    >>> model = preprocessing.StandardScaler() | AdaptdRegressor()
    >>> evaluate.progressive_val_score(datasets.TrumpApproval(), model, metrics.MAE())
    MAE: 0.194408

    One engine instead of the mixture (``model="linear"``):

    >>> model = preprocessing.StandardScaler() | AdaptdRegressor(model="linear")
    >>> evaluate.progressive_val_score(datasets.TrumpApproval(), model, metrics.MAE())
    MAE: 0.687261
    """

    def learn_one(self, x: dict[Any, Any], y: base.typing.RegTarget) -> None:
        self._engine.learn(x, float(y))

    def predict_one(self, x: dict[Any, Any], **kwargs: Any) -> base.typing.RegTarget:
        return self._engine.predict(x)
