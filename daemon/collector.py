"""The cyclic garbage collector paused while the daemon makes many short-lived objects.

Both places that do are the runner's batch (its records parsed into thousands of dicts and
lists) and a checkpoint's packing (an object per changed key): those objects hold no cycle
(reference counting frees them), but they count towards the collector's allocation
thresholds, so it would scan the young objects many times and the whole heap now and then,
for nothing.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block (the module docstring says why); on
    again after it, if it was on: cycles made meanwhile are collected then. For a batch of
    plain records this was a quarter of the run's CPU time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
