"""The arena's rows survive growth, whatever each field's layout: the hindsight labels and
losses are laid out ring row by ring row (a new key's first record shares its pages with other
keys'), every other field key by key."""

from __future__ import annotations

import numpy as np

from adaptd.learner.arena import RING_MAJOR, Arena, grow_arena, ring_extent


def test_rows_survive_growth_and_new_keys_first_ring_rows_are_adjacent() -> None:
    rng = np.random.default_rng(3)
    old = grow_arena(None, 8, P=3, k=4, d=2, h=5)
    # Keys in rows 0, 2, 4 (their baselines in 1, 3, 5): a busy one past its first segment
    # (whole rings), one with two records, one with none.
    old.seg[0], old.hcount[0], old.hcount[2] = 1, 5, 2
    for name in Arena._fields:
        values = getattr(old, name)
        if name in ("seg", "hcount"):
            continue
        if name in ("HX", "HY", "HL"):
            values[0] = rng.normal(size=values[0].shape)
            values[2, :2] = rng.normal(size=values[2, :2].shape)
        else:
            values[:6] = rng.integers(1, 9, size=values[:6].shape)
    new = grow_arena(old, 16, P=3, k=4, d=2, h=5)
    for name in Arena._fields:
        assert np.array_equal(getattr(new, name)[:8], getattr(old, name)), name
        assert not getattr(new, name)[8:].any() or name in ("A", "recov", "task_of"), name
    assert ring_extent(new, np.arange(6)).tolist() == [5, 0, 2, 0, 0, 0]
    for name in RING_MAJOR:  # element [s, 0] of every row next to [s + 1, 0]
        ring = getattr(new, name)
        assert ring.strides == (ring.itemsize, ring.itemsize * len(ring))
    assert new.HX.flags.c_contiguous and new.theta.flags.c_contiguous
