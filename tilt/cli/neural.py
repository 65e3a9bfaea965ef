"""``python -m tilt.neural``: compare, pretrain, train and audit-log on a task-token network.

Subcommands (each a thin ``main``: parse, call the library, print)::

    python -m tilt.neural pretrain --graph grid4 --context edge --strength 2 --out net --seed 0
    python -m tilt.neural compare --model net --sd jsd=0.5 --k 1 8 64
    python -m tilt.neural train --model net --objective sequence --teacher frozen \\
        --steps 400 --batch 128 --seed 0 --out trained
    python -m tilt.neural audit-log --model net --prompts 200 --out run.jsonl

Bad input is one line on stderr and exit status 2, with nothing written.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tilt.cli import (
    OneLineParser,
    check_output_file,
    finite_float,
    non_negative_int,
    positive_int,
    run_main,
    write_atomic,
)
from tilt.cli._args import add_k_argument, add_objective_arguments
from tilt.cli._progress import Progress
from tilt.context import CONTEXTS, DEFAULT_STRENGTH
from tilt.engines import EnumeratedInstance

__all__ = ["main"]

PROG = "python -m tilt.neural"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="precision of the network's forward passes (default float32)",
    )
    parser.add_argument(
        "--threads", type=positive_int, default=1, help="torch CPU threads (default 1)"
    )
    parser.add_argument(
        "--table-limit",
        type=positive_int,
        help="most table entries (prompts x prefixes) before refusing (default 50,000,000)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m tilt.neural",
        description="A causal LM over a task's tokens as tilt's model: exact tables, "
        "predictions, pretraining, training with real losses, audit logs.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    c = sub.add_parser("compare", help="tilt.compare's table for a network directory")
    c.add_argument("--model", required=True, metavar="DIR", help="a network directory")
    c.add_argument(
        "--demos", default="own", choices=("own", "uniform"), help="demonstrations (default own)"
    )
    c.add_argument("--beta", type=finite_float, default=0.0, help="RL's KL coefficient")
    add_objective_arguments(c)
    out = c.add_argument_group("output")
    add_k_argument(out)
    out.add_argument("--json", action="store_true", help="print one JSON object")
    _common(c)

    p = sub.add_parser("pretrain", help="make a small network that follows a tilt context model")
    p.add_argument("--graph", default="grid4", help="named graph or graph file (default grid4)")
    p.add_argument("--source", help="source node label")
    p.add_argument("--target", help="target node label")
    p.add_argument("--horizon", type=non_negative_int, help="most moves per rollout")
    p.add_argument("--context", default="edge", choices=CONTEXTS, help="context model (edge)")
    p.add_argument("--strength", type=finite_float, help="its strength (default: tilt's)")
    p.add_argument("--out", required=True, metavar="DIR", help="new model directory")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--steps", type=positive_int, default=2000)
    p.add_argument("--batch", type=positive_int, default=128)
    p.add_argument("--lr", type=finite_float, default=3e-3)
    p.add_argument("--layers", type=positive_int, default=2)
    p.add_argument("--width", type=positive_int, default=64)
    p.add_argument("--heads", type=positive_int, default=4)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    _common(p)

    t = sub.add_parser("train", help="train a network with a real loss; measure it exactly")
    t.add_argument("--model", required=True, metavar="DIR")
    t.add_argument("--objective", default="sequence", help="rl or an SD spec (default sequence)")
    t.add_argument("--teacher", default="frozen", choices=("frozen", "live", "ema"))
    t.add_argument("--demos", default="group", choices=("group", "base"))
    t.add_argument("--mode", default="sampled", choices=("sampled", "exact"))
    t.add_argument("--steps", type=positive_int, default=400)
    t.add_argument("--batch", type=positive_int, default=128)
    t.add_argument("--group", type=positive_int, default=8)
    t.add_argument("--lr", type=finite_float, default=5e-4)
    t.add_argument("--ema-rate", type=finite_float, default=0.05)
    t.add_argument("--beta", type=finite_float, help="RL's beta (default: matched to SD)")
    t.add_argument("--eval-every", type=positive_int, default=50)
    t.add_argument("--watch-teacher", action="store_true", help="measure the network's teacher")
    t.add_argument("--seed", type=non_negative_int, default=0)
    t.add_argument("--out", metavar="DIR", help="write the trained network here")
    t.add_argument("--checkpoints", metavar="DIR", help="write a network at every measurement")
    t.add_argument("--json", action="store_true")
    _common(t)

    a = sub.add_parser("audit-log", help="sample a network and log what tilt.audit reads")
    a.add_argument("--model", required=True, metavar="DIR")
    a.add_argument("--prompts", type=positive_int, default=100)
    a.add_argument("--rollouts", type=positive_int, default=8)
    a.add_argument("--demos-per-rollout", type=positive_int, default=4)
    a.add_argument(
        "--top",
        action="store_true",
        help="also write the per-token fields of per-token audits (tokens; the student's and "
        "every teacher's whole next-move distribution per position)",
    )
    a.add_argument(
        "--objective",
        metavar="SPEC",
        help="the objective the run trains with, written on every line (tilt.audit's default)",
    )
    a.add_argument("--seed", type=non_negative_int, default=0)
    a.add_argument("--out", required=True, metavar="FILE.jsonl")
    _common(a)
    return parser


def _check_new_folder(path: str) -> Path:
    """A folder to create (or an empty one to fill); ``ValueError`` before any work otherwise."""
    folder = Path(path)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"cannot write {path!r}: it exists and is not an empty folder")
    parent = folder.resolve().parent
    if not parent.is_dir():
        raise ValueError(f"cannot write {path!r}: folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"cannot write {path!r}: folder {str(parent)!r} is not writable")
    return folder


def _write_network(folder: Path, model: Any, task: Any) -> None:
    """Save through a temporary folder next to ``folder``, then rename it into place."""
    from tilt.neural.network import save_network

    temporary = Path(tempfile.mkdtemp(dir=folder.resolve().parent, prefix=f".{folder.name}."))
    try:
        save_network(temporary, model, task)
        if folder.exists():
            folder.rmdir()
        os.replace(temporary, folder)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _setup(args: argparse.Namespace) -> None:
    import torch
    from transformers.utils import logging

    hf_logging: Any = logging  # untyped module functions
    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()  # stderr carries errors and our own progress only
    hf_logging.set_verbosity_error()


def _load(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from tilt.neural.network import load_network

    return load_network(args.model, args.dtype)


def _tables(args: argparse.Namespace, model: Any, space: Any) -> Any:
    from tilt.neural.tables import TABLE_LIMIT, network_tables

    limit = TABLE_LIMIT if args.table_limit is None else args.table_limit
    return network_tables(model, space, limit=limit)


def _compare(args: argparse.Namespace) -> int:
    from tilt.compare import as_json, compare, format_table, sd_variants
    from tilt.neural.model import NetworkContext

    _setup(args)
    model, task, space = _load(args)
    if args.beta < 0:
        raise ValueError(f"--beta must be >= 0, got {args.beta!r}")
    variants = sd_variants(args.sd, args.preset)  # before the tables: a bad spec costs nothing
    tables = _tables(args, model, space)
    instance = EnumeratedInstance(
        space,
        tables.base,
        NetworkContext(tables),
        args.demos,
        1.0,
        0.0,
        args.beta,
        0,
        base_name=f"network {args.model}",
    )
    comparison = compare(instance, args.k, 1, variants)
    if args.json:
        print(json.dumps(as_json(comparison), indent=2, allow_nan=False))
    else:
        print(format_table(comparison))
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    import time

    from tilt.context import make_context
    from tilt.neural.network import NetworkTask, build_gpt2, seed_everything, task_space
    from tilt.neural.pretrain import PretrainOptions, fit_report, pretrain
    from tilt.neural.tables import TABLE_LIMIT, check_table_size
    from tilt.neural.tokens import TaskTokens
    from tilt.policy import base_policy

    folder = _check_new_folder(args.out)
    _setup(args)
    strength = DEFAULT_STRENGTH[args.context] if args.strength is None else args.strength
    context = make_context(args.context, strength)
    task = NetworkTask(
        args.graph, args.source, args.target, args.horizon, False, args.context, strength
    )
    space = task_space(task)
    limit = TABLE_LIMIT if args.table_limit is None else args.table_limit
    check_table_size(space, space.n_correct + 1, limit)
    options = PretrainOptions(args.steps, args.batch, args.lr)
    base = base_policy(space)
    tokens = TaskTokens(space)
    model = build_gpt2(
        tokens, n_layer=args.layers, n_embd=args.width, n_head=args.heads, seed=args.seed
    )
    seed_everything(args.seed)
    bar = Progress("pretrain")
    update, close = bar, bar.close
    start = time.perf_counter()
    try:
        losses = pretrain(
            model, base, context, options, args.seed, lambda s, _loss: update(s + 1, options.steps)
        )
    finally:
        close()
    seconds = time.perf_counter() - start
    from tilt.neural.tables import network_tables

    tables = network_tables(model.to(_dtype(args.dtype)), space, limit=limit)
    report = fit_report(tables, base, context)
    _write_network(folder, model.float(), task)
    summary = {
        "graph": space.task.name,
        "rollouts": space.n_rollouts,
        "correct": space.n_correct,
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": options.steps,
        "seconds": seconds,
        "final_loss": losses[-1],
        "base_tv": report.base_tv,
        "teacher_tv": report.teacher_tv,
        "worst_teacher_tv": report.worst_teacher_tv,
        "context": context.describe(),
        "out": str(folder),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"{space.task.name}: {space.n_rollouts} rollouts, {space.n_correct} correct; "
            f"{summary['parameters']:,} parameters, {options.steps} steps in {seconds:.1f} s\n"
            f"base TV from tilt's base: {report.base_tv:.4f}\n"
            f"teacher TV from {context.describe()} (demonstration-weighted mean): "
            f"{report.teacher_tv:.4f} (worst {report.worst_teacher_tv:.4f})\n"
            f"wrote {folder}"
        )
    return 0


def _dtype(name: str) -> Any:
    import torch

    return torch.float64 if name == "float64" else torch.float32


def _train(args: argparse.Namespace) -> int:
    from tilt.context import make_context
    from tilt.neural.network import seed_everything
    from tilt.neural.train import NeuralTrainOptions, train_network

    for name in ("out", "checkpoints"):
        if getattr(args, name) is not None:
            _check_new_folder(getattr(args, name))
    options = NeuralTrainOptions(
        objective=args.objective,
        teacher=args.teacher,
        demos=args.demos,
        mode=args.mode,
        steps=args.steps,
        batch=args.batch,
        group=args.group,
        lr=args.lr,
        ema_rate=args.ema_rate,
        beta=args.beta,
        eval_every=args.eval_every,
        watch_teacher=args.watch_teacher,
    )
    _setup(args)
    model, task, space = _load(args)
    context = None
    if args.watch_teacher:
        if task.context is None:
            raise ValueError("--watch-teacher needs a network pretrained on a context model")
        context = make_context(task.context, float(task.strength))
    tables = _tables(args, model, space)
    seed_everything(args.seed)
    saved: list[Path] = []

    def on_checkpoint(point: Any, net: Any) -> None:
        if args.checkpoints is not None:
            root = Path(args.checkpoints)
            root.mkdir(exist_ok=True)
            _write_network(root / f"step-{point.step:06d}", net, task)
            saved.append(root / f"step-{point.step:06d}")

    bar = Progress(f"train {options.objective}")
    update, close = bar, bar.close
    try:
        result = train_network(model, tables, options, args.seed, context, update, on_checkpoint)
    finally:
        close()
    if args.out is not None:
        _write_network(Path(args.out), model, task)
    summary = {
        "objective": options.objective,
        "teacher": options.teacher,
        "demos": options.demos,
        "mode": options.mode,
        "steps": options.steps,
        "batch": options.batch,
        "seed": args.seed,
        "beta": result.beta,
        "seconds": result.seconds,
        "predicted": {
            "accuracy": result.predicted.accuracy,
        },
        "history": [c.as_dict() for c in result.history],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    lines = [
        f"{options.objective}, teacher {options.teacher}, demonstrations {options.demos}, "
        f"{options.mode}: {options.steps} steps of {options.batch} in {result.seconds:.1f} s"
        + ("" if result.beta is None else f"; RL beta {result.beta:.4g}")
    ]
    lines.append("step      TV  accuracy  effective#C  gap slope")
    for c in result.history:
        lines.append(
            f"{c.step:>4} {c.tv:7.4f}  {c.accuracy:8.4f}  {c.effective_correct:11.2f}  "
            f"{c.gap_slope:9.4f}"
        )
    print("\n".join(lines))
    return 0


def _audit_log(args: argparse.Namespace) -> int:
    from tilt.neural.audit_log import AuditLogOptions, audit_jsonl
    from tilt.neural.tokens import TaskTokens

    check_output_file(args.out)
    options = AuditLogOptions(
        args.prompts, args.rollouts, args.demos_per_rollout, args.top, args.objective
    )
    _setup(args)
    model, _task, space = _load(args)
    write_atomic(args.out, audit_jsonl(model, TaskTokens(space), options, args.seed))
    print(f"wrote {args.prompts * args.rollouts:,} rollouts to {args.out}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "compare": _compare,
    "pretrain": _pretrain,
    "train": _train,
    "audit-log": _audit_log,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tilt.neural``; returns the exit status."""
    args = _parser().parse_args(argv)
    return run_main(f"{PROG} {args.command}", lambda: COMMANDS[args.command](args))
