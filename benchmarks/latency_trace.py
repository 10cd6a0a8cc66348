"""Where a record's latency goes inside the daemon: ``adaptd run`` with a timestamp taken at each
stage of every polled batch, written to a file when the run ends. Used by ``kafka_latency
--trace``; not part of the daemon.

``python -m benchmarks.latency_trace OUT.jsonl run --source … --sink …`` runs the public CLI in
this process with the stages below wrapped (wall-clock seconds, ``time.time()``, the clock the
latency benchmark's producer stamps records with and its checker reads them back by):

* ``acked`` (from the benchmark, not the daemon): the input producer's delivery report for the
  record was served, a bound of when the broker held it;
* ``polled``: the source's ``poll_many`` returned the batch (on the read-ahead thread);
* ``decoded``: its columns were decoded ahead (:func:`adaptd.batch_path.decode_ahead`);
* ``taken``: the runner's thread took it (:meth:`adaptd.runner.Runner.process` began);
* ``learned``: predicted and learned (:meth:`adaptd.runner.Runner.learn` returned);
* ``appended``: its predictions were encoded and appended to the producer (the write-behind
  thread's write returned).

Each line: ``[stage, partition, first position, records, seconds]``, one per stretch of one
partition's consecutive positions in the batch; a checkpoint's beginning and end are
``["checkpoint", -1, 0, 0, s]`` and ``["checkpoint end", -1, 0, 0, s]``. Every record of a
batch shares its stage times. :func:`breakdown` joins them with
the benchmark's per-record produce and read-back times.
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

STAGES = ("sent", "acked", "polled", "decoded", "taken", "learned", "appended", "received")
#: Spans over several stages, reported after the total: (label, first stage, last stage).
SPANS = (("adaptd: decoded → appended (decode → emitted)", "decoded", "appended"),
         ("adaptd: polled → appended", "polled", "appended"))

_events: list[tuple[str, int, int, int, float]] = []
_lock = threading.Lock()


def _runs(polled: Any) -> list[tuple[int, int, int]]:
    """(partition, first position, records) of each stretch of one partition's consecutive
    positions in a batch: a run is one; a list (what a consume returned, drawn from several
    partitions) is one per change of partition. Named by its first record alone, a list's
    records of other partitions would be given the times of positions they do not hold."""
    if not isinstance(polled, list):
        first = polled[0]
        return [(first.partition, first.position, len(polled))]
    runs: list[tuple[int, int, int]] = []
    for record in polled:
        if runs:
            partition, first, n = runs[-1]
            if record.partition == partition and record.position == first + n:
                runs[-1] = (partition, first, n + 1)
                continue
        runs.append((record.partition, record.position, 1))
    return runs


def _note(stage: str, polled: Any) -> None:
    if not polled:
        return
    now = time.time()
    runs = _runs(polled)
    with _lock:
        _events.extend((stage, partition, first, n, now) for partition, first, n in runs)


def _after(owner: Any, name: str, stage: str, batch_of: Callable[..., Any]) -> None:
    """Wrap ``owner.name`` to note ``stage`` when it returns, for the batch ``batch_of``
    finds among its arguments and result."""
    inner = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = inner(*args, **kwargs)
        _note(stage, batch_of(args, result))
        return result

    setattr(owner, name, wrapped)


def _before(owner: Any, name: str, stage: str, arg: int) -> None:
    inner = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        _note(stage, args[arg])
        return inner(*args, **kwargs)

    setattr(owner, name, wrapped)


def _span(owner: Any, name: str) -> None:
    """Wrap ``owner.name`` to note when each call began and ended (partition -1: no batch)."""
    inner = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        began = time.time()
        try:
            return inner(*args, **kwargs)
        finally:
            with _lock:
                _events.append((name, -1, 0, 0, began))
                _events.append((f"{name} end", -1, 0, 0, time.time()))

    setattr(owner, name, wrapped)


def install(out: str) -> None:
    """Wrap the stages (before the daemon builds its runner) and write them at exit."""
    from adaptd import batch_path, runner, write_behind
    from adaptd.connectors import kafka_python

    _after(kafka_python.KafkaPythonSource, "poll_many", "polled", lambda a, r: r)
    try:
        from adaptd.connectors import kafka_librdkafka
        _after(kafka_librdkafka.LibrdkafkaSource, "poll_many", "polled", lambda a, r: r)
    except ImportError:  # the librdkafka extra is not installed
        pass
    _after(batch_path, "decode_ahead", "decoded", lambda a, r: r)
    _before(runner.Runner, "process", "taken", 1)
    _after(runner.Runner, "learn", "learned", lambda a, r: r[1])
    _after(write_behind.WriteBehind, "_encode_and_write", "appended", lambda a, r: a[1])
    _span(runner.Runner, "checkpoint")

    def dump() -> None:
        with open(out, "wb") as f:
            f.writelines(orjson.dumps(e) + b"\n" for e in _events)

    atexit.register(dump)


def load(path: str) -> list[tuple[str, int, int, int, float]]:
    with open(path, "rb") as f:
        return [tuple(orjson.loads(line)) for line in f]  # type: ignore[misc]


def breakdown(events: Iterable[tuple[str, int, int, int, float]],
              sent_ms: Mapping[tuple[int, int], int],
              received_ms: Mapping[tuple[int, int], int],
              acked_ms: Mapping[tuple[int, int], int] | None = None) -> str:
    """A markdown table: each stage's time since the stage before, p50 / p99 over the timed
    records, and its mean over the slowest 1 % (the tail the p99 is made of), in ms."""
    import numpy as np

    at: dict[str, dict[tuple[int, int], float]] = {s: {} for s in STAGES}
    for stage, partition, first, n, t in events:
        if partition < 0:  # a span (a checkpoint), not a batch
            continue
        times = at[stage]
        for position in range(first, first + n):
            times.setdefault((partition, position), t * 1000)
    at["sent"] = {k: float(v) for k, v in sent_ms.items()}
    at["received"] = {k: float(v) for k, v in received_ms.items()}
    at["acked"] = {k: float(v) for k, v in (acked_ms or {}).items()}
    stages = [s for s in STAGES if at[s]]
    keys = sorted(set.intersection(*(set(at[s]) for s in stages)))
    if not keys:
        return "(no record went through every traced stage)"
    table = np.array([[at[s][k] for s in stages] for k in keys])
    total = table[:, -1] - table[:, 0]
    tail = total >= np.quantile(total, 0.99)
    lines = [f"{len(keys)} records:", "",
             "| stage (ms since the stage before) | p50 | p99 | mean of the slowest 1 % |",
             "|---|---:|---:|---:|"]
    for j in range(1, len(stages)):
        d = table[:, j] - table[:, j - 1]
        lines.append(f"| {stages[j - 1]} → {stages[j]} | {np.quantile(d, 0.5):.1f} | "
                     f"{np.quantile(d, 0.99):.1f} | {d[tail].mean():.1f} |")
    lines.append(f"| total | {np.quantile(total, 0.5):.1f} | {np.quantile(total, 0.99):.1f} | "
                 f"{total[tail].mean():.1f} |")
    # The daemon's own share, per record (the "decode → emitted"; the histogram it
    # exposes gives only bucket bounds), and the rest of the total: the broker and clients.
    for label, first, last in SPANS:
        if first in stages and last in stages:
            d = table[:, stages.index(last)] - table[:, stages.index(first)]
            lines.append(f"| {label} | {np.quantile(d, 0.5):.1f} | {np.quantile(d, 0.99):.1f} "
                         f"| {d[tail].mean():.1f} |")
    # Per input partition (a key's predictions go to the same-numbered output partition): a
    # partition whose records lag shows here, where a stage's row mixes every partition.
    partition = np.array([k[0] for k in keys])
    lines.append("")
    lines.append("total by partition (p50 / p99): " + ", ".join(
        f"{p}: {np.quantile(total[partition == p], 0.5):.0f} / "
        f"{np.quantile(total[partition == p], 0.99):.0f}" for p in np.unique(partition)))
    return "\n".join(lines)


def main() -> int:
    import os

    out, argv = sys.argv[1], sys.argv[2:]
    # An experiment's knob: the interpreter's GIL switch interval in the traced daemon.
    if switch_s := os.environ.get("LATENCY_TRACE_SWITCH_INTERVAL_S"):
        sys.setswitchinterval(float(switch_s))
    install(out)
    from adaptd.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
