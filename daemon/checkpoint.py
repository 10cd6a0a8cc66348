"""Checkpoints: key states, next positions and the shared state in one embedded SQLite database,
written incrementally.

Layout: ``STATE_DIR/state.db`` (SQLite, write-ahead log)::

    shared      name → value        "state": what every key shares (meta-state, totals, decoder)
                                    "local": this replica's own bookkeeping (its identity on
                                    the meta topic), never published to the changelog
    partitions  partition → next position, id of the checkpoint that wrote it, offset of its
                commit marker in the changelog topic (Kafka sources, see adaptd.changelog)
    segments    one per checkpoint (or compaction) and partition: the keys it wrote whose
                state is one packed value (new keys, keys with few records, evicted keys),
                their data in ``STATE_DIR/segments/<id>.seg`` (adaptd.segment_store)
    keys        (partition, key) → evicted flag, task state, the key's pending delayed labels:
                split (busy) keys, and every key of a store of format 4 or 5
    chunks      (partition, key, chunk) → rows of the key's ring buffers (adaptd.state_rows):
                a checkpoint rewrites a key's chunks only where they changed
    evictions   (partition, key) → id of the checkpoint after which the key left memory

A checkpoint writes in ONE transaction the states of the keys that changed since the previous
checkpoint, the next position of every partition it covers and the shared state. SQLite's commit
is atomic and, with ``synchronous=FULL``, durable: a crash at any moment leaves the previous
checkpoint whole, so a restart sees positions, key states and shared state of one checkpoint,
never a mix. The cost of a checkpoint grows with the keys that changed, not with the keys that
exist. Keys the learner lets go of (evicted) stay in the same table, out of memory until a
later checkpoint writes them again: a key that changed since the last checkpoint is written
flagged evicted, one that did not gets a row of ``evictions``, both in the next checkpoint's
transaction. Its state there is the one it left memory with, read back when a record of the
key arrives again.

Every value is a small header (magic, format version, payload length, CRC-32 checksum) followed
by the pickled payload (zlib-compressed when mostly zeros), so a bit flip is told from a good
value before anything is unpickled: :class:`CheckpointError` names the database, the partition
and the key.

Two generations. Every row also keeps what it held before the latest checkpoint that wrote it
(``prev_*`` columns, with the id of the checkpoint that wrote that, NULL for a row the checkpoint
created). So the latest checkpoint N and the one before it, N-1, are both whole on disk:
N is every row's value; N-1 is the previous value of the rows N wrote (absent where N created
the row) and the value of every other row. Keeping it touches no row beyond those a checkpoint
writes anyway: the old value moves to the ``prev_`` column of the row being rewritten, in the
same statement, so the cost still grows with the keys that changed (a rewritten row holds two
values: at most twice the file size; no copy of the database is ever made). On load, every value of N is checked: the shared state, and every key N wrote,
evicted or not (found through an index on ``checkpoint``), besides the keys loaded. If one is
damaged, the store rolls back to N-1 in one transaction (the rows N wrote take their previous
values back, the rows N created go) and loads N-1 with the same checks; that is logged once,
naming the state dir and both checkpoints. The keys rolled back come back live, and the
partitions rewrite them at the next checkpoint, so a Kafka source's changelog, which may hold
the damaged checkpoint's copies, ends with the ones this store resumed from. A load therefore returns one generation or raises,
never a mix: a damaged value that N-1 shares with N, or a damaged previous value, raises
:class:`CheckpointError` ("no whole checkpoint left"), as does a database SQLite cannot read;
the CLI prints it as one line and exits 2.

Format 6 (this one): a key is found through an index in memory (adaptd.key_index), rebuilt at
start from the segments' names and the rows of ``keys``: a new key costs no B-tree insert, a
key not in the store no read. Segments keep the two generations their own way (a segment is
deleted only once two later checkpoints superseded all it holds, see adaptd.segment_store); a
fallback deletes the damaged checkpoint's segments in the same transaction as the rows' roll
back. Stores of formats 4 and 5 are read as they are (their rows are in the index).

Why SQLite (the standard library's) rather than RocksDB: one transaction gives the atomic batch
the checkpoint needs, readers in other processes (tests, ``adaptd`` tooling, a second replica on
a shared volume) see committed checkpoints while the daemon writes, and nothing native has to be
installed. Values are kilobytes, written in batches: the write path is not the bottleneck.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from adaptd import state_schema as schema
from adaptd.segment_store import KeySegments
from adaptd.state_rows import KeyRows
from adaptd.state_values import FORMAT_VERSION, CheckpointError, check, decode, encode

__all__ = ["FORMAT_VERSION", "CheckpointError", "CheckpointStore", "PartitionChanges",
           "PartitionState", "Restored", "check", "decode", "encode"]

log = logging.getLogger(__name__)

DB_NAME = "state.db"
#: What a message about a damaged state dir tells the user to do.
START_OVER = "pass --fresh to move the state dir aside and start over"


def _describe(checkpoint: int) -> str:
    """A checkpoint id, with the UTC time it was taken when it is a clock reading.

    >>> _describe(1764477062_000000000)
    '1764477062000000000 (2025-11-30 04:31:02 UTC)'
    """
    if checkpoint < 10**18:
        return str(checkpoint)
    taken = datetime.fromtimestamp(checkpoint / 1e9, tz=UTC)
    return f"{checkpoint} ({taken:%Y-%m-%d %H:%M:%S} UTC)"


@dataclass
class PartitionState:
    """One partition as a checkpoint holds it: where to resume, its keys' task states.

    ``learner`` is ``{"keys": {key: task state}, "labels": [pending label entries]}`` for the
    keys that were live (not evicted) at the checkpoint (no key at all from a lazy load; the
    labels of every key either way); ``checkpoint`` is the id of the checkpoint that last wrote
    the partition.
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
    #: Id of the damaged checkpoint this one was fallen back from (None: it was the latest).
    fell_back_from: int | None = None
    #: After a fall back, partition → the keys the damaged checkpoint wrote: their states
    #: went back to the previous generation, to be written again at the next checkpoint (a
    #: changelog may hold the damaged checkpoint's copies). Empty otherwise.
    rolled_back: dict[int, list[str]] = field(default_factory=dict)


@dataclass
class PartitionChanges:
    """What one checkpoint writes for one partition: its next position, the task states of the
    keys that changed since the previous checkpoint and those keys' pending delayed labels."""

    position: int
    states: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, list[Any]] = field(default_factory=dict)
    #: Keys out of memory from this checkpoint on: those among ``states`` are written flagged
    #: evicted; the others (unchanged since an earlier checkpoint wrote them) get a row of
    #: ``evictions``. In the checkpoint's transaction, not one of their own after it.
    evicted: Collection[str] = ()


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
        self._rows = KeyRows(str(self.path))  # split keys' rows, and every key of format 4, 5
        self._segments = KeySegments(str(self.path), self._rows)
        self._swept = False

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
            schema.configure(db)
            db.execute("BEGIN")  # the schema in one transaction: each page once in the log
            try:
                for statement in schema.TABLES:
                    db.execute(statement)
                schema.add_columns(db)
                for index in schema.INDEXES:
                    db.execute(index)
                db.execute("COMMIT")
            finally:
                if db.in_transaction:
                    db.execute("ROLLBACK")
        except sqlite3.OperationalError:
            # The state dir refused (disk full, read-only, I/O error): the caller retries or
            # gives up as for any write it refuses, which a corrupt file is not.
            raise
        except sqlite3.DatabaseError as exc:
            raise CheckpointError(str(self.path), f"is not a usable state database ({exc}); "
                                  f"{START_OVER}") from None
        self._db = db
        return db

    def close(self) -> None:
        """Close the database; a later call opens it again."""
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- reading -------------------------------------------------------------------------

    def load(self, partitions: Collection[int] | None = None, lazy: bool = False) -> Restored:
        """The shared state and the given ``partitions`` (all if None) with their live keys, as
        the last checkpoint left them, or as the one before it if a value of the last one is
        damaged (the store is then rolled back to it, see the module's docstring). Blocks on
        reads (and the rollback's write); raises :class:`CheckpointError` when neither
        checkpoint is whole.

        ``lazy``: read no key state, only positions, the shared state and the pending labels;
        the keys are read with :meth:`get_many` when their records come. A restart then costs
        memory for the keys in use, not for every key live at the checkpoint (which may be
        many times ``learner.max_keys``). The latest checkpoint's values are checked whole
        either way, so a lazy load falls back (or raises) exactly where an eager one does."""
        db = self._connect(create=False)
        if db is None:
            return Restored(shared=None, partitions={})
        self._rows.forget()  # a load may roll the store back: what it holds is read afresh
        self._segments.invalidate()
        try:
            try:
                db.execute("BEGIN")  # one snapshot: a writer in another process may commit
                restored = self._read(db, partitions, lazy=lazy)
            finally:
                if db.in_transaction:
                    db.execute("COMMIT")
        except CheckpointError as damage:
            restored = self._fall_back(partitions, damage, lazy)
        except sqlite3.DatabaseError as exc:
            raise CheckpointError(str(self.path), f"is unreadable ({exc}); {START_OVER}") from None
        self.last_checkpoint = max(self.last_checkpoint, restored.checkpoint)
        return restored

    def _read(self, db: sqlite3.Connection, partitions: Collection[int] | None,
              revived: Mapping[int, Sequence[str]] | None = None,
              lazy: bool = False) -> Restored:
        """The latest checkpoint, every value of it checked; ``revived`` keys are live (those
        the checkpoint rolled back wrote). Raises CheckpointError."""
        latest = self._latest(db)
        shared = self._shared(db, "state")
        local = self._shared(db, "local")
        if latest:
            self._rows.check(db, latest)
            self._segments.check(db, latest)
        self._segments.rebuild(db)
        if revived:
            self._segments.revive(revived)
        found = {}
        for p, position, checkpoint in db.execute(
                "SELECT partition, position, checkpoint FROM partitions").fetchall():
            if partitions is None or p in partitions:
                found[p] = self._partition(db, p, position, checkpoint, lazy)
        checkpoint = shared.pop("checkpoint", 0) if shared else 0
        return Restored(shared=shared, partitions=found, checkpoint=checkpoint, local=local)

    def _fall_back(self, partitions: Collection[int] | None,
                   damage: CheckpointError, lazy: bool = False) -> Restored:
        """Roll the store back to the checkpoint before the latest (whose ``damage`` was
        found) and read it, in one transaction: committed only if that one is whole."""
        db = self._connect(create=False)
        assert db is not None
        latest = self._latest(db)
        row = db.execute("SELECT prev_checkpoint FROM shared WHERE name = 'state'").fetchone()
        if not latest or row is None or row[0] is None:
            raise CheckpointError(str(self.path), f"has no whole checkpoint: {damage.where} "
                                  f"{damage.reason}, and no older checkpoint is kept to fall "
                                  f"back to; {START_OVER}")
        previous = int(row[0])
        try:
            db.execute("BEGIN IMMEDIATE")
            if self._latest(db) != latest:  # another process wrote since: it holds the store
                raise CheckpointError(str(self.path), "changed while it was read")
            self._rows.check(db, latest, previous=True)
            revived = self._segments.written_by(db, latest)
            rolled_back = {p: list(keys) for p, keys in revived.items()}
            for p, key in db.execute("SELECT partition, key FROM keys WHERE checkpoint = ?",
                                     (latest,)).fetchall():
                rolled_back.setdefault(p, []).append(key)
            for statement in schema.ROLL_BACK:
                db.execute(statement, {"n": latest})
            restored = self._read(db, partitions, revived, lazy)
            db.execute("COMMIT")
        except (CheckpointError, sqlite3.Error) as second:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise CheckpointError(
                str(self.path), f"has no whole checkpoint left: in checkpoint "
                f"{_describe(latest)}, {damage.where} {damage.reason}; in the one before it, "
                f"{_describe(previous)}, {second}; {START_OVER}") from None
        log.error("state dir %s: checkpoint %s is damaged (%s %s); resuming from the one before "
                  "it, checkpoint %s, as a whole (shared state, positions and every key); the "
                  "records read since are read again", self.state_dir, _describe(latest),
                  damage.where, damage.reason, _describe(previous))
        restored.fell_back_from = latest
        restored.rolled_back = {p: keys for p, keys in rolled_back.items()
                                if partitions is None or p in partitions}
        return restored

    @staticmethod
    def _latest(db: sqlite3.Connection) -> int:
        """Id of the checkpoint that last wrote the shared state (0: none, or a store written
        before generations were kept)."""
        row = db.execute("SELECT checkpoint FROM shared WHERE name = 'state'").fetchone()
        return 0 if row is None else int(row[0])

    def _shared(self, db: sqlite3.Connection, name: str) -> dict[str, Any] | None:
        row = db.execute("SELECT value FROM shared WHERE name = ?", (name,)).fetchone()
        return None if row is None else dict(decode(row[0], f"{self.path}: the {name} state"))

    def _partition(self, db: sqlite3.Connection, p: int, position: int,
                   checkpoint: int, lazy: bool = False) -> PartitionState:
        segments = self._segments
        if lazy:  # the pending labels of current rows, of segments and of ``keys`` alike
            return PartitionState(position=position, checkpoint=checkpoint,
                                  learner={"keys": {}, "labels": list(segments.labels.get(p, ()))})
        live = segments.live.get(p, [])
        states = segments.read_many(db, p, [key for key, _, _ in live])
        labels: list[Any] = list(segments.labels.get(p, ()))
        # Evicted keys stay on disk, but their pending labels wait in memory for their label.
        cursor = db.execute(f"SELECT key, {schema.EVICTED}, value, labels FROM keys k"
                            " WHERE partition = ? AND (evicted = 0 OR labels IS NOT NULL)", (p,))
        for key, evicted, value, label_blob in cursor.fetchall():
            where = f"{self.path}: partition {p} key {key!r}"
            if not evicted:
                states[key] = self._rows.read(db, p, key, value)
            if label_blob is not None:
                labels.extend(decode(label_blob, f"{where} labels"))
        return PartitionState(position=position, keys=list(states),
                              learner={"keys": states, "labels": labels}, checkpoint=checkpoint)

    def get(self, partition: int, key: str) -> Any | None:
        """The task state last written for ``key`` of ``partition``, or None. Called for a key
        that is not in memory (evicted, or new). Blocks on one read. A damaged value here is
        one written before the last checkpoint (that one's were checked on load), so both
        generations hold it: :class:`CheckpointError`, as on load."""
        return self.get_many(partition, [key]).get(key)

    def get_many(self, partition: int, keys: Sequence[str]) -> dict[str, Any]:
        """:meth:`get` of many ``keys`` of ``partition`` at once: those the store holds."""
        db = self._connect(create=False)
        if db is None:
            return {}
        return self._segments.read_many(db, partition, keys)

    def key_hashes(self) -> np.ndarray:
        """``hash()`` of every key the store holds, of any partition (live or evicted)."""
        db = self._connect(create=False)
        if db is None:
            return np.zeros(0, dtype=np.int64)
        return self._segments.key_hashes(db)

    def key_count(self, evicted: bool | None = None) -> int:
        """Keys stored (only evicted or only live ones when ``evicted`` is given)."""
        db = self._connect(create=False)
        if db is None:
            return 0
        self._segments.ensure(db)
        return self._segments.count(evicted)

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
                self._segments.write(db, p, changes.states, changes.labels, number,
                                     evicted=changes.evicted)
                db.execute(schema.UPSERT_PARTITION, (p, changes.position, number, offsets.get(p)))
            self._segments.finish(db, number)
            if not self._swept:  # files a crash or a rollback left, once per process
                self._segments.sweep(db)
                self._swept = True
            db.execute(schema.UPSERT_SHARED, ("state", encode({**shared, "checkpoint": number}), number))
            if local is not None:
                db.execute(schema.UPSERT_SHARED, ("local", encode(dict(local)), number))
        self.last_checkpoint = max(self.last_checkpoint, number)
        return number

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        db = self._connect(create=True)
        assert db is not None
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rows.aborted()
            self._segments.aborted()  # its index took in what the store did not
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise OSError(f"{self.path}: {what} ({exc})") from None
        except BaseException:
            self._rows.aborted()
            self._segments.aborted()
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._rows.committed()
        self._segments.committed()

    def mark_evicted(self, partition: int, keys: Iterable[str]) -> None:
        """Flag ``keys`` of ``partition`` as out of memory. Called right after a checkpoint, so
        their stored state is the one they leave with. Raises OSError when the disk refuses."""
        keys = list(keys)
        with self._transaction("evicted keys not marked") as db:
            self._segments.write(db, partition, {}, {}, self.last_checkpoint, evicted=keys)

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
            db.execute("DELETE FROM chunks WHERE partition = ?", (partition,))
            db.execute("DELETE FROM evictions WHERE partition = ?", (partition,))
            db.execute("DELETE FROM partitions WHERE partition = ?", (partition,))
            self._segments.drop_partition(db, partition)
        self._rows.forget(partition)

    def apply_restored(self, partition: int, changes: PartitionChanges, checkpoint: int,
                       changelog_offset: int, shared: Mapping[str, Any]) -> None:
        """Apply one complete checkpoint read from the changelog, in one transaction. Its keys
        are stored as evicted: each is loaded when a record of it arrives, so a restore costs
        memory for the keys in use only. ``shared`` is taken only by a store that has none."""
        with self._transaction(f"checkpoint {checkpoint} of partition {partition} not "
                               f"restored") as db:
            self._segments.write(db, partition, changes.states, changes.labels, checkpoint,
                                 evicted=True)
            db.execute(schema.UPSERT_PARTITION, (partition, changes.position, checkpoint,
                                           changelog_offset))
            db.execute("INSERT OR IGNORE INTO shared (name, value, checkpoint) VALUES ('state', ?, ?)",
                       (encode({**shared, "checkpoint": checkpoint}), checkpoint))
        self.last_checkpoint = max(self.last_checkpoint, checkpoint)
