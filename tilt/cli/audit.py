"""The command line of ``python -m tilt.audit`` (the estimators are in :mod:`tilt.audit`).

Outputs are checked before the file is read; the report is printed only once
everything is computed; ``--plot`` and ``--rollouts`` are written atomically
(``--rollouts`` streams into a temporary file in the target folder, renamed at
the end and removed on any error), so a bad line leaves no partial report.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np

from tilt.audit import (
    AuditResult,
    PromptEstimate,
    RolloutScore,
    audit_prompts,
    stream_estimates,
)
from tilt.cli import (
    OneLineParser,
    check_output_file,
    finite_float,
    fmt,
    non_negative_int,
    run_main,
    write_atomic,
)
from tilt.cli import table as text_table
from tilt.cli._args import Count
from tilt.objectives import PRESETS, objective_forms

__all__ = ["main"]


def _lengths(text: str) -> tuple[int, int]:
    """``MIN:MAX`` as two positive integers, the shortest first (``--lengths``)."""
    low, sep, high = text.partition(":")
    if sep and low.strip().isdigit() and high.strip().isdigit() and len(text) <= 40:
        shortest, longest = int(low), int(high)
        if 1 <= shortest <= longest:
            return shortest, longest
    raise argparse.ArgumentTypeError(
        f"expected MIN:MAX, two positive integers with MIN <= MAX, got {text!r}"
    )


def _parser() -> OneLineParser:
    parser = OneLineParser(
        prog="python -m tilt.audit",
        description="Predict from a self-distillation run's log-probabilities (JSON Lines, "
        "docs/audit.md) whether SD will widen the gaps among its correct rollouts, with "
        "bootstrap intervals over prompts.",
    )
    parser.add_argument("file", metavar="FILE.jsonl", help="the audit log ('-' reads stdin)")
    parser.add_argument(
        "--bootstrap", type=Count(1, 10**6), default=1000, help="bootstrap resamples (default 1000)"
    )
    parser.add_argument(
        "--confidence", type=finite_float, default=0.95, help="interval level (default 0.95)"
    )
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of the bootstrap (default 0)"
    )
    parser.add_argument(
        "--success-threshold",
        type=finite_float,
        default=0.5,
        help="a 'reward' at or above it is correct (SDPO's default 0.5)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--objective",
        metavar="SPEC",
        help=f"the objective whose fixed point to audit: {objective_forms()} (default: the log's "
        "'objective', else sequence)",
    )
    which.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a trainer's default objective and demonstrations (tilt.objectives.PRESETS)",
    )
    parser.add_argument(
        "--lengths",
        type=_lengths,
        metavar="MIN:MAX",
        help="length-weighted: the shortest and the longest rollout the sampler can produce, in "
        "the log's tokens (MIN 1 is always safe), which bound the approximation's error "
        "(default: each prompt's own shortest and longest)",
    )
    parser.add_argument("--per-prompt", action="store_true", help="also a table per prompt")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument(
        "--plot", metavar="FILE.png", help="tilt score against log pi with the fit and its band"
    )
    parser.add_argument(
        "--rollouts", metavar="FILE.csv", help="write every rollout's tilt-score estimate"
    )
    parser.add_argument(
        "--plot-points",
        type=Count(1, 10**7),
        default=5000,
        help="most rollouts drawn in the plot, a seeded uniform subsample (default 5000)",
    )
    return parser


@contextlib.contextmanager
def _lines(path: str) -> Iterator[Iterator[str]]:
    if path == "-":
        if sys.stdin is None or sys.stdin.closed:
            raise ValueError("cannot read '-': standard input is closed; give the log's file name")
        yield sys.stdin  # a file: read_prompts caps the length of its lines
        return
    target = Path(path)
    if not target.exists():
        raise ValueError(f"cannot read {path!r}: no such file")
    if target.is_dir():
        raise ValueError(f"cannot read {path!r}: it is a folder, not a JSON Lines file")
    try:
        handle = target.open(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {path!r}: {exc.strerror}") from None
    with handle:
        yield handle


class _RolloutCsv:
    """Rows streamed into a temporary file beside ``path``; renamed by :meth:`commit`."""

    COLUMNS = ("prompt", "rollout", "correct", "logp", "tilt_score", "tilt_score_centred")

    def __init__(self, path: str) -> None:
        target = Path(path)
        fd, self.tmp = tempfile.mkstemp(
            dir=target.parent if str(target.parent) else ".",
            prefix=f".{target.name}.",
            suffix=".tmp",
        )
        self.path = target
        self.handle: IO[str] = os.fdopen(fd, "w", newline="")
        self.writer = csv.writer(self.handle)
        self.writer.writerow(self.COLUMNS)

    def add(self, records: list[RolloutScore]) -> None:
        for r in records:
            self.writer.writerow(
                [
                    r.prompt,
                    r.rollout,
                    int(r.correct),
                    repr(r.logp),
                    "" if np.isnan(r.tilt_score) else repr(r.tilt_score),
                    "" if np.isnan(r.centred) else repr(r.centred),
                ]
            )

    def commit(self) -> None:
        self.handle.close()
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(self.tmp, 0o666 & ~mask)
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.handle.close()
        Path(self.tmp).unlink(missing_ok=True)


class _Reservoir:
    """A seeded uniform subsample of at most ``size`` points (centred ``log pi``, ``S^``)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seen = size, 0
        self.points = np.empty((size, 2))
        self.rng = np.random.default_rng([seed, 7])

    def add(self, records: list[RolloutScore]) -> None:
        correct = [r for r in records if r.correct and np.isfinite(r.centred)]
        if len(correct) < 3:
            return
        mean_x = float(np.mean([r.logp for r in correct]))
        for r in correct:
            point = (r.logp - mean_x, r.centred)
            if self.seen < self.size:
                self.points[self.seen] = point
            else:
                slot = int(self.rng.integers(0, self.seen + 1))
                if slot < self.size:
                    self.points[slot] = point
            self.seen += 1

    def array(self) -> np.ndarray:
        return self.points[: min(self.seen, self.size)]


def _interval_row(label: str, value: object, reading: str) -> list[str]:
    from tilt.audit import Interval

    if not isinstance(value, Interval):
        return [label, "n/a", "", reading]
    return [label, fmt(value.estimate), f"[{fmt(value.low)}, {fmt(value.high)}]", reading]


def _report(result: AuditResult, source: str, per_prompt: bool) -> str:
    level = f"{100 * result.confidence:g}%"
    spec = result.objective.spec
    lines = [
        f"{source}: {result.n_prompts:,} prompts, {result.n_rollouts:,} rollouts; "
        f"{result.n_usable:,} prompts with >= 2 correct rollouts (SD trains on them), "
        f"{result.n_sloped:,} with a slope",
        f"objective: {result.objective.describe()}",
        f"verdict: {result.verdict()}",
        "",
    ]
    a = result.amplification
    rows = [_interval_row("amplification (sequence)", a, f"gap slope {1 + a.estimate:.4f}")]
    if result.objective.spec != "sequence":
        o = result.objective_amplification
        rows.append(
            _interval_row(
                f"amplification ({spec})",
                o,
                f"gap slope {1 + o.estimate:.4f}" if o is not None else "not estimable",
            )
        )
    if result.objective_bound is not None:
        rows.append(
            _interval_row(
                f"amplification ({spec}, any lengths)",
                result.objective_bound,
                "with the approximation's largest error",
            )
        )
    rows.append(
        _interval_row(
            "amplification (token)",
            result.token_amplification,
            "per-token score on log pi(u|h)"
            if result.token_amplification is not None
            else "no per-token values (or a reference)",
        )
    )
    d, e = result.delta_entropy, result.effective_ratio
    rows.append(
        _interval_row(
            "entropy change, sequence",
            d,
            f"effective number x{e.estimate:.3f} [{e.low:.3f}, {e.high:.3f}]",
        )
    )
    if result.objective.spec != "sequence":
        od, oe = result.objective_delta_entropy, result.objective_effective_ratio
        rows.append(
            _interval_row(
                f"entropy change, {spec}",
                od,
                f"effective number x{oe.estimate:.3f} [{oe.low:.3f}, {oe.high:.3f}]"
                if oe is not None
                else "not estimable",
            )
        )
    rows.append(
        ["median ESS / correct", fmt(result.objective_ess_fraction, 3), "", "weights exp(L^)"]
    )
    lines.append(text_table(["estimate", "value", f"{level} interval", "reading"], rows))
    lines.append(
        f"\nintervals: percentile bootstrap over prompts, {result.bootstrap} resamples, seed "
        f"{result.seed}"
    )
    for check in (*result.slope_checks, *result.entropy_checks):
        if not check.holds:
            lines.append(f"check failed ({check.name}): {check.reading}: {check.fix}")
    lines += [f"warning: {w}" for w in result.warnings]
    if per_prompt:
        lines += ["", _prompt_table(result.prompts, spec)]
    return "\n".join(lines)


def _prompt_table(prompts: Sequence[PromptEstimate], spec: str) -> str:
    rows = [
        [
            e.prompt,
            str(e.n_rollouts),
            str(e.n_correct),
            fmt(e.slope, 3),
            fmt(e.objective_slope, 3),
            fmt(e.delta_entropy, 3),
            fmt(e.ess, 2),
            fmt(e.tilt_spread, 3),
            "" if e.sloped else ("no slope" if e.usable else "skipped"),
        ]
        for e in prompts
    ]
    return text_table(
        ["prompt", "rollouts", "correct", "slope", f"slope {spec}", "dH", "ESS", "sd(S)", "note"],
        rows,
    )


def _as_json(result: AuditResult, source: str, per_prompt: bool) -> dict[str, object]:
    def clean(v: float) -> float | None:
        return v if np.isfinite(v) else None

    out: dict[str, object] = {
        "file": source,
        "prompts": result.n_prompts,
        "rollouts": result.n_rollouts,
        "prompts_with_2_correct": result.n_usable,
        "prompts_with_3_correct": result.n_sloped,
        "amplification": result.amplification.as_dict(),
        "gap_slope": {
            k: (None if v is None else 1 + v) for k, v in result.amplification.as_dict().items()
        },
        "token_amplification": (
            None if result.token_amplification is None else result.token_amplification.as_dict()
        ),
        "delta_entropy": result.delta_entropy.as_dict(),
        "effective_number_ratio": result.effective_ratio.as_dict(),
        "median_ess_fraction": clean(result.median_ess_fraction),
        "confidence": result.confidence,
        "bootstrap": result.bootstrap,
        "seed": result.seed,
        "objective": {
            "spec": result.objective.spec,
            "source": result.objective.source,
            "demos": result.objective.demos,
            "approximation": result.objective.approximation,
            "lengths": None if result.objective.lengths is None else list(result.objective.lengths),
            "amplification_bounded": (
                None if result.objective_bound is None else result.objective_bound.as_dict()
            ),
            "amplification": (
                None
                if result.objective_amplification is None
                else result.objective_amplification.as_dict()
            ),
            "delta_entropy": (
                None
                if result.objective_delta_entropy is None
                else result.objective_delta_entropy.as_dict()
            ),
            "effective_number_ratio": (
                None
                if result.objective_effective_ratio is None
                else result.objective_effective_ratio.as_dict()
            ),
            "median_ess_fraction": clean(result.objective_ess_fraction),
            "checks": [
                {"name": c.name, "holds": c.holds, "reading": c.reading, "fix": c.fix}
                for c in (*result.slope_checks, *result.entropy_checks)
            ],
        },
        "verdict": result.verdict(),
        "warnings": list(result.warnings),
    }
    if per_prompt:
        out["per_prompt"] = [
            {
                "prompt": e.prompt,
                "rollouts": e.n_rollouts,
                "correct": e.n_correct,
                "slope": clean(e.slope),
                "objective_slope": clean(e.objective_slope),
                "delta_entropy": clean(e.delta_entropy),
                "ess": clean(e.ess),
                "tilt_spread": clean(e.tilt_spread),
            }
            for e in result.prompts
        ]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tilt.audit``; returns the exit status."""
    args = _parser().parse_args(argv)

    def body() -> int:
        for path in (args.plot, args.rollouts):
            if path is not None:
                check_output_file(path, inputs=[args.file])
        if args.plot and importlib.util.find_spec("matplotlib") is None:
            raise ValueError(
                "--plot needs matplotlib, which is not installed: pip install 'matplotlib>=3.7' "
                "(or pip install -e '.[plot]')"
            )
        if not 0 < args.confidence < 1:
            raise ValueError(f"--confidence must lie in (0, 1), got {args.confidence!r}")
        if (
            args.rollouts
            and args.plot
            and Path(args.rollouts).resolve() == Path(args.plot).resolve()
        ):
            raise ValueError("--rollouts and --plot name the same file: give two files")
        csv_out = _RolloutCsv(args.rollouts) if args.rollouts else None
        reservoir = _Reservoir(args.plot_points, args.seed) if args.plot else None
        try:
            estimates = []
            with _lines(args.file) as lines:
                objective, stream = stream_estimates(
                    lines, args.success_threshold, args.objective, args.preset, args.lengths
                )
                for estimate, records in stream:
                    estimates.append(estimate)
                    if csv_out is not None:
                        csv_out.add(records)
                    if reservoir is not None:
                        reservoir.add(records)
            result = audit_prompts(estimates, args.bootstrap, args.confidence, args.seed, objective)
            source = "stdin" if args.file == "-" else args.file
            if reservoir is not None:
                from tilt.cli._audit_plot import render

                write_atomic(args.plot, render(reservoir.array(), result, source))
            if csv_out is not None:
                csv_out.commit()
                csv_out = None
        except UnicodeDecodeError:
            raise ValueError(f"cannot read {args.file!r}: it is not UTF-8 text") from None
        finally:
            if csv_out is not None:
                csv_out.discard()
        if args.json:
            print(json.dumps(_as_json(result, source, args.per_prompt), indent=2, allow_nan=False))
        else:
            print(_report(result, source, args.per_prompt))
        return 0

    return run_main("python -m tilt.audit", body, "split the log into smaller files")
