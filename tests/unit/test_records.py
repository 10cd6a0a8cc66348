"""Record decoding: every malformed input is a RecordError with a bounded reason, never a crash,
and the first valid record fixes the feature layout."""

from __future__ import annotations

import json
import math

import pytest

from adaptd.errors import RecordError
from adaptd.records import REASONS, Record, RecordDecoder, encode


def reason(raw: bytes, decoder: RecordDecoder | None = None) -> str:
    with pytest.raises(RecordError) as caught:
        (decoder or RecordDecoder()).decode(raw)
    assert caught.value.reason in REASONS
    return caught.value.reason


def test_a_full_record() -> None:
    record = RecordDecoder().decode(
        b'{"key":"asset-7","id":"r-1","x":[0.5,2],"y":1.5,"ts":1700000000,"task":3,"site":"b"}'
    )
    assert record == Record(
        x=(0.5, 2.0), y=1.5, key="asset-7", id="r-1", ts=1700000000.0, task=3,
        extra={"site": "b"},
    )


def test_defaults_and_conversions() -> None:
    record = RecordDecoder().decode(b'{"x":[1],"key":42,"id":7}')
    assert (record.key, record.id, record.y, record.ts, record.task) == ("42", "7", None, None, None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"not json", "not_json"),
        (b'{"x":[1]', "not_json"),
        (b"\xff\xfe\xfa", "not_json"),
        (b"[" * 100_000, "not_json"),  # nesting deeper than the parser's recursion limit
        (b"[1, 2]", "not_object"),
        (b'"text"', "not_object"),
        (b'{"x":[1],"key":""}', "bad_key"),
        (b'{"x":[1],"key":true}', "bad_key"),
        (b'{"x":[1],"key":{"a":1}}', "bad_key"),
        (b'{"y":1}', "missing_x"),
        (b'{"x":"1,2"}', "bad_x"),
        (b'{"x":[1,"2"]}', "bad_x"),
        (b'{"x":[true]}', "bad_x"),
        (b'{"x":[null]}', "bad_x"),
        (b'{"x":[NaN]}', "non_finite"),
        (b'{"x":[Infinity]}', "non_finite"),
        (b'{"x":[1e999]}', "non_finite"),
        (b'{"x":[1' + b"0" * 400 + b"]}", "non_finite"),  # an int no float can hold
        (b'{"x":[]}', "feature_count"),
        (b'{"x":{}}', "feature_count"),
        (b'{"x":[1],"y":"1"}', "bad_y"),
        (b'{"x":[1],"y":[1]}', "bad_y"),
        (b'{"x":[1],"y":NaN}', "non_finite"),
        (b'{"x":[1],"y":-1' + b"0" * 400 + b"}", "non_finite"),
    ],
)
def test_malformed_records_are_rejected_with_a_reason(raw: bytes, expected: str) -> None:
    assert reason(raw) == expected


def test_oversized_records_are_rejected_before_parsing() -> None:
    decoder = RecordDecoder(max_record_bytes=20)
    assert decoder.decode(b'{"x":[1,2,3]}').x == (1.0, 2.0, 3.0)
    assert reason(b'{"x":[1,2,3],"pad":"....."}', decoder) == "oversized"


@pytest.mark.parametrize("field", ["ts", "task"])
@pytest.mark.parametrize("value", [b"NaN", b"Infinity", b"-Infinity", b"1" + b"0" * 400, b'"7"', b"true"])
def test_optional_numbers_that_are_not_finite_numbers_are_dropped(field: str, value: bytes) -> None:
    record = RecordDecoder().decode(b'{"x":[1],"%s":%s}' % (field.encode(), value))
    assert getattr(record, field) is None


def test_the_first_valid_record_fixes_the_feature_count() -> None:
    decoder = RecordDecoder()
    assert reason(b'{"x":[1,2,3],"y":"bad"}', decoder) == "bad_y"  # invalid: fixes nothing
    assert decoder.decode(b'{"x":[1,2]}').x == (1.0, 2.0)
    assert decoder.n_features == 2
    assert reason(b'{"x":[1,2,3]}', decoder) == "feature_count"


def test_object_features_are_ordered_by_name_and_fixed_by_the_first_record() -> None:
    decoder = RecordDecoder()
    assert decoder.decode(b'{"x":{"b":2,"a":1}}').x == (1.0, 2.0)
    assert decoder.feature_names == ("a", "b")
    assert decoder.decode(b'{"x":{"a":3,"b":4}}').x == (3.0, 4.0)
    assert reason(b'{"x":{"a":3,"c":4}}', decoder) == "unknown_feature"
    assert reason(b'{"x":{"a":3}}', decoder) == "feature_count"


def test_given_names_fix_the_order() -> None:
    decoder = RecordDecoder(feature_names=["z", "a"])
    assert decoder.decode(b'{"x":{"a":1,"z":2}}').x == (2.0, 1.0)


def test_a_given_count_still_fixes_the_names_of_object_features() -> None:
    decoder = RecordDecoder(n_features=2)
    decoder.decode(b'{"x":{"a":1,"b":2}}')
    assert reason(b'{"x":{"c":1,"d":2}}', decoder) == "unknown_feature"


def test_classification_labels() -> None:
    decoder = RecordDecoder(task="classification")
    assert decoder.decode(b'{"x":[1],"y":true}').y == 1.0
    assert decoder.decode(b'{"x":[1],"y":0}').y == 0.0
    # Any number or string is a class label (multi-class, adaptd.learner.classes).
    assert decoder.decode(b'{"x":[1],"y":0.5}').y == 0.5
    assert decoder.decode(b'{"x":[1],"y":"cat"}').y == "cat"
    assert reason(b'{"x":[1],"y":[1]}', decoder) == "bad_y"
    assert reason(b'{"x":[1],"y":{"a":1}}', decoder) == "bad_y"


@pytest.mark.parametrize(
    "kwargs",
    [{"n_features": 0}, {"n_features": 3, "feature_names": ["a", "b"]}],
)
def test_bad_decoder_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RecordDecoder(**kwargs)


def test_encode_is_compact_json_and_writes_non_finite_as_null() -> None:
    assert encode({"y_pred": 0.5, "key": "k"}) == b'{"y_pred":0.5,"key":"k"}'
    # JSON has no NaN or infinity; an overflowing prediction must not stop the stream.
    assert json.loads(encode({"y_pred": math.nan, "loss": -math.inf})) == {"y_pred": None,
                                                                          "loss": None}


@pytest.mark.parametrize("raw,reason", [
    (b'{"x": [1, NaN]}', "non_finite"),
    (b'{"x": [1, Infinity]}', "non_finite"),
    (b'{"x": [1, 1e400]}', "non_finite"),
    (b'{"x": [1, 2], "y": -Infinity}', "non_finite"),
    (b'{"x": [1, true]}', "bad_x"),
    (b'{"x": [1, "2"]}', "bad_x"),
    (b'{"x": [1, null]}', "bad_x"),
    (b'{"x": [1e308, 1e308]}', None),  # finite values whose sum overflows
    (b'{"x": [1, 123456789012345678901234567890]}', None),
    (b'[' * 100_000, "not_json"),
    (b'{"x": [1, 2]', "not_json"),
    (b'\xff\xfe', "not_json"),
])
def test_fast_json_path_keeps_the_precise_reasons(raw: bytes, reason: str | None) -> None:
    """orjson refuses what the standard parser reads (NaN, Infinity, 1e400); those records
    must still be rejected as non_finite, and every other case as before."""
    decoder = RecordDecoder()
    if reason is None:
        assert all(math.isfinite(v) for v in decoder.decode(raw).x)
        return
    with pytest.raises(RecordError) as err:
        decoder.decode(raw)
    assert err.value.reason == reason


def test_a_checkpointed_layout_is_taken_once_and_never_over_a_fixed_one() -> None:
    decoder = RecordDecoder()
    decoder.decode(b'{"x": {"b": 1, "a": 2}}')
    layout = decoder.layout()
    assert layout == {"n_features": 2, "feature_names": ("a", "b")}
    fresh = RecordDecoder()
    fresh.restore_layout(layout)
    assert fresh.decode(b'{"x": {"a": 1, "b": 2}}').x == (1.0, 2.0)
    fixed = RecordDecoder(n_features=3)
    fixed.restore_layout(layout)
    assert fixed.layout() == {"n_features": 3, "feature_names": None}


def test_prediction_messages_keep_their_exact_bytes() -> None:
    import numpy as np

    from adaptd.connectors.base import SourceRecord
    from adaptd.learner import Outcomes
    from adaptd.records import RecordBatch, predictions

    raws = [SourceRecord(partition=2, position=p, value=b"") for p in (5, 6)]
    batch = RecordBatch(["a", "b"], np.zeros((2, 1)), np.array([1.0, np.nan]), ["r5", None],
                        [None, None])
    outcomes = Outcomes.empty(2)
    outcomes.y_pred[:] = [0.75, 0.25]
    outcomes.segment[:] = [3, 0]
    outcomes.loss[:] = [0.5, np.nan]
    outcomes.learned[:] = [True, False]
    regression = predictions(raws, batch, outcomes, "regression")
    assert [m.value for m in regression] == [
        b'{"id":"r5","key":"a","partition":2,"position":5,"segment":3,"y_pred":0.75,"loss":0.5}',
        b'{"id":null,"key":"b","partition":2,"position":6,"segment":0,"y_pred":0.25}',
    ]
    assert [m.key for m in regression] == [b"a", b"b"]
    classified = predictions(raws, batch, outcomes, "classification")
    assert classified[0].value == (b'{"id":"r5","key":"a","partition":2,"position":5,'
                                   b'"segment":3,"y_pred":1,"proba":0.75,"loss":0.5}')


def test_dead_letters_keep_the_original_bytes_and_say_why() -> None:
    from adaptd.connectors.base import SourceRecord
    from adaptd.records import dead_letter

    raw = SourceRecord(partition=1, position=9, value=b"\xff\xfe", key=b"k")
    message = dead_letter(raw, RecordError("not_json", "not valid JSON"))
    assert message.value == (b'{"reason":"not_json","detail":"not valid JSON","partition":1,'
                             b'"position":9,"raw_base64":"//4="}')
    assert message.key == b"k"
    assert message.headers == (("adaptd.reason", b"not_json"), ("adaptd.partition", b"1"),
                               ("adaptd.position", b"9"))
