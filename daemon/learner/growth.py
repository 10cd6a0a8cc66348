"""Multi-class in the engine: labels to class indices before a batch goes through, and the
output layer's growth when a batch brings a class not seen before (rules:
:mod:`adaptd.learner.classes`).

A growth widens, in one go, every array that is parameter-sized: θ, A, Σg² and the
hypergradient's last step of every arena row (the keys' and their baselines'), θ0, B, G of the
meta-state, the seeded init and the baseline's B, and the saved states of evicted keys. The
new entries: θ and θ0 as :func:`~adaptd.learner.classes.widen` says; B = lr² and G = c·eps (no
meta-knowledge of an unseen class: plain AdaGrad for its parameters), so A = G/c = eps;
Σg² = 0. Windows are untouched: they hold class indices, which never change. A class is added
when the batch that first carries it arrives, before the batch's first record is predicted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from adaptd.learner import kernel
from adaptd.learner.classes import ClassIndex, Label, widen, widen_state
from adaptd.learner.models import build_family
from adaptd.learner.network import net_of

if TYPE_CHECKING:
    from adaptd.learner import Outcomes
    from adaptd.learner.adaptive import AdaptiveLearner
    from adaptd.meta.state import MetaState

_WIDENED = {"theta": None, "A": "eps", "gsq": 0.0, "u_prev": 0.0}


def class_targets(lrn: AdaptiveLearner, y: np.ndarray) -> np.ndarray:
    """The label column ``y`` (floats, or objects when some labels are strings) as the
    learner's targets: unchanged while the stream is binary, else class indices (growing the
    model first for new labels)."""
    if lrn.classes is None:
        if y.dtype != object:
            labelled = y[~np.isnan(y)]
            if ((labelled == 0.0) | (labelled == 1.0)).all():
                return y  # binary: today's path, bit for bit
        start_multiclass(lrn, y)
    assert lrn.classes is not None
    new = lrn.classes.unseen(y)
    if new:
        grow(lrn, new)
    return lrn.classes.targets(y)


def start_multiclass(lrn: AdaptiveLearner, y: np.ndarray) -> None:
    """Switch from the binary model to softmax (the first label other than 0/1)."""
    if not hasattr(lrn.family, "layers"):
        raise ValueError("multi-class classification needs a built-in model (linear, logistic "
                         "or mlp): a user module has one output")
    if lrn.totals.n:  # the binary model learned: keep it as classes 0 and 1
        lrn.classes = ClassIndex([0.0, 1.0])
        _rebuild(lrn, 2, fresh=False)
        return
    lrn.classes = ClassIndex(ClassIndex().unseen(y))
    _rebuild(lrn, len(lrn.classes), fresh=True)


def grow(lrn: AdaptiveLearner, new: list[Label]) -> None:
    """Add the classes ``new`` to the index and to every parameter-sized array."""
    assert lrn.classes is not None
    lrn.classes.add(new)
    _rebuild(lrn, len(lrn.classes), fresh=False)


def _rebuild(lrn: AdaptiveLearner, k_new: int, fresh: bool) -> None:
    """The family for ``k_new`` classes; every parameter-sized array widened to it (or, when
    ``fresh``, started again: nothing was learned yet)."""
    old, meta, cfg = lrn.family, lrn.meta, lrn.config
    assert old is not None and meta is not None and lrn.n_features is not None
    k_old = int(getattr(old, "classes", 0))
    layer = old.layers[-1]  # type: ignore[attr-defined]
    fam = build_family(lrn.model, lrn.task, lrn.n_features, cfg.hidden, cfg.activation,
                       classes=k_new)
    eps = cfg.eps
    lrn.family = fam
    lrn.net = net_of(fam)
    lrn.scratch = tuple(kernel.scratch(lrn.net.L_out, lrn.n_features, cfg.window, fam.n_params))
    lrn.B_base = np.full(fam.n_params, cfg.lr * cfg.lr)
    a = lrn.arena
    if fresh:
        from adaptd.learner.models import initial_parameters
        from adaptd.meta.state import MetaState

        lrn._init = initial_parameters(fam, cfg.init_seed)
        lrn.meta = MetaState.initial(lrn._init, cfg.lr, eps, cfg.c, lrn.describe())
        P = fam.n_params
        lrn.arena = a._replace(theta=np.tile(lrn._init, (len(a.theta), 1)),
                               A=np.full((len(a.A), P), eps), gsq=np.zeros((len(a.A), P)),
                               u_prev=np.zeros((len(a.A), P)))
        lrn._cold = {key: _fresh(lrn, state, k_new) for key, state in lrn._cold.items()}
        _name_classes(lrn)
        return
    lrn._init = widen(lrn._init[None], layer, k_old, k_new, None)[0]
    meta.theta0 = widen(meta.theta0[None], layer, k_old, k_new, None)[0]
    meta.B = widen(meta.B[None], layer, k_old, k_new, cfg.lr * cfg.lr)[0]
    meta.G = widen(meta.G[None], layer, k_old, k_new, cfg.c * eps)[0]
    lrn.arena = a._replace(**{
        name: widen(getattr(a, name), layer, k_old, k_new, eps if fill == "eps" else fill)
        for name, fill in _WIDENED.items()})
    lrn._cold = {key: widen_state(state, layer, k_old, k_new, eps)
                 for key, state in lrn._cold.items()}
    _name_classes(lrn)


def _name_classes(lrn: AdaptiveLearner) -> None:
    """Record the classes in the meta-state's model descriptor: a saved meta-state (``--meta``)
    then brings its label → index mapping with it."""
    assert lrn.meta is not None and lrn.classes is not None
    lrn.meta.model["classes"] = lrn.classes.state_dict()


def _fresh(lrn: AdaptiveLearner, state: dict, k_new: int) -> dict:  # type: ignore[type-arg]
    """A saved key state with its parameter fields started again (nothing was learned yet)."""
    P = lrn.family.n_params  # type: ignore[union-attr]
    params = {"theta": lrn._init.copy(), "A": np.full(P, lrn.config.eps), "gsq": np.zeros(P),
              "u_prev": np.zeros(P)}
    out = {**state, **params, "classes": k_new}
    if isinstance(state.get("baseline"), dict):
        out["baseline"] = {**state["baseline"], **params}
    return out


def restore(lrn: AdaptiveLearner, labels: list[Label]) -> None:
    """Take a checkpoint's class index (called before its meta-state and task states)."""
    if lrn.classes is not None:
        if lrn.classes.state_dict() != list(labels):
            raise ValueError(f"learner state has classes {labels}, this learner "
                             f"{lrn.classes.state_dict()}")
        return
    lrn.classes = ClassIndex(labels)
    _rebuild(lrn, len(labels), fresh=True)


def task_state_for(lrn: AdaptiveLearner, state: dict) -> dict:  # type: ignore[type-arg]
    """A saved key state made for this learner's class count (widened if saved with fewer)."""
    k_now = int(getattr(lrn.family, "classes", 0))
    k_saved = int(state.get("classes", 0))
    if k_saved == k_now:
        return state
    if k_saved > k_now:
        raise ValueError(f"a key state has {k_saved} classes, the learner {k_now}")
    assert lrn.classes is not None
    if k_saved == 0 and lrn.classes.state_dict()[:2] != [0.0, 1.0]:
        # Saved by the binary model before a switch that found nothing learned: its 0/1
        # outputs name no class here, so it starts again.
        return _fresh(lrn, state, k_now)
    fam = build_family(lrn.model, lrn.task, lrn.n_features or 0, lrn.config.hidden,
                       lrn.config.activation, classes=k_saved)
    return widen_state(state, fam.layers[-1], k_saved, k_now,  # type: ignore[attr-defined]
                       lrn.config.eps)


def given_classes(meta: MetaState | None) -> ClassIndex | None:
    """The classes a multi-class meta-state (``--meta``) brings, in its index order."""
    labels = meta.model.get("classes") if meta is not None else None
    return ClassIndex(labels) if labels else None


def hits(out: Outcomes, y: np.ndarray) -> np.ndarray:
    """Whether each learned record's prediction was its label (``y``: the learner's targets):
    the most probable class, or P(y = 1) ≥ 0.5 for the binary model."""
    learned = out.learned
    if out.classes is not None:
        return out.y_pred[learned] == y[learned]
    return (out.y_pred[learned] >= 0.5) == (y[learned] == 1.0)
