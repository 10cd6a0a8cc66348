"""``adaptd demo``: the daemon on a built-in drifting stream, metrics served, a summary at the end.

(The Kafka issue turns this into: embedded broker + producer + daemon.)
"""

from __future__ import annotations

import argparse
import tempfile

from daemon.commands.run import add_settings_arguments, describe_summary, settings_from_args
from daemon.http import MetricsServer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", type=int, default=None, metavar="N",
                        help="stop after N records (default: run until interrupted)")
    parser.add_argument("--keys", type=int, default=4, metavar="K", help="independent keys")
    parser.add_argument("--seed", type=int, default=1)
    add_settings_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from daemon.service import serve

    n = f"&n={args.records}" if args.records else ""
    args.source = f"synthetic:sinusoid?seed={args.seed}&keys={args.keys}{n}"
    if args.state_dir is None:
        args.state_dir = tempfile.mkdtemp(prefix="adaptd-demo-")
    settings = settings_from_args(args)

    def started(server: MetricsServer | None) -> None:
        if server is not None:
            print(f"adaptd demo: live page {server.url}/  metrics {server.url}/metrics", flush=True)
        print(f"adaptd demo: state in {settings.state_dir}", flush=True)

    summary = serve(settings, on_started=started)
    print(f"adaptd demo: {describe_summary(summary)}")
    return 0
