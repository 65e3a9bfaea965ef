"""Figure 13: one shared-weight student over a suite — held-out pass@k at matched training pass@1.

``edge`` features (one logit per directed move and target, shared by every
prompt), suite ``grid-holed`` (the 5x5 grid and the same grid without its
centre, all logits 0, target (4, 4), horizon 10), sources split by region
(first coordinate <= 2 train), live teacher ``edge(gamma=2)`` with own
demonstrations, RL with ``beta = 0.1``; 150 gradient steps of size 2 on
``theta`` (``python -m tilt.share --suite grid-holed --features edge --split
region --teacher live``).  Left: mean held-out pass@1 against mean training
pass@1 along each run.  Middle: mean held-out pass@k at matched training
pass@1 = 0.8.  Right: mean effective number of correct rollouts on the
training prompts along each run.  ``quick`` uses ``holed5-corner`` and 20 steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from figures._common import FigureResult
from figures.style import METHODS, new_figure, save_csv, save_figure, save_json, suptitle
from tilt.context import make_context
from tilt.measures import correct_entropy
from tilt.share import run_experiment, share_suite, split_suite

__all__ = ["make"]

NAME = "fig13_sharing"
MATCH = 0.8
STYLE = {"rl": "rl", "sequence": "sd", "token": "sd_token"}


def make(out: Path, quick: bool = False, jobs: int | None = None, seed: int = 0) -> FigureResult:
    """Draw figure 13 (``quick``: a smaller suite and fewer steps)."""
    del jobs
    suite = share_suite("holed5-corner" if quick else "grid-holed", seed)
    split = split_suite(suite, "region", seed)
    steps = 20 if quick else 150
    experiment = run_experiment(
        suite,
        "edge",
        split,
        ["rl", "sequence", "token"],
        [MATCH],
        model=make_context("edge", 2.0),
        teacher="live",
        steps=steps,
        lr=2.0,
    )
    from tilt.policy import base_policy
    from tilt.share import SharedStudent, make_features
    from tilt.space import enumerate_rollouts

    spaces = [enumerate_rollouts(p.task) for p in suite.prompts]
    student = SharedStudent(spaces, make_features("edge", spaces, [base_policy(s) for s in spaces]))
    train, held = split
    fig, axes = new_figure(3, 1, width=3.6, height=3.2)
    rows, numbers = [], {"suite": suite.name, "match": MATCH, "steps": steps}
    ks = sorted(experiment.base_held_out.mean_pass_at_k)
    for name, run in experiment.runs.items():
        st = METHODS[STYLE[name]]
        held_acc, train_eff = [], []
        for theta in run.thetas:
            held_acc.append(float(np.mean([p.accuracy for p in student.policies(theta, held)])))
            train_eff.append(
                float(np.mean([np.exp(correct_entropy(p)) for p in student.policies(theta, train)]))
            )
        axes[0][0].plot(run.train_accuracy, held_acc, color=st.color, ls=st.linestyle, label=name)
        axes[0][2].plot(run.train_accuracy, train_eff, color=st.color, ls=st.linestyle, label=name)
        for step, (a, h, e) in enumerate(zip(run.train_accuracy, held_acc, train_eff, strict=True)):
            rows.append(
                {
                    "objective": name,
                    "step": step,
                    "train_pass_at_1": float(a),
                    "held_out_pass_at_1": h,
                    "train_effective_correct": e,
                }
            )
        checkpoint = next(c for c in experiment.checkpoints if c.objective == name)
        if checkpoint.held_out is not None:
            curve = [checkpoint.held_out.mean_pass_at_k[k] for k in ks]
            axes[0][1].plot(
                ks, curve, color=st.color, ls=st.linestyle, marker=st.marker, label=name
            )
            numbers[name] = {
                "held_out_mean_pass_at_k": {str(k): v for k, v in zip(ks, curve, strict=True)},
                "train_effective_correct": checkpoint.train.effective_correct
                if checkpoint.train
                else None,
                "held_out_effective_correct": checkpoint.held_out.effective_correct,
            }
    base_curve = [experiment.base_held_out.mean_pass_at_k[k] for k in ks]
    axes[0][1].plot(ks, base_curve, color="black", ls=":", label="base")
    numbers["base"] = {
        "held_out_mean_pass_at_k": {str(k): v for k, v in zip(ks, base_curve, strict=True)}
    }
    axes[0][0].set_xlabel("mean training pass@1")
    axes[0][0].set_ylabel("mean held-out pass@1")
    axes[0][1].set_xscale("log", base=2)
    axes[0][1].set_xlabel("k")
    axes[0][1].set_ylabel(f"mean held-out pass@k (training pass@1 = {MATCH})")
    axes[0][2].set_xlabel("mean training pass@1")
    axes[0][2].set_ylabel("mean effective correct rollouts (training)")
    for ax in axes[0]:
        ax.legend(fontsize=7)
    suptitle(
        fig,
        f"Fig. 13 — one shared student ({suite.name}, edge features, region split, live "
        "edge(γ=2) teacher): held-out prompts at matched training pass@1",
    )
    files = [save_csv(out / f"{NAME}.csv", rows), save_json(out / f"{NAME}.json", numbers)]
    files += save_figure(fig, out, NAME)
    return FigureResult(NAME, tuple(files), numbers)
