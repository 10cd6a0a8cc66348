"""Connector URIs and options: parse_uri, parse_options, convert."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from adaptd.connectors.base import convert, parse_options, parse_uri
from adaptd.errors import ConfigError


def test_parse_uri_splits_scheme_target_and_query() -> None:
    parsed = parse_uri("Synthetic:sinusoid?seed=1&n=10")
    assert (parsed.scheme, parsed.target, parsed.query) == ("synthetic", "sinusoid", {"seed": "1", "n": "10"})
    assert parse_uri("kafka://h1:9092,h2:9092/in?group=g").target == "//h1:9092,h2:9092/in"
    assert parse_uri("stdin:").target == ""
    assert parse_uri("jsonl:/data/in.jsonl").query == {}


def test_parse_uri_decodes_percent_escapes_but_keeps_plus_signs() -> None:
    query = parse_uri("kafka://h:1/t?sasl_plain_password=a+b%26c%3D&group=").query
    assert query == {"sasl_plain_password": "a+b&c=", "group": ""}


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("data.jsonl", "not a connector URI"),
        (":nothing", "not a connector URI"),
        ("synthetic:sinusoid?seed=1&seed=2", "option 'seed' is given twice"),
    ],
)
def test_parse_uri_errors(uri: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_uri(uri)


@dataclass(frozen=True)
class Options:
    path: str
    count: int = 1
    rate: float = 0.5
    follow: bool = False
    mode: Literal["a", "b"] = "a"
    limit: int | None = None
    positions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"count must be >= 1, got {self.count}")


def test_parse_options_converts_every_value_by_its_type() -> None:
    uri = "x:p?count=3&rate=1e-2&follow=yes&mode=b&limit=none&positions=1,%202,3"
    options = parse_options(Options, parse_uri(uri), path="p")
    assert options == Options(
        path="p", count=3, rate=0.01, follow=True, mode="b", limit=None, positions=(1, 2, 3)
    )
    assert parse_options(Options, parse_uri("x:p"), path="p") == Options(path="p")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("colour=red", r"unknown option 'colour'; known options: \['count', 'follow'"),
        ("path=elsewhere", "unknown option 'path'"),  # set from the URI's target, not the query
        ("count=two", "option 'count' must be int, got 'two'"),
        ("follow=perhaps", "option 'follow' must be true or false, got 'perhaps'"),
        ("mode=c", r"option 'mode' must be one of \['a', 'b'\], got 'c'"),
        ("positions=1,x", "option 'positions' must be int, got 'x'"),
        ("count=0", "count must be >= 1, got 0"),
    ],
)
def test_parse_options_errors_name_the_uri_and_the_option(query: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_options(Options, parse_uri(f"x:p?{query}"), path="p")
    assert "'x:p?" in str(caught.value), "the message names the URI"


@pytest.mark.parametrize(
    ("text", "hint", "value"),
    [
        ("7", int, 7),
        ("-2.5", float, -2.5),
        ("hello", str, "hello"),
        ("ON", bool, True),
        ("0", bool, False),
        ("", int | None, None),
        ("null", float | None, None),
        ("4", int | None, 4),
        ("all", Literal["0", "1", "all"], "all"),
        ("2", Literal[1, 2], 2),
        ("a, b,,c", list[str], ["a", "b", "c"]),
        ("1,2", tuple[float, ...], (1.0, 2.0)),
    ],
)
def test_convert(text: str, hint: object, value: object) -> None:
    assert convert(text, hint, "where") == value


@pytest.mark.parametrize(
    ("text", "hint", "message"),
    [
        ("1.5", int, "here must be int, got '1.5'"),
        ("maybe", bool, "here must be true or false"),
        ("3", Literal[1, 2], r"here must be one of \[1, 2\]"),
        ("x", int | str, "cannot convert"),
        ("x", dict[str, int], "unsupported option type"),
    ],
)
def test_convert_errors_name_where(text: str, hint: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        convert(text, hint, "here")
