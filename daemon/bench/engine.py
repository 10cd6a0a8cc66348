"""adaptd under test: a variant built from settings, run in the runner's batches.

Each variant is built exactly as ``adaptd run`` would build it
(:func:`adaptd.learner.build_learner` on :func:`adaptd.config.load_settings`) and driven
through ``process_many`` in batches of the runner's default size.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from adaptd.bench.protocol import LearnerSpec, Trace, Unsupported
from adaptd.bench.streams import Stream, StreamData

#: The runner's default batch size: adaptd sees the stream in batches like in production.
BATCH_SIZE = 256


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

    def __init__(self, flags: Mapping[str, Any], reports_alarms: bool,
                 standardize: bool = False, standardize_target: bool = False) -> None:
        self.flags = dict(flags)
        self.reports_alarms = reports_alarms
        self.standardize = standardize
        self.standardize_target = standardize_target and flags.get("task") == "regression"

    def run(self, data: StreamData) -> Trace:
        from adaptd.config import load_settings
        from adaptd.learner import build_learner

        k = data.n_classes if self.flags.get("task") == "classification" else 0
        learner = build_learner(load_settings(environ={}, flags=self.flags))
        y_pred = np.zeros((len(data), k)) if k > 2 else np.empty(len(data))
        alarms = np.zeros(len(data), dtype=bool)
        start = time.perf_counter()
        records = standardized(data) if self.standardize else data.records
        if self.standardize_target:
            shift, scale = target_scales(data)
            records = [replace(r, y=(r.y - m) / sd) for r, m, sd in
                       zip(records, shift.tolist(), scale.tolist(), strict=True)]
        for lo in range(0, len(records), BATCH_SIZE):
            try:
                outcomes = learner.process_many(records[lo : lo + BATCH_SIZE])
            except ValueError as exc:  # e.g. multi-class labels for a user module
                raise Unsupported(str(exc)) from None
            if k > 2:
                _class_columns(y_pred[lo : lo + len(outcomes)], outcomes)
            else:
                y_pred[lo : lo + len(outcomes)] = outcomes.y_pred
            alarms[lo : lo + len(outcomes)] = outcomes.drift
        if self.standardize_target:
            y_pred = y_pred * scale + shift
        seconds = time.perf_counter() - start
        return Trace(y_pred=y_pred, alarms=alarms if self.reports_alarms else None,
                     seconds=seconds)


def _class_columns(P: np.ndarray, outcomes: Any) -> None:
    """Fill ``P`` (n, K), column c = P(label c), from a batch's outcomes: the engine's
    probabilities in its own class order (first appearance), or, while the stream has shown
    only 0/1 labels, the binary model's P(y = 1) (the classes not seen yet get 0)."""
    if outcomes.probas is None:
        P[:, 1] = outcomes.y_pred
        P[:, 0] = 1.0 - outcomes.y_pred
        return
    columns = [int(label) for label in outcomes.classes.labels]
    P[:, columns] = outcomes.probas


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


def standardized(data: StreamData) -> list[Any]:
    """The records with each feature standardized by its key's running mean and deviation.

    Statistics (Welford's) include the record itself, whose features are known at prediction
    time, so no label leaks; a feature with no spread yet is only centred. A diagnostic of
    what the engine would gain from standardizing inside the model family (river's
    ``StandardScaler`` does the same in front of its linear models)."""
    n, d = data.X.shape
    Z = np.empty((n, d))
    stats: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}
    for i, (key, x) in enumerate(zip(data.keys.tolist(), data.X, strict=True)):
        count, mean, m2 = stats.get(key, (0, np.zeros(d), np.zeros(d)))
        count += 1
        delta = x - mean
        mean = mean + delta / count
        m2 = m2 + delta * (x - mean)
        stats[key] = (count, mean, m2)
        std = np.sqrt(m2 / count)
        Z[i] = (x - mean) / np.where(std > 0, std, 1.0)
    return [replace(r, x=tuple(z)) for r, z in zip(data.records, Z.tolist(), strict=True)]


def target_scales(data: StreamData) -> tuple[np.ndarray, np.ndarray]:
    """Per record, the mean and deviation of its key's labels *before* it (0 and 1 for a key's
    first record; a deviation of 0 counts as 1): the label is unknown when predicting, so the
    prediction is mapped back with what was known then (river's ``TargetStandardScaler``)."""
    n = len(data)
    shift, scale = np.zeros(n), np.ones(n)
    stats: dict[str, tuple[int, float, float]] = {}
    for i, (key, y) in enumerate(zip(data.keys.tolist(), data.y.tolist(), strict=True)):
        count, mean, m2 = stats.get(key, (0, 0.0, 0.0))
        if count:
            shift[i] = mean
            std = (m2 / count) ** 0.5
            scale[i] = std if std > 0 else 1.0
        count += 1
        delta = y - mean
        mean += delta / count
        stats[key] = (count, mean, m2 + delta * (y - mean))
    return shift, scale


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


#: adaptd and its ablations, in report order.
ADAPTD: tuple[LearnerSpec, ...] = (
    _adaptd_spec("adaptd", "meta-learned init and per-parameter rates, online drift detector "
                           "(on real streams: defaults, --task only)"),
    _adaptd_spec("adaptd-oracle", "adaptd with the true change points instead of the detector"),
    _adaptd_spec("adagrad", "plain AdaGrad, never reset (adaptd's baseline)"),
    _adaptd_spec("adagrad-reset", "plain AdaGrad reset to a random init at each detected drift"),
)
