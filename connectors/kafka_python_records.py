"""Kafka record batches (message format v2) read and written a batch at a time, for the
kafka-python client: fetched batches straight into :class:`SourceRecord` lists, and sink
messages straight into a producer batch's buffer.

kafka-python turns each fetched record into a ``DefaultRecord``, then a ``ConsumerRecord`` of 13
fields, one generator step at a time: about 8 µs a record in pure Python, most of what a
consumer of this client pays per record. The daemon needs four fields of each (position, value,
key, timestamp), so :class:`BatchPartitionRecords` reads a whole record batch in one loop
(:func:`read_batch`) and hands out slices of the resulting list. Everything around the records
stays kafka-python's: fetch requests, positions, CRC checks, decompression, transactions
(aborted and control batches are skipped exactly as kafka-python skips them).

Writing: ``DefaultRecordBatchBuilder.append`` checks types, encodes varints a byte at a time and
returns metadata per message, about 3 µs each. :func:`fill_batch` writes the same bytes (the
unit test holds them equal) from tables of encoded varints, one ``join`` per batch, and leaves
the header, compression, CRC and producer state to kafka-python's builder.

Record batch layout (Kafka message format v2, KIP-98; ``DefaultRecordBatch`` in kafka-python):
each record is ``length varint, attributes int8, timestampDelta varlong, offsetDelta varint,
keyLength varint, key, valueLength varint, value, headers``; varints are zigzag-encoded
protobuf varints. Headers are not read: ``length`` says where the next record starts.

This reaches into kafka-python internals (``Fetcher.PartitionRecords``), so :func:`install`
checks they are there and leaves the consumer as it is if a release moves them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from kafka.consumer.fetcher import Fetcher, IsolationLevel
from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.util import decode_varint, encode_varint

from adaptd.connectors.base import SinkMessage, SourceRecord

log = logging.getLogger(__name__)

#: Zigzag-decoded value of every one-byte varint.
_ONE_BYTE = [(b >> 1) ^ -(b & 1) for b in range(128)]


def varint(value: int) -> bytes:
    """``value`` as a zigzag varint."""
    out = bytearray()
    encode_varint(value, out.append)
    return bytes(out)


#: Encoded varints of 0 … 16383: record lengths, value lengths and offset deltas.
_VARINTS = [varint(i) for i in range(1 << 14)]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """The zigzag varint at ``data[pos]`` and the position after it; one- and two-byte ones
    (nearly every field of a record) without a loop."""
    b = data[pos]
    if b < 128:
        return _ONE_BYTE[b], pos + 1
    b2 = data[pos + 1]
    if b2 < 128:
        raw = (b & 127) | (b2 << 7)
        return (raw >> 1) ^ -(raw & 1), pos + 2
    return decode_varint(data, pos)  # type: ignore[no-any-return]


def read_batch(data: bytes, pos: int, count: int, partition: int, base_offset: int,
               first_timestamp: int, log_append_time: int | None) -> list[SourceRecord]:
    """The ``count`` records of a v2 batch whose records start at ``data[pos]``.

    ``log_append_time`` is the batch's max timestamp when the broker stamps records (then every
    record has it), else None. Raises CorruptRecordError if the records do not fill the batch.
    """
    record = SourceRecord
    out: list[SourceRecord] = []
    append = out.append
    try:
        for _ in range(count):
            length, pos = _varint(data, pos)
            end = pos + length
            # attributes (one byte, unused by v2 records), then the timestamp delta
            ts_delta, pos = _varint(data, pos + 1)
            offset_delta, pos = _varint(data, pos)
            key_len, pos = _varint(data, pos)
            if key_len >= 0:
                key: bytes | None = data[pos:pos + key_len]
                pos += key_len
            else:
                key = None
            value_len, pos = _varint(data, pos)
            if pos + value_len >= end:  # no room left for the header count
                raise CorruptRecordError(f"record at offset {base_offset + offset_delta} "
                                         f"is longer than its length says")
            # A null value (a tombstone) reads as no bytes: the decoder rejects it as data.
            value = data[pos:pos + value_len] if value_len >= 0 else b""
            append(record(partition, base_offset + offset_delta, value, key,
                          first_timestamp + ts_delta if log_append_time is None
                          else log_append_time))
            pos = end
    except (IndexError, ValueError) as exc:
        raise CorruptRecordError(f"invalid record structure: {exc!r}") from exc
    if pos != len(data):
        raise CorruptRecordError(f"{len(data) - pos} bytes left after the batch's records")
    return out


def _records_of(batch: DefaultRecordBatch, partition: int) -> list[SourceRecord]:
    """One (decompressed) v2 batch's records."""
    batch._maybe_uncompress()
    log_append_time = batch.max_timestamp if batch.timestamp_type == batch.LOG_APPEND_TIME \
        else None
    return read_batch(bytes(batch._buffer), batch._pos, batch.records_count, partition,
                      batch.base_offset, batch.first_timestamp, log_append_time)


class BatchPartitionRecords(Fetcher.PartitionRecords):  # type: ignore[misc, name-defined]
    """kafka-python's records of one fetched partition, read a batch at a time.

    ``take`` returns :class:`SourceRecord` objects instead of ``ConsumerRecord``; the rest of
    the fetcher only counts them and moves positions.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list[SourceRecord] = []
        self._pending_at = 0

    def _maybe_skip_record(self, record: Any) -> bool:
        return False  # _unpack_records drops records before fetch_offset itself

    def take(self, n: int | None = None) -> list[SourceRecord]:
        self._maybe_raise_next_inline_exception()
        out: list[SourceRecord] = []
        chunks = self.record_iterator
        try:
            while n is None or len(out) < n:
                if self._pending_at >= len(self._pending):
                    if chunks is None:
                        break
                    chunk = next(chunks, None)  # the last step drains this object
                    if chunk is None:
                        break
                    self._pending, self._pending_at = chunk, 0
                    continue
                want = len(self._pending) - self._pending_at if n is None else n - len(out)
                part = self._pending[self._pending_at:self._pending_at + want]
                self._pending_at += len(part)
                out += part
                # Before the next batch is read: reading past the last batch moves
                # next_fetch_offset to the batch's end, which must not be overwritten.
                self.next_fetch_offset = part[-1].position + 1
        except Exception as e:
            if not out:
                raise
            self._next_inline_exception = e
        return out

    def _unpack_records(self, tp: Any, records: Any, key_deserializer: Any,
                        value_deserializer: Any) -> Iterator[list[SourceRecord]]:
        """Yields each batch's records (a list); mirrors kafka-python's own ``_unpack_records``
        for everything but the per-record loop."""
        partition = tp.partition
        batch = records.next_batch()
        last_batch = None
        while batch is not None:
            last_batch = batch
            if self.check_crcs and not batch.validate_crc():
                raise CorruptRecordError(f"Record batch for partition {tp} at offset "
                                         f"{batch.base_offset} failed crc check")
            if batch.magic != 2:  # message format v0/v1 (brokers before 0.11): theirs
                yield self._legacy(batch, partition)
                batch = records.next_batch()
                continue
            self.leader_epoch = batch.leader_epoch
            if (self.isolation_level == IsolationLevel.READ_COMMITTED
                    and batch.has_producer_id()):
                self._consume_aborted_transactions_up_to(batch.last_offset)
                if self._contains_abort_marker(batch):
                    self.aborted_producer_ids.discard(batch.producer_id)
                elif self._is_batch_aborted(batch):
                    self.next_fetch_offset = batch.next_offset
                    batch = records.next_batch()
                    continue
            if batch.is_control_batch:
                self.next_fetch_offset = batch.next_offset
                batch = records.next_batch()
                continue
            out = _records_of(batch, partition)
            if out and out[0].position < self.fetch_offset:
                # Fetched from the middle of a batch: skip what comes before the fetch offset.
                out = [r for r in out if r.position >= self.fetch_offset]
            self.records_read += len(out)
            self.bytes_read += batch.size_in_bytes
            if out:
                yield out
            batch = records.next_batch()
        if last_batch is not None and last_batch.magic == 2:
            self.next_fetch_offset = last_batch.next_offset
        self.drain()

    def _legacy(self, batch: Any, partition: int) -> list[SourceRecord]:
        out = []
        for r in batch:
            if r.offset < self.fetch_offset:
                continue
            if self.check_crcs and not r.validate_crc():
                raise CorruptRecordError(f"Record for partition {partition} at offset "
                                         f"{r.offset} failed crc check")
            out.append(SourceRecord(partition, r.offset, r.value, r.key, r.timestamp))
        self.records_read += len(out)
        self.bytes_read += batch.size_in_bytes
        return out


def install(consumer: Any) -> bool:
    """Make ``consumer`` hand out :class:`SourceRecord` lists (see the module docstring).
    True if it did; False (the consumer unchanged) if this kafka-python differs."""
    fetcher = getattr(consumer, "_fetcher", None)
    base = getattr(Fetcher, "PartitionRecords", None)
    needed = ("take", "_unpack_records", "_maybe_skip_record", "drain",
              "_maybe_raise_next_inline_exception", "_consume_aborted_transactions_up_to",
              "_contains_abort_marker", "_is_batch_aborted")
    if fetcher is None or base is None or not all(hasattr(base, name) for name in needed) \
            or not hasattr(DefaultRecordBatch, "_maybe_uncompress"):
        log.info("kafka-python %s: reading records through ConsumerRecord",
                 getattr(__import__("kafka"), "__version__", "?"))
        return False
    fetcher.PartitionRecords = BatchPartitionRecords
    return True


class _KeyParts(dict[bytes | None, bytes]):
    """Encoded key fields (length varint + bytes), remembered: a sink sees few distinct keys."""

    def __missing__(self, key: bytes | None) -> bytes:
        if len(self) > 65_536:  # bounded even if keys do not repeat
            self.clear()
        part = b"\x01" if key is None else varint(len(key)) + key  # 0x01: length -1 (null)
        self[key] = part
        return part


_KEY_PARTS = _KeyParts()


def _headers_part(headers: tuple[tuple[str, bytes], ...]) -> bytes:
    out = bytearray(varint(len(headers)))
    for name, value in headers:
        encoded = name.encode("utf-8")
        out += varint(len(encoded)) + encoded + varint(len(value)) + value
    return bytes(out)


@dataclass(slots=True)
class Messages:
    """Sink messages as columns: ``values[i]``, ``keys[i]`` and (when any has them)
    ``headers[i]``; indexing builds a :class:`SinkMessage`, for the rare paths (a failed
    delivery)."""

    values: list[bytes]
    keys: Sequence[bytes | None]
    headers: Sequence[tuple[tuple[str, bytes], ...]] | None = None

    @classmethod
    def of(cls, messages: Sequence[SinkMessage]) -> Messages:
        headers = [m.headers for m in messages]
        return cls([m.value for m in messages], [m.key for m in messages],
                   headers if any(headers) else None)

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int) -> SinkMessage:
        headers = self.headers[i] if self.headers is not None else ()
        return SinkMessage(self.values[i], self.keys[i], headers)

    def select(self, rows: list[int]) -> Messages:
        headers = self.headers
        return Messages([self.values[i] for i in rows], [self.keys[i] for i in rows],
                        None if headers is None else [headers[i] for i in rows])

    def slice(self, start: int, end: int) -> Messages:
        headers = self.headers
        return Messages(self.values[start:end], self.keys[start:end],
                        None if headers is None else headers[start:end])


def fill_batch(builder: DefaultRecordBatchBuilder, messages: Messages, start: int,
               timestamp_ms: int) -> tuple[int, int]:
    """Write ``messages[start:end]`` into an empty ``builder`` as offsets 0 … end - start - 1,
    all at ``timestamp_ms``, as many as fit its batch size (at least one).

    Returns ``(end, largest record size)``; the caller tells the ``MemoryRecordsBuilder``
    around ``builder`` that ``end - start`` offsets are used.
    """
    table = _VARINTS
    key_parts = _KEY_PARTS
    limit = builder._batch_size
    size = len(builder._buffer)  # the batch header, written by build()
    largest = 0
    parts: list[bytes] = []
    extend = parts.extend
    all_headers = messages.headers
    keys = messages.keys
    end = start
    for value in messages.values[start:]:
        delta = end - start
        value_len = len(value)
        key_part = key_parts[keys[end]]
        headers = b"\x00" if all_headers is None or not all_headers[end] \
            else _headers_part(all_headers[end])
        delta_part = table[delta] if delta < 16384 else varint(delta)
        len_part = table[value_len] if value_len < 16384 else varint(value_len)
        # attributes and timestamp delta (both 0) are two bytes
        length = 2 + len(delta_part) + len(key_part) + len(len_part) + value_len + len(headers)
        length_part = table[length] if length < 16384 else varint(length)
        needed = len(length_part) + length
        if size + needed > limit and delta > 0:
            break
        size += needed
        largest = max(largest, needed)
        extend((length_part, b"\x00\x00", delta_part, key_part, len_part, value, headers))
        end += 1
    count = end - start
    builder._buffer += b"".join(parts)
    builder._num_records = count
    builder._last_offset = count - 1
    builder._first_timestamp = builder._max_timestamp = timestamp_ms
    return end, largest


def can_fill(builder: object) -> bool:
    """Whether ``builder`` is a kafka-python v2 batch builder :func:`fill_batch` knows."""
    return isinstance(builder, DefaultRecordBatchBuilder) and all(
        hasattr(DefaultRecordBatchBuilder, name) for name in (
            "_buffer", "_batch_size", "_num_records", "_last_offset", "_first_timestamp",
            "_max_timestamp"))
