"""The torch side of the model families: a user ``nn.Module`` through autograd, and the
``nn.Module`` twins of the built-in families.

Imported only where torch is needed — a user module (``adaptd run`` never builds one itself),
the ``nn.Module`` at θ0 that ``adaptd meta-train`` writes into the meta-state file, and tests —
so that the built-in families run on NumPy and Numba alone (:mod:`adaptd.learner.models`).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

from adaptd.learner.models import P_CLIP, Family, LinearFamily, MLPFamily, TaskKind


def build_module(family: Family) -> nn.Module:
    """A fresh ``nn.Module`` whose ``parameters()`` flatten to ``family``'s layout (PyTorch's
    own initialization; :func:`adaptd.learner.models.initial_parameters` draws the same)."""
    if isinstance(family, LinearFamily):
        layers: list[nn.Module] = [nn.Linear(family.d, 1)]
    elif isinstance(family, MLPFamily):
        layers = []
        sizes = (family.d, *family.hidden)
        for fan_in, fan_out in itertools.pairwise(sizes):
            layers += [nn.Linear(fan_in, fan_out),
                       nn.Tanh() if family.activation == "tanh" else nn.ReLU()]
        classes = getattr(family, "classes", 0)
        layers.append(nn.Linear(sizes[-1], classes or 1))
        if classes:
            return nn.Sequential(*layers, nn.Softmax(dim=-1))
    else:
        return family.module()
    if family.task == "classification":
        layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


class AutogradFamily:
    """Any ``nn.Module`` mapping ``(…, d)`` features to ``(…, 1)`` outputs, through autograd.

    The extension point for models without a closed form. Gradients of all rows come from
    one ``torch.func.vmap`` of ``torch.func.grad`` over ``functional_call``, on tensors that
    share memory with the NumPy rows. Expect tens to hundreds of microseconds per batch step
    even for tiny models (PyTorch dispatch), against a few for the closed forms.

    For classification the module must output P(y=1) (end it with ``nn.Sigmoid``).
    """

    def __init__(self, module: nn.Module, task: TaskKind) -> None:
        self.task: TaskKind = task
        self._module = module.double()
        self._names = [n for n, _ in module.named_parameters()]
        self._shapes = [p.shape for _, p in module.named_parameters()]
        self._sizes = [p.numel() for _, p in module.named_parameters()]
        self.n_params = sum(self._sizes)

        def unflatten(flat: torch.Tensor) -> dict[str, torch.Tensor]:
            parts = torch.split(flat, self._sizes)
            return {n: p.reshape(s) for n, p, s in zip(self._names, parts, self._shapes)}

        def loss_fn(flat: torch.Tensor, X: torch.Tensor, Y: torch.Tensor, M: torch.Tensor
                    ) -> torch.Tensor:
            out = torch.func.functional_call(self._module, unflatten(flat), (X,))[..., 0]
            if task == "regression":
                per = (out - Y) ** 2
            else:
                p = out.clamp(P_CLIP, 1.0 - P_CLIP)
                per = -(Y * torch.log(p) + (1.0 - Y) * torch.log1p(-p))
            return (per * M).sum() / M.sum().clamp(min=1.0)

        def predict(flat: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(self._module, unflatten(flat), (X,))[..., 0]

        self._grad = torch.func.vmap(torch.func.grad_and_value(loss_fn))
        self._predict = torch.func.vmap(predict)

    def forward(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = self._predict(torch.from_numpy(np.ascontiguousarray(theta)),
                                torch.from_numpy(np.ascontiguousarray(X)))
        return out.numpy()

    def loss_grad(
        self, theta: np.ndarray, X: np.ndarray, Y: np.ndarray, M: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        t = [torch.from_numpy(np.ascontiguousarray(a)) for a in (theta, X, Y, M)]
        g, loss = self._grad(*t)
        return loss.detach().numpy(), g.detach().numpy()

    def module(self) -> nn.Module:
        return self._module




def flatten_module(module: nn.Module) -> np.ndarray:
    """The module's parameters as one float64 vector, in ``parameters()`` order."""
    return np.concatenate([p.detach().double().reshape(-1).numpy() for p in module.parameters()])


def load_flat(module: nn.Module, flat: np.ndarray) -> nn.Module:
    """Copy a flat parameter vector (see :func:`flatten_module`) into ``module``; returns it."""
    offset = 0
    with torch.no_grad():
        for p in module.parameters():
            n = p.numel()
            p.copy_(torch.from_numpy(np.asarray(flat[offset : offset + n])).reshape(p.shape))
            offset += n
    if offset != len(flat):
        raise ValueError(f"flat vector has {len(flat)} values, module has {offset} parameters")
    return module
