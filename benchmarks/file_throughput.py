"""The whole process from a file: ``adaptd run`` against the plain loop a river user would write.

Both read the same jsonl file of binary records (``d`` features, one key or ``--keys`` keys)
and write one JSON prediction per line; both are timed as whole processes (start-up
included), alternating, and the median of ``--runs`` is reported with the ratio of adaptd's
wall time to the loop's, as the speed issue measures it, and the same ratio of CPU time (user
+ system: steadier than wall time on a shared machine). The loop is ``orjson`` + river's
``LogisticRegression(optimizer=AdaGrad())``, one per key, ``predict_proba_one`` then
``learn_one``.

    python benchmarks/file_throughput.py --records 1000000 --runs 3 [--keys 1000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RIVER_LOOP = '''
import sys, orjson
from river import linear_model, optim
models = {}
with open(sys.argv[1], "rb") as src, open(sys.argv[2], "wb") as out:
    for line in src:
        r = orjson.loads(line)
        key = r.get("key", "default")
        model = models.get(key)
        if model is None:
            model = models[key] = linear_model.LogisticRegression(optimizer=optim.AdaGrad())
        x = dict(enumerate(r["x"]))
        p = model.predict_proba_one(x).get(True, 0.0)
        model.learn_one(x, bool(r["y"]))
        out.write(orjson.dumps({"key": key, "y_pred": int(p >= 0.5), "proba": p}) + b"\\n")
'''


def write_records(path: Path, n: int, d: int, seed: int, keys: int = 1) -> None:
    """A logistic stream: one fixed weight vector, Gaussian features, noisy labels; with
    ``keys`` > 1 the records go to keys ``k0``, ``k1``, … in turn."""
    import numpy as np
    import orjson

    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)
    with open(path, "wb") as fh:
        for start in range(0, n, 100_000):
            X = rng.normal(size=(min(100_000, n - start), d))
            y = (X @ w + rng.normal(size=len(X)) > 0).astype(int)
            if keys == 1:
                fh.writelines(orjson.dumps({"x": row, "y": int(label)}) + b"\n"
                              for row, label in zip(X.tolist(), y.tolist(), strict=True))
            else:
                fh.writelines(orjson.dumps({"key": f"k{(start + i) % keys}", "x": row,
                                            "y": int(label)}) + b"\n"
                              for i, (row, label) in enumerate(zip(X.tolist(), y.tolist(),
                                                                   strict=True)))


#: Both processes run with Python's bytecode cache on, as a user's do (pip writes ``.pyc`` files
#: at install): with ``PYTHONDONTWRITEBYTECODE`` set, an editable install recompiles every
#: adaptd module at each start (about 0.08 s) while river's installed ones load from bytecode.
ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one whole process (environment: ``env``, else
    :data:`ENV`)."""
    before = os.times()
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=ENV if env is None else env)
    wall_s = time.perf_counter() - started
    after = os.times()
    return wall_s, (after.children_user - before.children_user
                    + after.children_system - before.children_system)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--keys", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="adaptd run --batch-size (default: the daemon's own)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    adaptd = shutil.which("adaptd") or str(Path(sys.executable).with_name("adaptd"))
    with tempfile.TemporaryDirectory(prefix="adaptd-file-bench-") as tmp:
        work = Path(tmp)
        source = work / "in.jsonl"
        write_records(source, args.records, args.features, seed=1, keys=args.keys)
        loop = work / "loop.py"
        loop.write_text(RIVER_LOOP)
        times: dict[str, list[tuple[float, float]]] = {"adaptd": [], "river loop": []}
        for run in range(args.runs):
            shutil.rmtree(work / "state", ignore_errors=True)
            times["adaptd"].append(timed([
                adaptd, "run", "--source", f"jsonl:{source}", "--sink",
                f"jsonl:{work / f'out-{run}.jsonl'}", "--task", "classification", "--model",
                "logistic", "--state-dir", str(work / "state"), "--metrics-port", "off",
                *([] if args.batch_size is None else ["--batch-size", str(args.batch_size)])]))
            (work / f"out-{run}.jsonl").unlink()
            times["river loop"].append(timed([sys.executable, str(loop), str(source),
                                              str(work / "river.jsonl")]))
    wall = {name: statistics.median(w for w, _ in values) for name, values in times.items()}
    cpu = {name: statistics.median(c for _, c in values) for name, values in times.items()}
    print(f"{args.records:,} records, {args.features} features, {args.keys} key(s), "
          f"median of {args.runs} alternated runs")
    for name in times:
        print(f"  {name:<11} {wall[name]:7.2f} s wall {cpu[name]:7.2f} s CPU "
              f"{args.records / wall[name]:>10,.0f} records/s")
    print(f"  adaptd / river loop: wall time {wall['adaptd'] / wall['river loop']:.2f}, "
          f"CPU time {cpu['adaptd'] / cpu['river loop']:.2f}")
    # Wall times on a shared machine stretch with its load: say what it was.
    print("  load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}, after: {:.2f} {:.2f} {:.2f}"
          .format(*load_before, *os.getloadavg()))


if __name__ == "__main__":
    main()
