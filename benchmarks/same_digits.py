"""Do two trees (or two settings of one tree) print the same numbers?

Runs ``python -m tilt.compare ... --json`` on a list of instances in a reference
tree and in this one, and compares every number of the two JSON outputs:
``|a - b| <= tol * max(1, |a|)`` (default ``tol = 1e-12``); strings, ``null`` and
the keys must match exactly.  The reference is an older tree (``--against DIR``, a
checkout or ``git archive`` of an older commit) or this tree with the compiled
kernels off.  Each side runs in a chosen setting of the compiled kernels:

* ``numpy``: ``TILT_NO_JIT=1``, the plain-numpy paths (a machine without numba);
* ``auto``: the default (the kernels serve inputs of ``JIT_MIN_SIZE`` entries or more);
* ``jit``: ``TILT_JIT_MIN_SIZE=0``, the kernels on every input, however small.

Usage::

    git archive OLD | (mkdir /tmp/old && tar x -C /tmp/old)
    python benchmarks/same_digits.py --against /tmp/old              # new (auto, jit, numpy) vs old
    python benchmarks/same_digits.py --quick                         # small instances only

Exit status 0 when every instance agrees, 1 otherwise (the worst difference and
its place are printed per instance).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

EXTRA = ["--sd", "token-forward", "--sd", "jsd=0.5", "--sd", "discount=0.5"]

INSTANCES = [
    ["--graph", "grid3"],
    ["--graph", "grid4"],
    ["--graph", "grid4", *EXTRA, "--sd", "length-weighted", "--sd", "hybrid=0.5"],
    ["--graph", "diamonds"],
    ["--graph", "routes", *EXTRA],
    ["--graph", "routes", "--engine", "enumerate"],
    ["--graph", "grid4", "--context", "kernel"],
    ["--graph", "grid4", "--context", "copy", *EXTRA],
    ["--graph", "grid4", "--base", "random", "--seed", "3", *EXTRA],
    ["--graph", "grid4", "--strength", "800", *EXTRA],
    ["--graph", "grid4", "--demos", "tempered", "--anchor", "0.5", "--beta", "0.3"],
    ["--graph", "grid5"],
    ["--graph", "grid5", *EXTRA],
    ["--graph", "grid5", "--context", "kernel"],
    ["--graph", "grid4", "--context", "kernel", "--demos", "tempered", "--base", "random"],
    ["--graph", "routes", "--context", "kernel", "--demos", "uniform", "--strength", "3"],
    ["--graph", "diamonds", "--context", "kernel", "--demos", "reference", *EXTRA],
    ["--graph", "grid4", "--context", "kernel", "--strength", "30"],
    ["--graph", "grid5", "--base", "random", "--seed", "1", "--strength", "800"],
    ["--graph", "lattice:V=8,L=16,seed=0"],
    ["--graph", "lattice:V=32,L=128,seed=0", "--sd", "token-forward"],
    ["--graph", "grid6"],
    ["--graph", "grid6", *EXTRA],
    ["--graph", "grid6", "--base", "random", "--seed", "2"],
    ["--graph", "lattice:V=64,L=1000,seed=0"],
]
"""Every instance is small except the last four (grid6 and the largest lattice, on the
DP engine: about a minute each); ``--quick`` leaves out grid6 and the large lattice."""

SETTINGS = {
    "numpy": {"TILT_NO_JIT": "1"},
    "auto": {},
    "jit": {"TILT_JIT_MIN_SIZE": "0"},
}


def run_json(tree: Path, argv: list[str], setting: str) -> object:
    """The ``--json`` output of ``python -m tilt.compare *argv`` in ``tree``."""
    env = dict(os.environ)
    env.pop("TILT_NO_JIT", None)
    env.pop("TILT_JIT_MIN_SIZE", None)
    env.update(SETTINGS[setting])
    env["PYTHONPATH"] = str(tree)
    done = subprocess.run(
        [sys.executable, "-m", "tilt.compare", *argv, "--json"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} in {tree} failed: {done.stderr.strip()[-400:]}")
    return json.loads(done.stdout)


def worst_difference(
    a: object, b: object, where: str = "", ties: list[str] | None = None
) -> tuple[float, str]:
    """The largest ``|a - b| / max(1, |a|)`` over every number, and where (``inf`` where
    the structure, a string or a non-finite value differs).

    The edge named as the OOD worst case (``*worst_move``) may differ where several edges
    tie for it (their values equal to rounding: mirror-image edges of a symmetric graph);
    such a difference is listed in ``ties`` when the worst values themselves agree (they
    are compared as numbers), not counted as a difference.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return math.inf, f"{where}: keys {sorted(set(a) ^ set(b))}"
        pairs = []
        for k in a:
            if k.endswith("worst_move") and ties is not None and isinstance(a[k], dict):
                for kk in a[k]:
                    if a[k][kk] != b[k].get(kk):
                        ties.append(f"{where}.{k}.{kk}: {a[k][kk]} / {b[k].get(kk)}")
                continue
            pairs.append(worst_difference(a[k], b[k], f"{where}.{k}", ties))
        return max(pairs, default=(0.0, where))
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return math.inf, f"{where}: lengths {len(a)} and {len(b)}"
        pairs = [
            worst_difference(x, y, f"{where}[{i}]", ties)
            for i, (x, y) in enumerate(zip(a, b, strict=True))
        ]
        return max(pairs, default=(0.0, where))
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
        if not (math.isfinite(a) and math.isfinite(b)):
            return (0.0, where) if a == b or (a != a and b != b) else (math.inf, where)
        return abs(a - b) / max(1.0, abs(a)), where
    return (0.0, where) if a == b else (math.inf, f"{where}: {a!r} != {b!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", metavar="DIR", help="reference tree (default: this one)")
    parser.add_argument(
        "--reference-setting", choices=sorted(SETTINGS), default="numpy",
        help="kernels in the reference tree (default numpy)",
    )  # fmt: skip
    parser.add_argument(
        "--settings", nargs="+", choices=sorted(SETTINGS), default=["auto", "jit", "numpy"],
        help="kernel settings of this tree to check (default: all three)",
    )  # fmt: skip
    parser.add_argument("--tol", type=float, default=1e-12, help="tolerance (default 1e-12)")
    parser.add_argument("--quick", action="store_true", help="leave out grid6 and the big lattice")
    parser.add_argument("--out", help="write every result as JSON here")
    parser.add_argument(
        "--match", metavar="TEXT", help="only the instances whose options contain TEXT"
    )
    args = parser.parse_args(argv)
    reference = Path(args.against).resolve() if args.against else ROOT
    instances = INSTANCES[:-4] if args.quick else INSTANCES
    if args.match:
        instances = [i for i in instances if args.match in " ".join(i)]
    failed, rows = 0, []
    for instance in instances:
        theirs = run_json(reference, instance, args.reference_setting)
        for setting in args.settings:
            ours = run_json(ROOT, instance, setting)
            ties: list[str] = []
            worst, where = worst_difference(theirs, ours, "", ties)
            ok = worst <= args.tol
            failed += not ok
            rows.append(
                {
                    "instance": instance,
                    "setting": setting,
                    "worst": worst,
                    "where": where,
                    "tied_worst_edges": ties,
                }
            )
            print(
                f"{'ok  ' if ok else 'FAIL'} {setting:5s} {worst:9.2e}  {' '.join(instance)}"
                + ("" if ok else f"  at {where}")
                + (f"  ({len(ties)} tied worst edges named differently)" if ties else ""),
                flush=True,
            )
    if args.out:
        Path(args.out).write_text(json.dumps({"reference": str(reference), "rows": rows}, indent=2))
    print(f"{len(rows) - failed} of {len(rows)} agree to {args.tol:g}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
