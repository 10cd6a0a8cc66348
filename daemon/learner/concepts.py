"""Concept reuse: a bounded library of a key's closed task states, tried after a drift alarm.

Real drifts often return to an earlier concept (seasons, regimes, a sensor's modes), and
detectors raise false alarms. After an alarm a key starts from θ0, which is good for a *new*
task; for a recurring one (or after a false alarm) the state the key ended that concept with is
better still. So each key keeps its last ``meta_learning.library`` closed task states, the
just-closed one included. At an alarm the key starts from θ0 as before; then at each of its new
segment's first ``PROBE`` labelled records it moves to the stored state with the lowest loss on
the segment's records so far (since its last move), if that loss is below ``REUSE_RATIO`` of
the current state's own prequential loss on the same records. Both losses are out of sample:
the current state's loss *after* training on the records would favour it whatever the concept
(with fewer records than parameters it fits them exactly). Not at the alarm itself: the
detector often fires on the first record of the new concept, when the window still holds the
old concept's records.

The choice is made at that record whatever the batch size: the compiled kernel makes it there
itself (:func:`adaptd.learner.reuse.probe`; it returns to Python there,
:data:`adaptd.learner.kernel.EVENT_PROBE`, only while stored states of an older width remain),
the wave path checks after each wave, and both give the same result. (Made at batch ends instead, as at first, a batch of 256 spent
most of a short recurring segment before the switch, and reuse gained nothing.)

This is the recurring-concept idea of Gama & Kosina 2014 ("Recurrent concepts in data streams
classification", KAIS 40) and Katakis, Tsoumakas, Vlahavas 2010, with the θ0-started state as
the always-present "new concept" entry; the step sizes stay at the new task's ``A``. A task
state joins the library only when its segment was long enough to update the meta-state
(``min_segment``): a short segment's θ is noise. The default size is
:class:`adaptd.settings.MetaConfig`'s.

Per key, saved with the key's task state (``library``: the states and the last move). Whether a
probe is due is read from the arena row (``seg``, ``seg_len``), so it survives checkpoints and
evictions with the key. ``adaptd_concept_reuses_total`` counts the segments moved to a stored
state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from adaptd.learner.jit import njit
from adaptd.learner.kernel import Scratch
from adaptd.learner.models import multiclass_loss, pointwise_loss
from adaptd.learner.network import Net
from adaptd.learner.reuse import MIN_RECORDS, Library, choose_in

if TYPE_CHECKING:
    from adaptd.learner.adaptive import AdaptiveLearner

#: Labelled records of a new segment the stored states are scored on.
PROBE = 8
#: A stored state is moved to when its loss is below this fraction (per task) of the current
#: state's own prequential loss on the same records, and those are at least
#: :data:`MIN_RECORDS`. A recurring concept (or a false alarm) shows as a stored state at noise
#: level against θ0's loss at the scale of the task change: for squared error an order of
#: magnitude or more; log loss is floored by the labels' noise and capped near log 2 for an
#: unsure model, so its ratios are narrower. A looser test lets the best of 8 states over a
#: few records win by chance: on new tasks that never recur (d = 30 linear tasks, spread 3) a
#: move on any lower loss after one record cost 34-40% more loss
#: (``benchmarks/results/concepts.md``).
REUSE_RATIO = {"regression": 0.03, "classification": 0.25}


class ConceptLibrary:
    """Per slot, up to ``size`` closed task states ``(P,)``, oldest first.

    The states are kept twice: as lists per slot (what is saved, and what the wave path
    probes), and as arrays for the compiled kernel's own probes (:meth:`arrays`,
    :class:`adaptd.learner.reuse.Library`): an entry of ``size`` rows per slot that has
    states, written as they are stored. The arrays hold the states of the model's current
    width; after a new class widened the model (:mod:`adaptd.learner.growth`) the older
    states no longer fit, and the kernel leaves the probes to :func:`reconsider` (which drops
    them) until none is left."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.states: dict[int, list[np.ndarray]] = {}
        #: The segment length at a slot's last move to a stored state (absent: none since its
        #: alarm); saved with the states.
        self.since: dict[int, int] = {}
        #: A slot's states as one ``(n, P)`` array, built at its first probe after a change.
        self._stacked: dict[int, np.ndarray] = {}
        # The kernel's arrays (see arrays()): per row its entry and ``since`` (−1: none), per
        # entry its count and states; entries of dropped slots are reused.
        self._entry = np.full(0, -1, dtype=np.int64)
        self._since = np.full(0, -1, dtype=np.int64)
        self._count = np.zeros(0, dtype=np.int64)
        self._pool = np.empty((0, size, 0))
        self._free: list[int] = []
        self._moved = np.empty(0, dtype=np.int64)
        #: Stored states of another width than the arrays' (not in them).
        self.misfits = 0

    def store(self, s: int, theta: np.ndarray) -> None:
        lib = self.states.setdefault(s, [])
        lib.append(theta.copy())
        del lib[: -self.size]
        self._stacked.pop(s, None)
        if len(theta) != self._pool.shape[2]:
            self.misfits += 1
            return
        e = self._entry_of(s)
        n = int(self._count[e])
        if n == self.size:  # the oldest goes, as from the list
            self._pool[e, :-1] = self._pool[e, 1:]
            n -= 1
        self._pool[e, n] = theta
        self._count[e] = n + 1

    def drop(self, s: int) -> None:
        lost = self.states.pop(s, None)
        if lost:
            self.misfits -= sum(len(t) != self._pool.shape[2] for t in lost)
        self.since.pop(s, None)
        self._stacked.pop(s, None)
        if s < len(self._entry):
            self._since[s] = -1
            e = int(self._entry[s])
            if e >= 0:
                self._entry[s] = -1
                self._count[e] = 0
                self._free.append(e)

    def moved(self, s: int, seg_len: int) -> bool:
        """Record a move of slot ``s`` at segment length ``seg_len``; whether it is the
        segment's first (the one counted)."""
        first = s not in self.since
        self.since[s] = seg_len
        self._room(s + 1)
        self._since[s] = seg_len
        return first

    def restarted(self, s: int) -> None:
        """Slot ``s`` reset at an alarm: no move since."""
        self.since.pop(s, None)
        if s < len(self._since):
            self._since[s] = -1

    def arrays(self, rows: int, n_params: int, n: int) -> Library:
        """The states for the kernel (:class:`adaptd.learner.reuse.Library`) of an arena of
        ``rows`` rows and ``n_params`` parameters, for a batch of ``n`` records (built again
        after a widening); the kernel's moves are taken back with :meth:`take_moves`."""
        self._room(rows)
        if n_params != self._pool.shape[2]:
            self._rebuild(n_params)
        if n > len(self._moved):
            self._moved = np.empty(n, dtype=np.int64)
        return Library(self._entry, self._count, self._pool, self._since, self._moved)

    def take_moves(self, count: int) -> None:
        """Copy the ``since`` of the ``count`` slots the kernel moved (``Library.moved``)."""
        for s in self._moved[:count].tolist():
            self.since[s] = int(self._since[s])

    def _room(self, rows: int) -> None:
        """Per-row arrays for at least ``rows`` rows."""
        if rows > len(self._entry):
            size = max(rows, 2 * len(self._entry))
            entry = np.full(size, -1, dtype=np.int64)
            entry[: len(self._entry)] = self._entry
            since = np.full(size, -1, dtype=np.int64)
            since[: len(self._since)] = self._since
            self._entry, self._since = entry, since

    def _entry_of(self, s: int) -> int:
        self._room(s + 1)
        e = int(self._entry[s])
        if e >= 0:
            return e
        if not self._free:
            used = len(self._count)
            pool = np.empty((max(2 * used, 4), self.size, self._pool.shape[2]))
            pool[:used] = self._pool
            count = np.zeros(len(pool), dtype=np.int64)
            count[:used] = self._count
            self._pool, self._count = pool, count
            self._free.extend(range(len(pool) - 1, used - 1, -1))
        e = self._free.pop()
        self._entry[s] = e
        self._count[e] = 0
        return e

    def _rebuild(self, n_params: int) -> None:
        """Arrays of width ``n_params``, holding the stored states of that width."""
        self._entry[:] = -1
        self._count = np.zeros(0, dtype=np.int64)
        self._pool = np.empty((0, self.size, n_params))
        self._free = []
        self.misfits = 0
        for s, lib in self.states.items():
            for theta in lib:
                if len(theta) != n_params:
                    self.misfits += 1
                    continue
                e = self._entry_of(s)
                self._pool[e, self._count[e]] = theta
                self._count[e] += 1

    def fitting(self, s: int, n_params: int) -> np.ndarray | None:
        """Slot ``s``'s states that fit a model of ``n_params`` parameters, ``(n, P)``, or
        None. A class first seen mid-stream widens θ (adaptd.learner.growth): states stored
        before it no longer fit the model and are dropped."""
        stored = self.states.get(s)
        if not stored:
            return None
        if any(len(t) != n_params for t in stored):
            kept = [t for t in stored if len(t) == n_params]
            if n_params == self._pool.shape[2]:
                self.misfits -= len(stored) - len(kept)
            stored = self.states[s] = kept
            self._stacked.pop(s, None)
            if not stored:
                return None
        stacked = self._stacked.get(s)
        if stacked is None:
            stacked = self._stacked[s] = np.stack(stored)
        return stacked

    def get_state(self, s: int) -> dict[str, Any]:
        """``states`` ``(n, P)`` (an array, as the arena's rows are saved), ``since``."""
        stored = self.states.get(s)
        return {"states": np.stack(stored) if stored else np.empty((0, 0)),
                "since": self.since.get(s)}

    def set_state(self, s: int, saved: Any) -> None:
        """``saved`` from :meth:`get_state` (or a plain list of states, as saved before
        ``since`` was)."""
        self.drop(s)
        if isinstance(saved, dict):
            if saved.get("since") is not None:
                self.moved(s, int(saved["since"]))
            saved = saved.get("states")
        for theta in () if saved is None else saved:
            self.store(s, np.asarray(theta, dtype=np.float64))


def restart(lrn: AdaptiveLearner, s: int, theta_end: np.ndarray, seg_len: int) -> None:
    """At a drift alarm, after slot ``s`` was reset to θ0: file the closed task's
    ``theta_end`` (the probe :func:`reconsider` is due once the new segment has ``PROBE``
    records)."""
    lib = lrn.concepts
    assert lib is not None
    lib.restarted(s)
    if seg_len >= lrn.meta_config.min_segment:
        lib.store(s, theta_end)


def probe_due(lrn: AdaptiveLearner, slots: np.ndarray) -> np.ndarray:
    """The slots among ``slots`` whose segment after an alarm has just reached ``PROBE``
    records (the wave path's test; the kernel's is the same)."""
    a = lrn.arena
    return slots[(a.seg_len[slots] <= PROBE) & (a.seg[slots] > 0)]


def reconsider(lrn: AdaptiveLearner, s: int) -> None:
    """Move slot ``s`` to the stored state with the lowest loss on the window's records since
    the segment began (or since its last move), if that beats the current state's own
    prequential loss on the same records: both are out-of-sample (the current state was
    trained on those records only after predicting each), where the current state's loss
    *after* training on the window would favour it whatever the concept (with fewer records
    than parameters it fits them exactly)."""
    lib, fam, a = lrn.concepts, lrn.family, lrn.arena
    assert lib is not None and fam is not None
    stored = lib.fitting(s, fam.n_params)
    if stored is None:
        return
    k = a.WM.shape[1]
    m = min(int(a.seg_len[s]) - lib.since.get(s, 0), k)
    if m < MIN_RECORDS:  # too few records to move on (the test in choose): no scoring
        return
    ratio = REUSE_RATIO[lrn.task]
    if hasattr(fam, "layers"):  # a built-in family: scored by the kernel's own rules
        sc = Scratch(*lrn.scratch)
        best = int(choose(stored, a.WX[s], a.WY[s], a.WM[s], a.WL[s], int(a.wpos[s]), m,
                          ratio, tuple(lrn.net), sc.acts, sc.zs, sc.window))
    else:
        best = _module_choice(lrn, stored, s, m, ratio)
    if best >= 0:
        a.theta[s] = stored[best]
        if lib.moved(s, int(a.seg_len[s])):  # counted once per segment
            lrn.totals.concept_reuses += 1


def _recent(WM: np.ndarray, wpos: int, m: int) -> np.ndarray:
    """Window positions of the last ``m`` records (newest first) that hold one."""
    k = len(WM)
    recent = (wpos - 1 - np.arange(m)) % k
    return recent[WM[recent] > 0]


def _module_choice(lrn: AdaptiveLearner, stored: np.ndarray, s: int, m: int, ratio: float
                   ) -> int:
    """:func:`choose` for a user module's family, through its NumPy ``forward``."""
    a = lrn.arena
    recent = _recent(a.WM[s], int(a.wpos[s]), m)
    if len(recent) < MIN_RECORDS:
        return -1
    loss = _module_losses(lrn, stored, a.WX[s, recent], a.WY[s, recent])
    best = int(np.argmin(loss))
    return best if loss[best] < ratio * float(a.WL[s, recent].mean()) else -1


def _module_losses(lrn: AdaptiveLearner, stored: np.ndarray, X: np.ndarray, y: np.ndarray
                   ) -> np.ndarray:
    """Each stored state's mean loss on the records ``X`` ``(m, d)``, ``y`` (inf where not
    finite), through the family's ``forward``."""
    fam = lrn.family
    assert fam is not None
    R = len(stored)
    with np.errstate(all="ignore"):  # losses only: no gradient is needed
        out = fam.forward(stored, np.repeat(X[None], R, axis=0))
        # A multi-class loss takes labels shaped as the outputs; squared error and log loss
        # broadcast one row of labels over the R states (the same values).
        loss = (multiclass_loss(out, np.broadcast_to(y, (R, len(y)))) if out.ndim == 3
                else pointwise_loss(lrn.task, out, y)).mean(axis=1)
    return np.where(np.isfinite(loss), loss, np.inf)


@njit(nogil=True)
def choose(states, X, Y, WM, WL, wpos, m, ratio, net, acts, zs, seen):  # type: ignore[no-untyped-def]
    """:func:`adaptd.learner.reuse.choose_in` from Python: the stored state of ``states``
    ``(n, P)`` to move to, or −1 (``net``: a plain tuple of the
    :class:`~adaptd.learner.network.Net`; ``seen``: working space of the window's length)."""
    return choose_in(states, states.shape[0], X, Y, WM, WL, wpos, m, ratio, Net(*net), acts,
                     zs, seen)
