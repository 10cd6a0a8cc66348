"""End-to-end throughput through Kafka, next to the raw client rate measured in the same run.

On the embedded Tansu broker, one topic of ``--records`` 10-feature labelled records
(``synthetic:linear-tasks?d=10``, keyed by record key over ``--partitions`` partitions):

- **raw**: kafka-python's ``KafkaConsumer`` reads every record and decodes it with
  ``json.loads`` and, separately, with ``orjson.loads`` (the parser adaptd uses) — the
  ceiling for any Python consumer of this broker on this machine;
- **adaptd**: one daemon (in-process, the same code path as ``adaptd run``) reads them,
  validates, predicts, learns, writes every prediction to a topic and checkpoints at the end.
  It reads the partitions by assignment, not as a group member, so the group join (seconds on
  this broker) is not counted.

Usage::

    python -m benchmarks.kafka_throughput --records 100000

Prints a markdown table. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Measurement:
    name: str
    records: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else float("nan")


def raw_consume(bootstrap: str, topic: str, n: int, parser: str = "json") -> Measurement:
    """kafka-python consume + JSON decode of every record (``json`` or ``orjson``), manual
    assignment, from offset 0."""
    import orjson
    from kafka import KafkaConsumer, TopicPartition

    loads: Callable[[bytes], Any] = json.loads if parser == "json" else orjson.loads
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             max_poll_records=2000, fetch_max_wait_ms=100)
    partitions = sorted(consumer.partitions_for_topic(topic) or ())
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    seen = 0
    started = time.perf_counter()
    while seen < n:
        for messages in consumer.poll(timeout_ms=500).values():
            for m in messages:
                loads(m.value)
            seen += sum(1 for _ in messages)
    elapsed = time.perf_counter() - started
    consumer.close(autocommit=False)
    return Measurement(f"kafka-python consume + {parser}.loads", seen, elapsed)


def run_daemon(name: str, flags: dict[str, object]) -> Measurement:
    """One in-process daemon (the code path of ``adaptd run``); its records and elapsed time."""
    from prometheus_client import CollectorRegistry

    from adaptd.config import load_settings
    from adaptd.metrics import Metrics
    from adaptd.service import build_runner

    settings = load_settings(environ={}, flags={"checkpoint_every_records": 50_000, **flags})
    settings.metrics_port = None
    summary = build_runner(settings, Metrics(CollectorRegistry())).run()
    return Measurement(name, summary.records, summary.elapsed_s)


def daemon_consume(bootstrap: str, topic: str, n: int, state_dir: Path, sink: bool,
                   batch_size: int) -> Measurement:
    """One daemon over the topic, predictions to a topic or nowhere."""
    return run_daemon(
        "adaptd run from Kafka: decode, predict, learn" + (", produce predictions" if sink else ""),
        {
            "source": f"kafka://{bootstrap}/{topic}?limit={n}&max_poll_records={batch_size}",
            "sink": f"kafka://{bootstrap}/{topic}-predictions-{state_dir.name}" if sink else None,
            "dead_letter": f"kafka://{bootstrap}/{topic}-dead-{state_dir.name}",
            "state_dir": str(state_dir),
            "batch_size": batch_size,
        })


def daemon_from_file(stream: str, tmp: Path, batch_size: int) -> Measurement:
    """The same records from a jsonl file: what the engine costs without Kafka."""
    from adaptd.connectors.registry import open_source

    path = tmp / "records.jsonl"
    source = open_source(stream)
    source.open({})
    with open(path, "wb") as fh:
        while raws := source.poll(10_000, 0.1):
            fh.writelines(r.value + b"\n" for r in raws)
    source.close()
    return run_daemon("adaptd run from a jsonl file (no Kafka): decode, predict, learn", {
        "source": f"jsonl:{path}", "state_dir": str(tmp / "file-state"),
        "batch_size": batch_size})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--keys", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from adaptd.broker import EmbeddedBroker
    from adaptd.commands.produce import replay

    stream = f"synthetic:linear-tasks?d=10&seed=7&keys={args.keys}&n={args.records}"
    topic = "bench-in"
    rows: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="adaptd-bench-") as tmp, EmbeddedBroker() as broker:
        started = time.perf_counter()
        produced = replay(stream, f"kafka://{broker.bootstrap}/{topic}",
                          partitions=args.partitions)
        rows.append(Measurement("adaptd produce (for reference)", produced,
                                time.perf_counter() - started))
        rows.append(raw_consume(broker.bootstrap, topic, produced))
        rows.append(raw_consume(broker.bootstrap, topic, produced, parser="orjson"))
        rows.append(daemon_consume(broker.bootstrap, topic, produced, Path(tmp) / "nosink",
                                   sink=False, batch_size=args.batch_size))
        rows.append(daemon_consume(broker.bootstrap, topic, produced, Path(tmp) / "sink",
                                   sink=True, batch_size=args.batch_size))
        rows.append(daemon_from_file(stream, Path(tmp), args.batch_size))
        rows.append(raw_consume(broker.bootstrap, topic, produced))  # again: drift of the box
        rows.append(raw_consume(broker.bootstrap, topic, produced, parser="orjson"))

    raw = max(r.per_s for r in rows if r.name.startswith("kafka-python"))
    lines = [
        (f"Kafka throughput: {produced} records, 10 features, {args.keys} keys, "
         f"{args.partitions} partitions, embedded Tansu broker, one process each"),
        "",
        "| what | records | seconds | records/s | vs raw consume |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r.name} | {r.records} | {r.seconds:.2f} | {r.per_s:,.0f} | "
                     f"{r.per_s / raw:.2f} |")
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
