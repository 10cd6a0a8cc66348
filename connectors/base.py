"""The connector contract: what a source or a sink must do, apart from any implementation.

A **source** reads raw records from one or more partitions. The daemon owns positions: it
opens a source at the positions stored in its checkpoint, remembers the position of every
record it has processed, and tells the source which positions to commit once a checkpoint
holds them. A source only seeks and reports. A position is the index of a record within its
partition (a line number, a Kafka offset); ``next_positions`` always name the *next* record to
read, so a source reopened at them resumes right after the last record processed.

A **sink** takes encoded messages. ``write`` may buffer; ``flush`` returns only when everything
written so far is durable, and raises :class:`~adaptd.errors.SinkError` otherwise, which aborts
the checkpoint that asked for it.

A connector is one small module: an options dataclass validated before ``open``, a source
and/or sink class, and a :class:`Connector` subclass registered under the entry-point group
``adaptd.connectors`` keyed by its URI scheme.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar
from urllib.parse import parse_qsl

from adaptd.errors import ConfigError


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One raw record as read: where it came from and its original bytes."""

    partition: int
    position: int
    value: bytes
    key: bytes | None = None
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class SinkMessage:
    """One message for a sink: encoded value, optional key (Kafka partitions by it), headers."""

    value: bytes
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


class PartitionListener(Protocol):
    """Told by sources whose partitions change while they run (Kafka consumer groups)."""

    def on_assigned(self, partitions: Collection[int]) -> Mapping[int, int]:
        """Called when partitions are assigned, before any of their records are polled.

        Returns the next position to read for each partition the daemon has a checkpoint of;
        partitions left out start where the source's own reset policy says.
        """
        ...

    def on_revoked(self, partitions: Collection[int]) -> None:
        """Called before partitions are taken away: the daemon flushes, checkpoints, commits."""
        ...


class Source(ABC):
    """A stream of raw records, split into partitions. Methods are called from one thread."""

    @abstractmethod
    def open(
        self, start_positions: Mapping[int, int], listener: PartitionListener | None = None
    ) -> None:
        """Start reading. Partitions in ``start_positions`` resume at those positions.

        May block while connecting. ``listener`` is told of assignment changes by sources
        that have them; static sources ignore it.
        """

    @abstractmethod
    def poll(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        """Return up to ``max_records`` records, waiting at most ``timeout_s`` for the first.

        Returns an empty list when nothing arrived in time. Records of one partition come in
        position order.
        """

    def commit(self, next_positions: Mapping[int, int]) -> None:
        """Record that a checkpoint holds everything before ``next_positions``.

        The default does nothing: for files the checkpoint itself is the only truth.
        """

    @abstractmethod
    def close(self) -> None:
        """Release resources. Idempotent."""

    @property
    def exhausted(self) -> bool:
        """True once a finite source has nothing more to give (never for unbounded ones)."""
        return False

    def lag(self) -> Mapping[int, int]:
        """Records behind the end of each assigned partition, where the source knows it."""
        return {}

    def assigned(self) -> Collection[int]:
        """Partitions this source currently reads."""
        return (0,)

    def pause(self) -> None:
        """Stop fetching (sink backpressure); ``poll`` returns nothing until :meth:`resume`."""

    def resume(self) -> None:
        """Undo :meth:`pause`."""


class Sink(ABC):
    """A destination for messages. Methods are called from one thread."""

    @abstractmethod
    def write(self, messages: Sequence[SinkMessage]) -> None:
        """Queue messages; may buffer. Raises :class:`~adaptd.errors.SinkError` on failure."""

    @abstractmethod
    def flush(self) -> None:
        """Block until everything written is durable; raise ``SinkError`` if it cannot be."""

    @abstractmethod
    def close(self) -> None:
        """Flush what can be flushed and release resources. Idempotent."""

    def backlog(self) -> int:
        """Messages written but not yet durable; the runner pauses its source while it is high.

        Sinks that write synchronously have none.
        """
        return 0


class Connector:
    """Binds a URI scheme to a source and/or sink. Registered as an entry point.

    Subclasses set ``scheme`` and ``description`` and override :meth:`source` and/or
    :meth:`sink`.
    """

    scheme: ClassVar[str]
    description: ClassVar[str]

    @classmethod
    def source(cls, uri: str) -> Source:
        """Build (not open) a source from a URI of this scheme; options are validated here."""
        raise ConfigError(f"{uri!r}: the {cls.scheme} connector cannot be used as a source")

    @classmethod
    def sink(cls, uri: str) -> Sink:
        """Build and open a sink from a URI of this scheme; options are validated here."""
        raise ConfigError(f"{uri!r}: the {cls.scheme} connector cannot be used as a sink")

    @classmethod
    def can_source(cls) -> bool:
        return cls.source.__func__ is not Connector.source.__func__  # type: ignore[attr-defined]

    @classmethod
    def can_sink(cls) -> bool:
        return cls.sink.__func__ is not Connector.sink.__func__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class ParsedURI:
    """``scheme:rest?query`` split up; ``target`` is what comes between."""

    uri: str
    scheme: str
    target: str
    query: dict[str, str]


def parse_uri(uri: str) -> ParsedURI:
    """Split a connector URI.

    >>> parse_uri("synthetic:sinusoid?seed=1&n=10")
    ParsedURI(uri='synthetic:sinusoid?seed=1&n=10', scheme='synthetic', target='sinusoid', query={'seed': '1', 'n': '10'})
    >>> parse_uri("kafka://localhost:9092/in?group=g").target
    '//localhost:9092/in'
    """
    scheme, sep, rest = uri.partition(":")
    if not sep or not scheme:
        raise ConfigError(f"{uri!r} is not a connector URI: expected SCHEME:..., e.g. jsonl:data.jsonl")
    target, _, query_text = rest.partition("?")
    query: dict[str, str] = {}
    # parse_qsl decodes form encoding, where "+" means a space; in a URI typed by hand (a
    # password, a list) "+" is a plus, so escape it before decoding.
    pairs = parse_qsl(query_text.replace("+", "%2B"), keep_blank_values=True, strict_parsing=False)
    for name, value in pairs:
        if name in query:
            raise ConfigError(f"{uri!r}: option {name!r} is given twice")
        query[name] = value
    return ParsedURI(uri=uri, scheme=scheme.lower(), target=target, query=query)


O = TypeVar("O")


def parse_options(options_cls: type[O], parsed: ParsedURI, **fixed: Any) -> O:
    """Build an options dataclass from a URI's query, converting and validating each value.

    Unknown options and unconvertible values raise :class:`ConfigError` naming the option.
    ``fixed`` supplies fields that come from elsewhere in the URI (a path, a topic).
    """
    fields = {f.name: f for f in dataclasses.fields(options_cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(options_cls)
    values: dict[str, Any] = dict(fixed)
    for name, text in parsed.query.items():
        if name not in fields or name in fixed:
            known = sorted(n for n in fields if n not in fixed)
            raise ConfigError(f"{parsed.uri!r}: unknown option {name!r}; known options: {known}")
        values[name] = convert(text, hints[name], f"{parsed.uri!r} option {name!r}")
    try:
        return options_cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{parsed.uri!r}: {exc}") from None


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def convert(text: str, hint: Any, where: str) -> Any:
    """Convert a string (URI option, environment variable) to the type ``hint``.

    Handles str, int, float, bool, ``X | None``, ``Literal[...]`` and ``list[X]``/``tuple[X, ...]``
    (comma separated). Raises :class:`ConfigError` naming ``where``.
    """
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if text.lower() in ("", "none", "null") and len(non_none) < len(args):
            return None
        if len(non_none) == 1:
            return convert(text, non_none[0], where)
        raise ConfigError(f"{where}: cannot convert {text!r} to {hint}")
    if origin is typing.Literal:
        for allowed in args:
            if text == str(allowed):
                return allowed
        raise ConfigError(f"{where} must be one of {list(args)}, got {text!r}")
    if origin in (list, tuple):
        items = [t.strip() for t in text.split(",") if t.strip()]
        converted = [convert(t, args[0], where) for t in items]
        return converted if origin is list else tuple(converted)
    if hint is bool:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"{where} must be true or false, got {text!r}")
    if hint in (int, float, str):
        try:
            return hint(text)
        except ValueError:
            raise ConfigError(f"{where} must be {hint.__name__}, got {text!r}") from None
    raise ConfigError(f"{where}: unsupported option type {hint}")
