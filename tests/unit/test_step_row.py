"""The in-place inner step (:func:`adaptd.learner.step.step_row`, with the Σ g² in its pass)
gives the rule's bits, and leaves the row as it was when the result is not finite."""

from __future__ import annotations

import numpy as np
import pytest

from adaptd.learner.jit import njit
from adaptd.learner.step import step_row, undo_row


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint64)


@njit()
def _step_in_place(theta, A, g, B, c, alpha, old, gsq):  # type: ignore[no-untyped-def]
    ok = step_row(theta, A, 0, g, B, c, alpha, old, gsq)
    if not ok:
        undo_row(theta, A, 0, old, gsq)
    return ok


@pytest.mark.parametrize("poison", [None, np.inf, np.nan])
def test_in_place_step_gives_the_rules_bits_or_leaves_the_row(poison: float | None) -> None:
    rng = np.random.default_rng(4)
    P = 2121
    theta, A = rng.normal(size=(1, P)), rng.uniform(1e-6, 2.0, size=(1, P))
    g, B = rng.normal(size=P), rng.uniform(1e-4, 1e-1, size=P)
    if poison is not None:
        g[700] = poison
    c, alpha = 1.0, 0.7
    a_ref = A[0] + c * g * g  # the rule, in NumPy: the same operations, elementwise
    with np.errstate(invalid="ignore"):
        t_ref = theta[0] - alpha * (np.sqrt(B / a_ref) * g)
    gsq = rng.uniform(0.0, 3.0, size=(1, P))
    gsq_ref = gsq[0] + g * g
    before = theta.copy(), A.copy(), gsq.copy()
    ok = _step_in_place(theta, A, g, B, c, alpha, np.empty((3, P)), gsq)
    if poison is None:
        assert ok
        assert np.array_equal(_bits(A[0]), _bits(a_ref))
        assert np.array_equal(_bits(theta[0]), _bits(t_ref))
        assert np.array_equal(_bits(gsq[0]), _bits(gsq_ref))
    else:
        assert not ok
        for now, then in zip((theta, A, gsq), before, strict=True):
            assert np.array_equal(_bits(now), _bits(then))
