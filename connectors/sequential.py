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

from adaptd.connectors.base import RecordRun, SourceRecord
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

    Linear in the input: each byte is searched for a newline once (``bytearray.find`` from
    where the last search stopped), however long the line. With ``max_line_bytes`` a longer
    line is never held whole: its first ``max_line_bytes`` bytes are kept, the rest is counted
    and dropped as it streams by, and the record handed out carries that prefix with
    ``truncated_from`` set to the line's length (the daemon dead-letters it as ``oversized``).

    >>> lines = LineSplitter(max_line_bytes=4)
    >>> lines.feed(b'{"x":[1]}\\n[2]\\n')
    >>> [(r.value, r.truncated_from) for r in lines.take(10)]
    [(b'{"x"', 9), (b'[2]', None)]
    """

    def __init__(self, partition: int = 0, first_position: int = 0,
                 max_line_bytes: int | None = None) -> None:
        self.partition = partition
        #: Position of the next line not yet handed out (or skipped, if blank).
        self.next_position = first_position
        self.max_line_bytes = max_line_bytes
        # Complete lines: their bytes, or (prefix, length) for a line over max_line_bytes; those
        # before _head are handed out already (a list and an index: take_many slices in C).
        self._lines: list[bytes | tuple[bytes, int]] = []
        self._head = 0
        # (prefix, length) entries among the lines not handed out; a carriage return seen in
        # the input (sticky). Either sends take_many to the line-by-line take.
        self._truncated = 0
        self._carriage = False
        self._buf = bytearray()  # the unfinished last line (its prefix, when dropping)
        self._dropped = 0  # bytes of the unfinished last line dropped past max_line_bytes

    @property
    def pending(self) -> int:
        """Bytes of the unfinished last line still waiting for its newline."""
        return len(self._buf) + self._dropped

    def feed(self, chunk: bytes) -> None:
        """Append bytes read from the input."""
        if not self._carriage and b"\r" in chunk:
            self._carriage = True
        first = chunk.find(b"\n")
        if first < 0:
            self._append(chunk, 0, len(chunk))
            return
        self._append(chunk, 0, first)
        self._finish_line()
        last = chunk.rfind(b"\n")
        if last > first:
            # The lines between the first and the last newline are whole: split them in C.
            whole = chunk[first + 1:last].split(b"\n")
            limit = self.max_line_bytes
            if limit is not None and max(map(len, whole)) > limit:
                self._truncated += sum(len(w) > limit for w in whole)
                self._lines.extend(w if len(w) <= limit else (w[:limit], len(w)) for w in whole)
            else:
                self._lines.extend(whole)
        self._append(chunk, last + 1, len(chunk))

    def _append(self, chunk: bytes, start: int, stop: int) -> None:
        """Add ``chunk[start:stop]`` (no newline in it) to the unfinished line, keeping at
        most ``max_line_bytes`` of it."""
        limit = self.max_line_bytes
        if limit is not None:
            room = max(0, limit - len(self._buf))
            if stop - start > room:
                self._dropped += stop - start - room
                stop = start + room
        self._buf += memoryview(chunk)[start:stop]

    def _finish_line(self) -> None:
        if self._dropped:
            self._truncated += 1
            self._lines.append((bytes(self._buf), len(self._buf) + self._dropped))
        else:
            self._lines.append(bytes(self._buf))
        self._buf.clear()
        self._dropped = 0

    def take_buffered(self) -> bytes | None:
        """Remove and return every byte buffered and not handed out, as it was read (the
        complete lines, each with its newline, then the unfinished last one), for a caller
        that reads on by itself from there; None, removing nothing, while a line longer than
        ``max_line_bytes`` is buffered or being cut."""
        if self._truncated or self._dropped:
            return None
        lines = self._lines[self._head:]
        text = b"".join(line + b"\n" for line in lines) if lines else b""  # type: ignore[operator]
        self._lines.clear()
        self._head = 0
        text += self._buf
        self._buf.clear()
        return text

    def _end_input(self, at_eof: bool) -> None:
        if at_eof and self.pending:
            self._finish_line()

    def take(self, max_records: int, at_eof: bool = False) -> list[SourceRecord]:
        """Up to ``max_records`` records from the complete lines buffered, in position order.

        With ``at_eof`` an unfinished last line counts as complete.
        """
        self._end_input(at_eof)
        out: list[SourceRecord] = []
        lines = self._lines
        while self._head < len(lines) and len(out) < max_records:
            line = lines[self._head]
            self._head += 1
            position = self.next_position
            self.next_position += 1
            if isinstance(line, tuple):  # over max_line_bytes: its prefix and its length
                self._truncated -= 1
                out.append(SourceRecord(partition=self.partition, position=position,
                                        value=line[0], truncated_from=line[1]))
                continue
            # Windows line ends: the value is the line without its terminator.
            if line.endswith(b"\r"):
                line = line[:-1]
            if line.strip():
                out.append(SourceRecord(partition=self.partition, position=position, value=line))
        self._compact()
        return out

    def take_many(self, max_records: int, at_eof: bool = False) -> list[SourceRecord] | RecordRun:
        """What :meth:`take` returns, as one :class:`RecordRun` when the lines are plain (no
        blank line, no carriage return, none truncated): then no per-line Python runs at all,
        the lines are a slice of the buffer."""
        self._end_input(at_eof)
        if self._carriage:
            return self.take(max_records, at_eof)
        head = self._head
        lines = self._lines[head:head + max_records]
        if not lines:
            return []
        if self._truncated and tuple in set(map(type, lines)):
            return self.take(max_records, at_eof)
        # A blank line is no record but keeps its position: the line-by-line path handles it.
        if not all(lines) or any(map(bytes.isspace, lines)):  # type: ignore[arg-type]
            return self.take(max_records, at_eof)
        run = RecordRun(self.partition, self.next_position, lines)  # type: ignore[arg-type]
        self._head = head + len(lines)
        self.next_position += len(lines)
        self._compact()
        return run

    def skip(self, count: int, at_eof: bool = False) -> int:
        """Drop up to ``count`` buffered complete lines (seeking forward); returns how many."""
        self._end_input(at_eof)
        dropped = min(count, len(self._lines) - self._head)
        self._truncated -= sum(isinstance(line, tuple)
                               for line in self._lines[self._head:self._head + dropped])
        self._head += dropped
        self.next_position += dropped
        self._compact()
        return dropped

    def _compact(self) -> None:
        # Drop the lines handed out, once they are most of the list: amortized O(1) a line.
        if self._head and self._head * 2 >= len(self._lines):
            del self._lines[:self._head]
            self._head = 0

    @property
    def complete(self) -> int:
        """Complete lines buffered, blank ones included."""
        return len(self._lines) - self._head

    @property
    def has_lines(self) -> bool:
        """True if complete lines are buffered (possibly blank ones)."""
        return self._head < len(self._lines)


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

    def take_many(self, count: int) -> int:
        """The first of ``count`` consecutive positions for the next records (a run)."""
        position = self.take()
        self._next = position + count
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
