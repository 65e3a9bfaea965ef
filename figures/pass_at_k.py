"""Figure 3: out-of-distribution pass@k in both readings, where diversity matters.

Block one edge that some correct rollout uses (both directions on an
undirected graph); ``ood_pass@k`` is the chance that ``k`` samples still
succeed, averaged over every such edge (top row) and for the worst one
(bottom row), in two readings (``tilt.measures.ood``): *blocked = fail* (rollouts
through the edge fail) and *re-route* (the policy renormalised on the graph
without it).  Two instances, one column per reading:

* ``routes`` with ``kernel(gamma=2)``: blocking the dominant route leaves
  only the minority one, which SD has starved.  Under blocked = fail SD's
  worst case stays far below RL's up to k = 1024; re-routing sends the
  blocked mass to the other route, so SD's worst case recovers much more.
* ``grid5`` with ``edge(gamma=2)``: so many alternative routes exist that
  every method reaches 1 by ``k = 64`` in both readings; the effect is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from figures._common import FigureResult, base_of, optima
from figures.style import METHODS, new_figure, save_csv, save_figure, save_json, suptitle
from tilt.measures.ood import READING_LABELS, READINGS, ood_pass_at_ks

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
    columns = [(inst, reading) for inst in instances for reading in READINGS]
    fig, axes = new_figure(len(columns), 2, width=3.4, height=3.0, sharey="row", sharex=True)
    cache: dict[tuple[str, str, float], dict] = {}
    for col, ((graph, context, strength), reading) in enumerate(columns):
        if (graph, context, strength) not in cache:
            cache[(graph, context, strength)] = optima(base_of(graph), (context, strength))
        policies = cache[(graph, context, strength)]
        panel = numbers.setdefault(f"{graph} {context}(gamma={strength:g})", {})
        for key in ORDER:
            if key not in policies:
                continue
            ood = ood_pass_at_ks(policies[key], k_values, reading)
            mean, worst = [o.mean for o in ood], [o.worst for o in ood]
            entry = panel.setdefault(key, {"accuracy": policies[key].accuracy})
            for k, m, w in zip(k_values, mean, worst, strict=True):
                if k in (1, 16, 64, 1024):
                    entry[f"{reading}_mean_at_{k}"] = m
                    entry[f"{reading}_worst_at_{k}"] = w
                rows.append(
                    {
                        "graph": graph,
                        "context": context,
                        "strength": strength,
                        "reading": reading,
                        "method": key,
                        "k": k,
                        "ood_pass_at_k_mean": m,
                        "ood_pass_at_k_worst": w,
                        "worst_edge": ood[0].worst_move if k == 1 else "",
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
        for row, what in ((0, "mean"), (1, "worst edge")):
            ax = axes[row][col]
            ax.set_xscale("log", base=2)
            ax.set_xlabel("k  (samples, log scale)")
            ax.set_title(
                f"{graph}, {context}(γ={strength:g})\n{READING_LABELS[reading]}: {what}"
            )
        axes[0][col].legend(loc="lower right")
    axes[0][0].set_ylabel("OOD pass@k, mean over blocked edges")
    axes[1][0].set_ylabel("OOD pass@k, worst blocked edge")
    suptitle(
        fig,
        "Fig. 3 — pass@k with one edge blocked, in two readings: blocked = fail (rollouts "
        "through it fail) and re-route (the policy renormalised without it)",
    )
    files = [save_csv(out / f"{NAME}.csv", rows), save_json(out / f"{NAME}.json", numbers)]
    files += save_figure(fig, out, NAME)
    return FigureResult(NAME, tuple(files), numbers)
