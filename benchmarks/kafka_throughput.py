"""End-to-end throughput through Kafka for both clients, next to each client's raw ceiling.

On the embedded Tansu broker, ``--records`` 10-feature labelled records
(``synthetic:linear-tasks?d=10``, keyed over ``--partitions`` partitions), written by an
independent librdkafka producer. Each row is the median of ``--repeat`` runs, all in one run
of this script, raw and adaptd rows alternating:

- **raw consume + decode**: the client alone, in this process, reads every record and
  ``orjson.loads`` it — the ceiling for any Python consumer of this broker through that client
  on this machine;
- **adaptd**: the public CLI, ``adaptd run --model linear`` as a separate process at its default
  settings, reads a topic of its own holding the same records (a fresh topic per run: the
  changelog of a finished run would resume the next one at the end) through that client
  (``?client=…``), validates, predicts, learns, and either writes every prediction back to
  Kafka through the same client or emits nothing; an independent librdkafka consumer then checks
  that every prediction arrived. Records/s is the one ``adaptd run`` reports when it finishes
  (from opening the source to the final checkpoint; the process start-up, imports mostly, is
  not in it, nor the part of the state topics' connection that overlaps the runner's build,
  on a thread of its own: compare whole-process times too when start-up moves);
- **adaptd from a jsonl file**: the same records without Kafka, the engine's own ceiling.

``--model linear`` because this measures the I/O around the engine: the default ``auto`` model
also runs an MLP per key, whose cost is the engine's (see the README's engine tables).

With ``--latency`` it also measures record latency (the input's produce timestamp → the
prediction read back) at about half of each client's end-to-end rate.

Usage::

    python -m benchmarks.kafka_throughput --records 100000 [--latency]

Prints a markdown table. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import logging
import re
import subprocess
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


def median_of(runs: list[Measurement]) -> Measurement:
    """The run with the median rate."""
    ranked = sorted(runs, key=lambda m: m.per_s)
    return ranked[len(ranked) // 2]


def input_records(stream: str) -> list[tuple[bytes, bytes]]:
    """(value, key) of every record of ``stream``, keyed like ``adaptd produce``."""
    from adaptd.commands.produce import record_key
    from adaptd.connectors.registry import open_source

    source = open_source(stream)
    source.open({})
    out = []
    while raws := source.poll(10_000, 0.1):
        out += [(r.value, record_key(r.value)) for r in raws]
    source.close()
    return out


def produce_input(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]],
                  partitions: int) -> int:
    """Write the records to a new topic with a plain librdkafka producer."""
    from confluent_kafka import Producer

    from adaptd.connectors.kafka import ensure_topic, sink_options

    ensure_topic(sink_options(f"kafka://{bootstrap}/{topic}?client=librdkafka"), partitions)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         "partitioner": "murmur2_random"})
    for value, key in records:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0, "input not fully produced"
    return len(records)


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


#: ``adaptd run: done: 100000 records, …, 51,234 records/s``
_SUMMARY = re.compile(r"adaptd run: done: (\d+) records, .* ([\d,]+) records/s")


def adaptd_run(name: str, args: list[str], tmp: Path) -> Measurement:
    """``adaptd run --model linear ARGS`` as its own process, at default settings otherwise; its
    records and the records/s it reports."""
    state_dir = tmp / f"state-{uuid.uuid4().hex[:8]}"
    command = [sys.executable, "-m", "adaptd", "run", "--model", "linear", "--metrics-port",
               "off", "--log-level", "WARNING", "--state-dir", str(state_dir), *args]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    match = _SUMMARY.search(done.stderr)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"{name}: adaptd run failed ({done.returncode}):\n{done.stderr}")
    records, rate = int(match[1]), float(match[2].replace(",", ""))
    return Measurement(name, records, records / rate)


def daemon_kafka(bootstrap: str, records: list[tuple[bytes, bytes]], tmp: Path, client: str,
                 sink: bool, args: argparse.Namespace) -> Measurement:
    """One ``adaptd run`` over a fresh topic of ``records`` through ``client``; predictions
    to a topic or nowhere."""
    run_id = uuid.uuid4().hex[:8]
    topic = f"bench-{run_id}"
    n = produce_input(bootstrap, topic, records, args.partitions)
    out_topic = f"{topic}-predictions"
    flags = ["--source", f"kafka://{bootstrap}/{topic}?client={client}&limit={n}",
             "--dead-letter", f"kafka://{bootstrap}/{topic}-dead?client={client}"]
    if sink:
        flags += ["--sink", f"kafka://{bootstrap}/{out_topic}?client={client}"]
    if args.batch_size is not None:
        flags += ["--batch-size", str(args.batch_size)]
    m = adaptd_run(f"{client}: adaptd run" + (", predictions produced to Kafka" if sink else
                                              ", no output"), flags, tmp)
    assert m.records == n, f"{m.name}: {m.records} of {n} records"
    if sink:
        delivered = count_topic(bootstrap, out_topic, n)
        assert delivered >= n, f"{m.name}: {delivered} of {n} predictions arrived"
    return m


def daemon_from_file(records: list[tuple[bytes, bytes]], tmp: Path,
                     args: argparse.Namespace) -> Measurement:
    """The same records from a jsonl file: what the engine costs without Kafka."""
    path = tmp / "records.jsonl"
    if not path.exists():
        path.write_bytes(b"".join(value + b"\n" for value, _ in records))
    flags = ["--source", f"jsonl:{path}"]
    if args.batch_size is not None:
        flags += ["--batch-size", str(args.batch_size)]
    return adaptd_run("engine: adaptd run from a jsonl file (no Kafka, no output)", flags, tmp)


def throughput_rows(bootstrap: str, records: list[tuple[bytes, bytes]], tmp: Path,
                    args: argparse.Namespace) -> list[tuple[Measurement, Measurement | None]]:
    """(measurement, the raw ceiling it is compared with) for every row of the table; each
    repeat measures every row once, so load that comes and goes spreads over all rows."""
    raw_topic = "bench-raw"
    n = produce_input(bootstrap, raw_topic, records, args.partitions)
    raws: dict[str, Callable[[], Measurement]] = {
        "kafka-python": lambda: raw_kafka_python(bootstrap, raw_topic, n),
        "librdkafka": lambda: raw_librdkafka(bootstrap, raw_topic, n)}
    daemon_from_file(records, tmp, args)  # warm-up: numba's cache, the page cache
    runs: dict[str, list[Measurement]] = {}
    for _ in range(args.repeat):
        for client in CLIENTS:
            for kind, run in (("raw", raws[client]),
                              ("plain", lambda c=client: daemon_kafka(
                                  bootstrap, records, tmp, c, False, args)),
                              ("sink", lambda c=client: daemon_kafka(
                                  bootstrap, records, tmp, c, True, args))):
                runs.setdefault(f"{client} {kind}", []).append(run())
        runs.setdefault("file", []).append(daemon_from_file(records, tmp, args))
    rows: list[tuple[Measurement, Measurement | None]] = []
    for client in CLIENTS:
        ceiling = median_of(runs[f"{client} raw"])
        rows += [(ceiling, ceiling), (median_of(runs[f"{client} plain"]), ceiling),
                 (median_of(runs[f"{client} sink"]), ceiling)]
    rows.append((median_of(runs["file"]), None))
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
    parser.add_argument("--batch-size", type=int, default=None,
                        help="adaptd run --batch-size (default: the daemon's own)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the median counts")
    parser.add_argument("--latency", action="store_true",
                        help="also p50/p99 record latency at about half the end-to-end rate")
    parser.add_argument("--live-max", type=float, default=None, metavar="SECONDS",
                        help="with --latency: also the most each client sustains with its "
                             "input produced live, and the latency at half of that "
                             "(benchmarks.kafka_latency)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from adaptd.broker import EmbeddedBroker

    records = input_records(
        f"synthetic:linear-tasks?d=10&seed=7&keys={args.keys}&n={args.records}")
    with tempfile.TemporaryDirectory(prefix="adaptd-bench-") as tmp, EmbeddedBroker() as broker:
        rows = throughput_rows(broker.bootstrap, records, Path(tmp), args)
        text = table(rows, (
            f"Kafka throughput: {len(records)} records, 10 features, {args.keys} keys, "
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
