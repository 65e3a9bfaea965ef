"""Benchmarks of the DP engine (``tilt.engines.dp``): wall time and peak memory against the
number of state edges, on token lattices and the catalogue's DAGs.

Each space runs in its own subprocess (so ``ru_maxrss`` is that space's peak):
build the state DAG, the base policy, and the full comparison of
``tilt.compare`` with the DP engine (base, RL beta -> 0, RL at SD's accuracy,
sequence and token SD with edge(gamma=2), every measure with k = 1, 8, 64).
On spaces small enough it also runs the enumeration engine and reports the
largest difference between the two (accuracy and every measure).

Usage::

    python benchmarks/dp.py                        # the default ladder, up to V=64, L=1000
    python benchmarks/dp.py --spaces lattice:V=8,L=16,seed=0 diamonds --out /tmp/bench

Writes ``results.json``, ``results.csv`` and ``time_vs_edges.png`` (log-log, with
the least-squares slope; unless ``--no-plot``) into ``--out`` (default
``benchmarks/dp/``).  Timings depend on the machine and on its load (recorded
in ``results.json``): rerun on a quiet machine before quoting them.
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

DEFAULT_SPACES = [
    "diamonds",
    "routes",
    "lattice:V=8,L=4,seed=0",
    "lattice:V=8,L=16,seed=0",
    "lattice:V=16,L=32,seed=0",
    "lattice:V=32,L=32,seed=0",
    "lattice:V=32,L=128,seed=0",
    "lattice:V=64,L=100,seed=0",
    "lattice:V=64,L=250,seed=0",
    "lattice:V=64,L=500,seed=0",
    "lattice:V=64,L=1000,seed=0",
]
ENUMERATE_BELOW = 100_000
"""Compare with the enumeration engine when the space has fewer rollouts."""
KS = (1, 8, 64)
STAGES = ("import", "build", "base", "compare")


def run_one(name: str, gamma: float) -> dict[str, object]:
    """Time every stage on ``name``; returns one JSON-ready row."""
    t0 = time.perf_counter()
    from tilt.cli import reuse_freed_memory
    from tilt.compare import DEFAULT_VARIANTS, compare
    from tilt.context import EdgeContext
    from tilt.engines import DPInstance, InstanceSpec
    from tilt.engines.dp import acyclic_space, base_policy, lattice_table, log_rollout_count
    from tilt.tasks.graphs import named_task
    from tilt.tasks.lattice import is_lattice_name

    times = {"import": time.perf_counter() - t0}
    reuse_freed_memory()
    t = time.perf_counter()
    space = acyclic_space(lattice_table(name) if is_lattice_name(name) else named_task(name))
    times["build"] = time.perf_counter() - t
    t = time.perf_counter()
    base = base_policy(space)
    _ = base.accuracy
    times["base"] = time.perf_counter() - t
    model = EdgeContext(gamma)
    log_count = log_rollout_count(space)
    instance = DPInstance(
        space, base, model, "own", 0.5, 0.0, 0.0, 0, "default",
        InstanceSpec(graph=name, strength=gamma), log_count,
        log_rollout_count(space, correct_only=True),
    )  # fmt: skip
    t = time.perf_counter()
    rows = compare(instance, KS, variants=DEFAULT_VARIANTS[:2]).rows
    times["compare"] = time.perf_counter() - t
    out: dict[str, object] = {
        "space": name,
        "states": space.n_states,
        "edges": space.n_edges,
        "log10_rollouts": log_count / math.log(10),
        "times": times,
        "total": sum(times.values()),
        "accuracy": {r.key: (r.measures.accuracy if r.measures else None) for r in rows},
    }
    if log_count < math.log(ENUMERATE_BELOW):
        out["enumeration_max_error"] = _agreement(name, rows, model)
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["peak_rss_mib"] = usage.ru_maxrss / 1024.0
    # CPU seconds of the whole worker (enumeration included when it ran): on a loaded
    # machine a steadier figure than wall time
    out["cpu_user_s"], out["cpu_sys_s"] = usage.ru_utime, usage.ru_stime
    return out


def _agreement(name: str, rows, model) -> float:  # type: ignore[no-untyped-def]
    """Largest difference between the DP rows and the enumeration engine's measures."""
    from tilt.engines.dp.rollouts import to_policy
    from tilt.measures import measure
    from tilt.objectives import rl_matched, rl_optimum, sd_optimum
    from tilt.policy import base_policy
    from tilt.space import enumerate_rollouts
    from tilt.tasks.graphs import named_task

    space = enumerate_rollouts(named_task(name))
    base = base_policy(space)
    sd = sd_optimum(base, model, "sequence")
    enum = {
        "base": base,
        "rl": rl_optimum(base),
        "sd": sd,
        "sd_token": sd_optimum(base, model, "token"),
    }
    matched = rl_matched(base, sd.accuracy).policy
    if matched is not None:
        enum["rl_matched"] = matched
    worst = 0.0
    for row in rows:
        if row.key not in enum or row.measures is None:
            continue
        ours = row.measures.as_dict()
        theirs = measure(enum[row.key], base, KS).as_dict()
        for key, value in theirs.items():
            pairs = value.items() if isinstance(value, dict) else [("", value)]
            for k, v in pairs:
                mine = ours[key][k] if isinstance(value, dict) else ours[key]
                if isinstance(v, str) or v is None or mine is None:
                    continue
                worst = max(worst, abs(float(v) - float(mine)) / max(1.0, abs(float(v))))
        lp = to_policy(row.policy, space).log_prob
        finite = lp > -math.inf
        diff = abs(lp[finite] - enum[row.key].log_prob[finite])
        worst = max(worst, float(diff.max(initial=0.0)))
    return worst


# --------------------------------------------------------------------------
# driver


def _subprocess_row(name: str, gamma: float) -> dict[str, object]:
    row, error = run_worker(__file__, ["--worker", name, "--gamma", repr(gamma)])
    return {"space": name, "error": error} if error else row  # type: ignore[return-value]


def fit_slope(rows: list[dict[str, object]], key: str = "compare") -> float:
    """Least-squares slope of log(time) on log(edges) over the rows with 10^5 edges or more."""
    pts = [
        (math.log(r["edges"]), math.log(r["times"][key]))  # type: ignore[index, arg-type]
        for r in rows
        if "error" not in r and r["edges"] >= 100_000  # type: ignore[operator]
    ]
    if len(pts) < 2:
        return math.nan
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx


def to_csv(rows: list[dict[str, object]]) -> str:
    """One line per space: sizes, stage times (s), total, peak memory, agreement."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = [
        "space",
        "states",
        "edges",
        "log10_rollouts",
        *STAGES,
        "total_s",
        "peak_rss_mib",
        "cpu_user_s",
        "cpu_sys_s",
        "enumeration_max_error",
    ]
    writer.writerow(header)
    for r in rows:
        if "error" in r:
            writer.writerow([r["space"]] + [""] * (len(header) - 2) + [r["error"]])
            continue
        times = r["times"]
        cells = [r["space"], r["states"], r["edges"], f"{r['log10_rollouts']:.1f}"]
        cells += [f"{times[s]:.4f}" for s in STAGES]  # type: ignore[index]
        cells += [f"{r['total']:.4f}", f"{r['peak_rss_mib']:.0f}"]
        cells += [f"{r['cpu_user_s']:.2f}", f"{r['cpu_sys_s']:.2f}"]
        error = r.get("enumeration_max_error")
        cells.append("" if error is None else f"{error:.2e}")
        writer.writerow(cells)
    return buffer.getvalue()


def plot(rows: list[dict[str, object]], path: Path) -> None:
    """Compare time and peak memory against state edges, log-log, with fitted slopes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = sorted((r for r in rows if "error" not in r), key=lambda r: r["edges"])  # type: ignore[arg-type, return-value]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    xs = [r["edges"] for r in ok]
    for stage, style in (("compare", "o-"), ("build", "s--"), ("base", "^:")):
        axes[0].loglog(xs, [r["times"][stage] for r in ok], style, label=stage)  # type: ignore[index]
    slope = fit_slope(ok)
    if ok:
        x_ref, y_ref = xs[-1], ok[-1]["times"]["compare"]  # type: ignore[index]
        axes[0].loglog(
            [xs[0], x_ref], [y_ref * xs[0] / x_ref, y_ref], ":", color="grey", label="slope 1"
        )
    axes[0].set_title(f"full DP compare: fitted slope {slope:.2f} (edges >= 1e5)")
    axes[0].set_xlabel("state edges")
    axes[0].set_ylabel("wall time (s)")
    axes[1].loglog(xs, [r["peak_rss_mib"] for r in ok], "o-", color="black")
    axes[1].set_xlabel("state edges")
    axes[1].set_ylabel("peak memory (MiB)")
    axes[1].set_title("peak resident memory")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, metadata={"Software": None})
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/dp.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--spaces", nargs="+", default=DEFAULT_SPACES, help="graph names")
    parser.add_argument("--gamma", type=float, default=2.0, help="edge(gamma) strength (default 2)")
    parser.add_argument(
        "--out", default=str(HERE / "dp"), help="output folder (default: benchmarks/dp)"
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the plot")
    parser.add_argument("--worker", metavar="SPACE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.worker:
            print(json.dumps(run_one(args.worker, args.gamma)))
            return 0
        out = Path(args.out)
        if not out.is_dir():
            print(
                f"{parser.prog}: error: output folder {str(out)!r} does not exist", file=sys.stderr
            )
            return 2
        rows = []
        for name in args.spaces:
            row = _subprocess_row(name, args.gamma)
            rows.append(row)
            if "error" in row:
                print(f"{name}: {row['error']}", file=sys.stderr)
            else:
                print(
                    f"{name}: {row['edges']:,} state edges, 10^{row['log10_rollouts']:.1f} "
                    f"rollouts, compare {row['times']['compare']:.2f} s, "  # type: ignore[index]
                    f"total {row['total']:.2f} s, peak {row['peak_rss_mib']:.0f} MiB",
                    flush=True,
                )
        meta = {
            "command": " ".join(
                ["python benchmarks/dp.py", *(argv if argv is not None else sys.argv[1:])]
            ),
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "fitted_slope_compare_vs_edges": (
                None if math.isnan(fit_slope(rows)) else fit_slope(rows)
            ),
            "rows": rows,
        }
        if str(ROOT) not in sys.path:  # run as a script from anywhere: the repository's tilt
            sys.path.insert(0, str(ROOT))
        from tilt.cli import write_atomic

        write_atomic(out / "results.json", json.dumps(meta, indent=2, allow_nan=False, default=str))
        write_atomic(out / "results.csv", to_csv(rows))
        if not args.no_plot:
            plot(rows, out / "time_vs_edges.png")
        return 0 if all("error" not in r for r in rows) else 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
