"""Figure 12: strategy shares among the correct rollouts (functional diversity).

Each bar splits a method's correct mass by strategy (``tilt.measures.strategies``):
which way round the hole of ``holed5`` the rollout goes (``side``, base:
seeded random logits, seed 3), and which route ``routes`` takes (first move).
RL's optimum keeps every share exactly (bars identical to the base's); SD's
moves them: ``kernel(gamma=2)`` concentrates the correct mass on one side of
``holed5`` (here the base's majority side) and on the dominant route of
``routes``; with ``edge(gamma=2)`` sequence SD barely moves the sides, token
SD more.  Which side SD favours depends on the base: with random bases of
seeds 0 and 5, kernel sequence SD turns the base's minority side into the
majority (``python -m tilt.compare --graph holed5 --base random --seed 0
--context kernel --strength 2 --strategy side``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from figures._common import FigureResult, base_of, optima
from figures.style import METHODS, new_figure, save_csv, save_figure, save_json, suptitle
from tilt.measures.strategies import strategy_labels, strategy_measures

__all__ = ["make", "PANELS"]

NAME = "fig12_strategies"
PANELS = (
    ("holed5", "random", 3, "side", "edge", 2.0),
    ("holed5", "random", 3, "side", "kernel", 2.0),
    ("routes", "default", 0, "first-move", "kernel", 2.0),
)
"""(graph, base, seed, strategy map, context, strength) of each panel."""
ORDER = ("base", "rl_matched", "sd", "sd_token", "sd_forward")
HATCHES = ("", "///", "...", "xx")


def make(out: Path, quick: bool = False, jobs: int | None = None, seed: int = 0) -> FigureResult:
    """Draw figure 9 (the graphs are small: ``quick`` draws the same)."""
    rows, numbers = [], {}
    fig, axes = new_figure(len(PANELS), 1, width=3.6, height=3.4, sharey=True)
    for col, (graph, base, base_seed, strategy, context, strength) in enumerate(PANELS):
        pi0 = base_of(graph, base, base_seed)
        policies = optima(pi0, (context, strength))
        labels = strategy_labels(pi0.space, strategy)
        ax = axes[0][col]
        keys = [k for k in ORDER if k in policies]
        bottom = np.zeros(len(keys))
        panel = {}
        shares = {k: strategy_measures(policies[k], labels, (1, 16)) for k in keys}
        for s, name in enumerate(labels.names):
            heights = np.array([shares[k].shares[name] for k in keys])
            ax.bar(
                range(len(keys)),
                heights,
                bottom=bottom,
                color=[METHODS[k].color for k in keys],
                alpha=1.0 if s == 0 else 0.35,
                hatch=HATCHES[s % len(HATCHES)],
                edgecolor="black",
                linewidth=0.6,
                label=f"{strategy}: {name}",
            )
            bottom += heights
        for i, k in enumerate(keys):
            m = shares[k]
            ax.text(i, 1.02, f"{m.effective:.2f}", ha="center", fontsize=7)
            panel[k] = {
                "accuracy": policies[k].accuracy,
                "shares": m.shares,
                "effective_strategies": m.effective,
                "distinct_strategies_at_16": m.distinct_at_k[16],
            }
            for name in labels.names:
                rows.append(
                    {
                        "graph": graph,
                        "base": f"{base}(seed={base_seed})" if base == "random" else base,
                        "strategy_map": strategy,
                        "context": context,
                        "strength": strength,
                        "method": k,
                        "strategy": name,
                        "share": m.shares[name],
                        "effective_strategies": m.effective,
                        "accuracy": policies[k].accuracy,
                    }
                )
        numbers[f"{graph} {strategy} {context}(gamma={strength:g})"] = panel
        ax.set_xticks(range(len(keys)), [METHODS[k].label for k in keys], rotation=35, ha="right")
        base_text = f"random base (seed {base_seed})" if base == "random" else "default base"
        ax.set_title(f"{graph}, {base_text}\n{context}(γ={strength:g}), strategy '{strategy}'")
        ax.set_ylim(0, 1.1)
        ax.legend(loc="lower right", fontsize=7)
    axes[0][0].set_ylabel("share of the correct mass")
    suptitle(
        fig,
        "Fig. 12 — strategy shares of the correct mass (above each bar: effective number of "
        "strategies): RL keeps the shares exactly, SD moves them",
    )
    files = [save_csv(out / f"{NAME}.csv", rows), save_json(out / f"{NAME}.json", numbers)]
    files += save_figure(fig, out, NAME)
    return FigureResult(NAME, tuple(files), numbers)
