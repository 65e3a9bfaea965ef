"""Validation of ``tilt.audit --objective``: bias and coverage for every objective tilt knows.

On instances where tilt computes every fixed point exactly, each replicate
samples one audit log with ``tilt.sample`` (every correct sibling scored at
every position, with the teachers' top-k lists), reads it back with the
audit's own parser, audits it once per objective (1000 bootstrap resamples)
and compares with the exact answers

* the amplification: ``weighted_gap_slope(q, pi0) - 1`` for the objective's
  fixed point ``q = sd_optimum(pi0, model, spec)``;
* the entropy change ``H(q(. | C)) - H(pi0(. | C))``.

One summary row per configuration and objective: mean estimate, bias,
standard deviation, coverage of the nominal 95% interval, mean width, how
often the verdict showed the estimate (its checks held), and the same for the
entropy change; for ``length-weighted`` also the coverage and width of the
interval the verdict quotes (widened by the approximation's largest error),
with the graph's true range of lengths and with each prompt's own (the
command line's default).  Configurations (``CONFIGS``):

* ``grid4``: grid4, ``edge(2)``, 100 prompts x 8 rollouts, top-4 lists (the
  full next-move distribution: at most 3 moves are available);
* ``routes``: the same on routes;
* ``top1``: grid4 with top-1 lists (k below the 2-3 available moves): the
  per-token corrections lump the rest into one tail bucket, measured against
  the full distribution's fixed point;
* ``reference``: grid4 with one fixed reference demonstration (OPSD, SDFT):
  every objective's fixed point is the teacher ``T_{c*}``.

Example::

    python -m analysis.audit_objectives --quick --out audit_objectives_quick.csv
    python -m analysis.audit_objectives --out audit_objectives.csv --jobs 2  # slow
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from analysis.sweeps import Row, rows_to_csv, run_tasks
from tilt.audit import audit_prompts, estimate_prompt, read_prompts, resolve_objective
from tilt.cli import (
    OneLineParser,
    check_output_file,
    non_negative_int,
    positive_int,
    run_main,
    write_atomic,
)
from tilt.context import make_context, point_mass, reference_rollout
from tilt.measures import correct_entropy, weighted_gap_slope
from tilt.objectives import sd_optimum
from tilt.policy import Policy, base_policy
from tilt.sample import SampleOptions, sample_jsonl
from tilt.space import enumerate_rollouts
from tilt.tasks.graphs import named_task

__all__ = ["SPECS", "Config", "CONFIGS", "exact", "replicate", "summarise", "sweep", "main"]

SPECS = (
    "sequence",
    "hybrid=1",
    "token",
    "token-forward",
    "jsd=0.5",
    "discount=0.5",
    "length-weighted",
)
"""Every per-token spec, with the presets' settings: sdpo and trl-sdft (jsd=0.5), trl-sdpo
(length-weighted), tinker (token), sdft and opsd (token-forward)."""

TOP_SPECS = ("token", "jsd=0.5", "discount=0.5", "length-weighted")
"""The objectives whose correction reads the teachers' top-k lists."""


@dataclass(frozen=True)
class Config:
    """One validation configuration."""

    name: str
    graph: str
    context: str
    strength: float
    prompts: int
    rollouts: int
    demos: str  # 'all' (every correct sibling) or 'reference'
    top: int
    specs: tuple[str, ...]


CONFIGS = {
    c.name: c
    for c in (
        Config("grid4", "grid4", "edge", 2.0, 100, 8, "all", 4, SPECS),
        Config("routes", "routes", "edge", 2.0, 100, 8, "all", 4, SPECS),
        Config("top1", "grid4", "edge", 2.0, 100, 8, "all", 1, TOP_SPECS),
        Config("reference", "grid4", "edge", 2.0, 100, 8, "reference", 4, SPECS),
    )
}
"""The full validation; ``--quick`` runs each on grid3 with 30 prompts, 4 replicates."""


def _quick(config: Config) -> Config:
    graph = "grid3" if config.graph == "grid4" else config.graph
    return Config(
        config.name,
        graph,
        config.context,
        config.strength,
        30,
        8,
        config.demos,
        config.top,
        config.specs,
    )


@lru_cache(maxsize=8)
def _base(graph: str) -> Policy:
    return base_policy(enumerate_rollouts(named_task(graph)))


@lru_cache(maxsize=64)
def exact(config: Config, spec: str) -> tuple[float, float]:
    """The exact ``(amplification, entropy change)`` of ``spec``'s fixed point."""
    pi0 = _base(config.graph)
    model = make_context(config.context, config.strength)
    demos = point_mass(pi0, reference_rollout(pi0)) if config.demos == "reference" else "own"
    q = sd_optimum(pi0, model, spec, demos=demos)
    return weighted_gap_slope(q, pi0) - 1, correct_entropy(q) - correct_entropy(pi0)


@lru_cache(maxsize=8)
def _lengths(graph: str) -> tuple[int, int]:
    """The shortest and the longest rollout of ``graph`` (in moves): the true range, which the
    audit's bound for ``length-weighted`` assumes."""
    space = _base(graph).space
    depth = space.depth[space.rollout_prefix]
    return int(depth.min()), int(depth.max())


def replicate(
    config: Config, seed: int, bootstrap: int = 1000, specs: Sequence[str] | None = None
) -> list[Row]:
    """One sampled log audited for every objective of ``config`` (or those of ``specs``): one
    row per objective."""
    pi0 = _base(config.graph)
    model = make_context(config.context, config.strength)
    options = SampleOptions(
        config.prompts,
        config.rollouts,
        None if config.demos == "all" else 1,
        top=config.top,
        demos="reference" if config.demos == "reference" else "own",
    )
    prompts = list(read_prompts(sample_jsonl([pi0], model, options, seed=seed).splitlines()))
    rows = []
    for spec in config.specs if specs is None else [s for s in config.specs if s in specs]:
        objective = resolve_objective(spec, lengths=_lengths(config.graph))
        estimates = [estimate_prompt(p, objective)[0] for p in prompts]
        row: Row = {"config": config.name, "spec": spec, "seed": seed}
        try:
            result = audit_prompts(estimates, bootstrap=bootstrap, seed=seed, objective=objective)
        except ValueError:
            rows.append(row)
            continue
        for key, interval in (
            ("slope", result.objective_amplification),
            ("dH", result.objective_delta_entropy),
        ):
            if interval is not None:
                row[key], row[f"{key}_low"], row[f"{key}_high"] = (
                    interval.estimate,
                    interval.low,
                    interval.high,
                )
        if result.objective_bound is not None:
            row["bound_low"], row["bound_high"] = (
                result.objective_bound.low,
                result.objective_bound.high,
            )
            # the command line's default: each prompt's own shortest and longest rollout
            plain = resolve_objective(spec)
            own = [estimate_prompt(p, plain)[0] for p in prompts]
            bound = audit_prompts(own, bootstrap=bootstrap, seed=seed, objective=plain)
            assert bound.objective_bound is not None
            row["own_low"], row["own_high"] = bound.objective_bound.low, bound.objective_bound.high
        row["shown"] = all(c.holds for c in result.slope_checks)
        row["dH_shown"] = row["shown"] and all(c.holds for c in result.entropy_checks)
        rows.append(row)
    return rows


def _chunk(
    name: str, quick: bool, first: int, count: int, specs: tuple[str, ...] | None = None
) -> list[Row]:
    config = _quick(CONFIGS[name]) if quick else CONFIGS[name]
    return [
        row for seed in range(first, first + count) for row in replicate(config, seed, specs=specs)
    ]


def summarise(rows: Sequence[Row], quick: bool = False) -> list[Row]:
    """One row per configuration and objective: bias, sd, coverage, width, how often shown."""
    out = []
    keys = sorted(
        {(r["config"], r["spec"]) for r in rows},
        key=lambda k: (list(CONFIGS).index(k[0]), SPECS.index(k[1])),
    )
    for name, spec in keys:
        config = _quick(CONFIGS[name]) if quick else CONFIGS[name]
        mine = [r for r in rows if r["config"] == name and r["spec"] == spec]
        truth = dict(zip(("slope", "dH"), exact(config, spec), strict=True))
        summary: Row = {
            "config": name,
            "graph": config.graph,
            "spec": spec,
            "prompts": config.prompts,
            "rollouts": config.rollouts,
            "demos": config.demos,
            "top": config.top,
            "replicates": len(mine),
        }
        for key in ("slope", "dH"):
            done = [r for r in mine if key in r]
            values = np.array([r[key] for r in done])
            summary[f"exact_{key}"] = truth[key]
            summary[f"estimated_{key}"] = len(done)
            summary[f"bias_{key}"] = float(values.mean()) - truth[key] if done else math.nan
            summary[f"sd_{key}"] = float(values.std(ddof=1)) if len(done) > 1 else math.nan
            summary[f"coverage_{key}"] = (
                float(np.mean([r[f"{key}_low"] <= truth[key] <= r[f"{key}_high"] for r in done]))
                if done
                else math.nan
            )
            summary[f"width_{key}"] = (
                float(np.mean([r[f"{key}_high"] - r[f"{key}_low"] for r in done]))
                if done
                else math.nan
            )
        bounded = [r for r in mine if "bound_low" in r]
        for key, name in (("bound", "bound"), ("own", "bound_own_lengths")):
            summary[f"coverage_{name}"] = (
                float(
                    np.mean(
                        [r[f"{key}_low"] <= truth["slope"] <= r[f"{key}_high"] for r in bounded]
                    )
                )
                if bounded
                else math.nan
            )
            summary[f"width_{name}"] = (
                float(np.mean([r[f"{key}_high"] - r[f"{key}_low"] for r in bounded]))
                if bounded
                else math.nan
            )
        summary["shown"] = float(np.mean([bool(r.get("shown")) for r in mine]))
        summary["dH_shown"] = float(np.mean([bool(r.get("dH_shown")) for r in mine]))
        out.append(summary)
    return out


def sweep(
    names: Sequence[str] | None = None,
    quick: bool = False,
    replicates: int | None = None,
    seed: int = 0,
    jobs: int | None = 1,
    progress: bool = False,
    specs: Sequence[str] | None = None,
) -> list[Row]:
    """Summary rows of the configurations ``names`` (default all; ``quick``: 4 replicates),
    for the objectives ``specs`` (default each configuration's)."""
    reps = replicates if replicates is not None else (4 if quick else 200)
    chunk = max(1, min(25, reps))
    chosen = None if specs is None else tuple(specs)
    tasks = [
        (
            f"{name} seeds {first}..{first + min(chunk, seed + reps - first) - 1}",
            (name, quick, first, min(chunk, seed + reps - first), chosen),
        )
        for name in (names or list(CONFIGS))
        for first in range(seed, seed + reps, chunk)
    ]
    return summarise(run_tasks(_chunk, tasks, jobs=jobs, progress=progress), quick)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m analysis.audit_objectives``: write the summary table."""
    parser = OneLineParser(
        prog="python -m analysis.audit_objectives",
        description="Bias and coverage of tilt.audit --objective against exact fixed points.",
    )
    parser.add_argument("--quick", action="store_true", help="grid3, 30 prompts, 4 replicates")
    parser.add_argument("--replicates", type=positive_int, help="replicates per configuration")
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS), help="only these")
    parser.add_argument("--specs", nargs="+", choices=SPECS, help="only these objectives")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="first seed (default 0)")
    parser.add_argument("--jobs", type=positive_int, default=1, help="worker processes")
    parser.add_argument("--out", required=True, metavar="FILE.csv", help="table to write")
    args = parser.parse_args(argv)

    def body() -> int:
        check_output_file(args.out)
        rows = sweep(
            args.only,
            args.quick,
            args.replicates,
            args.seed,
            args.jobs,
            progress=True,
            specs=args.specs,
        )
        write_atomic(args.out, rows_to_csv(rows))
        for r in rows:
            print(
                f"{r['config']:9s} {r['spec']:15s} exact {r['exact_slope']:+.3f} "
                f"bias {r['bias_slope']:+.3f} sd {r['sd_slope']:.3f} "
                f"coverage {r['coverage_slope']:.3f} shown {r['shown']:.2f} | dH exact "
                f"{r['exact_dH']:+.3f} bias {r['bias_dH']:+.3f} coverage {r['coverage_dH']:.3f} "
                f"shown {r['dH_shown']:.2f}"
                + (
                    f" | bounded coverage {r['coverage_bound']:.3f} width {r['width_bound']:.3f}"
                    f" (each prompt's own lengths: {r['coverage_bound_own_lengths']:.3f}, "
                    f"{r['width_bound_own_lengths']:.3f})"
                    if math.isfinite(r["coverage_bound"])
                    else ""
                )
            )
        print(f"wrote {len(rows)} rows to {args.out}")
        return 0

    return run_main("analysis.audit_objectives", body)


if __name__ == "__main__":
    raise SystemExit(main())
