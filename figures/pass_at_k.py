"""Figure 3: out-of-distribution pass@k, where diversity matters.

Block one move that some correct rollout uses; ``ood_pass@k`` is the chance
that ``k`` samples still contain a correct rollout avoiding it, averaged over
every such move (``tilt.measures.ood_pass_at_k``).  Two instances:

* ``routes`` with ``kernel(gamma=2)``: blocking the dominant route leaves
  only the minority one, which SD has starved; SD's curve flattens below 1
  while RL (at SD's accuracy) keeps rising to 1.
* ``grid5`` with ``edge(gamma=2)``: so many alternative routes exist that
  every method reaches 1 by ``k = 64``; the effect is absent there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from figures._common import FigureResult, base_of, optima
from figures.style import METHODS, new_figure, save_csv, save_figure, save_json, suptitle
from tilt.measures import ood_pass_at_k

__all__ = ["make", "INSTANCES", "ks"]

NAME = "fig3_ood_pass_at_k"
INSTANCES = (("routes", "kernel", 2.0), ("grid5", "edge", 2.0))
"""(graph, context, strength) of each panel."""
ORDER = ("base", "rl_matched", "sd", "sd_token", "sd_forward")


def ks(kmax: int = 1024, per_decade: int = 12) -> list[int]:
    """Integers 1..``kmax``: about ``per_decade`` per decade on a log axis, and every power of 2."""
    grid = np.round(np.logspace(0, np.log10(kmax), int(per_decade * np.log10(kmax)) + 1))
    powers = 2.0 ** np.arange(int(np.log2(kmax)) + 1)
    return [int(k) for k in np.unique(np.concatenate([grid, powers])) if k <= kmax]


def make(out: Path, quick: bool = False, jobs: int | None = None, seed: int = 0) -> FigureResult:
    """Draw figure 3 (``quick`` uses grid4 in place of grid5 and fewer k)."""
    instances = [(("grid4" if quick and g == "grid5" else g), c, s) for g, c, s in INSTANCES]
    k_values = ks(1024, 4 if quick else 12)
    rows, numbers = [], {}
    fig, axes = new_figure(len(instances), 2, width=4.0, height=3.0, sharey="row", sharex=True)
    for col, (graph, context, strength) in enumerate(instances):
        policies = optima(base_of(graph), (context, strength))
        panel = {}
        for key in ORDER:
            if key not in policies:
                continue
            ood = [ood_pass_at_k(policies[key], k) for k in k_values]
            mean, worst = [o.mean for o in ood], [o.worst for o in ood]
            panel[key] = {"accuracy": policies[key].accuracy}
            for k, m, w in zip(k_values, mean, worst, strict=True):
                if k in (1, 16, 64, 1024):
                    panel[key][f"ood_mean_at_{k}"] = m
                    panel[key][f"ood_worst_at_{k}"] = w
                rows.append(
                    {
                        "graph": graph,
                        "context": context,
                        "strength": strength,
                        "method": key,
                        "k": k,
                        "ood_pass_at_k_mean": m,
                        "ood_pass_at_k_worst": w,
                        "worst_move": ood[0].worst_move if k == 1 else "",
                    }
                )
            st = METHODS[key]
            for row, values in ((0, mean), (1, worst)):
                axes[row][col].plot(
                    k_values,
                    values,
                    markevery=max(1, len(k_values) // 8),
                    linewidth=1.4,
                    **st.line(),
                )
        numbers[f"{graph} {context}(gamma={strength:g})"] = panel
        for row, what in ((0, "mean"), (1, "worst case")):
            ax = axes[row][col]
            ax.set_xscale("log", base=2)
            ax.set_xlabel("k  (samples, log scale)")
            ax.set_title(f"{graph}, context {context}(γ={strength:g}): {what}")
        axes[0][col].legend(loc="lower right")
    axes[0][0].set_ylabel("OOD pass@k, mean over blocked moves")
    axes[1][0].set_ylabel("OOD pass@k, worst blocked move")
    suptitle(
        fig,
        "Fig. 3 — pass@k when one move used by a correct rollout is blocked: "
        "RL keeps rising, SD flattens where only a starved route remains",
    )
    files = [save_csv(out / f"{NAME}.csv", rows), save_json(out / f"{NAME}.json", numbers)]
    files += save_figure(fig, out, NAME)
    return FigureResult(NAME, tuple(files), numbers)
