"""Concept reuse (``meta_learning.library``) against no library, at several batch sizes.

Each stream runs through the default model (``auto``: Hedge over linear and MLP, given only
``--task``) built as ``adaptd run`` builds it, fed through ``process_many`` in batches of
1, 8, 64 and 256 records, once with ``library = 0`` and once with ``library = 8``, in the same
process. Reported: mean prequential loss (MSE or log loss), accuracy for binary streams, the
reuses (summed over the two candidates) and the seconds. Streams: river SEA and STAGGER with recurring concepts (the bench's), a recurring
linear-tasks stream (four tasks cycled), the same generator with one task (nothing recurs),
and the bench's real streams.

    .venv/bin/python benchmarks/concepts.py [--streams sea,stagger] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from adaptd.bench.streams import Stream, StreamData, real_streams, suite_streams
from adaptd.config import Settings
from adaptd.learner import build_learner
from adaptd.settings import MetaConfig

BATCHES = (1, 8, 64, 256)
LIBRARIES = (0, 8)


def recurring_linear(seed: int, n: int, tasks: int = 4, d: int = 5, period: int = 200
                     ) -> Iterator[dict[str, Any]]:
    """``tasks`` fixed linear tasks y = w_t·x + b_t + noise, cycled every ``period`` records:
    every task comes back (n / period / tasks) times."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(tasks, d + 1)) * 2.0
    for i in range(n):
        t = (i // period) % tasks
        x = rng.normal(size=d)
        yield {"key": "default", "x": x.tolist(), "y": float(W[t, :d] @ x + W[t, d]
                                                            + 0.1 * rng.normal()), "task": t}


def streams() -> dict[str, tuple[str, StreamData]]:
    """name → (task, data)."""
    out: dict[str, tuple[str, StreamData]] = {}
    by_name: dict[str, Stream] = {s.name: s for s in suite_streams(quick=False)}
    out["sea (recurring)"] = ("classification", by_name["sea"].load(0, 8000))
    out["stagger (recurring)"] = ("classification", by_name["stagger"].load(0, 9000))
    out["linear-tasks (recurring)"] = ("regression", StreamData.from_dicts(
        recurring_linear(0, 8000)))
    # One task, no drift: whatever the library does here is the price of its false alarms.
    out["linear (stationary)"] = ("regression", StreamData.from_dicts(
        recurring_linear(0, 8000, tasks=1)))
    for s in real_streams(quick=False):
        out[s.name] = (s.task, s.load(0, 20_000))
    return out


#: The bench's synthetic streams where concepts do not (sinusoid, linear-tasks) or do (friedman
#: gra) recur, with the bench's model for each, without meta-training first.
SUITE = (("sinusoid h=0.005", "mlp"), ("sinusoid h=0.01", "mlp"), ("sinusoid h=0.05", "mlp"),
         ("linear-tasks spread=0.3", "linear"), ("linear-tasks spread=1.0", "linear"),
         ("linear-tasks spread=3.0", "linear"), ("friedman lea", "mlp"),
         ("friedman gra", "mlp"), ("friedman gsg", "mlp"))


def suite(seed: int) -> list[dict[str, Any]]:
    """:data:`SUITE` at batch 256, 8000 records, library 0 and 8."""
    by_name = {s.name: s for s in suite_streams(quick=False)}
    rows = []
    for name, model in SUITE:
        data = by_name[name].load(seed, 8000)
        for library in LIBRARIES:
            row = {"stream": name, "seed": seed, "model": model, "batch": 256, "library": library,
                   **run_one("regression", data, 256, library, model)}
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def run_one(task: str, data: StreamData, batch: int, library: int, model: str = "auto"
            ) -> dict[str, Any]:
    settings = Settings(task=task, model=model)  # type: ignore[arg-type]
    settings.meta_learning = MetaConfig(library=library)
    lrn = build_learner(settings)
    recs = data.records
    t0 = time.perf_counter()
    hits = 0
    binary = task == "classification" and set(np.unique(data.y)) <= {0.0, 1.0}
    for lo in range(0, len(recs), batch):
        out = lrn.process_many(recs[lo : lo + batch])
        if binary:
            hits += int(((out.y_pred >= 0.5) == (data.y[lo : lo + batch] == 1.0)).sum())
    sec = time.perf_counter() - t0
    s = lrn.summary()
    row = {"n": len(recs), "loss": s.cumulative_loss / len(recs), "reuses": s.concept_reuses,
           "alarms": s.drift_events, "seconds": sec}
    if binary:
        row["accuracy"] = hits / len(recs)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", default="")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--out", default="-")
    ap.add_argument("--suite", action="store_true", help="the bench's synthetic streams instead")
    args = ap.parse_args()
    if args.suite:
        _write([row for seed in (0, 1) for row in suite(seed)], args.out)
        return
    wanted = [w for w in args.streams.split(",") if w]
    results = []
    for name, (task, data) in streams().items():
        if wanted and not any(w in name for w in wanted):
            continue
        for batch in map(int, args.batches.split(",")):
            for library in LIBRARIES:  # both in the same process, back to back
                row = {"stream": name, "batch": batch, "library": library,
                       **run_one(task, data, batch, library)}
                print(json.dumps(row), file=sys.stderr, flush=True)
                results.append(row)
    _write(results, args.out)


def _write(results: list[dict[str, Any]], out: str) -> None:
    text = json.dumps(results, indent=1)
    if out == "-":
        print(text)
    else:
        with open(out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
