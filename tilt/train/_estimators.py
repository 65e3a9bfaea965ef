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

The per-prefix objectives (token SD and the losses real trainers run, with
no gradient through the prefix weights) are in :mod:`tilt.train._losses`.

The sampled estimators replace the sums over rollouts by a batch, as real
trainers do: the score-function (REINFORCE) estimator with a leave-one-out
baseline for the Gibbs objectives; maximum likelihood on teacher samples for
forward SD; and, per move of the student's own rollouts, the sampled-token
reverse KL as an advantage (:func:`sampled_token_coefficients`: return-to-go
discounted by ``g``, per-sequence ``1 / |y|`` weights), verl's ``k3``
backpropagated (:func:`k3_coefficients`), or the full-vocabulary generalised
JSD at every visited prefix (:func:`full_vocabulary_gradient`).  The exact
per-prefix losses they estimate are in :mod:`tilt.train._losses`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from tilt._numerics import FloatArray, IntArray
from tilt.policy import Policy
from tilt.space import RolloutSpace
from tilt.train._losses import gjsd_terms

__all__ = [
    "token_value_and_grad",
    "TabularSoftmax",
    "sample_paths",
    "sample_categorical",
    "sequence_gradient",
    "gibbs_value_and_grad",
    "forward_value_and_grad",
    "score_function_gradient",
    "leave_one_out",
    "step_gradient",
    "step_log_teacher",
    "step_log_q",
    "sampled_token_coefficients",
    "k3_coefficients",
    "full_vocabulary_gradient",
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
    >>> from tilt.tasks import named_task
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
        return Policy.from_log_conditionals(self.space, self.log_conditionals(logits), softmax=True)

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


def step_gradient(
    space: RolloutSpace, log_cond: FloatArray, paths: NDArray[np.int64], coefficient: FloatArray
) -> FloatArray:
    """``(1/B) sum_i sum_t A[i, t] d log q(u_t | h_t) / dz`` for sampled paths.

    ``coefficient[i, t]`` (shape (B, max_depth)) multiplies the score of the
    move from ``paths[i, t]`` to ``paths[i, t + 1]`` (ignored past the leaf).
    ``d log q(p | h) / dz = e_p - q(. | h)`` on the children of ``h``.
    """
    n = paths.shape[0]
    came, went = paths[:, :-1], paths[:, 1:]
    valid = went >= 0
    coef = coefficient[valid]
    chosen = np.bincount(went[valid], weights=coef, minlength=space.n_prefixes)
    visited = np.bincount(came[valid], weights=coef, minlength=space.n_prefixes)
    out = np.zeros(space.n_prefixes)
    out[1:] = (chosen[1:] - np.exp(log_cond[1:]) * visited[space.parent[1:]]) / n
    return out


def step_log_teacher(
    paths: NDArray[np.int64], teacher_cond: FloatArray, row_of: IntArray
) -> FloatArray:
    """``log T_{c_i}(u_t | h_t)`` for every sampled step, shape (B, max_depth); 0 past the leaf.

    ``nan`` where the teacher does not reach ``h_t`` (the caller decides what that means).
    """
    went = paths[:, 1:]
    valid = went >= 0
    out = np.zeros(went.shape)
    rows = np.broadcast_to(row_of[:, None], went.shape)
    out[valid] = teacher_cond[rows[valid], went[valid]]
    return out


def sampled_token_coefficients(
    log_cond: FloatArray,
    paths: NDArray[np.int64],
    log_teacher: FloatArray,
    *,
    discount: float = 0.0,
    kappa: float = 1.0,
    anchor_cond: FloatArray | None = None,
    anchor: float = 0.0,
    length_weighted: bool = False,
) -> FloatArray:
    """Advantages of the sampled-token reverse KL, one per step: what tinker and TRL backpropagate.

    Per step ``l_t = kappa log q(u_t | h_t) - log T_c(u_t | h_t) - b log pi0(u_t | h_t)``
    (``kappa = 1 + b``); the coefficient of ``d log q(u_t | h_t)`` is the return-to-go
    ``A_t = sum_{s >= t} g^(s - t) l_s`` (``g = discount``; 0 is no return-to-go),
    times ``1 / |y|`` when ``length_weighted`` (each sequence's tokens averaged).
    Steps whose teacher does not reach ``h_t`` (``nan``) carry no loss.

    Raises
    ------
    ValueError
        If a teacher gives a sampled move zero mass (the reverse KL is infinite).
    """
    went = paths[:, 1:]
    valid = went >= 0
    lq = np.where(valid, log_cond[np.where(valid, went, 0)], 0.0)
    reached = ~np.isnan(log_teacher)
    if np.isneginf(log_teacher[valid & reached]).any():
        raise ValueError(
            "a teacher gives a sampled move zero mass: the per-token reverse KL is infinite"
        )
    loss = kappa * lq - np.where(reached, log_teacher, 0.0)
    if anchor:
        assert anchor_cond is not None
        loss -= anchor * np.where(valid, anchor_cond[np.where(valid, went, 0)], 0.0)
    loss = np.where(valid & reached, loss, 0.0)
    advantage = loss.copy()
    if discount:
        for t in range(loss.shape[1] - 2, -1, -1):
            advantage[:, t] += discount * advantage[:, t + 1]
    if length_weighted:
        length = np.maximum(valid.sum(axis=1), 1)
        advantage /= length[:, None]
    return np.where(valid, advantage, 0.0)


K3_LOG_RATIO_CLAMP = 20.0
"""verl's ``kl_penalty('k3')`` clamps ``log T - log q`` to ``[-20, 20]`` before ``exp`` ..."""
K3_VALUE_CLAMP = 10.0
"""... and the estimate ``exp(kl) - kl - 1`` to ``[-10, 10]`` (``verl/.../core_algos.py``)."""


def k3_coefficients(
    paths: NDArray[np.int64], log_q_steps: FloatArray, log_teacher: FloatArray
) -> FloatArray:
    """``d k3 / d log q(u_t | h_t)`` per sampled step, for ``k3`` backpropagated (verl).

    verl's ``kl_penalty(logprob=log q, ref_logprob=log T, 'k3')``:
    ``kl = clamp(log T - log q, -20, 20)``, ``k3 = clamp(exp(kl) - kl - 1, -10, 10)``.
    Its derivative in ``log q`` is ``1 - exp(kl)`` where neither clamp is active and 0
    where one is.  Expected over ``u ~ q(. | h)``, with ``d log q(u) / dz = e_u - q``:
    ``sum_u (q_u - T_u)(e_u - q) = q - T`` (while no clamp is active), the gradient of
    ``KL(T || q)``: ``k3`` has the ``token-forward`` fixed point ``q = E_c T_c``.
    """
    valid = paths[:, 1:] >= 0
    reached = ~np.isnan(log_teacher)
    use = valid & reached
    raw = np.where(use, log_teacher - log_q_steps, 0.0)
    kl = np.clip(raw, -K3_LOG_RATIO_CLAMP, K3_LOG_RATIO_CLAMP)
    value = np.expm1(kl) - kl
    live = use & (np.abs(raw) <= K3_LOG_RATIO_CLAMP) & (value <= K3_VALUE_CLAMP)
    return np.where(live, -np.expm1(kl), 0.0)


def step_log_q(space: RolloutSpace, log_cond: FloatArray, paths: NDArray[np.int64]) -> FloatArray:
    """``log q(u_t | h_t)`` per sampled step, shape (B, max_depth); 0 past the leaf."""
    went = paths[:, 1:]
    valid = went >= 0
    return np.where(valid, log_cond[np.where(valid, went, 0)], 0.0)


def full_vocabulary_gradient(
    space: RolloutSpace,
    log_cond: FloatArray,
    paths: NDArray[np.int64],
    teacher_cond: FloatArray,
    row_of: IntArray,
    a: float,
) -> FloatArray:
    """Per-token ``GJSD_a(T_c(. | h), q(. | h))`` over every move at each visited prefix.

    For each sample ``i`` and each non-leaf prefix ``h`` on its path whose teacher
    ``T_{c_i}`` reaches ``h``: the softmax gradient of the full-vocabulary loss
    (``a = 1``: reverse KL; ``a = 0``: forward KL; between: the generalised JSD
    with ``M = (1 - a) q + a T``, as TRL and verl compute it), averaged over the batch.
    ``teacher_cond[row_of[i]]`` holds ``log T_{c_i}(p | h)`` per prefix (``nan``
    where ``h`` is not reached).
    """
    n = paths.shape[0]
    came = paths[:, :-1]
    valid = paths[:, 1:] >= 0
    h = came[valid]
    sample = np.broadcast_to(np.arange(n)[:, None], came.shape)[valid]
    count = space.child_count[h]
    pair = np.repeat(np.arange(h.size), count)
    child = space.child_start[h][pair] + (
        np.arange(pair.size) - np.repeat(np.cumsum(count) - count, count)
    )
    log_teacher = teacher_cond[row_of[sample][pair], child]
    reached = np.ones(h.size, dtype=bool)
    np.logical_and.at(reached, pair, ~np.isnan(log_teacher))
    use = reached[pair]
    pair, child, log_teacher = pair[use], child[use], log_teacher[use]
    log_q = log_cond[child]
    q = np.exp(log_q)
    if a == 1.0:
        if np.isneginf(log_teacher).any():
            raise ValueError(
                "a teacher gives a move zero mass: the per-token reverse KL is infinite"
            )
        grad_terms = q * (log_q - log_teacher)
    elif a == 0.0:
        grad_terms = -np.exp(log_teacher)
    else:
        _, grad_terms = gjsd_terms(a, log_q, np.ones((1, child.size)), log_teacher[None, :])
    group = np.bincount(pair, weights=grad_terms, minlength=h.size)
    per_child = grad_terms - q * group[pair]
    out = np.bincount(child, weights=per_child, minlength=space.n_prefixes) / n
    out[0] = 0.0
    return out
