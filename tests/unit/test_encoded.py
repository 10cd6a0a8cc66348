"""The lean encode (one buffer a batch, filled by compiled code) against the message-by-message
path: the same bytes and keys for every shape it takes."""

from __future__ import annotations

import numpy as np
import pytest

from adaptd.connectors.base import SourceRecord
from adaptd.learner import Outcomes
from adaptd.records.encoded import encoded_predictions
from adaptd.records.messages import predictions
from adaptd.records.schema import RecordBatch


def batch_of(n: int, keys: list[str], ids: list[str | None]) -> RecordBatch:
    return RecordBatch(keys, np.zeros((n, 2)), np.zeros(n), ids, [None] * n)


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("shape", ["one key", "many keys", "plain keys", "ids", "unlabelled",
                                   "odd floats"])
def test_the_buffer_holds_the_messages_of_the_per_record_path(task: str, shape: str) -> None:
    rng = np.random.default_rng(len(shape))
    n = 300
    keys = ["default"] * n if shape == "one key" else [f"k{i}/ ~{'x' * (i % 5)}" for i in range(n)] \
        if shape == "plain keys" else [f"k\u00e9{i % 7}\"" for i in range(n)]
    ids = [f"r{i}\\\n" if i % 3 else None for i in range(n)] if shape == "ids" else [None] * n
    y_pred = rng.random(n) if task == "classification" else rng.normal(size=n) * 1e3
    loss = np.full(n, np.nan) if shape == "unlabelled" else rng.random(n)
    if shape == "odd floats":
        y_pred[:6] = [np.inf, -np.inf, 1e-300, -0.0, 5e15, 123456789.0]
        loss[:3] = [np.inf, 0.0, 1e300]
    segment = rng.integers(0, 3, n) if shape != "one key" else np.zeros(n, dtype=np.int64)
    outcomes = Outcomes(y_pred, loss, segment)
    partitions = [int(p) for p in rng.integers(0, 4, n)] if shape == "many keys" else [2] * n
    positions = [10**12 + 7 * i for i in range(n)]
    encoded = encoded_predictions(partitions, positions, batch_of(n, keys, ids), outcomes, task)
    assert encoded is not None
    raws = [SourceRecord(p, q, b"") for p, q in zip(partitions, positions, strict=True)]
    messages = predictions(raws, batch_of(n, keys, ids), outcomes, task)  # type: ignore[arg-type]
    assert encoded.values() == [m.value for m in messages]
    assert list(encoded.keys) == [m.key for m in messages]


def test_a_batch_with_some_labelled_records_is_not_templated() -> None:
    outcomes = Outcomes(np.zeros(2), np.array([0.5, np.nan]), np.zeros(2, dtype=np.int64))
    assert encoded_predictions([0, 0], [1, 2], batch_of(2, ["a", "a"], [None, None]), outcomes,
                               "regression") is None
