"""Kafka record batches (message format v2) read and written a batch at a time, for the
kafka-python client: fetched batches straight into columns, and sink messages straight into a
producer batch's buffer.

kafka-python turns each fetched record into a ``DefaultRecord``, then a ``ConsumerRecord`` of 13
fields, one generator step at a time: about 8 µs a record in pure Python, most of what a
consumer of this client pays per record. The daemon needs the values and their positions (the
key and timestamp only to dead-letter a record), so :class:`BatchPartitionRecords` scans each
whole record batch in compiled code into a :class:`~adaptd.connectors.kafka_python_chunks.Chunk`
and hands the fetcher the chunk's values; which chunk parts each poll took goes to the
consumer's ``segments`` list, from which the source builds its runs. Everything around the
records stays kafka-python's: fetch requests, positions, CRC checks, decompression,
transactions (aborted and control batches are skipped exactly as kafka-python skips them).

Writing: ``DefaultRecordBatchBuilder.append`` checks types, encodes varints a byte at a time and
returns metadata per message, about 3 µs each. :func:`fill_batch` writes the same bytes (the
unit test holds them equal) from tables of encoded varints, one ``join`` per batch, and leaves
the header, compression, CRC and producer state to kafka-python's builder.

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
from kafka.record.util import encode_varint

from adaptd.connectors.base import SinkMessage
from adaptd.connectors.kafka_python_chunks import Chunk, Segment, chunk_of

log = logging.getLogger(__name__)


def varint(value: int) -> bytes:
    """``value`` as a zigzag varint."""
    out = bytearray()
    encode_varint(value, out.append)
    return bytes(out)


#: Encoded varints of 0 … 16383: record lengths, value lengths and offset deltas.
_VARINTS = [varint(i) for i in range(1 << 14)]


def _records_of(batch: DefaultRecordBatch, partition: int) -> Chunk:
    """One (decompressed) v2 batch's records; CorruptRecordError if they do not fill it."""
    batch._maybe_uncompress()
    log_append_time = batch.max_timestamp if batch.timestamp_type == batch.LOG_APPEND_TIME \
        else None
    chunk = chunk_of(bytes(batch._buffer), batch._pos, batch.records_count, partition,
                     batch.base_offset, batch.first_timestamp, log_append_time)
    if isinstance(chunk, int):
        raise CorruptRecordError(f"invalid record structure: record {chunk} of the batch at "
                                 f"offset {batch.base_offset} does not fit it")
    return chunk


class BatchPartitionRecords(Fetcher.PartitionRecords):  # type: ignore[misc, name-defined]
    """kafka-python's records of one fetched partition, read a batch at a time.

    ``take`` returns the records' values and appends the chunk parts they are to
    :attr:`segments` (set per consumer by :func:`install`); the rest of the fetcher only counts
    them and moves positions.
    """

    segments: list[Segment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._chunk: Chunk | None = None
        self._at = 0

    def _maybe_skip_record(self, record: Any) -> bool:
        return False  # _unpack_records drops records before fetch_offset itself

    def take(self, n: int | None = None) -> list[bytes]:
        self._maybe_raise_next_inline_exception()
        out: list[bytes] = []
        chunks = self.record_iterator
        try:
            while n is None or len(out) < n:
                chunk = self._chunk
                if chunk is None or self._at >= len(chunk):
                    chunk = next(chunks, None) if chunks is not None else None
                    if chunk is None:  # the last step drains this object
                        break
                    self._chunk, self._at = chunk, 0
                    continue
                start = self._at
                end = len(chunk) if n is None else min(len(chunk), start + n - len(out))
                self._at = end
                out += chunk.values[start:end]
                self.segments.append((chunk, start, end))
                # Before the next batch is read: reading past the last batch moves
                # next_fetch_offset to the batch's end, which must not be overwritten.
                self.next_fetch_offset = chunk.positions[end - 1] + 1
        except Exception as e:
            if not out:
                raise
            self._next_inline_exception = e
        return out

    def _unpack_records(self, tp: Any, records: Any, key_deserializer: Any,
                        value_deserializer: Any) -> Iterator[Chunk]:
        """Yields each batch's records (a chunk); mirrors kafka-python's own
        ``_unpack_records`` for everything but the per-record loop."""
        partition = tp.partition
        batch = records.next_batch()
        last_batch = None
        while batch is not None:
            last_batch = batch
            if self.check_crcs and not batch.validate_crc():
                raise CorruptRecordError(f"Record batch for partition {tp} at offset "
                                         f"{batch.base_offset} failed crc check")
            if batch.magic != 2:  # message format v0/v1 (brokers before 0.11): theirs
                chunk = self._legacy(batch, partition)
                if len(chunk):
                    yield chunk
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
            chunk = _records_of(batch, partition)
            if len(chunk) and chunk.positions[0] < self.fetch_offset:
                # Fetched from the middle of a batch: drop what comes before the fetch offset.
                chunk = _from(chunk, self.fetch_offset)
            self.records_read += len(chunk)
            self.bytes_read += batch.size_in_bytes
            if len(chunk):
                yield chunk
            batch = records.next_batch()
        if last_batch is not None and last_batch.magic == 2:
            self.next_fetch_offset = last_batch.next_offset
        self.drain()

    def _legacy(self, batch: Any, partition: int) -> Chunk:
        records = []
        for r in batch:
            if r.offset < self.fetch_offset:
                continue
            if self.check_crcs and not r.validate_crc():
                raise CorruptRecordError(f"Record for partition {partition} at offset "
                                         f"{r.offset} failed crc check")
            records.append(r)
        self.records_read += len(records)
        self.bytes_read += batch.size_in_bytes
        return Chunk(partition, [r.offset for r in records], [r.value or b"" for r in records],
                     keys=[r.key for r in records], timestamps=[r.timestamp for r in records])


def _from(chunk: Chunk, position: int) -> Chunk:
    """``chunk`` without its records before ``position``."""
    keep = [i for i, p in enumerate(chunk.positions) if p >= position]
    records = [chunk.record(i) for i in keep]
    return Chunk(chunk.partition, [r.position for r in records], [r.value for r in records],
                 keys=[r.key for r in records], timestamps=[r.timestamp_ms for r in records])


def install(consumer: Any) -> list[Segment] | None:
    """Make ``consumer`` hand out chunk values (see the module docstring); returns the list
    each poll appends the chunk parts it took to (the caller clears it), or None (the consumer
    unchanged) if this kafka-python differs."""
    fetcher = getattr(consumer, "_fetcher", None)
    base = getattr(Fetcher, "PartitionRecords", None)
    needed = ("take", "_unpack_records", "_maybe_skip_record", "drain",
              "_maybe_raise_next_inline_exception", "_consume_aborted_transactions_up_to",
              "_contains_abort_marker", "_is_batch_aborted")
    if fetcher is None or base is None or not all(hasattr(base, name) for name in needed) \
            or not hasattr(DefaultRecordBatch, "_maybe_uncompress"):
        log.info("kafka-python %s: reading records through ConsumerRecord",
                 getattr(__import__("kafka"), "__version__", "?"))
        return None
    segments: list[Segment] = []
    fetcher.PartitionRecords = type("BatchPartitionRecords", (BatchPartitionRecords,),
                                    {"segments": segments})
    return segments


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
