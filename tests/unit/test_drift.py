"""Drift detector banks: river's alarms index for index, warm-up, latching, fresh resets."""

from __future__ import annotations

import numpy as np
import pytest
from river import drift as river_drift

from adaptd.drift import NullBank, PageHinkleyBank, RiverBank, build_bank
from adaptd.settings import DriftConfig


def stream(seed: int, n: int = 1200, change_at: int = 600) -> np.ndarray:
    """Losses around 1 that jump to around 2 at ``change_at`` (seeded)."""
    rng = np.random.default_rng(seed)
    x = np.abs(1.0 + 0.5 * rng.normal(size=n))
    x[change_at:] += 1.0
    return x


def river_alarms(det, values) -> list[int]:
    out = []
    for i, v in enumerate(values):
        det.update(float(v))
        if det.drift_detected:
            out.append(i)
    return out


def bank_alarms(bank, values, slot: int = 0) -> list[int]:
    """Alarms of one slot, resetting after each as the learner does."""
    out = []
    slots = np.array([slot])
    for i, v in enumerate(values):
        if bank.update(slots, np.array([v]))[0]:
            out.append(i)
            bank.reset(slots)
    return out


@pytest.mark.parametrize("mode", ["up", "down", "both"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_page_hinkley_bank_is_river_index_for_index(mode, seed):
    cfg = DriftConfig(ph_threshold=25.0, ph_delta=0.005, ph_min_instances=30, ph_mode=mode,
                      ph_relative=False)
    values = np.concatenate([stream(seed), stream(seed + 10)[::-1]])
    expected = river_alarms(river_drift.PageHinkley(min_instances=30, delta=0.005,
                                                    threshold=25.0, mode=mode), values)
    assert bank_alarms(PageHinkleyBank(cfg, capacity=4), values, slot=2) == expected


def test_page_hinkley_exact_index_on_seeded_stream():
    cfg = DriftConfig(ph_threshold=25.0, ph_min_instances=30, ph_relative=False)
    assert bank_alarms(PageHinkleyBank(cfg, 1), stream(0)) == [622]


def test_one_sided_ignores_a_loss_drop():
    values = stream(0)[::-1]  # high losses first, then low: what follows a good reset
    assert bank_alarms(PageHinkleyBank(DriftConfig(ph_threshold=25.0, ph_relative=False), 1), values) == []
    both = DriftConfig(ph_threshold=25.0, ph_mode="both", ph_relative=False)
    assert bank_alarms(PageHinkleyBank(both, 1), values) != []


def test_many_slots_update_independently():
    cfg = DriftConfig(ph_threshold=25.0, ph_min_instances=30, ph_relative=False)
    bank = PageHinkleyBank(cfg, capacity=2)
    a, b = stream(0), stream(1, change_at=900)
    hits: dict[int, list[int]] = {0: [], 1: []}
    for i in range(len(a)):
        fired = bank.update(np.array([0, 1]), np.array([a[i], b[i]]))
        for slot in np.flatnonzero(fired):
            hits[int(slot)].append(i)
        bank.reset(np.flatnonzero(fired))
    assert hits[0] == bank_alarms(PageHinkleyBank(cfg, 1), a)
    assert hits[1] == bank_alarms(PageHinkleyBank(cfg, 1), b)


def test_alarm_latches_until_reset_and_reset_is_fresh():
    bank = PageHinkleyBank(DriftConfig(ph_threshold=25.0, ph_min_instances=30, ph_relative=False), 1)
    values = stream(0)
    s = np.array([0])
    first = next(i for i, v in enumerate(values) if bank.update(s, np.array([v]))[0])
    assert first == 622
    # Latched: low values do not clear it, and the statistics stop moving.
    state = bank.get_state(0)
    assert all(bank.update(s, np.array([0.0]))[0] for _ in range(5))
    assert bank.get_state(0) == state
    bank.reset(s)
    assert bank.get_state(0)["n"] == 0 and not bank.alarm[0]


def test_relative_mode_is_river_on_losses_over_their_running_mean():
    values = stream(3) * 7.0  # any scale
    # The first min_instances = 10 losses only set the scale; the test runs from the 11th.
    normalized, total = [], 0.0
    for i, v in enumerate(values):
        normalized.append(min(v / (total / i), 1e6) if i else 1.0)
        total += v
    expected = [10 + i for i in river_alarms(river_drift.PageHinkley(
        min_instances=1, threshold=10.0, mode="up", delta=0.005), normalized[10:700])]
    relative = DriftConfig(ph_threshold=10.0, ph_min_instances=10, ph_relative=True)
    got = bank_alarms(PageHinkleyBank(relative, 1), values[:700])
    assert got[:1] == expected[:1] and got[0] > 600  # the change at 600, not before
    # Scale-free: the same alarms whatever the unit of the loss.
    assert bank_alarms(PageHinkleyBank(relative, 1), values[:700] * 1e-4) == got


def test_relative_mode_is_not_blinded_by_a_near_exact_fit_at_its_start():
    # A fit almost exact at first (loss 1e-6) then ordinary (1): divided by the mean of the
    # first loss alone, the second came out as 10⁶ and the test's running mean stayed near
    # 10⁴, so a tenfold rise at 300 read as a fall and never alarmed.
    values = np.r_[1e-6, np.ones(299), np.full(50, 10.0)]
    relative = DriftConfig(ph_threshold=20.0, ph_min_instances=3, ph_relative=True)
    alarms = bank_alarms(PageHinkleyBank(relative, 1), values)
    assert alarms and 300 <= alarms[0] <= 302


def test_grow_keeps_state():
    bank = PageHinkleyBank(DriftConfig(), 1)
    bank.update(np.array([0]), np.array([2.0]))
    bank.grow(10)
    assert bank.get_state(0)["n"] == 1 and bank.get_state(9)["n"] == 0


@pytest.mark.parametrize("name", ["adwin", "kswin"])
def test_river_banks_match_river(name):
    cfg = DriftConfig(detector=name, seed=3)
    values = stream(5)
    if name == "adwin":
        det = river_drift.ADWIN(delta=cfg.adwin_delta)
    else:
        det = river_drift.KSWIN(alpha=cfg.kswin_alpha, window_size=cfg.kswin_window_size,
                                stat_size=cfg.kswin_stat_size, seed=cfg.seed + 1)
    expected = []
    for i, v in enumerate(values):
        det.update(float(v))
        if det.drift_detected:
            expected.append(i)
            det = river_drift.ADWIN(delta=cfg.adwin_delta) if name == "adwin" else \
                river_drift.KSWIN(alpha=cfg.kswin_alpha, window_size=cfg.kswin_window_size,
                                  stat_size=cfg.kswin_stat_size, seed=cfg.seed + 1)
    bank = build_bank(cfg, capacity=2)
    assert isinstance(bank, RiverBank)
    got = bank_alarms(bank, values, slot=1)
    assert got == expected and got  # each detector does see the change


def test_null_bank_and_config_validation():
    assert isinstance(build_bank(DriftConfig(detector="none")), NullBank)
    assert not build_bank(DriftConfig(detector="oracle")).update(np.arange(3), np.ones(3)).any()
    with pytest.raises(ValueError, match="ph_threshold must be > 0, got 0"):
        DriftConfig(ph_threshold=0)
    with pytest.raises(ValueError, match="warmup must be >= 0"):
        DriftConfig(warmup=-1)
