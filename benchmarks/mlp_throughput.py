"""The MLP's whole process from a file: ``adaptd run --model mlp`` against the plain river loop.

The speed issue's MLP target: MLP 40-40, one key, from a file, whole process through the CLI,
at no more than 1× the wall time of the plain loop a river user would write (orjson in,
``LogisticRegression(optimizer=AdaGrad())`` ``predict_proba_one`` + ``learn_one``, a line out).
Same records file and loop as :mod:`benchmarks.file_throughput` (binary, ``d`` Gaussian
features, one key); both timed as whole processes (start-up included), alternating, median of
``--runs``, as the ratio of adaptd's wall time to the loop's measured in the same run.

    PYTHONPATH=. .venv/bin/python benchmarks/mlp_throughput.py --records 200000 --runs 3
        [--env ADAPTD_LEARNER__WINDOW=5 ...] [--variant w2:ADAPTD_LEARNER__WINDOW=2 ...]

``--variant LABEL:ADAPTD_X=V[,ADAPTD_Y=W]``: also time adaptd with these settings, in the same
alternation (each option's ratio to the loop of the same run).

``--engine W [W ...]``: the engine alone instead, in this process: ``process_batch`` on columns
(MLP 10-40-40-1, one key, shadow baseline and hindsight on, batches of 4096) per window size,
with the baselines on the second thread and serial: this thread's CPU time (robust to other
processes on a shared machine; the critical path on an idle one), the process's CPU time and
wall time, best of 3, after an untimed pass over other records.

``--multiclass``: the multi-class cost target instead: 10 classes, 20 Gaussian features, labels
the argmax of a fixed linear map plus noise, one key; ``adaptd run --model linear`` (softmax)
against the same loop with river's ``SoftmaxRegression()``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.file_throughput import RIVER_LOOP, timed, write_records

SOFTMAX_LOOP = '''
import sys, orjson
from river import linear_model
model = linear_model.SoftmaxRegression()
with open(sys.argv[1], "rb") as src, open(sys.argv[2], "wb") as out:
    for line in src:
        r = orjson.loads(line)
        x = dict(enumerate(r["x"]))
        p = model.predict_proba_one(x)
        model.learn_one(x, r["y"])
        best = max(p, key=p.get) if p else 0
        out.write(orjson.dumps({"y_pred": best, "probas": p}, option=orjson.OPT_NON_STR_KEYS)
                  + b"\\n")
'''


def write_multiclass(path: Path, n: int, d: int = 20, classes: int = 10, seed: int = 1) -> None:
    """One key; label = argmax of a fixed linear map of the features plus Gaussian noise."""
    import numpy as np
    import orjson

    rng = np.random.default_rng(seed)
    W = rng.normal(size=(d, classes))
    with open(path, "wb") as fh:
        for start in range(0, n, 100_000):
            X = rng.normal(size=(min(100_000, n - start), d))
            y = np.argmax(X @ W + rng.normal(size=(len(X), classes)), axis=1)
            fh.writelines(orjson.dumps({"x": row, "y": int(label)}) + b"\n"
                          for row, label in zip(X.tolist(), y.tolist(), strict=True))


def engine_us(window: int, n: int = 10_000, d: int = 10, baseline_thread: bool = True
              ) -> tuple[float, float, float]:
    """µs per record for the MLP engine at support window ``window``: the calling thread's CPU
    time (with ``baseline_thread``, the baselines' rows are not in it: the critical path on
    an idle machine), the process's CPU time (all threads) and wall time; each the best of 3."""
    import numpy as np

    from adaptd.learner.adaptive import AdaptiveLearner
    from adaptd.records import Record, RecordBatch
    from adaptd.settings import LearnerConfig, RegretConfig

    def batches(seed: int) -> list[RecordBatch]:
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(n, d))
        y = (X @ rng.normal(size=d) + rng.normal(size=n) > 0).astype(float)
        recs = [Record(x=tuple(X[i].tolist()), y=float(y[i])) for i in range(n)]
        return [RecordBatch.from_records(recs[i : i + 4096]) for i in range(0, n, 4096)]

    warm, timed_batches = batches(1), batches(0)
    best = [float("inf")] * 3
    for _ in range(3):
        learner = AdaptiveLearner("mlp", "classification", n_features=d,
                                  config=LearnerConfig(window=window),
                                  regret=RegretConfig(baseline_thread=baseline_thread))
        for b in warm:
            learner.process_batch(b)
        clocks = (time.thread_time, time.process_time, time.perf_counter)
        start = [clock() for clock in clocks]
        for b in timed_batches:
            learner.process_batch(b)
        best = [min(m, clock() - t0) for m, clock, t0 in zip(best, clocks, start, strict=True)]
    return best[0] / n * 1e6, best[1] / n * 1e6, best[2] / n * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--multiclass", action="store_true",
                        help="10 classes, 20 features, linear softmax against SoftmaxRegression")
    parser.add_argument("--other", metavar="ADAPTD_BIN",
                        help="also time this adaptd executable (e.g. another checkout's)")
    parser.add_argument("--env", action="append", default=[], metavar="ADAPTD_X=V",
                        help="a setting for the adaptd runs, e.g. ADAPTD_LEARNER__WINDOW=5")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL:ADAPTD_X=V,...",
                        help="also time adaptd with these settings, e.g. w2:ADAPTD_LEARNER__WINDOW=2")
    parser.add_argument("--engine", type=int, nargs="+", metavar="WINDOW",
                        help="time the engine alone at these window sizes")
    args = parser.parse_args(argv)
    if args.engine:
        for window in args.engine:
            for threaded in (True, False):
                main_us, cpu_us, wall_us = engine_us(window, baseline_thread=threaded)
                print(f"MLP 10-40-40-1 engine, window {window}, baselines "
                      f"{'on the second thread' if threaded else 'serial':<21}: this thread "
                      f"{main_us:5.1f}, process CPU {cpu_us:5.1f}, wall {wall_us:5.1f} us/record")
        return
    adaptd = shutil.which("adaptd") or str(Path(sys.executable).with_name("adaptd"))
    env = dict(os.environ, **dict(item.split("=", 1) for item in args.env))
    variants = {}
    for spec in args.variant:
        label, _, items = spec.partition(":")
        variants[f"adaptd {label}"] = dict(env, **dict(i.split("=", 1) for i in items.split(",")))
    with tempfile.TemporaryDirectory(prefix="adaptd-mlp-bench-") as tmp:
        work = Path(tmp)
        source = work / "in.jsonl"
        model = "linear" if args.multiclass else "mlp"
        if args.multiclass:
            write_multiclass(source, args.records)
        else:
            write_records(source, args.records, args.features, seed=1)
        loop = work / "loop.py"
        loop.write_text(SOFTMAX_LOOP if args.multiclass else RIVER_LOOP)
        def adaptd_run(src: Path, run: int, binary: str = adaptd,
                       settings: dict[str, str] = env) -> tuple[float, float]:
            shutil.rmtree(work / "state", ignore_errors=True)
            return timed([
                binary, "run", "--source", f"jsonl:{src}", "--sink",
                f"jsonl:{work / f'out-{run}.jsonl'}", "--task", "classification", "--model",
                model, "--state-dir", str(work / "state"), "--metrics-port", "off"], settings)

        # Untimed: Numba compiles the kernel into its cache on a fresh install or after a
        # code change (tens of seconds here); a user's later processes load it.
        warm = work / "warm.jsonl"
        if args.multiclass:
            write_multiclass(warm, 2000, seed=2)
        else:
            write_records(warm, 2000, args.features, seed=2)
        adaptd_run(warm, -1)
        if args.other:
            adaptd_run(warm, -1, args.other)
        name = f"adaptd {model}"
        times: dict[str, list[float]] = {name: [], "river loop": []}
        cpus: dict[str, list[float]] = {}

        def record(label: str, wall_and_cpu_s: tuple[float, float]) -> None:
            times.setdefault(label, []).append(wall_and_cpu_s[0])
            cpus.setdefault(label, []).append(wall_and_cpu_s[1])

        for run in range(args.runs):
            record(name, adaptd_run(source, run))
            if args.other:
                record("other", adaptd_run(source, run, args.other))
            for label, settings in variants.items():
                record(label, adaptd_run(source, run, settings=settings))
            record("river loop", timed([sys.executable, str(loop), str(source),
                                        str(work / "river.jsonl")], dict(os.environ)))
    medians = {name: statistics.median(values) for name, values in times.items()}
    cpu = {name: statistics.median(values) for name, values in cpus.items()}
    shape = "20 features, 10 classes" if args.multiclass else f"{args.features} features"
    print(f"{args.records:,} records, {shape}, one key, median of {args.runs}"
          f"{' ' + ' '.join(args.env) if args.env else ''}")
    for label, wall_s in medians.items():
        print(f"  {label:<13} {wall_s:7.2f} s  {args.records / wall_s:>10,.0f} records/s  "
              f"{wall_s / args.records * 1e6:6.1f} us/record  CPU {cpu[label]:7.2f} s")
    for label, wall_s in medians.items():
        if label != "river loop":
            print(f"  {label} / river loop wall time: "
                  f"{wall_s / medians['river loop']:.2f}  (target <= 1), CPU time "
                  f"{cpu[label] / cpu['river loop']:.2f}")


if __name__ == "__main__":
    main()
