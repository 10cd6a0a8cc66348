"""The compiled frozen target statistics against the Python loop they replace, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from adaptd.learner.scaling import RunningMoments, Standardizer, _target_blocks, chunks
from adaptd.learner.target_scales import TARGET_BLOCK


class _Reference:
    """The per-block Python loop ``_target_blocks`` ran before (its rules: scaling.py's
    ``target_scale``, ``can_learn``, ``learn_targets`` and ``_at_edge``)."""

    def __init__(self) -> None:
        self.y = RunningMoments(1)
        self.records = 0
        self.block_labels: list[float] = []

    def _scale(self) -> tuple[float, float]:
        if self.y.count < 1:
            return 0.0, 1.0
        mean = float(self.y.mean[0])
        if self.y.count < 2:
            return mean, 0.0
        return mean, float(self.y.std()[0])

    def blocks(self, ys: np.ndarray, labelled: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int]]]:
        n = len(ys)
        shift, scale = np.empty(n), np.empty(n)
        learnable = np.empty(n, dtype=bool)
        blocks = list(chunks(n, self.records, labelled))
        for lo, hi in blocks:
            shift[lo:hi], scale[lo:hi] = self._scale()
            learnable[lo:hi] = self.y.count >= 2
            self.records += int(labelled[lo:hi].sum())
            self.block_labels.extend(ys[lo:hi].tolist())
            r = self.records
            if (r & (r - 1) == 0) if r <= TARGET_BLOCK else r % TARGET_BLOCK == 0:
                self.y.update(np.array(self.block_labels)[:, None])
                self.block_labels = []
        return shift, scale, learnable, blocks


def _labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """Labels on wildly different scales, with NaN (unlabelled), ±inf and overflowing ones."""
    ys = rng.normal(loc=rng.choice([0.0, 5.0, -1e6, 1e9]), scale=10.0 ** rng.uniform(-8, 6),
                    size=n)
    odd = rng.random(n)
    ys[odd < 0.2] = np.nan
    ys[(odd > 0.995)] = rng.choice([np.inf, -np.inf, 1e300, -0.0, 0.0])
    if rng.random() < 0.1:
        ys[:] = rng.choice([3.0, -0.0])  # constant: a zero deviation
    return ys


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


@pytest.mark.parametrize("seed", range(40))
def test_frozen_scales_match_the_python_loop_bit_for_bit_in_any_split(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    ys = _labels(rng, n)
    labelled = ~np.isnan(ys)
    ref, sc = _Reference(), Standardizer(1, features=False, target=True)
    cuts = np.unique(np.concatenate([[0, n], rng.integers(0, n, size=rng.integers(0, 40))]))
    for lo, hi in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
        want = ref.blocks(ys[lo:hi], labelled[lo:hi])
        got = _target_blocks(sc, ys[lo:hi], labelled[lo:hi], blocks=True)
        for w, g in zip(want[:3], got[:3]):
            assert _bits(w) == _bits(g)
        assert want[3] == got[3]
        assert sc.y is not None and sc.records == ref.records
        assert sc.y.count == ref.y.count
        assert _bits(sc.y.mean) == _bits(ref.y.mean) and _bits(sc.y.m2) == _bits(ref.y.m2)
        assert _bits(np.array(sc.block_labels)) == _bits(np.array(ref.block_labels))


def test_blocks_are_left_out_when_not_asked_for() -> None:
    sc = Standardizer(1, features=False, target=True)
    ys = np.arange(40, dtype=np.float64)
    shift, scale, learnable, blocks = _target_blocks(sc, ys, np.ones(40, dtype=bool), False)
    assert blocks == [] and sc.records == 40 and learnable[2:].all() and not learnable[:2].any()
    # Blocks 1, 2, 4, 8, 16 then 32: the last block (32 … 39) is predicted with 0 … 31's mean.
    assert shift[-1] == 15.5 and scale[0] == 1.0 and scale[1] == 0.0
    assert sc.block_labels == [32.0, 33.0, 34.0, 35.0, 36.0, 37.0, 38.0, 39.0]


def test_the_compiled_pairwise_sum_is_numpy_s_sum_bit_for_bit() -> None:
    """Any length (past the 128-value block the halves are summed apart), at any offset, with
    signed zeros, infinities and NaN."""
    from adaptd.learner.target_scales import pairwise_sum

    rng = np.random.default_rng(8)
    for trial in range(600):
        n = int(rng.choice([rng.integers(0, 20), rng.integers(100, 300),
                            rng.integers(0, 5000)]))
        a = rng.normal(size=n) * 10.0 ** rng.integers(-6, 6, size=n)
        if trial % 4 == 1:
            a[rng.random(n) < 0.5] = -0.0
        elif trial % 4 == 2:
            a[:] = -0.0
        elif trial % 4 == 3 and n:
            a[rng.integers(n)] = rng.choice([np.inf, -np.inf, np.nan])
        lo = int(rng.integers(0, 4))
        padded = np.concatenate([rng.normal(size=lo), a])
        got = np.float64(0.0 + pairwise_sum(padded, lo, n))
        assert got.tobytes() == np.float64(a.sum()).tobytes(), (n, trial)
