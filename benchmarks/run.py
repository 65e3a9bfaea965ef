"""Benchmarks of tilt: wall time and peak memory of every stage, per named graph.

Each graph runs in its own subprocess (so ``ru_maxrss`` is that graph's peak):
enumerate, base policy, RL (the beta -> 0 optimum and RL matched to SD's
accuracy), the three SD optima with one context model, and every measure
(``tilt.measures.measure`` with k = 1, 8, 64, out-of-distribution pass@k over
every move included).  On graphs small enough it also runs a plain brute-force
reference (:mod:`brute`: recursive-DFS enumeration and explicit Python loops)
in the same subprocess, reports the speed ratio, and checks that both agree.

Usage::

    python benchmarks/run.py                     # grid2..grid6, diamonds, routes; edge(gamma=2)
    python benchmarks/run.py --graphs grid3 grid4 --context kernel --out /tmp/bench

Writes ``results.json``, ``results.csv`` and ``time_vs_rollouts.png`` (unless
``--no-plot``) into ``--out`` (default: this folder).  Timings depend on the
machine and on its load: rerun on a quiet machine before quoting them.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:  # the shared worker launcher, also when loaded by path
    sys.path.append(str(HERE))  # after site-packages: no benchmark shadows a package
from _worker import run_worker  # noqa: E402

DEFAULT_GRAPHS = ["grid2", "grid3", "grid4", "diamonds", "routes", "grid5", "grid6"]
BRUTE_GRAPHS = ("grid2", "grid3", "grid4", "diamonds", "routes")
STRENGTH = {"copy": 0.5, "edge": 2.0, "kernel": 0.5}
STAGES = ("import", "enumerate", "base", "rl", "sd_sequence", "sd_token", "sd_forward", "measures")
KS = (1, 8, 64)


# --------------------------------------------------------------------------
# one graph, inside its own process


def run_one(graph: str, context: str, strength: float, brute: bool) -> dict[str, object]:
    """Time every stage on ``graph``; returns one JSON-ready row."""
    t0 = time.perf_counter()
    from tilt.cli import reuse_freed_memory
    from tilt.context import make_context
    from tilt.measures import measure
    from tilt.objectives import rl_matched, rl_optimum, sd_optimum
    from tilt.policy import base_policy
    from tilt.space import TooLargeError, enumerate_rollouts
    from tilt.tasks.graphs import named_task

    times: dict[str, float | None] = {"import": time.perf_counter() - t0}
    notes: dict[str, str] = {}
    reuse_freed_memory()  # as the CLIs do

    def lap(name: str, start: float) -> float:
        now = time.perf_counter()
        times[name] = now - start
        return now

    t = time.perf_counter()
    space = enumerate_rollouts(named_task(graph))
    t = lap("enumerate", t)
    base = base_policy(space)
    t = lap("base", t)
    model = make_context(context, strength)
    policies = {"base": base}
    policies["rl"] = rl_optimum(base)
    t = lap("rl", t)
    for method in ("sequence", "token", "forward"):
        try:
            policies[f"sd_{method}"] = sd_optimum(base, model, method)
        except TooLargeError as exc:
            notes[f"sd_{method}"] = str(exc)
            times[f"sd_{method}"] = None
            t = time.perf_counter()
            continue
        t = lap(f"sd_{method}", t)
    if "sd_sequence" in policies:
        matched = rl_matched(base, policies["sd_sequence"].accuracy)
        if matched.policy is not None:
            policies["rl_matched"] = matched.policy
    times["rl"] = (times["rl"] or 0.0) + (time.perf_counter() - t)
    t = time.perf_counter()
    accuracy = {key: measure(q, base, KS).accuracy for key, q in policies.items()}
    lap("measures", t)
    total = sum(v for v in times.values() if v is not None)
    row: dict[str, object] = {
        "graph": graph,
        "context": model.describe(),
        "rollouts": space.n_rollouts,
        "correct": space.n_correct,
        "prefixes": space.n_prefixes,
        "moves": space.n_moves,
        "max_depth": space.max_depth,
        "times": times,
        "total": total,
        "notes": notes,
        "accuracy": accuracy,
    }
    if brute:
        sys.path.insert(0, str(HERE))
        import brute as reference

        t = time.perf_counter()
        ref = reference.solve(space.task, context, strength)
        row["brute_time"] = time.perf_counter() - t
        fast_time = sum(
            times[k] or 0.0 for k in ("enumerate", "base", "rl", "sd_sequence", "sd_forward")
        )
        row["brute_compared_time"] = fast_time
        row["speedup"] = row["brute_time"] / fast_time if fast_time > 0 else None
        row["brute_max_error"] = _agreement(space, policies, ref)
    import resource

    row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return row


def _agreement(space, policies, ref) -> float:  # type: ignore[no-untyped-def]
    """Largest ``|log q - log q_ref|`` over rollouts and methods (``-inf`` must match)."""
    import numpy as np

    paths = space.path_labels()
    worst = 0.0
    for key in ("base", "rl", "sd_sequence", "sd_forward"):
        if key not in policies:
            continue
        ours = policies[key].log_prob
        theirs = np.array([ref[key].get(p, -math.inf) for p in paths])
        if len(ref[key]) != len(paths) or not np.array_equal(
            np.isfinite(ours), np.isfinite(theirs)
        ):
            return math.inf
        finite = np.isfinite(ours)
        worst = max(worst, float(np.abs(ours[finite] - theirs[finite]).max(initial=0.0)))
    return worst


# --------------------------------------------------------------------------
# driver


def _subprocess_row(graph: str, context: str, strength: float, brute: bool) -> dict[str, object]:
    args = ["--worker", graph, "--context", context, "--strength", repr(strength)]
    row, error = run_worker(__file__, args + (["--brute"] if brute else []))
    return {"graph": graph, "error": error} if error else row  # type: ignore[return-value]


def to_csv(rows: list[dict[str, object]]) -> str:
    """One line per graph: sizes, stage times (s), total, peak memory, brute-force ratio."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = [
        "graph",
        "context",
        "rollouts",
        "correct",
        "prefixes",
        *STAGES,
        "total_s",
        "peak_rss_mib",
        "brute_s",
        "speedup",
        "brute_max_error",
        "notes",
    ]
    writer.writerow(header)
    for r in rows:
        if "error" in r:
            writer.writerow([r["graph"]] + [""] * (len(header) - 2) + [r["error"]])
            continue
        times = r["times"]  # type: ignore[index]
        cells = [r["graph"], r["context"], r["rollouts"], r["correct"], r["prefixes"]]
        cells += ["skipped" if times.get(s) is None else f"{times[s]:.4f}" for s in STAGES]  # type: ignore[union-attr]
        cells += [f"{r['total']:.4f}", f"{r['peak_rss_mib']:.0f}"]
        if "brute_time" in r:
            cells += [
                f"{r['brute_time']:.4f}",
                f"{r['speedup']:.1f}",
                f"{r['brute_max_error']:.2e}",
            ]
        else:
            cells += ["", "", ""]
        cells.append("; ".join(f"{k}: {v}" for k, v in r["notes"].items()))  # type: ignore[union-attr]
        writer.writerow(cells)
    return buffer.getvalue()


def plot(rows: list[dict[str, object]], path: Path) -> None:
    """Total time and each stage against prefix-tree size, log-log, with a slope-1 guide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = sorted((r for r in rows if "error" not in r), key=lambda r: r["prefixes"])  # type: ignore[arg-type, return-value]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, xkey, xlabel in (
        (axes[0], "rollouts", "rollouts |Y|"),
        (axes[1], "prefixes", "prefix-tree nodes"),
    ):
        xs = [r[xkey] for r in ok]
        compute = [r["total"] - r["times"]["import"] for r in ok]  # type: ignore[index, operator]
        ax.loglog(xs, compute, "o-", color="black", lw=2, label="total without import")
        for stage in ("enumerate", "base", "sd_sequence", "sd_token", "sd_forward", "measures"):
            pts = [(r[xkey], r["times"][stage]) for r in ok if r["times"].get(stage)]  # type: ignore[index, union-attr]
            if pts:
                ax.loglog(*zip(*pts, strict=True), ".--", lw=1, label=stage)
        if ok:
            x_ref, y_ref = xs[-1], compute[-1]
            x_lo = min(xs)
            ax.loglog(
                [x_lo, x_ref],
                [y_ref * x_lo / x_ref, y_ref],
                ":",
                color="grey",
                label="linear (slope 1)",
            )
        ax.set_xlabel(xlabel)
        ax.set_ylabel("wall time (s)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    context = ok[0]["context"] if ok else ""
    fig.suptitle(f"tilt: time per stage, context {context} (one subprocess per graph)")
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)


def _write(path: Path, text: str) -> None:
    from tilt.cli import write_atomic

    write_atomic(path, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--graphs", nargs="+", default=DEFAULT_GRAPHS, help="named graphs (default: all)"
    )
    parser.add_argument(
        "--context", default="edge", choices=sorted(STRENGTH), help="context model (default edge)"
    )
    parser.add_argument(
        "--strength", type=float, help="lam or gamma (default: copy 0.5, edge 2, kernel 0.5)"
    )
    parser.add_argument("--out", default=str(HERE), help="output folder (default: benchmarks/)")
    parser.add_argument(
        "--no-plot", action="store_true", help="skip the plot (no matplotlib needed)"
    )
    parser.add_argument("--no-brute", action="store_true", help="skip the brute-force reference")
    parser.add_argument(
        "--replot", action="store_true", help="redraw the plot from --out/results.json and stop"
    )
    parser.add_argument("--worker", metavar="GRAPH", help=argparse.SUPPRESS)
    parser.add_argument("--brute", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    strength = STRENGTH[args.context] if args.strength is None else args.strength
    try:
        if args.worker:
            print(json.dumps(run_one(args.worker, args.context, strength, args.brute)))
            return 0
        out = Path(args.out)
        if not out.is_dir():
            print(
                f"{parser.prog}: error: output folder {str(out)!r} does not exist", file=sys.stderr
            )
            return 2
        if args.replot:
            plot(
                json.loads((out / "results.json").read_text())["rows"], out / "time_vs_rollouts.png"
            )
            return 0
        rows = []
        for graph in args.graphs:
            brute = graph in BRUTE_GRAPHS and not args.no_brute
            row = _subprocess_row(graph, args.context, strength, brute)
            rows.append(row)
            if "error" in row:
                print(f"{graph}: {row['error']}", file=sys.stderr)
            else:
                extra = (
                    f", brute-force/tilt time ratio {row['speedup']:.1f}"
                    if row.get("speedup")
                    else ""
                )
                _say(
                    f"{graph}: {row['rollouts']:,} rollouts, {row['prefixes']:,} prefixes, "
                    f"{row['total']:.2f} s, peak {row['peak_rss_mib']:.0f} MiB{extra}"
                )
        meta = {
            "command": " ".join(
                ["python benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]
            ),
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "rows": rows,
        }
        _write(out / "results.json", json.dumps(meta, indent=2, allow_nan=False, default=str))
        _write(out / "results.csv", to_csv(rows))
        if not args.no_plot:
            plot(rows, out / "time_vs_rollouts.png")
        return 0 if all("error" not in r for r in rows) else 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


def _say(text: str) -> None:
    """Print a progress line; a closed pipe (``| head -1``) silences the rest, the run goes on."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        from tilt.cli import silence_stdout

        silence_stdout()


if __name__ == "__main__":
    raise SystemExit(main())
