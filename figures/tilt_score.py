"""Figure 2: the tilt is rich-get-richer.

The tilt score ``S(y)`` against ``log pi0(y)`` over the correct rollouts, one
panel per built-in context model.  Where ``S`` rises with ``log pi0``, sequence
SD (``q* ∝ pi0 exp(S)``) widens the gaps; the least-squares slope of ``S`` on
``log pi0`` is the gap slope minus 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from figures._common import FigureResult, base_of, correct_rollout_rows
from figures.style import (
    CONTEXT_LABELS,
    METHODS,
    new_figure,
    save_csv,
    save_figure,
    save_json,
    suptitle,
)
from tilt.context import CONTEXTS, DEFAULT_STRENGTH, make_context
from tilt.measures import least_squares_slope
from tilt.objectives import tilt_score

__all__ = ["make"]

NAME = "fig2_tilt_score"


def make(out: Path, quick: bool = False, jobs: int | None = None, seed: int = 0) -> FigureResult:
    """Draw figure 2 on grid5 (grid4 with ``quick``), each context at its CLI default strength."""
    graph = "grid4" if quick else "grid5"
    pi0 = base_of(graph)
    correct = pi0.space.correct
    x = pi0.log_prob[correct]
    scores, slopes = {}, {}
    for name in CONTEXTS:
        s = tilt_score(pi0, make_context(name, DEFAULT_STRENGTH[name]))[correct]
        scores[name], slopes[name] = s, least_squares_slope(x, s)
    rows = correct_rollout_rows(pi0, {f"S_{n}": scores[n] for n in CONTEXTS})
    files = [save_csv(out / f"{NAME}.csv", rows)]
    numbers = {
        "graph": graph,
        "strength": {n: DEFAULT_STRENGTH[n] for n in CONTEXTS},
        "slope_of_S_on_log_base": slopes,
        "S_range": {n: [float(scores[n].min()), float(scores[n].max())] for n in CONTEXTS},
    }
    files.append(save_json(out / f"{NAME}.json", numbers))

    st = METHODS["sd"]
    fig, axes = new_figure(len(CONTEXTS), 1, width=3.0, height=3.0, sharex=True)
    for ax, name in zip(axes[0], CONTEXTS, strict=True):
        strength = DEFAULT_STRENGTH[name]
        label = (
            CONTEXT_LABELS[name].replace("λ)", f"λ={strength:g})").replace("γ)", f"γ={strength:g})")
        )
        ax.scatter(
            x,
            scores[name],
            s=3,
            color=st.color,
            marker=st.marker,
            linewidths=0,
            alpha=0.5,
            rasterized=True,
            label=f"slope of S on log π0: {slopes[name]:+.3f}",
        )
        fit = np.polyfit(x, scores[name], 1)
        ax.plot(
            [x.min(), x.max()],
            np.polyval(fit, [x.min(), x.max()]),
            color="0.2",
            linestyle="--",
            linewidth=1,
            label="least-squares line",
        )
        ax.set_title(label)
        ax.set_xlabel("log π0(y)  [nats]")
        ax.set_ylabel("tilt score S(y)  [nats]")
        ax.legend(loc="best", markerscale=3)
    suptitle(
        fig,
        "Fig. 2 — tilt score S(y) = E_c log π(y|c) − log π(y) over the correct rollouts "
        f"of {graph}, "
        "demonstrations = own correct rollouts",
    )
    files += save_figure(fig, out, NAME)
    return FigureResult(NAME, tuple(files), numbers)
