"""Record latency through the daemon at a steady rate: the input's produce timestamp → the
prediction read back, p50 and p99, per client. Used by ``kafka_throughput --latency``.

``adaptd run --model linear`` runs as its own process (the public CLI, default settings). A
plain librdkafka producer in this process writes the input at a fixed rate (about half the
client's measured end-to-end rate) and notes each record's (partition, offset, timestamp); a
plain librdkafka consumer in a thread reads the predictions as they arrive and notes when. Both
share the machine's cores with the daemon and the broker, so they are kept cheap (no Python
call per delivery once the warm-up has shown where each key goes) and their CPU is reported
too ("load generator"). The
first ``WARM_UP`` records (the daemon's start: assignment, the engine's compiled code) are sent
before timing starts and are not counted.

What is measured is an upper bound of the daemon's own decode → emitted time: it adds the input
producer's linger, the broker's fetch wait (twice: the daemon's fetch and the checker's) and the
daemon's producer's linger. Every one of these settings is printed with the table
(:class:`Setup`). The peer row, measured the same way in the same run, replaces the daemon with
a plain librdkafka loop that reads each record and produces a small message for it, with the
daemon's own fetch and producer settings: the floor of this broker, machine and set-up. The
daemon's own decode → emitted time comes from its ``adaptd_record_latency_seconds`` histogram
(observed once per batch, for all its records), scraped from ``/metrics`` when the warm-up has
been read back and again when every timed prediction has: the difference of the two holds the
timed records alone, and its quantiles are bucket bounds (the next bucket edge up).

Two rates: the one given (``--rate``, each client's end-to-end maximum from a pre-filled topic,
:mod:`benchmarks.kafka_throughput`), and, with ``--live-max SECONDS``, the most the daemon
sustains in this set-up itself, where the broker also ingests the input and this process
produces and checks it on the same cores (:func:`live_max`); the latency is measured at half
of each, side by side.

Why the fetch wait matters here: Tansu (the embedded broker) does not answer a waiting fetch as
soon as data arrives, as Apache Kafka does, so a consumer's ``fetch.wait.max.ms`` is part of
every record's latency on it. By default the daemon runs with its own settings (what a user
gets: a 10-ms wait with both clients while records come) and the pass-through waits 10 ms;
``--fetch-wait-ms`` sets one wait for the daemon and the pass-through alike.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from adaptd.collector import cyclic_gc_paused
from adaptd.connectors.kafka_options import KafkaSinkOptions

#: The daemon's decode → emitted histogram (``/metrics``).
OWN_LATENCY = "adaptd_record_latency_seconds_bucket"

#: Records sent (and read back) before the timed ones.
WARM_UP = 2_000
#: How often the input producer sends the records due (:func:`_pace_placed`).
TICK_S = 0.001
#: The pass-through's fetch wait when the daemon runs with its default (adaptd's default).
PASS_THROUGH_FETCH_WAIT_MS = 10
#: The peer row: a plain librdkafka consumer that produces a small JSON message per record
#: it reads (no decode into a model, no learning): the floor of this broker and machine.
PASS_THROUGH = "librdkafka pass-through"
#: The kafka-python client's own floor, beside the kafka-python daemon: the same loop with a
#: plain kafka-python consumer (the daemon's fetch settings) and the same librdkafka producer,
#: so the row holds what kafka-python's consumer adds and nothing of a slower producer.
PASS_THROUGH_KP = "kafka-python consumer pass-through"
#: Each pass-through row and the client its consumer is.
PASS_THROUGHS = {PASS_THROUGH: "librdkafka", PASS_THROUGH_KP: "kafka-python"}


@dataclass(frozen=True)
class Setup:
    """The clients' settings of one latency run; all of them are part of what is measured."""

    #: The daemon's source ``fetch_max_wait_ms`` (None: the daemon's default, not on the URI:
    #: what a user gets), and the pass-through consumer's (None: 10 ms, adaptd's default).
    #: Tansu holds a waiting fetch, so the wait is part of every record's latency on it.
    fetch_wait_ms: int | None = None
    #: The daemon's sink ``linger_ms``, and the pass-through producer's.
    sink_linger_ms: int = KafkaSinkOptions.linger_ms
    #: The input producer's (the user's upstream producer) ``linger.ms``: librdkafka's
    #: default. Shorter sends a produce request per few records at these rates, which queue
    #: up at the broker and measure the input producer instead of the daemon.
    input_linger_ms: int = 5
    #: The checker's ``fetch.wait.max.ms``.
    check_fetch_wait_ms: int = 5

    @property
    def pass_through_fetch_wait_ms(self) -> int:
        return PASS_THROUGH_FETCH_WAIT_MS if self.fetch_wait_ms is None else self.fetch_wait_ms

    def describe(self) -> str:
        daemon = ("the daemon's default" if self.fetch_wait_ms is None
                  else f"{self.fetch_wait_ms} ms")
        return (f"input producer linger {self.input_linger_ms} ms; daemon fetch wait {daemon}, "
                f"pass-through's {self.pass_through_fetch_wait_ms} ms; both: producer linger "
                f"{self.sink_linger_ms} ms (acks=all, idempotent); checker fetch wait "
                f"{self.check_fetch_wait_ms} ms")


def pass_through(bootstrap: str, topic_in: str, topic_out: str, n: int, setup: Setup,
                 consumer_client: str = "librdkafka") -> None:
    """Consume ``n`` records of ``topic_in`` and produce one message per record to
    ``topic_out`` with its partition and position, as plainly as the client allows, with the
    daemon's fetch and producer settings (``setup``); librdkafka produces either way."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": setup.sink_linger_ms,
                         "acks": "all", "enable.idempotence": True,
                         "partitioner": "murmur2_random"})
    read = _kafka_python_reader if consumer_client == "kafka-python" else _librdkafka_reader
    for seen, (partition, offset, key, value) in enumerate(read(bootstrap, topic_in, setup), 1):
        orjson.loads(value)
        producer.produce(topic_out, orjson.dumps({"partition": partition, "position": offset}),
                         key)
        if seen >= n:
            break
        if seen % 256 == 0:
            producer.poll(0)
    producer.flush(30)


#: What a pass-through's reader yields per record: partition, offset, key, value.
Read = Iterator[tuple[int, int, bytes | None, bytes]]


def _librdkafka_reader(bootstrap: str, topic: str, setup: Setup) -> Read:
    """Every record of ``topic`` from its start, read as adaptd's librdkafka source fetches
    and waits (what is fetched at once, else the first record to come)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "pass-through",
                         "enable.auto.commit": False,
                         "fetch.wait.max.ms": setup.pass_through_fetch_wait_ms})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    try:
        while True:
            messages = consumer.consume(1024, 0)
            if not messages and (first := consumer.poll(0.2)) is not None:
                messages = [first, *consumer.consume(1023, 0)]
            for m in messages:
                if m.error() is None:
                    yield m.partition(), m.offset(), m.key(), m.value()
    finally:
        consumer.close()


def _kafka_python_reader(bootstrap: str, topic: str, setup: Setup) -> Read:
    """Every record of ``topic`` from its start through a plain kafka-python consumer with
    the fetch wait and poll size adaptd's kafka-python source uses."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             fetch_max_wait_ms=setup.pass_through_fetch_wait_ms)
    partitions = sorted(consumer.partitions_for_topic(topic) or ())
    consumer.assign([TopicPartition(topic, p) for p in partitions])
    consumer.seek_to_beginning()
    try:
        while True:
            for tp, messages in consumer.poll(timeout_ms=200, max_records=4096).items():
                for m in messages:
                    yield tp.partition, m.offset, m.key, m.value
    finally:
        consumer.close(autocommit=False)


def _pace(producer: Any, topic: str, values: list[tuple[bytes, bytes]], rate: float,
          sent: dict[tuple[int, int], int], acked: dict[tuple[int, int], int] | None = None,
          partition_of: dict[bytes, int] | None = None) -> None:
    """Produce ``values`` at ``rate`` records/s; note each delivered record's timestamp (and,
    into ``acked``, when its delivery report was served: an upper bound of when the broker
    held it; into ``partition_of``, its key's partition), from a delivery callback per
    record. Used for the warm-up, which so tells where each key goes (:func:`_placed`), and
    when ``acked`` is wanted (``--trace``)."""

    def delivered(err: Any, msg: Any) -> None:
        if err is None:
            sent[(msg.partition(), msg.offset())] = msg.timestamp()[1]
            if acked is not None:
                acked[(msg.partition(), msg.offset())] = int(time.time() * 1000)
            if partition_of is not None:
                partition_of[msg.key()] = msg.partition()

    started = time.monotonic()
    for i, (value, key) in enumerate(values):
        ahead_s = i / rate - (time.monotonic() - started)
        # Behind the pace, delivery reports are still served: librdkafka counts a message
        # against its queue (100,000 messages) until its report is, and a pace that fell
        # behind would fill it (BufferError) on runs longer than a second.
        producer.poll(ahead_s if ahead_s > 0.001 else 0)
        producer.produce(topic, value, key, on_delivery=delivered)
    producer.flush(30)


def _placed(values: list[tuple[bytes, bytes]], warm: dict[tuple[int, int], int],
            partition_of: dict[bytes, int]) -> list[tuple[int, int]] | None:
    """Where each of ``values`` will land, (partition, offset), when produced after the
    warm-up (``warm``: its records' places) by the same producer: its key's partition (as
    in the warm-up: the producer's partitioner hashes the key) and the next offset there
    (one producer, in order, on a fresh topic). None if a key was not seen in the warm-up."""
    nxt = {p: o + 1 for p, o in sorted(warm)}
    where = []
    for _, key in values:
        p = partition_of.get(key)
        if p is None:
            return None
        o = nxt.get(p, 0)
        nxt[p] = o + 1
        where.append((p, o))
    return where


def _pace_placed(producer: Any, topic: str, values: list[tuple[bytes, bytes]], rate: float,
                 where: list[tuple[int, int]], sent: dict[tuple[int, int], int]) -> None:
    """:func:`_pace` without a Python call per delivery: each record goes out once due (the
    ones due since the last pass in one burst), stamped with the wall clock of its burst as
    its Kafka timestamp (``timestamp=``, what the delivery callback read back before), and
    ``where`` (:func:`_placed`) says its (partition, offset). The last record of each
    partition is checked against its delivery report. At 52,000 records/s the callback per
    record and a clock and poll call per record cost this process, on the two cores the
    daemon and the broker need, more than the checker does."""
    checked: dict[int, int] = {}
    last = {p: i for i, (p, _) in enumerate(where)}
    wrong: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        i = checked[msg.partition()]
        if err is not None or (msg.partition(), msg.offset()) != where[i]:
            wrong.append(f"record {i}: expected {where[i]}, got "
                         f"{(msg.partition(), msg.offset())} ({err})")

    produce, poll, clock = producer.produce, producer.poll, time.monotonic
    wall_ms = (time.time() - clock()) * 1000  # the monotonic clock to wall-clock ms
    stamps = [0] * len(values)
    started = clock()
    i, n = 0, len(values)
    while i < n:
        now = clock()
        due = min(n, int((now - started) * rate) + 1)
        if due <= i:
            # A millisecond's records at a time (the producer lingers 5 ms anyway): waiting
            # for each record's own due time spun this process on the clock and poll calls.
            time.sleep(max(TICK_S, i / rate - (now - started)))
            continue
        stamp = int((now * 1000) + wall_ms)
        due = min(due, i + 1000)  # a pace fallen behind still serves reports between
        for j in range(i, due):
            value, key = values[j]
            try:
                if last.get(where[j][0]) == j:
                    checked[where[j][0]] = j
                    produce(topic, value, key, timestamp=stamp, on_delivery=delivered)
                else:
                    produce(topic, value, key, timestamp=stamp)
            except BufferError:  # a rate above what the broker takes (--live-max): it waits
                due = j
                break
            stamps[j] = stamp
        # Delivery reports served each pass: librdkafka counts a message against its queue
        # (100,000 messages) until its report is.
        poll(0 if due > i else TICK_S)
        i = due
    producer.flush(30)
    if wrong:
        raise RuntimeError("the input did not land where expected: " + "; ".join(wrong))
    sent.update(zip(where, stamps))


def _collect(bootstrap: str, topic: str, n: int, received: dict[tuple[int, int], int],
             stop: threading.Event, fetch_wait_ms: int) -> None:
    """Read predictions as they arrive; note the arrival time of each (partition, position).
    Assigned, not subscribed: a group join takes seconds on this broker."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

    # Unbound, so map calls them in C; a prediction always has a value.
    _value: Callable[[Any], bytes] = Message.value  # type: ignore[assignment]
    _error = Message.error
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "latency-check",
                         "fetch.wait.max.ms": fetch_wait_ms, "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    while len(received) < n and not stop.is_set():
        # What is fetched already, else the first message to come: ``consume(1000, 0.05)``
        # would wait for 1000 messages or the whole 50 ms, and add that wait to every record
        # read at a modest rate (a median 25 ms of the checker's own).
        messages = consumer.consume(1000, 0)
        if not messages and (first := consumer.poll(0.05)) is not None:
            messages = [first]
        now_ms = int(time.time() * 1000)
        if any(map(_error, messages)):
            messages = [m for m in messages if m.error() is None]
        # In C but for the two lookups: the checker shares the two cores with what it times.
        for body in map(orjson.loads, map(_value, messages)):
            received.setdefault((body["partition"], body["position"]), now_ms)
    consumer.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _own_buckets(port: int | None) -> dict[float, float]:
    """The daemon's cumulative decode → emitted bucket counts by upper bound (s)."""
    if port is None:
        return {}
    from urllib.request import urlopen

    try:
        with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:  # the daemon is gone: its exit status says why
        return {}
    buckets = {}
    for line in text.splitlines():
        if line.startswith(OWN_LATENCY):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(le)] = float(line.rsplit(" ", 1)[1])
    return buckets


def _cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system, every thread) process ``pid`` has used; NaN where
    ``/proc`` cannot tell (not Linux, no such process)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The smallest bucket bound (ms) holding a share ``q`` of the observations made between
    the two scrapes; NaN without any."""
    counts = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = counts.get(math.inf, 0.0)
    if total <= 0:
        return float("nan")
    return next(le for le, c in counts.items() if c >= q * total) * 1000


@dataclass(frozen=True)
class Measured:
    """One latency run: the latencies of the timed records (ms), the daemon's own decode →
    emitted p50 and p99 (bucket bounds, ms), and the CPU the daemon (or pass-through) process
    and the broker used while the timed records went through, in µs per record: on a shared
    machine, what the daemon costs is steadier than how long it takes."""

    latencies_ms: list[int]
    own50_ms: float
    own99_ms: float
    cpu_us: float
    broker_cpu_us: float
    #: This process's (the input producer's and the checker's) CPU, µs per record: it runs
    #: on the same cores as the daemon and the broker.
    load_cpu_us: float = math.nan

    #: Predictions read back per second while the input was produced, from the end of its
    #: first fifth (the daemon's start of the timed records) to its last record: at a rate
    #: the set-up keeps up with, about that rate; above it, the most it sustains (live).
    out_rate: float = math.nan

    def quantile(self, q: float) -> float:
        lat = self.latencies_ms
        return lat[min(len(lat) - 1, int(len(lat) * q))] if lat else math.nan


def _out_rate(sent: dict[tuple[int, int], int], received: dict[tuple[int, int], int]) -> float:
    """Timed predictions read back per second while their input was still produced, after
    its first fifth (:attr:`Measured.out_rate`); NaN for a run too short to tell."""
    if not sent:
        return math.nan
    first, last = min(sent.values()), max(sent.values())
    start = first + (last - first) / 5
    if last - start < 100:  # ms
        return math.nan
    timed = [received[k] for k in received.keys() & sent.keys()]
    return sum(1 for t in timed if start <= t <= last) / (last - start) * 1000


@contextlib.contextmanager
def _collector_off() -> Iterator[None]:
    """This process's cyclic collector off while records are timed, its objects so far frozen
    out of later collections. The timed window's dicts (``sent``, ``received``: 100k entries)
    and the input values made a full collection 63-209 ms long in 8 of 9 traced runs; the
    checker thread, which stamps each prediction's arrival, stopped meanwhile, so at 60k
    records/s one pause alone set the p99 (h-latkp, session 11). Nothing timed makes cycles."""
    gc.collect()
    gc.freeze()
    try:
        with cyclic_gc_paused():
            yield
    finally:
        gc.unfreeze()


def measure(bootstrap: str, tmp: Path, client: str, rate: float, n: int,
            args: argparse.Namespace, setup: Setup) -> Measured:
    """One client at ``rate`` records/s (``args.broker_pid``, if set, names the broker
    process whose CPU is counted too)."""
    from confluent_kafka import Producer

    from adaptd.commands.produce import record_key
    from adaptd.connectors.kafka import ensure_topic, sink_options
    from adaptd.connectors.synthetic import generate
    from adaptd.records import encode

    run_id = uuid.uuid4().hex[:8]
    topic_in, topic_out = f"lat-in-{run_id}", f"lat-out-{run_id}"
    ensure_topic(sink_options(f"kafka://{bootstrap}/{topic_in}"), args.partitions)
    ensure_topic(sink_options(f"kafka://{bootstrap}/{topic_out}"), args.partitions)
    values = [(v := encode(r), record_key(v)) for r in
              generate("linear-tasks", seed=8, n=n + WARM_UP, keys=args.keys, d=10)]
    port = None if client in PASS_THROUGHS else _free_port()
    tracing = port is not None and getattr(args, "trace", None) is not None
    if client in PASS_THROUGHS:
        command = [sys.executable, "-m", "benchmarks.kafka_latency", "--pass-through",
                   bootstrap, topic_in, topic_out, str(n + WARM_UP),
                   orjson.dumps(asdict(setup)).decode(), PASS_THROUGHS[client]]
    else:
        command = [
            sys.executable, "-m", "adaptd", "run", "--model", "linear", "--metrics-port", str(port),
            "--log-level", "WARNING", "--state-dir", str(tmp / f"lat-{run_id}"),
            "--source", f"kafka://{bootstrap}/{topic_in}?client={client}" + (
                "" if setup.fetch_wait_ms is None else f"&fetch_max_wait_ms={setup.fetch_wait_ms}"),
            "--sink", (f"kafka://{bootstrap}/{topic_out}?client={client}"
                      f"&linger_ms={setup.sink_linger_ms}"
                      + "".join(f"&{o}" for o in getattr(args, "sink_option", None) or ())),
            "--dead-letter", f"kafka://{bootstrap}/{topic_in}-dead?client={client}"]
        if getattr(args, "batch_size", None) is not None:
            command += ["--batch-size", str(args.batch_size)]
        trace = getattr(args, "trace", None)
        if trace is not None:  # the same CLI run, with stage timestamps (latency_trace)
            trace_file = str(Path(trace) / f"{client}-{run_id}.jsonl")
            command[1:3] = ["-m", "benchmarks.latency_trace", trace_file]
    daemon = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random",
                         "linger.ms": setup.input_linger_ms})
    warm: dict[tuple[int, int], int] = {}
    sent: dict[tuple[int, int], int] = {}
    acked: dict[tuple[int, int], int] = {}
    received: dict[tuple[int, int], int] = {}
    stop = threading.Event()
    checker = threading.Thread(target=_collect, daemon=True,
                               args=(bootstrap, topic_out, n + WARM_UP, received, stop,
                                     setup.check_fetch_wait_ms))
    checker.start()
    try:
        partition_of: dict[bytes, int] = {}
        _pace(producer, topic_in, values[:WARM_UP], rate, warm, partition_of=partition_of)
        deadline = time.monotonic() + 120
        while len(received) < WARM_UP and time.monotonic() < deadline:
            time.sleep(0.05)
        own_before = _own_buckets(port)
        broker_pid = getattr(args, "broker_pid", None)
        timed_values = values[WARM_UP:]
        # Without a trace, no Python call per delivery (see _pace_placed).
        where = None if tracing else _placed(timed_values, warm, partition_of)
        cpu_before, broker_before = _cpu_s(daemon.pid), _cpu_s(broker_pid)
        own_cpu_before = time.process_time()
        with _collector_off():
            if where is None:
                _pace(producer, topic_in, timed_values, rate, sent, acked)
            else:
                _pace_placed(producer, topic_in, timed_values, rate, where, sent)
            checker.join(timeout=60)
        cpu_after, broker_after = _cpu_s(daemon.pid), _cpu_s(broker_pid)
        own_cpu_after = time.process_time()
        own_after = _own_buckets(port)
    finally:
        stop.set()
        if port is not None:  # the daemon reads until stopped: SIGTERM, as an operator would
            daemon.terminate()
        try:
            _, stderr = daemon.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            daemon.kill()
            _, stderr = daemon.communicate()
    if daemon.returncode != 0:
        raise RuntimeError(f"adaptd run ({client}) failed ({daemon.returncode}):\n{stderr}")
    latencies = sorted(received[k] - sent[k] for k in received.keys() & sent.keys())
    out_rate = _out_rate(sent, received)
    if port is not None and getattr(args, "trace", None) is not None:
        from benchmarks.latency_trace import breakdown, load

        timed = {k: received[k] for k in received.keys() & sent.keys()}
        Path(trace_file).with_suffix(".times.json").write_bytes(orjson.dumps(
            [[p, o, sent[p, o], t, acked.get((p, o))] for (p, o), t in timed.items()]))
        print(f"{client} at {rate:,.0f} records/s:\n"
              f"{breakdown(load(trace_file), sent, timed, acked)}\n", flush=True)
    return Measured(latencies, _bucket_quantile(own_before, own_after, 0.5),
                    _bucket_quantile(own_before, own_after, 0.99),
                    (cpu_after - cpu_before) / n * 1e6, (broker_after - broker_before) / n * 1e6,
                    (own_cpu_after - own_cpu_before) / n * 1e6, out_rate)


def latency_table(bootstrap: str, tmp: Path, rates: dict[str, float],
                  args: argparse.Namespace) -> str:
    """Each client at half its rate, each followed by the pass-through at the same rate."""
    wait_ms = getattr(args, "fetch_wait_ms", None)
    setup = Setup() if wait_ms is None else Setup(fetch_wait_ms=wait_ms)
    lines = [("Record latency (input produce timestamp → prediction read back), at about half "
              "of each client's end-to-end rate, after a warm-up of "
              f"{WARM_UP} records; {setup.describe()}:"), "",
             ("| client | rate (records/s) | records | p50 (ms) | p99 (ms) | adaptd's own decode "
              "→ emitted p50 / p99 (ms, bucket bound) | CPU µs/record: process / broker / load "
              "generator |"),
             "|---|---:|---:|---:|---:|---:|---:|"]
    live_seconds = getattr(args, "live_max", None)
    maxima = []
    for client, rate in rates.items():
        targets = {"half the given rate": max(100.0, rate / 2)}
        if live_seconds:
            live = live_max(bootstrap, tmp, client, rate, live_seconds, args, setup)
            maxima.append(live.describe(client))
            targets["half the live maximum"] = max(100.0, live.out_rate / 2)
        for of, target in targets.items():
            n = int(min(args.records, target * 10))  # about ten seconds of input
            peers = (PASS_THROUGH, PASS_THROUGH_KP) if client == "kafka-python" else (
                PASS_THROUGH,)
            for who in (client, *peers):
                m = measure(bootstrap, tmp, who, target, n, args, setup)
                own = "" if who in PASS_THROUGHS else f"≤ {m.own50_ms:g} / ≤ {m.own99_ms:g}"
                rate_text = f"{target:,.0f}" + (f" ({of})" if live_seconds else "")
                lines.append(f"| {who} | {rate_text} | {len(m.latencies_ms)} | "
                             f"{m.quantile(0.5):.0f} | {m.quantile(0.99):.0f} | {own} | "
                             f"{m.cpu_us:.1f} / {m.broker_cpu_us:.1f} / {m.load_cpu_us:.1f} |")
    if maxima:
        lines += ["", ("The most each client sustains in this set-up: the input produced live "
                       f"for {live_seconds:g} s while the daemon runs, the broker ingests and "
                       "the checker reads, first at the given rate, then bisecting between "
                       "what was read back and what was offered; read back: predictions per "
                       "second from the end of the input's first fifth to its last record; "
                       "the maximum: the most read back in any run, at most what it offered "
                       f"(a run within 5 % of its input kept up; {LIVE_STEPS + 1} runs at most):"),
                  "",
                  ("| client | live maximum (records/s) | runs: offered → read back "
                   "(records/s) | CPU µs/record at the maximum: process / broker / load "
                   "generator |"),
                  "|---|---:|---:|---:|", *maxima]
    return "\n".join(lines)


#: Probes of :func:`live_max` after the first, each halving the interval the maximum is in.
LIVE_STEPS = 3


@dataclass(frozen=True)
class Probe:
    """One run with the input offered live at ``offered`` records/s."""

    offered: float
    measured: Measured

    @property
    def kept_up(self) -> bool:
        """What was read back kept up with the input (within 5 %: the read-back of a few
        seconds moves by that much on this shared machine)."""
        return self.measured.out_rate >= 0.95 * self.offered

    @property
    def sustained(self) -> float:
        """What was read back per second, at most what was offered: more is a backlog from
        the input's first fifth drained (seen: 69,877 read back of 63,944 offered)."""
        return min(self.measured.out_rate, self.offered)

    def describe(self) -> str:
        return (f"{self.offered:,.0f} → {self.measured.out_rate:,.0f}"
                + (" (kept up)" if self.kept_up else ""))


@dataclass(frozen=True)
class LiveMax:
    """The probes of :func:`live_max`, in order."""

    probes: list[Probe]

    @property
    def best(self) -> Probe:
        return max(self.probes, key=lambda p: p.sustained)

    @property
    def out_rate(self) -> float:
        """The most sustained in any probe (:attr:`Probe.sustained`)."""
        return self.best.sustained

    def describe(self, client: str) -> str:
        m = self.best.measured
        return (f"| {client} | {self.out_rate:,.0f} | "
                f"{'; '.join(p.describe() for p in self.probes)} | "
                f"{m.cpu_us:.1f} / {m.broker_cpu_us:.1f} / {m.load_cpu_us:.1f} |")


def live_max(bootstrap: str, tmp: Path, client: str, rate: float, seconds: float,
             args: argparse.Namespace, setup: Setup) -> LiveMax:
    """The most ``client``'s daemon sustains with its input produced live, while the broker
    also ingests it and this process produces and checks, on the same cores.

    First the input is offered at ``rate`` (the pre-filled topic's end-to-end rate) for
    ``seconds``; what is read back per second meanwhile (:attr:`Measured.out_rate`) is a
    rate the set-up sustains, but an underestimate of the most it does when ``rate`` is
    above that: ingesting the input it cannot take costs the broker and the producer CPU the
    daemon then lacks. So :data:`LIVE_STEPS` more runs bisect between the two: a run whose
    read-back keeps up with what is offered (:attr:`Probe.kept_up`) raises the lower end. The
    maximum is the most any run read back per second, at most what it offered
    (:attr:`LiveMax.out_rate`)."""
    first = Probe(rate, measure(bootstrap, tmp, client, rate, int(rate * seconds), args, setup))
    probes = [first]
    if first.kept_up:
        return LiveMax(probes)
    low, high = first.measured.out_rate, rate
    for _ in range(LIVE_STEPS):
        mid = (low + high) / 2
        probe = Probe(mid, measure(bootstrap, tmp, client, mid, int(mid * seconds), args,
                                   setup))
        probes.append(probe)
        low, high = (mid, high) if probe.kept_up else (low, mid)
    return LiveMax(probes)


def main(argv: list[str] | None = None) -> int:
    """Latency alone, at given rates: ``python -m benchmarks.kafka_latency --rate
    kafka-python=60000 --rate librdkafka=100000`` (each a measured end-to-end rate: the input
    comes at half of it)."""
    import tempfile

    from adaptd.broker import EmbeddedBroker

    if argv is None and sys.argv[1:2] == ["--pass-through"]:
        bootstrap, topic_in, topic_out, n, setup, consumer_client = sys.argv[2:8]
        pass_through(bootstrap, topic_in, topic_out, int(n), Setup(**orjson.loads(setup)),
                     consumer_client)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", action="append", required=True, metavar="CLIENT=FULL_RATE",
                        help="a client and its measured end-to-end rate (records/s)")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--keys", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="adaptd run --batch-size (default: the daemon's own)")
    parser.add_argument("--fetch-wait-ms", type=int, default=None,
                        help="the daemon's and the pass-through's fetch wait (default: the "
                             "daemon's own, and 10 ms for the pass-through)")
    parser.add_argument("--sink-option", action="append", default=None, metavar="KEY=VALUE",
                        help="an option added to the daemon's sink URI (e.g. acks=1)")
    parser.add_argument("--live-max", type=float, default=None, metavar="SECONDS",
                        help="also measure the most each client sustains with its input "
                             "produced live (offered at the given rate for SECONDS), and the "
                             "latency at half of that too")
    parser.add_argument("--trace", default=None, metavar="DIR",
                        help="run the daemon with stage timestamps (benchmarks/latency_trace.py), "
                             "write them to DIR and print where each record's time went")
    args = parser.parse_args(argv)
    rates = {c: float(r) for c, _, r in (item.partition("=") for item in args.rate)}
    with tempfile.TemporaryDirectory(prefix="adaptd-lat-") as tmp, EmbeddedBroker() as broker:
        args.broker_pid = broker.pid
        print(latency_table(broker.bootstrap, Path(tmp), rates, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
