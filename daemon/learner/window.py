"""The support-window gradient of a built-in family's row, compiled: the mean of the window
entries' loss gradients at the current θ, the inner step's ``g = ∇L(θ; W)``
(:mod:`adaptd.learner.step`), for the kernel's record loop (:mod:`adaptd.learner.kernel`).

For a network, the newest entry's forward pass is its prediction's. The older entries' forward
passes, and their errors back through the layers, run :data:`~adaptd.learner.lanes.LANES`
entries at a time as vector lanes (:mod:`adaptd.learner.lanes`); then each entry's gradient is
added in window order. Each entry's numbers are those of one forward and one backward pass of
:mod:`adaptd.learner.network`, so the bits are those of one entry at a time
(``tests/unit/test_lanes.py``). At window 5 (10-40-40-1) the key's row went from 11.0–11.8 to
7.5–7.8 µs a record with these and the vectorized tanh (benchmarks/results/mlp.md).
"""

from __future__ import annotations

import math

from adaptd.learner.jit import njit
from adaptd.learner.lanes import LANES, UNITS, dots_block, dots_one, tdots_block, tdots_one
from adaptd.learner.network import activate, backward_from, outer_layer, softmax_inplace


@njit(refcounts=False)
def window_grad(theta, r, WX, WY, WM, kk, net, g, newest, yp_newest, sc):  # type: ignore[no-untyped-def]
    """``g`` = the mean gradient over the first ``kk`` entries of row ``r``'s window (mask
    ``WM``). The entry at ``newest`` is the record just predicted with this θ: its output
    ``yp_newest`` is reused (the same sum in the same order, so the same bits)."""
    count = 0.0
    for m in range(kk):
        count += WM[r, m]
    count = max(count, 1.0)
    for q in range(g.shape[0]):
        g[q] = 0.0
    if net.single:
        _window_grad_linear(theta, r, WX, WY, WM, kk, net.logistic, count, g, newest,
                            yp_newest, sc.window)
        return
    # The newest entry's forward pass is the prediction's, still in sc.acts / sc.zs.
    network_window_grad(theta, r, WX, WY, WM, kk, net, g, count, newest, sc)


@njit(inline=True)
def _window_grad_linear(theta, r, WX, WY, WM, kk, logistic, count, g, newest, yp_newest,
                        scratch):  # type: ignore[no-untyped-def]
    """:func:`window_grad` for one layer of one output, without copying each window entry
    into the activations first. Three passes over the window (outputs, errors, gradient)
    instead of one: the independent dot products and exponentials overlap in the CPU, 104
    against 135 ns for k = d = 10 here."""
    d = WX.shape[2]
    for m in range(kk):
        if WM[r, m] == 0.0 or m == newest:
            continue
        z = theta[r, d]
        for j in range(d):
            z += theta[r, j] * WX[r, m, j]
        scratch[m] = z
    for m in range(kk):
        w = WM[r, m]
        if w == 0.0:
            continue
        if m == newest:
            out = yp_newest
        else:
            out = 1.0 / (1.0 + math.exp(-scratch[m])) if logistic else scratch[m]
        e = out - WY[r, m] if logistic else 2.0 * (out - WY[r, m])
        scratch[m] = e * (w / count)
    for m in range(kk):
        if WM[r, m] == 0.0:
            continue
        e = scratch[m]
        for j in range(d):
            g[j] += e * WX[r, m, j]
        g[d] += e


@njit()
def network_window_grad(theta, r, WX, WY, WM, kk, net, g, count, newest, sc):  # type: ignore[no-untyped-def]
    """:func:`window_grad`'s sum for a network (anything but one layer of one output): each
    window entry's gradient added to ``g`` (zeroed by the caller) in window order.

    The entry at ``newest`` was just predicted with this θ: its forward pass is taken from
    ``sc.acts``/``sc.zs`` (output values: for multi-class, the probabilities) instead of
    computed again. The others' passes run first, in blocks of ``LANES``
    (:func:`_older_passes`)."""
    _older_passes(theta, r, WX, WY, WM, kk, net, count, newest, sc)
    for m in range(kk):
        if WM[r, m] == 0.0:
            continue
        if m == newest:
            _output_delta(WY[r, m], WM[r, m], count, net, sc.zs, sc.zs[net.L_out[-1] - 1],
                          True, sc.delta)
            backward_from(theta, r, sc.acts, net, g, sc.delta, sc.delta_next)
            continue
        for layer in range(net.L_off.shape[0] - 1, -1, -1):
            outer_layer(g, sc.entry_acts[m, layer], sc.entry_delta[m, layer],
                        net.L_off[layer], net.L_in[layer], net.L_out[layer])


@njit(inline=True)
def _output_delta(y, w, count, net, zs, zm, probs, delta):  # type: ignore[no-untyped-def]
    """One entry's error at the outputs (the loss's derivative by each output's sum), weighted
    ``w / count``, into ``delta``; ``zs`` holds the outputs (already probabilities when
    ``probs``), ``zm`` the last one."""
    if net.classes:
        # Bishop 2006 §4.3.4: ∂(−log p_y)/∂z = p − onehot(y), for each output.
        if not probs:
            softmax_inplace(zs, net.classes)
        scale = w / count
        for u in range(net.classes):
            delta[u] = zs[u] * scale
        delta[int(y)] -= scale
        return
    if net.logistic:
        e = 1.0 / (1.0 + math.exp(-zm)) - y
    else:
        e = 2.0 * (zm - y)
    delta[0] = e * w / count


@njit(inline=True)
def _older_passes(theta, r, WX, WY, WM, kk, net, count, newest, sc):  # type: ignore[no-untyped-def]
    """The forward and backward passes of every window entry but the newest, into
    ``sc.entry_acts[m]`` (each layer's input) and ``sc.entry_delta[m]`` (each layer's error):
    their inputs gathered in blocks of ``LANES`` (a block's unused lanes repeat its first
    entry) for :func:`_lane_block`."""
    d = WX.shape[2]
    n = 0
    for m in range(kk):
        if WM[r, m] == 0.0 or m == newest:
            continue
        for j in range(d):
            sc.lanes[0, j * LANES + n] = WX[r, m, j]
        sc.members[n] = m
        n += 1
        if n == LANES:
            _lane_block(theta, r, WY, WM, count, net, n, sc)
            n = 0
    if n:
        for e in range(n, LANES):
            for j in range(d):
                sc.lanes[0, j * LANES + e] = sc.lanes[0, j * LANES]
        _lane_block(theta, r, WY, WM, count, net, n, sc)


@njit(inline=True)
def _lane_block(theta, r, WY, WM, count, net, n, sc):  # type: ignore[no-untyped-def]
    """One block: the forward passes (:func:`forward_lanes`), each of the first ``n`` lanes'
    output error and activations copied out to its entry, then the errors back through the
    layers (:func:`_lane_deltas`)."""
    forward_lanes(theta, r, sc.lanes, net, sc.lane_zs)
    K = net.L_out[-1]
    for q in range(K * LANES):
        sc.lane_delta[q] = 0.0  # the unused lanes'
    for e in range(n):
        m = sc.members[e]
        zs = sc.entry_zs[m]
        for u in range(K):
            zs[u] = sc.lane_zs[u * LANES + e]
        _output_delta(WY[r, m], WM[r, m], count, net, zs, zs[K - 1], False, sc.delta)
        for u in range(K):
            sc.lane_delta[u * LANES + e] = sc.delta[u]
        for layer in range(net.L_in.shape[0]):
            for v in range(net.L_in[layer]):
                sc.entry_acts[m, layer, v] = sc.lanes[layer, v * LANES + e]
    _lane_deltas(theta, r, net, n, sc)


@njit(inline=True)
def _lane_deltas(theta, r, net, n, sc):  # type: ignore[no-untyped-def]
    """:func:`~adaptd.learner.network.backward_from`'s errors for a block, lanes innermost:
    from the output errors in ``sc.lane_delta`` back through the layers, each layer's error of
    the first ``n`` lanes copied out to ``sc.entry_delta[m, layer]``. The transposed product
    Σ_u W[u, v]·delta[u] runs over u in order from 0.0, as there."""
    row = theta[r]
    d = sc.lane_delta
    for layer in range(net.L_off.shape[0] - 1, -1, -1):
        o, fi, fo = net.L_off[layer], net.L_in[layer], net.L_out[layer]
        for e in range(n):
            m = sc.members[e]
            for u in range(fo):
                sc.entry_delta[m, layer, u] = d[u * LANES + e]
        if layer == 0:
            break
        v = 0
        while v + UNITS <= fi:
            tdots_block(row, o + v, 1, fi, fo, 0, d, sc.lane_next, v * LANES)
            v += UNITS
        while v < fi:
            tdots_one(row, o + v, 1, fi, fo, 0, d, sc.lane_next, v * LANES)
            v += 1
        h = sc.lanes[layer]
        for q in range(fi * LANES):
            if net.act == 0:
                d[q] = sc.lane_next[q] * (1.0 - h[q] * h[q])
            else:
                d[q] = sc.lane_next[q] if h[q] > 0.0 else 0.0


@njit(inline=True)
def forward_lanes(theta, r, lanes, net, zs):  # type: ignore[no-untyped-def]
    """:func:`~adaptd.learner.network.forward` for ``LANES`` inputs at once, entries
    innermost: input ``j`` of entry ``e`` in ``lanes[0, j·LANES + e]``, the hidden activations
    to ``lanes[l]`` and the outputs to ``zs[u·LANES + e]`` in the same layout. Each lane has
    ``forward``'s bits (:mod:`adaptd.learner.lanes`)."""
    row = theta[r]
    nl = net.L_off.shape[0]
    for layer in range(nl):
        o, fi, fo = net.L_off[layer], net.L_in[layer], net.L_out[layer]
        a = lanes[layer]
        out = zs if layer == nl - 1 else lanes[layer + 1]
        u = 0
        while u + UNITS <= fo:
            dots_block(row, o + u * fi, fi, 1, fi, o + fi * fo + u, a, out, u * LANES)
            u += UNITS
        while u < fo:
            dots_one(row, o + u * fi, fi, 1, fi, o + fi * fo + u, a, out, u * LANES)
            u += 1
        if layer < nl - 1:
            activate(out, fo * LANES, net.act)
