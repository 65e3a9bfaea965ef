"""Per-prefix self-distillation: the fixed points of the per-token losses real trainers run.

Real trainers compute their loss per token on the student's own prefixes, with
no gradient through which prefixes were sampled (``docs/theory.md``, "What real
trainers optimise").  At a prefix ``h`` with available moves ``u`` and teacher
conditionals ``T_c(u | h)`` (demonstrations whose teacher gives ``h`` no mass
dropped, the rest renormalised), write ``g(u | h) = E_c log T_c(u | h)`` and
``G = exp(g)``.  For a tabular student and a frozen teacher:

* ``token``: ``q(u | h) ∝ G(u | h)`` (anchor ``b``: ``∝ exp((g + b log pi) / (1 + b))``);
* ``token-forward``: ``q(u | h) = E_c T_c(u | h)``;
* ``jsd=a``: ``q(. | h)`` minimises ``E_c GJSD_a(T_c(. | h), q)``; stationarity
  ``E_c log(1 - a + a T_c(u | h) / q(u | h)) = kappa_h`` for every ``u``;
* ``discount=g``: ``q(u | h) ∝ G(u | h) exp(g V(hu))``,
  ``V(h) = log sum_u G(u | h) exp(g V(hu))``, ``V = 0`` at a complete rollout;
* ``length-weighted``: ``rho(hu) (log q(u | h) - g(u | h)) = kappa_h`` with
  ``rho(hu) = E_q[1 / |y| | hu]``, solved bottom-up.

Where no demonstration's teacher reaches ``h`` the student keeps ``pi(. | h)``.
Every solver is vectorised over all prefixes (or all prefixes of one depth) and
loops only over depth and Newton iterations.
"""

from __future__ import annotations

import math

import numpy as np

from tilt.context import ContextModel, TeacherClasses
from tilt.objectives._common import Demos, check_anchor, from_prefix_logits, resolve_demos
from tilt.policy import Policy
from tilt.space import LINEAR_RANGE, FloatArray, IntArray

__all__ = [
    "sd_token",
    "sd_token_forward",
    "sd_jsd",
    "sd_discount",
    "sd_length_weighted",
]

_MAX_NEWTON = 200
"""Newton iterations before a per-prefix solve gives up (it converges in far fewer)."""


def sd_token(
    policy: Policy,
    model: ContextModel,
    demos: Demos = "own",
    alpha: float = 1.0,
    anchor: float = 0.0,
) -> Policy:
    """Fixed point of per-token reverse KL (anchor ``b``).

    ``q(u | h) ∝ exp((g(u | h) + b log pi(u | h)) / (1 + b))`` with
    ``g(u | h) = E_c[log T_c(u | h) | T_c(h) > 0]``; where no teacher reaches
    ``h``, ``q(. | h) = pi(. | h)``.  Not the sequence optimum in general.
    """
    anchor = check_anchor(anchor)
    target = model.token_log_target(policy, resolve_demos(policy, demos, alpha))
    own = policy.log_conditionals()
    with np.errstate(invalid="ignore"):
        logits = np.where(
            np.isneginf(target),
            -np.inf,
            (target + anchor * np.where(np.isneginf(own), 0.0, own)) / (1 + anchor),
        )
    logits = np.where(np.isneginf(own) & (anchor > 0), -np.inf, logits)
    return from_prefix_logits(policy, logits)


def sd_token_forward(
    policy: Policy, model: ContextModel, demos: Demos = "own", alpha: float = 1.0
) -> Policy:
    """Fixed point of per-token forward KL (and of ``k3``): ``q(u | h) = E_c T_c(u | h)``.

    The prior-weighted mean of the teachers' conditionals at every prefix.
    """
    logits = model.token_mean_log_target(policy, resolve_demos(policy, demos, alpha))
    return from_prefix_logits(policy, logits)


def sd_jsd(
    policy: Policy, model: ContextModel, demos: Demos = "own", alpha: float = 1.0, *, a: float
) -> Policy:
    """Fixed point of per-token generalised JSD with coefficient ``a``.

    ``q(. | h)`` minimises ``E_c GJSD_a(T_c(. | h), q)``,
    ``GJSD_a(T, q) = a KL(T || M) + (1 - a) KL(q || M)``, ``M = (1 - a) q + a T``.
    The objective is a sum over moves of convex functions of ``q(u | h)`` alone,
    so its minimiser on the simplex solves, for every available ``u``,
    ``phi_u(t_u) = E_c log(1 - a + a T_c(u | h) e^(-t_u)) = kappa_h`` with
    ``t = log q``.  ``a = 0`` is :func:`sd_token_forward`, ``a = 1`` is
    :func:`sd_token`.

    Notes
    -----
    Newton's method on ``(t, kappa)``, one depth at a time, for the prefixes
    with a sibling (an only child has ``q = 1``), projected back onto the
    simplex after every step; ``phi_u' in (-1, 0)`` keeps the steps bounded.
    Started from the forward mean (the ``a = 0`` solution), it converges in
    about five iterations.  Sums run in the linear domain where every
    conditional exceeds ``e^-600``, in log space otherwise.  Cost
    ``O(iterations x classes x prefixes)``.
    """
    a = float(a)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"jsd coefficient a must lie in [0, 1], got {a!r}")
    demos = resolve_demos(policy, demos, alpha)
    if a == 1.0:
        return sd_token(policy, model, demos)
    space = policy.space
    own = policy.log_conditionals()
    start = model.token_mean_log_target(policy, demos)
    if a == 0.0:
        return from_prefix_logits(policy, start)
    classes = model.teacher_classes(policy, demos)
    total = classes.weight.sum(axis=0)
    has = total > 0
    has[0] = False
    alive = has & np.isfinite(start)
    with np.errstate(invalid="ignore"):
        t = start - space.sibling_logsumexp(np.where(alive, start, -np.inf))
    shared = alive & (space.child_count[space.parent] > 1)
    shared[0] = False
    for d in range(1, space.max_depth + 1):
        lo, hi = int(space.level_start[d]), int(space.level_start[d + 1])
        cols = lo + np.flatnonzero(shared[lo:hi])
        if cols.size:
            parents = space.parent[cols].astype(np.int64)
            t[cols] = _jsd_newton(parents, classes, total, a, t[cols], cols)
    logits = np.where(has, np.where(alive, t, -np.inf), own)
    return from_prefix_logits(policy, logits)


def _jsd_newton(
    parents: IntArray,
    classes: TeacherClasses,
    total: FloatArray,
    a: float,
    t: FloatArray,
    cols: IntArray,
) -> FloatArray:
    """Solve the JSD stationarity for the children ``cols`` (non-decreasing ``parents``).

    Groups whose Newton step has fallen below ``1e-13`` leave the working set,
    so the last iterations touch only the slow few.
    """
    weight = classes.weight[:, cols] / total[cols]
    used = weight.any(axis=1)
    weight = weight[used]
    values = classes.log_cond[:, cols][used]
    finite = values[np.isfinite(values)]
    linear = bool(finite.min(initial=0.0) > -LINEAR_RANGE) and bool(t.min() > -LINEAR_RANGE)
    if linear:
        values = np.exp(values)
    group = np.cumsum(np.r_[True, parents[1:] != parents[:-1]]) - 1
    n_groups = int(group[-1]) + 1
    out = t.copy()
    active = np.arange(cols.size)
    t = t.copy()
    previous = math.inf
    for _ in range(_MAX_NEWTON):
        phi, slope = _jsd_terms(weight, values, t, a, linear)
        q = np.exp(t)
        ratio = q / slope
        kappa = (1.0 - _sums(group, q, n_groups) + _sums(group, ratio * phi, n_groups)) / _sums(
            group, ratio, n_groups
        )
        step = np.clip((kappa[group] - phi) / slope, -2.0, 2.0)
        t += step
        t -= _group_logsumexp_by_index(t, group, n_groups)[group]
        size = float(np.abs(step).max(initial=0.0))
        # quadratic convergence ends at the rounding floor: stop there
        if size <= 1e-13 or (size <= 1e-9 and size >= previous):
            break
        previous = size
        group_step = np.zeros(n_groups)
        np.maximum.at(group_step, group, np.abs(step))
        done = group_step <= 1e-13
        if 2 * np.count_nonzero(done) > n_groups:
            keep = ~done[group]
            out[active[~keep]] = t[~keep]
            active, t = active[keep], t[keep]
            weight, values = weight[:, keep], values[:, keep]
            group = (np.cumsum(~done) - 1)[group[keep]]
            n_groups = int(np.count_nonzero(~done))
    else:  # pragma: no cover - a convex separable problem; kept as a guard
        raise RuntimeError("the jsd fixed point did not converge: please report this instance")
    out[active] = t
    return out


def _sums(group: IntArray, values: FloatArray, n_groups: int) -> FloatArray:
    return np.bincount(group, weights=values, minlength=n_groups).astype(np.float64)


def _jsd_terms(
    weight: FloatArray, values: FloatArray, t: FloatArray, a: float, linear: bool
) -> tuple[FloatArray, FloatArray]:
    """``phi_u = E_c log(1 - a + a T_c / q)`` and its derivative in ``t = log q``.

    ``log(1 - a + a r) = log1p(a (r - 1))`` stays exact as ``a -> 0``.  ``values``
    are the classes' conditionals (``linear``) or their logs.
    """
    phi = np.zeros(t.size)
    slope = np.zeros(t.size)
    keep = 1.0 - a
    if linear:
        inverse_q = np.exp(-t)
        for w, c in zip(weight, values, strict=True):
            ratio = c * inverse_q
            phi += w * np.log1p(a * (ratio - 1.0))
            slope -= w * (a * ratio / (keep + a * ratio))
        return phi, slope
    for w, lc in zip(weight, values, strict=True):
        y = lc - t
        with np.errstate(over="ignore"):
            term = np.where(
                y > 30.0,
                np.logaddexp(math.log(keep), math.log(a) + y),
                np.log1p(a * np.expm1(np.minimum(y, 30.0))),
            )
        phi += np.where(w > 0, w * term, 0.0)
        slope -= np.where(w > 0, w * np.exp(math.log(a) + y - term), 0.0)
    return phi, slope


def _group_logsumexp_by_index(values: FloatArray, group: IntArray, n_groups: int) -> FloatArray:
    """``log sum exp`` of ``values`` within each group label."""
    peak = np.full(n_groups, -np.inf)
    np.maximum.at(peak, group, values)
    safe = np.where(np.isfinite(peak), peak, 0.0)
    total = np.bincount(group, weights=np.exp(values - safe[group]), minlength=n_groups)
    with np.errstate(divide="ignore"):
        return np.where(np.isfinite(peak), safe + np.log(total), -np.inf)


def _group_logsumexp(values: FloatArray, offsets: IntArray) -> FloatArray:
    """``log sum exp`` of ``values`` over the contiguous groups that start at ``offsets``."""
    peak = np.maximum.reduceat(values, offsets)
    safe = np.where(np.isfinite(peak), peak, 0.0)
    sizes = np.diff(np.r_[offsets, values.size])
    total = np.add.reduceat(np.exp(values - np.repeat(safe, sizes)), offsets)
    with np.errstate(divide="ignore"):
        return np.where(np.isfinite(peak), safe + np.log(total), -np.inf)


def sd_discount(
    policy: Policy, model: ContextModel, demos: Demos = "own", alpha: float = 1.0, *, g: float
) -> Policy:
    """Fixed point of sampled-token reverse KL as an advantage, return-to-go discounted by ``g``.

    ``q(u | h) ∝ G(u | h) exp(g V(hu))``, ``V(h) = log sum_u G(u | h) exp(g V(hu))``,
    ``V = 0`` at a complete rollout, computed bottom-up.  ``g = 0`` is
    :func:`sd_token`; ``g = 1`` is sequence SD (``q ∝ exp(E_c log T_c(y))``)
    whenever every teacher reaches every prefix the policy does (the built-ins).
    """
    g = float(g)
    if not 0.0 <= g <= 1.0:
        raise ValueError(f"discount g must lie in [0, 1], got {g!r}")
    demos = resolve_demos(policy, demos, alpha)
    if g == 0.0:
        return sd_token(policy, model, demos)
    space = policy.space
    target = model.token_log_target(policy, demos)
    value = np.zeros(space.n_prefixes)
    for lo, hi, internal, offsets in space.bottom_up_levels:
        value[internal] = _group_logsumexp(target[lo:hi] + g * value[lo:hi], offsets)
    logits = target + g * value
    logits[0] = 0.0
    return from_prefix_logits(policy, logits)


def sd_length_weighted(
    policy: Policy, model: ContextModel, demos: Demos = "own", alpha: float = 1.0
) -> Policy:
    """Fixed point of the sampled-token reverse KL averaged over each sequence's length.

    Every token of ``y`` weighs ``1 / |y|`` (TRL's default reduction), so at each
    prefix ``rho(hu) (log q(u | h) - g(u | h)) = kappa_h`` for every ``u``, with
    ``rho(hu) = E_q[1 / |y| | hu]``.  Bottom-up: the children's ``rho`` are known,
    ``kappa_h`` is the root of ``log sum_u exp(g(u | h) + kappa / rho(hu)) = 0``
    (convex and increasing in ``kappa``: Newton from above converges
    monotonically), then ``rho(h) = sum_u q(u | h) rho(hu)``.

    Notes
    -----
    With equal lengths below ``h`` this is :func:`sd_token` there; longer
    continuations weigh less, so moves toward short rollouts are favoured less
    strongly than the teacher's log-probabilities alone would say.
    """
    space = policy.space
    if space.max_depth == 0:
        return policy
    own = policy.log_conditionals()
    target = model.token_log_target(policy, resolve_demos(policy, demos, alpha))
    rho = np.zeros(space.n_prefixes)
    leaves = space.rollout_prefix
    rho[leaves] = 1.0 / np.maximum(space.depth[leaves], 1)
    log_cond = np.zeros(space.n_prefixes)
    for lo, hi, internal, offsets in space.bottom_up_levels:
        sizes = np.diff(np.r_[offsets, hi - lo])
        r = rho[lo:hi]
        g_level = target[lo:hi]
        log_g = _group_logsumexp(g_level, offsets)
        silent = np.repeat(~np.isfinite(log_g), sizes)
        if silent.any():  # no signal anywhere in the group: keep the policy's conditionals
            g_level = np.where(silent, own[lo:hi], g_level)
            log_g = _group_logsumexp(g_level, offsets)
        r_top = np.maximum.reduceat(r, offsets)
        r_low = np.minimum.reduceat(r, offsets)
        kappa = -log_g * np.where(log_g <= 0, r_top, r_low)
        for _ in range(_MAX_NEWTON):
            x = g_level + np.repeat(kappa, sizes) / r
            level = _group_logsumexp(x, offsets)
            soft = np.exp(x - np.repeat(level, sizes))
            slope = np.add.reduceat(soft / r, offsets)
            step = level / slope
            kappa -= step
            if float(np.abs(step).max(initial=0.0)) <= 1e-15 * (1.0 + float(np.abs(kappa).max())):
                break
        else:  # pragma: no cover - monotone Newton on a convex function; kept as a guard
            raise RuntimeError("the length-weighted fixed point did not converge")
        x = g_level + np.repeat(kappa, sizes) / r
        log_q = x - np.repeat(_group_logsumexp(x, offsets), sizes)
        log_cond[lo:hi] = log_q
        rho[internal] = np.add.reduceat(np.exp(log_q) * r, offsets)
    return Policy.from_log_conditionals(space, log_cond)
