"""A comparison as text, as JSON, and as one CSV row per rollout."""

from __future__ import annotations

import csv
import io
import math

from tilt._table import SHAPE_HEADER, fmt, shape_cells, table
from tilt.compare._compare import METHODS, Comparison, MethodResult
from tilt.engines import DPInstance, EngineInstance, EnumeratedInstance
from tilt.engines.dp.instance import count_label
from tilt.engines.dp.rollouts import prefix_edges, to_policy
from tilt.measures import READING_LABELS
from tilt.policy import base_policy
from tilt.space import enumerate_rollouts
from tilt.tasks import resolve_task

__all__ = [
    "format_table",
    "format_strategies",
    "as_json",
    "rollouts_csv",
    "on_rollouts",
    "check_rollout_count",
]


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
    strategies = dict(comparison.strategy_rows)
    where = inst.json_fields()
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
    instance = comparison.instance
    if not isinstance(instance, EnumeratedInstance):
        raise TypeError("rollouts_csv needs enumerated rollouts: call on_rollouts first")
    space = instance.space
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
    assert tilt is not None  # enumerated comparisons carry it (on_rollouts)
    for i, path in enumerate(paths):
        cells: list[object] = [path, correct[i]]
        for key in [*columns]:
            cells.append("" if probs[key] is None else repr(float(probs[key][i])))  # type: ignore[index]
        cells.append(repr(float(tilt[i])))
        for key in ["rl_matched", *extra]:
            cells.append("" if probs[key] is None else repr(float(probs[key][i])))  # type: ignore[index]
        writer.writerow(cells)
    return buffer.getvalue()


def on_rollouts(comparison: Comparison, max_rollouts: int) -> Comparison:
    """The comparison on the enumerated rollouts (for :func:`rollouts_csv`), size-checked.

    An enumerated comparison is returned as it is; a DP comparison's Markov
    policies are read off on every rollout of its space.

    Raises
    ------
    ValueError
        If the space has more than ``max_rollouts`` rollouts.
    """
    instance = comparison.instance
    if isinstance(instance, EnumeratedInstance):
        return comparison
    if not isinstance(instance, DPInstance):
        raise TypeError(f"no rollouts for an instance of {type(instance).__name__}")
    check_rollout_count(instance, max_rollouts)
    spec = instance.spec
    task = resolve_task(spec.graph, spec.source, spec.target, spec.horizon, spec.directed)
    rollouts = enumerate_rollouts(task, max_rollouts)
    edges = prefix_edges(instance.space, rollouts)
    base = base_policy(rollouts, spec.base, seed=spec.seed)
    rows = tuple(
        MethodResult(
            r.key,
            r.label,
            None if r.policy is None else to_policy(r.policy, rollouts, edges),
            r.measures,
            r.beta,
            r.note,
        )
        for r in comparison.rows
    )
    enumerated = EnumeratedInstance(
        rollouts,
        base,
        instance.model,
        instance.demos,
        instance.alpha,
        instance.anchor,
        instance.beta,
        instance.seed,
        instance.base_name,
        engine="dp",
    )
    return Comparison(
        enumerated, comparison.ks, comparison.rounds, rows, enumerated.tilt_score(), engine="dp"
    )


def check_rollout_count(instance: EngineInstance, limit: int) -> None:
    """Raise ``ValueError`` when one row per rollout would exceed ``limit`` rows."""
    if not isinstance(instance, DPInstance) or instance.log_rollouts <= math.log(limit):
        return
    raise ValueError(
        f"--rollouts writes one row per rollout and {instance.space.name} has "
        f"{count_label(instance.log_rollouts)} (limit --max-rollouts {limit:,}): drop "
        "--rollouts, or use a smaller space or a horizon"
    )
