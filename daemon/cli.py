"""The ``adaptd`` command line. Each subcommand lives in ``daemon/commands/<name>.py`` with
``add_arguments(parser)`` and ``run(args) -> int``, imported only when it is used so that
``adaptd connectors`` does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from adaptd import __version__, allocator
from adaptd.errors import AdaptdError, ConfigError, StartError

log = logging.getLogger(__name__)

#: name → (module under adaptd.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "consume a source, predict every record, learn from labelled ones"),
    "demo": ("demo", "embedded broker + drifting synthetic stream + daemon + metrics"),
    "bench": ("bench", "adaptd against its peers on the benchmark streams; writes a report"),
    "meta-train": ("meta_train", "bootstrap the meta-state from historical records"),
    "produce": ("produce", "replay a stream into Kafka"),
    "connectors": ("connectors", "list the installed connectors"),
}


def _command_module(name: str) -> object:
    return importlib.import_module(f"adaptd.commands.{COMMANDS[name][0]}")


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adaptd", description="Online adaptive learning daemon.")
    parser.add_argument("--version", action="version", version=f"adaptd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Only the chosen subcommand's module is imported; the others just get their help line.
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--log-level", default=None,
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging threshold")
        if name == chosen:
            _command_module(name).add_arguments(p)  # type: ignore[attr-defined]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (None: the process's own, as the console script and
    ``python -m adaptd`` call it); returns the exit status. A ``run`` of the process's own
    command line that returns exits the process at once (:func:`_exit_now`)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if argv is None:  # this process is adaptd's own: its threads start after this
        allocator.tune()
    code = _main(args_list)
    if argv is None and args_list[:1] == ["run"]:
        _exit_now(code)
    return code


def _exit_now(code: int) -> NoReturn:
    """Exit without the interpreter's teardown: freeing every module and object one by one,
    Numba's and LLVM's included, cost about 0.25 s of CPU after the last record of a run (a
    tenth of a million-record file's whole run). Called once ``run`` has returned, which
    closed all it opened (source, sinks, store: the runner's ``finally``), with the log and
    the standard streams flushed here. No ``atexit`` hook of adaptd's or of its libraries'
    is needed at the end of a run."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or its reader went away
            pass
    os._exit(code)


def _main(args_list: list[str]) -> int:
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    logging.basicConfig(
        level=args.log_level or "INFO",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Anything a user can cause (flags, files, ports, URIs) is raised as a ConfigError and
    # printed as one line; a traceback is left for what only a bug in adaptd can cause.
    try:
        return int(_command_module(args.command).run(args))  # type: ignore[attr-defined]
    except StartError as exc:
        print(f"adaptd {args.command}: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"adaptd {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2
    except AdaptdError as exc:
        # Raised on purpose, with a message naming what failed and where (a sink that failed
        # mid-run, e.g. stdout piped into `head`): the message is the report, after the
        # runner's best-effort checkpoint. The traceback is for --log-level DEBUG.
        log.debug("adaptd %s stopped", args.command, exc_info=True)
        print(f"adaptd {args.command}: stopped: {exc}", file=sys.stderr)
        _quiet_broken_stdout()
        return 1
    except KeyboardInterrupt:
        return 130


def _quiet_broken_stdout() -> None:
    """After stdout's reader went away, stop Python's flush at exit from printing a second
    error about it (the recipe of the `signal` module's documentation)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    raise SystemExit(main())
