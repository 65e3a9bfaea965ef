"""Every measure of ``docs/theory.md`` for a Markov policy, by passes over the state DAG.

* accuracy and pass@k: one backward pass (incorrect mass summed directly);
* correct entropy: the entropy of the chain conditioned on ``C``,
  ``H = sum_e P_C(e) (-log q_C(e))`` (non-negative terms, nothing cancels);
* gap slope, unweighted and ``pi0``-weighted: ``Cov(log pi0, log q) / Var(log pi0)``
  under the uniform (resp. ``pi0(. | C)``) measure on the correct rollouts with
  ``q(y) > 0``, both additive along paths: sums over edges of the chain's flow
  times centred increments (:class:`_Chain`, cached per base; one mean pass per
  policy);
* ratio distortion: two max-plus passes of ``log q(e) - log pi0(e)``;
* out-of-distribution pass@k, both readings, for every move in ``O(n_edges)``
  total: *blocked = fail* from the correct flow through each move; *re-route*
  from ``q_e(C) = q(C) + sum over the states s of v of q(s) (B_e(s) - B(s))``,
  ``B(s) = q(C | s)`` and ``B_e(s)`` the same with ``e`` removed and the rest
  renormalised (a simple path visits ``v`` once, so nothing else changes),
  ``B_e(s) = B(s) (1 - q_C(e)) / (1 - q(e))`` (:func:`reroute_accuracy`);
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
from functools import cached_property
from types import ModuleType

import numpy as np

from tilt._checks import check_k
from tilt._numerics import FloatArray, both
from tilt.engines.dp import passes as dp_passes
from tilt.engines.dp.passes import (
    backward_logsumexp,
    backward_max,
    backward_mean,
    kernels,
    linear_weights,
    tilted_conditionals,
)
from tilt.engines.dp.policy import MarkovPolicy
from tilt.engines.dp.space import AcyclicSpace
from tilt.measures import Measures, OODPass, pass_at_k
from tilt.measures.strategies import StrategyMeasures, measures_from_mass

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
    "first_move_names",
    "first_move_strategies",
]

DISTINCT_EXACT_LIMIT = 200_000
"""Most rollouts listed for distinct@k (exact below it; a bound above)."""


@dataclass(frozen=True, eq=False)
class _Flows:
    """Per-edge pieces of ``q(. | C)`` shared by the measures of one policy.

    ``cond`` = ``log q_C(e)`` (the conditioned chain), ``chain = exp(cond)``, ``reach`` =
    ``q_C(reach s)`` per state (linear), and :attr:`flow` = ``q(e on the path | C)`` =
    ``q_C(reach tail) q_C(e)`` (linear; taken on first use: the compiled measures read
    ``reach`` and ``chain`` instead).
    """

    space: AcyclicSpace
    cond: FloatArray
    chain: FloatArray
    reach: FloatArray

    @cached_property
    def flow(self) -> FloatArray:
        """``reach[tail] * chain`` per edge."""
        space = self.space
        compiled = kernels(space)
        if compiled is not None:
            flow: FloatArray = compiled.edge_flow(space.out_start, self.reach, self.chain)
            return flow
        return self.reach[space.edge_tail] * self.chain


def _flows(policy: MarkovPolicy) -> _Flows:
    def compute() -> _Flows:
        reach = np.exp(policy.log_correct_reach)
        return _Flows(policy.space, policy.correct_cond, policy.correct_prob, reach)

    return policy.memo("flows", compute)


def _measure_kernels(space: AcyclicSpace) -> ModuleType | None:
    """:mod:`tilt.engines.dp._compiled_measures` when the compiled passes serve ``space``
    (:func:`tilt.engines.dp.passes.kernels`), else ``None`` (the numpy paths)."""
    if kernels(space) is None:
        return None
    from tilt.engines.dp import _compiled_measures

    return _compiled_measures


def correct_entropy(policy: MarkovPolicy) -> float:
    """``H(q(. | C))`` in nats: ``sum_e P_C(e) (-log q_C(e))`` (non-negative terms)."""
    if not np.isfinite(policy.log_correct_below[0]):
        return 0.0
    flows = _flows(policy)
    compiled = _measure_kernels(policy.space)
    if compiled is not None:  # the same products, summed with compensation (no temporaries)
        total = policy.memo(
            "correct_log_sum",
            lambda: float(
                compiled.correct_log_sum(
                    policy.space.out_start, flows.reach, flows.chain, flows.cond
                )
            ),
        )
        return float(max(0.0, -total))
    # exp(H) (the effective number) turns the last bits of H into relative error: numpy's
    # dot here (as before), a compensated sum in the kernel (the same to rounding)
    live = flows.flow > 0
    return float(max(0.0, -np.dot(flows.flow, np.where(live, flows.cond, 0.0))))


def _on_correct_paths(space: AcyclicSpace) -> np.ndarray:
    """Edges that some correct rollout makes (structure; cached)."""
    return space.memo(
        "on_correct_paths", lambda: np.isfinite(_log_correct_count(space)[space.edge_head])
    )


@dataclass(frozen=True, eq=False)
class _Chain:
    """A Markov chain on the counted correct rollouts and ``X = log pi0(y)`` under it.

    By the law of total covariance over each move (martingale increments),
    ``Cov(X, Y) = sum_e F_e dx_e dy_e`` with ``F_e`` the chain's flow through
    ``e`` and ``dx_e = x_e + E[X | head] - E[X | tail]`` (centred, so nothing
    large cancels); ``scaled = F dx`` and ``var = sum_e F_e dx_e^2`` are kept.
    ``usable`` is False when fewer than two rollouts count or ``log pi0`` is
    constant on them (no slope).
    """

    prob: FloatArray
    support: np.ndarray
    scaled: FloatArray
    var: float
    usable: bool


def _chain(
    space: AcyclicSpace,
    cond: FloatArray,
    x: FloatArray,
    log_count: float,
    known: MarkovPolicy | None = None,
) -> _Chain:
    """The :class:`_Chain` of the chain ``cond`` (``log_count``: rollouts it counts;
    ``known``: a policy whose conditioned chain it is, with its reach and probabilities)."""
    if known is None:
        chain = MarkovPolicy(space, cond)
        prob, reach = chain.prob, chain.log_reach
    else:
        prob, reach = known.correct_prob, known.log_correct_reach
    compiled = kernels(space)
    if compiled is not None:
        support, scaled, var, branching, bound = compiled.chain_moments(
            space.layer_start, space.out_start, space.edge_head, prob, np.exp(reach), x
        )
        return _chain_usable(space, prob, support, scaled, var, branching, bound, x, log_count)
    flow = np.exp(reach)[space.edge_tail] * prob
    support = flow > 0
    x = np.where(support, x, 0.0)
    dx = _increments(space, prob, x)
    scaled = flow * dx
    var = float(np.dot(scaled, dx))
    # the rollouts of positive weight (as a float): at least two, and log pi0 not constant
    # on them up to rounding (the rule of tilt.measures.least_squares_slope), by two
    # max-plus passes
    internal, starts = space.groups
    branching = bool((np.add.reduceat(support, starts) >= 2).any())
    # a path meets each layer once: |X| <= the sum over layers of the largest |x_e|, and
    # Var X <= spread^2 / 4, so a variance above the threshold proves the spread
    e0s = np.array([entry[0] for entry in space.tail_layers], dtype=np.int64)
    bound = float(np.maximum.reduceat(np.abs(x), e0s).sum()) if e0s.size else 0.0
    return _chain_usable(space, prob, support, scaled, var, branching, bound, x, log_count)


def _chain_usable(
    space: AcyclicSpace,
    prob: FloatArray,
    support: np.ndarray,
    scaled: FloatArray,
    var: float,
    branching: bool,
    bound: float,
    x: FloatArray,
    log_count: float,
) -> _Chain:
    """The :class:`_Chain`, usable when some state branches, ``log pi0`` is not constant on
    the counted rollouts (``x``: its increments on the support) and two rollouts count."""
    spread = var > (0.5e-9 * (1.0 + bound)) ** 2
    if not spread:
        leaf = np.where(space.correct, 0.0, -np.inf)
        top = backward_max(space, np.where(support, x, -np.inf), leaf)[0]
        bottom = -backward_max(space, np.where(support, -x, -np.inf), leaf)[0]
        spread = top - bottom > 1e-9 * (1.0 + max(abs(top), abs(bottom)))
    enough = log_count >= math.log(2.0) - 1e-9
    return _Chain(prob, support, scaled, var, enough and branching and spread and var > 0)


def _increments(space: AcyclicSpace, prob: FloatArray, x: FloatArray) -> FloatArray:
    """``x_e + E[X | head] - E[X | tail]`` per edge, ``X`` the sum of ``x`` below (centred)."""
    mean = backward_mean(space, prob, x)
    return x + mean[space.edge_head] - mean[space.edge_tail]


def _centred_dot(space: AcyclicSpace, prob: FloatArray, y: FloatArray, weight: FloatArray) -> float:
    """``sum_e weight_e dy_e`` with ``dy`` the centred increments of ``Y = sum of y`` under
    the chain ``prob`` (:func:`_increments`), one layer at a time (no edge-sized temporaries)."""
    mean = np.zeros(space.n_states)
    head = space.edge_head
    total = 0.0
    for e0, e1, internal, starts, sizes in reversed(space.tail_layers):
        step = y[e0:e1] + mean[head[e0:e1]]
        here = np.add.reduceat(prob[e0:e1] * step, starts)
        mean[internal] = here
        step -= np.repeat(here, sizes)
        total += float(np.dot(weight[e0:e1], step))
    return total


def _finite_on_paths(policy: MarkovPolicy) -> bool:
    """Every move that some correct rollout makes has ``q > 0`` (cached per policy)."""
    on_path = _on_correct_paths(policy.space)
    compiled = _measure_kernels(policy.space)
    if compiled is not None:  # no edge-sized temporaries
        return policy.memo(
            "finite_on_paths", lambda: bool(compiled.finite_where(policy.log_cond, on_path))
        )
    return policy.memo(
        "finite_on_paths", lambda: bool(np.all(np.isfinite(policy.log_cond) | ~on_path))
    )


def _counted_chain(policy: MarkovPolicy, base: MarkovPolicy, uniform: bool) -> _Chain:
    """The chain of :func:`gap_slope` (``uniform``) or :func:`weighted_gap_slope`."""
    space = policy.space
    full = _finite_on_paths(policy) and _finite_on_paths(base)
    leaf = np.where(space.correct, 0.0, -np.inf)

    def build(keep: FloatArray, count: float) -> _Chain:
        # where every move is finite (full), the increments are the base's conditionals
        x = base.log_cond if full else np.where(np.isfinite(base.log_cond), base.log_cond, 0.0)
        if full and not uniform:  # pi0(. | C): the base's conditioned chain, its reach known
            return _chain(space, base.correct_cond, x, count, base)
        if full:  # uniform on C: the ratio of the counts below head and tail (cached)
            below = _log_correct_count(space)
            cond = _ratio_conditionals(space, below)
        else:
            weight = keep if uniform else keep + base.log_cond
            cond = tilted_conditionals(space, weight, leaf)[0]
        return _chain(space, cond, x, count)

    if full:  # every correct rollout counts: the chain depends on the base alone (cached)
        key = f"gap_chain:{'uniform' if uniform else 'weighted'}"
        return base.memo(key, lambda: build(np.zeros(space.n_edges), _log_correct_count(space)[0]))
    keep = _keep(policy, base)
    return build(keep, backward_logsumexp(space, keep, leaf, compiled=True)[0])


def _ratio_conditionals(space: AcyclicSpace, below: FloatArray) -> FloatArray:
    """``below(head) - below(tail)`` per edge (uniform where ``below(tail) = -inf``): the
    conditionals of the uniform distribution on the paths that ``below`` counts."""
    compiled = kernels(space)
    if compiled is not None:  # the same operations, edge by edge
        with np.errstate(divide="ignore"):  # a leaf's -log 0 is never read
            uniform = -np.log(space.out_count)
        return compiled.ratio_cond(space.out_start, space.edge_head, below, uniform)
    norm = below[space.edge_tail]
    with np.errstate(invalid="ignore"):
        out = below[space.edge_head] - norm
    dead = np.isneginf(norm)
    if dead.any():
        out[dead] = -np.log(space.out_count[space.edge_tail[dead]])
    out[np.isnan(out)] = -np.inf
    return out


def _keep(policy: MarkovPolicy, base: MarkovPolicy) -> FloatArray:
    return np.where(np.isfinite(policy.log_cond) & np.isfinite(base.log_cond), 0.0, -np.inf)


def _slope(policy: MarkovPolicy, base: MarkovPolicy, uniform: bool) -> float:
    chain = _counted_chain(policy, base, uniform)
    if not chain.usable:
        return math.nan
    # Cov(X, Y) = Var X + Cov(X, D), D = log q - log pi0: D's increments are small
    space = policy.space
    compiled = kernels(space)
    if compiled is not None:
        cov = compiled.centred_dot(
            space.out_start,
            space.edge_head,
            chain.prob,
            policy.log_cond,
            base.log_cond,
            chain.support,
            chain.scaled,
        )
        return 1.0 + float(cov) / chain.var
    diff = np.subtract(
        policy.log_cond, base.log_cond, out=np.zeros(base.log_cond.size), where=chain.support
    )
    return 1.0 + _centred_dot(policy.space, chain.prob, diff, chain.scaled) / chain.var


def _slopes(policy: MarkovPolicy, base: MarkovPolicy) -> tuple[float, float]:
    """``(gap_slope, weighted_gap_slope)``; with the kernels, both centred dots from the
    backward sweep when both chains are usable (:func:`_backward_sweep`: the same sums as
    :func:`_slope`'s, so the same bits), else one :func:`_slope` each; cached per policy and
    base."""
    _backward_sweep(policy, base)  # remembers both slopes when it computes them

    def apart() -> tuple[float, float]:
        return _slope(policy, base, uniform=True), _slope(policy, base, uniform=False)

    return policy.memo(f"slopes:{id(base)}", apart)


def _backward_sweep(policy: MarkovPolicy, base: MarkovPolicy) -> None:
    """With the kernels, the backward passes of :func:`_slopes`, :func:`ratio_distortion`,
    :func:`_top_rollouts` and :func:`distinct_at_k` (its max-plus pass, its sum of squares,
    whether every conditional is finite) in one pass over the edges
    (:func:`tilt.engines.dp._compiled_measures.backward_sweep`: the same operations, so the
    same bits; once per policy and base), remembered where those functions look for them."""
    compiled = _measure_kernels(policy.space)
    if compiled is not None:
        policy.memo(f"sweep:{id(base)}", lambda: _sweep(policy, base, compiled))


def _sweep(policy: MarkovPolicy, base: MarkovPolicy, compiled: ModuleType) -> bool:
    space = policy.space
    passes = kernels(space)
    assert passes is not None  # the gate of _measure_kernels
    uniform = _counted_chain(policy, base, uniform=True)
    weighted = _counted_chain(policy, base, uniform=False)
    slopes = uniform.usable and weighted.usable
    # distinct@k's sum of squares rides along when it squares on the fly (no shift)
    weights = policy.linear
    squares = not weights.shift.any()
    head_lo, head_hi = dp_passes.layer_head_spans(space, passes)
    best, top, low, square, cov, cov2, finite = compiled.backward_sweep(
        space.layer_start,
        space.out_start,
        space.edge_head,
        head_lo,
        head_hi,
        policy.log_cond,
        base.log_cond,
        np.where(space.leaf & space.correct, 0.0, -np.inf),
        squares,
        weights.prob,
        weights.unsafe_tail,
        2.0 * weights.power,
        dp_passes.SAFE_RANGE,
        slopes,
        uniform.prob,
        uniform.support,
        uniform.scaled,
        weighted.prob,
        weighted.support,
        weighted.scaled,
    )
    policy.memo("max_below", lambda: best)
    policy.memo(f"spread:{id(base)}", lambda: (top, low))
    policy.memo("all_finite", lambda: bool(finite))
    if squares:
        policy.memo("log_square_mass", lambda: float(square))
    if slopes:
        policy.memo(
            f"slopes:{id(base)}",
            lambda: (1.0 + float(cov) / uniform.var, 1.0 + float(cov2) / weighted.var),
        )
    return True


def gap_slope(policy: MarkovPolicy, base: MarkovPolicy) -> float:
    """Least-squares slope of ``log q(y)`` on ``log pi0(y)`` over correct ``y`` with ``q(y) > 0``.

    Equal weights: the moments are taken under the uniform distribution on those
    rollouts (a Markov chain: the count below each state, by a backward pass);
    ``Cov(log pi0, log q) = Var log pi0 + Cov(log pi0, log q - log pi0)``, each
    a sum over edges of centred increments (:class:`_Chain`).
    """
    return _slopes(policy, base)[0]


def weighted_gap_slope(policy: MarkovPolicy, base: MarkovPolicy) -> float:
    """:func:`gap_slope` with each rollout weighted by ``pi0(y)``."""
    return _slopes(policy, base)[1]


def ratio_distortion(policy: MarkovPolicy, base: MarkovPolicy) -> float:
    """``max - min over y in C of (log q(y) - log pi0(y))``; ``inf`` if ``q`` drops one.

    Two max-plus passes of ``log q(e) - log pi0(e)`` over the correct paths.
    """
    space = policy.space
    leaf = np.where(space.correct, 0.0, -np.inf)
    compiled = kernels(space)
    if compiled is not None:  # both passes at once, no edge-sized temporaries
        top, low = policy.memo(
            f"spread:{id(base)}",
            lambda: compiled.backward_spread(
                space.out_start, space.edge_head, policy.log_cond, base.log_cond, leaf
            ),
        )
        return math.inf if math.isinf(low) else float(top + low)
    with np.errstate(invalid="ignore"):
        diff = policy.log_cond - base.log_cond
    top = backward_max(space, diff, leaf)[0]
    bottom = -backward_max(space, -diff, leaf)[0]
    if math.isinf(bottom):
        return math.inf
    return float(top - bottom)


def _log_correct_count(space: AcyclicSpace) -> FloatArray:
    """``log`` of the number of correct rollouts below each state (structure; cached)."""
    from tilt.engines.dp.policy import log_rollout_counts

    return log_rollout_counts(space, correct_only=True)


def _used_moves(space: AcyclicSpace) -> tuple[np.ndarray, np.ndarray | slice | None]:
    """``(moves, edges)``: the moves some correct rollout makes, sorted, and — when every
    state edge is a different move (no depth in the state) — the edge of each."""

    def compute() -> tuple[np.ndarray, np.ndarray | slice | None]:
        hit = _on_correct_paths(space)
        count = np.bincount(space.edge_move, minlength=space.n_moves)
        if count.max(initial=0) <= 1:
            edges = np.flatnonzero(hit)
            order = space.edge_move[edges]
            if not bool((order[1:] > order[:-1]).all()):  # already in move order: kept
                edges = edges[np.argsort(order, kind="stable")]
            if edges.size == space.n_edges and bool((np.diff(edges) == 1).all()):
                return space.edge_move, slice(None)  # every edge, in move order: no gather
            return space.edge_move[edges], edges
        return np.flatnonzero(np.bincount(space.edge_move[hit], minlength=space.n_moves)), None

    return space.memo("used_moves", compute)


def _used_summary(space: AcyclicSpace) -> tuple[int, int, bool]:
    """``(count, first, single)`` of the moves some correct rollout makes: how many, the
    smallest, and whether each is made by one state edge at most (so that the compiled scan
    may read them edge by edge); :func:`_used_moves`'s size, first entry and
    ``edges is not None``, without keeping its arrays (two of the edges' size)."""

    def compute() -> tuple[int, int, bool]:
        hit = _on_correct_paths(space)
        # without the depth a state is a node, whose moves leave it once each
        single = not space.with_depth or int(np.bincount(space.edge_move).max(initial=0)) <= 1
        if not single:
            moves, _ = _used_moves(space)
            return int(moves.size), int(moves[0]) if moves.size else -1, False
        count = int(np.count_nonzero(hit))
        first = int(np.min(space.edge_move, where=hit, initial=space.n_moves)) if count else -1
        return count, first, True

    return space.memo("used_summary", compute)


def _by_move(space: AcyclicSpace, edge_values: FloatArray) -> FloatArray:
    """Per used move (in the order of :func:`_used_moves`): the sum over its state edges."""
    moves, edges = _used_moves(space)
    if edges is not None:
        return edge_values[edges]
    return np.bincount(space.edge_move, weights=edge_values, minlength=space.n_moves)[moves]


def correct_flow_by_move(policy: MarkovPolicy) -> FloatArray:
    """``q({y in C : e in E(y)})`` per graph move."""
    space = policy.space
    flow = policy.accuracy * _flows(policy).flow
    moves = np.bincount(space.edge_move, weights=flow, minlength=space.n_moves)
    return moves.astype(np.float64, copy=False)


def _power(x: FloatArray, k: int) -> FloatArray:
    """``x ** k`` (a new array) for a positive integer ``k``, by repeated squaring."""
    result: FloatArray | None = None
    square = x
    while True:
        if k & 1:
            result = square.copy() if result is None else np.multiply(result, square, out=result)
        k >>= 1
        if not k:
            assert result is not None
            return result
        square = square * square if square is x else np.multiply(square, square, out=square)


_CHUNK = 1 << 16
"""Moves per chunk of :func:`_ood` (cache-sized)."""


def _ood(
    fail: FloatArray,
    moves: np.ndarray,
    space: AcyclicSpace,
    ks: Sequence[int],
) -> list[OODPass]:
    """Mean and worst of ``1 - fail^k`` over the moves, chunk by chunk."""
    total = dict.fromkeys(ks, 0.0)
    worst: dict[int, tuple[float, int]] = dict.fromkeys(ks, (math.inf, 0))
    for lo in range(0, fail.size, _CHUNK):
        chunk = np.clip(fail[lo : lo + _CHUNK], 0.0, 1.0)
        for k in ks:
            passes = _power(chunk, k)
            np.subtract(1.0, passes, out=passes)
            total[k] += float(passes.sum())
            at = int(np.argmin(passes))  # the first minimum, as tilt.measures picks it
            if passes[at] < worst[k][0]:
                worst[k] = (float(passes[at]), lo + at)
    return [
        OODPass(
            k,
            total[k] / fail.size,
            worst[k][0],
            space.move_label(int(moves[worst[k][1]])),
            int(moves.size),
        )
        for k in ks
    ]


def ood_blocked(policy: MarkovPolicy, ks: Sequence[int]) -> list[OODPass]:
    """*Blocked = fail*: ``1 - (1 - q(C without e))^k`` for each move ``e`` of a correct rollout."""
    ks = [check_k(k) for k in ks]
    space = policy.space
    scans = _ood_scans(policy, ks)
    if scans is not None:
        return list(scans[0])
    moves, _ = _used_moves(space)
    fail = policy.incorrect_mass + policy.accuracy * _by_move(space, _flows(policy).flow)
    return _ood(fail, moves, space, ks)


def _ood_scans(
    policy: MarkovPolicy, ks: Sequence[int]
) -> tuple[list[OODPass], list[OODPass]] | None:
    """Both readings (blocked, re-route) by one compiled pass over the edges
    (:func:`tilt.engines.dp._compiled_measures.ood_scan`: the per-move values of
    :func:`ood_blocked` and :func:`reroute_accuracy` and :func:`_ood`'s mean and worst case,
    no edge-sized temporary; cached per policy and ``ks``), or ``None`` for the numpy paths
    (no kernels, or a move made by several state edges)."""
    space = policy.space
    count, first_move, single = _used_summary(space)
    compiled = _measure_kernels(space)
    if compiled is None or not single or not count:
        return None

    def compute() -> tuple[list[OODPass], list[OODPass]]:
        flows = _flows(policy)
        log_through = policy.log_correct_below[0] + policy.log_correct_reach
        used = _on_correct_paths(space)
        first = space.memo(
            "first_used_moves",
            lambda: compiled.first_moves(space.out_start, space.edge_move, used),
        )
        scan = compiled.ood_scan(
            space.out_start,
            space.edge_move,
            used,
            first,
            policy.prob,
            policy.log_cond,
            flows.chain,
            flows.cond,
            flows.reach,
            np.exp(log_through),
            log_through,
            policy.incorrect_mass,
            policy.accuracy,
            _TINY,
            np.array(ks, dtype=np.int64),
        )
        policy.memo("correct_log_sum", lambda: float(scan[6]))
        summary = (count, first_move)
        return _ood_passes(scan[:3], summary, space, ks), _ood_passes(scan[3:6], summary, space, ks)

    return policy.memo(f"ood:{tuple(ks)}", compute)


def _ood_passes(
    scan: tuple[FloatArray, FloatArray, np.ndarray],
    used: tuple[int, int],
    space: AcyclicSpace,
    ks: Sequence[int],
) -> list[OODPass]:
    """The :class:`OODPass` of each ``k`` from a compiled scan's ``(sums, worst, worst_move)``
    over ``used = (count, first)`` moves (the worst move ``-1``: every value ``nan``, the
    first move then, as :func:`_ood`)."""
    sums, worst, worst_move = scan
    count, first = used
    return [
        OODPass(
            k,
            float(sums[i]) / count,
            float(worst[i]),
            space.move_label(int(worst_move[i] if worst_move[i] >= 0 else first)),
            count,
        )
        for i, k in enumerate(ks)
    ]


_TINY = 1e-280
"""Below this a complement summed in the linear domain is redone in log space."""


def _complement(space: AcyclicSpace, prob: FloatArray) -> tuple[FloatArray, np.ndarray]:
    """``(1 - prob_e, first)`` per edge, ``prob`` a distribution over the edges of each state.

    ``1 - prob_e`` is the mass of the *other* edges.  An edge with
    ``prob_e <= 1/2`` has ``1 - prob_e >= 1/2``, exact to rounding; a state has at
    most one edge above ``1/2`` (``first``, the largest, the first one on a tie),
    whose complement is the sum of the others, taken directly.  Only ``first``
    edges can have a complement below ``1/2``.
    """
    internal, starts = space.groups
    sizes = space.out_count[internal]
    peak = np.maximum.reduceat(prob, starts)
    out = 1.0 - prob
    big = np.flatnonzero(peak > 0.5)
    if not big.size:
        return out, big
    deg = sizes[big]
    local = np.cumsum(deg) - deg  # where each state's edges start in the gathered list
    edges = np.repeat(starts[big] - local, deg) + np.arange(int(deg.sum()))
    values = prob[edges]
    hit = np.flatnonzero(values == np.repeat(peak[big], deg))
    owner = np.searchsorted(local, hit, side="right") - 1
    first_local = hit[np.r_[True, owner[1:] != owner[:-1]]]
    values[first_local] = 0.0
    first = edges[first_local]
    out[first] = np.add.reduceat(values, local)
    return out, first


def _others_logsumexp(space: AcyclicSpace, values: FloatArray, edges: np.ndarray) -> FloatArray:
    """Per edge in ``edges``: ``log sum exp`` of ``values`` over the other edges of its state
    (a table of the states' edges, in chunks; only the few edges whose complement is tiny)."""
    out = np.empty(edges.size)
    tails = space.edge_tail[edges]
    width = int(space.out_count[tails].max(initial=1))
    step = max(1, (1 << 22) // width)
    cols = np.arange(width)
    for lo in range(0, edges.size, step):
        e, s = edges[lo : lo + step], tails[lo : lo + step]
        index = space.out_start[s][:, None] + cols[None, :]
        valid = (cols[None, :] < space.out_count[s][:, None]) & (index != e[:, None])
        table = np.where(valid, values[np.minimum(index, values.size - 1)], -np.inf)
        peak = table.max(axis=1)
        safe = np.where(np.isfinite(peak), peak, 0.0)
        with np.errstate(divide="ignore"):
            total = np.log(np.exp(table - safe[:, None]).sum(axis=1)) + safe
        out[lo : lo + step] = np.where(np.isfinite(peak), total, -np.inf)
    return out


def reroute_accuracy(policy: MarkovPolicy) -> tuple[np.ndarray, FloatArray]:
    """``(moves, q_e(C))``: the accuracy of the re-routed policy for every move ``e`` that
    some correct rollout makes.

    ``q_e(u | s) = q(u | s) / (1 - q(w | s))`` at every state of ``v`` (``e = v -> w``);
    a state where the other moves carry no mass becomes a failed dead end.

    Notes
    -----
    With ``t_e = q_C(e)`` the conditioned chain, re-routing at ``s`` turns
    ``q(C | s)`` into ``q(C | s) (1 - t_e) / (1 - q(e))``, so
    ``q_e(C) = q(C) + sum over the states s of v of q(s) q(C | s) ((1 - t_e) / (1 - q(e)) - 1)``
    (a simple path visits ``v`` once).  Both complements are exact to rounding
    (:func:`_complement`); one below ``1e-280`` is redone from the logs.
    """
    moves, _ = _used_moves(policy.space)
    acc = policy.accuracy + _by_move(policy.space, _reroute_change(policy))
    np.minimum(acc, 1.0, out=acc)
    return moves, np.maximum(acc, 0.0, out=acc)


def _reroute_change(policy: MarkovPolicy) -> FloatArray:
    """``q_e(C) - q(C)`` per state edge (:func:`reroute_accuracy`), the edges whose
    complements are below ``_TINY`` redone from the logs."""
    space = policy.space
    flows = _flows(policy)
    # q(reach s) q(C | s) = q(C) q_C(reach s), the correct mass through s
    log_through = policy.log_correct_below[0] + policy.log_correct_reach
    compiled = _measure_kernels(space)
    if compiled is not None:  # one pass over the states, the tiny complements on the way
        change: FloatArray = compiled.reroute_changes(
            space.out_start,
            policy.prob,
            flows.chain,
            flows.cond,
            policy.log_cond,
            np.exp(log_through),
            log_through,
            _TINY,
        )
        return change
    keep_p, first_p = _complement(space, policy.prob)
    keep_t, first_t = _complement(space, flows.chain)
    through = np.exp(log_through)[space.edge_tail]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = keep_t / keep_p
    # a complement below 1/2 is on a `first` edge: no other mass there is a failed dead end
    ratio[first_p[keep_p[first_p] == 0.0]] = 0.0
    change = ratio
    change -= 1.0
    change *= through
    if not np.isfinite(change).all():  # a state no correct mass passes: nothing changes
        change[through == 0.0] = 0.0
    maybe = np.union1d(first_p, first_t)
    tails = space.edge_tail[maybe]
    small = (keep_p[maybe] < _TINY) | (keep_t[maybe] < _TINY)
    tiny = maybe[small & np.isfinite(log_through[tails]) & (space.out_count[tails] > 1)]
    if tiny.size:
        _redo_tiny(policy, flows, log_through, change, tiny)
    return change


def _redo_tiny(
    policy: MarkovPolicy,
    flows: _Flows,
    log_through: FloatArray,
    change: FloatArray,
    tiny: np.ndarray,
) -> None:
    """``change`` of the edges ``tiny`` (complements below ``_TINY``) from the logs: exact
    whatever the spread (the gain is at most 1)."""
    space = policy.space
    num = _others_logsumexp(space, flows.cond, tiny)
    den = _others_logsumexp(space, policy.log_cond, tiny)
    with np.errstate(invalid="ignore"):
        gain = np.exp(log_through[space.edge_tail[tiny]] + num - den)
    change[tiny] = (
        np.where(np.isneginf(den), 0.0, gain) - np.exp(log_through)[space.edge_tail[tiny]]
    )


def ood_reroute(policy: MarkovPolicy, ks: Sequence[int]) -> list[OODPass]:
    """*Re-route*: ``1 - (1 - q_e(C))^k`` for every move ``e`` of some correct rollout."""
    ks = [check_k(k) for k in ks]
    scans = _ood_scans(policy, ks)
    if scans is not None:
        return list(scans[1])
    moves, acc = reroute_accuracy(policy)
    return _ood(1.0 - acc, moves, policy.space, ks)


def _source_flow(policy: MarkovPolicy) -> FloatArray:
    """``q(e on the path | C)`` for the source's edges: those entries of :attr:`_Flows.flow`
    (the same products), without the edge-sized array."""
    flows = _flows(policy)
    e0, e1 = int(policy.space.out_start[0]), int(policy.space.out_start[1])
    return flows.reach[0] * flows.chain[e0:e1]


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
    flow = _source_flow(policy)
    return {
        space.edge_label(e): float(f)
        for e, f, ok in zip(range(e0, e1), flow, np.isfinite(below), strict=True)
        if ok
    }


def first_move_names(space: AcyclicSpace) -> tuple[str, ...]:
    """The ``first-move`` strategies: the labels of the nodes that follow the source on
    some correct rollout, sorted (as :func:`tilt.measures.strategy_labels` names them)."""
    e0, e1 = int(space.out_start[0]), int(space.out_start[1])
    live = np.isfinite(_log_correct_count(space)[space.edge_head[e0:e1]])
    labels = space.moves.labels
    heads = space.moves.move_head[space.edge_move[e0:e1][live]]
    return tuple(sorted(labels[h] for h in heads.tolist()))


def first_move_strategies(policy: MarkovPolicy, ks: Sequence[int]) -> StrategyMeasures:
    """:class:`tilt.measures.strategies.StrategyMeasures` of the ``first-move`` map: each strategy's
    mass ``q(first move = e, C)`` is the correct flow through the source edge ``e``."""
    space = policy.space
    e0, e1 = int(space.out_start[0]), int(space.out_start[1])
    live = np.isfinite(_log_correct_count(space)[space.edge_head[e0:e1]])
    labels = space.moves.labels
    heads = space.moves.move_head[space.edge_move[e0:e1][live]]
    if np.isfinite(policy.log_correct_below[0]):
        flow = policy.accuracy * _source_flow(policy)[live]
    else:
        flow = np.zeros(int(live.sum()))
    mass = dict(zip((labels[h] for h in heads.tolist()), flow.tolist(), strict=True))
    names = first_move_names(space)
    return measures_from_mass(names, np.array([mass[n] for n in names]), ks)


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
    best = policy.memo("max_below", lambda: backward_max(space, policy.log_cond, leaf))
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
    ks = [check_k(k) for k in ks]
    space = policy.space
    leaf = np.where(space.correct, 0.0, -np.inf)
    if policy.memo("all_finite", lambda: bool(np.isfinite(policy.log_cond).all())):
        count = _log_correct_count(space)[0]
    else:
        finite = np.isfinite(policy.log_cond)
        positive = linear_weights(space, np.where(finite, 0.0, -np.inf), finite.astype(float))
        count = backward_logsumexp(space, positive, leaf, compiled=True)[0]
    if count <= math.log(limit) + 1e-9:
        top = _top_rollouts(policy, -math.inf, limit)
        assert top is not None  # at most limit rollouts have q(y) > 0
        return {k: DistinctAtK(_f(top, k), 0.0, True, int(top.size)) for k in ks}
    log_tau = -math.log(limit)
    top = _top_rollouts(policy, log_tau, limit)
    assert top is not None  # at most 1 / tau rollouts have q(y) >= tau
    p2 = math.exp(
        policy.memo(
            "log_square_mass",
            lambda: float(
                backward_logsumexp(space, policy.linear, leaf, compiled=True, square=True)[0]
            ),
        )
    )
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
    """:func:`measure` and the :class:`DistinctAtK` (value, bound, exactness) behind it.

    On a large space with two CPUs (:func:`tilt._numerics.threads_allowed`) the backward
    sweep (gap slopes, ratio distortion, distinct@k) runs on a second thread beside the
    out-of-distribution scan and the entropy: the same values (each by the same
    operations), sooner.
    """
    ks = [check_k(k) for k in ks]
    # what both halves read, computed once before they split
    policy.linear  # noqa: B018 - a cached property
    policy.log_correct_below  # noqa: B018
    _on_correct_paths(policy.space)
    _used_summary(policy.space)

    # each half writes its own memo keys on the policy: the sweep "sweep", "max_below",
    # "spread", "all_finite", "log_square_mass", "slopes"; the scan "ood" and
    # "correct_log_sum" (both halves may compute the same property or shared memo, and
    # get the same value)
    def beside() -> dict[int, DistinctAtK]:
        _backward_sweep(policy, base)
        return distinct_at_k(policy, ks)

    def here() -> float:
        _ood_scans(policy, ks)  # with the kernels, the entropy's sum on the way
        return correct_entropy(policy)

    entropy, distinct = both(policy.space.n_edges, here, beside, "tilt-measures")
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
        ood_reroute=dict(zip(ks, ood_reroute(policy, ks), strict=True)),
    )
    return out, distinct
