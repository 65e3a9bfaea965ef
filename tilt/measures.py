"""Measures of a policy against the base, computed exactly from the distribution.

``docs/theory.md`` ("Measures"): accuracy ``q(C)``, ``pass@k``,
``distinct@k``, correct-set entropy and effective number of correct rollouts,
gap slope, ratio distortion, and out-of-distribution ``pass@k`` over single
blocked moves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tilt.policy import Policy, logsumexp
from tilt.space import FloatArray

__all__ = [
    "Measures",
    "OODPass",
    "measure",
    "pass_at_k",
    "distinct_at_k",
    "correct_entropy",
    "gap_slope",
    "least_squares_slope",
    "weighted_gap_slope",
    "ratio_distortion",
    "correct_flow_by_move",
    "ood_pass_at_k",
]


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def pass_at_k(policy: Policy, k: int) -> float:
    """``1 - (1 - q(C))^k``: a correct rollout among ``k`` independent samples."""
    k = _check_k(k)
    fail = policy.incorrect_mass
    # 0.0 - x, not -x: a plain 0.0 (not -0.0) when fail = 1
    return 0.0 - math.expm1(k * math.log(fail)) if fail > 0 else 1.0


def distinct_at_k(policy: Policy, k: int) -> float:
    """``sum over y in C of 1 - (1 - q(y))^k``: expected distinct correct rollouts in k samples."""
    k = _check_k(k)
    q = policy.prob[policy.space.correct]
    with np.errstate(divide="ignore"):  # q(y) = 1: log1p(-1) = -inf, term 1
        return float(0.0 - np.expm1(k * np.log1p(-np.minimum(q, 1.0))).sum())


def correct_entropy(policy: Policy) -> float:
    """``H(q(. | C))`` in nats; ``exp`` of it is the effective number of correct rollouts."""
    lp = policy.log_prob[policy.space.correct]
    lp = lp[np.isfinite(lp)]
    if lp.size == 0:
        return 0.0
    cond = lp - logsumexp(lp)
    return float(max(0.0, -(np.exp(cond) * cond).sum()))


def least_squares_slope(x: FloatArray, y: FloatArray, weight: FloatArray | None = None) -> float:
    """Slope of the (weighted) least-squares line of ``y`` on ``x``: ``cov_w(x, y) / var_w(x)``.

    ``weight`` (non-negative, any scale) defaults to equal weights.  ``nan``
    when fewer than two points carry weight or ``x`` is constant on them (its
    spread below ``1e-9 (1 + max |x|)``: rounding, not a gap).
    """
    if weight is None:
        weight = np.ones(x.size)
    keep = weight > 0
    if np.count_nonzero(keep) < 2:
        return math.nan
    x, y, w = x[keep], y[keep], weight[keep] / weight[keep].sum()
    if float(x.max() - x.min()) <= 1e-9 * (1.0 + float(np.abs(x).max())):
        return math.nan  # x constant up to rounding: no slope to speak of
    dx = x - w @ x
    var = float(w @ (dx * dx))
    return float(w @ (dx * (y - w @ y))) / var


def gap_slope(policy: Policy, base: Policy) -> float:
    """Least-squares slope of ``log q(y)`` on ``log pi0(y)`` over correct ``y`` with ``q(y) > 0``.

    Exactly 1 for RL; above 1 means the gaps among correct rollouts widened.
    ``nan`` when fewer than two such rollouts or ``log pi0`` is constant on them.
    """
    correct = policy.space.correct
    keep = correct & np.isfinite(policy.log_prob) & np.isfinite(base.log_prob)
    return least_squares_slope(base.log_prob[keep], policy.log_prob[keep])


def weighted_gap_slope(policy: Policy, base: Policy) -> float:
    """:func:`gap_slope` with each correct rollout weighted by ``pi0(y)``.

    The slope a typical *sample* sees: rollouts the base rarely produces count
    little.  Exactly 1 for RL.  For sequence SD it is ``1 + cov_w(S, log pi0) /
    var_w(log pi0)`` with ``w = pi0(. | C)`` (the estimand of ``tilt.audit``).
    ``nan`` when fewer than two correct rollouts have ``q(y) > 0``.
    """
    correct = policy.space.correct
    keep = correct & np.isfinite(policy.log_prob) & np.isfinite(base.log_prob)
    x = base.log_prob[keep]
    return least_squares_slope(x, policy.log_prob[keep], np.exp(x - x.max()) if x.size else x)


def ratio_distortion(policy: Policy, base: Policy) -> float:
    """``max - min over y in C of (log q(y) - log pi0(y))``.

    Exactly 0 for RL; ``inf`` if ``q`` drops a correct rollout.
    """
    correct = policy.space.correct
    diff = policy.log_prob[correct] - base.log_prob[correct]
    if np.isneginf(policy.log_prob[correct]).any():
        return math.inf
    return float(diff.max() - diff.min())


def correct_flow_by_move(policy: Policy) -> FloatArray:
    """``q({y in C : e in E(y)})`` for every move ``e``, shape (n_moves,)."""
    space = policy.space
    flow = space.subtree_sum(np.where(space.correct, policy.prob, 0.0))
    return np.bincount(space.move[1:], weights=flow[1:], minlength=space.n_moves).astype(
        np.float64, copy=False
    )


@dataclass(frozen=True)
class OODPass:
    """Out-of-distribution ``pass@k`` over single blocked moves.

    Attributes
    ----------
    k : int
    mean, worst : float
        Mean and minimum of ``1 - (1 - q(C without e))^k`` over the moves ``e``
        that some correct rollout makes.
    worst_move : str
        The blocked move of the worst case, as ``'v>u'``.
    n_moves : int
        How many moves were blocked in turn.
    """

    k: int
    mean: float
    worst: float
    worst_move: str
    n_moves: int


def ood_pass_at_k(policy: Policy, k: int) -> OODPass:
    """Block one move ``e`` used by some correct rollout; rollouts through ``e`` fail.

    ``ood_pass@k(e) = 1 - (1 - q(C without e))^k``; mean and worst over every such ``e``.
    One pass over the prefix tree gives the correct flow through every move.
    """
    return _ood_pass(policy, [_check_k(k)])[0]


def _ood_pass(policy: Policy, ks: Sequence[int]) -> list[OODPass]:
    """:func:`ood_pass_at_k` for several ``k`` from one pass over the prefix tree."""
    space = policy.space
    used = np.zeros(space.n_moves, dtype=bool)
    used_flow = space.subtree_sum(space.correct.astype(np.float64))
    used[space.move[1:][used_flow[1:] > 0]] = True
    moves = np.flatnonzero(used)
    fail = np.minimum(policy.incorrect_mass + correct_flow_by_move(policy)[moves], 1.0)
    with np.errstate(divide="ignore"):
        log_fail = np.log(fail)
    out = []
    for k in ks:
        values = 0.0 - np.expm1(k * log_fail)  # 0.0 - x: 0.0, not -0.0, at fail = 1
        worst = int(np.argmin(values))
        out.append(
            OODPass(
                k,
                float(values.mean()),
                float(values[worst]),
                space.move_label(int(moves[worst])),
                int(moves.size),
            )
        )
    return out


@dataclass(frozen=True)
class Measures:
    """Every measure of ``docs/theory.md`` for one policy against the base."""

    accuracy: float
    correct_entropy: float
    effective_correct: float
    gap_slope: float
    ratio_distortion: float
    weighted_gap_slope: float = math.nan
    pass_at_k: dict[int, float] = field(default_factory=dict)
    distinct_at_k: dict[int, float] = field(default_factory=dict)
    ood: dict[int, OODPass] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-ready dict (non-finite numbers become ``None``)."""

        def clean(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            "accuracy": clean(self.accuracy),
            "correct_entropy": clean(self.correct_entropy),
            "effective_correct": clean(self.effective_correct),
            "gap_slope": clean(self.gap_slope),
            "weighted_gap_slope": clean(self.weighted_gap_slope),
            "ratio_distortion": clean(self.ratio_distortion),
            "pass_at_k": {str(k): clean(v) for k, v in self.pass_at_k.items()},
            "distinct_at_k": {str(k): clean(v) for k, v in self.distinct_at_k.items()},
            "ood_pass_at_k_mean": {str(k): clean(v.mean) for k, v in self.ood.items()},
            "ood_pass_at_k_worst": {str(k): clean(v.worst) for k, v in self.ood.items()},
            "ood_worst_move": {str(k): v.worst_move for k, v in self.ood.items()},
        }


def measure(policy: Policy, base: Policy, ks: Sequence[int] = (1, 8, 64)) -> Measures:
    """All measures of ``policy`` against ``base`` for every ``k`` in ``ks``."""
    ks = [_check_k(k) for k in ks]
    entropy = correct_entropy(policy)
    return Measures(
        accuracy=policy.accuracy,
        correct_entropy=entropy,
        effective_correct=math.exp(entropy),
        gap_slope=gap_slope(policy, base),
        ratio_distortion=ratio_distortion(policy, base),
        weighted_gap_slope=weighted_gap_slope(policy, base),
        pass_at_k={k: pass_at_k(policy, k) for k in ks},
        distinct_at_k={k: distinct_at_k(policy, k) for k in ks},
        ood=dict(zip(ks, _ood_pass(policy, ks), strict=True)),
    )
