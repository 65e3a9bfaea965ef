"""``python -m tilt.train --suite NAME --share FEATURES``: one shared-weight student over a suite.

The route of :mod:`tilt.cli.train` for weight sharing (``docs/sharing.md``):
the suite (:func:`tilt.share.share_suite`) is split into training and held-out
prompts (``--split``, seeded by ``--seed``), one log-linear student
``logit(h, u, x) = theta . phi(h, u, x)`` (``--share``: a built-in feature map
or ``MODULE:NAME``, a user map) is trained on the training prompts, exactly
(:func:`tilt.share.train_shared`) or from samples
(:func:`tilt.share._sampled.train_sampled`, ``--mode sampled``), and both sets
are measured at the start and at the end: mean pass@k over the prompts and the
mean effective number of correct rollouts.  With ``prefix`` features (no
sharing) and a frozen teacher it also reports the distance to each training
prompt's tabular closed form.  A table, or one JSON object (schema
``tilt.train.share/1``) with ``--json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import numpy as np

from tilt.cli import finite_float, fmt, table
from tilt.cli._args import instance_spec
from tilt.cli._progress import Progress
from tilt.context import DEFAULT_STRENGTH

if TYPE_CHECKING:
    from tilt.share import FeatureMap

__all__ = ["SCHEMA", "add_share_arguments", "check_share_route", "run_share"]

SCHEMA = "tilt.train.share/1"

_TABULAR_ONLY = (
    ("graph", "grid5", "--graph"),
    ("source", None, "--source"),
    ("target", None, "--target"),
    ("horizon", None, "--horizon"),
    ("directed", False, "--directed"),
    ("base", "default", "--base"),
    ("reference", None, "--reference"),
    ("top_k", None, "--top-k"),
)
"""Options that describe one tabular instance: refused with ``--suite``/``--share``."""


def add_share_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--suite``, ``--share``, ``--split`` and ``--ema-rate``."""
    s = parser.add_argument_group("weight sharing (docs/sharing.md)")
    s.add_argument(
        "--suite",
        metavar="NAME|FILE",
        help="train one shared student over a suite (tilt.share's or tilt.suite's, or a JSON "
        "file) instead of one --graph; needs --share",
    )
    s.add_argument(
        "--share",
        metavar="FEATURES",
        help="feature map of the shared student: prefix, edge, closer, or MODULE:NAME "
        "(a callable (spaces, bases) -> SharedFeatures)",
    )
    s.add_argument(
        "--split",
        default="region",
        help="training/held-out split: region, random, distance, targets (default region)",
    )
    s.add_argument(
        "--ema-rate",
        type=finite_float,
        default=0.05,
        help="rate of --teacher ema (default 0.05, SDPO's)",
    )


def check_share_route(args: argparse.Namespace) -> bool:
    """Whether the arguments ask for the shared student; ``ValueError`` on a half-given route."""
    if args.suite is None and args.share is None:
        if args.teacher == "ema":
            raise ValueError(
                "--teacher ema needs weight sharing (--suite NAME --share FEATURES): a tabular "
                "student's teacher is frozen or live"
            )
        return False
    if args.share is None:
        raise ValueError(
            "--suite needs --share FEATURES (prefix, edge, closer or MODULE:NAME): the tabular "
            "trainer takes one --graph"
        )
    if args.suite is None:
        raise ValueError(
            "--share needs --suite NAME: weight sharing trains one student over a suite of prompts"
        )
    given = [flag for dest, default, flag in _TABULAR_ONLY if getattr(args, dest) != default]
    if given:
        verbs = (
            "describes one tabular instance and does"
            if len(given) == 1
            else ("describe one tabular instance and do")
        )
        raise ValueError(
            f"{', '.join(given)} {verbs} not apply with --suite/--share (each prompt of the "
            "suite carries its own)"
        )
    return True


def _feature_map(text: str) -> str | FeatureMap:
    """A built-in name, or the object ``NAME`` of module ``MODULE`` for ``MODULE:NAME``."""
    from tilt.share import FEATURES

    if text in FEATURES:
        return text
    if ":" not in text:
        raise ValueError(
            f"unknown feature map {text!r}: choose one of {', '.join(FEATURES)}, or give "
            "MODULE:NAME, a callable (spaces, bases) -> SharedFeatures"
        )
    module, _, name = text.partition(":")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load the feature map {text!r}: {exc}") from None
    if not callable(found):
        raise ValueError(f"the feature map {text!r} is not callable")
    return cast("FeatureMap", found)


def _finite(value: object) -> object:
    """JSON-ready: non-finite floats become ``None``, recursively."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_share(args: argparse.Namespace, progress: Callable[[int, int], object] | None) -> int:
    """Train and report the shared student described by ``args`` (see the module docstring)."""
    from tilt.context import make_context
    from tilt.share import (
        SHARED_DEMOS,
        SampledObjective,
        ShareObjective,
        mean_total_variation,
        set_measures,
        share_suite,
        split_suite,
        suite_student,
        train_sampled,
        train_shared,
    )

    instance_spec(args).check()
    if not 0 < args.ema_rate <= 1:
        raise ValueError(f"--ema-rate must lie in (0, 1], got {args.ema_rate!r}")
    objective = args.objective
    rl = objective.sd is None
    if args.mode == "exact" and args.demos not in SHARED_DEMOS:  # before any enumeration
        raise ValueError(
            f"--demos {args.demos} is not built for exact shared training: use "
            f"{' or '.join(SHARED_DEMOS)}, or --mode sampled"
        )
    features = _feature_map(args.share)
    suite = share_suite(args.suite, args.seed)
    train, held = split_suite(suite, args.split, args.seed)
    suited = suite_student(suite, features, max_rollouts=args.max_rollouts)
    student, initial = suited.student, suited.initial
    built = student.features
    strength = DEFAULT_STRENGTH[args.context] if args.strength is None else args.strength
    model = None if rl else make_context(args.context, strength)
    beta = args.beta if rl else 1.0
    started = time.perf_counter()
    pi0 = SampledObjective(
        objective.spec, initial, model, args.demos, args.anchor, beta, args.alpha
    )  # validates the objective's options for both modes
    if args.mode == "sampled":
        run = train_sampled(
            student,
            pi0,
            train,
            teacher=args.teacher,
            steps=args.steps,
            lr=args.lr,
            batch=args.batch,
            seed=args.seed,
            ema_rate=args.ema_rate,
            record_every=args.record_every,
            progress=progress,
        )
        recorded = sorted({0, args.steps, *range(args.record_every, args.steps, args.record_every)})
    else:
        exact = ShareObjective(
            objective.spec, initial, model, args.demos, args.anchor, beta if rl else 0.1
        )
        run = train_shared(
            student,
            exact,
            train,
            teacher=args.teacher,
            steps=args.steps,
            lr=args.lr,
            ema_rate=args.ema_rate,
            progress=progress,
        )
        recorded = list(range(len(run.thetas)))
    seconds = time.perf_counter() - started
    if isinstance(progress, Progress):
        progress.close()

    def measured(theta: np.ndarray, which: np.ndarray) -> dict[str, object]:
        return set_measures(student.policies(theta, which), None, args.k).as_dict()

    measures = {
        "train": {"base": measured(built.initial, train), "trained": measured(run.theta, train)},
        "held_out": {"base": measured(built.initial, held), "trained": measured(run.theta, held)},
    }
    distance = None
    if args.share == "prefix" and (rl or run.teacher == "frozen"):
        per_prompt = [
            mean_total_variation(student, run.theta, np.array([i]), [q])
            for i, q in zip(train, pi0.tabular_optima(train), strict=True)
        ]
        distance = {"mean": float(np.mean(per_prompt)), "max": float(np.max(per_prompt))}
    report = {
        "schema": SCHEMA,
        "suite": suite.name,
        "features": args.share,
        "n_params": built.n_params,
        "split": args.split,
        "train": train.tolist(),
        "held_out": held.tolist(),
        "objective": run.objective,
        "mode": args.mode,
        "teacher": run.teacher,
        "optimizer": run.optimizer,
        "lr": run.lr,
        "batch": args.batch if args.mode == "sampled" else None,
        "seed": args.seed,
        "beta": args.beta if rl else None,
        "anchor": args.anchor,
        "context": None if model is None else model.describe(),
        "demos": args.demos,
        "ema_rate": args.ema_rate if run.teacher == "ema" else None,
        "steps": int(recorded[-1]),
        "tv_to_closed_form": distance,
        "measures": measures,
        "history": {"step": recorded, "train_accuracy": run.train_accuracy.tolist()},
    }
    if args.json:
        print(json.dumps(_finite(report), indent=1, allow_nan=False))
        return 0
    print(_table(report, args.k, seconds))
    return 0


def _table(report: dict[str, object], ks: list[int], seconds: float) -> str:
    train, held = report["train"], report["held_out"]
    assert isinstance(train, list)
    assert isinstance(held, list)
    how = str(report["optimizer"]) + ("" if report["lr"] is None else f" lr {report['lr']:g}")
    if report["mode"] == "sampled":
        how += f", batch {report['batch']}, seed {report['seed']}"
    lines = [
        f"suite {report['suite']}: {len(train)} training / {len(held)} held-out prompts "
        f"(split {report['split']}); features {report['features']} "
        f"({report['n_params']} parameters)",
        f"objective {report['objective']}"
        + ("" if report["beta"] is None else f" (beta {report['beta']:g})")
        + f", mode {report['mode']}, teacher {report['teacher']}, {how}: "
        f"{report['steps']} steps in {seconds:.2f} s",
    ]
    distance = report["tv_to_closed_form"]
    if isinstance(distance, dict):
        lines.append(
            "distance to the tabular closed form over the training prompts: total variation "
            f"mean {distance['mean']:.3e}, max {distance['max']:.3e}"
        )
    measures = report["measures"]
    assert isinstance(measures, dict)
    rows = []
    for which, label in (("train", "training"), ("held_out", "held-out")):
        for policy in ("base", "trained"):
            m = measures[which][policy]
            rows.append(
                [label, policy]
                + [fmt(m["mean_pass_at_k"][str(k)]) for k in ks]
                + [fmt(m["effective_correct"], 2)]
            )
    header = ["prompts", "policy", *(f"mean pass@{k}" for k in ks), "eff. correct"]
    return "\n".join(lines) + "\n\n" + table(header, rows)
