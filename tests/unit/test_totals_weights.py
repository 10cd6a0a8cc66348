"""The prequential average's cached weights are the bits of weights computed afresh."""

from __future__ import annotations

import itertools

import numpy as np

from adaptd.learner import totals
from adaptd.learner.totals import PREQUENTIAL_SPAN, Totals


def test_cached_weights_are_fresh_weights_bit_for_bit() -> None:
    a = 1.0 / PREQUENTIAL_SPAN
    for m in [*range(1, 300), 1023, 1024, 1025, 4096, 5000, 20000]:
        fresh = a * (1.0 - a) ** np.arange(m - 1, -1, -1)
        assert totals._last_weights(m).tobytes() == fresh.tobytes()


def test_add_losses_matches_the_formula_in_any_split() -> None:
    rng = np.random.default_rng(3)
    losses = rng.exponential(size=3000)
    t = Totals()
    cuts = [0, 7, 150, 151, 1500, 3000]
    for lo, hi in itertools.pairwise(cuts):
        t.add_losses(losses[lo:hi])
    # The same calls written out: the plain mean over the first 100, then per chunk.
    a = 1.0 / PREQUENTIAL_SPAN
    recent = 0.0
    for i in range(100):
        recent += (losses[i] - recent) / (i + 1)
    for lo, hi in ((100, 150), (150, 151), (151, 1500), (1500, 3000)):
        part = losses[lo:hi]
        w = a * (1.0 - a) ** np.arange(len(part) - 1, -1, -1)
        recent = (1.0 - a) ** len(part) * recent + float(w @ part)
    assert t.recent == recent and t.n == 3000


def test_runs_gathered_compiled_add_as_add_losses_of_each_run() -> None:
    """gather_runs + Totals.add_runs over a kernel call's records give the bits of
    add_losses on each run's learned losses (what the kernel path did per return)."""
    from adaptd.learner.totals import gather_runs

    rng = np.random.default_rng(4)
    for trial in range(50):
        n = int(rng.integers(1, 3000))
        loss = rng.exponential(size=n) * 10.0 ** rng.integers(-3, 3)
        units = rng.exponential(size=n)
        learned = rng.random(n) < 0.9
        lo = int(rng.integers(0, n))
        cuts = np.sort(rng.choice(np.arange(lo, n), size=min(int(rng.integers(0, 12)),
                                                               n - lo), replace=False))
        ends = np.append(cuts + 1, n + int(rng.integers(0, 2))).astype(np.int64)
        want, got = Totals(), Totals()
        history = rng.exponential(size=int(rng.integers(0, 150)))
        for t in (want, got):  # a history before: part of it still in the first 100 losses
            t.add_losses(history)
        start = lo
        for hi in ends.tolist():
            done = np.flatnonzero(learned[start:hi]) + start
            if len(done):
                want.add_losses(loss[done] * units[done])
            start = max(start, min(hi, n))
        values = np.empty(max(int(ends[-1]) - lo, 0))
        lengths, sums = np.empty(len(ends), dtype=np.int64), np.empty(len(ends))
        if gather_runs(learned, loss, units, lo, ends, values, lengths, sums):
            got.add_runs(values, lengths, sums)
        assert got.to_dict() == want.to_dict(), trial
