"""Checkpoints: learner state and next source position, per partition, written atomically.

Layout in ``state_dir``::

    gen-00001763900000123456789-WRITER/    one checkpoint ("generation") by one writer
        shared.pkl                         state every key shares (meta-state, totals, decoder)
        p0.pkl  p3.pkl                     per partition: next position, its keys, their state

A generation is written into a ``tmp-…`` directory, every file fsynced, then renamed into place
and the state directory fsynced, so a crash at any moment leaves whole generations only. The
state of a partition's keys and that partition's next position are in one file, so on restart
every record before the position has affected the state exactly once and none after it has.

Several daemons of one consumer group may share a state directory: each writes generations of
the partitions it owns, and whoever is assigned a partition loads it from the newest generation
that holds it. Generation numbers are nanosecond timestamps made strictly increasing per writer;
the writer id (host name, pid and a random token: every container's daemon may be pid 1 on a
host of its own) keeps two writers' names apart.

A file that cannot be read (truncated, corrupt, another format version) is reported with its
path and the reason, and the next older generation holding that partition is used instead.
After each save, generations are pruned: one is deleted only when every partition it holds has
``keep`` newer generations.
"""

from __future__ import annotations

import logging
import os
import pickle
import secrets
import shutil
import socket
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
_GEN_PREFIX = "gen-"
_TMP_PREFIX = "tmp-"
_SHARED = "shared.pkl"
#: A temporary generation directory this old was left by a writer that died mid-write.
STALE_TMP_S = 3600.0




@dataclass
class PartitionState:
    """One partition in a checkpoint: where to resume, which keys live there, their state."""

    position: int
    keys: list[str] = field(default_factory=list)
    learner: dict[str, Any] = field(default_factory=dict)


@dataclass
class Restored:
    """What :meth:`CheckpointStore.load` found: shared state (from the newest generation read)
    and the partitions that had a readable checkpoint."""

    shared: dict[str, Any] | None
    partitions: dict[int, PartitionState]
    generation: int | None = None


class CheckpointError(Exception):
    """A checkpoint file could not be used; the message names the file and why."""


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (a rename into it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_pickle(path: Path, payload: Any) -> None:
    """Pickle ``payload`` to ``path`` and fsync it (the caller renames it into place)."""
    with open(path, "wb") as fh:
        pickle.dump(payload, fh, protocol=pickle.HIGHEST_PROTOCOL)
        fh.flush()
        os.fsync(fh.fileno())


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            payload = pickle.load(fh)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError, UnicodeDecodeError) as exc:
        # What unpickling a truncated or foreign file raises depends on where it breaks.
        raise CheckpointError(f"{path} is unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} has format {found!r}, expected {FORMAT_VERSION}")
    return payload


class CheckpointStore:
    """Reads and writes generations in ``state_dir``. Blocking file I/O, one thread.

    Args:
        state_dir: created on first save.
        keep: see :class:`CheckpointConfig`.
    """

    def __init__(self, state_dir: str | os.PathLike[str], keep: int = 3) -> None:
        self.state_dir = Path(state_dir)
        self.keep = keep
        self._last_generation = 0
        self.writer = f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}"

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
        """The newest readable checkpoint of each of ``partitions`` (all if None).

        Unreadable files are logged at ERROR with their path and skipped for an older
        generation. ``shared`` comes from the newest generation a partition was loaded from
        (or the newest readable one when no partition was asked for).
        """
        wanted = None if partitions is None else set(partitions)
        found: dict[int, PartitionState] = {}
        shared: dict[str, Any] | None = None
        shared_gen: int | None = None
        for gen, gen_dir in self.generations():
            held = self._partitions_in(gen_dir)
            todo = [p for p in sorted(held) if p not in found and (wanted is None or p in wanted)]
            if not todo and (found or wanted):
                continue
            try:
                gen_shared = _read(gen_dir / _SHARED)
            except CheckpointError as exc:
                log.error("checkpoint generation %s skipped: %s; trying an older one", gen, exc)
                continue
            if shared is None:
                shared, shared_gen = gen_shared["state"], gen
            for p in todo:
                try:
                    payload = _read(gen_dir / f"p{p}.pkl")
                except CheckpointError as exc:
                    log.error("checkpoint of partition %d skipped: %s; trying an older one",
                              p, exc)
                    continue
                found[p] = PartitionState(
                    position=int(payload["position"]),
                    keys=list(payload["keys"]),
                    learner=payload["learner"],
                )
            if wanted is not None and wanted <= found.keys():
                break
        return Restored(shared=shared, partitions=found, generation=shared_gen)

    # -- writing -------------------------------------------------------------------------

    def save(self, shared: Mapping[str, Any], partitions: Mapping[int, PartitionState]) -> Path:
        """Write one generation holding ``shared`` and ``partitions``; returns its directory.

        Raises OSError when the disk refuses; the previous generations are then untouched.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        generation = max(time.time_ns(), self._last_generation + 1)
        self._last_generation = generation
        name = f"{generation:020d}-{self.writer}"
        tmp = self.state_dir / f"{_TMP_PREFIX}{name}"
        final = self.state_dir / f"{_GEN_PREFIX}{name}"
        tmp.mkdir()
        try:
            write_pickle(tmp / _SHARED, {"format": FORMAT_VERSION, "state": dict(shared)})
            for p, state in partitions.items():
                write_pickle(tmp / f"p{p}.pkl", {
                    "format": FORMAT_VERSION,
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
