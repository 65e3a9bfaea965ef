"""The command line of ``python -m tilt.share``: one shared student, RL against SD.

Trains each objective on the training prompts of a suite with shared
parameters, and reports, at each matched *training* mean pass@1, mean pass@k,
effective correct rollouts and strategy shares on training and held-out
prompts.  A table by default, one JSON object (schema ``tilt.share/1``) with
``--json``; progress lines on stderr when it is a terminal.

Example::

    python -m tilt.share --suite grid-holed --features edge --split region \\
        --teacher live --context edge --strength 2 --match 0.6 --match 0.8
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence

from tilt.cli import OneLineParser, finite_float, fmt, run_main, table
from tilt.cli._args import Count
from tilt.cli._progress import Progress

__all__ = ["main", "SCHEMA"]

SCHEMA = "tilt.share/1"
_SHOWN_KS = (1, 4, 16, 64)


def _unit(text: str) -> float:
    value = finite_float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def _rate(text: str) -> float:
    value = finite_float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    from tilt.context import CONTEXTS
    from tilt.measures.strategies import STRATEGIES
    from tilt.share import FEATURES, RL_MATCHES, SHARE_SUITES, SPLITS, TEACHERS, objective_help

    parser = OneLineParser(
        prog="python -m tilt.share",
        description="One shared-weight student over a suite: RL vs SD at matched training pass@1.",
    )
    parser.add_argument(
        "--suite",
        default="grid-holed",
        help=f"suite: {', '.join(SHARE_SUITES)}, a tilt.suite name or a JSON file",
    )
    parser.add_argument("--features", default="edge", help=f"feature map: {', '.join(FEATURES)}")
    parser.add_argument(
        "--split", default="region", help=f"train/held-out split: {', '.join(SPLITS)}"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the suite, the split and (sampled mode) every draw (default 0)",
    )
    parser.add_argument(
        "--objective",
        action="append",
        help=f"repeatable: {objective_help()} (default rl, sequence, token)",
    )
    parser.add_argument(
        "--teacher", default="live", choices=TEACHERS, help="SD teacher (default live)"
    )
    parser.add_argument(
        "--ema-rate", type=_rate, default=0.05, help="EMA teacher rate (default 0.05, SDPO)"
    )
    parser.add_argument(
        "--context", default="edge", choices=CONTEXTS, help="context model (default edge)"
    )
    parser.add_argument(
        "--strength", type=finite_float, default=2.0, help="context strength (default 2)"
    )
    parser.add_argument("--demos", default="own", help="demonstrations (default own)")
    parser.add_argument("--anchor", type=finite_float, default=0.0, help="SD anchor b (default 0)")
    parser.add_argument(
        "--beta", type=finite_float, default=0.1, help="RL's KL coefficient (default 0.1)"
    )
    parser.add_argument(
        "--mode",
        default="exact",
        choices=("exact", "sampled"),
        help="exact expected gradients, or the practitioners' estimators on sampled rollouts "
        "(default exact)",
    )
    parser.add_argument(
        "--batch",
        type=Count(1, 10**6),
        default=64,
        help="sampled mode: rollouts per training prompt and step (default 64)",
    )
    parser.add_argument(
        "--steps", type=Count(1, 10**7), default=150, help="gradient steps (default 150)"
    )
    parser.add_argument(
        "--lr", type=finite_float, default=2.0, help="gradient step on theta (default 2)"
    )
    parser.add_argument(
        "--match",
        type=_unit,
        action="append",
        help="matched training pass@1 (repeatable; default 0.6, 0.8)",
    )
    parser.add_argument(
        "--strategy", choices=STRATEGIES, help="strategy map for shares (e.g. side)"
    )
    parser.add_argument(
        "--rl-match",
        choices=RL_MATCHES,
        default="checkpoint",
        help="match RL along its run (checkpoint, default) or by beta at its optimum",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    return parser


def _clean(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _report(args: argparse.Namespace, experiment: object) -> dict[str, object]:
    from tilt.share import Experiment

    assert isinstance(experiment, Experiment)
    e = experiment
    return {
        "schema": SCHEMA,
        "suite": e.suite,
        "features": e.features,
        "n_params": e.n_params,
        "n_train": int(e.train.size),
        "n_held_out": int(e.held_out.size),
        "train": e.train.tolist(),
        "held_out": e.held_out.tolist(),
        "settings": {
            "split": args.split,
            "seed": args.seed,
            "teacher": args.teacher,
            "ema_rate": args.ema_rate,
            "context": args.context,
            "strength": args.strength,
            "demos": args.demos,
            "anchor": args.anchor,
            "beta": args.beta,
            "steps": args.steps,
            "lr": args.lr,
            "mode": args.mode,
            "batch": args.batch if args.mode == "sampled" else None,
            "rl_match": args.rl_match,
        },
        "base": {"train": e.base_train.as_dict(), "held_out": e.base_held_out.as_dict()},
        "runs": {
            name: {
                "final_train_accuracy": float(run.train_accuracy[-1]),
                "optimizer": run.optimizer,
            }
            for name, run in e.runs.items()
        },
        "checkpoints": [
            {
                "objective": c.objective,
                "match": c.target,
                "beta": c.beta,
                "train": None if c.train is None else c.train.as_dict(),
                "held_out": None if c.held_out is None else c.held_out.as_dict(),
                "note": c.note,
            }
            for c in e.checkpoints
        ],
    }


def _table(report: dict[str, object]) -> str:
    rows = []
    checkpoints = report["checkpoints"]
    assert isinstance(checkpoints, list)
    for c in checkpoints:
        train, held = c["train"], c["held_out"]
        if held is None:
            rows.append(
                [c["objective"], f"{c['match']:g}", "not matched"] + [""] * (len(_SHOWN_KS) + 3)
            )
            continue
        accuracy = train["accuracy"]
        rows.append(
            [
                c["objective"],
                f"{c['match']:g}",
                fmt(sum(accuracy) / len(accuracy), 6),
                fmt(train["effective_correct"], 2),
            ]
            + [fmt(held["mean_pass_at_k"][str(k)]) for k in _SHOWN_KS]
            + [
                fmt(held["effective_correct"], 2),
                " ".join(f"{k}={v:.3f}" for k, v in held["strategy_shares"].items()),
            ]
        )
    header = (
        ["objective", "target pass@1", "train pass@1", "train eff.correct"]
        + [f"held pass@{k}" for k in _SHOWN_KS]
        + ["held eff.correct", "held shares"]
    )
    notes = [f"{c['objective']} at {c['match']:g}: {c['note']}" for c in checkpoints if c["note"]]
    return (
        f"suite {report['suite']}, features {report['features']} "
        f"({report['n_params']} parameters), {report['n_train']} training / "
        f"{report['n_held_out']} held-out prompts\n"
        + table(header, rows)
        + "".join(f"\n{note}" for note in notes)
    )


def _body(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    from tilt.context import make_context
    from tilt.share import FEATURES, SPLITS, run_experiment, share_suite, split_suite

    if args.features not in FEATURES:
        raise ValueError(
            f"unknown feature map {args.features!r}: choose one of {', '.join(FEATURES)}"
        )
    if args.split not in SPLITS:
        raise ValueError(f"unknown split {args.split!r}: choose one of {', '.join(SPLITS)}")
    if not args.lr > 0:
        raise ValueError(f"--lr must be > 0, got {args.lr!r}")
    suite = share_suite(args.suite, args.seed)
    split = split_suite(suite, args.split, args.seed)
    objectives = args.objective or ["rl", "sequence", "token"]
    model = make_context(args.context, args.strength)
    bar = Progress("training")

    def progress(name: str, step: int, total: int) -> None:
        bar(step, total, name)

    experiment = run_experiment(
        suite,
        args.features,
        split,
        objectives,
        args.match or [0.6, 0.8],
        model=model,
        teacher=args.teacher,
        demos=args.demos,
        anchor=args.anchor,
        beta=args.beta,
        steps=args.steps,
        lr=args.lr,
        ema_rate=args.ema_rate,
        strategy=args.strategy,
        progress=progress,
        mode=args.mode,
        batch=args.batch,
        seed=args.seed,
        rl_match=args.rl_match,
    )
    report = _report(args, experiment)
    if args.json:
        print(json.dumps(report, indent=1, allow_nan=False, default=_clean))
    else:
        print(_table(report))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tilt.share``."""
    return run_main(
        "python -m tilt.share", lambda: _body(argv), "use a smaller suite or fewer --instances"
    )
