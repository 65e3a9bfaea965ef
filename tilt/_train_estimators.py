"""Gradients of the trainer's objectives w.r.t. the per-prefix logits: exact and sampled.

The tabular-softmax model (``docs/theory.md``, "The tabular-softmax trainer")
has one logit ``z_p`` per non-root prefix ``p`` (child of ``h``);
``log q(p | h) = z_p - log sum over siblings p' of exp(z_p')`` and
``log q(y)`` is the path sum of the log conditionals.

Every sequence-level objective ``F`` used here has, for ``l(y) = log q(y)``,
``dF/dl(y) = w(y)``; since ``dl(y)/dz_p = [y below p] - q(p | h) [y below h]``,

    dF/dz_p = W(p) - q(p | h) W(h),    W(h) = sum of w(y) over the rollouts below h,

one subtree sum per gradient.  Two families of sequence objectives:

* *Gibbs*: ``F = sum_y q(y) (kappa l(y) - a(y))``, minimised by
  ``q ∝ exp(a / kappa)``; ``w(y) = q(y) (kappa l(y) - a(y) - F)`` (the constant
  ``kappa + F`` has no effect because ``sum_y q(y) dl(y)/dz = 0``; it centres
  the weights).  RL: ``kappa = beta``, ``a = r + beta log pi0``
  (``F = -E_q r + beta KL(q || pi0)``); sequence SD: ``kappa = 1 + b``,
  ``a = E_c log T_c + b log pi0``.
* *forward* (maximum likelihood on teacher samples): ``F = KL(m || q)``,
  ``w(y) = -m(y)``.

Token SD is per prefix, with no gradient through the prefix weights
``n(h)`` (the current ``q(h)``, held fixed):

    F_n = sum_h n(h) sum_{p child of h} q(p | h) (kappa log q(p | h) - tau_p),
    dF_n/dz_p = n(h) q(p | h) (g_p - sum_{p'} q(p' | h) g_p'),   g = kappa log q(.|h) - tau,

with ``tau = E_c[log T_c(p | h)] + b log pi0(p | h)``; its fixed point is
``q(. | h) ∝ exp(tau / kappa)`` at every reached prefix, whatever ``n``.

The sampled estimators replace the sums over rollouts by a batch: the
score-function (REINFORCE) estimator with a leave-one-out baseline for the
Gibbs objectives, the per-token loss on the student's own rollouts for token
SD, and maximum likelihood on teacher samples for forward SD.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from tilt.policy import Policy
from tilt.space import FloatArray, IntArray, RolloutSpace

__all__ = [
    "TabularSoftmax",
    "sample_paths",
    "sample_categorical",
    "sequence_gradient",
    "gibbs_value_and_grad",
    "forward_value_and_grad",
    "token_value_and_grad",
    "score_function_gradient",
    "leave_one_out",
    "token_sample_gradient",
    "conditionals_of_rows",
]


class TabularSoftmax:
    """The trained model: one logit per prefix of the tree, softmax among siblings.

    The only stateful object of the trainer: ``logits`` (shape (n_prefixes,),
    entry 0 unused) are updated in place by :meth:`step`.

    Parameters
    ----------
    space : RolloutSpace
    logits : ndarray, shape (n_prefixes,)
        Finite initial logits (copied).

    Examples
    --------
    >>> from tilt.graphs import named_task
    >>> from tilt.space import enumerate_rollouts
    >>> from tilt.policy import base_policy
    >>> pi0 = base_policy(enumerate_rollouts(named_task("grid3")))
    >>> model = TabularSoftmax.from_policy(pi0)
    >>> bool(abs(model.policy().prob - pi0.prob).max() < 1e-15)
    True
    """

    def __init__(self, space: RolloutSpace, logits: FloatArray) -> None:
        logits = np.array(logits, dtype=np.float64, copy=True)
        if logits.shape != (space.n_prefixes,):
            raise ValueError(f"expected {space.n_prefixes} logits, got shape {logits.shape}")
        if not np.isfinite(logits).all():
            raise ValueError("logits must be finite: a zero-mass move has no finite logit")
        logits[0] = 0.0
        self.space = space
        self.logits = logits

    @classmethod
    def from_policy(cls, policy: Policy) -> TabularSoftmax:
        """Logits ``z_p = log pi(p | h)`` of a policy with full support on its tree."""
        return cls(policy.space, policy.log_conditionals())

    def log_conditionals(self, logits: FloatArray | None = None) -> FloatArray:
        """``log q(p | h)`` per prefix (entry 0 is 0), of ``logits`` or the current ones."""
        z = self.logits if logits is None else logits
        out = z - self.space.sibling_logsumexp(z)
        out[0] = 0.0
        return out

    def policy(self, logits: FloatArray | None = None) -> Policy:
        """The distribution over rollouts, of ``logits`` or the current ones."""
        return Policy.from_log_conditionals(self.space, self.log_conditionals(logits))

    def step(self, gradient: FloatArray, lr: float) -> None:
        """``z <- z - lr * gradient`` (entry 0 stays 0)."""
        self.logits -= lr * gradient
        self.logits[0] = 0.0


# --------------------------------------------------------------------------
# sampling


def sample_paths(
    space: RolloutSpace, log_cond: FloatArray, n: int, rng: np.random.Generator
) -> NDArray[np.int64]:
    """Sample ``n`` rollouts of the tree policy ``log_cond``, one depth at a time.

    Returns the prefixes along each path, shape (n, max_depth + 1), padded with
    ``-1`` after the leaf; column 0 is the root.  One uniform per sample and
    depth; the child is the first whose within-group cumulative probability
    exceeds it (a loop over depth and over the largest number of children).
    """
    prob = np.exp(log_cond)
    cum = np.zeros(space.n_prefixes)
    for k in range(int(space.child_count.max(initial=0))):
        has = space.child_count > k
        h = np.flatnonzero(has)
        first = space.child_start[h]
        cum[first + k] = (cum[first + k - 1] if k else 0.0) + prob[first + k]
    # exact 1 at the last child of each group so the draw always lands in the group
    groups = np.flatnonzero(space.child_count > 0)
    last = space.child_start[groups] + space.child_count[groups] - 1
    cum[1:] /= np.repeat(cum[last], space.child_count[groups])
    cum[last] = 1.0
    paths = np.full((n, space.max_depth + 1), -1, dtype=np.int64)
    cursor = np.zeros(n, dtype=np.int64)
    paths[:, 0] = 0
    for d in range(1, space.max_depth + 1):
        alive = np.flatnonzero(space.child_count[cursor] > 0)
        if alive.size == 0:
            break
        h = cursor[alive]
        u = rng.random(alive.size)
        start, count = space.child_start[h], space.child_count[h]
        pick = np.zeros(alive.size, dtype=np.int64)
        for k in range(int(count.max())):
            pick += (k < count - 1) & (cum[start + np.minimum(k, count - 1)] <= u)
        cursor[alive] = start + pick
        paths[alive, d] = cursor[alive]
    return paths


def leaves_of(space: RolloutSpace, paths: NDArray[np.int64]) -> IntArray:
    """Rollout index of each sampled path."""
    depth = (paths >= 0).sum(axis=1) - 1
    leaf = paths[np.arange(paths.shape[0]), depth]
    return np.searchsorted(space.rollout_prefix, leaf)


def sample_categorical(
    log_rows: FloatArray, row_of: IntArray, rng: np.random.Generator
) -> IntArray:
    """One draw from row ``row_of[i]`` of ``exp(log_rows)`` for each ``i``.

    Inverse CDF over the flattened rows: the key of column ``j`` of row ``r`` is
    ``r + cdf_r(j)`` (each row's cdf ends at exactly 1), so one ``searchsorted``
    serves every sample; zero-mass entries are never drawn.
    """
    rows = np.atleast_2d(log_rows)
    peak = rows.max(axis=1, keepdims=True)
    cdf = np.cumsum(np.exp(rows - peak), axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    key = (cdf + np.arange(rows.shape[0])[:, None]).ravel()
    draw = np.searchsorted(key, row_of + rng.random(row_of.size), side="right")
    return np.minimum(draw, key.size - 1) - row_of * rows.shape[1]


def conditionals_of_rows(space: RolloutSpace, log_rows: FloatArray) -> FloatArray:
    """Per teacher row ``log T(y)``: ``log T(p | h)`` per prefix; ``nan`` if ``T(h) = 0``."""
    out = np.empty((log_rows.shape[0], space.n_prefixes))
    parent = space.parent[1:]
    for i, row in enumerate(log_rows):
        mass = space.subtree_logsumexp(row)
        reached = np.isfinite(mass[parent])
        with np.errstate(invalid="ignore"):
            out[i, 1:] = np.where(reached, mass[1:] - np.where(reached, mass[parent], 0.0), np.nan)
        out[i, 0] = 0.0
    return out


# --------------------------------------------------------------------------
# exact objectives


def sequence_gradient(space: RolloutSpace, log_cond: FloatArray, weight: FloatArray) -> FloatArray:
    """``dF/dz_p = W(p) - q(p | h) W(h)`` from ``w(y) = dF/d log q(y)``; entry 0 is 0."""
    subtree = space.subtree_sum(weight)
    out = np.zeros(space.n_prefixes)
    out[1:] = subtree[1:] - np.exp(log_cond[1:]) * subtree[space.parent[1:]]
    return out


def gibbs_value_and_grad(
    space: RolloutSpace, log_cond: FloatArray, kappa: float, log_target: FloatArray
) -> tuple[float, FloatArray]:
    """``F = sum_y q(y) (kappa log q(y) - a(y))`` and its gradient in the logits.

    ``a = log_target`` must be finite (the optimum ``∝ exp(a / kappa)`` then has
    full support and finite logits).
    """
    log_q = space.path_sum(log_cond)[space.rollout_prefix]
    q = np.exp(log_q)
    per_rollout = kappa * log_q - log_target
    value = float(np.multiply(q, per_rollout).sum())  # no BLAS: see tilt._lbfgs
    return value, sequence_gradient(space, log_cond, q * (per_rollout - value))


def forward_value_and_grad(
    space: RolloutSpace, log_cond: FloatArray, log_mixture: FloatArray
) -> tuple[float, FloatArray]:
    """``F = KL(m || q)`` and its gradient, ``w(y) = -m(y)``."""
    log_q = space.path_sum(log_cond)[space.rollout_prefix]
    m = np.exp(log_mixture)
    has = m > 0
    value = float(np.multiply(m[has], log_mixture[has] - log_q[has]).sum())
    return value, sequence_gradient(space, log_cond, -m)


def token_value_and_grad(
    space: RolloutSpace,
    log_cond: FloatArray,
    kappa: float,
    tau: FloatArray,
    prefix_weight: FloatArray,
) -> tuple[float, FloatArray]:
    """``F_n = sum_h n(h) sum_p q(p | h) (kappa log q(p | h) - tau_p)``, gradient at fixed ``n``.

    ``prefix_weight`` is ``n(h)`` per prefix (held fixed: no gradient through it).
    """
    parent = space.parent[1:]
    cond = np.exp(log_cond[1:])
    g = kappa * log_cond[1:] - tau[1:]
    per_child = cond * g
    group_mean = np.bincount(parent, weights=per_child, minlength=space.n_prefixes)
    weight = prefix_weight[parent]
    value = float(np.multiply(weight, per_child).sum())
    out = np.zeros(space.n_prefixes)
    out[1:] = weight * cond * (g - group_mean[parent])
    return value, out


# --------------------------------------------------------------------------
# sampled estimators


def leave_one_out(values: FloatArray) -> FloatArray:
    """Per sample, the mean of the *other* samples (the RLOO baseline); 0 for a batch of one."""
    n = values.size
    if n < 2:
        return np.zeros_like(values)
    return (values.sum() - values) / (n - 1)


def score_function_gradient(
    space: RolloutSpace, log_cond: FloatArray, rollouts: IntArray, coefficient: FloatArray
) -> FloatArray:
    """``(1/B) sum_i coefficient_i * d log q(y_i) / dz``, by one subtree sum."""
    weight = np.bincount(rollouts, weights=coefficient, minlength=space.n_rollouts) / rollouts.size
    return sequence_gradient(space, log_cond, weight)


def token_sample_gradient(
    space: RolloutSpace,
    log_cond: FloatArray,
    paths: NDArray[np.int64],
    teacher_cond: FloatArray,
    row_of: IntArray,
    kappa: float,
    anchor_cond: FloatArray | None,
    anchor: float,
) -> FloatArray:
    """Per-token reverse-KL gradient on sampled paths, no gradient through the sampling.

    For each sample ``i`` and each non-leaf prefix ``h`` on its path with
    ``T_{c_i}(h) > 0``: the softmax gradient of
    ``KL(q(. | h) || T_{c_i}(. | h)) + b KL(q(. | h) || pi0(. | h))`` over all
    children of ``h`` (the full "vocabulary"), averaged over the batch.
    ``teacher_cond[row_of[i]]`` holds ``log T_{c_i}(p | h)`` per prefix.
    """
    n, width = paths.shape
    batch = np.repeat(np.arange(n), width)
    h = paths.ravel()
    keep = h >= 0
    batch, h = batch[keep], h[keep]
    keep = space.child_count[h] > 0
    batch, h = batch[keep], h[keep]
    # every child p of every visited (sample, h)
    count = space.child_count[h]
    pair = np.repeat(np.arange(h.size), count)
    child = space.child_start[h][pair] + (
        np.arange(pair.size) - np.repeat(np.cumsum(count) - count, count)
    )
    tau = teacher_cond[row_of[batch][pair], child]
    reached = np.isfinite(tau) | np.isneginf(tau)  # nan: the teacher does not reach h
    pair_reached = np.ones(h.size, dtype=bool)
    np.logical_and.at(pair_reached, pair, reached)
    if anchor:
        tau = tau + anchor * anchor_cond[child]  # type: ignore[index]
    use = pair_reached[pair]
    visits = np.bincount(h[pair_reached], minlength=space.n_prefixes).astype(np.float64)
    tau_sum = np.bincount(child[use], weights=tau[use], minlength=space.n_prefixes)
    parent = space.parent[1:]
    cond = np.exp(log_cond[1:])
    g = visits[parent] * kappa * log_cond[1:] - tau_sum[1:]
    group_mean = np.bincount(parent, weights=cond * g, minlength=space.n_prefixes)
    out = np.zeros(space.n_prefixes)
    out[1:] = cond * (g - group_mean[parent]) / n
    return out
