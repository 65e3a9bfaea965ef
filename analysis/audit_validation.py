"""Validation of ``tilt.audit`` against exact answers: bias and interval coverage.

On instances where tilt computes the answer exactly, each replicate samples an
audit log with ``tilt.sample`` (the JSON Lines text, parsed back by the audit's
own reader), audits it, and compares with

* the amplification: ``weighted_gap_slope(sd_sequence(pi0, model), pi0) - 1``;
* the token-level amplification: :func:`tilt.audit.token_slope` of the token-SD target;
* the entropy change: ``H(q*(. | C)) - H(pi0(. | C))`` of the sequence-SD optimum.

One summary row per configuration (instance, context model, prompts, rollouts
per prompt, demonstrations per rollout): mean estimate, bias, standard
deviation, coverage of the nominal 95% interval, mean interval width, and the
bias of the plain within-prompt fit (which centres on a mean that contains the
demonstration) for comparison.

Four sweeps (``SWEEPS``): ``size`` (prompts x rollouts on one instance),
``instances`` (each instance and context model at one size), ``demos``
(demonstrations per rollout, for the entropy change) and ``prompts`` (the
configurations that undercover at 50 prompts, at 200).

Example::

    python -m analysis.audit_validation --quick --out audit_quick.csv
    python -m analysis.audit_validation --out audit.csv --jobs 2   # slow: about 30 minutes
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import networkx as nx
import numpy as np

from analysis.sweeps import Row, rows_to_csv, run_tasks
from tilt.audit import audit_prompts, estimate_prompt, token_slope
from tilt.audit._read import read_prompts
from tilt.cli import (
    OneLineParser,
    check_output_file,
    non_negative_int,
    positive_int,
    run_main,
    write_atomic,
)
from tilt.context import demonstrations, make_context
from tilt.measures import correct_entropy, weighted_gap_slope
from tilt.objectives import sd_sequence
from tilt.policy import Policy, base_policy
from tilt.sample import SampleOptions, sample_jsonl
from tilt.tasks import Task
from tilt.tasks.graphs import make_task, named_task

__all__ = [
    "INSTANCES",
    "CONTEXTS",
    "SWEEPS",
    "instance",
    "exact",
    "replicate",
    "validate",
    "sweep",
    "main",
]

CONTEXTS: dict[str, float] = {"copy": 0.5, "edge": 2.0, "kernel": 0.5}
"""Context models of the validation and their strengths (tilt.compare's defaults)."""


def _obstacle() -> Task:
    """grid5 with its centre node removed: routes must go round one side or the other."""
    graph = named_task("grid5").graph.copy()
    graph.remove_node((2, 2))
    return make_task(graph, (0, 0), (4, 4), name="obstacle5")


def _random_graph() -> Task:
    """A seeded G(9, 0.45) random graph, node 0 to node 8 (connected for this seed)."""
    graph = nx.gnp_random_graph(9, 0.45, seed=3)
    return make_task(graph, 0, 8, name="random9")


INSTANCES: dict[str, tuple[str, str]] = {
    "grid3": ("named", "default"),
    "grid4": ("named", "default"),
    "grid5": ("named", "default"),
    "routes": ("named", "default"),
    "obstacle5": ("obstacle", "default"),
    "random9": ("random", "random"),
}
"""Instance name to (how the task is built, base policy); random9's base has seeded logits."""


@lru_cache(maxsize=8)
def instance(name: str) -> Policy:
    """The base policy of a validation instance."""
    from tilt.space import enumerate_rollouts

    kind, base = INSTANCES[name]
    task = (
        named_task(name)
        if kind == "named"
        else _obstacle()
        if kind == "obstacle"
        else _random_graph()
    )
    return base_policy(enumerate_rollouts(task), base, seed=0)


@lru_cache(maxsize=32)
def exact(name: str, context: str, strength: float) -> dict[str, float]:
    """The exact estimands on one instance (see the module docstring)."""
    pi0 = instance(name)
    model = make_context(context, strength)
    q = sd_sequence(pi0, model)
    return {
        "accuracy": pi0.accuracy,
        "slope": weighted_gap_slope(q, pi0) - 1,
        "token": token_slope(pi0, model.token_log_target(pi0, demonstrations(pi0))),
        "delta_entropy": correct_entropy(q) - correct_entropy(pi0),
    }


def _naive_slope(prompts: Sequence[Any]) -> float:
    """The plain pooled within-prompt fit of ``S^`` on ``log pi`` (prompts with >= 3 correct)."""
    num = den = 0.0
    for p in prompts:
        correct = [r for r in p.rollouts if r.correct]
        if len(correct) < 3:
            continue
        x = np.array([r.logp for r in correct])
        s = np.array([np.mean([t.logp for t in r.teacher]) - r.logp for r in correct])
        dx = x - x.mean()
        num += float(dx @ s)
        den += float(dx @ dx)
    return num / den if den > 0 else math.nan


def replicate(
    name: str,
    context: str,
    prompts: int,
    rollouts: int,
    demos: int | None,
    seed: int,
    bootstrap: int = 1000,
) -> dict[str, float]:
    """Sample one log, audit it; the estimates and intervals (``nan`` if the audit refuses)."""
    pi0 = instance(name)
    model = make_context(context, CONTEXTS[context])
    text = sample_jsonl([pi0], model, SampleOptions(prompts, rollouts, demos, True), seed=seed)
    parsed = list(read_prompts(text.splitlines()))
    estimates = [estimate_prompt(p)[0] for p in parsed]
    out = {"naive": _naive_slope(parsed)}
    try:
        result = audit_prompts(estimates, bootstrap=bootstrap, seed=seed)
    except ValueError:
        return out
    token = result.token_amplification
    assert token is not None  # the sample has per-token values
    for key, interval in (
        ("slope", result.amplification),
        ("token", token),
        ("delta_entropy", result.delta_entropy),
    ):
        out[key], out[f"{key}_low"], out[f"{key}_high"] = (
            interval.estimate,
            interval.low,
            interval.high,
        )
    out["ess_fraction"] = result.median_ess_fraction
    return out


def validate(
    name: str,
    context: str,
    prompts: int,
    rollouts: int,
    demos: int | None,
    replicates: int,
    seed: int = 0,
    bootstrap: int = 1000,
) -> list[Row]:
    """One summary row for a configuration over ``replicates`` independent logs."""
    truth = exact(name, context, CONTEXTS[context])
    runs = [
        replicate(name, context, prompts, rollouts, demos, seed + r, bootstrap)
        for r in range(replicates)
    ]
    done = [r for r in runs if "slope" in r]
    row: Row = {
        "instance": name,
        "context": context,
        "strength": CONTEXTS[context],
        "prompts": prompts,
        "rollouts": rollouts,
        "demos": "all" if demos is None else demos,
        "replicates": replicates,
        "refused": replicates - len(done),
        "accuracy": truth["accuracy"],
    }
    for key in ("slope", "token", "delta_entropy"):
        values = np.array([r[key] for r in done])
        covered = [r[f"{key}_low"] <= truth[key] <= r[f"{key}_high"] for r in done]
        widths = [r[f"{key}_high"] - r[f"{key}_low"] for r in done]
        row[f"exact_{key}"] = truth[key]
        row[f"mean_{key}"] = float(values.mean()) if done else math.nan
        row[f"bias_{key}"] = row[f"mean_{key}"] - truth[key]
        row[f"sd_{key}"] = float(values.std(ddof=1)) if len(done) > 1 else math.nan
        row[f"coverage_{key}"] = float(np.mean(covered)) if done else math.nan
        row[f"width_{key}"] = float(np.mean(widths)) if done else math.nan
    naive = np.array([r["naive"] for r in runs])
    row["bias_naive_slope"] = float(np.nanmean(naive)) - truth["slope"]
    row["median_ess_fraction"] = float(np.median([r["ess_fraction"] for r in done]))
    return [row]


SWEEPS = ("size", "instances", "demos", "prompts")


def configurations(which: str, quick: bool) -> list[tuple[str, str, int, int, int | None]]:
    """``(instance, context, prompts, rollouts, demos)`` of sweep ``which``."""
    if which == "size":
        graph = "grid3" if quick else "grid4"
        sizes = (10, 40) if quick else (10, 30, 100)
        per = (8,) if quick else (4, 8, 16)
        return [(graph, "edge", p, n, 1) for n in per for p in sizes]
    if which == "instances":
        names = ("routes",) if quick else ("grid5", "routes", "obstacle5", "random9")
        return [(g, c, 30 if quick else 50, 8, 1) for g in names for c in CONTEXTS]
    if which == "demos":
        graph = "grid3" if quick else "grid4"
        per = (8,) if quick else (8, 32)
        counts: tuple[int | None, ...] = (1, None)
        return [(graph, "edge", 30 if quick else 50, n, m) for n in per for m in counts]
    if which == "prompts":
        # the configurations of ``instances`` that undercovered at 50 prompts, at 200
        cases = [("random9", c) for c in CONTEXTS] + [("obstacle5", "copy")]
        return [(g, c, 60 if quick else 200, 8, 1) for g, c in (cases[:1] if quick else cases)]
    raise ValueError(f"unknown sweep {which!r}: choose one of {', '.join(SWEEPS)}")


REPLICATES = {"size": 200, "instances": 200, "demos": 100, "prompts": 200}
"""Replicates per configuration of each sweep (``quick``: 10)."""


def sweep(
    which: str,
    quick: bool = False,
    replicates: int | None = None,
    seed: int = 0,
    jobs: int | None = 1,
    progress: bool = False,
) -> list[Row]:
    """Summary rows of one sweep (``quick``: small instances, 10 replicates)."""
    reps = replicates if replicates is not None else (10 if quick else REPLICATES[which])
    tasks = [
        (f"{which} {g} {c} P={p} n={n} m={m}", (g, c, p, n, m, reps, seed))
        for g, c, p, n, m in configurations(which, quick)
    ]
    rows = run_tasks(validate, tasks, jobs=jobs, progress=progress)
    for row in rows:
        row["sweep"] = which
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m analysis.audit_validation``: write the summary table of every sweep."""
    parser = OneLineParser(
        prog="python -m analysis.audit_validation",
        description="Bias and coverage of tilt.audit against exact answers.",
    )
    parser.add_argument("--quick", action="store_true", help="small instances, 10 replicates")
    parser.add_argument("--replicates", type=positive_int, help="replicates per configuration")
    parser.add_argument("--only", nargs="+", choices=SWEEPS, help="only these sweeps")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="first seed (default 0)")
    parser.add_argument("--jobs", type=positive_int, default=1, help="worker processes")
    parser.add_argument("--out", required=True, metavar="FILE.csv", help="table to write")
    args = parser.parse_args(argv)

    def body() -> int:
        check_output_file(args.out)
        rows: list[Row] = []
        for which in args.only or SWEEPS:
            rows += sweep(which, args.quick, args.replicates, args.seed, args.jobs, progress=True)
        write_atomic(args.out, rows_to_csv(rows))
        print(f"wrote {len(rows)} configurations to {args.out}")
        return 0

    return run_main("python -m analysis.audit_validation", body)


if __name__ == "__main__":
    raise SystemExit(main())
