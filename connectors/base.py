"""The connector contract (version 2): what a source or a sink must do, apart from any
implementation. ``docs/connectors.md`` is the guide; this docstring is the reference.

**Sources.** A source reads raw records from one or more partitions. The daemon owns
positions: it opens a source at the positions stored in its checkpoint, remembers the position
of every record it processes, and, once a checkpoint holds them, tells the source which
positions to :meth:`~Source.commit`. ``next_positions`` always name the *next* record to read.

**Replay kinds.** A source declares how it replays in :attr:`Source.replay` (and its connector
lists the kinds it can have in :attr:`Connector.replay`):

* ``seekable`` (the default: Kafka, files, generators) — ``open`` starts each partition at the
  position given. A restart resumes right after the last checkpoint: the model state counts
  each record exactly once, predictions made after that checkpoint are emitted again (at least
  once) with the same (partition, position), and nothing is lost.
* ``acknowledged`` (MQTT QoS 1 with a persistent session, AMQP, Redis Streams) — the broker
  redelivers what was not acknowledged. The source acknowledges in ``commit`` and nowhere
  else, so a restart gets back every record after the last checkpoint: state exactly once,
  predictions at least once, nothing lost. A redelivered record gets a *new* position (the
  broker has no stable one), so consumers de-duplicate repeated predictions by the record's
  ``id``. A broker that holds only a few unacknowledged messages (MQTT's in-flight window)
  would stall until the next checkpoint: such a source returns True from
  :meth:`Source.commit_due` and the runner checkpoints (and so commits) after that batch.
* ``live`` (stdin, MQTT QoS 0) — no replay. A restart keeps the learned state of the last
  checkpoint and goes on from whatever arrives next: state exactly once for what the
  checkpoint holds, and records read after it or sent while the daemon was down are lost.
  ``open`` accepts any start position (it is a floor, not a place to seek to).

**Positions are never reused for different records**, so (partition, position) names one
record for good and prediction consumers may de-duplicate on it. Seekable sources get this
from their medium. Sources without stable positions (live and acknowledged) number records
with :class:`~adaptd.connectors.sequential.LivePositions`: a position is the arrival time in
microseconds since the Unix epoch, raised to one above the previous position and to at least
the start position. A restart therefore begins above every position the previous run handed
out, checkpointed or not (unless the wall clock was stepped back by more than the downtime),
and positions stay below 2**53, so JSON consumers read them exactly.

**Threading.** The daemon calls every method of a source or sink from one thread. Client
libraries that call back from their own threads (paho-mqtt, pika) must hand records to
``poll`` through a thread-safe queue (:class:`~adaptd.connectors.sequential.Inbox`), and
never call into the daemon from a callback.

**Faults.** A source whose service cannot be reached raises
:class:`~adaptd.errors.UnavailableError` (re-exported here) from ``open`` or ``poll``: the
runner marks itself not ready, retries with backoff and goes on when it answers. Any other
exception stops the daemon. A sink connects lazily, on its first ``write`` or ``flush``,
never in its constructor (the daemon builds sinks before anything runs, and a broker that
is away then must not crash it); ``write`` may buffer while disconnected; ``flush`` returns
only when everything written so far is durable and raises :class:`~adaptd.errors.SinkError`
otherwise (within a bounded time), which aborts the checkpoint that asked for it.

**Backpressure and lag.** ``pause`` means "hand out nothing until ``resume``". A pull client
stops fetching; a push client keeps what arrives in its queue (bounded: an acknowledged
broker stops sending when its window is full; a live source drops the excess and logs it).
``lag`` reports the records behind, where known: for Kafka, the broker's end offsets; for a
push broker, what is queued locally and not yet polled.

**Batches as columns (optional).** A source that reads runs of consecutive positions of one
partition (a file's lines) may hand them out as a :class:`RecordRun` from
:meth:`Source.poll_many`: the values and the first position, with no object per record. A sink
may take a batch pre-encoded as one buffer, an :class:`EncodedBatch`, in
:meth:`Sink.write_encoded`: a file writes it with one write; a producer splits the values with
one ``bytes.split``. Both have defaults built on ``poll`` and ``write``, so a connector that
does neither still works unchanged, and the daemon uses either only where the result is the
same message for message.

**A connector** is one small module: an options dataclass validated by :func:`parse_options`
before anything is opened, a source and/or sink class, and a :class:`Connector` subclass
registered under the entry-point group ``adaptd.connectors``, keyed by its URI scheme, with a
one-line :attr:`Connector.description` (``adaptd connectors`` prints it). Helpers third
parties may use: :func:`parse_uri`, :func:`parse_options`, :func:`convert` (here), and
``start_position``, ``Pausable``, ``LineSplitter``, ``LivePositions``, ``Inbox`` in
:mod:`adaptd.connectors.sequential`. ``adaptd.connectors.conformance`` is the test suite a
connector must pass.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, TypeVar
from urllib.parse import parse_qsl

from adaptd.errors import ConfigError, SinkError, UnavailableError

__all__ = [
    "REPLAY_KINDS", "ConfigError", "Connector", "EncodedBatch", "LineRun", "ParsedURI",
    "PartitionListener", "RecordRun", "Replay", "Sink", "SinkError", "SinkMessage", "Source",
    "SourceRecord", "UnavailableError", "convert", "parse_options", "parse_uri",
]

#: How a source replays after a restart; see the module docstring.
Replay = Literal["seekable", "acknowledged", "live"]
REPLAY_KINDS: tuple[Replay, ...] = ("seekable", "acknowledged", "live")


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which made building
# one cost about 1 µs, a tenth of a record's whole path through the daemon. Treat it as
# read-only all the same.
@dataclass(slots=True)
class SourceRecord:
    """One raw record as read: where it came from and its original bytes. Read-only by
    convention; built once per record by every source.

    ``truncated_from`` is set when ``value`` holds only the first bytes of a record longer
    than the daemon's ``max_record_bytes`` (see :meth:`Source.limit_record_bytes`): the
    record's whole length. The daemon dead-letters such a record as ``oversized``."""

    partition: int
    position: int
    value: bytes
    key: bytes | None = None
    timestamp_ms: int | None = None
    truncated_from: int | None = None


# Not frozen, for the same reason as SourceRecord: one is built per prediction.
@dataclass(slots=True)
class SinkMessage:
    """One message for a sink: encoded value, optional key (Kafka partitions by it), headers."""

    value: bytes
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(slots=True)
class RecordRun:
    """Records of one partition at consecutive positions, as columns: record ``i`` is
    ``values[i]`` at position ``first_position + i``. What :meth:`Source.poll_many` may return
    instead of a list of :class:`SourceRecord` (none of which is then built unless asked for).
    No value is truncated (see :attr:`SourceRecord.truncated_from`); records have no key,
    timestamp or headers. Read-only by convention.

    >>> run = RecordRun(partition=0, first_position=7, values=[b'{"x":[1]}', b'[2]'])
    >>> len(run), run[1]
    (2, SourceRecord(partition=0, position=8, value=b'[2]', key=None, timestamp_ms=None, \
truncated_from=None))
    """

    partition: int
    first_position: int
    values: list[bytes]

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int) -> SourceRecord:
        """Record ``i`` as a :class:`SourceRecord` (built on demand: for rare paths)."""
        if i < 0:
            i += len(self.values)
        return SourceRecord(self.partition, self.first_position + i, self.values[i])

    @property
    def next_position(self) -> int:
        """The position after the run's last record."""
        return self.first_position + len(self.values)

    def records(self) -> list[SourceRecord]:
        """Every record as a :class:`SourceRecord`."""
        p, first = self.partition, self.first_position
        return [SourceRecord(p, first + i, v) for i, v in enumerate(self.values)]


class LineRun(RecordRun):
    """A :class:`RecordRun` of lines kept as the one buffer they were read into: ``text`` holds
    the lines, each ending with ``b"\\n"``, and ``bounds`` (``len(run) + 1`` offsets) where each
    starts; record ``i`` is ``text[bounds[i]:bounds[i + 1]]`` less its newline. No line is
    blank or holds a carriage return. ``values`` are cut out of ``text`` only when first asked
    for, so a batch decoded straight from ``text`` builds no object per line.

    >>> run = LineRun(0, 7, b'{"x":[1]}\\n[2]\\n', [0, 10, 14])
    >>> len(run), run.next_position, run.values
    (2, 9, [b'{"x":[1]}', b'[2]'])
    """

    __slots__ = ("bounds", "text")

    def __init__(self, partition: int, first_position: int, text: bytes,
                 bounds: Sequence[int]) -> None:
        self.partition = partition
        self.first_position = first_position
        self.text = text
        self.bounds = bounds

    def __getattr__(self, name: str) -> Any:
        # Reached only while the ``values`` slot is unset: cut them out once.
        if name != "values":
            raise AttributeError(name)
        self.values = self.text[:-1].split(b"\n") if self.text else []
        return self.values

    def __len__(self) -> int:
        return len(self.bounds) - 1

    @property
    def next_position(self) -> int:
        return self.first_position + len(self)


@dataclass(slots=True)
class EncodedBatch:
    """The messages of one batch encoded into one buffer, for :meth:`Sink.write_encoded`:
    message ``i``'s value is line ``i`` of ``lines``. Every line ends with ``b"\\n"`` and no
    value holds a newline (JSON lines: orjson escapes newlines inside strings). ``keys`` holds
    one key per message (Kafka partitions by it); messages have no headers.

    >>> batch = EncodedBatch(b'{"a":1}\\n{"a":2}\\n', [b"k", b"k"])
    >>> len(batch), batch.values()
    (2, [b'{"a":1}', b'{"a":2}'])
    """

    lines: bytes
    keys: Sequence[bytes | None]

    def __len__(self) -> int:
        return len(self.keys)

    def values(self) -> list[bytes]:
        """Each message's value, split out in C (one ``bytes.split``)."""
        return self.lines[:-1].split(b"\n") if self.lines else []

    def messages(self) -> list[SinkMessage]:
        """The batch as :class:`SinkMessage` objects (what the default ``write_encoded`` writes)."""
        return list(map(SinkMessage, self.values(), self.keys))


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
    """A stream of raw records, split into partitions. Methods are called from one thread.

    ``replay`` says how it replays (see the module docstring); a class attribute, or set per
    instance when options decide it (MQTT's ``qos``).
    """

    replay: Replay = "seekable"

    @abstractmethod
    def open(
        self, start_positions: Mapping[int, int], listener: PartitionListener | None = None
    ) -> None:
        """Start reading. Partitions in ``start_positions`` resume at those positions.

        A seekable source starts there; acknowledged and live sources take them as a floor
        for the positions they hand out. May block while connecting; raises
        ``UnavailableError`` if the service cannot be reached (the runner calls ``open`` again
        later). ``listener`` is told of assignment changes by sources that have them; static
        sources ignore it.
        """

    @abstractmethod
    def poll(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        """Return up to ``max_records`` records, waiting at most ``timeout_s`` for the first.

        Returns an empty list when nothing arrived in time. Records of one partition come in
        strictly increasing position order. Raises ``UnavailableError`` when the service is
        away and nothing is left to hand out.
        """

    def poll_many(self, max_records: int, timeout_s: float) -> list[SourceRecord] | RecordRun:
        """:meth:`poll`, or the same records as one :class:`RecordRun` when they are a run of
        consecutive positions of one partition with nothing truncated. The runner calls this;
        the default returns :meth:`poll`'s list. Same blocking and errors as ``poll``."""
        return self.poll(max_records, timeout_s)

    def commit(self, next_positions: Mapping[int, int]) -> None:
        """Record that a checkpoint holds everything before ``next_positions``.

        Called right after each checkpoint is written, never before. Seekable sources may
        store the positions (Kafka commits offsets); acknowledged sources acknowledge the
        records below them here and only here. The default does nothing: for files the
        checkpoint itself is the only truth. Must not block for long.
        """

    def limit_record_bytes(self, max_bytes: int) -> None:
        """Called once, before ``open``, with the daemon's ``max_record_bytes``. A source that
        assembles records from a byte stream (lines of a file) keeps at most ``max_bytes`` of a
        longer one, so a huge record never sits whole in memory, and hands out that prefix
        with :attr:`SourceRecord.truncated_from` set. The default does nothing: records whose
        size the transport already bounds are checked by the decoder."""

    def commit_due(self) -> bool:
        """True when the source needs a commit before it can get more records.

        Polled by the runner after each batch; True makes it checkpoint (flush sinks, write
        state, ``commit``) right away instead of waiting for ``checkpoint_every_records`` or
        ``checkpoint_interval_s``. For acknowledged sources whose broker stops sending while
        too many messages are unacknowledged. Must be cheap; the default is never.
        """
        return False

    @abstractmethod
    def close(self) -> None:
        """Release resources. Idempotent."""

    @property
    def exhausted(self) -> bool:
        """True once a finite source has nothing more to give (never for unbounded ones)."""
        return False

    def lag(self) -> Mapping[int, int]:
        """Records behind the end of each assigned partition, where the source knows it
        (a push source: records received and not yet polled)."""
        return {}

    def assigned(self) -> Collection[int]:
        """Partitions this source currently reads."""
        return (0,)

    def pause(self) -> None:
        """Sink backpressure: ``poll`` returns nothing until :meth:`resume`.

        A pull client stops fetching; a push client keeps a bounded queue (see the module
        docstring).
        """

    def resume(self) -> None:
        """Undo :meth:`pause`."""


class Sink(ABC):
    """A destination for messages. Methods are called from one thread.

    Connects lazily: the constructor validates and remembers, the first ``write`` or ``flush``
    connects. A broker that is away is a ``SinkError`` from ``flush``, never a crash.
    """

    @abstractmethod
    def write(self, messages: Sequence[SinkMessage]) -> None:
        """Queue messages; may buffer, also while disconnected. Raises
        :class:`~adaptd.errors.SinkError` only when they cannot even be queued (closed sink,
        a value the medium cannot carry)."""

    def write_encoded(self, batch: EncodedBatch) -> None:
        """Queue a batch encoded as one buffer; the same as ``write(batch.messages())``, which
        is the default. A sink that can take the buffer as it is (a file, a pipe) or split it
        in C (a producer) overrides this. Same errors as :meth:`write`."""
        self.write(batch.messages())

    @abstractmethod
    def flush(self) -> None:
        """Block until everything written is durable; raise ``SinkError`` if it cannot be
        within the sink's own bounded timeout. Called before every checkpoint."""

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

    Subclasses set ``scheme``, a one-line ``description`` (what it reads or writes and its
    main option, printed by ``adaptd connectors``) and, for sources that are not seekable,
    ``replay``: the kinds its sources can have, the default first. They override
    :meth:`source` and/or :meth:`sink`.
    """

    scheme: ClassVar[str]
    description: ClassVar[str]
    replay: ClassVar[tuple[Replay, ...]] = ("seekable",)

    @classmethod
    def source(cls, uri: str) -> Source:
        """Build (not open) a source from a URI of this scheme; options are validated here."""
        raise ConfigError(f"{uri!r}: the {cls.scheme} connector cannot be used as a source")

    @classmethod
    def sink(cls, uri: str) -> Sink:
        """Build a sink from a URI of this scheme; options are validated here, and nothing
        connects yet (see :class:`Sink`)."""
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
