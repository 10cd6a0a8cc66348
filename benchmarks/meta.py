"""Meta-training adaptd on a stream's held-out data before the stream is evaluated.

The meta-state is learned the way ``adaptd meta-train`` does it: the engine itself runs over
the historical records with meta-learning on, its segments closed at the records' true
``task`` changes when they carry one (the oracle detector) and by the drift detector
otherwise (the real stream), and the meta-state it ends with is saved with
:func:`daemon.meta.state.save` for ``--meta FILE``. Each held-out stream's keys are prefixed,
so that task states never carry over from one stream to the next while the meta-state does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from benchmarks.learners import BATCH_SIZE, adaptd_flags
from benchmarks.streams import Stream, StreamData

log = logging.getLogger(__name__)


def meta_train_stream(stream: Stream, data: list[StreamData], workdir: Path) -> Path:
    """Meta-train on ``data`` (held-out streams) and write the meta-state; blocks, returns its path.

    Raises ``RuntimeError`` when no segment was long enough to update the meta-state.
    """
    from dataclasses import replace

    from daemon.config import load_settings
    from daemon.learner import build_learner
    from daemon.meta.state import save

    flags: dict[str, Any] = adaptd_flags("adaptd", stream, None)
    has_tasks = all((d.tasks >= 0).all() for d in data)
    if has_tasks:
        flags["drift.detector"] = "oracle"
    learner = build_learner(load_settings(environ={}, flags=flags))
    for i, d in enumerate(data):
        records = [replace(r, key=f"meta{i}/{r.key}") for r in d.records]
        for lo in range(0, len(records), BATCH_SIZE):
            learner.process_many(records[lo : lo + BATCH_SIZE])
    meta = getattr(learner, "meta", None)
    if meta is None or meta.tasks == 0:
        raise RuntimeError(
            f"meta-training on {stream.name} closed no segment long enough to learn from"
        )
    path = workdir / f"{stream.name.replace(' ', '_').replace('=', '')}.meta.pt"
    save(meta, path)
    log.info("meta-trained %s on %d tasks → %s", stream.name, meta.tasks, path)
    return path
