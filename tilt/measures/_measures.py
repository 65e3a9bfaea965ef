"""Measures of a policy against the base, computed exactly from the distribution.

``docs/theory.md`` ("Measures"): accuracy ``q(C)``, ``pass@k``,
``distinct@k``, correct-set entropy and effective number of correct rollouts,
gap slopes (unweighted and ``pi0``-weighted) and the ``pi0``-mass fraction of
correct pairs whose gap widens, ratio distortion, and out-of-distribution
``pass@k`` over single blocked edges in both readings (:mod:`tilt.measures.ood`).

A slope is a least-squares summary over all correct rollouts, not a factor
applied to every gap: read it beside :func:`widening_fraction`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from tilt._checks import check_instance, check_k
from tilt._numerics import FloatArray, IntArray, dot, jit, logsumexp, sweep_dominated_total
from tilt.measures.ood import OODPass, ood_pass_at_ks
from tilt.policy import Policy
from tilt.space import check_same_space

__all__ = [
    "Measures",
    "measure",
    "pass_at_k",
    "distinct_at_k",
    "distinct_at_ks",
    "correct_entropy",
    "gap_slope",
    "least_squares_slope",
    "weighted_gap_slope",
    "widening_fraction",
    "GAP_TOLERANCE",
    "ratio_distortion",
    "correct_flow_by_move",
]


class _Accuracy(Protocol):
    """What :func:`pass_at_k` reads of a policy (an enumerated or a Markov one)."""

    @property
    def incorrect_mass(self) -> float: ...


def pass_at_k(policy: _Accuracy, k: int) -> float:
    """``1 - (1 - q(C))^k``: a correct rollout among ``k`` independent samples.

    Any policy with an ``incorrect_mass`` (``1 - q(C)``, kept exact near 1): both engines'.
    """
    k = check_k(k)
    fail = policy.incorrect_mass
    # 0.0 - x, not -x: a plain 0.0 (not -0.0) when fail = 1
    return 0.0 - math.expm1(k * math.log(fail)) if fail > 0 else 1.0


def distinct_at_k(policy: Policy, k: int) -> float:
    """``sum over y in C of 1 - (1 - q(y))^k``: expected distinct correct rollouts in k samples."""
    return distinct_at_ks(policy, [k])[0]


def distinct_at_ks(policy: Policy, ks: Sequence[int]) -> list[float]:
    """:func:`distinct_at_k` for several ``k``, from one pass over the correct rollouts."""
    ks = [check_k(k) for k in ks]
    q = np.exp(policy.correct_log_prob())
    with np.errstate(divide="ignore"):  # q(y) = 1: log1p(-1) = -inf, term 1
        log_miss = np.log1p(-np.minimum(q, 1.0))
    return [float(0.0 - np.expm1(k * log_miss).sum()) for k in ks]


def correct_entropy(policy: Policy) -> float:
    """``H(q(. | C))`` in nats; ``exp`` of it is the effective number of correct rollouts."""
    lp = policy.correct_log_prob()
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
    return _slope_on(_slope_setup(x, weight), y)


_SlopeSetup = tuple[NDArray[np.bool_] | None, FloatArray | float, FloatArray, float, float] | None
"""What a slope needs of ``x`` and the weights alone: the kept points (``None``: all), the
normalised weights (one number for equal weights), the kept ``x``, its weighted mean and
variance (``None`` for the whole: a slope of ``nan``).  Remembered on the base, so it holds
no array of ``x``'s size but the weights."""


def _slope_setup(x: FloatArray, weight: FloatArray | None) -> _SlopeSetup:
    keep = np.ones(x.size, dtype=bool) if weight is None else weight > 0
    n_kept = np.count_nonzero(keep)
    if n_kept < 2:
        return None
    every = n_kept == x.size
    if not every:
        x = x[keep]
    w: FloatArray | float
    if weight is None:  # each weight 1 / n, as ones(n) / ones(n).sum()
        w = 1.0 / float(n_kept)
    else:
        kept = weight if every else weight[keep]
        w = kept / kept.sum()
    if float(x.max() - x.min()) <= 1e-9 * (1.0 + float(np.abs(x).max())):
        return None  # x constant up to rounding: no slope to speak of
    mean = _dot(w, x)
    dx = x - mean
    return (None if every else keep), w, x, mean, _dot(w, dx * dx)


def _dot(w: FloatArray | float, values: FloatArray) -> float:
    """:func:`dot` with the weights, or one weight for all (the same products)."""
    return float(np.multiply(w, values).sum())


def _slope_on(setup: _SlopeSetup, y: FloatArray) -> float:
    if setup is None:
        return math.nan
    keep, w, x, mean, var = setup
    if keep is not None:
        y = y[keep]
    return _dot(w, (x - mean) * (y - _dot(w, y))) / var


def _finite_correct(policy: Policy, base: Policy) -> tuple[FloatArray, FloatArray]:
    """``(log pi0(y), log q(y))`` over the correct ``y`` where both are finite."""
    check_same_space(policy.space, base.space, "the policy and the base")
    x, y = base.correct_log_prob(), policy.correct_log_prob()
    keep = np.isfinite(x) & np.isfinite(y)
    return (x, y) if keep.all() else (x[keep], y[keep])


def gap_slope(policy: Policy, base: Policy) -> float:
    """Least-squares slope of ``log q(y)`` on ``log pi0(y)`` over correct ``y`` with ``q(y) > 0``.

    Exactly 1 for RL; above 1 means the gaps among correct rollouts widened.
    ``nan`` when fewer than two such rollouts or ``log pi0`` is constant on them.
    """
    x, y = _finite_correct(policy, base)
    if x is base.correct_log_prob():  # every correct rollout kept: what x gives is the base's
        return _slope_on(base.memo("slope-setup", lambda: _slope_setup(x, None)), y)
    return least_squares_slope(x, y)


def weighted_gap_slope(policy: Policy, base: Policy) -> float:
    """:func:`gap_slope` with each correct rollout weighted by ``pi0(y)``.

    The slope a typical *sample* sees: rollouts the base rarely produces count
    little.  Exactly 1 for RL.  For sequence SD it is ``1 + cov_w(S, log pi0) /
    var_w(log pi0)`` with ``w = pi0(. | C)`` (the estimand of ``tilt.audit``).
    ``nan`` when fewer than two correct rollouts have ``q(y) > 0``.
    """
    x, y = _finite_correct(policy, base)
    if x is base.correct_log_prob():  # as in gap_slope
        setup = base.memo("weighted-slope-setup", lambda: _slope_setup(x, _base_weights(x)))
        return _slope_on(setup, y)
    return least_squares_slope(x, y, _base_weights(x))


def _base_weights(x: FloatArray) -> FloatArray:
    return np.exp(x - x.max()) if x.size else x


GAP_TOLERANCE = 1e-9
"""Log-ratios closer than this (nats) count as equal in :func:`widening_fraction`:
rounding in ``log q`` is ~1e-13 on every built-in space, so RL's change is 0."""


def _tie_classes(values: FloatArray, tol: float) -> tuple[IntArray, IntArray]:
    """``(rank, order)``: the rank of each value's class, and an order that sorts the values.

    Sorted values closer than ``tol`` to the previous share a class; ``-inf``
    values form their own lowest class.
    """
    sorted_rank, order = _sorted_tie_classes(values, tol)
    rank = np.empty(values.size, dtype=np.int64)
    rank[order] = sorted_rank
    return rank, order


def _sorted_tie_classes(values: FloatArray, tol: float) -> tuple[IntArray, IntArray]:
    """:func:`_tie_classes` with the ranks in sorted order: ``rank[order]``."""
    order = np.argsort(values)  # equal values share a class whatever their order
    ordered = values[order]
    with np.errstate(invalid="ignore"):
        step = np.diff(ordered) > tol
    step |= np.isneginf(ordered[:-1]) & np.isfinite(ordered[1:])
    return np.r_[0, np.cumsum(step)], order


def _dominated_total(x_rank: IntArray, d_rank: IntArray, w: FloatArray) -> float:
    """``sum of w[i] w[j]`` over the pairs with ``x_rank[j] < x_rank[i]`` and
    ``d_rank[j] < d_rank[i]``.

    Bit by bit over ``d_rank`` (a wavelet-tree sweep): ``d_j < d_i`` exactly when,
    at the highest bit where they differ, ``j`` has 0 and ``i`` has 1.  At bit
    ``b`` the points are grouped by ``d >> (b + 1)``, in ``x`` order within a
    group (one stable sort of the group keys, a radix sort when the ranks fit
    16 bits), and each 1-point meets the group's 0-points of strictly smaller
    ``x`` class.  ``O(n log n)`` for the first sort, then ``O(n)`` per bit,
    ``ceil(log2 max d_rank)`` bits.
    """
    n = w.size
    if n < 2:
        return 0.0
    if (x_rank[1:] >= x_rank[:-1]).all():
        x, d, weight = x_rank, d_rank, w
    else:
        by_x = np.argsort(x_rank)  # the order among equal x does not matter
        x, d, weight = x_rank[by_x], d_rank[by_x], w[by_x]
    top = int(d.max())
    if top < 1 << 16:
        d = d.astype(np.uint16)  # a stable sort of 16-bit keys is a radix sort
    index = np.arange(n, dtype=np.int32 if n < 1 << 31 else np.int64)
    x_step = np.r_[True, x[1:] != x[:-1]]
    first = index == 0
    total = 0.0
    before = np.zeros(n)  # the 0-points' weight strictly before each position
    for b in range(max(1, top.bit_length()) - 1, -1, -1):
        key = d >> (b + 1)
        if key.any():
            order = np.argsort(key, kind="stable")  # by (d >> (b + 1), x)
            d_o, x_o, w_o, key = d[order], x[order], weight[order], key[order]
            new_group = np.r_[True, key[1:] != key[:-1]]
            new_run = new_group | np.r_[True, x_o[1:] != x_o[:-1]]
        else:  # one group: already in x order
            d_o, w_o, new_group, new_run = d, weight, first, x_step
        is_one = ((d_o >> b) & 1).astype(bool)
        one_w = np.where(is_one, w_o, 0.0)
        np.cumsum(w_o[:-1] - one_w[:-1], out=before[1:])
        group_start = np.maximum.accumulate(np.where(new_group, index, 0))
        run_start = np.maximum.accumulate(np.where(new_run, index, 0))
        # each 1-point meets the group's 0-points before its x class
        total += dot(one_w, before[run_start] - before[group_start])
    return total


def _base_classes(
    base: Policy, tol: float
) -> tuple[NDArray[np.bool_], FloatArray, FloatArray, IntArray, IntArray, float]:
    """What :func:`widening_fraction` needs of the base alone (remembered on it): the finite
    correct ``log pi0`` and their mask, weights, tie classes and sorting order, and the total
    weight of ordered pairs."""
    x = base.correct_log_prob()
    keep = np.isfinite(x)
    x = x[keep]
    if x.size < 2:
        none = np.zeros(x.size, dtype=np.int64)
        return keep, x, x, none, none, 0.0
    w = np.exp(x - x.max())
    x_rank, x_order = _tie_classes(x, tol)
    # total: pairs with x_rank[j] < x_rank[i]
    class_weight = np.bincount(x_rank, weights=w)
    below = np.r_[0.0, np.cumsum(class_weight)[:-1]]
    return keep, x, w, x_rank, x_order, dot(w, below[x_rank])


def widening_fraction(policy: Policy, base: Policy, tol: float = GAP_TOLERANCE) -> float:
    """The ``pi0``-mass fraction of correct pairs whose gap widens.

    Over ordered pairs ``(y, y')`` of correct rollouts with
    ``log pi0(y) > log pi0(y') + tol`` (``y`` the likelier under the base),
    weighted by ``pi0(y) pi0(y')``: the share whose log-ratio grows,

        sum [d(y) > d(y') + tol] pi0(y) pi0(y') / sum pi0(y) pi0(y'),
        d = log q - log pi0.

    Exactly 0 for RL (``d`` is constant on ``C``); a rollout that ``q`` drops
    (``d = -inf``) widens every gap where it is the less likely one.  Values
    within ``tol`` are grouped into tie classes (a chain of values each within
    ``tol`` of the next is one class).  ``nan`` when no pair differs under the
    base.  The narrowing fraction is the same sum with ``d(y) < d(y') - tol``.

    Notes
    -----
    ``O(|C| log |C|)`` vectorised: a weighted dominance count over the distinct
    ``(pi0, d)`` classes (sorted by the coordinate with more classes, then one
    stable sort of 16-bit keys per bit of the other's rank), never the
    ``|C|^2`` pairs.
    """
    check_same_space(policy.space, base.space, "the policy and the base")
    keep, x, w, x_rank, x_order, total = base.memo(
        f"widening@{tol!r}", lambda: _base_classes(base, tol)
    )
    if x.size < 2 or total <= 0:
        return math.nan
    with np.errstate(invalid="ignore"):
        d = policy.correct_log_prob()[keep] - x
    if jit(x.size):  # a Fenwick tree over the coordinate with fewer classes, swept in the other
        # the points are gathered in the sweep's order first and read in turn (the sweep reads
        # them through an identity order): half the time of reading them through the order
        d_sorted, d_order = _sorted_tie_classes(d, tol)
        n_d = int(d_sorted[-1]) + 1
        if n_d == 1:  # one class of d (RL): no gap widens
            return 0.0
        n_x = int(x_rank[x_order[-1]]) + 1
        in_turn = np.arange(x.size)
        if n_x < n_d:  # the count is symmetric in the two coordinates
            swept = sweep_dominated_total(d_sorted, x_rank[d_order], w[d_order], in_turn, n_x)
            return swept / total
        d_rank = np.empty(x.size, dtype=np.int64)
        d_rank[d_order] = d_sorted
        swept = sweep_dominated_total(x_rank[x_order], d_rank[x_order], w[x_order], in_turn, n_d)
        return swept / total
    d_rank, d_order = _tie_classes(d, tol)
    n_d = int(d_rank[d_order[-1]]) + 1
    if n_d == 1:  # one class of d (RL): no gap widens
        return 0.0
    # points with the same (x class, d class) are one point of summed weight; the count is
    # symmetric in the two coordinates, so the pairs come out sorted by the coordinate with
    # more classes and the sweep runs over the bits of the other
    n_x = int(x_rank[x_order[-1]]) + 1
    if n_x <= n_d:
        major, minor, n_minor, order = d_rank, x_rank, n_x, d_order
    else:
        major, minor, n_minor, order = x_rank, d_rank, n_d, x_order
    key = (major * n_minor + minor)[order]  # sorted by major: nearly sorted
    pair, where = np.unique(key, return_inverse=True)
    pair_weight = np.bincount(where.ravel(), weights=w[order]).astype(np.float64, copy=False)
    return _dominated_total(pair // n_minor, pair % n_minor, pair_weight) / total


def ratio_distortion(policy: Policy, base: Policy) -> float:
    """``max - min over y in C of (log q(y) - log pi0(y))``.

    Exactly 0 for RL; ``inf`` if ``q`` drops a correct rollout.
    """
    check_same_space(policy.space, base.space, "the policy and the base")
    q = policy.correct_log_prob()
    diff = q - base.correct_log_prob()
    if np.isneginf(q).any():
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
class Measures:
    """Every measure of ``docs/theory.md`` for one policy against the base."""

    accuracy: float
    correct_entropy: float
    effective_correct: float
    gap_slope: float
    ratio_distortion: float
    weighted_gap_slope: float = math.nan
    widening_fraction: float = math.nan
    pass_at_k: dict[int, float] = field(default_factory=dict)
    distinct_at_k: dict[int, float] = field(default_factory=dict)
    ood: dict[int, OODPass] = field(default_factory=dict)
    ood_reroute: dict[int, OODPass] = field(default_factory=dict)

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
            "widening_fraction": clean(self.widening_fraction),
            "ratio_distortion": clean(self.ratio_distortion),
            "pass_at_k": {str(k): clean(v) for k, v in self.pass_at_k.items()},
            "distinct_at_k": {str(k): clean(v) for k, v in self.distinct_at_k.items()},
            "ood_pass_at_k_mean": {str(k): clean(v.mean) for k, v in self.ood.items()},
            "ood_pass_at_k_worst": {str(k): clean(v.worst) for k, v in self.ood.items()},
            "ood_worst_move": {str(k): v.worst_move for k, v in self.ood.items()},
            "ood_reroute_pass_at_k_mean": {
                str(k): clean(v.mean) for k, v in self.ood_reroute.items()
            },
            "ood_reroute_pass_at_k_worst": {
                str(k): clean(v.worst) for k, v in self.ood_reroute.items()
            },
            "ood_reroute_worst_move": {str(k): v.worst_move for k, v in self.ood_reroute.items()},
        }


def measure(policy: Policy, base: Policy, ks: Sequence[int] = (1, 8, 64)) -> Measures:
    """All measures of ``policy`` against ``base`` for every ``k`` in ``ks``."""
    check_instance("policy", policy, Policy)
    check_instance("base", base, Policy)
    ks = [check_k(k) for k in ks]
    check_same_space(policy.space, base.space, "the policy and the base")
    entropy = correct_entropy(policy)
    reroute = ood_pass_at_ks(policy, ks, "reroute")  # first: it remembers the fail reading too
    return Measures(
        accuracy=policy.accuracy,
        correct_entropy=entropy,
        effective_correct=math.exp(entropy),
        gap_slope=gap_slope(policy, base),
        ratio_distortion=ratio_distortion(policy, base),
        weighted_gap_slope=weighted_gap_slope(policy, base),
        widening_fraction=widening_fraction(policy, base),
        pass_at_k={k: pass_at_k(policy, k) for k in ks},
        distinct_at_k=dict(zip(ks, distinct_at_ks(policy, ks), strict=True)),
        ood=dict(zip(ks, ood_pass_at_ks(policy, ks, "fail"), strict=True)),
        ood_reroute=dict(zip(ks, reroute, strict=True)),
    )
