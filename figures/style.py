"""One look for every figure: method styles, deterministic and atomic saving.

Every method has one colour, one marker and one line style in every figure
(:data:`METHODS`), chosen so that the figures stay readable in greyscale: the
colours differ in lightness as well as hue (Okabe-Ito palette), and markers
and dashes differ too.

Saving is deterministic (no dates, fixed creator, fixed SVG hash salt) and
atomic: each file is written to a temporary name in the target folder and then
renamed over the old one, so a reader never sees a half-written figure.
"""

from __future__ import annotations

import io
import json
import math
import os
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from analysis.sweeps import rows_to_csv  # noqa: E402
from tilt.cli import write_atomic  # noqa: E402

__all__ = [
    "MethodStyle",
    "METHODS",
    "DEMO_STYLES",
    "CONTEXT_LABELS",
    "DPI",
    "FORMATS",
    "style",
    "new_figure",
    "suptitle",
    "save_figure",
    "save_csv",
    "save_json",
    "replace_atomic",
]

DPI = 150
"""Resolution of the PNG files."""

FORMATS = ("png", "pdf")
"""Every figure is written in each of these formats."""


@dataclass(frozen=True)
class MethodStyle:
    """How one method is drawn in every figure."""

    label: str
    color: str
    marker: str
    linestyle: str

    def line(self) -> dict[str, object]:
        """Keyword arguments for ``Axes.plot``."""
        return {
            "color": self.color,
            "marker": self.marker,
            "linestyle": self.linestyle,
            "label": self.label,
        }


METHODS: dict[str, MethodStyle] = {
    "base": MethodStyle("base", "#000000", "o", ":"),
    "rl": MethodStyle("RL", "#0072B2", "s", "-"),
    "rl_matched": MethodStyle("RL @ SD accuracy", "#56B4E9", "D", "-"),
    "sd": MethodStyle("SD sequence", "#D55E00", "^", "--"),
    "sd_token": MethodStyle("SD token", "#E69F00", "v", "-."),
    "sd_forward": MethodStyle("SD forward", "#009E73", "P", (0, (1, 1))),  # type: ignore[arg-type]
}
"""Method key (as in ``tilt.compare``) to its style."""

DEMO_STYLES: dict[str, MethodStyle] = {
    "own": MethodStyle("own demos D ∝ π·r", "#D55E00", "^", "--"),
    "tempered": MethodStyle("tempered demos π^α·r (α=0.5)", "#CC79A7", "o", "-."),
    "uniform": MethodStyle("uniform demos over C", "#555555", "s", "-"),
}
"""Demonstration distribution to its style (figure 7)."""

CONTEXT_LABELS = {"copy": "copy(λ)", "edge": "edge(γ)", "kernel": "kernel(γ)"}
"""How each built-in context model and its strength are named on axes."""

_RC = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 7.5,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.hashsalt": "tilt",
    "pdf.fonttype": 42,
    "lines.markersize": 4,
    "path.simplify": False,
}


def style(key: str) -> MethodStyle:
    """The style of method ``key`` (raises ``KeyError`` on an unknown one)."""
    return METHODS[key]


def new_figure(
    ncols: int = 1, nrows: int = 1, width: float = 4.2, height: float = 3.4, **kwargs: object
):  # type: ignore[no-untyped-def]
    """A figure with ``nrows x ncols`` panels of about ``width x height`` inches each."""
    plt.rcParams.update(_RC)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(width * ncols, height * nrows),
        squeeze=False,
        layout="constrained",
        **kwargs,
    )
    return fig, axes


def suptitle(fig, text: str) -> None:  # type: ignore[no-untyped-def]
    """A figure title wrapped to the figure's width."""
    width = max(40, int(fig.get_figwidth() * 11))
    fig.suptitle(textwrap.fill(text, width))


def _metadata(fmt: str) -> dict[str, object]:
    if fmt == "png":
        return {"Software": "tilt figures"}
    if fmt == "pdf":
        return {
            "Creator": "tilt figures",
            "Producer": "tilt figures",
            "CreationDate": None,
            "ModDate": None,
        }
    if fmt == "svg":
        return {"Creator": "tilt figures", "Date": None}
    return {}


def replace_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename."""
    write_atomic(path, data)


def save_figure(fig, out: Path, stem: str, formats: Sequence[str] = FORMATS) -> list[Path]:  # type: ignore[no-untyped-def]
    """Save ``fig`` as ``out/stem.<fmt>`` for each format, atomically and byte-stable; close it."""
    written = []
    plt.rcParams.update(_RC)
    for fmt in formats:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=DPI, metadata=_metadata(fmt))
        path = out / f"{stem}.{fmt}"
        replace_atomic(path, buffer.getvalue())
        written.append(path)
    plt.close(fig)
    return written


DIGITS = 12
"""Significant digits of every float the figures write (CSV and JSON): the accuracy the exact
methods promise (1e-12).  The digits beyond differ between machines (BLAS, summation order)
and are not written, so the tracked files in figures/out differ between machines only where
a value sits on a rounding boundary, not in every last digit."""


def stable(value: object) -> object:
    """``value`` rounded to :data:`DIGITS` significant digits if it is a finite float."""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.{DIGITS}g}")
    return value


def save_csv(path: Path, rows: Iterable[Mapping[str, object]]) -> Path:
    """Write ``rows`` (dicts) as CSV, floats to :data:`DIGITS` significant digits, atomically."""
    rounded = [{k: stable(v) for k, v in r.items()} for r in rows]
    replace_atomic(path, rows_to_csv(rounded).encode())
    return path


def _json_clean(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, float):
        return stable(value)
    if isinstance(value, Mapping):
        return {str(k): _json_clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_clean(v) for v in value]
    return value


def save_json(path: Path, data: Mapping[str, object]) -> Path:
    """Write ``data`` as indented JSON (non-finite numbers become ``null``), atomically."""
    text = json.dumps(_json_clean(data), indent=1, sort_keys=False, allow_nan=False) + "\n"
    replace_atomic(path, text.encode())
    return path
