"""Property tests: whatever the input, every line is predicted or dead-lettered, and nothing
raises. Each example runs a real runner over a real jsonl file with real jsonl sinks.

Deterministic for CI (``derandomize``, no example database); example counts stay modest so the
suite stays fast. The regression corpus of records that once crashed the daemon is in
``test_poison.py`` and is also given here as explicit examples.
"""

from __future__ import annotations

import base64
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from adaptd.connectors.base import SourceRecord
from adaptd.errors import RecordError
from adaptd.learner import Outcomes
from adaptd.records import REASONS, RecordBatch, dead_letter, predictions
from adaptd.records.fields import record_id, record_key
from tests.unit.test_poison import CORPUS
from tests.unit.trust_runs import FileRun, run_lines

#: ``FUZZ_EXAMPLES=N`` runs N random (not derandomized) examples per test, to hunt locally.
_HUNT = int(os.environ.get("FUZZ_EXAMPLES", "0"))
FUZZ = settings(derandomize=not _HUNT, database=None, deadline=None,
                max_examples=_HUNT or 150,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

numbers = st.floats(allow_nan=True, allow_infinity=True) | st.integers() | \
    st.integers(min_value=-(10**30), max_value=10**30)
scalars = st.none() | st.booleans() | numbers | st.text(max_size=8)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(max_size=4), inner, max_size=3), max_leaves=8)
features = st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=2) | \
    st.dictionaries(st.sampled_from(["a", "b", "\udc00", ""]), numbers, max_size=3) | json_values
records = st.fixed_dictionaries({}, optional={
    "key": st.sampled_from(["k1", "k2", "\ud800", ""]) | json_values,
    "id": st.sampled_from(["a", "b", "c"]) | json_values,
    "x": features,
    "y": st.sampled_from([0, 1, 0.5, "cat", "\udc00", "1"]) | json_values,
    "task": st.integers(-2, 3) | numbers | json_values,
    "ts": numbers,
})

#: Mostly valid records, so that learning, delayed labels and drift are exercised too.
plausible = st.fixed_dictionaries(
    {"x": st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=2)},
    optional={"key": st.sampled_from(["k1", "k2", 7]), "id": st.sampled_from(["a", "b", 3]),
              "y": st.sampled_from([0, 1, 2.5, -1e300, "cat", "dog"]),
              "task": st.integers(0, 3)})
labels_only = st.fixed_dictionaries({"id": st.sampled_from(["a", "b", 3]),
                                     "y": st.sampled_from([0, 1, 0.5, "z"])})


def encode_record(obj: dict[str, Any]) -> bytes:
    # ensure_ascii escapes lone surrogates as \\udXXX, as a producer's JSON library would.
    return json.dumps(obj, allow_nan=True).encode()


def check(lines: list[bytes], run: FileRun, limit: int = 1 << 20) -> None:
    """Every non-blank line is predicted or dead-lettered (not both), with its original bytes
    and a reason from the bounded list; the counts add up."""
    records = {}
    for position, line in enumerate(lines):
        value = line[:-1] if line.endswith(b"\r") else line
        if line.strip():
            records[position] = value
    predicted = [p["position"] for p in run.predictions]
    dead = {d["position"]: d for d in run.dead_letters}
    assert len(predicted) == len(set(predicted))
    assert len(dead) == len(run.dead_letters)
    assert sorted([*predicted, *dead]) == sorted(records)
    for position, letter in dead.items():
        assert letter["reason"] in REASONS
        # The last resort is for what the decoder cannot foresee: here it is a decoder's gap.
        assert letter["reason"] != "unprocessable", letter["detail"]
        raw = letter["raw"].encode() if "raw" in letter else base64.b64decode(letter["raw_base64"])
        original = records[position]
        if "original_length" in letter:
            assert letter["original_length"] == len(original) > limit
            assert raw == original[:limit]
        else:
            assert raw == original
    summary = run.summary
    event(f"lines predicted besides the first: {min(len(predicted) - 1, 2)}+")
    for letter in run.dead_letters:
        event(f"reason {letter['reason']}")
    assert summary.records == len(records)
    assert summary.predictions + summary.rejected == len(records)


def fuzz_run(lines: list[bytes], **flags: Any) -> FileRun:
    with tempfile.TemporaryDirectory() as tmp:
        return run_lines(Path(tmp), lines, batch_size=4, **flags)


@FUZZ
@given(st.lists(records | plausible | labels_only, max_size=16),
       st.sampled_from(["page_hinkley", "oracle"]), st.sampled_from(["regression",
                                                                    "classification"]))
@example([{"id": "a", "x": [1.0, 2.0]}, {"id": "a", "y": 1}, {"id": "zz", "y": 1}], "oracle",
         "regression")
@example([{"x": [1.0, 2.0], "y": "cat"}, {"x": [1.0, 2.0], "y": "\udc00"}], "page_hinkley",
         "classification")
def test_any_json_records(objs: list[dict[str, Any]], detector: str, task: str) -> None:
    lines = [b'{"x":[1,2],"y":1}'] + [encode_record(obj) for obj in objs]
    check(lines, fuzz_run(lines, task=task, **{"drift.detector": detector}))


@FUZZ
@given(st.lists(st.binary(max_size=120).map(lambda b: b.replace(b"\n", b"")), max_size=10),
       st.sampled_from([40, 1 << 20]))
@example([line for line, _ in CORPUS], 1 << 20)
@example([b"\xff\xfe", b" \r", b"{}\r", b"x" * 100], 40)
def test_any_bytes(lines: list[bytes], limit: int) -> None:
    lines = [b'{"x":[1,2],"y":1}', *lines]
    check(lines, fuzz_run(lines, max_record_bytes=limit, **{"drift.detector": "oracle"}), limit)


@FUZZ
@given(st.text(max_size=20) | json_values, st.text(max_size=20) | json_values,
       st.floats(allow_nan=True, allow_infinity=True))
def test_prediction_messages_encode_any_key_and_id_the_decoder_accepts(
        key: Any, rid: Any, y_pred: float) -> None:
    try:
        key, rid = record_key({"key": key}), record_id({"id": rid})
    except RecordError:
        return  # refused before any message is built
    raw = SourceRecord(partition=0, position=3, value=b"{}")
    batch = RecordBatch([key], np.zeros((1, 1)),
                        np.array([math.nan]), [rid], [None])
    [message] = predictions([raw], batch, Outcomes(np.array([y_pred])),
                            "regression")
    body = json.loads(message.value)
    assert (body["key"], body["id"], body["position"]) == (key, rid, 3)


@FUZZ
@given(st.binary(max_size=200), st.text(max_size=600), st.sampled_from(REASONS))
def test_dead_letters_encode_any_bytes_and_detail(value: bytes, detail: str, reason: str) -> None:
    letter = json.loads(dead_letter(SourceRecord(partition=1, position=9, value=value),
                                    RecordError(reason, detail)).value)
    raw = letter["raw"].encode() if "raw" in letter else base64.b64decode(letter["raw_base64"])
    assert raw == value and letter["reason"] == reason and len(letter["detail"]) <= 500
