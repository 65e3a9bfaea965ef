"""Does tilt predict what training a network does?  The experiment of ``docs/neural.md``.

1. pretrain a small GPT-2 on grid4 whose base follows tilt's default base and
   whose in-context teacher follows ``edge(2)`` (``tilt.neural.pretrain``);
2. read its exact tables and time them; predict every objective's optimum
   from them (``tilt.neural.NetworkContext``);
3. train it with the real estimators, frozen teacher: sequence SD, RL (beta
   matched to SD's accuracy), token-forward, jsd=0.5, TRL's sampled-token
   reduction (length-weighted), on two seeds, demonstrations from the frozen
   base (the closed forms' assumption); sequence SD also with the exact
   gradient, and with SDPO's group demonstrations (compared with the fixed
   point whose demonstrations come from the student itself);
4. the live-teacher question: train sequence SD with a live teacher (group
   demonstrations), and at each checkpoint read the network's in-context
   teacher and compare it with ``edge(2)`` applied to the current student, and
   the trajectory with iterated SD rounds of ``edge(2)`` from the network's base.

Writes ``results.json`` and ``summary.md`` in ``--out``; ``python -m figures.neural``
draws them.  ``--quick``: grid3, a one-layer width-16 network, a few steps.

Example::

    python -m analysis.neural_experiment --quick --out neural_quick
    python -m analysis.neural_experiment --out neural  # slow: 1,228 s on 2 busy cores
    python -m analysis.neural_experiment --all-seeds --out neural  # slow: 2,442 s (over 30 min)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

KS = (1, 8, 64)


@dataclass(frozen=True)
class Config:
    graph: str
    layers: int
    width: int
    heads: int
    pretrain_steps: int
    pretrain_batch: int
    pretrain_lr: float
    steps: int
    exact_steps: int
    live_steps: int
    batch: int
    lr: float
    eval_every: int
    seeds: tuple[int, ...]
    rounds: int


FULL = Config("grid4", 2, 64, 4, 2000, 128, 3e-3, 800, 400, 400, 128, 5e-4, 50, (0, 1), 6)
QUICK = Config("grid3", 1, 16, 2, 100, 64, 1e-2, 30, 30, 12, 64, 3e-3, 10, (0,), 3)

FROZEN_OBJECTIVES = ("sequence", "rl", "token-forward", "jsd=0.5", "length-weighted")
"""Trained with the frozen teacher: sequence and RL on every seed, the others on the first
(``--all-seeds``: every one but length-weighted on every seed)."""


def _measures(policy: Any, base: Any) -> dict[str, object]:
    from tilt.measures import measure

    m = measure(policy, base, KS)
    return {
        "accuracy": m.accuracy,
        "effective_correct": m.effective_correct,
        "gap_slope": m.gap_slope,
        "pass_at_k": {str(k): v for k, v in m.pass_at_k.items()},
        "distinct_at_k": {str(k): v for k, v in m.distinct_at_k.items()},
    }


def _self_consistent(objective: str, base: Any, model: Any, tol: float = 1e-12) -> Any:
    """The fixed point when the demonstrations come from the student itself (SDPO's sibling),
    the teacher frozen: ``q = optimum(base, model, D(q))``, by iteration from ``D(base)``."""
    from tilt.context import demonstrations
    from tilt.objectives import parse_objective

    parsed = parse_objective(objective)
    q = parsed.optimum(base, model, "own")
    for _ in range(500):
        new = parsed.optimum(base, model, demonstrations(q, "own"))
        if 0.5 * float(np.abs(new.prob - q.prob).sum()) < tol:
            return new
        q = new
    return q


def _run(model: Any, tables: Any, label: str, seed: int, context: Any, **options: Any) -> dict:
    import copy

    import torch

    from tilt.neural import NeuralTrainOptions, seed_everything, train_network
    from tilt.neural.train import total_variation

    seed_everything(seed)
    net = copy.deepcopy(model)
    result = train_network(net, tables, NeuralTrainOptions(**options), seed, context)
    record = {
        "label": label,
        "seed": seed,
        "options": {k: v for k, v in options.items()},
        "beta": result.beta,
        "seconds": result.seconds,
        "final_tv": result.history[-1].tv,
        "history": [c.as_dict() for c in result.history],
        "realised": _measures(result.final, tables.base),
        "predicted": _measures(result.predicted, tables.base),
    }
    record["final_tv_check"] = total_variation(result.final, result.predicted)
    del net
    torch.manual_seed(seed)
    return record, result


def run(out: Path, quick: bool, threads: int, all_seeds: bool = False) -> dict:
    """Run the whole experiment, write ``results.json`` and ``summary.md``; return the results."""
    import torch
    from transformers.utils import logging as hf_logging

    from tilt.context import make_context
    from tilt.neural import (
        NetworkContext,
        NetworkTask,
        PretrainOptions,
        TaskTokens,
        build_gpt2,
        fit_report,
        network_tables,
        pretrain,
        save_network,
        seed_everything,
        task_space,
    )
    from tilt.neural.train import predicted_optimum, total_variation
    from tilt.objectives import sd_sequence
    from tilt.policy import base_policy

    hf_logging.disable_progress_bar()
    torch.set_num_threads(threads)
    cfg = QUICK if quick else FULL
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    context = make_context("edge", 2.0)
    task = NetworkTask(cfg.graph, context="edge", strength=2.0)
    space = task_space(task)
    tilt_base = base_policy(space)
    tokens = TaskTokens(space)
    model = build_gpt2(tokens, n_layer=cfg.layers, n_embd=cfg.width, n_head=cfg.heads, seed=0)
    seed_everything(0)
    t0 = time.perf_counter()
    losses = pretrain(
        model,
        tilt_base,
        context,
        PretrainOptions(cfg.pretrain_steps, cfg.pretrain_batch, cfg.pretrain_lr),
        seed=0,
    )
    pretrain_seconds = time.perf_counter() - t0
    save_network(out / "network", model, task)
    t0 = time.perf_counter()
    tables = network_tables(model, space)
    table_seconds = time.perf_counter() - t0
    fit = fit_report(tables, tilt_base, context)
    network = NetworkContext(tables)
    results: dict[str, Any] = {
        "config": cfg.__dict__,
        "threads": threads,
        "all_seeds": all_seeds,
        "space": {
            "graph": cfg.graph,
            "rollouts": space.n_rollouts,
            "correct": space.n_correct,
            "prefixes": space.n_prefixes,
        },
        "pretrain": {
            "parameters": sum(p.numel() for p in model.parameters()),
            "seconds": pretrain_seconds,
            "final_loss": losses[-1],
            "base_tv": fit.base_tv,
            "teacher_tv": fit.teacher_tv,
            "worst_teacher_tv": fit.worst_teacher_tv,
        },
        "table_seconds": table_seconds,
        "predictions": {},
        "runs": [],
    }
    results["predictions"]["base"] = _measures(tables.base, tables.base)
    for objective in (*FROZEN_OBJECTIVES, "token"):
        q, beta = predicted_optimum(tables, objective)
        results["predictions"][objective] = {**_measures(q, tables.base), "beta": beta}
    tilt_sd = sd_sequence(tilt_base, context)
    results["predictions"]["tilt_edge_sequence"] = _measures(tilt_sd, tilt_base)

    common = {"steps": cfg.steps, "batch": cfg.batch, "lr": cfg.lr, "eval_every": cfg.eval_every}
    for objective in FROZEN_OBJECTIVES:
        every = objective in ("sequence", "rl") or (all_seeds and objective != "length-weighted")
        seeds = cfg.seeds if every else cfg.seeds[:1]
        for seed in seeds:
            record, _ = _run(
                model, tables, objective, seed, context, objective=objective, demos="base", **common
            )
            results["runs"].append(record)
            print(
                f"{objective} seed {seed}: TV {record['final_tv']:.4f} ({record['seconds']:.0f} s)"
            )
    exact = {**common, "steps": cfg.exact_steps}
    record, _ = _run(
        model, tables, "sequence exact", 0, context, objective="sequence", mode="exact", **exact
    )
    results["runs"].append(record)
    print(f"sequence exact: TV {record['final_tv']:.4f}")
    record, result = _run(
        model, tables, "sequence group", 0, context, objective="sequence", demos="group", **common
    )
    consistent = _self_consistent("sequence", tables.base, network)
    record["tv_to_self_consistent"] = total_variation(result.final, consistent)
    record["self_consistent"] = _measures(consistent, tables.base)
    record["self_consistent_tv_from_prediction"] = total_variation(consistent, result.predicted)
    results["runs"].append(record)
    print(
        f"sequence group: TV {record['final_tv']:.4f} to the prediction, "
        f"{record['tv_to_self_consistent']:.4f} to the self-consistent fixed point"
    )

    live = {**common, "steps": cfg.live_steps, "eval_every": max(1, cfg.live_steps // 8)}
    record, result = _run(
        model,
        tables,
        "sequence live",
        0,
        context,
        objective="sequence",
        teacher="live",
        demos="group",
        watch_teacher=True,
        **live,
    )
    results["runs"].append(record)
    print(f"sequence live: effective #C {record['realised']['effective_correct']:.2f}")
    record, _ = _run(
        model, tables, "sequence ema", 0, context, objective="sequence", teacher="ema", **live
    )
    results["runs"].append(record)
    print(f"sequence ema: effective #C {record['realised']['effective_correct']:.2f}")
    rounds = []
    policy = tables.base
    for n in range(cfg.rounds + 1):
        rounds.append({"round": n, **_measures(policy, tables.base)})
        policy = sd_sequence(policy, context)
    results["iterated_edge"] = rounds
    network_rounds = [{"round": 0, **_measures(tables.base, tables.base)}]
    network_rounds.append({"round": 1, **_measures(sd_sequence(tables.base, network), tables.base)})
    results["iterated_network"] = network_rounds
    results["seconds"] = time.perf_counter() - started
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "summary.md").write_text(summary(results))
    return results


def _equivalent_round(effective: float, rounds: list[dict]) -> float:
    """Where ``effective`` falls among the iterated rounds' effective #C (linear interpolation)."""
    values = [r["effective_correct"] for r in rounds]
    for n in range(len(values) - 1):
        hi, lo = values[n], values[n + 1]
        if lo <= effective <= hi:
            return n + (hi - effective) / (hi - lo) if hi > lo else float(n)
    return math.inf if effective < values[-1] else 0.0


def summary(results: dict) -> str:
    """A Markdown summary of ``results``."""
    p = results["pretrain"]
    lines = [
        f"# tilt.neural experiment: {results['space']['graph']}",
        "",
        f"space: {results['space']['rollouts']} rollouts, {results['space']['correct']} correct, "
        f"{results['space']['prefixes']} prefixes; {p['parameters']:,} parameters; "
        f"{results['threads']} torch threads; total {results['seconds']:.0f} s",
        "",
        f"pretraining: {p['seconds']:.0f} s; base TV {p['base_tv']:.4f}; teacher TV "
        f"{p['teacher_tv']:.4f} (demonstration-weighted; worst {p['worst_teacher_tv']:.4f})",
        f"whole table (base + {results['space']['correct']} teachers): "
        f"{results['table_seconds']:.2f} s",
        "",
        "| run | seed | steps | final TV | acc pred/real | eff. #C pred/real | slope pred/real |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        pr, re_ = r["predicted"], r["realised"]
        lines.append(
            f"| {r['label']} | {r['seed']} | {r['options']['steps']} | {r['final_tv']:.4f} | "
            f"{pr['accuracy']:.4f} / {re_['accuracy']:.4f} | "
            f"{pr['effective_correct']:.2f} / {re_['effective_correct']:.2f} | "
            f"{pr['gap_slope']:.3f} / {re_['gap_slope']:.3f} |"
        )
    group = next(r for r in results["runs"] if r["label"] == "sequence group")
    lines += [
        "",
        f"sequence SD with group demonstrations: TV {group['final_tv']:.4f} to the prediction "
        f"(demonstrations from the base), {group['tv_to_self_consistent']:.4f} to the fixed "
        f"point with demonstrations from the student (which lies "
        f"{group['self_consistent_tv_from_prediction']:.4f} from the prediction)",
        "",
        "live teacher, per checkpoint:",
        "",
        "| step | acc | eff. #C | slope | teacher TV to edge(2) on student | teacher TV to start "
        "| teacher TV to student | eff. #C of one more frozen round |",
        "|---|---|---|---|---|---|---|---|",
    ]
    live = next(r for r in results["runs"] if r["label"] == "sequence live")
    for c in live["history"]:
        lines.append(
            f"| {c['step']} | {c['accuracy']:.4f} | {c['effective_correct']:.2f} | "
            f"{c['gap_slope']:.3f} | {c['teacher_tv_to_context']:.4f} | "
            f"{c['teacher_tv_to_start']:.4f} | {c.get('teacher_tv_to_student', math.nan):.4f} | "
            f"{c['one_round_effective']:.2f} |"
        )
    rounds = results["iterated_edge"]
    lines += ["", "iterated SD with edge(2) from the network's base:", ""]
    lines += ["| round | acc | eff. #C | slope |", "|---|---|---|---|"]
    for r in rounds:
        lines.append(
            f"| {r['round']} | {r['accuracy']:.4f} | {r['effective_correct']:.2f} | "
            f"{r['gap_slope']:.3f} |"
        )
    final = live["realised"]["effective_correct"]
    lines += [
        "",
        f"the live run's final effective #C {final:.2f} sits at iterated round "
        f"{_equivalent_round(final, rounds):.2f} of edge(2)",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="grid3, tiny network, few steps")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--all-seeds", action="store_true", help="token-forward and jsd=0.5 on every seed too"
    )
    args = parser.parse_args(argv)
    results = run(Path(args.out), args.quick, args.threads, args.all_seeds)
    print(f"wrote {args.out}/results.json and summary.md in {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
