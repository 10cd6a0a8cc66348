"""Reading and damaging a state dir's ``state.db`` from outside, as tests need: which segment or
row holds a key (adaptd.segment_store), and a flipped byte where a bad disk would put one."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from adaptd.key_segments import unpack_names


def db_path(state_dir: Path) -> Path:
    return state_dir if state_dir.suffix == ".db" else state_dir / "state.db"


def segments(state_dir: Path) -> list[dict[str, Any]]:
    """Every segment, in the order written: id, partition, checkpoint, keys, flags, marks."""
    with sqlite3.connect(db_path(state_dir)) as db:
        rows = db.execute("SELECT id, partition, checkpoint, names, dead_since FROM segments"
                          " ORDER BY id").fetchall()
    out = []
    for seg, p, checkpoint, names, dead in rows:
        keys, evicted, marks = unpack_names(names)
        out.append({"id": seg, "partition": p, "checkpoint": checkpoint, "keys": keys,
                    "evicted": evicted.tolist(), "marks": marks, "dead_since": dead})
    return out


def holders(state_dir: Path, key: str) -> list[tuple[str, int, int]]:
    """Where ``key``'s states are stored, oldest first: ("segment", id, checkpoint) for each
    segment row, ("row", 0, checkpoint) for its row of ``keys``."""
    found = [("segment", s["id"], s["checkpoint"]) for s in segments(state_dir)
             if key in s["keys"]]
    with sqlite3.connect(db_path(state_dir)) as db:
        row = db.execute("SELECT checkpoint FROM keys WHERE key = ?", (key,)).fetchone()
    if row is not None:
        found.append(("row", 0, row[0]))
    return sorted(found, key=lambda h: (h[2], h[1]))


def stored(state_dir: Path) -> dict[str, tuple[str, int, int]]:
    """key → where its latest state is stored (equal before and after a checkpoint that did
    not write the key)."""
    keys = {k for s in segments(state_dir) for k in s["keys"]}
    with sqlite3.connect(db_path(state_dir)) as db:
        keys |= {k for (k,) in db.execute("SELECT key FROM keys")}
    return {k: holders(state_dir, k)[-1] for k in keys}


def flip(state_dir: Path, key: str, column: str = "value", generation: int = -1) -> None:
    """Flip one byte in the middle of what holds ``key``'s state (``column`` "labels": its
    pending labels) in its latest store (``generation`` -2: the one before)."""
    kind, seg, _ = holders(state_dir, key)[generation]
    with sqlite3.connect(db_path(state_dir)) as db:
        if kind == "row":
            column = {"value": "value", "labels": "labels"}[column] if generation == -1 else \
                f"prev_{column}"
            where, args = "key = ?", (key,)
            table = "keys"
        elif column == "value":  # the segment's data file
            path = db_path(state_dir).parent / "segments" / f"{seg}.seg"
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0x10
            path.write_bytes(bytes(data))
            return
        else:
            where, args = "id = ?", (seg,)
            table = "segments"
        (blob,) = db.execute(f"SELECT {column} FROM {table} WHERE {where}", args).fetchone()
        flipped = bytearray(blob)
        flipped[len(flipped) // 2] ^= 0x10
        db.execute(f"UPDATE {table} SET {column} = ? WHERE {where}", (bytes(flipped), *args))
