"""Each compiled kernel against the numpy path it stands in for, in one process.

On grid6 (18.5 M prefixes; the kernel model's pass on grid5), every step is timed
with the kernels on (``TILT_JIT_MIN_SIZE=0``) and off (``TILT_NO_JIT=1``), in turn,
``--repeats`` times; the figures are CPU seconds of this process (``time.process_time``:
steadier than wall time on a shared machine), the least of the repeats, and the largest
difference between the two results (relative to ``max(1, |value|)``).  The first call
of each kernel (numba's compilation or cache load) is made before the timing.

Usage::

    python benchmarks/jit_kernels.py                 # grid6, 3 repeats
    python benchmarks/jit_kernels.py --graph grid5

Writes ``results.json`` into ``--out`` (default ``benchmarks/jit_kernels/``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _mode(compiled: bool) -> None:
    os.environ.pop("TILT_NO_JIT", None)
    os.environ.pop("TILT_JIT_MIN_SIZE", None)
    if compiled:
        os.environ["TILT_JIT_MIN_SIZE"] = "0"
    else:
        os.environ["TILT_NO_JIT"] = "1"


def _difference(a: object, b: object) -> float:
    x = np.asarray(a if not isinstance(a, tuple) else np.concatenate(a), dtype=float)
    y = np.asarray(b if not isinstance(b, tuple) else np.concatenate(b), dtype=float)
    both = np.isfinite(x) & np.isfinite(y)
    if not np.array_equal(np.isfinite(x), np.isfinite(y)):
        return float("inf")
    scale = np.maximum(1.0, np.abs(y[both]))
    return float((np.abs(x[both] - y[both]) / scale).max(initial=0.0))


def time_step(compute: Callable[[], object], repeats: int) -> dict[str, float]:
    """Least CPU seconds of ``compute`` with the kernels on and off, alternating."""
    results: dict[bool, object] = {}
    for compiled in (True, False):  # warm up: compilation or cache load, first touches
        _mode(compiled)
        results[compiled] = compute()
    cpu: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats):
        for compiled in (True, False):
            _mode(compiled)
            start = time.process_time()
            compute()
            cpu[compiled].append(time.process_time() - start)
    os.environ.pop("TILT_NO_JIT", None)
    os.environ.pop("TILT_JIT_MIN_SIZE", None)
    return {
        "compiled_cpu_s": min(cpu[True]),
        "numpy_cpu_s": min(cpu[False]),
        "speedup": min(cpu[False]) / min(cpu[True]),
        "max_difference": _difference(results[True], results[False]),
    }


_FIRST_CALLS = """
import json, time
start = time.process_time()
import numba  # noqa: F401
after_numba = time.process_time()
import numpy as np
from tilt import _compiled as c
after_module = time.process_time()
start_, count = np.array([1, 3, 0, 0, 0]), np.array([2, 0, 2, 0, 0])
parent, move = np.array([-1, 0, 0, 1, 1], dtype=np.int32), np.zeros(5, dtype=np.int32)
units = np.zeros(4, dtype=np.int32)
c.reroute_pass(start_, count, np.ones(3), units, 1, np.ones(5), np.zeros(0))
c.reroute_pass(start_, count, np.ones(3), units, 1, np.zeros(0), np.ones(3))
c.dominated_total(np.arange(3), np.arange(3), np.ones(3), np.arange(3), 3)
c.subtree_sum(start_, count, np.ones(3))
c.path_sum(parent, np.ones(5))
from tilt.context import _kernel_compiled as k
k.stop_pass(np.array([0, 2, 4, 4]), np.array([1, 2, 3, 4]), np.array([1, -1, -1, -1]),
    np.ones(4), start_, count, move, np.ones((1, 2)), np.empty((3, 2)))
k.pair_sum(np.ones((1, 2), np.uint64), np.ones((1, 3), np.uint64), np.ones(3), np.ones(2),
    np.empty(2))
end = time.process_time()
print(json.dumps({"import numba": after_numba - start, "import tilt._compiled":
    after_module - after_numba, "first call of every kernel": end - after_module}))
"""


def compile_cost() -> dict[str, dict[str, float]]:
    """CPU seconds to import numba and tilt._compiled and make the first call of every kernel
    on tiny inputs, in a fresh process: with an empty cache (numba compiles) and again with
    the cache it left (numba loads the machine code)."""
    import subprocess
    import tempfile

    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(ROOT))
        for label in ("empty cache (compile)", "cached (load)"):
            done = subprocess.run(
                [sys.executable, "-c", _FIRST_CALLS], env=env, capture_output=True, text=True,
                check=True,
            )  # fmt: skip
            out[label] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", default="grid6", help="named graph (default grid6)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (default 3)")
    parser.add_argument("--out", default=str(HERE / "jit_kernels"), help="output folder")
    parser.add_argument(
        "--compile-cost",
        action="store_true",
        help="only time numba's import, compilation and cache load (fresh processes)",
    )
    args = parser.parse_args(argv)
    if args.compile_cost:
        cost = compile_cost()
        for label, parts in cost.items():
            print(f"{label:22s} " + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items()))
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compile_cost.json").write_text(json.dumps(cost, indent=2) + "\n")
        return 0

    from tilt.cli import reuse_freed_memory
    from tilt.context import EdgeContext, KernelContext, demonstrations
    from tilt.context.kernel import _kernel_pass
    from tilt.measures import widening_fraction
    from tilt.measures.ood import _failure_and_success
    from tilt.objectives import rl_optimum, sd_optimum
    from tilt.policy import Policy, base_policy
    from tilt.space import enumerate_rollouts
    from tilt.tasks.graphs import named_task

    reuse_freed_memory()
    space = enumerate_rollouts(named_task(args.graph))
    base = base_policy(space)
    model = EdgeContext(2.0)
    demos = demonstrations(base, "own")
    rl = rl_optimum(base)
    token = sd_optimum(base, model, "token")
    rng = np.random.default_rng(0)
    values = rng.normal(size=space.n_prefixes)
    leaf = rng.random(space.n_rollouts)

    def fresh(policy: Policy, keep_conditionals: bool) -> Policy:
        out = Policy(space, policy.log_prob)
        known = policy.remembered("log-conditionals")
        if keep_conditionals and known is not None:
            out.memo("log-conditionals", lambda: known)
        return out

    steps: dict[str, Callable[[], object]] = {
        "path sum": lambda: space.path_sum(values),
        "subtree sum": lambda: space.subtree_sum(leaf),
        "OOD pass, base (kept conditionals)": lambda: _failure_and_success(
            fresh(base, True), "reroute"
        ),
        "OOD pass, RL (masses)": lambda: _failure_and_success(fresh(rl, False), "reroute"),
        "widening fraction, token SD": lambda: widening_fraction(token, base),
        "edge step (tilt score)": lambda: model.tilt_score(fresh(base, True), demos),
    }
    rows: dict[str, dict[str, float]] = {}
    for name, compute in steps.items():
        rows[name] = time_step(compute, max(1, args.repeats))
        print(_line(name, rows[name]), flush=True)
    small = enumerate_rollouts(named_task("grid5"))
    small_base = base_policy(small)
    small_demos = demonstrations(small_base, "own")
    kernel = KernelContext(0.5)
    name = "kernel model's shared pass: log Z and E_c log r_c at every prefix (grid5)"
    rows[name] = time_step(
        lambda: _kernel_pass(kernel.gamma, Policy(small, small_base.log_prob), small_demos),
        max(1, args.repeats),
    )
    name = "kernel model's forward target (grid5)"
    rows[name] = time_step(
        lambda: kernel.forward_log_prob(Policy(small, small_base.log_prob), small_demos),
        max(1, args.repeats),
    )
    print(_line(name, rows[name]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "command": " ".join(["python benchmarks/jit_kernels.py", *(argv or sys.argv[1:])]),
        "graph": args.graph,
        "load_average_at_end": os.getloadavg(),
        "steps": rows,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _line(name: str, row: dict[str, float]) -> str:
    return (
        f"{name:42s} compiled {row['compiled_cpu_s']:6.3f} s  numpy {row['numpy_cpu_s']:6.3f} s  "
        f"{row['speedup']:5.1f}x  max difference {row['max_difference']:.1e}"
    )


if __name__ == "__main__":
    sys.exit(main())
