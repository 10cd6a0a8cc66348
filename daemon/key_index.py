"""Where each key's latest state lies in the segment store (:mod:`adaptd.key_segments`): an
open-addressing hash table in NumPy arrays, about 40 bytes a key where a dict of str → tuple
took 150 or more (the key's string itself is not held: it lies in the segment).

A slot holds a key's 64-bit hash (Python's ``hash`` of the string: salted per process, which is
enough because the table is rebuilt from the segments' key names at every start, as Bitcask
rebuilds its "keydir" from its hint files), its segment id and row there, the checkpoint that
wrote that row, whether the key is out of memory (evicted) and the segment holding the mark
that says so (-1: none). Linear probing, the table kept at most half full. Two keys of equal
hash are told apart by the caller, which compares the name stored in the segment (one in 2^64
per pair of keys: :meth:`find` then reports the first one, and the caller reads the slot's
name before trusting it).

Lookups and inserts take a batch of hashes at once: a batch's new keys are a few NumPy passes,
not a Python step per key; a key not in the table is a probe, no SQLite read.

>>> index = KeyIndex()
>>> slots = index.put(np.array([hash("a"), hash("b")]), np.array([7, 7]), np.array([0, 1]),
...                   np.array([5, 5]), np.array([False, True]))
>>> found = index.find(np.array([hash("b"), hash("c")]))
>>> int(index.segment[found[0]]), int(index.row[found[0]]), bool(index.evicted[found[0]]), int(found[1])
(7, 1, True, -1)
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np


def hash_keys(keys: Collection[str]) -> np.ndarray:
    """``hash()`` of each of ``keys``, as the tables here take them."""
    return np.fromiter(map(hash, keys), dtype=np.int64, count=len(keys))


#: The ``segment`` of an empty slot.
EMPTY = -1
#: A slot :meth:`KeyIndex._claim` gave a hash whose entry its caller is about to set.
_CLAIMED = -9


class KeyIndex:
    """The table (see the module note). Arrays are public for the store's vectorized updates:
    ``segment[i]``, ``row[i]``, ``checkpoint[i]``, ``evicted[i]``, ``mark[i]`` describe the key
    whose hash is ``hashes[i]`` when ``segment[i] != EMPTY``."""

    def __init__(self, capacity: int = 1024) -> None:
        self._alloc(max(16, 1 << (int(capacity) - 1).bit_length()))
        self.count = 0

    def _alloc(self, size: int) -> None:
        self.hashes = np.zeros(size, dtype=np.int64)
        self.segment = np.full(size, EMPTY, dtype=np.int64)
        self.row = np.zeros(size, dtype=np.int32)
        self.checkpoint = np.zeros(size, dtype=np.int64)
        self.evicted = np.zeros(size, dtype=bool)
        self.mark = np.full(size, EMPTY, dtype=np.int64)
        self._mask = size - 1

    def __len__(self) -> int:
        return self.count

    def find(self, hashes: np.ndarray) -> np.ndarray:
        """The slot of each hash, -1 where the table has none."""
        hashes = np.asarray(hashes, dtype=np.int64)
        out = np.full(len(hashes), -1, dtype=np.int64)
        pending = np.arange(len(hashes))
        pos = hashes & self._mask
        while len(pending):
            p = pos[pending]
            seg = self.segment[p]
            hit = (seg != EMPTY) & (self.hashes[p] == hashes[pending])
            out[pending[hit]] = p[hit]
            go_on = (seg != EMPTY) & ~hit
            pending = pending[go_on]
            pos[pending] = (pos[pending] + 1) & self._mask
        return out

    def put(self, hashes: np.ndarray, segment: np.ndarray, row: np.ndarray,
            checkpoint: np.ndarray, evicted: np.ndarray,
            found: np.ndarray | None = None) -> np.ndarray:
        """Set the entries of ``hashes`` (distinct), adding those the table lacks; their marks
        are cleared. Returns their slots. ``found``: :meth:`find` of ``hashes`` just before
        (a caller that looked them up already), saving a probe."""
        hashes = np.asarray(hashes, dtype=np.int64)
        if 2 * (self.count + len(hashes)) > len(self.hashes):
            self._resize(2 * (self.count + len(hashes)))
            found = None  # the slots moved
        slots = self.find(hashes) if found is None else found.copy()
        new = np.flatnonzero(slots < 0)
        if len(new):
            slots[new] = self._claim(hashes[new])
            self.hashes[slots[new]] = hashes[new]
            self.count += len(new)
        self.segment[slots] = segment
        self.row[slots] = row
        self.checkpoint[slots] = checkpoint
        self.evicted[slots] = evicted
        self.mark[slots] = EMPTY
        return slots

    def _claim(self, hashes: np.ndarray) -> np.ndarray:
        """Empty slots for ``hashes`` (none in the table, distinct), claimed in rounds: in each,
        every empty probe position goes to one of the hashes probing it (the one whose number
        an unordered scatter left in ``row`` there, a slot nobody uses yet) and the others
        probe on. No sort and no table-sized scratch array per round: claiming 100k keys' slots
        was a third of a checkpoint's index work. Claimed slots are marked taken in ``segment``;
        the caller sets their entries."""
        out = np.empty(len(hashes), dtype=np.int64)
        pending = np.arange(len(hashes))
        pos = hashes & self._mask
        while len(pending):
            p = pos[pending]
            won = self.segment[p] == EMPTY
            at, contenders = p[won], pending[won]
            self.row[at] = contenders  # several at one position: one of them is left
            won[won] = self.row[at] == contenders
            out[pending[won]] = p[won]
            self.segment[p[won]] = _CLAIMED
            pending = pending[~won]
            pos[pending] = (pos[pending] + 1) & self._mask
        return out

    def _resize(self, need: int) -> None:
        live = np.flatnonzero(self.segment != EMPTY)
        old = (self.hashes[live], self.segment[live], self.row[live], self.checkpoint[live],
               self.evicted[live], self.mark[live])
        self._alloc(1 << (int(need) - 1).bit_length())
        slots = self._claim(old[0])
        self.hashes[slots], self.segment[slots], self.row[slots] = old[0], old[1], old[2]
        self.checkpoint[slots], self.evicted[slots], self.mark[slots] = old[3], old[4], old[5]

    def clear(self) -> None:
        """Forget every key."""
        self._alloc(len(self.hashes))
        self.count = 0


class HashSet:
    """A set of 64-bit hashes in one NumPy array (open addressing, linear probing, at most
    half full; 0 marks an empty slot, so a hash of 0 is kept as 1). Asked of a batch at a
    time, as :class:`KeyIndex`. Two keys of equal hash are one member: the set answers "maybe
    a member" (exact but for one in 2^64 per pair of keys), which is all its users ask.

    >>> members = HashSet()
    >>> members.add(np.array([hash("a"), 0, hash("b")]))
    >>> members.contains(np.array([hash("b"), hash("c"), 0, 1])).tolist()
    [True, False, True, True]
    """

    def __init__(self, capacity: int = 1024) -> None:
        self.table = np.zeros(max(16, 1 << (2 * int(capacity) - 1).bit_length()), dtype=np.int64)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """Whether each of ``hashes`` is a member."""
        return self._slots(_nonzero(hashes))[1]

    def add(self, hashes: np.ndarray) -> None:
        """Add ``hashes`` (members already, or repeated, are fine)."""
        hashes = np.unique(_nonzero(hashes))
        self._room(len(hashes))
        pos, found = self._slots(hashes)
        self._insert(hashes[~found], pos[~found])

    def add_new(self, hashes: np.ndarray) -> None:
        """Add ``hashes`` that :meth:`contains` just found not to be members, distinct: one
        probe, no sort (a repeated one would take a second slot, harmless)."""
        self._room(len(hashes))
        self._insert(_nonzero(hashes))

    def _room(self, more: int) -> None:
        """Grow (rehashing the members) unless ``more`` members keep it at most half full."""
        if 2 * (self.count + more) > len(self.table):
            members = self.table[self.table != 0]
            self.table = np.zeros(1 << (2 * (self.count + more) - 1).bit_length(),
                                  dtype=np.int64)
            self.count = 0
            self._insert(members)

    def _slots(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per hash: where its probe ended (its slot, or the empty slot that ended the probe)
        and whether it is there."""
        table, mask = self.table, len(self.table) - 1
        pos = hashes & mask
        found = np.zeros(len(hashes), dtype=bool)
        pending = np.arange(len(hashes))
        while len(pending):
            held = table[pos[pending]]
            hit = held == hashes[pending]
            found[pending[hit]] = True
            pending = pending[(held != 0) & ~hit]
            pos[pending] = (pos[pending] + 1) & mask
        return pos, found

    def _insert(self, hashes: np.ndarray, start: np.ndarray | None = None) -> None:
        """Put ``hashes`` (distinct, not members) in empty slots, probing from ``start``: in
        rounds, each empty probe position goes to one of the hashes probing it (the one an
        unordered scatter left there), the others probe on."""
        table, mask = self.table, len(self.table) - 1
        pos = (hashes & mask) if start is None else start.copy()
        pending = np.arange(len(hashes))
        while len(pending):
            p = pos[pending]
            free = table[p] == 0
            table[p[free]] = hashes[pending[free]]
            won = free & (table[p] == hashes[pending])
            pending = pending[~won]
            pos[pending] = (pos[pending] + 1) & mask
        self.count += len(hashes)


def _nonzero(hashes: np.ndarray) -> np.ndarray:
    hashes = np.asarray(hashes, dtype=np.int64)
    return np.where(hashes == 0, 1, hashes)
