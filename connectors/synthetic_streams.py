"""The stream families behind ``synthetic:``: their options and their record generators.

Each generator is a pure function of its options and the start position; the module docstring
of :mod:`adaptd.connectors.synthetic` describes the streams and cites their sources.
"""

from __future__ import annotations

import bisect
import itertools
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

#: Records drawn per numpy call. Part of the streams' definition: changing it changes them.
BLOCK_RECORDS = 1024

Record = dict[str, Any]


# --- options --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamOptions:
    """Options every stream takes. ``__post_init__`` raises ``ValueError`` naming the option."""

    seed: int = 0
    n: int | None = None
    keys: int = 1

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.n is not None and self.n < 0:
            raise ValueError(f"n must be >= 0 (or absent for an unbounded stream), got {self.n}")
        if self.keys < 1:
            raise ValueError(f"keys must be >= 1, got {self.keys}")


@dataclass(frozen=True)
class SinusoidOptions(StreamOptions):
    """``sinusoid`` options: ``hazard`` is the per-record probability of a new task."""

    hazard: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_hazard(self.hazard)


@dataclass(frozen=True)
class LinearTasksOptions(StreamOptions):
    """``linear-tasks`` options.

    Args:
        hazard: per-record probability of a new task (mean segment length ``1/hazard``).
        d: number of features.
        spread: scale of the per-task deviation of the weights from their mean.
        noise: standard deviation of the label noise.
    """

    hazard: float = 0.005
    d: int = 30
    spread: float = 1.0
    noise: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_hazard(self.hazard)
        if self.d < 1:
            raise ValueError(f"d must be >= 1, got {self.d}")
        if not self.spread >= 0:
            raise ValueError(f"spread must be >= 0, got {self.spread}")
        if not self.noise >= 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")


@dataclass(frozen=True)
class FriedmanOptions(StreamOptions):
    """``friedman`` options (see river's ``FriedmanDrift``).

    Args:
        drift_type: ``lea`` (local expanding abrupt, 3 drifts), ``gra`` (global recurring
            abrupt, 2 drifts) or ``gsg`` (global slow gradual, 2 drifts).
        position: per-key record counts at which drifts happen, increasing; ``None`` spreads
            them over ``n / keys`` when ``n`` is given, else uses 1000, 2000(, 3000).
        transition_window: ``gsg`` only: records over which old and new concepts mix;
            ``None`` means a quarter of the shortest segment.
    """

    drift_type: Literal["lea", "gra", "gsg"] = "lea"
    position: tuple[int, ...] | None = None
    transition_window: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.drift_type not in ("lea", "gra", "gsg"):
            raise ValueError(f"drift_type must be one of lea, gra, gsg, got {self.drift_type!r}")
        if self.position is not None:
            wanted = self.drift_count
            if len(self.position) != wanted:
                raise ValueError(
                    f"position must have {wanted} drift positions for drift_type="
                    f"{self.drift_type}, got {len(self.position)}"
                )
            if self.position[0] < 1 or any(
                b <= a for a, b in itertools.pairwise(self.position)
            ):
                raise ValueError(
                    f"position must be increasing positive record counts, got {self.position}"
                )
        if self.transition_window is not None:
            if self.transition_window < 0:
                raise ValueError(f"transition_window must be >= 0, got {self.transition_window}")
            if self.drift_type != "gsg":
                raise ValueError("transition_window applies to drift_type=gsg only")

    @property
    def drift_count(self) -> int:
        return 3 if self.drift_type == "lea" else 2

    def drift_positions(self) -> tuple[int, ...]:
        """The positions used: given, scaled to the records per key, or the defaults."""
        if self.position is not None:
            return tuple(self.position)
        count = self.drift_count
        if self.n is None:
            return tuple(1000 * (i + 1) for i in range(count))
        per_key = self.n / self.keys
        positions: list[int] = []
        for i in range(count):
            evenly = round(per_key * (i + 1) / (count + 1))
            positions.append(max(evenly, positions[-1] + 1 if positions else 1))
        return tuple(positions)

    def window(self) -> int:
        if self.drift_type != "gsg":
            return 0
        if self.transition_window is not None:
            return self.transition_window
        positions = self.drift_positions()
        return min(b - a for a, b in itertools.pairwise(positions)) // 4


def _check_hazard(hazard: float) -> None:
    if not 0 < hazard < 1:
        raise ValueError(f"hazard must be in (0, 1), got {hazard}")


# --- shared machinery -----------------------------------------------------------------------


def _stream_id(name: str) -> int:
    """A number that keeps different streams with the same seed apart."""
    return zlib.crc32(name.encode())


def _rng(*entropy: int) -> np.random.Generator:
    """A generator seeded from a tuple of non-negative integers (a numpy SeedSequence)."""
    return np.random.default_rng(list(entropy))


# Entropy tags: what a generator is for. Task parameters come from their own generator per
# (key, task), so they do not depend on how the stream is cut into blocks or where it resumes.
_TAG_BLOCK, _TAG_TASK, _TAG_SHARED = 0, 1, 2


def key_names(keys: int) -> list[str]:
    """``["k0", …, "k{keys-1}"]``."""
    return [f"k{i}" for i in range(keys)]


def _draw_keys(rng: np.random.Generator, keys: int, size: int) -> np.ndarray:
    if keys == 1:
        return np.zeros(size, dtype=np.int64)
    return rng.integers(0, keys, size, dtype=np.int64)


class TaskSwitcher:
    """Numbers the tasks of each key as records arrive: the per-key state of a stream.

    A record whose switch flag is set starts a new task for its key, except the key's very
    first record (task 0 must not be empty).
    """

    def __init__(self, keys: int) -> None:
        self.current = np.zeros(keys, dtype=np.int64)
        self.seen = np.zeros(keys, dtype=bool)

    def assign(self, keys: np.ndarray, switch: np.ndarray) -> np.ndarray:
        """Task index of each record. ``keys``, ``switch``: shape (B,); returns shape (B,)."""
        # Group the block by key (stable, so each key's records stay in order), then count
        # switches within each group: a vectorised per-key cumulative sum.
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        steps = switch[order].astype(np.int64)
        first = np.ones(len(sorted_keys), dtype=bool)
        first[1:] = sorted_keys[1:] != sorted_keys[:-1]
        steps[first & ~self.seen[sorted_keys]] = 0
        counted = np.cumsum(steps)
        starts = np.flatnonzero(first)
        group = np.cumsum(first) - 1
        before_group = counted[starts] - steps[starts]
        sorted_tasks = self.current[sorted_keys] + counted - before_group[group]
        ends = np.append(starts[1:] - 1, len(sorted_keys) - 1)
        self.current[sorted_keys[ends]] = sorted_tasks[ends]
        self.seen[sorted_keys[starts]] = True
        tasks = np.empty_like(sorted_tasks)
        tasks[order] = sorted_tasks
        return tasks


class _TaskFamily(Protocol):
    """One task-switching stream: how tasks and records are drawn."""

    name: str
    hazard: float

    def task_params(self, key: int, task: int) -> np.ndarray:
        """Parameters of one task of one key, shape (P,): a pure function of (seed, key, task)."""
        ...

    def draw(
        self, rng: np.random.Generator, params: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Features (B, d) and labels (B,) for a block, given each record's task params (B, P)."""
        ...


def _task_switching(family: _TaskFamily, options: StreamOptions, start: int) -> Iterator[Record]:
    """Records ``start, start+1, …`` (up to ``options.n``) of a task-switching stream.

    Each block of :data:`BLOCK_RECORDS` draws from its own generator: first the keys and the
    switch flags (all that the task numbering depends on), then the features and noise. A
    block before ``start`` therefore only draws its keys and switches.
    """
    sid = _stream_id(family.name)
    names = key_names(options.keys)
    switcher = TaskSwitcher(options.keys)
    # key → (task, its parameters) of the latest task seen: tasks only count up.
    latest: dict[int, tuple[int, np.ndarray]] = {}
    stop = math.inf if options.n is None else options.n
    for block in itertools.count():
        first = block * BLOCK_RECORDS
        if first >= stop:
            return
        rng = _rng(options.seed, sid, _TAG_BLOCK, block)
        keys = _draw_keys(rng, options.keys, BLOCK_RECORDS)
        switch = rng.random(BLOCK_RECORDS) < family.hazard
        tasks = switcher.assign(keys, switch)
        if first + BLOCK_RECORDS <= start:
            continue
        # One parameter row per (key, task) pair in the block, in increasing task order.
        pairs, inverse = np.unique(tasks * options.keys + keys, return_inverse=True)
        rows = []
        for pair in pairs.tolist():
            key, task = pair % options.keys, pair // options.keys
            known = latest.get(key)
            if known is not None and known[0] == task:
                row = known[1]
            else:
                row = family.task_params(key, task)
                latest[key] = (task, row)
            rows.append(row)
        x, y = family.draw(rng, np.stack(rows)[inverse])
        lo = max(start - first, 0)
        hi = int(min(BLOCK_RECORDS, stop - first))
        key_list, x_list, y_list, task_list = (
            keys[lo:hi].tolist(), x[lo:hi].tolist(), y[lo:hi].tolist(), tasks[lo:hi].tolist()
        )
        for k, xi, yi, ti in zip(key_list, x_list, y_list, task_list, strict=True):
            yield {"key": names[k], "x": xi, "y": yi, "task": ti}


# --- the streams ----------------------------------------------------------------------------

#: Label noise variance of ``sinusoid``.
SINUSOID_NOISE_VARIANCE = 0.05


class Sinusoid:
    """The ``sinusoid`` task family."""

    name = "sinusoid"

    def __init__(self, options: SinusoidOptions) -> None:
        self.seed = options.seed
        self.hazard = options.hazard
        self.sid = _stream_id(self.name)

    def task_params(self, key: int, task: int) -> np.ndarray:
        """``[A, φ]`` with ``A ~ U[0.1, 5]``, ``φ ~ U[0, π]``."""
        rng = _rng(self.seed, self.sid, _TAG_TASK, key, task)
        return np.array([rng.uniform(0.1, 5.0), rng.uniform(0.0, math.pi)])

    def draw(
        self, rng: np.random.Generator, params: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        size = len(params)
        x = rng.uniform(-5.0, 5.0, size)
        noise = rng.normal(0.0, math.sqrt(SINUSOID_NOISE_VARIANCE), size)
        y = params[:, 0] * np.sin(x + params[:, 1]) + noise
        return x[:, None], y


class LinearTasks:
    """The ``linear-tasks`` task family."""

    name = "linear-tasks"

    def __init__(self, options: LinearTasksOptions) -> None:
        self.seed = options.seed
        self.hazard = options.hazard
        self.noise = options.noise
        self.sid = _stream_id(self.name)
        d = options.d
        self.mean_weights = _rng(self.seed, self.sid, _TAG_SHARED, d).standard_normal(d)
        self.scales = options.spread * np.geomspace(1.0, 0.05, d)

    def task_params(self, key: int, task: int) -> np.ndarray:
        """Weights ``w̄ + spread·s ⊙ z``, shape (d,)."""
        rng = _rng(self.seed, self.sid, _TAG_TASK, key, task)
        return self.mean_weights + self.scales * rng.standard_normal(len(self.scales))

    def draw(
        self, rng: np.random.Generator, params: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        x = rng.standard_normal(params.shape)
        y = np.einsum("ij,ij->i", x, params) + rng.normal(0.0, self.noise, len(params))
        return x, y


def sinusoid_records(options: SinusoidOptions, start: int = 0) -> Iterator[Record]:
    return _task_switching(Sinusoid(options), options, start)


def linear_tasks_records(options: LinearTasksOptions, start: int = 0) -> Iterator[Record]:
    return _task_switching(LinearTasks(options), options, start)


def friedman_seed(seed: int, key: int) -> int:
    """The river seed of key ``key``'s generator: ``seed`` itself for key 0."""
    if key == 0:
        return seed
    state = np.random.SeedSequence([seed, _stream_id("friedman"), _TAG_TASK, key])
    return int(state.generate_state(1)[0])


def friedman_records(options: FriedmanOptions, start: int = 0) -> Iterator[Record]:
    # river is imported here: it is slow to import and only this stream needs it.
    from river.datasets.synth import FriedmanDrift

    positions = options.drift_positions()
    window = options.window()
    generators = [
        iter(
            FriedmanDrift(
                drift_type=options.drift_type,
                position=positions,
                transition_window=window,
                seed=friedman_seed(options.seed, key),
            )
        )
        for key in range(options.keys)
    ]
    names = key_names(options.keys)
    counts = [0] * options.keys
    sid = _stream_id("friedman")
    stop = math.inf if options.n is None else options.n
    index = 0
    for block in itertools.count():
        rng = _rng(options.seed, sid, _TAG_BLOCK, block)
        for key in _draw_keys(rng, options.keys, BLOCK_RECORDS).tolist():
            if index >= stop:
                return
            x, y = next(generators[key])
            count = counts[key]
            counts[key] = count + 1
            if index >= start:
                task = bisect.bisect_right(positions, count)
                yield {"key": names[key], "x": list(x.values()), "y": y, "task": task}
            index += 1
