"""Bit-for-bit fingerprint of the engine's results, for refactorings that must not change them.

Runs :class:`~adaptd.learner.adaptive.AdaptiveLearner` over deterministic synthetic streams
(``sinusoid`` with the MLP, ``linear-tasks`` with the linear model, a logistic stream) under
each detector (``page_hinkley``, ``oracle``, ``none``, ``adwin``), both baseline windows (1 and
3), the compiled kernel on and off, and the hypergradient on, and keeps every record's
``y_pred``, ``loss``, ``drift``, ``segment``, ``learned``, ``recovered_after``, the summary and
the final meta-state.

    .venv/bin/python -m benchmarks.engine_fingerprint --save /tmp/before.npz
    .venv/bin/python -m benchmarks.engine_fingerprint --compare /tmp/before.npz

``--compare`` prints each case whose arrays differ in any bit and exits 1 if one does. Not a
test (it takes about a minute); the equivalence tests in ``tests/unit/test_learner.py`` are.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from adaptd.connectors.synthetic import generate
from adaptd.learner.adaptive import AdaptiveLearner
from adaptd.records import Record
from adaptd.settings import DriftConfig, LearnerConfig, MetaConfig, RegretConfig

N_RECORDS = 1500
BATCH = 200


def _stream(name: str) -> list[Record]:
    """The records of one named stream (``logistic`` is linear-tasks with y thresholded)."""
    if name == "sinusoid":
        raw = generate("sinusoid", seed=3, n=N_RECORDS, hazard=0.005)
    elif name == "sinusoid-3keys":
        raw = generate("sinusoid", seed=4, n=N_RECORDS, keys=3, hazard=0.005)
    elif name in ("linear", "linear-3keys"):
        raw = generate("linear-tasks", seed=5, n=N_RECORDS, d=5, hazard=0.004,
                       keys=3 if name.endswith("keys") else 1)
    else:
        raw = generate("linear-tasks", seed=6, n=N_RECORDS, d=4, hazard=0.004)
    recs = []
    for i, r in enumerate(raw):
        y = r["y"] if name != "logistic" else float(r["y"] > 0)
        # Every 29th record unlabelled, one absurd record (a skipped update).
        x = tuple(r["x"]) if i != 700 else tuple(1e300 for _ in r["x"])
        recs.append(Record(x=x, y=None if i % 29 == 5 else y, key=r["key"], task=r["task"]))
    return recs


def cases() -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(case name, stream, model, learner options)."""
    streams = (("sinusoid", "mlp"), ("sinusoid-3keys", "mlp"), ("linear", "linear"),
               ("linear-3keys", "linear"), ("logistic", "logistic"))
    for stream, model in streams:
        for detector in ("page_hinkley", "oracle", "none", "adwin"):
            for bw in (1, 3):
                for kernel in (True, False):
                    name = f"{stream}/{model}/{detector}/bw{bw}/{'kernel' if kernel else 'waves'}"
                    yield name, stream, model, {"detector": detector, "bw": bw, "kernel": kernel,
                                                "hyper": False}
        yield f"{stream}/{model}/page_hinkley/hyper", stream, model, {
            "detector": "page_hinkley", "bw": 1, "kernel": True, "hyper": True}
    yield "linear/linear/page_hinkley/carry2", "linear", "linear", {
        "detector": "page_hinkley", "bw": 1, "kernel": True, "hyper": False, "carry": 2}
    yield "linear/linear/page_hinkley/carry2/waves", "linear", "linear", {
        "detector": "page_hinkley", "bw": 1, "kernel": False, "hyper": False, "carry": 2}


def run_case(stream: Sequence[Record], model: str, opts: dict[str, Any]) -> dict[str, np.ndarray]:
    task = "classification" if model == "logistic" else "regression"
    learner = AdaptiveLearner(
        model, task,
        # Standardization off: the fingerprint pins the engine as it was before it existed.
        config=LearnerConfig(kernel=opts["kernel"], hidden=[8, 6], standardize=False,
                             standardize_target=False,
                             hypergradient=opts["hyper"], hypergradient_lr=1e-2),
        drift=DriftConfig(detector=opts["detector"], carry=opts.get("carry", 0)),
        meta=MetaConfig(library=0),  # concept reuse off, as before it existed
        regret=RegretConfig(baseline_window=opts["bw"]))
    outs = [learner.process_many(stream[i : i + BATCH]) for i in range(0, len(stream), BATCH)]
    s = learner.summary()
    meta = learner.meta
    assert meta is not None
    return {
        "y_pred": np.concatenate([o.y_pred for o in outs]),
        "loss": np.concatenate([o.loss for o in outs]),
        "drift": np.concatenate([o.drift for o in outs]),
        "segment": np.concatenate([o.segment for o in outs]),
        "learned": np.concatenate([o.learned for o in outs]),
        "recovered": np.concatenate([o.recovered_after for o in outs]),
        "summary": np.array([float(v) if v is not None else np.nan for v in (
            s.cumulative_loss, s.baseline_loss, s.hindsight_regret, s.prequential_loss,
            s.meta_updates, s.skipped_updates, s.updates, s.drift_events, s.hindsight_loss,
            s.step_multiplier)]),
        "meta": np.concatenate([meta.theta0, meta.B, meta.G, [meta.tasks, meta.alpha]]),
    }


def fingerprint() -> dict[str, np.ndarray]:
    streams: dict[str, list[Record]] = {}
    result = {}
    for name, stream, model, opts in cases():
        if stream not in streams:
            streams[stream] = _stream(stream)
        for field, arr in run_case(streams[stream], model, opts).items():
            result[f"{name}:{field}"] = arr
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--save", metavar="FILE")
    g.add_argument("--compare", metavar="FILE")
    args = p.parse_args(argv)
    now = fingerprint()
    if args.save:
        np.savez(args.save, **now)
        print(f"{len(now)} arrays saved to {args.save}")
        return 0
    before = dict(np.load(args.compare))
    bad = sorted(k for k in before.keys() | now.keys()
                 if k not in before or k not in now or before[k].dtype != now[k].dtype
                 or before[k].tobytes() != now[k].tobytes())
    for k in bad:
        print("DIFFERS:", k)
    print(f"{len(now)} arrays compared, {len(bad)} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
