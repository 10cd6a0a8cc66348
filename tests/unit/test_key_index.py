"""The set of key hashes that tells a new key from one the store may hold
(:class:`adaptd.key_index.HashSet`): every hash added is a member through its growth, and a
hash never added is not (but for 64-bit equality)."""

from __future__ import annotations

import numpy as np

from adaptd.key_index import HashSet


def test_members_stay_members_as_the_set_grows_batch_by_batch() -> None:
    rng = np.random.default_rng(1)
    hashes = rng.integers(-2**63, 2**63 - 1, size=100_000, dtype=np.int64)
    hashes[:3] = [0, 1, -1]  # 0 is kept as 1: both members once either is
    members = HashSet(4)
    for lo in range(0, len(hashes), 4096):
        batch = hashes[lo:lo + 4096]
        members.add_new(batch[~members.contains(batch)])
        members.add(hashes[lo:lo + 10])  # members already: no second slot
        assert members.contains(hashes[:lo + len(batch)]).all()
    assert len(members) == len(hashes) - 1
    assert 2 * len(members) <= len(members.table)
    others = rng.integers(-2**63, 2**63 - 1, size=100_000, dtype=np.int64)
    assert not members.contains(others[~np.isin(others, hashes)]).any()


def test_hashes_of_one_probe_position_each_take_a_slot() -> None:
    members = HashSet()
    crowded = np.arange(1, 3000, dtype=np.int64) * 4096  # all at position 0 of the table
    members.add_new(crowded)
    assert members.contains(crowded).all() and not members.contains(crowded + 1).any()
