"""The extra rows' compiled steps against their numpy twins, in one process on one space.

For ``token-forward``, ``jsd=0.5`` and ``discount=0.5`` with ``edge(gamma=2)`` on the
default base of ``--graph`` (grid6 by default): the CPU seconds (user + sys of this
process) of each step with the kernels on (``TILT_NO_JIT`` unset) and off
(``TILT_NO_JIT=1``), alternating, the least of ``--repeats``, and the largest
difference of the two results.  The steps: the edge model's token-forward target, the
``discount`` pass, and each whole fixed point (policy construction included).  The
first call of each kernel (loading its cached machine code) is made before timing.

Usage::

    python benchmarks/row_kernels.py                 # grid6, 3 repeats
    python benchmarks/row_kernels.py --graph grid5

Writes ``results.json`` into ``--out`` (default ``benchmarks/row_kernels/``), with the
load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # this tree's tilt, not another checkout's
    sys.path.insert(0, str(ROOT))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed(compute: Callable[[], Any], jit: bool) -> tuple[float, Any]:
    if jit:
        os.environ.pop("TILT_NO_JIT", None)
    else:
        os.environ["TILT_NO_JIT"] = "1"
    start = _cpu()
    out = compute()
    return _cpu() - start, out


def _gap(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    both = np.isfinite(a) & np.isfinite(b)
    if not np.array_equal(np.isfinite(a), np.isfinite(b)):
        return float("inf")
    return float((np.abs(a[both] - b[both]) / np.maximum(1.0, np.abs(b[both]))).max(initial=0.0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", default="grid6", help="named graph (default grid6)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each step (default 3)")
    parser.add_argument("--out", default=str(HERE / "row_kernels"), help="output folder")
    args = parser.parse_args(argv)

    from tilt.cli import reuse_freed_memory
    from tilt.engines import build_instance
    from tilt.engines._spec import InstanceSpec
    from tilt.objectives import sd_optimum
    from tilt.objectives.per_prefix import _discount_pass, _kernels

    reuse_freed_memory()
    instance = build_instance(InstanceSpec(graph=args.graph), engine="enumerate")
    base, model = instance.base, instance.model
    demos = instance.demonstrations(base)
    space = base.space
    sd_optimum(base, model, "token", demos)  # what compare has done before the extra rows
    target = model.token_log_target(base, demos)

    def discount_step() -> np.ndarray:
        compiled = _kernels(space.n_prefixes)
        if compiled is None:
            return _discount_pass(space, target, 0.5)[1]
        return compiled.discount_pass(space.child_start, space.child_count, target, 0.5)[1]

    steps: dict[str, Callable[[], Any]] = {
        "edge token-forward target": lambda: model.token_mean_log_target(base, demos),
        "discount pass": discount_step,
    }
    for spec in ("token-forward", "jsd=0.5", "discount=0.5"):
        steps[f"fixed point {spec}"] = lambda spec=spec: (
            sd_optimum(base, model, spec, demos).log_prob
        )
    rows = []
    for name, compute in steps.items():
        _timed(compute, True)  # load the cached machine code
        on, off = [], []
        for _ in range(max(1, args.repeats)):
            seconds, compiled = _timed(compute, True)
            on.append(seconds)
            seconds, plain = _timed(compute, False)
            off.append(seconds)
        row = {"step": name, "compiled_s": min(on), "numpy_s": min(off)}
        row["largest_difference"] = _gap(compiled, plain)
        rows.append(row)
        print(
            f"{name:28s} compiled {row['compiled_s']:.3f} s  numpy {row['numpy_s']:.3f} s  "
            f"largest difference {row['largest_difference']:.1e}",
            flush=True,
        )
    os.environ.pop("TILT_NO_JIT", None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "graph": args.graph,
        "repeats": args.repeats,
        "n_prefixes": int(space.n_prefixes),
        "load_average": os.getloadavg(),
        "steps": rows,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
