"""The command line of ``python -m tilt.train`` (see :func:`tilt.train.train`).

Parses the instance and training options, trains, and prints the distance to
the closed form and the measures (a table, or one JSON object with ``--json``).
A progress bar is drawn on stderr when it is a terminal.  ``--suite`` with
``--share`` routes to the shared-weight student (:mod:`tilt.cli._train_share`).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence

from tilt.cli import (
    SHAPE_HEADER,
    OneLineParser,
    finite_float,
    fmt,
    run_main,
    shape_cells,
    table,
)
from tilt.cli._args import Count, add_instance_arguments, add_k_argument, build_instance
from tilt.cli._progress import Progress
from tilt.cli._run import SPACE_HINT
from tilt.cli._train_share import add_share_arguments, check_share_route, run_share
from tilt.measures import measure
from tilt.train import (
    DEFAULT_LR,
    MODES,
    TEACHERS,
    TOP_K_MODES,
    TrainObjective,
    parse_train_objective,
    train,
    train_objective_forms,
)

__all__ = ["main"]


def _clean(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _objective(text: str) -> TrainObjective:
    """``--objective`` values: ``rl``, an SD spec or an old name, parsed (one-line errors)."""
    try:
        return parse_train_objective(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m tilt.train",
        description="Train a tabular softmax on RL or SD and compare it with the closed form.",
    )
    add_instance_arguments(parser)
    t = parser.add_argument_group("training")
    t.add_argument(
        "--objective",
        default=parse_train_objective("sd"),
        type=_objective,
        metavar="SPEC",
        help=f"objective: {train_objective_forms()} (default sd)",
    )
    t.add_argument(
        "--mode",
        default="exact",
        choices=MODES,
        help="exact expectations or Monte-Carlo samples (default exact)",
    )
    t.add_argument(
        "--teacher",
        default="frozen",
        choices=(*TEACHERS, "ema"),
        help="teacher from the base (frozen) or from the current student (live); ema: from an "
        "average of the shared student's parameters (--share only) (default frozen)",
    )
    t.add_argument("--steps", type=Count(1, 10**7), default=500, help="most steps (default 500)")
    t.add_argument(
        "--lr",
        type=finite_float,
        help="step size (default: L-BFGS in exact mode with a frozen teacher; "
        f"{DEFAULT_LR['exact']:g} for exact steps, {DEFAULT_LR['sampled']:g} sampled)",
    )
    t.add_argument(
        "--batch", type=Count(1, 10**6), default=64, help="rollouts per sampled step (default 64)"
    )
    t.add_argument(
        "--record-every",
        type=Count(1, 10**7),
        default=1,
        help="record the distance to the closed form every this many steps (default 1)",
    )
    t.add_argument(
        "--top-k",
        type=Count(1, 10**6),
        metavar="K",
        help="truncate token, token-forward or jsd=a to the student's top K moves per prefix "
        "(exact mode)",
    )
    t.add_argument(
        "--top-k-mode",
        default="tail",
        choices=TOP_K_MODES,
        help="tail: the top K plus one bucket for the rest (SDPO); renormalised: both "
        "distributions renormalised on the top K (TRL, OPSD) (default tail)",
    )
    add_share_arguments(parser)
    out = parser.add_argument_group("output")
    add_k_argument(out)
    out.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tilt.train``; returns the exit status."""
    args = _parser().parse_args(argv)

    def body() -> int:
        objective: TrainObjective = args.objective
        rl = objective.sd is None
        if rl and not args.beta > 0:
            raise ValueError(
                f"RL training needs --beta > 0 (got {args.beta:g}): the limit beta -> 0 puts zero "
                "mass on every incorrect rollout, which no finite logits reach"
            )
        progress = Progress("training")
        if check_share_route(args):
            return run_share(args, progress)
        instance = build_instance(args)
        started = time.perf_counter()
        reference = instance.reference if instance.demos == "reference" else None
        result = train(
            instance.base,
            objective,
            model=None if rl else instance.model,
            demos=instance.demos,
            alpha=instance.alpha,
            reference=reference,
            anchor=instance.anchor,
            beta=args.beta if rl else 1.0,
            mode=args.mode,
            teacher=args.teacher,
            steps=args.steps,
            lr=args.lr,
            batch=args.batch,
            seed=instance.seed,
            record_every=args.record_every,
            progress=progress,
            top_k=args.top_k,
            top_k_mode=args.top_k_mode,
        )
        seconds = time.perf_counter() - started
        progress.close()  # L-BFGS may stop before --steps: clear the bar
        trained = measure(result.policy, instance.base, args.k)
        closed = measure(result.closed_form, instance.base, args.k)
        if args.json:
            h = result.history
            print(
                json.dumps(
                    {
                        "instance": instance.header(),
                        "objective": result.objective,
                        "mode": result.mode,
                        "teacher": result.teacher,
                        "optimizer": result.optimizer,
                        "lr": result.lr,
                        "batch": args.batch,
                        "seed": instance.seed,
                        "beta": args.beta if rl else None,
                        "steps": result.steps,
                        "top_k": args.top_k,
                        "top_k_mode": args.top_k_mode if args.top_k else None,
                        "tv_to_closed_form": _clean(result.tv_to_closed_form),
                        "kl_to_closed_form": _clean(result.kl_to_closed_form),
                        "measures": trained.as_dict(),
                        "closed_form_measures": closed.as_dict(),
                        "history": {
                            "step": h.step.tolist(),
                            "tv_to_closed_form": [_clean(x) for x in h.tv_to_closed_form],
                            "kl_to_closed_form": [_clean(x) for x in h.kl_to_closed_form],
                            "accuracy": [_clean(x) for x in h.accuracy],
                            "correct_entropy": [_clean(x) for x in h.correct_entropy],
                        },
                    },
                    indent=2,
                    allow_nan=False,
                )
            )
            return 0
        how = f"{result.optimizer}" + ("" if result.lr is None else f" lr {result.lr:g}")
        how += f", batch {args.batch}, seed {instance.seed}" if args.mode == "sampled" else ""
        print(instance.header())
        print(
            f"objective {result.objective}"
            + (f" (beta {args.beta:g})" if rl else "")
            + (f" truncated to the top {args.top_k} ({args.top_k_mode})" if args.top_k else "")
            + f", mode {result.mode}, teacher {result.teacher}, {how}: "
            f"{result.steps} steps in {seconds:.2f} s"
        )
        note = " (the frozen one-step optimum)" if result.teacher == "live" else ""
        note += " (of the untruncated loss)" if args.top_k else ""
        print(
            f"distance to the closed form{note}: total variation {result.tv_to_closed_form:.3e}, "
            f"KL(trained || closed form) {result.kl_to_closed_form:.3e}"
        )
        print()
        rows = []
        for label, m in (("trained", trained), ("closed form", closed)):
            rows.append(
                [
                    label,
                    *shape_cells(m),
                    *(fmt(m.pass_at_k[k]) for k in args.k),
                    *(fmt(m.distinct_at_k[k], 2) for k in args.k),
                ]
            )
        print(
            table(
                [
                    "policy",
                    *SHAPE_HEADER,
                    *(f"pass@{k}" for k in args.k),
                    *(f"distinct@{k}" for k in args.k),
                ],
                rows,
            )
        )
        return 0

    return run_main("python -m tilt.train", body, SPACE_HINT)
