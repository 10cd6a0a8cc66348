"""The tables of ``state.db`` and the SQL that keeps two generations of every row in them.

Every row holds its value and the id of the checkpoint that wrote it, and the value and id it
held before that (``prev_*``; NULL for a row that checkpoint created). :func:`upsert` moves the
old value into the ``prev_`` columns in the statement that writes the new one, so keeping the
previous generation costs no row beyond those a checkpoint writes. :data:`ROLL_BACK` undoes the
checkpoint ``:n`` in every table (see :mod:`adaptd.checkpoint` for when).
"""

from __future__ import annotations

import sqlite3

#: Pages of 32 kB, not SQLite's 4 kB (taken by a database when it is created; one created
#: before keeps its own): a busy key's row holds its head and the head's previous generation
#: (about 5 kB), which on 4 kB pages spilled into a chain of overflow pages rewritten at every
#: checkpoint. Measured here, SQLite alone: a checkpoint of 1,000 such keys took 19 µs of CPU
#: a key against 50 (the file half the size), 10,000 new 1 kB keys 5.8 µs a key against 8.7.
PAGE_SIZE = 32768
#: The write-ahead log is copied into the database once it holds 32 MB rather than SQLite's
#: 4 MB: a checkpoint of a thousand busy keys rewrites the same pages each time, so they are
#: copied (and the database synced) once every few checkpoints, not at each (measured: a
#: quarter less time per checkpoint). Durability is the log's. The log is cut back to 64 MB.
WAL_BYTES = 32 << 20
PRAGMAS = (
    f"PRAGMA page_size={PAGE_SIZE}",  # before the database is created by the next one
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA journal_size_limit=67108864",
)


def configure(db: sqlite3.Connection) -> None:
    """Set ``db``'s pragmas; its log's copy threshold in its own pages (:data:`WAL_BYTES`)."""
    for pragma in PRAGMAS:
        db.execute(pragma)
    page = int(db.execute("PRAGMA page_size").fetchone()[0])
    db.execute(f"PRAGMA wal_autocheckpoint={WAL_BYTES // page}")


TABLES = (
    ("CREATE TABLE IF NOT EXISTS shared (name TEXT PRIMARY KEY, value BLOB NOT NULL,"
     " checkpoint INTEGER NOT NULL DEFAULT 0, prev_value BLOB, prev_checkpoint INTEGER)"),
    ("CREATE TABLE IF NOT EXISTS partitions (partition INTEGER PRIMARY KEY,"
     " position INTEGER NOT NULL, checkpoint INTEGER NOT NULL, changelog_offset INTEGER,"
     " prev_position INTEGER, prev_checkpoint INTEGER, prev_changelog_offset INTEGER)"),
    ("CREATE TABLE IF NOT EXISTS keys (partition INTEGER NOT NULL, key TEXT NOT NULL,"
    " evicted INTEGER NOT NULL, value BLOB NOT NULL, labels BLOB,"
    " checkpoint INTEGER NOT NULL DEFAULT 0, prev_value BLOB, prev_labels BLOB,"
    " prev_checkpoint INTEGER,"
    # A rowid table: kilobyte values sit in its rows, the (partition, key) index stays small
    # (WITHOUT ROWID measured 2.7x the file size and half the write speed for such values).
    " PRIMARY KEY (partition, key))"),
    # A key's ring buffers in chunks of rows (adaptd.state_rows): a checkpoint rewrites the
    # chunks that changed. Rows of about 2 kB: value and previous value stay in the b-tree
    # page, with no overflow chain to rewrite.
    ("CREATE TABLE IF NOT EXISTS chunks (partition INTEGER NOT NULL, key TEXT NOT NULL,"
     " chunk INTEGER NOT NULL, value BLOB NOT NULL, checkpoint INTEGER NOT NULL,"
     " prev_value BLOB, prev_checkpoint INTEGER, PRIMARY KEY (partition, key, chunk))"),
    # Keys let go of after the checkpoint ``since`` (its id) wrote or kept their state: out of
    # memory unless a later checkpoint wrote them again (see EVICTED). A small row here
    # instead of an UPDATE of the key's row, which rewrote its whole value (measured: half of
    # a checkpoint's disk writes with many keys).
    # Format 6: key states in segments, one per partition a checkpoint writes
    # (adaptd.segment_store); the tables above hold keys only in a store of format 4 or 5,
    # until its first load moves them into segments.
    # AUTOINCREMENT: an id is never given twice (not even after a rollback deleted the
    # highest), so a process's cached view of a segment, or a file a crash left, never passes
    # for another segment's.
    ("CREATE TABLE IF NOT EXISTS segments (id INTEGER PRIMARY KEY AUTOINCREMENT,"
     " partition INTEGER NOT NULL,"
     " checkpoint INTEGER NOT NULL, names BLOB NOT NULL, data BLOB NOT NULL, labels BLOB,"
     " size INTEGER NOT NULL, dead_since INTEGER)"),
    ("CREATE TABLE IF NOT EXISTS evictions (partition INTEGER NOT NULL, key TEXT NOT NULL,"
     " since INTEGER NOT NULL, PRIMARY KEY (partition, key)) WITHOUT ROWID"),
)
#: Whether the ``keys`` row ``k`` is of a key out of memory: written so (restored from a
#: changelog, or an old store's flag), or let go of since its last write.
EVICTED = ("(k.evicted OR EXISTS (SELECT 1 FROM evictions e WHERE e.partition = k.partition"
           " AND e.key = k.key AND e.since >= k.checkpoint))")
MARK_EVICTED = "INSERT OR REPLACE INTO evictions (partition, key, since) VALUES (?, ?, ?)"
#: Finds the rows of the latest checkpoint (checked on load, rolled back on a fallback) without
#: reading the others. Created after :func:`add_columns`, which may add its column.
INDEXES = ("CREATE INDEX IF NOT EXISTS keys_by_checkpoint ON keys (checkpoint)",
           "CREATE INDEX IF NOT EXISTS chunks_by_checkpoint ON chunks (checkpoint)",
           "CREATE INDEX IF NOT EXISTS segments_by_checkpoint ON segments (checkpoint)")
#: Columns a state.db of format 4 without generations lacks, added on open.
ADDED_COLUMNS = {
    "shared": ("checkpoint INTEGER NOT NULL DEFAULT 0", "prev_value BLOB",
               "prev_checkpoint INTEGER"),
    "partitions": ("prev_position INTEGER", "prev_checkpoint INTEGER",
                   "prev_changelog_offset INTEGER"),
    "keys": ("checkpoint INTEGER NOT NULL DEFAULT 0", "prev_value BLOB", "prev_labels BLOB",
             "prev_checkpoint INTEGER"),
}


def add_columns(db: sqlite3.Connection) -> None:
    """Bring a state.db written before generations were kept up to this schema (its rows then
    have no previous generation until their next write)."""
    for table, columns in ADDED_COLUMNS.items():
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for column in columns:
            if column.split()[0] not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")


def upsert(table: str, unique: tuple[str, ...], columns: tuple[str, ...],
            versioned: tuple[str, ...]) -> str:
    """An INSERT of ``columns`` (one of them ``checkpoint``) that, over an existing row, first
    moves its ``versioned`` columns and its checkpoint into their ``prev_`` columns, unless the
    row was written by this same checkpoint already. (The right-hand sides of an UPDATE see
    the row as it was, so the moves read the old values.)"""
    same = "checkpoint = excluded.checkpoint"
    sets = [f"prev_{c} = CASE WHEN {same} THEN prev_{c} ELSE {c} END"
            for c in (*versioned, "checkpoint")]
    sets += [f"{c} = excluded.{c}" for c in columns if c not in unique]
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            f" ON CONFLICT ({', '.join(unique)}) DO UPDATE SET {', '.join(sets)}")


def roll_back(table: str, versioned: tuple[str, ...], also: str = "") -> tuple[str, str]:
    """Statements taking the rows the checkpoint ``:n`` wrote in ``table`` back to what they
    held before it: the rows it created go, the others take their ``prev_`` columns back."""
    restore = ", ".join(f"{c} = prev_{c}, prev_{c} = NULL" for c in (*versioned, "checkpoint"))
    return (f"DELETE FROM {table} WHERE checkpoint = :n AND prev_checkpoint IS NULL",
            f"UPDATE {table} SET {restore}{also} WHERE checkpoint = :n")


UPSERT_KEY = upsert("keys", ("partition", "key"),
                      ("partition", "key", "evicted", "value", "labels", "checkpoint"),
                      ("value", "labels"))
UPSERT_PARTITION = upsert("partitions", ("partition",),
                            ("partition", "position", "checkpoint", "changelog_offset"),
                            ("position", "changelog_offset"))
UPSERT_CHUNK = upsert("chunks", ("partition", "key", "chunk"),
                      ("partition", "key", "chunk", "value", "checkpoint"), ("value",))
UPSERT_SHARED = upsert("shared", ("name",), ("name", "value", "checkpoint"), ("value",))
#: Rolled-back keys come back live (loaded at once): a changelog then gets their state at the
#: next checkpoint, so its latest copy of each key is the one this store resumed from.
ROLL_BACK = (("DELETE FROM evictions WHERE (partition, key) IN"
              " (SELECT partition, key FROM keys WHERE checkpoint = :n)"),
             *roll_back("keys", ("value", "labels"), ", evicted = 0"),
              *roll_back("chunks", ("value",)),
              *roll_back("partitions", ("position", "changelog_offset")),
              *roll_back("shared", ("value",)),
             # A checkpoint's segments go; those it found dead live again (adaptd.segment_store).
             "DELETE FROM segments WHERE checkpoint = :n",
             "UPDATE segments SET dead_since = NULL WHERE dead_since = :n")
