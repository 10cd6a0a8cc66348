"""Meta-training adaptd on a stream's held-out data before the stream is evaluated.

The meta-state is learned by :func:`adaptd.meta.train.meta_train`, the function behind
``adaptd meta-train``: segments follow the records' true ``task`` when they carry one and the
drift detector otherwise (the real stream), and the meta-state is saved with
:func:`adaptd.meta.state.save` for ``--meta FILE``. Each held-out stream's keys are prefixed,
so that task states never carry over from one stream to the next while the meta-state does.
"""

from __future__ import annotations

import logging
from pathlib import Path

from adaptd.bench.learners import BATCH_SIZE, adaptd_flags
from adaptd.bench.streams import Stream, StreamData

log = logging.getLogger(__name__)


def meta_train_stream(stream: Stream, data: list[StreamData], workdir: Path) -> Path:
    """Meta-train on ``data`` (held-out streams) and write the meta-state; blocks, returns its path.

    Raises ``RuntimeError`` when no segment was long enough to update the meta-state.
    """
    from dataclasses import replace

    from adaptd.config import load_settings
    from adaptd.meta.state import save
    from adaptd.meta.train import meta_train

    settings = load_settings(environ={}, flags=adaptd_flags("adaptd", stream, None))
    records = [replace(r, key=f"meta{i}/{r.key}") for i, d in enumerate(data) for r in d.records]
    # meta_train segments by the records' true tasks when every record has one, else by the
    # detector: the same rule as `adaptd meta-train`.
    family = "linear" if settings.model == "auto" else settings.model  # as `adaptd meta-train`
    meta = meta_train(records, model=family, task=settings.task, config=settings.learner,
                      drift=settings.drift, meta=settings.meta_learning, batch_size=BATCH_SIZE)
    if meta.tasks == 0:
        raise RuntimeError(
            f"meta-training on {stream.name} closed no segment long enough to learn from"
        )
    path = workdir / f"{stream.name.replace(' ', '_').replace('=', '')}.meta.pt"
    save(meta, path)
    log.info("meta-trained %s on %d tasks -> %s", stream.name, meta.tasks, path)
    return path
