"""Sink messages written into Kafka record batches by compiled code, for the kafka-python sink.

:func:`~adaptd.connectors.kafka_python_records.fill_batch` writes a batch's records in a
Python loop, about 1 µs a message. Here the messages of a write are packed once — their values
as one buffer with bounds, each distinct key's encoded field once — and :func:`fill_rows` writes
the records of one partition (``rows`` of the packed messages) with :func:`_write`, a compiled
loop over that buffer: the same bytes (``tests/unit/test_kafka_records.py`` holds them equal to
kafka-python's own builder). Messages with headers (dead letters) or with no key take the
Python path.

A write's records may go on filling the batch an earlier write started, while it waits in the
producer's accumulator (as kafka-python's own ``send`` appends to the partition's last batch):
fewer, fuller produce requests.

Record layout (Kafka message format v2, KIP-98): ``length varint, attributes int8 (0),
timestampDelta varlong (from the batch's first timestamp; the records of one write share
theirs), offsetDelta varint, key field, valueLength varint, value, header count varint (0)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from kafka.record.default_records import DefaultRecordBatchBuilder

from adaptd.connectors.base import SinkMessage
from adaptd.learner.jit import njit

#: A record's bytes beyond its value and key field, at most: length, attributes, timestamp
#: delta, offset delta, value length, header count.
_RECORD_OVERHEAD = 5 + 1 + 10 + 5 + 5 + 1


@njit(inline=True, refcounts=False)
def _zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


@njit(inline=True, refcounts=False)
def _varint_size(value: int) -> int:
    """Bytes of ``value`` as a zigzag varint."""
    raw = _zigzag(value)
    size = 1
    while raw >= 128:
        raw >>= 7
        size += 1
    return size


@njit(inline=True, refcounts=False)
def _put_varint(out: np.ndarray, o: int, value: int) -> int:
    """Write ``value`` as a zigzag varint at ``out[o]``; the position after it."""
    raw = _zigzag(value)
    while raw >= 128:
        out[o] = (raw & 127) | 128
        raw >>= 7
        o += 1
    out[o] = raw
    return o + 1


@njit(refcounts=False)
def _write(buf: np.ndarray, bounds: np.ndarray, key_fields: np.ndarray, key_bounds: np.ndarray,
           key_ids: np.ndarray, rows: np.ndarray, start: int, first_delta: int,
           timestamp_delta: int, size: int, limit: int, out: np.ndarray
           ) -> tuple[int, int, int]:
    """Write the records of messages ``rows[start:end]`` (offset deltas ``first_delta``,
    ``first_delta + 1``, …, all at ``timestamp_delta``) into ``out`` while the batch stays
    within ``limit`` bytes (``size`` so far), at least one record if it is the batch's first.
    Message ``i``'s value is ``buf[bounds[i]:bounds[i + 1]]``, its key field
    ``key_fields[key_bounds[k]:key_bounds[k + 1]]`` with ``k = key_ids[i]``. Returns the
    bytes written, ``end`` and the largest record's size."""
    o = 0
    largest = 0
    ts_size = _varint_size(timestamp_delta)
    for r in range(start, len(rows)):
        i = rows[r]
        delta = first_delta + r - start
        value_len = bounds[i + 1] - bounds[i]
        k = key_ids[i]
        key_len = key_bounds[k + 1] - key_bounds[k]
        body = 1 + ts_size + _varint_size(delta) + key_len + _varint_size(value_len) \
            + value_len + 1
        needed = _varint_size(body) + body
        if size + needed > limit and delta > 0:
            return o, r, largest
        size += needed
        largest = max(largest, needed)
        o = _put_varint(out, o, body)
        out[o] = 0  # attributes
        o = _put_varint(out, o + 1, timestamp_delta)
        o = _put_varint(out, o, delta)
        for t in range(key_bounds[k], key_bounds[k + 1]):
            out[o] = key_fields[t]
            o += 1
        o = _put_varint(out, o, value_len)
        for t in range(bounds[i], bounds[i + 1]):
            out[o] = buf[t]
            o += 1
        out[o] = 0  # no headers
        o += 1
    return o, len(rows), largest


def key_field(key: bytes) -> bytes:
    """A key's encoded field: its length as a zigzag varint, then its bytes."""
    raw, out = len(key) << 1, bytearray()
    while raw >= 128:
        out.append((raw & 127) | 128)
        raw >>= 7
    out.append(raw)
    return bytes(out) + key


@dataclass(slots=True)
class Packed:
    """The messages of one write, packed for :func:`fill_rows`: values as one buffer, keys as
    ids into the distinct keys (``keys[key_ids[i]]``)."""

    values: list[bytes]
    buffer: np.ndarray
    bounds: np.ndarray
    keys: list[bytes]
    key_ids: np.ndarray
    key_fields: np.ndarray
    key_bounds: np.ndarray

    @classmethod
    def of(cls, values: list[bytes], keys: Sequence[bytes | None]) -> Packed | None:
        """``values`` with ``keys``, or None when a key is missing (the Python path places
        those one by one)."""
        distinct = list(dict.fromkeys(keys))
        if None in distinct:
            return None
        ids = {key: i for i, key in enumerate(distinct)}
        n = len(values)
        bounds = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, values), dtype=np.int64, count=n), out=bounds[1:])
        fields = [key_field(key) for key in distinct]  # type: ignore[arg-type]
        key_bounds = np.zeros(len(fields) + 1, dtype=np.int64)
        np.cumsum([len(f) for f in fields], out=key_bounds[1:])
        return cls(values, np.frombuffer(b"".join(values), dtype=np.uint8), bounds,
                   distinct,  # type: ignore[arg-type]
                   np.fromiter(map(ids.__getitem__, keys), dtype=np.int64, count=n),
                   np.frombuffer(b"".join(fields), dtype=np.uint8), key_bounds)

    def partition_rows(self, partition_of: Sequence[int]) -> dict[int, np.ndarray]:
        """The rows of each partition, in order; ``partition_of[k]`` is key ``k``'s."""
        partitions = np.asarray(partition_of, dtype=np.int64)[self.key_ids]
        if len(partition_of) == 1 or (partitions == partitions[0]).all():
            return {int(partitions[0]): np.arange(len(self.values))}
        return {int(p): np.flatnonzero(partitions == p) for p in np.unique(partitions)}


@dataclass(slots=True)
class Rows:
    """Some of the packed messages (``rows``), as the sink keeps them until they are
    acknowledged; a message is built only for a failed delivery."""

    packed: Packed
    rows: np.ndarray
    #: Where the first of them sits in its producer batch (a batch an earlier write began).
    base: int = 0

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> SinkMessage:
        row = int(self.rows[i])
        return SinkMessage(self.packed.values[row],
                           self.packed.keys[int(self.packed.key_ids[row])])


def fill_rows(builder: DefaultRecordBatchBuilder, packed: Packed, rows: np.ndarray, start: int,
              timestamp_ms: int) -> tuple[int, int]:
    """Write ``rows[start:end]`` of ``packed`` into ``builder`` after the records it holds, all
    at ``timestamp_ms``, as many as fit its batch size (at least one into an empty builder;
    maybe none into one that holds records). Returns ``(end, largest record size)``, as
    :func:`~adaptd.connectors.kafka_python_records.fill_batch` does; the caller tells the
    ``MemoryRecordsBuilder`` around ``builder`` how many offsets are used."""
    held = builder._num_records
    first_ts = timestamp_ms if not held else builder._first_timestamp
    chosen = rows[start:]
    payload = int((packed.bounds[chosen + 1] - packed.bounds[chosen]).sum())
    longest_key = int(np.diff(packed.key_bounds).max())
    out = np.empty(payload + len(chosen) * (longest_key + _RECORD_OVERHEAD), dtype=np.uint8)
    written, end, largest = _write(packed.buffer, packed.bounds, packed.key_fields,
                                   packed.key_bounds, packed.key_ids, rows, start, held,
                                   timestamp_ms - first_ts, len(builder._buffer),
                                   builder._batch_size, out)
    if end == start:
        return end, 0
    count = held + end - start
    builder._buffer += out[:written].tobytes()
    builder._num_records = count
    builder._last_offset = count - 1
    builder._first_timestamp = first_ts
    builder._max_timestamp = timestamp_ms if not held \
        else max(builder._max_timestamp, timestamp_ms)
    return end, largest
