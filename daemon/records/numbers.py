"""JSON numbers read by compiled code, to the same doubles as ``float()`` and orjson.

:mod:`adaptd.records.scan` reads a batch's numbers here instead of copying their text into one
buffer for ``orjson.loads`` and packing the Python floats that makes (about 0.7 µs a record of
ten features). A number is parsed to its decimal digits and exponent, then converted to the
nearest double by:

* Clinger's fast path (W. D. Clinger, "How to read floating point numbers accurately", PLDI
  1990): a significand below 2**53 times or over an exact power of ten at most 1e22 is one
  correctly rounded multiplication or division;
* otherwise the Eisel–Lemire algorithm (D. Lemire, "Number parsing at a gigabyte per second",
  Software: Practice and Experience 51(8), 2021; as in Go's ``strconv/eisel_lemire.go``):
  the 64-bit significand times a 128-bit truncated power of ten, which decides the rounding
  unless the product lies too close to a halfway point, when it reports failure.

Anything this does not decide (a failure, more than 19 significant digits, an exponent beyond
the table) or that is not a JSON number is reported as not read (-1), and the caller falls back
to the text-and-orjson path, which reads it. So this never returns a double that path would not.
A JSON integer (no fraction, no exponent) is a Python int there and becomes a float by
``struct.pack``: ``-0`` is then ``0.0``, not ``-0.0``, and so it is here.

>>> import numpy as np
>>> buf = np.frombuffer(b"-12.5e-1,", dtype=np.uint8)
>>> read_number(buf, 0, len(buf))
(-1.25, 8)
"""

from __future__ import annotations

import math

import numpy as np

from adaptd.learner.jit import njit

_MIN_EXP10 = -348
_MAX_EXP10 = 347


def _powers_of_ten() -> tuple[np.ndarray, np.ndarray]:
    """The high and low 64 bits of 10**e's 128-bit significand rounded down, normalized to
    [2**127, 2**128), for e in [-348, 347] (Go's ``detailedPowersOfTen``)."""
    hi = np.empty(_MAX_EXP10 - _MIN_EXP10 + 1, dtype=np.uint64)
    lo = np.empty_like(hi)
    for i, e in enumerate(range(_MIN_EXP10, _MAX_EXP10 + 1)):
        if e >= 0:
            v = 10**e
            m = v << (128 - v.bit_length()) if v.bit_length() <= 128 else \
                v >> (v.bit_length() - 128)
        else:
            d = 10**-e
            s = 127 + d.bit_length()
            m = (1 << s) // d
            while m >= 1 << 128:
                s -= 1
                m = (1 << s) // d
            while m < 1 << 127:
                s += 1
                m = (1 << s) // d
        hi[i], lo[i] = m >> 64, m & ((1 << 64) - 1)
    return hi, lo


_POW_HI, _POW_LO = _powers_of_ten()
#: The powers of ten a double holds exactly (Clinger's fast path).
_EXACT = np.array([10.0**e for e in range(23)])

_U32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


@njit(inline=True, refcounts=False)
def _mul64(a: np.uint64, b: np.uint64) -> tuple[np.uint64, np.uint64]:
    """The 128-bit product of two 64-bit integers as (high, low) words."""
    a_lo, a_hi = a & _U32, a >> _S32
    b_lo, b_hi = b & _U32, b >> _S32
    ll = a_lo * b_lo
    lh = a_lo * b_hi
    hl = a_hi * b_lo
    hh = a_hi * b_hi
    mid = (ll >> _S32) + (lh & _U32) + (hl & _U32)
    lo = (ll & _U32) | (mid << _S32)
    hi = hh + (lh >> _S32) + (hl >> _S32) + (mid >> _S32)
    return hi, lo


@njit(inline=True, refcounts=False)
def _leading_zeros(x: np.uint64) -> int:
    n = 0
    top = np.uint64(1) << np.uint64(63)
    while x & top == 0:
        x <<= np.uint64(1)
        n += 1
    return n


@njit(refcounts=False)
def eisel_lemire(man: np.uint64, exp10: int, neg: bool) -> tuple[float, bool]:
    """``±man × 10**exp10`` correctly rounded, and True; or False when the 128-bit product
    cannot decide the rounding (or the result is subnormal or infinite). ``man`` > 0."""
    if exp10 < _MIN_EXP10 or exp10 > _MAX_EXP10:
        return 0.0, False
    clz = _leading_zeros(man)
    man = man << np.uint64(clz)
    ret_exp2 = ((217706 * exp10) >> 16) + 64 + 1023 - clz  # an int64: sign checked below
    k = exp10 - _MIN_EXP10
    x_hi, x_lo = _mul64(man, _POW_HI[k])
    low9 = np.uint64(0x1FF)
    if x_hi & low9 == low9 and x_lo + man < man:  # the truncation may matter: widen
        y_hi, y_lo = _mul64(man, _POW_LO[k])
        merged_hi, merged_lo = x_hi, x_lo + y_hi
        if merged_lo < x_lo:
            merged_hi += np.uint64(1)
        if merged_hi & low9 == low9 and merged_lo + np.uint64(1) == np.uint64(0) \
                and y_lo + man < man:
            return 0.0, False
        x_hi, x_lo = merged_hi, merged_lo
    msb = x_hi >> np.uint64(63)
    mantissa = x_hi >> (msb + np.uint64(9))
    ret_exp2 -= 1 - int(msb)
    if x_lo == np.uint64(0) and x_hi & low9 == np.uint64(0) and \
            mantissa & np.uint64(3) == np.uint64(1):  # exactly halfway: undecided
        return 0.0, False
    mantissa += mantissa & np.uint64(1)
    mantissa >>= np.uint64(1)
    if mantissa >> np.uint64(53) > np.uint64(0):
        mantissa >>= np.uint64(1)
        ret_exp2 += 1
    if ret_exp2 <= 0 or ret_exp2 >= 0x7FF:  # subnormal or infinite: left to the slow path
        return 0.0, False
    # mantissa is in [2**52, 2**53) and the result a normal double: ldexp is exact.
    value = math.ldexp(float(mantissa), ret_exp2 - 1075)
    return (-value if neg else value), True


@njit(inline=True, refcounts=False)
def _digit(c: int) -> bool:
    return 48 <= c <= 57


@njit(refcounts=False)
def read_number(buf: np.ndarray, i: int, end: int) -> tuple[float, int]:
    """The JSON number at ``buf[i:]`` and where it ends, or ``(0.0, -1)`` when there is no
    JSON number there or it is not decided here (see the module docstring)."""
    neg = i < end and buf[i] == 45  # -
    if neg:
        i += 1
    start = i
    man = np.uint64(0)  # wraps past 19 digits: such a number is then given up on below
    while i < end and _digit(buf[i]):
        man = man * np.uint64(10) + np.uint64(buf[i] - 48)
        i += 1
    if i == start or (buf[start] == 48 and i - start > 1):  # no digit; a leading zero
        return 0.0, -1
    digits = 0 if buf[start] == 48 else i - start  # significant digits in man (0: "0")
    exp10 = 0
    integer = True
    if i < end and buf[i] == 46:  # .
        integer = False
        i += 1
        fraction = i
        if digits == 0:  # leading zeros of the fraction: not significant
            while i < end and buf[i] == 48:
                i += 1
        first = i
        while i < end and _digit(buf[i]):
            man = man * np.uint64(10) + np.uint64(buf[i] - 48)
            i += 1
        if i == fraction:
            return 0.0, -1
        digits += i - first
        exp10 = fraction - i
    if digits > 19:
        return 0.0, -1
    if i < end and (buf[i] == 101 or buf[i] == 69):  # e E
        integer = False
        i += 1
        sign = 1
        if i < end and (buf[i] == 43 or buf[i] == 45):
            sign = -1 if buf[i] == 45 else 1
            i += 1
        if i >= end or not _digit(buf[i]):
            return 0.0, -1
        e = 0
        while i < end and _digit(buf[i]):
            if e > 100_000:
                return 0.0, -1
            e = e * 10 + (buf[i] - 48)
            i += 1
        exp10 += sign * e
    if man == np.uint64(0):
        return (-0.0 if neg and not integer else 0.0), i
    if man <= np.uint64(1 << 53) and -22 <= exp10 <= 22:
        value = float(man)
        value = value * _EXACT[exp10] if exp10 >= 0 else value / _EXACT[-exp10]
        return (-value if neg else value), i
    value, ok = eisel_lemire(man, exp10, neg)
    return (value, i) if ok else (0.0, -1)
