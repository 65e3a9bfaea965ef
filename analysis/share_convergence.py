"""How fast sampled training of the shared student reaches its target: final TV against samples.

For each feature map and objective, the sampled shared trainer
(:func:`tilt.share._sampled.train_sampled`, the tabular sampled estimators
pulled back through the feature matrices) runs ``steps`` steps of ``batch``
rollouts per training prompt, for several seeds, on the training prompts of a
suite; the row records the mean over those prompts of the final total
variation to the target:

* ``prefix`` features (no sharing): each prompt's tabular closed form;
* shared features (``edge``, ``closer``): the exact shared optimum, L-BFGS on
  the exact objective (:func:`tilt.share.train_shared`, frozen teacher; only
  for the objectives exact mode has).

``samples`` is ``steps * batch`` per training prompt.  With step size
``lr / sqrt(1 + t / 50)`` and the parameters averaged over the second half the
error should fall like ``1 / sqrt(samples)`` (:func:`sample_slopes` of
:mod:`analysis.trainer_convergence` fits the slope).

Example::

    python -m analysis.share_convergence --steps 125 500 2000 --seeds 3 --jobs 1
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from analysis.sweeps import Row, rows_to_csv, run_tasks
from analysis.trainer_convergence import summary_table
from tilt.cli import OneLineParser, check_output_file, positive_int, run_main, write_atomic

__all__ = ["SPECS", "FEATURE_MAPS", "share_convergence_sweep", "main"]

SPECS = ("rl", "sequence", "token", "token-forward")
"""Objectives of the sweep (``rl`` at ``beta = 1``): those exact shared mode has."""

FEATURE_MAPS = ("prefix", "edge")
"""Feature maps of the sweep."""

DEFAULT_SUITE = "docs/examples/grid3_suite.json"
"""grid3 to (2, 2) from each other node; the ``region`` split trains 6 prompts."""


def _setup(suite_name: str, features: str) -> tuple[object, object, np.ndarray]:
    from tilt.policy import base_policy
    from tilt.share import SharedStudent, make_features, share_suite, split_suite
    from tilt.space import enumerate_rollouts

    suite = share_suite(suite_name)
    train, _ = split_suite(suite, "region")
    spaces = [enumerate_rollouts(p.task) for p in suite.prompts]
    bases = [base_policy(s, p.base, p.seed) for s, p in zip(spaces, suite.prompts, strict=True)]
    student = SharedStudent(spaces, make_features(features, spaces, bases))
    return student, tuple(student.policies(student.features.initial)), train


def _task(
    suite_name: str, features: str, spec: str, steps: int, batch: int, seed: int
) -> list[Row]:
    from tilt.context import make_context
    from tilt.share import SharedStudent, ShareObjective, train_shared
    from tilt.share._sampled import SampledObjective, mean_total_variation, train_sampled

    student, initial, train = _setup(suite_name, features)
    assert isinstance(student, SharedStudent)
    assert isinstance(initial, tuple)
    model = make_context("edge", 2.0)
    objective = SampledObjective(spec, initial, model, beta=1.0)
    if features == "prefix":
        reference = objective.tabular_optima(train)
    else:
        exact = ShareObjective(spec, initial, model, beta=1.0)
        reference = student.policies(train_shared(student, exact, train, steps=3000).theta, train)
    run = train_sampled(
        student, objective, train, steps=steps, batch=batch, seed=seed, record_every=steps
    )
    return [
        {
            "suite": suite_name,
            "features": features,
            "objective": f"{features} {spec}",
            "steps": steps,
            "batch": batch,
            "samples": steps * batch,
            "seed": seed,
            "tv_to_closed_form": mean_total_variation(student, run.theta, train, reference),
        }
    ]


def share_convergence_sweep(
    suite: str = DEFAULT_SUITE,
    features: Sequence[str] = FEATURE_MAPS,
    specs: Sequence[str] = SPECS,
    steps: Sequence[int] = (125, 500, 2000),
    batch: int = 64,
    seeds: int = 3,
    jobs: int | None = None,
    progress: bool = True,
) -> list[Row]:
    """One row per (features, spec, steps, seed): the final mean TV to the target."""
    tasks = [
        (f"{f} {spec} {n} steps seed {seed}", (suite, f, spec, n, batch, seed))
        for f in features
        for spec in specs
        for n in steps
        for seed in range(seeds)
    ]
    return run_tasks(_task, tasks, jobs, progress)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m analysis.share_convergence``: print the table (and write the rows)."""
    parser = OneLineParser(
        prog="python -m analysis.share_convergence",
        description="Final TV of sampled shared training to its target against the samples.",
    )
    parser.add_argument("--suite", default=DEFAULT_SUITE, help=f"suite (default {DEFAULT_SUITE})")
    parser.add_argument(
        "--features", nargs="+", default=list(FEATURE_MAPS), help="feature maps (prefix, edge)"
    )
    parser.add_argument(
        "--objective", nargs="+", default=list(SPECS), metavar="SPEC", help="objective specs"
    )
    parser.add_argument(
        "--steps", type=positive_int, nargs="+", default=[125, 500, 2000], help="step counts"
    )
    parser.add_argument("--batch", type=positive_int, default=64, help="rollouts per prompt/step")
    parser.add_argument("--seeds", type=positive_int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--jobs", type=positive_int, help="worker processes (default all cores)")
    parser.add_argument("--out", help="also write the rows as CSV")
    args = parser.parse_args(argv)

    def body() -> int:
        from tilt.share import FEATURES
        from tilt.train import parse_train_objective

        for spec in args.objective:
            parse_train_objective(spec)
        for f in args.features:
            if f not in FEATURES:
                raise ValueError(f"unknown feature map {f!r}: choose one of {', '.join(FEATURES)}")
        if args.out:
            check_output_file(args.out)
        rows = share_convergence_sweep(
            args.suite, args.features, args.objective, args.steps, args.batch, args.seeds, args.jobs
        )
        if args.out:
            write_atomic(args.out, rows_to_csv(rows))
        print(
            f"{args.suite}, region split (training prompts), edge(gamma=2), own demonstrations, "
            f"batch {args.batch} per prompt, seeds 0-{args.seeds - 1}: mean (worst) TV to the "
            "tabular closed form (prefix) or the exact shared optimum (edge)"
        )
        print(summary_table(rows))
        return 0

    return run_main("python -m analysis.share_convergence", body)


if __name__ == "__main__":
    raise SystemExit(main())
