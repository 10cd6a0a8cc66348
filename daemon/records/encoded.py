"""The lean encode: a batch's prediction messages as one buffer, byte for byte what
:func:`~adaptd.records.messages.predictions` writes message by message.

Building a dict per prediction and encoding it costs about 1.5 µs a record. Here the fields
that vary are turned into columns: integers as they are, keys and ids as one text each
(encoded once per distinct value), floats as one ``orjson.dumps`` of the whole list cut at its
commas; a compiled loop then writes each message from the fixed texts between the fields and
the columns' values. Numbers come out exactly as orjson writes them in the dict path (the same
encoder, on the same Python values; a non-finite float is ``null`` in both); integers in
decimal, as ``%d`` writes them. Formatting with ``bytes %`` instead cost about 0.6 µs a record
more (a tuple of every value, then the format).

Only the common shapes are templated: binary classification and regression, every record of
the batch labelled (``loss`` present) or none; anything else (multi-class ``probas``, a batch
with some labelled records) returns None and goes message by message.

>>> import numpy as np
>>> from adaptd.learner import Outcomes
>>> from adaptd.records.schema import RecordBatch
>>> batch = RecordBatch(["a", "a"], np.zeros((2, 1)), np.array([1.0, 0.0]), [None, "r2"],
...                     [None, None])
>>> outcomes = Outcomes(np.array([0.75, 0.25]), np.array([0.29, 0.29]), np.array([0, 1]))
>>> print(encoded_predictions([0, 0], [7, 8], batch, outcomes, "classification").lines.decode())
{"id":null,"key":"a","partition":0,"position":7,"segment":0,"y_pred":1,"proba":0.75,"loss":0.29}
{"id":"r2","key":"a","partition":0,"position":8,"segment":1,"y_pred":0,"proba":0.25,"loss":0.29}
<BLANKLINE>
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import orjson

from adaptd.connectors.base import EncodedBatch
from adaptd.learner.jit import njit

if TYPE_CHECKING:  # the learner imports the schema: import its types for hints only
    from adaptd.learner import Outcomes
    from adaptd.records.schema import RecordBatch, TaskKind


#: Keys as JSON texts and as UTF-8, by :func:`_cached`; at most _MAX_CACHED each.
_JSON_KEYS: dict[str, bytes] = {}
_KEY_BYTES: dict[str, bytes] = {}
_MAX_CACHED = 1 << 16

#: A message's varying field: an integer column, or a column of texts as one buffer with
#: where each text starts and ends in it (``buffer[starts[i]:ends[i]]``).
Column = np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]


def encoded_predictions(partitions: Sequence[int], positions: Sequence[int],
                        batch: RecordBatch, outcomes: Outcomes, task: TaskKind
                        ) -> EncodedBatch | None:
    """The prediction messages of a learned batch (record ``i`` read at ``partitions[i]``,
    ``positions[i]``) as one :class:`EncodedBatch`, or None for a shape that is not templated
    (see the module docstring). Called once per batch; no I/O."""
    n = len(batch)
    if outcomes.probas is not None or n == 0:
        return None
    labelled = ~np.isnan(outcomes.loss)
    if not (labelled.all() or not labelled.any()):
        return None
    texts: list[bytes] = [b'{"id":']  # the text before each column, and after the last
    columns: list[Column] = []
    _field(texts, columns, _json_column(batch.ids), b',"key":')
    plain = _plain_keys(batch.keys)
    if plain is None:
        _field(texts, columns, _json_column(batch.keys, _JSON_KEYS), b',"partition":')
    else:
        columns.append(plain.json)
        texts.append(b',"partition":')
    _field(texts, columns, np.asarray(partitions, dtype=np.int64), b',"position":')
    _field(texts, columns, np.asarray(positions, dtype=np.int64), b',"segment":')
    _field(texts, columns, outcomes.segment.astype(np.int64), b',"y_pred":')
    if task == "classification":
        _field(texts, columns, (outcomes.y_pred >= 0.5).astype(np.int64), b',"proba":')
    columns.append(_float_texts(outcomes.y_pred))
    if labelled.any():
        texts.append(b',"loss":')
        columns.append(_float_texts(outcomes.loss))
    texts.append(b"}\n")
    return EncodedBatch(_assemble(texts, columns, n),
                        _message_keys(batch.keys) if plain is None else plain.utf8)


class _PlainKeys(NamedTuple):
    """A batch's keys as the key column (JSON texts, quoted) and as message keys (UTF-8)."""

    json: tuple[np.ndarray, np.ndarray, np.ndarray]
    utf8: list[bytes]


def _plain_keys(keys: Sequence[str]) -> _PlainKeys | None:
    """The keys of a batch of varied keys, each printable ASCII without ``"`` or ``\\`` (its
    JSON text is then itself quoted, as orjson writes it), in a few C-level passes over the
    batch's keys joined by newlines; None for any other batch (one key, which :func:`_field`
    writes once; or a key that needs escaping). With ever-new keys the per-key cache of
    :func:`_cached` misses at every record (a lookup, an ``orjson.dumps``, an insert and a
    second lookup, twice over: JSON and UTF-8): that was a seventh of a distinct-keys run's
    CPU, against about a tenth of it here."""
    n = len(keys)
    if n < 2 or keys.count(keys[0]) == n:
        return None
    text = "\n".join(keys)
    if not text.isascii():
        return None
    raw = text.encode("ascii")
    codes = np.frombuffer(raw, dtype=np.uint8)
    newlines = codes == 10
    # A key holding a newline (the separator), a quote, a backslash or a control character.
    if int(np.count_nonzero(newlines)) != n - 1 or not (
            (codes >= 32) & (codes < 127) & (codes != 34) & (codes != 92) | newlines).all():
        return None
    # Key i is raw[a_i:b_i]; quoted and joined by '\n', it is buffer[a_i + 2i:b_i + 2i + 2].
    bounds = np.flatnonzero(newlines)
    shift = 2 * np.arange(n, dtype=np.int64)
    starts = np.concatenate(([0], bounds + 1)) + shift
    ends = np.concatenate((bounds, [len(raw)])) + shift + 2
    buffer = np.frombuffer(b'"' + raw.replace(b"\n", b'"\n"') + b'"', dtype=np.uint8)
    return _PlainKeys((buffer, starts, ends), raw.split(b"\n"))


def _field(texts: list[bytes], columns: list[Column], column: Sequence[bytes] | np.ndarray,
           after: bytes) -> None:
    """Append one field: its value written into the text when the whole batch shares it,
    else its column; then the text that follows it."""
    if isinstance(column, np.ndarray):
        if (column == column[0]).all():
            texts[-1] += str(int(column[0])).encode() + after
            return
        columns.append(column)
    else:
        if column.count(column[0]) == len(column):
            texts[-1] += column[0] + after
            return
        columns.append(_text_column(column))
    texts.append(after)


def _json_column(texts: Sequence[str | None], cache: dict[Any, bytes] | None = None
                 ) -> list[bytes]:
    """Each key or id as JSON (``null`` for None), encoding each distinct one once (in
    ``cache`` from batch to batch, if given: for keys, not for ids, which rarely repeat)."""
    return _cached(texts, {} if cache is None else cache, orjson.dumps)


def _cached(texts: Sequence[Any], cache: dict[Any, bytes], encode: Callable[[Any], bytes]
            ) -> list[bytes]:
    """``encode`` of each of ``texts``, through ``cache``: the same keys come back batch after
    batch, so with a thousand keys a batch nearly every one is encoded already (a lookup per
    record, in C). The cache is emptied when it reaches :data:`_MAX_CACHED` entries."""
    first = texts[0] if texts else None
    if texts and texts.count(first) == len(texts):  # one key (and no ids): in C, by identity
        known = cache.get(first)
        return [encode(first) if known is None else known] * len(texts)
    try:
        return list(map(cache.__getitem__, texts))
    except KeyError:
        if len(cache) >= _MAX_CACHED:
            cache.clear()
        cache.update({text: encode(text) for text in set(texts) if text not in cache})
        return list(map(cache.__getitem__, texts))


def _text_column(texts: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A column of texts as one buffer, with where each starts and ends."""
    ends = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)))
    starts = np.concatenate(([0], ends[:-1]))
    return np.frombuffer(b"".join(texts), dtype=np.uint8), starts, ends


def _float_texts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each float as orjson writes it inside a message (``null`` when not finite), as a text
    column: one ``orjson.dumps`` of the list, cut at its commas (no float text holds one)."""
    text = np.frombuffer(orjson.dumps(values.tolist()), dtype=np.uint8)
    commas = np.flatnonzero(text == 44)  # ","
    return (text, np.concatenate(([1], commas + 1)),  # after "[" and each ","
            np.concatenate((commas, [len(text) - 1])))  # before each "," and the "]"


def _assemble(texts: list[bytes], columns: list[Column], n: int) -> bytes:
    """``n`` messages: ``texts[0]``, column 0's value, ``texts[1]``, …, ``texts[-1]`` each."""
    ints = [c for c in columns if isinstance(c, np.ndarray)]
    strings = [c for c in columns if not isinstance(c, np.ndarray)]
    kinds = np.array([0 if isinstance(c, np.ndarray) else 1 for c in columns], dtype=np.int64)
    int_table = np.stack(ints) if ints else np.empty((0, n), dtype=np.int64)
    if strings:
        buffers = np.concatenate([buffer for buffer, _, _ in strings])
        offsets = np.cumsum([0] + [len(buffer) for buffer, _, _ in strings[:-1]])
        starts = np.stack([s + o for (_, s, _), o in zip(strings, offsets, strict=True)])
        ends = np.stack([e + o for (_, _, e), o in zip(strings, offsets, strict=True)])
    else:
        buffers = np.empty(0, dtype=np.uint8)
        starts = ends = np.empty((0, n), dtype=np.int64)
    literal = np.frombuffer(b"".join(texts), dtype=np.uint8)
    literal_bounds = np.cumsum([0] + [len(t) for t in texts])
    out = _output(n * (len(literal) + 20 * len(ints)) + len(buffers))
    m = _fill(literal, literal_bounds, kinds, int_table, buffers, starts, ends, n, out)
    return out[:m].tobytes()


_LOCAL = threading.local()


def _output(size: int) -> np.ndarray:
    """A buffer of at least ``size`` bytes to assemble into, kept from batch to batch (per
    thread): a fresh one of a megabyte or so is fresh pages from the kernel each time, and
    faulting them in cost as much as writing the messages."""
    buffer: np.ndarray | None = getattr(_LOCAL, "buffer", None)
    if buffer is None or len(buffer) < size:
        buffer = _LOCAL.buffer = np.empty(max(size, 2 * len(buffer) if buffer is not None else 0),
                                          dtype=np.uint8)
    return buffer


#: 10**k for k < 19 (a table: ``10**k`` with a variable k is a call per digit when compiled).
_POWERS_OF_TEN = np.array([10**k for k in range(19)], dtype=np.int64)


@njit(nogil=True, refcounts=False)
def _fill(literal: np.ndarray, literal_bounds: np.ndarray, kinds: np.ndarray,
          ints: np.ndarray, buffers: np.ndarray, starts: np.ndarray, ends: np.ndarray,
          n: int, out: np.ndarray) -> int:
    """Write the messages into ``out``; the bytes written. Column ``j`` is the next row of
    ``ints`` (written in decimal) when ``kinds[j]`` is 0, else the next row of text bounds
    (record ``i``'s text is ``buffers[starts[b, i]:ends[b, i]]``)."""
    o = 0
    for i in range(n):
        a = 0
        b = 0
        for j in range(len(kinds) + 1):
            for t in range(literal_bounds[j], literal_bounds[j + 1]):
                out[o] = literal[t]
                o += 1
            if j == len(kinds):
                break
            if kinds[j] == 0:
                v = ints[a, i]
                a += 1
                if v < 0:
                    out[o] = 45  # -
                    o += 1
                    v = -v
                k = 1  # digits: written from the last, in place (this code allocates nothing)
                while k < 19 and v >= _POWERS_OF_TEN[k]:
                    k += 1
                for t in range(o + k - 1, o - 1, -1):
                    out[t] = 48 + v % 10
                    v //= 10
                o += k
            else:
                for t in range(starts[b, i], ends[b, i]):
                    out[o] = buffers[t]
                    o += 1
                b += 1
    return o


def _message_keys(keys: list[str]) -> list[bytes]:
    """The message keys: a prediction is keyed by its record's key."""
    return _cached(keys, _KEY_BYTES, str.encode)
