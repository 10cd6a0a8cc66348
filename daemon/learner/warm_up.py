"""Compiling the engine before the daemon opens its source, when nothing is cached yet.

Numba compiles the engine's kernel at its first call and caches the machine code
(:mod:`adaptd.learner.jit`). On an empty cache (a fresh install, or an image built without the
Dockerfile's warm-up run) the first batch compiled it on the runner's thread: 50–70 s on this
project's 2-core machine. A Kafka consumer in a group that is not polled for
``max_poll_interval_ms`` meanwhile is put out of its group. On a fresh clone, ``make demo``
(60 s) lost its partitions, failed its offset commit and rebalanced before its first
prediction. So when the cache holds no code for the kernel, a throwaway learner with the run's
settings learns from a few made-up records first. That calls the same compiled functions with
the same argument types as the first batch will (types do not depend on the feature count),
so they are compiled and cached before any consumer waits. With a warm cache nothing happens
here: the cached code loads on the start-up loader thread
(:func:`adaptd.learner.jit.load_cached_meanwhile`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np

from adaptd.learner.jit import COMPILED, cached_signatures

log = logging.getLogger(__name__)

#: Made-up records per batch, batches, and keys: every key of the second batch is one the first
#: admitted.
RECORDS = 64
BATCHES = 2
KEYS = 16


def kernel_cached() -> bool:
    """Whether this machine's cache holds code for the engine's kernel."""
    from adaptd.learner import kernel

    return bool(cached_signatures(kernel.process))


def compile_engine(settings: Any) -> float | None:
    """If the kernel is not cached and the settings use it, compile it (and what the first
    batch calls with it) on a throwaway learner; returns the seconds it took (None: nothing
    to do). ``settings`` is a :class:`adaptd.settings.Settings`. Blocks."""
    if not COMPILED or not settings.learner.kernel or kernel_cached():
        return None
    from adaptd.learner import build_learner
    from adaptd.records import RecordBatch

    log.info("compiling the engine (nothing cached yet: the first run after an install); "
             "about a minute on 2 cores, cached for later runs")
    started = time.monotonic()
    # No --meta file: a meta-state changes values, not the types the code is compiled for.
    learner = build_learner(dataclasses.replace(settings, meta=None))
    d = settings.n_features or 2
    rng = np.random.default_rng(0)
    keys = [f"warm-up-{i % KEYS}" for i in range(RECORDS)]
    for _ in range(BATCHES):
        X = rng.normal(size=(RECORDS, d))
        y = (rng.random(RECORDS) < 0.5).astype(np.float64) if settings.task == "classification" \
            else rng.normal(size=RECORDS)
        learner.process_batch(RecordBatch(keys, X, y, [None] * RECORDS, [None] * RECORDS))
    seconds = time.monotonic() - started
    log.info("engine compiled in %.1f s", seconds)
    return seconds
