"""The running moments in a learner's shared state: what replicas pool besides the meta-state.

Standardization statistics (:mod:`adaptd.learner.scaling`, of the learner or of each candidate
of ``--model auto``) and the auto model's Hedge label moments are, like the meta-state, learned
by every replica from its own records and shared by all keys; :mod:`adaptd.meta_sync` pools the
group's. Here: finding them in ``learner.state_dict(keys=())`` and putting them back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from adaptd.meta.state import Moments


def live_moments(shared: Mapping[str, Any]) -> dict[str, Moments]:
    """The running moments in a learner's shared state, by where they sit: the
    standardization statistics (``scaler`` of the learner, or of each candidate of the auto
    model) and the auto model's Hedge label moments. Every replica updates them from its own
    records, as it does its meta-state."""
    found: dict[str, Moments] = {}
    holders = {"": shared}
    for name, candidate in (shared.get("candidates") or {}).items():
        holders[f"candidates/{name}/"] = candidate
    for prefix, holder in holders.items():
        for part in ("x", "y"):
            moments = (holder.get("scaler") or {}).get(part)
            if moments is not None:
                found[f"{prefix}scaler/{part}"] = moments
    labels = shared.get("label_moments")
    if labels is not None and float(labels[0]) > 0:
        found["label_moments"] = {"count": float(labels[0]), "mean": np.array([labels[1]]),
                                  "m2": np.array([labels[2]])}
    return found


def with_moments(shared: Mapping[str, Any], moments: Mapping[str, Moments]) -> dict[str, Any]:
    """``shared`` with the moments at the places :func:`live_moments` names replaced."""
    out = dict(shared)
    for where, value in moments.items():
        if where == "label_moments":
            out["label_moments"] = [value["count"], float(value["mean"][0]),
                                    float(value["m2"][0])]
            continue
        *holder_path, _, part = where.split("/")
        if holder_path:
            out["candidates"] = dict(out["candidates"])
            holder = out["candidates"][holder_path[1]] = dict(out["candidates"][holder_path[1]])
        else:
            holder = out
        holder["scaler"] = {**holder["scaler"], part: value}
    return out


def statistics_of(moments: Mapping[str, Moments]) -> dict[str, Any] | None:
    """The standardization statistics among ``moments`` (:func:`live_moments`) as a meta-state
    carries them (the learner's own, or the first candidate's: the one whose meta-state is
    published), or None."""
    for where in moments:
        if where.endswith(("scaler/x", "scaler/y")):
            prefix = where[:-1]
            return {part: None if moments.get(prefix + part) is None else {
                "count": float(moments[prefix + part]["count"]),
                "mean": np.asarray(moments[prefix + part]["mean"]).tolist(),
                "m2": np.asarray(moments[prefix + part]["m2"]).tolist()} for part in ("x", "y")}
    return None
