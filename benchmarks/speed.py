"""The speed targets as ratios measured in one run: every command against a bare pass.

The *bare pass* is the least any exact method must do on a prefix tree: a fresh
process that enumerates the space (``tilt.space.enumerate_rollouts``), then takes one
log-softmax over every sibling group and one cumulative sum down the tree, in plain
numpy (``reduceat`` and one gather per depth; no tilt kernel, so that speeding tilt up
does not speed the yardstick up).  Each target command runs as its own process,
alternating with its reference (the bare pass, or the other command of a pair), so a
change in the machine's load hits both alike; the ratios are of medians, with each
run's own ratio kept to show the spread.  Wall time, CPU time (user + sys) and peak
memory (``ru_maxrss``) come from ``os.wait4``.  Commands run with Python's bytecode cache
(``PYTHONDONTWRITEBYTECODE`` is dropped), as an installed package runs.

Usage::

    python benchmarks/speed.py                       # every target, 3 repeats
    python benchmarks/speed.py --only grid6 --repeats 5
    python benchmarks/speed.py --against /tmp/old    # also each command on an older tree

``--against DIR`` runs every command of the list in the tree ``DIR`` too (a checkout or
``git archive`` of an older commit), alternating with this tree: ``old/new`` ratios.
Writes ``results.json`` into ``--out`` (default ``benchmarks/speed/``), with the load
average before and after.  Timings depend on the machine and its load: compare ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

COMPARE = [sys.executable, "-m", "tilt.compare"]
EXTRA = ["--sd", "token-forward", "--sd", "jsd=0.5", "--sd", "discount=0.5"]

PAIRS = {
    # name: (reference, command, target ratio or None, target seconds or None)
    "grid6": (["bare", "grid6"], COMPARE + ["--graph", "grid6"], 2.5, None),
    "grid6-extra": (
        COMPARE + ["--graph", "grid6"],
        COMPARE + ["--graph", "grid6", *EXTRA],
        1.25,
        None,
    ),
    "lattice": (
        [sys.executable, "-c", "import tilt.compare"],
        COMPARE + ["--graph", "lattice:V=64,L=1000"],
        None,
        3.0,
    ),
    "grid5-kernel": (
        COMPARE + ["--graph", "grid5"],
        COMPARE + ["--graph", "grid5", "--context", "kernel"],
        2.0,
        None,
    ),
    "grid3-jit": (
        COMPARE + ["--graph", "grid3", "--no-jit-env"],
        COMPARE + ["--graph", "grid3"],
        None,
        None,
    ),
}
"""What each target compares.  ``bare`` is the bare pass on the named graph (the lattice, whose
10^1806 rollouts no enumeration reaches, is measured against the import of ``tilt.compare``
alone, and its target is in seconds); a command
ending in ``--no-jit-env`` runs with ``TILT_NO_JIT=1`` (grid3-jit: what the compiled
kernels cost a small command, which should be nothing: they load for large inputs only)."""


def bare_pass(graph: str) -> None:
    """Enumerate ``graph``, then one plain-numpy log-softmax over the sibling groups and one
    cumulative sum down the tree (what every exact method must do at least once)."""
    import numpy as np

    from tilt.space import enumerate_rollouts
    from tilt.tasks import resolve_task

    space = enumerate_rollouts(resolve_task(graph, None, None, None, False))
    logits = space.move_logit[space.move[1:]]
    internal = np.flatnonzero(space.child_count > 0)
    starts = space.child_start[internal] - 1
    counts = space.child_count[internal]
    peak = np.maximum.reduceat(logits, starts)
    shifted = logits - np.repeat(peak, counts)
    np.exp(shifted, out=shifted)
    norm = np.log(np.add.reduceat(shifted, starts)) + peak
    log_cond = np.zeros(space.n_prefixes)
    log_cond[1:] = logits - np.repeat(norm, counts)
    for d in range(1, space.max_depth + 1):
        lo, hi = space.level_start[d], space.level_start[d + 1]
        log_cond[lo:hi] += log_cond[space.parent[lo:hi]]
    total = float(np.exp(log_cond[space.rollout_prefix]).sum())
    if abs(total - 1.0) > 1e-9:
        raise RuntimeError(f"the bare pass is not normalised: {total!r}")


def run_command(argv: list[str], tree: Path) -> dict[str, float]:
    """Run one command in ``tree`` (output discarded): wall, CPU seconds and peak MiB."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)
    # Python's bytecode cache on, as in an installed package (some sandboxes turn it off, and
    # then every run compiles tilt's sources again: 0.1 to 0.2 s of each lattice run)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    argv = list(argv)
    if argv[-1] == "--no-jit-env":
        argv.pop()
        env["TILT_NO_JIT"] = "1"
    if argv[0] == "bare":
        argv = [sys.executable, str(Path(__file__).resolve()), "--bare", argv[1]]
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if status != 0:
            errors.seek(0)
            tail = errors.read().decode(errors="replace").strip()[-500:]
            raise RuntimeError(f"{' '.join(argv)} failed: {tail}")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "user_s": usage.ru_utime,
        "sys_s": usage.ru_stime,
        "peak_mib": usage.ru_maxrss / 1024,
    }


def _label(argv: list[str]) -> str:
    if argv[0] == "bare":
        return f"bare pass on {argv[1]}"
    if argv[1] == "-c":
        return f"python -c {argv[2]!r}"
    words = [a for a in argv[1:] if a != "--no-jit-env"]
    return " ".join(["python", *words]) + (" (TILT_NO_JIT=1)" if argv[-1] == "--no-jit-env" else "")


def measure_pair(
    reference: list[str], command: list[str], repeats: int, ref_tree: Path, tree: Path
) -> dict[str, object]:
    """Alternate ``reference`` and ``command`` ``repeats`` times; medians, ratios, spread."""
    runs: dict[str, list[dict[str, float]]] = {"reference": [], "command": []}
    for i in range(repeats):
        order = [("reference", reference, ref_tree), ("command", command, tree)]
        if i % 2:  # alternate which goes first
            order.reverse()
        for name, argv, where in order:
            runs[name].append(run_command(argv, where))
    median = {
        name: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        for name, rows in runs.items()
    }
    per_run = {
        key: [c[key] / r[key] for r, c in zip(runs["reference"], runs["command"], strict=True)]
        for key in ("wall_s", "cpu_s")
    }
    return {
        "reference": _label(reference),
        "command": _label(command),
        "runs": runs,
        "median": median,
        "ratio": {
            key: median["command"][key] / median["reference"][key] for key in median["command"]
        },
        "ratio_per_run": per_run,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(PAIRS), help="targets to run")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command (default 3)")
    parser.add_argument("--out", default=str(HERE / "speed"), help="output folder")
    parser.add_argument(
        "--against", metavar="DIR", help="an older tree: also time each command there (old/new)"
    )
    parser.add_argument("--bare", metavar="GRAPH", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare:
        bare_pass(args.bare)
        return 0
    names = args.only or list(PAIRS)
    repeats = max(1, args.repeats)
    result: dict[str, object] = {
        "command": " ".join(["python benchmarks/speed.py", *(argv or sys.argv[1:])]),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "targets": {},
    }
    for name in names:
        reference, command, ratio_target, seconds_target = PAIRS[name]
        row = measure_pair(reference, command, repeats, ROOT, ROOT)
        row["target_ratio"], row["target_seconds"] = ratio_target, seconds_target
        result["targets"][name] = row  # type: ignore[index]
        r, m = row["ratio"], row["median"]
        print(
            f"{name:13s} ratio wall {r['wall_s']:.2f}x cpu {r['cpu_s']:.2f}x "  # type: ignore[index]
            f"(per run {', '.join(f'{x:.2f}' for x in row['ratio_per_run']['cpu_s'])})  "  # type: ignore[index]
            f"command {m['command']['wall_s']:.2f} s wall, {m['command']['cpu_s']:.2f} s cpu, "  # type: ignore[index]
            f"{m['command']['peak_mib']:.0f} MiB; reference {m['reference']['wall_s']:.2f} s, "  # type: ignore[index]
            f"{m['reference']['cpu_s']:.2f} s cpu, {m['reference']['peak_mib']:.0f} MiB",  # type: ignore[index]
            flush=True,
        )
    if args.against:
        old = Path(args.against).resolve()
        against: dict[str, object] = {}
        for name in names:
            command = PAIRS[name][1]
            row = measure_pair(command, command, repeats, old, ROOT)
            against[name] = row
            r, m = row["ratio"], row["median"]
            print(
                f"{name:13s} new/old wall {r['wall_s']:.2f}x cpu {r['cpu_s']:.2f}x peak "  # type: ignore[index]
                f"{r['peak_mib']:.2f}x  new {m['command']['wall_s']:.2f} s "  # type: ignore[index]
                f"{m['command']['peak_mib']:.0f} MiB, old {m['reference']['wall_s']:.2f} s "  # type: ignore[index]
                f"{m['reference']['peak_mib']:.0f} MiB",  # type: ignore[index]
                flush=True,
            )
        result["against"] = {"tree": str(old), "targets": against}
    result["load_average_after"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
