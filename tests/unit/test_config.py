"""Settings layers: defaults < TOML < ADAPTD_* environment < flags, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaptd.config import load_settings
from adaptd.errors import ConfigError


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "adaptd.toml"
    path.write_text(text)
    return path


def test_defaults_when_nothing_is_given() -> None:
    settings = load_settings(environ={})
    assert settings.source is None
    assert settings.model == "auto"
    assert settings.learner.lr == 0.1


def test_each_layer_overrides_the_one_before(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, 'batch_size = 10\nstate_dir = "from-toml"\nmodel = "mlp"\n'
                                '[learner]\nlr = 0.2\neps = 0.001\n')
    env = {"ADAPTD_STATE_DIR": "from-env", "ADAPTD_LEARNER__LR": "0.3", "ADAPTD_MODEL": "linear"}
    flags = {"model": "mlp", "batch_size": None}
    settings = load_settings(toml, environ=env, flags=flags)
    assert settings.batch_size == 10  # only the TOML file set it (a None flag is "not given")
    assert settings.state_dir == "from-env"  # env beats TOML
    assert settings.learner.lr == 0.3  # env beats TOML inside a section
    assert settings.learner.eps == 0.001  # TOML beats defaults
    assert settings.model == "mlp"  # flags beat env


def test_flags_accept_strings_for_any_setting() -> None:
    settings = load_settings(environ={}, flags={"learner.lr": "0.05", "metrics_port": "none"})
    assert settings.learner.lr == 0.05
    assert settings.metrics_port is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"ADAPTD_NO_SUCH": "1"}, "unknown setting 'no_such' (from ADAPTD_NO_SUCH)"),
        ({"ADAPTD_NOPE__LR": "1"}, "unknown section 'nope'"),
        ({"ADAPTD_LEARNER__NOPE": "1"}, "unknown setting 'learner.nope'"),
        ({"ADAPTD_BATCH_SIZE": "many"}, "batch_size (from ADAPTD_BATCH_SIZE) must be int, got 'many'"),
        ({"ADAPTD_BATCH_SIZE": "0"}, "batch_size must be >= 1, got 0 (from ADAPTD_BATCH_SIZE)"),
        ({"ADAPTD_LEARNER__LR": "-1"}, "learner.lr must be > 0, got -1.0 (from ADAPTD_LEARNER__LR)"),
        ({"ADAPTD_MODEL": "tree"}, "model (from ADAPTD_MODEL) must be one of"),
        ({"ADAPTD_METRICS_PORT": "70000"}, "metrics_port must be in [0, 65535], got 70000"),
    ],
)
def test_bad_environment_fails_naming_the_key(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=environ)
    assert message in str(info.value)


def test_bad_toml_fails_naming_the_key_and_file(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, '[learner]\nlr = "fast"\n')
    with pytest.raises(ConfigError, match=r"learner.lr \(from .*adaptd.toml\) must be float"):
        load_settings(toml, environ={})
    unknown = write_toml(tmp_path, "colour = 'blue'\n")
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        load_settings(unknown, environ={})


def test_unreadable_config_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml", environ={})
    broken = write_toml(tmp_path, "source = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken, environ={})


def test_inconsistent_values_are_rejected() -> None:
    with pytest.raises(ConfigError, match="model=logistic needs task=classification"):
        load_settings(environ={}, flags={"model": "logistic"})


def test_off_turns_the_metrics_port_off_in_every_layer(tmp_path: Path) -> None:
    assert load_settings(environ={}).metrics_port == 9464
    toml = write_toml(tmp_path, 'metrics_port = "off"\n')
    assert load_settings(toml, environ={}).metrics_port is None
    assert load_settings(environ={"ADAPTD_METRICS_PORT": "OFF"}).metrics_port is None
    assert load_settings(environ={}, flags={"metrics_port": "off"}).metrics_port is None
    with pytest.raises(ConfigError, match="metrics_port"):
        load_settings(environ={}, flags={"metrics_port": "of"})
    # "off" is a value only where a setting can be empty and is not text.
    assert load_settings(environ={}, flags={"sink": "off"}).sink == "off"
