"""CPU time per record and per batch of the engine alone, on a jsonl file, as the daemon runs it.

Reads the file's records into :class:`~adaptd.records.RecordBatch` columns of ``--batch-size``
records (outside the timing), builds the learner the CLI builds for ``--model`` (default
settings), and times ``process_batch`` over the whole stream with the process's CPU clock.
Prints records/s of CPU, µs per record and µs per batch. With ``--save FILE`` the predictions,
losses and the summary are kept (``np.savez``) so two checkouts can be compared bit for bit.

    .venv/bin/python -m benchmarks.engine_batches /tmp/kprof/r100k.jsonl --model linear \
        [--batch-size 1024] [--records N] [--save out.npz]

Not a test: prints measured times, asserts nothing. On a shared machine compare two checkouts
alternately in the same run and quote ratios.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import orjson

from adaptd.config import load_settings
from adaptd.learner import build_learner
from adaptd.records import RecordBatch


def _batches(path: str, size: int, limit: int | None) -> list[RecordBatch]:
    """The file's records as columns, ``size`` records a batch."""
    keys: list[str] = []
    xs: list[list[float]] = []
    ys: list[float] = []
    with open(path, "rb") as f:
        for line in f:
            if limit is not None and len(keys) >= limit:
                break
            obj = orjson.loads(line)
            keys.append(str(obj.get("key", "default")))
            xs.append(obj["x"])
            y = obj.get("y")
            ys.append(float("nan") if y is None else float(y))
    X, Y = np.array(xs, dtype=np.float64), np.array(ys, dtype=np.float64)
    return [RecordBatch(keys[lo:lo + size], X[lo:lo + size], Y[lo:lo + size],
                        [None] * len(keys[lo:lo + size]), [None] * len(keys[lo:lo + size]))
            for lo in range(0, len(keys), size)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path")
    ap.add_argument("--model", default="linear")
    ap.add_argument("--task", default="regression")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--records", type=int, default=None)
    ap.add_argument("--save", default=None)
    args = ap.parse_args()
    batches = _batches(args.path, args.batch_size, args.records)
    settings = load_settings(environ={}, flags={"model": args.model, "task": args.task})
    learner = build_learner(settings)
    learner.process_batch(batches[0])  # set-up and compile loads, untimed
    preds, losses = [], []
    t0, w0 = time.process_time(), time.perf_counter()
    for b in batches[1:]:
        out = learner.process_batch(b)
        if args.save:
            preds.append(out.y_pred.copy())
            losses.append(out.loss.copy())
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    n = sum(len(b) for b in batches[1:])
    print(f"{args.model} batch {args.batch_size}: {n} records, cpu {cpu:.3f} s, "
          f"{n / cpu:,.0f} rec/s, {1e6 * cpu / n:.2f} us/record, "
          f"{1e6 * cpu / (len(batches) - 1):.0f} us/batch; wall {wall:.3f} s, "
          f"{1e6 * wall / n:.2f} us/record")
    if args.save:
        summ = learner.summary()
        np.savez(args.save, y_pred=np.concatenate(preds), loss=np.concatenate(losses),
                 summary=np.array(repr(summ)))


if __name__ == "__main__":
    main()
