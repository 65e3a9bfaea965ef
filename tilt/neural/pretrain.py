"""Pretraining recipe: a small network whose base and in-context teacher follow tilt's models.

The network is taught, by soft-target cross-entropy on its masked next-move
distribution, two kinds of sequences:

* ``BOS y EOS`` with ``y ~ pi0`` (a tilt base policy), target ``pi0(. | h)``;
* ``BOS c SEP y EOS`` with ``c ~ D`` (the base's own correct rollouts) and
  ``y ~ T_c`` (a tilt context model, say ``edge(2)``), target ``T_c(. | h)``.

The targets are the exact conditionals at every visited prefix (not the sampled
next move), which lowers the variance of the gradient.  :func:`fit_report`
says how far the network landed: TV of its base from ``pi0`` and the
``D``-weighted mean TV of its teachers from the context model's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tilt._numerics import FloatArray, IntArray
from tilt.context import ContextModel, demonstrations
from tilt.neural.tables import NetworkTables, path_logits
from tilt.neural.tokens import TaskTokens
from tilt.policy import Policy, as_generator
from tilt.space import RolloutSpace
from tilt.train import conditionals_of_rows, sample_categorical

__all__ = ["PretrainOptions", "FitReport", "pretrain", "fit_report", "rollout_prefixes"]


@dataclass(frozen=True)
class PretrainOptions:
    """Optimiser settings of :func:`pretrain`.

    Attributes
    ----------
    steps : int
    batch : int
        Sequences per step, half without and half with a demonstration.
    lr : float
        Peak Adam learning rate (linear warm-up over 5% of the steps, cosine decay).
    """

    steps: int = 2000
    batch: int = 128
    lr: float = 3e-3

    def __post_init__(self) -> None:
        for name in ("steps", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")


@dataclass(frozen=True)
class FitReport:
    """How far a network's tables are from tilt's base and context model.

    Attributes
    ----------
    base_tv : float
        ``TV(p(.), pi0)``.
    teacher_tv : float
        ``sum_c D(c) TV(p(. | c), T_c)``, ``D`` the base's own demonstrations.
    worst_teacher_tv : float
        The largest ``TV(p(. | c), T_c)``.
    """

    base_tv: float
    teacher_tv: float
    worst_teacher_tv: float


def rollout_prefixes(space: RolloutSpace) -> IntArray:
    """Prefixes along every rollout, root first: shape (n_rollouts, max_depth + 1), -1 padded."""
    out = np.full((space.n_rollouts, space.max_depth + 1), -1, dtype=np.int64)
    cursor = space.rollout_prefix.astype(np.int64)
    depth = space.depth[cursor].astype(np.int64)
    rows = np.arange(space.n_rollouts)
    for _ in range(space.max_depth + 1):
        alive = cursor >= 0
        out[rows[alive], depth[alive]] = cursor[alive]
        cursor = np.where(alive, space.parent[np.maximum(cursor, 0)], -1)
        depth = depth - 1
    return out


def fit_report(tables: NetworkTables, base: Policy, model: ContextModel) -> FitReport:
    """TV of the network's base and teachers from ``base`` and ``model`` (own demonstrations)."""
    demos = demonstrations(base, "own")
    support = np.flatnonzero(demos.prob > 0)
    target = model.teacher_log_prob(base, support)
    mine = tables.teacher_rows[tables.rows_of(support)]
    tv = 0.5 * np.abs(np.exp(mine) - np.exp(target)).sum(axis=1)
    base_tv = 0.5 * float(np.abs(tables.base.prob - base.prob).sum())
    return FitReport(base_tv, float(demos.prob[support] @ tv), float(tv.max()))


def _batch_loss(
    model: Any,
    tokens: TaskTokens,
    paths: IntArray,
    prompts: list[list[int]],
    target: FloatArray,
) -> Any:
    """Soft-target cross-entropy of the masked next-move distributions along ``paths``.

    ``paths[i]`` are the prefixes of sequence ``i`` (``-1`` padded); ``target[i]``
    the target's log conditionals over prefixes for that sequence.
    """
    import torch

    at = path_logits(model, tokens, prompts, paths)
    mask = torch.as_tensor(at.valid)
    log_q = torch.log_softmax(at.logits, dim=1).masked_fill(~mask, 0.0)
    weight = np.where(at.valid, np.exp(target[at.row[:, None], at.child]), 0.0)
    return -(torch.as_tensor(weight, dtype=log_q.dtype) * log_q).sum() / len(prompts)


def pretrain(
    model: Any,
    base: Policy,
    context: ContextModel,
    options: PretrainOptions = PretrainOptions(),
    seed: int | np.random.Generator | None = None,
    progress: Callable[[int, float], object] | None = None,
) -> list[float]:
    """Train ``model`` in place to follow ``base`` alone and ``context`` with a demonstration.

    Parameters
    ----------
    model : transformers causal LM
        Sized for ``TaskTokens(base.space)``.
    base : Policy
        The tilt base ``pi0`` (full support).
    context : ContextModel
        The in-context behaviour to teach, ``T_c`` for ``c`` drawn from ``base``'s
        own correct rollouts.
    options : PretrainOptions
    seed : int, Generator or None
        Draws of the sequences (torch's own seed is set by the caller).
    progress : callable, optional
        ``progress(step, loss)`` after every step.

    Returns
    -------
    list of float
        The loss of every step.
    """
    import torch

    space = base.space
    tokens = TaskTokens(space)
    tokens.check_vocabulary(int(model.config.vocab_size))
    rng = as_generator(seed)
    demos = demonstrations(base, "own")
    support = np.flatnonzero(demos.prob > 0)
    teacher_rows = context.teacher_log_prob(base, support)
    teacher_cond = conditionals_of_rows(space, teacher_rows)
    base_cond = base.log_conditionals()
    prefixes = rollout_prefixes(space)
    prompts_of = {int(c): tokens.context_ids(int(c)) for c in support}
    optimiser = torch.optim.Adam(model.parameters(), lr=options.lr)
    warm = max(1, options.steps // 20)

    def schedule(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, options.steps - warm)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, schedule)
    plain = options.batch // 2
    with_demo = options.batch - plain
    losses = []
    model.train()
    try:
        for step in range(options.steps):
            ys = sample_categorical(base.log_prob, np.zeros(plain, dtype=np.int64), rng)
            cs = sample_categorical(demos.log_prob[support], np.zeros(with_demo, np.int64), rng)
            ts = sample_categorical(teacher_rows, cs, rng)
            paths = np.concatenate([prefixes[ys], prefixes[ts]])
            prompts = [tokens.context_ids(None)] * plain + [prompts_of[int(support[c])] for c in cs]
            target = np.concatenate(
                [np.broadcast_to(base_cond, (plain, space.n_prefixes)), teacher_cond[cs]]
            )
            loss = _batch_loss(model, tokens, paths, prompts, target)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
            losses.append(loss.item())
            if progress is not None:
                progress(step, losses[-1])
    finally:
        model.eval()
    return losses
