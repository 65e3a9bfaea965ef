"""Training a network with the losses real trainers run, and watching its exact distribution.

Each step reads the student's whole next-move table by teacher forcing along
the prefix tree (:func:`tilt.neural.tables.child_logits`, with gradients),
samples a batch of rollouts from it, and forms the stochastic gradient in the
masked logits that the named estimator gives (tilt's estimators,
:mod:`tilt.train._estimators`); backpropagating ``sum_p g_p z_p(theta)``
through the network is then exactly backpropagating the estimator's loss on
the sampled sequences (the chain rule through the masked logits ``z``).

Estimators (``PRACTICE.md`` of the project; ``docs/neural.md``):

* ``rl`` -- REINFORCE on ``r(y) - beta (log q(y) - log pi0(y))``, leave-one-out baseline;
* ``sequence`` (``hybrid=beta``) -- score function of ``log q(y) - log T_c(y)``, leave-one-out;
* ``token``, ``token-forward``, ``jsd=a`` -- full-distribution per-token losses at
  every visited prefix (``a = 1``, ``0``, ``a``);
* ``length-weighted`` / ``discount=g`` -- the sampled-token reverse KL, each
  sequence's tokens averaged (TRL's reduction) / with discounted return-to-go;
* ``forward`` -- fine-tuning on teacher samples (frozen teacher only);
* exact mode: the expected gradient over the enumerated space (tilt's exact objective).

Teachers: ``frozen`` (the starting network with ``c`` in context: its tables),
``live`` (the current network with ``c`` in context) and ``ema`` (an
exponential moving average of the weights).  Demonstrations: ``group`` (SDPO:
a uniformly drawn successful sibling in the rollout's group, itself excluded;
a rollout without one gets no loss) or ``base`` (independent draws from the
frozen base's own correct rollouts, what the closed forms assume).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tilt._numerics import FloatArray, IntArray
from tilt.context import ContextModel, demonstrations
from tilt.measures import correct_entropy, distinct_at_ks, gap_slope
from tilt.neural.model import NetworkContext
from tilt.neural.tables import (
    NetworkTables,
    child_logits,
    masked_log_conditionals,
    network_tables,
    path_logits,
)
from tilt.neural.tokens import TaskTokens
from tilt.objectives import rl_matched, rl_optimum
from tilt.policy import Policy, as_generator
from tilt.train import (
    ExactObjective,
    TrainObjective,
    full_vocabulary_gradient,
    leave_one_out,
    leaves_of,
    parse_train_objective,
    sample_categorical,
    sample_paths,
    sampled_token_coefficients,
    score_function_gradient,
    step_gradient,
    step_log_teacher,
)

__all__ = [
    "TEACHERS",
    "DEMO_SOURCES",
    "MODES",
    "NeuralTrainOptions",
    "Checkpoint",
    "NeuralTrainResult",
    "predicted_optimum",
    "train_network",
    "total_variation",
    "sampled_gradient",
    "frozen_conditionals",
]

TEACHERS = ("frozen", "live", "ema")
DEMO_SOURCES = ("group", "base")
MODES = ("sampled", "exact")


@dataclass(frozen=True)
class NeuralTrainOptions:
    """Settings of :func:`train_network`.

    Attributes
    ----------
    objective : str
        ``rl`` or an SD spec of :data:`tilt.objectives.OBJECTIVES`.
    teacher : {'frozen', 'live', 'ema'}
    demos : {'group', 'base'}
    mode : {'sampled', 'exact'}
    steps, batch : int
    group : int
        Rollouts per group (SDPO's group; ``batch`` must be a multiple of it).
    lr : float
        Adam learning rate, decayed linearly to 0.
    ema_rate : float
        Weight of the student in each EMA update (SDPO's 0.05).
    beta : float or None
        RL's KL coefficient; ``None``: matched to sequence SD's predicted accuracy.
    eval_every : int
        Steps between exact measurements (and the last step).
    ks : tuple of int
        ``k`` of distinct@k.
    watch_teacher : bool
        At each measurement also read the network's in-context teacher at the
        current weights (``live``/``ema``: the teacher network) and compare it with
        ``context`` applied to the current student.
    """

    objective: str = "sequence"
    teacher: str = "frozen"
    demos: str = "group"
    mode: str = "sampled"
    steps: int = 400
    batch: int = 128
    group: int = 8
    lr: float = 5e-4
    ema_rate: float = 0.05
    beta: float | None = None
    eval_every: int = 50
    ks: tuple[int, ...] = (8, 64)
    watch_teacher: bool = False

    def __post_init__(self) -> None:
        parse_train_objective(self.objective)
        for name, choices in (("teacher", TEACHERS), ("demos", DEMO_SOURCES), ("mode", MODES)):
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}"
                )
        for name in ("steps", "batch", "group", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.batch % self.group:
            raise ValueError(f"batch ({self.batch}) must be a multiple of group ({self.group})")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not 0 < self.ema_rate <= 1:
            raise ValueError(f"ema_rate must be in (0, 1], got {self.ema_rate!r}")
        if self.beta is not None and not (math.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"beta must be a finite number > 0, got {self.beta!r}")
        if self.mode == "exact" and self.teacher != "frozen":
            raise ValueError(
                "exact mode takes the expectation over the frozen teacher's tables: use "
                "--teacher frozen (a live or EMA teacher changes with every step)"
            )
        if self.objective.strip() == "forward" and self.teacher != "frozen":
            raise ValueError("forward SD samples from the teacher's tables: use --teacher frozen")


@dataclass(frozen=True)
class Checkpoint:
    """The student's exact distribution at one step.

    ``teacher_tv_to_context`` (with ``watch_teacher``): the ``D``-weighted mean TV
    between the network's in-context teacher at this step and the context model
    applied to the current student; ``teacher_tv_to_start``: the same from the
    starting network's teacher; ``teacher_tv_to_student``: the same from the
    current student itself (how much a demonstration still moves the network;
    0 when it ignores its context); ``one_round_effective``: the effective number
    of correct rollouts of the sequence-SD optimum of the network's own tables
    at this step (one more frozen round from here).
    """

    step: int
    tv: float
    accuracy: float
    effective_correct: float
    gap_slope: float
    distinct_at_k: dict[int, float]
    teacher_tv_to_context: float | None = None
    teacher_tv_to_start: float | None = None
    teacher_tv_to_student: float | None = None
    one_round_effective: float | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready."""
        out: dict[str, object] = {
            "step": self.step,
            "tv": self.tv,
            "accuracy": self.accuracy,
            "effective_correct": self.effective_correct,
            "gap_slope": self.gap_slope,
            "distinct_at_k": {str(k): v for k, v in self.distinct_at_k.items()},
        }
        for name in (
            "teacher_tv_to_context",
            "teacher_tv_to_start",
            "teacher_tv_to_student",
            "one_round_effective",
        ):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@dataclass(frozen=True)
class NeuralTrainResult:
    """What :func:`train_network` did: the prediction, the history, the final student."""

    predicted: Policy
    final: Policy
    history: tuple[Checkpoint, ...]
    beta: float | None
    seconds: float
    options: NeuralTrainOptions
    extra: dict[str, object] = field(default_factory=dict)


def total_variation(p: Policy, q: Policy) -> float:
    """``TV(p, q) = 0.5 sum |p - q|``."""
    return 0.5 * float(np.abs(p.prob - q.prob).sum())


def predicted_optimum(
    tables: NetworkTables, objective: str, beta: float | None = None
) -> tuple[Policy, float | None]:
    """The closed form the objective predicts from the network's frozen tables, and RL's beta.

    RL's ``beta`` defaults to the one whose optimum matches sequence SD's accuracy.
    """
    parsed = parse_train_objective(objective)
    base = tables.base
    model = NetworkContext(tables)
    if parsed.sd is None:
        if beta is None:
            sd = parse_train_objective("sequence").sd
            assert sd is not None
            matched = rl_matched(base, sd.optimum(base, model).accuracy)
            if matched.beta is None:
                raise ValueError(f"no RL beta matches sequence SD's accuracy: {matched.message}")
            beta = float(matched.beta)
        return rl_optimum(base, beta), beta
    return parsed.sd.optimum(base, model, "own"), beta


def _sample_demos(
    tables: NetworkTables,
    rollouts: IntArray,
    source: str,
    group: int,
    base_demos: Policy,
    rng: np.random.Generator,
) -> IntArray:
    """A demonstration rollout per sample (``-1``: none)."""
    n = rollouts.size
    if source == "base":
        return np.asarray(
            sample_categorical(base_demos.log_prob, np.zeros(n, dtype=np.int64), rng), np.int64
        )
    out = np.full(n, -1, dtype=np.int64)
    correct = tables.space.correct[rollouts]
    for first in range(0, n, group):
        members = np.arange(first, first + group)
        wins = members[correct[members]]
        for i in members:
            others = wins[wins != i]
            if others.size:
                out[i] = rollouts[others[rng.integers(others.size)]]
    return out


def _network_conditionals(
    teacher: Any, tokens: TaskTokens, demos: IntArray, paths: IntArray
) -> FloatArray:
    """``log p(u | c_i, h)`` at the children of every prefix each sampled path visits.

    Shape (n, n_prefixes); ``nan`` elsewhere and on rows without a demonstration.
    """
    import torch

    space = tokens.space
    out = np.full((demos.size, space.n_prefixes), np.nan)
    has = np.flatnonzero(demos >= 0)
    if has.size == 0:
        return out
    prompts = [tokens.context_ids(int(c)) for c in demos[has]]
    with torch.no_grad():
        at = path_logits(teacher, tokens, prompts, paths[has])
        log_cond = torch.log_softmax(at.logits.double(), dim=1).numpy()
    rows = has[at.row]
    out[np.broadcast_to(rows[:, None], at.child.shape)[at.valid], at.child[at.valid]] = log_cond[
        at.valid
    ]
    return out


def frozen_conditionals(tables: NetworkTables, demos: IntArray) -> tuple[FloatArray, IntArray]:
    """The frozen teacher's conditionals and the row of each sample's demonstration.

    A sample without a demonstration (``-1``) gets a row of ``nan``: no loss.
    """
    rows = tables.rows_of(np.where(demos >= 0, demos, int(tables.demos[0])))
    if (demos >= 0).all():
        return tables.teacher_log_cond, rows
    conds = np.vstack([tables.teacher_log_cond, np.full(tables.space.n_prefixes, np.nan)])
    return conds, np.where(demos >= 0, rows, conds.shape[0] - 1)


def sampled_gradient(
    objective: TrainObjective,
    tables: NetworkTables,
    log_cond: FloatArray,
    teacher_conditionals: Callable[[IntArray, IntArray], tuple[FloatArray, IntArray]],
    options: NeuralTrainOptions,
    beta: float | None,
    base_demos: Policy,
    rng: np.random.Generator,
) -> FloatArray:
    """One stochastic gradient in the masked logits (shape (n_prefixes,))."""
    space, n = tables.space, options.batch
    name, param = objective.name, objective.param
    base = tables.base
    if name == "forward":
        demos = sample_categorical(base_demos.log_prob, np.zeros(n, dtype=np.int64), rng)
        rows = tables.rows_of(demos)
        rollouts = sample_categorical(tables.teacher_rows, rows, rng)
        return score_function_gradient(space, log_cond, rollouts, -np.ones(n))
    paths = sample_paths(space, log_cond, n, rng)
    rollouts = leaves_of(space, paths)
    log_q = space.path_sum(log_cond)[space.rollout_prefix][rollouts]
    if name == "rl":
        assert beta is not None
        loss = beta * (log_q - base.log_prob[rollouts]) - space.correct[rollouts]
        return score_function_gradient(space, log_cond, rollouts, loss - leave_one_out(loss))
    demos = _sample_demos(tables, rollouts, options.demos, options.group, base_demos, rng)
    conds, row_of = teacher_conditionals(demos, paths)
    if name in ("sequence", "hybrid"):
        has = demos >= 0
        log_teacher = step_log_teacher(paths, conds, row_of)
        loss = log_q - np.where(has[:, None], log_teacher, 0.0).sum(axis=1)
        if name == "hybrid":
            loss = loss - space.correct[rollouts] / param
        coefficient = np.zeros(n)
        coefficient[has] = loss[has] - leave_one_out(loss[has])
        return score_function_gradient(space, log_cond, rollouts, coefficient)
    if name in ("token", "token-forward", "jsd"):
        a = 1.0 if name == "token" else 0.0 if name == "token-forward" else param
        return full_vocabulary_gradient(space, log_cond, paths, conds, row_of, a)
    log_teacher = step_log_teacher(paths, conds, row_of)
    coefficient = sampled_token_coefficients(
        log_cond,
        paths,
        log_teacher,
        discount=param if name == "discount" else 0.0,
        length_weighted=name == "length-weighted",
    )
    return step_gradient(space, log_cond, paths, coefficient)


def _policy_of(log_cond: FloatArray, tables: NetworkTables) -> Policy:
    return Policy.from_log_conditionals(tables.space, log_cond, softmax=True)


def _teacher_tv(
    tables: NetworkTables, student: Policy, context: ContextModel, start: NetworkTables
) -> tuple[float, float, float]:
    """``D``-weighted mean TV of the network's teachers ``tables`` from ``context`` applied to
    the student, from the starting network's teachers, and from the student itself (``D`` the
    student's own demonstrations)."""
    demos = demonstrations(student, "own")
    support = np.flatnonzero(demos.prob > 0)
    weight = demos.prob[support]
    mine = np.exp(tables.teacher_rows[tables.rows_of(support)])
    others = (
        np.exp(context.teacher_log_prob(student, support)),
        np.exp(start.teacher_rows[start.rows_of(support)]),
        student.prob[None, :],
    )
    tv = [float(weight @ (0.5 * np.abs(mine - other).sum(axis=1))) for other in others]
    return tv[0], tv[1], tv[2]


def train_network(
    model: Any,
    tables: NetworkTables,
    options: NeuralTrainOptions = NeuralTrainOptions(),
    seed: int | np.random.Generator | None = None,
    context: ContextModel | None = None,
    progress: Callable[[int, int], object] | None = None,
    on_checkpoint: Callable[[Checkpoint, Any], object] | None = None,
) -> NeuralTrainResult:
    """Train ``model`` in place from the network whose frozen tables are ``tables``.

    Parameters
    ----------
    model : transformers causal LM
        The network the tables were read from (its weights at the start).
    tables : NetworkTables
        The frozen base and teachers: the prediction and the frozen teacher.
    options : NeuralTrainOptions
    seed : int, Generator or None
        Fixes every sample (the caller sets ``torch.manual_seed`` for dropout, if any).
    context : ContextModel, optional
        The context model to compare the network's teacher with (``watch_teacher``).
    progress : callable, optional
        ``progress(step, steps)`` after every step.
    on_checkpoint : callable, optional
        ``on_checkpoint(checkpoint, model)`` at every measurement (to save the weights).

    Returns
    -------
    NeuralTrainResult
        With the TV of every measurement from the predicted optimum of the
        objective on the frozen tables.
    """
    import torch

    start_time = time.perf_counter()
    objective = parse_train_objective(options.objective)
    if options.watch_teacher and context is None:
        raise ValueError("watch_teacher needs the context model to compare the teacher with")
    rng = as_generator(seed)
    space = tables.space
    tokens = TaskTokens(space)
    base = tables.base
    predicted, beta = predicted_optimum(tables, options.objective, options.beta)
    base_demos = demonstrations(base, "own")
    network_model = NetworkContext(tables)
    exact = (
        ExactObjective(
            objective, base, network_model, lambda p: demonstrations(p, "own"), 0.0, beta or 1.0
        )
        if options.mode == "exact"
        else None
    )
    bound = None if exact is None else exact.bind(base)
    teacher_net: Any = model
    if options.teacher == "ema":
        teacher_net = copy.deepcopy(model)
        teacher_net.eval()

    def teacher_conditionals(demos: IntArray, paths: IntArray) -> tuple[FloatArray, IntArray]:
        if options.teacher == "frozen":
            return frozen_conditionals(tables, demos)
        return _network_conditionals(teacher_net, tokens, demos, paths), np.arange(demos.size)

    optimiser = torch.optim.Adam(model.parameters(), lr=options.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: max(0.0, 1.0 - step / options.steps)
    )
    history: list[Checkpoint] = []

    def measure(step: int, log_cond: FloatArray) -> None:
        q = _policy_of(log_cond, tables)
        extra: dict[str, float] = {}
        if options.watch_teacher:
            assert context is not None
            now = network_tables(teacher_net, space)
            to_model, to_start, to_student = _teacher_tv(now, q, context, tables)
            one = parse_train_objective("sequence").sd
            assert one is not None
            round_q = one.optimum(now.base, NetworkContext(now))
            extra = {
                "teacher_tv_to_context": to_model,
                "teacher_tv_to_start": to_start,
                "teacher_tv_to_student": to_student,
                "one_round_effective": math.exp(correct_entropy(round_q)),
            }
        point = Checkpoint(
            step,
            total_variation(q, predicted),
            q.accuracy,
            math.exp(correct_entropy(q)),
            gap_slope(q, base),
            dict(zip(options.ks, distinct_at_ks(q, options.ks), strict=True)),
            **extra,
        )
        history.append(point)
        if on_checkpoint is not None:
            on_checkpoint(point, model)

    model.eval()  # dropout off: the policy sampled, trained and measured is the same network
    plain = [tokens.context_ids(None)]
    try:
        for step in range(options.steps):
            logits = child_logits(model, tokens, plain)[0]
            log_cond = masked_log_conditionals(space, logits.detach().double().numpy())
            if step % options.eval_every == 0:
                measure(step, log_cond)
            if bound is not None:
                held = bound.held(log_cond)
                _, gradient = bound.value_and_grad(log_cond, held)
            else:
                gradient = sampled_gradient(
                    objective,
                    tables,
                    log_cond,
                    teacher_conditionals,
                    options,
                    beta,
                    base_demos,
                    rng,
                )
            surrogate = (torch.as_tensor(gradient, dtype=logits.dtype) * logits).sum()
            optimiser.zero_grad()
            surrogate.backward()
            optimiser.step()
            scheduler.step()
            if options.teacher == "ema":
                with torch.no_grad():
                    for mine, ema in zip(model.parameters(), teacher_net.parameters(), strict=True):
                        ema.mul_(1.0 - options.ema_rate).add_(mine, alpha=options.ema_rate)
            if progress is not None:
                progress(step + 1, options.steps)
        with torch.no_grad():
            logits = child_logits(model, tokens, plain)[0]
        log_cond = masked_log_conditionals(space, logits.double().numpy())
        measure(options.steps, log_cond)
    finally:
        model.eval()
    final = _policy_of(log_cond, tables)
    return NeuralTrainResult(
        predicted, final, tuple(history), beta, time.perf_counter() - start_time, options
    )
