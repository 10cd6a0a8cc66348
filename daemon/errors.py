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
