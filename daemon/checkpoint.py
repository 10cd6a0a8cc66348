"""Checkpoints: shared state once, and next source position plus key states per partition,
written atomically as one generation.

Layout in ``state_dir``::

    gen-00001763900000123456789-WRITER/    one checkpoint ("generation") by one writer
        shared.pkl                         state every key shares (meta-state, totals, decoder)
        p0.pkl  p3.pkl                     per partition: next position, its keys, their state

Every file is a small header (magic, format version, payload length, BLAKE2b digest) followed
by the pickled payload, so a truncated, bit-flipped or foreign file is told from a good one
before anything is unpickled. :func:`write_file` / :func:`read_file` are the only way files in
the state directory are written and read (evicted key states use them too).

A generation is written into a ``tmp-…`` directory, every file fsynced, then renamed into place
and the state directory fsynced, so a crash at any moment leaves whole generations only. The
state of a partition's keys and that partition's next position are in one file, and the shared
state next to them counts exactly the records before those positions.

Loading keeps that: a generation is used whole or not at all. A partition is loaded together
with the shared file of its own generation; when any file of a generation that is needed is
unreadable, that generation is skipped for the next older one, which then supplies the shared
state and every partition it holds. So a restart after a corrupt newest file equals a restart
from the previous generation, never a mix of the two. Each unreadable file is logged once, at
ERROR, with its path and the reason.

Several daemons of one consumer group may share a state directory: each writes generations of
the partitions it owns, and whoever is assigned a partition loads it from the newest usable
generation that holds it. Generation numbers are nanosecond timestamps made strictly
increasing per writer; the writer id (host name, pid and a random token: every container's
daemon may be pid 1 on a host of its own) keeps two writers' names apart. After each save,
generations are pruned: one is deleted only when every partition it holds has ``keep`` newer
generations.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import secrets
import shutil
import socket
import struct
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: 3: a checksummed header on every file; partition files hold only their keys' states.
FORMAT_VERSION = 3
_MAGIC = b"ADAPTDCK"
#: magic, format version, payload length in bytes, BLAKE2b-128 digest of the payload.
_HEADER = struct.Struct("<8sIQ16s")
_GEN_PREFIX = "gen-"
_TMP_PREFIX = "tmp-"
_SHARED = "shared.pkl"
#: A temporary generation directory this old was left by a writer that died mid-write.
STALE_TMP_S = 3600.0


@dataclass
class PartitionState:
    """One partition in a checkpoint: where to resume, which keys live there, their state.

    ``learner`` holds only what belongs to the partition (its keys' task states and pending
    labels); the state all keys share is in the generation's shared file. ``generation`` is
    the one it was loaded from (None when it is being saved).
    """

    position: int
    keys: list[str] = field(default_factory=list)
    learner: dict[str, Any] = field(default_factory=dict)
    generation: int | None = None


@dataclass
class Restored:
    """What :meth:`CheckpointStore.load` found: the shared state of the newest generation a
    partition was loaded from (or of the newest readable one when none was), and the
    partitions that had a usable checkpoint."""

    shared: dict[str, Any] | None
    partitions: dict[int, PartitionState]
    generation: int | None = None


class CheckpointError(Exception):
    """A checkpoint file could not be used; the message names the file and why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} {reason}")
        self.path = path


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (a rename into it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def write_file(path: Path, payload: Any) -> None:
    """Pickle ``payload`` behind a checksummed header to ``path`` and fsync it (the caller
    renames it into place). Blocks on the disk."""
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    with open(path, "wb") as fh:
        fh.write(_HEADER.pack(_MAGIC, FORMAT_VERSION, len(data), _digest(data)))
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def read_file(path: Path) -> Any:
    """The payload :func:`write_file` wrote to ``path``, after checking its header and
    checksum. Raises :class:`CheckpointError` naming the path and what was wrong."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(path, "is missing") from None
    except OSError as exc:
        raise CheckpointError(path, f"is unreadable ({exc})") from None
    if len(blob) < _HEADER.size:
        raise CheckpointError(path, f"is truncated: {len(blob)} bytes, shorter than a header")
    magic, version, length, digest = _HEADER.unpack_from(blob)
    if magic != _MAGIC:
        raise CheckpointError(path, f"is not an adaptd checkpoint file (header {magic!r})")
    if version != FORMAT_VERSION:
        raise CheckpointError(path, f"has format {version}, expected {FORMAT_VERSION}")
    data = blob[_HEADER.size:]
    if len(data) != length:
        raise CheckpointError(path, f"is truncated: {len(data)} payload bytes, expected {length}")
    if _digest(data) != digest:
        raise CheckpointError(path, "is corrupt: checksum mismatch")
    try:
        return pickle.loads(data)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError, UnicodeDecodeError) as exc:
        # A good checksum over a payload this code cannot rebuild (classes moved or renamed).
        raise CheckpointError(path, f"is unreadable ({type(exc).__name__}: {exc})") from None


class CheckpointStore:
    """Reads and writes generations in ``state_dir``. Blocking file I/O, one thread.

    Args:
        state_dir: created on first save.
        keep: see :class:`~adaptd.settings.CheckpointConfig`.
    """

    def __init__(self, state_dir: str | os.PathLike[str], keep: int = 3) -> None:
        self.state_dir = Path(state_dir)
        self.keep = keep
        #: The generation this writer saved last (0 before its first save).
        self.last_generation = 0
        self.writer = f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}"
        # Unreadable files already logged: a file stays bad, one line about it is enough.
        self._reported: set[Path] = set()

    # -- reading -------------------------------------------------------------------------

    def generations(self) -> list[tuple[int, Path]]:
        """Complete generations, newest first."""
        if not self.state_dir.is_dir():
            return []
        found = []
        for entry in self.state_dir.iterdir():
            if entry.name.startswith(_GEN_PREFIX) and entry.is_dir():
                try:
                    found.append((int(entry.name.split("-")[1]), entry))
                except (IndexError, ValueError):
                    log.warning("ignoring %s: not a checkpoint generation name", entry)
        return sorted(found, reverse=True)

    @staticmethod
    def _partitions_in(gen_dir: Path) -> set[int]:
        out = set()
        for f in gen_dir.glob("p*.pkl"):
            try:
                out.add(int(f.stem[1:]))
            except ValueError:
                continue
        return out

    def partitions(self) -> set[int]:
        """Every partition some generation holds."""
        out: set[int] = set()
        for _, gen_dir in self.generations():
            out |= self._partitions_in(gen_dir)
        return out

    def load(self, partitions: Collection[int] | None = None) -> Restored:
        """The newest usable checkpoint of each of ``partitions`` (all if None). Blocks on reads.

        Generations are tried newest first; one holding partitions still wanted is used only
        if its shared file and all those partition files read and check, else it is skipped
        whole (see the module docstring). ``shared`` is that of the newest generation used.
        """
        wanted = None if partitions is None else set(partitions)
        found: dict[int, PartitionState] = {}
        shared: dict[str, Any] | None = None
        shared_gen: int | None = None
        for gen, gen_dir in self.generations():
            todo = sorted(p for p in self._partitions_in(gen_dir) - found.keys()
                          if wanted is None or p in wanted)
            if not todo:
                continue
            whole = self._read_generation(gen, gen_dir, todo)
            if whole is None:
                continue
            gen_shared, states = whole
            found.update(states)
            if shared is None:
                shared, shared_gen = gen_shared, gen
            if wanted is not None and wanted <= found.keys():
                break
        if shared is None:
            shared, shared_gen = self._newest_shared(wanted)
        return Restored(shared=shared, partitions=found, generation=shared_gen)

    def _read_generation(self, gen: int, gen_dir: Path, todo: list[int]
                         ) -> tuple[dict[str, Any], dict[int, PartitionState]] | None:
        """The shared state and partitions ``todo`` of one generation, or None when any of
        those files is unusable (then none of them is used)."""
        try:
            shared = read_file(gen_dir / _SHARED)["state"]
            states = {}
            for p in todo:
                payload = read_file(gen_dir / f"p{p}.pkl")
                states[p] = PartitionState(position=int(payload["position"]),
                                           keys=list(payload["keys"]),
                                           learner=payload["learner"], generation=gen)
        except CheckpointError as exc:
            self._report(gen, exc)
            return None
        return shared, states

    def _newest_shared(self, wanted: set[int] | None
                       ) -> tuple[dict[str, Any] | None, int | None]:
        """The newest readable shared state, for a load that found no partition: taken only
        from a generation holding none of the ``wanted`` ones (all if None), since those it
        holds were unusable and the shared state counts their records."""
        for gen, gen_dir in self.generations():
            held = self._partitions_in(gen_dir)
            if held and (wanted is None or held & wanted):
                continue
            try:
                return read_file(gen_dir / _SHARED)["state"], gen
            except CheckpointError as exc:
                self._report(gen, exc)
        return None, None

    def _report(self, gen: int, exc: CheckpointError) -> None:
        if exc.path in self._reported:
            return
        self._reported.add(exc.path)
        log.error("checkpoint generation %d skipped whole, an older one is used instead: %s",
                  gen, exc)

    # -- writing -------------------------------------------------------------------------

    def save(self, shared: Mapping[str, Any], partitions: Mapping[int, PartitionState]) -> Path:
        """Write one generation holding ``shared`` and ``partitions``; returns its directory.

        Blocks on the disk. Raises OSError when the disk refuses; the previous generations are
        then untouched.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        generation = max(time.time_ns(), self.last_generation + 1)
        name = f"{generation:020d}-{self.writer}"
        tmp = self.state_dir / f"{_TMP_PREFIX}{name}"
        final = self.state_dir / f"{_GEN_PREFIX}{name}"
        tmp.mkdir()
        try:
            write_file(tmp / _SHARED, {"state": dict(shared)})
            for p, state in partitions.items():
                write_file(tmp / f"p{p}.pkl", {
                    "partition": p,
                    "position": state.position,
                    "keys": list(state.keys),
                    "learner": state.learner,
                })
            fsync_dir(tmp)
            os.rename(tmp, final)
            # The rename is durable only once the directory entry is.
            fsync_dir(self.state_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.last_generation = generation
        self.prune()
        return final

    def prune(self) -> list[Path]:
        """Delete generations whose every partition has ``keep`` newer ones; returns them.

        Also removes temporary directories left by writers that died mid-write.
        """
        newer_count: dict[int, int] = {}
        removed = []
        for _, gen_dir in self.generations():
            held = self._partitions_in(gen_dir)
            obsolete = bool(held) and all(newer_count.get(p, 0) >= self.keep for p in held)
            for p in held:
                newer_count[p] = newer_count.get(p, 0) + 1
            if not held and newer_count:
                # A generation without partitions (nothing assigned yet) is obsolete once any
                # newer generation exists.
                obsolete = True
            if obsolete:
                shutil.rmtree(gen_dir, ignore_errors=True)
                removed.append(gen_dir)
        # Half-written generations: this writer's, and anyone's old enough that its writer must
        # have died mid-write. Another live writer's are left alone, even with an equal pid.
        stale_before = time.time() - STALE_TMP_S
        for tmp in self.state_dir.glob(f"{_TMP_PREFIX}*"):
            try:
                stale = tmp.name.endswith(f"-{self.writer}") or tmp.stat().st_mtime < stale_before
            except FileNotFoundError:
                continue
            if stale:
                shutil.rmtree(tmp, ignore_errors=True)
        return removed
