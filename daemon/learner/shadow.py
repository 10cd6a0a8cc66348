"""The shadow baselines of a batch on a second thread, while the keys' own rows run.

Each key's shadow baseline (plain AdaGrad, never reset: the regret comparator) is a row of its
own, ``slot + 1``, that reads only itself and the batch's records: nothing the key's row does
(its steps, a drift alarm, a segment close, a concept probe) changes it, and it changes
nothing the key's row reads. So the compiled kernel can run the baselines for the whole batch
(:func:`adaptd.learner.kernel.process_shadow`) on a worker thread while it runs the keys' rows
with the baseline off (:func:`adaptd.learner.kernel.process`), both compiled with ``nogil``
so they run on two cores at once. The baseline was about a quarter of the MLP's per-record
cost (a forward and a backward pass and a step per record: ``benchmarks/results/mlp.md``); the
process's wall time is what a user waits for.

Results are bit for bit the serial kernel's: each row sees the same records in the same order,
and the baseline's loss sums are added to the totals after the batch as the serial kernel adds
them, one sum per kernel call, each in record order (:func:`adaptd.learner.kernel.shadow_sum`).
``tests/unit/test_shadow.py`` checks both.

A closed segment's hindsight fit (Python and NumPy: about 6 ms, on copies of the segment's
buffer) goes to the same thread during such a batch (:meth:`Shadow.later`); its result only
goes into totals nothing reads during the batch, added at its end in the order of the closes.

Used only where it can gain: a machine with more than one CPU for this process,
``regret.baseline_thread`` on (the default), a model with hidden layers (a linear model's
baseline row costs less than the hand-over: :func:`wanted`), and a batch of at least
:data:`MIN_LABELLED` labelled records: handing a batch over and back costs about 70 µs (measured: a batch of one
record took 137 against 71 µs serial), the MLP 10-40-40-1's baseline row about 5 µs a record,
so the thread gains from about 15 records when a core is free. It adds no CPU time, and gains
nothing when every core is busy (Linux's autogroup scheduling shares the CPU among sessions,
not threads: measured, the same wall time at load average 7). One worker thread for the whole process, started at first use; a batch waits for its
work before it returns, so the arena is never written by two batches at once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from adaptd.learner import kernel
from adaptd.learner.arena import kernel_arrays
from adaptd.learner.models import LinearFamily

if TYPE_CHECKING:
    from adaptd.learner.adaptive import AdaptiveLearner
    from adaptd.learner.totals import Totals

T = TypeVar("T")

#: Fewest labelled records in a batch for its baselines to go to the thread.
MIN_LABELLED = 64

_worker: ThreadPoolExecutor | None = None
_worker_lock = threading.Lock()


def _cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


#: Whether this process may use the thread (the affinity does not change while it runs).
PARALLEL = _cpus() > 1


def wanted(lrn: AdaptiveLearner, labelled: np.ndarray) -> bool:
    """Whether ``lrn``'s baselines for a batch with these labelled records go to the thread:
    never a linear model's, whose baseline row (a dot product and a step, a fraction of a
    microsecond a record) costs less than handing it over, at any batch size (16 keys, 10
    features, a drift per 172 records, CPU per record serial vs threaded, process / main thread:
    batch 64: 2.35 vs 3.46 / 3.07 µs; 256: 1.68 vs 1.97 / 1.83; 4096: 1.22 vs 1.28 / 1.23;
    logistic, 256: 1.04 vs 1.34 / 0.91, 4096: 0.82 vs 0.87 / 0.52, with less wall time serial
    at both sizes)."""
    return bool(PARALLEL and lrn.regret.baseline and lrn.regret.baseline_thread
                and not isinstance(lrn.family, LinearFamily)
                and np.count_nonzero(labelled) >= MIN_LABELLED)


class Shadow:
    """The baselines of one batch, running on the worker thread from construction until
    :meth:`join`."""

    def __init__(self, lrn: AdaptiveLearner, batch: kernel.Batch, params: kernel.Params) -> None:
        assert lrn.family is not None
        self.losses = np.empty(len(batch.slots))
        # Its own working arrays: the key's rows use lrn.scratch meanwhile.
        sc = tuple(kernel.scratch(lrn.net.L_out, batch.X.shape[1], lrn.config.window,
                                  lrn.family.n_params))
        self._future: Future[None] = _submit(
            kernel.process_shadow, tuple(batch), kernel_arrays(lrn.arena), tuple(params),
            tuple(lrn.net), self.losses, sc)
        #: ``[lo, hi)`` record ranges of the kernel calls made meanwhile, in order.
        self.calls: list[tuple[int, int]] = []
        self._later: list[tuple[Future[float], Callable[[float], None]]] = []

    def later(self, work: Callable[[], float], then: Callable[[float], None]) -> None:
        """Run ``work`` on the thread too (after what is already there) and ``then`` with its
        result when the batch ends, in the order given: for work whose result only goes into
        totals nothing reads during the batch (the hindsight fit of a closed segment)."""
        self._later.append((_submit(work), then))

    def join(self, tot: Totals | None) -> None:
        """Wait for the thread's work; add the baselines' losses to ``tot`` one sum per kernel
        call, as the serial kernel does, then the later work's results (None: the batch
        failed, only wait). Must be called whatever happens, before the arena is used again."""
        self._future.result()
        done = [(future.result(), then) for future, then in self._later]
        if tot is None:
            return
        for lo, hi in self.calls:
            tot.add_baseline(float(kernel.shadow_sum(self.losses, lo, hi)))
        for value, then in done:
            then(value)


def _submit(fn: Callable[..., T], *args: object) -> Future[T]:
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="adaptd-shadow")
        return _worker.submit(fn, *args)
