"""Whole-process throughput and state growth, with the incremental state store (issue: state
that scales and travels). Every figure is a ratio to a peer measured in the same run, runs
alternated and repeated (``--repeat``, medians), since the machine is shared.

1. ``few keys``: N records over K keys (default 1M over 1,000), JSON lines in and out:
   ``adaptd run --model logistic`` as a process (start-up, parsing, learning, checkpoints at the
   default cadence, writing predictions), against a plain river loop in a process of its own
   (one ``LogisticRegression(optimizer=AdaGrad())`` per key, ``predict_proba_one`` then
   ``learn_one``, orjson in and out). Also adaptd checkpointing every 10,000 records exactly
   (``checkpoint.max_time_share=1``: no pause scaled to their cost), and with mid-run
   checkpoints off (only the final one): what the checkpoints cost.
2. ``distinct keys``: N records each of a new key, with ``learner.max_keys`` (default 100k):
   records/s against the same number of records over 10 keys (and case 1's), the process's RSS
   sampled every 0.5 s, the state dir's size; ``--model`` (default ``logistic``; ``auto`` is
   the daemon's default model) for both.
3. ``--replicas 1,2,3``: records/s of 1, 2 and 3 ``adaptd run`` replicas of one group on the
   embedded broker (separate state dirs, changelog and meta topics on), timed by the
   predictions' produce timestamps, first to last (and from the launch of the replicas).

    .venv/bin/python -m benchmarks.state_scaling [--n 1000000] [--keys 1000]
        [--distinct 1000000] [--max-keys 100000] [--repeat 2] [--replicas 1,2,3]

Not a test: prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
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

NO_MID_RUN_CHECKPOINTS = ("checkpoint_every_records=1000000000", "checkpoint_interval_s=1e9")
#: Every 10,000 records exactly: no pause scaled to the checkpoints' cost.
STRICT_CADENCE = ("checkpoint.max_time_share=1",)


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


#: CPU seconds (user + system) of the last command :func:`timed` ran: steadier than its wall
#: time on a shared machine.
last_cpu_s = [0.0]


def timed(cmd: list[str], sample_rss: bool = False) -> tuple[float, list[tuple[float, int]]]:
    """Wall seconds of ``cmd`` and its RSS samples (seconds since start, bytes); its CPU
    seconds in :data:`last_cpu_s`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
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
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    last_cpu_s[0] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, samples


def adaptd_cmd(source: Path, out: Path, state: Path, *sets: str,
               model: str = "logistic", python: str = sys.executable) -> list[str]:
    flags = [f for s in sets for f in ("--set", s)]
    return [python, "-m", "adaptd", "run", "--source", f"jsonl:{source}",
            "--sink", f"jsonl:{out}", "--state-dir", str(state), "--metrics-port", "0",
            "--model", model, "--task", "classification", *flags]


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def few_keys(tmp: Path, args: argparse.Namespace) -> float:
    """Case 1; returns adaptd's median records/s."""
    few = tmp / "few.jsonl"
    write_records(few, args.n, args.keys)
    times: dict[str, list[float]] = {"river": [], "adaptd": [], "adaptd, every 10k strictly": [],
                                     "adaptd, no mid-run": []}

    rss: list[int] = []
    for i in range(args.repeat):  # alternated, so load changes hit every peer alike
        times["river"].append(timed([sys.executable, "-c", RIVER_LOOP, str(few),
                                     str(tmp / "river.out")])[0])
        state = tmp / f"few-state-{i}"
        seconds, samples = timed(adaptd_cmd(few, tmp / "few.out", state), True)
        times["adaptd"].append(seconds)
        rss.append(max(b for _, b in samples))
        for name, sets in (("adaptd, every 10k strictly", STRICT_CADENCE),
                           ("adaptd, no mid-run", NO_MID_RUN_CHECKPOINTS)):
            other = tmp / f"few-{len(sets)}-{i}"
            times[name].append(timed(adaptd_cmd(few, tmp / "few.out", other, *sets))[0])
    river = statistics.median(times["river"])
    print(f"## {args.n:,} records over {args.keys:,} keys, jsonl in and out "
          f"(median of {args.repeat}, alternated)\n")
    print("| what | seconds (each run) | records/s | × river's time |\n|---|---|---:|---:|")
    for name, runs in times.items():
        med = statistics.median(runs)
        print(f"| {name} | {', '.join(f'{t:.1f}' for t in runs)} | {args.n / med:,.0f} | "
              f"{med / river:.2f} |")
    print(f"\nadaptd peak RSS {max(rss) / 2**20:.0f} MiB; state dir "
          f"{dir_size(tmp / 'few-state-0') / 2**20:.1f} MiB\n")
    return args.n / statistics.median(times["adaptd"])


def distinct_keys(tmp: Path, args: argparse.Namespace, few_per_s: float) -> None:
    """Case 2: the distinct-keys run and its 10-key peer, alternated ``--distinct-repeat``
    times; each pair's ratio and the median."""
    distinct, ten = tmp / "distinct.jsonl", tmp / "ten.jsonl"
    write_records(distinct, args.distinct, None)
    write_records(ten, args.distinct, 10)
    print(f"## {args.distinct:,} distinct keys, max_keys {args.max_keys:,}, "
          f"--model {args.model}\n")
    print("| run | 10 keys, records/s (CPU s) | distinct keys, records/s (CPU s) | ratio (of CPU)"
          " | state dir, bytes per key | peak RSS, MiB | load average after |\n"
          "|---:|---:|---:|---:|---:|---:|---|")
    ratios, cpu_ratios, curves, peers = [], [], [], []
    for i in range(args.distinct_repeat):
        ten_s, _ = timed(adaptd_cmd(ten, tmp / "ten.out", tmp / f"ten-state-{i}",
                                    model=args.model))
        ten_cpu = last_cpu_s[0]
        state = tmp / f"many-state-{i}"
        seconds, samples = timed(adaptd_cmd(distinct, tmp / "many.out", state,
                                            f"learner.max_keys={args.max_keys}",
                                            model=args.model), True)
        cpu = last_cpu_s[0]
        per_s, ten_per_s = args.distinct / seconds, args.distinct / ten_s
        ratios.append(per_s / ten_per_s)
        cpu_ratios.append(ten_cpu / cpu)
        curves.append(samples)
        print(f"| {i + 1} | {ten_per_s:,.0f} ({ten_cpu:.1f}) | {per_s:,.0f} ({seconds:.1f} s;"
              f" {cpu:.1f}) | {per_s / ten_per_s:.2f} ({ten_cpu / cpu:.2f}) | "
              f"{dir_size(state) / args.distinct:,.0f} | "
              f"{max(b for _, b in samples) / 2**20:,.0f} | "
              f"{' '.join(f'{v:.1f}' for v in os.getloadavg())} |")
        if args.peer_python:  # the same distinct-keys run by another checkout, right after
            peer_s, _ = timed(adaptd_cmd(distinct, tmp / "peer.out", tmp / f"peer-state-{i}",
                                         f"learner.max_keys={args.max_keys}",
                                         model=args.model, python=args.peer_python))
            peer_cpu = last_cpu_s[0]
            peers.append(peer_cpu / cpu)
            print(f"| {i + 1}, peer | | {args.distinct / peer_s:,.0f} ({peer_s:.1f} s; "
                  f"{peer_cpu:.1f}) | {args.distinct / peer_s / ten_per_s:.2f} "
                  f"({ten_cpu / peer_cpu:.2f}) | "
                  f"{dir_size(tmp / f'peer-state-{i}') / args.distinct:,.0f} | | "
                  f"{' '.join(f'{v:.1f}' for v in os.getloadavg())} |")
    print(f"\nMedian ratio {statistics.median(ratios):.2f} (of CPU time "
          f"{statistics.median(cpu_ratios):.2f})" + (
        f"; case 1's adaptd: {few_per_s:,.0f} records/s" if not math.isnan(few_per_s) else "") + (
        f"; the peer ({args.peer_python}) takes {statistics.median(peers):.2f}x this "
        f"checkout's CPU time" if peers else "") + "\n")
    for i, samples in enumerate(curves):
        step = max(1, len(samples) // 16)
        print(f"RSS over time, run {i + 1}: " + ", ".join(
            f"{t:.0f} s {b / 2**20:,.0f} MiB" for t, b in samples[::step]) + "\n")


def replicas(tmp: Path, args: argparse.Namespace) -> None:
    """Case 3, on the embedded broker."""
    from confluent_kafka import Consumer

    from adaptd.broker import EmbeddedBroker
    from adaptd.connectors.kafka import ensure_topic, sink_options
    from benchmarks.kafka_throughput import input_records, produce_input

    source = tmp / "replicas.jsonl"
    write_records(source, args.replica_records, args.replica_keys, seed=1)
    records = input_records(f"jsonl:{source}")
    counts = [int(c) for c in args.replicas.split(",")]
    print(f"## Replicas of one group: {args.replica_records:,} records over "
          f"{args.replica_keys} keys, {args.partitions} partitions, embedded Tansu broker, "
          f"{os.cpu_count()} cores\n")
    print("| replicas | records/s (first → last prediction produced) | launch → last, s |\n"
          "|---:|---:|---:|")
    with EmbeddedBroker(log_path=tmp / "broker.log") as broker:
        for count in counts:
            topic = f"scale-{uuid.uuid4().hex[:8]}"
            produce_input(broker.bootstrap, topic, records, args.partitions)
            out = f"{topic}-out"
            # Made before the checker subscribes: librdkafka would otherwise see it only at
            # its next metadata refresh, minutes later.
            ensure_topic(sink_options(f"kafka://{broker.bootstrap}/{out}?client=librdkafka"),
                         args.partitions)
            launched = time.time()
            procs = [subprocess.Popen(
                [sys.executable, "-m", "adaptd", "run", "--source",
                 (f"kafka://{broker.bootstrap}/{topic}?group=g-{topic}&session_timeout_ms=6000"
                  f"&heartbeat_interval_ms=500"),
                 "--sink", f"kafka://{broker.bootstrap}/{out}", "--state-dir",
                 str(tmp / f"{topic}-{i}"), "--metrics-port", "0", "--model", "logistic",
                 "--task", "classification"], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL) for i in range(count)]
            consumer = Consumer({"bootstrap.servers": broker.bootstrap,
                                 "group.id": f"check-{topic}", "auto.offset.reset": "earliest"})
            consumer.subscribe([out])
            # Timed by the predictions' own timestamps (set when each replica produced them),
            # not by when this checker, which joins its group late, reads them.
            seen, stamps = 0, []
            deadline = time.monotonic() + 600
            while seen < args.replica_records and time.monotonic() < deadline:
                got = [m for m in consumer.consume(10_000, 0.5) if m.error() is None]
                seen += len(got)
                stamps.extend(m.timestamp()[1] / 1000 for m in got)
            consumer.close()
            first, last = (min(stamps), max(stamps)) if stamps else (None, None)
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(60)
            if first is None or last is None or last <= first or seen < args.replica_records:
                print(f"| {count} | only {seen:,} predictions arrived | |")
                continue
            print(f"| {count} | {seen / (last - first):,.0f} | {last - launched:.1f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--distinct", type=int, default=1_000_000)
    parser.add_argument("--max-keys", type=int, default=100_000)
    parser.add_argument("--distinct-repeat", type=int, default=1,
                        help="pairs (10 keys, distinct keys) run alternately")
    parser.add_argument("--model", default="logistic",
                        help="the distinct-keys case's model, and its 10-key peer's (auto: "
                             "the default model)")
    parser.add_argument("--peer-python", default="",
                        help="a python whose adaptd (another checkout) runs each distinct-keys "
                             "case too, right after this one's")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--replicas", default="", help="e.g. 1,2,3 (needs the broker)")
    parser.add_argument("--replica-records", type=int, default=100_000)
    parser.add_argument("--replica-keys", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--skip", default="", help="comma-separated: few,distinct")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    print(f"cores: {os.cpu_count()}; load average at start "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}\n")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        few_per_s = few_keys(tmp, args) if "few" not in skip else float("nan")
        if "distinct" not in skip:
            distinct_keys(tmp, args, few_per_s)
        if args.replicas:
            replicas(tmp, args)
    print(f"load average at end {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
