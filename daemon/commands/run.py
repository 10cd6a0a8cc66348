"""``adaptd run``: consume a source, predict every record, learn from the labelled ones."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping

from adaptd.config import load_settings
from adaptd.errors import ConfigError
from adaptd.runner import RunSummary
from adaptd.settings import Settings

log = logging.getLogger(__name__)

#: Client libraries that log every connection and group step at INFO: about sixty lines per
#: demo start, burying the addresses it prints. adaptd's connectors log the lifecycle events
#: that matter; the libraries' warnings still show, and --log-level DEBUG brings all back.
CHATTY_LOGGERS = ("kafka",)

#: flag dest → settings key, for the flags that map one to one onto settings.
FLAG_KEYS = {
    "source": "source",
    "sink": "sink",
    "dead_letter": "dead_letter",
    "state_dir": "state_dir",
    "metrics_port": "metrics_port",
    "metrics_host": "metrics_host",
    "meta": "meta",
    "model": "model",
    "task": "task",
    "n_features": "n_features",
    "batch_size": "batch_size",
    "log_level": "log_level",
}


def metrics_port(text: str) -> int | str:
    """``--metrics-port``: a port number, or ``off`` (also ``none``) to serve no HTTP at all."""
    if text.strip().lower() in ("off", "none"):
        return "off"  # a string, because None would mean "flag not given" to the loader
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a port number, 0 (any free port) or off, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be in [0, 65535] or off, got {port}")
    return port


def add_settings_arguments(parser: argparse.ArgumentParser,
                           shown_defaults: Mapping[str, str] | None = None,
                           serving: bool = True) -> None:
    """The flags of the commands that build a learner from settings.

    ``shown_defaults`` (setting → text) changes what --help says a default is, for commands
    whose defaults differ from the settings' (``demo``: a temporary state dir, the MLP).
    ``serving=False`` leaves out the flags of a daemon (state dir, metrics), for ``meta-train``.
    """
    shown = {"state_dir": f"./{Settings.state_dir}", "metrics_port": str(Settings.metrics_port),
             "model": Settings.model, **(shown_defaults or {})}
    parser.add_argument("--config", metavar="FILE", help="TOML settings file")
    if serving:
        _add_serving_arguments(parser, shown)
    parser.add_argument("--meta", metavar="FILE", help="meta-state written by adaptd meta-train")
    parser.add_argument("--model", choices=["auto", "linear", "logistic", "mlp"],
                        help=f"model family (default: {shown['model']})")
    parser.add_argument("--task", choices=["regression", "classification"],
                        help=f"(default: {Settings.task})")
    parser.add_argument("--n-features", type=int, metavar="N",
                        help="expected feature count (default: from --meta, else the first record)")
    parser.add_argument("--batch-size", type=int, metavar="N", help="records per poll")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any setting, e.g. --set learner.lr=0.05 (repeatable)")


def _add_serving_arguments(parser: argparse.ArgumentParser, shown: Mapping[str, str]) -> None:
    parser.add_argument("--state-dir", metavar="DIR",
                        help=f"checkpoints and dead letters (default: {shown['state_dir']})")
    parser.add_argument("--metrics-port", type=metrics_port, metavar="N|off",
                        help="serve /metrics, /healthz, /readyz and the live page on this port "
                             f"(default: {shown['metrics_port']}; 0 picks a free port; off "
                             "serves nothing)")
    parser.add_argument("--metrics-host", metavar="HOST",
                        help=f"address to serve on (default: {Settings.metrics_host})")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", metavar="URI", help="e.g. kafka://HOST:PORT/TOPIC, jsonl:PATH")
    parser.add_argument("--sink", metavar="URI", help="where predictions go (default: none)")
    parser.add_argument("--dead-letter", metavar="URI",
                        help="where rejected records go (default: STATE_DIR/dead-letter.jsonl)")
    parser.add_argument("--follow", action="store_true",
                        help="keep tailing a jsonl source instead of stopping at its end")
    parser.add_argument("--fresh", action="store_true",
                        help="start over: move an existing state dir aside (renamed to "
                             "DIR.replaced-TIME) instead of resuming from it")
    add_settings_arguments(parser)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from defaults < --config < ADAPTD_* < flags."""
    flags: dict[str, object] = {
        key: getattr(args, dest) for dest, key in FLAG_KEYS.items() if hasattr(args, dest)
    }
    for item in getattr(args, "set", []):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        flags[key.strip()] = value
    if getattr(args, "follow", False):
        source = flags.get("source") or os.environ.get("ADAPTD_SOURCE")
        if not source:
            raise ConfigError("--follow needs --source")
        flags["source"] = f"{source}{'&' if '?' in str(source) else '?'}follow=true"
    settings = load_settings(getattr(args, "config", None), flags=flags)
    logging.getLogger().setLevel(settings.log_level)
    if settings.log_level != "DEBUG":
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    return settings


def describe_summary(summary: RunSummary) -> str:
    parts = [
        f"{summary.records} records",
        f"{summary.predictions} predictions",
        f"{summary.updates} updates",
        f"{summary.rejected} rejected",
        f"{summary.drifts} drifts",
        f"cumulative loss {summary.cumulative_loss:.4g}",
    ]
    if summary.baseline_loss is not None:
        regret = summary.cumulative_loss - summary.baseline_loss
        # The sign convention (negative = adaptd lost less) is not obvious on a first run.
        verdict = "adaptd ahead" if regret < 0 else "adaptd behind" if regret > 0 else "even"
        parts.append(f"regret vs baseline {regret:.4g} ({verdict})")
    if summary.hindsight_regret is not None:
        parts.append(f"regret vs hindsight {summary.hindsight_regret:.4g}")
    parts.append(f"{summary.records_per_s:,.0f} records/s")
    return ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    from adaptd.commands.checks import check_meta_file, check_state_dir
    from adaptd.service import serve

    settings = check_meta_file(settings_from_args(args))
    check_state_dir(settings, fresh=getattr(args, "fresh", False))
    summary = serve(settings)
    # The run's result, not a log event: printed whatever --log-level is, on stderr because
    # stdout may be the prediction sink.
    print(f"adaptd run: done: {describe_summary(summary)}", file=sys.stderr, flush=True)
    return 0


