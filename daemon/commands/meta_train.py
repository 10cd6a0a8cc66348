"""``adaptd meta-train``: bootstrap the meta-state from historical records.

Reads a finite source to its end (``source.open({})``, poll until ``exhausted``), decodes the
records (bad ones are skipped and counted), runs :func:`adaptd.meta.train.meta_train` over them
and writes the meta-state file that ``adaptd run --meta FILE`` starts from. Records carrying a
``task`` field are segmented by it; otherwise the configured drift detector segments them.
"""

from __future__ import annotations

import argparse
import logging

from adaptd.commands.run import add_settings_arguments, settings_from_args
from adaptd.errors import ConfigError, RecordError, StartError
from adaptd.meta import EPOCHS
from adaptd.records import Record, RecordDecoder

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", metavar="URI", required=True,
                        help="historical records, e.g. jsonl:history.jsonl or synthetic:…")
    parser.add_argument("--out", metavar="FILE", required=True, help="meta-state file to write")
    parser.add_argument("--epochs", type=int, default=EPOCHS, metavar="N",
                        help=f"passes over the records (default {EPOCHS})")
    add_settings_arguments(parser, serving=False)  # it serves nothing and keeps no state dir


def read_records(uri: str, decoder: RecordDecoder, max_batch: int = 4096) -> tuple[list[Record], int]:
    """All records of the finite source ``uri`` and how many were rejected. Blocks until its end."""
    from adaptd.connectors.registry import open_source

    source = open_source(uri)
    records: list[Record] = []
    rejected = 0
    source.open({})
    try:
        while not source.exhausted:
            for raw in source.poll(max_batch, 0.5):
                try:
                    records.append(decoder.decode(raw.value))
                except RecordError as exc:
                    rejected += 1
                    log.debug("record at position %s rejected: %s", raw.position, exc)
    finally:
        source.close()
    return records, rejected


def run(args: argparse.Namespace) -> int:
    from adaptd.commands.checks import check_meta_file
    from adaptd.meta.state import load, save
    from adaptd.meta.train import meta_train, module_state

    settings = check_meta_file(settings_from_args(args))
    if args.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {args.epochs}")
    decoder = RecordDecoder(n_features=settings.n_features, task=settings.task,
                            max_record_bytes=settings.max_record_bytes)
    records, rejected = read_records(args.source, decoder)
    if not records:
        raise ConfigError(f"--source {args.source!r} gave no valid records ({rejected} rejected)")
    start = load(settings.meta) if settings.meta else None
    # ``auto`` mixes several families and a meta-state is made for one: the linear one, which
    # ``--model auto`` hands to its linear candidate.
    family = "linear" if settings.model == "auto" else settings.model
    state = meta_train(records, model=family, task=settings.task,
                       config=settings.learner, drift=settings.drift,
                       meta=settings.meta_learning, start=start, epochs=args.epochs)
    model = "logistic" if family == "logistic" else family
    from adaptd.commands.checks import os_reason

    try:
        save(state, args.out, module_state(state, model, settings.task, settings.learner))
    except OSError as exc:
        raise StartError(f"--out {args.out}: cannot write the meta-state: "
                         f"{os_reason(exc)}") from None
    print(f"meta-train: {len(records)} records ({rejected} rejected), {state.tasks} tasks; "
          f"wrote {args.out}")
    return 0
