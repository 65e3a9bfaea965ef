"""The rows of ``tilt.compare`` computed by the DP engine.

:func:`dp_rows` returns, for an acyclic space, the same methods as the
enumeration engine's comparison (base, RL at ``beta``, RL at SD's accuracy and
one row per SD objective), each with its :class:`~tilt.measures.Measures`, so
that ``tilt.compare`` prints the same table and JSON whichever engine ran.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tilt.context import ContextModel
from tilt.dp.measures import first_move_strategies, measure_with_distinct
from tilt.dp.objectives import dp_optimum, markov_reason, parse_spec
from tilt.dp.optima import rl_optimum
from tilt.dp.policy import Demos, MarkovPolicy
from tilt.measures import Measures
from tilt.measures.strategies import StrategyMeasures
from tilt.objectives import OBJECTIVES, matched_beta

__all__ = ["DPRow", "dp_rows", "iterate", "measure_noted"]


def measure_noted(
    policy: MarkovPolicy, base: MarkovPolicy, ks: Sequence[int]
) -> tuple[Measures, str]:
    """The measures and, when distinct@k could not be listed exactly, a note with its bound."""
    measures, distinct = measure_with_distinct(policy, base, ks)
    loose = [d for d in distinct.values() if not d.exact]
    if not loose:
        return measures, ""
    bound = max(d.error for d in loose)
    return measures, (
        "distinct@k bounded, not listed exactly (too many correct rollouts): "
        f"|error| <= {bound:.2g}"
    )


def _row(
    key: str,
    label: str,
    policy: MarkovPolicy,
    base: MarkovPolicy,
    ks: Sequence[int],
    beta: float | None = None,
    note: str = "",
    objective: str | None = None,
    demos: str | None = None,
) -> DPRow:
    measures, bound = measure_noted(policy, base, ks)
    strategy = first_move_strategies(policy, ks)  # a few source edges: always kept
    # the row keeps its conditionals only: what the measures cached is freed (memory
    # linear in the edges, not in the rows); the base keeps what the SD rows reuse
    if policy is base:
        policy.forget("prob", "linear", "flows", "log_incorrect_below")
    else:
        policy.forget()
    notes = "; ".join(n for n in (note, bound) if n)
    return DPRow(key, label, policy, measures, beta, notes, objective, demos, strategy)


@dataclass(frozen=True)
class DPRow:
    """One method: its Markov optimum and measures (``None`` when skipped, with a note)."""

    key: str
    label: str
    policy: MarkovPolicy | None
    measures: Measures | None
    beta: float | None = None
    note: str = ""
    objective: str | None = None
    demos: str | None = None
    first_move: StrategyMeasures | None = None
    """The ``first-move`` strategy measures (:func:`tilt.dp.measures.first_move_strategies`)."""


def iterate(
    policy: MarkovPolicy, step: Callable[[MarkovPolicy], MarkovPolicy], rounds: int
) -> MarkovPolicy:
    """``step`` applied ``rounds`` times."""
    for _ in range(rounds):
        policy = step(policy)
    return policy


def dp_rows(
    base: MarkovPolicy,
    model: ContextModel,
    sd: Sequence[tuple[str, str, str, str | None]],
    demos: str = "own",
    alpha: float = 1.0,
    anchor: float = 0.0,
    beta: float = 0.0,
    ks: Sequence[int] = (1, 8, 64),
    rounds: int = 1,
    reference: MarkovPolicy | None = None,
) -> list[DPRow]:
    """Base, RL at ``beta``, RL matched to the first SD row's accuracy, and the SD rows.

    ``sd`` lists ``(key, label, spec, demos)`` (``demos`` ``None``: the
    ``demos`` argument); an SD objective with no Markov form is kept as a row
    with the reason as its note, and an objective that takes no anchor runs
    with ``b = 0`` and says so (as ``tilt.compare`` does).  Each method is
    iterated ``rounds`` times from its own output; ``reference`` (a
    :func:`tilt.dp.policy.point_mass`) is the fixed demonstration of the rows
    whose demonstrations are ``reference``.
    """
    rows = [_row("base", "base", base, base, ks)]
    rl = iterate(base, lambda p: rl_optimum(p, beta), rounds)
    rl_label = "RL beta->0" if beta == 0 else f"RL beta={beta:g}"
    rows.append(_row("rl", rl_label, rl, base, ks, beta=beta))
    sd_rows = []
    for key, label, spec, row_demos in sd:
        kind = demos if row_demos is None else row_demos
        reason = markov_reason(spec, model, kind)
        name = parse_spec(spec).name
        if reason is not None:
            sd_rows.append(
                DPRow(key, label, None, None, note=f"skipped: {reason}", objective=spec, demos=kind)
            )
            continue
        given: Demos = kind
        if kind == "reference":
            if reference is None:
                raise ValueError("reference demonstrations need the reference rollout")
            given = reference
        b, notes = anchor, []
        if b > 0 and not OBJECTIVES[name].takes_anchor:
            b = 0.0
            notes.append(f"{spec} has no anchor: b = 0 here")
        q = base
        for _ in range(rounds):
            q = dp_optimum(q, model, spec, given, alpha, b)
        sd_rows.append(_row(key, label, q, base, ks, None, "; ".join(notes), spec, kind))
    first = next((r for r in sd_rows if r.policy is not None), None)
    if first is None or first.policy is None:
        rows.append(DPRow("rl_matched", "RL @ SD acc", None, None, note="no SD row to match"))
    else:
        target = first.measures.accuracy if first.measures else first.policy.accuracy
        matched = matched_beta(base.accuracy, target)
        if matched is None:
            rows.append(
                DPRow(
                    "rl_matched",
                    "RL @ SD acc",
                    None,
                    None,
                    note=f"no beta reaches accuracy {target:.6g}: it is below the base's "
                    f"{base.accuracy:.6g}, and RL with a 0/1 reward only raises accuracy",
                )
            )
        else:
            q = rl_optimum(base, matched) if not math.isinf(matched) else base
            rows.append(_row("rl_matched", "RL @ SD acc", q, base, ks, beta=matched))
    rows.extend(sd_rows)
    return rows
