"""The benchmark's measures on hand-made streams whose answers are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from adaptd.bench.measures import (
    detection,
    hindsight_losses,
    loss_by_bucket,
    record_losses,
    recovery,
    structure,
)
from adaptd.bench.streams import StreamData, identity_basis


def _stream(keys: list[str], tasks: list[int], X: np.ndarray | None = None,
            y: np.ndarray | None = None) -> StreamData:
    n = len(keys)
    X = np.zeros((n, 1)) if X is None else X
    y = np.zeros(n) if y is None else y
    return StreamData.from_dicts(
        {"key": k, "x": list(x), "y": float(v), "task": t}
        for k, t, x, v in zip(keys, tasks, X, y, strict=True)
    )


def test_structure_counts_changes_per_key() -> None:
    # Key a: tasks 0 0 1 1; key b: 5 5 5 (its first record is no change).
    data = _stream(["a", "b", "a", "b", "a", "a", "b"], [0, 5, 0, 5, 1, 1, 5])
    s = structure(data)
    assert s.change_positions.tolist() == [4]
    assert s.since_change.tolist() == [0, 0, 1, 1, 0, 1, 2]
    assert s.key_position.tolist() == [0, 0, 1, 1, 2, 3, 2]
    assert len(set(s.segment.tolist())) == 3
    assert s.n_keys == 2


def test_detection_delay_missed_and_false_alarms() -> None:
    # One key, changes at records 10 and 20; alarms at 3 (false), 12 (delay 2), 14 (false).
    data = _stream(["k"] * 30, [0] * 10 + [1] * 10 + [2] * 10)
    s = structure(data)
    alarms = np.zeros(30, dtype=bool)
    alarms[[3, 12, 14]] = True
    delay, missed_10k, missed_share, false_10k = detection(alarms, s, 30)
    assert delay == 2.0
    assert missed_share == 0.5  # the change at 20 has no alarm before the stream ends
    assert missed_10k == pytest.approx(10_000 / 30)
    assert false_10k == pytest.approx(2 * 10_000 / 30)


def test_recovery_is_first_window_below_twice_the_floor() -> None:
    data = _stream(["k"] * 40, [0] * 20 + [1] * 20)
    s = structure(data)
    excess = np.ones(40)
    # Samples 0-7 after the change cost 5; the mean of samples k-4..k first falls below
    # 2 × 0.6 when the window holds just one of them: k = 11 (mean 1.0).
    excess[20:28] = 5.0
    excess[28:] = 0.0
    median, share = recovery(excess, s, noise_floor=0.6)
    assert (median, share) == (11.0, 1.0)
    # A floor nothing ever gets under: censored at the segment's length, none recovered.
    assert recovery(excess, s, noise_floor=-1.0) == (20.0, 0.0)


def test_hindsight_fit_is_exact_on_noiseless_segments() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2))
    w = np.where(np.arange(60)[:, None] < 30, [1.0, -2.0], [3.0, 0.5])
    y = (X * w).sum(axis=1) + 0.25
    data = _stream(["k"] * 60, [0] * 30 + [1] * 30, X, y)
    losses = hindsight_losses("regression", identity_basis, data, structure(data).segment)
    assert losses.max() < 1e-6


def test_log_loss_is_clipped_and_buckets_average() -> None:
    losses = record_losses("classification", np.array([1.0, 0.0]), np.array([0.0, 0.5]))
    assert losses[0] == pytest.approx(-np.log(1e-6))
    assert losses[1] == pytest.approx(np.log(2))
    since = np.array([0, 1, 7, 600])
    assert loss_by_bucket(np.array([1.0, 3.0, 4.0, 8.0]), since) == [2.0, 4.0, None, None, 8.0]
