"""``python -m tilt.sample``: write an audit log sampled from an instance (``docs/audit.md``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from tilt.cli._args import (
    Count,
    OneLineParser,
    add_instance_arguments,
    build_instance,
)
from tilt.cli._files import check_output_file, write_atomic
from tilt.cli._run import SPACE_HINT, run_main
from tilt.policy import base_policy
from tilt.sample import SampleOptions, sample_jsonl

__all__ = ["main"]


def _demos_count(text: str) -> int | None:
    if text == "all":
        return None
    try:
        return Count(1, 10**4)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'all', got {text!r}"
        ) from None


def _parser() -> OneLineParser:
    parser = OneLineParser(
        prog="python -m tilt.sample",
        description="Sample an audit log (JSON Lines, docs/audit.md) from one of tilt's "
        "instances: rollouts from the base, demonstrations from each group's other correct "
        "rollouts, teacher log-probabilities from the context model.",
    )
    add_instance_arguments(parser)
    s = parser.add_argument_group("sampling")
    s.add_argument("--prompts", type=Count(1, 10**5), default=64, help="prompts (default 64)")
    s.add_argument(
        "--rollouts", type=Count(1, 10**4), default=8, help="rollouts per prompt (default 8)"
    )
    s.add_argument(
        "--demos-per-rollout",
        type=_demos_count,
        default=1,
        metavar="M|all",
        help="demonstrations scored with each rollout, from its group's other correct rollouts "
        "(default 1, as SDPO)",
    )
    s.add_argument(
        "--instances",
        type=Count(1, 10**4),
        default=1,
        help="distinct instances the prompts cycle over (needs --base random; instance i uses "
        "seed + i; default 1)",
    )
    s.add_argument("--tokens", action="store_true", help="also write per-move log-probabilities")
    s.add_argument("--paths", action="store_true", help="also write each rollout's path")
    s.add_argument(
        "--top",
        type=Count(1, 10**6),
        metavar="K",
        help="also write per position the student's and each teacher's K most probable next "
        "moves (implies --tokens; K below the branching truncates, as a top-k log does)",
    )
    s.add_argument(
        "--objective",
        metavar="SPEC",
        help="write on every line the objective the run trained with (tilt.audit defaults to it)",
    )
    s.add_argument("--out", required=True, metavar="FILE.jsonl", help="file to write")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tilt.sample``; returns the exit status."""
    args = _parser().parse_args(argv)

    def body() -> int:
        check_output_file(args.out, inputs=[args.graph])
        if args.demos not in ("own", "reference"):
            raise ValueError(
                "tilt.sample draws demonstrations from each group's own correct rollouts (own) "
                f"or scores with one fixed reference: --demos {args.demos} is not available here"
            )
        if args.instances > 1 and args.base != "random":
            raise ValueError(
                f"--instances {args.instances} needs --base random (the other bases give "
                "every instance the same policy)"
            )
        instance = build_instance(args)
        bases = [instance.base] + [
            base_policy(instance.space, "random", seed=args.seed + i)
            for i in range(1, args.instances)
        ]
        options = SampleOptions(
            args.prompts,
            args.rollouts,
            args.demos_per_rollout,
            args.tokens,
            args.paths,
            top=args.top,
            demos=args.demos,
            reference=args.reference,
            objective=args.objective,
        )
        text = sample_jsonl(bases, instance.model, options, seed=args.seed)
        write_atomic(args.out, text)
        print(
            f"wrote {args.prompts * args.rollouts:,} rollouts ({args.prompts:,} prompts x "
            f"{args.rollouts}) to {args.out}: {instance.header()}"
            + (f"; {args.instances} instances" if args.instances > 1 else "")
        )
        return 0

    return run_main("python -m tilt.sample", body, SPACE_HINT)
