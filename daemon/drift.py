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

from typing import Any, Literal, Protocol

import numpy as np

from adaptd.settings import DriftConfig


#: ``ph_relative`` when unset, by task, and ``ph_threshold`` when unset, by relative mode (see
#: :class:`DriftConfig`).
DEFAULT_PH_RELATIVE = {"regression": True, "classification": False}
DEFAULT_PH_THRESHOLD = {True: 20.0, False: 50.0}
#: Relative mode: scales below this count as this (a model fitting exactly), and a loss counts
#: at most this many times the scale, so that one outlier cannot overflow the statistics.
SCALE_FLOOR = 1e-12
RELATIVE_CAP = 1e6




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


class PageHinkleyBank:
    """river's Page-Hinkley test over arrays: one column per slot.

    Per value x (river's update, ``river/drift/page_hinkley.py``)::

        x = x / scale  if relative (scale: mean of the raw values before x; the first x is 1)
        mean += (x - mean) / n
        up    = α·up   + (x - mean) - δ;   min_up   = min(min_up, up)
        down  = α·down + (x - mean) + δ;   max_down = max(max_down, down)
        alarm = n >= min_instances and (up - min_up > λ  [mode up] / max_down - down > λ  [down])
    """

    _FIELDS = ("n", "mean", "up", "down", "min_up", "max_down", "scale", "alarm")

    def __init__(self, config: DriftConfig, capacity: int = 0) -> None:
        # The learner resolves unset options by task; standing alone, unset means river's test.
        self.relative = bool(config.ph_relative)
        self.threshold = DEFAULT_PH_THRESHOLD[self.relative] \
            if config.ph_threshold is None else config.ph_threshold
        self.delta = config.ph_delta
        self.alpha = config.ph_alpha
        self.min_instances = config.ph_min_instances
        self.mode = config.ph_mode
        self.scale = np.zeros(0)
        self.n = np.zeros(0)
        self.mean = np.zeros(0)
        self.up = np.zeros(0)
        self.down = np.zeros(0)
        self.min_up = np.zeros(0)
        self.max_down = np.zeros(0)
        self.alarm = np.zeros(0, dtype=bool)
        self.grow(capacity)

    def grow(self, capacity: int) -> None:
        old = len(self.n)
        if capacity <= old:
            return
        for name in self._FIELDS:
            arr = getattr(self, name)
            new = np.zeros(capacity, dtype=arr.dtype)
            new[:old] = arr
            setattr(self, name, new)
        self.reset(np.arange(old, capacity))

    def reset(self, slots: np.ndarray) -> None:
        self.n[slots] = 0.0
        self.mean[slots] = 0.0
        self.up[slots] = 0.0
        self.down[slots] = 0.0
        self.min_up[slots] = np.inf
        self.max_down[slots] = -1.0  # river starts it at -1, not -inf
        self.scale[slots] = 0.0
        self.alarm[slots] = False

    def update(self, slots: np.ndarray, values: np.ndarray) -> np.ndarray:
        latched = self.alarm[slots]
        if latched.any():
            live = ~latched
            s, x = slots[live], values[live]
        else:
            s, x = slots, values
        n = self.n[s] + 1.0
        if self.relative:
            scale = self.scale[s]
            self.scale[s] = scale + (x - scale) / n
            x = np.where(n > 1.0, np.minimum(x / np.maximum(scale, SCALE_FLOOR), RELATIVE_CAP),
                         1.0)
        mean_old = self.mean[s]
        mean = mean_old + (x - mean_old) / n
        dev = x - mean
        fire: np.ndarray | bool = False
        if self.mode != "down":
            up = self.alpha * self.up[s] + (dev - self.delta)
            min_up = np.minimum(self.min_up[s], up)
            self.up[s], self.min_up[s] = up, min_up
            fire = up - min_up > self.threshold
        if self.mode != "up":
            down = self.alpha * self.down[s] + (dev + self.delta)
            max_down = np.maximum(self.max_down[s], down)
            self.down[s], self.max_down[s] = down, max_down
            fire = fire | (max_down - down > self.threshold)
        self.n[s], self.mean[s] = n, mean
        self.alarm[s] = (n >= self.min_instances) & fire
        return self.alarm[slots]

    def get_state(self, slot: int) -> Any:
        return {name: getattr(self, name)[slot].item() for name in self._FIELDS}

    def set_state(self, slot: int, state: Any) -> None:
        for name in self._FIELDS:
            getattr(self, name)[slot] = state[name]


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

