"""End-to-end throughput through Kafka for both clients, next to each client's raw ceiling.

On the embedded Tansu broker, one topic of ``--records`` 10-feature labelled records
(``synthetic:linear-tasks?d=10``, keyed over ``--partitions`` partitions), written by an
independent librdkafka producer. Each row is the median of ``--repeat`` runs in this process:

- **raw consume + decode**: the client alone reads every record and ``orjson.loads`` it — the
  ceiling for any Python consumer of this broker through that client on this machine;
- **adaptd**: the daemon as ``adaptd run`` assembles it (``build_runner``) reads the topic
  through that client (``?client=…``), validates, predicts, learns, and either writes every
  prediction back to Kafka through the same client or emits nothing; an independent
  librdkafka consumer then checks that every prediction arrived;
- **adaptd from a jsonl file**: the same records without Kafka, the engine's own ceiling.

With ``--latency`` it also measures record latency (the input's produce timestamp → the
prediction read back by the checker) at about half of each client's end-to-end rate.

Usage::

    python -m benchmarks.kafka_throughput --records 100000 [--latency]

Prints a markdown table. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CLIENTS = ("kafka-python", "librdkafka")


@dataclass
class Measurement:
    name: str
    records: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else float("nan")


def median_of(repeat: int, run: Callable[[], Measurement]) -> Measurement:
    """The run with the median rate among ``repeat`` runs."""
    runs = sorted((run() for _ in range(repeat)), key=lambda m: m.per_s)
    return runs[len(runs) // 2]


def produce_input(bootstrap: str, topic: str, stream: str, partitions: int) -> int:
    """Write the stream with a plain librdkafka producer, keyed like ``adaptd produce``."""
    from confluent_kafka import Producer

    from adaptd.commands.produce import record_key
    from adaptd.connectors.kafka import ensure_topic, sink_options
    from adaptd.connectors.registry import open_source

    ensure_topic(sink_options(f"kafka://{bootstrap}/{topic}?client=librdkafka"), partitions)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         "partitioner": "murmur2_random"})
    source = open_source(stream)
    source.open({})
    n = 0
    while raws := source.poll(10_000, 0.1):
        for r in raws:
            while True:
                try:
                    producer.produce(topic, r.value, record_key(r.value))
                    break
                except BufferError:
                    producer.poll(0.05)
        n += len(raws)
        producer.poll(0)
    source.close()
    assert producer.flush(60) == 0, "input not fully produced"
    return n


def count_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0) -> int:
    """How many messages a topic holds, read with a plain librdkafka consumer."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + timeout_s
    while seen < expected and time.monotonic() < deadline:
        seen += sum(1 for m in consumer.consume(10_000, 0.5) if m.error() is None)
    consumer.close()
    return seen


def raw_kafka_python(bootstrap: str, topic: str, n: int) -> Measurement:
    """kafka-python consume + orjson decode of every record, manual assignment, from 0."""
    import orjson
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             max_poll_records=2000, fetch_max_wait_ms=100)
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    seen = 0
    started = time.perf_counter()
    while seen < n:
        for messages in consumer.poll(timeout_ms=500).values():
            for m in messages:
                orjson.loads(m.value)
            seen += len(messages)
    elapsed = time.perf_counter() - started
    consumer.close(autocommit=False)
    return Measurement("kafka-python: raw consume + orjson.loads", seen, elapsed)


def raw_librdkafka(bootstrap: str, topic: str, n: int) -> Measurement:
    """confluent-kafka consume + orjson decode of every record, manual assignment, from 0."""
    import orjson
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "raw",
                         "enable.auto.commit": False})
    metadata = consumer.list_topics(topic, timeout=10)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING)
                     for p in metadata.topics[topic].partitions])
    seen = 0
    started = time.perf_counter()
    while seen < n:
        for m in consumer.consume(1000, 0.5):
            if m.error() is None:
                orjson.loads(m.value())
                seen += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    return Measurement("librdkafka: raw consume + orjson.loads", seen, elapsed)


def run_daemon(name: str, flags: dict[str, object]) -> Measurement:
    """One in-process daemon assembled as ``adaptd run`` does; its records and elapsed time."""
    from prometheus_client import CollectorRegistry

    from adaptd.config import load_settings
    from adaptd.metrics import Metrics
    from adaptd.service import build_runner

    settings = load_settings(environ={}, flags={"checkpoint_every_records": 50_000,
                                                "model": "linear", **flags})
    settings.metrics_port = None
    summary = build_runner(settings, Metrics(CollectorRegistry())).run()
    return Measurement(name, summary.records, summary.elapsed_s)


def daemon_kafka(bootstrap: str, topic: str, n: int, tmp: Path, client: str, sink: bool,
                 batch_size: int) -> Measurement:
    """One daemon over the topic through ``client``; predictions to a topic or nowhere."""
    run_id = uuid.uuid4().hex[:8]
    base = f"kafka://{bootstrap}/{topic}"
    out_topic = f"{topic}-predictions-{run_id}"
    m = run_daemon(
        f"{client}: adaptd run" + (", predictions produced to Kafka" if sink else
                                   ", no output"),
        {
            "source": f"{base}?client={client}&limit={n}&max_poll_records={batch_size}",
            "sink": f"kafka://{bootstrap}/{out_topic}?client={client}" if sink else None,
            "dead_letter": f"kafka://{bootstrap}/{topic}-dead-{run_id}?client={client}",
            "state_dir": str(tmp / f"state-{run_id}"),
            "batch_size": batch_size,
        })
    if sink:
        delivered = count_topic(bootstrap, out_topic, n)
        assert delivered >= n, f"{m.name}: {delivered} of {n} predictions arrived"
    return m


def daemon_from_file(stream: str, tmp: Path, batch_size: int) -> Measurement:
    """The same records from a jsonl file: what the engine costs without Kafka."""
    from adaptd.connectors.registry import open_source

    path = tmp / "records.jsonl"
    if not path.exists():
        source = open_source(stream)
        source.open({})
        with open(path, "wb") as fh:
            while raws := source.poll(10_000, 0.1):
                fh.writelines(r.value + b"\n" for r in raws)
        source.close()
    return run_daemon("engine: adaptd run from a jsonl file (no Kafka, no output)", {
        "source": f"jsonl:{path}", "state_dir": str(tmp / f"file-{uuid.uuid4().hex[:8]}"),
        "batch_size": batch_size})


def throughput_rows(bootstrap: str, topic: str, n: int, stream: str, tmp: Path,
                    args: argparse.Namespace) -> list[tuple[Measurement, Measurement | None]]:
    """(measurement, the raw ceiling it is compared with) for every row of the table."""
    raws = {"kafka-python": lambda: raw_kafka_python(bootstrap, topic, n),
            "librdkafka": lambda: raw_librdkafka(bootstrap, topic, n)}
    rows: list[tuple[Measurement, Measurement | None]] = []
    daemon_from_file(stream, tmp, args.batch_size)  # warm-up: numba's cache, imports
    for client in CLIENTS:
        ceiling = median_of(args.repeat, raws[client])
        rows.append((ceiling, ceiling))
        for sink in (False, True):
            rows.append((median_of(args.repeat, lambda c=client, s=sink: daemon_kafka(
                bootstrap, topic, n, tmp, c, s, args.batch_size)), ceiling))
    rows.append((median_of(args.repeat, lambda: daemon_from_file(stream, tmp,
                                                                 args.batch_size)), None))
    return rows


def table(rows: list[tuple[Measurement, Measurement | None]], header: str) -> str:
    lines = [header, "",
             "| what | records | seconds | records/s | vs this client's raw consume + decode |",
             "|---|---:|---:|---:|---:|"]
    for m, ceiling in rows:
        ratio = f"{m.per_s / ceiling.per_s:.2f}" if ceiling is not None else ""
        lines.append(f"| {m.name} | {m.records} | {m.seconds:.2f} | {m.per_s:,.0f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--keys", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the median counts")
    parser.add_argument("--latency", action="store_true",
                        help="also p50/p99 record latency at about half the end-to-end rate")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from adaptd.broker import EmbeddedBroker

    stream = f"synthetic:linear-tasks?d=10&seed=7&keys={args.keys}&n={args.records}"
    topic = "bench-in"
    with tempfile.TemporaryDirectory(prefix="adaptd-bench-") as tmp, EmbeddedBroker() as broker:
        produced = produce_input(broker.bootstrap, topic, stream, args.partitions)
        rows = throughput_rows(broker.bootstrap, topic, produced, stream, Path(tmp), args)
        text = table(rows, (
            f"Kafka throughput: {produced} records, 10 features, {args.keys} keys, "
            f"{args.partitions} partitions, embedded Tansu broker, median of {args.repeat}"))
        if args.latency:
            from benchmarks.kafka_latency import latency_table

            rates = {m.name.split(":")[0]: m.per_s for m, _ in rows
                     if m.name.endswith("produced to Kafka")}
            text += "\n\n" + latency_table(broker.bootstrap, Path(tmp), rates, args)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
