"""The leanest decode: a batch of ``{"x": [numbers], "y": number, "key": "text", "task": n}`` records
scanned by compiled code into its columns, with no Python object per record or per number.

:func:`~adaptd.records.columns.decode_columns` parses each record into a dict, a list and its
numbers (``orjson.loads``, about 0.65 µs a record), then takes the columns apart in Python.
The commonest streams have nothing in a record but the features, the label and maybe a key, so
here a compiled pass checks each record's structure (the fields ``x``, a list of ``d`` numbers,
``y``, a number, optional, ``key``, a string without escapes, optional, and ``task``, a
plain non-negative integer up to :data:`~adaptd.records.fields.MAX_TASK`, optional; in any order, JSON
whitespace anywhere JSON allows it) and reads the numbers straight into the columns
(:mod:`adaptd.records.numbers`: the same doubles as orjson's and ``float()``). A number that
reader leaves undecided (more than 19 digits, a subnormal, a near-halfway case) is read by
``orjson.loads`` from its text, as on the per-record path. Keys are told apart in the same
pass (a hash of their bytes), so each distinct key becomes a ``str`` once a batch. Anything
else (another field, a string label, ``true``, ``null``, an escaped field name or key, a
nested value) makes the scan give up, and the caller decodes the batch the general way; so
this path only ever takes batches every record of which the general path would take too, and
builds the same columns from them.

>>> from adaptd.records import RecordDecoder
>>> batch = scan_columns(RecordDecoder(n_features=2), [b'{"x": [1, 2.5], "y": 1}',
...                                                    b'{"y":0,"x":[3,4],"key":"a"}'])
>>> batch.X.tolist(), batch.y.tolist(), batch.keys
([[1.0, 2.5], [3.0, 4.0]], [1.0, 0.0], ['default', 'a'])
>>> scan_columns(RecordDecoder(n_features=2), [b'{"x": [1, 2], "y": 1, "id": "a"}']) is None
True
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import orjson

from adaptd.learner.jit import njit
from adaptd.records.fields import DEFAULT_KEY, MAX_CLASS_INTEGER, MAX_NAME_BYTES, MAX_TASK
from adaptd.records.numbers import read_number
from adaptd.records.schema import RecordBatch, RecordDecoder

_X, _Y, _KEY, _TASK = 1, 2, 4, 8  # the fields, as bits of what a record has shown


@njit(inline=True, refcounts=False)
def _space(c: int) -> bool:
    return c == 32 or c == 9 or c == 10 or c == 13  # the four JSON whitespace bytes


@njit(inline=True, refcounts=False)
def _number_byte(c: int) -> bool:
    return (48 <= c <= 57) or c == 45 or c == 43 or c == 46 or c == 101 or c == 69


@njit(inline=True, refcounts=False)
def _skip(buf: np.ndarray, i: int, end: int) -> int:
    while i < end and _space(buf[i]):
        i += 1
    return i


@njit(inline=True, refcounts=False)
def _field(buf: np.ndarray, i: int, end: int) -> tuple[int, int]:
    """The field name at ``buf[i]`` (a quote) as ``_X``, ``_Y`` or ``_KEY`` (0: another), and
    the index after its closing quote."""
    if i + 2 < end and buf[i + 2] == 34:
        if buf[i + 1] == 120:  # "x"
            return _X, i + 3
        if buf[i + 1] == 121:  # "y"
            return _Y, i + 3
    elif i + 4 < end and buf[i + 1] == 107 and buf[i + 2] == 101 and buf[i + 3] == 121 \
            and buf[i + 4] == 34:  # "key"
        return _KEY, i + 5
    elif i + 5 < end and buf[i + 1] == 116 and buf[i + 2] == 97 and buf[i + 3] == 115 \
            and buf[i + 4] == 107 and buf[i + 5] == 34:  # "task"
        return _TASK, i + 6
    return 0, i


@njit(inline=True, refcounts=False)
def _task(buf: np.ndarray, i: int, end: int) -> tuple[int, int]:
    """The task at ``i``, a JSON integer of plain digits (no sign, no leading zero) at most
    ``MAX_TASK``, and the index after it; ``(-1, -1)`` for anything else (a fraction or an
    exponent then follows the digits, which the caller refuses as it expects ``,`` or ``}``)."""
    j = i
    value = 0
    while j < end and 48 <= buf[j] <= 57 and j - i < 11:
        value = value * 10 + (buf[j] - 48)
        j += 1
    if j == i or (buf[i] == 48 and j - i > 1) or value > MAX_TASK:
        return -1, -1
    return value, j


@njit(inline=True, refcounts=False)
def _number(buf: np.ndarray, i: int, end: int, out: np.ndarray, at: int, slow: np.ndarray,
            n_slow: int) -> tuple[int, int]:
    """Read the number at ``i`` into ``out.flat[at]``; one the reader leaves undecided is
    noted in ``slow`` (where it goes, where its text is) for orjson. Returns the index after
    it and the count of slow numbers, or ``(-1, _)`` when there is no number there."""
    value, j = read_number(buf, i, end)
    if j >= 0:
        out[at] = value
        return j, n_slow
    j = i
    while j < end and _number_byte(buf[j]):
        j += 1
    if j == i:
        return -1, n_slow
    slow[n_slow, 0] = at
    slow[n_slow, 1] = i
    slow[n_slow, 2] = j
    return j, n_slow + 1


@njit(nogil=True, refcounts=False)
def _scan(buf: np.ndarray, bounds: np.ndarray, d: int, cells: np.ndarray, key_at: np.ndarray,
          tasks: np.ndarray, slow: np.ndarray) -> int:
    """Fill ``cells`` (record ``k``'s ``d`` features then its label, NaN when absent, at
    ``k * (d + 1)``), ``key_at`` (the start and end of record ``k``'s key text, -1 when it
    has none) and ``tasks`` (record ``k``'s task, -1 when it has none) from the records
    ``buf[bounds[k]:bounds[k + 1]]``. Returns how many numbers went to ``slow``, or -1 when a
    record is not of the scanned shape."""
    n_slow = 0
    for k in range(len(bounds) - 1):
        end = bounds[k + 1]
        row = k * (d + 1)
        cells[row + d] = np.nan
        key_at[k, 0] = -1
        key_at[k, 1] = -1
        tasks[k] = -1
        seen = 0
        i = _skip(buf, bounds[k], end)
        if i >= end or buf[i] != 123:  # {
            return -1
        while True:
            i = _skip(buf, i + 1, end)
            if i >= end or buf[i] != 34:  # "
                return -1
            field, i = _field(buf, i, end)
            if field == 0 or seen & field:
                return -1
            seen |= field
            i = _skip(buf, i, end)
            if i >= end or buf[i] != 58:  # :
                return -1
            i = _skip(buf, i + 1, end)
            if field == _X:
                if i >= end or buf[i] != 91:  # [
                    return -1
                for j in range(d):
                    i = _skip(buf, i + 1, end)
                    i, n_slow = _number(buf, i, end, cells, row + j, slow, n_slow)
                    if i < 0:
                        return -1
                    i = _skip(buf, i, end)
                    if i >= end or buf[i] != (44 if j < d - 1 else 93):  # , or ]
                        return -1
                i += 1
            elif field == _Y:
                i, n_slow = _number(buf, i, end, cells, row + d, slow, n_slow)
                if i < 0:
                    return -1
            elif field == _TASK:
                tasks[k], i = _task(buf, i, end)
                if i < 0:
                    return -1
            else:
                if i >= end or buf[i] != 34:
                    return -1
                key_at[k, 0] = i + 1
                i += 1
                while i < end and buf[i] != 34:
                    if buf[i] == 92 or buf[i] < 32:  # an escape or a control byte
                        return -1
                    i += 1
                if i >= end or i == key_at[k, 0]:  # unfinished, or empty (a bad key)
                    return -1
                key_at[k, 1] = i
                i += 1
            i = _skip(buf, i, end)
            if i < end and buf[i] == 44:  # ,
                continue
            if i >= end or buf[i] != 125:  # }
                return -1
            break
        if not seen & _X or _skip(buf, i + 1, end) != end:
            return -1
    return n_slow


def scan_columns(decoder: RecordDecoder, values: Sequence[bytes]) -> RecordBatch | None:
    """The columns of ``values`` if every record is of the scanned shape (see the module
    docstring), else None. Needs the decoder's layout fixed; never raises."""
    n = len(values)
    if not decoder.n_features or not n:
        return None
    bounds = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, values), dtype=np.int64, count=n), out=bounds[1:])
    return scan_text(decoder, b"".join(values), bounds)


def scan_text(decoder: RecordDecoder, text: bytes, bounds: np.ndarray) -> RecordBatch | None:
    """:func:`scan_columns` of the records ``text[bounds[k]:bounds[k + 1]]`` (a record may end
    with whitespace, such as its newline), straight from the buffer they were read into."""
    d = decoder.n_features
    n = len(bounds) - 1
    if not d or n <= 0:
        return None
    cells = np.empty((n, d + 1))
    key_at = np.empty((n, 2), dtype=np.int64)
    task_at = np.empty(n, dtype=np.int64)
    slow = np.empty((n * (d + 1), 3), dtype=np.int64)
    n_slow = _scan(np.frombuffer(text, dtype=np.uint8), bounds, d, cells.reshape(-1), key_at,
                   task_at, slow)
    if n_slow < 0:
        return None
    if n_slow and not _read_slow(text, slow[:n_slow], cells.reshape(-1)):
        return None
    if not np.isfinite(cells[:, :d]).all() or np.isinf(cells[:, d]).any():
        return None
    y = cells[:, d].copy()
    if decoder.task == "classification" and (np.abs(y) > MAX_CLASS_INTEGER).any():
        return None  # check_label refuses these whole numbers
    keys = scanned_keys(text, key_at)
    if keys is None:
        return None
    return RecordBatch(keys, np.ascontiguousarray(cells[:, :d]), y, [None] * n,
                       _task_column(task_at))


def _task_column(task_at: np.ndarray) -> list[int | None]:
    """The ``task`` column: Python ints (as the per-record path's JSON integers), None where a
    record has none."""
    if task_at.min() >= 0:
        return task_at.tolist()  # type: ignore[no-any-return]
    if task_at.max() < 0:
        return [None] * len(task_at)
    return [None if t < 0 else t for t in task_at.tolist()]


def _read_slow(text: bytes, slow: np.ndarray, flat: np.ndarray) -> bool:
    """Read the numbers the compiled reader left undecided with orjson, to the same floats as
    the per-record path (a JSON integer becomes a float as ``struct.pack`` makes it); False
    when one is not a JSON number or beyond float range."""
    try:  # one parse for all: each text is a run of number bytes, so no comma is in one
        numbers = orjson.loads(b"[%s]" % b",".join([text[start:stop] for _, start, stop in
                                                     slow.tolist()]))
        flat[slow[:, 0]] = np.frombuffer(struct.pack(f"{len(numbers)}d", *numbers))
    except (orjson.JSONDecodeError, OverflowError, struct.error):
        return False
    return True


@njit(inline=True, refcounts=False)
def _same_text(buf: np.ndarray, a: int, a_end: int, b: int, b_end: int) -> bool:
    if a_end - a != b_end - b:
        return False
    for j in range(a_end - a):
        if buf[a + j] != buf[b + j]:
            return False
    return True


@njit(nogil=True, refcounts=False)
def _key_codes(buf: np.ndarray, key_at: np.ndarray, table: np.ndarray, codes: np.ndarray,
               names: np.ndarray) -> tuple[int, int]:
    """Number the distinct keys in order of first appearance (``codes[k]`` is record ``k``'s;
    records without a key share one number) and write their texts into ``names``, each
    followed by a zero byte (no key holds one; a record without a key has an empty text).
    ``table`` (all -1, a power of two longer than the records) is an open-addressing hash
    table of first records. Returns how many distinct keys there are and the bytes written."""
    mask = len(table) - 1
    m = 0
    o = 0
    for k in range(len(key_at)):
        s, e = key_at[k, 0], key_at[k, 1]
        h = np.uint64(14695981039346656037)  # FNV-1a
        for j in range(s, e):
            h = (h ^ np.uint64(buf[j])) * np.uint64(1099511628211)
        slot = np.int64(h >> np.uint64(1)) & mask  # (an int64 throughout: no float mixing)
        while True:
            first = table[slot]
            if first < 0:
                table[slot] = k
                codes[k] = m
                m += 1
                for j in range(s, e):
                    names[o] = buf[j]
                    o += 1
                names[o] = 0
                o += 1
                break
            fs, fe = key_at[first, 0], key_at[first, 1]
            if (fs < 0 and s < 0) or (fs >= 0 and s >= 0 and _same_text(buf, fs, fe, s, e)):
                codes[k] = codes[first]
                break
            slot = (slot + 1) & mask
    return m, o


def scanned_keys(text: bytes, key_at: np.ndarray) -> list[str] | None:
    """The key column from the scanned key spans (``"default"`` where absent), or None when a
    key is not one the per-record path takes as it is (not UTF-8, too long). Each distinct
    key is decoded once, all in one ``bytes.decode``.

    What :func:`~adaptd.records.columns.plain_key` asks of a key is decided here for the whole
    batch at once: a scanned key is not empty and holds no escape, so once its bytes decode
    as UTF-8 (which refuses lone surrogates) it is plain exactly when its span is at most
    :data:`~adaptd.records.fields.MAX_NAME_BYTES`. (Asked key by key, through a cache of the
    keys seen, that cost a Python step per key when keys are ever new.)"""
    n = len(key_at)
    if key_at[:, 0].max() < 0:
        return [DEFAULT_KEY] * n
    if int((key_at[:, 1] - key_at[:, 0]).max()) > MAX_NAME_BYTES:
        return None
    codes = np.empty(n, dtype=np.int64)
    names = np.empty(len(text) + n, dtype=np.uint8)
    table = np.full(1 << (2 * n).bit_length(), -1, dtype=np.int64)
    m, size = _key_codes(np.frombuffer(text, dtype=np.uint8), key_at, table, codes, names)
    try:
        distinct = names[:size - 1].tobytes().decode("utf-8").split("\x00")
    except UnicodeDecodeError:
        return None
    if "" in distinct:  # the records without a key (an empty key is not scanned)
        distinct[distinct.index("")] = DEFAULT_KEY
    if m == 1:
        return [distinct[0]] * n
    if m == n:  # every record a key of its own: numbered in order
        return distinct
    column = np.empty(m, dtype=object)
    column[:] = distinct
    return column[codes].tolist()  # type: ignore[no-any-return]
