"""Sweeps behind the figures: plain functions on the library, and a CLI that writes tables.

Three sweeps, each a list of independent tasks run on all cores
(:func:`run_tasks`, one line per finished task on stderr):

* ``iterated`` (figure 4): RL and the SD variants applied round after round,
  each from its own output; per round the accuracy, correct-set entropy,
  effective number of correct rollouts, ``distinct@k`` and
  out-of-distribution ``pass@k``.  RL uses the ``beta`` at which one round
  of RL reaches the accuracy of one round of sequence SD, so both climb.
* ``strength`` (figure 7): gap slope of an SD optimum against the context
  strength, for each context model and demonstration distribution.
* ``trainer`` (figure 6): distance of the trained policy to its closed form
  against steps, for each objective in exact and sampled mode (needs
  ``tilt.train``).

Examples::

    python -m analysis.sweeps iterated --graph grid4 --rounds 4 --out iterated.csv
    python -m analysis.sweeps strength --graph grid3 --points 3 --out strength.csv --jobs 2
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import lru_cache
from multiprocessing import get_context
from typing import Any

import numpy as np

from tilt.cli import OneLineParser, finite_float, positive_int, run_main, write_atomic
from tilt.context import CONTEXTS, DEMOS, make_context
from tilt.measures import correct_entropy, distinct_at_k, gap_slope, ood_pass_at_k, ratio_distortion
from tilt.objectives import iterate, matched_beta, rl_optimum, sd_optimum
from tilt.policy import Policy, base_policy
from tilt.space import enumerate_rollouts
from tilt.tasks.graphs import resolve_task

__all__ = [
    "Row",
    "SD_KEYS",
    "DEFAULT_STRENGTHS",
    "TRAIN_OBJECTIVES",
    "run_tasks",
    "iterated_sweep",
    "strength_sweep",
    "trainer_sweep",
    "rows_to_csv",
    "read_csv",
    "main",
]

Row = dict[str, Any]

SD_KEYS = {"sd": "sequence", "sd_token": "token", "sd_forward": "forward"}
"""Method key (as in ``tilt.compare``) to the ``sd_optimum`` method."""

DEFAULT_STRENGTHS: dict[str, tuple[float, ...]] = {
    "copy": (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99),
    "edge": (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0),
    "kernel": (0.0, 0.25, 0.5, 1.0, 1.5, 2.0),
}
"""Strengths of the ``strength`` sweep: ``lam`` for copy, ``gamma`` otherwise."""

TRAIN_OBJECTIVES = ("rl", "sd", "sd_token", "sd_forward")
"""Objectives of ``tilt.train.train`` (figure 6)."""


# --------------------------------------------------------------------------
# running tasks


def _progress(done: int, total: int, label: str, seconds: float) -> None:
    print(f"[{done}/{total}] {label} ({seconds:.1f}s)", file=sys.stderr, flush=True)


def _timed(fn: Callable[..., list[Row]], args: tuple[Any, ...]) -> tuple[list[Row], float]:
    start = time.perf_counter()
    rows = fn(*args)
    return rows, time.perf_counter() - start


def run_tasks(
    fn: Callable[..., list[Row]],
    tasks: Sequence[tuple[str, tuple[Any, ...]]],
    jobs: int | None = None,
    progress: bool = True,
) -> list[Row]:
    """Run ``fn(*args)`` for every ``(label, args)`` of ``tasks``; rows in task order.

    ``jobs`` processes (default ``os.cpu_count()``; 1 runs in this process).
    Each finished task prints ``[done/total] label (seconds)`` on stderr when
    ``progress``.  ``fn`` must be a module-level function (it is pickled).
    """
    jobs = (os.cpu_count() or 1) if jobs is None else int(jobs)
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    total = len(tasks)
    results: list[list[Row] | None] = [None] * total
    if jobs == 1 or total <= 1:
        for i, (label, args) in enumerate(tasks):
            results[i], seconds = _timed(fn, args)
            if progress:
                _progress(i + 1, total, label, seconds)
    else:
        # spawn, not fork: numpy's thread pools make fork unsafe in a threaded parent
        pool = ProcessPoolExecutor(
            max_workers=min(jobs, total), mp_context=get_context("spawn"), initializer=_worker_init
        )
        try:
            # workers are started here: they inherit an ignored SIGINT, so that a Ctrl-C even
            # while they import reaches only the parent (one line), never a worker's traceback
            with _sigint_ignored():
                futures = {pool.submit(_timed, fn, args): i for i, (_, args) in enumerate(tasks)}
            for done, future in enumerate(as_completed(futures), start=1):
                i = futures[future]
                results[i], seconds = future.result()
                if progress:
                    _progress(done, total, tasks[i][0], seconds)
        except BaseException:
            # interrupted (SIGINT, SIGTERM) or failed: stop the workers now, not after their tasks
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return [row for rows in results for row in rows or []]


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT for the duration (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _worker_init() -> None:
    """Workers ignore SIGINT: Ctrl-C reaches the whole process group, and the parent alone
    reports it (one line) and stops the workers; no worker prints a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@lru_cache(maxsize=4)
def _instance(graph: str, base: str, horizon: int | None, seed: int) -> Policy:
    space = enumerate_rollouts(resolve_task(graph, horizon=horizon))
    return base_policy(space, base, seed=seed)


# --------------------------------------------------------------------------
# iterated training (figure 4)


def _iterated_task(
    graph: str,
    base: str,
    horizon: int | None,
    seed: int,
    method: str,
    context: str,
    strength: float,
    rounds: int,
    beta: float,
    k: int,
) -> list[Row]:
    pi0 = _instance(graph, base, horizon, seed)
    if method == "rl":
        policies = iterate(pi0, lambda p: rl_optimum(p, beta), rounds)
    else:
        model = make_context(context, strength)
        policies = iterate(pi0, lambda p: sd_optimum(p, model, SD_KEYS[method]), rounds)
    rows = []
    for n, policy in enumerate(policies):
        entropy = correct_entropy(policy)
        rows.append(
            {
                "graph": graph,
                "context": context,
                "strength": strength,
                "method": method,
                "round": n,
                "beta": beta if method == "rl" else math.nan,
                "accuracy": policy.accuracy,
                "correct_entropy": entropy,
                "effective_correct": math.exp(entropy),
                f"distinct_at_{k}": distinct_at_k(policy, k),
                f"ood_pass_at_{k}_mean": ood_pass_at_k(policy, k).mean,
                "gap_slope": gap_slope(policy, pi0),
            }
        )
    return rows


def iterated_sweep(
    graph: str = "grid5",
    context: str = "edge",
    strength: float = 2.0,
    rounds: int = 8,
    methods: Sequence[str] = ("rl", "sd", "sd_token", "sd_forward"),
    base: str = "default",
    horizon: int | None = None,
    seed: int = 0,
    k: int = 64,
    jobs: int | None = None,
    progress: bool = True,
) -> list[Row]:
    """One row per (method, round) of iterated RL and SD on one instance.

    RL's ``beta`` is the one at which a single RL round reaches the accuracy of
    a single sequence-SD round (``tilt.objectives.matched_beta``); iterating RL
    multiplies by ``exp(r / beta)`` each round and keeps every correct ratio.
    """
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}")
    unknown = [m for m in methods if m != "rl" and m not in SD_KEYS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}: choose from rl, {', '.join(SD_KEYS)}")
    pi0 = _instance(graph, base, horizon, seed)
    one_round = sd_optimum(pi0, make_context(context, strength), "sequence")
    beta = matched_beta(pi0.accuracy, one_round.accuracy)
    if beta is None or math.isinf(beta):
        beta = 1.0  # SD did not raise accuracy: use a plain beta, say so in the table
    tasks = [
        (
            f"iterated {graph} {m} x{rounds}",
            (graph, base, horizon, seed, m, context, strength, rounds, beta, k),
        )
        for m in methods
    ]
    return run_tasks(_iterated_task, tasks, jobs, progress)


# --------------------------------------------------------------------------
# strength (figure 7)


def _strength_task(
    graph: str,
    base: str,
    horizon: int | None,
    seed: int,
    context: str,
    strength: float,
    demos: str,
    alpha: float,
    method: str,
) -> list[Row]:
    pi0 = _instance(graph, base, horizon, seed)
    q = sd_optimum(pi0, make_context(context, strength), SD_KEYS[method], demos, alpha)
    entropy = correct_entropy(q)
    return [
        {
            "graph": graph,
            "context": context,
            "strength": strength,
            "demos": demos,
            "alpha": alpha if demos == "tempered" else math.nan,
            "method": method,
            "accuracy": q.accuracy,
            "gap_slope": gap_slope(q, pi0),
            "ratio_distortion": ratio_distortion(q, pi0),
            "effective_correct": math.exp(entropy),
        }
    ]


def strength_sweep(
    graph: str = "grid5",
    contexts: Sequence[str] = CONTEXTS,
    demos: Sequence[str] = DEMOS,
    strengths: dict[str, Sequence[float]] | None = None,
    points: int | None = None,
    alpha: float = 0.5,
    method: str = "sd",
    base: str = "default",
    horizon: int | None = None,
    seed: int = 0,
    jobs: int | None = None,
    progress: bool = True,
) -> list[Row]:
    """One row per (context, demonstrations, strength): the gap slope of the SD optimum.

    ``strengths`` defaults to :data:`DEFAULT_STRENGTHS`; ``points`` keeps only
    that many of them per context (evenly spread, ends included).
    """
    if method not in SD_KEYS:
        raise ValueError(f"unknown SD method {method!r}: choose one of {', '.join(SD_KEYS)}")
    grid = dict(DEFAULT_STRENGTHS if strengths is None else strengths)
    tasks = []
    for context in contexts:
        if context not in grid:
            raise ValueError(f"no strengths for context {context!r}")
        values = list(grid[context])
        if points is not None:
            picks = np.unique(np.linspace(0, len(values) - 1, max(points, 1)).round().astype(int))
            values = [values[i] for i in picks]
        for d in demos:
            for s in values:
                tasks.append(
                    (
                        f"strength {graph} {context}={s:g} demos={d}",
                        (graph, base, horizon, seed, context, float(s), d, alpha, method),
                    )
                )
    return run_tasks(_strength_task, tasks, jobs, progress)


# --------------------------------------------------------------------------
# trainer (figure 6)


def _trainer_task(
    graph: str,
    base: str,
    horizon: int | None,
    seed: int,
    objective: str,
    mode: str,
    context: str,
    strength: float,
    steps: int,
    batch: int,
    record_every: int,
) -> list[Row]:
    from tilt.train import train  # imported here: figure 6 is skipped when it is missing

    pi0 = _instance(graph, base, horizon, seed)
    beta = 1.0  # RL's KL coefficient (beta = 0 has no finite logits); the SD objectives ignore it
    result = train(
        pi0,
        objective,
        model=make_context(context, strength),
        demos="own",
        beta=beta,
        mode=mode,
        teacher="frozen",
        steps=steps,
        batch=batch,
        seed=seed,
        record_every=1 if mode == "exact" else record_every,  # L-BFGS stops within a few dozen
    )
    history = result.history
    return [
        {
            "graph": graph,
            "objective": objective,
            "mode": mode,
            "context": context,
            "strength": strength,
            "beta": beta if objective == "rl" else math.nan,
            "step": int(step),
            "tv_to_closed_form": float(tv),
            "kl_to_closed_form": float(kl),
        }
        for step, tv, kl in zip(
            history.step, history.tv_to_closed_form, history.kl_to_closed_form, strict=True
        )
    ]


def trainer_sweep(
    graph: str = "grid3",
    objectives: Sequence[str] = TRAIN_OBJECTIVES,
    modes: Sequence[str] = ("exact", "sampled"),
    context: str = "edge",
    strength: float = 2.0,
    steps: int = 300,
    batch: int = 64,
    record_every: int = 5,
    base: str = "default",
    horizon: int | None = None,
    seed: int = 0,
    jobs: int | None = None,
    progress: bool = True,
) -> list[Row]:
    """One row per (objective, mode, recorded step): distance to the closed form.

    RL is trained with ``beta = 1`` (``beta = 0`` has no finite optimum in
    logits).  Raises ``ImportError`` when ``tilt.train`` is not available.
    """
    import tilt.train  # noqa: F401  (fail early, before spawning workers)

    tasks = [
        (
            f"trainer {graph} {o} {m} {steps} steps",
            (graph, base, horizon, seed, o, m, context, strength, steps, batch, record_every),
        )
        for o in objectives
        for m in modes
    ]
    return run_tasks(_trainer_task, tasks, jobs, progress)


# --------------------------------------------------------------------------
# tables


def _cell(value: object) -> object:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return value


def rows_to_csv(rows: Iterable[Row]) -> str:
    """CSV text of ``rows`` (columns of the first row; full-precision floats, ``nan`` empty)."""
    rows = list(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = list(rows[0]) if rows else []
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c, "")) for c in columns])
    return buffer.getvalue()


def read_csv(path: str | os.PathLike[str]) -> list[Row]:
    """Rows of a table written by :func:`rows_to_csv`; numbers parsed, empty cells ``nan``."""

    def parse(text: str) -> object:
        if text == "":
            return math.nan
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            return text

    with open(path, newline="") as handle:
        return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(handle)]


# --------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m analysis.sweeps",
        description="Sweeps behind the figures; each writes one CSV table.",
    )
    sub = parser.add_subparsers(dest="sweep", required=True)

    def common(p: argparse.ArgumentParser, graph: str) -> None:
        p.add_argument(
            "--graph", default=graph, help=f"named graph or graph file (default {graph})"
        )
        p.add_argument("--horizon", type=positive_int, help="most moves per rollout (default none)")
        p.add_argument("--base", default="default", choices=("default", "uniform", "random"))
        p.add_argument(
            "--seed", type=int, default=0, help="seed of every random choice (default 0)"
        )
        p.add_argument(
            "--out", required=True, metavar="FILE.csv", help="table to write (atomically)"
        )
        p.add_argument(
            "--jobs",
            type=positive_int,
            default=os.cpu_count() or 1,
            help="worker processes (default: all cores)",
        )
        p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")

    it = sub.add_parser("iterated", help="iterated RL and SD, measures per round (figure 4)")
    common(it, "grid5")
    it.add_argument("--context", default="edge", choices=CONTEXTS)
    it.add_argument("--strength", type=finite_float, default=2.0)
    it.add_argument("--rounds", type=positive_int, default=8)
    it.add_argument("--k", type=positive_int, default=64)

    st = sub.add_parser("strength", help="gap slope against context strength (figure 7)")
    common(st, "grid5")
    st.add_argument("--contexts", nargs="+", default=list(CONTEXTS), choices=CONTEXTS)
    st.add_argument("--demos", nargs="+", default=list(DEMOS), choices=DEMOS)
    st.add_argument("--points", type=positive_int, help="strengths per context (default: all)")
    st.add_argument(
        "--alpha", type=finite_float, default=0.5, help="tempering exponent (default 0.5)"
    )
    st.add_argument("--method", default="sd", choices=tuple(SD_KEYS))

    tr = sub.add_parser("trainer", help="distance to the closed form against steps (figure 6)")
    common(tr, "grid3")
    tr.add_argument("--context", default="edge", choices=CONTEXTS)
    tr.add_argument("--strength", type=finite_float, default=2.0)
    tr.add_argument("--steps", type=positive_int, default=300)
    tr.add_argument("--batch", type=positive_int, default=64)
    tr.add_argument("--record-every", type=positive_int, default=5)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m analysis.sweeps``; returns the exit status."""
    args = _parser().parse_args(argv)

    def body() -> int:
        from tilt.cli import check_output_file

        check_output_file(args.out)
        shared = {
            "graph": args.graph,
            "base": args.base,
            "horizon": args.horizon,
            "seed": args.seed,
            "jobs": args.jobs,
            "progress": not args.quiet,
        }
        if args.sweep == "iterated":
            rows = iterated_sweep(
                context=args.context, strength=args.strength, rounds=args.rounds, k=args.k, **shared
            )
        elif args.sweep == "strength":
            rows = strength_sweep(
                contexts=args.contexts,
                demos=args.demos,
                points=args.points,
                alpha=args.alpha,
                method=args.method,
                **shared,
            )
        else:
            try:
                rows = trainer_sweep(
                    context=args.context,
                    strength=args.strength,
                    steps=args.steps,
                    batch=args.batch,
                    record_every=args.record_every,
                    **shared,
                )
            except ImportError as exc:
                raise ValueError(f"the trainer sweep needs tilt.train ({exc})") from None
        write_atomic(args.out, rows_to_csv(rows))
        print(f"wrote {len(rows)} rows to {args.out}")
        return 0

    return run_main("python -m analysis.sweeps", body)


if __name__ == "__main__":
    raise SystemExit(main())
