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
from collections.abc import Iterator
from types import ModuleType

import numpy as np
from numpy.typing import NDArray

from tilt._numerics import (
    LINEAR_RANGE,
    FloatArray,
    IntArray,
    column_logsumexp,
    group_logsumexp,
    jit,
    linear_shift_of,
)
from tilt.context import ContextModel, TeacherClasses
from tilt.objectives._common import (
    Demos,
    check_anchor,
    check_model,
    from_prefix_logits,
    model_output,
    resolve_demos,
)
from tilt.policy import Policy
from tilt.space import RolloutSpace

__all__ = [
    "sd_token",
    "sd_token_forward",
    "sd_jsd",
    "sd_discount",
    "sd_length_weighted",
    "jsd_conditionals",
]

_END = 1e-14
"""``jsd=a`` with ``a`` (or ``1 - a``) below this is taken at its end (it differs by ``O(a)``)."""

_UNDERFLOW = -745.2
"""``log`` of the smallest positive float64: a probability below it is 0.0."""

_LOG1P_BELOW = 0.25
"""Below this ``a`` the JSD terms use ``log1p(a (r - 1))``, above it ``log(1 - a + a r)``."""

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
    target = model_output(model, "token_log_target", policy, resolve_demos(policy, demos, alpha))
    own = policy.log_conditionals()
    with np.errstate(invalid="ignore"):
        logits = np.where(
            np.isneginf(target),
            -np.inf,
            # (target + b own) / (1 + b) as a convex combination: b own overflows at huge b
            target / (1 + anchor) + (anchor / (1 + anchor)) * np.where(np.isneginf(own), 0.0, own),
        )
    logits = np.where(np.isneginf(own) & (anchor > 0), -np.inf, logits)
    return from_prefix_logits(policy, logits)


def sd_token_forward(
    policy: Policy, model: ContextModel, demos: Demos = "own", alpha: float = 1.0
) -> Policy:
    """Fixed point of per-token forward KL (and of ``k3``): ``q(u | h) = E_c T_c(u | h)``.

    The prior-weighted mean of the teachers' conditionals at every prefix: a
    distribution per sibling group, taken as the conditionals as it is when the
    model vouches for its normalisation (``token_mean_normalised``), through a
    softmax otherwise.
    """
    logits = model_output(
        model, "token_mean_log_target", policy, resolve_demos(policy, demos, alpha)
    )
    if model.token_mean_normalised:  # a mixture of the teachers' conditionals: no softmax
        return Policy.from_log_conditionals(policy.space, logits, softmax=True, copy=False)
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
    Newton's method on ``(t, kappa)`` for the sibling groups of each size, in
    blocks (an only child has ``q = 1``), projected back onto the simplex after
    every step; ``phi_u' in (-1, 0)`` keeps the steps bounded.  Started from
    the forward mean (the ``a = 0`` solution), it converges in about five
    iterations.  Sums run in the linear domain where every conditional exceeds
    ``e^-600``, in log space otherwise.  Groups with equal inputs
    (:meth:`~tilt.context.TeacherClasses.group_key`) are solved once
    (:func:`distinct_columns`, or the classes' own
    :meth:`~tilt.context.TeacherClasses.group_classes`, which ``edge`` shares with its
    token-forward target): on an edge-softmax base with ``edge`` classes,
    one solve per node and set of available moves (130 groups of two and 62 of
    three stand for grid6's 4.84 M).  Cost ``O(prefixes)`` to find them plus
    ``O(iterations x classes x distinct groups)``.
    """
    a = float(a)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"jsd coefficient a must lie in [0, 1], got {a!r}")
    demos = resolve_demos(policy, demos, alpha)
    # jsd=a differs from its ends by O(a) and O(1 - a): within 1e-12 of them past 1e-14
    if a >= 1.0 - _END:
        return sd_token(policy, model, demos)
    if a <= _END:
        return sd_token_forward(policy, model, demos)
    space = policy.space
    classes = check_model(model).teacher_classes(policy, demos)
    # an only child has q = 1 wherever a teacher reaches its parent, as pi does: the policy's
    # own conditionals are right there, and where no teacher reaches (no signal)
    log_cond = policy.log_conditionals().copy()
    compiled = _kernels(space.n_prefixes)
    for children, first, inverse in _group_classes(classes, space, compiled):
        distinct = children[:, first]
        weight, teacher = classes.sibling_blocks(distinct)
        total = weight.sum(axis=0)
        signal = np.flatnonzero(total > 0)
        if signal.size == 0:
            continue
        solved = log_cond[distinct]  # no signal: the policy's own conditionals
        solved[:, signal] = _jsd_block(weight[:, signal] / total[signal], teacher[:, :, signal], a)
        if compiled is None:
            log_cond[children] = solved[:, inverse]
        else:
            compiled.scatter_columns(log_cond, children, solved, inverse)
    # every solved group is normalised (projected onto the simplex at each Newton step)
    return Policy.from_log_conditionals(space, log_cond, softmax=True, copy=False)


def _group_classes(
    classes: TeacherClasses, space: RolloutSpace, compiled: ModuleType | None
) -> Iterator[tuple[IntArray, IntArray, IntArray]]:
    """``(children, first, inverse)`` for blocks of sibling groups (``children`` (n, G)):
    groups with equal inputs have equal solutions, so each distinct one is solved once.  The
    classes' own :meth:`~tilt.context.TeacherClasses.group_classes` over each size when they
    give them, else blocks of at most ``_BLOCK`` children and the distinct columns of their
    :meth:`~tilt.context.TeacherClasses.group_key` (compiled, or numpy's twin)."""
    for n, every in space.sibling_groups_by_size:
        found = None if compiled is None else classes.group_classes(n, every)
        if found is not None:
            yield every, *found
            continue
        width = -(-every.shape[1] // max(1, every.size // _BLOCK))
        for start in range(0, every.shape[1], width):
            children = every[:, start : start + width]  # (n, G): sibling-major
            if compiled is None:
                first, inverse = distinct_columns(classes.group_key(children))
            else:
                key = np.ascontiguousarray(classes.group_key(children), dtype=np.float64)
                first, inverse = compiled.distinct_columns(key)
            yield children, first, inverse


def distinct_columns(columns: FloatArray) -> tuple[IntArray, IntArray]:
    """``(first, inverse)`` with ``columns[:, first][:, inverse] == columns``, ``first`` one
    column of each distinct value.

    Sibling groups whose inputs are equal have equal solutions: a Markov policy
    (the edge-softmax bases) repeats one group per node and set of available
    moves across millions of prefixes, so a per-group solve runs on the
    distinct groups only.  Columns are bucketed by a hash of their bits (equal
    columns get equal keys; columns one ulp apart get different ones) and each
    column is then compared with its bucket's first: equality is exact; a
    column that collides with a different one (or holds ``nan``) stands alone.
    """
    rows, count = columns.shape
    if count < 2:
        return np.arange(count), np.arange(count)
    bits = np.ascontiguousarray(columns, dtype=np.float64).view(np.uint64)
    multipliers = np.asarray(
        np.random.default_rng(0).integers(1, 2**63, size=(rows,), dtype=np.uint64) | 1
    )
    key = np.zeros(count, dtype=np.uint64)
    for f in range(rows):  # a multiply-xor hash, wrapping modulo 2^64
        key ^= bits[f] * multipliers[f]
        key = (key << np.uint64(13)) | (key >> np.uint64(51))
    first, inverse = _classes_of(key)
    equal = (columns == columns[:, first[inverse]]).all(axis=0)
    if not equal.all():  # a collision (or nan): those columns stand alone
        apart = np.flatnonzero(~equal)
        inverse[apart] = first.size + np.arange(apart.size)
        first = np.concatenate([first, apart])
    return first.astype(np.int64, copy=False), inverse.astype(np.int64, copy=False)


_unique_values = getattr(np, "unique_values", np.unique)
"""Distinct values: by hashing from numpy 2.3, by sorting before (``np.unique`` before 2.0)."""


def _classes_of(key: NDArray[np.uint64]) -> tuple[IntArray, IntArray]:
    """``(first, inverse)`` of equal keys: ``key[first][inverse] == key``, ``first`` one
    position of each distinct key.

    The distinct keys are found by hashing (``np.unique_values``), then each key's class by a
    direct table on the low bits when those tell the distinct keys apart (a Markov policy has
    a few hundred), by binary search otherwise: no sort of all the keys.
    """
    values = np.sort(_unique_values(key))
    bits = 2 * values.size.bit_length() + 2  # about k^2 slots: the k keys rarely collide
    if bits <= 24:
        mask = np.uint64((1 << bits) - 1)
        low = values & mask
        if _unique_values(low).size == values.size:
            table = np.zeros(1 << bits, dtype=np.int64)
            table[low] = np.arange(values.size)
            inverse = table[key & mask]
        else:
            inverse = np.searchsorted(values, key)
    else:
        inverse = np.searchsorted(values, key)
    first = np.empty(values.size, dtype=np.int64)
    first[inverse] = np.arange(key.size)  # any position of each class will do
    return first, inverse


def jsd_conditionals(weight: FloatArray, log_cond: FloatArray, a: float) -> FloatArray:
    """The per-prefix ``jsd=a`` fixed point of ``G`` independent groups: ``log q``, shape (n, G).

    Group ``g`` has ``K`` teachers with weights ``weight[:, g]`` (summing to 1)
    and next-move log-probabilities ``log_cond[:, :, g]`` over ``n`` moves
    (``-inf`` pads a group with fewer moves); ``q(. | g)`` minimises
    ``sum_k weight[k, g] GJSD_a(T_k, q)``.  ``a = 1`` is the per-token reverse KL
    (``q ∝ exp sum_k w_k log T_k``), ``a = 0`` the forward mean ``sum_k w_k T_k``.
    :mod:`tilt.audit` solves it at each logged position of a rollout.
    """
    weight = np.asarray(weight, dtype=np.float64)
    log_cond = np.asarray(log_cond, dtype=np.float64)
    a = float(a)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"jsd coefficient a must lie in [0, 1], got {a!r}")
    if weight.ndim != 2 or log_cond.ndim != 3 or log_cond.shape[::2] != weight.shape:
        raise ValueError(
            f"weight must be (K, G) and log_cond (K, n, G), got {weight.shape} and {log_cond.shape}"
        )
    if a >= 1.0 - _END:
        positive = weight[:, None, :] > 0
        with np.errstate(invalid="ignore"):
            mean = np.where(positive, weight[:, None, :] * log_cond, 0.0).sum(axis=0)
        mean = np.where((np.isneginf(log_cond) & positive).any(axis=0), -np.inf, mean)
        return mean - column_logsumexp(mean)
    if a <= _END:
        with np.errstate(divide="ignore"):
            return np.log(np.einsum("kg,kng->ng", weight, np.exp(log_cond)))
    return _jsd_block(weight, log_cond, a)


_BLOCK = 1 << 20
"""Children per block of the JSD solve: bounds the group keys' memory (a model without a
compact :meth:`~tilt.context.TeacherClasses.group_key` gives its whole classes)."""


def _jsd_block(weight: FloatArray, log_cond: FloatArray, a: float) -> FloatArray:
    """Solve the JSD stationarity for ``G`` sibling groups of ``n`` children: ``log q``, (n, G).

    ``weight`` (K, G) are the classes' shares (summing to 1 per group) and
    ``log_cond`` (K, n, G) their conditionals.  Newton on ``(t, kappa)`` per
    group from the forward mean, projected onto the simplex after each step;
    groups whose step fell below ``1e-13`` leave the working set.  A child no
    class gives mass keeps ``q = 0``.
    """
    weight = weight[:, None, :]
    with np.errstate(divide="ignore"):
        start = np.log(np.einsum("kig,kng->ng", weight, np.exp(log_cond)))
    live = np.isfinite(start)
    finite = log_cond[np.isfinite(log_cond)]
    linear = bool(finite.min(initial=0.0) > -LINEAR_RANGE) and bool(
        start[live].min(initial=0.0) > -LINEAR_RANGE
    )
    if not linear:  # the forward mean may underflow: take it in log space
        with np.errstate(divide="ignore"):
            start = np.logaddexp.reduce(np.log(weight) + log_cond, axis=0)
        live = np.isfinite(start)
    values = np.exp(log_cond) if linear else log_cond
    t = np.where(live, start - column_logsumexp(np.where(live, start, -np.inf)), 0.0)
    out = np.empty_like(t)
    rows = np.arange(t.shape[1])
    whole = (weight, log_cond)
    below = np.zeros(t.shape, dtype=bool)  # children set aside under e^-745, solved at the end
    previous = math.inf
    for _ in range(_MAX_NEWTON):
        phi, slope = _jsd_terms(weight, values, t, a, linear)
        q = np.where(live, np.exp(t), 0.0)
        # phi' < 0 wherever some class gives u mass; it underflows only far from the root,
        # where the step is clipped anyway
        slope = np.where(live, np.minimum(slope, -1e-300), -1.0)
        ratio = q / slope
        kappa = (1.0 - q.sum(axis=0) + (ratio * phi).sum(axis=0)) / ratio.sum(axis=0)
        step = np.where(live, np.clip((kappa - phi) / slope, -50.0, 2.0), 0.0)
        # a child sinking below e^-745 no longer moves its group's sum in float64: set it
        # aside, and solve its own equation against the group's kappa at the end (in log
        # space, where its q is still a number: setting it to 0 gave log q = -inf)
        sinking = live & (t < _UNDERFLOW) & (step < 0)
        if sinking.any():
            below[:, rows] |= sinking
            live = live & ~sinking
            step = np.where(sinking, 0.0, step)
        t += step
        t -= column_logsumexp(np.where(live, t, -np.inf))
        group_step = np.abs(step).max(axis=0)
        size = float(group_step.max(initial=0.0))
        # quadratic convergence ends at the rounding floor: stop there
        if size <= 1e-13 or (size <= 1e-9 and size >= previous):
            break
        previous = size
        done = group_step <= 1e-13
        if 2 * np.count_nonzero(done) > done.size:
            out[:, rows[done]] = np.where(live[:, done], t[:, done], -np.inf)
            keep = ~done
            rows, t, live = rows[keep], t[:, keep], live[:, keep]
            weight, values = weight[:, :, keep], values[:, :, keep]
    else:  # a tiny a puts the stationarity equations below rounding (found by tests/test_hostile)
        raise ValueError(
            f"the jsd={a:g} fixed point did not converge in {_MAX_NEWTON} Newton steps on this "
            "instance (its equations are near rounding: a tiny a or extreme logits); "
            "use token-forward (a = 0) or a larger a"
        )
    out[:, rows] = np.where(live, t, -np.inf)
    if below.any():
        _solve_below(out, below, *whole, a)
    return out


def _solve_below(
    out: FloatArray, below: NDArray[np.bool_], weight: FloatArray, log_cond: FloatArray, a: float
) -> None:
    """Solve ``phi_u(t_u) = kappa_h`` for the children set aside below ``e^-745``, in place.

    ``kappa_h`` is ``phi`` at the group's likeliest child (at its root already).  ``phi_u``
    is decreasing in ``t``, and the root lies at or below 0 (``q <= 1``): bracketed between
    0 and a lower end found by doubling, then Newton steps that stay inside the bracket and
    bisection otherwise (an unguarded step from a slope of 1e-20 jumped to ``t = -4e19``,
    whose next step cancelled back to 0).  Their ``q`` is below ``2^-1074`` of their
    group's sum, so the group stays normalised.
    """
    top = np.argmax(out, axis=0)
    groups = np.arange(out.shape[1])
    safe = np.where(np.isfinite(out), out, 0.0)
    phi, _ = _jsd_terms(weight, log_cond, safe, a, linear=False)
    kappa = phi[top, groups]
    child, group = np.nonzero(below)
    w = weight[:, :, group]  # (K, 1, m)
    lc = log_cond[:, child, group][:, None, :]  # (K, 1, m)
    target = kappa[group][None, :]

    def phi_of(t: FloatArray) -> tuple[FloatArray, FloatArray]:
        return _jsd_terms(w, lc, t, a, linear=False)

    with np.errstate(divide="ignore"):
        start = np.minimum(np.logaddexp.reduce(np.log(w) + lc, axis=0), 0.0)  # forward mean
    hi = np.zeros_like(start)
    lo = start - 1.0
    for width in 2.0 ** np.arange(1, 1024):
        short = phi_of(lo)[0] < target  # phi(lo) must reach kappa: the root is above lo
        if not short.any():
            break
        lo = np.where(short, start - width, lo)
    t = start
    for _ in range(_MAX_NEWTON):
        phi, slope = phi_of(t)
        left = phi > target
        lo, hi = np.where(left, t, lo), np.where(left, hi, t)
        newton = t + (target - phi) / np.minimum(slope, -1e-300)
        inside = (newton > lo) & (newton < hi)
        new = np.where(inside, newton, 0.5 * (lo + hi))
        # to rounding: q is tiny but log q of order 1e3 still counts its digits
        scale = 1e-15 * (1.0 + np.abs(t))
        done = (np.abs(new - t) <= scale) | (hi - lo <= scale)
        t = new
        if done.all():
            break
    else:
        raise ValueError(
            f"the jsd={a:g} fixed point of children below e^-745 did not converge in "
            f"{_MAX_NEWTON} Newton steps; use token-forward (a = 0) or a larger a"
        )
    out[child, group] = t[0]


def _jsd_terms(
    weight: FloatArray, values: FloatArray, t: FloatArray, a: float, linear: bool
) -> tuple[FloatArray, FloatArray]:
    """``phi_u = E_c log(1 - a + a T_c / q)`` and its derivative in ``t = log q``.

    ``log(1 - a + a r) = log1p(a (r - 1))`` stays exact as ``a -> 0``.  ``values``
    are the classes' conditionals (``linear``) or their logs.
    """
    phi = np.zeros(t.shape)
    slope = np.zeros(t.shape)
    keep = 1.0 - a
    if linear:
        inverse_q = np.exp(-t)
        for w, c in zip(weight, values, strict=True):
            ratio = c * inverse_q
            level = keep + a * ratio
            if a < _LOG1P_BELOW:
                # phi is O(a): log1p(a (r - 1)) keeps its relative accuracy as a -> 0 (here
                # a (r - 1) >= -a > -1/4, so log1p is accurate over the whole range)
                phi += w * np.log1p(a * (ratio - 1.0))
            else:
                # phi is O(1) in scale: the log of the sum is exact to 1e-16 absolute
                phi += w * np.log(level)
            slope -= w * (a * ratio / level)
        return phi, slope
    for w, lc in zip(weight, values, strict=True):
        y = lc - t
        shift = a * np.expm1(np.minimum(y, 30.0))
        term = np.where(
            (y > 30.0) | (shift <= -0.5),
            np.logaddexp(math.log(keep), math.log(a) + y),
            np.log1p(np.maximum(shift, -0.5)),
        )
        phi += np.where(w > 0, w * term, 0.0)
        slope -= np.where(w > 0, w * np.exp(math.log(a) + y - term), 0.0)
    return phi, slope


def _group_logsumexp(
    values: FloatArray, offsets: IntArray, sizes: IntArray | None = None
) -> FloatArray:
    """:func:`tilt._numerics.group_logsumexp` with the sizes read off the offsets if not given."""
    if sizes is None:
        sizes = np.diff(np.r_[offsets, values.size])
    return group_logsumexp(values, offsets, sizes)


def sd_discount(
    policy: Policy, model: ContextModel, demos: Demos = "own", alpha: float = 1.0, *, g: float
) -> Policy:
    """Fixed point of sampled-token reverse KL as an advantage, return-to-go discounted by ``g``.

    ``q(u | h) ∝ G(u | h) exp(g V(hu))``, ``V(h) = log sum_u G(u | h) exp(g V(hu))``,
    ``V = 0`` at a complete rollout, computed bottom-up.  ``g = 0`` is
    :func:`sd_token`; ``g = 1`` is sequence SD (``q ∝ exp(E_c log T_c(y))``)
    whenever every teacher reaches every prefix the policy does (the built-ins).
    ``V(h)`` is the normaliser of ``h``'s group, so the pass gives the
    conditionals ``log q(u | h) = g(u | h) + g V(hu) - V(h)`` directly, one
    block of sibling groups per size and depth.
    """
    g = float(g)
    if not 0.0 <= g <= 1.0:
        raise ValueError(f"discount g must lie in [0, 1], got {g!r}")
    demos = resolve_demos(policy, demos, alpha)
    if g == 0.0:
        return sd_token(policy, model, demos)
    space = policy.space
    target = model_output(model, "token_log_target", policy, demos)
    compiled = _kernels(space.n_prefixes)
    if compiled is not None:  # the same pass, prefix by prefix, with no array of values
        log_cond = np.zeros(space.n_prefixes)
        if not compiled.discount_pass(space.child_start, space.child_count, target, g, log_cond):
            del target
            return Policy.from_log_conditionals(space, log_cond, softmax=True, copy=False)
        del log_cond  # a group with no signal: numpy's pass, which keeps the values
    value, log_cond, silent = _discount_pass(space, target, g)
    if silent:  # a group with no signal keeps the policy's conditionals: the softmax does it
        value *= g
        value += target
        del target, log_cond
        value[0] = 0.0
        return from_prefix_logits(policy, value)
    del target, value  # before the policy's path sums: three prefix arrays at most
    return Policy.from_log_conditionals(space, log_cond, softmax=True, copy=False)


def _discount_pass(
    space: RolloutSpace, target: FloatArray, g: float
) -> tuple[FloatArray, FloatArray, bool]:
    """``(V, log q, silent)`` of :func:`sd_discount`: one block of sibling groups per size
    and depth, bottom-up (``silent``: some group has no signal)."""
    value = np.zeros(space.n_prefixes)
    # an only child has q = 1; a group's log-softmax is x - V(parent), with V its normaliser
    log_cond = np.zeros(space.n_prefixes)
    # the groups of two or more of each depth: a slice of columns of each size's block
    blocks = [
        (children, np.searchsorted(children[0], space.level_start))
        for _, children in space.sibling_groups_by_size
    ]
    silent = False
    for depth in range(space.max_depth, 0, -1):
        lo, hi = int(space.level_start[depth]), int(space.level_start[depth + 1])
        x = target[lo:hi] + g * value[lo:hi]
        # an only child's value passes up as it is; the groups' parents are overwritten below
        value[space.parent[lo:hi]] = x
        level = [children[:, cut[depth] : cut[depth + 1]] for children, cut in blocks]
        level = [children for children in level if children.size]
        groups = [x[children - lo] for children in level]
        top = linear_shift_of(groups)
        for children, group in zip(level, groups, strict=True):
            norm = column_logsumexp(group, top)
            value[space.parent[children[0]]] = norm
            with np.errstate(invalid="ignore"):
                log_cond[children] = group - norm
            silent = silent or bool(np.isneginf(norm).any())
    return value, log_cond, silent


def _kernels(size: int) -> ModuleType | None:
    """:mod:`tilt.objectives._compiled` when the compiled kernels serve ``size`` prefixes
    (:func:`tilt._numerics.jit`), else ``None`` (the numpy paths)."""
    if not jit(size):
        return None
    import tilt.objectives._compiled as compiled

    return compiled


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
    target = model_output(model, "token_log_target", policy, resolve_demos(policy, demos, alpha))
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
    return Policy.from_log_conditionals(space, log_cond, softmax=True)
