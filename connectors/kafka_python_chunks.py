"""Fetched Kafka records as columns: one :class:`Chunk` per record batch, scanned by compiled
code, and polls handed to the daemon as runs of one partition.

A v2 record batch (KIP-98) holds records of ``length varint, attributes int8, timestampDelta
varlong, offsetDelta varint, keyLength varint, key, valueLength varint, value, headers``
(zigzag varints). :func:`scan_records` walks them in compiled code and returns where each
field is; the values are then cut out of the batch's bytes in C (``map`` over slices). No
object is built per record but the value's ``bytes``: a :class:`SourceRecord` (with the key and
timestamp) is built only when the daemon asks for one, to dead-letter a record.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from adaptd.connectors.base import RecordRun, SourceRecord
from adaptd.learner.jit import meanwhile, njit

#: Columns of :func:`scan_records`'s table.
OFFSET_DELTA, TIMESTAMP_DELTA, KEY_START, KEY_END, VALUE_START, VALUE_END = range(6)


@njit(inline=True, refcounts=False)
def _varint(buf: np.ndarray, pos: int, end: int) -> tuple[int, int]:
    """The zigzag varint at ``buf[pos]`` and the position after it; ``(0, -1)`` if it runs past
    ``end`` or over 10 bytes."""
    raw = 0
    shift = 0
    while pos < end and shift < 70:
        b = buf[pos]
        pos += 1
        raw |= (b & 127) << shift
        if b < 128:
            return (raw >> 1) ^ -(raw & 1), pos
        shift += 7
    return 0, -1


@njit(refcounts=False)
def scan_records(buf: np.ndarray, pos: int, count: int, table: np.ndarray) -> int:
    """Fill ``table[i]`` with record ``i``'s offset delta, timestamp delta, key bounds (-1, -1
    for a null key) and value bounds (empty at the header count for a null value), for the
    ``count`` records starting at ``buf[pos]``. Returns the position after the last record, or
    -1 - i if record ``i`` does not fit its length or the buffer."""
    n = len(buf)
    for i in range(count):
        length, pos = _varint(buf, pos, n)
        if pos < 0 or length < 0 or pos + length > n:
            return -1 - i
        end = pos + length
        ts_delta, pos = _varint(buf, pos + 1, end)  # after the attributes byte
        if pos < 0:
            return -1 - i
        offset_delta, pos = _varint(buf, pos, end)
        if pos < 0:
            return -1 - i
        key_len, pos = _varint(buf, pos, end)
        if pos < 0 or pos + key_len > end:
            return -1 - i
        table[i, OFFSET_DELTA] = offset_delta
        table[i, TIMESTAMP_DELTA] = ts_delta
        if key_len >= 0:
            table[i, KEY_START] = pos
            pos += key_len
            table[i, KEY_END] = pos
        else:
            table[i, KEY_START] = -1
            table[i, KEY_END] = -1
        value_len, pos = _varint(buf, pos, end)
        # A record needs room for its header count after the value.
        if pos < 0 or pos + max(value_len, 0) >= end:
            return -1 - i
        table[i, VALUE_START] = pos
        table[i, VALUE_END] = pos + max(value_len, 0)  # null (a tombstone): no bytes
        pos = end
    return pos


def warm() -> None:
    """Load :func:`scan_records` for the argument types a fetch gives it (a read-only batch)."""
    scan_records(np.frombuffer(b"", dtype=np.uint8), 0, 0, np.empty((0, 6), dtype=np.int64))


_warming = False


def warm_in_background() -> None:
    """:func:`warm` on the start-up loader thread (:func:`adaptd.learner.jit.meanwhile`, which
    a Kafka run's cached code loads on too), once per process. Returns at once.

    The first compiled function a process calls pays for Numba's own start (0.15–0.3 s here),
    and without this that was the first poll. Started as the source opens, it runs while the
    daemon's thread waits on the broker (the consumer's bootstrap, the changelog restore), so
    the first poll finds the scan loaded. Numba's compiler lock keeps a call from the daemon's
    thread meanwhile waiting for it, not compiling it twice."""
    global _warming
    if not _warming:
        _warming = True
        meanwhile(warm)


@dataclass(slots=True)
class Chunk:
    """The records of one fetched batch of one partition: ``values[i]`` at ``positions[i]``;
    keys and timestamps on demand (:meth:`record`)."""

    partition: int
    positions: list[int]
    values: list[bytes]
    #: The batch's bytes and key bounds (v2), or the keys themselves (older formats).
    data: bytes = b""
    key_bounds: np.ndarray | None = None
    keys: list[bytes | None] | None = None
    timestamps: list[int | None] | np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.values)

    def key(self, i: int) -> bytes | None:
        if self.keys is not None:
            return self.keys[i]
        if self.key_bounds is None or self.key_bounds[i, 0] < 0:
            return None
        start, end = self.key_bounds[i]
        return self.data[int(start):int(end)]

    def record(self, i: int) -> SourceRecord:
        """Record ``i`` as a :class:`SourceRecord`, key and timestamp included."""
        ts = None if self.timestamps is None else self.timestamps[i]
        return SourceRecord(self.partition, self.positions[i], self.values[i], self.key(i),
                            None if ts is None else int(ts))

    def consecutive(self, start: int, end: int) -> bool:
        """Whether records ``start:end`` sit at consecutive positions (compaction and
        transaction markers leave gaps)."""
        return self.positions[end - 1] - self.positions[start] == end - start - 1


def chunk_of(data: bytes, pos: int, count: int, partition: int, base_offset: int,
             first_timestamp: int, log_append_time: int | None) -> Chunk | int:
    """The ``count`` records of a v2 batch whose records start at ``data[pos]``, or the index
    of the first record that does not fit (the batch is corrupt)."""
    table = np.empty((count, 6), dtype=np.int64)
    end = scan_records(np.frombuffer(data, dtype=np.uint8), pos, count, table)
    if end < 0:
        return -1 - end
    if end != len(data):
        return count  # bytes left after the last record
    values = list(map(data.__getitem__, map(slice, table[:, VALUE_START].tolist(),
                                            table[:, VALUE_END].tolist())))
    positions = (table[:, OFFSET_DELTA] + base_offset).tolist()
    timestamps: np.ndarray = np.full(count, log_append_time, dtype=np.int64) \
        if log_append_time is not None else table[:, TIMESTAMP_DELTA] + first_timestamp
    return Chunk(partition, positions, values, data, table[:, KEY_START:KEY_END + 1],
                 timestamps=timestamps)


#: A part of a chunk a poll hands out: ``(chunk, start, end)``.
Segment = tuple[Chunk, int, int]


@dataclass(slots=True)
class ChunkRun(RecordRun):
    """A run of records out of chunks; a record taken out of it (to be dead-lettered, say)
    keeps its Kafka key and timestamp."""

    segments: list[Segment] | None = None

    def __getitem__(self, i: int) -> SourceRecord:
        if i < 0:
            i += len(self.values)
        for chunk, start, end in self.segments or ():
            if i < end - start:
                return chunk.record(start + i)
            i -= end - start
        raise IndexError(i)

    def records(self) -> list[SourceRecord]:
        return [chunk.record(i) for chunk, start, end in self.segments or ()
                for i in range(start, end)]


def leading_run(segments: list[Segment], max_records: int
                ) -> tuple[ChunkRun | list[SourceRecord], list[Segment]]:
    """The first partition's records out of ``segments`` (at most ``max_records``), and the
    segments left over: a run when their positions are consecutive, else a list."""
    partition = segments[0][0].partition
    taken: list[Segment] = []
    left = max_records
    i = 0
    while i < len(segments) and left > 0 and segments[i][0].partition == partition:
        chunk, start, end = segments[i]
        if end - start > left:  # split: the rest waits
            taken.append((chunk, start, start + left))
            segments = [(chunk, start + left, end), *segments[i + 1:]]
            i = 0
            break
        taken.append((chunk, start, end))
        left -= end - start
        i += 1
    rest = segments[i:]
    consecutive = all(chunk.consecutive(start, end) for chunk, start, end in taken) and all(
        a[0].positions[a[2] - 1] + 1 == b[0].positions[b[1]] for a, b in pairwise(taken))
    if not consecutive:
        return [chunk.record(i) for chunk, start, end in taken for i in range(start, end)], rest
    values: list[bytes] = []
    for chunk, start, end in taken:
        values += chunk.values[start:end] if start or end < len(chunk) else chunk.values
    first = taken[0]
    return ChunkRun(partition, first[0].positions[first[1]], values, segments=taken), rest
