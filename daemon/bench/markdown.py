"""Markdown helpers of the bench report: numbers to text, rows to a table."""

from __future__ import annotations

import math


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1e7:
        return f"{value:.{digits - 1}e}"
    # ``g`` keeps `digits` significant digits and switches to an exponent below 1e-4.
    return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:,.0f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]
