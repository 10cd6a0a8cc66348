"""Record latency through the daemon at a steady rate: the input's produce timestamp → the
prediction read back, p50 and p99, per client. Used by ``kafka_throughput --latency``.

The input is produced at a fixed rate (about half the client's measured end-to-end rate) by a
plain librdkafka producer that notes each record's (partition, offset, timestamp); a plain
librdkafka consumer reads the predictions as they arrive and notes when; the daemon in between
runs as ``adaptd run`` assembles it, in a thread of this process.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson


def _pace(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]], rate: float,
          sent: dict[tuple[int, int], int]) -> None:
    """Produce ``values`` at ``rate`` records/s; note each delivered record's timestamp."""
    from confluent_kafka import Producer

    def delivered(err: Any, msg: Any) -> None:
        if err is None:
            sent[(msg.partition(), msg.offset())] = msg.timestamp()[1]

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0,
                         "partitioner": "murmur2_random", "on_delivery": delivered})
    started = time.monotonic()
    for i, (value, key) in enumerate(values):
        ahead_s = i / rate - (time.monotonic() - started)
        if ahead_s > 0.002:
            producer.poll(ahead_s)
        producer.produce(topic, value, key)
    producer.flush(30)


def _collect(bootstrap: str, topic: str, n: int, received: dict[tuple[int, int], int],
             stop: threading.Event) -> None:
    """Read predictions as they arrive; note the arrival time of each (partition, position).
    Assigned, not subscribed: a group join takes seconds on this broker."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "latency-check",
                         "fetch.wait.max.ms": 5, "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    while len(received) < n and not stop.is_set():
        for m in consumer.consume(1000, 0.05):
            if m.error() is None:
                now_ms = time.time() * 1000
                body = orjson.loads(m.value())
                received.setdefault((body["partition"], body["position"]), int(now_ms))
    consumer.close()


def measure(bootstrap: str, tmp: Path, client: str, rate: float, n: int,
            args: argparse.Namespace) -> tuple[float, float, int]:
    """(p50 ms, p99 ms, records) of one client at ``rate`` records/s."""
    from prometheus_client import CollectorRegistry

    from adaptd.commands.produce import record_key
    from adaptd.config import load_settings
    from adaptd.connectors.kafka import ensure_topic, sink_options
    from adaptd.connectors.synthetic import generate
    from adaptd.metrics import Metrics
    from adaptd.records import encode
    from adaptd.service import build_runner

    run_id = uuid.uuid4().hex[:8]
    topic_in, topic_out = f"lat-in-{run_id}", f"lat-out-{run_id}"
    ensure_topic(sink_options(f"kafka://{bootstrap}/{topic_in}"), args.partitions)
    ensure_topic(sink_options(f"kafka://{bootstrap}/{topic_out}"), args.partitions)
    values = [(v := encode(r), record_key(v))
              for r in generate("linear-tasks", seed=8, n=n, keys=args.keys, d=10)]
    settings = load_settings(environ={}, flags={
        "source": f"kafka://{bootstrap}/{topic_in}?client={client}&limit={n}",
        "sink": f"kafka://{bootstrap}/{topic_out}?client={client}",
        "dead_letter": f"kafka://{bootstrap}/{topic_in}-dead?client={client}",
        "state_dir": str(tmp / f"lat-{run_id}"), "batch_size": args.batch_size,
        # Latency, not throughput: return from a poll as soon as anything arrived.
        "poll_timeout_s": 0.005})
    settings.metrics_port = None
    runner = build_runner(settings, Metrics(CollectorRegistry()))
    sent: dict[tuple[int, int], int] = {}
    received: dict[tuple[int, int], int] = {}
    stop = threading.Event()
    daemon = threading.Thread(target=runner.run, daemon=True)
    checker = threading.Thread(target=_collect, args=(bootstrap, topic_out, n, received, stop),
                               daemon=True)
    daemon.start()
    checker.start()
    time.sleep(2)  # the daemon's assignment and the checker's group join, before timing
    _pace(bootstrap, topic_in, values, rate, sent)
    checker.join(timeout=60)
    stop.set()
    runner.request_stop()
    daemon.join(timeout=60)
    latencies = sorted(received[k] - sent[k] for k in received.keys() & sent.keys())
    if not latencies:
        return float("nan"), float("nan"), 0
    return (latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)],
            len(latencies))


def latency_table(bootstrap: str, tmp: Path, rates: dict[str, float],
                  args: argparse.Namespace) -> str:
    lines = [("Record latency (input produce timestamp → prediction read back), at about half "
              "of each client's end-to-end rate:"), "",
             "| client | rate (records/s) | records | p50 (ms) | p99 (ms) |",
             "|---|---:|---:|---:|---:|"]
    for client, rate in rates.items():
        target = max(100.0, rate / 2)
        n = int(min(args.records, target * 10))  # about ten seconds of input
        p50, p99, count = measure(bootstrap, tmp, client, target, n, args)
        lines.append(f"| {client} | {target:,.0f} | {count} | {p50:.0f} | {p99:.0f} |")
    return "\n".join(lines)
