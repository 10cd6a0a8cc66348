"""Task states of keys evicted from memory, kept on disk by partition until the key returns.

Live task state is bounded by ``learner.max_keys`` and ``learner.idle_evict_s``; what the learner
lets go is written here, under ``STATE_DIR/evicted/p<PARTITION>/``, and read back when a record
of that key arrives again. Keys are evicted only right after a checkpoint, so an evicted state
equals the state that checkpoint holds for its key; each file is named by its key's hash and
that checkpoint's generation (``<HASH>.<GENERATION>.pkl``) and checksummed like checkpoint files.

A restart resumes a partition from some generation G (the newest usable one, see
:mod:`adaptd.checkpoint`). For a key that G does not list, the right state is the one it was
last evicted with at or before G: so when a partition is assigned, versions newer than G (left
by a run whose later checkpoints are not used) are deleted, and the newest remaining one is
what a returning key gets. Every record then still affects the model exactly once. The newest
``keep`` versions of each key are kept, one for each generation a restart may fall back to.
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


def _key_hash(key: str) -> str:
    # Keys are arbitrary strings: hash them into safe, fixed-length file names.
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def _file_name(key_hash: str, generation: int) -> str:
    return f"{key_hash}.{generation:020d}.pkl"


class EvictedKeys:
    """The evicted task states in ``state_dir``. Blocking file I/O, runner thread only.

    Only names are held in memory (per owned partition: key hash → generations on disk,
    oldest first), never the states.

    Args:
        state_dir: the daemon's state directory.
        keep: versions kept per key; the checkpoint's ``keep``.
    """

    def __init__(self, state_dir: str | os.PathLike[str], keep: int = 3) -> None:
        self.root = Path(state_dir) / "evicted"
        self.keep = keep
        self._index: dict[int, dict[str, list[int]]] = {}

    def _dir(self, partition: int) -> Path:
        return self.root / f"p{partition}"

    def open_partition(self, partition: int, generation: int | None) -> None:
        """Index the states evicted from ``partition``, whose state was just loaded from
        ``generation`` (None: from no checkpoint); versions newer than it are deleted. Called
        when the partition is assigned."""
        folder = self._dir(partition)
        index: dict[str, list[int]] = {}
        dropped = 0
        for f in sorted(folder.glob("*.pkl")) if folder.is_dir() else ():
            key_hash, _, version = f.stem.partition(".")
            if not version.isdigit() or generation is None or int(version) > generation:
                f.unlink(missing_ok=True)  # another timeline's, or an older format's
                dropped += 1
                continue
            index.setdefault(key_hash, []).append(int(version))
        if dropped:
            log.warning("deleted %d evicted key states of partition %d newer than the "
                        "checkpoint it resumes from (generation %s)", dropped, partition,
                        generation)
        self._index[partition] = index

    def close_partition(self, partition: int) -> None:
        """Drop the index of a partition this runner no longer owns; the files stay."""
        self._index.pop(partition, None)

    def put(self, partition: int, states: Mapping[str, Any], generation: int) -> None:
        """Write the states of keys evicted from ``partition`` right after checkpoint
        ``generation``, each atomically and durably; older versions beyond ``keep`` go."""
        folder = self._dir(partition)
        folder.mkdir(parents=True, exist_ok=True)
        index = self._index.setdefault(partition, {})
        for key, state in states.items():
            key_hash = _key_hash(key)
            name = _file_name(key_hash, generation)
            tmp = folder / f".{name}.tmp"
            write_file(tmp, {"key": key, "state": state})
            os.replace(tmp, folder / name)
            versions = index.setdefault(key_hash, [])
            if generation not in versions:
                versions.append(generation)
            for old in versions[:-self.keep]:
                (folder / _file_name(key_hash, old)).unlink(missing_ok=True)
            del versions[:-self.keep]
        fsync_dir(folder)

    def get(self, partition: int, key: str) -> Any | None:
        """The newest evicted state of ``key`` if it has one, else None. Cheap for unknown
        keys (no disk access)."""
        key_hash = _key_hash(key)
        versions = self._index.get(partition, {}).get(key_hash)
        if not versions:
            return None
        path = self._dir(partition) / _file_name(key_hash, versions[-1])
        try:
            saved = read_file(path)
        except CheckpointError as exc:
            log.error("evicted key state unusable, the key starts afresh: %s", exc)
            return None
        if saved.get("key") != key:  # a hash collision: not this key's state
            return None
        return saved["state"]
