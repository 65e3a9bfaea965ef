"""A comparison as text, as JSON, and as one CSV row per rollout."""

from __future__ import annotations

import csv
import io
import math
import re

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
    "LEGEND",
    "format_table",
    "format_strategies",
    "as_json",
    "rollouts_csv",
    "on_rollouts",
    "check_rollout_count",
]


LEGEND = (
    ("accuracy", "q(C), the probability of a correct rollout"),
    ("H(C) nats", "entropy of q over the correct rollouts, q(y | C)"),
    ("eff. #C", "exp(H(C)): the effective number of correct rollouts"),
    (
        "gap slope",
        "least-squares slope of log q(y) on log pi0(y) over the correct rollouts "
        "(1: every ratio kept; above 1: the gaps widened)",
    ),
    ("w. slope", "the same slope, each rollout weighted by pi0(y)"),
    (
        "widening",
        "pi0(y) pi0(y')-weighted share of correct pairs with pi0(y) > pi0(y') whose gap grows",
    ),
    ("distortion", "max - min over correct y of log q(y) - log pi0(y) (0: every ratio kept)"),
    ("pass@k", "1 - (1 - q(C))^k: some correct rollout among k samples"),
    ("distinct@k", "expected number of different correct rollouts among k samples"),
    (
        "ood",
        "one move blocked at a time, over the moves some correct rollout uses: blocked = fail "
        "(rollouts through it fail) or re-route (the policy renormalised without it); "
        "mean and worst over the moves",
    ),
)
"""Every column of :func:`format_table`, in words (``--explain``)."""


def format_table(comparison: Comparison, ood_detail: bool = False, explain: bool = False) -> str:
    """The human-readable report: a header line, the shape and pass@k tables, and OOD.

    By default the out-of-distribution block is one row per method at the
    smallest ``k`` (mean and worst over blocked moves, both readings);
    ``ood_detail`` prints every ``k``; ``explain`` adds :data:`LEGEND`.  Every
    ``n/a`` is followed by a line that says why.
    """
    c = comparison
    lines = [c.instance.header() + (f"; rounds {c.rounds}" if c.rounds != 1 else "")]
    shape_rows: list[list[str]] = []
    k_rows: list[list[str]] = []
    for r in c.rows:
        m = r.measures
        beta = "" if r.beta is None else ("inf" if math.isinf(r.beta) else f"{r.beta:.4g}")
        if m is None:
            shape_rows.append([r.label, beta] + ["--"] * len(SHAPE_HEADER))
            k_rows.append([r.label] + ["--"] * (2 * len(c.ks)))
            continue
        shape_rows.append([r.label, beta, *shape_cells(m)])
        k_rows.append(
            [r.label]
            + [fmt(m.pass_at_k[k]) for k in c.ks]
            + [fmt(m.distinct_at_k[k], 2) for k in c.ks]
        )
    lines += ["", table(["method", "beta", *SHAPE_HEADER], shape_rows)]
    header = ["method"] + [f"pass@{k}" for k in c.ks] + [f"distinct@{k}" for k in c.ks]
    lines += ["", table(header, k_rows), "", *_ood_block(c, ood_detail)]
    if c.strategies is not None:
        lines += ["", format_strategies(c)]
    notes = [*_matched_notes(c), *_missing_notes(c)]
    notes += [f"{r.label}: {r.note}" for r in c.rows if r.note]
    if notes:
        lines += ["", *notes]
    if explain:
        width = max(len(name) for name, _ in LEGEND)
        lines += ["", "columns:", *(f"  {name:{width}s}  {text}" for name, text in LEGEND)]
    else:
        lines += ["", "(--explain: what each column means)"]
    return "\n".join(lines)


def _ood_block(c: Comparison, detail: bool) -> list[str]:
    """The OOD rows: every ``k`` (``detail``) or the smallest one."""
    ks = c.ks if detail else c.ks[:1]
    moves = next((m.ood[ks[0]].n_moves for r in c.rows if (m := r.measures)), 0)
    head = (
        f"ood pass@k: one of the {moves} moves that correct rollouts use is blocked at a time; "
        "mean and worst over those moves\n"
        f"  fail: {READING_LABELS['fail']} (rollouts through it fail); "
        f"reroute: {READING_LABELS['reroute']} (the policy renormalised without it)"
    )
    if not detail and len(c.ks) > 1:
        head += "; --ood-detail: every k"
    rows = []
    for r in c.rows:
        m = r.measures
        if m is None:
            rows.append([r.label] + ["--"] * (4 * len(ks)))
            continue
        rows.append(
            [r.label]
            + [fmt(m.ood[k].mean) for k in ks]
            + [fmt(m.ood_reroute[k].mean) for k in ks]
            + [fmt(m.ood[k].worst) for k in ks]
            + [fmt(m.ood_reroute[k].worst) for k in ks]
        )
    header = (
        ["method"]
        + [f"fail mean@{k}" for k in ks]
        + [f"reroute mean@{k}" for k in ks]
        + [f"fail worst@{k}" for k in ks]
        + [f"reroute worst@{k}" for k in ks]
    )
    return [head, table(header, rows)]


def _matched_notes(c: Comparison) -> list[str]:
    """Which SD row RL @ SD acc is matched to, said plainly."""
    matched = next((r for r in c.rows if r.key == "rl_matched"), None)
    target = next((r for r in c.rows if r.objective is not None and r.measures is not None), None)
    if matched is None or matched.measures is None or target is None or target.measures is None:
        return []
    others = [r.label for r in c.rows if r.objective is not None and r is not target]
    return [
        f"RL @ SD acc: RL at the beta where its accuracy equals {target.label}'s "
        f"({target.measures.accuracy:.4f})"
        + ("; the other SD rows are not matched to it" if others else "")
    ]


def _missing_notes(c: Comparison) -> list[str]:
    """Why a measure is n/a, once per reason."""
    notes: list[str] = []
    measured = [(r, r.measures) for r in c.rows if r.measures is not None]
    dp = c.engine == "dp"
    if dp and any(math.isnan(m.widening_fraction) for _, m in measured):
        notes.append(
            "widening n/a: the DP engine does not compute it (its pairs are not enumerated); "
            "--engine enumerate computes it on a space that fits --max-rollouts"
        )
    base = next((m for r, m in measured if r.key == "base"), None)
    if base is not None and math.isnan(base.gap_slope):
        what = "gap slopes" + ("" if dp else " and widening")
        notes.append(
            f"{what} n/a: every correct rollout has the same base probability (or fewer than "
            "two are correct), so a slope on log pi0 and pairs ordered by pi0 are undefined"
        )
        return notes
    slopes = [r.label for r, m in measured if math.isnan(m.gap_slope)]
    if slopes:
        notes.append(
            f"gap slopes n/a for {', '.join(slopes)}: fewer than two correct rollouts keep mass"
        )
    widening = [r.label for r, m in measured if not dp and math.isnan(m.widening_fraction)]
    if widening:
        notes.append(
            f"widening n/a for {', '.join(widening)}: no correct pair with different base "
            "probabilities keeps mass"
        )
    return notes


def format_strategies(comparison: Comparison) -> str:
    """The strategy table: shares of the correct mass, entropy, effective number, distinct@k."""
    c = comparison
    assert c.strategies is not None
    names = list(c.strategies.names)
    shown = names if len(names) <= 8 else names[:8]
    readable = _readable_strategies(c.strategies.name, shown)
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
        + [f"share {n}" for n in readable]
        + ["H(strat)", "eff. #strat"]
        + [f"strat@{k}" for k in c.ks]
    )
    head = (
        f"strategies ({c.strategies.name}): {len(names)} among the correct rollouts"
        + ("" if len(names) == len(shown) else f"; shares of the first {len(shown)} shown")
        + "; strat@k = expected distinct strategies in k samples"
    )
    return head + "\n" + table(header, rows)


def _readable_strategies(name: str, names: list[str]) -> list[str]:
    """Strategy names for a table: a token lattice's first node ``1:v/a`` is ``token v``."""
    tokens = [re.fullmatch(r"1:(\d+)/\d+", n) for n in names]
    if name == "first-move" and names and all(tokens):
        return [f"token {m.group(1)}" for m in tokens if m]
    return names


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
