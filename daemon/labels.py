"""Delayed labels: remember what was predicted for a record with an ``id`` until its label comes.

A record with an ``id`` and no ``y`` is predicted, and its key and features are kept here. A
later record with the same ``id`` and a ``y`` is then learned from with the *kept* features
(those the prediction was made on), whatever features it carries itself. Entries live at most
``ttl_s`` seconds and at most ``capacity`` are kept (the oldest go first); both kinds of loss
are counted as expired.

>>> pending = PendingLabels(LabelsConfig(ttl_s=10.0, capacity=2), clock=lambda: 0.0)
>>> pending.put("r1", "k", (1.0, 2.0))
>>> pending.take("r1")
('k', (1.0, 2.0))
>>> pending.take("r1") is None
True
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptd.errors import RecordError
from adaptd.records import BatchBuilder, RecordBatch
from adaptd.settings import LabelsConfig

if TYPE_CHECKING:
    from adaptd.learner import PendingFeatures


class PendingLabels:
    """Predictions waiting for their label, by record ``id``. Not thread-safe; never blocks.

    Args:
        clock: seconds, monotonic; injected by tests.
    """

    def __init__(self, config: LabelsConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        # id → (deadline, key, x); insertion order is deadline order since the TTL is fixed.
        self._entries: OrderedDict[str, tuple[float, str, tuple[float, ...]]] = OrderedDict()
        self.expired = 0
        self.joined = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, record_id: str, key: str, x: tuple[float, ...]) -> None:
        """Keep the features a prediction was made on. A repeated id replaces the older entry."""
        self._entries.pop(record_id, None)
        self._entries[record_id] = (self.clock() + self.config.ttl_s, key, x)
        while len(self._entries) > self.config.capacity:
            self._entries.popitem(last=False)
            self.expired += 1

    def key_of(self, record_id: str) -> str | None:
        """The key kept for ``record_id`` (None if none), without taking it: the checkpoint
        needs to know which key a label is about to change."""
        entry = self._entries.get(record_id)
        return None if entry is None else entry[1]

    def take(self, record_id: str) -> tuple[str, tuple[float, ...]] | None:
        """``(key, x)`` kept for ``record_id``, removed; ``None`` if unknown or expired."""
        entry = self._entries.pop(record_id, None)
        if entry is None:
            return None
        deadline, key, x = entry
        if deadline < self.clock():
            self.expired += 1
            return None
        self.joined += 1
        return key, x

    def expire(self) -> int:
        """Drop entries past their deadline; returns how many. Called once per batch."""
        now = self.clock()
        dropped = 0
        while self._entries:
            rid, (deadline, _, _) = next(iter(self._entries.items()))
            if deadline >= now:
                break
            del self._entries[rid]
            dropped += 1
        self.expired += dropped
        return dropped

    def join(self, batch: RecordBatch) -> tuple[list[str], np.ndarray]:
        """Keep the features of ``batch``'s unlabelled records with an id; for its labels with
        a kept id, swap in the kept key and features. Returns the keys and features to learn
        with (copies where changed: the batch stays as decoded, for the predictions). Called
        by the learner once per batch that has ids."""
        keys, X = batch.keys, batch.X
        copied = False
        for i, rid in enumerate(batch.ids):
            if rid is None:
                continue
            if math.isnan(batch.y[i]):
                self.put(rid, batch.keys[i], tuple(batch.X[i].tolist()))
                continue
            joined = self.take(rid)
            if joined is None:
                continue
            if not copied:
                keys, X, copied = list(keys), X.copy(), True
            keys[i], X[i] = joined
        return keys, X

    def state_dict(self, keys: Collection[str] | None = None) -> dict[str, Any]:
        """Entries (with their remaining time to live) of ``keys``, all if None."""
        now = self.clock()
        chosen = None if keys is None else set(keys)
        return {
            "entries": [
                (rid, deadline - now, key, x)
                for rid, (deadline, key, x) in self._entries.items()
                if chosen is None or key in chosen
            ],
            "expired": self.expired,
            "joined": self.joined,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Add the saved entries (their TTL restarts from what was left) and take the counts."""
        now = self.clock()
        for rid, remaining, key, x in state["entries"]:
            self._entries[rid] = (now + remaining, key, tuple(x))
        # Keep deadline order, which expire() relies on.
        self._entries = OrderedDict(sorted(self._entries.items(), key=lambda kv: kv[1][0]))
        self.expired = max(self.expired, int(state["expired"]))
        self.joined = max(self.joined, int(state["joined"]))

    def forget(self, keys: Collection[str]) -> None:
        """Drop the entries of ``keys`` (their partition was revoked)."""
        drop = set(keys)
        for rid in [r for r, (_, k, _) in self._entries.items() if k in drop]:
            del self._entries[rid]


def kept_features(pending: PendingFeatures | None, batch: BatchBuilder,
                  record_id: str) -> tuple[str, tuple[float, ...]]:
    """``(key, x)`` for a delayed label (a record with ``id`` and ``y`` and no ``x``): those of
    the last unlabelled record with that id earlier in ``batch`` (the learner keeps them when it
    learns the batch, and joins them there), else those kept by an earlier batch (taken out of
    ``pending``). Raises :class:`RecordError` ``label_unmatched`` when none are kept. Called by
    the runner while decoding, so that an unmatched label is dead-lettered with its bytes."""
    d = batch.n_features or 0
    kept = None
    for i in range(len(batch) - 1, -1, -1):
        if batch.ids[i] == record_id:
            # A labelled row with this id after the last unlabelled one has used them up.
            if batch.ys[i] is None:
                kept = batch.keys[i], tuple(batch.flat[i * d:(i + 1) * d])
            break
    else:
        kept = None if pending is None else pending.take(record_id)
    if kept is None:
        raise RecordError("label_unmatched", f"no features are kept under id {record_id!r}: "
                          "never predicted, already labelled, or expired (labels.ttl_s)")
    return kept
