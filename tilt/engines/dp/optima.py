"""RL and sequence-level SD optima on an acyclic space, as Markov policies.

Each optimum here is a tilt of ``pi`` by a sum over moves plus a leaf term,
``q(y) ∝ pi(y) exp(sum_t w(e_t) + f(leaf))``, whose conditionals come from one
backward pass: ``q(e) = pi(e) exp(w_e) B(head) / B(tail)``
(:func:`tilt.engines.dp.passes.tilted_conditionals`).

* RL: ``w = 0``, ``f = 0`` on correct leaves and ``-1/beta`` elsewhere
  (``-inf`` in the limit ``beta -> 0``).
* sequence SD: ``w = step / (1 + b)`` (:func:`tilt.engines.dp.context.markov_step`).
* hybrid: both.
* discounted token SD (``discount=g``): ``q(e) ∝ G(e) exp(g V(head))`` with the
  backward pass ``V(s) = log sum_e G(e) exp(g V(head))``.
* token SD: ``q(u | s) ∝ exp((g(u | s) + b log pi(u | s)) / (1 + b))``.
"""

from __future__ import annotations

import math

import numpy as np

from tilt._checks import check_beta
from tilt.context import ContextModel
from tilt.engines.dp.context import markov_step, token_target
from tilt.engines.dp.passes import softmax_conditionals, tilted_conditionals
from tilt.engines.dp.policy import Demos, MarkovPolicy, demonstrations, with_prob
from tilt.objectives import check_anchor

__all__ = ["rl_optimum", "sd_sequence", "sd_token", "sd_hybrid", "sd_discount"]


def _reward_leaf(policy: MarkovPolicy, beta: float) -> np.ndarray:
    space = policy.space
    penalty = -math.inf if beta == 0 else -1.0 / beta
    return np.where(space.correct, 0.0, np.where(space.leaf, penalty, -np.inf))


def _tilt(policy: MarkovPolicy, weight: np.ndarray | None, leaf: np.ndarray) -> MarkovPolicy:
    """``policy`` tilted by ``weight`` per edge (``None``: none, only the leaves)."""
    log_weight = policy.log_cond if weight is None else policy.log_cond + weight
    cond, _ = tilted_conditionals(policy.space, log_weight, leaf, policy.log_cond)
    return MarkovPolicy(policy.space, cond)


def rl_optimum(policy: MarkovPolicy, beta: float = 0.0) -> MarkovPolicy:
    """``q(y) ∝ pi(y) exp(r(y) / beta)``; ``beta = 0`` is ``pi(y) r(y) / pi(C)``; ``inf`` is ``pi``.

    The incorrect leaves get ``-1/beta`` (not the correct ones ``+1/beta``), as
    :func:`tilt.objectives.rl_optimum`.
    """
    beta = check_beta(beta)
    if math.isinf(beta):
        return policy
    if beta == 0 and not np.isfinite(policy.log_correct_below[0]):
        raise ValueError(
            "the policy puts no mass on correct rollouts: the beta -> 0 limit is undefined"
        )
    if beta == 0:
        # pi(. | C): the conditioned chain (the tilt below computes exactly these
        # conditionals), whose reach is known without a pass
        limit = with_prob(MarkovPolicy(policy.space, policy.correct_cond), policy.correct_prob)
        limit.__dict__["log_reach"] = policy.log_correct_reach  # the cached_property's slot
        return limit
    return _tilt(policy, None, _reward_leaf(policy, beta))


def _demos(policy: MarkovPolicy, demos: Demos, alpha: float) -> MarkovPolicy:
    return demonstrations(policy, demos, alpha)


def sd_sequence(
    policy: MarkovPolicy,
    model: ContextModel,
    demos: Demos = "own",
    alpha: float = 1.0,
    anchor: float = 0.0,
) -> MarkovPolicy:
    """``q*(y) ∝ pi(y) exp(S(y) / (1 + b))`` with ``S`` the sum of per-move steps."""
    return sd_hybrid(policy, model, demos, alpha, anchor, beta=math.inf)


def sd_hybrid(
    policy: MarkovPolicy,
    model: ContextModel,
    demos: Demos = "own",
    alpha: float = 1.0,
    anchor: float = 0.0,
    *,
    beta: float,
) -> MarkovPolicy:
    """``q(y) ∝ pi(y) exp(S(y) / (1 + b) + r(y) / beta)`` (``beta = 0``: restricted to ``C``)."""
    anchor = check_anchor(anchor)
    beta = check_beta(beta, "hybrid beta")
    step = markov_step(policy, model, _demos(policy, demos, alpha))
    if math.isinf(beta):
        leaf = np.where(policy.space.leaf, 0.0, -np.inf)
    else:
        leaf = _reward_leaf(policy, beta)
    # x / 1 is x: no edge-sized copy without an anchor
    return _tilt(policy, step if anchor == 0 else step / (1.0 + anchor), leaf)


def sd_token(
    policy: MarkovPolicy,
    model: ContextModel,
    demos: Demos = "own",
    alpha: float = 1.0,
    anchor: float = 0.0,
) -> MarkovPolicy:
    """Per-token reverse KL: ``q(u | s) ∝ exp((g(u | s) + b log pi(u | s)) / (1 + b))``."""
    anchor = check_anchor(anchor)
    target = token_target(policy, model, _demos(policy, demos, alpha))
    own = policy.log_cond
    if anchor == 0:  # (g + 0 log pi) / 1 is g (up to the sign of a zero)
        logits = target
    else:
        with np.errstate(invalid="ignore"):
            logits = np.where(
                np.isneginf(target),
                -np.inf,
                (target + anchor * np.where(np.isneginf(own), 0.0, own)) / (1 + anchor),
            )
    cond, prob = softmax_conditionals(policy.space, logits, own)
    return with_prob(MarkovPolicy(policy.space, cond), prob)


def sd_discount(
    policy: MarkovPolicy,
    model: ContextModel,
    discount: float,
    demos: Demos = "own",
    alpha: float = 1.0,
) -> MarkovPolicy:
    """``q(u | s) ∝ G(u | s) exp(g V(su))``, ``V(s) = log sum_u G(u | s) exp(g V(su))``.

    ``G = exp(g(u | s))`` is the token target; ``V = 0`` at a leaf.  ``g = 0``
    is token SD, ``g = 1`` sequence SD.
    """
    discount = float(discount)
    if not 0.0 <= discount <= 1.0:
        raise ValueError(f"discount must lie in [0, 1], got {discount!r}")
    target = token_target(policy, model, _demos(policy, demos, alpha))
    leaf = np.where(policy.space.leaf, 0.0, -np.inf)
    cond, _ = tilted_conditionals(policy.space, target, leaf, policy.log_cond, discount)
    return MarkovPolicy(policy.space, cond)
