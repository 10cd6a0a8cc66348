"""``adaptd connectors``: list the installed connectors and what each can do."""

from __future__ import annotations

import argparse

from adaptd.connectors.registry import describe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def run(args: argparse.Namespace) -> int:
    rows = describe()
    width = max(len(scheme) for scheme, _, _ in rows)
    for scheme, roles, description in rows:
        print(f"{scheme:<{width}}  {roles:<11}  {description}")
    return 0
