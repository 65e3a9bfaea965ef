"""Figure 8: the practitioners' objectives between their ends.

Effective number of correct rollouts (left) and mass-weighted gap slope
(right) of the SD fixed point as the JSD coefficient ``a`` runs over [0, 1]
(``jsd=a``: 0 is per-token forward KL, 1 per-token reverse KL) and as the
return-to-go discount ``g`` runs over [0, 1] (``discount=g``: 0 is ``token``,
1 is sequence SD).  RL at the same accuracy keeps every ratio: its effective
number is the base's and its slope is 1 (dotted lines).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from figures._common import FigureResult, base_of
from figures.style import new_figure, save_csv, save_figure, save_json, suptitle
from tilt.context import make_context
from tilt.measures import correct_entropy, weighted_gap_slope
from tilt.objectives import sd_optimum

__all__ = ["make"]

NAME = "fig8_objectives"

FAMILIES = (("jsd", "JSD coefficient a  (jsd=a)"), ("discount", "discount g  (discount=g)"))


def make(out: Path, quick: bool = False, jobs: int | None = None, seed: int = 0) -> FigureResult:
    """Draw figure 8 on grid5 with edge(2) (``quick``: grid3, 5 points per family)."""
    graph = "grid3" if quick else "grid5"
    pi0 = base_of(graph)
    model = make_context("edge", 2.0)
    points = np.linspace(0.0, 1.0, 5 if quick else 21)
    rows = []
    for family, _ in FAMILIES:
        for x in points:
            q = sd_optimum(pi0, model, f"{family}={float(x)!r}")
            rows.append(
                {
                    "family": family,
                    "parameter": float(x),
                    "accuracy": q.accuracy,
                    "effective_correct": float(np.exp(correct_entropy(q))),
                    "weighted_gap_slope": weighted_gap_slope(q, pi0),
                }
            )
    files = [save_csv(out / f"{NAME}.csv", rows)]
    base_effective = float(np.exp(correct_entropy(pi0)))
    fig, axes = new_figure(2, 1, width=3.4, height=3.0)
    colours = {"jsd": "tab:purple", "discount": "tab:green"}
    for family, label in FAMILIES:
        pts = [r for r in rows if r["family"] == family]
        xs = [r["parameter"] for r in pts]
        axes[0][0].plot(
            xs,
            [r["effective_correct"] for r in pts],
            "o-",
            ms=3,
            color=colours[family],
            label=label,
        )
        axes[0][1].plot(
            xs,
            [r["weighted_gap_slope"] for r in pts],
            "o-",
            ms=3,
            color=colours[family],
            label=label,
        )
    axes[0][0].axhline(base_effective, color="0.3", linestyle=":", label="RL at equal accuracy")
    axes[0][1].axhline(1.0, color="0.3", linestyle=":", label="RL (slope 1)")
    axes[0][0].set_ylabel("effective number of correct rollouts")
    axes[0][1].set_ylabel("mass-weighted gap slope")
    for ax in axes[0]:
        ax.set_xlabel("a  or  g")
    axes[0][1].legend(loc="best")
    suptitle(
        fig,
        f"Fig. 8 — per-token JSD and discounted return-to-go between their ends, {graph}, "
        "edge(gamma=2), own demonstrations",
    )
    numbers = {
        "graph": graph,
        "base_effective_correct": base_effective,
        "ends": {
            f"{r['family']}={r['parameter']:g}": {
                "effective_correct": r["effective_correct"],
                "weighted_gap_slope": r["weighted_gap_slope"],
            }
            for r in rows
            if r["parameter"] in (0.0, 0.5, 1.0)
        },
    }
    files.append(save_json(out / f"{NAME}.json", numbers))
    files += save_figure(fig, out, NAME)
    return FigureResult(NAME, tuple(files), numbers)
