"""Every measure of ``docs/theory.md`` for a Markov policy, by passes over the state DAG.

* accuracy and pass@k: one backward pass (incorrect mass summed directly);
* correct entropy: the entropy of the chain conditioned on ``C``,
  ``H = sum_e P_C(e) (-log q_C(e))`` (non-negative terms, nothing cancels);
* gap slope, unweighted and ``pi0``-weighted: ``Cov(log pi0, log q) / Var(log pi0)``
  under the uniform (resp. ``pi0(. | C)``) measure on the correct rollouts with
  ``q(y) > 0``, both additive along paths: :func:`tilt.dp.passes.backward_moments`;
* ratio distortion: two max-plus passes of ``log q(e) - log pi0(e)``;
* out-of-distribution pass@k, both readings, for every move in ``O(n_edges)``
  total: *blocked = fail* from the correct flow through each move; *re-route*
  from ``q_e(C) = q(C) + sum over the states s of v of q(s) (B_e(s) - B(s))``,
  ``B(s) = q(C | s)`` and ``B_e(s)`` the same with ``e`` removed and the rest
  renormalised (a simple path visits ``v`` once, so nothing else changes);
* distinct@k: exact when the correct rollouts with ``q(y) > 0`` number at most
  :data:`DISTINCT_EXACT_LIMIT` (they are listed); otherwise the rollouts with
  ``q(y) >= tau`` are listed and the rest bounded by Bonferroni:
  ``k p - C(k, 2) p^2 <= 1 - (1 - p)^k <= k p``, with ``sum p`` and
  ``sum p^2`` over the rest from two backward passes.  The value is the
  midpoint and :class:`DistinctAtK` carries the bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tilt.dp.passes import (
    backward_logsumexp,
    backward_max,
    backward_moments,
    tilted_conditionals,
)
from tilt.dp.policy import MarkovPolicy
from tilt.dp.space import AcyclicSpace, FloatArray
from tilt.measures import Measures, OODPass

__all__ = [
    "DISTINCT_EXACT_LIMIT",
    "DistinctAtK",
    "measure",
    "measure_with_distinct",
    "pass_at_k",
    "correct_entropy",
    "gap_slope",
    "weighted_gap_slope",
    "ratio_distortion",
    "correct_flow_by_move",
    "ood_blocked",
    "ood_reroute",
    "reroute_accuracy",
    "distinct_at_k",
    "first_move_shares",
]

DISTINCT_EXACT_LIMIT = 200_000
"""Most rollouts listed for distinct@k (exact below it; a bound above)."""


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def pass_at_k(policy: MarkovPolicy, k: int) -> float:
    """``1 - (1 - q(C))^k``."""
    k = _check_k(k)
    fail = policy.incorrect_mass
    return 0.0 - math.expm1(k * math.log(fail)) if fail > 0 else 1.0


def _correct_chain(policy: MarkovPolicy) -> tuple[FloatArray, FloatArray]:
    """Conditionals of ``q(. | C)`` and their edge flows (logs)."""

    cond = policy.correct_cond
    return cond, policy.log_correct_reach[policy.space.edge_tail] + cond


def correct_entropy(policy: MarkovPolicy) -> float:
    """``H(q(. | C))`` in nats: ``sum_e P_C(e) (-log q_C(e))``."""
    if not np.isfinite(policy.log_correct_below[0]):
        return 0.0
    cond, flow = _correct_chain(policy)
    live = np.isfinite(flow) & np.isfinite(cond)
    return float(max(0.0, -(np.exp(flow[live]) * cond[live]).sum()))


def _keep(policy: MarkovPolicy, base: MarkovPolicy) -> FloatArray:
    return np.where(np.isfinite(policy.log_cond) & np.isfinite(base.log_cond), 0.0, -np.inf)


def _slope(
    space: AcyclicSpace,
    weight: FloatArray,
    keep: FloatArray,
    base: MarkovPolicy,
    policy: MarkovPolicy,
    uniform: bool,
) -> float:
    leaf = np.where(space.correct, 0.0, -np.inf)
    full = not np.isneginf(keep).any()
    # when every correct rollout counts, the count is structural (cached)
    count = _log_correct_count(space)[0] if full else backward_logsumexp(space, keep, leaf)[0]
    if not count >= math.log(2.0) - 1e-9:
        return math.nan
    if uniform and full:  # the uniform chain on C is structural too
        cond = space.memo(
            "uniform_correct_chain", lambda: tilted_conditionals(space, weight, leaf)[0]
        )
    elif full:  # pi0(. | C): the base's conditioned chain
        cond = base.correct_cond
    else:
        cond, _ = tilted_conditionals(space, weight, leaf)
    x = np.where(np.isfinite(base.log_cond), base.log_cond, 0.0)
    y = np.where(np.isfinite(policy.log_cond), policy.log_cond, 0.0)
    # log pi0 constant up to rounding over the counted rollouts: no slope (the rule of
    # tilt.measures.least_squares_slope), from two max-plus passes
    top = backward_max(space, np.where(np.isfinite(keep), x, -np.inf), leaf)[0]
    bottom = -backward_max(space, np.where(np.isfinite(keep), -x, -np.inf), leaf)[0]
    if top - bottom <= 1e-9 * (1.0 + max(abs(top), abs(bottom))):
        return math.nan
    _, _, var, cov = backward_moments(space, cond, x, y)
    if not var[0] > 0:
        return math.nan
    return float(cov[0] / var[0])


def gap_slope(policy: MarkovPolicy, base: MarkovPolicy) -> float:
    """Least-squares slope of ``log q(y)`` on ``log pi0(y)`` over correct ``y`` with ``q(y) > 0``.

    Equal weights: the moments are taken under the uniform distribution on those
    rollouts (a Markov chain: the count below each state, by a backward pass).
    """
    keep = _keep(policy, base)
    return _slope(policy.space, keep, keep, base, policy, uniform=True)


def weighted_gap_slope(policy: MarkovPolicy, base: MarkovPolicy) -> float:
    """:func:`gap_slope` with each rollout weighted by ``pi0(y)``."""
    keep = _keep(policy, base)
    return _slope(policy.space, keep + base.log_cond, keep, base, policy, uniform=False)


def ratio_distortion(policy: MarkovPolicy, base: MarkovPolicy) -> float:
    """``max - min over y in C of (log q(y) - log pi0(y))``; ``inf`` if ``q`` drops one.

    Two max-plus passes of ``log q(e) - log pi0(e)`` over the correct paths.
    """
    space = policy.space
    leaf = np.where(space.correct, 0.0, -np.inf)
    with np.errstate(invalid="ignore"):
        diff = policy.log_cond - base.log_cond
    top = backward_max(space, diff, leaf)[0]
    bottom = -backward_max(space, -diff, leaf)[0]
    if math.isinf(bottom):
        return math.inf
    return float(top - bottom)


def correct_flow_by_move(policy: MarkovPolicy) -> FloatArray:
    """``q({y in C : e in E(y)})`` per graph move."""
    space = policy.space
    return np.bincount(
        space.edge_move, weights=np.exp(policy.log_correct_flow), minlength=space.n_moves
    ).astype(np.float64)


def _log_correct_count(space: AcyclicSpace) -> FloatArray:
    """``log`` of the number of correct rollouts below each state (structure; cached)."""

    def compute() -> FloatArray:
        leaf = np.where(space.correct, 0.0, -np.inf)
        return backward_logsumexp(space, np.zeros(space.n_edges), leaf)

    return space.memo("log_correct_count", compute)


def _used_moves(space: AcyclicSpace) -> np.ndarray:
    """Moves made by some correct rollout (structure only), sorted."""

    def compute() -> np.ndarray:
        below = _log_correct_count(space)
        hit = np.isfinite(below[space.edge_head])
        return np.flatnonzero(np.bincount(space.edge_move[hit], minlength=space.n_moves))

    return space.memo("used_moves", compute)


def _ood(
    values: FloatArray,
    moves: np.ndarray,
    space: AcyclicSpace,
    ks: Sequence[int],
) -> list[OODPass]:
    out = []
    with np.errstate(divide="ignore"):
        log_fail = np.log(np.minimum(values, 1.0))
    for k in ks:
        passes = 0.0 - np.expm1(k * log_fail)
        worst = int(np.argmin(passes))  # the first minimum, as tilt.measures picks it
        out.append(
            OODPass(
                k,
                float(passes.mean()),
                float(passes[worst]),
                space.move_label(int(moves[worst])),
                int(moves.size),
            )
        )
    return out


def ood_blocked(policy: MarkovPolicy, ks: Sequence[int]) -> list[OODPass]:
    """*Blocked = fail*: ``1 - (1 - q(C without e))^k`` for each move ``e`` of a correct rollout."""
    ks = [_check_k(k) for k in ks]
    space = policy.space
    moves = _used_moves(space)
    fail = policy.incorrect_mass + correct_flow_by_move(policy)[moves]
    return _ood(fail, moves, space, ks)


def _exclusive_logsumexp(space: AcyclicSpace, values: FloatArray) -> FloatArray:
    """Per edge ``e``: ``log sum exp`` of ``values`` over the *other* edges of its state.

    Prefix and suffix ``logaddexp`` scans on a (states x max degree) table: no
    subtraction, so a sum of the others stays exact when ``e`` holds almost all.
    """
    internal, starts = space.groups
    deg = space.out_count[internal]
    width = int(deg.max(initial=1))
    table = np.full((internal.size, width + 2), -np.inf)
    rows = np.repeat(np.arange(internal.size), deg)
    cols = np.arange(space.n_edges) - np.repeat(starts, deg) + 1
    table[rows, cols] = values
    prefix = np.logaddexp.accumulate(table, axis=1)
    suffix = np.logaddexp.accumulate(table[:, ::-1], axis=1)[:, ::-1]
    return np.logaddexp(prefix[rows, cols - 1], suffix[rows, cols + 1])


def reroute_accuracy(policy: MarkovPolicy) -> tuple[np.ndarray, FloatArray]:
    """``(moves, q_e(C))``: the accuracy of the re-routed policy for every move ``e`` that
    some correct rollout makes.

    ``q_e(u | s) = q(u | s) / (1 - q(w | s))`` at every state of ``v`` (``e = v -> w``);
    a state where the other moves carry no mass becomes a failed dead end.
    """
    space = policy.space
    moves = _used_moves(space)
    below = policy.log_correct_below
    with np.errstate(invalid="ignore"):
        num = _exclusive_logsumexp(space, policy.log_cond + below[space.edge_head])
        den = _exclusive_logsumexp(space, policy.log_cond)
        new = np.where(np.isneginf(den), 0.0, np.exp(num - den))
    reach = np.exp(policy.log_reach[space.edge_tail])
    old = np.exp(below[space.edge_tail])
    drop = np.bincount(space.edge_move, weights=reach * old, minlength=space.n_moves)
    gain = np.bincount(space.edge_move, weights=reach * new, minlength=space.n_moves)
    acc = np.clip(policy.accuracy - drop + gain, 0.0, 1.0)
    return moves, acc[moves]


def ood_reroute(policy: MarkovPolicy, ks: Sequence[int]) -> list[OODPass]:
    """*Re-route*: ``1 - (1 - q_e(C))^k`` for every move ``e`` of some correct rollout."""
    ks = [_check_k(k) for k in ks]
    moves, acc = reroute_accuracy(policy)
    return _ood(1.0 - acc, moves, policy.space, ks)


def first_move_shares(policy: MarkovPolicy) -> dict[str, float]:
    """Strategy shares for the ``first-move`` labelling: ``q(first move = e | C)`` per move
    ``e`` out of the source that some correct rollout makes (the source state's correct flows).

    RL's optimum keeps the base's shares; SD's need not.  ``{}`` when ``q(C) = 0``.
    """
    space = policy.space
    if not np.isfinite(policy.log_correct_below[0]):
        return {}
    e0, e1 = int(space.out_start[0]), int(space.out_start[1])
    below = _log_correct_count(space)[space.edge_head[e0:e1]]
    flow = np.exp(policy.log_correct_flow[e0:e1] - policy.log_correct_below[0])
    return {
        space.edge_label(e): float(f)
        for e, f, ok in zip(range(e0, e1), flow, np.isfinite(below), strict=True)
        if ok
    }


# --------------------------------------------------------------------------
# distinct@k


@dataclass(frozen=True)
class DistinctAtK:
    """``distinct@k`` with its error bound.

    Attributes
    ----------
    value : float
        Exact when ``exact``; otherwise the midpoint of the proven interval.
    error : float
        ``|value - distinct@k| <= error`` (0 when exact, up to rounding).
    exact : bool
        Every correct rollout with ``q(y) > 0`` was listed.
    listed : int
        Rollouts listed.
    """

    value: float
    error: float
    exact: bool
    listed: int


def _top_rollouts(policy: MarkovPolicy, log_tau: float, limit: int) -> FloatArray | None:
    """``log q(y)`` of every correct ``y`` with ``log q(y) >= log_tau``; ``None`` past ``limit``."""
    space = policy.space
    leaf = np.where(space.correct, 0.0, -np.inf)
    best = backward_max(space, policy.log_cond, leaf)
    state = np.array([0], dtype=np.int64)
    logp = np.array([0.0])
    found: list[FloatArray] = []
    n_found = 0
    while state.size:
        done = space.correct[state]
        if done.any():
            found.append(logp[done])
            n_found += int(done.sum())
            if n_found > limit:
                return None
        state, logp = state[~done], logp[~done]
        counts = space.out_count[state]
        owner = np.repeat(np.arange(state.size), counts)
        edges = np.repeat(space.out_start[state] - np.cumsum(np.r_[0, counts[:-1]]), counts)
        edges = edges + np.arange(owner.size)
        new_logp = logp[owner] + policy.log_cond[edges]
        head = space.edge_head[edges]
        ok = np.isfinite(new_logp) & np.isfinite(best[head]) & (new_logp + best[head] >= log_tau)
        state, logp = head[ok], new_logp[ok]
        if state.size > limit:
            return None
    return np.concatenate(found) if found else np.zeros(0)


def _f(log_p: FloatArray, k: int) -> float:
    p = np.exp(log_p)
    with np.errstate(divide="ignore"):
        return float(0.0 - np.expm1(k * np.log1p(-np.minimum(p, 1.0))).sum())


def distinct_at_k(
    policy: MarkovPolicy, ks: Sequence[int], limit: int = DISTINCT_EXACT_LIMIT
) -> dict[int, DistinctAtK]:
    """``sum over y in C of 1 - (1 - q(y))^k``, exact or within a proven bound.

    Lists the correct rollouts with ``q(y) > 0`` when there are at most ``limit``
    of them (exact).  Otherwise lists those with ``q(y) >= tau = 1 / limit``
    (at most ``limit``) and bounds the rest, whose total mass ``T1`` and power
    sum ``T2 = sum p^2 <= tau T1`` come from backward passes, by
    ``k T1 - C(k, 2) T2 <= rest <= k T1``.
    """
    ks = [_check_k(k) for k in ks]
    space = policy.space
    leaf = np.where(space.correct, 0.0, -np.inf)
    if np.isfinite(policy.log_cond).all():
        count = _log_correct_count(space)[0]
    else:
        positive = np.where(np.isfinite(policy.log_cond), 0.0, -np.inf)
        count = backward_logsumexp(space, positive, leaf)[0]
    if count <= math.log(limit) + 1e-9:
        top = _top_rollouts(policy, -math.inf, limit)
        assert top is not None  # at most limit rollouts have q(y) > 0
        return {k: DistinctAtK(_f(top, k), 0.0, True, int(top.size)) for k in ks}
    log_tau = -math.log(limit)
    top = _top_rollouts(policy, log_tau, limit)
    assert top is not None  # at most 1 / tau rollouts have q(y) >= tau
    p2 = math.exp(backward_logsumexp(space, 2.0 * policy.log_cond, leaf)[0])
    top_p = np.exp(top)
    t1 = max(0.0, policy.accuracy - float(top_p.sum()))
    t2 = min(max(0.0, p2 - float((top_p * top_p).sum())) + 4e-16 * p2, math.exp(log_tau) * t1)
    out = {}
    for k in ks:
        pairs = k * (k - 1) / 2.0
        value = _f(top, k) + k * t1 - pairs * t2 / 2.0
        out[k] = DistinctAtK(value, pairs * t2 / 2.0 + 1e-15 * k, False, int(top.size))
    return out


def measure(policy: MarkovPolicy, base: MarkovPolicy, ks: Sequence[int] = (1, 8, 64)) -> Measures:
    """:class:`tilt.measures.Measures` of ``policy`` against ``base`` (the same fields as
    enumeration; distinct@k is the value of :func:`distinct_at_k`)."""
    return measure_with_distinct(policy, base, ks)[0]


def measure_with_distinct(
    policy: MarkovPolicy, base: MarkovPolicy, ks: Sequence[int] = (1, 8, 64)
) -> tuple[Measures, dict[int, DistinctAtK]]:
    """:func:`measure` and the :class:`DistinctAtK` (value, bound, exactness) behind it."""
    ks = [_check_k(k) for k in ks]
    entropy = correct_entropy(policy)
    distinct = distinct_at_k(policy, ks)
    out = Measures(
        accuracy=policy.accuracy,
        correct_entropy=entropy,
        # exp(H) exceeds float64 beyond 709 nats: inf (the entropy is its log)
        effective_correct=math.exp(entropy) if entropy < 709.0 else math.inf,
        gap_slope=gap_slope(policy, base),
        ratio_distortion=ratio_distortion(policy, base),
        weighted_gap_slope=weighted_gap_slope(policy, base),
        pass_at_k={k: pass_at_k(policy, k) for k in ks},
        distinct_at_k={k: distinct[k].value for k in ks},
        ood=dict(zip(ks, ood_blocked(policy, ks), strict=True)),
    )
    return out, distinct
