"""The synthetic streams: deterministic, resumable at any record, per-key tasks, the stated
distributions, river's FriedmanDrift, and options that fail naming themselves."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from river.datasets.synth import FriedmanDrift

from adaptd.connectors.registry import open_source
from adaptd.connectors.synthetic import STREAMS, generate
from adaptd.connectors.synthetic_streams import (
    BLOCK_RECORDS,
    LinearTasks,
    LinearTasksOptions,
    Sinusoid,
    SinusoidOptions,
    TaskSwitcher,
    friedman_seed,
)
from adaptd.errors import ConfigError

NAMES = sorted(STREAMS)
#: Friedman's default drift positions depend on n; fixing them makes n a pure cut.
FIXED = {"friedman": {"position": (300, 600, 900)}}


def records(name: str, **options: object) -> list[dict]:
    return list(generate(name, **{**FIXED.get(name, {}), **options}))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", NAMES)
def test_a_seed_fixes_the_stream(name: str) -> None:
    first = records(name, seed=11, n=1500, keys=3)
    assert first == records(name, seed=11, n=1500, keys=3)
    assert first != records(name, seed=12, n=1500, keys=3)
    assert len(first) == 1500
    assert {r["key"] for r in first} == {"k0", "k1", "k2"}
    assert all(sorted(r) == ["key", "task", "x", "y"] for r in first)


@pytest.mark.parametrize("name", NAMES)
def test_n_only_cuts_the_unbounded_stream(name: str) -> None:
    unbounded = generate(name, seed=5, keys=2, **FIXED.get(name, {}))  # type: ignore[arg-type]
    head = list(itertools.islice(unbounded, 2 * BLOCK_RECORDS + 10))
    assert records(name, seed=5, keys=2, n=len(head)) == head
    assert records(name, seed=5, keys=2, n=7) == head[:7]
    assert records(name, seed=5, keys=2, n=0) == []


@pytest.mark.parametrize("name", NAMES)
def test_starting_at_a_record_yields_exactly_the_rest(name: str) -> None:
    n = 3 * BLOCK_RECORDS + 100
    full = records(name, seed=3, n=n, keys=4)
    for start in (1, 17, BLOCK_RECORDS - 1, BLOCK_RECORDS, BLOCK_RECORDS + 1, 2500, n - 1, n, n + 5):
        assert records(name, seed=3, n=n, keys=4, start=start) == full[start:], start


@pytest.mark.parametrize("name", NAMES)
def test_the_connector_serves_the_same_records(name: str) -> None:
    extra = "&position=300,600,900" if name == "friedman" else ""
    source = open_source(f"synthetic:{name}?seed=9&n=1200&keys=2{extra}")
    source.open({0: 1000})
    got = []
    while not source.exhausted:
        got += source.poll(64, 0.1)
    source.close()
    assert [r.position for r in got] == list(range(1000, 1200))
    assert [json.loads(r.value) for r in got] == records(name, seed=9, n=1200, keys=2)[1000:]
    assert all(r.key == json.loads(r.value)["key"].encode() for r in got)


@pytest.mark.parametrize("name", NAMES)
def test_each_key_has_its_own_task_sequence(name: str) -> None:
    options = {"hazard": 0.02} if name != "friedman" else {}
    stream = records(name, seed=2, n=8000, keys=4, **options)
    switches = {}
    for key in ("k0", "k1", "k2", "k3"):
        tasks = [r["task"] for r in stream if r["key"] == key]
        assert tasks[0] == 0
        steps = np.diff(tasks)
        assert set(steps.tolist()) <= {0, 1}, "a key's task index must count up by one"
        assert tasks[-1] >= 2
        switches[key] = tuple(np.flatnonzero(steps))
    if name != "friedman":  # FriedmanDrift drifts at the same per-key counts by design
        assert len(set(switches.values())) == 4, "keys switch tasks independently"


def test_task_switcher_counts_per_key_across_blocks() -> None:
    rng = np.random.default_rng(0)
    switcher = TaskSwitcher(keys=5)
    current = [0] * 5
    seen = [False] * 5
    for _ in range(20):
        keys = rng.integers(0, 5, 50)
        switch = rng.random(50) < 0.3
        got = switcher.assign(keys, switch)
        # The obvious per-record loop, which the vectorised version must agree with.
        want = []
        for k, s in zip(keys.tolist(), switch.tolist(), strict=True):
            if s and seen[k]:
                current[k] += 1
            seen[k] = True
            want.append(current[k])
        assert got.tolist() == want


@pytest.mark.parametrize(("name", "hazard"), [("sinusoid", 0.01), ("linear-tasks", 0.005)])
def test_tasks_change_at_the_hazard_rate(name: str, hazard: float) -> None:
    n = 200_000
    stream = generate(name, seed=4, n=n) if name == "sinusoid" else generate(name, seed=4, n=n, d=2)
    tasks = 1 + max(r["task"] for r in stream)
    # Switches are Binomial(n - 1, hazard): allow 5 standard deviations.
    expected = 1 + (n - 1) * hazard
    assert abs(tasks - expected) < 5 * math.sqrt(n * hazard * (1 - hazard))


def test_sinusoid_follows_its_definition() -> None:
    options = SinusoidOptions(seed=21, keys=3, hazard=0.05)
    family = Sinusoid(options)
    stream = list(generate("sinusoid", seed=21, n=40_000, keys=3, hazard=0.05))
    x = np.array([r["x"][0] for r in stream])
    y = np.array([r["y"] for r in stream])
    pairs = [(int(r["key"][1:]), r["task"]) for r in stream]
    table = {pair: family.task_params(*pair) for pair in set(pairs)}
    params = np.array([table[pair] for pair in pairs])
    assert x.min() >= -5 and x.max() <= 5 and x.min() < -4.9 and x.max() > 4.9
    amplitude, phase = params[:, 0], params[:, 1]
    assert amplitude.min() >= 0.1 and amplitude.max() <= 5
    assert phase.min() >= 0 and phase.max() <= math.pi
    residual = y - amplitude * np.sin(x + phase)
    assert abs(residual.mean()) < 0.01
    assert residual.var() == pytest.approx(0.05, rel=0.05)


def test_linear_tasks_follow_their_definition() -> None:
    options = LinearTasksOptions(seed=8, d=6, spread=2.0, noise=0.3, hazard=0.01)
    family = LinearTasks(options)
    stream = list(generate("linear-tasks", seed=8, n=30_000, d=6, spread=2.0, noise=0.3,
                           hazard=0.01))
    x = np.array([r["x"] for r in stream])
    assert x.shape == (30_000, 6)
    assert x.mean(axis=0) == pytest.approx(np.zeros(6), abs=0.05)
    assert x.std(axis=0) == pytest.approx(np.ones(6), rel=0.05)
    table = {t: family.task_params(0, t) for t in {r["task"] for r in stream}}
    weights = np.array([table[r["task"]] for r in stream])
    residual = np.array([r["y"] for r in stream]) - np.einsum("ij,ij->i", x, weights)
    assert residual.std() == pytest.approx(0.3, rel=0.05)
    # Tasks spread around the shared mean, widely along the first axis, little along the last.
    per_task = np.array([family.task_params(0, t) for t in range(2000)]) - family.mean_weights
    assert per_task.std(axis=0) == pytest.approx(2.0 * np.geomspace(1, 0.05, 6), rel=0.1)


def test_friedman_with_one_key_is_rivers_friedman_drift() -> None:
    ours = records("friedman", seed=42, n=400, drift_type="gra", position=(100, 250))
    theirs = FriedmanDrift(drift_type="gra", position=(100, 250), transition_window=0, seed=42)
    for record, (x, y) in zip(ours, theirs.take(400), strict=True):
        assert record["x"] == list(x.values())
        assert record["y"] == y
    assert [r["task"] for r in ours] == [0] * 100 + [1] * 150 + [2] * 150


def test_friedman_keys_use_their_own_generators() -> None:
    ours = records("friedman", seed=1, n=300, keys=2, position=(50, 100, 150))
    k1 = [r for r in ours if r["key"] == "k1"]
    theirs = FriedmanDrift(position=(50, 100, 150), seed=friedman_seed(1, 1))
    assert [r["y"] for r in k1] == [y for _, y in theirs.take(len(k1))]


def test_friedman_drift_positions_scale_to_n() -> None:
    tasks = [r["task"] for r in generate("friedman", seed=0, n=400)]
    assert [tasks.index(t) for t in (1, 2, 3)] == [100, 200, 300]
    tasks = [r["task"] for r in generate("friedman", seed=0, n=300, drift_type="gsg")]
    assert [tasks.index(t) for t in (1, 2)] == [100, 200]


@pytest.mark.parametrize(
    ("call", "names"),
    [
        (lambda: generate("nope"), "nope"),
        (lambda: generate("sinusoid", n=-1), "n must be >= 0"),
        (lambda: generate("sinusoid", seed=-1), "seed"),
        (lambda: generate("sinusoid", hazard=0.0), "hazard"),
        (lambda: generate("sinusoid", hazard=1.0), "hazard"),
        (lambda: generate("linear-tasks", hazard=1.5), "hazard"),
        (lambda: generate("sinusoid", keys=0), "keys"),
        (lambda: generate("sinusoid", d=3), "'d'"),
        (lambda: generate("friedman", hazard=0.1), "'hazard'"),
        (lambda: generate("friedman", position=(10, 20)), "position"),
        (lambda: generate("friedman", position=(30, 20, 40)), "position"),
        (lambda: generate("friedman", drift_type="xyz"), "drift_type"),
        (lambda: generate("friedman", transition_window=5), "transition_window"),
        (lambda: generate("linear-tasks", d=0), "d must"),
    ],
)
def test_bad_options_raise_config_errors_naming_them(call: object, names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        call()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("uri", "names"),
    [
        ("synthetic:nope?seed=1", "nope"),
        ("synthetic:sinusoid?hazard=2", "hazard"),
        ("synthetic:sinusoid?n=-5", "n must be >= 0"),
        ("synthetic:sinusoid?n=many", "'n'"),
        ("synthetic:sinusoid?seed=1&seed=2", "seed"),
        ("synthetic:friedman?drift_type=abc", "drift_type"),
        ("synthetic:linear-tasks?spread=-1", "spread"),
    ],
)
def test_bad_uris_fail_when_the_source_is_built(uri: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        open_source(uri)


def test_a_single_partition_source_refuses_other_partitions() -> None:
    source = open_source("synthetic:sinusoid?n=10")
    with pytest.raises(ConfigError, match=r"partition 0.*\[3\]"):
        source.open({3: 5})
