"""Start-up checks shared by the commands that start a daemon (``run``, ``demo``).

What a user can get wrong before the first record (a ``--meta`` file, a connector that cannot
reach its service) is reported as one :class:`StartError` line naming the flag or URI and what
was expected, instead of a traceback at start or a crash in the middle of the run.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from adaptd.errors import AdaptdError, StartError
from adaptd.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

META_EXPECTED = "a meta-state file written by adaptd meta-train --out FILE"


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[:limit - 1] + "…"


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
    expected: dict[str, object] = {"model": settings.model, "task": settings.task}
    if settings.model == "mlp":
        expected["hidden"] = [int(h) for h in settings.learner.hidden]
        expected["activation"] = settings.learner.activation
    if settings.n_features is not None:
        expected["n_features"] = settings.n_features
    try:
        state.check_compatible(expected, f"--meta {path}")
    except ValueError as exc:
        raise StartError(f"{exc}; pass the matching flag (--model, --task, --n-features, "
                         f"--set learner.hidden=…) or a meta-state made for this model") from None
    from_file = state.model.get("n_features")
    if settings.n_features is None and isinstance(from_file, int):
        log.info("n_features=%d from --meta %s: records with another feature count are "
                 "dead-lettered", from_file, path)
        return dataclasses.replace(settings, n_features=from_file)
    return settings


def failed_connector(exc: BaseException, settings: Settings) -> tuple[str, str] | None:
    """``(role, URI)`` of the connector whose construction or ``open`` raised ``exc``, if one did.

    A third-party connector may raise anything when it cannot connect (``ConnectionError``,
    its client library's own errors), so the failure is recognised by where it was raised: in
    the registry's ``open_sink``/``open_source`` (whose ``uri`` argument names it) or in a
    source's ``open`` (the run has one source).
    """
    from adaptd.connectors.base import Source

    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        name, module = frame.f_code.co_name, frame.f_globals.get("__name__")
        if module == "adaptd.connectors.registry" and name in ("open_sink", "open_source"):
            return name.removeprefix("open_"), str(frame.f_locals.get("uri"))
        if name == "open" and isinstance(frame.f_locals.get("self"), Source):
            return "source", str(settings.source)
        tb = tb.tb_next
    return None


def naming_connector_failures(settings: Settings, start: Callable[[], T]) -> T:
    """Call ``start`` (which blocks for the whole run); a connector's failure to connect at
    start becomes one :class:`StartError` line naming its URI."""
    try:
        return start()
    except AdaptdError:
        raise
    except Exception as exc:
        failed = failed_connector(exc, settings)
        if failed is None:
            raise  # not a connector's: a bug in adaptd, whose traceback is wanted
        role, uri = failed
        raise StartError(f"cannot connect to {role} {uri}: {type(exc).__name__}: "
                         f"{_first_line(exc)}; "
                         f"check that its service is up and the URI is right") from exc
