"""The DP engine's compiled passes against their numpy paths, step by step, in one process.

Builds ``lattice:V=64,L=1000`` (8.2 M state edges) and its base, then times each step the
kernels of ``tilt/engines/dp/_compiled.py`` serve, with the kernels on
(``TILT_JIT_MIN_SIZE=0``) and off (``TILT_NO_JIT=1``), alternating, least CPU seconds of
``--repeats`` runs each; prints a table and writes ``benchmarks/dp_kernels/results.json``
(with the load average before and after).  Usage::

    python benchmarks/dp_kernels.py [--graph lattice:V=64,L=1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402

from tilt.engines.dp import acyclic_space, base_policy, lattice_table  # noqa: E402
from tilt.engines.dp import measures as dpm  # noqa: E402
from tilt.engines.dp import passes as dpp  # noqa: E402
from tilt.engines.dp.optima import rl_optimum  # noqa: E402
from tilt.engines.dp.policy import MarkovPolicy  # noqa: E402


def _mode(compiled: bool) -> None:
    os.environ.pop("TILT_NO_JIT", None)
    os.environ["TILT_JIT_MIN_SIZE"] = "0"
    if not compiled:
        os.environ["TILT_NO_JIT"] = "1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", default="lattice:V=64,L=1000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "dp_kernels"))
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    _mode(True)
    table = lattice_table(args.graph)
    space = acyclic_space(table)
    base = base_policy(space)
    rl = rl_optimum(base, 0.7)
    leaf = np.where(space.correct, 0.0, -np.inf)
    finite = np.where(np.isfinite(base.log_cond), base.log_cond, 0.0)

    def fresh(policy: MarkovPolicy, *keep: str) -> MarkovPolicy:
        out = MarkovPolicy(space, policy.log_cond)
        for name in keep:
            out.__dict__[name] = getattr(policy, name)
        return out

    base.correct_cond  # noqa: B018 - cached inputs of the steps below
    dpm._flows(base)
    steps: dict[str, Callable[[], object]] = {
        "state DAG (Kahn layers, edges)": lambda: acyclic_space(table),
        "backward pass (log-sum-exp, measures' passes)": lambda: dpp.backward_logsumexp(
            space, base.linear, leaf, compiled=True
        ),
        "forward pass (reach)": lambda: dpp.forward_logsumexp(space, base.linear, compiled=True),
        "max-plus pass": lambda: dpp.backward_max(space, base.log_cond, leaf),
        "ratio distortion (two max-plus passes)": lambda: dpm.ratio_distortion(rl, base),
        "mean pass": lambda: dpp.backward_mean(space, base.prob, finite),
        "conditioned chain q(. | C)": lambda: MarkovPolicy.correct_cond.func(  # type: ignore[attr-defined]
            fresh(base, "log_correct_below")
        ),
        "re-route accuracy": lambda: dpm.reroute_accuracy(base),
        "gap chains (uniform, weighted) and slopes": lambda: (
            dpm.gap_slope(fresh(rl), fresh(base, "log_correct_below", "log_reach")),
            dpm.weighted_gap_slope(fresh(rl), fresh(base, "log_correct_below", "log_reach")),
        ),
    }
    rows = []
    for name, step in steps.items():
        best = {True: float("inf"), False: float("inf")}
        for _ in range(args.repeats):
            for compiled in (True, False):
                _mode(compiled)
                start = time.process_time()
                step()
                best[compiled] = min(best[compiled], time.process_time() - start)
        rows.append({"step": name, "compiled_s": best[True], "numpy_s": best[False]})
        print(f"{name:48s} compiled {best[True]:6.3f} s  numpy {best[False]:6.3f} s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "command": "python benchmarks/dp_kernels.py " + " ".join(argv or sys.argv[1:]),
        "graph": args.graph,
        "state_edges": space.n_edges,
        "repeats": args.repeats,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "rows": rows,
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
