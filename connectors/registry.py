"""Finds connectors by URI scheme: the built-ins and any installed under ``adaptd.connectors``.

Third-party packages add a connector with one entry point::

    [project.entry-points."adaptd.connectors"]
    amqp = "my_package.amqp:AmqpConnector"

The entry point's name is the URI scheme; its object is a
:class:`~adaptd.connectors.base.Connector` subclass.

A built-in scheme is never replaced silently: an entry point named like a built-in (``mqtt``)
is ignored with a warning. To replace a built-in on purpose, name the entry point
``SCHEME.override`` (``mqtt.override = "my_package.mqtt:MqttConnector"``); the replacement is
then used and logged at start.

A connector that cannot be built, or a source that cannot be opened at start, is reported as one
:class:`~adaptd.errors.StartError` naming the URI and the package the scheme's connector comes
from, whatever the connector raised: a third-party connector may raise anything when its
service is down (``ConnectionRefusedError``, its client library's own errors). Errors adaptd
raises on purpose (a bad option, a broker that is away for now) pass through unchanged.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points

from adaptd.connectors.base import (
    REPLAY_KINDS,
    Connector,
    PartitionListener,
    Sink,
    Source,
    parse_uri,
)
from adaptd.errors import AdaptdError, ConfigError, StartError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "adaptd.connectors"
#: Suffix of an entry point's name that replaces the built-in connector of that scheme.
OVERRIDE_SUFFIX = ".override"

#: Built-ins are listed here too so they work from a source checkout that was never installed.
BUILTINS: dict[str, str] = {
    "jsonl": "adaptd.connectors.jsonl:JsonlConnector",
    "stdin": "adaptd.connectors.stdio:StdinConnector",
    "stdout": "adaptd.connectors.stdio:StdoutConnector",
    "synthetic": "adaptd.connectors.synthetic:SyntheticConnector",
    "kafka": "adaptd.connectors.kafka:KafkaConnector",
    "mqtt": "adaptd.connectors.mqtt:MqttConnector",
}


@dataclass(frozen=True, slots=True)
class Entry:
    """Where a scheme's connector comes from: ``target`` is ``module:attr``; ``origin`` is
    ``built-in``, the distribution that installed it, or ``DIST (overrides built-in)``."""

    scheme: str
    target: str
    origin: str


def _load(target: str) -> type[Connector]:
    module_name, _, attr = target.partition(":")
    obj = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(obj, type) and issubclass(obj, Connector)):
        raise TypeError(f"{target} is not an adaptd.connectors.base.Connector subclass")
    cls: type[Connector] = obj
    bad = [kind for kind in cls.replay if kind not in REPLAY_KINDS]
    if bad or not cls.replay:
        raise TypeError(f"{target}.replay must name kinds from {list(REPLAY_KINDS)}, got {cls.replay}")
    return cls


@cache
def entries() -> dict[str, Entry]:
    """Scheme → :class:`Entry` of every known connector (computed once, warnings logged once)."""
    found = {s: Entry(s, t, "built-in") for s, t in BUILTINS.items()}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value)):
        dist = ep.dist.name if ep.dist is not None else "unknown distribution"
        if ep.value == BUILTINS.get(ep.name):
            continue  # adaptd's own entry point for a built-in
        scheme, overrides = ep.name, ep.name.endswith(OVERRIDE_SUFFIX)
        if overrides:
            scheme = ep.name[: -len(OVERRIDE_SUFFIX)]
            if scheme not in BUILTINS:
                log.warning("connector entry point %r of %s overrides no built-in; using it "
                            "as scheme %r", ep.name, dist, scheme)
            else:
                log.warning("connector %r of %s replaces the built-in %r connector "
                            "(entry point %r)", ep.value, dist, scheme, ep.name)
            found[scheme] = Entry(scheme, ep.value, f"{dist} (overrides built-in)")
        elif scheme in BUILTINS:
            log.warning("ignoring connector entry point %r = %r of %s: %r is a built-in scheme; "
                        "name it %r to replace the built-in", ep.name, ep.value, dist, scheme,
                        scheme + OVERRIDE_SUFFIX)
        elif scheme in found and not found[scheme].origin.endswith("(overrides built-in)"):
            log.warning("connector scheme %r is installed twice (%s and %s); using %s",
                        scheme, found[scheme].origin, dist, found[scheme].origin)
        else:
            found[scheme] = Entry(scheme, ep.value, dist)
    return found


def available() -> dict[str, str]:
    """Scheme → ``module:attr`` of every known connector."""
    return {scheme: entry.target for scheme, entry in entries().items()}


def connector(scheme: str) -> type[Connector]:
    """The connector class for a scheme. Raises :class:`ConfigError` if none is installed."""
    targets = available()
    if scheme not in targets:
        raise ConfigError(
            f"no connector for scheme {scheme!r}; installed: {', '.join(sorted(targets))}"
        )
    try:
        return _load(targets[scheme])
    # Any error importing a third-party module (a SyntaxError, its own import-time checks)
    # means the same to the user: that connector cannot be used.
    except Exception as exc:
        raise ConfigError(f"connector {scheme!r} ({targets[scheme]}) failed to load: "
                          f"{type(exc).__name__}: {exc}") from exc


def open_source(uri: str) -> Source:
    """Build a source from its URI (not yet opened). Raises :class:`StartError` naming the URI
    when the connector fails to build it, and makes the source's ``open`` do the same."""
    scheme = parse_uri(uri).scheme
    cls = connector(scheme)
    with starting("source", uri, scheme):
        source = cls.source(uri)
    first_open = source.open

    # The runner opens the source later, where its URI is not known: the failure is named here.
    def open(start_positions: Mapping[int, int],
             listener: PartitionListener | None = None) -> None:
        with starting("source", uri, scheme):
            first_open(start_positions, listener=listener)

    source.open = open  # type: ignore[method-assign]
    return source


def open_sink(uri: str) -> Sink:
    """Build a sink from its URI (sinks that connect do so here or on first use). Raises
    :class:`StartError` naming the URI when the connector fails to build or connect it."""
    scheme = parse_uri(uri).scheme
    cls = connector(scheme)
    with starting("sink", uri, scheme):
        return cls.sink(uri)


@contextmanager
def starting(role: str, uri: str, scheme: str) -> Iterator[None]:
    """Turn what a connector raises inside the block into one :class:`StartError` line naming
    ``role``, ``uri`` and the package of ``scheme``'s connector; adaptd's own errors pass."""
    try:
        yield
    except AdaptdError:
        raise
    except Exception as exc:
        log.debug("%s %s failed to start", role, uri, exc_info=True)  # for --log-level DEBUG
        raise StartError(f"cannot connect to {role} {uri} (connector {scheme!r} of "
                         f"{entries()[scheme].origin}): {type(exc).__name__}: {_first_line(exc)}"
                         f"; check that its service is up and the URI is right") from exc


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[:limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class Row:
    """One line of ``adaptd connectors``."""

    scheme: str
    roles: str
    replay: str
    description: str
    origin: str


def describe() -> list[Row]:
    """A :class:`Row` for each known connector, for ``adaptd connectors``; one that fails to
    load says why in its description."""
    rows = []
    for scheme, entry in sorted(entries().items()):
        try:
            cls = connector(scheme)
        except ConfigError as exc:
            rows.append(Row(scheme, "-", "-", f"({exc})", entry.origin))
            continue
        roles = "/".join(r for r, ok in (("source", cls.can_source()), ("sink", cls.can_sink())) if ok)
        replay = ",".join(cls.replay) if cls.can_source() else "-"
        rows.append(Row(scheme, roles, replay, cls.description, entry.origin))
    return rows
