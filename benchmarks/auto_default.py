"""adaptd's default (``--task`` only: ``--model auto``) on the bench's real streams and on the
held-out streams (:mod:`adaptd.bench.heldout`), next to river's peers and the simple baselines.

    .venv/bin/python benchmarks/auto_default.py [--only bench|heldout] [--peers] \
        [--adaptd auto,linear] [--set adaptd.learner.ensemble.SHARE=0.01 …] [--json OUT]

Peers are slow (ARF) and do not change with adaptd: ``--peers`` runs them and caches their
scores in ``--cache`` (JSON); without it, cached peer scores are printed alongside. records/s
of adaptd runs are measured in this run; ``--speed`` also re-runs ``river-linear`` and
``river-arf`` here so that the ratio is of the same run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from adaptd.bench.engine import AdaptdLearner
from adaptd.bench.heldout import heldout_streams
from adaptd.bench.learners import learner_specs
from adaptd.bench.measures import record_losses
from adaptd.bench.streams import Stream, StreamData, real_streams, suite_streams

PEERS = ["river-linear", "river-scaled-linear", "river-arf", "river-hat", "majority",
         "last-label"]


def streams(only: str | None) -> list[tuple[str, str, Callable[[], StreamData], Stream | None]]:
    out: list[tuple[str, str, Callable[[], StreamData], Stream | None]] = []
    if only in (None, "bench"):
        bench = real_streams(False) + [s for s in suite_streams(False) if s.family == "rbf-drift"]
        for s in bench:
            n = 20_000
            out.append((s.name, s.task, (lambda s=s, n=n: s.load(0, n)), s))
    if only in (None, "heldout", "drift"):
        # The bench's synthetic abrupt-drift streams (scored there with a meta-trained
        # logistic model): here the default, to see what a detector setting costs in delay.
        for s in suite_streams(False):
            if s.family in ("sea", "stagger"):
                out.append((f"{s.name} (synthetic)", s.task, (lambda s=s: s.load(0, 10_000)), s))
    if only in (None, "heldout"):
        for name, task, _, load in heldout_streams():
            out.append((name, task, load, None))
    return out


def quality(task: str, data: StreamData, y_pred: np.ndarray) -> tuple[float, float]:
    """(accuracy or MSE, mean log loss or MSE)."""
    loss = record_losses(task, data.y, y_pred)  # type: ignore[arg-type]
    if task == "regression":
        return float(loss.mean()), float(loss.mean())
    if y_pred.ndim == 2:
        acc = float(np.mean(np.argmax(y_pred, axis=1) == data.y))
    else:
        acc = float(np.mean((y_pred >= 0.5) == (data.y >= 0.5)))
    return acc, float(loss.mean())


FLAGS: dict[str, object] = {}


def run_adaptd(model: str, task: str, data: StreamData) -> tuple[float, float, float]:
    flags = {"task": task, "model": model, "regret.baseline": False, "regret.hindsight": False,
             **FLAGS}
    trace = AdaptdLearner(flags, reports_alarms=False).run(data)
    q, ll = quality(task, data, trace.y_pred)
    return q, ll, len(data) / trace.seconds


def run_peer(name: str, task: str, data: StreamData, stream: Stream | None) -> tuple[float, float, float]:
    spec = learner_specs([name])[0]
    st = stream or Stream(name, "x", task, "auto")  # type: ignore[arg-type]
    trace = spec.build(st, None).run(data)
    q, ll = quality(task, data, trace.y_pred)
    return q, ll, len(data) / trace.seconds


def apply_sets(sets: list[str]) -> None:
    for item in sets:
        target, value = item.split("=", 1)
        module, attr = target.rsplit(".", 1)
        setattr(importlib.import_module(module), attr, json.loads(value))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["bench", "heldout", "drift"])
    ap.add_argument("--streams", default="", help="comma-separated names (substring match)")
    ap.add_argument("--adaptd", default="auto")
    ap.add_argument("--peers", action="store_true")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--flag", action="append", default=[], help="a settings flag, key=JSON")
    ap.add_argument("--cache", default="/tmp/adaptd_peer_cache.json")
    ap.add_argument("--json")
    args = ap.parse_args()
    apply_sets(args.set)
    for item in args.flag:
        key, value = item.split("=", 1)
        FLAGS[key] = json.loads(value)
    cache = json.loads(Path(args.cache).read_text()) if Path(args.cache).exists() else {}
    wanted = [w for w in args.streams.split(",") if w]
    results: dict[str, dict[str, list[float]]] = {}
    for name, task, load, stream in streams(args.only):
        if wanted and not any(w.lower() in name.lower() for w in wanted):
            continue
        data = load()
        for model in args.adaptd.split(","):  # untimed: first-call caches, compiled code
            run_adaptd(model, task, data.head(300))
        row = results.setdefault(name, {})
        for model in args.adaptd.split(","):
            row[model] = list(run_adaptd(model, task, data))
        peers = PEERS if args.peers else (["river-linear", "river-arf"] if args.speed else [])
        for peer in peers:
            row[peer] = list(run_peer(peer, task, data, stream))
            cache.setdefault(name, {})[peer] = row[peer]
        for peer, val in cache.get(name, {}).items():
            row.setdefault(peer, val)
        fmt = "{:.4f}" if task == "classification" else "{:.4g}"
        best = max if task == "classification" else min
        peer_rows = {p: v for p, v in row.items() if p in PEERS and p not in ("majority", "last-label")}
        bp = best(peer_rows, key=lambda p: peer_rows[p][0]) if peer_rows else None
        parts = [f"{m}={fmt.format(row[m][0])} ({row[m][2]:.0f}/s)" for m in args.adaptd.split(",")]
        if bp:
            parts.append(f"best peer {bp}={fmt.format(row[bp][0])}")
        for b in ("majority", "last-label"):
            if b in row:
                parts.append(f"{b}={fmt.format(row[b][0])}")
        print(f"{name:28s} n={len(data):6d} " + "  ".join(parts), flush=True)
        Path(args.cache).write_text(json.dumps(cache, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
