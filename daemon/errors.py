"""The error types adaptd raises on purpose.

A :class:`ConfigError` stops the daemon at start with a message naming the key; a
:class:`RecordError` is data: the record is dead-lettered with its reason and the stream goes on.
"""

from __future__ import annotations


class AdaptdError(Exception):
    """Base of the errors adaptd raises on purpose."""


class ConfigError(AdaptdError):
    """A setting is unknown or has a bad value. The message names the key."""


class StartError(ConfigError):
    """The daemon cannot start because of something the user can fix: a port in use, a file
    that is not what its flag expects, a connector that cannot reach its service.

    The CLI prints the message as one line, without the "configuration error" prefix.
    """


class RecordError(AdaptdError):
    """A record cannot be used.

    ``reason`` is a short, bounded label (it becomes a Prometheus label value); ``detail`` says
    what exactly was wrong with this record.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SinkError(AdaptdError):
    """A sink could not write or flush; the checkpoint that needed it is aborted."""


class UnavailableError(AdaptdError):
    """A source's service (a Kafka broker) cannot be reached right now.

    Not a crash: the runner marks itself not ready, retries with backoff and resumes where it
    was once the service answers again.
    """


class StateLostError(AdaptdError):
    """The state dir refused checkpoints for longer than ``checkpoint.give_up_after_s`` (or the
    last one, at exit): what was learned since the last checkpoint would be lost, so the daemon
    stops (exit 1) instead of going on as if it were kept. The message names the state dir and
    the system's reason."""


class ArenaMemoryError(ConfigError):
    """The keys' task state could not grow: the machine has no memory for it. Raised when the
    learner's arrays grow (so mid-run, when the live keys pass a quarter of ``max_keys``), not
    per record: no record is at fault, and re-running records one at a time (as
    :mod:`adaptd.isolation` does for a record that breaks the learner) allocates again for
    each. The runner keeps its previous checkpoint; the message names the setting to lower."""

    def __init__(self, max_keys: int, keys: int, size: int, live: int) -> None:
        super().__init__(
            f"learner.max_keys={max_keys}: no memory for the task state of {keys:,} keys "
            f"({size / 2**30:.1f} GiB of arrays, {size // max(keys, 1):,} bytes a key, "
            f"{live:,} keys live); lower learner.max_keys, or regret.buffer (each key's "
            f"hindsight records)")
