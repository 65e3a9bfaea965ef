"""Figure 4: iterated training.

RL and the SD variants applied round after round, each from its own output
(``tilt.objectives.iterate``; table from ``analysis.sweeps.iterated_sweep``):
effective number of correct rollouts ``exp H(q(.|C))``, ``distinct@64`` and
out-of-distribution ``pass@64`` against rounds, on grid5 and on routes.
"""

from __future__ import annotations

from pathlib import Path

from analysis.sweeps import iterated_sweep
from figures._common import FigureResult
from figures.style import METHODS, new_figure, save_csv, save_figure, save_json, suptitle

__all__ = ["make"]

NAME = "fig4_iterated"
METHOD_KEYS = ("rl", "sd", "sd_token", "sd_forward")
K = 64


def make(out: Path, quick: bool = False, jobs: int | None = None, seed: int = 0) -> FigureResult:
    """Draw figure 4 (``quick``: grid4 and 4 rounds)."""
    graphs = ("grid4" if quick else "grid5", "routes")
    rounds = 4 if quick else 8
    rows = []
    for graph in graphs:
        rows += iterated_sweep(graph, "edge", 2.0, rounds, METHOD_KEYS, k=K, jobs=jobs)
    files = [save_csv(out / f"{NAME}.csv", rows)]
    panels = (
        ("effective_correct", "effective # correct  exp H(q(·|C))", "log"),
        (f"distinct_at_{K}", f"distinct@{K} (correct rollouts)", "linear"),
        (f"ood_pass_at_{K}_mean", f"OOD pass@{K} (mean, blocked move)", "linear"),
    )
    fig, axes = new_figure(len(panels), len(graphs), width=3.3, height=2.8)
    numbers: dict[str, object] = {}
    for r, graph in enumerate(graphs):
        sub = [row for row in rows if row["graph"] == graph]
        numbers[graph] = {
            m: {
                p[0]: [sub_row[p[0]] for sub_row in sub if sub_row["method"] == m][-1]
                for p in panels
            }
            | {"accuracy": [x["accuracy"] for x in sub if x["method"] == m][-1]}
            for m in METHOD_KEYS
        }
        numbers[graph]["rounds"] = rounds
        numbers[graph]["rl_beta"] = next(x["beta"] for x in sub if x["method"] == "rl")
        for c, (column, label, scale) in enumerate(panels):
            ax = axes[r][c]
            for m in METHOD_KEYS:
                pts = [x for x in sub if x["method"] == m]
                st = METHODS[m]
                ax.plot(
                    [x["round"] for x in pts], [x[column] for x in pts], linewidth=1.4, **st.line()
                )
            ax.set_yscale(scale)
            if column.startswith("ood"):
                low = min(x[column] for x in sub)
                ax.set_ylim(min(0.9, low - 0.02), 1.01)
                ax.ticklabel_format(axis="y", useOffset=False)
            ax.set_xlabel("round n  (each round from the last)")
            ax.set_ylabel(label)
            ax.set_title(f"{graph}, edge(γ=2)")
        axes[r][0].legend(loc="best")
    suptitle(
        fig,
        "Fig. 4 — iterated training: SD collapses the correct set round after round; "
        "RL (β matched to one SD round) keeps every correct ratio",
    )
    files.append(save_json(out / f"{NAME}.json", numbers))
    files += save_figure(fig, out, NAME)
    return FigureResult(NAME, tuple(files), numbers)
