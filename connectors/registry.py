"""Finds connectors by URI scheme: the built-ins and any installed under ``adaptd.connectors``.

Third-party packages add a connector with one entry point::

    [project.entry-points."adaptd.connectors"]
    mqtt = "my_package.mqtt:MqttConnector"

The entry point's name is the URI scheme; its object is a
:class:`~adaptd.connectors.base.Connector` subclass.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points

from adaptd.connectors.base import Connector, Sink, Source, parse_uri
from adaptd.errors import ConfigError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "adaptd.connectors"

#: Built-ins are listed here too so they work from a source checkout that was never installed.
BUILTINS: dict[str, str] = {
    "jsonl": "adaptd.connectors.jsonl:JsonlConnector",
    "stdin": "adaptd.connectors.stdio:StdinConnector",
    "stdout": "adaptd.connectors.stdio:StdoutConnector",
    "synthetic": "adaptd.connectors.synthetic:SyntheticConnector",
    "kafka": "adaptd.connectors.kafka:KafkaConnector",
}


def _load(target: str) -> type[Connector]:
    module_name, _, attr = target.partition(":")
    obj = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(obj, type) and issubclass(obj, Connector)):
        raise TypeError(f"{target} is not a adaptd.connectors.base.Connector subclass")
    return obj


def available() -> dict[str, str]:
    """Scheme → ``module:attr`` of every known connector; entry points override built-ins."""
    found = dict(BUILTINS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.value
    return found


def connector(scheme: str) -> type[Connector]:
    """The connector class for a scheme. Raises :class:`ConfigError` if none is installed."""
    targets = available()
    if scheme not in targets:
        raise ConfigError(
            f"no connector for scheme {scheme!r}; installed: {', '.join(sorted(targets))}"
        )
    try:
        return _load(targets[scheme])
    except (ImportError, AttributeError, TypeError) as exc:
        raise ConfigError(f"connector {scheme!r} ({targets[scheme]}) failed to load: {exc}") from exc


def open_source(uri: str) -> Source:
    """Build a source from its URI (not yet opened)."""
    return connector(parse_uri(uri).scheme).source(uri)


def open_sink(uri: str) -> Sink:
    """Build and open a sink from its URI."""
    return connector(parse_uri(uri).scheme).sink(uri)


def describe() -> list[tuple[str, str, str]]:
    """``(scheme, roles, description)`` for each connector that loads, for ``adaptd connectors``."""
    rows = []
    for scheme in sorted(available()):
        try:
            cls = connector(scheme)
        except ConfigError as exc:
            rows.append((scheme, "-", f"({exc})"))
            continue
        roles = "/".join(r for r, ok in (("source", cls.can_source()), ("sink", cls.can_sink())) if ok)
        rows.append((scheme, roles, cls.description))
    return rows
