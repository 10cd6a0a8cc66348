"""Checkpoints: key states, next positions and the shared state in one embedded SQLite database,
written incrementally.

Layout: ``STATE_DIR/state.db`` (SQLite, write-ahead log)::

    shared      name → value        "state": what every key shares (meta-state, totals, decoder)
                                    "local": this replica's own bookkeeping (its identity on
                                    the meta topic), never published to the changelog
    partitions  partition → next position, id of the checkpoint that wrote it, offset of its
                commit marker in the changelog topic (Kafka sources, see adaptd.changelog)
    keys        (partition, key) → evicted flag, task state, the key's pending delayed labels

A checkpoint writes in ONE transaction the states of the keys that changed since the previous
checkpoint, the next position of every partition it covers and the shared state. SQLite's commit
is atomic and, with ``synchronous=FULL``, durable: a crash at any moment leaves the previous
checkpoint whole, so a restart sees positions, key states and shared state of one checkpoint,
never a mix. The cost of a checkpoint grows with the keys that changed, not with the keys that
exist. Keys the learner lets go of (evicted) stay in the same table with their flag set: their
state there is the one the checkpoint just before the eviction wrote, and it is read back when
a record of the key arrives again.

Every value is a small header (magic, format version, payload length, BLAKE2b digest) followed
by the pickled payload (zlib-compressed when mostly zeros), so a bit flip is told from a good value before anything is unpickled:
:class:`CheckpointError` names the database, the partition and the key. Damage is never papered
over: a partition with a damaged value is not loaded (the daemon stops, or a Kafka source
restores the partition from its changelog, see :mod:`adaptd.changelog`).

Why SQLite (the standard library's) rather than RocksDB: one transaction gives the atomic batch
the checkpoint needs, readers in other processes (tests, ``adaptd`` tooling, a second replica on
a shared volume) see committed checkpoints while the daemon writes, and nothing native has to be
installed. Values are kilobytes, written in batches: the write path is not the bottleneck.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import sqlite3
import struct
import time
import zlib
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: 4: one SQLite database, values checksummed one by one.
FORMAT_VERSION = 4
DB_NAME = "state.db"
_MAGIC = b"ADAPTDCK"
#: magic, format version, flags, payload length in bytes, BLAKE2b-128 digest of the payload.
_HEADER = struct.Struct("<8sHHQ16s")
_COMPRESSED = 1
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS shared (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
    ("CREATE TABLE IF NOT EXISTS partitions (partition INTEGER PRIMARY KEY,"
     " position INTEGER NOT NULL, checkpoint INTEGER NOT NULL, changelog_offset INTEGER)"),
    ("CREATE TABLE IF NOT EXISTS keys (partition INTEGER NOT NULL, key TEXT NOT NULL,"
    " evicted INTEGER NOT NULL, value BLOB NOT NULL, labels BLOB,"
    # A rowid table: kilobyte values sit in its rows, the (partition, key) index stays small
    # (WITHOUT ROWID measured 2.7x the file size and half the write speed for such values).
    " PRIMARY KEY (partition, key))"),
)


@dataclass
class PartitionState:
    """One partition as a checkpoint holds it: where to resume, its keys' task states.

    ``learner`` is ``{"keys": {key: task state}, "labels": [pending label entries]}`` for the
    keys that were live (not evicted) at the checkpoint; ``checkpoint`` is the id of the
    checkpoint that last wrote the partition.
    """

    position: int
    keys: list[str] = field(default_factory=list)
    learner: dict[str, Any] = field(default_factory=dict)
    checkpoint: int = 0


@dataclass
class Restored:
    """What :meth:`CheckpointStore.load` found: the shared state of the last checkpoint (None
    before the first), the partitions it holds, and that checkpoint's id."""

    shared: dict[str, Any] | None
    partitions: dict[int, PartitionState]
    checkpoint: int = 0
    local: dict[str, Any] | None = None


@dataclass
class PartitionChanges:
    """What one checkpoint writes for one partition: its next position, the task states of the
    keys that changed since the previous checkpoint and those keys' pending delayed labels."""

    position: int
    states: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, list[Any]] = field(default_factory=dict)


class CheckpointError(Exception):
    """A checkpoint value could not be used; the message names where and why."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where} {reason}")
        self.where = where


def encode(payload: Any) -> bytes:
    """``payload`` pickled behind the checksummed header; compressed when mostly zeros. Task
    states are fixed-size buffers, nearly empty for a key with few records (compressed to a
    tenth or less), full of incompressible floats for a busy key (where zlib would double the
    cost of a checkpoint for a third off its size)."""
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    flags = 0
    if data.count(0) * 2 > len(data):
        data, flags = zlib.compress(data, 1), _COMPRESSED
    return _HEADER.pack(_MAGIC, FORMAT_VERSION, flags, len(data), _digest(data)) + data


def decode(blob: bytes, where: str) -> Any:
    """The payload :func:`encode` wrote, after checking header and checksum. Raises
    :class:`CheckpointError` naming ``where`` and what was wrong.

    >>> decode(encode({"a": 1}), "x")
    {'a': 1}
    >>> try:
    ...     decode(encode({"a": 1})[:-1], "partition 0 key 'a'")
    ... except CheckpointError as exc:
    ...     print(exc)
    partition 0 key 'a' is truncated: 20 payload bytes, expected 21
    """
    if len(blob) < _HEADER.size:
        raise CheckpointError(where, f"is truncated: {len(blob)} bytes, shorter than a header")
    magic, version, flags, length, digest = _HEADER.unpack_from(blob)
    if magic != _MAGIC:
        raise CheckpointError(where, f"is not an adaptd checkpoint value (header {magic!r})")
    if version != FORMAT_VERSION:
        raise CheckpointError(where, f"has format {version}, expected {FORMAT_VERSION}")
    data = blob[_HEADER.size:]
    if len(data) != length:
        raise CheckpointError(where, f"is truncated: {len(data)} payload bytes, expected {length}")
    if _digest(data) != digest:
        raise CheckpointError(where, "is corrupt: checksum mismatch")
    try:
        return pickle.loads(zlib.decompress(data) if flags & _COMPRESSED else data)
    except (zlib.error, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError, UnicodeDecodeError) as exc:
        # A good checksum over a payload this code cannot rebuild (classes moved or renamed).
        raise CheckpointError(where, f"is unreadable ({type(exc).__name__}: {exc})") from None


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


class CheckpointStore:
    """The state database in ``state_dir``. Blocking I/O, one thread; the database is opened on
    first use (created on first write).

    Args:
        state_dir: the daemon's state directory.
    """

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / DB_NAME
        #: Id of the last checkpoint this store wrote or found (0: none yet).
        self.last_checkpoint = 0
        self._db: sqlite3.Connection | None = None

    # -- the connection ------------------------------------------------------------------

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        if self._db is not None:
            return self._db
        if not create and not self.path.exists():
            return None
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            # Autocommit mode: every write below is an explicit BEGIN IMMEDIATE … COMMIT. One
            # thread at a time uses it, but not always the same one: kafka-python calls the
            # partition callbacks (which load and checkpoint) from its own thread.
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            for statement in _SCHEMA:
                db.execute(statement)
        except sqlite3.OperationalError:
            # The state dir refused (disk full, read-only, I/O error): the caller retries or
            # gives up as for any write it refuses, which a corrupt file is not.
            raise
        except sqlite3.DatabaseError as exc:
            raise CheckpointError(str(self.path), f"is not a usable state database ({exc})") from None
        self._db = db
        return db

    def close(self) -> None:
        """Close the database; a later call opens it again."""
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- reading -------------------------------------------------------------------------

    def load(self, partitions: Collection[int] | None = None) -> Restored:
        """The shared state and the given ``partitions`` (all if None) with their live keys, as
        the last checkpoint left them. Blocks on reads; raises :class:`CheckpointError` when a
        value is damaged."""
        db = self._connect(create=False)
        if db is None:
            return Restored(shared=None, partitions={})
        try:
            db.execute("BEGIN")  # one snapshot: a writer in another process may commit meanwhile
            shared = self._shared(db, "state")
            local = self._shared(db, "local")
            rows = db.execute("SELECT partition, position, checkpoint FROM partitions"
                              ).fetchall()
            found = {}
            for p, position, checkpoint in rows:
                if partitions is None or p in partitions:
                    found[p] = self._partition(db, p, position, checkpoint)
        except sqlite3.DatabaseError as exc:
            raise CheckpointError(str(self.path), f"is unreadable ({exc})") from None
        finally:
            if db.in_transaction:
                db.execute("COMMIT")
        checkpoint = shared.pop("checkpoint", 0) if shared else 0
        self.last_checkpoint = max(self.last_checkpoint, checkpoint)
        return Restored(shared=shared, partitions=found, checkpoint=checkpoint, local=local)

    def _shared(self, db: sqlite3.Connection, name: str) -> dict[str, Any] | None:
        row = db.execute("SELECT value FROM shared WHERE name = ?", (name,)).fetchone()
        return None if row is None else dict(decode(row[0], f"{self.path}: the {name} state"))

    def _partition(self, db: sqlite3.Connection, p: int, position: int,
                   checkpoint: int) -> PartitionState:
        states: dict[str, Any] = {}
        labels: list[Any] = []
        # Evicted keys stay on disk, but their pending labels wait in memory for their label.
        cursor = db.execute("SELECT key, evicted, value, labels FROM keys WHERE partition = ?"
                            " AND (evicted = 0 OR labels IS NOT NULL)", (p,))
        for key, evicted, value, label_blob in cursor:
            where = f"{self.path}: partition {p} key {key!r}"
            if not evicted:
                states[key] = decode(value, where)
            if label_blob is not None:
                labels.extend(decode(label_blob, f"{where} labels"))
        return PartitionState(position=position, keys=list(states),
                              learner={"keys": states, "labels": labels}, checkpoint=checkpoint)

    def get(self, partition: int, key: str) -> Any | None:
        """The task state last written for ``key`` of ``partition``, or None. Called for a key
        that is not in memory (evicted, or new). Blocks on one read."""
        db = self._connect(create=False)
        if db is None:
            return None
        row = db.execute("SELECT value FROM keys WHERE partition = ? AND key = ?",
                         (partition, key)).fetchone()
        if row is None:
            return None
        return decode(row[0], f"{self.path}: partition {partition} key {key!r}")

    def key_count(self, evicted: bool | None = None) -> int:
        """Keys stored (only evicted or only live ones when ``evicted`` is given)."""
        db = self._connect(create=False)
        if db is None:
            return 0
        if evicted is None:
            return int(db.execute("SELECT count(*) FROM keys").fetchone()[0])
        return int(db.execute("SELECT count(*) FROM keys WHERE evicted = ?",
                              (int(evicted),)).fetchone()[0])

    # -- writing -------------------------------------------------------------------------

    def next_checkpoint(self) -> int:
        """The id the next checkpoint gets: a nanosecond clock made strictly increasing, so
        ids of different replicas' checkpoints of one partition never coincide in practice."""
        return max(time.time_ns(), self.last_checkpoint + 1)

    def save(self, shared: Mapping[str, Any], partitions: Mapping[int, PartitionChanges],
             checkpoint: int | None = None,
             changelog_offsets: Mapping[int, int] | None = None,
             local: Mapping[str, Any] | None = None) -> int:
        """Write one checkpoint in one transaction; returns its id (``checkpoint``, or
        :meth:`next_checkpoint`). ``changelog_offsets`` are the offsets of its commit markers;
        ``local`` is this replica's own bookkeeping. Blocks on the disk; raises OSError when it
        refuses, leaving the previous checkpoint whole."""
        number = self.next_checkpoint() if checkpoint is None else checkpoint
        offsets = changelog_offsets or {}
        with self._transaction(f"checkpoint {number} not written") as db:
            for p, changes in partitions.items():
                self._write_keys(db, p, changes, evicted=False)
                db.execute("INSERT OR REPLACE INTO partitions VALUES (?, ?, ?, ?)",
                           (p, changes.position, number, offsets.get(p)))
            db.execute("INSERT OR REPLACE INTO shared VALUES ('state', ?)",
                       (encode({**shared, "checkpoint": number}),))
            if local is not None:
                db.execute("INSERT OR REPLACE INTO shared VALUES ('local', ?)",
                           (encode(dict(local)),))
        self.last_checkpoint = max(self.last_checkpoint, number)
        return number

    @staticmethod
    def _write_keys(db: sqlite3.Connection, p: int, changes: PartitionChanges,
                    evicted: bool) -> None:
        labels = changes.labels
        db.executemany(
            "INSERT OR REPLACE INTO keys VALUES (?, ?, ?, ?, ?)",
            ((p, key, int(evicted), encode(state),
              encode(labels[key]) if labels.get(key) else None)
             for key, state in changes.states.items()))

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        db = self._connect(create=True)
        assert db is not None
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise OSError(f"{self.path}: {what} ({exc})") from None
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def mark_evicted(self, partition: int, keys: Iterable[str]) -> None:
        """Flag ``keys`` of ``partition`` as out of memory. Called right after a checkpoint, so
        their stored state is the one they leave with. Raises OSError when the disk refuses."""
        with self._transaction("evicted keys not marked") as db:
            db.executemany("UPDATE keys SET evicted = 1 WHERE partition = ? AND key = ?",
                           ((partition, key) for key in keys))

    # -- the changelog's side (adaptd.changelog) -----------------------------------------

    def changelog_mark(self, partition: int) -> tuple[int, int] | None:
        """(offset of the commit marker, checkpoint id) the store's copy of ``partition``
        was last written or restored with, or None."""
        db = self._connect(create=False)
        if db is None:
            return None
        row = db.execute("SELECT changelog_offset, checkpoint FROM partitions"
                         " WHERE partition = ?", (partition,)).fetchone()
        return None if row is None or row[0] is None else (int(row[0]), int(row[1]))

    def drop_partition(self, partition: int) -> None:
        """Forget the store's copy of ``partition`` (it is restored whole from the changelog)."""
        if self._connect(create=False) is None:
            return
        with self._transaction(f"partition {partition} not dropped") as db:
            db.execute("DELETE FROM keys WHERE partition = ?", (partition,))
            db.execute("DELETE FROM partitions WHERE partition = ?", (partition,))

    def apply_restored(self, partition: int, changes: PartitionChanges, checkpoint: int,
                       changelog_offset: int, shared: Mapping[str, Any]) -> None:
        """Apply one complete checkpoint read from the changelog, in one transaction. Its keys
        are stored as evicted: each is loaded when a record of it arrives, so a restore costs
        memory for the keys in use only. ``shared`` is taken only by a store that has none."""
        with self._transaction(f"checkpoint {checkpoint} of partition {partition} not "
                               f"restored") as db:
            self._write_keys(db, partition, changes, evicted=True)
            db.execute("INSERT OR REPLACE INTO partitions VALUES (?, ?, ?, ?)",
                       (partition, changes.position, checkpoint, changelog_offset))
            db.execute("INSERT OR IGNORE INTO shared VALUES ('state', ?)",
                       (encode({**shared, "checkpoint": checkpoint}),))
        self.last_checkpoint = max(self.last_checkpoint, checkpoint)
