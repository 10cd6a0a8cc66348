"""Key states in ``state.db`` as append-only segments with an index in memory (store format 6).

Why: with a row per key (formats 4 and 5) a new key cost a B-tree upsert, its share of the
commit and a Python step to build its row, about 33 µs of CPU against ~3 µs for a record of a
known key, so a stream of ever-new keys ran at a tenth of the few-key rate. Here a checkpoint
writes, per partition, ONE row of ``segments`` holding every key it writes
(:mod:`adaptd.key_segments`), and the store finds keys through :class:`adaptd.key_index.KeyIndex`,
kept in memory and rebuilt at start from the segments' names. This is Bitcask's design (an
append-only log of values, a "keydir" in memory rebuilt from hint files, merging of files
whose values are mostly stale) with RocksDB's unit of writing (a write batch flushed as one
immutable file, compacted later), inside SQLite so that a checkpoint's segments, positions and
shared state still commit in one transaction.

Lifetime of a segment. Each row it holds is *live* while the index points to it; a mark (a key
let go of unchanged: "its state is in an older segment, and out of memory") is live while it is
the key's latest mark. A segment none of whose rows or marks is live is *dead from* the
checkpoint that superseded its last one (``dead_since``). Two generations are kept, as before:
a checkpoint N deletes the segments dead since a checkpoint before N (the generation N-1 does
not read them), and a fallback from a damaged N deletes N's segments and revives those dead
since N (:data:`ROLL_BACK`). Compaction (Bitcask's merge, an LSM's compaction): a segment whose
live share fell below a half has its live rows and marks copied into a segment of the
checkpoint being written, so the disk stays proportional to the keys (at most about twice
their packed size, plus the previous generation).

On load the latest checkpoint's segments are checked whole (CRC-32), as the row store checked
every value the latest checkpoint wrote; an older segment is checked whole the first time a
key is read from it in a process.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from itertools import filterfalse
from pathlib import Path
from typing import Any

import numpy as np

from adaptd import state_schema as schema
from adaptd.key_index import EMPTY, KeyIndex, hash_keys
from adaptd.key_segments import (
    SegmentView,
    check_data,
    encode_labels,
    pack_segment,
    reader,
    unpack_names,
)
from adaptd.state_codec import SplitState
from adaptd.state_rows import KeyRows
from adaptd.state_values import CheckpointError, decode

#: The ``segment`` of an index entry whose state is a row of ``keys`` (a split key).
ROWS = -2

#: The directory of the segments' data files, in the state dir, and their suffix.
FILES = "segments"
SUFFIX = ".seg"
#: Segments whose metadata (offsets, specs) stay decoded for reads.
_VIEWS = 16


class KeySegments:
    """The segments of one database and their index (see the module note). Used by
    :class:`adaptd.checkpoint.CheckpointStore` inside its transactions; one thread at a time.

    Args:
        path: the database, for messages naming a damaged segment.
        rows: the store's rows of ``keys`` and ``chunks``, where split keys live.
    """

    def __init__(self, path: str, rows: KeyRows) -> None:
        self.path = path
        self.rows = rows
        #: The segments' data files, beside the database.
        self.files = Path(path).parent / FILES
        self._written: set[int] = set()  # files of the open transaction
        self._unlink: list[int] = []  # files of the segments it deleted
        self._index: dict[int, KeyIndex] = {}
        #: segment id → live rows and marks; its size (rows + marks when written).
        self._live: dict[int, int] = {}
        self._size: dict[int, int] = {}
        self._fresh = False  # the index reflects the database (False: rebuild before use)
        self._views: dict[int, SegmentView] = {}
        #: Found at the last rebuild, for a load: partition → live keys as (key, segment, row),
        #: and the pending labels of current rows.
        self.live: dict[int, list[tuple[str, int, int]]] = {}
        self.labels: dict[int, list[Any]] = {}

    def _where(self, seg: int, p: int | None = None) -> str:
        return f"{self.path}: {'' if p is None else f'partition {p} '}key segment {seg}"

    # -- the index -----------------------------------------------------------------------

    def invalidate(self) -> None:
        """What the database holds may have changed (a load, a rollback, an aborted write)."""
        self._fresh = False
        self._views.clear()

    def ensure(self, db: sqlite3.Connection) -> None:
        if not self._fresh:
            self.rebuild(db)

    def rebuild(self, db: sqlite3.Connection) -> None:
        """Rebuild the index from every segment's names, in the order they were written."""
        self._index.clear()
        self._live.clear()
        self._size.clear()
        names_of: dict[int, list[str]] = {}
        labelled = []
        for seg, p, checkpoint, names_blob, has_labels in db.execute(
                "SELECT id, partition, checkpoint, names, labels IS NOT NULL FROM segments"
                " ORDER BY id"):
            keys, evicted, marks = unpack_names(names_blob, self._where(seg, p))
            self._size[seg] = len(keys) + len(marks)
            self._live[seg] = 0
            self._put(p, seg, keys, checkpoint, evicted)
            self._mark(p, seg, marks)
            names_of[seg] = keys
            if has_labels:
                labelled.append((seg, p))
        row_labels: dict[int, list[Any]] = {}
        row_keys: dict[int, list[str]] = {}
        for p, key, checkpoint, evicted, label_blob in db.execute(
                f"SELECT partition, key, checkpoint, {schema.EVICTED}, labels FROM keys k"):
            index = self._index.get(p)
            if index is not None:
                slot = int(index.find(np.array([hash(key)]))[0])
                if slot >= 0 and index.checkpoint[slot] >= checkpoint:
                    continue  # a segment holds a later state
            self._put(p, ROWS, [key], checkpoint, bool(evicted))
            row_keys.setdefault(p, []).append(key)
            if label_blob is not None:
                where = f"{self.path}: partition {p} key {key!r} labels"
                row_labels.setdefault(p, []).extend(decode(label_blob, where))
        self.live = {}
        for p, index in self._index.items():
            slots = np.flatnonzero((index.segment >= 0) & ~index.evicted)
            self.live[p] = [(names_of[s][r], s, r) for s, r in
                            zip(index.segment[slots].tolist(), index.row[slots].tolist(),
                                strict=True)]
            for key in row_keys.get(p, ()):
                slot = int(index.find(np.array([hash(key)]))[0])
                if not index.evicted[slot]:
                    self.live[p].append((key, ROWS, 0))
        self.labels = row_labels
        for seg, p in labelled:
            (blob,) = db.execute("SELECT labels FROM segments WHERE id = ?", (seg,)).fetchone()
            index, keys = self._index[p], names_of[seg]
            for row, entries in decode(blob, f"{self._where(seg, p)} labels").items():
                slot = index.find(np.array([hash(keys[row])]))[0]
                if slot >= 0 and index.segment[slot] == seg and index.row[slot] == row:
                    self.labels.setdefault(p, []).extend(entries)
        self._fresh = True

    def written_by(self, db: sqlite3.Connection, checkpoint: int) -> dict[int, list[str]]:
        """partition → the keys whose states ``checkpoint`` wrote into segments."""
        out: dict[int, list[str]] = {}
        for seg, p, names in db.execute("SELECT id, partition, names FROM segments"
                                        " WHERE checkpoint = ?", (checkpoint,)).fetchall():
            out.setdefault(p, []).extend(unpack_names(names, self._where(seg, p))[0])
        return out

    def revive(self, keys: Mapping[int, Sequence[str]]) -> None:
        """Count ``keys`` (partition → keys) live, as a rolled-back checkpoint's keys are: the
        partitions rewrite them at the next checkpoint."""
        for p, names in keys.items():
            index = self._index.get(p)
            if index is None:
                continue
            slots = index.find(hash_keys(names))
            live = self.live.setdefault(p, [])
            for name, slot in zip(names, slots.tolist(), strict=True):
                if slot >= 0 and index.evicted[slot]:
                    index.evicted[slot] = False
                    live.append((name, int(index.segment[slot]), int(index.row[slot])))

    def _put(self, p: int, seg: int, keys: Sequence[str], checkpoint: int,
             evicted: Any) -> None:
        """Point ``keys`` of ``p`` at their rows of ``seg``: what they superseded is no longer
        live."""
        index = self._index.get(p)
        if index is None:
            index = self._index[p] = KeyIndex(max(1024, 2 * len(keys)))
        hashes = hash_keys(keys)
        before = index.find(hashes)
        known = before[before >= 0]
        self._unlive(index.segment[known])
        self._unlive(index.mark[known])
        index.put(hashes, seg, np.arange(len(keys)), checkpoint, evicted, found=before)
        if seg >= 0:
            self._live[seg] = self._live.get(seg, 0) + len(keys)

    def _mark(self, p: int, seg: int, marks: Sequence[str],
              hashes: np.ndarray | None = None) -> None:
        """Note ``marks`` of ``p`` (in ``seg``): those keys are out of memory. ``hashes``:
        theirs, when the caller has them."""
        index = self._index.get(p)
        if index is None or not marks:
            return
        slots = index.find(hash_keys(marks) if hashes is None else hashes)
        slots = slots[slots >= 0]
        self._unlive(index.mark[slots])
        index.mark[slots] = seg
        index.evicted[slots] = True
        self._live[seg] = self._live.get(seg, 0) + len(slots)

    def _unlive(self, segs: np.ndarray) -> None:
        segs = segs[segs >= 0]
        if len(segs):
            ids, counts = np.unique(segs, return_counts=True)
            for seg, count in zip(ids.tolist(), counts.tolist(), strict=True):
                self._live[seg] -= count

    # -- writing -------------------------------------------------------------------------

    def write(self, db: sqlite3.Connection, p: int, states: Mapping[str, Any],
              labels: Mapping[str, list[Any]], checkpoint: int,
              evicted: bool | Collection[str]) -> None:
        """Write the ``states`` (and pending ``labels``) of keys of ``p`` in the open
        transaction, flagged evicted when ``evicted`` is True or holds the key; keys of
        ``evicted`` not among ``states`` are noted out of memory. Split keys (busy ones: a
        :class:`SplitState`) are rows of ``keys`` and ``chunks``, rewritten where their chunks
        changed (:class:`adaptd.state_rows.KeyRows`); every other key goes into one segment."""
        self.ensure(db)
        flagged = None if isinstance(evicted, bool) else evicted
        split = {k: v for k, v in states.items() if isinstance(v, SplitState)} \
            if SplitState in set(map(type, states.values())) else {}
        if split:
            self.rows.write(db, p, split, labels, checkpoint, evicted)
            self._put(p, ROWS, list(split), checkpoint,
                      _flags(list(split), evicted if flagged is None else flagged))
            states = {k: v for k, v in states.items() if k not in split}
        marks: list[str] = []
        mark_hashes = None
        if flagged:
            # Filtered in C, in their order (up to max_keys evicted keys at a checkpoint).
            marks = list(filterfalse(states.__contains__, flagged))
            if split:
                marks = list(filterfalse(split.__contains__, marks))
            marks, mark_hashes = self._mark_rows(db, p, marks, checkpoint)
        keys = list(states)
        if not keys and not marks:
            return
        if self.rows.holds_any():
            self.rows.forget(p, keys)  # their rows (if any) are stale from now on
        flags = _flags(keys, evicted)
        segment = pack_segment(keys, list(states.values()), np.broadcast_to(flags, len(keys)),
                               marks)
        rows = {i: labels[k] for i, k in enumerate(keys) if labels.get(k)} if labels else {}
        seg = self._insert(db, p, checkpoint, segment.names, segment.parts,
                           encode_labels(rows), len(keys) + len(marks))
        self._put(p, seg, keys, checkpoint, flags)
        self._mark(p, seg, marks, mark_hashes)

    def _mark_rows(self, db: sqlite3.Connection, p: int, marks: list[str],
                   checkpoint: int) -> tuple[list[str], np.ndarray | None]:
        """Note those of ``marks`` whose state is a row of ``keys`` out of memory (a row of
        ``evictions``); returns the others (their marks go into the segment), and their
        hashes when it took them (for :meth:`_mark`: hashing a key reads its string, a cache
        miss each with 100k marks)."""
        index = self._index.get(p)
        if index is None or not marks:
            return marks, None
        hashes = hash_keys(marks)
        slots = index.find(hashes)
        in_rows = (slots >= 0) & (index.segment[slots] == ROWS)
        if not in_rows.any():
            return marks, hashes
        index.evicted[slots[in_rows]] = True
        db.executemany(schema.MARK_EVICTED, ((p, marks[i], checkpoint)
                                             for i in np.flatnonzero(in_rows).tolist()))
        others = np.flatnonzero(~in_rows)
        return [marks[i] for i in others.tolist()], hashes[others]

    def _insert(self, db: sqlite3.Connection, p: int, checkpoint: int, names: bytes,
                data: Sequence[bytes], labels: bytes | None, size: int) -> int:
        """A row of ``segments``, its data in a file of its own written and synced before the
        transaction commits (so a committed row never names a file not wholly on disk)."""
        cursor = db.execute("INSERT INTO segments (partition, checkpoint, names, data, labels,"
                            " size) VALUES (?, ?, ?, ?, ?, ?)",
                            (p, checkpoint, names, b"", labels, size))
        seg = int(cursor.lastrowid or 0)
        self.files.mkdir(exist_ok=True)
        with open(self._file(seg), "wb") as fh:
            fh.writelines(data)  # the parts of the blob, one after the other
            fh.flush()
            os.fsync(fh.fileno())
        self._written.add(seg)
        self._size[seg] = size
        self._live.setdefault(seg, 0)
        return seg

    def _file(self, seg: int) -> Path:
        return self.files / f"{seg}{SUFFIX}"

    def _data(self, seg: int, p: int) -> bytes:
        """Segment ``seg``'s data file, whole. Raises CheckpointError when it is missing."""
        try:
            return self._file(seg).read_bytes()
        except FileNotFoundError:
            raise CheckpointError(self._where(seg, p), f"is missing its file "
                                  f"{self._file(seg)}") from None

    def committed(self) -> None:
        """The transaction that wrote since the last call committed: the files of the
        segments it deleted go."""
        self._written.clear()
        for seg in self._unlink:
            self._file(seg).unlink(missing_ok=True)
        self._unlink.clear()

    def aborted(self) -> None:
        """The transaction rolled back: the files it wrote are named by no row."""
        for seg in self._written:
            self._file(seg).unlink(missing_ok=True)
        self._written.clear()
        self._unlink.clear()
        self.invalidate()

    def finish(self, db: sqlite3.Connection, checkpoint: int) -> None:
        """At the end of checkpoint ``checkpoint``'s transaction: compact the segments mostly
        stale, note those that died in it, delete those dead since an earlier one."""
        for seg in [s for s, live in self._live.items()
                    if 0 < live and 2 * live < self._size[s]]:
            self._compact(db, seg, checkpoint)
        dead = [s for s, live in self._live.items() if live == 0]
        if dead:
            db.executemany("UPDATE segments SET dead_since = ? WHERE id = ? AND dead_since IS"
                           " NULL", ((checkpoint, s) for s in dead))
            for s in dead:
                del self._live[s], self._size[s]
                self._views.pop(s, None)
        self._unlink.extend(seg for (seg,) in db.execute(
            "DELETE FROM segments WHERE dead_since < ? RETURNING id", (checkpoint,)))
        if self._written:  # the new files' names are on disk before the commit
            fd = os.open(self.files, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _compact(self, db: sqlite3.Connection, seg: int, checkpoint: int) -> None:
        """Copy the live rows and marks of ``seg`` into a new segment of ``checkpoint``."""
        row = db.execute("SELECT partition, names, labels FROM segments WHERE id = ?",
                         (seg,)).fetchone()
        p, names_blob, labels_blob = row
        data = self._data(seg, p)
        keys, _, marks = unpack_names(names_blob, self._where(seg, p))
        index = self._index[p]
        slots = index.find(hash_keys(keys))
        ok = slots >= 0
        ok[ok] = (index.segment[slots[ok]] == seg) & (index.row[slots[ok]] == np.flatnonzero(ok))
        view = SegmentView(data, self._where(seg, p))
        rows = np.flatnonzero(ok).tolist()
        kept = [keys[r] for r in rows]
        read = reader(data)
        states = [view.value(r, read) for r in rows]
        flags = index.evicted[slots[ok]]
        old_labels = decode(labels_blob, f"{self._where(seg, p)} labels") if labels_blob else {}
        new_labels = {i: old_labels[r] for i, r in enumerate(rows) if r in old_labels}
        mark_slots = index.find(hash_keys(marks))
        kept_marks = [m for m, s in zip(marks, mark_slots.tolist(), strict=True)
                      if s >= 0 and index.mark[s] == seg]
        segment = pack_segment(kept, states, flags, kept_marks)
        new = self._insert(db, p, checkpoint, segment.names, segment.parts,
                           encode_labels(new_labels), len(kept) + len(kept_marks))
        self._put(p, new, kept, checkpoint, flags)
        self._mark(p, new, kept_marks)

    # -- reading -------------------------------------------------------------------------

    def key_hashes(self, db: sqlite3.Connection) -> np.ndarray:
        """``hash()`` of every key indexed, of any partition."""
        self.ensure(db)
        return np.concatenate([np.zeros(0, dtype=np.int64)] + [
            index.hashes[index.segment != EMPTY] for index in self._index.values()])

    def read_many(self, db: sqlite3.Connection, p: int, keys: Sequence[str]) -> dict[str, Any]:
        """The states the store holds for those of ``keys`` of ``p`` it has. A key it does not
        hold costs a probe of the index, no read."""
        self.ensure(db)
        index = self._index.get(p)
        if index is None or not keys:
            return {}
        slots = index.find(hash_keys(keys))
        hits = np.flatnonzero(slots >= 0)
        found: dict[str, Any] = {}
        if not len(hits):
            return found
        segs = index.segment[slots[hits]]
        in_rows = segs == ROWS
        if in_rows.any():
            found.update(self.rows.read_many(db, p, [keys[i] for i in hits[in_rows].tolist()]))
            hits, segs = hits[~in_rows], segs[~in_rows]
        rows = index.row[slots[hits]]
        order = np.argsort(segs, kind="stable")
        current = -1
        fd = None
        try:
            for i in order.tolist():
                seg = int(segs[i])
                if seg != current:
                    if fd is not None:
                        os.close(fd)
                        fd = None
                    view = self._view(seg, p)
                    current, fd = seg, os.open(self._file(seg), os.O_RDONLY)
                    read = _reader(fd)
                key, row = keys[hits[i]], int(rows[i])
                if view.name(row, read) == key:  # else another key of the same 64-bit hash
                    found[key] = view.value(row, read)
        finally:
            if fd is not None:
                os.close(fd)
        return found

    def _view(self, seg: int, p: int) -> SegmentView:
        view = self._views.get(seg)
        if view is None:
            # Checked whole the first time a process reads it.
            view = SegmentView(self._data(seg, p), self._where(seg, p))
            if len(self._views) >= _VIEWS:
                self._views.pop(next(iter(self._views)))
            self._views[seg] = view
        return view

    def check(self, db: sqlite3.Connection, checkpoint: int) -> None:
        """Check every segment ``checkpoint`` wrote. Raises CheckpointError."""
        for seg, p, names, labels in db.execute(
                "SELECT id, partition, names, labels FROM segments WHERE checkpoint = ?",
                (checkpoint,)).fetchall():
            unpack_names(names, self._where(seg, p))
            check_data(self._data(seg, p), self._where(seg, p))
            if labels is not None:
                decode(labels, f"{self._where(seg, p)} labels")

    def count(self, evicted: bool | None = None) -> int:
        """Keys held (only evicted or only live ones when ``evicted`` is given)."""
        total = 0
        for index in self._index.values():
            used = index.segment != EMPTY
            total += int(used.sum() if evicted is None else (used & (index.evicted == evicted)).sum())
        return total

    def drop_partition(self, db: sqlite3.Connection, p: int) -> None:
        self._unlink.extend(seg for (seg,) in db.execute(
            "DELETE FROM segments WHERE partition = ? RETURNING id", (p,)))
        self.invalidate()

    def sweep(self, db: sqlite3.Connection) -> None:
        """Delete the files no row names (a crash between a write and its commit, a rollback).
        Only the writer calls it, inside its transaction: another process's uncommitted files
        cannot exist then (SQLite's write lock is held)."""
        if not self.files.is_dir():
            return
        named = {seg for (seg,) in db.execute("SELECT id FROM segments")}
        for path in self.files.glob(f"*{SUFFIX}"):
            if path.stem.isdigit() and int(path.stem) not in named:
                path.unlink(missing_ok=True)


def _reader(fd: int) -> Any:
    def read(at: int, size: int) -> bytes:
        return os.pread(fd, size, at)
    return read


def _flags(keys: Sequence[str], evicted: bool | Collection[str]) -> Any:
    """Each of ``keys``' evicted flag: all ``evicted`` when a bool, else whether it holds it."""
    if isinstance(evicted, bool):
        return evicted
    return np.fromiter(map(evicted.__contains__, keys), dtype=bool, count=len(keys))
