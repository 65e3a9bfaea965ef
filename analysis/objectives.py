"""The verdict on the practitioners' objectives: which keep ratios, which amplify, by how much.

For each SD objective and each trainer preset, on a few instances, at matched
accuracy against RL (RL at the ``beta`` where its accuracy equals the SD
optimum's; RL keeps every ratio, so its shape is the base's):

* gap slope and mass-weighted gap slope of ``log q`` on ``log pi0`` over ``C``
  (RL: exactly 1), and the ``pi0``-mass fraction of correct pairs whose gap
  widens (RL: 0);
* effective number of correct rollouts, SD and RL;
* ``distinct@k`` and worst out-of-distribution ``pass@k`` (blocked = fail), SD and RL.

``python -m analysis.objectives`` prints the Markdown table of ``docs/objectives.md``;
``--csv FILE`` writes every number at full precision.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

from tilt.cli import OneLineParser, positive_int, run_main, write_atomic
from tilt.context import make_context, point_mass, reference_rollout
from tilt.measures import measure
from tilt.objectives import PRESETS, parse_objective, rl_matched
from tilt.policy import base_policy
from tilt.space import enumerate_rollouts
from tilt.tasks.graphs import named_task

__all__ = ["VerdictCase", "CASES", "SPECS", "verdict_rows", "markdown", "main"]

SPECS = (
    "sequence",
    "token",
    "forward",
    "token-forward",
    "jsd=0.5",
    "discount=0.5",
    "length-weighted",
    "hybrid=1",
)
"""The objectives of the verdict, besides the presets."""


@dataclass(frozen=True)
class VerdictCase:
    """One instance of the verdict: a named graph, its base, a context model."""

    graph: str
    base: str
    context: str
    strength: float
    seed: int = 0

    @property
    def label(self) -> str:
        base = self.base + (f"({self.seed})" if self.base == "random" else "")
        return f"{self.graph}, {base} base, {self.context}({self.strength:g})"


CASES = (
    VerdictCase("grid5", "default", "edge", 2.0),
    VerdictCase("routes", "default", "kernel", 2.0),
    VerdictCase("grid4", "random", "copy", 0.5, seed=1),
)
"""grid5 and routes as in the README; grid4 with a random base and ``copy``, where sequence
SD provably widens every gap and the per-token objectives need not (``tests/test_widening.py``)."""


def verdict_rows(cases: Sequence[VerdictCase] = CASES, k: int = 64) -> list[dict[str, object]]:
    """One row per (instance, objective or preset)."""
    rows: list[dict[str, object]] = []
    for case in cases:
        base = base_policy(enumerate_rollouts(named_task(case.graph)), case.base, seed=case.seed)
        model = make_context(case.context, case.strength)
        reference = point_mass(base, reference_rollout(base))
        base_m = measure(base, base, (k,))
        methods = [(spec, spec, "own") for spec in SPECS]
        methods += [(f"preset {p.name}", p.objective, p.demos) for p in PRESETS.values()]
        for name, spec, demos in methods:
            q = parse_objective(spec).optimum(
                base, model, reference if demos == "reference" else "own"
            )
            sd = measure(q, base, (k,))
            rl = rl_matched(base, q.accuracy)
            rl_m = None if rl.policy is None else measure(rl.policy, base, (k,))
            rows.append(
                {
                    "instance": case.label,
                    "method": name,
                    "demos": demos,
                    "accuracy": q.accuracy,
                    "rl_beta": rl.beta,
                    "gap_slope": sd.gap_slope,
                    "weighted_gap_slope": sd.weighted_gap_slope,
                    "widening_fraction": sd.widening_fraction,
                    "effective_correct": sd.effective_correct,
                    "effective_correct_rl": base_m.effective_correct,
                    f"distinct@{k}": sd.distinct_at_k[k],
                    f"distinct@{k}_rl": math.nan if rl_m is None else rl_m.distinct_at_k[k],
                    f"ood@{k}_worst": sd.ood[k].worst,
                    f"ood@{k}_worst_rl": math.nan if rl_m is None else rl_m.ood[k].worst,
                }
            )
    return rows


def _cell(value: object, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(rows: Sequence[dict[str, object]], k: int = 64) -> str:
    """The verdict as Markdown tables, one per instance."""
    out: list[str] = []
    for instance in dict.fromkeys(r["instance"] for r in rows):
        out.append(
            f"**{instance}** (RL at the same accuracy: gap slopes 1, the base's effective number)\n"
        )
        out.append(
            "| objective | demos | accuracy | gap slope | weighted slope | widening "
            "| eff. #C SD / RL "
            f"| distinct@{k} SD / RL | worst ood@{k} SD / RL |"
        )
        out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            if r["instance"] != instance:
                continue
            out.append(
                f"| {r['method']} | {r['demos']} | {_cell(r['accuracy'], 4)} "
                f"| {_cell(r['gap_slope'], 3)} | {_cell(r['weighted_gap_slope'], 3)} "
                f"| {_cell(r['widening_fraction'], 3)} "
                f"| {_cell(r['effective_correct'], 1)} / {_cell(r['effective_correct_rl'], 1)} "
                f"| {_cell(r[f'distinct@{k}'], 2)} / {_cell(r[f'distinct@{k}_rl'], 2)} "
                f"| {_cell(r[f'ood@{k}_worst'], 4)} / {_cell(r[f'ood@{k}_worst_rl'], 4)} |"
            )
        out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the verdict tables; ``--csv FILE`` also writes the full-precision numbers."""
    parser = OneLineParser(prog="python -m analysis.objectives", description=__doc__)
    parser.add_argument("--k", type=positive_int, default=64, help="k of distinct@k, ood@k")
    parser.add_argument("--csv", metavar="FILE", help="write every number to this CSV file")
    args = parser.parse_args(argv)

    def body() -> int:
        rows = verdict_rows(k=args.k)
        if args.csv:
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(
                {key: repr(v) if isinstance(v, float) else v for key, v in r.items()} for r in rows
            )
            write_atomic(args.csv, buffer.getvalue())
        print(markdown(rows, args.k))
        return 0

    return run_main("python -m analysis.objectives", body)


if __name__ == "__main__":
    raise SystemExit(main())
