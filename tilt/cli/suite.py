"""The command line and the reports of ``python -m tilt.suite`` (see :mod:`tilt.suite`)."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tilt.cli import OneLineParser, fmt, non_negative_int, run_main, table
from tilt.cli._args import Count, add_objective_arguments, add_sd_arguments
from tilt.cli._progress import Progress
from tilt.context import DEFAULT_STRENGTH, make_context
from tilt.objectives import SD_METHODS
from tilt.space import DEFAULT_MAX_ROLLOUTS
from tilt.suite import (
    DEFAULT_KS,
    SCHEMA,
    SUITES,
    SuiteConfig,
    SuiteResult,
    builtin_suite,
    load_suite,
    run_suite,
    select_prompts,
)

__all__ = ["format_table", "as_json", "main"]


def _beta_text(beta: float | None) -> str:
    if beta is None:
        return "none"
    return "inf" if math.isinf(beta) else f"{beta:.6g}"


def format_table(result: SuiteResult) -> str:
    """The human-readable report."""
    r, c = result, result.config
    ks = r.ks
    lines = [
        f"suite {r.suite.name}: {len(r.prompts)} prompts"
        + (f" ({len(r.skipped)} skipped, listed below)" if r.skipped else "")
        + f"; {r.suite.description}",
        f"context {make_context(c.context, c.strength).describe()}; demonstrations {c.demos}"
        + (f"; anchor {c.anchor:g}" if c.anchor else ""),
        "",
        "mean pass@k over prompts; RL shared = one beta for every prompt, matched to the SD "
        "variant's mean pass@1; RL per prompt = matched on each prompt (the base where SD "
        "lowers accuracy)",
    ]
    rows = [["base", "", *[fmt(r.base_curve[k]) for k in ks]]]
    for v in r.variants:
        rows.append([f"SD {v.method}", "", *[fmt(v.sd_curve[k]) for k in ks]])
        if v.rl_shared_curve is None:
            rows.append([f"  RL shared @ {v.method}", "none", *["--"] * len(ks)])
        else:
            rows.append(
                [
                    f"  RL shared @ {v.method}",
                    _beta_text(v.rl_shared_beta),
                    *[fmt(v.rl_shared_curve[k]) for k in ks],
                ]
            )
        rows.append(
            [f"  RL per prompt @ {v.method}", "", *[fmt(v.rl_per_prompt_curve[k]) for k in ks]]
        )
        diff = v.difference()
        rows.append(
            [
                "  SD - RL shared",
                "",
                *(["--"] * len(ks) if diff is None else [f"{diff[k]:+.4f}" for k in ks]),
            ]
        )
    lines.append(table(["method", "beta", *[f"pass@{k}" for k in ks]], rows))
    lines.append("")
    for v in r.variants:
        spread = (
            ""
            if v.rl_shared_spread is None
            else f"; accuracy spread over prompts (std) {v.accuracy_spread:.4f} against RL "
            f"shared's {v.rl_shared_spread:.4f}"
        )
        lines.append(
            f"SD {v.method}: mean accuracy {v.mean_accuracy:.6f}; lowers the accuracy of "
            f"{v.worse_count} of {len(r.prompts)} prompts ({v.worse_count / len(r.prompts):.1%})"
            + spread
            + (f"; {v.rl_shared_message}" if v.rl_shared_message else "")
        )
    for v in r.variants:
        lines.append("")
        reference = "RL shared" if v.rl_shared_accuracy is not None else "base"
        lines.append(f"prompts where SD {v.method} and {reference} differ most (accuracy)")
        rows = []
        for i in v.most_different:
            p = r.prompts[i]
            base = dict(p.accuracy)["base"]
            sd = dict(p.accuracy)[v.method]
            rl = base if v.rl_shared_accuracy is None else v.rl_shared_accuracy[i]
            rows.append([p.name, fmt(base), fmt(sd), fmt(rl), f"{sd - rl:+.4f}"])
        lines.append(table(["prompt", "base", f"SD {v.method}", reference, "SD - RL"], rows))
    if r.skipped:
        lines += ["", "skipped prompts (left out of every mean):"]
        lines += [f"  {s.index} {s.name}: {s.skipped}" for s in r.skipped]
    return "\n".join(lines)


def as_json(result: SuiteResult) -> dict[str, object]:
    """The result in the documented schema (:data:`SCHEMA`, module docstring)."""
    r, c = result, result.config

    def curve(values: dict[int, float] | None) -> dict[str, float] | None:
        return None if values is None else {str(k): v for k, v in values.items()}

    prompts = []
    for i, p in enumerate(r.prompts):
        accuracy: dict[str, float] = {"base": dict(p.accuracy)["base"]}
        for v in r.variants:
            accuracy[f"sd_{v.method}"] = dict(p.accuracy)[v.method]
            if v.rl_shared_accuracy is not None:
                accuracy[f"rl_shared@{v.method}"] = v.rl_shared_accuracy[i]
            accuracy[f"rl_per_prompt@{v.method}"] = v.rl_per_prompt_accuracy[i]
        prompts.append(
            {
                "index": p.index,
                "name": p.name,
                "graph": p.graph,
                "source": p.source,
                "target": p.target,
                "horizon": p.horizon,
                "base": p.base,
                "rollouts": p.rollouts,
                "correct": p.correct,
                "accuracy": accuracy,
            }
        )
    variants = []
    for v in r.variants:
        beta = v.rl_shared_beta
        variants.append(
            {
                "sd": v.method,
                "mean_accuracy": v.mean_accuracy,
                "accuracy_spread": {"sd": v.accuracy_spread, "rl_shared": v.rl_shared_spread},
                "rl_shared_beta": None if beta is None or math.isinf(beta) else beta,
                "rl_shared_message": v.rl_shared_message
                or (
                    "SD's mean accuracy equals the base's: RL is the base"
                    if beta == math.inf
                    else ""
                ),
                "worse_than_base": {
                    "count": v.worse_count,
                    "fraction": v.worse_count / len(r.prompts),
                },
                "mean_pass_at_k": {
                    "sd": curve(v.sd_curve),
                    "rl_shared": curve(v.rl_shared_curve),
                    "rl_per_prompt": curve(v.rl_per_prompt_curve),
                },
                "sd_minus_rl_shared": curve(v.difference()),
                "most_different": [
                    {
                        "index": r.prompts[i].index,
                        "name": r.prompts[i].name,
                        "base": dict(r.prompts[i].accuracy)["base"],
                        "sd": dict(r.prompts[i].accuracy)[v.method],
                        "rl_shared": None
                        if v.rl_shared_accuracy is None
                        else v.rl_shared_accuracy[i],
                    }
                    for i in v.most_different
                ],
            }
        )
    return {
        "schema": SCHEMA,
        "suite": {
            "name": r.suite.name,
            "description": r.suite.description,
            "prompts": len(r.prompts),
            "skipped": [{"index": s.index, "name": s.name, "reason": s.skipped} for s in r.skipped],
        },
        "settings": {
            "context": c.context,
            "strength": c.strength,
            "demos": c.demos,
            "alpha": c.alpha,
            "anchor": c.anchor,
            "k": list(r.ks),
        },
        "base": {
            "mean_accuracy": float(np.mean([dict(p.accuracy)["base"] for p in r.prompts])),
            "mean_pass_at_k": curve(r.base_curve),
        },
        "variants": variants,
        "prompts": prompts,
    }


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m tilt.suite",
        description="RL against self-distillation over a suite of prompts: mean pass@k at "
        "matched mean pass@1.",
    )
    g = parser.add_argument_group("suite")
    g.add_argument(
        "--suite",
        default="grid-pairs",
        metavar="NAME|FILE.json",
        help=f"built-in suite ({', '.join(SUITES)}) or a JSON list of prompts (default grid-pairs)",
    )
    g.add_argument(
        "--prompts",
        type=Count(1, 10**6),
        metavar="N",
        help="a seeded sample of N prompts of the suite (default: all)",
    )
    g.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of the suite and the sample"
    )
    g.add_argument(
        "--max-rollouts",
        type=Count(1, 10**10),
        default=DEFAULT_MAX_ROLLOUTS,
        help=f"size guard per prompt (default {DEFAULT_MAX_ROLLOUTS:,})",
    )
    add_sd_arguments(parser, rl=False)
    add_objective_arguments(
        parser,
        "add an SD objective to sequence, token and forward, repeatable (as in tilt.compare)",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--k",
        type=Count(1, 10**9),
        nargs="+",
        default=list(DEFAULT_KS),
        help="sample counts of the mean pass@k curves (default 1 2 4 ... 1024)",
    )
    out.add_argument(
        "--top", type=Count(0, 10**6), default=5, help="prompts listed as differing most"
    )
    out.add_argument(
        "--json", action="store_true", help="print one JSON object (schema in --help of the module)"
    )
    run = parser.add_argument_group("running")
    run.add_argument("--jobs", type=Count(1, 1024), default=1, help="worker processes (default 1)")

    run.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the prompts on a Dask cluster (tcp://host:8786; needs the distributed extra)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tilt.suite``; returns the exit status."""
    args = _parser().parse_args(argv)

    def body() -> int:
        if args.anchor < 0:
            raise ValueError(f"--anchor must be >= 0, got {args.anchor!r}")
        if args.alpha < 0:
            raise ValueError(f"--alpha must be >= 0, got {args.alpha!r}")
        if args.jobs > 1 and args.scheduler:
            raise ValueError("give --jobs or --scheduler, not both")
        strength = DEFAULT_STRENGTH[args.context] if args.strength is None else args.strength
        make_context(args.context, strength)  # validate before any work
        if args.reference is not None:
            raise ValueError(
                "--reference names a rollout of one graph; in a suite, --demos reference "
                "uses each prompt's likeliest correct rollout"
            )
        presets = [f"preset[{name}]" for name in args.preset]
        methods = tuple(dict.fromkeys([*SD_METHODS, *(o.spec for o in args.sd), *presets]))
        if args.suite in SUITES:
            suite = builtin_suite(args.suite, args.seed)
        elif args.suite.endswith(".json") or Path(args.suite).exists():
            suite = load_suite(args.suite)
        else:
            builtin_suite(args.suite)  # raises the "unknown suite" message
            raise AssertionError
        suite = select_prompts(suite, args.prompts, args.seed)
        config = SuiteConfig(
            args.context,
            strength,
            args.demos,
            args.alpha,
            args.anchor,
            methods,
            args.max_rollouts,
        )
        ks = sorted(set(args.k))
        progress = Progress("prompts", unit="prompt")
        result = run_suite(suite, config, ks, args.jobs, args.scheduler, args.top, progress)
        if args.json:
            print(json.dumps(as_json(result), indent=2, allow_nan=False))
        else:
            print(format_table(result))
        return 0

    return run_main(
        "python -m tilt.suite", body, "use fewer prompts (--prompts) or a lower --max-rollouts"
    )
