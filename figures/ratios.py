"""Figure 1: RL keeps the ratios among correct rollouts; SD steepens them.

``log q(y)`` against ``log pi0(y)`` over the correct rollouts of one instance,
one panel per method.  RL's points lie on a line of slope 1 (the identity
shifted by ``-log pi0(C)``); each SD variant's least-squares slope (the gap
slope) is above 1 when SD widens the gaps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from figures._common import FigureResult, base_of, correct_rollout_rows, optima
from figures.style import METHODS, new_figure, save_csv, save_figure, save_json, suptitle
from tilt.measures import gap_slope

__all__ = ["make"]

NAME = "fig1_ratios"
PANELS = ("rl_matched", "sd", "sd_token", "sd_forward")


def make(out: Path, quick: bool = False, jobs: int | None = None, seed: int = 0) -> FigureResult:
    """Draw figure 1 on grid5 (grid4 with ``quick``), context edge(gamma=2)."""
    graph, context = ("grid4" if quick else "grid5"), ("edge", 2.0)
    pi0 = base_of(graph)
    policies = optima(pi0, context)
    correct = pi0.space.correct
    x = pi0.log_prob[correct]
    keys = [k for k in PANELS if k in policies]
    slopes = {k: gap_slope(policies[k], pi0) for k in keys}
    rows = correct_rollout_rows(pi0, {f"log_{k}": policies[k].log_prob[correct] for k in keys})
    files = [save_csv(out / f"{NAME}.csv", rows)]
    numbers = {
        "graph": graph,
        "context": f"{context[0]}(gamma={context[1]:g})",
        "n_correct": int(correct.sum()),
        "gap_slope": slopes,
        "accuracy": {k: policies[k].accuracy for k in ["base", *keys]},
    }
    files.append(save_json(out / f"{NAME}.json", numbers))

    fig, axes = new_figure(len(keys), 1, width=3.0, height=3.0, sharex=True, sharey=True)
    lo, hi = float(x.min()), float(x.max())
    for ax, key in zip(axes[0], keys, strict=True):
        st = METHODS[key]
        y = policies[key].log_prob[correct]
        ax.scatter(
            x,
            y,
            s=3,
            color=st.color,
            marker=st.marker,
            linewidths=0,
            alpha=0.5,
            rasterized=True,
            label=f"{st.label}: gap slope {slopes[key]:.3f}",
        )
        shift = float(np.mean(y - x))
        ax.plot(
            [lo, hi],
            [lo + shift, hi + shift],
            color="0.3",
            linestyle=":",
            linewidth=1,
            label="slope 1 (ratios kept)",
        )
        ax.set_title(st.label)
        ax.set_xlabel("log π0(y)  [nats]")
        ax.legend(loc="upper left", markerscale=3)
    axes[0][0].set_ylabel("log q(y)  [nats]")
    suptitle(
        fig,
        f"Fig. 1 — log-probabilities of the {int(correct.sum()):,} correct rollouts of {graph}, "
        f"context edge(γ={context[1]:g}): RL keeps ratios, SD steepens them",
    )
    files += save_figure(fig, out, NAME)
    return FigureResult(NAME, tuple(files), numbers)
