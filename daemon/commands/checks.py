"""Start-up checks shared by the commands (``run``, ``demo``, ``meta-train``, ``bench``).

What a user can get wrong before the first record (a ``--meta`` file, a state dir of another
model, an output path) is reported as one :class:`StartError` line naming the flag, file or URI
and what was expected, instead of a traceback at start or a crash in the middle of the run. (A
connector that cannot reach its service is named by :mod:`adaptd.connectors.registry`.)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adaptd.errors import ConfigError, StartError
from adaptd.settings import Settings

log = logging.getLogger(__name__)

META_EXPECTED = "a meta-state file written by adaptd meta-train --out FILE"


def os_reason(exc: OSError) -> str:
    """``Not a directory: '/dev/null/x'``: the system's reason and the path it is about."""
    reason = exc.strerror or str(exc)
    return f"{reason}: {exc.filename!r}" if exc.filename else reason


def expected_model(settings: Settings) -> dict[str, Any]:
    """The parts of the learner's model descriptor the settings fix before the first record."""
    expected: dict[str, Any] = {"model": settings.model, "task": settings.task}
    if settings.model == "mlp":
        expected["hidden"] = [int(h) for h in settings.learner.hidden]
        expected["activation"] = settings.learner.activation
    if settings.n_features is not None:
        expected["n_features"] = settings.n_features
    return expected


def _mismatch(have: Mapping[str, Any], want: Mapping[str, Any]) -> str | None:
    """``"model='linear', this run has 'mlp'"`` for the first key both give differently."""
    for key, value in want.items():
        theirs = have.get(key)
        if key in have and theirs is not None and _norm(theirs) != _norm(value):
            return f"{key}={theirs!r}, this run has {value!r}"
    return None


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def check_state_dir(settings: Settings, fresh: bool = False) -> None:
    """Make sure the state dir can hold this run's state and belongs to this run, before
    anything is loaded from it. Raises :class:`StartError` (one line, exit 2).

    In order: with ``fresh``, move an existing state dir aside (:func:`identity.move_aside`);
    probe that files can be created, written and synced there; then compare its identity
    (source, model family, feature layout; see :mod:`adaptd.identity`) with this run's, and
    write it at the first start.
    """
    from adaptd import identity

    state_dir = Path(settings.state_dir)
    if fresh and state_dir.exists():
        try:
            moved = identity.move_aside(state_dir)
        except OSError as exc:
            raise StartError(f"--fresh: cannot move --state-dir {state_dir} aside: "
                             f"{os_reason(exc)}") from None
        log.warning("--fresh: the previous state dir %s was moved to %s", state_dir, moved)
    probe_state_dir(state_dir)
    if settings.source is None:
        raise ConfigError("source is required: pass --source URI or set ADAPTD_SOURCE")
    current = {"source": identity.source_identity(settings.source),
               "model": expected_model(settings),
               "layout": {"n_features": settings.n_features}}
    try:
        stored = identity.read(state_dir)
    except (OSError, ValueError) as exc:
        raise StartError(f"--state-dir {state_dir}: unreadable {identity.FILE_NAME} ({exc}); "
                         f"pass --fresh to move this state aside and start over") from None
    if stored is None:
        _check_checkpoint_model(state_dir, settings)
        try:
            identity.write(state_dir, current)
        except OSError as exc:
            raise StartError(f"--state-dir {state_dir}: cannot write {identity.FILE_NAME}: "
                             f"{os_reason(exc)}") from None
        return
    differ = identity.differences(stored, current)
    if differ:
        raise StartError(
            f"--state-dir {state_dir} holds the state of {identity.describe(stored)}; this run "
            f"is {identity.describe(current)} ({' and '.join(differ)} differ): pass --fresh to "
            f"move the old state aside and start over, or another --state-dir")


def probe_state_dir(state_dir: Path) -> None:
    """Create the state dir if needed, then create, write, fsync and remove a small file in
    it: a read-only or full file system, or a path under a regular file, fails here, at start,
    instead of in every checkpoint of the run. Raises :class:`StartError` with the OS reason."""
    probe = state_dir / f".write-probe-{os.getpid()}"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            # A page's worth: a full file system refuses it even where an empty file fits.
            os.write(fd, b"adaptd state dir probe\n" * 200)
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise StartError(f"--state-dir {state_dir}: cannot write there: {os_reason(exc)}; "
                         f"expected a writable directory for checkpoints") from None


def _check_checkpoint_model(state_dir: Path, settings: Settings) -> None:
    """A state dir written before identity files existed: refuse a checkpoint of another
    model (its source cannot be known; it is adopted)."""
    from adaptd.checkpoint import CheckpointStore

    shared = CheckpointStore(state_dir).load(()).shared or {}
    saved = (shared.get("learner") or {}).get("model") or {}
    mismatch = _mismatch(saved, expected_model(settings))
    if mismatch:
        raise StartError(f"--state-dir {state_dir}: holds a checkpoint for {mismatch}; pass the "
                         f"same model flags as the run that wrote it, --fresh, or another "
                         f"--state-dir")


def check_meta_file(settings: Settings) -> Settings:
    """Load ``settings.meta`` once at start and check it fits the configured model.

    Returns the settings with ``n_features`` taken from the file when it was not given, so that
    records with another feature count are dead-lettered (reason ``feature_count``) instead of
    reaching a model of the wrong shape. Raises :class:`StartError` naming the file.
    """
    if settings.meta is None:
        return settings
    from adaptd.meta.state import load

    path = settings.meta
    if not Path(path).is_file():
        what = "is a directory" if Path(path).is_dir() else "does not exist"
        raise StartError(f"--meta {path}: file {what}; expected {META_EXPECTED}")
    try:
        # torch warns about the pickle protocol of files that are not its own: noise here,
        # where such a file is refused with one line anyway.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = load(path)
    # torch.load and the format check raise many types on arbitrary bytes (KeyError on a text
    # file, UnpicklingError, RuntimeError, ValueError): any of them means "not such a file".
    except Exception as exc:  # noqa: BLE001 (see above)
        # The loader's own reason (a pickle opcode, torch's weights_only advice) would not
        # help the user; it stays in the debug log.
        log.debug("--meta %s: %s", path, exc)
        raise StartError(f"--meta {path}: not {META_EXPECTED}") from None
    expected = expected_model(settings)
    if settings.model == "auto":  # a file for any one family: that candidate starts from it
        expected.pop("model")
    mismatch = _mismatch(state.model, expected)
    if mismatch:
        raise StartError(f"--meta {path}: meta-state is for {mismatch}; pass the matching flag "
                         f"(--model, --task, --n-features, --set learner.hidden=…) or a "
                         f"meta-state made for this model")
    from_file = state.model.get("n_features")
    if settings.n_features is None and isinstance(from_file, int):
        log.info("n_features=%d from --meta %s: records with another feature count are "
                 "dead-lettered", from_file, path)
        return dataclasses.replace(settings, n_features=from_file)
    return settings
