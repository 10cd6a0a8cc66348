"""The distribution installs one import name, ``adaptd``, and every package folder is in it.

``daemon`` is also python-daemon's import name (a dependency of common schedulers), and
``connectors`` or ``benchmarks`` are names anyone may take: installing under them would break
one distribution or the other. pyproject maps the repository's folders onto ``adaptd``
explicitly, so a new subpackage that is not listed would silently be left out of the wheel.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _setuptools() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_listed_under_the_adaptd_namespace() -> None:
    config = _setuptools()
    folders = {name: REPO / path for name, path in config["package-dir"].items()}
    expected = set()
    for root_name, root in folders.items():
        for init in root.rglob("__init__.py"):
            relative = init.parent.relative_to(root).parts
            expected.add(".".join((root_name, *relative)))
    assert expected == set(config["packages"])


def test_the_only_top_level_import_name_is_adaptd() -> None:
    config = _setuptools()
    assert {name.split(".")[0] for name in config["packages"]} == {"adaptd"}
    assert set(config["package-dir"]) == {"adaptd", "adaptd.connectors"}
