"""Per-prefix SD objectives on an acyclic space: one small problem per state.

With ``edge(gamma)`` the teacher at a state ``s`` (node ``v``) is one of
``deg(s) + 1`` conditionals: ``T^e(u) = pi(u) e^{gamma [u = e]} / Z_e`` with
``Z_e = 1 + (e^gamma - 1) pi(e)`` when ``next_c(v)`` is the move ``e``
(probability ``m(e)``, the edge marginal of ``D``), or ``pi`` itself when ``c``
boosts no move (probability ``1 - sum_e m(e)``).  Every per-prefix objective of
``docs/theory.md`` ("What real trainers optimise") is then a problem on the
edges of one state, vectorised over all states at once:

* ``token-forward``: ``q(u | s) = E_c T_c(u | s)
  = pi(u) (m_none + sum_e m(e) / Z_e) + m(u) pi(u) (e^gamma - 1) / Z_u``;
* ``jsd=a``: ``E_c log(1 - a + a T_c(u) / q(u)) = kappa_s`` for every ``u``,
  solved by nested safeguarded Newton iterations (see :func:`sd_jsd`);
* ``length-weighted``: ``rho(su) (log q(u | s) - g(u | s)) = kappa_s`` with
  ``rho(su) = E_q[1 / |y| | su]``, bottom-up over the depth layers (the state
  must carry its depth: the remaining length below a node is not enough).
"""

from __future__ import annotations

import math

import numpy as np

from tilt._numerics import FloatArray, IntArray, log_expm1
from tilt.context import ContextModel
from tilt.engines.dp.context import EdgeForm, edge_form, markov_form, token_target
from tilt.engines.dp.passes import group_normalise, segment_logsumexp, segment_sum
from tilt.engines.dp.policy import Demos, MarkovPolicy, demonstrations
from tilt.engines.dp.space import AcyclicSpace

__all__ = ["sd_token_forward", "sd_jsd", "sd_length_weighted", "JSD_PAIR_CHUNK"]

JSD_PAIR_CHUNK = 1 << 22
"""Most (move, teacher) pairs solved at once by :func:`sd_jsd` (memory per chunk)."""

_MAX_NEWTON = 200


def _edge_parts(policy: MarkovPolicy, model: ContextModel, demos: Demos, alpha: float) -> EdgeForm:
    form = markov_form(model)
    if form.per_prefix_reason is not None:
        token_target(policy, model, demonstrations(policy, demos, alpha))  # raises the reason
    return edge_form(policy, form.strength, demonstrations(policy, demos, alpha))


def sd_token_forward(
    policy: MarkovPolicy, model: ContextModel, demos: Demos = "own", alpha: float = 1.0
) -> MarkovPolicy:
    """Per-token forward KL: ``q(u | s) = E_c T_c(u | s)``, the teachers' mean conditional."""
    space = policy.space
    form = _edge_parts(policy, model, demos, alpha)
    lc = policy.log_cond
    log_inv_z = lc - form.log_boost_norm  # log pi(u) / Z_u
    internal, starts = space.groups
    mix = np.zeros(space.n_states)
    mix[internal] = segment_sum(form.move_weight * np.exp(-form.log_boost_norm), starts)
    mix += form.none_weight
    with np.errstate(divide="ignore"):
        log_boosted = lc + log_expm1(form.gamma) - form.log_boost_norm  # pi(u)(e^g - 1)/Z_u
        log_q = np.logaddexp(
            lc + np.log(mix[space.edge_tail]), np.log(form.move_weight) + log_boosted
        )
    del log_inv_z
    return MarkovPolicy(space, group_normalise(space, log_q, lc))


# --------------------------------------------------------------------------
# jsd


def _ell(z: FloatArray, a: float) -> tuple[np.ndarray, np.ndarray]:
    """``(log(1 - a + a e^z) / a, e^z / (1 - a + a e^z))`` for ``0 < a < 1``."""
    z = np.minimum(z, 700.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if a <= 0.5:
            value = np.log1p(a * np.expm1(z))
        else:
            value = np.logaddexp(math.log1p(-a), math.log(a) + z)
        slope = np.exp(z - value)
    value = np.where(np.isneginf(z), math.log1p(-a), value)
    slope = np.where(np.isneginf(z), 0.0, slope)
    return value / a, slope


def _jsd_chunk(
    pair_edge: IntArray,
    pair_logt: FloatArray,
    pair_weight: FloatArray,
    group_starts: IntArray,
    t0: FloatArray,
    a: float,
) -> FloatArray:
    """Solve ``F_u(t_u) = kappa``, ``log sum exp t = 0`` for the states of one chunk.

    ``F_u(t) = sum over pairs (u, j) of w_j log(1 - a + a T_j(u) e^{-t}) / a``:
    convex and decreasing in ``t``, so Newton from any point lands left of the
    root and then climbs to it monotonically; the outer ``kappa`` (per state)
    solves the convex decreasing ``log sum_u exp t_u(kappa) = 0`` the same way,
    safeguarded above ``log(1 - a) / a``.
    """
    n_groups = group_starts.size
    n_edges = t0.size
    lower = math.log1p(-a) / a
    kappa = np.zeros(n_groups)
    t = t0.copy()
    counts = np.diff(np.r_[group_starts, n_edges])

    def inner(kappa_e: FloatArray, t: FloatArray) -> tuple[np.ndarray, np.ndarray]:
        for _ in range(_MAX_NEWTON):
            value, slope = _ell(pair_logt - t[pair_edge], a)
            f = np.bincount(pair_edge, weights=pair_weight * value, minlength=n_edges)
            d = np.bincount(pair_edge, weights=pair_weight * slope, minlength=n_edges)
            step = (f - kappa_e) / d
            t = t + step
            if np.all(np.abs(step) <= 1e-15 * np.maximum(1.0, np.abs(t))):
                break
        value, slope = _ell(pair_logt - t[pair_edge], a)
        d = np.bincount(pair_edge, weights=pair_weight * slope, minlength=n_edges)
        return t, d

    for _ in range(_MAX_NEWTON):
        t, d = inner(np.repeat(kappa, counts), t)
        phi = segment_logsumexp(t, group_starts)
        p = np.exp(t - np.repeat(phi, counts))
        dphi = segment_sum(p / d, group_starts)  # -dphi/dkappa
        new = kappa + phi / dphi
        low = new <= lower
        new[low] = 0.5 * (kappa[low] + lower)
        done = np.all(np.abs(phi) <= 4e-16)
        kappa = new
        if done:
            break
    return t - np.repeat(segment_logsumexp(t, group_starts), counts)


def sd_jsd(
    policy: MarkovPolicy,
    model: ContextModel,
    a: float,
    demos: Demos = "own",
    alpha: float = 1.0,
) -> MarkovPolicy:
    """Per-token generalised JSD: ``q(. | s)`` minimises ``E_c GJSD_a(T_c(. | s), q)``.

    ``a = 0`` is :func:`sd_token_forward`, ``a = 1`` token SD.  For ``0 < a < 1``
    the stationarity condition ``E_c log(1 - a + a T_c(u) / q(u)) = kappa_s`` is
    solved per state by nested Newton iterations, vectorised over all states
    (in chunks of :data:`JSD_PAIR_CHUNK` move-teacher pairs).

    Notes
    -----
    Cost ``O(sum over states of deg^2)`` per iteration: each move is scored
    against each of the ``deg + 1`` teachers of its state.
    """
    a = float(a)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"jsd coefficient a must lie in [0, 1], got {a!r}")
    if a == 0.0:
        return sd_token_forward(policy, model, demos, alpha)
    if a == 1.0:
        from tilt.engines.dp.optima import sd_token

        return sd_token(policy, model, demos, alpha)
    space = policy.space
    form = _edge_parts(policy, model, demos, alpha)
    start = sd_token_forward(policy, model, demos, alpha).log_cond
    lc = policy.log_cond
    out = lc.copy()
    internal, starts = space.groups
    deg = space.out_count[internal]
    # chunks of whole states
    cost = np.cumsum(deg * (deg + 1))
    lo = 0
    while lo < internal.size:
        hi = int(np.searchsorted(cost, (cost[lo - 1] if lo else 0) + JSD_PAIR_CHUNK, "right"))
        hi = max(hi, lo + 1)
        states = internal[lo:hi]
        e0, e1 = int(space.out_start[states[0]]), int(space.out_start[states[-1] + 1])
        out[e0:e1] = _solve_states(space, form, lc, start, states, e0, e1, a)
        lo = hi
    return MarkovPolicy(space, out)


def _solve_states(
    space: AcyclicSpace,
    form: EdgeForm,
    lc: FloatArray,
    start: FloatArray,
    states: IntArray,
    e0: int,
    e1: int,
    a: float,
) -> FloatArray:
    n = e1 - e0
    deg = space.out_count[states]
    local_start = space.out_start[states] - e0
    # pairs (u, j) within each state, j over the state's edges
    rep = np.repeat(deg, deg)  # per edge u: its state's degree
    pair_edge = np.repeat(np.arange(n), rep)
    base_of_u = np.repeat(np.repeat(local_start, deg), rep)
    within = np.arange(pair_edge.size) - np.repeat(np.cumsum(rep) - rep, rep)
    pair_j = base_of_u + within
    lcu = lc[e0:e1]
    boost = np.where(pair_j == pair_edge, form.gamma, 0.0)
    pair_logt = lcu[pair_edge] + boost - form.log_boost_norm[e0:e1][pair_j]
    pair_weight = form.move_weight[e0:e1][pair_j]
    # the 'no boost' teacher, pi itself
    none = form.none_weight[np.repeat(states, deg)]
    pair_edge = np.r_[pair_edge, np.arange(n)]
    pair_logt = np.r_[pair_logt, lcu]
    pair_weight = np.r_[pair_weight, none]
    keep = pair_weight > 0
    alive = np.isfinite(lcu)
    keep &= alive[pair_edge]
    # moves with pi(u) = 0 get q(u) = 0; solve on the others
    idx = np.flatnonzero(alive)
    remap = np.full(n, -1)
    remap[idx] = np.arange(idx.size)
    owner = np.repeat(np.arange(states.size), deg)[idx]
    groups = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    solved = np.full(n, -np.inf)
    solved[idx] = _jsd_chunk(
        remap[pair_edge[keep]], pair_logt[keep], pair_weight[keep], groups, start[e0:e1][idx], a
    )
    return solved


# --------------------------------------------------------------------------
# length-weighted


def sd_length_weighted(
    policy: MarkovPolicy, model: ContextModel, demos: Demos = "own", alpha: float = 1.0
) -> MarkovPolicy:
    """The fixed point of the sequence-averaged sampled-token loss (TRL's default reduction).

    At every state ``s``: ``rho(su) (log q(u | s) - g(u | s)) = kappa_s`` with
    ``sum_u q(u | s) = 1`` and ``rho(su) = E_q[1 / |y| | su]``; bottom-up over
    the depth layers, ``rho = 1 / depth`` at a leaf and
    ``rho(s) = sum_u q(u | s) rho(su)``.  Each ``kappa_s`` is the root of the
    convex increasing ``log sum_u exp(g(u | s) + kappa / rho(su))``, found by
    Newton from the right (monotone).

    Raises
    ------
    ValueError
        If the space does not carry the depth (build it with ``with_depth=True``):
        ``E_q[1 / |y| | s]`` depends on the depth of ``s``, not only on its node.
    """
    space = policy.space
    if not space.with_depth:
        raise ValueError(
            "length-weighted SD needs the depth in the state (E_q[1/|y| | s] depends on it): "
            "build the space with with_depth=True"
        )
    target = token_target(policy, model, demonstrations(policy, demos, alpha))
    lc = policy.log_cond
    depth = space.state_depth.astype(np.float64)
    rho = np.where(space.leaf, 1.0 / np.maximum(depth, 1.0), 0.0)
    out = lc.copy()
    for e0, e1, internal, starts, counts in reversed(space.tail_layers):
        g = target[e0:e1]
        r = rho[space.edge_head[e0:e1]]
        finite = np.isfinite(g)
        # start right of the root: one term reaches exp(0)
        start_k = np.where(finite, -np.where(finite, g, 0.0) * r, -np.inf)
        kappa = np.maximum.reduceat(start_k, starts)
        dead = ~np.isfinite(kappa)
        kappa = np.where(dead, 0.0, kappa)
        for _ in range(_MAX_NEWTON):
            k_e = np.repeat(kappa, counts)
            with np.errstate(invalid="ignore"):
                x = np.where(finite, g + k_e / r, -np.inf)
            h = segment_logsumexp(x, starts)
            p = np.exp(x - np.repeat(h, counts))
            dh = segment_sum(p / r, starts)
            step = h / dh
            kappa = kappa - step
            if np.all(np.abs(step) <= 1e-15 * np.maximum(1.0, np.abs(kappa))):
                break
        k_e = np.repeat(kappa, counts)
        x = np.where(finite, g + k_e / r, -np.inf)
        cond = x - np.repeat(segment_logsumexp(x, starts), counts)
        dead_e = np.repeat(dead, counts)
        cond = np.where(dead_e, lc[e0:e1], cond)
        out[e0:e1] = cond
        rho[internal] = segment_sum(np.exp(cond) * r, starts)
    return MarkovPolicy(space, out)
