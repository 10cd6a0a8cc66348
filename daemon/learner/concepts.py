"""Concept reuse: a bounded library of a key's closed task states, tried after a drift alarm.

Real drifts often return to an earlier concept (seasons, regimes, a sensor's modes). After an
alarm a key starts from θ0, which is good for a *new* task; for a recurring one, the state the
key ended that concept with is better still. So each key keeps its last ``meta_learning.library``
closed task states. At an alarm the key starts from θ0 as before; once its new segment has
``PROBE`` labelled records (checked after each batch), it moves to whichever stored state has
a lower loss on the new segment's window than where it is, if any. Not at the alarm itself:
the detector often fires on the first record of the new concept, so the window then holds the
old concept's records, and they pick the old concept (measured: worse than no reuse). This
is the recurring-concept idea of Gama & Kosina 2014 ("Recurrent concepts in data streams
classification", KAIS 40) and Katakis, Tsoumakas, Vlahavas 2010, with the θ0-started state as
the always-present "new concept" entry; the step sizes stay at the new task's ``A``. A task
state joins the library only when its segment was long enough to update the meta-state
(``min_segment``): a short segment's θ is noise. Off by default (``library = 0``): see
:class:`adaptd.settings.MetaConfig`.

Per key, saved with the key's task state (``library``); ``adaptd_concept_reuses_total``
counts the new segments moved to a stored state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from adaptd.learner.adaptive import AdaptiveLearner

#: Labelled records of a new segment the stored states are scored on.
PROBE = 8


class ConceptLibrary:
    """Per slot, up to ``size`` closed task states ``(P,)``, oldest first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.states: dict[int, list[np.ndarray]] = {}
        #: Slots reset at an alarm whose choice of start is still to be made (reconsider).
        self.pending: set[int] = set()

    def store(self, s: int, theta: np.ndarray) -> None:
        lib = self.states.setdefault(s, [])
        lib.append(theta.copy())
        del lib[: -self.size]

    def drop(self, s: int) -> None:
        self.states.pop(s, None)
        self.pending.discard(s)

    def get_state(self, s: int) -> list[list[float]]:
        return [t.tolist() for t in self.states.get(s, ())]

    def set_state(self, s: int, saved: Any) -> None:
        self.drop(s)
        for theta in saved or ():
            self.store(s, np.asarray(theta, dtype=np.float64))


def restart(lrn: AdaptiveLearner, s: int, theta_end: np.ndarray, seg_len: int) -> None:
    """At a drift alarm, after slot ``s`` was reset to θ0: file the closed task's
    ``theta_end`` and mark the slot for :func:`reconsider` once its new segment has
    ``PROBE`` records."""
    lib = lrn.concepts
    assert lib is not None
    if lib.states.get(s):
        lib.pending.add(s)
    if seg_len >= lrn.meta_config.min_segment:
        lib.store(s, theta_end)


def reconsider(lrn: AdaptiveLearner) -> None:
    """For each pending slot whose new segment has ``PROBE`` records: move it to the stored
    state that fits the segment's window best, if one beats where it is now. Called after
    each batch."""
    lib, fam, a = lrn.concepts, lrn.family, lrn.arena
    assert lib is not None and fam is not None
    for s in [s for s in lib.pending if a.seg_len[s] >= PROBE]:
        lib.pending.discard(s)
        stored = lib.states.get(s)
        if not stored:
            continue
        thetas = np.stack([a.theta[s], *stored])
        R = len(thetas)
        with np.errstate(all="ignore"):
            loss, _ = fam.loss_grad(thetas, np.repeat(a.WX[s : s + 1], R, axis=0),
                                    np.repeat(a.WY[s : s + 1], R, axis=0),
                                    np.repeat(a.WM[s : s + 1], R, axis=0))
        loss = np.where(np.isfinite(loss), loss, np.inf)
        best = int(np.argmin(loss))
        if best > 0:
            a.theta[s] = stored[best - 1]
            lrn.totals.concept_reuses += 1
