"""Model families: closed-form NumPy predictions and gradients, no torch.

Every built-in model has a ``torch.nn.Module`` twin (:func:`adaptd.learner.autograd.build_module`)
whose ``state_dict`` is what a user loads. The learner never runs the module: it keeps each
key's parameters as one flat row of a float64 matrix (the module's parameters flattened in
``parameters()`` order) and a :class:`Family` computes predictions and window gradients for
many rows at once with closed-form NumPy expressions. torch is imported only for a user
module (:class:`adaptd.learner.autograd.AutogradFamily`) and for the meta-state file: importing
it costs about 1.3 s of CPU, more than a short run of a built-in model does in all.

Shapes: ``theta`` is ``(R, P)`` — R rows (keys) of P parameters; ``X`` is ``(R, n, d)`` — each
row's support window of n records of d features; ``Y`` and the mask ``M`` are ``(R, n)``.

Why NumPy and not torch for the closed forms: measured here (2-core VM, one thread), batched
``np.matmul`` is as fast as or faster than ``torch.bmm`` at every size the engine meets —
(600, 10, 10) @ (600, 10, 32): 128 µs against 210 µs; (300, 10, 40) @ (300, 40, 40): 256 µs
against 246 µs; one key's (1, 10, 40) @ (1, 40, 40): 1.5 µs against 4.5 µs — and ``einsum`` is
5-6× slower than both. The arrays are the arena's own memory either way.

Why not autograd: one PyTorch autograd step costs about 100 µs per record against river's 6 µs
for a whole logistic-regression update; the closed forms below cost a few NumPy calls per
*batch of keys*. User-supplied modules still work through ``AutogradFamily`` (the
documented extension point), at autograd's price.

>>> fam = build_family("mlp", "regression", 3, hidden=[4])
>>> fam.n_params, fam.layers
(21, [(0, 3, 4), (16, 4, 1)])
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

if TYPE_CHECKING:
    from torch import nn

Activation = Literal["tanh", "relu"]
TaskKind = Literal["regression", "classification"]

#: Probabilities are clipped to [P_CLIP, 1 - P_CLIP] inside the log loss.
P_CLIP = 1e-7


class Family(Protocol):
    """Closed-form (or autograd) math for one model family over many rows at once."""

    n_params: int
    task: TaskKind

    def forward(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Outputs ``(R, n)``: the regression value, or P(y=1) for classification."""
        ...

    def loss_grad(
        self, theta: np.ndarray, X: np.ndarray, Y: np.ndarray, M: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean loss ``(R,)`` over the masked window entries and its gradient ``(R, P)``."""
        ...

    def module(self) -> nn.Module:
        """This family's ``nn.Module`` (imports torch): a fresh one for the built-in families."""
        ...


def pointwise_loss(task: TaskKind, y_pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Squared error for regression, log loss for classification (``y_pred`` is P(y=1))."""
    if task == "regression":
        return (y_pred - y) ** 2
    # np.minimum/np.maximum: np.clip's Python wrapper costs more than the math at these sizes.
    p = np.minimum(np.maximum(y_pred, P_CLIP), 1.0 - P_CLIP)
    return -(y * np.log(p) + (1.0 - y) * np.log1p(-p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # exp(-z) overflows to inf for z << 0 and gives 0 correctly (the learner runs under
    # np.errstate(all="ignore"), so no warning on the hot path).
    return 1.0 / (1.0 + np.exp(-z))


def _output(task: TaskKind, z: np.ndarray) -> np.ndarray:
    return z if task == "regression" else _sigmoid(z)


def _dloss_dz(task: TaskKind, out: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """d loss / d pre-activation output: 2(ŷ−y) for squared error, p−y for sigmoid + log loss."""
    return 2.0 * (out - Y) if task == "regression" else out - Y


class LinearFamily:
    """``z = w·x + b``; regression (identity, squared loss) or logistic (sigmoid, log loss).

    Flat layout is ``nn.Linear(d, 1)``'s: ``[w_1 … w_d, b]``.
    """

    def __init__(self, n_features: int, task: TaskKind) -> None:
        self.d = n_features
        self.task: TaskKind = task
        self.n_params = n_features + 1
        self.layers: list[tuple[int, int, int]] = [(0, n_features, 1)]  # as MLPFamily's

    def forward(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        z = np.matmul(X, theta[:, : self.d, None])[..., 0] + theta[:, self.d, None]
        return _output(self.task, z)

    def loss_grad(
        self, theta: np.ndarray, X: np.ndarray, Y: np.ndarray, M: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        out = self.forward(theta, X)
        count = np.maximum(M.sum(axis=1), 1.0)
        weight = M / count[:, None]
        e = _dloss_dz(self.task, out, Y) * weight
        g = np.empty((theta.shape[0], self.n_params))
        g[:, : self.d] = np.matmul(e[:, None, :], X)[:, 0, :]
        g[:, self.d] = e.sum(axis=1)
        loss = (pointwise_loss(self.task, out, Y) * weight).sum(axis=1)
        return loss, g

    def module(self) -> nn.Module:
        from adaptd.learner.autograd import build_module

        return build_module(self)


def _layout(sizes: Sequence[int]) -> tuple[list[tuple[int, int, int]], int]:
    """``(offset, fan_in, fan_out)`` of each layer of widths ``sizes``, and the parameter count
    (each layer's weight ``(fan_out, fan_in)`` row-major, then its bias)."""
    layers = []
    offset = 0
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers.append((offset, fan_in, fan_out))
        offset += fan_in * fan_out + fan_out
    return layers, offset


class MLPFamily:
    """A multilayer perceptron ``d → h_1 → … → h_L → 1`` with tanh or ReLU hidden units.

    Flat layout is the matching ``nn.Sequential`` of ``nn.Linear`` layers: for each layer its
    weight ``(out, in)`` row-major, then its bias ``(out,)``. Backpropagation is written out by
    hand and batched over rows with ``np.matmul``.
    """

    def __init__(
        self, n_features: int, hidden: Sequence[int], activation: Activation, task: TaskKind
    ) -> None:
        if not hidden:
            raise ValueError("an MLP needs at least one hidden layer")
        self.d = n_features
        self.task: TaskKind = task
        self.hidden = tuple(hidden)
        self.activation = activation
        self.layers, self.n_params = _layout((n_features, *self.hidden, 1))

    def _weights(self, theta: np.ndarray, layer: int) -> tuple[np.ndarray, np.ndarray]:
        o, fi, fo = self.layers[layer]
        R = theta.shape[0]
        return theta[:, o : o + fi * fo].reshape(R, fo, fi), theta[:, o + fi * fo : o + fi * fo + fo]

    def _act(self, z: np.ndarray) -> np.ndarray:
        return np.tanh(z) if self.activation == "tanh" else np.maximum(z, 0.0)

    def _forward(self, theta: np.ndarray, X: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        hs = [X]
        h = X
        last = len(self.layers) - 1
        for i in range(last):
            W, b = self._weights(theta, i)
            h = self._act(np.matmul(h, W.transpose(0, 2, 1)) + b[:, None, :])
            hs.append(h)
        W, b = self._weights(theta, last)
        z = np.matmul(h, W.transpose(0, 2, 1))[..., 0] + b
        return hs, z

    def forward(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        return _output(self.task, self._forward(theta, X)[1])

    def features(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Last hidden layer's activations ``(R, n, h_L)``: what the output layer is linear in."""
        return self._forward(theta, X)[0][-1]

    def loss_grad(
        self, theta: np.ndarray, X: np.ndarray, Y: np.ndarray, M: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        hs, z = self._forward(theta, X)
        out = _output(self.task, z)
        count = np.maximum(M.sum(axis=1), 1.0)
        weight = M / count[:, None]
        delta = (_dloss_dz(self.task, out, Y) * weight)[..., None]  # (R, n, 1)
        g = self._backprop(theta, hs, delta)
        loss = (pointwise_loss(self.task, out, Y) * weight).sum(axis=1)
        return loss, g

    def _backprop(self, theta: np.ndarray, hs: list[np.ndarray], delta: np.ndarray
                  ) -> np.ndarray:
        """The gradient ``(R, P)`` from the output errors ``delta`` ``(R, n, outputs)`` (already
        weighted by the mask) and the forward pass's layer inputs ``hs``."""
        R = theta.shape[0]
        g = np.empty((R, self.n_params))
        for i in range(len(self.layers) - 1, -1, -1):
            o, fi, fo = self.layers[i]
            h_in = hs[i]
            # dL/dW = Σ_n δ_n h_nᵀ, dL/db = Σ_n δ_n
            g[:, o : o + fi * fo] = np.matmul(delta.transpose(0, 2, 1), h_in).reshape(R, -1)
            g[:, o + fi * fo : o + fi * fo + fo] = delta.sum(axis=1)
            if i:
                W, _ = self._weights(theta, i)
                back = np.matmul(delta, W)  # (R, n, fi)
                deriv = 1.0 - h_in * h_in if self.activation == "tanh" else (h_in > 0.0)
                delta = back * deriv
        return g

    def module(self) -> nn.Module:
        from adaptd.learner.autograd import build_module

        return build_module(self)


class SoftmaxFamily(MLPFamily):
    """Multi-class: ``d → h_1 → … → h_L → K`` logits (no hidden layer for the linear model),
    softmax output and the multinomial log loss; labels are class indices ``0 … K−1``.

    The layout is :class:`MLPFamily`'s with ``K`` outputs: the output layer's weight ``(K, h_L)``
    row-major, then its ``K`` biases. The error at the logits is ``p − onehot(y)`` (Bishop
    2006, *Pattern Recognition and Machine Learning*, §4.3.4, eq. 4.109); the hidden layers
    backpropagate it as for one output. ``forward`` gives the probabilities ``(R, n, K)``.

    >>> fam = SoftmaxFamily(2, (), "tanh", 3)
    >>> fam.n_params, fam.layers
    (9, [(0, 2, 3)])
    """

    def __init__(self, n_features: int, hidden: Sequence[int], activation: Activation,
                 classes: int) -> None:
        self.d = n_features
        self.task: TaskKind = "classification"
        self.hidden = tuple(hidden)
        self.activation = activation
        self.classes = classes
        self.layers, self.n_params = _layout((n_features, *self.hidden, classes))

    def _forward(self, theta: np.ndarray, X: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """The layers' inputs and the logits ``(R, n, K)``."""
        hs = [X]
        h = X
        for i in range(len(self.layers) - 1):
            W, b = self._weights(theta, i)
            h = self._act(np.matmul(h, W.transpose(0, 2, 1)) + b[:, None, :])
            hs.append(h)
        W, b = self._weights(theta, len(self.layers) - 1)
        return hs, np.matmul(h, W.transpose(0, 2, 1)) + b[:, None, :]

    def forward(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        return softmax(self._forward(theta, X)[1])

    def loss_grad(
        self, theta: np.ndarray, X: np.ndarray, Y: np.ndarray, M: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        hs, z = self._forward(theta, X)
        p = softmax(z)
        count = np.maximum(M.sum(axis=1), 1.0)
        weight = M / count[:, None]
        onehot = np.arange(self.classes) == np.nan_to_num(Y)[..., None]
        g = self._backprop(theta, hs, (p - onehot) * weight[..., None])
        return (multiclass_loss(p, Y) * weight).sum(axis=1), g


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted by the maximum so that no exponential overflows."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def multiclass_loss(p: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """−log p_y with p_y clipped to [P_CLIP, 1 − P_CLIP], as the binary log loss; ``p`` is
    ``(…, K)``, ``Y`` the class indices ``(…)`` (entries that are not labels give 0)."""
    idx = np.nan_to_num(Y).astype(np.int64)[..., None]
    py = np.take_along_axis(p, np.clip(idx, 0, p.shape[-1] - 1), axis=-1)[..., 0]
    return -np.log(np.minimum(np.maximum(py, P_CLIP), 1.0 - P_CLIP))


def build_family(
    model: str,
    task: TaskKind,
    n_features: int,
    hidden: Sequence[int] = (40, 40),
    activation: Activation = "tanh",
    classes: int = 0,
) -> Family:
    """The family for ``--model`` (``linear``, ``logistic`` or ``mlp``) and ``--task``; with
    ``classes`` ≥ 1, the multi-class (softmax) family of that model with that many classes."""
    if classes:
        if model not in ("linear", "logistic", "mlp"):
            raise ValueError(f"model must be one of linear, logistic, mlp, got {model!r}")
        return SoftmaxFamily(n_features, hidden if model == "mlp" else (), activation, classes)
    if model == "linear":
        return LinearFamily(n_features, task)
    if model == "logistic":
        return LinearFamily(n_features, "classification")
    if model == "mlp":
        return MLPFamily(n_features, hidden, activation, task)
    raise ValueError(f"model must be one of linear, logistic, mlp, got {model!r}")


def initial_parameters(family: Family, seed: int) -> np.ndarray:
    """The initialization PyTorch would give the family's module after ``torch.manual_seed(seed)``,
    bit for bit, drawn without torch (a user module's own parameters for other families).

    Each ``nn.Linear(fan_in, fan_out)`` draws its weight then its bias from U(−b, b) with
    ``b = 1/sqrt(fan_in)`` (``kaiming_uniform_(a=sqrt(5))`` for the weight), in float32, layer
    by layer. torch's CPU generator is the 32-bit Mersenne Twister seeded with ``seed mod 2³²``
    (NumPy's legacy :class:`~numpy.random.RandomState` seeds it the same way), and its float
    ``uniform_`` keeps 24 bits of each draw: ``u·2⁻²⁴·(to − from) + from`` in double, then
    rounded to float32. ``tests/unit/test_learner.py`` checks the result against torch's.
    """
    layers = getattr(family, "layers", None)
    if layers is None:
        from adaptd.learner.autograd import flatten_module

        return flatten_module(family.module())
    rng = np.random.RandomState(seed % 2**32)
    parts = []
    for _, fan_in, fan_out in layers:
        # torch's bounds, computed as torch computes them (the weight's through the gain).
        weight_bound = math.sqrt(3.0) * (math.sqrt(2.0 / (1.0 + 5.0)) / math.sqrt(fan_in))
        parts.append(_torch_uniform(rng, fan_in * fan_out, weight_bound))
        parts.append(_torch_uniform(rng, fan_out, 1.0 / math.sqrt(fan_in)))
    return np.concatenate(parts).astype(np.float64)


def _torch_uniform(rng: np.random.RandomState, n: int, bound: float) -> np.ndarray:
    """``n`` draws of torch's float32 ``uniform_(-bound, bound)`` from the generator ``rng``."""
    low, high = np.float32(-bound), np.float32(bound)
    raw = rng.randint(0, 2**32, size=n, dtype=np.uint32)  # one raw 32-bit output each
    unit = (raw & ((1 << 24) - 1)).astype(np.float64) * (1.0 / (1 << 24))
    return (unit * np.float64(high - low) + np.float64(low)).astype(np.float32)
