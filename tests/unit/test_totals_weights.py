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
