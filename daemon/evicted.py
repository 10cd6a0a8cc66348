"""Task states of keys evicted from memory, kept on disk by partition until the key returns.

Live task state is bounded by ``learner.max_keys`` and ``learner.idle_evict_s``; what the learner
lets go is written here (checksummed, as checkpoint files are), one file per key under ``STATE_DIR/evicted/p<PARTITION>/``, and read
back when a record of that key arrives again. The runner evicts only right after a checkpoint,
so an evicted state always equals the state that checkpoint holds for its key: a restart from
that checkpoint, or from a later one that no longer lists the key, finds the same state either
here or there, and every record still affects the model exactly once. A file left behind after
its key came back is never read while the key is live, and the next eviction overwrites it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adaptd.checkpoint import CheckpointError, fsync_dir, read_file, write_file

log = logging.getLogger(__name__)


def _file_name(key: str) -> str:
    # Keys are arbitrary strings: hash them into safe, fixed-length file names.
    return hashlib.sha256(key.encode()).hexdigest()[:40] + ".pkl"


class EvictedKeys:
    """The evicted task states in ``state_dir``. Blocking file I/O, runner thread only.

    Only names are held in memory (an index per owned partition), never the states.
    """

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.root = Path(state_dir) / "evicted"
        self._index: dict[int, set[str]] = {}

    def _dir(self, partition: int) -> Path:
        return self.root / f"p{partition}"

    def open_partition(self, partition: int) -> None:
        """Index the states evicted from ``partition`` (called when it is assigned)."""
        folder = self._dir(partition)
        names = {f.name for f in folder.glob("*.pkl")} if folder.is_dir() else set()
        self._index[partition] = names

    def close_partition(self, partition: int) -> None:
        """Drop the index of a partition this runner no longer owns; the files stay."""
        self._index.pop(partition, None)

    def put(self, partition: int, states: Mapping[str, Any]) -> None:
        """Write the states of keys evicted from ``partition``, each atomically and durably."""
        folder = self._dir(partition)
        folder.mkdir(parents=True, exist_ok=True)
        names = self._index.setdefault(partition, set())
        for key, state in states.items():
            name = _file_name(key)
            tmp = folder / f".{name}.tmp"
            write_file(tmp, {"key": key, "state": state})
            os.replace(tmp, folder / name)
            names.add(name)
        fsync_dir(folder)

    def get(self, partition: int, key: str) -> Any | None:
        """The evicted state of ``key`` if it has one, else None. Cheap for unknown keys."""
        name = _file_name(key)
        if name not in self._index.get(partition, ()):
            return None
        path = self._dir(partition) / name
        try:
            saved = read_file(path)
        except CheckpointError as exc:
            log.error("evicted key state unusable, the key starts afresh: %s", exc)
            return None
        if saved.get("key") != key:  # a hash collision: not this key's state
            return None
        return saved["state"]
