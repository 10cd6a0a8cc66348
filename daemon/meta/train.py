"""Offline meta-training: bootstrap the meta-state from historical records.

The same engine that runs online does the work: an :class:`AdaptiveLearner` with meta-learning
on is driven over the records (``epochs`` times), each key's segments being its tasks. When
the records carry a ``task`` field the segments follow it exactly (the ``oracle`` detector);
otherwise the configured drift detector cuts them, as it would online. Open segments are closed
at the end of each pass so that their tasks count too. The shadow baseline and hindsight fits
are switched off: nobody reads them here.

>>> from adaptd.records import Record
>>> recs = [Record(x=(float(i % 7),), y=2.0 * (i % 7) + (i // 50), task=i // 50) for i in range(200)]
>>> state = meta_train(recs, model="linear", task="regression")  # 2 passes: 4 tasks each
>>> state.tasks
8
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence

from adaptd.learner.adaptive import AdaptiveLearner
from adaptd.learner.models import TaskKind
from adaptd.meta import EPOCHS
from adaptd.meta.state import MetaState
from adaptd.records import Record
from adaptd.settings import DriftConfig, LearnerConfig, MetaConfig, RegretConfig

log = logging.getLogger(__name__)


def meta_train(
    records: Iterable[Record],
    model: str = "linear",
    task: TaskKind = "regression",
    config: LearnerConfig | None = None,
    drift: DriftConfig | None = None,
    meta: MetaConfig | None = None,
    start: MetaState | None = None,
    epochs: int = EPOCHS,
    batch_size: int = 1024,
) -> MetaState:
    """The meta-state learned from ``records`` (kept in memory when ``epochs > 1``).

    Blocks for the whole computation. ``start`` continues from an existing meta-state.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    recs: Sequence[Record] = records if isinstance(records, Sequence) else list(records)
    if not recs:
        raise ValueError("meta-train needs at least one record")
    drift = drift or DriftConfig()
    if all(r.task is not None for r in recs):
        drift = dataclasses.replace(drift, detector="oracle")
    meta = dataclasses.replace(meta or MetaConfig(), enabled=True)
    learner = AdaptiveLearner(
        model=model, task=task, n_features=len(recs[0].x), config=config, drift=drift, meta=meta,
        regret=RegretConfig(baseline=False, hindsight=False), meta_state=start,
    )
    statistics = None
    for epoch in range(epochs):
        for lo in range(0, len(recs), batch_size):
            learner.process_many(recs[lo : lo + batch_size])
        if statistics is None and learner.scaler is not None:
            # Later passes fold the same records again: same mean and variance, twice the
            # count, which would make the statistics look better known than they are.
            statistics = learner.scaler.statistics()
        learner.close_segments()
        learner.forget(list(learner.keys()))
        assert learner.meta is not None
        log.info("meta-train epoch %d/%d: %d tasks so far, loss %.4g", epoch + 1, epochs,
                 learner.meta.tasks, learner.summary().cumulative_loss)
    assert learner.meta is not None
    if statistics is not None:  # θ0 was learned under these statistics: they go with it
        learner.meta.scaler = statistics
    return learner.meta


def module_state(state: MetaState, model: str, task: TaskKind, config: LearnerConfig | None = None
                 ) -> dict:
    """The ``nn.Module`` ``state_dict`` of the model at θ0 (what users load into PyTorch)."""
    from adaptd.learner.autograd import load_flat
    from adaptd.learner.models import build_family

    cfg = config or LearnerConfig()
    family = build_family(model, task, int(state.model["n_features"]),
                          state.model.get("hidden", cfg.hidden),
                          state.model.get("activation", cfg.activation),
                          len(state.model.get("classes", ())))
    return load_flat(family.module(), state.theta0).state_dict()
