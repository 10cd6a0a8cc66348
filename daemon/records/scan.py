"""The leanest decode: a batch of ``{"x": [numbers], "y": number}`` records scanned by compiled
code, with one JSON parse for all of its numbers.

:func:`~adaptd.records.columns.decode_columns` parses each record into a dict, a list and its
numbers (``orjson.loads``, about 0.65 µs a record), then takes the columns apart in Python.
The commonest stream has nothing in a record but the features and the label, so here a
compiled pass checks each record's structure (two fields, ``x`` a list of ``d`` number tokens
and ``y`` one, in either order, JSON whitespace anywhere JSON allows it) and copies the number
tokens into one buffer, ``[x11,…,x1d,y1,x21,…]``; ``orjson.loads`` parses that buffer once.
The numbers are therefore read by the same parser, from the same text, as on the per-record
path (the same floats, the same integers, the same refusals: a token that is not a JSON
number makes the whole buffer fail), and become floats by the same conversions. Anything else
(another field, a string, ``true``, an escaped field name, a nested value) makes the scan
give up, and the caller decodes the batch the general way; so this path only ever takes
batches every record of which the general path would take too.

>>> from adaptd.records import RecordDecoder
>>> batch = scan_columns(RecordDecoder(n_features=2), [b'{"x": [1, 2.5], "y": 1}', b'{"y":0,"x":[3,4]}'])
>>> batch.X.tolist(), batch.y.tolist(), batch.keys
([[1.0, 2.5], [3.0, 4.0]], [1.0, 0.0], ['default', 'default'])
>>> scan_columns(RecordDecoder(n_features=2), [b'{"x": [1, 2], "y": 1, "key": "a"}']) is None
True
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import orjson

from adaptd.learner.jit import njit
from adaptd.records.fields import DEFAULT_KEY, MAX_CLASS_INTEGER
from adaptd.records.schema import RecordBatch, RecordDecoder


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
def _token(buf: np.ndarray, i: int, end: int, out: np.ndarray, o: int) -> tuple[int, int]:
    """Copy the number token at ``i`` and a comma to ``out[o:]``; ``(-1, o)`` if none."""
    start = i
    while i < end and _number_byte(buf[i]):
        i += 1
    if i == start:
        return -1, o
    for j in range(start, i):
        out[o] = buf[j]
        o += 1
    out[o] = 44  # ,
    return i, o + 1


@njit(refcounts=False)
def _scan(buf: np.ndarray, bounds: np.ndarray, d: int, out: np.ndarray) -> int:
    """Write ``[`` + every record's ``d`` x tokens and its y token, comma-separated, + ``]``
    into ``out``; the bytes written, or -1 when a record is not exactly ``{"x": [d numbers],
    "y": number}`` (in either order). ``bounds[k]:bounds[k + 1]`` is record ``k``."""
    o = 1
    out[0] = 91  # [
    for k in range(len(bounds) - 1):
        end = bounds[k + 1]
        i = _skip(buf, bounds[k], end)
        if i >= end or buf[i] != 123:  # {
            return -1
        y_at = -1  # where the y token starts in ``out`` (it is moved behind the x tokens)
        y_len = 0
        x_done = False
        for field in range(2):
            i = _skip(buf, i + 1, end)
            if i + 2 >= end or buf[i] != 34 or buf[i + 2] != 34:  # "?"
                return -1
            name = buf[i + 1]
            i = _skip(buf, i + 3, end)
            if i >= end or buf[i] != 58:  # :
                return -1
            i = _skip(buf, i + 1, end)
            if name == 120 and not x_done:  # x
                if i >= end or buf[i] != 91:  # [
                    return -1
                for j in range(d):
                    i = _skip(buf, i + 1, end)
                    i, o = _token(buf, i, end, out, o)
                    if i < 0:
                        return -1
                    i = _skip(buf, i, end)
                    if i >= end or buf[i] != (44 if j < d - 1 else 93):  # , or ]
                        return -1
                x_done = True
            elif name == 121 and y_at < 0:  # y
                y_at = o
                i, o = _token(buf, i, end, out, o)
                if i < 0:
                    return -1
                y_len = o - y_at
                i -= 1  # the token's last byte: the separator follows
            else:
                return -1
            i = _skip(buf, i + 1, end)
            if i >= end or buf[i] != (44 if field == 0 else 125):  # , or }
                return -1
        if _skip(buf, i + 1, end) != end:
            return -1
        if o - y_len != y_at:  # y came first: rotate it behind the x tokens, a byte at a time
            for _ in range(y_len):  # (no temporary array: this code allocates nothing)
                first = out[y_at]
                for j in range(y_at, o - 1):
                    out[j] = out[j + 1]
                out[o - 1] = first
    out[o - 1] = 93  # ] over the last comma
    return o


def scan_columns(decoder: RecordDecoder, values: Sequence[bytes]) -> RecordBatch | None:
    """The columns of ``values`` if every record is ``{"x": [d numbers], "y": number}`` (see
    the module docstring), else None. Needs the decoder's layout fixed; never raises."""
    d = decoder.n_features
    if not d or not values:
        return None
    text = b"".join(values)
    bounds = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, values), dtype=np.int64, count=len(values)), out=bounds[1:])
    out = np.empty(len(text) + 2, dtype=np.uint8)
    m = _scan(np.frombuffer(text, dtype=np.uint8), bounds, d, out)
    if m < 0:
        return None
    try:
        flat = orjson.loads(out[:m].tobytes())
        cells = np.frombuffer(struct.pack(f"{len(flat)}d", *flat)).reshape(len(values), d + 1)
    except (orjson.JSONDecodeError, ValueError, OverflowError, struct.error):
        return None  # a token that is no JSON number, an integer beyond float range
    if not np.isfinite(cells).all():
        return None
    y = cells[:, d].copy()
    if decoder.task == "classification" and (np.abs(y) > MAX_CLASS_INTEGER).any():
        return None  # check_label refuses these whole numbers
    n = len(values)
    return RecordBatch([DEFAULT_KEY] * n, np.ascontiguousarray(cells[:, :d]), y, [None] * n,
                       [None] * n)
