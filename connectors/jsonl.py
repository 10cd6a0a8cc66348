"""``jsonl:PATH`` — a file of one JSON record per line, as a source and as a sink.

Source: a single partition 0 whose position is the 0-based line number. Blank lines are not
records but keep their line number, so a checkpointed position always names the same line.
``?follow=true`` keeps tailing the file for appended lines, like ``tail -f``: the source is
then never exhausted, and a last line is only handed out once its newline has been written.
A followed file must only grow: truncating it is logged, and a rotated file (renamed, a new
one created) is not followed to the new file.

Sink: appends one message value per line, creating missing parent directories; ``flush``
returns once the lines are on disk (``os.fsync``). Every 8 MiB written, a background thread
starts syncing what is written so far, so the disk writes overlap the work on the next records
and ``flush`` finds little left to wait for (an error that sync meets is raised by the next
``flush``: a checkpoint never commits past it). A partial last line (a write cut short by a
crash) is cut off when the sink opens, so the file stays one record per line.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import stat
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptd.connectors.base import (
    Connector,
    EncodedBatch,
    LineRun,
    PartitionListener,
    RecordRun,
    Sink,
    SinkMessage,
    Source,
    SourceRecord,
    parse_options,
    parse_uri,
)
from adaptd.connectors.sequential import LineSplitter, Pausable, start_position
from adaptd.errors import ConfigError, SinkError

log = logging.getLogger(__name__)

#: Bytes read from the file per system call.
READ_CHUNK_BYTES = 1 << 16
#: A poll stops reading once it has read this much and holds a complete line, whatever the
#: batch size: a batch of long lines is then smaller, so the lines held stay about this size.
MAX_POLL_READ_BYTES = 8 << 20
#: Bytes written after which the sink starts syncing them to disk in the background.
WRITEBACK_BYTES = 8 << 20
#: How often a following source looks for appended lines while ``poll`` waits.
FOLLOW_INTERVAL_S = 0.05


#: The bytes ``bytes.strip`` takes for whitespace (other than the newline).
_SPACES = np.array([9, 11, 12, 13, 32], dtype=np.uint8)


def _newlines(data: bytes, offset: int) -> np.ndarray:
    """Where ``data``'s newlines are, plus ``offset``."""
    return np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + offset


@dataclass(frozen=True, slots=True)
class JsonlSourceOptions:
    """Options of a ``jsonl:PATH?follow=…`` source.

    Args:
        path: the file to read (the URI's target).
        follow: keep reading lines appended after the end of the file; the source never ends.
    """

    path: str
    follow: bool = False

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("path must not be empty: expected jsonl:PATH")


@dataclass(frozen=True, slots=True)
class JsonlSinkOptions:
    """Options of a ``jsonl:PATH`` sink.

    Args:
        path: the file to append to (the URI's target); parent directories are created.
    """

    path: str

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("path must not be empty: expected jsonl:PATH")


class JsonlSource(Pausable, Source):
    """Reads records line by line from a file; see the module docstring."""

    #: ``poll`` may run on another thread than the other methods, never at the same time
    #: (the daemon reads a file ahead: :mod:`adaptd.read_ahead`).
    polls_on_any_thread = True

    def __init__(self, options: JsonlSourceOptions) -> None:
        self.options = options
        self._file: io.FileIO | None = None
        self._lines = LineSplitter()
        self._to_skip = 0
        self._exhausted = False
        self._truncated = False
        self._max_line_bytes: int | None = None
        # The fast path's bytes read after its last run (whole lines, then an unfinished one),
        # whether it may still be taken (no carriage return seen), and the mean line length.
        self._rest = b""
        self._plain = True
        self._line_bytes = 256

    def limit_record_bytes(self, max_bytes: int) -> None:
        """Keep at most ``max_bytes`` of a longer line (see :class:`LineSplitter`)."""
        self._max_line_bytes = max_bytes
        self._lines.max_line_bytes = max_bytes

    def open(
        self, start_positions: Mapping[int, int], listener: PartitionListener | None = None
    ) -> None:
        """Open the file and seek to line ``start_positions[0]`` (0 if absent). Does not block."""
        where = f"jsonl source {self.options.path!r}"
        start = start_position(where, start_positions)
        try:
            self._file = io.FileIO(self.options.path, "rb")
        except FileNotFoundError:
            raise ConfigError(f"{where}: file does not exist") from None
        except OSError as exc:
            raise ConfigError(f"{where}: cannot open: {exc}") from None
        # Lines before the start are skipped as they are read, on the first polls.
        self._lines = LineSplitter(partition=0, first_position=0,
                                   max_line_bytes=self._max_line_bytes)
        self._to_skip = start
        self._rest = b""
        self._plain = True
        self._exhausted = False
        log.info("reading %s from line %d%s", self.options.path, start,
                 " (following)" if self.options.follow else "")

    def poll(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        """Return the next lines that are there; blocks up to ``timeout_s`` only when following."""
        records = self.poll_many(max_records, timeout_s)
        return records.records() if isinstance(records, RecordRun) else records

    def poll_many(self, max_records: int, timeout_s: float) -> list[SourceRecord] | RecordRun:
        """:meth:`poll`, as one :class:`RecordRun` when the lines are plain (the common case)."""
        if self._file is None:
            raise RuntimeError(f"jsonl source {self.options.path!r}: poll() before open()")
        if self.paused_wait(timeout_s):
            return []
        deadline = time.monotonic() + max(timeout_s, 0.0)
        while True:
            records = self._read_available(max_records)
            if records or not self.options.follow:
                return records
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            time.sleep(min(FOLLOW_INTERVAL_S, remaining))

    def _read_available(self, max_records: int) -> list[SourceRecord] | RecordRun:
        """Records from what the file holds right now, without waiting."""
        assert self._file is not None
        if not self._to_skip and self._plain:
            run = self._read_run(max_records)
            if run is not None:
                return run
        eof = False
        read_bytes = 0
        while True:
            # Only a file that is not followed can end with a line that lacks its newline.
            final = eof and not self.options.follow
            if self._to_skip:
                self._to_skip -= self._lines.skip(self._to_skip, at_eof=final)
            if eof or (not self._to_skip and (
                    self._lines.complete >= max_records
                    or (self._lines.complete and read_bytes >= MAX_POLL_READ_BYTES))):
                break
            chunk = self._file.read(READ_CHUNK_BYTES)
            read_bytes += len(chunk)
            if chunk:
                self._lines.feed(chunk)
            else:
                eof = True
        out = [] if self._to_skip else self._lines.take_many(max_records, at_eof=final)
        if eof and self.options.follow:
            self._check_not_truncated()
        if eof and not self.options.follow and not self._lines.has_lines:
            if self._to_skip and not self._exhausted:
                log.warning(
                    "%s has only %d lines but reading was to resume at line %d",
                    self.options.path, self._lines.next_position,
                    self._lines.next_position + self._to_skip,
                )
            self._exhausted = True
        return out

    def _read_run(self, max_records: int) -> LineRun | None:
        """The next ``max_records`` lines (fewer at the end of what is there) as one
        :class:`LineRun`, read in one or two large reads and cut nowhere but around the run,
        if they are plain: none blank, none starting with whitespace, none over the length
        limit, no carriage return. Otherwise None, with all it read given to the line
        splitter, whose line-by-line path then goes on (so do the end of the file and an
        unfinished last line)."""
        assert self._file is not None
        buffered = self._lines.take_buffered()
        if buffered is None:
            return None
        block = self._rest + buffered
        ends = _newlines(block, 0)
        while len(ends) < max_records and len(block) < MAX_POLL_READ_BYTES:
            missing = (max_records - len(ends)) * self._line_bytes
            chunk = self._file.read(min(max(missing, READ_CHUNK_BYTES), MAX_POLL_READ_BYTES))
            if not chunk:
                break
            ends = np.concatenate((ends, _newlines(chunk, len(block))))
            block += chunk
        n = min(len(ends), max_records)
        bounds = np.zeros(n + 1, dtype=np.int64)
        bounds[1:] = ends[:n] + 1
        text = block[:bounds[-1]]
        if not n or not self._plain_lines(text, bounds):
            self._rest = b""
            self._lines.feed(block)
            return None
        self._rest = block[len(text):]
        self._line_bytes = max(1, len(text) // n)
        run = LineRun(0, self._lines.next_position, text, bounds)
        self._lines.next_position += n
        return run

    def _plain_lines(self, text: bytes, bounds: np.ndarray) -> bool:
        """Whether the lines in ``text`` may go out as one run (see :meth:`_read_run`); a
        carriage return sends this file to the line-by-line path for good."""
        if b"\r" in text:
            self._plain = False
            return False
        lengths = np.diff(bounds) - 1
        if lengths.min() == 0 or (self._max_line_bytes is not None
                                  and lengths.max() > self._max_line_bytes):
            return False
        # A blank line (whitespace only) is no record: a line starting with whitespace is
        # left to the line-by-line path, which tells.
        return not np.isin(np.frombuffer(text, dtype=np.uint8)[bounds[:-1]], _SPACES).any()

    def _check_not_truncated(self) -> None:
        assert self._file is not None
        size, offset = os.fstat(self._file.fileno()).st_size, self._file.tell()
        if size < offset and not self._truncated:
            # Line numbers of a rewritten file mean nothing against the checkpoint's: say so
            # once, and go on waiting for the file to grow past where we were.
            log.warning("%s shrank to %d bytes below the read offset %d (truncated or "
                        "rewritten?); waiting for it to grow", self.options.path, size, offset)
        self._truncated = size < offset

    @property
    def exhausted(self) -> bool:
        """True once the whole file is read (never when following)."""
        return self._exhausted

    def close(self) -> None:
        """Close the file. Idempotent."""
        if self._file is not None:
            self._file.close()
            self._file = None


class JsonlSink(Sink):
    """Appends one message value per line to a file; see the module docstring."""

    #: ``write_encoded`` may run on another thread than the other methods, never at the same
    #: time but for ``backlog`` (the daemon writes behind: :mod:`adaptd.write_behind`).
    writes_on_any_thread = True

    def __init__(self, options: JsonlSinkOptions) -> None:
        self.options = options
        path = Path(options.path)
        self._path = path
        # A new file survives a crash only once its directory entry is synced, too.
        self._sync_directory = not path.exists()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Read too: a partial last line left by a crash is looked for, and cut.
            self._file: io.BufferedRandom | None = open(path, "a+b")  # noqa: SIM115
            # A device or pipe (``/dev/null``, ``/dev/stdout``, a FIFO) has no last line to
            # cut and no blocks to sync: fsync on it fails (EINVAL) although every write landed.
            self._regular = stat.S_ISREG(os.fstat(self._file.fileno()).st_mode)
            cut = cut_partial_line(self._file) if self._regular else 0
        except OSError as exc:
            raise ConfigError(f"jsonl sink {options.path!r}: cannot open for append: {exc}") from None
        self._unsynced = 0  # bytes written since the last sync began
        self._writeback: threading.Thread | None = None
        self._writeback_error: OSError | None = None
        if cut:
            # A crash (a full disk) left half a line: appending to it would glue the next
            # record onto it and leave a line no reader can parse.
            log.warning("jsonl sink %s: cut a partial last line of %d bytes (left by an "
                        "interrupted write)", options.path, cut)

    def write(self, messages: Sequence[SinkMessage]) -> None:
        """Buffer the messages' values, one per line. Does not block on the disk."""
        if self._file is None:
            raise SinkError(f"jsonl sink {self.options.path!r}: write() after close()")
        for message in messages:
            if b"\n" in message.value:
                raise SinkError(
                    f"jsonl sink {self.options.path!r}: a message value contains a newline; "
                    "expected one record per line"
                )
        self._write(b"".join(m.value + b"\n" for m in messages))

    def write_encoded(self, batch: EncodedBatch) -> None:
        """Buffer a pre-encoded batch as it is: its lines are already one record each."""
        if self._file is None:
            raise SinkError(f"jsonl sink {self.options.path!r}: write() after close()")
        self._write(batch.lines)

    def _write(self, data: bytes) -> None:
        assert self._file is not None
        try:
            self._file.write(data)
            self._unsynced += len(data)
            if self._unsynced >= WRITEBACK_BYTES and self._regular and (
                    self._writeback is None or not self._writeback.is_alive()):
                self._file.flush()  # the bytes to the kernel, then to disk in the background
                self._unsynced = 0
                self._writeback = threading.Thread(
                    target=self._sync_written, args=(self._file.fileno(),), daemon=True,
                    name="jsonl-sink-writeback")
                self._writeback.start()
        except OSError as exc:
            raise SinkError(f"jsonl sink {self.options.path!r}: write failed: {exc}") from exc

    def _sync_written(self, fd: int) -> None:
        """The background sync (see the module docstring); its error waits for ``flush``."""
        try:
            os.fdatasync(fd)
        except OSError as exc:
            self._writeback_error = exc

    def _join_writeback(self) -> None:
        """Wait for the background sync; raise the OSError it met, if any."""
        if self._writeback is not None:
            self._writeback.join()
            self._writeback = None
        error, self._writeback_error = self._writeback_error, None
        if error is not None:
            raise error

    def flush(self) -> None:
        """Write out the buffer and ``fsync`` the file (and, the first time, the directory of a
        file this sink created); blocks until the disk has it."""
        if self._file is None:
            return  # close() flushed everything
        try:
            self._file.flush()
            if not self._regular:
                return
            # The kernel may report a failed write-back once only: the one the background
            # sync met is raised here, else this fsync could succeed past lost lines.
            self._join_writeback()
            self._unsynced = 0
            os.fsync(self._file.fileno())
            if self._sync_directory:
                directory = os.open(self._path.parent, os.O_RDONLY)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)
                self._sync_directory = False
        except OSError as exc:
            raise SinkError(f"jsonl sink {self.options.path!r}: flush failed: {exc}") from exc

    def close(self) -> None:
        """Flush and close the file. Idempotent."""
        if self._file is None:
            return
        try:
            self.flush()
        finally:
            # After a failed flush, close() tries the same write again and raises the same
            # error; the file is closed all the same and flush() has reported it.
            with contextlib.suppress(OSError):
                self._join_writeback()  # its file descriptor stays open until it is done
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


def cut_partial_line(file: io.BufferedRandom) -> int:
    """Truncate ``file`` (opened for append) after its last newline; returns how many bytes of
    an unfinished last line were cut (0 when the file ends with a newline or is empty). Reads
    backwards from the end, a chunk at a time."""
    fd = file.fileno()
    size = os.fstat(fd).st_size
    end = size
    while end > 0:
        start = max(0, end - READ_CHUNK_BYTES)
        chunk = os.pread(fd, end - start, start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            end = start + newline + 1
            break
        end = start
    if end == size:
        return 0
    os.ftruncate(fd, end)
    os.fsync(fd)
    return size - end


class JsonlConnector(Connector):
    """``jsonl:PATH[?follow=true]``: a file of one JSON record per line."""

    scheme = "jsonl"
    description = "file of one JSON record per line (?follow=true keeps tailing it)"

    @classmethod
    def source(cls, uri: str) -> JsonlSource:
        parsed = parse_uri(uri)
        return JsonlSource(parse_options(JsonlSourceOptions, parsed, path=parsed.target))

    @classmethod
    def sink(cls, uri: str) -> JsonlSink:
        parsed = parse_uri(uri)
        return JsonlSink(parse_options(JsonlSinkOptions, parsed, path=parsed.target))
