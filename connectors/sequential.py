"""Helpers for connectors, part of the documented contract (``connectors/base.py``).

For single-partition sources (a file, a pipe, a generator, a broker topic): partition 0.
:func:`start_position` checks where the daemon asks it to resume; :class:`Pausable` gives
``pause``/``resume``; :class:`LineSplitter` turns bytes into numbered lines for the ``jsonl``
and ``stdin`` sources. For sources that are not seekable: :class:`LivePositions` numbers
records so that no position is ever reused, and :class:`Inbox` carries records from a client
library's callback thread to ``poll``.

A line's *position* is its 0-based line number. Blank lines (nothing but whitespace) are not
records, but they still take a position, so that position ``p`` always means line ``p`` of the
input, whatever the input contains.

>>> lines = LineSplitter()
>>> lines.feed(b'{"x": [1]}\\n\\n{"x": [2]}\\n{"x"')
>>> [(r.position, r.value) for r in lines.take(10)]
[(0, b'{"x": [1]}'), (2, b'{"x": [2]}')]
>>> lines.next_position, lines.pending
(3, 4)
>>> [(r.position, r.value) for r in lines.take(10, at_eof=True)]
[(3, b'{"x"')]
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from adaptd.connectors.base import SourceRecord
from adaptd.errors import ConfigError

T = TypeVar("T")


def start_position(where: str, start_positions: Mapping[int, int]) -> int:
    """The position to resume partition 0 at (0 if absent), for a single-partition source.

    Raises :class:`ConfigError` for positions of other partitions (a checkpoint written for
    another source) or a negative position; ``where`` names the source in the message.
    """
    others = sorted(p for p in start_positions if p != 0)
    if others:
        raise ConfigError(
            f"{where} has only partition 0, but was asked to resume partitions {others}: "
            "is the checkpoint from another source?"
        )
    start = start_positions.get(0, 0)
    if start < 0:
        raise ConfigError(f"{where}: start position must be >= 0, got {start}")
    return start


class Pausable:
    """``pause``/``resume`` for a source that reads only when polled (the daemon pauses its
    source while a sink is backed up). A source calls :meth:`paused_wait` first thing in
    ``poll`` and returns nothing when it says so.
    """

    _paused = False

    def pause(self) -> None:
        """Stop handing out records: ``poll`` returns nothing until :meth:`resume`."""
        self._paused = True

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        self._paused = False

    def paused_wait(self, timeout_s: float) -> bool:
        """If paused, wait out ``timeout_s`` (as an empty poll would) and return True."""
        if not self._paused:
            return False
        time.sleep(max(timeout_s, 0.0))
        return True


class LineSplitter:
    """Buffers bytes and hands out complete lines as :class:`SourceRecord` objects.

    ``feed`` appends bytes as they are read; ``take`` returns the complete lines buffered so
    far. A last line without its newline stays buffered until the newline arrives, unless the
    caller says the input has ended (``at_eof=True``), in which case it is a record too.
    Neither method blocks: reading is the caller's job.
    """

    def __init__(self, partition: int = 0, first_position: int = 0) -> None:
        self.partition = partition
        #: Position of the next line not yet handed out (or skipped, if blank).
        self.next_position = first_position
        self._lines: deque[bytes] = deque()
        self._partial = b""

    @property
    def pending(self) -> int:
        """Bytes of the unfinished last line still waiting for its newline."""
        return len(self._partial)

    def feed(self, chunk: bytes) -> None:
        """Append bytes read from the input."""
        if not chunk:
            return
        parts = (self._partial + chunk).split(b"\n")
        self._partial = parts.pop()
        self._lines.extend(parts)

    def take(self, max_records: int, at_eof: bool = False) -> list[SourceRecord]:
        """Up to ``max_records`` records from the complete lines buffered, in position order.

        With ``at_eof`` an unfinished last line counts as complete.
        """
        if at_eof and self._partial:
            self._lines.append(self._partial)
            self._partial = b""
        out: list[SourceRecord] = []
        while self._lines and len(out) < max_records:
            line = self._lines.popleft()
            position = self.next_position
            self.next_position += 1
            # Windows line ends: the value is the line without its terminator.
            if line.endswith(b"\r"):
                line = line[:-1]
            if line.strip():
                out.append(SourceRecord(partition=self.partition, position=position, value=line))
        return out

    def skip(self, count: int, at_eof: bool = False) -> int:
        """Drop up to ``count`` buffered complete lines (seeking forward); returns how many."""
        if at_eof and self._partial:
            self._lines.append(self._partial)
            self._partial = b""
        dropped = 0
        while self._lines and dropped < count:
            self._lines.popleft()
            dropped += 1
        self.next_position += dropped
        return dropped

    @property
    def has_lines(self) -> bool:
        """True if complete lines are buffered (possibly blank ones)."""
        return bool(self._lines)


class LivePositions:
    """Positions for a source that cannot replay at stable positions (live, acknowledged).

    A position is the arrival time in microseconds since the Unix epoch, raised to one above
    the previous position and to at least ``floor`` (the start position the daemon opened the
    source at). So positions only grow, a restart starts above whatever the previous run handed
    out (checkpointed or not: its positions trailed its clock unless it read more than one
    record per microsecond on average), and they stay below 2**53 until the year 2255.

    >>> positions = LivePositions(floor=5, clock_us=lambda: 3)
    >>> [positions.take() for _ in range(3)]
    [5, 6, 7]
    >>> LivePositions(floor=0, clock_us=lambda: 1_700_000_000_000_000).take()
    1700000000000000
    """

    def __init__(self, floor: int = 0, clock_us: Callable[[], int] | None = None) -> None:
        self._clock_us = clock_us or (lambda: time.time_ns() // 1000)
        self._next = floor

    def take(self) -> int:
        """The position of the next record."""
        position = max(self._next, self._clock_us())
        self._next = position + 1
        return position


class Inbox(Generic[T]):
    """A thread-safe queue from a client library's callback thread to ``poll``.

    ``put`` never blocks (callbacks must return quickly); with ``max_items`` it drops what does
    not fit and counts it in :attr:`dropped` (for live sources, which cannot make the sender
    wait). ``take`` waits up to ``timeout_s`` for the first item, then takes what is there.

    >>> inbox: Inbox[int] = Inbox(max_items=2)
    >>> [inbox.put(i) for i in range(3)]
    [True, True, False]
    >>> inbox.take(10, timeout_s=0.0), inbox.dropped, len(inbox)
    ([0, 1], 1, 0)
    """

    def __init__(self, max_items: int | None = None) -> None:
        self._items: deque[T] = deque()
        self._ready = threading.Condition()
        self._max_items = max_items
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Add an item (from any thread); False if it was dropped because the inbox is full."""
        with self._ready:
            if self._max_items is not None and len(self._items) >= self._max_items:
                self.dropped += 1
                return False
            self._items.append(item)
            self._ready.notify()
            return True

    def take(self, max_items: int, timeout_s: float) -> list[T]:
        """Up to ``max_items`` items, oldest first, waiting at most ``timeout_s`` for one."""
        with self._ready:
            self._ready.wait_for(lambda: bool(self._items), timeout=max(timeout_s, 0.0))
            count = min(max_items, len(self._items))
            return [self._items.popleft() for _ in range(count)]

    def __len__(self) -> int:
        return len(self._items)
