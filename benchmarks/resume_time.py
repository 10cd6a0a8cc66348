"""What a restart costs with many more keys in the state dir than ``learner.max_keys`` (issue
#14, state that scales): the whole process, ``adaptd run`` on JSON lines.

A state dir is built once by one run over ``--keys`` records, each of a key of its own, with
``learner.max_keys`` = ``--build-max-keys`` (default ``--max-keys``: the state dir such a
daemon leaves, most keys evicted in it; above ``--keys``, every key is live at its final
checkpoint, which an eager load admits one by one) and no idle eviction. Then ``--more`` records of keys drawn from those (uniformly: most of them are read back from
the store, none is new) are appended, and each resume runs on a fresh copy of that state dir
with ``learner.max_keys`` = ``--max-keys``: time to the first prediction line (the sink file
polled every 5 ms), the whole run (wall and CPU seconds), peak RSS (the child's
``ru_maxrss``). This checkout's python and a peer's (``--peer-python``, e.g. main's) alternate,
``--repeat`` times each, in the same run; a resume past ``--timeout`` seconds is killed and
shown as such.

    .venv/bin/python -m benchmarks.resume_time [--keys 1000000] [--more 100000]
        [--max-keys 100000] [--build-max-keys N] [--repeat 2] [--timeout 900]
        [--peer-python /work/main/.venv/bin/python]

Not a test: prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from adaptd.checkpoint import CheckpointStore
from benchmarks.state_scaling import adaptd_cmd, write_records


def append_known(path: Path, n: int, keys: int, d: int = 10, seed: int = 1) -> None:
    """``n`` labelled records of keys among the first ``keys`` (``k0`` …)."""
    rng = np.random.default_rng(seed)
    k = rng.integers(keys, size=n)
    X = np.round(rng.normal(size=(n, d)), 4)
    y = (rng.random(n) < 0.5).astype(int)
    with open(path, "ab") as fh:
        fh.write(b"".join(orjson.dumps({"key": f"k{k[i]}", "x": X[i].tolist(),
                                        "y": int(y[i])}) + b"\n" for i in range(n)))


def resume(cmd: list[str], out: Path, timeout_s: float = float("inf")) -> dict[str, float]:
    """Run ``cmd``; seconds to the first line in ``out``, wall and CPU seconds, peak RSS
    (``timed_out`` 1.0 when it was killed after ``timeout_s``)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = float("nan")
    killed = False
    while True:  # reaped here, with its own resource usage
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        if math.isnan(first) and out.exists() and out.stat().st_size:
            first = time.perf_counter() - started
        if not killed and time.perf_counter() - started > timeout_s:
            proc.kill()
            killed = True
        time.sleep(0.005)
    wall = time.perf_counter() - started
    if not killed and proc.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed")
    if math.isnan(first) and out.exists() and out.stat().st_size:  # ended before a poll saw it
        first = wall
    return {"first_s": first, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "rss_gib": usage.ru_maxrss / 2**20, "timed_out": float(killed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--more", type=int, default=100_000)
    parser.add_argument("--max-keys", type=int, default=100_000)
    parser.add_argument("--build-max-keys", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--model", default="logistic")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--peer-python", default="/work/main/.venv/bin/python")
    parser.add_argument("--tmp", default=None, help="where the state dirs go (large)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        source, built = tmp / "in.jsonl", tmp / "built"
        write_records(source, args.keys, None)
        t0 = time.perf_counter()
        build = resume(adaptd_cmd(source, tmp / "build.out", built,
                                  f"learner.max_keys={args.build_max_keys or args.max_keys}",
                                  "learner.idle_evict_s=1e9",
                                  model=args.model), tmp / "build.out")
        size = sum(f.stat().st_size for f in built.rglob("*") if f.is_file())
        store = CheckpointStore(built)
        live, stored = store.key_count(evicted=False), store.key_count()
        store.close()
        print(f"## Resume with {stored:,} keys in the state dir ({live:,} live at its last "
              f"checkpoint), max_keys {args.max_keys:,}, then {args.more:,} records of those "
              f"keys (--model {args.model})\n\nBuilt with max_keys "
              f"{args.build_max_keys or args.max_keys:,} in {time.perf_counter() - t0:.0f} s "
              f"(peak RSS {build['rss_gib']:.1f} GiB); state dir {size / 2**20:,.0f} MiB.\n",
              flush=True)
        append_known(source, args.more, args.keys)
        pythons = {"this checkout": sys.executable, "peer": args.peer_python}
        results: dict[str, list[dict[str, float]]] = {name: [] for name in pythons}
        print("| run | python | first output, s | whole run, s | CPU, s | peak RSS, GiB |"
              " load average after |\n|---:|---|---:|---:|---:|---:|---|")
        for i in range(args.repeat):
            order = list(pythons) if i % 2 == 0 else list(reversed(pythons))
            for name in order:
                state, out = tmp / f"state-{name}-{i}", tmp / f"out-{name}-{i}.jsonl"
                shutil.copytree(built, state)
                r = resume(adaptd_cmd(source, out, state, f"learner.max_keys={args.max_keys}",
                                      model=args.model, python=pythons[name]), out, args.timeout)
                lines = out.read_bytes().count(b"\n")
                if lines != args.more and not r["timed_out"]:
                    raise SystemExit(f"{name}: {lines} predictions, expected {args.more}")
                results[name].append(r)
                killed = " (killed: timeout)" if r["timed_out"] else ""
                print(f"| {i + 1} | {name}{killed} | {r['first_s']:.1f} | {r['wall_s']:.1f} | "
                      f"{r['cpu_s']:.1f} | {r['rss_gib']:.2f} | "
                      f"{' '.join(f'{v:.1f}' for v in os.getloadavg())} |", flush=True)
                shutil.rmtree(state)
        print("\nMedians (this checkout / peer):")
        for field in ("first_s", "wall_s", "cpu_s", "rss_gib"):
            ours = statistics.median(r[field] for r in results["this checkout"])
            theirs = statistics.median(r[field] for r in results["peer"])
            print(f"- {field}: {ours:.2f} / {theirs:.2f} = {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
