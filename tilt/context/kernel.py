"""``kernel(gamma)``: sequence-level similarity, ``pi(y | c) ∝ pi(y) exp(gamma |E(y) ∩ E(c)|)``."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tilt._numerics import LINEAR_RANGE, FloatArray, IntArray, logsumexp_rows
from tilt.context._kernel_tree import kernel_kernels, kernel_mixture, stop_pass
from tilt.context._pairwise import kernel_pass, log_mixture, reached_conditionals
from tilt.context.base import ContextModel, MarkovForm, check_strength, digest
from tilt.context.demos import edge_marginals
from tilt.context.generic import (
    check_generic,
    check_pairs,
    chunks,
    generic_token_log_target,
    support_of,
    within_generic_limit,
)
from tilt.policy import Policy
from tilt.space import RolloutSpace

__all__ = ["KernelContext"]


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

    Cost ``O(|supp D| x n_prefixes)``, no rollout-by-demonstration matrix; one pass gives
    ``log Z(c)`` and ``E_c log r_c`` together, remembered on the policy, so the sequence,
    token and forward targets of one policy share it.  Compiled (large inputs), the pass
    folds every chain of only children (``r_c`` kept, and its log taken, only at the root
    and the prefixes with two or more children: :mod:`tilt.context._kernel_tree`).  The
    forward mixture needs every pair: compiled, a population count of shared moves per
    pair and a table of ``exp(gamma j)``; in numpy, one
    ``(n_rollouts x n_moves) @ (n_moves x k)`` product per block of demonstrations.
    """

    name = "kernel"

    def __init__(self, gamma: float) -> None:
        self.strength = self.gamma = check_strength("gamma", gamma)

    def markov_form(self) -> MarkovForm:
        """A sum of ``D``'s edge marginals along the rollout, up to a constant."""
        return MarkovForm(
            "move-sum",
            self.gamma,
            per_prefix_reason="needs the kernel's token target E_c log r_c(hu), one backward "
            "pass per demonstration: no Markov form; use sequence or hybrid SD, the edge "
            "model, or --engine enumerate",
        )

    def describe(self) -> str:
        return f"kernel(gamma={self.gamma:g})"

    def _linear_ok(self, space: RolloutSpace) -> bool:
        """``r_c <= e^(gamma max_depth)`` stays far from overflow."""
        return self.gamma * space.max_depth <= LINEAR_RANGE

    def _blocks(self, policy: Policy, demos: Policy) -> Iterator[tuple[IntArray, FloatArray]]:
        """Yield ``(chunk, log pi(y) + gamma n(y, c))`` of shape (n_rollouts, k)."""
        space = policy.space
        incidence = space.move_incidence()
        for chunk in chunks(support_of(demos), space.n_rollouts):
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
        support = support_of(demos)
        if self._linear_ok(space) and within_generic_limit(space, support.size):
            log_z, _ = _kernel_pass(self.gamma, policy, demos)
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
        _, expected = _kernel_pass(self.gamma, policy, demos)
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
        check_pairs(space, support.size, f"the forward mixture of the {self.describe()} model")
        log_w = demos.log_prob[support] - log_z
        if self._linear_ok(space):
            kernels = kernel_kernels(space.n_rollouts * support.size)
            if kernels is not None:
                return policy.log_prob + kernel_mixture(kernels, self.gamma, space, support, log_w)
        incidence = space.move_incidence()
        return policy.log_prob + log_mixture(self.gamma * incidence, incidence[support], log_w)


def _kernel_pass(gamma: float, policy: Policy, demos: Policy) -> tuple[FloatArray, FloatArray]:
    """``(log Z(c), E_c log r_c(p))``: :func:`tilt.context._pairwise.kernel_pass` for ``D``'s
    support, size-checked, shared and remembered.

    Returns ``log Z(c)`` for ``c`` in the support of ``D`` (in support order) and
    ``sum_c D(c) log r_c(p) / sum_c D(c)`` per prefix, both from one pass: the sequence
    target needs the first, the token target the second, the forward target the first
    again, so the first of them to run pays for all three (the expectation costs the logs
    at the stops, a fraction of the pass; ``n_prefixes`` floats to keep).  Remembered on the
    policy for the latest demonstrations and each ``gamma`` (``compare`` lets it go with the
    row's other arrays, :meth:`~tilt.policy.Policy.release`).  Compiled with the chains of
    only children folded (:func:`tilt.context._kernel_tree.stop_pass`) for inputs the gate
    of :func:`tilt._numerics.jit` admits.
    """
    space = policy.space
    key = f"kernel_pass@{gamma!r}_{digest(demos.log_prob)}"
    hit: tuple[FloatArray, FloatArray] | None = policy.remembered(key)
    if hit is not None:
        return hit
    support = support_of(demos)
    check_generic(space, support.size, f"the kernel(gamma={gamma:g}) model")

    def compute() -> tuple[FloatArray, FloatArray]:
        kernels = kernel_kernels(space.n_prefixes * support.size)
        if kernels is not None:
            return stop_pass(
                kernels,
                gamma,
                space,
                reached_conditionals(space, policy.prefix_log_mass()),
                support,
                demos.prob[support],
            )
        log_z, expected = kernel_pass(
            gamma, space, policy.prefix_log_mass(), support, demos.prob[support], True
        )
        assert expected is not None  # asked for with want_prefixes=True
        return log_z, expected

    value = compute()
    for array in value:
        array.flags.writeable = False
    return policy.memo(key, lambda: value)
