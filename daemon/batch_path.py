"""One polled batch on its way through the runner: decoded into columns, routed, and its
predictions encoded, each the lean way where the batch allows and record by record otherwise.

A source's run of plain lines (a :class:`~adaptd.connectors.base.RecordRun`), or a list of
plain records from any source, is decoded straight into columns
(:mod:`adaptd.records.columns`) and its predictions are written as one buffer
(:mod:`adaptd.records.encoded`); any other batch goes record by record, to the same bytes
(``tests/unit/test_lean_path.py`` checks). The runner (:mod:`adaptd.runner`) calls these in
order and owns everything they do not: learning, accounting, positions, checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import numpy as np

from adaptd.connectors.base import EncodedBatch, LineRun, RecordRun, SinkMessage, SourceRecord
from adaptd.errors import RecordError
from adaptd.isolation import encode_isolating, select
from adaptd.labels import kept_features
from adaptd.learner import Outcomes, PendingFeatures
from adaptd.records import BatchBuilder, RecordBatch, RecordDecoder, TaskKind
from adaptd.records.columns import decode_columns, decode_lines, fix_layout
from adaptd.records.encoded import encoded_predictions

Polled: TypeAlias = list[SourceRecord] | RecordRun
Reject: TypeAlias = Callable[[SourceRecord, RecordError], None]


class DecodedRun(LineRun):
    """A run of lines decoded ahead, on the read-ahead thread (:mod:`adaptd.read_ahead`):
    ``columns`` are what :func:`run_columns` returned for it (None: not plain) while the
    decoder's layout was ``layout``."""

    __slots__ = ("columns", "layout")

    def __init__(self, run: LineRun, columns: RecordBatch | None, layout: dict[str, Any]
                 ) -> None:
        super().__init__(run.partition, run.first_position, run.text, run.bounds)
        self.columns = columns
        self.layout = layout


class DecodedValues(RecordRun):
    """Any other run (a Kafka client's) decoded ahead, as :class:`DecodedRun`: the same
    records as ``run``, which it hands every record request to, with ``columns`` decoded
    from its values while the decoder's layout was ``layout``."""

    __slots__ = ("columns", "layout", "run")

    def __init__(self, run: RecordRun, columns: RecordBatch | None, layout: dict[str, Any]
                 ) -> None:
        super().__init__(run.partition, run.first_position, run.values)
        self.run = run
        self.columns = columns
        self.layout = layout

    def __getitem__(self, i: int) -> SourceRecord:
        return self.run[i]

    def records(self) -> list[SourceRecord]:
        return self.run.records()


def decode_ahead(decoder: RecordDecoder, raws: Polled) -> Polled:
    """A run with its columns decoded (a :class:`DecodedRun` or :class:`DecodedValues`); a
    list as it is. Called on the read-ahead thread while the runner's thread works on the
    batch before, so it only reads the decoder; :func:`decode` uses the columns only if the
    decoder's layout is still the one read here before decoding (it is fixed once, by the
    first record, and never changes after)."""
    if not isinstance(raws, RecordRun):
        return raws
    layout = decoder.layout()
    if isinstance(raws, LineRun):
        return DecodedRun(raws, run_columns(decoder, raws), layout)
    return DecodedValues(raws, decode_columns(decoder, raws.values), layout)


def run_columns(decoder: RecordDecoder, run: RecordRun) -> RecordBatch | None:
    """A run's columns if its records are plain (:func:`decode_columns`), else None; a run of
    lines is scanned straight from its buffer, and one decoded ahead for the decoder's
    layout of now is not decoded again."""
    if isinstance(run, (DecodedRun, DecodedValues)) and run.layout == decoder.layout():
        return run.columns
    if isinstance(run, LineRun):
        batch = decode_lines(decoder, run.text, np.asarray(run.bounds, dtype=np.int64))
        if batch is not None:
            return batch
    return decode_columns(decoder, run.values)


def decode(decoder: RecordDecoder, pending: PendingFeatures | None, raws: Polled, reject: Reject
           ) -> tuple[Polled, RecordBatch]:
    """The records that decode, and their columns; the others go to ``reject``.

    A batch of plain records (a run, or a list from any source) is decoded in columns at
    once; any other batch record by record. A delayed label (``id`` and ``y``, no ``x``)
    takes the key and features kept under its id in ``pending`` (by an earlier batch, or
    earlier in this one); with none kept it is rejected as ``label_unmatched``, so the label
    is not lost silently."""
    if raws and raws[0].truncated_from is None:
        fix_layout(decoder, raws[0].value)  # a run's first batch: then in columns too
    if isinstance(raws, RecordRun):
        batch = run_columns(decoder, raws)
        if batch is not None:
            return raws, batch
        raws = raws.records()
    elif all(raw.truncated_from is None for raw in raws):
        batch = decode_columns(decoder, [raw.value for raw in raws])
        if batch is not None:
            return raws, batch
    good: list[SourceRecord] = []
    builder = BatchBuilder()
    for raw in raws:
        try:
            if raw.truncated_from is not None:  # the source kept only its first bytes
                raise RecordError("oversized", f"record is {raw.truncated_from} bytes, "
                                  f"limit is {decoder.max_record_bytes}")
            label = decoder.decode_into(raw.value, builder)
            if label is not None:
                key, x = kept_features(pending, builder, label.id)
                builder.add(key, x, label.y, label.id, label.task)
        except RecordError as err:
            reject(raw, err)
            continue
        good.append(raw)
    return good, builder.build()


def routing(good: Polled, batch: RecordBatch) -> tuple[RecordBatch, list[int]]:
    """The rows that tell which partition each key comes from, and their partitions. A run
    has one partition, so with no ids (no delayed label to join) each key's first record says
    it all: a batch of 4096 records of one key is routed as one row, not 4096."""
    if not isinstance(good, RecordRun):
        return batch, [raw.partition for raw in good]
    if batch.ids.count(None) == len(batch):
        n = len(batch)
        first = dict(zip(reversed(batch.keys), range(n - 1, -1, -1)))  # key → first row
        if len(first) < n:
            batch = select(batch, sorted(first.values()))
    return batch, [good.partition] * len(batch)


def encode_lean(good: Polled, batch: RecordBatch, outcomes: Outcomes, task: TaskKind
                ) -> EncodedBatch | None:
    """The batch's predictions as one pre-encoded buffer, or None where the batch's shape
    does not allow it. Touches nothing but its arguments (the write-behind thread calls it:
    :mod:`adaptd.write_behind`)."""
    positions: Sequence[int]
    if isinstance(good, RecordRun):
        partitions, positions = [good.partition] * len(good), \
            range(good.first_position, good.next_position)
    else:
        partitions, positions = [raw.partition for raw in good], [raw.position for raw in good]
    try:
        return encoded_predictions(partitions, positions, batch, outcomes, task)
    except (TypeError, ValueError):  # orjson's JSONEncodeError is a TypeError
        return None


def encode_each(good: Polled, batch: RecordBatch, outcomes: Outcomes, task: TaskKind,
                reject: Reject) -> list[SinkMessage]:
    """The batch's predictions message by message, where one that cannot be encoded goes to
    ``reject`` (learned from, not predicted) and is left out."""
    records = good.records() if isinstance(good, RecordRun) else good
    return encode_isolating(records, batch, outcomes, task, reject)


def encode(good: Polled, batch: RecordBatch, outcomes: Outcomes, task: TaskKind,
           reject: Reject) -> EncodedBatch | list[SinkMessage]:
    """The batch's predictions: one pre-encoded buffer where the batch's shape allows
    (:func:`encode_lean`), else message by message (:func:`encode_each`)."""
    encoded = encode_lean(good, batch, outcomes, task)
    return encoded if encoded is not None else encode_each(good, batch, outcomes, task, reject)
