"""The compiled network math (:mod:`adaptd.learner.network`): the kernel's window gradient
against the closed form and finite differences, with the newest entry's forward pass taken
from its prediction."""

from __future__ import annotations

import numpy as np
import pytest

from adaptd.learner import kernel
from adaptd.learner.models import build_family, initial_parameters
from adaptd.learner.network import net_of, predict, predict_classes
from adaptd.learner.window import window_grad
from tests.unit.test_multiclass import _numeric_grad

D, N = 3, 5


def _case(task: str, classes: int, seed: int) -> tuple:
    fam = build_family("mlp", task, D, (6, 4), "tanh", classes=classes)
    theta = initial_parameters(fam, seed)[None, :] * 2.0
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(1, N, D))
    if classes:
        Y = rng.integers(0, classes, size=(1, N)).astype(np.float64)
    elif task == "classification":
        Y = rng.integers(0, 2, size=(1, N)).astype(np.float64)
    else:
        Y = rng.normal(size=(1, N))
    M = np.ones((1, N))
    M[0, 1] = 0.0  # a masked entry must not count
    return fam, theta, X, Y, M


@pytest.mark.parametrize("task,classes", [("regression", 0), ("classification", 0),
                                          ("classification", 3)])
@pytest.mark.parametrize("newest", [-1, 0, 3])
def test_window_gradient_matches_the_closed_form_and_finite_differences(
        task: str, classes: int, newest: int) -> None:
    """``newest`` ≥ 0: that entry was just predicted, and the window pass takes its forward
    pass from the prediction instead of computing it again; it must make no difference."""
    fam, theta, X, Y, M = _case(task, classes, seed=2)
    _, closed = fam.loss_grad(theta, X, Y, M)
    np.testing.assert_allclose(closed[0], _numeric_grad(fam, theta, X, Y, M), rtol=1e-5,
                               atol=1e-8)
    net = net_of(fam)
    sc = kernel.scratch(net.L_out, D, N, fam.n_params)
    yp = 0.0
    if newest >= 0:
        if classes:
            predict_classes(theta, 0, X[0], newest, sc.acts, net, sc.zs)
        else:
            yp = predict(theta, 0, X[0], newest, sc.acts, net, sc.zs)
    else:  # nothing predicted: what the scratch holds must not be read
        sc.acts[:] = np.nan
        sc.zs[:] = np.nan
    g = np.empty(fam.n_params)
    window_grad(theta, 0, X, Y, M, N, net, g, newest, yp, sc)
    np.testing.assert_allclose(g, closed[0], rtol=1e-12, atol=1e-14)
