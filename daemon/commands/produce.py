"""``adaptd produce``: replay any source (synthetic, jsonl, stdin) into a Kafka topic.

Each record keeps its bytes and is keyed by its ``key`` field (``default`` when absent), so
all records of one key land on one partition, which is what lets a daemon's task state live
with its partition. The topic is created with ``--partitions`` partitions if it is missing.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Callable

from adaptd.connectors.base import SinkMessage, parse_uri
from adaptd.connectors.registry import open_source
from adaptd.errors import ConfigError
from adaptd.records import DEFAULT_KEY, parse_json

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, metavar="URI",
                        help="e.g. synthetic:sinusoid?keys=8&n=20000, jsonl:records.jsonl")
    parser.add_argument("--sink", required=True, metavar="URI", help="kafka://HOST:PORT/TOPIC")
    parser.add_argument("--partitions", type=int, default=None, metavar="N",
                        help="create the topic with N partitions if it does not exist")
    parser.add_argument("--rate", type=float, default=None, metavar="R",
                        help="records per second (default: as fast as the broker takes them)")


def record_key(value: bytes) -> bytes:
    """The Kafka key of a raw record: its ``key`` field, as the daemon would read it."""
    try:
        obj = parse_json(value)
    except ValueError:
        return DEFAULT_KEY.encode()
    key = obj.get("key", DEFAULT_KEY) if isinstance(obj, dict) else DEFAULT_KEY
    return str(key).encode()


def replay(
    source_uri: str,
    sink_uri: str,
    partitions: int | None = None,
    rate: float | None = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[int], None] | None = None,
    batch_size: int = 1000,
) -> int:
    """Copy every record of ``source_uri`` into the Kafka topic of ``sink_uri``. Blocks until
    the source is exhausted or ``stop`` is set; returns the number of records produced.

    Raises :class:`ConfigError` for a sink that is not Kafka.
    """
    from adaptd.connectors.kafka import kafka_sink, sink_options

    if parse_uri(sink_uri).scheme != "kafka":
        raise ConfigError(f"--sink {sink_uri!r}: adaptd produce writes to kafka://HOST:PORT/TOPIC")
    options = sink_options(sink_uri)
    if partitions is not None:
        if partitions < 1:
            raise ConfigError(f"--partitions must be >= 1, got {partitions}")
        options = sink_options(f"{sink_uri}{'&' if '?' in sink_uri else '?'}partitions={partitions}")
    if rate is not None and rate <= 0:
        raise ConfigError(f"--rate must be > 0, got {rate}")
    if rate is not None:
        batch_size = max(1, min(batch_size, int(rate / 20)))  # ~20 writes a second
    source = open_source(source_uri)
    sink = kafka_sink(options)
    produced = 0
    started = time.monotonic()
    try:
        source.open({})
        while not (stop is not None and stop.is_set()):
            raws = source.poll(batch_size, 0.2)
            if not raws:
                if source.exhausted:
                    break
                continue
            sink.write([SinkMessage(value=r.value, key=record_key(r.value)) for r in raws])
            produced += len(raws)
            if sink.backlog() > 10 * batch_size:
                sink.flush()  # keep memory bounded when the broker is slower than the source
            if on_progress is not None:
                on_progress(produced)
            if rate is not None:
                ahead_s = produced / rate - (time.monotonic() - started)
                if ahead_s > 0 and stop is not None:
                    stop.wait(ahead_s)
                elif ahead_s > 0:
                    time.sleep(ahead_s)
        sink.flush()
    finally:
        source.close()
        sink.close()
    return produced


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    n = replay(args.source, args.sink, partitions=args.partitions, rate=args.rate)
    elapsed = time.monotonic() - started
    print(f"adaptd produce: {n} records into {args.sink} in {elapsed:.1f} s "
          f"({n / elapsed if elapsed > 0 else 0:,.0f} records/s)")
    return 0
