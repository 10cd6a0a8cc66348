"""Settings: one model, filled from defaults < TOML file < ``ADAPTD_*`` environment < flags.

Top-level keys configure the run; each section (``[learner]``, …) is a dataclass owned by the
module it configures, whose ``__post_init__`` validates its values and raises ``ValueError``
naming the field. Everything wrong is reported at start as a :class:`ConfigError` that names
the full key and where it came from::

    learner.lr must be > 0, got -1.0 (from ADAPTD_LEARNER__LR)

Environment names: ``ADAPTD_<KEY>`` for top-level keys, ``ADAPTD_<SECTION>__<KEY>`` for
section keys (``ADAPTD_LEARNER__LR=0.05``). Unknown keys fail in every layer.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from adaptd.connectors.base import convert
from adaptd.errors import ConfigError
from adaptd.settings import Settings

ENV_PREFIX = "ADAPTD_"




def _sections(cls: type) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(cls)
        if dataclasses.is_dataclass(hints[f.name])
    }


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check a value from TOML or a flag against a field's type; strings are converted.

    ``"off"`` turns off an optional numeric setting (``metrics_port = "off"``, ``--metrics-port
    off``, ``ADAPTD_METRICS_PORT=off``): "none" is what the converter knows, "off" what users type.
    """
    args_ = typing.get_args(hint)
    if (isinstance(value, str) and value.strip().lower() == "off" and type(None) in args_
            and str not in args_):
        return None
    if isinstance(value, str) and hint is not str and str not in typing.get_args(hint):
        return convert(value, hint, where)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{where} may not be empty")
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return _coerce(value, non_none[0], where) if len(non_none) == 1 else value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        items = [_coerce(v, args[0], where) for v in value]
        return items if origin is list else tuple(items)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (
        not isinstance(value, hint) or (hint is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{where} must be {hint.__name__}, got {value!r}")
    return value


class _Layers:
    """Collects raw values per dotted key, remembering where each came from."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[Any, str]] = {}
        self.top = typing.get_type_hints(Settings)
        self.sections = {name: typing.get_type_hints(cls) for name, cls in _sections(Settings).items()}

    def hint(self, dotted: str, origin: str) -> Any:
        section, _, key = dotted.rpartition(".")
        if not section:
            if key in self.sections or key not in self.top:
                known = sorted(k for k in self.top if k not in self.sections)
                raise ConfigError(f"unknown setting {dotted!r} ({origin}); known: {known}")
            return self.top[key]
        if section not in self.sections:
            raise ConfigError(
                f"unknown section {section!r} in {dotted!r} ({origin}); known: {sorted(self.sections)}"
            )
        if key not in self.sections[section]:
            raise ConfigError(
                f"unknown setting {dotted!r} ({origin}); known in [{section}]: "
                f"{sorted(self.sections[section])}"
            )
        return self.sections[section][key]

    def set(self, dotted: str, value: Any, origin: str) -> None:
        hint = self.hint(dotted, origin)
        self.values[dotted] = (_coerce(value, hint, f"{dotted} ({origin})"), origin)


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Build and validate the settings from all layers.

    Args:
        config_file: a TOML file, or None.
        environ: the environment to read ``ADAPTD_*`` from (``os.environ`` if None).
        flags: dotted key → value from the command line; ``None`` values are ignored.
    """
    layers = _Layers()
    if config_file is not None:
        path = Path(config_file)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
        for key, value in data.items():
            if isinstance(value, dict) and key in layers.sections:
                for sub, sub_value in value.items():
                    layers.set(f"{key}.{sub}", sub_value, f"from {path}")
            else:
                layers.set(key, value, f"from {path}")
    env = os.environ if environ is None else environ
    for name, text in sorted(env.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        dotted = name[len(ENV_PREFIX):].lower().replace("__", ".")
        layers.set(dotted, text, f"from {name}")
    for dotted, value in (flags or {}).items():
        if value is not None:
            layers.set(dotted, value, "from the command line")
    return _build(layers)


def _build(layers: _Layers) -> Settings:
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {name: {} for name in layers.sections}
    for dotted, (value, _) in layers.values.items():
        section, _, key = dotted.rpartition(".")
        (nested[section] if section else top)[key] = value
    section_classes = _sections(Settings)
    for name, values in nested.items():
        try:
            top[name] = section_classes[name](**values)
        except ValueError as exc:
            raise ConfigError(f"{name}.{exc}{_origin(layers, name, exc)}") from None
    try:
        return Settings(**top)
    except ValueError as exc:
        raise ConfigError(f"{exc}{_origin(layers, '', exc)}") from None


def _origin(layers: _Layers, section: str, exc: ValueError) -> str:
    """`` (from X)`` for the key a validation message starts with, when a layer set it."""
    first = str(exc).split(" ", 1)[0]
    dotted = f"{section}.{first}" if section else first
    entry = layers.values.get(dotted)
    return f" ({entry[1]})" if entry else ""
