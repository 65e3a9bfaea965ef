"""``python -m figures``: regenerate every figure (PNG + PDF + the numbers behind it).

Options: ``--out FOLDER`` (default ``figures/out``), ``--quick`` (smaller graphs,
for tests), ``--only NAME ...``, ``--jobs N`` (processes for the sweeps,
default all cores, 1 with ``--quick``).  Missing matplotlib is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from figures import FIGURES

DEFAULT_OUT = Path(__file__).resolve().parent / "out"


def _parser() -> argparse.ArgumentParser:
    from tilt.cli import OneLineParser, non_negative_int, positive_int

    parser = OneLineParser(
        prog="python -m figures", description="Regenerate every figure of the case."
    )
    parser.add_argument(
        "--out", default=str(DEFAULT_OUT), help="output folder (created; default figures/out)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller graphs and fewer points, for tests (about 25 s of CPU time)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(FIGURES),
        metavar="NAME",
        help=f"only these figures ({', '.join(FIGURES)})",
    )
    parser.add_argument(
        "--jobs",
        type=positive_int,
        help="worker processes for the sweeps (default: all cores; 1 with --quick, where "
        "starting workers costs more than the work)",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed of every random draw (the sampled trainer of figure 6; default 0)",
    )
    parser.add_argument("--list", action="store_true", help="list the figures and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.list:
        try:
            for name, module in FIGURES.items():
                print(f"{name:11s} {module}", flush=True)
        except BrokenPipeError:  # | head -1
            from tilt.cli import silence_stdout

            silence_stdout()
        return 0
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(
            "python -m figures: error: matplotlib is not installed; install it with: "
            "pip install 'matplotlib>=3.7'  (or pip install -e '.[plot]')",
            file=sys.stderr,
        )
        return 2
    from tilt.cli import run_main

    if args.jobs is None:
        args.jobs = 1 if args.quick else (os.cpu_count() or 1)

    def body() -> int:
        if not str(args.out).strip():
            raise ValueError("--out is empty: give an output folder")
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {str(out)!r} exists and is not a folder")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"cannot create output folder {str(out)!r}: {exc.strerror}") from None
        summary: dict[str, object] = {"quick": args.quick, "seed": args.seed}
        start_all = time.perf_counter()
        for name in args.only or list(FIGURES):
            start = time.perf_counter()
            # all of a figure's files or none: drawn into a scratch folder, then moved
            with tempfile.TemporaryDirectory(dir=out, prefix=f".{name}.") as scratch:
                result = importlib.import_module(FIGURES[name]).make(
                    Path(scratch), quick=args.quick, jobs=args.jobs, seed=args.seed
                )
                moved = []
                for path in result.files:
                    os.replace(path, out / path.name)
                    moved.append(out / path.name)
                result = dataclasses.replace(result, files=tuple(moved))
            seconds = time.perf_counter() - start
            if result.skipped:
                print(f"{result.name}: skipped: {result.skipped}")
                summary[result.name] = {"skipped": result.skipped}
                continue
            summary[result.name] = result.numbers
            files = ", ".join(p.name for p in result.files)
            print(f"{result.name}: {files} ({seconds:.1f}s)")
        from figures.style import save_json

        path = out / "summary.json"
        if args.only and path.is_file():  # keep the numbers of the other figures (same kind of run)
            try:
                earlier = json.loads(path.read_text())
            except (OSError, ValueError):
                earlier = {}
            if earlier.get("quick") == args.quick and earlier.get("seed") == args.seed:
                summary = {**earlier, **summary}
        save_json(path, summary)
        print(f"wrote figures to {out} in {time.perf_counter() - start_all:.1f}s")
        return 0

    return run_main("python -m figures", body)


if __name__ == "__main__":
    raise SystemExit(main())
