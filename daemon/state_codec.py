"""One key's task state as one flat byte string: what a checkpoint stores per key.

A task state is a nested dict whose leaves are mostly NumPy arrays (parameters, the support
window, the hindsight buffer) and a few Python scalars (detector statistics). Pickling it costs
a reduce call per array, about 5 µs each: 170 µs for a logistic key's 35 arrays, which made
checkpoints of a thousand keys the largest cost of a run. Here the arrays' raw bytes are
concatenated behind two small pickles: the *spec* (path, dtype and shape of every array, the
same for every key of a model, so pickled once and cached) and the *rest* (the dict without
its arrays). Each array's trailing zero bytes are left out: ring buffers fill from the front,
so a key with few records (most keys, when keys are many) packs to a tenth of its size without
a compressor. Packing a key costs one copy of its bytes; unpacking returns writable arrays that
view one buffer.

>>> import numpy as np
>>> blob = pack_state({"theta": np.arange(3.0), "det": {"n": 2.0, "s": np.zeros(500)}})
>>> len(blob) < 200
True
>>> state = unpack_state(blob)
>>> state["theta"].tolist(), state["det"]["n"], state["det"]["s"].shape, bool(state["det"]["s"].any())
([0.0, 1.0, 2.0], 2.0, (500,), False)
>>> unpack_state({"already": "a dict"})  # a value written before this format passes through
{'already': 'a dict'}

A key's ring buffers (the hindsight comparator's 200 records: 90% of a logistic key's bytes) can
also be packed apart from the rest, as a :class:`SplitState`: a *head* (everything else, the
rings' spec without their bytes) and the rings cut into chunks of rows, each packed on its own.
A busy key appends a few rows between two checkpoints, so only one or two of its chunks change:
the store rewrites those and the head, not the whole buffer (:mod:`adaptd.state_rows`).

>>> rings = Rings([(("ring",), np.arange(8.0).reshape(1, 4, 2))], np.array([0]),
...               extent=np.array([4]), rows=3)
>>> split = pack_rows(["a"], [(("theta",), np.ones((1, 2)))], {}, rings)["a"]
>>> len(split.chunks)
2
>>> unpack_state(split)["ring"].tolist()
[[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]]
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

_MAGIC = b"ADKS"
#: magic, spec length, rest length (bytes); then one uint32 stored length per array.
_HEADER = struct.Struct("<4sII")
_PathSpec = tuple[tuple[tuple[str, ...], str, tuple[int, ...]], ...]
#: Distinct specs are few (one per model layout); the caches are cleared if that ever fails.
_CACHE_LIMIT = 256


class SplitState(NamedTuple):
    """A key's packed state as a head and chunks of rows of its ring buffers (see the module
    note). ``chunks[c]`` holds rows ``[c·R, (c+1)·R)`` of every ring, ``b""`` when they are all
    zero; the head holds the rings' shapes, not their bytes."""

    head: bytes
    chunks: tuple[bytes, ...]


class PackedGroup:
    """Many keys' packed values as :func:`_pack` builds them, kept as columns (heads, a row of
    array lengths per key, the arrays' kept bytes key after key) instead of one byte string
    per key: a store can write the columns as they are (:mod:`adaptd.key_segments`), and a
    key's bytes are joined only when something asks for them (:class:`PackedRow`)."""

    __slots__ = ("data_b", "data_w", "ends_b", "ends_w", "head_of", "heads", "lengths",
                 "row_bytes")

    def __init__(self, heads: list[bytes], head_of: list[int] | None, lengths: bytes,
                 row_bytes: int, data_w: bytes | memoryview, ends_w: list[int],
                 data_b: bytes | memoryview,
                 ends_b: list[int]) -> None:
        self.heads, self.head_of, self.lengths, self.row_bytes = heads, head_of, lengths, row_bytes
        self.data_w, self.ends_w, self.data_b, self.ends_b = data_w, ends_w, data_b, ends_b

    def row(self, i: int) -> bytes:
        """Key ``i``'s packed value: what :func:`pack_state` gives, or (packed by
        :func:`_columns`) with the group's widths, which unpacks to the same state."""
        head = self.heads[self.head_of[i] if self.head_of is not None else 0]
        start_w = self.ends_w[i - 1] if i else 0
        start_b = self.ends_b[i - 1] if i else 0
        return b"".join((head, self.lengths[i * self.row_bytes:(i + 1) * self.row_bytes],
                         self.data_w[start_w:self.ends_w[i]], self.data_b[start_b:self.ends_b[i]]))


class PackedRow:
    """One key's packed value inside a :class:`PackedGroup`: equal to, pickled as, and turned
    into (``bytes(row)``) its byte string (:meth:`PackedGroup.row`)."""

    __slots__ = ("group", "i")

    def __init__(self, group: PackedGroup, i: int) -> None:
        self.group, self.i = group, i

    def __bytes__(self) -> bytes:
        return self.group.row(self.i)

    def __reduce__(self) -> tuple[Any, ...]:
        return (bytes, (bytes(self),))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackedRow):
            other = bytes(other)
        elif not isinstance(other, (bytes, bytearray, memoryview)):
            # (Not joined to be compared with None: ``None in values`` asks each row.)
            return NotImplemented
        return bytes(self) == other

    __hash__ = None  # type: ignore[assignment]

    def __len__(self) -> int:
        return len(bytes(self))

    def __repr__(self) -> str:
        return f"PackedRow({bytes(self)!r})"


class _Layout(NamedTuple):
    """How to cut one spec's buffer: per array its path, dtype, shape, offset, byte size."""

    arrays: tuple[tuple[tuple[str, ...], np.dtype[Any], tuple[int, ...], int, int], ...]
    nbytes: int
    lengths: struct.Struct


_spec_bytes: dict[_PathSpec, bytes] = {}
_layouts: dict[bytes, tuple[_PathSpec, _Layout]] = {}


def pack_state(state: Any) -> Any:
    """``state``'s arrays as raw bytes behind its spec and the rest (see the module note); a
    state that is not a dict (another learner's) is returned as it is, pickled by the store."""
    if not isinstance(state, dict):
        return state
    spec: list[tuple[tuple[str, ...], str, tuple[int, ...]]] = []
    chunks: list[bytes] = []
    rest = _split(state, (), spec, chunks)
    key = tuple(spec)
    spec_blob = _spec_bytes.get(key)
    if spec_blob is None:
        if len(_spec_bytes) > _CACHE_LIMIT:
            _spec_bytes.clear()
        spec_blob = _spec_bytes[key] = pickle.dumps(key, protocol=pickle.HIGHEST_PROTOCOL)
    rest_blob = pickle.dumps(rest, protocol=pickle.HIGHEST_PROTOCOL)
    lengths = struct.pack(f"<{len(chunks)}I", *map(len, chunks))
    return b"".join((_HEADER.pack(_MAGIC, len(spec_blob), len(rest_blob)), spec_blob,
                     rest_blob, lengths, *chunks))


_Block = tuple[tuple[str, ...], np.ndarray]


class Rings(NamedTuple):
    """Ring buffers for :func:`pack_rows`, read where they live: ``arrays`` (path, array whose
    row ``at[i]`` is key i's ring, its rows on axis 1), cut in chunks of ``rows`` rows.
    ``extent[i]``: rows of key i's ring that may be non-zero (the rest are known zeros, and
    are not even read)."""

    arrays: Sequence[_Block]
    at: np.ndarray
    extent: np.ndarray
    rows: int


def pack_rows(keys: Sequence[str], blocks: Sequence[_Block],
              rest: dict[str, Any] | Sequence[dict[str, Any]],
              rings: Rings | None = None) -> dict[str, Any]:
    """:func:`pack_state` of many keys at once, from arrays that hold them as rows: ``blocks``
    are (path, array whose row i is key i's value there), ``rest`` the part without arrays
    that every key shares (or one such part per key). One copy per block instead of one per
    key and array: a checkpoint of a thousand keys' states costs milliseconds, not the 0.2 s
    of packing them one by one. With ``rings`` each key's value is a :class:`SplitState`,
    or one packed value when its rings fit in one chunk.

    >>> import numpy as np
    >>> rows = pack_rows(["a", "b"], [(("w",), np.array([[1.0, 0.0], [0.0, 0.0]]))], {"c": 1})
    >>> [(k, unpack_state(v)["w"].tolist(), unpack_state(v)["c"]) for k, v in rows.items()]
    [('a', [1.0, 0.0], 1), ('b', [0.0, 0.0], 1)]
    """
    if rings is None:
        return _pack(keys, blocks, rest, columns=True)
    # A key whose rings fit in one chunk (a new key, one with few records) is one value: its
    # rings' first chunk of rows packed with the rest, under their full shape (the rows past
    # it are zeros), so the store writes one row for it, not a head and a chunk.
    whole = rings.extent <= rings.rows
    if not whole.any():
        return _pack_split(keys, blocks, rest, rings)
    if whole.all():
        return _pack_whole(keys, blocks, rest, rings)
    out = {}
    for members in (np.flatnonzero(whole), np.flatnonzero(~whole)):
        sub_keys = [keys[i] for i in members.tolist()]
        sub_blocks = [(path, block[members]) for path, block in blocks]
        sub_rest = rest if isinstance(rest, dict) else [rest[i] for i in members.tolist()]
        sub_rings = rings._replace(at=rings.at[members], extent=rings.extent[members])
        out.update(pack_rows(sub_keys, sub_blocks, sub_rest, sub_rings))
    return out


def _pack_whole(keys: Sequence[str], blocks: Sequence[_Block],
                rest: dict[str, Any] | Sequence[dict[str, Any]], rings: Rings) -> dict[str, Any]:
    """:func:`pack_rows` of keys whose rings fit in one chunk, in groups of equal extent: a
    group's columns are as wide as its widest key's (:func:`_columns`), so a key with one
    record packed with one of twenty would keep twenty rows of zeros (with skewed keys, twice
    the state dir, measured). Many new keys are one group, as before."""
    shapes = {path: ring.shape[1:] for path, ring in rings.arrays}
    extents = np.unique(rings.extent)
    if len(extents) <= 1:
        used = int(extents[0]) if len(extents) else 0  # rows beyond it: zeros
        return _pack(keys, [*blocks, *((path, ring[rings.at, :used])
                                       for path, ring in rings.arrays)], rest, shapes,
                     columns=True)
    out: dict[str, Any] = {}
    for extent in extents.tolist():
        members = np.flatnonzero(rings.extent == extent)
        out.update(_pack_whole(
            [keys[i] for i in members.tolist()], [(path, block[members]) for path, block in blocks],
            rest if isinstance(rest, dict) else [rest[i] for i in members.tolist()],
            rings._replace(at=rings.at[members], extent=rings.extent[members])))
    return out


def _pack_split(keys: Sequence[str], blocks: Sequence[_Block],
                rest: dict[str, Any] | Sequence[dict[str, Any]], rings: Rings) -> dict[str, Any]:
    """:func:`pack_rows` of keys whose rings span more than one chunk: SplitStates."""
    # The head: the rings as zero-width entries of their full shape, no bytes.
    first = rings.at[:0]
    empty = [(path, ring[first, :0]) for path, ring in rings.arrays]
    shapes = {path: ring.shape[1:] for path, ring in rings.arrays}
    heads = _pack(keys, [*blocks, *empty], rest, shapes)
    chunks: list[list[bytes]] = [[b""] * len(keys)
                                 for _ in range(0, rings.arrays[0][1].shape[1], rings.rows)]
    for c, chunk in enumerate(chunks):
        lo = c * rings.rows
        within = np.flatnonzero(rings.extent > lo)
        if not len(within):
            continue
        rows = rings.at[within]
        packed = _pack([keys[i] for i in within.tolist()],
                       [(path, ring[rows, lo:lo + rings.rows]) for path, ring in rings.arrays],
                       {"rows_from": lo}, drop_empty=True)
        for i, blob in zip(within.tolist(), packed.values(), strict=True):
            chunk[i] = blob
    return {key: SplitState(heads[key], tuple(chunk[i] for chunk in chunks))
            for i, key in enumerate(keys)}


def _pack(keys: Sequence[str], blocks: Sequence[_Block],
          rest: dict[str, Any] | Sequence[dict[str, Any]],
          shapes: dict[tuple[str, ...], tuple[int, ...]] | None = None,
          drop_empty: bool = False, columns: bool = False) -> dict[str, Any]:
    """:func:`pack_rows` without rings; ``shapes`` overrides the spec's shape of some paths
    (the head's zero-width rings), ``drop_empty`` gives ``b""`` for a key with no bytes;
    ``columns``: the values are :class:`PackedRow` of one :class:`PackedGroup`."""
    n = len(keys)
    # Arrays whose rows are whole 8-byte words first: their used bytes are gathered as words
    # (an eighth of the steps); the spec records the order, so unpacking follows it.
    blocks = sorted(blocks, key=lambda block: block[1][:1].nbytes % 8 != 0)
    spec = tuple((path, block.dtype.str, (shapes or {}).get(path, block.shape[1:]))
                 for path, block in blocks)
    distinct, head_of = _heads(spec, rest)
    heads = [distinct[i] for i in head_of]
    raws = [np.ascontiguousarray(block).reshape(n, -1).view(np.uint8) for _, block in blocks]
    words = sum(1 for raw in raws if raw.shape[1] % 8 == 0)
    row_bytes = 4 * len(blocks)
    if columns:
        group = _columns(raws, words, distinct, head_of if len(head_of) > 1 else None)
        return dict(zip(keys, map(PackedRow, [group] * n, range(n)), strict=True))
    lengths = np.empty((n, len(blocks)), dtype="<u4")
    for j, raw in enumerate(raws):
        lengths[:, j] = _used_bytes(raw)
    data_w, ends_w = _kept([raw.view(np.uint64) for raw in raws[:words]], lengths[:, :words], 8)
    data_b, ends_b = _kept(raws[words:], lengths[:, words:], 1)
    length_rows = lengths.tobytes()
    out = {}
    start_w = start_b = 0
    for i, key in enumerate(keys):
        end_w, end_b = ends_w[i], ends_b[i]
        if drop_empty and end_w == start_w and end_b == start_b:
            out[key] = b""
            continue
        out[key] = b"".join((heads[i if len(heads) > 1 else 0],
                             length_rows[i * row_bytes:(i + 1) * row_bytes],
                             data_w[start_w:end_w], data_b[start_b:end_b]))
        start_w, start_b = end_w, end_b
    return out


def _heads(spec: _PathSpec, rest: dict[str, Any] | Sequence[dict[str, Any]]
           ) -> tuple[list[bytes], list[int]]:
    """The distinct heads (header, spec, pickled rest) of values of ``spec`` whose parts
    without arrays are ``rest`` (one for all, or one per key), and each key's head among
    them."""
    spec_blob = _spec_bytes.get(spec)
    if spec_blob is None:
        spec_blob = _spec_bytes[spec] = pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)
    rests = [rest] if isinstance(rest, dict) else list(rest)
    pickled: dict[int, int] = {}  # equal parts are often one object: pickled once
    distinct: list[bytes] = []
    head_of = []
    for part in rests:
        at = pickled.get(id(part))
        if at is None:
            rest_blob = pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL)
            at = pickled[id(part)] = len(distinct)
            distinct.append(_HEADER.pack(_MAGIC, len(spec_blob), len(rest_blob))
                            + spec_blob + rest_blob)
        head_of.append(at)
    return distinct, head_of


def packed_columns(keys: Sequence[str], spec: _PathSpec, rest: dict[str, Any],
                   widths: Sequence[int], words: int, data_w: bytes | memoryview,
                   data_b: bytes | memoryview) -> dict[str, PackedRow]:
    """key → its value in one :class:`PackedGroup` of ``keys``, from columns already cut:
    what :func:`_pack` gives with ``columns`` for blocks of ``spec`` (the first ``words``
    of them rows of whole 8-byte words) and ``rest``, given each block's width in bytes and
    the cut blocks joined (``data_w``: the word blocks', ``data_b``: the others', key after
    key). For a caller that cuts them where the rows live, without gathering whole rows
    first (:mod:`adaptd.learner.packing`)."""
    distinct, _ = _heads(spec, rest)
    group = _group(distinct, None, len(keys), list(widths), words, data_w, data_b)
    return dict(zip(keys, map(PackedRow, [group] * len(keys), range(len(keys))), strict=True))


def _group(heads: list[bytes], head_of: list[int] | None, n: int, widths: list[int],
           words: int, data_w: bytes | memoryview, data_b: bytes | memoryview) -> PackedGroup:
    """The :class:`PackedGroup` of ``n`` keys each keeping ``widths`` bytes of every block
    (see :func:`_columns`), the blocks' bytes ``data_w`` and ``data_b`` as cut."""
    parts = []
    for (lo, hi), data in zip(((0, words), (words, len(widths))), (data_w, data_b),
                              strict=True):
        row = sum(widths[lo:hi])
        parts.append((data, list(range(row, row * n + 1, row)) if row else [0] * n))
    (data_w, ends_w), (data_b, ends_b) = parts
    lengths = np.broadcast_to(np.asarray(widths, dtype="<u4"), (n, len(widths))).tobytes()
    return PackedGroup(heads, head_of, lengths, 4 * len(widths), data_w, ends_w, data_b, ends_b)


def _columns(raws: list[np.ndarray], words: int, heads: list[bytes],
             head_of: list[int] | None) -> PackedGroup:
    """The :class:`PackedGroup` of keys whose arrays are ``raws`` (rows of bytes, the first
    ``words`` whole 8-byte words): each array cut to the most any key of the group uses of
    it, every key keeping that many bytes (its own trailing zeros past its used length
    included). A column's width is one reduction over the column, no scan per key and no
    gather of each key's used bytes (two thirds of packing a checkpoint of new keys); the
    values still read as :func:`pack_state`'s do (:func:`unpack_state` takes any length up
    to an array's size), a few bytes longer for keys that use less than the group's most."""
    n = len(raws[0]) if raws else 0
    widths = [_widest(raw.view(np.uint64) if j < words else raw) * (8 if j < words else 1)
              for j, raw in enumerate(raws)]
    data: list[bytes | memoryview] = []
    for lo, hi in ((0, words), (words, len(raws))):
        cut = [raw[:, :w] for raw, w in zip(raws[lo:hi], widths[lo:hi], strict=True) if w]
        # The joined columns' own memory, not a copy of it (a store writes it as it is).
        data.append(np.concatenate(cut, axis=1).reshape(-1).view(np.uint8).data if cut
                    else b"")
    return _group(heads, head_of, n, widths, words, data[0], data[1])


def _widest(raw: np.ndarray) -> int:
    """Items of ``raw`` (n, width) up to the last column any row has a non-zero in."""
    if raw.shape[1] == 0 or raw.shape[0] == 0:
        return 0
    if raw[:, -1].any():  # (one strided column: arrays every key fills skip the scan)
        return raw.shape[1]
    used = np.flatnonzero(raw.any(axis=0))
    return int(used[-1]) + 1 if len(used) else 0


def _kept(raws: list[np.ndarray], lengths: np.ndarray, itemsize: int) -> tuple[bytes, list[int]]:
    """Every key's used bytes of ``raws`` (rows of ``itemsize``-byte items), key after key,
    in one boolean gather (an item is kept when it lies before its array's used length), and
    where each key's bytes end."""
    n = len(lengths)
    ends = np.cumsum(lengths.sum(axis=1, dtype=np.int64)).tolist() if raws else [0] * n
    if not raws:
        return b"", ends
    used = lengths // itemsize
    # Each array cut to the most any key uses of it first: a new key fills a fifth of its
    # window and one row of its hindsight buffer, so the gather below reads its used bytes,
    # not its whole row (twice the bytes, measured at 1M distinct keys).
    widths = used.max(axis=0, initial=0).tolist()
    whole = np.concatenate([raw[:, :w] for raw, w in zip(raws, widths, strict=True)], axis=1)
    if (used == np.asarray(widths, dtype=used.dtype)).all():
        return whole.tobytes(), ends  # every key uses as much (busy keys, or keys alike)
    keep = np.empty(whole.shape, dtype=bool)
    columns = np.arange(max(widths), dtype=used.dtype)
    start = 0
    for j, w in enumerate(widths):
        np.less(columns[:w], used[:, j:j + 1], out=keep[:, start:start + w])
        start += w
    return whole[keep].tobytes(), ends


def _used_bytes(raw: np.ndarray) -> np.ndarray:
    """Per row of ``raw`` (n, width) uint8: its length without trailing zero words. Only rows
    ending in a zero byte are scanned (a busy ring buffer's row ends in a float's exponent),
    eight bytes at a time where the width allows."""
    width = raw.shape[1]
    used = np.full(len(raw), width, dtype=np.int64)
    if width == 0:
        return used
    tail_zero = np.flatnonzero(raw[:, -1] == 0)
    if len(tail_zero):
        word = 8 if width % 8 == 0 else 1
        rows = raw if len(tail_zero) == len(raw) else raw[tail_zero]
        nonzero = rows.view(f"<u{word}") != 0
        # argmax over a reversed copy: on the reversed view NumPy walks it 4x slower.
        from_end = np.ascontiguousarray(nonzero[:, ::-1]).argmax(axis=1)
        last = (nonzero.shape[1] - from_end) * word
        used[tail_zero] = np.where(nonzero.any(axis=1), last, 0)
    return used


def _split(node: dict[str, Any], path: tuple[str, ...], spec: list[Any],
           chunks: list[bytes]) -> dict[str, Any]:
    rest: dict[str, Any] = {}
    for name, value in node.items():
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            spec.append(((*path, name), value.dtype.str, value.shape))
            chunks.append(value.tobytes().rstrip(b"\0"))
        elif isinstance(value, dict) and all(isinstance(k, str) for k in value):
            rest[name] = _split(value, (*path, name), spec, chunks)
        else:
            rest[name] = value
    return rest


def unpack_state(blob: Any) -> Any:
    """The state :func:`pack_state` or :func:`pack_rows` packed; anything else (a value stored
    before this format, an already unpacked state) is returned as it is. Raises ValueError on
    a damaged value."""
    if isinstance(blob, SplitState):
        state = unpack_state(blob.head)
        for chunk in blob.chunks:
            if chunk:
                part = unpack_state(chunk)
                _put_rows(state, part, int(part.pop("rows_from")))
        return state
    if isinstance(blob, PackedRow):
        blob = bytes(blob)
    if not isinstance(blob, (bytes, bytearray)) or blob[:4] != _MAGIC:
        return blob
    _, spec_len, rest_len = _HEADER.unpack_from(blob)
    start = _HEADER.size
    spec_blob = bytes(blob[start:start + spec_len])
    layout = _layout(spec_blob)
    start += spec_len
    state = pickle.loads(blob[start:start + rest_len])
    start += rest_len
    lengths = layout.lengths.unpack_from(blob, start)
    start += layout.lengths.size
    buffer = bytearray(layout.nbytes)  # zeros: the stripped tails
    for (path, dtype, shape, offset, size), length in zip(layout.arrays, lengths, strict=True):
        if length > size:
            raise ValueError(f"packed state: array {'/'.join(path)} holds {length} bytes, "
                             f"more than its {size}")
        buffer[offset:offset + length] = blob[start:start + length]
        start += length
        node = state
        for name in path[:-1]:
            node = node[name]
        node[path[-1]] = np.frombuffer(buffer, dtype=dtype, count=size // dtype.itemsize,
                                       offset=offset).reshape(shape)
    if start != len(blob):
        raise ValueError(f"packed state: {len(blob) - start} bytes left over")
    return state


#: A packed value whose spec is named by its digest (:func:`spec_apart`): magic, digest, rest
#: length; then what follows the spec in the full form.
_REF_MAGIC = b"ADKR"
_REF_HEADER = struct.Struct("<4s16sI")
_spec_ids: dict[bytes, bytes] = {}
#: The last header and spec cut off, with its digest and short header: (prefix, spec, digest,
#: short header); none yet while the spec is empty.
_last_apart: list[bytes] = [b"", b"", b"", b""]


def spec_apart(blob: bytes) -> tuple[bytes, bytes, bytes]:
    """(spec, its digest, the value with the digest in place of the spec) of a packed value:
    every key of a model has the same spec (about 800 bytes, as much as a new key's numbers),
    so a store keeps it once. Anything else comes back as ``(b"", b"", blob)``.

    >>> blob = pack_state({"theta": np.arange(3.0)})
    >>> spec, digest, short = spec_apart(blob)
    >>> len(short) < len(blob) and with_spec(short, spec) == blob
    True
    """
    prefix, spec, digest, short_header = _last_apart
    if not (spec and blob.startswith(prefix)):  # a checkpoint's values share one: a memcmp
        if blob[:4] != _MAGIC:
            return b"", b"", blob
        _, spec_len, rest_len = _HEADER.unpack_from(blob)
        spec = blob[_HEADER.size:_HEADER.size + spec_len]
        digest = _spec_digest(spec)
        prefix = blob[:_HEADER.size + spec_len]  # the header holds the rest's length too
        short_header = _REF_HEADER.pack(_REF_MAGIC, digest, rest_len)
        _last_apart[:] = prefix, spec, digest, short_header
    return spec, digest, short_header + blob[len(prefix):]


def _spec_digest(spec: bytes) -> bytes:
    """A spec's BLAKE2b-128 digest, its name in the store; cached (a read of a key checks the
    spec it names, the same few specs every time)."""
    known = _spec_ids.get(spec)
    if known is None:
        if len(_spec_ids) > _CACHE_LIMIT:
            _spec_ids.clear()
        known = _spec_ids[spec] = hashlib.blake2b(spec, digest_size=16).digest()
    return known


#: A spec's digest, as :func:`spec_apart` names it.
spec_digest = _spec_digest


def spec_named(blob: bytes) -> bytes | None:
    """The digest of the spec a value of :func:`spec_apart` names (None: a whole value)."""
    return blob[4:20] if blob[:4] == _REF_MAGIC and len(blob) >= _REF_HEADER.size else None


def with_spec(short: bytes, spec: bytes) -> bytes:
    """The whole packed value back from :func:`spec_apart`'s short one and its ``spec``."""
    _, digest, rest_len = _REF_HEADER.unpack_from(short)
    if _spec_digest(spec) != digest:
        raise ValueError("packed state: its spec's digest does not match")
    return b"".join((_HEADER.pack(_MAGIC, len(spec), rest_len), spec,
                     short[_REF_HEADER.size:]))


def _put_rows(state: dict[str, Any], part: dict[str, Any], start: int) -> None:
    """Copy the arrays of a chunk ``part`` into ``state``'s at rows ``start`` on."""
    for name, value in part.items():
        if isinstance(value, dict):
            _put_rows(state[name], value, start)
        else:
            state[name][start:start + len(value)] = value


def _layout(spec_blob: bytes) -> _Layout:
    found = _layouts.get(spec_blob)
    if found is not None:
        return found[1]
    spec: _PathSpec = pickle.loads(spec_blob)
    arrays = []
    offset = 0
    for path, dtype_str, shape in spec:
        dtype = np.dtype(dtype_str)
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        arrays.append((path, dtype, shape, offset, size))
        offset += size
    layout = _Layout(tuple(arrays), offset, struct.Struct(f"<{len(arrays)}I"))
    if len(_layouts) > _CACHE_LIMIT:
        _layouts.clear()
    _layouts[spec_blob] = (spec, layout)
    return layout
