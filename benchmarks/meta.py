"""Meta-training adaptd on a stream's held-out data, with the engine's own meta-train."""

from __future__ import annotations

from pathlib import Path

from benchmarks.streams import Stream, StreamData


def meta_train_stream(stream: Stream, data: list[StreamData], workdir: Path) -> Path | None:
    """Write the meta-state learned from ``data`` into ``workdir``; its path (None: no engine)."""
    return None
