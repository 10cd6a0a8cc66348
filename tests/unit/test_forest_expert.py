"""The forest of ``benchmarks/forest_expert.py`` (the river Phishing study of issue #11): it
learns, and a key restored from its state mid-stream draws and predicts as one that never
stopped (its randomness is a hash of the state, not a generator)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import forest_expert


def _stream(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two keys' records, XOR of cuts on two of three features (no linear boundary)."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.uniform(0, 1, n), rng.uniform(0, 1000, n), rng.normal(size=n)])
    return X, ((X[:, 0] > 0.3) != (X[:, 1] > 600)).astype(float)


def _run(f: forest_expert.Forest, slots: np.ndarray, X: np.ndarray, y: np.ndarray
         ) -> np.ndarray:
    n = len(y)
    return f.run(slots, X, y, np.ones(n, dtype=bool), np.zeros(n, dtype=bool), 2)[:, 0]


@pytest.mark.parametrize("subspace", ["all", "sqrt"])
def test_learns_and_a_restored_key_continues_exactly(monkeypatch, subspace: str) -> None:
    monkeypatch.setattr(forest_expert, "SUBSPACE", subspace)
    X, y = _stream(3000, 0)
    slots = np.arange(3000, dtype=np.int64) % 2
    straight = forest_expert.Forest(3)
    straight.grow(2)
    p = _run(straight, slots, X, y)
    assert np.mean((p[2000:] >= 0.5) == (y[2000:] == 1)) > 0.9
    assert 0 < p.min() and p.max() < 1  # smoothed: a bounded log loss

    first = forest_expert.Forest(3)
    first.grow(2)
    _run(first, slots[:1500], X[:1500], y[:1500])
    restored = forest_expert.Forest(3)
    restored.grow(2)
    for s in (1, 0):  # another row order: the state alone decides
        restored.set_state(s, first.get_state(s))
    np.testing.assert_array_equal(_run(restored, slots[1500:], X[1500:], y[1500:]), p[1500:])


def test_the_trees_differ_and_a_salt_changes_the_draws(monkeypatch) -> None:
    X, y = _stream(1000, 1)
    slots = np.zeros(1000, dtype=np.int64)
    outs = []
    for salt in (1, 2):
        monkeypatch.setattr(forest_expert, "SALT", salt)
        f = forest_expert.Forest(3)
        f.grow(1)
        outs.append(_run(f, slots, X, y))
        weights = [float(f.trees.get_state(m)["cw"].sum()) for m in range(f.M)]
        assert len(set(weights)) > 1  # each tree drew its own Poisson weights
        assert abs(np.mean(weights) / 1000 - forest_expert.LAMBDA) < 0.5
    assert not np.array_equal(outs[0], outs[1])
