"""The registry with real installed distributions (a ``.dist-info`` on ``sys.path``): third-party
schemes are found, built-ins are never shadowed silently, ``SCHEME.override`` replaces one."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from adaptd.connectors import registry
from adaptd.connectors.registry import available, connector, describe
from adaptd.errors import ConfigError

MODULE = '''
from adaptd.connectors.base import Connector

class Other(Connector):
    scheme = "mqtt"
    description = "a third-party MQTT connector"

class Amqp(Connector):
    scheme = "amqp"
    description = "a third-party AMQP connector"
    replay = ("acknowledged",)

    @classmethod
    def source(cls, uri):
        raise NotImplementedError("never built here")

class Broken(Connector):
    scheme = "broken"
    description = "declares a replay kind that does not exist"
    replay = ("sometimes",)
'''


def install(root: Path, name: str, entry_points: dict[str, str]) -> None:
    """A minimal installed distribution: metadata and entry points, importable from ``root``."""
    (root / "third_party_connectors.py").write_text(MODULE)
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = [f"{ep} = third_party_connectors:{attr}" for ep, attr in entry_points.items()]
    (info / "entry_points.txt").write_text("[adaptd.connectors]\n" + "\n".join(lines) + "\n")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.entries.cache_clear()
    yield tmp_path
    registry.entries.cache_clear()


def test_a_builtin_scheme_is_not_shadowed_by_an_installed_one(
    site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    install(site, "third-party", {"mqtt": "Other", "amqp": "Amqp", "broken": "Broken"})
    with caplog.at_level(logging.WARNING):
        assert available()["mqtt"] == registry.BUILTINS["mqtt"]
    assert "ignoring connector entry point 'mqtt'" in caplog.text and "mqtt.override" in caplog.text
    assert connector("amqp").description == "a third-party AMQP connector"
    rows = {row.scheme: row for row in describe()}
    assert (rows["amqp"].replay, rows["amqp"].origin) == ("acknowledged", "third-party")
    assert rows["mqtt"].origin == "built-in"
    with pytest.raises(ConfigError, match="replay must name kinds"):
        connector("broken")


def test_scheme_override_replaces_a_builtin_and_says_so(
    site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    install(site, "my-mqtt", {"mqtt.override": "Other"})
    with caplog.at_level(logging.WARNING):
        assert connector("mqtt").description == "a third-party MQTT connector"
    assert "replaces the built-in 'mqtt' connector" in caplog.text
    assert {row.scheme: row for row in describe()}["mqtt"].origin == "my-mqtt (overrides built-in)"


def test_adaptd_connectors_lists_mqtt_with_its_replay_kinds() -> None:
    result = subprocess.run([sys.executable, "-m", "adaptd", "connectors"], capture_output=True,
                            check=True, timeout=120)
    rows = {line.split()[0]: line.split() for line in result.stdout.decode().splitlines()}
    assert rows["mqtt"][1:4] == ["source/sink", "acknowledged,live", "built-in"]
    assert rows["stdin"][1:3] == ["source", "live"]
    assert rows["kafka"][2] == "seekable"


def test_a_connector_module_that_fails_to_import_is_a_config_error(site: Path) -> None:
    """Whatever a third-party module raises on import (here a SyntaxError) says which
    connector cannot be used, instead of a traceback."""
    (site / "unparsable_connector.py").write_text("class Amqp(:\n")
    info = site / "unparsable-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: unparsable\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[adaptd.connectors]\namqp = unparsable_connector:Amqp\n")
    with pytest.raises(ConfigError, match=r"connector 'amqp' \(unparsable_connector:Amqp\) "
                                          r"failed to load: SyntaxError: "):
        connector("amqp")
    assert {row.scheme: row for row in describe()}["amqp"].roles == "-"
