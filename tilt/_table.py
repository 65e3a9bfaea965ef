"""Plain-text tables of numbers for the commands' reports."""

from __future__ import annotations

import math
from collections.abc import Sequence

from tilt.measures import Measures

__all__ = ["fmt", "table", "SHAPE_HEADER", "shape_cells"]


SHAPE_HEADER = (
    "accuracy",
    "H(C) nats",
    "eff. #C",
    "gap slope",
    "w. slope",
    "widening",
    "distortion",
)
"""Column names of :func:`shape_cells`: ``gap slope`` is the unweighted least-squares
slope, ``w. slope`` the ``pi0``-weighted one, ``widening`` the ``pi0``-mass fraction of
correct pairs whose gap widens (``tilt.measures``)."""


def shape_cells(measures: Measures) -> list[str]:
    """The measures of a policy's shape, formatted for a table (see :data:`SHAPE_HEADER`)."""
    return [
        fmt(measures.accuracy),
        fmt(measures.correct_entropy, 3),
        # beyond a million (token lattices reach 10^40 and more) in scientific notation
        fmt(measures.effective_correct, 1)
        if not measures.effective_correct >= 1e6
        else f"{measures.effective_correct:.3e}",
        fmt(measures.gap_slope, 3),
        fmt(measures.weighted_gap_slope, 3),
        fmt(measures.widening_fraction, 3),
        fmt(measures.ratio_distortion, 3),
    ]


def fmt(value: float | None, digits: int = 4) -> str:
    """A number for a table: fixed digits, ``n/a`` for ``None``/``nan``, ``inf`` kept."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned first column, right-aligned others."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for r in [header, *rows]:
        cells = [str(r[0]).ljust(widths[0])] + [
            str(c).rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
