"""The concept probe compiled: score a key's stored task states on its newest window records
and move to the best (the rule is :mod:`adaptd.learner.concepts`').

The compiled kernel (:mod:`adaptd.learner.kernel`) runs the probe itself at each record that
is due one (:func:`probe`), on the library's states laid out as arrays (:class:`Library`, kept
by :class:`~adaptd.learner.concepts.ConceptLibrary` next to its per-slot lists). Returning to
Python for each probe cost about 40 µs (a kernel call, the probe, the totals of the records
before it) eight times per drift alarm: on 16 linear keys with a drift every 172 records it was
half of the engine's time. Python's probe (:func:`~adaptd.learner.concepts.reconsider`, used by
the wave path and when stored states no longer fit the model) calls the same scoring,
:func:`choose_in`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from adaptd.learner.jit import njit
from adaptd.learner.network import class_loss, loss, predict, predict_classes
from adaptd.learner.target_scales import _numpy_sum

#: Fewest window records a move is decided on (see :mod:`adaptd.learner.concepts`).
MIN_RECORDS = 3


class Library(NamedTuple):
    """A :class:`~adaptd.learner.concepts.ConceptLibrary`'s states as the kernel reads them."""

    entry: np.ndarray  # (rows,) int64: the slot's entry in ``states``, −1: none
    held: np.ndarray  # (entries,) int64: how many states each holds, oldest first
    states: np.ndarray  # (entries, size, P)
    since: np.ndarray  # (rows,) int64: segment length at the slot's last move, −1: none since
    # its alarm
    moved: np.ndarray  # (n,) int64: the slots moved during a kernel call, in order


@njit(refcounts=False)
def choose_in(states, n, X, Y, WM, WL, wpos, m, ratio, net, acts, zs, seen):  # type: ignore[no-untyped-def]
    """The stored state to move to, or −1: the one of ``states[:n]`` ``(n, P)`` with the
    lowest mean loss on the window's last ``m`` records (``X`` ``(k, d)``, ``Y``, ``WM``
    ``(k,)``, newest at ``wpos − 1``), if there are at least MIN_RECORDS of them and that loss
    is below ``ratio`` times the current state's own prequential loss on them (``WL``).
    ``seen`` ``(k,)``: working space.

    The states are scored with the kernel's prediction and loss (:mod:`adaptd.learner.network`),
    not the families' NumPy ``forward``: a probe then costs a few µs, not 30. The two round
    differently in the last bits, which can move the choice only where two losses tie to
    1e-16: right after a move the current state *is* a stored one, and the ratio keeps that
    tie from being decided by the last bit (``tests/unit/test_concepts.py`` checks the choices
    against the NumPy losses'). The current loss is NumPy's mean of the same values."""
    k = WM.shape[0]
    found = 0
    for q in range(m):
        pos = (wpos - 1 - q) % k
        if WM[pos] > 0:
            seen[found] = WL[pos]
            found += 1
    if found < MIN_RECORDS:
        return -1
    current = _numpy_sum(seen, found) / found
    best, best_loss = -1, math.inf
    for j in range(n):
        total = 0.0
        for q in range(m):  # the same records, newest first
            i = (wpos - 1 - q) % k
            if WM[i] <= 0:
                continue
            if net.classes:
                predict_classes(states, j, X, i, acts, net, zs)
                total += class_loss(zs, Y[i])
            else:
                total += loss(predict(states, j, X, i, acts, net, zs), Y[i], net.logistic)
        mean = total / found
        if best < 0 or mean < best_loss:  # the first of ties, as np.argmin; NaN never wins
            best, best_loss = j, mean if math.isfinite(mean) else math.inf
    return best if best_loss < ratio * current else -1


@njit(refcounts=False)
def probe(s, ar, lib, ratio, net, acts, zs, seen, acc):  # type: ignore[no-untyped-def]
    """:func:`~adaptd.learner.concepts.reconsider` of slot ``s`` in the kernel: move its θ to
    the chosen stored state, count a segment's first move in ``acc[2]``, note the slot in
    ``lib.moved`` (``acc[3]`` of them so far) for Python's copy of ``since``."""
    e = lib.entry[s]
    if e < 0 or lib.held[e] == 0:
        return
    since = lib.since[s]
    m = min(ar.seg_len[s] - max(since, 0), ar.WM.shape[1])
    if m < MIN_RECORDS:  # too few records to move on: no scoring
        return
    best = choose_in(lib.states[e], lib.held[e], ar.WX[s], ar.WY[s], ar.WM[s], ar.WL[s],
                     ar.wpos[s], m, ratio, net, acts, zs, seen)
    if best < 0:
        return
    for j in range(ar.theta.shape[1]):
        ar.theta[s, j] = lib.states[e, best, j]
    if since < 0:  # counted once per segment
        acc[2] += 1.0
    lib.since[s] = ar.seg_len[s]
    lib.moved[int(acc[3])] = s
    acc[3] += 1.0
