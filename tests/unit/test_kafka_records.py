"""The kafka-python client's batch reader and writer (adaptd.connectors.kafka_python_records)
against kafka-python's own record-at-a-time code: byte for byte, and record for record."""

from __future__ import annotations

import random

import numpy as np
import pytest
from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecordsBuilder

from adaptd.connectors.base import RecordRun, SinkMessage, SourceRecord
from adaptd.connectors.kafka_python_chunks import Chunk, leading_run, scan_records, warm
from adaptd.connectors.kafka_python_fill import Packed, Rows, fill_rows
from adaptd.connectors.kafka_python_records import Messages, _records_of, can_fill, fill_batch
from adaptd.learner.jit import COMPILED

NO_COMPRESSION, GZIP = 0, 1


def messages(n: int, seed: int = 3) -> list[SinkMessage]:
    """Values from empty to 20 kB (one-, two- and three-byte length varints), keys from null to
    long, some with headers (as dead letters carry)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        size = rng.choice([0, 1, 40, 63, 64, 150, 8000, 8191, 8192, 20_000])
        key = rng.choice([None, b"", b"k", b"key-%d" % (i % 7), bytes(200)])
        headers = rng.choice([(), (("adaptd.reason", b"bad_json"), ("n", b""))])
        out.append(SinkMessage(bytes(rng.randrange(256) for _ in range(size)), key, headers))
    return out


def built_by_kafka_python(group: list[SinkMessage], batch_bytes: int, compression: int,
                          ts: int) -> tuple[bytes, int]:
    builder = MemoryRecordsBuilder(2, compression, batch_bytes)
    n = 0
    for msg in group:
        if builder.append(ts, msg.key, msg.value, list(msg.headers)) is None:
            break
        n += 1
    builder.close()
    return bytes(builder.buffer()), n


def built_by_fill(group: list[SinkMessage], batch_bytes: int, compression: int,
                  ts: int) -> tuple[bytes, int]:
    builder = MemoryRecordsBuilder(2, compression, batch_bytes)
    assert can_fill(builder._builder)
    end, largest = fill_batch(builder._builder, Messages.of(group), 0, ts)
    assert largest > 0
    builder._next_offset = end
    builder.close()
    return bytes(builder.buffer()), end


def contents(buffer: bytes) -> tuple[object, ...]:
    """A batch's header fields but the CRC, and its records, decompressed."""
    batch = DefaultRecordBatch(buffer)
    header = tuple(v for i, v in enumerate(batch._header_data) if i not in (1, 4))  # length, crc
    return header, [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in batch]


@pytest.mark.parametrize("compression", [NO_COMPRESSION, GZIP])
@pytest.mark.parametrize("batch_bytes", [1024, 65_536, 1 << 20])
def test_filled_batches_are_byte_for_byte_kafka_pythons(compression: int, batch_bytes: int
                                                        ) -> None:
    group = messages(300)
    start = 0
    while start < len(group):
        ours, n = built_by_fill(group[start:], batch_bytes, compression, 1_700_000_000_123)
        theirs, m = built_by_kafka_python(group[start:], batch_bytes, compression,
                                          1_700_000_000_123)
        assert n == m
        if compression == NO_COMPRESSION:
            assert ours == theirs
        else:  # gzip stamps the time into its header: the same records, the same header fields
            assert contents(ours) == contents(theirs)
        start += n


@pytest.mark.parametrize("compression", [NO_COMPRESSION, GZIP])
@pytest.mark.parametrize("batch_bytes", [1024, 65_536, 1 << 20])
def test_compiled_batches_are_byte_for_byte_kafka_pythons(compression: int, batch_bytes: int
                                                          ) -> None:
    """The compiled writer, over every other message of a write (one partition's rows)."""
    keyed = [SinkMessage(m.value, m.key if m.key is not None else b"n") for m in messages(400)]
    packed = Packed.of([m.value for m in keyed], [m.key for m in keyed])
    assert packed is not None
    rows = np.arange(1, len(keyed), 2)
    group = [keyed[i] for i in rows]
    start = 0
    while start < len(rows):
        builder = MemoryRecordsBuilder(2, compression, batch_bytes)
        end, largest = fill_rows(builder._builder, packed, rows, start, 1_700_000_000_123)
        assert largest > 0
        builder._next_offset = end - start
        builder.close()
        theirs, m = built_by_kafka_python(group[start:], batch_bytes, compression,
                                          1_700_000_000_123)
        assert end - start == m
        if compression == NO_COMPRESSION:
            assert bytes(builder.buffer()) == theirs
        else:
            assert contents(bytes(builder.buffer())) == contents(theirs)
        kept = Rows(packed, rows[start:end])
        assert [kept[i] for i in range(len(kept))] == group[start:end]
        start = end


@pytest.mark.parametrize("later_ms", [0, 40, 70_000, -3])
def test_a_second_write_goes_on_filling_the_batch(later_ms: int) -> None:
    """Two writes into one batch, the second stamped ``later_ms`` after the first (or before:
    the wall clock may step back), are what kafka-python's builder writes for them."""
    keyed = [SinkMessage(m.value, m.key or b"n") for m in messages(60, seed=9)]
    first = Packed.of([m.value for m in keyed[:25]], [m.key for m in keyed[:25]])
    second = Packed.of([m.value for m in keyed[25:]], [m.key for m in keyed[25:]])
    assert first is not None and second is not None
    ts = 1_700_000_000_000
    builder = MemoryRecordsBuilder(2, NO_COMPRESSION, 1 << 20)
    end, _ = fill_rows(builder._builder, first, np.arange(25), 0, ts)
    more, _ = fill_rows(builder._builder, second, np.arange(35), 0, ts + later_ms)
    assert (end, more) == (25, 35)
    builder._next_offset = 60
    builder.close()
    theirs = MemoryRecordsBuilder(2, NO_COMPRESSION, 1 << 20)
    for i, m in enumerate(keyed):
        theirs.append(ts if i < 25 else ts + later_ms, m.key, m.value, [])
    theirs.close()
    assert bytes(builder.buffer()) == bytes(theirs.buffer())


def test_a_full_batch_takes_no_more() -> None:
    packed = Packed.of([bytes(600)] * 3, [b"k"] * 3)
    assert packed is not None
    builder = MemoryRecordsBuilder(2, NO_COMPRESSION, 1024)
    assert fill_rows(builder._builder, packed, np.arange(3), 0, 5)[0] == 1
    assert fill_rows(builder._builder, packed, np.arange(3), 1, 5) == (1, 0)  # none fits


def test_packing_leaves_unkeyed_messages_to_the_python_path() -> None:
    assert Packed.of([b"a", b"b"], [b"k", None]) is None
    packed = Packed.of([b"a", b"b", b"c"], [b"k", b"j", b"k"])
    assert packed is not None and packed.keys == [b"k", b"j"]
    by_partition = packed.partition_rows([3, 1])
    assert {p: rows.tolist() for p, rows in by_partition.items()} == {3: [0, 2], 1: [1]}


def test_a_message_larger_than_the_batch_still_goes_alone() -> None:
    group = [SinkMessage(bytes(5000), b"k"), SinkMessage(b"x", b"k")]
    ours, n = built_by_fill(group, 1024, NO_COMPRESSION, 5)
    assert n == 1 and (ours, n) == built_by_kafka_python(group, 1024, NO_COMPRESSION, 5)


def read(batch: DefaultRecordBatch, partition: int) -> list[SourceRecord]:
    chunk = _records_of(batch, partition)
    return [chunk.record(i) for i in range(len(chunk))]


def batch_of(values: list[bytes], keys: list[bytes | None], compression: int = 0,
             headers: bool = False) -> DefaultRecordBatch:
    builder = DefaultRecordBatchBuilder(2, compression, False, -1, -1, -1, 1 << 24)
    for i, (value, key) in enumerate(zip(values, keys, strict=True)):
        builder.append(i * 3, 1_000 + i * 70, key, value, [("h", b"v" * i)] if headers else [])
    return DefaultRecordBatch(bytes(builder.build()))


@pytest.mark.parametrize("compression", [NO_COMPRESSION, GZIP])
@pytest.mark.parametrize("headers", [False, True])
def test_read_batch_gives_what_kafka_python_reads(compression: int, headers: bool) -> None:
    group = messages(200, seed=5)
    values = [m.value for m in group]
    keys = [m.key for m in group]
    theirs = [(r.offset, r.value, r.key, r.timestamp)
              for r in batch_of(values, keys, compression, headers)]
    ours = [(r.position, r.value, r.key, r.timestamp_ms)
            for r in read(batch_of(values, keys, compression, headers), 4)]
    assert ours == theirs
    assert _records_of(batch_of(values, keys), 4).values == values
    assert all(r.partition == 4 for r in read(batch_of(values, keys), 4))


@pytest.mark.skipif(not COMPILED, reason="Numba is not installed: nothing to load")
def test_the_warm_up_loads_the_scan_a_fetched_batch_calls() -> None:
    warm()
    assert _records_of(batch_of([b"abc"] * 3, [b"k"] * 3), 0).values == [b"abc"] * 3
    # One compiled version: the warm-up passes a fetch's argument types (a read-only batch),
    # so the first poll finds the scan loaded, not another version to compile.
    assert len(scan_records.signatures) == 1


def test_a_null_value_reads_as_no_bytes() -> None:
    builder = DefaultRecordBatchBuilder(2, 0, False, -1, -1, -1, 1 << 20)
    builder.append(0, 1, b"k", None, [])
    [record] = read(DefaultRecordBatch(bytes(builder.build())), 0)
    assert (record.value, record.key) == (b"", b"k")


def test_a_cut_batch_is_corrupt() -> None:
    data = bytearray(batch_of([b"abc" * 50] * 3, [b"k"] * 3)._buffer)
    data[61] = 0x7E  # the first record's length varint: 63 instead of its real length
    with pytest.raises(CorruptRecordError):
        _records_of(DefaultRecordBatch(bytes(data)), 0)


@pytest.mark.parametrize("cut", [1, 2, 30, 150])
def test_a_truncated_or_garbled_batch_is_corrupt_not_a_crash(cut: int) -> None:
    data = bytearray(batch_of([b"abc" * 50] * 3, [b"k"] * 3)._buffer)
    garbled = bytes(data[:61]) + b"\xff" * 12 + bytes(data[73:])  # a varint of 12 bytes
    for buffer in (bytes(data[:-cut]), garbled):
        batch = DefaultRecordBatch(buffer)
        with pytest.raises(CorruptRecordError):
            _records_of(batch, 0)


def chunk(partition: int, positions: list[int]) -> Chunk:
    return Chunk(partition, positions, [b"%d" % p for p in positions],
                 keys=[b"k"] * len(positions), timestamps=[7] * len(positions))


def test_a_poll_hands_out_one_partitions_run_and_keeps_the_rest() -> None:
    a, b, c = chunk(0, [5, 6, 7]), chunk(0, [8, 9]), chunk(1, [0, 1])
    run, rest = leading_run([(a, 1, 3), (b, 0, 2), (c, 0, 2)], 100)
    assert isinstance(run, RecordRun)
    assert (run.partition, run.first_position, run.values) == (0, 6, [b"6", b"7", b"8", b"9"])
    assert run[2] == SourceRecord(0, 8, b"8", b"k", 7) and run.records()[-1].position == 9
    assert rest == [(c, 0, 2)]
    run, rest = leading_run([(a, 0, 3), (b, 0, 2)], 4)  # at most max_records
    assert run.values == [b"5", b"6", b"7", b"8"] and rest == [(b, 1, 2)]


def test_records_with_a_gap_come_as_a_list() -> None:
    gap = chunk(2, [3, 4, 9])  # compacted away, or a transaction marker
    polled, rest = leading_run([(gap, 0, 3)], 10)
    assert not isinstance(polled, RecordRun)
    assert [r.position for r in polled] == [3, 4, 9] and rest == []
