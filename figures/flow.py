"""Figure 5: where the mass goes.

The grid drawn with each edge's width and darkness proportional to the share
of correct rollouts that use it, ``q(e in y | y in C)`` summed over both
directions (``tilt.measures.correct_flow_by_move`` divided by ``q(C)``), for
the base, RL (``beta -> 0``) and sequence SD.  RL's picture is the base's:
it only removes the failures.  SD concentrates the flow on the central routes
the base already preferred.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
from matplotlib.collections import LineCollection

from figures._common import FigureResult, base_of, optima
from figures.style import METHODS, new_figure, save_csv, save_figure, save_json, suptitle
from tilt.measures import correct_flow_by_move

__all__ = ["make", "undirected_flow"]

NAME = "fig5_flow"
SHOWN = ("base", "rl", "sd")


def undirected_flow(policy) -> dict[tuple[int, int], float]:  # type: ignore[no-untyped-def]
    """``q(e in y | y in C)`` per undirected edge ``(min node, max node)``, both ways summed."""
    space = policy.space
    flow = correct_flow_by_move(policy) / policy.accuracy
    out: dict[tuple[int, int], float] = {}
    for m in range(space.n_moves):
        a, b = int(space.move_tail[m]), int(space.move_head[m])
        key = (min(a, b), max(a, b))
        out[key] = out.get(key, 0.0) + float(flow[m])
    return out


def _effective(shares: dict[tuple[int, int], float]) -> float:
    """``exp`` of the entropy of the normalised edge shares: how many edges carry the flow."""
    p = np.array(list(shares.values()))
    p = p[p > 0] / p.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def make(out: Path, quick: bool = False, jobs: int | None = None, seed: int = 0) -> FigureResult:
    """Draw figure 5 on grid5 (grid4 with ``quick``), context edge(gamma=2)."""
    graph, strength = ("grid4" if quick else "grid5"), 2.0
    pi0 = base_of(graph)
    space = pi0.space
    policies = optima(pi0, ("edge", strength))
    pos = {i: ast.literal_eval(label) for i, label in enumerate(space.labels)}
    flows = {k: undirected_flow(policies[k]) for k in SHOWN}
    edges = sorted(flows["base"])
    rows = [
        {"edge": f"{space.labels[a]}-{space.labels[b]}", **{k: flows[k][(a, b)] for k in SHOWN}}
        for a, b in edges
    ]
    files = [save_csv(out / f"{NAME}.csv", rows)]
    top = max(max(f.values()) for f in flows.values())
    diff = {e: flows["sd"][e] - flows["base"][e] for e in edges}
    gain, loss = max(diff, key=diff.get), min(diff, key=diff.get)  # type: ignore[arg-type]

    def name(edge: tuple[int, int]) -> str:
        return f"{space.labels[edge[0]]}-{space.labels[edge[1]]}"

    numbers = {
        "graph": graph,
        "context": f"edge(gamma={strength:g})",
        "effective_edges": {k: _effective(flows[k]) for k in SHOWN},
        "largest_gain_sd_minus_base": [name(gain), diff[gain]],
        "largest_loss_sd_minus_base": [name(loss), diff[loss]],
        "max_abs_rl_minus_base": max(abs(flows["rl"][e] - flows["base"][e]) for e in edges),
        "first_move_share": {
            k: {
                space.labels[b]: flows[k][(min(space.source, b), max(space.source, b))]
                for b in sorted(
                    {b for a, b in edges if a == space.source}
                    | {a for a, b in edges if b == space.source}
                )
            }
            for k in SHOWN
        },
    }
    files.append(save_json(out / f"{NAME}.json", numbers))

    fig, axes = new_figure(len(SHOWN) + 1, 1, width=3.0, height=3.4)
    segments = [[(pos[a][1], -pos[a][0]), (pos[b][1], -pos[b][0])] for a, b in edges]
    for ax, key in zip(axes[0], [*SHOWN, "diff"], strict=True):
        if key == "diff":
            change = np.array([diff[e] for e in edges])
            big = float(np.abs(change).max()) or 1.0
            for sign, style, colour in ((1, "solid", "black"), (-1, (0, (2, 1.5)), "0.45")):
                keep = sign * change > 1e-12
                ax.add_collection(
                    LineCollection(
                        [seg for seg, k in zip(segments, keep, strict=True) if k],
                        linewidths=0.3 + 7 * np.abs(change[keep]) / big,
                        colors=colour,
                        linestyles=style,
                        label="SD gains" if sign > 0 else "SD loses",
                    )
                )
            ax.legend(loc="lower left", fontsize=6.5, handlelength=2.5)
        else:
            share = np.array([flows[key][e] for e in edges])
            ax.add_collection(
                LineCollection(
                    segments,
                    linewidths=0.4 + 9 * share / top,
                    colors=[str(round(0.88 * (1 - s / top) ** 1.5, 4)) for s in share],
                    capstyle="round",
                )
            )
        xy = np.array([(pos[i][1], -pos[i][0]) for i in pos])
        ax.scatter(
            xy[:, 0], xy[:, 1], s=10, color="white", edgecolors="0.3", linewidths=0.6, zorder=3
        )
        for node, text in ((space.source, "s"), (space.target, "t")):
            ax.annotate(
                text, (pos[node][1], -pos[node][0]), xytext=(-9, 4), textcoords="offset points"
            )
        ax.set_aspect("equal")
        ax.set_xlim(xy[:, 0].min() - 0.5, xy[:, 0].max() + 0.5)
        ax.set_ylim(xy[:, 1].min() - 0.5, xy[:, 1].max() + 0.5)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        if key == "diff":
            ax.set_title(f"SD − base: largest change {diff[gain]:+.3f} / {diff[loss]:+.3f}")
            ax.set_xlabel("width ∝ change in share")
        else:
            ax.set_title(f"{METHODS[key].label}: {_effective(flows[key]):.1f} effective edges")
            ax.set_xlabel("width, darkness ∝ share of correct rollouts")
    suptitle(
        fig,
        f"Fig. 5 — flow of correct rollouts through each edge of {graph}, "
        f"context edge(γ={strength:g}): "
        "RL's picture is the base's; SD moves flow onto the routes the base already preferred",
    )
    files += save_figure(fig, out, NAME)
    return FigureResult(NAME, tuple(files), numbers)
