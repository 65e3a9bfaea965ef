"""What extra SD rows cost in ``tilt.compare``: the command with and without them, run in turn.

The target: ``python -m tilt.compare --graph grid6`` with ``--sd
token-forward --sd jsd=0.5 --sd discount=0.5`` added stay within 1.5x of the
run without them.  This runs both commands as subprocesses, alternating (so a
change in the machine's load hits both alike), ``--repeats`` times each, and
reports the median wall time, CPU time and peak memory (``ru_maxrss`` of each
process, from ``os.wait4``) of each and their ratio.

Usage::

    python benchmarks/extra_rows.py                          # grid6, 3 repeats
    python benchmarks/extra_rows.py --graph grid5 --repeats 5 --sd jsd=0.5

Writes ``results.json`` into ``--out`` (default ``benchmarks/extra_rows/``).
``--stages`` adds one more run of the command with the rows, in a subprocess that
times each SD row's fixed point and each row's measures (``"stages"`` in the JSON).
Timings depend on the machine and on its load (the load average is recorded):
rerun on a quiet machine before quoting them.
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
if str(HERE) not in sys.path:  # the shared worker launcher, also when loaded by path
    sys.path.append(str(HERE))  # after site-packages: no benchmark shadows a package
from _worker import run_worker  # noqa: E402

DEFAULT_SD = ("token-forward", "jsd=0.5", "discount=0.5")


def run_command(argv: list[str]) -> dict[str, float]:
    """Run ``argv`` (output discarded); wall, user and sys seconds and peak MiB."""
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if status != 0:
            errors.seek(0)
            tail = errors.read().decode(errors="replace").strip()[-500:]
            raise RuntimeError(f"{' '.join(argv)} failed: {tail}")
    return {
        "wall_s": wall,
        "user_s": usage.ru_utime,
        "sys_s": usage.ru_stime,
        "peak_mib": usage.ru_maxrss / 1024,  # kilobytes on Linux
    }


def measure(graph: str, specs: list[str], repeats: int) -> dict[str, object]:
    """Alternate the base command and the one with ``--sd`` rows; medians and ratios."""
    base = [sys.executable, "-m", "tilt.compare", "--graph", graph]
    extra = base + [arg for spec in specs for arg in ("--sd", spec)]
    runs: dict[str, list[dict[str, float]]] = {"base": [], "extra": []}
    for _ in range(repeats):
        runs["base"].append(run_command(base))
        runs["extra"].append(run_command(extra))
    median = {
        name: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        for name, rows in runs.items()
    }
    return {
        "graph": graph,
        "sd": specs,
        "repeats": repeats,
        "load_average": os.getloadavg(),
        "commands": {"base": " ".join(base[1:]), "extra": " ".join(extra[1:])},
        "runs": runs,
        "median": median,
        "ratio": {key: median["extra"][key] / median["base"][key] for key in median["base"]},
    }


def stage_times(graph: str, specs: list[str]) -> list[dict[str, object]]:
    """Run the command with ``--sd`` rows in this process: wall seconds of every SD row's
    fixed point and of every row's measures, in order (``tilt.compare``'s steps, timed)."""
    import contextlib
    import io

    from tilt.cli import compare
    from tilt.engines import EnumeratedInstance

    stages: list[dict[str, object]] = []
    measured, optimum = EnumeratedInstance.measure, EnumeratedInstance.sd_optimum

    def timed_measured(self: EnumeratedInstance, *args: object) -> object:
        start = time.perf_counter()
        out = measured(self, *args)  # type: ignore[arg-type]
        last = str(stages[-1]["stage"]) if stages else ""
        row = last.removeprefix("fixed point ") if last.startswith("fixed point") else "an RL row"
        stages.append({"stage": f"measures of {row}", "wall_s": time.perf_counter() - start})
        return out

    def timed_optimum(
        self: EnumeratedInstance, policy: object, objective: object, *args: object
    ) -> object:
        start = time.perf_counter()
        out = optimum(self, policy, objective, *args)  # type: ignore[arg-type]
        label = f"fixed point SD {objective.spec}"  # type: ignore[attr-defined]
        stages.append({"stage": label, "wall_s": time.perf_counter() - start})
        return out

    EnumeratedInstance.measure = timed_measured  # type: ignore[method-assign]
    EnumeratedInstance.sd_optimum = timed_optimum  # type: ignore[method-assign]
    argv = ["--graph", graph] + [arg for spec in specs for arg in ("--sd", spec)]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            compare.main(argv)
    finally:
        EnumeratedInstance.measure, EnumeratedInstance.sd_optimum = measured, optimum  # type: ignore[method-assign]
    return stages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", default="grid6", help="named graph (default grid6)")
    parser.add_argument(
        "--sd",
        action="append",
        metavar="SPEC",
        help="extra row (repeatable; default: token-forward, jsd=0.5, discount=0.5)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command (default 3)")
    parser.add_argument("--out", default=str(HERE / "extra_rows"), help="output folder")
    parser.add_argument(
        "--stages",
        action="store_true",
        help="also time each row's fixed point and measures, in one more run (subprocess)",
    )
    parser.add_argument("--stage-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    specs = list(args.sd or DEFAULT_SD)
    if args.stage_worker:  # the subprocess of --stages: one JSON line
        print(json.dumps(stage_times(args.graph, specs)))
        return 0
    result = measure(args.graph, specs, max(1, args.repeats))
    if args.stages:
        worker = ["--stage-worker", "--graph", args.graph]
        stages, error = run_worker(__file__, worker + [a for s in specs for a in ("--sd", s)])
        if error:
            raise RuntimeError(f"the --stages run failed: {error}")
        result["stages"] = stages
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    for name in ("base", "extra"):
        m = result["median"][name]  # type: ignore[index]
        print(
            f"{name:5s}  wall {m['wall_s']:7.2f} s  user {m['user_s']:7.2f} s  "
            f"sys {m['sys_s']:6.2f} s  peak {m['peak_mib']:8.0f} MiB   {result['commands'][name]}"  # type: ignore[index]
        )
    r = result["ratio"]
    print(f"ratio  wall {r['wall_s']:.2f}x  user {r['user_s']:.2f}x  peak {r['peak_mib']:.2f}x")  # type: ignore[index]
    for stage in result.get("stages", []):  # type: ignore[attr-defined]
        print(f"  {stage['wall_s']:6.2f} s  {stage['stage']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
