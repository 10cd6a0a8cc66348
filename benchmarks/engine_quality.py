"""Adaptation quality of the engine on the switching sinusoid (issue 3's quality target).

Stream: ``synthetic:sinusoid`` with hazard 0.01 (one key), MLP 1-40-40-1. The meta-state comes
from :func:`adaptd.meta.train.meta_train` on separately seeded streams. Four variants, all
built from settings alone and fed the same records in the same order:

- ``adaptd``: meta-state file + Page-Hinkley detection online (the product);
- ``oracle``: meta-state file + segments cut exactly at the true change points;
- ``adagrad``: plain AdaGrad from a random init, never reset;
- ``adagrad-reset``: plain AdaGrad reset to its random init at each *detected* drift.

Prints mean prequential MSE per variant and seed, the ratios adaptd/adagrad (target ≤ 0.5)
and adaptd/adagrad-reset (target ≤ 0.8), and MSE by samples-since-change bucket.

    .venv/bin/python -m benchmarks.engine_quality [--seeds 1 2 3] [--n 20000]

Not a test: nothing here asserts; it prints numbers measured in this run.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from adaptd.connectors.synthetic import generate
from adaptd.learner.adaptive import AdaptiveLearner
from adaptd.meta.state import MetaState
from adaptd.meta.train import meta_train
from adaptd.records import Record
from adaptd.settings import DriftConfig, LearnerConfig, MetaConfig, RegretConfig

BUCKETS = ((0, 5), (5, 20), (20, 100), (100, None))
BATCH = 256


def records(seed: int, n: int, hazard: float, keys: int = 1) -> list[Record]:
    """The sinusoid stream as engine records (``task`` kept for the oracle and the buckets)."""
    return [Record(x=tuple(r["x"]), y=r["y"], key=r["key"], task=r["task"])
            for r in generate("sinusoid", seed=seed, n=n, hazard=hazard, keys=keys)]


def since_change(recs: Sequence[Record]) -> np.ndarray:
    """Records since the key's current task started, per record (from the true ``task``)."""
    out = np.empty(len(recs), dtype=np.int64)
    last: dict[str, tuple[int | None, int]] = {}
    for i, r in enumerate(recs):
        task, count = last.get(r.key, (None, 0))
        count = 0 if task != r.task else count + 1
        last[r.key] = (r.task, count)
        out[i] = count
    return out


def variant(name: str, learner_cfg: LearnerConfig, drift: DriftConfig, meta_cfg: MetaConfig,
            meta: MetaState | None) -> AdaptiveLearner:
    """Build one variant from settings sections, as the bench does from flags."""
    regret = RegretConfig(baseline=False, hindsight=False)
    if name == "adaptd":
        return AdaptiveLearner("mlp", "regression", config=learner_cfg, drift=drift,
                               meta=meta_cfg, regret=regret, meta_state=meta)
    if name == "oracle":
        return AdaptiveLearner("mlp", "regression", config=learner_cfg,
                               drift=dataclasses.replace(drift, detector="oracle"),
                               meta=meta_cfg, regret=regret, meta_state=meta)
    off = dataclasses.replace(meta_cfg, enabled=False)
    if name == "adagrad":
        return AdaptiveLearner("mlp", "regression", config=learner_cfg,
                               drift=dataclasses.replace(drift, detector="none"), meta=off,
                               regret=regret)
    if name == "adagrad-reset":
        return AdaptiveLearner("mlp", "regression", config=learner_cfg, drift=drift, meta=off,
                               regret=regret)
    raise ValueError(f"unknown variant {name!r}")


def run_variant(learner: AdaptiveLearner, recs: Sequence[Record]) -> tuple[np.ndarray, int, float]:
    """Per-record prequential losses, alarms and seconds."""
    losses = np.empty(len(recs))
    alarms = 0
    t0 = time.perf_counter()
    for lo in range(0, len(recs), BATCH):
        for i, o in enumerate(learner.process_many(recs[lo : lo + BATCH]), lo):
            losses[i] = np.nan if o.loss is None else o.loss
            alarms += o.drift
    return losses, alarms, time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--n", type=int, default=20_000, help="records per evaluation stream")
    p.add_argument("--hazard", type=float, default=0.01)
    p.add_argument("--meta-n", type=int, default=200_000, help="records of meta-training")
    p.add_argument("--meta-keys", type=int, default=16)
    p.add_argument("--meta-seed", type=int, default=1000)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a learner/drift/meta_learning setting, e.g. drift.ph_threshold=5")
    args = p.parse_args(argv)
    sections: dict[str, dict[str, Any]] = {"learner": {"hidden": [40, 40]}, "drift": {},
                                           "meta_learning": {}}
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, field = key.partition(".")
        default = _default(section, field)
        sections[section][field] = value.lower() == "true" if isinstance(default, bool) \
            else float(value) if default is None else type(default)(value)
    learner_cfg = LearnerConfig(**sections["learner"])
    drift = DriftConfig(**sections["drift"])
    meta_cfg = MetaConfig(**sections["meta_learning"])

    t0 = time.perf_counter()
    train = records(args.meta_seed, args.meta_n, args.hazard, keys=args.meta_keys)
    meta = meta_train(train, model="mlp", task="regression", config=learner_cfg, drift=drift,
                      meta=meta_cfg)
    print(f"meta-train: {args.meta_n} records, {args.meta_keys} keys, seed {args.meta_seed}: "
          f"{meta.tasks} tasks in {time.perf_counter() - t0:.1f}s")

    names = ("adaptd", "oracle", "adagrad", "adagrad-reset")
    mse: dict[str, list[float]] = {n: [] for n in names}
    by_bucket: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for seed in args.seeds:
        recs = records(seed, args.n, args.hazard)
        since = since_change(recs)
        changes = int((since == 0).sum()) - 1
        row = []
        for name in names:
            learner = variant(name, learner_cfg, drift, meta_cfg,
                              MetaState.from_dict(meta.to_dict()))
            losses, alarms, secs = run_variant(learner, recs)
            mse[name].append(float(np.nanmean(losses)))
            by_bucket[name].append(np.array([
                np.nanmean(losses[(since >= lo) & (since < (hi or sys.maxsize))])
                for lo, hi in BUCKETS]))
            row.append(f"{name} {mse[name][-1]:.3f} ({alarms} alarms, {secs:.1f}s)")
        print(f"seed {seed} ({changes} changes): " + "; ".join(row))

    print("\nmean prequential MSE over seeds", args.seeds)
    for name in names:
        print(f"  {name:14s} {np.mean(mse[name]):.3f}   per seed {np.round(mse[name], 3)}")
    a = np.array(mse["adaptd"])
    print(f"  adaptd / adagrad        = {np.mean(a / np.array(mse['adagrad'])):.2f}  (target <= 0.5)")
    print(f"  adaptd / adagrad-reset  = {np.mean(a / np.array(mse['adagrad-reset'])):.2f}  "
          "(target <= 0.8)")
    print(f"  oracle / adagrad        = {np.mean(np.array(mse['oracle']) / np.array(mse['adagrad'])):.2f}")
    header = "".join(f"{f'[{lo},{hi or chr(8734)})':>12s}" for lo, hi in BUCKETS)
    print(f"\nMSE by samples since change (mean over seeds)\n  {'':14s}{header}")
    for name in names:
        vals = np.nanmean(np.stack(by_bucket[name]), axis=0)
        print(f"  {name:14s}" + "".join(f"{v:12.3f}" for v in vals))
    return 0


def _default(section: str, field: str) -> Any:
    cls = {"learner": LearnerConfig, "drift": DriftConfig, "meta_learning": MetaConfig}[section]
    return getattr(cls(), field)


if __name__ == "__main__":
    raise SystemExit(main())
