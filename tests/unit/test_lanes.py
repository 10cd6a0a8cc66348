"""The window pass's vector lanes (:mod:`adaptd.learner.lanes`): every lane has the bits of
:func:`~adaptd.learner.network.forward` for its entry, and the window gradient built on them
the bits of one forward and backward pass per entry in window order (the rule as it was),
the lanes' errors back through the layers included."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adaptd.learner import kernel
from adaptd.learner.jit import njit
from adaptd.learner.lanes import LANES
from adaptd.learner.models import build_family, initial_parameters
from adaptd.learner.network import backward, backward_from, forward, net_of, softmax_inplace
from adaptd.learner.window import forward_lanes, window_grad

D = 7
#: (hidden, activation, classes): 1 is binary (logistic), 0 regression.
SHAPES = [((40, 40), "tanh", 1), ((40, 40), "tanh", 0), ((11, 3), "tanh", 0), ((9,), "relu", 1),
          ((13,), "tanh", 3)]


def _net(hidden: tuple[int, ...], act: str, classes: int, seed: int) -> tuple:
    task = "classification" if classes else "regression"
    fam = build_family("mlp", task, D, hidden, act, classes=classes if classes > 1 else 0)
    rng = np.random.default_rng(seed)
    theta = initial_parameters(fam, seed)[None, :] + rng.normal(size=(1, fam.n_params)) * 0.5
    return fam, net_of(fam), theta, rng


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint64)


@pytest.mark.parametrize("hidden,act,classes", SHAPES)
def test_each_lane_is_its_entrys_forward_pass(hidden: tuple, act: str, classes: int) -> None:
    fam, net, theta, rng = _net(hidden, act, classes, seed=1)
    sc = kernel.scratch(net.L_out, D, 5, fam.n_params)
    X = rng.normal(size=(LANES, D)) * 4.0
    X[1, 2] = 300.0  # a hidden sum off exp's main path: the layer takes the scalar tanh
    for e in range(LANES):
        sc.lanes[0, np.arange(D) * LANES + e] = X[e]
    forward_lanes(theta, 0, sc.lanes, net, sc.lane_zs)
    width = sc.acts.shape[1]
    for e in range(LANES):
        acts, zs = np.zeros((len(hidden) + 1, width)), np.zeros(width)
        acts[0, :D] = X[e]
        forward(theta, 0, acts, net, zs)
        for layer, h in enumerate(net.L_in):
            assert np.array_equal(_bits(acts[layer, :h]),
                                  _bits(sc.lanes[layer, np.arange(h) * LANES + e]))
        K = net.L_out[-1]
        assert np.array_equal(_bits(zs[:K]), _bits(sc.lane_zs[np.arange(K) * LANES + e]))


@njit()
def _one_entry_at_a_time(theta, WX, WY, WM, kk, net, g, acts, zs, delta, delta_next):  # type: ignore[no-untyped-def]
    """The window pass as it was before the lanes: each entry's forward pass, then its
    backward pass, in window order."""
    count = max(WM[0, :kk].sum(), 1.0)
    g[:] = 0.0
    for m in range(kk):
        w = WM[0, m]
        if w == 0.0:
            continue
        acts[0, : WX.shape[2]] = WX[0, m]
        zm = forward(theta, 0, acts, net, zs)
        if net.classes:
            softmax_inplace(zs, net.classes)
            for u in range(net.classes):
                delta[u] = zs[u] * (w / count)
            delta[int(WY[0, m])] -= w / count
            backward_from(theta, 0, acts, net, g, delta, delta_next)
        else:
            y = WY[0, m]
            e = 1.0 / (1.0 + math.exp(-zm)) - y if net.logistic else 2.0 * (zm - y)
            backward(theta, 0, acts, net, e * w / count, g, delta, delta_next)


@pytest.mark.parametrize("hidden,act,classes", SHAPES)
@pytest.mark.parametrize("k,masked", [(5, ()), (10, (3,)), (3, (0, 1, 2))])
def test_window_gradient_has_the_one_entry_at_a_time_bits(hidden: tuple, act: str, classes: int,
                                                          k: int, masked: tuple) -> None:
    fam, net, theta, rng = _net(hidden, act, classes, seed=2)
    WX = rng.normal(size=(1, k, D)) * 2.0
    WY = (rng.integers(0, max(classes, 2), size=(1, k)) if classes else rng.normal(size=(1, k))) * 1.0
    WM = np.ones((1, k))
    WM[0, list(masked)] = 0.0
    sc = kernel.scratch(net.L_out, D, k, fam.n_params)
    width = sc.acts.shape[1]
    ref = np.empty(fam.n_params)
    _one_entry_at_a_time(theta, WX, WY, WM, k, net, ref, np.zeros((len(hidden) + 1, width)),
                         np.zeros(width), np.zeros(width), np.zeros(width))
    g = np.empty(fam.n_params)
    window_grad(theta, 0, WX, WY, WM, k, net, g, -1, 0.0, sc)
    assert np.array_equal(_bits(g), _bits(ref))
