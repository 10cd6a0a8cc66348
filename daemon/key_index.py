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

Lookups and inserts take a batch of hashes at once, probed by compiled loops that release the
GIL: no Python step per key; a key not in the table is a probe, no SQLite read.

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

from adaptd.learner.jit import njit


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
        out = np.empty(len(hashes), dtype=np.int64)
        _find(self.hashes, self.segment, hashes, out)
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
            self.count += len(new)
        self.segment[slots] = segment
        self.row[slots] = row
        self.checkpoint[slots] = checkpoint
        self.evicted[slots] = evicted
        self.mark[slots] = EMPTY
        return slots

    def _claim(self, hashes: np.ndarray) -> np.ndarray:
        """Empty slots for ``hashes`` (none in the table, distinct), each hash written there
        and the slot marked taken in ``segment``; the caller sets the entries."""
        out = np.empty(len(hashes), dtype=np.int64)
        _claim(self.hashes, self.segment, hashes, out)
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
        """Add ``hashes`` that :meth:`contains` just found not to be members: one probe, no
        sort."""
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
        pos = np.empty(len(hashes), dtype=np.int64)
        found = np.empty(len(hashes), dtype=np.bool_)
        _set_slots(self.table, hashes, pos, found)
        return pos, found

    def _insert(self, hashes: np.ndarray, start: np.ndarray | None = None) -> None:
        """Put ``hashes`` (distinct, not members) in empty slots, probing from ``start``."""
        self.count += _set_insert(self.table, hashes, hashes & (len(self.table) - 1)
                                  if start is None else start)


# The probes are compiled loops, one hash after another, and release the GIL: the vectorized
# rounds they replace allocated a few arrays per round, and a store's index is probed by the
# checkpoint thread while the runner's thread goes on (with 1M distinct keys those rounds were
# half of the checkpoint thread's time, all of it holding the GIL). Linear probing; the table
# sizes are powers of two, so ``h & mask`` is the home slot of a hash, negative ones included.

@njit(nogil=True, refcounts=False)
def _find(keys: np.ndarray, segment: np.ndarray, hashes: np.ndarray,
          out: np.ndarray) -> None:  # pragma: no cover
    """``out[i]``: the slot of ``hashes[i]`` in a :class:`KeyIndex`'s arrays, or -1."""
    mask = len(keys) - 1
    for i in range(len(hashes)):
        h = hashes[i]
        p = h & mask
        out[i] = -1
        while segment[p] != EMPTY:
            if keys[p] == h:
                out[i] = p
                break
            p = (p + 1) & mask


@njit(nogil=True, refcounts=False)
def _claim(keys: np.ndarray, segment: np.ndarray, hashes: np.ndarray,
           out: np.ndarray) -> None:  # pragma: no cover
    """``out[i]``: an empty slot of a :class:`KeyIndex` for ``hashes[i]``, taken for it."""
    mask = len(keys) - 1
    for i in range(len(hashes)):
        h = hashes[i]
        p = h & mask
        while segment[p] != EMPTY:
            p = (p + 1) & mask
        keys[p] = h
        segment[p] = _CLAIMED
        out[i] = p


@njit(nogil=True, refcounts=False)
def _set_slots(table: np.ndarray, hashes: np.ndarray, pos: np.ndarray,
               found: np.ndarray) -> None:  # pragma: no cover
    """:meth:`HashSet._slots` into ``pos`` and ``found``."""
    mask = len(table) - 1
    for i in range(len(hashes)):
        h = hashes[i]
        p = h & mask
        while table[p] != 0 and table[p] != h:
            p = (p + 1) & mask
        pos[i] = p
        found[i] = table[p] == h


@njit(nogil=True, refcounts=False)
def _set_insert(table: np.ndarray, hashes: np.ndarray,
                start: np.ndarray) -> int:  # pragma: no cover
    """Each of ``hashes`` into the first empty slot from its ``start`` (unless met on the way:
    a hash repeated in ``hashes``); returns how many were added."""
    mask = len(table) - 1
    added = 0
    for i in range(len(hashes)):
        h = hashes[i]
        p = start[i]
        while table[p] != 0 and table[p] != h:
            p = (p + 1) & mask
        if table[p] == 0:
            table[p] = h
            added += 1
    return added


def _nonzero(hashes: np.ndarray) -> np.ndarray:
    hashes = np.asarray(hashes, dtype=np.int64)
    return np.where(hashes == 0, 1, hashes)
