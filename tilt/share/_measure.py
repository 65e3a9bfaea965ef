"""What a shared student does to training and held-out prompts, at matched training pass@1.

:func:`set_measures` summarises the policies of a set of prompts: mean
``pass@k = 1 - (1 - q(C))^k`` over the prompts, the mean effective number of
correct rollouts ``exp H(q(. | C))``, and the mean strategy shares
(:mod:`tilt.measures.strategies`; a share averaged over the prompts that have that
strategy).  :func:`run_experiment` trains every objective on the training
prompts and measures both sets at each matched training pass@1.

RL is matched (:data:`RL_MATCHES`) either along its training run like the SD
objectives (``'checkpoint'``: the point between two gradient steps where the
mean training pass@1 is the target), or at its optimum (``'beta'``: the
converged RL student at the ``beta`` whose mean training pass@1 is the target,
:func:`tilt.share._rl_match.match_rl_beta`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tilt._numerics import FloatArray, IntArray
from tilt.context import ContextModel
from tilt.measures import correct_entropy
from tilt.measures.strategies import Strategies, strategy_labels, strategy_mass
from tilt.policy import Policy, base_policy
from tilt.share._exact import EMA_RATE, SharedStudent, ShareObjective
from tilt.share._features import FeatureMap, make_features
from tilt.share._rl_match import BETA_RANGE, match_rl_beta
from tilt.share._run import ShareRun
from tilt.share._train import MATCH_TOL, match_run, train_shared
from tilt.space import DEFAULT_MAX_ROLLOUTS, enumerate_rollouts
from tilt.suite import Suite

__all__ = [
    "SetMeasures",
    "Checkpoint",
    "Experiment",
    "SuiteStudent",
    "suite_student",
    "set_measures",
    "run_experiment",
    "DEFAULT_KS",
    "RL_MATCHES",
]

DEFAULT_KS = tuple(2**i for i in range(11))
"""1, 2, 4, ..., 1024."""

RL_MATCHES = ("checkpoint", "beta")
"""How RL is matched to a training pass@1: along its run, or by ``beta`` at its optimum."""


@dataclass(frozen=True)
class SetMeasures:
    """Measures of the policies of one set of prompts.

    Attributes
    ----------
    accuracy : tuple of float
        ``q(C)`` per prompt.
    mean_pass_at_k : dict int -> float
    effective_correct : float
        Mean over prompts of ``exp H(q(. | C))``.
    strategy_shares : dict str -> float
        Mean share of each strategy within ``C`` (empty without a strategy map).
    """

    accuracy: tuple[float, ...]
    mean_pass_at_k: dict[int, float]
    effective_correct: float
    strategy_shares: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return {
            "accuracy": list(self.accuracy),
            "mean_pass_at_k": {str(k): v for k, v in self.mean_pass_at_k.items()},
            "effective_correct": self.effective_correct,
            "strategy_shares": self.strategy_shares,
        }


def set_measures(
    policies: Sequence[Policy],
    strategies: Sequence[Strategies | None] | None = None,
    ks: Sequence[int] = DEFAULT_KS,
) -> SetMeasures:
    """Mean pass@k, effective correct rollouts and strategy shares over ``policies``."""
    acc = np.array([p.accuracy for p in policies])
    miss = np.array([p.incorrect_mass for p in policies])
    with np.errstate(divide="ignore"):
        log_miss = np.log(miss)
    passes = {int(k): float(np.mean(-np.expm1(k * log_miss))) for k in ks}
    effective = float(np.mean([math.exp(correct_entropy(p)) for p in policies]))
    totals: dict[str, list[float]] = {}
    for policy, labels in zip(policies, strategies or [None] * len(policies), strict=True):
        if labels is None:
            continue
        mass = strategy_mass(policy, labels)
        total = mass.sum()
        for name, m in zip(labels.names, mass, strict=True):
            totals.setdefault(name, []).append(float(m / total) if total > 0 else math.nan)
    shares = {name: float(np.mean(v)) for name, v in sorted(totals.items())}
    return SetMeasures(tuple(float(a) for a in acc), passes, effective, shares)


@dataclass(frozen=True, eq=False)
class SuiteStudent:
    """The shared student of a suite, its initial policies, and how its sets are measured.

    Attributes
    ----------
    student : SharedStudent
    initial : tuple of Policy
        Every prompt's policy at the initial parameters (``pi0`` of the objectives).
    labels : tuple of Strategies or None
        Each prompt's strategy map (``None``: no shares).
    ks : tuple of int
    """

    student: SharedStudent
    initial: tuple[Policy, ...]
    labels: tuple[Strategies | None, ...]
    ks: tuple[int, ...] = DEFAULT_KS

    def measure(self, theta: FloatArray, prompts: IntArray) -> SetMeasures:
        """:func:`set_measures` of ``prompts`` at ``theta``."""
        return set_measures(
            self.student.policies(theta, prompts), [self.labels[int(i)] for i in prompts], self.ks
        )


def suite_student(
    suite: Suite,
    features: str | FeatureMap,
    strategy: str | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    max_rollouts: int = DEFAULT_MAX_ROLLOUTS,
) -> SuiteStudent:
    """Enumerate the prompts of ``suite`` (each within ``max_rollouts``) and build its shared
    student with ``features``."""
    spaces = [enumerate_rollouts(p.task, max_rollouts) for p in suite.prompts]
    bases = [base_policy(s, p.base, p.seed) for s, p in zip(spaces, suite.prompts, strict=True)]
    built = make_features(features, spaces, bases)
    student = SharedStudent(spaces, built)
    labels = tuple(strategy_labels(s, strategy) if strategy else None for s in spaces)
    return SuiteStudent(student, tuple(student.policies(built.initial)), labels, tuple(ks))


@dataclass(frozen=True)
class Checkpoint:
    """One objective at one matched training pass@1 (``None`` measures: not matched).

    ``beta`` is RL's KL coefficient when RL is matched by ``beta`` at its optimum;
    ``note`` says why a checkpoint is not matched (``''`` when it is).
    """

    objective: str
    target: float
    train: SetMeasures | None
    held_out: SetMeasures | None
    beta: float | None = None
    note: str = ""


@dataclass(frozen=True)
class Experiment:
    """Every objective's run and its checkpoints, with the base's measures."""

    suite: str
    features: str
    n_params: int
    train: IntArray
    held_out: IntArray
    base_train: SetMeasures
    base_held_out: SetMeasures
    runs: dict[str, ShareRun]
    checkpoints: list[Checkpoint]
    rl_match: str = "checkpoint"


def run_experiment(
    suite: Suite,
    features: str | FeatureMap,
    split: tuple[IntArray, IntArray],
    objectives: Sequence[str],
    targets: Sequence[float],
    *,
    model: ContextModel | None,
    teacher: str = "live",
    demos: str = "own",
    anchor: float = 0.0,
    beta: float = 0.1,
    steps: int = 300,
    lr: float | None = 1.0,
    ema_rate: float = EMA_RATE,
    strategy: str | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    progress: Callable[[str, int, int], object] | None = None,
    mode: str = "exact",
    batch: int = 64,
    seed: int | None = None,
    rl_match: str = "checkpoint",
) -> Experiment:
    """Train each objective on the training prompts; measure both sets at matched training pass@1.

    Each target in ``targets`` is a mean training accuracy; a run that does not
    reach it (or starts above it) gets ``None`` measures there.  ``mode``,
    ``batch`` and ``seed`` go to :func:`tilt.share._train.train_shared` (each
    objective's sampled run draws from ``seed``).  With ``rl_match='beta'`` RL
    is not trained along a run: each target gets the converged RL student at
    the ``beta`` that matches it (searched from ``beta``, each solve
    warm-started), and its checkpoint records that ``beta``.
    """
    if rl_match not in RL_MATCHES:
        raise ValueError(f"unknown rl_match {rl_match!r}: choose one of {', '.join(RL_MATCHES)}")
    built = suite_student(suite, features, strategy, ks)
    student, initial, measured = built.student, built.initial, built.measure
    train, held = split

    runs: dict[str, ShareRun] = {}
    checkpoints = []
    for name in objectives:
        if name == "rl" and rl_match == "beta":
            checkpoints.extend(_beta_matched(student, initial, split, targets, beta, measured))
            continue
        objective = ShareObjective(
            name, initial, model, demos, anchor if name != "rl" else 0.0, beta
        )
        tick = None if progress is None else (lambda t, n, name=name: progress(name, t, n))
        run = train_shared(
            student,
            objective,
            train,
            teacher=teacher,
            steps=steps,
            lr=lr,
            ema_rate=ema_rate,
            progress=tick,
            mode=mode,
            batch=batch,
            seed=seed,
        )
        runs[name] = run
        for target in targets:
            match = match_run(student, run, train, target)
            theta = match.theta
            checkpoints.append(
                Checkpoint(
                    name,
                    float(target),
                    None if theta is None else measured(theta, train),
                    None if theta is None else measured(theta, held),
                    note=match.message,
                )
            )
    name = features if isinstance(features, str) else getattr(features, "__name__", "custom")
    return Experiment(
        suite.name,
        name,
        student.n_params,
        train,
        held,
        measured(student.features.initial, train),
        measured(student.features.initial, held),
        runs,
        checkpoints,
        rl_match,
    )


def _beta_matched(
    student: SharedStudent,
    initial: tuple[Policy, ...],
    split: tuple[IntArray, IntArray],
    targets: Sequence[float],
    beta: float,
    measured: Callable[[FloatArray, IntArray], SetMeasures],
) -> list[Checkpoint]:
    """RL's optimum at the ``beta`` of each target, warm-started from the previous target's."""
    train, held = split
    out = []
    start = None
    for target in targets:
        match = match_rl_beta(student, initial, train, float(target), beta=beta, start=start)
        if match is None:
            note = f"no beta in {BETA_RANGE} reaches it"
            out.append(Checkpoint("rl", float(target), None, None, note=note))
            continue
        off = abs(match.train_accuracy - float(target))
        if off > MATCH_TOL:
            note = (
                f"RL's optimum at beta = {match.beta:.6g} has accuracy "
                f"{match.train_accuracy:.17g}, {off:.3g} from the target: not matched"
            )
            out.append(Checkpoint("rl", float(target), None, None, note=note))
            continue
        beta, start = match.beta, match.theta
        checkpoint = Checkpoint(
            "rl", float(target), measured(match.theta, train), measured(match.theta, held), beta
        )
        out.append(checkpoint)
    return out
