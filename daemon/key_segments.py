"""A segment: the states of all the keys one checkpoint (or one compaction) writes for one
partition, as columns, each checked by CRC-32.

One row of ``segments`` in ``state.db`` per segment (:mod:`adaptd.segment_store`), with three
blobs:

``names``  the keys' names, an evicted flag per key, and the names of keys this checkpoint let
           go of unchanged (*marks*: their state lies in an older segment). Small: read at start
           to rebuild the index (:mod:`adaptd.key_index`), as Bitcask reads its hint files.
``data``   the keys' packed states: a header, the end offset of each key's value, a kind per
           key, the packed states' specs (once per segment, not per key) and the values, key
           after key. Read a key at a time through SQLite's incremental blob I/O.
``labels`` the pending delayed labels of the keys that have some (NULL: none).

Each blob is one :func:`adaptd.state_values.encode` value or carries its own CRC-32, so damage
is found before anything is used. Writing N keys costs one row and a few joins of bytes,
instead of N B-tree upserts (the LSM shape: RocksDB's write batch and memtable flush, a
sorted-string table per flush; here the "table" is not sorted, its index is in memory).

>>> seg = pack_segment(["a", "b"], [b"raw", {"x": 1}], [False, True], [])
>>> names, evicted, marks = unpack_names(seg.names)
>>> names, evicted.tolist(), marks
(['a', 'b'], [False, True], [])
>>> view = SegmentView(seg.data, "seg 1")
>>> view.value(0), view.value(1)
(b'raw', {'x': 1})
"""

from __future__ import annotations

import pickle
import struct
import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from adaptd.state_codec import SplitState, spec_apart, spec_digest, spec_named, with_spec
from adaptd.state_values import CheckpointError, decode, encode

#: magic, version, rows, CRC-32 of everything after the header, specs' bytes.
_HEADER = struct.Struct("<4sHxxIII")
_MAGIC = b"ADSG"
VERSION = 1
#: What a value is: packed bytes, a split state (head and chunks), anything else (pickled).
_RAW, _SPLIT, _PICKLED = 0, 1, 2
_NO_SPEC = 0xFFFF


class Segment(NamedTuple):
    names: bytes
    data: bytes
    count: int


def _pack_strings(strings: Sequence[str]) -> bytes:
    encoded = [s.encode("utf-8", "surrogatepass") for s in strings]
    ends = np.cumsum([len(e) for e in encoded], dtype=np.uint32) if encoded else \
        np.zeros(0, np.uint32)
    return struct.pack("<I", len(encoded)) + ends.astype("<u4").tobytes() + b"".join(encoded)


def _unpack_strings(blob: bytes, start: int) -> tuple[list[str], int]:
    (n,) = struct.unpack_from("<I", blob, start)
    start += 4
    ends = np.frombuffer(blob, dtype="<u4", count=n, offset=start).tolist()
    start += 4 * n
    text = blob[start:start + (ends[-1] if n else 0)]
    out, lo = [], 0
    for end in ends:
        out.append(text[lo:end].decode("utf-8", "surrogatepass"))
        lo = end
    return out, start + (ends[-1] if n else 0)


def pack_segment(keys: Sequence[str], states: Sequence[Any], evicted: Sequence[bool],
                 marks: Sequence[str]) -> Segment:
    """A segment of ``keys`` with their packed ``states`` and evicted flags, and the ``marks``
    (keys let go of unchanged)."""
    names = encode(_pack_strings(keys) + np.asarray(evicted, dtype=bool).tobytes()
                   + _pack_strings(marks))
    specs: dict[bytes, int] = {}
    spec_list: list[bytes] = []
    kinds = bytearray(len(keys))
    parts: list[bytes] = []
    ends = np.empty(len(keys), dtype="<u8")
    total = 0

    def short(blob: bytes) -> bytes:
        spec, digest, rest = spec_apart(blob)
        if spec and digest not in specs:
            specs[digest] = len(spec_list)
            spec_list.append(spec)
        return rest

    for i, state in enumerate(states):
        if type(state) is bytes:
            value = short(state)
        elif isinstance(state, SplitState):
            kinds[i] = _SPLIT
            pieces = [short(state.head), *map(short, state.chunks)]
            value = struct.pack(f"<I{len(pieces)}I", len(pieces), *map(len, pieces)) \
                + b"".join(pieces)
        else:
            kinds[i] = _PICKLED
            value = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        name = keys[i].encode("utf-8", "surrogatepass")
        parts.append(struct.pack("<I", len(name)) + name + value)
        total += len(parts[-1])
        ends[i] = total
    spec_blob = pickle.dumps(spec_list, protocol=pickle.HIGHEST_PROTOCOL)
    body = b"".join((ends.tobytes(), bytes(kinds), spec_blob, *parts))
    header = _HEADER.pack(_MAGIC, VERSION, len(keys), zlib.crc32(body), len(spec_blob))
    return Segment(names, header + body, len(keys))


def unpack_names(blob: bytes, where: str = "segment") -> tuple[list[str], np.ndarray, list[str]]:
    """(keys, their evicted flags, marks) of a segment's ``names`` blob, checked."""
    data = decode(blob, f"{where} names")
    keys, at = _unpack_strings(data, 0)
    evicted = np.frombuffer(data, dtype=bool, count=len(keys), offset=at).copy()
    marks, _ = _unpack_strings(data, at + len(keys))
    return keys, evicted, marks


def check_data(data: bytes, where: str) -> None:
    """Raise :class:`CheckpointError` unless ``data`` is a whole segment's data blob."""
    SegmentView(data, where)


def encode_labels(labels: dict[int, list[Any]]) -> bytes | None:
    """The ``labels`` blob: row → pending label entries (None when no key has any)."""
    return encode(labels) if labels else None


class SegmentView:
    """A segment's data, checked once (CRC-32 of the whole blob), then read a key at a time.

    ``data`` is the blob, or a callable ``(offset, size) → bytes`` reading parts of it (SQLite's
    incremental blob I/O) after the caller checked it whole once.
    """

    def __init__(self, data: Any, where: str, checked: bool = False) -> None:
        self.where = where
        read = data if callable(data) else (lambda at, size: data[at:at + size])
        self._read: Any = read
        head = read(0, _HEADER.size)
        if len(head) < _HEADER.size:
            raise CheckpointError(where, "is truncated: shorter than a segment header")
        magic, version, n, crc, spec_len = _HEADER.unpack(head)
        if magic != _MAGIC or version != VERSION:
            raise CheckpointError(where, f"is not a key segment of version {VERSION} "
                                  f"(header {magic!r}, version {version})")
        if not checked:
            if callable(data):
                raise ValueError("a segment read in parts is checked whole first")
            if zlib.crc32(memoryview(data)[_HEADER.size:]) != crc:
                raise CheckpointError(where, "is corrupt: checksum mismatch")
        self.count = n
        at = _HEADER.size
        self._ends = np.frombuffer(read(at, 8 * n), dtype="<u8").copy()  # not a view of data
        self._kinds = read(at + 8 * n, n)
        self._specs: list[bytes] = pickle.loads(read(at + 9 * n, spec_len))
        self._spec_of = {spec_digest(spec): spec for spec in self._specs}
        self._values_at = at + 9 * n + spec_len

    def detach(self) -> SegmentView:
        """Drop the blob this view was made with (reads then pass their own reader)."""
        self._read = None
        return self

    def value(self, row: int, key: str | None = None, read: Any = None) -> Any:
        """The packed state of row ``row``, as :func:`pack_segment` was given it (``read``:
        another reader of the same blob than the one this view was made with). With ``key``,
        raises KeyError unless the row is that key's (two keys of one 64-bit hash)."""
        start = int(self._ends[row - 1]) if row else 0
        blob = (read or self._read)(self._values_at + start, int(self._ends[row]) - start)
        (name_len,) = struct.unpack_from("<I", blob)
        if key is not None and blob[4:4 + name_len] != key.encode("utf-8", "surrogatepass"):
            raise KeyError(key)
        blob = blob[4 + name_len:]
        kind = self._kinds[row]
        try:
            if kind == _RAW:
                return self._whole(blob)
            if kind == _SPLIT:
                (count,) = struct.unpack_from("<I", blob)
                sizes = struct.unpack_from(f"<{count}I", blob, 4)
                at, pieces = 4 + 4 * count, []
                for size in sizes:
                    pieces.append(self._whole(blob[at:at + size]))
                    at += size
                return SplitState(pieces[0], tuple(pieces[1:]))
            return pickle.loads(blob)
        except (ValueError, struct.error, pickle.UnpicklingError, EOFError) as exc:
            raise CheckpointError(self.where, f"row {row} is unreadable ({exc})") from None

    def _whole(self, blob: bytes) -> bytes:
        digest = spec_named(blob)
        if digest is None:
            return blob
        spec = self._spec_of.get(digest)
        if spec is None:
            raise ValueError(f"names spec {digest.hex()}, which its segment does not hold")
        return with_spec(blob, spec)
