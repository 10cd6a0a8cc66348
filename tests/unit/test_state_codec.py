"""Packed task states (adaptd.state_codec, adaptd.learner.packing): the checkpoint's per-key
values, packed key by key or many at once from the arena, give back the same state."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from adaptd import state_codec
from adaptd.learner import packing
from adaptd.learner.adaptive import AdaptiveLearner
from adaptd.learner.packing import packed_task_states
from adaptd.partitions import combine, partition_part, shared_part
from adaptd.settings import DriftConfig, RegretConfig
from adaptd.state_codec import SplitState, pack_state, unpack_state
from tests.unit.test_learner import linear_stream


def _equal(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _equal(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        left, right = np.asarray(a), np.asarray(b)
        assert left.shape == right.shape and left.dtype == right.dtype, where
        np.testing.assert_array_equal(left, right, err_msg=where)
    else:
        assert a == b, where


@pytest.mark.parametrize("regret", [RegretConfig(), RegretConfig(baseline=False, hindsight=False)])
@pytest.mark.parametrize("detector", ["page_hinkley", "none"])
def test_packing_from_the_arena_gives_the_task_state(regret: RegretConfig, detector: str) -> None:
    learner = AdaptiveLearner(regret=regret, drift=DriftConfig(detector=detector))
    records = linear_stream(0, 3000, keys=40, change_at=1500)
    for lo in range(0, 3000, 256):
        learner.process_many(records[lo:lo + 256])
    keys = sorted(learner.keys())[:25] + ["never-seen"]
    packed = packed_task_states(learner, keys)
    assert packed is not None and sorted(packed) == sorted(keys[:-1])
    for key, blob in packed.items():
        expected = learner.state_dict([key])["keys"][key]
        _equal(expected, unpack_state(blob), key)
        _equal(expected, unpack_state(pack_state(expected)), key)  # key by key alike


def test_state_moves_through_packed_partitions() -> None:
    """A learner restored from the packed split predicts exactly as the original."""
    records = linear_stream(1, 2500, keys=30, change_at=1000)
    a = AdaptiveLearner()
    for lo in range(0, 2000, 250):
        a.process_many(records[lo:lo + 250])
    keys = sorted(a.keys())
    parts = [partition_part(a, keys[:10]), partition_part(a, keys[10:])]
    # The hindsight buffer in chunks of rows, the rest in the head.
    assert all(isinstance(v, SplitState) and len(v.chunks) == 4  # 200 rows, 51 a chunk
               for part in parts for v in part["keys"].values())
    b = AdaptiveLearner()
    b.load_state_dict(combine(shared_part(a), parts))
    np.testing.assert_array_equal(a.process_many(records[2000:]).y_pred,
                                  b.process_many(records[2000:]).y_pred)


def test_zero_tails_are_left_out_and_damage_is_named() -> None:
    state = {"ring": np.zeros((200, 10)), "theta": np.ones(3), "n": 1.5}
    state["ring"][0, :2] = 7.0
    blob = pack_state(state)
    assert len(blob) < 500  # 16 kB of ring, one row used
    _equal(state, unpack_state(blob))
    with pytest.raises(ValueError, match="left over"):
        unpack_state(blob + b"x")


def test_a_learner_before_its_first_record_is_packed_key_by_key() -> None:
    """No arena yet (the model is set up by the first record): no fast path, and the split
    still works (a checkpoint before any record)."""
    learner = AdaptiveLearner()
    assert packed_task_states(learner, ["a"]) is None
    assert partition_part(learner, ["a"])["keys"] == {}


def test_kept_bytes_are_each_keys_used_bytes_in_order() -> None:
    """The used bytes of every array, key after key, as a per-key join gives them: arrays every
    key uses alike (cut to their widest use first) and arrays used to different lengths."""
    rng = np.random.default_rng(3)
    raws = [rng.normal(size=(50, w)) for w in (4, 9, 1, 6)]
    for raw in raws[1:]:  # zero tails of random lengths (the first array: every key alike)
        for i, used in enumerate(rng.integers(0, raw.shape[1] + 1, size=len(raw))):
            raw[i, used:] = 0.0
    raws[0][:, 2:] = 0.0
    raws[3][:, :] = 0.0  # no key uses it at all
    views = [np.ascontiguousarray(raw).view(np.uint8) for raw in raws]
    lengths = np.stack([state_codec._used_bytes(v) for v in views], axis=1).astype("<u4")
    data, ends = state_codec._kept([v.view(np.uint64) for v in views], lengths, 8)
    expected = [b"".join(v[i, :lengths[i, j]].tobytes() for j, v in enumerate(views))
                for i in range(50)]
    assert data == b"".join(expected)
    assert ends == np.cumsum([len(e) for e in expected]).tolist()
    assert lengths[:, 0].tolist() == [16] * 50 and not lengths[:, 3].any()


def test_a_group_s_columns_are_cut_to_the_most_any_of_its_keys_uses() -> None:
    """Packed together, every key keeps each array up to the group's widest use (its own zero
    tail past it dropped, short of it kept), and reads back as its own state."""
    rng = np.random.default_rng(5)
    blocks = [(("w",), rng.normal(size=(6, 4))), (("ring",), np.zeros((6, 5, 2))),
              (("none",), np.zeros((6, 3))), (("flag",), np.zeros((6, 3), dtype=bool))]
    blocks[1][1][2, :3] = 1.5  # key 2 uses 3 of 5 rows, the others none
    blocks[3][1][4, 1] = True  # key 4 uses 2 of 3 flags
    keys = [f"k{i}" for i in range(6)]
    packed = state_codec.pack_rows(keys, blocks, {"c": 1})
    for i, key in enumerate(keys):
        state = unpack_state(packed[key])
        _equal({"w": blocks[0][1][i], "ring": blocks[1][1][i], "none": blocks[2][1][i],
                "flag": blocks[3][1][i], "c": 1}, state, key)
        alone = pack_state(state)
        # 32 bytes of w, 48 of the rings (3 rows of 2), 2 flags: key 2's and 4's widths
        assert len(bytes(packed[key])) == len(alone) + (48 if i != 2 else 0) + (2 if i != 4 else 0)


def test_a_key_of_few_records_packs_as_narrow_beside_busier_keys() -> None:
    """Keys whose rings fit one chunk are packed in groups of equal extent: a key with one
    record keeps its own widths beside keys with five and twenty (as wide as the busiest, the
    state dir of skewed keys doubled), and every key reads back as its state."""
    records = list(linear_stream(4, 26, keys=1))
    learner = AdaptiveLearner()
    for key, count in (("one", 1), ("five", 5), ("twenty", 20)):
        learner.process_many([dataclasses.replace(r, key=key) for r in records[:count]])
    together = packed_task_states(learner, ["one", "five", "twenty"])
    alone = packed_task_states(learner, ["one"])
    assert together is not None and alone is not None
    assert not isinstance(together["twenty"], SplitState)  # one chunk: packed as a whole
    assert len(bytes(together["one"])) == len(bytes(alone["one"]))
    for key in ("one", "five", "twenty"):
        _equal(learner.state_dict([key])["keys"][key], unpack_state(together[key]), key)


def test_keys_packed_in_slices_as_all_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Packing keys a few at a time (as a checkpoint of many keys does) gives every key the
    value packing them at once gives, and the learner's state; keys with one, two or three
    records (and labels of 0: zero tails) use their arrays to different lengths."""
    records = [dataclasses.replace(r, y=0.0) if i % 7 == 0 else r
               for i, r in enumerate(linear_stream(4, 400, keys=200))]  # ~2 records a key
    learner = AdaptiveLearner()
    learner.process_many(records)
    keys = sorted(learner.keys())
    whole = packed_task_states(learner, keys)
    monkeypatch.setattr(packing, "CHUNK_KEYS", 7)
    sliced = packed_task_states(learner, keys)
    assert whole is not None and sliced is not None and sorted(sliced) == keys
    for key in keys:
        # (not byte for byte: each slice's arrays are cut to the most its own keys use)
        _equal(unpack_state(whole[key]), unpack_state(sliced[key]), key)
        _equal(learner.state_dict([key])["keys"][key], unpack_state(sliced[key]), key)


def _bytes_of(packed: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(k, v if isinstance(v, SplitState) else bytes(v)) for k, v in packed.items()]


@pytest.mark.parametrize("setup", ["logistic", "no_baseline", "no_hindsight", "no_detector",
                                   "no_library"])
def test_blocks_cut_where_they_lie_are_the_gathered_blocks_packed(
        setup: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled cut of blocks straight from the arena gives every key the bytes packing
    its gathered rows gives (``pack_rows``), in the same order: keys of one record, of a
    few (other extents), busy ones (split), closed segments (a concept library)."""
    from adaptd.settings import MetaConfig

    kwargs: dict[str, Any] = {
        "logistic": {"model": "logistic", "task": "classification"},
        "no_baseline": {"regret": RegretConfig(baseline=False)},
        "no_hindsight": {"regret": RegretConfig(hindsight=False)},
        "no_detector": {"drift": DriftConfig(detector="none")},
        "no_library": {"meta": MetaConfig(library=0)},
    }[setup]
    learner = AdaptiveLearner(**kwargs)
    records = linear_stream(6, 3000, keys=30, change_at=1200)
    if setup == "logistic":
        records = [dataclasses.replace(r, y=float(r.y > 0)) for r in records]
    for lo in range(0, 3000, 300):
        learner.process_many(records[lo:lo + 300])
    fresh = list(linear_stream(7, 60, keys=60))
    if setup == "logistic":
        fresh = [dataclasses.replace(r, y=float(r.y > 0)) for r in fresh]
    learner.process_many([dataclasses.replace(r, key=f"new{i // 3}" if i < 30 else f"one{i}")
                          for i, r in enumerate(fresh)])
    keys = sorted(learner.keys())
    for chosen in (keys, [k for k in keys if k.startswith(("new", "one"))], keys[:3]):
        cut = packed_task_states(learner, chosen)
        monkeypatch.setattr(packing, "COMPILED", False)
        gathered = packed_task_states(learner, chosen)
        monkeypatch.setattr(packing, "COMPILED", True)
        assert cut is not None and gathered is not None
        assert _bytes_of(cut) == _bytes_of(gathered)
