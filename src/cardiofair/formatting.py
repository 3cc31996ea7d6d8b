"""How a figure is written: the captioned ``Table`` and the number formats that the report, the
quality metrics' own tables and the printed summaries share. Pure Python, so that every layer
can use it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

MISSING = "n/a"


@dataclass
class Table:
    """A captioned table of already formatted cells, and notes to print under it."""

    caption: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def number(value: Any, digits: int = 3, scale: float = 1.0) -> str:
    """A figure with ``digits`` decimals, or ``n/a`` when it is missing (null or NaN in the JSON)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{float(value) * scale:.{digits}f}"


def percent(value: Any) -> str:
    """A [0, 1] rate as a percentage with one decimal."""
    return MISSING if value is None else f"{100.0 * float(value):.1f}%"
