"""``python -m tilt.compare``: RL against self-distillation on one instance, exactly.

Prints one row per method (base, RL at ``--beta``, RL at SD's accuracy, SD
sequence, SD token, SD forward, then one per ``--sd SPEC`` and ``--preset
NAME``) with every measure of ``docs/theory.md``; ``--json`` prints the same
numbers as one JSON object; ``--rollouts FILE.csv`` writes one row per rollout
with full-precision probabilities.

Example::

    python -m tilt.compare --graph grid5 --sd jsd=0.5 --preset sdpo --k 1 8 64
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from tilt.cli._args import (
    Count,
    OneLineParser,
    add_instance_arguments,
    add_k_argument,
    add_objective_arguments,
    instance_spec,
)
from tilt.cli._files import check_output_file, write_atomic
from tilt.cli._run import SPACE_HINT, run_main
from tilt.compare import (
    as_json,
    check_rollout_count,
    compare,
    format_table,
    methods,
    on_rollouts,
    rollouts_csv,
    sd_variants,
)
from tilt.engines import ENGINES, EnumeratedInstance, build_instance

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m tilt.compare",
        description="Exact optima of RL and self-distillation on one rollout space, "
        "and their measures.",
    )
    add_instance_arguments(parser)
    add_objective_arguments(parser)
    out = parser.add_argument_group("output")
    add_k_argument(out)
    out.add_argument(
        "--rounds",
        type=Count(0, 1000),
        default=1,
        help="apply each method this many times, each round from the last (default 1)",
    )
    out.add_argument(
        "--strategy",
        metavar="MAP",
        help="also report strategy shares and diversity: first-move, side, landmarks, or a "
        "function module:function (or file.py:function) taking the path",
    )
    out.add_argument(
        "--landmarks",
        nargs="+",
        metavar="NODE",
        help="designated nodes of --strategy landmarks (default: the graph's 'landmarks')",
    )
    out.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="dp: passes over an acyclic graph's states (no enumeration, any length); "
        "enumerate: the prefix tree; auto (default): dp when the graph is acyclic and every "
        "method has a Markov form, else enumeration",
    )
    out.add_argument(
        "--ood-detail",
        action="store_true",
        help="print out-of-distribution pass@k for every --k (default: the smallest)",
    )
    out.add_argument(
        "--explain", action="store_true", help="end the report with what each column means"
    )
    out.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    out.add_argument(
        "--rollouts", metavar="FILE.csv", help="write one row per rollout to this CSV file"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tilt.compare``; returns the exit status."""
    args = _parser().parse_args(argv)

    def body() -> int:
        if args.rollouts is not None:
            # before any work: a folder, FIFO, device, or the graph file itself is refused
            check_output_file(args.rollouts, inputs=[args.graph])
        if args.landmarks and args.strategy != "landmarks":
            raise ValueError("--landmarks needs --strategy landmarks")
        on_dp = args.strategy in (None, "first-move")  # first-move is read from flows
        if not on_dp and args.engine == "dp":
            raise ValueError(
                f"--strategy {args.strategy} labels the enumerated rollouts: use --engine "
                "enumerate (or auto); first-move runs on both engines"
            )
        variants = sd_variants(args.sd, args.preset)
        engine = args.engine if on_dp else "enumerate"
        instance = build_instance(instance_spec(args), methods(variants), engine)
        if args.rollouts:
            check_rollout_count(instance, args.max_rollouts)
        strategies = (
            None if args.strategy is None else instance.strategies(args.strategy, args.landmarks)
        )
        comparison = compare(instance, args.k, args.rounds, variants, strategies)
        per_rollout = on_rollouts(comparison, args.max_rollouts) if args.rollouts else comparison
        written = 0
        if args.rollouts:
            write_atomic(args.rollouts, rollouts_csv(per_rollout))
            assert isinstance(per_rollout.instance, EnumeratedInstance)  # on_rollouts made it
            written = per_rollout.instance.space.n_rollouts
        if args.json:
            print(json.dumps(as_json(comparison), indent=2, allow_nan=False))
        else:
            print(format_table(comparison, args.ood_detail, args.explain))
            if args.rollouts:
                print(f"\nwrote {written:,} rollouts to {args.rollouts}")
        return 0

    return run_main("python -m tilt.compare", body, SPACE_HINT)
