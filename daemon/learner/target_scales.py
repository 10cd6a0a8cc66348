"""The frozen target statistics of a whole batch in one compiled pass (see :mod:`.scaling`).

Regression targets are standardized with statistics frozen per block of labelled records
(1, 2, 4, …, 16, then every 16: :func:`adaptd.learner.scaling.chunks`), taken from the labels
*before* the block. Per block that was a Python loop of a dozen NumPy calls (about 64 blocks in
a batch of 1,024 records: a third of the engine's time on a 16-key regression stream);
:func:`frozen_scales` walks the batch once and gives every record its block's ``shift``,
``scale`` and whether it can be learned, folding each finished block's labels into the moments.

The bits are those of :meth:`adaptd.learner.scaling.RunningMoments.update`: a block's mean and
sum of squared deviations are summed as NumPy sums them (:func:`_numpy_sum`, its pairwise
summation) and merged with the same expression as :func:`adaptd.meta.state.pool_moments`
(Chan, Golub, LeVeque 1979, "Updating formulae and a pairwise algorithm for computing sample
variances"). ``tests/unit/test_target_scales.py`` checks the bits against that Python code on
random batches, labelled masks and batch splits.
"""

from __future__ import annotations

import numpy as np

from adaptd.learner.jit import njit

#: Records per block of frozen statistics once past the doubling start (the scaling module's
#: ``TARGET_BLOCK``, which imports it from here).
TARGET_BLOCK = 16
#: NumPy sums up to this many values with eight accumulators and no further split.
_PAIRWISE_BLOCK = 128


@njit(inline=True)
def _numpy_sum(a, n):  # type: ignore[no-untyped-def]
    """``np.sum(a[:n])`` bit for bit, for ``n ≤ 128``: NumPy's pairwise summation
    (:func:`_block_sum`) added to the reduction's identity 0.0 (so a sum of −0.0 is 0.0, as
    NumPy's)."""
    return 0.0 + _block_sum(a, 0, n)


@njit(inline=True)
def _block_sum(a, lo, n):  # type: ignore[no-untyped-def]
    """NumPy's ``pairwise_sum`` (``loops_utils.h``) of ``a[lo : lo + n]`` for ``n ≤ 128``: a
    plain loop from −0.0 under 8 values, else 8 interleaved accumulators combined as a tree,
    then the remainder."""
    if n < 8:
        res = -0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = lo + 8
    top = lo + n - n % 8
    while i < top:
        r0 += a[i]
        r1 += a[i + 1]
        r2 += a[i + 2]
        r3 += a[i + 3]
        r4 += a[i + 4]
        r5 += a[i + 5]
        r6 += a[i + 6]
        r7 += a[i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < lo + n:
        res += a[i]
        i += 1
    return res


@njit()
def pairwise_sum(a, lo, n):  # type: ignore[no-untyped-def]
    """NumPy's ``pairwise_sum`` of ``a[lo : lo + n]`` for any ``n``: above 128 values the
    halves (the first rounded down to a multiple of 8) are summed apart and added, down to
    blocks of :func:`_block_sum`. Without recursion (Numba's cache cannot load a recursive
    function's callers): a stack of the pending halves. ``0.0 + pairwise_sum(a, 0, n)`` is
    ``np.sum(a[:n])`` bit for bit (``tests/unit/test_target_scales.py``)."""
    if n <= _PAIRWISE_BLOCK:
        return _block_sum(a, lo, n)
    depth = 2
    size = n
    while size > _PAIRWISE_BLOCK:
        size = size - (size // 2 - size // 2 % 8)
        depth += 2
    starts = np.empty(2 * depth, dtype=np.int64)
    counts = np.empty(2 * depth, dtype=np.int64)
    expanded = np.zeros(2 * depth, dtype=np.bool_)
    sums = np.empty(2 * depth)
    top, done = 0, 0
    starts[0], counts[0] = lo, n
    while top >= 0:
        s, c = starts[top], counts[top]
        if c <= _PAIRWISE_BLOCK:
            sums[done] = _block_sum(a, s, c)
            done += 1
            top -= 1
        elif expanded[top]:  # both halves are summed: the last two sums, left then right
            sums[done - 2] = sums[done - 2] + sums[done - 1]
            done -= 1
            top -= 1
        else:
            expanded[top] = True
            half = c // 2
            half -= half % 8
            starts[top + 1], counts[top + 1], expanded[top + 1] = s + half, c - half, False
            starts[top + 2], counts[top + 2], expanded[top + 2] = s, half, False
            top += 2
    return sums[0]


@njit(inline=True)
def _fold(moments, labels, k):  # type: ignore[no-untyped-def]
    """``RunningMoments.update`` of ``moments = [count, mean, m2]`` (one column) with
    ``labels[:k]``; non-finite squared deviations (NaN: unlabelled) are left out. Overwrites
    ``labels``."""
    count, mean, m2 = moments[0], moments[1], moments[2]
    m = 0
    for i in range(k):
        dev = labels[i] - mean
        if np.isfinite(dev * dev):
            labels[m] = labels[i]
            m += 1
    if m == 0:
        return
    mean_b = _numpy_sum(labels, m) / m
    for i in range(m):
        dev = labels[i] - mean_b
        labels[i] = dev * dev
    m2_b = _numpy_sum(labels, m)
    n = float(m)
    if count <= 0:  # pool_moments leaves out a part without records
        moments[0], moments[1], moments[2] = n, mean_b, m2_b
        return
    total = count + n
    delta = mean_b - mean
    moments[0] = total
    moments[1] = mean + delta * (n / total)
    moments[2] = m2 + m2_b + delta * delta * (count * n / total)


@njit(inline=True)
def _edge(p):  # type: ignore[no-untyped-def]
    """The labelled-record count at which the block starting after ``p`` labels ends."""
    if p >= TARGET_BLOCK:
        return (p // TARGET_BLOCK + 1) * TARGET_BLOCK
    e = 1
    while e <= p:
        e <<= 1
    return e


@njit(inline=True)
def _at_edge(records):  # type: ignore[no-untyped-def]
    """Whether a block ends after ``records`` labels (the scaling module's rule)."""
    if records <= TARGET_BLOCK:
        return records & (records - 1) == 0
    return records % TARGET_BLOCK == 0


@njit(nogil=True)
def frozen_scales(ys, labelled, records, moments, pending, k, shift, scale,  # type: ignore[no-untyped-def]
                  learnable):
    """Each record's block ``shift``, ``scale`` and ``learnable``, in the output arrays.

    ``records``: labels the learner had seen before the batch; ``moments`` ``(3,)``: the
    target moments ``[count, mean, m2]``, updated in place; ``pending[:k]``: the labels of the
    unfinished block before the batch, with room for the batch's after them. Returns the labels
    seen after the batch and how many of ``pending`` now wait for their block's end.

    A block's ``(shift, scale)`` is ``(0, 1)`` before any label, ``(mean, 0)`` after one (that
    record is predicted as the one label seen, not learned), then the mean and the population
    deviation (1 where it is not above 1e-12 of the mean's size). A record is learnable from
    two labels on: learning on a guessed scale would fill AdaGrad's accumulators with
    gradients of the wrong size for good. The scale 0 after one label predicts that label: a
    guessed scale (``|mean|``) sent an untrained model's output tens of percent away from
    it, which under ``auto`` was the mixture's largest loss to its best expert (WaterFlow,
    TrumpApproval)."""
    n = ys.shape[0]
    lo = 0
    while lo < n:
        edge = _edge(records)
        count, mean = moments[0], moments[1]
        if count < 1:
            sh, sc = 0.0, 1.0
        elif count < 2:
            sh, sc = mean, 0.0
        else:
            sh = mean
            sc = np.sqrt(moments[2] / count)
            if not sc > 1e-12 * np.maximum(np.abs(mean), 1.0):
                sc = 1.0
        ok = count >= 2
        hi = lo
        while hi < n:
            shift[hi] = sh
            scale[hi] = sc
            learnable[hi] = ok
            pending[k] = ys[hi]
            k += 1
            if labelled[hi]:
                records += 1
            hi += 1
            if records >= edge:
                break
        if _at_edge(records):
            _fold(moments, pending, k)
            k = 0
        lo = hi
    return records, k
