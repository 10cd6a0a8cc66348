"""The compiled scan of ``{"x": [...], "y": ...}`` records against the per-record decode: the
same columns, bit for bit, whenever it takes a batch, and it takes nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from adaptd.records import BatchBuilder, RecordDecoder
from adaptd.records.columns import decode_columns
from adaptd.records.scan import scan_columns

VALID = [
    b'{"x": [1, 2.5, -3], "y": 1}',
    b'{"y":0,"x":[3,4,5]}',  # y first
    b' {\t"x" :\n[ 0.1 , -0 ,1E+2 ] ,\r"y" : 1.0 } ',  # JSON whitespace everywhere
    b'{"x": [0.30000000000000004, 1e-320, 2.2250738585072014e-308], "y": 0}',
    b'{"x": [12345678901234567891, -9007199254740993, 123456789012345678901234567890], "y": 1}',
    b'{"x": [0.1000000000000000055511151231257827021181583404541015625, 5e-324, 1.7976931348623157e308], "y": 0}',
    b'{"y": -1e0, "x": [1, 1, 1]}',
    b'{"x": [1, 2, 3]}',  # no label
    b'{"key": "a", "x": [1, 2, 3], "y": 1}',
    b'{"x": [1, 2, 3], "key": "caf\xc3\xa9 \xf0\x9f\x98\x80"}',  # UTF-8, no label
    b'{"x": [1, 2, 3], "key": "default", "y": 0}',  # the default key, named
    b'{"x": [1, 2, 3], "y": 1, "key" : "b"}',
    b'{"x": [1, 2, 3], "y": 1, "key": "a"}',
    b'{"x": [1, 2, 3], "y": 1, "task": 0}',  # tasks: plain integers up to MAX_TASK
    b'{"task": 2147483647, "key": "a", "x": [1, 2, 3]}',
    b'{"x": [1, 2, 3], "task" : 17 , "y": 0}',
]


def per_record(decoder: RecordDecoder, values: list[bytes]) -> BatchBuilder:
    builder = BatchBuilder()
    for value in values:
        assert decoder.decode_into(value, builder) is None
    return builder


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_scanned_columns_are_those_of_the_per_record_path(task: str) -> None:
    decoder = RecordDecoder(n_features=3, task=task)
    scanned = scan_columns(decoder, VALID)
    assert scanned is not None
    expected = per_record(RecordDecoder(n_features=3, task=task), VALID).build()
    assert (scanned.keys, scanned.ids, scanned.tasks) == \
        (expected.keys, expected.ids, expected.tasks)
    assert scanned.X.tobytes() == expected.X.tobytes()
    assert scanned.y.tobytes() == expected.y.tobytes()
    # Each record alone, too (the y-first rotation at the buffer's end).
    for value in VALID:
        one = scan_columns(decoder, [value])
        assert one is not None and one.X.tobytes() == per_record(
            RecordDecoder(n_features=3, task=task), [value]).build().X.tobytes()


def test_random_numbers_scan_to_the_same_bits() -> None:
    rng = np.random.default_rng(3)
    values = []
    for i in range(500):
        row = rng.normal(size=3) * 10.0 ** rng.integers(-30, 30, size=3)
        texts = [repr(float(v)) if i % 3 else f"{v:.25g}" for v in row]
        values.append(f'{{"x": [{", ".join(texts)}], "y": {i % 2}}}'.encode())
    scanned = scan_columns(RecordDecoder(n_features=3), values)
    assert scanned is not None
    expected = per_record(RecordDecoder(n_features=3), values).build()
    assert scanned.X.tobytes() == expected.X.tobytes()


@pytest.mark.parametrize("line", [
    b'{"y": 1}', b'{"x": [1, 2, 3], "y": 1, "key": 7}', b'{"x": [1, 2, 3], "key": ""}',
    b'{"x": [1, 2, 3], "key": "a\\"b"}', b'{"x": [1, 2, 3], "key": "\xff"}',
    b'{"x": [1, 2, 3], "key": "a", "key": "a"}', b'{"x": [1, 2, 3], "id": "a"}',
    b'{"x": [1, 2, 3], "task": -1}', b'{"x": [1, 2, 3], "task": 2147483648}',
    b'{"x": [1, 2, 3], "task": 99999999999}', b'{"x": [1, 2, 3], "task": 2.0}',
    b'{"x": [1, 2, 3], "task": 1e2}', b'{"x": [1, 2, 3], "task": 01}', b'{"x": [1, 2, 3], "task": true}',
    b'{"x": [1, 2, 3], "task": null}', b'{"x": [1, 2, 3], "task": "1"}', b'{"x": [1, 2, 3], "tas": 1}',
    b'{"x": [1, 2, 3], "task": 1, "task": 1}', b'{"x": [1, 2, 3], "task": }', b'{"x": [1, 2, 3], "ke": "a"}', b'{"x": [1, 2, 3], "keys": "a"}',
    b'{"x": [1, 2, 3], "key": "' + b"k" * 1100 + b'"}', b'{"x": [1, 2, 3], "key": "a\tb"}',
    b'{"x": [1, 2, 3], "y": null}', b'{"x": [1, 2, 3], "y": true}',
    b'{"x": [1, 2, 3], "y": "1"}', b'{"x": [1, 2], "y": 1}', b'{"x": [1, 2, 3, 4], "y": 1}',
    b'{"x": [1, 2, [3]], "y": 1}', b'{"\\u0078": [1, 2, 3], "y": 1}', b'{"x": [1, 2, 3], "x": [1, 2, 3]}',
    b'{"x": [1, 2, 3], "y": 1}x', b'\xef\xbb\xbf{"x": [1, 2, 3], "y": 1}', b'{"x": [01, 2, 3], "y": 1}',
    b'{"x": [1., 2, 3], "y": 1}', b'{"x": [-, 2, 3], "y": 1}', b'{"x": [NaN, 2, 3], "y": 1}',
    b'{"x": [1e999, 2, 3], "y": 1}', b'{"x": [1, 2, 3], "y": 1e999}', b'{"x": [1, 2, 3], "y": 1,}',
    b'{"x": [1, 2, 3,], "y": 1}', b'{"x": {"a": 1, "b": 2, "c": 3}, "y": 1}', b'', b'[1, 2, 3]',
    b'{"x": [1, 2, 3], "y": 1e400000000000000000000}', b'{"x": [1e2e2, 2, 3], "y": 1}',
    b'{"x": [1 2, 3], "y": 1}', b'{"x": [1, 2, 3] "y": 1}', b'{"x": [1, 2, 3], "y": 1}}',
    b'{"x": [1, 2, 3], "y": 123456789012345678901234567890}',  # a class label beyond 64 bits
    b'{}', b'{"x": [1, 2, 3], "y": 1, }', b'{"x": [1, 2, 3], "y": 1', b'{"x": [1, 2, 3], "key": "a',
    b'{"x": [1, 2, 3' + b"0" * 320 + b'], "y": 1}',  # beyond float range
])
def test_anything_else_is_left_to_the_general_decode(line: bytes) -> None:
    decoder = RecordDecoder(n_features=3, task="classification")
    assert scan_columns(decoder, [b'{"x": [1, 2, 3], "y": 0}', line]) is None
    # And the general decode then says what the per-record path says: plain or not.
    general = decode_columns(decoder, [b'{"x": [1, 2, 3], "y": 0}', line])
    builder = BatchBuilder()
    try:
        plain = all(decoder.decode_into(v, builder) is None
                    for v in [b'{"x": [1, 2, 3], "y": 0}', line])
    except Exception:  # noqa: BLE001 - a RecordError: the record is rejected
        plain = False
    assert general is None or plain


def test_mutated_records_are_scanned_only_when_the_per_record_path_agrees() -> None:
    # Random byte edits of valid records: whatever the scan takes, the per-record path takes
    # too, with the same bits; whatever it refuses is left to the general decode.
    rng = np.random.default_rng(11)
    alphabet = b' \t\n"{}[],:.-+eExyk0123456789atsk\\'
    taken = 0
    for _ in range(3000):
        line = bytearray(VALID[int(rng.integers(len(VALID)))])
        for _ in range(int(rng.integers(1, 3))):
            at = int(rng.integers(len(line) + 1))
            op = int(rng.integers(3))
            byte = alphabet[int(rng.integers(len(alphabet)))]
            if op == 0 and at < len(line):
                del line[at]
            elif op == 1:
                line.insert(at, byte)
            elif at < len(line):
                line[at] = byte
        values = [b'{"x": [1, 2, 3], "y": 0}', bytes(line)]
        scanned = scan_columns(RecordDecoder(n_features=3, task="regression"), values)
        if scanned is None:
            continue
        taken += 1
        expected = per_record(RecordDecoder(n_features=3, task="regression"), values).build()
        assert scanned.X.tobytes() == expected.X.tobytes(), line
        assert scanned.y.tobytes() == expected.y.tobytes(), line
        assert (scanned.keys, scanned.ids, scanned.tasks) == \
            (expected.keys, expected.ids, expected.tasks), line
    assert taken > 100  # whitespace and digit edits keep many records plain


def test_many_keys_are_told_apart_as_the_per_record_path_does() -> None:
    # Thousands of keys in one batch, some of them prefixes of others, and records without a
    # key among them: the hash table of distinct keys must give each record its own key.
    rng = np.random.default_rng(5)
    names = [f"k{i}" for i in range(3000)] + ["k", "default", "\u00e9t\u00e9", "k1 "]
    values = []
    for i in range(6000):
        x = ", ".join(repr(float(v)) for v in rng.normal(size=3))
        key = names[int(rng.integers(len(names)))]
        field = "" if i % 7 == 0 else f', "key": "{key}"'
        values.append(f'{{"x": [{x}], "y": {i % 2}{field}}}'.encode())
    scanned = scan_columns(RecordDecoder(n_features=3), values)
    assert scanned is not None
    expected = per_record(RecordDecoder(n_features=3), values).build()
    assert scanned.keys == expected.keys
    assert scanned.X.tobytes() == expected.X.tobytes()


def test_a_key_is_scanned_up_to_the_name_limit_in_bytes_and_every_key_new() -> None:
    # 1024 bytes (the limit, "é" being two) is a key; a byte more is left to the general
    # decode, which rejects it. A batch of keys all distinct (and one record without a key)
    # comes back in record order.
    decoder = RecordDecoder(n_features=1)
    longest = "\u00e9" * 512
    values = [f'{{"x": [1], "key": "{key}"}}'.encode() for key in [longest, *map(str, range(50))]]
    values.append(b'{"x": [2]}')
    scanned = scan_columns(decoder, values)
    assert scanned is not None
    assert scanned.keys == per_record(RecordDecoder(n_features=1), values).build().keys
    assert scanned.keys[0] == longest and scanned.keys[-1] == "default"
    assert scan_columns(decoder, [f'{{"x": [1], "key": "{longest}a"}}'.encode()]) is None
