"""``adaptd connectors``: list the installed connectors, what each can do and how its source
replays after a restart (``seekable``, ``acknowledged``, ``live``; the first is the default)."""

from __future__ import annotations

import argparse

from adaptd.connectors.registry import describe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def run(args: argparse.Namespace) -> int:
    rows = describe()
    header = ("scheme", "roles", "replay", "origin")
    widths = [max(len(h), *(len(getattr(r, h)) for r in rows)) for h in header]
    print("  ".join(h.upper().ljust(w) for h, w in zip(header, widths, strict=True)) + "  DESCRIPTION")
    for row in rows:
        cells = (getattr(row, h).ljust(w) for h, w in zip(header, widths, strict=True))
        print("  ".join(cells) + "  " + row.description)
    return 0
