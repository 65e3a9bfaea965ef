"""How fast sampled training reaches the closed form: final TV against the number of samples.

For each objective spec, the sampled trainer (``tilt.train``, the estimators
real trainers use) runs ``steps`` stochastic steps of ``batch`` rollouts from
the base, for several seeds; the row records the final total-variation
distance to the closed form.  With step size ``lr / sqrt(1 + t / 50)`` and the
logits averaged over the second half, the error is the noise of the average:
it should fall like ``1 / sqrt(samples)``, a slope of ``-1/2`` on log-log axes
(:func:`sample_slopes` fits it).  Figure 6's third panel draws it.

``--exact`` prints instead the exact-mode table: the final TV of L-BFGS on
every spec, on grid3 and diamonds, with edge(2) and copy(0.5), own and
reference demonstrations (:func:`exact_table`).

Examples::

    python -m analysis.trainer_convergence --graph grid3 --steps 125 500 2000 --seeds 5
    python -m analysis.trainer_convergence --exact
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from analysis.sweeps import Row, _instance, rows_to_csv, run_tasks
from tilt.cli import OneLineParser, positive_int, run_main, table, write_atomic
from tilt.context import make_context

__all__ = ["SPECS", "convergence_sweep", "sample_slopes", "summary_table", "exact_table", "main"]

SPECS = (
    "rl",
    "sequence",
    "token",
    "forward",
    "token-forward",
    "jsd=0.5",
    "discount=0.5",
    "discount=1",
    "length-weighted",
    "hybrid=2",
)
"""Objectives of the sweep (``rl`` at ``beta = 1``)."""


def _task(
    graph: str,
    spec: str,
    context: str,
    strength: float,
    steps: int,
    batch: int,
    seed: int,
) -> list[Row]:
    from tilt.train import train

    pi0 = _instance(graph, "default", None, 0)
    result = train(
        pi0,
        spec,
        model=make_context(context, strength),
        beta=1.0,
        mode="sampled",
        steps=steps,
        batch=batch,
        seed=seed,
        record_every=steps,
    )
    return [
        {
            "graph": graph,
            "objective": spec,
            "context": context,
            "strength": strength,
            "steps": steps,
            "batch": batch,
            "samples": steps * batch,
            "seed": seed,
            "tv_to_closed_form": result.tv_to_closed_form,
        }
    ]


def convergence_sweep(
    graph: str = "grid3",
    specs: Sequence[str] = SPECS,
    steps: Sequence[int] = (125, 500, 2000),
    batch: int = 64,
    seeds: int = 5,
    context: str = "edge",
    strength: float = 2.0,
    jobs: int | None = None,
    progress: bool = True,
) -> list[Row]:
    """One row per (spec, steps, seed): the final TV of sampled training to the closed form."""
    tasks = [
        (f"{spec} {n} steps seed {seed}", (graph, spec, context, strength, n, batch, seed))
        for spec in specs
        for n in steps
        for seed in range(seeds)
    ]
    return run_tasks(_task, tasks, jobs, progress)


def sample_slopes(rows: Sequence[Row]) -> dict[str, float]:
    """Per spec, the least-squares slope of ``log mean TV`` on ``log samples``."""
    out: dict[str, float] = {}
    for spec in dict.fromkeys(r["objective"] for r in rows):
        points = _means(rows, spec)
        if len(points) < 2:
            out[spec] = math.nan
            continue
        x = np.log([p[0] for p in points])
        y = np.log([p[1] for p in points])
        out[spec] = float(np.polyfit(x, y, 1)[0])
    return out


def _means(rows: Sequence[Row], spec: str) -> list[tuple[int, float]]:
    samples = sorted({r["samples"] for r in rows if r["objective"] == spec})
    return [
        (
            n,
            float(
                np.mean(
                    [
                        r["tv_to_closed_form"]
                        for r in rows
                        if r["objective"] == spec and r["samples"] == n
                    ]
                )
            ),
        )
        for n in samples
    ]


def summary_table(rows: Sequence[Row]) -> str:
    """Mean (and worst) final TV per spec and sample count, and the fitted slope."""
    samples = sorted({r["samples"] for r in rows})
    slopes = sample_slopes(rows)
    body = []
    for spec in dict.fromkeys(r["objective"] for r in rows):
        cells = [spec]
        for n in samples:
            tv = [
                r["tv_to_closed_form"] for r in rows if r["objective"] == spec and r["samples"] == n
            ]
            cells.append(f"{np.mean(tv):.4f} ({np.max(tv):.4f})")
        cells.append(f"{slopes[spec]:.2f}")
        body.append(cells)
    header = ["objective", *(f"{n:,} samples" for n in samples), "slope"]
    return table(header, body)


def exact_table(
    specs: Sequence[str] = SPECS[1:],
    graphs: Sequence[str] = ("grid3", "diamonds"),
    models: Sequence[tuple[str, float]] = (("edge", 2.0), ("copy", 0.5)),
    demos: Sequence[str] = ("own", "reference"),
) -> str:
    """Final TV of exact-mode training (L-BFGS) to the closed form, per spec and instance."""
    from tilt.train import train

    columns = [(g, m, d) for g in graphs for m in models for d in demos]
    body = []
    worst = 0.0
    for spec in specs:
        cells = [spec]
        for graph, (context, strength), demo in columns:
            pi0 = _instance(graph, "default", None, 0)
            result = train(
                pi0, spec, model=make_context(context, strength), demos=demo, record_every=10**6
            )
            worst = max(worst, result.tv_to_closed_form)
            cells.append(f"{result.tv_to_closed_form:.1e}")
        body.append(cells)
    header = ["objective", *(f"{g} {m[0]} {d}" for g, m, d in columns)]
    return table(header, body) + f"\nlargest TV {worst:.1e}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m analysis.trainer_convergence``: print the table (and write the rows)."""
    parser = OneLineParser(
        prog="python -m analysis.trainer_convergence",
        description="Final TV of sampled training to the closed form against the samples.",
    )
    parser.add_argument("--graph", default="grid3", help="named graph (default grid3)")
    parser.add_argument(
        "--objective", nargs="+", default=list(SPECS), metavar="SPEC", help="objective specs"
    )
    parser.add_argument(
        "--steps", type=positive_int, nargs="+", default=[125, 500, 2000], help="step counts"
    )
    parser.add_argument("--batch", type=positive_int, default=64, help="rollouts per step")
    parser.add_argument("--seeds", type=positive_int, default=5, help="seeds 0..N-1 (default 5)")
    parser.add_argument("--jobs", type=positive_int, help="worker processes (default all cores)")
    parser.add_argument("--out", help="also write the rows as CSV")
    parser.add_argument(
        "--exact", action="store_true", help="print the exact-mode TV table instead"
    )
    args = parser.parse_args(argv)

    def body() -> int:
        from tilt.train import parse_train_objective

        for spec in args.objective:
            parse_train_objective(spec)
        if args.exact:
            print(exact_table([s for s in args.objective if s != "rl"]))
            return 0
        rows = convergence_sweep(
            args.graph, args.objective, args.steps, args.batch, args.seeds, jobs=args.jobs
        )
        if args.out:
            write_atomic(args.out, rows_to_csv(rows))
        print(
            f"{args.graph}, edge(gamma=2), own demonstrations, batch {args.batch}, "
            f"seeds 0-{args.seeds - 1}: mean (worst) TV to the closed form"
        )
        print(summary_table(rows))
        return 0

    return run_main("python -m analysis.trainer_convergence", body)


if __name__ == "__main__":
    raise SystemExit(main())
