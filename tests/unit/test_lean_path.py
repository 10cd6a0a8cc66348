"""The lean record path (a run of lines decoded into columns, predictions encoded as one
buffer) against the per-record path: the same bytes out, for any input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

import adaptd.batch_path
from adaptd.checkpoint import CheckpointStore
from adaptd.config import load_settings
from adaptd.connectors.base import RecordRun, SourceRecord
from adaptd.connectors.jsonl import JsonlConnector, JsonlSource
from adaptd.connectors.registry import open_sink
from adaptd.errors import RecordError
from adaptd.learner import build_learner
from adaptd.metrics import Metrics
from adaptd.records import BatchBuilder, RecordDecoder
from adaptd.records.columns import decode_columns, decode_lines, fix_layout
from adaptd.runner import Runner, RunnerConfig, RunSummary

MAX_RECORD_BYTES = 400


class PerRecordSource(JsonlSource):
    """The jsonl source as a source without runs (lists of records, as Kafka hands out)."""

    def poll_many(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        records = super().poll_many(max_records, timeout_s)
        return records.records() if isinstance(records, RecordRun) else records


def x(i: int) -> list[float]:
    return [round(np.sin(i) * 3, 6), i % 7, -1.5e-7 * i]


def record(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def mixed_lines(task: str) -> list[bytes]:
    """Plain batches (string keys, no keys, ids, unlabelled records) with unusual and bad
    records among them; with a batch size of 8 some batches are all plain, others not."""
    label = (lambda i: i % 2) if task == "classification" else (lambda i: i / 3)
    lines = [record(x=x(i), y=label(i), key="ab"[i % 2]) for i in range(16)]
    lines += [record(x=x(i), y=label(i)) for i in range(16, 24)]  # the default key
    lines += [record(x=x(i), id=f"r{i}", key="untrue") for i in range(24, 32)]  # kept for labels
    lines += [record(x=x(i), id=f"s{i}", y=label(i), key="b") for i in range(32, 40)]
    lines += [
        record(id="r25", y=label(1)),  # a delayed label
        record(id="never", y=1),  # label_unmatched
        b"\xff\xfe not utf-8",
        b'{"key": "\\ud800", "x": [1, 2, 3], "y": 1}',  # a lone surrogate
        b"[" * 5000 + b"]" * 5000,  # deep nesting (and oversized)
        record(x=x(1) + [0.0] * 200, y=1),  # oversized
        record(y=1),  # missing x
        record(x=[True, 1, 2], y=1),  # a bool is not a feature
        record(x=x(2), y="cat"),
        record(x=x(3), y=1, task=2),
        record(x=x(4), y=1, key=7),  # a number key is its text
        record(x={"a": 1, "b": 2, "c": 3}, y=1),  # an object x after list ones
        b"   ",  # blank: no record, but a position
        record(x=x(5), y=None, id=None),
        b"{not json",
    ]
    lines += [record(x=x(i), y=label(i), key=f"k{i % 3}") for i in range(60, 76)]
    lines += [record(x=x(i), y=label(i), id=f"t{i}") for i in range(76, 80)]
    lines += [record(x=x(i), id=f"t{i}") for i in range(80, 84)]  # unlabelled: no loss
    return lines


def run(tmp_path: Path, lines: list[bytes], task: str, per_record: bool) -> tuple[
        bytes, bytes, RunSummary, dict[int, int]]:
    tmp_path.mkdir()
    source_file = tmp_path / "in.jsonl"
    source_file.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path
    uri = f"jsonl:{source_file}"
    source = PerRecordSource(JsonlConnector.source(uri).options) if per_record else \
        JsonlConnector.source(uri)
    settings = load_settings(environ={}, flags={"model": "linear", "task": task})
    runner = Runner(
        source=source, learner=build_learner(settings),
        decoder=RecordDecoder(task=task, max_record_bytes=MAX_RECORD_BYTES),
        metrics=Metrics(CollectorRegistry()), store=CheckpointStore(out / "state"),
        sink=open_sink(f"jsonl:{out / 'predictions.jsonl'}"),
        dead_letter=open_sink(f"jsonl:{out / 'dead.jsonl'}"),
        config=RunnerConfig(task=task, batch_size=8, poll_timeout_s=0.01,
                            checkpoint_every_records=20))
    summary = runner.run()
    return ((out / "predictions.jsonl").read_bytes(), (out / "dead.jsonl").read_bytes(),
            summary, runner.partitions.positions())


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_lean_and_per_record_paths_write_the_same_bytes(
        tmp_path: Path, task: str, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = []

    def counting(decode: Callable[..., object]) -> Callable[..., object]:
        def decode_counted(*args: object) -> object:
            batch = decode(*args)
            taken.append(batch is not None)
            return batch
        return decode_counted

    # A run of lines is scanned from its buffer (decode_lines), any other batch in columns.
    monkeypatch.setattr(adaptd.batch_path, "decode_columns", counting(decode_columns))
    monkeypatch.setattr(adaptd.batch_path, "decode_lines", counting(decode_lines))
    lines = mixed_lines(task)
    lean = run(tmp_path / "runs", lines, task, per_record=False)
    assert sum(taken) >= 6 and not all(taken)  # both paths were taken
    # A source that hands out lists of records: the lean decode takes them too.
    taken.clear()
    from_lists = run(tmp_path / "lists", lines, task, per_record=True)
    assert sum(taken) >= 6 and not all(taken)
    assert from_lists[:2] == lean[:2] and from_lists[3] == lean[3]
    # The reference: decoded record by record, and encoded message by message.
    monkeypatch.setattr(adaptd.batch_path, "decode_columns", lambda *args: None)
    monkeypatch.setattr(adaptd.batch_path, "decode_lines", lambda *args: None)
    monkeypatch.setattr(adaptd.batch_path, "encoded_predictions", lambda *args: None)
    per_record = run(tmp_path / "reference", lines, task, per_record=True)
    assert lean[0] == per_record[0]
    assert lean[1] == per_record[1]
    assert lean[2].records == per_record[2].records == len(lines) - 1  # the blank line
    assert (lean[2].predictions, lean[2].updates, lean[2].rejected) == \
        (per_record[2].predictions, per_record[2].updates, per_record[2].rejected)
    assert lean[3] == per_record[3] == {0: len(lines)}
    reasons = {json.loads(line)["reason"] for line in lean[1].splitlines()}
    assert {"label_unmatched", "not_json", "oversized", "bad_key", "missing_x", "bad_x"} <= reasons
    predictions = [json.loads(line) for line in lean[0].splitlines()]
    assert {p["key"] for p in predictions} >= {"a", "b", "default", "untrue", "7", "k0"}
    assert any("loss" not in p for p in predictions) and any("loss" in p for p in predictions)


def builder_columns(decoder: RecordDecoder, values: list[bytes]) -> BatchBuilder:
    builder = BatchBuilder()
    for value in values:
        assert decoder.decode_into(value, builder) is None
    return builder


def test_plain_batches_decode_to_the_columns_of_the_per_record_path() -> None:
    values = [record(x=x(i), y=i % 2, key="ab"[i % 2], id=f"r{i}" if i % 3 else None)
              for i in range(10)]
    values += [record(x=x(10)), b'{"x": [1, 2, 3], "y": 1, "ts": 5, "other": "true"}',
               record(x=x(11), y=1, task=0), record(x=x(12), task=2147483647, key="a")]
    decoder = RecordDecoder(n_features=3)
    lean = decode_columns(decoder, values)
    assert lean is not None
    expected = builder_columns(decoder, values).build()
    assert lean.keys == expected.keys and lean.ids == expected.ids
    assert lean.tasks == expected.tasks
    assert lean.X.tobytes() == expected.X.tobytes()
    np.testing.assert_array_equal(lean.y, expected.y)


@pytest.mark.parametrize("line", [
    b'{"x": [1, 2, true], "y": 1}', b'{"x": [1, 2, "3"], "y": 1}', b'{"x": [1, 2], "y": 1}',
    b'{"x": [1, 2, 1e999], "y": 1}', b'{"x": [1, 2, 3], "y": "1"}', b'{"x": [1, 2, 3], "key": ""}',
    b'{"x": [1, 2, 3], "key": 5}', b'{"x": [1, 2, 3], "id": 5}', b'{"x": [1, 2, 3], "task": -1}',
    b'{"x": [1, 2, 3], "task": 2.0}', b'{"x": [1, 2, 3], "task": true}',
    b'{"x": [1, 2, 3], "task": 2147483648}', b'{"x": [1, 2, 3], "task": "1"}',
    b'{"id": "a", "y": 1}', b'[1, 2, 3]', b'{"x": {"a": 1, "b": 2, "c": 3}}',
    b'{"x": [1, 2, 3], "y": 123456789012345678901234567890}', b'{"x": [1, 2, 3], "y": NaN}',
    b'{"x": [1, 2, 30000000000000000000000000000000000000]}' + b" " * 400,
])
@pytest.mark.parametrize("first", [b'{"x": [1, 2, 3]}', b'{"x": [1, 2, 3], "y": 0}'])
def test_anything_unusual_sends_the_batch_record_by_record(first: bytes, line: bytes) -> None:
    # The second ``first`` has exactly the fields x and y: a batch of only such records
    # skips the key, id and task columns, so two-field lines must not slip through with it.
    decoder = RecordDecoder(n_features=3, task="classification", max_record_bytes=400)
    assert decode_columns(decoder, [first, line]) is None


def test_records_of_only_x_and_y_decode_to_the_columns_of_the_per_record_path() -> None:
    values = [record(x=x(i), y=i % 2) for i in range(10)] + [b'{"y": null, "x": [1, 2, 3]}']
    decoder = RecordDecoder(n_features=3)
    lean = decode_columns(decoder, values)
    assert lean is not None
    expected = builder_columns(decoder, values).build()
    assert (lean.keys, lean.ids, lean.tasks) == (expected.keys, expected.ids, expected.tasks)
    assert lean.X.tobytes() == expected.X.tobytes() and lean.y.tobytes() == expected.y.tobytes()


def test_a_decoder_without_a_layout_decodes_record_by_record() -> None:
    assert decode_columns(RecordDecoder(), [b'{"x": [1, 2, 3]}']) is None


@pytest.mark.parametrize("first", [record(x=x(0), y=1.5, key="a"), b'{"x": [1, 2, true]}',
                                   b'{"x": [1, 2]}', b'{"x": {"a": 1, "b": 2, "c": 3}}'])
def test_a_first_batch_decodes_in_columns_as_record_by_record(first: bytes) -> None:
    """A run's first batch fixes the layout from its first record (when valid) and decodes in
    columns: the records, columns, rejections and layout are the per-record path's."""
    values = [first] + [record(x=x(i), y=i * 0.5, key="ab"[i % 2]) for i in range(1, 20)]
    raws = [SourceRecord(0, i, v) for i, v in enumerate(values)]
    decoder, rejected = RecordDecoder(), []
    good, batch = adaptd.batch_path.decode(
        decoder, None, raws, lambda raw, err: rejected.append((raw.position, err.reason)))
    expected_decoder, builder, expected_rejected = RecordDecoder(), BatchBuilder(), []
    for raw in raws:
        try:
            expected_decoder.decode_into(raw.value, builder)
        except RecordError as err:
            expected_rejected.append((raw.position, err.reason))
    expected = builder.build()
    assert len(good) == len(batch) == len(expected) == len(values) - len(rejected)
    assert (batch.keys, batch.X.tobytes(), batch.y.tobytes()) == \
        (expected.keys, expected.X.tobytes(), expected.y.tobytes())
    assert rejected == expected_rejected
    assert decoder.layout() == expected_decoder.layout()


def test_fix_layout_takes_a_valid_first_record_only() -> None:
    decoder = RecordDecoder()
    for not_fixing in (b'{"x": [1, true]}', b'{"id": "r", "y": 1}', b"[1, 2]", b'{"x": []}'):
        fix_layout(decoder, not_fixing)
        assert decoder.layout() == {"n_features": None, "feature_names": None}
    fix_layout(decoder, b'{"x": {"b": 1, "a": 2}, "y": 3}')
    assert decoder.layout() == {"n_features": 2, "feature_names": ("a", "b")}
    fix_layout(decoder, b'{"x": [1, 2, 3]}')  # fixed already: kept
    assert decoder.n_features == 2
    assert decode_columns(decoder, [b'{"x": {"a": 1, "b": 2}}']) is not None
