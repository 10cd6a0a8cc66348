"""Checkpoints: the daemon's whole state and its next source positions, written atomically.

A checkpoint is written to a temporary file, fsynced and renamed into place, so a crash at
any moment leaves either the old or the new checkpoint, never a torn one. Because positions are
stored with the state they produced, a restart resumes exactly after the last record whose
effect the state holds.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
FILE_NAME = "checkpoint.pkl"


class CheckpointStore:
    """Reads and writes the checkpoint in ``state_dir``. Blocking file I/O."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = Path(state_dir)

    @property
    def path(self) -> Path:
        return self.state_dir / FILE_NAME

    def save(self, payload: dict[str, Any]) -> Path:
        """Write ``payload`` atomically; returns the checkpoint's path."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump({"format": FORMAT_VERSION, **payload}, fh, protocol=pickle.HIGHEST_PROTOCOL)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        # The rename is durable only once the directory entry is.
        dir_fd = os.open(self.state_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return self.path

    def load(self) -> dict[str, Any] | None:
        """The last checkpoint, or None when there is none."""
        try:
            with open(self.path, "rb") as fh:
                payload = pickle.load(fh)
        except FileNotFoundError:
            return None
        if payload.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"checkpoint {self.path} has format {payload.get('format')}, expected {FORMAT_VERSION}"
            )
        return payload
