"""What ``--model auto`` keeps per key (adaptd.learner.ensemble): only the first candidate
keeps the regret comparators (shadow baseline, hindsight buffer) the ensemble reports."""

from __future__ import annotations

import numpy as np
import pytest

from adaptd.learner import ensemble
from adaptd.learner.ensemble import HedgeLearner
from adaptd.partitions import combine, partition_part, shared_part
from adaptd.records import Record
from adaptd.state_codec import pack_state


def _records(seed: int, n: int, keys: int) -> list[Record]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = rng.normal(size=4)
        out.append(Record(x=tuple(x.tolist()), y=float(x[0] > 0.3 * x[1]), key=f"k{i % keys}"))
    return out


def _mlp_key_bytes(learner: HedgeLearner, key: str) -> int:
    return len(pack_state(learner.state_dict([key])["keys"][key]["candidates"]["mlp"]))


def test_a_keys_mlp_state_is_its_parameters_before_and_after_many_records() -> None:
    """A key's MLP candidate holds θ, A and Σg² (8·P bytes each) and its window: no baseline
    row (2·8·P more) and no hindsight buffer (8·(d + 2) a record, up to ``regret.buffer``),
    from its first record to its 300th (past the buffer's 200)."""
    learner = HedgeLearner("classification")
    records = _records(0, 600, keys=2)
    learner.process_many(records[:2])  # each key's first record
    mlp = learner.candidates["mlp"]
    P = mlp.family.n_params
    first = _mlp_key_bytes(learner, "k0")
    assert 3 * 8 * P <= first < 3 * 8 * P + 2048
    learner.process_many(records[2:])
    assert 3 * 8 * P <= _mlp_key_bytes(learner, "k0") < 3 * 8 * P + 2048
    # In memory: one arena row a key, no buffer; the linear candidate keeps both.
    assert mlp._rows_per_key == 1 and mlp.arena.HX.shape[1] == 0
    linear = learner.candidates["linear"]
    assert linear._rows_per_key == 2 and linear.arena.HX.shape[1] == 200
    assert learner.summary().baseline_loss == linear.summary().baseline_loss is not None


def test_states_saved_with_the_mlp_comparators_load_and_predict_the_same(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint written before (MLP candidate with baseline and a filled hindsight buffer)
    loads without them, and the learner goes on with the bits of the one that wrote it."""
    records = _records(1, 900, keys=3)
    with monkeypatch.context() as m:
        m.setattr(ensemble, "_unreported", lambda regret: regret)  # the layout before
        old = HedgeLearner("classification")
    old.process_many(records[:600])
    saved = combine(shared_part(old), [partition_part(old, ["k0", "k1", "k2"])])
    assert "baseline" in saved["keys"]["k0"]["candidates"]["mlp"]
    new = HedgeLearner("classification")
    new.load_state_dict(saved)
    state = new.state_dict(["k0"])["keys"]["k0"]["candidates"]["mlp"]
    assert "baseline" not in state and len(state["HY"]) == 0
    for lo in range(600, 900, 100):
        np.testing.assert_array_equal(new.process_many(records[lo:lo + 100]).y_pred,
                                      old.process_many(records[lo:lo + 100]).y_pred)
