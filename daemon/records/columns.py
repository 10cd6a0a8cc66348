"""The lean decode: a batch of plain records straight into columns, with no object per record
but what the JSON parser builds.

:meth:`~adaptd.records.RecordDecoder.decode_into` validates one record at a time in Python
(about 10 µs a record with its bookkeeping). Most batches hold only *plain* records: a JSON
object with ``x`` a list (or, once the names are fixed, an object) of finite numbers of the
fixed layout, ``y`` a number or absent, ``key`` and ``id`` strings or absent, ``task`` an
integer in ``[0, MAX_TASK]`` or absent.
:func:`decode_columns` checks a whole batch for that with a handful of C-level passes
(``map``, ``set``, ``struct.pack``, NumPy) and returns its columns, or None as soon as
anything is not plain; the caller then decodes that batch record by record, which finds the
bad records and says why. So the lean path never decides anything about a record the
per-record path would decide differently: it only ever takes batches in which the per-record
path would accept every record, and builds the same columns from them (the same floats, by
the same conversions). A batch of records with only ``x`` and ``y`` goes to the compiled scan
(:mod:`adaptd.records.scan`) first, which builds no dict or list per record.

>>> from adaptd.records import RecordDecoder
>>> decoder = RecordDecoder(n_features=2)
>>> batch = decode_columns(decoder, [b'{"x": [1, 2.5], "y": 1}', b'{"x": [3, 4], "key": "a"}'])
>>> batch.keys, batch.X.tolist(), batch.y.tolist(), batch.ids
(['default', 'a'], [[1.0, 2.5], [3.0, 4.0]], [1.0, nan], [None, None])
>>> decode_columns(decoder, [b'{"x": [1, 2]}', b'{"x": [true, 2]}']) is None  # bad_x
True
"""

from __future__ import annotations

import functools
import itertools
import struct
from collections import deque
from collections.abc import Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from adaptd.errors import RecordError
from adaptd.records.fields import (
    DEFAULT_KEY,
    MAX_CLASS_INTEGER,
    MAX_NAME_BYTES,
    MAX_TASK,
    record_key,
)
from adaptd.records.scan import scan_columns, scan_text
from adaptd.records.schema import BatchBuilder, RecordBatch, RecordDecoder

_X = itemgetter("x")
_Y = itemgetter("y")
#: The types a plain label may have (``None``: no label; a bool is the number 0/1, as in
#: :meth:`RecordDecoder._label`). A string label (multi-class, or a bad regression target)
#: takes the per-record path.
_PLAIN_LABELS = frozenset({float, int, bool, type(None)})
#: A plain ``id`` is a string this short: at most 4 UTF-8 bytes a character, so within
#: :data:`~adaptd.records.fields.MAX_NAME_BYTES` without encoding each one.
_MAX_PLAIN_ID_CHARS = MAX_NAME_BYTES // 4


def decode_columns(decoder: RecordDecoder, values: Sequence[bytes]) -> RecordBatch | None:
    """The columns of ``values`` (raw records) if every one is plain (see the module
    docstring), else None. Needs the decoder's layout fixed (by settings or an earlier
    record); never changes the decoder. Never raises on any input."""
    d = decoder.n_features
    if d is None or not values or max(map(len, values)) > decoder.max_record_bytes:
        return None
    scanned = scan_columns(decoder, values)  # records of only x and y: no dict per record
    if scanned is not None:
        return scanned
    try:
        objs = list(map(orjson.loads, values))
        rows = list(map(_X, objs))  # KeyError: no x (a delayed label); TypeError: no object
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    try:
        X = _features(decoder, rows, d, values)
        if X is None:
            return None
        y = _labels(objs, decoder.task == "classification")
        if y is None:
            return None
        n = len(objs)
        if _only_x_and_y(objs):  # no key, id or task to look for (about 0.1 µs a record)
            return RecordBatch([DEFAULT_KEY] * n, X, y, [None] * n, [None] * n)
        keys = _keys(objs)
        ids = _ids(objs)
    except (TypeError, ValueError, OverflowError, struct.error, RecordError):
        return None  # an unhashable key, a huge integer, …: the per-record path says which
    if keys is None or ids is None:
        return None
    tasks = _tasks(objs)
    if tasks is None:
        return None
    return RecordBatch(keys, X, y, ids, tasks)


def fix_layout(decoder: RecordDecoder, first: bytes) -> None:
    """Let ``first``, a batch's first record, fix the decoder's layout as the record-by-record
    path would (the first valid record fixes it), so that the whole batch, that record again
    included, can decode in columns. Without it a run's first batch (4,096 records) went
    record by record, about 0.1 s of a 0.6-s run. Changes nothing if ``first`` is not valid,
    or is a delayed label: the batch then takes the record-by-record path, as before."""
    if decoder.n_features is None:
        try:
            decoder.decode_into(first, BatchBuilder())
        except RecordError:
            pass


def decode_lines(decoder: RecordDecoder, text: bytes, bounds: np.ndarray) -> RecordBatch | None:
    """:func:`decode_columns` of the lines ``text[bounds[k]:bounds[k + 1]]`` (each ending with
    its newline, as a :class:`~adaptd.connectors.base.LineRun` holds them) when the compiled
    scan takes them all, else None (the caller then tries :func:`decode_columns`)."""
    if decoder.n_features is None or len(bounds) < 2 or \
            int(np.diff(bounds).max()) - 1 > decoder.max_record_bytes:
        return None
    return scan_text(decoder, text, bounds)


def _only_x_and_y(objs: list[dict[str, Any]]) -> bool:
    """Whether every record has exactly the fields ``x`` and ``y`` (``x`` is known present)."""
    if set(map(len, objs)) != {2}:
        return False
    try:
        deque(map(_Y, objs), maxlen=0)
    except KeyError:
        return False
    return True


def _features(decoder: RecordDecoder, rows: list[Any], d: int, values: Sequence[bytes]
              ) -> np.ndarray | None:
    """``(n, d)`` float64 of plain feature rows, or None."""
    kinds = set(map(type, rows))
    if kinds == {dict}:
        names = decoder.feature_names
        if names is None or set(map(len, rows)) != {d}:
            return None  # the first object x fixes the names record by record
        # With as many entries as names, every name present means no unknown one.
        rows = [[row[names[0]]] for row in rows] if d == 1 else \
            list(map(itemgetter(*names), rows))
    elif kinds != {list} or set(map(len, rows)) != {d}:
        return None
    flat = list(itertools.chain.from_iterable(rows))
    # struct refuses what is not a number (a string, null, a list) and integers beyond float
    # range; it converts the rest exactly as float() does. Only true/false would pass (bool is
    # an int): with no "u" and no "l" in the raw bytes neither literal is there (one memchr
    # each), else the types are looked at.
    text = b"".join(values)
    if (b"u" in text or b"l" in text) and not {float, int}.issuperset(map(type, flat)):
        return None
    X = np.frombuffer(struct.pack(f"{len(flat)}d", *flat)).reshape(len(rows), d)
    return X if np.isfinite(X).all() else None


def _labels(objs: list[dict[str, Any]], classification: bool) -> np.ndarray | None:
    """The ``y`` column (NaN where absent or null), or None when a label is not plain."""
    ys = list(map(dict.get, objs, repeat("y")))  # type: ignore[arg-type]
    if not _PLAIN_LABELS.issuperset(map(type, ys)):
        return None
    y = np.array(ys, dtype=np.float64)
    if np.isinf(y).any():
        return None
    if classification and (np.abs(y) > MAX_CLASS_INTEGER).any():
        return None  # check_label refuses these whole numbers
    return y


def _keys(objs: list[dict[str, Any]]) -> list[str] | None:
    """The ``key`` column (``"default"`` where absent), or None when a key is not a plain
    string; each distinct key is checked once."""
    keys: list[Any] = list(map(dict.get, objs, repeat("key"), repeat(DEFAULT_KEY)))  # type: ignore[arg-type]
    for key in set(keys):
        # A number is a key too, as its text: the per-record path writes it.
        if type(key) is not str or not plain_key(key):
            return None
    return keys


@functools.lru_cache(maxsize=1 << 16)
def plain_key(key: str) -> bool:
    """Whether a string key is one :func:`record_key` takes; remembered, as the same keys
    come back batch after batch."""
    try:
        record_key({"key": key})  # RecordError: empty, too long, a lone surrogate
    except RecordError:
        return False
    return True


def _optional(objs: list[dict[str, Any]], name: str, kind: type
              ) -> tuple[list[Any], list[Any]] | None:
    """The ``name`` column (None where absent or null) and its values present, or None when
    one is anything but a ``kind`` (exactly: a bool is no int here)."""
    column = list(map(dict.get, objs, repeat(name)))  # type: ignore[arg-type]
    if not set(map(type, column)) <= {kind, type(None)}:
        return None
    return column, [v for v in column if v is not None]


def _tasks(objs: list[dict[str, Any]]) -> list[int | None] | None:
    """The ``task`` column (None where absent or null), or None when a task is anything but a
    JSON integer in ``[0, MAX_TASK]`` (a float, a bool, a string, out of range: the
    per-record path decides those, as :func:`~adaptd.records.fields.record_task`)."""
    taken = _optional(objs, "task", int)
    if taken is None:
        return None
    tasks, numbers = taken
    return tasks if not numbers or (min(numbers) >= 0 and max(numbers) <= MAX_TASK) else None


def _ids(objs: list[dict[str, Any]]) -> list[str | None] | None:
    """The ``id`` column (None where absent or null), or None when an id is not a plain
    string."""
    taken = _optional(objs, "id", str)
    if taken is None:
        return None
    ids, texts = taken
    if not texts:
        return ids
    if max(map(len, texts)) > _MAX_PLAIN_ID_CHARS:
        return None
    try:
        "".join(texts).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return None
    return ids
