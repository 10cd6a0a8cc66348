"""The inlined exp (:mod:`adaptd.learner.fast_exp`) and the tanh built on it give libm's bits,
and the in-place inner step (:func:`adaptd.learner.step.step_row`, with the Σ g² in its pass) the
rule's."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adaptd.learner import fast_exp
from adaptd.learner.jit import njit
from adaptd.learner.network import tanh
from adaptd.learner.step import step_row, undo_row


@njit()
def _exps(x, out):  # type: ignore[no-untyped-def]
    for i in range(x.shape[0]):
        out[i] = fast_exp.exp_nonpositive(x[i])


@njit()
def _libm_exps(x, out):  # type: ignore[no-untyped-def]
    for i in range(x.shape[0]):
        out[i] = math.exp(x[i])


@njit()
def _tanhs(x, out):  # type: ignore[no-untyped-def]
    for i in range(x.shape[0]):
        out[i] = tanh(x[i])


@njit()
def _libm_tanhs(x, out):  # type: ignore[no-untyped-def]
    """network.tanh as it was: exp(−2|x|) from libm."""
    for i in range(x.shape[0]):
        t = math.exp(-2.0 * abs(x[i]))
        r = (1.0 - t) / (1.0 + t)
        out[i] = r if x[i] >= 0.0 else -r


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint64)


def _inputs(seed: int) -> np.ndarray:
    """Non-positive doubles of every magnitude the main path and its edges see."""
    rng = np.random.default_rng(seed)
    log_uniform = -np.exp(rng.uniform(math.log(1e-300), math.log(800.0), 1_000_000))
    edges = np.array([0.0, -0.0, -2.0 ** -54, -2.0 ** -55, -2.0 ** -53, -5e-324, -1e-17,
                      np.nextafter(-512.0, 0.0), -512.0, -708.0, -745.2, -746.0, -1e300,
                      -np.inf, np.nan])
    return np.concatenate([rng.uniform(-1.0, 0.0, 1_000_000),
                           rng.uniform(-40.0, 0.0, 1_000_000), log_uniform, edges])


@pytest.mark.parametrize("seed", [1, 2])
def test_exp_has_libms_bits(seed: int) -> None:
    x = _inputs(seed)
    ours, libm = np.empty_like(x), np.empty_like(x)
    _exps(x, ours)
    _libm_exps(x, libm)
    assert np.array_equal(_bits(ours), _bits(libm))


def test_tanh_has_the_libm_versions_bits() -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(size=500_000) * scale for scale in (1e-17, 0.01, 1.0, 5.0,
                                                                       300.0)]
                       + [np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e300, -1e300])])
    ours, old = np.empty_like(x), np.empty_like(x)
    _tanhs(x, ours)
    _libm_tanhs(x, old)
    assert np.array_equal(_bits(ours), _bits(old))
    assert np.isnan(ours[-3]) and ours[-5] == 1.0 and ours[-4] == -1.0


def test_this_machine_runs_the_inlined_path_where_glibc_has_its_fma_variant() -> None:
    """Not vacuous here: the bits above are compared on the inlined path."""
    from llvmlite import binding

    features = binding.get_host_cpu_features()
    if features.get("fma") and features.get("avx2"):
        assert fast_exp.EXACT


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
