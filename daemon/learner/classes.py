"""Multi-class labels: the label → class-index mapping, discovered online, and how a model's
output layer grows when a class first appears.

**Label identity.** Numbers are compared by value and booleans are numbers: JSON ``1``,
``1.0`` and ``true`` are one class, shown as ``1`` (an integral number is shown as an integer,
any other as a float). Strings are compared by their exact text, and a string is never a
number: ``"1"`` is a class of its own, as ``"cat"`` is. A class's index is the order in which
it first appeared, and never changes (it is saved with the learner's state).

**Keys of** ``probas``. JSON object keys are strings: a string label is its own key, a number
its JSON text (``1`` → ``"1"``, ``2.5`` → ``"2.5"``). A string that collides with a number's key
(a stream with both ``1`` and ``"1"``) is keyed by its JSON text with the quotes (``"\\"1\\""``).

**Binary streams stay binary.** While every label is 0 or 1 the model is the binary logistic
one and predictions carry ``proba`` = P(y = 1) as always. The first other label switches the
model to softmax with the classes ``0, 1`` (indices 0 and 1, so windows of 0/1 labels keep
their meaning), then the new ones — or, when nothing was learned yet, with the new labels
only. The switch keeps every prediction: σ(z) is the softmax of the logits ``(0, z)``, so
class 0 gets zero weights and class 1 the binary weights (:func:`widen`).

>>> index = ClassIndex()
>>> index.add([1.0, "cat", 2.0, True])
[1.0, 'cat', 2.0]
>>> index.labels, index.proba_keys
([1, 'cat', 2], ['1', 'cat', '2'])
>>> index.targets(np.array(["cat", 2.0, None], dtype=object)).tolist()
[1.0, 2.0, nan]
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

Label = str | float


def display(label: Label) -> str | int | float:
    """The label as predictions show it: strings as they are, integral numbers as integers."""
    if isinstance(label, str):
        return label
    return int(label) if float(label).is_integer() else float(label)


class ClassIndex:
    """Labels in order of first appearance; ``index[label]`` is the class index."""

    def __init__(self, labels: Iterable[Label] = ()) -> None:
        self.index: dict[Label, int] = {}
        self.labels: list[str | int | float] = []
        self.proba_keys: list[str] = []
        self.add(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def add(self, labels: Iterable[Label]) -> list[Label]:
        """Register the labels not seen before, in order; returns them."""
        new = []
        for label in labels:
            key: Label = label if isinstance(label, str) else float(label)
            if key in self.index:
                continue
            self.index[key] = len(self.labels)
            shown = display(key)
            self.labels.append(shown)
            text = shown if isinstance(shown, str) else json.dumps(shown)
            self.proba_keys.append(text if text not in self.proba_keys else json.dumps(shown))
            new.append(key)
        return new

    def unseen(self, y: np.ndarray) -> list[Label]:
        """The labels in ``y`` (NaN or None: unlabelled) not registered yet, in order."""
        seen = self.index
        values = y.tolist()
        return [v for v in dict.fromkeys(values) if _is_label(v) and v not in seen]

    def targets(self, y: np.ndarray) -> np.ndarray:
        """Class indices as floats (NaN where unlabelled); every label must be registered."""
        index = self.index
        return np.array([index[v] if _is_label(v) else math.nan for v in y.tolist()],
                        dtype=np.float64)

    def state_dict(self) -> list[Label]:
        """The labels in index order, as canonical keys (plain data for checkpoints)."""
        return list(self.index)

    @classmethod
    def from_state(cls, labels: Iterable[Label]) -> ClassIndex:
        return cls(labels)


def _is_label(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def widen(values: np.ndarray, layer: tuple[int, int, int], k_old: int, k_new: int,
          fill: float | None) -> np.ndarray:
    """Rows of parameters ``(R, P_old)`` laid out for ``k_old`` output classes, for ``k_new``.

    ``layer`` is the output layer's ``(offset, fan_in, fan_out)`` before; everything before its
    offset (hidden layers) is kept. ``k_old = 0`` means the binary model's one logistic output,
    which becomes class 1 against class 0. ``fill`` is the value of the new classes' entries
    for per-parameter statistics (A, B, G, Σg²); for those, class 0 of a binary model copies
    class 1's, because in a two-class softmax its gradient is exactly the negative of class 1's.
    ``fill=None`` means parameters (θ, θ0): class 0 of a binary model is all zeros (so every
    prediction is unchanged), and each new class gets zero weights and the bias
    ``mean(existing biases) − log(K)`` with K the classes before it. With equal logits a new
    class then starts at probability 1/(K² + 1) (1/5 for the third class): unlikely, not
    impossible, so its first record costs a bounded loss and its gradient is not vanishing;
    zero weights make no assumption about which features announce it.
    """
    o, fi, _ = layer
    R = values.shape[0]
    kw = max(k_old, 1)
    W = values[:, o : o + kw * fi].reshape(R, kw, fi)
    b = values[:, o + kw * fi : o + kw * fi + kw]
    Wn = np.zeros((R, k_new, fi))
    bn = np.zeros((R, k_new))
    if k_old == 0:
        Wn[:, 1], bn[:, 1] = W[:, 0], b[:, 0]
        if fill is not None:
            Wn[:, 0], bn[:, 0] = W[:, 0], b[:, 0]
        start = 2
    else:
        Wn[:, :k_old], bn[:, :k_old] = W, b
        start = k_old
    if fill is None:
        bn[:, start:] = (bn[:, :start].mean(axis=1) - math.log(start))[:, None]
    else:
        Wn[:, start:] = fill
        bn[:, start:] = fill
    return np.concatenate([values[:, :o], Wn.reshape(R, -1), bn], axis=1)


def widen_state(state: Mapping[str, Any], layer: tuple[int, int, int], k_old: int, k_new: int,
                eps: float) -> dict[str, Any]:
    """A saved task state (:func:`adaptd.learner.arena.row_state`, with its ``baseline``) with
    its parameter-sized fields widened as :func:`widen` does the arena's."""
    out = dict(state)
    fills = {"theta": None, "A": eps, "gsq": 0.0, "u_prev": 0.0}
    for name, fill in fills.items():
        if name in state:
            out[name] = widen(np.asarray(state[name])[None], layer, k_old, k_new, fill)[0]
    if isinstance(state.get("baseline"), Mapping):
        out["baseline"] = widen_state(state["baseline"], layer, k_old, k_new, eps)
    out["classes"] = k_new
    return out
