"""Demonstrations and context models: how the model behaves with ``c`` in context.

A context model maps a tabular policy ``pi`` and a demonstration ``c`` to a
teacher ``T_c(y) = pi(y | c)`` (``docs/theory.md``, "Self-distillation").  The
one method a model must define is :meth:`ContextModel.teacher_log_prob`; the
three quantities the optima need have generic implementations through it:

* the tilt score ``S(y) = E_c log T_c(y) - log pi(y)``;
* the token target ``E_c[log T_c(u | h) | T_c(h) > 0]`` at every prefix;
* the forward mixture ``log E_c T_c(y)``.

The built-in models override them with structured forms: ``copy`` in closed
form, ``edge`` from the edge marginals of the demonstrations, ``kernel`` from
edge marginals plus one rollout-by-demonstration product for its constant.
"""

from __future__ import annotations

import hashlib
import math
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from tilt._pairwise import kernel_pass, log_mixture, logsumexp_rows
from tilt.policy import Policy
from tilt.space import LINEAR_RANGE, FloatArray, IntArray, RolloutSpace, TooLargeError

__all__ = [
    "DEMOS",
    "CONTEXTS",
    "GENERIC_LIMIT",
    "demonstrations",
    "edge_marginals",
    "ContextModel",
    "CopyContext",
    "EdgeContext",
    "KernelContext",
    "make_context",
    "generic_tilt_score",
    "generic_token_log_target",
    "generic_forward_log_prob",
]

DEMOS = ("own", "uniform", "tempered")
"""Demonstration distributions accepted by :func:`demonstrations`."""

CONTEXTS = ("copy", "edge", "kernel")
"""Built-in context models accepted by :func:`make_context`."""

GENERIC_LIMIT = 2_000_000_000
"""Most ``demonstrations x prefixes`` teacher evaluations a generic path may do."""

_CHUNK_ENTRIES = 1 << 23


def demonstrations(policy: Policy, kind: str = "own", alpha: float = 1.0) -> Policy:
    """The demonstration distribution ``D`` over the correct rollouts.

    ``own``: ``D(c) = pi(c) r(c) / pi(C)``; ``uniform``: ``D(c) = r(c) / |C|``;
    ``tempered``: ``D(c) ∝ pi(c)^alpha r(c)`` (``alpha = 1`` is ``own``,
    ``alpha = 0`` is ``uniform``).

    Raises
    ------
    ValueError
        On an unknown ``kind``, a negative or non-finite ``alpha``, or a policy
        with no mass on the correct set.
    """
    space = policy.space
    if kind not in DEMOS:
        raise ValueError(f"unknown demonstrations {kind!r}: choose one of {', '.join(DEMOS)}")
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"tempering alpha must be finite and >= 0, got {alpha!r}")
    log_weight = np.full(space.n_rollouts, -np.inf)
    correct = space.correct
    if not np.isfinite(policy.log_prob[correct]).any():
        raise ValueError("the policy puts no mass on correct rollouts: it has no demonstrations")
    if kind == "own":
        log_weight[correct] = policy.log_prob[correct]
    elif kind == "uniform":
        log_weight[correct] = 0.0
    else:
        lp = policy.log_prob[correct]
        log_weight[correct] = np.where(np.isfinite(lp), alpha * lp, -np.inf)
    return Policy.from_log_weights(space, log_weight)


def edge_marginals(demos: Policy) -> FloatArray:
    """``m(e) = P_{c ~ D}(e in E(c))`` for every move ``e``, shape (n_moves,).

    A simple path makes each move at most once, so ``m`` is the flow of ``D``
    through the prefixes that end with ``e``.
    """
    space = demos.space
    flow = space.subtree_sum(demos.prob)
    return np.bincount(space.move[1:], weights=flow[1:], minlength=space.n_moves).astype(
        np.float64, copy=False
    )


def _support(demos: Policy) -> IntArray:
    return np.flatnonzero(np.isfinite(demos.log_prob))


def _chunks(indices: IntArray, row_size: int) -> list[IntArray]:
    size = max(1, _CHUNK_ENTRIES // max(row_size, 1))
    return [indices[i : i + size] for i in range(0, indices.size, size)]


def _check_generic(space: RolloutSpace, n_demos: int, what: str) -> None:
    work = n_demos * space.n_prefixes
    if work > GENERIC_LIMIT:
        raise TooLargeError(
            f"{what} needs {n_demos:,} demonstrations x {space.n_prefixes:,} prefixes = "
            f"{work:,} teacher evaluations (limit {GENERIC_LIMIT:,}): use a horizon, a smaller "
            "graph, or a context model with a structured form"
        )


def _log_expm1(gamma: float) -> float:
    """``log(exp(gamma) - 1)`` without overflow; ``-inf`` at 0."""
    if gamma == 0:
        return -math.inf
    return gamma + math.log(-math.expm1(-gamma))


_POLICY_CACHE: dict[str, Any] = {}
"""Per-prefix arrays of the last policy seen (one entry, held weakly): the optima of one
instance ask for the same conditionals several times."""


def _cached(policy: Policy, name: str, compute: Callable[[], FloatArray]) -> FloatArray:
    """``compute()``, remembered for ``policy`` under ``name`` (read-only array).

    One policy at a time, held weakly: the entries go when the policy does or
    when another policy is asked about.  Names ending in ``@...`` form a group
    of which only the latest is kept (one per set of demonstrations).
    """
    ref = _POLICY_CACHE.get("policy")
    if ref is None or ref() is not policy:
        _POLICY_CACHE.clear()

        def forget(dead: weakref.ref[Policy]) -> None:
            if _POLICY_CACHE.get("policy") is dead:
                _POLICY_CACHE.clear()

        _POLICY_CACHE["policy"] = weakref.ref(policy, forget)
    if name not in _POLICY_CACHE:
        group = name.split("@")[0] + "@"
        if "@" in name:
            for key in [k for k in _POLICY_CACHE if k.startswith(group)]:
                del _POLICY_CACHE[key]
        value = compute()
        value.flags.writeable = False
        _POLICY_CACHE[name] = value
    return _POLICY_CACHE[name]


def _check_pairs(space: RolloutSpace, n_demos: int, what: str) -> None:
    """Raise :class:`TooLargeError` when ``n_demos x n_rollouts`` teacher terms exceed the limit.

    The forward mixture ``sum_c D(c) T_c(y)`` of the edge and kernel models has
    no structured form: every pair ``(y, c)`` contributes its own term.
    """
    work = n_demos * space.n_rollouts
    if work > GENERIC_LIMIT:
        raise TooLargeError(
            f"{what} needs the sum over {n_demos:,} demonstrations of every teacher at each of "
            f"{space.n_rollouts:,} rollouts = {work:.3g} teacher terms (limit {GENERIC_LIMIT:.3g}; "
            "no exact algorithm avoids the pairs): use a horizon, a smaller graph, "
            "or sequence/token SD"
        )


# --------------------------------------------------------------------------
# generic paths, through teacher_log_prob


def generic_tilt_score(model: ContextModel, policy: Policy, demos: Policy) -> FloatArray:
    """``S(y) = sum_c D(c) log T_c(y) - log pi(y)`` by explicit teachers.

    Cost ``O(|supp D| x n_rollouts)``.  ``S = -inf`` where ``E_c log T_c(y)`` is.

    Raises
    ------
    ValueError
        If some teacher puts mass on a rollout the policy gives none (the
        context model is not absolutely continuous w.r.t. ``pi``).
    """
    space = policy.space
    support = _support(demos)
    _check_generic(space, support.size, f"the tilt score of the {model.name} model")
    expected = np.zeros(space.n_rollouts)
    for chunk in _chunks(support, space.n_rollouts):
        teacher = model.teacher_log_prob(policy, chunk)
        weight = demos.prob[chunk]
        expected += np.where(np.isneginf(teacher), -np.inf, teacher * weight[:, None]).sum(axis=0)
    return _score_from_expected(policy, expected)


def _score_from_expected(policy: Policy, expected: FloatArray) -> FloatArray:
    finite = np.isfinite(expected)
    zero = np.isneginf(policy.log_prob)
    if (finite & zero).any():
        raise ValueError(
            "a teacher puts mass on a rollout the policy gives none: context models must "
            "satisfy T_c(y) = 0 wherever pi(y) = 0"
        )
    score = np.full(expected.shape, -np.inf)
    score[finite] = expected[finite] - policy.log_prob[finite]
    return score


def generic_token_log_target(model: ContextModel, policy: Policy, demos: Policy) -> FloatArray:
    """``E_c[log T_c(u | h) | T_c(h) > 0]`` at every prefix ``p = h u``, by explicit teachers.

    Returns shape (n_prefixes,); entry 0 is 0.  Where no demonstration's teacher
    reaches ``h`` the entry is the policy's own ``log pi(u | h)`` (no signal).
    """
    space = policy.space
    support = _support(demos)
    _check_generic(space, support.size, f"the token target of the {model.name} model")
    numerator = np.zeros(space.n_prefixes)
    weight_sum = np.zeros(space.n_prefixes)
    parent = space.parent[1:]
    for chunk in _chunks(support, space.n_rollouts):
        teacher = model.teacher_log_prob(policy, chunk)
        for row, c in zip(teacher, chunk, strict=True):
            mass = space.subtree_logsumexp(row)
            reached = np.isfinite(mass[parent])
            cond = np.where(reached, mass[1:] - np.where(reached, mass[parent], 0.0), 0.0)
            w = demos.prob[c]
            numerator[1:] += np.where(reached, np.where(np.isneginf(cond), -np.inf, w * cond), 0.0)
            weight_sum[1:] += np.where(reached, w, 0.0)
    own = policy.log_conditionals()
    has = weight_sum > 0
    out = own.copy()
    out[has] = numerator[has] / weight_sum[has]
    out[0] = 0.0
    return out


def generic_forward_log_prob(model: ContextModel, policy: Policy, demos: Policy) -> FloatArray:
    """``log sum_c D(c) T_c(y)`` by explicit teachers, shape (n_rollouts,)."""
    space = policy.space
    support = _support(demos)
    _check_generic(space, support.size, f"the forward mixture of the {model.name} model")
    out = np.full(space.n_rollouts, -np.inf)
    for chunk in _chunks(support, space.n_rollouts):
        teacher = model.teacher_log_prob(policy, chunk) + demos.log_prob[chunk][:, None]
        out = np.logaddexp(out, logsumexp_rows(np.ascontiguousarray(teacher.T)))
    return out


# --------------------------------------------------------------------------
# the protocol


class ContextModel:
    """A context model ``T_c(y) = pi(y | c)``; subclass it to define your own.

    A subclass sets ``name`` and implements :meth:`teacher_log_prob`; the
    optima then work through the generic paths, at a cost of one teacher per
    demonstration.  It may override :meth:`tilt_score`,
    :meth:`token_log_target` and :meth:`forward_log_prob` with faster exact
    forms (the built-ins do); ``tests/`` checks both paths agree.

    Requirements: for every policy ``pi`` and demonstration ``c``, ``T_c`` is a
    distribution over the rollouts with ``T_c(y) = 0`` wherever ``pi(y) = 0``.

    Examples
    --------
    >>> import numpy as np
    >>> class Ignore(ContextModel):
    ...     name = "ignore"
    ...     def teacher_log_prob(self, policy, demos):
    ...         return np.tile(policy.log_prob, (len(demos), 1))
    """

    name: str = "custom"
    strength: float = 0.0

    def teacher_log_prob(self, policy: Policy, demos: IntArray) -> FloatArray:
        """``log T_c(y)`` for each demonstration index ``c`` in ``demos``: shape (k, n_rollouts)."""
        raise NotImplementedError(f"{type(self).__name__} must implement teacher_log_prob")

    def tilt_score(self, policy: Policy, demos: Policy) -> FloatArray:
        """``S(y) = E_{c~D} log T_c(y) - log pi(y)``, shape (n_rollouts,)."""
        return generic_tilt_score(self, policy, demos)

    def token_log_target(self, policy: Policy, demos: Policy) -> FloatArray:
        """``E_c[log T_c(u | h) | T_c(h) > 0]`` per prefix, shape (n_prefixes,)."""
        return generic_token_log_target(self, policy, demos)

    def forward_log_prob(self, policy: Policy, demos: Policy) -> FloatArray:
        """``log E_{c~D} T_c(y)``, shape (n_rollouts,)."""
        return generic_forward_log_prob(self, policy, demos)

    def describe(self) -> str:
        """Short label such as ``edge(gamma=2)``."""
        return f"{self.name}"


def _check_strength(name: str, value: float, upper: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    if upper is not None and value >= upper:
        raise ValueError(
            f"{name} must be < {upper:g}, got {value!r}: "
            f"{name} = 1 would copy the demonstration exactly"
        )
    return value


class CopyContext(ContextModel):
    """``copy(lam)``: ``pi(y | c) = (1 - lam) pi(y) + lam [y = c]``, ``0 <= lam < 1``.

    Closed forms (``docs/theory.md``)::

        S(y) = log(1 - lam) + D(y) log(1 + lam / ((1 - lam) pi(y)))
        forward: q(y) = (1 - lam) pi(y) + lam D(y)
    """

    name = "copy"

    def __init__(self, lam: float) -> None:
        self.strength = self.lam = _check_strength("lam", lam, upper=1.0)

    def describe(self) -> str:
        return f"copy(lam={self.lam:g})"

    def teacher_log_prob(self, policy: Policy, demos: IntArray) -> FloatArray:
        demos = np.asarray(demos, dtype=np.int64)
        out = np.tile(math.log1p(-self.lam) + policy.log_prob, (demos.size, 1))
        rows = np.arange(demos.size)
        with np.errstate(divide="ignore"):
            out[rows, demos] = np.logaddexp(
                out[rows, demos], math.log(self.lam) if self.lam else -np.inf
            )
        return out

    def _log_boost(self, log_p: FloatArray) -> FloatArray:
        """``log(1 + lam / ((1 - lam) p))`` from ``log p``."""
        if self.lam == 0:
            return np.zeros_like(log_p)
        return np.logaddexp(0.0, math.log(self.lam) - math.log1p(-self.lam) - log_p)

    def tilt_score(self, policy: Policy, demos: Policy) -> FloatArray:
        d = demos.prob
        boost = np.zeros(policy.space.n_rollouts)
        has = d > 0
        boost[has] = d[has] * self._log_boost(policy.log_prob[has])
        return math.log1p(-self.lam) + boost

    def token_log_target(self, policy: Policy, demos: Policy) -> FloatArray:
        # E_c log T_c(p | h) = (1 - D(h)) log pi(p|h) + D(p) log((1-lam) pi(p) + lam)
        #   + (D(h) - D(p)) log((1-lam) pi(p)) - D(h) log((1-lam) pi(h) + lam)
        space = policy.space
        log_mass = policy.prefix_log_mass()
        d_mass = np.clip(space.subtree_sum(demos.prob), 0.0, 1.0)
        parent = space.parent[1:]
        lam = self.lam
        log_keep = math.log1p(-lam)
        log_lam = math.log(lam) if lam else -np.inf
        own = policy.log_conditionals()[1:]
        d_h, d_p = d_mass[parent], np.minimum(d_mass[1:], d_mass[parent])
        lp, lh = log_mass[1:], log_mass[parent]
        through_both = np.logaddexp(log_keep + lp, log_lam)
        through_h_only = log_keep + lp
        norm = np.logaddexp(log_keep + lh, log_lam)
        out = np.zeros(space.n_prefixes)
        out[1:] = (
            _weighted(1.0 - d_h, own)
            + _weighted(d_p, through_both)
            + _weighted(d_h - d_p, through_h_only)
            - _weighted(d_h, norm)
        )
        return out

    def forward_log_prob(self, policy: Policy, demos: Policy) -> FloatArray:
        if self.lam == 0:
            return policy.log_prob.copy()
        return np.logaddexp(
            math.log1p(-self.lam) + policy.log_prob, math.log(self.lam) + demos.log_prob
        )


def _weighted(weight: FloatArray, log_value: FloatArray) -> FloatArray:
    """``weight * log_value`` with ``0 * -inf = 0`` (weights clipped at 0)."""
    weight = np.maximum(weight, 0.0)
    has = weight > 0
    return np.where(has, weight * np.where(has, log_value, 0.0), 0.0)


class EdgeContext(ContextModel):
    """``edge(gamma)``: token-level copying, an induction head.

    At a prefix ``h`` ending in ``v`` the teacher multiplies by ``exp(gamma)``
    the conditional of ``next_c(v)``, the node after ``v`` on ``c``::

        pi(u | h, c) ∝ pi(u | h) exp(gamma [u = next_c(v)])

    Structured forms, from the edge marginals ``m`` of ``D`` only::

        S(y) = sum_t gamma m(v_t, u_t) - L(h_t),
        L(h) = sum_{u in avail(h)} m(v, u) log(1 + (e^gamma - 1) pi(u | h))
        token: q(u | h) ∝ pi(u | h) exp(gamma m(v, u))

    The forward mixture needs every teacher: one ``(n_rollouts x n_moves)``
    product per block of demonstrations.
    """

    name = "edge"

    def __init__(self, gamma: float) -> None:
        self.strength = self.gamma = _check_strength("gamma", gamma)

    def describe(self) -> str:
        return f"edge(gamma={self.gamma:g})"

    def _log_boost(self, policy: Policy) -> FloatArray:
        """``l(p) = log(1 + (e^gamma - 1) pi(p | h))`` per prefix (entry 0 is 0; cached)."""

        def compute() -> FloatArray:
            out = np.logaddexp(0.0, _log_expm1(self.gamma) + policy.log_conditionals())
            out[0] = 0.0
            return out

        return _cached(policy, f"edge_boost_{self.gamma!r}", compute)

    def _step_weights(self, policy: Policy) -> FloatArray:
        """``W[y, e] = gamma [e in E(y)] - sum of l over the moves e available along y``."""
        space = policy.space
        return self.gamma * space.move_incidence() - space.sibling_move_weights(
            self._log_boost(policy)
        )

    def teacher_log_prob(self, policy: Policy, demos: IntArray) -> FloatArray:
        space = policy.space
        weights = self._step_weights(policy)
        incidence = space.move_incidence()[np.asarray(demos, dtype=np.int64)]
        return policy.log_prob[None, :] + incidence @ weights.T

    def _step(self, policy: Policy, demos: Policy) -> FloatArray:
        """``gamma m(move[p]) - E_c log Z(parent[p], c)`` per prefix (entry 0 is 0; cached).

        Shared by the tilt score (summed along paths) and the token target
        (added to ``log pi(u | h)``); cached per policy and demonstrations.
        """

        def compute() -> FloatArray:
            space = policy.space
            m = edge_marginals(demos)
            step = np.zeros(space.n_prefixes)
            step[1:] = self.gamma * m[space.move[1:]]
            expected_log_z = space.sibling_sum(_child_values(space, m, self._log_boost(policy)))
            step[1:] -= expected_log_z[space.parent[1:]]
            return step

        return _cached(policy, f"edge_step@{self.gamma!r}_{_digest(demos.log_prob)}", compute)

    def tilt_score(self, policy: Policy, demos: Policy) -> FloatArray:
        space = policy.space
        return space.path_sum(self._step(policy, demos))[space.rollout_prefix]

    def token_log_target(self, policy: Policy, demos: Policy) -> FloatArray:
        out = policy.log_conditionals() + self._step(policy, demos)
        out[0] = 0.0
        return out

    def forward_log_prob(self, policy: Policy, demos: Policy) -> FloatArray:
        space = policy.space
        support = _support(demos)
        _check_pairs(space, support.size, f"the forward mixture of the {self.describe()} model")
        weights = self._step_weights(policy)
        incidence = space.move_incidence()
        return policy.log_prob + log_mixture(weights, incidence[support], demos.log_prob[support])


def _child_values(space: RolloutSpace, m: FloatArray, log_boost: FloatArray) -> FloatArray:
    """``m(move[q]) * l(q)`` per prefix ``q`` (entry 0 is 0)."""
    out = np.zeros(space.n_prefixes)
    out[1:] = m[space.move[1:]] * log_boost[1:]
    return out


class KernelContext(ContextModel):
    """``kernel(gamma)``: ``pi(y | c) ∝ pi(y) exp(gamma |E(y) ∩ E(c)|)``.

    ``S(y) = gamma sum_{e in E(y)} m(e) - E_c log Z(c)`` with
    ``Z(c) = sum_y pi(y) exp(gamma |E(y) ∩ E(c)|)``.  Structured forms, with
    ``r_c(p) = sum over rollouts y below p of pi(y | p) exp(gamma |E(y after p) ∩ E(c)|)``
    computed for a block of demonstrations at once by one bottom-up pass over
    the prefix tree (``r_c = 1`` at a leaf)::

        r_c(h) = sum_{q child of h} pi(q | h) (1 + (e^gamma - 1) [move(q) in E(c)]) r_c(q)
        Z(c) = r_c(root)
        token: E_c log T_c(u | h) = log pi(u | h) + gamma m(v, u) + E_c log r_c(hu) - E_c log r_c(h)

    Cost ``O(|supp D| x n_prefixes)``, no rollout-by-demonstration matrix.  The
    forward mixture needs every pair: one ``(n_rollouts x n_moves) @ (n_moves x k)``
    product per block of demonstrations.
    """

    name = "kernel"

    def __init__(self, gamma: float) -> None:
        self.strength = self.gamma = _check_strength("gamma", gamma)

    def describe(self) -> str:
        return f"kernel(gamma={self.gamma:g})"

    def _linear_ok(self, space: RolloutSpace) -> bool:
        """``r_c <= e^(gamma max_depth)`` stays far from overflow."""
        return self.gamma * space.max_depth <= LINEAR_RANGE

    def _blocks(self, policy: Policy, demos: Policy) -> Iterator[tuple[IntArray, FloatArray]]:
        """Yield ``(chunk, log pi(y) + gamma n(y, c))`` of shape (n_rollouts, k)."""
        space = policy.space
        incidence = space.move_incidence()
        for chunk in _chunks(_support(demos), space.n_rollouts):
            overlap = incidence @ incidence[chunk].T
            yield chunk, policy.log_prob[:, None] + self.gamma * overlap

    def _log_z_dense(self, policy: Policy, demos: Policy) -> tuple[IntArray, FloatArray]:
        """``(support, log Z(c))`` by explicit rollout-by-demonstration blocks."""
        support, parts = [], []
        for chunk, tilted in self._blocks(policy, demos):
            support.append(chunk)
            parts.append(logsumexp_rows(np.ascontiguousarray(tilted.T).copy()))
        return np.concatenate(support), np.concatenate(parts)

    def teacher_log_prob(self, policy: Policy, demos: IntArray) -> FloatArray:
        incidence = policy.space.move_incidence()
        tilted = policy.log_prob[None, :] + self.gamma * (
            incidence[np.asarray(demos)] @ incidence.T
        )
        return tilted - logsumexp_rows(tilted.copy())[:, None]

    def _log_z(self, policy: Policy, demos: Policy) -> tuple[IntArray, FloatArray]:
        space = policy.space
        support = _support(demos)
        if self._linear_ok(space) and support.size * space.n_prefixes <= GENERIC_LIMIT:
            log_z, _ = _kernel_pass(self.gamma, policy, demos, want_prefixes=False)
            return support, log_z
        return self._log_z_dense(policy, demos)

    def tilt_score(self, policy: Policy, demos: Policy) -> FloatArray:
        space = policy.space
        m = edge_marginals(demos)
        support, log_z = self._log_z(policy, demos)
        expected_log_z = float(demos.prob[support] @ log_z)
        per_move = np.zeros(space.n_prefixes)
        per_move[1:] = self.gamma * m[space.move[1:]]
        return space.path_sum(per_move)[space.rollout_prefix] - expected_log_z

    def token_log_target(self, policy: Policy, demos: Policy) -> FloatArray:
        space = policy.space
        if not self._linear_ok(space):
            return generic_token_log_target(self, policy, demos)
        _, expected = _kernel_pass(self.gamma, policy, demos, want_prefixes=True)
        assert expected is not None  # asked for with want_prefixes=True
        own = policy.log_conditionals()
        log_mass = policy.prefix_log_mass()
        parent = space.parent[1:]
        m = edge_marginals(demos)
        out = own.copy()
        reached = np.isfinite(log_mass[parent])
        alive = reached & np.isfinite(log_mass[1:])
        value = np.full(space.n_prefixes - 1, -np.inf)
        value[alive] = (
            (log_mass[1:][alive] - log_mass[parent][alive])
            + self.gamma * m[space.move[1:]][alive]
            + (expected[1:][alive] - expected[parent][alive])
        )
        out[1:] = np.where(reached, value, own[1:])
        out[0] = 0.0
        return out

    def forward_log_prob(self, policy: Policy, demos: Policy) -> FloatArray:
        space = policy.space
        support, log_z = self._log_z(policy, demos)
        _check_pairs(space, support.size, f"the forward mixture of the {self.describe()} model")
        incidence = space.move_incidence()
        log_w = demos.log_prob[support] - log_z
        return policy.log_prob + log_mixture(self.gamma * incidence, incidence[support], log_w)


_KERNEL_CACHE: dict[str, Any] = {}
"""The last kernel pass, one entry: keyed on the space (weakly), ``gamma`` and digests of the
policy's and the demonstrations' log-probabilities, so the optima of one instance share it."""


def _digest(values: FloatArray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(values).tobytes(), digest_size=16).hexdigest()


def _kernel_key(gamma: float, policy: Policy, demos: Policy) -> tuple[object, ...]:
    return (id(policy.space), gamma, _digest(policy.log_prob), _digest(demos.log_prob))


def _kernel_pass(
    gamma: float, policy: Policy, demos: Policy, want_prefixes: bool
) -> tuple[FloatArray, FloatArray | None]:
    """:func:`tilt._pairwise.kernel_pass` for ``D``'s support, size-checked and cached.

    Returns ``log Z(c)`` for ``c`` in the support of ``D`` (in support order) and,
    when ``want_prefixes``, ``sum_c D(c) log r_c(p) / sum_c D(c)`` per prefix.
    The last result is kept for the same space, ``gamma``, policy and
    demonstrations (the optima of one instance share it).
    """
    key = _kernel_key(gamma, policy, demos)
    cached = _KERNEL_CACHE.get("key")
    ref = _KERNEL_CACHE.get("space")
    if cached == key and ref is not None and ref() is policy.space:
        hit: tuple[FloatArray, FloatArray | None] = _KERNEL_CACHE["value"]
        if hit[1] is not None or not want_prefixes:
            return hit
    space = policy.space
    support = _support(demos)
    _check_generic(space, support.size, f"the kernel(gamma={gamma:g}) model")
    value = kernel_pass(
        gamma, space, policy.prefix_log_mass(), support, demos.prob[support], want_prefixes
    )
    _KERNEL_CACHE.clear()
    _KERNEL_CACHE.update(key=key, space=weakref.ref(policy.space), value=value)
    return value


def make_context(name: str, strength: float) -> ContextModel:
    """The built-in context model ``name`` at ``strength`` (``lam`` or ``gamma``).

    Raises
    ------
    ValueError
        On an unknown name, a negative strength, or ``lam >= 1`` for ``copy``.
    """
    if name == "copy":
        return CopyContext(strength)
    if name == "edge":
        return EdgeContext(strength)
    if name == "kernel":
        return KernelContext(strength)
    raise ValueError(f"unknown context model {name!r}: choose one of {', '.join(CONTEXTS)}")
