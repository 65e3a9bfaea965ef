"""Shared students: RL against ``jsd=0.5`` and ``token-forward`` at matched training pass@1.

For each case (suite, feature map, split; :data:`CASES`) and teacher, with the
context model ``edge(2)`` and own demonstrations:

* ``live`` -- each SD objective trains by gradient steps (size 2, as
  ``python -m tilt.share``) and is measured where its mean training pass@1
  reaches each of :data:`TARGETS` (between two steps); RL is measured at its
  optimum at the ``beta`` that gives the same training pass@1
  (:func:`tilt.share._rl_match.match_rl_beta`), and, for reference, along its
  own gradient run at ``beta = 0.1`` (``rl_match='checkpoint'``);
* ``frozen`` -- optimum against optimum: each SD objective converges (L-BFGS,
  at most :data:`FROZEN_STEPS` iterations; the JSON records how many it took),
  and RL is taken at the ``beta`` whose optimum has the same training pass@1.

Every difference is SD minus RL (by ``beta``) on the *held-out* prompts: mean
pass@1, pass@4, pass@16, pass@64.  ``python -m analysis.share_matched`` prints
the Markdown table of ``docs/sharing.md``; ``--json FILE`` writes every number;
``--quick`` runs one small case.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from tilt.cli import OneLineParser, check_output_file, positive_int, run_main, write_atomic
from tilt.context import make_context
from tilt.share import ShareObjective, run_experiment, share_suite, split_suite, train_shared
from tilt.share._measure import SetMeasures, suite_student
from tilt.share._rl_match import match_rl_beta

__all__ = ["Case", "CASES", "SPECS", "TARGETS", "Row", "matched_rows", "markdown", "main"]

SPECS = ("jsd=0.5", "token-forward")
"""The SD objectives compared with RL."""

TARGETS = (0.6, 0.8, 0.9)
"""Matched mean training pass@1 of the live runs."""

SHOWN_KS = (1, 4, 16, 64)

FROZEN_STEPS = 2000
"""L-BFGS budget of the frozen SD runs."""


@dataclass(frozen=True)
class Case:
    """A suite of :data:`tilt.share.SHARE_SUITES`, a feature map and a split."""

    suite: str
    features: str
    split: str

    @property
    def label(self) -> str:
        return f"{self.suite} / {self.features} / {self.split}"


CASES = (
    Case("grid-holed", "edge", "region"),
    Case("grid-holed", "edge", "random"),
    Case("grid-holed", "edge", "distance"),
    Case("grid-holed-hard", "edge", "region"),
    Case("grid-holed-hard", "edge", "distance"),
    Case("grid-holed", "closer", "region"),
    Case("grid4-targets", "closer", "targets"),
)
"""The suites and splits of ``docs/sharing.md``."""

QUICK = (Case("holed5-corner", "edge", "region"),)


@dataclass(frozen=True)
class Row:
    """One SD objective against RL at one matched training pass@1 (``None``: not reached)."""

    case: str
    teacher: str
    objective: str
    match: float
    rl_beta: float | None
    rl_held: dict[int, float] | None
    sd_held: dict[int, float] | None
    rl_checkpoint_held: dict[int, float] | None
    rl_train_effective: float | None
    sd_train_effective: float | None
    sd_iterations: int | None = None
    """Frozen: the L-BFGS iterations SD took (fewer than :data:`FROZEN_STEPS`: converged)."""


def _passes(measures: SetMeasures | None) -> dict[int, float] | None:
    if measures is None:
        return None
    return {k: measures.mean_pass_at_k[k] for k in SHOWN_KS}


def _live(case: Case, steps: int) -> list[Row]:
    suite = share_suite(case.suite)
    split = split_suite(suite, case.split)
    options = {"model": make_context("edge", 2.0), "teacher": "live", "steps": steps, "lr": 2.0}
    by_beta = run_experiment(
        suite, case.features, split, ["rl", *SPECS], TARGETS, rl_match="beta", **options
    )
    along = run_experiment(suite, case.features, split, ["rl"], TARGETS, **options)
    rl = {c.target: c for c in by_beta.checkpoints if c.objective == "rl"}
    rl_run = {c.target: c for c in along.checkpoints}
    rows = []
    for c in by_beta.checkpoints:
        if c.objective == "rl":
            continue
        r = rl[c.target]
        rows.append(
            Row(
                case.label,
                "live",
                c.objective,
                c.target,
                r.beta,
                _passes(r.held_out),
                _passes(c.held_out),
                _passes(rl_run[c.target].held_out),
                None if r.train is None else r.train.effective_correct,
                None if c.train is None else c.train.effective_correct,
            )
        )
    return rows


def _frozen(case: Case, steps: int) -> list[Row]:
    del steps  # converged: the budget is FROZEN_STEPS
    suite = share_suite(case.suite)
    train, held = split_suite(suite, case.split)
    built = suite_student(suite, case.features)
    model = make_context("edge", 2.0)
    rows = []
    for spec in SPECS:
        objective = ShareObjective(spec, built.initial, model)
        run = train_shared(built.student, objective, train, teacher="frozen", steps=FROZEN_STEPS)
        target = float(run.train_accuracy[-1])
        match = match_rl_beta(built.student, built.initial, train, target)
        sd_train = built.measure(run.theta, train)
        rl_train = None if match is None else built.measure(match.theta, train)
        rows.append(
            Row(
                case.label,
                "frozen",
                spec,
                target,
                None if match is None else match.beta,
                None if match is None else _passes(built.measure(match.theta, held)),
                _passes(built.measure(run.theta, held)),
                None,
                None if rl_train is None else rl_train.effective_correct,
                sd_train.effective_correct,
                len(run.thetas) - 1,
            )
        )
    return rows


def matched_rows(
    cases: Sequence[Case] = CASES,
    steps: int = 300,
    progress: Callable[[str], object] | None = None,
) -> list[Row]:
    """Every case, live then frozen (``steps``: the live runs' gradient steps; frozen runs
    converge by L-BFGS in at most :data:`FROZEN_STEPS` iterations)."""
    rows = []
    for case in cases:
        for teacher, run in (("live", _live), ("frozen", _frozen)):
            if progress is not None:
                progress(f"{case.label}, {teacher}")
            rows.extend(run(case, steps))
    return rows


def _delta(row: Row, k: int, reference: dict[int, float] | None) -> str:
    if row.sd_held is None or reference is None:
        return "n/r"
    return f"{row.sd_held[k] - reference[k]:+.3f}"


def markdown(rows: Sequence[Row]) -> str:
    """The table of ``docs/sharing.md`` (``n/r``: the matched pass@1 is not reached)."""
    head = (
        "| case | teacher | SD | training pass@1 | RL beta | held-out pass@1 RL / SD | "
        + " | ".join(f"Δ pass@{k}" for k in SHOWN_KS)
        + " | Δ pass@1 vs RL run | effective correct, training: RL / SD |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        reached = r.sd_held is not None and r.rl_held is not None
        held = f"{r.rl_held[1]:.3f} / {r.sd_held[1]:.3f}" if reached else "n/r"  # type: ignore[index]
        effective = (
            f"{r.rl_train_effective:.1f} / {r.sd_train_effective:.1f}"
            if r.rl_train_effective is not None and r.sd_train_effective is not None
            else "n/r"
        )
        beta = "n/r" if r.rl_beta is None else f"{r.rl_beta:.3g}"
        vs_run = "" if r.teacher == "frozen" else _delta(r, 1, r.rl_checkpoint_held)
        cells = [r.case, r.teacher, r.objective, f"{r.match:.3f}", beta, held]
        cells += [_delta(r, k, r.rl_held) for k in SHOWN_KS] + [vs_run, effective]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _clean(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _body(argv: Sequence[str] | None) -> int:
    parser = OneLineParser(
        prog="python -m analysis.share_matched",
        description="Shared students: RL vs jsd=0.5 and token-forward at matched training pass@1.",
    )
    parser.add_argument("--quick", action="store_true", help="one small case (holed5-corner)")
    parser.add_argument(
        "--steps", type=positive_int, default=300, help="live gradient steps (default 300)"
    )
    parser.add_argument("--json", metavar="FILE", help="write every number as JSON")
    args = parser.parse_args(argv)
    if args.json:
        check_output_file(args.json)
    rows = matched_rows(
        QUICK if args.quick else CASES,
        args.steps,
        progress=lambda text: print(text, file=sys.stderr, flush=True),
    )
    if args.json:
        text = json.dumps([asdict(r) for r in rows], indent=1, default=_clean)
        write_atomic(args.json, text + "\n")
    print(markdown(rows))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m analysis.share_matched``."""
    return run_main("python -m analysis.share_matched", lambda: _body(argv))


if __name__ == "__main__":
    raise SystemExit(main())
