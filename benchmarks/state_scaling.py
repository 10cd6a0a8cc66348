"""Whole-process throughput and state growth, with the incremental state store (issue: state
that scales and travels). Measured in one run, so the figures are ratios on one machine.

1. ``few keys``: N records over K keys (default 1M over 1,000), JSON lines in and out:
   ``adaptd run --model logistic`` as a process (start-up, parsing, learning, checkpoints every
   10k records, writing predictions), against a plain river loop in a process of its own (one
   ``LogisticRegression(optimizer=AdaGrad())`` per key, ``predict_proba_one`` then
   ``learn_one``, orjson in and out).
2. ``distinct keys``: N records each of a new key, with ``learner.max_keys`` (default 100k):
   records/s against case 1, the process's RSS sampled every 0.5 s, and the state dir's size.

    .venv/bin/python -m benchmarks.state_scaling [--n 1000000] [--keys 1000] [--max-keys 100000]

Not a test: prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import orjson

RIVER_LOOP = r"""
import sys, orjson
from river import linear_model, optim
models = {}
with open(sys.argv[1], "rb") as src, open(sys.argv[2], "wb") as out:
    for line in src:
        r = orjson.loads(line)
        x = dict(enumerate(r["x"]))
        m = models.get(r["key"])
        if m is None:
            m = models[r["key"]] = linear_model.LogisticRegression(optimizer=optim.AdaGrad())
        p = m.predict_proba_one(x).get(True, 0.5)
        m.learn_one(x, r["y"] == 1)
        out.write(orjson.dumps({"key": r["key"], "proba": p}) + b"\n")
"""


def write_records(path: Path, n: int, keys: int | None, d: int = 10, seed: int = 0) -> None:
    """Labelled logistic records; ``keys`` None: every record a key of its own."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(keys or 1, d))
    with open(path, "wb") as fh:
        for start in range(0, n, 100_000):
            m = min(100_000, n - start)
            X = np.round(rng.normal(size=(m, d)), 4)
            k = rng.integers(keys, size=m) if keys else np.arange(start, start + m)
            wk = w[k] if keys else w[np.zeros(m, dtype=int)]
            y = (rng.random(m) < 1 / (1 + np.exp(-(X * wk).sum(axis=1)))).astype(int)
            fh.write(b"".join(orjson.dumps({"key": f"k{k[i]}", "x": X[i].tolist(),
                                            "y": int(y[i])}) + b"\n" for i in range(m)))


def timed(cmd: list[str], sample_rss: bool = False) -> tuple[float, list[tuple[float, int]]]:
    """Wall seconds of ``cmd`` and its RSS samples (seconds since start, bytes)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples: list[tuple[float, int]] = []

    def sample() -> None:
        while proc.poll() is None:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                kb = int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1])
                samples.append((time.perf_counter() - started, kb * 1024))
            except (OSError, StopIteration):
                pass
            time.sleep(0.5)

    thread = threading.Thread(target=sample, daemon=True)
    if sample_rss:
        thread.start()
    if proc.wait() != 0:
        raise SystemExit(f"{cmd[:4]} failed")
    return time.perf_counter() - started, samples


def adaptd_cmd(source: Path, out: Path, state: Path, *sets: str) -> list[str]:
    flags = [f for s in sets for f in ("--set", s)]
    return [sys.executable, "-m", "adaptd", "run", "--source", f"jsonl:{source}",
            "--sink", f"jsonl:{out}", "--state-dir", str(state), "--metrics-port", "0",
            "--model", "logistic", "--task", "classification", *flags]


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--max-keys", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        few, distinct = tmp / "few.jsonl", tmp / "distinct.jsonl"
        write_records(few, args.n, args.keys)
        write_records(distinct, args.n, None)

        river_s, _ = timed([sys.executable, "-c", RIVER_LOOP, str(few), str(tmp / "river.out")])
        few_s, few_rss = timed(adaptd_cmd(few, tmp / "few.out", tmp / "few-state"), True)
        many_s, many_rss = timed(adaptd_cmd(distinct, tmp / "many.out", tmp / "many-state",
                                            f"learner.max_keys={args.max_keys}"), True)
        n = args.n
        print(f"records: {n:,}; cores: {os.cpu_count()}")
        print(f"river loop, {args.keys:,} keys: {n / river_s:,.0f} records/s ({river_s:.1f} s)")
        print(f"adaptd run, {args.keys:,} keys: {n / few_s:,.0f} records/s ({few_s:.1f} s), "
              f"{few_s / river_s:.2f}x river's time; peak RSS "
              f"{max(b for _, b in few_rss) / 2**20:.0f} MiB; state dir "
              f"{dir_size(tmp / 'few-state') / 2**20:.1f} MiB")
        print(f"adaptd run, {n:,} distinct keys, max_keys {args.max_keys:,}: "
              f"{n / many_s:,.0f} records/s ({many_s:.1f} s), {many_s / few_s:.2f}x the few-keys "
              f"time; state dir {dir_size(tmp / 'many-state') / 2**20:.0f} MiB")
        step = max(1, len(many_rss) // 12)
        print("RSS over time (distinct keys): " + ", ".join(
            f"{t:.0f}s {b / 2**20:.0f}MiB" for t, b in many_rss[::step]))


if __name__ == "__main__":
    main()
