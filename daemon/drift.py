"""Drift detection on each key's loss: one small protocol, one detector per key.

A :class:`DetectorBank` holds the detector state of every key's slot and is fed the losses
of many keys at once. The learner closes a key's segment on each alarm and then calls
:meth:`DetectorBank.reset`, which gives that slot a fresh detector.

Built-in detectors (``drift.detector``):

- ``page_hinkley`` (default): river's :class:`river.drift.PageHinkley` (Page 1954), one-sided
  (``mode="up"``) by default because a two-sided test fires on the loss *drop* that follows a
  good reset. Re-implemented over arrays so that thousands of keys update in one NumPy step;
  the unit tests pin it to river's own alarms, index for index.
- ``adwin`` / ``kswin``: river's :class:`~river.drift.ADWIN` (Bifet & Gavaldà 2007) and
  :class:`~river.drift.KSWIN` (Raab et al. 2020), one river object per key (slower: one Python
  call per loss).
- ``oracle``: closes a segment exactly when a record's ``task`` field changes (benchmarks,
  and ``meta-train`` on records that carry ``task``). Implemented by the learner, since it
  looks at records rather than losses.
- ``none``: never alarms.

Warm-up and latching are the bank's business, not the detector's: the first ``warmup``
losses of each segment are not shown to the detector (they are high while the new task
adapts from θ0, and would only inflate its running mean), and an alarm stays latched until
the learner resets the slot, so one change closes one segment.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numpy as np

from adaptd.learner.jit import njit
from adaptd.settings import DriftConfig

#: ``ph_relative`` when unset, by task, and ``ph_threshold`` when unset, by relative mode (see
#: :class:`DriftConfig`).
DEFAULT_PH_RELATIVE = {"regression": True, "classification": False}
DEFAULT_PH_THRESHOLD = {True: 20.0, False: 50.0}
#: Relative mode: scales below this count as this (a model fitting exactly), and a loss counts
#: at most this many times the scale, so that one outlier cannot overflow the statistics.
SCALE_FLOOR = 1e-12
RELATIVE_CAP = 1e6
#: ``drift.ph_mode`` as compiled code takes it: alarm on a rise, on a fall, or on both.
PH_UP, PH_DOWN, PH_BOTH = 0, 1, 2
PH_MODES = {"up": PH_UP, "down": PH_DOWN, "both": PH_BOTH}


class DetectorBank(Protocol):
    """Detector state for slots ``0 … capacity-1``. Called from the learner's thread only."""

    def update(self, slots: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Feed one value per slot (slots unique); returns the alarm flags ``(len(slots),)``.

        A slot whose alarm is latched ignores further values and keeps reporting the alarm.
        """
        ...

    def reset(self, slots: np.ndarray) -> None:
        """Fresh detectors for ``slots`` (alarm cleared)."""
        ...

    def grow(self, capacity: int) -> None:
        """Make room for slots up to ``capacity - 1``; new slots start fresh."""
        ...

    def get_state(self, slot: int) -> Any:
        """Picklable state of one slot."""
        ...

    def set_state(self, slot: int, state: Any) -> None:
        """Restore one slot from :meth:`get_state`'s output."""
        ...


class PHState(NamedTuple):
    """Page-Hinkley statistics, one entry per slot (what compiled code reads and writes)."""

    n: np.ndarray
    mean: np.ndarray
    up: np.ndarray
    down: np.ndarray
    min_up: np.ndarray
    max_down: np.ndarray
    scale: np.ndarray
    alarm: np.ndarray  # bool: latched until the slot is reset

    @classmethod
    def empty(cls, capacity: int) -> PHState:
        z = np.zeros
        state = cls(z(capacity), z(capacity), z(capacity), z(capacity), z(capacity), z(capacity),
                    z(capacity), z(capacity, dtype=bool))
        ph_reset(state, np.arange(capacity))
        return state


class PHParams(NamedTuple):
    """Page-Hinkley options, as compiled code takes them (``mode``: :data:`PH_MODES`)."""

    threshold: float
    delta: float
    alpha: float
    min_instances: float
    relative: bool
    mode: int

    @classmethod
    def of(cls, config: DriftConfig) -> PHParams:
        # The learner resolves unset options by task; standing alone, unset means river's test.
        relative = bool(config.ph_relative)
        threshold = DEFAULT_PH_THRESHOLD[relative] if config.ph_threshold is None \
            else config.ph_threshold
        return cls(float(threshold), float(config.ph_delta), float(config.ph_alpha),
                   float(config.ph_min_instances), relative, PH_MODES[config.ph_mode])


def ph_reset(state: PHState, slots: np.ndarray) -> None:
    """Fresh statistics for ``slots``."""
    # One slot (a drift alarm's reset) by its index: NumPy's fancy indexing costs more.
    where: int | np.ndarray = int(slots[0]) if len(slots) == 1 else slots
    for name in ("n", "mean", "up", "down", "scale"):
        getattr(state, name)[where] = 0.0
    state.min_up[where] = np.inf
    state.max_down[where] = -1.0  # river starts it at -1, not -inf
    state.alarm[where] = False


@njit(inline=True)
def ph_update(st, p, s, x):  # type: ignore[no-untyped-def]
    """Feed value ``x`` to slot ``s``'s test (Page 1954; river's update, see
    :class:`PageHinkleyBank`); latches and returns the alarm. The one implementation: the
    compiled kernel calls it per record, :class:`PageHinkleyBank` per batch of slots."""
    nn = st.n[s] + 1.0
    tested = nn  # values the test itself has seen, this one included
    if p.relative:
        scale = st.scale[s]
        st.scale[s] = scale + (x - scale) / nn
        # The first ``min_instances`` losses only set the scale: divided by the mean of one or
        # two losses (a near-exact fit after a reset gives ~0), a loss can come out as 10⁴,
        # and the test's running mean never forgets it, so every later rise, a sign flip's
        # included, reads as a fall (a y = ±Σx stream went without any alarm).
        if nn <= p.min_instances:
            st.n[s] = nn
            st.alarm[s] = False
            return False
        tested = nn - p.min_instances
        x = min(x / max(scale, SCALE_FLOOR), RELATIVE_CAP)
    mean = st.mean[s] + (x - st.mean[s]) / tested
    dev = x - mean
    fire = False
    if p.mode != PH_DOWN:
        up = p.alpha * st.up[s] + (dev - p.delta)
        st.up[s] = up
        st.min_up[s] = min(st.min_up[s], up)
        fire = up - st.min_up[s] > p.threshold
    if p.mode != PH_UP:
        down = p.alpha * st.down[s] + (dev + p.delta)
        st.down[s] = down
        st.max_down[s] = max(st.max_down[s], down)
        fire = fire or (st.max_down[s] - down > p.threshold)
    st.n[s] = nn
    st.mean[s] = mean
    # Relative mode counted its min_instances while learning the scale.
    st.alarm[s] = fire and (p.relative or nn >= p.min_instances)
    return st.alarm[s]


@njit()
def _ph_update_many(st, p, slots, values):  # type: ignore[no-untyped-def]
    for j in range(slots.shape[0]):
        if not st.alarm[slots[j]]:
            ph_update(st, p, slots[j], values[j])


class PageHinkleyBank:
    """river's Page-Hinkley test (Page 1954, "Continuous inspection schemes", Biometrika 41)
    over arrays: one entry per slot, updated by the compiled :func:`ph_update`.

    Per value x (river's update, ``river/drift/page_hinkley.py``)::

        x = x / scale  if relative (scale: mean of the raw values before x)
        mean += (x - mean) / n
        up    = α·up   + (x - mean) - δ;   min_up   = min(min_up, up)
        down  = α·down + (x - mean) + δ;   max_down = max(max_down, down)
        alarm = n >= min_instances and (up - min_up > λ  [mode up] / max_down - down > λ  [down])

    In relative mode the first ``min_instances`` values only set the scale, and the test (its
    ``n`` counting from the next value) starts after them.

    >>> bank = PageHinkleyBank(DriftConfig(ph_threshold=5.0, ph_relative=False), capacity=1)
    >>> hits = [i for i in range(60) if bank.update(np.array([0]), np.array([0.0 if i < 30
    ...         else 1.0]))[0]]
    >>> hits[0]
    35
    """

    def __init__(self, config: DriftConfig, capacity: int = 0) -> None:
        self.params = PHParams.of(config)
        self.state = PHState.empty(capacity)

    @property
    def alarm(self) -> np.ndarray:
        return self.state.alarm

    def grow(self, capacity: int) -> None:
        old = len(self.state.n)
        if capacity <= old:
            return
        new = PHState.empty(capacity)
        for mine, theirs in zip(self.state, new, strict=True):
            theirs[:old] = mine
        self.state = new

    def reset(self, slots: np.ndarray) -> None:
        ph_reset(self.state, slots)

    def update(self, slots: np.ndarray, values: np.ndarray) -> np.ndarray:
        _ph_update_many(self.state, self.params, slots, np.asarray(values, dtype=np.float64))
        return self.state.alarm[slots]

    def get_state(self, slot: int) -> Any:
        return {name: getattr(self.state, name)[slot].item() for name in PHState._fields}

    def set_state(self, slot: int, state: Any) -> None:
        for name in PHState._fields:
            getattr(self.state, name)[slot] = state[name]


class RiverBank:
    """One river detector object per slot (``adwin``, ``kswin``), behind the bank protocol."""

    def __init__(self, config: DriftConfig, capacity: int = 0) -> None:
        self.config = config
        self.detectors: list[Any] = []
        self.alarm = np.zeros(0, dtype=bool)
        self.grow(capacity)

    def _fresh(self, slot: int) -> Any:
        from river import drift

        c = self.config
        if c.detector == "adwin":
            return drift.ADWIN(delta=c.adwin_delta)
        if c.detector == "kswin":
            # Seeded per slot so that a key's alarms do not depend on which slot it got… as far
            # as possible: the seed is the config seed plus the slot.
            return drift.KSWIN(alpha=c.kswin_alpha, window_size=c.kswin_window_size,
                               stat_size=c.kswin_stat_size, seed=c.seed + slot)
        raise ValueError(f"RiverBank cannot build detector {c.detector!r}")

    def grow(self, capacity: int) -> None:
        old = len(self.detectors)
        if capacity <= old:
            return
        self.detectors.extend(self._fresh(s) for s in range(old, capacity))
        self.alarm = np.concatenate([self.alarm, np.zeros(capacity - old, dtype=bool)])

    def reset(self, slots: np.ndarray) -> None:
        for s in slots.tolist():
            self.detectors[s] = self._fresh(s)
        self.alarm[slots] = False

    def update(self, slots: np.ndarray, values: np.ndarray) -> np.ndarray:
        for s, x in zip(slots.tolist(), values.tolist()):
            if not self.alarm[s]:
                det = self.detectors[s]
                det.update(x)
                self.alarm[s] = det.drift_detected
        return self.alarm[slots].copy()

    def get_state(self, slot: int) -> Any:
        return {"detector": self.detectors[slot], "alarm": bool(self.alarm[slot])}

    def set_state(self, slot: int, state: Any) -> None:
        self.detectors[slot] = state["detector"]
        self.alarm[slot] = state["alarm"]


class NullBank:
    """Never alarms (``none``, and ``oracle`` whose alarms come from the records' task field)."""

    def __init__(self, config: DriftConfig | None = None, capacity: int = 0) -> None:
        pass

    def update(self, slots: np.ndarray, values: np.ndarray) -> np.ndarray:
        return np.zeros(len(slots), dtype=bool)

    def reset(self, slots: np.ndarray) -> None:
        pass

    def grow(self, capacity: int) -> None:
        pass

    def get_state(self, slot: int) -> Any:
        return None

    def set_state(self, slot: int, state: Any) -> None:
        pass


def build_bank(config: DriftConfig, capacity: int = 0) -> DetectorBank:
    """The detector bank ``config.detector`` names."""
    if config.detector == "page_hinkley":
        return PageHinkleyBank(config, capacity)
    if config.detector in ("adwin", "kswin"):
        return RiverBank(config, capacity)
    return NullBank(config, capacity)

