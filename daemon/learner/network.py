"""The built-in families' math on one parameter row, compiled: prediction, loss, one input's
forward and backward pass (what :mod:`adaptd.learner.models` computes for many rows at once
with NumPy, for the kernel's record-at-a-time loop; :mod:`adaptd.learner.window` sums them
over a row's support window).

A row's layers are described by :class:`Net`: layer l's weight is
``theta[r, o : o + fi·fo]`` row-major ``(fo, fi)``, then its bias ``(fo,)``, with
``(o, fi, fo) = (L_off[l], L_in[l], L_out[l])`` — ``nn.Linear``'s layout, as in
:class:`~adaptd.learner.models.MLPFamily` (a linear model is one layer of one output).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from adaptd.learner import fast_exp
from adaptd.learner.jit import njit
from adaptd.learner.lanes import axpy
from adaptd.learner.models import P_CLIP, Family, MLPFamily


class Net(NamedTuple):
    """A built-in family's shape, as compiled code takes it."""

    L_off: np.ndarray  # (layers,) int64
    L_in: np.ndarray
    L_out: np.ndarray
    act: int  # hidden activation: 0 tanh, 1 ReLU
    logistic: bool  # sigmoid output and log loss (else identity and squared error)
    single: bool  # one layer with one output: the window gradient has a direct loop
    classes: int  # multi-class: K softmax outputs and class-index labels (0: one output)


def net_of(family: Family) -> Net:
    """The :class:`Net` of a built-in family (one with ``layers``)."""
    layers = family.layers  # type: ignore[attr-defined]
    act = 1 if isinstance(family, MLPFamily) and family.activation == "relu" else 0
    return Net(np.array([o for o, _, _ in layers], dtype=np.int64),
               np.array([i for _, i, _ in layers], dtype=np.int64),
               np.array([f for _, _, f in layers], dtype=np.int64), act,
               family.task == "classification", len(layers) == 1 and layers[0][2] == 1,
               int(getattr(family, "classes", 0)))


@njit(inline=True)
def tanh(x):  # type: ignore[no-untyped-def]
    """tanh through exp(−2|x|): 6 ns against libm's 18 ns here, absolute error below 3e-16."""
    t = math.exp(-2.0 * abs(x))
    r = (1.0 - t) / (1.0 + t)
    return r if x >= 0.0 else -r


@njit(inline=True)
def _tanh_main_path(x):  # type: ignore[no-untyped-def]
    """:func:`tanh` for ``|x| < 256`` (exp's argument on :mod:`fast_exp`'s main path): the
    same bits, with glibc's ``exp`` inlined where it can be (no call, no branch)."""
    t = fast_exp.exp_main_path(-2.0 * abs(x))
    r = (1.0 - t) / (1.0 + t)
    return r if x >= 0.0 else -r


@njit(inline=True)
def activate(z, n, act):  # type: ignore[no-untyped-def]
    """``z[:n]`` ← tanh(``z[:n]``) (``act`` 0) or ReLU (1), in place.

    The tanh of a whole layer in one loop with ``exp`` inlined (:mod:`fast_exp`): the loop
    compiles to vector instructions, 0.07 against 0.20 µs for 40 units here, the same bits as
    :func:`tanh`. An input off exp's main path (``|x| ≥ 256``, NaN) sends the layer through
    :func:`tanh` instead."""
    if act != 0:
        for u in range(n):
            z[u] = max(0.0, z[u])
        return
    off = 0
    for u in range(n):
        off += not (-2.0 * abs(z[u]) > fast_exp.LOW)
    if off:
        for u in range(n):
            z[u] = tanh(z[u])
    else:
        for u in range(n):
            z[u] = _tanh_main_path(z[u])


@njit(inline=True)
def forward(theta, r, acts, net, zs):  # type: ignore[no-untyped-def]
    """Output pre-activation for the input in ``acts[0]`` (the last one); every output's goes
    to ``zs`` and the hidden activations to ``acts[l]``.

    Four units at a time: each unit's sum is still its bias, then its inputs in order (the
    same bits as one unit at a time), but four independent sums keep the adder busy where one
    waits out each addition's latency (1.9 against 0.9 µs for 10-40-40-1 here). Eight at a
    time measured 4–5 % less again for 10-40-40-1 but needs this block again for a width's
    remainder (a twin of it): not kept (mlp.md)."""
    nl = net.L_off.shape[0]
    z = 0.0
    for layer in range(nl):
        o, fi, fo = net.L_off[layer], net.L_in[layer], net.L_out[layer]
        a = acts[layer]
        out = zs if layer == nl - 1 else acts[layer + 1]
        u = 0
        while u + 4 <= fo:
            w0 = theta[r, o + u * fi : o + (u + 1) * fi]
            w1 = theta[r, o + (u + 1) * fi : o + (u + 2) * fi]
            w2 = theta[r, o + (u + 2) * fi : o + (u + 3) * fi]
            w3 = theta[r, o + (u + 3) * fi : o + (u + 4) * fi]
            t0 = theta[r, o + fi * fo + u]
            t1 = theta[r, o + fi * fo + u + 1]
            t2 = theta[r, o + fi * fo + u + 2]
            t3 = theta[r, o + fi * fo + u + 3]
            for v in range(fi):
                av = a[v]
                t0 += w0[v] * av
                t1 += w1[v] * av
                t2 += w2[v] * av
                t3 += w3[v] * av
            out[u] = t0
            out[u + 1] = t1
            out[u + 2] = t2
            out[u + 3] = t3
            u += 4
        while u < fo:
            w0 = theta[r, o + u * fi : o + (u + 1) * fi]
            t0 = theta[r, o + fi * fo + u]
            for v in range(fi):
                t0 += w0[v] * a[v]
            out[u] = t0
            u += 1
        if layer == nl - 1:
            z = out[fo - 1]
        else:
            activate(out, fo, net.act)
    return z


@njit(inline=True)
def backward(theta, r, acts, net, e, g, delta, delta_next):  # type: ignore[no-untyped-def]
    """Add ``e · d z / d θ`` to ``g`` for the input whose forward pass is in ``acts``."""
    delta[0] = e
    backward_from(theta, r, acts, net, g, delta, delta_next)


@njit(inline=True)
def backward_from(theta, r, acts, net, g, delta, delta_next):  # type: ignore[no-untyped-def]
    """Add ``Σ_u delta[u] · d z_u / d θ`` to ``g`` (``delta`` holds the output errors; it is
    overwritten)."""
    row = theta[r]
    for layer in range(net.L_off.shape[0] - 1, -1, -1):
        o, fi, fo = net.L_off[layer], net.L_in[layer], net.L_out[layer]
        outer_layer(g, acts[layer], delta, o, fi, fo)
        if layer == 0:
            break
        # Σ_u W[u, v]·delta[u] for every v at once, u outermost: each sum still runs over u in
        # order (the same bits as one v at a time), reading weight rows contiguously.
        for v in range(fi):
            delta_next[v] = 0.0
        for u in range(fo):
            axpy(delta_next, 0, delta[u], row, o + u * fi, fi)
        for v in range(fi):
            h = acts[layer, v]
            if net.act == 0:
                delta[v] = delta_next[v] * (1.0 - h * h)
            else:
                delta[v] = delta_next[v] if h > 0.0 else 0.0


@njit(inline=True)
def outer_layer(g, a, delta, o, fi, fo):  # type: ignore[no-untyped-def]
    """Add ``delta[:fo] ⊗ a[:fi]`` to the gradient of the layer whose weights start at
    ``g[o]``, and ``delta`` to its bias's. Row updates by :func:`~adaptd.learner.lanes.axpy`
    (vector instructions without LLVM's overlap checks and long remainders): a backward pass
    of 10-40-40-1 0.55–0.61 against 0.64–0.69 µs here, the same bits."""
    for u in range(fo):
        axpy(g, o + u * fi, delta[u], a, 0, fi)
        g[o + fi * fo + u] += delta[u]


@njit(inline=True)
def predict(theta, r, X, i, acts, net, zs):  # type: ignore[no-untyped-def]
    """Row ``r``'s output for features ``X[i]``: the value, or P(y = 1)."""
    d = X.shape[1]
    if net.single:  # the sum forward takes, in the same order
        z = theta[r, d]
        for j in range(d):
            z += theta[r, j] * X[i, j]
    else:
        for j in range(d):
            acts[0, j] = X[i, j]
        z = forward(theta, r, acts, net, zs)
    return 1.0 / (1.0 + math.exp(-z)) if net.logistic else z


@njit(inline=True)
def predict_classes(theta, r, X, i, acts, net, probs):  # type: ignore[no-untyped-def]
    """Row ``r``'s class probabilities for ``X[i]`` into ``probs[:K]``; returns the most
    probable class index (the first of ties)."""
    for j in range(X.shape[1]):
        acts[0, j] = X[i, j]
    forward(theta, r, acts, net, probs)
    return softmax_inplace(probs, net.classes)


@njit(inline=True)
def softmax_inplace(z, K):  # type: ignore[no-untyped-def]
    """``z[:K]`` ← softmax(``z[:K]``), shifted by the maximum so no exponential overflows;
    returns the index of the maximum."""
    best = 0
    for u in range(1, K):
        if z[u] > z[best]:
            best = u
    top = z[best]
    total = 0.0
    for u in range(K):
        z[u] = math.exp(z[u] - top)
        total += z[u]
    for u in range(K):
        z[u] /= total
    return best


@njit(inline=True)
def class_loss(probs, y):  # type: ignore[no-untyped-def]
    """The multinomial log loss −log p_y, p_y clipped as the binary log loss's."""
    p = min(max(probs[int(y)], P_CLIP), 1.0 - P_CLIP)
    return -math.log(p)


@njit(inline=True)
def loss(yp, y, logistic):  # type: ignore[no-untyped-def]
    """Squared error, or log loss with the probability clipped to [P_CLIP, 1 − P_CLIP]."""
    if not logistic:
        return (yp - y) * (yp - y)
    p = min(max(yp, P_CLIP), 1.0 - P_CLIP)
    # The usual 0/1 labels need one logarithm; the result has the same bits.
    if y == 1.0:
        return -math.log(p)
    if y == 0.0:
        return -math.log1p(-p)
    return -(y * math.log(p) + (1.0 - y) * math.log1p(-p))
