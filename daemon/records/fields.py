"""Checks of a record's identifying fields (``key``, ``id``, ``task``, feature names).

Each value checked here travels further than the model: keys and ids are written into every
prediction (JSON, UTF-8), keys name state in the state dir, ``task`` becomes an int64 column of
the learner, feature names go into the checkpoint. A value that cannot make that trip must be
refused here, as a record error with its own reason, and never reach code that would raise
something else on it (a crash that replays after every restart).

>>> record_id({"id": 7}), record_id({"id": "r-1"}), record_id({})
('7', 'r-1', None)
>>> record_id({"id": [[1]]})
Traceback (most recent call last):
...
adaptd.errors.RecordError: bad_id: id must be a string or a number, got list
>>> record_task({"task": 1e300})
Traceback (most recent call last):
...
adaptd.errors.RecordError: bad_task: task must be an integer in [0, 2147483647], got 1e+300
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from adaptd.errors import RecordError

DEFAULT_KEY = "default"

#: Longest ``key`` or ``id`` in UTF-8 bytes: they are repeated in every prediction and name state.
MAX_NAME_BYTES = 1024
#: Largest ``task``: the learner keeps tasks in an int64 column with -1 for "none".
MAX_TASK = 2**31 - 1
#: Integers used as ids or keys are written back as decimal text: at most this many digits.
MAX_NUMBER_DIGITS = 20


@dataclass(frozen=True, slots=True)
class DelayedLabel:
    """A record with ``id`` and ``y`` and no ``x``: the label of features kept under ``id``."""

    id: str
    y: Any
    task: int | None = None


def _utf8_size(text: str) -> int | None:
    """Bytes of ``text`` in UTF-8; None if it holds a lone surrogate (JSON allows ``"\\udc00"``,
    UTF-8 does not)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def _number_text(value: Any) -> str | None:
    """A JSON number as the text it is written back as, or None if it is not a usable one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    # str() of a huge int is slow (and refused past 4300 digits); bound the magnitude first.
    return str(value) if abs(value) < 10**MAX_NUMBER_DIGITS else None


def _name(field: str, value: Any, reason: str) -> str:
    """``value`` of a ``key``/``id`` field as a string that survives UTF-8 and JSON."""
    if isinstance(value, str):
        size = _utf8_size(value)
        if size is None:
            raise RecordError(reason, f"{field} holds a lone surrogate, not encodable as UTF-8")
        if size > MAX_NAME_BYTES:
            raise RecordError(reason, f"{field} is {size} bytes, limit is {MAX_NAME_BYTES}")
        return value
    text = _number_text(value)
    if text is None:
        got = type(value).__name__ if not isinstance(value, (int, float)) or \
            isinstance(value, bool) else "a number out of range"
        raise RecordError(reason, f"{field} must be a string or a number, got {got}")
    return text


def record_key(obj: dict[str, Any]) -> str:
    """The record's ``key`` (``"default"`` when absent); numbers become their text."""
    key = obj.get("key", DEFAULT_KEY)
    if isinstance(key, str) and not key:
        raise RecordError("bad_key", "key must be a non-empty string, got ''")
    return _name("key", key, "bad_key")


def record_id(obj: dict[str, Any]) -> str | None:
    """The record's ``id`` as text, None when absent or null."""
    rid = obj.get("id")
    return None if rid is None else _name("id", rid, "bad_id")


def record_task(obj: dict[str, Any]) -> int | None:
    """The record's ``task``. What is not a finite number is dropped (None), as before; a
    number must be an integer in ``[0, MAX_TASK]``."""
    task = obj.get("task")
    if isinstance(task, bool) or not isinstance(task, (int, float)):
        return None
    try:
        number = float(task)
    except OverflowError:  # a JSON integer beyond float range: not finite, dropped
        return None
    if not math.isfinite(number):
        return None
    if task != int(task) or not 0 <= task <= MAX_TASK:
        raise RecordError("bad_task", f"task must be an integer in [0, {MAX_TASK}], got {task!r}")
    return int(task)


def check_names(names: Iterable[str]) -> None:
    """Feature names of an object ``x``: they are saved with the layout, so UTF-8 only."""
    for name in names:
        if _utf8_size(name) is None:
            raise RecordError("bad_x", "a feature name holds a lone surrogate, not UTF-8")


#: A class label that is a whole number is written back as a JSON integer: at most 64 bits.
MAX_CLASS_INTEGER = 2**63 - 1


def check_label(y: Any, classification: bool) -> Any:
    """A class label is written back in every later prediction (``y_pred`` and the keys of
    ``probas``) and kept with the model, so one that cannot be written would spoil them all: a
    string must be UTF-8 and bounded, like a key; a whole number (shown as an integer, see
    :mod:`adaptd.learner.classes`) must fit 64 bits. Regression targets are any finite number."""
    if isinstance(y, str):
        _name("y", y, "bad_y")
    elif classification and isinstance(y, float) and y.is_integer() \
            and abs(y) > MAX_CLASS_INTEGER:
        raise RecordError("bad_y", f"y is {y!r}: a whole-number class label must fit 64 bits")
    return y
