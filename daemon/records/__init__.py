"""Records: what comes in (:mod:`~adaptd.records.schema`: the JSON record, its validation and
the columns the learner computes on) and what goes out (:mod:`~adaptd.records.messages`: the
prediction and dead-letter formats). Both sides are contracts; this package is their one home.
"""

from __future__ import annotations

from adaptd.records.messages import dead_letter, encode, prediction_body, predictions
from adaptd.records.schema import (
    DEFAULT_KEY,
    REASONS,
    BatchBuilder,
    DelayedLabel,
    Record,
    RecordBatch,
    RecordDecoder,
    TaskKind,
    parse_json,
)

__all__ = [
    "DEFAULT_KEY",
    "REASONS",
    "BatchBuilder",
    "DelayedLabel",
    "Record",
    "RecordBatch",
    "RecordDecoder",
    "TaskKind",
    "dead_letter",
    "encode",
    "parse_json",
    "prediction_body",
    "predictions",
]
