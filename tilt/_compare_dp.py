"""``tilt.compare`` on the DP engine: which engine runs, and the DP comparison.

:func:`choose_engine` reads the parsed options and returns the DP instance to
run, or ``None`` for the enumeration engine:

* ``--engine enumerate``: enumeration;
* ``--engine dp``: the DP engine, or one line saying why not (a cycle, an SD
  method with no Markov form that was asked for explicitly, a context model
  with no Markov form at all);
* ``--engine auto`` (default): the DP engine when the graph is acyclic and
  every SD method has a Markov form; otherwise enumeration when the space fits
  ``--max-rollouts``; otherwise the DP engine with the methods that have no
  Markov form kept as skipped rows whose note says why.

:func:`compare_dp` returns a :class:`tilt.compare.Comparison` whose rows hold
Markov policies; the table and the JSON have the same shape as enumeration's.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tilt.cli import DEFAULT_STRENGTH, Instance, base_label, check_instance_numbers
from tilt.context import ContextModel, make_context
from tilt.dp import (
    AcyclicSpace,
    MarkovPolicy,
    acyclic_space,
    base_policy,
    lattice_table,
    log_rollout_count,
    markov_reason,
    move_table,
    needs_depth,
)
from tilt.dp.measures import first_move_names
from tilt.dp.policy import point_mass, reference_edges
from tilt.dp.report import dp_rows
from tilt.dp.space import MoveTable
from tilt.graphs import resolve_task
from tilt.lattice import is_lattice_name
from tilt.space import TooLargeError

if TYPE_CHECKING:
    from tilt.compare import Comparison, SDVariant

__all__ = ["ENGINES", "DPInstance", "choose_engine", "compare_dp", "enumerated", "check_rollouts"]

ENGINES = ("auto", "dp", "enumerate")

SDRow = tuple[str, str, str, "str | None"]
"""``(key, label, spec, demos)`` of one SD row (``demos`` ``None``: ``--demos``)."""


@dataclass(frozen=True)
class DPInstance:
    """What the instance options describe, for the DP engine."""

    space: AcyclicSpace
    base: MarkovPolicy
    model: ContextModel
    demos: str
    alpha: float
    anchor: float
    beta: float
    seed: int
    base_name: str
    sd: tuple[SDRow, ...]
    graph_argument: str
    log_rollouts: float
    log_correct: float
    reference: MarkovPolicy | None = None
    reference_path: str | None = None

    def header(self) -> str:
        """One line naming the instance (as :meth:`tilt.cli.Instance.header`)."""
        space = self.space
        labels = space.moves.labels
        demos = self.demos + (f"(alpha={self.alpha:g})" if self.demos == "tempered" else "")
        if self.reference_path is not None:
            demos += f"; reference {self.reference_path}"
        horizon = space.moves.horizon
        return (
            f"{space.name}: {_count(self.log_rollouts)} rollouts, {_count(self.log_correct)} "
            f"correct, {labels[space.moves.source]} -> {labels[space.moves.target]}, "
            f"horizon {'none' if horizon is None else horizon}; base {self.base_name}; "
            f"context {self.model.describe()}; demonstrations {demos}"
            + (f"; anchor {self.anchor:g}" if self.anchor else "")
            + f"; engine dp ({space.n_states:,} states, {space.n_edges:,} state edges)"
        )

    def json_fields(self) -> dict[str, object]:
        """The ``instance`` object of ``--json`` (same keys as enumeration's)."""
        space = self.space
        labels = space.moves.labels
        return {
            "graph": space.name,
            "source": labels[space.moves.source],
            "target": labels[space.moves.target],
            "horizon": space.moves.horizon,
            "rollouts": _json_count(self.log_rollouts),
            "correct": _json_count(self.log_correct),
            "log10_rollouts": self.log_rollouts / math.log(10),
            "prefixes": None,
            "engine": "dp",
        }


def _count(log_count: float) -> str:
    if log_count < math.log(1e15):
        return f"{round(math.exp(log_count)):,}"
    return f"about 10^{log_count / math.log(10):.1f}"


def _json_count(log_count: float) -> int | float | None:
    """The count: an exact int below 2^53, a float up to float64's range, else ``None``."""
    if log_count < 53 * math.log(2):
        return round(math.exp(log_count))
    return math.exp(log_count) if log_count < 709 else None


def _table(args: argparse.Namespace) -> MoveTable:
    if is_lattice_name(args.graph) and args.source is None and args.target is None:
        return lattice_table(args.graph, args.horizon)
    task = resolve_task(args.graph, args.source, args.target, args.horizon, args.directed)
    return move_table(task)


def choose_engine(args: argparse.Namespace, variants: Sequence[SDVariant]) -> DPInstance | None:
    """The DP instance to run, or ``None`` when enumeration should run (see the module doc).

    Raises
    ------
    ValueError
        Under ``--engine dp``, with one line saying why the DP engine cannot
        run and what to use instead.
    """
    engine = getattr(args, "engine", "auto")
    if engine == "enumerate":
        return None
    strength = DEFAULT_STRENGTH[args.context] if args.strength is None else args.strength
    model = make_context(args.context, strength)
    rows: tuple[SDRow, ...] = tuple((v.key, v.label, v.objective.spec, v.demos) for v in variants)
    from tilt.compare import DEFAULT_VARIANTS

    defaults = {v.key for v in DEFAULT_VARIANTS}
    blocked = [
        (key, spec, reason)
        for key, _, spec, demos in rows
        if (reason := markov_reason(spec, model, args.demos if demos is None else demos))
    ]
    explicit = [b for b in blocked if b[0] not in defaults]
    if engine == "dp" and blocked and (explicit or len(blocked) == len(rows)):
        _, spec, reason = (explicit or blocked)[0]
        raise ValueError(f"--engine dp cannot compute SD {spec}: {reason}")
    try:
        table = _table(args)
        space = acyclic_space(table, with_depth=any(needs_depth(r[2]) for r in rows) or None)
    except TooLargeError:
        raise  # too large for the DP engine's memory: enumeration cannot do better
    except ValueError:
        if engine == "dp":
            raise
        return None  # a cycle (or another problem enumeration reports in its own words)
    log_rollouts = log_rollout_count(space)
    if engine == "auto" and blocked and log_rollouts <= math.log(args.max_rollouts):
        return None  # enumeration can do every method
    base = base_policy(space, args.base, seed=args.seed)
    base_name = base_label(args)
    check_instance_numbers(args)
    reference, reference_path = None, None
    wants = args.demos == "reference" or any(r[3] == "reference" for r in rows)
    if wants or args.reference is not None:
        edges = reference_edges(base, args.reference)  # one line when not a correct rollout
        reference = point_mass(space, edges)
        labels = space.moves.labels
        heads = space.moves.move_head[space.edge_move[edges]]
        reference_path = ">".join([labels[space.moves.source], *(labels[h] for h in heads)])
        if args.demos != "reference" and args.reference is None:
            reference_path = None  # the header names it only when --demos or --reference does
    return DPInstance(
        space,
        base,
        model,
        args.demos,
        args.alpha,
        args.anchor,
        args.beta,
        args.seed,
        base_name,
        rows,
        args.graph,
        log_rollouts,
        log_rollout_count(space, correct_only=True),
        reference,
        reference_path,
    )


def compare_dp(
    instance: DPInstance, ks: tuple[int, ...], rounds: int = 1, strategy: str | None = None
) -> Comparison:
    """Every method of ``instance`` by the DP engine, as a :class:`tilt.compare.Comparison`.

    ``strategy``: ``None`` or ``first-move`` (the one strategy map read from flows;
    the others label enumerated rollouts).
    """
    from tilt.compare import Comparison, MethodResult

    rows = dp_rows(
        instance.base,
        instance.model,
        instance.sd,
        instance.demos,
        instance.alpha,
        instance.anchor,
        instance.beta,
        ks,
        rounds,
        instance.reference,
    )
    results = tuple(
        MethodResult(r.key, r.label, r.policy, r.measures, r.beta, r.note, r.objective, r.demos)  # type: ignore[arg-type]
        for r in rows
    )
    if strategy is None:
        return Comparison(instance, ks, rounds, results, None, engine="dp")  # type: ignore[arg-type]
    if strategy != "first-move":
        raise ValueError(
            f"--strategy {strategy} labels the enumerated rollouts: use --engine enumerate "
            "(first-move runs on both engines)"
        )
    from tilt.strategies import Strategies

    # the labels of individual rollouts are not listed (there may be 10^1800 of them)
    strategies = Strategies(strategy, first_move_names(instance.space), np.zeros(0, dtype=np.int64))
    strategy_rows = tuple((r.key, r.first_move) for r in rows if r.first_move is not None)
    return Comparison(
        instance,  # type: ignore[arg-type]
        ks,
        rounds,
        results,
        None,
        strategies=strategies,
        strategy_rows=strategy_rows,
        engine="dp",
    )


def enumerated(comparison: Comparison, args: argparse.Namespace) -> Comparison:
    """The DP comparison on the enumerated rollouts (for ``--rollouts``), size-checked.

    Raises
    ------
    ValueError
        If the space has more rollouts than ``--max-rollouts``.
    """
    from tilt.compare import Comparison, MethodResult
    from tilt.dp.rollouts import prefix_edges, to_policy
    from tilt.optimal import tilt_score
    from tilt.policy import base_policy as enumerated_base
    from tilt.space import enumerate_rollouts

    instance: DPInstance = comparison.instance  # type: ignore[assignment]
    check_rollouts(instance, args.max_rollouts)
    task = resolve_task(args.graph, args.source, args.target, args.horizon, args.directed)
    rollouts = enumerate_rollouts(task, args.max_rollouts)
    edges = prefix_edges(instance.space, rollouts)
    base = enumerated_base(rollouts, args.base, seed=args.seed)
    rows = tuple(
        MethodResult(
            r.key,
            r.label,
            None if r.policy is None else to_policy(r.policy, rollouts, edges),  # type: ignore[arg-type]
            r.measures,
            r.beta,
            r.note,
        )
        for r in comparison.rows
    )
    enum_instance = Instance(
        rollouts,
        base,
        instance.model,
        instance.demos,
        instance.alpha,
        instance.anchor,
        instance.beta,
        instance.seed,
        instance.base_name,
    )
    tilt = tilt_score(base, instance.model, enum_instance.demonstrations(base))
    return Comparison(enum_instance, comparison.ks, comparison.rounds, rows, tilt, engine="dp")


def check_rollouts(instance: DPInstance, limit: int) -> None:
    """Raise ``ValueError`` when ``--rollouts`` would write more than ``limit`` rows."""
    if instance.log_rollouts > math.log(limit):
        raise ValueError(
            f"--rollouts writes one row per rollout and {instance.space.name} has "
            f"{_count(instance.log_rollouts)} (limit --max-rollouts {limit:,}): drop --rollouts, "
            "or use a smaller space or a horizon"
        )
