"""Figure 9: does ``tilt.audit`` recover the exact answers from sampled logs?

Four panels from ``analysis.audit_validation`` (every estimate compared with
the exact value tilt computes on the same instance):

(a) coverage of the nominal 95% interval of the amplification (sequence,
    solid; token, dashed) against the number of prompts, one line per
    number of rollouts per prompt (grid4, edge(2), one demonstration per
    rollout as SDPO);
(b) bias of the amplification against the number of prompts, with the bias
    of the plain within-prompt fit (dotted) that the audit's centring removes;
(c) coverage per instance and context model at one size;
(d) bias of the entropy change against rollouts per prompt, scoring each
    rollout with one demonstration or with every correct sibling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from analysis.audit_validation import CONTEXTS, sweep
from figures._common import FigureResult
from figures.style import new_figure, save_csv, save_figure, save_json, suptitle

__all__ = ["make", "draw"]

NAME = "fig9_audit"

_COLORS = {4: "#56B4E9", 8: "#0072B2", 16: "#000000", 32: "#000000"}


def make(out: Path, quick: bool = False, jobs: int | None = None, seed: int = 0) -> FigureResult:
    """Run the three validation sweeps (``quick``: grid3/routes, 10 replicates) and draw them."""
    rows = []
    for which in ("size", "instances", "demos"):
        rows += sweep(which, quick=quick, seed=seed, jobs=jobs)
    return draw(out, rows)


def draw(out: Path, rows: list[dict[str, Any]]) -> FigureResult:
    """Write the table, its key numbers and the figure from the sweeps' summary rows."""
    files = [save_csv(out / f"{NAME}.csv", rows)]
    size = [r for r in rows if r["sweep"] == "size"]
    inst = [r for r in rows if r["sweep"] == "instances"]
    demos = [r for r in rows if r["sweep"] == "demos"]
    numbers: dict[str, object] = {
        "replicates": {r["sweep"]: r["replicates"] for r in rows},
        "min_coverage_slope": min(r["coverage_slope"] for r in rows),
        "min_coverage_token": min(r["coverage_token"] for r in rows),
        "coverage_slope_instances": {
            f"{r['instance']} {r['context']}": r["coverage_slope"] for r in inst
        },
        "coverage_token_instances": {
            f"{r['instance']} {r['context']}": r["coverage_token"] for r in inst
        },
        "bias_delta_entropy_demos": {
            f"n={r['rollouts']} demos={r['demos']}": r["bias_delta_entropy"] for r in demos
        },
    }
    fig, axes = new_figure(2, 2, width=4.2, height=3.3)
    ax_cov, ax_bias = axes[0]
    ax_inst, ax_dh = axes[1]
    for n in sorted({r["rollouts"] for r in size}):
        pts = sorted((r for r in size if r["rollouts"] == n), key=lambda r: r["prompts"])
        prompts = [r["prompts"] for r in pts]
        color = _COLORS.get(n, "0.4")
        ax_cov.plot(
            prompts,
            [r["coverage_slope"] for r in pts],
            "o-",
            color=color,
            label=f"{n} rollouts/prompt",
        )
        ax_cov.plot(prompts, [r["coverage_token"] for r in pts], "s--", color=color, alpha=0.7)
        ax_bias.plot(
            prompts, [r["bias_slope"] for r in pts], "o-", color=color, label=f"{n} rollouts/prompt"
        )
        ax_bias.plot(prompts, [r["bias_naive_slope"] for r in pts], ":", color=color)
    for ax in (ax_cov, ax_inst):
        ax.axhline(0.95, color="0.3", ls=":", lw=1)
        ax.axhline(0.90, color="#D55E00", ls="--", lw=1)
        ax.set_ylabel("interval coverage (nominal 0.95)")
    ax_cov.set_ylim(0.7, 1.0)
    ax_inst.set_ylim(0.0, 1.02)
    sizes = sorted({r["prompts"] for r in size})
    for ax in (ax_cov, ax_bias):
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(p) for p in sizes])
        ax.minorticks_off()
    ax_cov.set_xlabel("prompts (solid: sequence, dashed: token)")
    ax_cov.set_title(f"(a) coverage, {size[0]['instance']} edge(2)" if size else "(a)")
    ax_cov.legend(loc="lower right")
    ax_bias.axhline(0.0, color="0.3", ls=":", lw=1)
    ax_bias.set_xlabel("prompts")
    ax_bias.set_ylabel("bias of the amplification (mean - exact)")
    ax_bias.set_title("(b) bias; dotted: plain within-prompt fit")
    labels = [f"{r['instance']} {r['context']}" for r in inst]
    x = np.arange(len(inst))
    for offset, key, marker, name in (
        (-0.2, "coverage_slope", "o", "sequence"),
        (0.0, "coverage_token", "s", "token"),
        (0.2, "coverage_delta_entropy", "^", "entropy change"),
    ):
        ax_inst.plot(x + offset, [r[key] for r in inst], marker, label=name)
    ax_inst.set_xticks(x, labels, fontsize=6, rotation=60)
    ax_inst.set_title(
        f"(c) each instance and context, {inst[0]['prompts']} prompts x {inst[0]['rollouts']}"
        if inst
        else "(c)"
    )
    ax_inst.legend(loc="lower left", fontsize=6)
    for m in ("1", "all"):
        pts = sorted((r for r in demos if str(r["demos"]) == m), key=lambda r: r["rollouts"])
        ax_dh.plot(
            [r["rollouts"] for r in pts],
            [r["bias_delta_entropy"] for r in pts],
            "o-",
            label=f"{m} demonstration(s) per rollout",
        )
    ax_dh.axhline(0.0, color="0.3", ls=":", lw=1)
    ns = sorted({r["rollouts"] for r in demos})
    ax_dh.set_xscale("log")
    ax_dh.set_xticks(ns, [str(n) for n in ns])
    ax_dh.minorticks_off()
    ax_dh.set_xlabel("rollouts per prompt")
    ax_dh.set_ylabel("bias of the entropy change (nats)")
    ax_dh.set_title("(d) entropy change: demonstration noise")
    ax_dh.legend(loc="best", fontsize=6)
    assert set(CONTEXTS) >= {r["context"] for r in inst}
    suptitle(
        fig,
        "Fig. 9 — tilt.audit against exact answers: coverage and bias over replicated sampled "
        "logs (red dashed: the 0.90 floor)",
    )
    files.append(save_json(out / f"{NAME}.json", numbers))
    files += save_figure(fig, out, NAME)
    return FigureResult(NAME, tuple(files), numbers)
