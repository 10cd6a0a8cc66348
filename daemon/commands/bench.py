"""``adaptd bench [--quick] [--out DIR]``: adaptd against its peers, written up as a report.

Runs the suite of :mod:`adaptd.bench.suite` (every learner on every stream, in one process, one
learner at a time), shows a progress bar on stderr and writes ``DIR/report.md`` with tables
and PNG plots. Exits 1 when any learner failed on any stream (the report lists the failures).
Needs the ``bench`` extra (matplotlib, vowpalwabbit).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import tempfile
from pathlib import Path

from adaptd.errors import ConfigError, StartError

log = logging.getLogger(__name__)

#: The modules of the ``bench`` extra. The suite imports them lazily (matplotlib only when the
#: report is drawn, after minutes of work), so they are checked before anything runs.
BENCH_EXTRA_MODULES = ("matplotlib", "vowpalwabbit")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="the smoke-test suite: one stream per family, short, one seed "
                             "(under two minutes)")
    parser.add_argument("--out", default="bench-report", metavar="DIR",
                        help="directory for report.md, the PNG plots and results.json "
                             "(default: %(default)s)")
    parser.add_argument("--learners", default=None, metavar="A,B",
                        help="comma-separated subset of learners (default: all)")
    parser.add_argument("--streams", default=None, metavar="TEXT",
                        help="only the streams whose name contains TEXT")


def require_bench_extra() -> None:
    """Raise :class:`StartError` naming the extra when one of its modules is missing."""
    for name in BENCH_EXTRA_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            raise StartError(f"needs the bench extra ({name} is not installed): "
                             f"pip install 'adaptd[bench]' (or make install)") from None


def run(args: argparse.Namespace) -> int:
    require_bench_extra()
    from adaptd.bench.learners import learner_specs
    from adaptd.bench.report import write_report
    from adaptd.bench.suite import SuiteConfig, run_suite

    names = args.learners.split(",") if args.learners else None
    if names is not None:
        try:
            learner_specs(names)
        except ValueError as exc:
            raise ConfigError(f"--learners: {exc}") from None
    config = SuiteConfig.preset(quick=args.quick)
    out = Path(args.out)
    from adaptd.commands.checks import os_reason

    try:
        out.mkdir(parents=True, exist_ok=True)  # now, not after minutes of benchmarking
    except OSError as exc:
        raise StartError(f"--out {out}: cannot create the report directory: "
                         f"{os_reason(exc)}") from None
    if args.log_level is None:
        # Logging shares stderr with the progress bar: the engine's per-drift INFO lines
        # (thousands per run) would bury it. --log-level brings them back.
        logging.getLogger("adaptd").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="adaptd-bench-") as workdir:
        result = run_suite(
            config,
            Path(workdir),
            learner_names=names,
            stream_filter=(lambda s: args.streams in s.name) if args.streams else None,
            progress_out=sys.stderr,
        )
    path = write_report(result, out)
    print(f"wrote {path} ({result.seconds:.0f} s)")
    for failure in result.failures:
        print(f"FAILED {failure.learner} on {failure.stream} seed {failure.seed}: "
              f"{failure.error}", file=sys.stderr)
    return 1 if result.failures else 0
