"""What a state dir belongs to: its source, its model family and its feature layout.

Positions and model state only mean something for the stream and the model that produced them:
a second run on another file with the same (default) state dir used to resume at the first
file's line 2000 with the first file's model. So the first start writes
``STATE_DIR/identity.json`` (atomically, a file of its own, whatever the checkpoint format),
and a run with another identity refuses to start, naming both. ``--fresh`` moves the old state
dir aside (renamed to ``DIR.replaced-<UTC time>``, nothing is deleted) and starts over.

The source identity is what names the stream, not where it is served from:

>>> source_identity("jsonl:/data/../data/a.jsonl?follow=true")
{'scheme': 'jsonl', 'path': '/data/a.jsonl'}
>>> source_identity("kafka://broker-1:9092,broker-2:9092/in?group=g&client=librdkafka")
{'scheme': 'kafka', 'topic': 'in', 'group': 'g'}
>>> describe({"source": {"scheme": "kafka", "topic": "in", "group": None},
...           "model": {"model": "linear", "task": "regression"}, "layout": {"n_features": 3}})
'source kafka group=None topic=in, model linear/regression, 3 features'
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from adaptd.connectors.base import parse_uri

log = logging.getLogger(__name__)

FILE_NAME = "identity.json"
#: Query options that change which records a stream holds (the rest say how to read it).
_STREAM_OPTIONS = {"kafka": ("group",), "synthetic": None}


def source_identity(uri: str) -> dict[str, Any]:
    """Scheme plus what names the stream: a file's resolved path, a topic and consumer group
    (not the brokers), a synthetic stream's name and parameters (not its length)."""
    parsed = parse_uri(uri)
    scheme, target, query = parsed.scheme, parsed.target, parsed.query
    if scheme == "jsonl":
        return {"scheme": scheme, "path": str(Path(target).expanduser().resolve())}
    if scheme in ("kafka", "mqtt"):
        topic = target.removeprefix("//").partition("/")[2]
        ident: dict[str, Any] = {"scheme": scheme, "topic": topic}
        if scheme == "kafka":
            ident["group"] = query.get("group")
        return ident
    if scheme == "synthetic":
        params = {k: v for k, v in sorted(query.items()) if k != "n"}
        return {"scheme": scheme, "stream": target, "params": params}
    return {"scheme": scheme, "target": target}


def describe(identity: dict[str, Any]) -> str:
    """One line for messages: source, model family, feature count."""
    source = dict(identity.get("source") or {})
    scheme = source.pop("scheme", "?")
    where = " ".join(f"{k}={v}" for k, v in sorted(source.items()))
    model = identity.get("model") or {}
    layout = identity.get("layout") or {}
    n = layout.get("n_features")
    features = "features from the first record" if n is None else \
        f"{n} feature{'' if n == 1 else 's'}"
    return (f"source {scheme} {where}, model {model.get('model')}/{model.get('task')}, "
            f"{features}")


def read(state_dir: Path) -> dict[str, Any] | None:
    """The identity stored in ``state_dir``; None if there is none. Raises OSError/ValueError
    on a file that cannot be read or parsed."""
    path = state_dir / FILE_NAME
    if not path.exists():
        return None
    value = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object")  # noqa: TRY004 (bad content)
    return value


def write(state_dir: Path, identity: dict[str, Any]) -> None:
    """Write ``identity`` atomically: a temporary file, fsync, rename, fsync the directory."""
    path = state_dir / FILE_NAME
    # A name of its own per writer: two daemons sharing a state dir (the replica tests) would
    # otherwise rename each other's half-written file away.
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(identity, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    directory = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The parts (source, model, layout) in which two identities disagree. A part one side
    does not know yet (a layout not fixed before the first record) agrees with anything."""
    differ = []
    if stored.get("source") != current.get("source"):
        differ.append("source")
    mine, theirs = current.get("model") or {}, stored.get("model") or {}
    if any(k in theirs and k in mine and theirs[k] != mine[k] for k in mine):
        differ.append("model")
    n_old = (stored.get("layout") or {}).get("n_features")
    n_new = (current.get("layout") or {}).get("n_features")
    if n_old is not None and n_new is not None and n_old != n_new:
        differ.append("layout")
    return differ


def move_aside(state_dir: Path) -> Path:
    """Rename ``state_dir`` to a sibling ``NAME.replaced-<UTC time>``; returns the new path."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = state_dir.with_name(f"{state_dir.name}.replaced-{stamp}")
    os.rename(state_dir, target)
    return target


def record_layout(state_dir: Path, layout: dict[str, Any]) -> bool:
    """Add the feature layout, once the first record fixed it, to an identity that lacked it.
    Returns True once the stored identity has a layout (nothing more to do). Called by the
    runner after a checkpoint; a state dir without an identity file is left alone."""
    if layout.get("n_features") is None:
        return False
    try:
        stored = read(state_dir)
        if stored is None:
            return True
        if (stored.get("layout") or {}).get("n_features") is None:
            stored["layout"] = {k: (list(v) if isinstance(v, tuple) else v)
                                for k, v in layout.items()}
            write(state_dir, stored)
    except (OSError, ValueError) as exc:  # the next checkpoint tries again
        log.warning("state dir %s: cannot record the feature layout in %s: %s",
                    state_dir, FILE_NAME, exc)
        return False
    return True
