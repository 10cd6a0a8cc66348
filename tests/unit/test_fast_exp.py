"""The inlined exp (:mod:`adaptd.learner.fast_exp`) and the layer's tanh built on it
(:func:`adaptd.learner.network.activate`) give libm's bits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adaptd.learner import fast_exp
from adaptd.learner.jit import njit
from adaptd.learner.network import activate


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
    """activate over layers of 40 (the last one shorter), as the forward pass calls it."""
    out[:] = x
    for start in range(0, x.shape[0], 40):
        activate(out[start : start + 40], min(40, x.shape[0] - start), 0)


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
    # Both of activate's paths ran: most layers are all on exp's main path, some are not.
    main_path = np.abs(x[: x.shape[0] // 40 * 40].reshape(-1, 40)) < 256.0
    assert main_path.all(axis=1).sum() > 10_000 and (~main_path.all(axis=1)).sum() > 1_000


def test_this_machine_runs_the_inlined_path_where_glibc_has_its_fma_variant() -> None:
    """Not vacuous here: the bits above are compared on the inlined path."""
    from llvmlite import binding

    features = binding.get_host_cpu_features()
    if features.get("fma") and features.get("avx2"):
        assert fast_exp.EXACT
