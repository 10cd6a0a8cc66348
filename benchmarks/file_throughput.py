"""The whole process from a file: ``adaptd run`` against the plain loop a river user would write.

Both read the same jsonl file of binary records (``d`` features, one key) and write one JSON
prediction per line; both are timed as whole processes (start-up included), alternating, and
the median of ``--runs`` is reported with the ratio of adaptd's wall time to the loop's, as
the speed issue measures it. The loop is ``orjson`` + river's
``LogisticRegression(optimizer=AdaGrad())``, ``predict_proba_one`` then ``learn_one``.

    python benchmarks/file_throughput.py --records 1000000 --runs 3
"""

from __future__ import annotations

import argparse
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
model = linear_model.LogisticRegression(optimizer=optim.AdaGrad())
with open(sys.argv[1], "rb") as src, open(sys.argv[2], "wb") as out:
    for line in src:
        r = orjson.loads(line)
        x = dict(enumerate(r["x"]))
        p = model.predict_proba_one(x).get(True, 0.0)
        model.learn_one(x, bool(r["y"]))
        out.write(orjson.dumps({"y_pred": int(p >= 0.5), "proba": p}) + b"\\n")
'''


def write_records(path: Path, n: int, d: int, seed: int) -> None:
    """A logistic stream: one fixed weight vector, Gaussian features, noisy labels."""
    import numpy as np
    import orjson

    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)
    with open(path, "wb") as fh:
        for start in range(0, n, 100_000):
            X = rng.normal(size=(min(100_000, n - start), d))
            y = (X @ w + rng.normal(size=len(X)) > 0).astype(int)
            fh.writelines(orjson.dumps({"x": row, "y": int(label)}) + b"\n"
                          for row, label in zip(X.tolist(), y.tolist(), strict=True))


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4096)
    args = parser.parse_args(argv)
    adaptd = shutil.which("adaptd") or str(Path(sys.executable).with_name("adaptd"))
    with tempfile.TemporaryDirectory(prefix="adaptd-file-bench-") as tmp:
        work = Path(tmp)
        source = work / "in.jsonl"
        write_records(source, args.records, args.features, seed=1)
        loop = work / "loop.py"
        loop.write_text(RIVER_LOOP)
        times: dict[str, list[float]] = {"adaptd": [], "river loop": []}
        for run in range(args.runs):
            shutil.rmtree(work / "state", ignore_errors=True)
            times["adaptd"].append(timed([
                adaptd, "run", "--source", f"jsonl:{source}", "--sink",
                f"jsonl:{work / f'out-{run}.jsonl'}", "--task", "classification", "--model",
                "logistic", "--state-dir", str(work / "state"), "--metrics-port", "off",
                "--batch-size", str(args.batch_size)]))
            times["river loop"].append(timed([sys.executable, str(loop), str(source),
                                              str(work / "river.jsonl")]))
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"{args.records:,} records, {args.features} features, one key, median of {args.runs}")
    for name, wall_s in medians.items():
        print(f"  {name:<11} {wall_s:7.2f} s  {args.records / wall_s:>10,.0f} records/s")
    print(f"  adaptd / river loop wall time: {medians['adaptd'] / medians['river loop']:.2f}")


if __name__ == "__main__":
    main()
