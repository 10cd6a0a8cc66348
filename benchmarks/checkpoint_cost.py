"""What one checkpoint of many busy keys costs, in process: packing their states and
``CheckpointStore.save`` (CPU and wall), the checkpoint side of the 1,000-key file benchmark.

``--keys`` logistic keys (default 1,000) take 100,000 records, then ``--checkpoints`` times
``--every`` records (default 20 × 10,000) each followed by a checkpoint of every key; the
median over all but the first two is printed. Run it with another checkout's python to compare
(same machine, alternated):

    .venv/bin/python benchmarks/checkpoint_cost.py
    /work/main/.venv/bin/python benchmarks/checkpoint_cost.py

Not a test: prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np

import adaptd
from adaptd.checkpoint import CheckpointStore, PartitionChanges
from adaptd.learner.adaptive import AdaptiveLearner
from adaptd.partitions import partition_part
from adaptd.records import RecordBatch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--every", type=int, default=10_000)
    parser.add_argument("--checkpoints", type=int, default=20)
    args = parser.parse_args()
    learner = AdaptiveLearner(model="logistic", task="classification")
    rng = np.random.default_rng(0)
    keys = [f"k{i}" for i in range(args.keys)]
    w = rng.normal(size=(args.keys, 10))

    def feed(n: int) -> None:
        for _ in range(0, n, 1000):
            k = rng.integers(args.keys, size=1000)
            X = rng.normal(size=(1000, 10))
            y = (rng.random(1000) < 1 / (1 + np.exp(-(X * w[k]).sum(1)))).astype(float)
            learner.process_batch(RecordBatch(keys=[keys[i] for i in k], X=X, y=y,
                                              ids=[None] * 1000, tasks=[None] * 1000))

    feed(100_000)
    with tempfile.TemporaryDirectory() as state_dir:
        store = CheckpointStore(state_dir)
        pack_cpu, save_cpu, save_wall = [], [], []
        for c in range(1, args.checkpoints + 1):
            feed(args.every)
            c0 = time.process_time()
            part = partition_part(learner, keys)
            c1, t1 = time.process_time(), time.perf_counter()
            store.save({}, {0: PartitionChanges(position=c, states=part["keys"])}, checkpoint=c)
            c2, t2 = time.process_time(), time.perf_counter()
            if c > 2:  # the first ones write every chunk
                pack_cpu.append(c1 - c0)
                save_cpu.append(c2 - c1)
                save_wall.append(t2 - t1)
        store.close()
    m = statistics.median
    print(f"{adaptd.__file__}: one checkpoint of {args.keys:,} keys, median of "
          f"{len(save_cpu)}: packing {m(pack_cpu) * 1e3:.1f} ms CPU; store.save "
          f"{m(save_cpu) * 1e3:.1f} ms CPU, {m(save_wall) * 1e3:.1f} ms wall")


if __name__ == "__main__":
    main()
