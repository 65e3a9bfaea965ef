"""The options the commands share: the instance, the SD objectives, counts and numbers."""

from __future__ import annotations

import argparse
import math
from typing import NoReturn

from tilt._table import table
from tilt.cli._run import silence_stdout
from tilt.context import CONTEXTS, DEFAULT_STRENGTH, DEMOS
from tilt.context.base import MAX_GAMMA
from tilt.engines import EnumeratedInstance, InstanceSpec, enumerated_instance
from tilt.objectives import PRESETS, Objective, objective_forms, parse_objective
from tilt.policy import BASES
from tilt.space import DEFAULT_MAX_ROLLOUTS
from tilt.tasks import catalogue, named_task

__all__ = [
    "OneLineParser",
    "Count",
    "MAX_INT",
    "positive_int",
    "non_negative_int",
    "finite_float",
    "add_instance_arguments",
    "add_task_arguments",
    "add_sd_arguments",
    "add_objective_arguments",
    "add_k_argument",
    "objective_spec",
    "instance_spec",
    "build_instance",
    "DEMO_CHOICES",
]

DEMO_CHOICES = (*DEMOS, "reference")
"""``--demos`` values: the built-in distributions and one fixed ``reference`` rollout."""


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line and exit status 2, and whose count
    options (:class:`Count`) say their range in their help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def format_help(self) -> str:
        for action in self._actions:
            bounded = action.type if isinstance(action.type, Count) else None
            if bounded is not None and bounded.high < MAX_INT and action.help:
                note = f" (range {bounded.bound()})"
                if not action.help.endswith(note):
                    action.help += note
        return super().format_help()


MAX_INT = 2**63 - 1
"""Largest integer any option takes (a seed); counts have tighter bounds (:class:`Count`)."""


class Count:
    """An argparse type: an integer from ``low`` to ``high``, checked before any work.

    The parser adds the range to the option's help (:class:`OneLineParser`), so every
    count option documents its bound; a number of more digits than ``high`` has is
    refused before it is converted.
    """

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self.__name__ = "count"  # argparse names the type in its messages

    def __call__(self, text: str) -> int:
        digits = text.strip().lstrip("+-")
        if len(digits) > len(str(self.high)) + 1:
            raise argparse.ArgumentTypeError(self._expected(text))
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(self._expected(text)) from None
        if not self.low <= value <= self.high:
            raise argparse.ArgumentTypeError(self._expected(text))
        return value

    def bound(self) -> str:
        """The range for a help text."""
        return f"{self.low:,} to {self.high:,}"

    def _expected(self, text: str) -> str:
        shown = text if len(text) <= 40 else text[:37] + "..."
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(self.low)
        if kind is None:
            return f"expected an integer from {self.bound()}, got {shown!r}"
        return f"expected {kind} (at most {self.high:,}), got {shown!r}"


positive_int = Count(1, MAX_INT)
"""A positive integer (at most ``2^63 - 1``)."""

non_negative_int = Count(0, MAX_INT)
"""A non-negative integer (at most ``2^63 - 1``)."""


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if math.isnan(value):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    return value


class _ListGraphs(argparse.Action):
    """``--list-graphs``: print the catalogue, one named graph a line, and exit 0."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        lattice = "lattice:V=..,L=.."
        width = max(len(lattice), *map(len, catalogue()))
        try:
            for name in catalogue():
                print(f"{name:{width}s}  {named_task(name).description}", flush=True)
            print(
                f"{lattice:{width}s}  a token lattice: L tokens from a vocabulary of V, correct "
                "when the token sum is divisible by M (fields V, L, seed, M, scale; "
                "docs/guide.md)",
                flush=True,
            )
        except BrokenPipeError:  # | head -1
            silence_stdout()
        parser.exit(0)


def add_instance_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options that choose graph, base, context model and demonstrations."""
    add_task_arguments(parser)
    add_sd_arguments(parser)


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options that choose graph, source, target, horizon, base and seed."""
    g = parser.add_argument_group("instance")
    g.add_argument(
        "--list-graphs", action=_ListGraphs, help="list the named graphs with their default bases"
    )
    g.add_argument(
        "--graph",
        default="grid5",
        metavar="NAME|FILE",
        help=f"named graph ({', '.join(catalogue())}) or a .graphml/.json/.gml/edge-list file "
        "(default grid5)",
    )
    g.add_argument("--source", help="source node label (default: the graph's)")
    g.add_argument("--target", help="target node label (default: the graph's)")
    g.add_argument("--horizon", type=Count(0, 10**6), help="most moves per rollout (default: none)")
    g.add_argument("--directed", action="store_true", help="read an edge list as directed moves")
    g.add_argument(
        "--max-rollouts",
        type=Count(1, 10**10),
        default=DEFAULT_MAX_ROLLOUTS,
        help=f"size guard for enumeration (default {DEFAULT_MAX_ROLLOUTS:,})",
    )
    g.add_argument(
        "--base",
        default="default",
        choices=BASES,
        help="base policy: the graph's logits, uniform, or seeded random logits",
    )
    g.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of every random choice (default 0)"
    )


def add_sd_arguments(parser: argparse.ArgumentParser, rl: bool = True) -> argparse._ArgumentGroup:
    """Add the options of the context model, demonstrations, anchor and (``rl``) RL's beta.

    Returns the option group, for a command line that adds its own SD options to it.
    """
    s = parser.add_argument_group("self-distillation")
    s.add_argument(
        "--context", default="edge", choices=CONTEXTS, help="context model (default edge)"
    )
    s.add_argument(
        "--strength",
        type=finite_float,
        help=f"lam for copy (0 <= lam < 1), gamma for edge/kernel (0 to {MAX_GAMMA:g}; default: "
        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_STRENGTH.items())
        + ")",
    )
    s.add_argument(
        "--demos",
        default="own",
        choices=DEMO_CHOICES,
        help="demonstration distribution (default own); reference: one fixed correct rollout",
    )
    s.add_argument(
        "--reference",
        metavar="PATH",
        help="the reference demonstration, node labels joined by '>' as in the --rollouts CSV "
        "(default: the base's most probable correct rollout)",
    )
    s.add_argument(
        "--alpha",
        type=finite_float,
        default=0.5,
        help="tempering exponent for --demos tempered (default 0.5)",
    )
    s.add_argument(
        "--anchor",
        type=finite_float,
        default=0.0,
        help="anchor b of b*KL(q||pi) for sequence and token SD (default 0)",
    )
    if rl:
        s.add_argument(
            "--beta",
            type=finite_float,
            default=0.0,
            help="KL coefficient of RL; 0 is the limit beta -> 0 (default 0)",
        )
    return s


def objective_spec(text: str) -> Objective:
    """``--sd`` values: a spec of :data:`tilt.objectives.OBJECTIVES`, parsed."""
    try:
        return parse_objective(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _ListPresets(argparse.Action):
    """``--list-presets``: print each preset with its objective, demonstrations and source."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        rows = [[p.name, p.objective, p.demos, p.source] for p in PRESETS.values()]
        print(table(["preset", "objective", "demonstrations", "follows"], rows))
        parser.exit(0)


def add_objective_arguments(
    parser: argparse.ArgumentParser,
    what: str = "add one row (and one CSV column sd[SPEC]) per objective",
) -> None:
    """Add ``--sd SPEC`` and ``--preset NAME`` (both repeatable) and ``--list-presets``."""
    g = parser.add_argument_group("more self-distillation objectives")
    g.add_argument(
        "--sd",
        metavar="SPEC",
        action="append",
        type=objective_spec,
        default=[],
        help=f"{what}: {objective_forms()}",
    )
    g.add_argument(
        "--preset",
        metavar="NAME",
        action="append",
        choices=list(PRESETS),
        default=[],
        help=f"add a row configured like a trainer's defaults ({', '.join(PRESETS)})",
    )
    g.add_argument(
        "--list-presets",
        action=_ListPresets,
        help="list the presets with their objective, demonstrations and source, and exit",
    )


def add_k_argument(group: argparse._ArgumentGroup) -> None:
    """Add ``--k``, the sample counts of pass@k, distinct@k and ood pass@k."""
    group.add_argument(
        "--k",
        type=Count(1, 10**9),
        nargs="+",
        default=[1, 8, 64],
        help="sample counts for pass@k, distinct@k and ood pass@k (default 1 8 64)",
    )


def instance_spec(args: argparse.Namespace) -> InstanceSpec:
    """The :class:`~tilt.engines.InstanceSpec` of parsed instance options."""
    fields = InstanceSpec.__dataclass_fields__
    return InstanceSpec(**{name: getattr(args, name) for name in fields if hasattr(args, name)})


def build_instance(args: argparse.Namespace) -> EnumeratedInstance:
    """The enumerated instance of parsed instance options."""
    return enumerated_instance(instance_spec(args))
