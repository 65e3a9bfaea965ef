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
import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tilt._numerics import FloatArray
from tilt.cli import (
    SHAPE_HEADER,
    Instance,
    OneLineParser,
    add_instance_arguments,
    add_k_argument,
    add_objective_arguments,
    build_instance,
    check_output_folder,
    fmt,
    non_negative_int,
    run_main,
    shape_cells,
    table,
    write_atomic,
)
from tilt.measures import Measures, measure
from tilt.measures.ood import READING_LABELS
from tilt.measures.strategies import (
    Strategies,
    StrategyMeasures,
    strategy_labels,
    strategy_measures,
)
from tilt.objectives import (
    Objective,
    iterate,
    parse_objective,
    preset,
    rl_matched,
    rl_optimum,
    tilt_score,
)
from tilt.policy import Policy
from tilt.space import TooLargeError

__all__ = [
    "MethodResult",
    "Comparison",
    "SDVariant",
    "sd_variants",
    "compare",
    "rollouts_csv",
    "main",
]

METHODS = ("base", "rl", "rl_matched", "sd", "sd_token", "sd_forward")
"""Keys of the rows every comparison has, also CSV column names of the probabilities."""


@dataclass(frozen=True)
class SDVariant:
    """One SD row: its key (the CSV column), label, objective and demonstrations.

    ``demos`` is ``None`` for the instance's own ``--demos``.
    """

    key: str
    label: str
    objective: Objective
    demos: str | None = None


DEFAULT_VARIANTS = (
    SDVariant("sd", "SD sequence", parse_objective("sequence")),
    SDVariant("sd_token", "SD token", parse_objective("token")),
    SDVariant("sd_forward", "SD forward", parse_objective("forward")),
)
"""The three rows of every comparison."""


def sd_variants(
    specs: Sequence[str | Objective] = (), presets: Sequence[str] = ()
) -> list[SDVariant]:
    """The default rows, then one per spec (key ``sd[SPEC]``) and per preset (``preset[NAME]``)."""
    out = list(DEFAULT_VARIANTS)
    for spec in specs:
        objective = parse_objective(spec)
        out.append(SDVariant(f"sd[{objective.spec}]", f"SD {objective.spec}", objective))
    for name in presets:
        p = preset(name)
        label = f"preset {p.name}"
        out.append(SDVariant(f"preset[{p.name}]", label, parse_objective(p.objective), p.demos))
    return out


@dataclass(frozen=True)
class MethodResult:
    """One method's optimum and its measures (``policy is None`` when skipped)."""

    key: str
    label: str
    policy: Policy | None
    measures: Measures | None
    beta: float | None = None
    note: str = ""
    objective: str | None = None
    demos: str | None = None


@dataclass(frozen=True)
class Comparison:
    """Every method of one instance, and the tilt score of the first round.

    ``engine`` is ``'enumerate'`` or ``'dp'``; the DP engine keeps no per-rollout
    tilt score (``tilt is None``) and its rows hold Markov policies
    (:mod:`tilt._compare_dp`).
    """

    instance: Instance
    ks: tuple[int, ...]
    rounds: int
    rows: tuple[MethodResult, ...]
    tilt: FloatArray | None
    engine: str = "enumerate"
    strategies: Strategies | None = None
    strategy_rows: tuple[tuple[str, StrategyMeasures], ...] = ()

    def row(self, key: str) -> MethodResult:
        """The row of method ``key`` (one of ``METHODS``)."""
        return next(r for r in self.rows if r.key == key)


def _sd_step(instance: Instance, variant: SDVariant, anchor: float) -> Callable[[Policy], Policy]:
    def step(policy: Policy) -> Policy:
        demos = instance.demonstrations(policy, variant.demos)
        return variant.objective.optimum(policy, instance.model, demos, anchor=anchor)

    return step


def _measured(policy: Policy, base: Policy, ks: Sequence[int]) -> Measures:
    """:func:`tilt.measures.measure`, then the row's per-prefix arrays are let go (a row keeps
    its ``log_prob``; on grid6 each row's arrays are some 300 MB)."""
    out = measure(policy, base, ks)
    policy.release()
    return out


def compare(
    instance: Instance,
    ks: Sequence[int] = (1, 8, 64),
    rounds: int = 1,
    variants: Sequence[SDVariant] = DEFAULT_VARIANTS,
    strategies: Strategies | None = None,
) -> Comparison:
    """Compute base, RL, matched RL and every SD variant of ``instance``, with measures.

    Each method is applied ``rounds`` times (iterated from its own output, with
    demonstrations drawn from it; a reference demonstration stays fixed); RL is
    matched to the accuracy of sequence SD after the same rounds.  A method
    whose exact computation exceeds a size limit is kept as a row with a note,
    and so is the anchor where an objective has none.  With ``strategies``
    (:func:`tilt.measures.strategies.strategy_labels`), every method also gets its
    strategy shares and diversity.
    """
    base = instance.base
    ks = tuple(ks)
    results: list[MethodResult] = [MethodResult("base", "base", base, measure(base, base, ks))]
    rl = iterate(base, lambda p: rl_optimum(p, instance.beta), rounds)[-1]
    rl_label = "RL beta->0" if instance.beta == 0 else f"RL beta={instance.beta:g}"
    results.append(MethodResult("rl", rl_label, rl, _measured(rl, base, ks), beta=instance.beta))
    sd_rows: list[MethodResult] = []
    for v in variants:
        demos = instance.demos if v.demos is None else v.demos
        anchor, notes = instance.anchor, []
        if anchor > 0 and not v.objective.kind.takes_anchor:
            anchor = 0.0
            notes.append(f"{v.objective.spec} has no anchor: b = 0 here")
        if v.demos == "reference" and instance.demos != "reference":
            path = instance.space.path_labels(np.array([instance.reference_index]))[0]
            notes.append(f"reference demonstration {path}")
        try:
            q = iterate(base, _sd_step(instance, v, anchor), rounds)[-1]
        except TooLargeError as exc:
            q, notes = None, [f"skipped: {exc}"]
        sd_rows.append(
            MethodResult(
                v.key,
                v.label,
                q,
                None if q is None else _measured(q, base, ks),
                note="; ".join(notes),
                objective=v.objective.spec,
                demos=demos,
            )
        )
    sequence = sd_rows[0].policy
    assert sequence is not None  # sequence SD has a structured form for every built-in
    matched = rl_matched(base, sequence.accuracy)
    if matched.policy is None:
        results.append(MethodResult("rl_matched", "RL @ SD acc", None, None, note=matched.message))
    else:
        results.append(
            MethodResult(
                "rl_matched",
                "RL @ SD acc",
                matched.policy,
                _measured(matched.policy, base, ks),
                beta=matched.beta,
            )
        )
    results.extend(sd_rows)
    tilt = tilt_score(base, instance.model, instance.demonstrations(base))
    strategy_rows: tuple[tuple[str, StrategyMeasures], ...] = ()
    if strategies is not None:
        strategy_rows = tuple(
            (r.key, strategy_measures(r.policy, strategies, ks))
            for r in results
            if r.policy is not None
        )
    return Comparison(
        instance,
        ks,
        rounds,
        tuple(results),
        tilt,
        strategies=strategies,
        strategy_rows=strategy_rows,
    )


# --------------------------------------------------------------------------
# output


def format_table(comparison: Comparison) -> str:
    """The human-readable report: a header line and two tables."""
    c = comparison
    lines = [c.instance.header() + (f"; rounds {c.rounds}" if c.rounds != 1 else "")]
    shape_rows: list[list[str]] = []
    k_rows: list[list[str]] = []
    ood_rows: list[list[str]] = []
    for r in c.rows:
        m = r.measures
        beta = "" if r.beta is None else ("inf" if math.isinf(r.beta) else f"{r.beta:.4g}")
        if m is None:
            shape_rows.append([r.label, beta] + ["--"] * len(SHAPE_HEADER))
            k_rows.append([r.label] + ["--"] * (2 * len(c.ks)))
            ood_rows.append([r.label] + ["--"] * (4 * len(c.ks)))
            continue
        shape_rows.append([r.label, beta, *shape_cells(m)])
        k_rows.append(
            [r.label]
            + [fmt(m.pass_at_k[k]) for k in c.ks]
            + [fmt(m.distinct_at_k[k], 2) for k in c.ks]
        )
        ood_rows.append(
            [r.label]
            + [fmt(m.ood[k].mean) for k in c.ks]
            + [fmt(m.ood_reroute[k].mean) for k in c.ks]
            + [fmt(m.ood[k].worst) for k in c.ks]
            + [fmt(m.ood_reroute[k].worst) for k in c.ks]
        )
    lines.append("")
    lines.append(
        table(
            ["method", "beta", *SHAPE_HEADER],
            shape_rows,
        )
    )
    lines.append("")
    header = ["method"] + [f"pass@{k}" for k in c.ks] + [f"distinct@{k}" for k in c.ks]
    lines.append(table(header, k_rows))
    lines.append("")
    lines.append(
        f"ood pass@k, one edge blocked at a time (mean and worst over edges): "
        f"fail = {READING_LABELS['fail']} (rollouts through it fail), "
        f"reroute = {READING_LABELS['reroute']} (the policy renormalised without it)"
    )
    header = (
        ["method"]
        + [f"fail mean@{k}" for k in c.ks]
        + [f"reroute mean@{k}" for k in c.ks]
        + [f"fail worst@{k}" for k in c.ks]
        + [f"reroute worst@{k}" for k in c.ks]
    )
    lines.append(table(header, ood_rows))
    if c.strategies is not None:
        lines.append("")
        lines.append(format_strategies(c))
    notes = [f"{r.label}: {r.note}" for r in c.rows if r.note]
    if notes:
        lines.append("")
        lines.extend(notes)
    return "\n".join(lines)


def format_strategies(comparison: Comparison) -> str:
    """The strategy table: shares of the correct mass, entropy, effective number, distinct@k."""
    c = comparison
    assert c.strategies is not None
    names = list(c.strategies.names)
    shown = names if len(names) <= 8 else names[:8]
    labels = {r.key: r.label for r in c.rows}
    rows = []
    for key, sm in c.strategy_rows:
        rows.append(
            [labels[key]]
            + [fmt(sm.shares[n]) for n in shown]
            + [fmt(sm.entropy, 3), fmt(sm.effective, 2)]
            + [fmt(sm.distinct_at_k[k], 2) for k in c.ks]
        )
    header = (
        ["method"]
        + [f"share {n}" for n in shown]
        + ["H(strat)", "eff. #strat"]
        + [f"strat@{k}" for k in c.ks]
    )
    head = (
        f"strategies ({c.strategies.name}): {len(names)} among the correct rollouts"
        + ("" if len(names) == len(shown) else f"; shares of the first {len(shown)} shown")
        + "; strat@k = expected distinct strategies in k samples"
    )
    return head + "\n" + table(header, rows)


def as_json(comparison: Comparison) -> dict[str, object]:
    """The comparison as a JSON-ready dict (non-finite numbers become ``null``)."""
    inst = comparison.instance
    space = inst.space
    strategies = dict(comparison.strategy_rows)
    if comparison.engine == "dp":
        where: dict[str, object] = inst.json_fields()  # type: ignore[attr-defined]
    else:
        where = {
            "graph": space.task.name,
            "source": space.labels[space.source],
            "target": space.labels[space.target],
            "horizon": space.task.horizon,
            "rollouts": space.n_rollouts,
            "correct": space.n_correct,
            "log10_rollouts": math.log10(space.n_rollouts),
            "prefixes": space.n_prefixes,
            "engine": "enumerate",
        }
    return {
        "instance": {
            **where,
            "base": inst.base_name,
            "context": inst.model.name,
            "strength": inst.model.strength,
            "demos": inst.demos,
            "alpha": inst.alpha,
            "anchor": inst.anchor,
            "beta": inst.beta if math.isfinite(inst.beta) else None,
            "rounds": comparison.rounds,
            "k": list(comparison.ks),
        },
        "methods": [
            {
                "key": r.key,
                "label": r.label,
                "beta": None if r.beta is None or not math.isfinite(r.beta) else r.beta,
                "skipped": r.policy is None,
                "note": r.note,
                "objective": r.objective,
                "demos": r.demos,
                "measures": None if r.measures is None else r.measures.as_dict(),
                **(
                    {"strategies": strategies[r.key].as_dict() if r.key in strategies else None}
                    if comparison.strategies is not None
                    else {}
                ),
            }
            for r in comparison.rows
        ],
        **(
            {
                "strategy_map": {
                    "name": comparison.strategies.name,
                    "strategies": list(comparison.strategies.names),
                }
            }
            if comparison.strategies is not None
            else {}
        ),
    }


def rollouts_csv(comparison: Comparison) -> str:
    """One row per rollout: ``path,correct,base,rl,sd,sd_token,sd_forward,tilt,rl_matched``.

    Then one column per ``--sd`` spec (``sd[SPEC]``) and per preset
    (``preset[NAME]``).  Probabilities are ``repr`` floats (full precision); a
    skipped method's column is empty.
    """
    space = comparison.instance.space
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = ["base", "rl", "sd", "sd_token", "sd_forward"]
    extra = [r.key for r in comparison.rows if r.key not in METHODS]
    writer.writerow(["path", "correct", *columns, "tilt", "rl_matched", *extra])
    probs = {}
    for key in [*columns, "rl_matched", *extra]:
        policy = comparison.row(key).policy
        probs[key] = None if policy is None else policy.prob
    paths = space.path_labels()
    correct = space.correct.astype(int)
    tilt = comparison.tilt
    assert tilt is not None  # enumerated comparisons carry it (tilt._compare_dp.enumerated)
    for i, path in enumerate(paths):
        cells: list[object] = [path, correct[i]]
        for key in [*columns]:
            cells.append("" if probs[key] is None else repr(float(probs[key][i])))  # type: ignore[index]
        cells.append(repr(float(tilt[i])))
        for key in ["rl_matched", *extra]:
            cells.append("" if probs[key] is None else repr(float(probs[key][i])))  # type: ignore[index]
        writer.writerow(cells)
    return buffer.getvalue()


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
        type=non_negative_int,
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
        choices=("auto", "dp", "enumerate"),
        default="auto",
        help="dp: passes over an acyclic graph's states (no enumeration, any length); "
        "enumerate: the prefix tree; auto (default): dp when the graph is acyclic and every "
        "method has a Markov form, else enumeration",
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
            check_output_folder(args.rollouts)  # before any work: a folder, FIFO, device is refused
        if args.landmarks and args.strategy != "landmarks":
            raise ValueError("--landmarks needs --strategy landmarks")
        on_dp = args.strategy in (None, "first-move")  # first-move is read from flows
        if not on_dp and args.engine == "dp":
            raise ValueError(
                f"--strategy {args.strategy} labels the enumerated rollouts: use --engine "
                "enumerate (or auto); first-move runs on both engines"
            )
        from tilt._compare_dp import check_rollouts, choose_engine, compare_dp, enumerated

        variants = sd_variants(args.sd, args.preset)
        dp_instance = choose_engine(args, variants) if on_dp else None
        if dp_instance is None:
            instance = build_instance(args)
            strategies = (
                None
                if args.strategy is None
                else strategy_labels(instance.space, args.strategy, args.landmarks)
            )
            comparison = compare(instance, args.k, args.rounds, variants, strategies)
            per_rollout = comparison
        else:
            if args.rollouts:
                check_rollouts(dp_instance, args.max_rollouts)
            comparison = compare_dp(dp_instance, tuple(args.k), args.rounds, args.strategy)
            per_rollout = enumerated(comparison, args) if args.rollouts else comparison
        if args.rollouts:
            write_atomic(args.rollouts, rollouts_csv(per_rollout))
        if args.json:
            print(json.dumps(as_json(comparison), indent=2, allow_nan=False))
        else:
            print(format_table(comparison))
            if args.rollouts:
                print(
                    f"\nwrote {per_rollout.instance.space.n_rollouts:,} rollouts to {args.rollouts}"
                )
        return 0

    return run_main("tilt.compare", body)


if __name__ == "__main__":
    raise SystemExit(main())
