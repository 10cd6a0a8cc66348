"""Where an MLP record's microseconds go: the kernel's building blocks timed one by one.

The compiled kernel (:mod:`adaptd.learner.kernel`) learns a record on the key's row and on its
shadow baseline's row. At support window k the key's row costs one forward pass to predict,
k − 1 more for the window's older entries, k backward passes and one inner step; the baseline's
(window 1) one forward pass, one backward pass and one step. This times each piece for the
default MLP (10-40-40-1, tanh) on its own (thread CPU time, best of ``--repeats``) and adds them
up per record, next to ``benchmarks.mlp_throughput --engine``'s measured engine cost: what any
faster window gradient has to beat, and the floor left when the window pass is free. The older
entries' passes run as vector lanes (:mod:`adaptd.learner.window`), cheaper than that sum:
``window`` times the prediction and the whole window gradient as the kernel runs them.

    PYTHONPATH=. .venv/bin/python benchmarks/mlp_pieces.py [--window 5] [--hidden 40 40]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from adaptd.learner import kernel
from adaptd.learner.jit import njit
from adaptd.learner.models import build_family, initial_parameters
from adaptd.learner.network import backward, forward, net_of, predict
from adaptd.learner.step import step_row
from adaptd.learner.window import window_grad


@njit()
def _forwards(theta, acts, net, zs, x, n):  # type: ignore[no-untyped-def]
    total = 0.0
    for i in range(n):
        for j in range(x.shape[0]):
            acts[0, j] = x[j] + i * 1e-12  # a new input each time: nothing is hoisted
        total += forward(theta, 0, acts, net, zs)
    return total


@njit()
def _backwards(theta, acts, net, g, delta, delta_next, n):  # type: ignore[no-untyped-def]
    for i in range(n):
        backward(theta, 0, acts, net, 1e-3 + i * 1e-12, g, delta, delta_next)


@njit()
def _windows(theta, WX, WY, WM, net, g, sc, n):  # type: ignore[no-untyped-def]
    """The newest entry (position 0) predicted, then the window gradient, as the kernel does."""
    x0 = WX[0, 0, 0]
    for i in range(n):
        WX[0, 0, 0] = x0 + i * 1e-12
        yp = predict(theta, 0, WX[0], 0, sc.acts, net, sc.zs)
        window_grad(theta, 0, WX, WY, WM, WX.shape[1], net, g, 0, yp, sc)


@njit()
def _steps(theta, A, g, B, old, gsq, n):  # type: ignore[no-untyped-def]
    taken = 0
    for _ in range(n):
        taken += step_row(theta, A, 0, g, B, 1.0, 1.0, old, gsq)
    return taken


def pieces_us(hidden: tuple[int, ...], d: int = 10, n: int = 100_000, repeats: int = 5,
              window: int = 5) -> dict[str, float]:
    """µs of thread CPU time for one forward pass, one backward pass, one inner step, and the
    prediction with the window gradient at ``window``."""
    fam = build_family("mlp", "classification", d, hidden, "tanh")
    net = net_of(fam)
    P = fam.n_params
    rng = np.random.default_rng(0)
    theta = initial_parameters(fam, 1)[None, :].copy()
    width = max(d, *hidden)
    acts = np.zeros((len(hidden) + 1, width))
    acts[0, :d] = rng.normal(size=d)
    _forwards(theta, acts, net, np.zeros(width), acts[0, :d].copy(), 1)  # real activations
    g = rng.normal(size=P) * 1e-2
    WX = rng.normal(size=(1, window, d))
    WY = (rng.random((1, window)) > 0.5) * 1.0
    sc = kernel.scratch(net.L_out, d, window, P)
    calls = {
        "forward": lambda k: _forwards(theta, acts.copy(), net, np.zeros(width),
                                       acts[0, :d].copy(), k),
        "backward": lambda k: _backwards(theta, acts, net, np.zeros(P), np.zeros(width),
                                         np.zeros(width), k),
        "step": lambda k: _steps(theta, np.ones((1, P)), g, np.full(P, 1e-4),
                                 np.empty((3, P)), np.zeros((1, P)), k),
        "window": lambda k: _windows(theta, WX, WY, np.ones((1, window)), net, np.zeros(P),
                                     sc, k),
    }
    out = {}
    for name, call in calls.items():
        call(10)  # compiled (or loaded from Numba's cache) before timing
        best = float("inf")
        for _ in range(repeats):
            start = time.thread_time()
            call(n)
            best = min(best, time.thread_time() - start)
        out[name] = best / n * 1e6
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--hidden", type=int, nargs="+", default=[40, 40])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    us = pieces_us(tuple(args.hidden), repeats=args.repeats, window=args.window)
    k = args.window
    key_row = k * us["forward"] + k * us["backward"] + us["step"]
    baseline = us["forward"] + us["backward"] + us["step"]
    shape = "-".join(map(str, (10, *args.hidden, 1)))
    print(f"MLP {shape}: forward {us['forward']:.3f} us, backward {us['backward']:.3f} us, "
          f"inner step {us['step']:.3f} us")
    print(f"per record at window {k}: key's row {key_row:.2f} us ({k} forward, {k} backward, "
          f"1 step), baseline row {baseline:.2f} us, sum {key_row + baseline:.2f} us")
    print(f"with the window pass free (window 1): "
          f"{2 * baseline:.2f} us")
    print(f"as the kernel runs it (older entries as lanes): prediction + window gradient "
          f"{us['window']:.2f} us, key's row {us['window'] + us['step']:.2f} us")


if __name__ == "__main__":
    main()
