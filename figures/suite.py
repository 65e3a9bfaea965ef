"""Figure 11: mean pass@k over a suite of prompts, RL at one shared beta against SD.

On one prompt pass@k depends on accuracy alone; over a suite, at matched mean
pass@1, the mean pass@k of two methods differs by how spread out their
per-prompt accuracies are (``tilt.suite``).  Top row: mean pass@k of the base,
each SD variant, and RL at the one beta matched to sequence SD's mean pass@1;
bottom row: each SD variant minus RL at the beta matched to *that* variant.
Two suites with ``kernel(gamma=2)``:

* ``chain-traps`` (designed): SD lowers the accuracy of the long-chain prompts
  and its mean pass@k falls below RL's (by up to 0.033 at k = 4..256);
* ``grid-pairs`` (every pair of the 4x4 grid, horizon 8, random bases): the
  difference stays below 0.01.
"""

from __future__ import annotations

from pathlib import Path

from figures._common import FigureResult
from figures.style import METHODS, new_figure, save_csv, save_figure, save_json, suptitle
from tilt.suite import DEFAULT_KS, SuiteConfig, builtin_suite, run_suite, select_prompts

__all__ = ["make", "SUITES"]

NAME = "fig11_suite_pass_at_k"
SUITES = (("chain-traps", "kernel", 2.0), ("grid-pairs", "kernel", 2.0))
"""(suite, context, strength) of each column."""
KEYS = {"sequence": "sd", "token": "sd_token", "forward": "sd_forward"}


def make(out: Path, quick: bool = False, jobs: int | None = None, seed: int = 0) -> FigureResult:
    """Draw figure 8 (``quick``: a seeded sample of 24 grid pairs)."""
    rows, numbers = [], {}
    fig, axes = new_figure(len(SUITES), 2, width=4.2, height=3.0, sharex=True)
    for col, (name, context, strength) in enumerate(SUITES):
        suite = builtin_suite(name, seed)
        if quick and name == "grid-pairs":
            suite = select_prompts(suite, 24, seed)
        result = run_suite(suite, SuiteConfig(context, strength), DEFAULT_KS, jobs=1)
        ks = list(result.ks)
        top, bottom = axes[0][col], axes[1][col]
        top.plot(ks, [result.base_curve[k] for k in ks], **METHODS["base"].line())
        panel: dict[str, object] = {
            "prompts": len(result.prompts),
            "base_mean_accuracy": result.base_curve[1],
        }
        for v in result.variants:
            key = KEYS[v.method]
            diff = v.difference()
            top.plot(ks, [v.sd_curve[k] for k in ks], **METHODS[key].line())
            if v.method == "sequence" and v.rl_shared_curve is not None:
                top.plot(
                    ks,
                    [v.rl_shared_curve[k] for k in ks],
                    **{**METHODS["rl_matched"].line(), "label": "RL, one beta @ SD sequence"},
                )
            if diff is not None:
                bottom.plot(ks, [diff[k] for k in ks], **METHODS[key].line())
            panel[v.method] = {
                "mean_accuracy": v.mean_accuracy,
                "rl_shared_beta": v.rl_shared_beta,
                "prompts_worse_than_base": v.worse_count,
                "accuracy_spread_sd": v.accuracy_spread,
                "accuracy_spread_rl_shared": v.rl_shared_spread,
                "sd_minus_rl_shared_min_k4_256": None
                if diff is None
                else min(diff[k] for k in ks if 4 <= k <= 256),
                "sd_minus_rl_shared_max_k4_256": None
                if diff is None
                else max(diff[k] for k in ks if 4 <= k <= 256),
            }
            for k in ks:
                rows.append(
                    {
                        "suite": name,
                        "context": context,
                        "strength": strength,
                        "sd": v.method,
                        "k": k,
                        "base": result.base_curve[k],
                        "sd_mean_pass_at_k": v.sd_curve[k],
                        "rl_shared_mean_pass_at_k": None
                        if v.rl_shared_curve is None
                        else v.rl_shared_curve[k],
                        "rl_per_prompt_mean_pass_at_k": v.rl_per_prompt_curve[k],
                    }
                )
        numbers[f"{name} {context}(gamma={strength:g})"] = panel
        top.set_title(f"{name} ({len(result.prompts)} prompts), {context}(γ={strength:g})")
        top.set_ylabel("mean pass@k over prompts")
        top.legend(loc="lower right")
        bottom.axhline(0.0, color="#999999", linewidth=0.8)
        bottom.set_ylabel("SD − RL at the matched shared beta")
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("k  (samples, log scale)")
    suptitle(
        fig,
        "Fig. 11 — mean pass@k over a suite, RL at one beta matched to each SD variant's "
        "mean pass@1: SD falls below RL where it spreads the prompts' accuracies more",
    )
    files = [save_csv(out / f"{NAME}.csv", rows), save_json(out / f"{NAME}.json", numbers)]
    files += save_figure(fig, out, NAME)
    return FigureResult(NAME, tuple(files), numbers)
