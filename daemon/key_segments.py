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
>>> view.value(0, reader(seg.data)), view.value(1, reader(seg.data)), view.name(1, reader(seg.data))
(b'raw', {'x': 1}, 'b')
"""

from __future__ import annotations

import operator
import pickle
import struct
import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from adaptd.state_codec import (
    PackedGroup,
    PackedRow,
    SplitState,
    spec_apart,
    spec_digest,
    spec_named,
    with_spec,
)
from adaptd.state_values import CheckpointError, decode, encode

#: magic, version, rows, CRC-32 of everything after the header, length of the pickled table
#: of contents that follows it.
_HEADER = struct.Struct("<4sHxxIII")
_MAGIC = b"ADSG"
VERSION = 1
#: What a value stored row-wise is: packed bytes, a split state (head and chunks), anything else
#: (pickled). Values of a :class:`PackedGroup` are stored as the group's columns instead.
_RAW, _SPLIT, _PICKLED = 0, 1, 2


class Segment(NamedTuple):
    """A segment's ``names`` blob, its data blob as ``parts`` to write one after the other
    (joined, the data of a checkpoint of 100k new keys was ~90 MB copied once more), and how
    many keys it holds."""

    names: bytes
    parts: tuple[bytes, ...]
    keys: int

    @property
    def data(self) -> bytes:
        """The data blob, joined."""
        return b"".join(self.parts)


def _pack_strings(strings: Sequence[str]) -> bytes:
    if not strings:
        return struct.pack("<I", 0)
    text = "".join(strings)
    if text.isascii():  # one encode, lengths in C
        blob = text.encode("ascii")
        ends = np.cumsum(np.fromiter(map(len, strings), dtype=np.int64, count=len(strings)))
    else:
        encoded = [k.encode("utf-8", "surrogatepass") for k in strings]
        blob = b"".join(encoded)
        ends = np.cumsum([len(e) for e in encoded], dtype=np.int64)
    return struct.pack("<I", len(strings)) + ends.astype("<u4").tobytes() + blob


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


_GROUP = operator.attrgetter("group")
_INDEX = operator.attrgetter("i")


class _Writer:
    """The data blob being built: sections appended, their offsets noted in the contents."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.specs: dict[bytes, int] = {}
        self.spec_list: list[bytes] = []

    def add(self, blob: bytes) -> int:
        at = self.size
        self.parts.append(blob)
        self.size += len(blob)
        return at

    def short(self, blob: bytes) -> bytes:
        """``blob`` with its spec named by digest, the spec kept once in the segment."""
        spec, digest, rest = spec_apart(blob)
        if spec and digest not in self.specs:
            self.specs[digest] = len(self.spec_list)
            self.spec_list.append(spec)
        return rest


def _group_columns(out: _Writer, group: PackedGroup,
                   members: list[int]) -> tuple[dict[str, Any], Any]:
    """The columns of ``members`` (indices) of ``group`` written to ``out``, and where each
    member is in them: the group's bytes as they are when the members are all its keys (in
    any order), else cut per key."""
    n = len(group.ends_w)
    whole = len(members) == n and len(set(members)) == n
    if whole:
        lengths, head_of = group.lengths, group.head_of
        data_w, ends_w, data_b, ends_b = group.data_w, group.ends_w, group.data_b, group.ends_b
    else:
        idx = np.asarray(members, dtype=np.int64)
        lengths = np.frombuffer(group.lengths, dtype=np.uint8).reshape(n, -1)[idx].tobytes()
        head_of = None if group.head_of is None else [group.head_of[i] for i in members]
        data_w, ends_w = _cut(group.data_w, group.ends_w, members)
        data_b, ends_b = _cut(group.data_b, group.ends_b, members)
    return {"heads": [out.short(h) for h in group.heads],
            "head_of": None if head_of is None else np.asarray(head_of, "<u4").tobytes(),
            "row_bytes": group.row_bytes, "lengths": out.add(lengths),
            "w": out.add(data_w), "ends_w": np.asarray(ends_w, "<u8").tobytes(),
            "b": out.add(data_b), "ends_b": np.asarray(ends_b, "<u8").tobytes()}, \
        (members if whole else np.arange(len(members)))


def _cut(data: bytes, ends: list[int], members: list[int]) -> tuple[bytes, list[int]]:
    starts = [ends[i - 1] if i else 0 for i in members]
    stops = [ends[i] for i in members]
    cut = b"".join([data[a:b] for a, b in zip(starts, stops, strict=True)])
    return cut, np.cumsum(np.subtract(stops, starts, dtype=np.int64)).tolist()


def pack_segment(keys: Sequence[str], states: Sequence[Any], evicted: Sequence[bool],
                 marks: Sequence[str]) -> Segment:
    """A segment of ``keys`` with their packed ``states`` and evicted flags, and the ``marks``
    (keys let go of unchanged). States of a :class:`PackedGroup` are written as its columns
    (no step per key); any other state as a value of its own."""
    name_blob = _pack_strings(keys)  # in both blobs: encoded once
    names = encode(name_blob + np.asarray(evicted, dtype=bool).tobytes() + _pack_strings(marks))
    out = _Writer()
    n = len(keys)
    group_of = np.full(n, -1, dtype="<i4")
    index = np.zeros(n, dtype="<u4")
    members: dict[int, tuple[PackedGroup, list[int], list[int]]] = {}
    kinds = bytearray()
    values: list[bytes] = []
    if n and set(map(type, states)) == {PackedRow}:  # packed together: no step per key
        ids = np.fromiter(map(id, map(_GROUP, states)), dtype=np.int64, count=n)
        within = np.fromiter(map(_INDEX, states), dtype=np.int64, count=n)
        distinct, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(distinct) + 1))
        for g, at in enumerate(first.tolist()):
            of_g = order[bounds[g]:bounds[g + 1]]
            members[g] = (states[at].group, within[of_g].tolist(), of_g.tolist())
        states = ()
    for r, state in enumerate(states):
        if type(state) is PackedRow:
            found = members.get(id(state.group))
            if found is None:
                found = members[id(state.group)] = (state.group, [], [])
            found[1].append(state.i)
            found[2].append(r)
            continue
        index[r] = len(values)
        if type(state) is bytes:
            kinds.append(_RAW)
            values.append(out.short(state))
        elif isinstance(state, SplitState):
            kinds.append(_SPLIT)
            pieces = [out.short(state.head), *map(out.short, state.chunks)]
            values.append(struct.pack(f"<I{len(pieces)}I", len(pieces), *map(len, pieces))
                          + b"".join(pieces))
        else:
            kinds.append(_PICKLED)
            values.append(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
    groups = []
    for g, (group, at_in_group, rows) in enumerate(members.values()):
        group_of[rows] = g
        columns, index[rows] = _group_columns(out, group, at_in_group)
        groups.append(columns)
    contents = {
        "specs": out.spec_list, "group": group_of.tobytes(), "index": index.tobytes(),
        "kinds": bytes(kinds), "groups": groups, "names": out.add(name_blob),
        "values": out.add(b"".join(values)),
        "ends": np.cumsum([len(v) for v in values], dtype=np.int64).astype("<u8").tobytes()}
    table = pickle.dumps(contents, protocol=pickle.HIGHEST_PROTOCOL)
    crc = zlib.crc32(table)
    for part in out.parts:  # the CRC over the parts: the body is never joined
        crc = zlib.crc32(part, crc)
    header = _HEADER.pack(_MAGIC, VERSION, n, crc, len(table))
    return Segment(names, (header, table, *out.parts), n)


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
    """A segment's data, checked once (CRC-32 of the whole blob), then read a key at a time
    through ``read(offset, size)`` (SQLite's incremental blob I/O, :meth:`value`)."""

    def __init__(self, data: bytes, where: str) -> None:
        self.where = where
        if len(data) < _HEADER.size:
            raise CheckpointError(where, "is truncated: shorter than a segment header")
        magic, version, n, crc, table_len = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != VERSION:
            raise CheckpointError(where, f"is not a key segment of version {VERSION} "
                                  f"(header {magic!r}, version {version})")
        if zlib.crc32(memoryview(data)[_HEADER.size:]) != crc:
            raise CheckpointError(where, "is corrupt: checksum mismatch")
        self.count = n
        try:
            table = pickle.loads(data[_HEADER.size:_HEADER.size + table_len])
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise CheckpointError(where, f"is unreadable ({exc})") from None
        self._body = _HEADER.size + table_len
        self._spec_of = {spec_digest(spec): spec for spec in table["specs"]}
        self._group = np.frombuffer(table["group"], dtype="<i4")
        self._index = np.frombuffer(table["index"], dtype="<u4")
        self._kinds = table["kinds"]
        self._ends = np.frombuffer(table["ends"], dtype="<u8")
        self._values = table["values"]
        self._names = table["names"]
        self._name_ends = np.frombuffer(data, dtype="<u4", count=n,
                                        offset=self._body + self._names + 4).copy()
        self._groups = [{**g, "head_of": None if g["head_of"] is None else
                         np.frombuffer(g["head_of"], dtype="<u4"),
                         "ends_w": np.frombuffer(g["ends_w"], dtype="<u8"),
                         "ends_b": np.frombuffer(g["ends_b"], dtype="<u8")}
                        for g in table["groups"]]

    def _slice(self, read: Any, at: int, ends: np.ndarray, i: int) -> bytes:
        start = int(ends[i - 1]) if i else 0
        return read(self._body + at + start, int(ends[i]) - start)

    def name(self, row: int, read: Any) -> str:
        """The key of row ``row``."""
        names_at = self._names + 4 + 4 * self.count
        return self._slice(read, names_at, self._name_ends, row).decode("utf-8",
                                                                       "surrogatepass")

    def value(self, row: int, read: Any) -> Any:
        """The packed state of row ``row``, as :func:`pack_segment` was given it (a
        :class:`PackedRow` as its bytes)."""
        i = int(self._index[row])
        g = int(self._group[row])
        try:
            if g >= 0:
                group = self._groups[g]
                head = group["heads"][0 if group["head_of"] is None else group["head_of"][i]]
                rb = group["row_bytes"]
                return b"".join((self._whole(head),
                                 read(self._body + group["lengths"] + i * rb, rb),
                                 self._slice(read, group["w"], group["ends_w"], i),
                                 self._slice(read, group["b"], group["ends_b"], i)))
            blob = self._slice(read, self._values, self._ends, i)
            kind = self._kinds[i]
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


def reader(data: bytes) -> Any:
    """A ``read(offset, size)`` over bytes in memory."""
    return lambda at, size: data[at:at + size]
