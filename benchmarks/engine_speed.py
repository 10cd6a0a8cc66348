"""Per-record cost of the engine against river, measured in the same run (issue 3's speed target).

Workload: binary classification, ``d`` Gaussian features, labels from a per-key logistic model
(every record labelled). Peer: river's ``LogisticRegression(optimizer=optim.AdaGrad())``,
``predict_proba_one`` + ``learn_one`` per record, one model per key. adaptd: predict, learn
(support window 10, ARUBA++ step), Page-Hinkley drift check, with the model ``logistic`` and
``mlp`` (one hidden layer of 32), two ways in: ``process_many`` on a list of
:class:`~adaptd.records.Record` (the library call, converting to columns inside the timing), and
``process_batch`` on :class:`~adaptd.records.RecordBatch` columns ("columns": what the daemon
runs, its decoder filling the columns as it parses).

Each timing is the best of ``--repeats`` runs, river and adaptd alternating, because this
machine is shared and noisy. Records, columns and river's dicts are built before timing, and both
learners first see ``n`` other records of the same keys untimed: the figures are steady-state
costs, without creating keys (adaptd's arena grows by doubling; river builds a model per key)
or compiling the kernel.

Cases: ``1 key`` (every wave is one record: the sequential worst case) and ``K keys``
interleaved uniformly at random (waves cover many keys). ``full`` is the default config
(shadow baseline and hindsight comparator on); ``lean`` switches both comparators off.

    .venv/bin/python -m benchmarks.engine_speed [--n 20000] [--keys 1000] [--d 10]
        [--batch 1024 4096] [--input records|columns|both]

Multi-class (``--multiclass``): 10 classes, 20 features, labels the argmax of a per-key linear
map plus noise, one key; adaptd's linear softmax (model ``linear``, task ``classification``)
against river's ``linear_model.SoftmaxRegression()`` (``predict_proba_one`` + ``learn_one``).
The target: adaptd at or below river per record.

Not a test: prints measured times and ratios, asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import numpy as np

from adaptd.learner.adaptive import AdaptiveLearner
from adaptd.records import Record, RecordBatch
from adaptd.settings import LearnerConfig, RegretConfig


def make_records(n: int, keys: int, d: int, seed: int = 0) -> list[Record]:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(keys, d))
    k = rng.integers(keys, size=n)
    X = rng.normal(size=(n, d))
    p = 1.0 / (1.0 + np.exp(-(X * w[k]).sum(axis=1)))
    y = (rng.random(n) < p).astype(float)
    return [Record(x=tuple(X[i].tolist()), y=float(y[i]), key=f"k{k[i]}") for i in range(n)]


def make_multiclass_records(n: int, d: int, classes: int, seed: int = 0) -> list[Record]:
    """One key; label = argmax of a fixed linear map of the features plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    W = np.random.default_rng(99).normal(size=(d, classes))
    X = rng.normal(size=(n, d))
    y = np.argmax(X @ W + rng.normal(size=(n, classes)), axis=1)
    return [Record(x=tuple(X[i].tolist()), y=float(y[i])) for i in range(n)]


def time_river(warm: Sequence[Record], records: Sequence[Record], multiclass: bool = False
               ) -> float:
    """Seconds for river to predict then learn every record of ``records``, one model per key,
    after an untimed pass over ``warm``."""
    from river import linear_model, optim

    names = [f"x{j}" for j in range(len(records[0].x))]
    models: dict[str, linear_model.LogisticRegression] = {}

    def run(recs: Sequence[Record]) -> float:
        rows = [(r.key, dict(zip(names, r.x)), int(r.y) if multiclass else bool(r.y))
                for r in recs]
        start = time.perf_counter()
        for key, x, y in rows:
            m = models.get(key)
            if m is None:
                m = models[key] = linear_model.SoftmaxRegression() if multiclass else \
                    linear_model.LogisticRegression(optimizer=optim.AdaGrad())
            m.predict_proba_one(x)
            m.learn_one(x, y)
        return time.perf_counter() - start

    run(warm)
    return run(records)


def adaptd_timer(model: str, hidden: list[int], lean: bool, batch: int, columns: bool
                 ) -> Callable[[Sequence[Record], Sequence[Record]], float]:
    """Seconds for adaptd on ``records`` after an untimed pass over ``warm``: through
    ``process_many`` on the records, or (``columns``) through ``process_batch`` on
    :class:`RecordBatch` columns built before timing — the daemon's own path, where the decoder
    fills the columns (the counterpart of river's dicts, also built before timing)."""
    def run(warm: Sequence[Record], records: Sequence[Record]) -> float:
        regret = RegretConfig(baseline=False, hindsight=False) if lean else RegretConfig()
        learner = AdaptiveLearner(model, "classification", n_features=len(records[0].x),
                                  config=LearnerConfig(hidden=hidden), regret=regret)
        for lo in range(0, len(warm), batch):
            learner.process_many(warm[lo : lo + batch])
        chunks = [records[lo : lo + batch] for lo in range(0, len(records), batch)]
        if columns:
            batches = [RecordBatch.from_records(c) for c in chunks]
            start = time.perf_counter()
            for b in batches:
                learner.process_batch(b)
            return time.perf_counter() - start
        start = time.perf_counter()
        for c in chunks:
            learner.process_many(c)
        return time.perf_counter() - start
    return run


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20_000, help="records per case")
    p.add_argument("--keys", type=int, default=1000, help="keys of the interleaved case")
    p.add_argument("--d", type=int, default=10, help="features")
    p.add_argument("--batch", type=int, nargs="+", default=[256, 1024],
                   help="batch sizes of the interleaved case")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--input", choices=("records", "columns", "both"), default="both",
                   help="time process_many on Records, process_batch on columns, or both")
    p.add_argument("--multiclass", action="store_true",
                   help="only the multi-class case: 10 classes, 20 features, against river's "
                        "SoftmaxRegression")
    args = p.parse_args(argv)
    inputs = {"records": (False,), "columns": (True,), "both": (False, True)}[args.input]
    if args.multiclass:
        return multiclass(args.n, args.repeats, inputs)

    print(f"records {args.n}, d {args.d}, best of {args.repeats}; us = microseconds per record")
    print(f"{'case':53s} {'adaptd us':>10s} {'river us':>9s} {'adaptd/river':>13s} "
          f"{'river rec/s':>12s} {'adaptd rec/s':>13s} {'speedup':>8s}")
    cases = [("1 key", 1, [256])] + [(f"{args.keys} keys interleaved", args.keys, args.batch)]
    for label, keys, batches in cases:
        warm = make_records(args.n, keys, args.d, seed=1)
        records = make_records(args.n, keys, args.d)
        for batch in batches:
            variants = [(m, h, lean, cols) for m, h in (("logistic", [32]), ("mlp", [32]))
                        for lean in (False, True) for cols in inputs]
            for model, hidden, lean, columns in variants:
                fn = adaptd_timer(model, hidden, lean, batch, columns)
                ta, tr = [], []
                for _ in range(args.repeats):  # alternate, so both see the same noise
                    tr.append(time_river(warm, records))
                    ta.append(fn(warm, records))
                a, r = min(ta) / args.n * 1e6, min(tr) / args.n * 1e6
                name = f"{label}, batch {batch}, {model}{'-32' if model == 'mlp' else ''}" \
                       f" {'lean' if lean else 'full'}{', columns' if columns else ''}"
                print(f"{name:53s} {a:10.2f} {r:9.2f} {a / r:13.2f} {1e6 / r:12.0f} "
                      f"{1e6 / a:13.0f} {r / a:8.2f}x", flush=True)
    print("\ntargets: logistic 1 key adaptd/river <= 1; mlp-32 <= 2; "
          f"{args.keys} keys speedup >= 10x")
    return 0


def multiclass(n: int, repeats: int, inputs: tuple[bool, ...]) -> int:
    """The multi-class case (see the module docstring)."""
    warm = make_multiclass_records(n, 20, 10, seed=1)
    records = make_multiclass_records(n, 20, 10)
    print(f"multi-class: 10 classes, 20 features, 1 key, records {n}, best of {repeats}")
    print(f"{'case':40s} {'adaptd us':>10s} {'river us':>9s} {'adaptd/river':>13s}")
    for lean in (False, True):
        for columns in inputs:
            fn = adaptd_timer("linear", [32], lean, 256, columns)
            ta, tr = [], []
            for _ in range(repeats):
                tr.append(time_river(warm, records, multiclass=True))
                ta.append(fn(warm, records))
            a, r = min(ta) / n * 1e6, min(tr) / n * 1e6
            name = f"softmax {'lean' if lean else 'full'}{', columns' if columns else ''}"
            print(f"{name:40s} {a:10.2f} {r:9.2f} {a / r:13.2f}", flush=True)
    print("\ntarget: adaptd/river <= 1")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
