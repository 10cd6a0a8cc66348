"""A key's rows in ``state.db``, and which of them a checkpoint has to rewrite.

A key's state is one row of ``keys`` (its value, its pending labels), and, when it was packed
as a :class:`adaptd.state_codec.SplitState` (the arena's keys: their hindsight buffer in chunks
of rows), one row of ``chunks`` per chunk. The ``keys`` row then holds a :class:`SplitHead`: the
head and how many chunks to read back; an absent chunk row, or one holding ``b""``, is rows of
zeros. Every row keeps two generations (:mod:`adaptd.state_schema`), chunks alike.

A busy key appends a few records to its buffer between two checkpoints, so most of its chunks
are what the store already holds. :class:`KeyRows` remembers, for each key it wrote or read, the
digest of each chunk the store holds, and writes only the chunks whose digest differs:
with 1,000 busy keys and a checkpoint every 10,000 records, about 4 kB per key instead of 21 kB.
What it remembers is only ever an under-statement of what must be written: a key it knows
nothing of is written whole, the memory is updated only once a checkpoint's transaction has
committed, and forgotten for keys that leave memory and whenever the store is loaded (a load
may roll it back to the previous generation).

Every packed value of a model carries the same spec (the paths, types and shapes of its
arrays: about 800 bytes, as much as a new key's numbers). The store keeps each spec once, as a
row ``spec:<digest>`` of ``shared`` written in the transaction of the first value naming it,
and the values name it by digest (:func:`adaptd.state_codec.spec_apart`). A rollback removes
a spec row only with every value that names it (they were all written by the same or a later
checkpoint).
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple

from adaptd import state_schema as schema
from adaptd.state_codec import PackedRow, SplitState, spec_apart, spec_named, with_spec
from adaptd.state_values import CheckpointError, check, decode, encode

#: The digest remembered for a chunk of zeros (``b""``), absent or written.
_ZEROS = hash(b"")


class SplitHead(NamedTuple):
    """What the ``keys`` row of a split key holds: its head, and how many chunks follow.
    Stored as raw bytes (:meth:`to_bytes`: a magic, the count, the head), not pickled: a
    pickle of it cost more than its checksum; a row pickled by an older adaptd still reads.

    >>> SplitHead.from_bytes(SplitHead(b"ADKR-head", 10).to_bytes())
    SplitHead(head=b'ADKR-head', chunks=10)
    """

    head: bytes
    chunks: int

    def to_bytes(self) -> bytes:
        return _HEAD_MAGIC + _COUNT.pack(self.chunks) + self.head

    @staticmethod
    def from_bytes(blob: bytes) -> SplitHead | None:
        """The head ``blob`` holds (None: it is a whole value, not a head)."""
        if not blob.startswith(_HEAD_MAGIC):
            return None
        (chunks,) = _COUNT.unpack_from(blob, len(_HEAD_MAGIC))
        return SplitHead(blob[len(_HEAD_MAGIC) + _COUNT.size:], chunks)


#: Unlike a packed value's (``ADKS``, ``ADKR``, adaptd.state_codec), so the two never mix.
_HEAD_MAGIC = b"ADKH"
_COUNT = struct.Struct("<I")


def _spec_row(digest: bytes) -> str:
    return f"spec:{digest.hex()}"


#: What tells a chunk from the one the store holds: Python's 64-bit SipHash of its bytes
#: (keyed per process, and only ever compared within it). A changed chunk is taken for
#: unchanged once in 2^64; BLAKE2b cost 6x as much (2.9 against 0.5 µs a 2 kB chunk, ten
#: chunks a busy key at every checkpoint).
_digest = hash


class KeyRows:
    """Key rows of one database: reads them back whole, writes only what changed. Used by
    :class:`adaptd.checkpoint.CheckpointStore` inside its transactions; one thread at a time.

    Args:
        path: the database, for messages naming a damaged value.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        #: (partition, key) → digest of each chunk the store holds for it (``_ZEROS``: none).
        self._held: dict[tuple[int, str], list[int]] = {}
        #: What the open transaction writes: taken into ``_held`` once it commits (None: the
        #: key was written unsplit, so what its chunk rows hold no longer matters).
        self._writing: dict[tuple[int, str], list[int] | None] = {}
        #: Digests of the specs the store holds (written by a committed transaction since the
        #: last load), and of those the open transaction writes.
        self._specs: set[bytes] = set()
        self._specs_writing: set[bytes] = set()
        #: Digest → spec, for reads: content-addressed, so never out of date.
        self._spec_of: dict[bytes, bytes] = {}

    # -- writing -------------------------------------------------------------------------

    def write(self, db: sqlite3.Connection, p: int, states: Mapping[str, Any],
              labels: Mapping[str, list[Any]], checkpoint: int,
              evicted: bool | Collection[str]) -> None:
        """Write the ``states`` (and pending ``labels``) of keys of partition ``p`` in the
        open transaction: each key's row, and the chunks that changed; flagged evicted when
        ``evicted`` is True or holds the key."""
        key_rows, chunk_rows = [], []
        held, writing, short = self._held, self._writing, self._short
        flagged = None if isinstance(evicted, bool) or not evicted else evicted
        flag = int(evicted is True)
        for key, state in states.items():
            if isinstance(state, SplitState):
                value = encode(SplitHead(short(db, state.head, checkpoint),
                                         len(state.chunks)).to_bytes())
                known = held.get((p, key))
                digests = list(map(_digest, state.chunks))
                for c, (chunk, digest) in enumerate(zip(state.chunks, digests, strict=True)):
                    if known is None or (known[c] if c < len(known) else _ZEROS) != digest:
                        chunk_rows.append((p, key, c, encode(short(db, chunk, checkpoint)),
                                           checkpoint))
                writing[p, key] = digests
            else:
                if isinstance(state, PackedRow):
                    state = bytes(state)
                value = encode(short(db, state, checkpoint) if type(state) is bytes else state)
                writing[p, key] = None
            pending = labels.get(key)
            key_rows.append((p, key, flag if flagged is None else int(key in flagged), value,
                             encode(pending) if pending else None, checkpoint))
        db.executemany(schema.UPSERT_KEY, key_rows)
        db.executemany(schema.UPSERT_CHUNK, chunk_rows)

    def _short(self, db: sqlite3.Connection, blob: bytes, checkpoint: int) -> bytes:
        """``blob`` with its spec named by digest; the spec's row written if the store lacks
        it (see the module note)."""
        spec, digest, short = spec_apart(blob)
        if spec and digest not in self._specs and digest not in self._specs_writing:
            db.execute("INSERT OR IGNORE INTO shared (name, value, checkpoint) VALUES (?, ?, ?)",
                       (_spec_row(digest), encode(spec), checkpoint))
            self._specs_writing.add(digest)
        return short

    def holds_any(self) -> bool:
        """Whether it remembers any key's chunks (written or read since the last load)."""
        return bool(self._held or self._writing)

    def committed(self) -> None:
        """The transaction that wrote since the last call committed: remember its chunks."""
        for pk, digests in self._writing.items():
            if digests is None:
                self._held.pop(pk, None)
            else:
                self._held[pk] = digests
        self._writing.clear()
        self._specs.update(self._specs_writing)
        self._specs_writing.clear()

    def aborted(self) -> None:
        """The transaction rolled back: what it wrote is not in the store."""
        self._writing.clear()
        self._specs_writing.clear()

    def forget(self, p: int | None = None, keys: Any = None) -> None:
        """Forget what the store holds for ``keys`` of ``p`` (all keys of ``p`` when None;
        everything when ``p`` is None too): they are written whole next time."""
        if p is None:
            self._held.clear()
            self._specs.clear()
        elif keys is None:
            for pk in [pk for pk in self._held if pk[0] == p]:
                del self._held[pk]
        else:
            for key in keys:
                self._held.pop((p, key), None)

    # -- reading -------------------------------------------------------------------------

    def read(self, db: sqlite3.Connection, p: int, key: str, value: bytes) -> Any:
        """Key ``key``'s state from its ``keys`` row ``value`` and its chunk rows."""
        where = f"{self.path}: partition {p} key {key!r}"
        state = decode(value, where)
        if type(state) is bytes:
            state = SplitHead.from_bytes(state) or state
        if not isinstance(state, SplitHead):
            return self._whole(db, state, where) if type(state) is bytes else state
        chunks = [b""] * state.chunks
        for c, blob in db.execute("SELECT chunk, value FROM chunks WHERE partition = ? AND"
                                  " key = ? AND chunk < ?", (p, key, state.chunks)):
            chunks[c] = self._whole(db, decode(blob, f"{where} chunk {c}"), where)
        return SplitState(self._whole(db, state.head, where), tuple(chunks))

    def _whole(self, db: sqlite3.Connection, blob: bytes, where: str) -> bytes:
        """A stored value with its spec put back (one read per spec the first time)."""
        digest = spec_named(blob)
        if digest is None:
            return blob
        spec = self._spec_of.get(digest)
        if spec is None:
            row = db.execute("SELECT value FROM shared WHERE name = ?",
                             (_spec_row(digest),)).fetchone()
            if row is None:
                raise CheckpointError(where, f"names spec {digest.hex()}, which the store "
                                      f"does not hold")
            if len(self._spec_of) > 256:  # specs are few (one per model layout)
                self._spec_of.clear()
            spec = self._spec_of[digest] = decode(row[0], f"{self.path}: spec {digest.hex()}")
        try:
            return with_spec(blob, spec)
        except ValueError as exc:
            raise CheckpointError(where, str(exc)) from None

    def read_many(self, db: sqlite3.Connection, p: int, keys: Sequence[str]) -> dict[str, Any]:
        """The states the store holds for those of ``keys`` of ``p`` it has (one query per
        500 keys: the keys a batch brings that are not in memory); remembers their chunks (a
        key found nowhere holds none)."""
        found: dict[str, Any] = {}
        for lo in range(0, len(keys), 500):
            part = keys[lo:lo + 500]
            rows = db.execute(f"SELECT key, value FROM keys WHERE partition = ? AND key IN"
                              f" ({', '.join('?' * len(part))})", (p, *part)).fetchall()
            for key, value in rows:
                found[key] = self.read(db, p, key, value)
        for key in keys:
            state = found.get(key)
            if state is None:
                self._held[p, key] = []
            elif isinstance(state, SplitState):
                self._held[p, key] = list(map(_digest, state.chunks))
        return found

    def check(self, db: sqlite3.Connection, latest: int, previous: bool = False) -> None:
        """Check every value the checkpoint ``latest`` wrote (``previous``: the values those
        rows held before it, where they held one). Raises CheckpointError naming the first
        damaged one."""
        value, labels, when = ("prev_value", "prev_labels", " AND prev_checkpoint IS NOT NULL") \
            if previous else ("value", "labels", "")
        for p, key, blob, label_blob in db.execute(
                f"SELECT partition, key, {value}, {labels} FROM keys WHERE checkpoint = ?{when}",
                (latest,)):
            where = f"{self.path}: partition {p} key {key!r}"
            check(blob, where)
            if label_blob is not None:
                check(label_blob, f"{where} labels")
        for p, key, c, blob in db.execute(
                f"SELECT partition, key, chunk, {value} FROM chunks WHERE checkpoint = ?{when}",
                (latest,)):
            check(blob, f"{self.path}: partition {p} key {key!r} chunk {c}")
