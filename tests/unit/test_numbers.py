"""The compiled JSON number reader against orjson (the per-record path's parser): every number
it reads is the same double, bit for bit; whatever it leaves undecided or refuses, the caller
hands to orjson."""

from __future__ import annotations

import math
import random
import struct
from fractions import Fraction

import numpy as np
import orjson
import pytest

from adaptd.records.numbers import read_number


def read(token: bytes) -> tuple[float, int]:
    buf = np.frombuffer(token + b"]", dtype=np.uint8)
    return read_number(buf, 0, len(buf))


def bits(value: float) -> bytes:
    return struct.pack("d", value)


def orjson_double(token: bytes) -> float:
    """What the per-record path makes of a number: orjson's value, as ``struct.pack`` packs it
    (a JSON integer is a Python int there)."""
    return float(struct.unpack("d", struct.pack("d", orjson.loads(token)))[0])


def tokens(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(20_000):  # any finite double, as orjson writes it (shortest round trip)
        x = struct.unpack("d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if math.isfinite(x):
            out.append(orjson.dumps(x))
    out += [orjson.dumps(rng.gauss(0, 1)) for _ in range(20_000)]
    for _ in range(20_000):  # random digit strings, fractions and exponents
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 21)))
        text = digits.lstrip("0") or "0"
        if rng.random() < 0.5:
            text = text[:1] + "." + (text[1:] or "0")
        if rng.random() < 0.5:
            text += rng.choice("eE") + rng.choice(["", "+", "-"]) + str(rng.randint(0, 330))
        out.append(("-" if rng.random() < 0.5 else "") + text)
    for _ in range(5_000):  # near the midpoint between two doubles: the hard roundings
        x = abs(rng.gauss(0, 1e10)) + 1e-300
        mid = (Fraction(x) + Fraction(math.nextafter(x, math.inf))) / 2
        out.append(f"{float(mid):.18e}")
        out.append(f"{mid.numerator / mid.denominator:.20e}")
    return [t.encode() if isinstance(t, str) else t for t in out]


def test_every_number_read_is_orjsons_double() -> None:
    read_count = 0
    for token in tokens(seed=1):
        value, end = read(token)
        if end < 0:
            continue
        read_count += 1
        assert end == len(token), token
        assert bits(value) == bits(orjson_double(token)), token
    assert read_count > 50_000  # nearly all are decided here, not handed on


@pytest.mark.parametrize(("token", "expected"), [
    (b"0", 0.0), (b"-0", 0.0), (b"-0.0", -0.0), (b"-0e0", -0.0), (b"1E+5", 1e5), (b"1e-5", 1e-5),
    (b"0.000000000000000000000000000001", 1e-30), (b"9007199254740992", 2.0**53),
    (b"9223372036854775807", 9.223372036854775807e18), (b"1.7976931348623157e308", 1.7976931348623157e308),
    (b"2.2250738585072014e-308", 2.2250738585072014e-308), (b"-2.5", -2.5),
])
def test_exact_values(token: bytes, expected: float) -> None:
    value, end = read(token)
    assert end == len(token) and bits(value) == bits(expected)


@pytest.mark.parametrize("token", [
    b"", b"-", b"+1", b".5", b"1.", b"1e", b"1e+", b"-e5", b"x", b"[1]",
    b"5e-324", b"1e400", b"-1e-400",  # subnormal, beyond range: orjson decides
    b"123456789012345678901", b"9007199254740993",  # 21 digits; exactly halfway
])
def test_not_read_here(token: bytes) -> None:
    assert read(token)[1] == -1


def test_a_leading_zero_is_no_json_number() -> None:
    assert read(b"01")[1] == read(b"-00.5")[1] == -1
    assert read(b"0.5") == (0.5, 3)
