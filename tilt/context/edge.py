"""``edge(gamma)``: token-level copying of the demonstration's next move (an induction head)."""

from __future__ import annotations

import math

import numpy as np

from tilt._numerics import (
    LINEAR_RANGE,
    FloatArray,
    IntArray,
    column_logsumexp,
    jit,
    log_expm1,
    tree_edge_step,
)
from tilt.context._pairwise import log_mixture
from tilt.context.base import ContextModel, MarkovForm, check_strength, digest
from tilt.context.demos import edge_marginals
from tilt.context.generic import TeacherClasses, check_classes, check_pairs, support_of
from tilt.policy import Policy
from tilt.space import RolloutSpace

__all__ = ["EdgeContext"]


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
    token_mean_normalised = True  # each group divided by its sum (or normalised in exact math)

    def __init__(self, gamma: float) -> None:
        self.strength = self.gamma = check_strength("gamma", gamma)

    def markov_form(self) -> MarkovForm:
        """A boost of the demonstration's next move at every prefix: per-state teachers."""
        return MarkovForm("next-move", self.gamma)

    def describe(self) -> str:
        return f"edge(gamma={self.gamma:g})"

    def _log_boost(self, policy: Policy) -> FloatArray:
        """``l(p) = log(1 + (e^gamma - 1) pi(p | h))`` per prefix (entry 0 is 0; cached)."""

        def compute() -> FloatArray:
            out = np.logaddexp(0.0, log_expm1(self.gamma) + policy.log_conditionals())
            out[0] = 0.0
            return out

        return policy.memo(f"edge_boost_{self.gamma!r}", compute)

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
            if jit(space.n_prefixes):  # one pass, the boosts l taken on the way
                return tree_edge_step(
                    space.child_start,
                    space.child_count,
                    space.move,
                    m,
                    policy.log_conditionals(),
                    self.gamma,
                )
            step = np.zeros(space.n_prefixes)
            step[1:] = self.gamma * m[space.move[1:]]
            expected_log_z = space.sibling_sum(_child_values(space, m, self._log_boost(policy)))
            step[1:] -= expected_log_z[space.parent[1:]]
            return step

        return policy.memo(f"edge_step@{self.gamma!r}_{digest(demos.log_prob)}", compute)

    def tilt_score(self, policy: Policy, demos: Policy) -> FloatArray:
        space = policy.space
        return space.path_sum(self._step(policy, demos))[space.rollout_prefix]

    def token_log_target(self, policy: Policy, demos: Policy) -> FloatArray:
        out = policy.log_conditionals() + self._step(policy, demos)
        out[0] = 0.0
        return out

    def teacher_classes(self, policy: Policy, demos: Policy) -> TeacherClasses:
        """Class ``j``: ``next_c(v)`` is the ``j``-th child of ``h`` (mass ``m(v, u_j)``);
        the last class: no boosted move (``v`` not on ``c``, or its next node visited).

        ``log T_j(u | h) = log pi(u | h) + gamma [u = u_j] - l(u_j)``, with the
        boosted entry computed as ``log pi - log(e^-gamma + (1 - e^-gamma) pi)`` so
        that it stays exact at any ``gamma``.  Built block by block on demand
        (:class:`EdgeClasses`): ``O(prefixes)`` memory.
        """
        space = policy.space
        m = edge_marginals(demos)
        move_mass = np.zeros(space.n_prefixes)
        move_mass[1:] = m[space.move[1:]]
        return EdgeClasses(self, policy, move_mass)

    def token_mean_log_target(self, policy: Policy, demos: Policy) -> FloatArray:
        """``log E_c T_c(u | h) = log(pi(u | h) R(h) + m(v, u) s(u))`` in closed form.

        With ``s(u) = 1 - 1 / Z_u`` (``Z_u = 1 + (e^gamma - 1) pi(u | h)``) and
        ``R(h) = 1 - sum over available u of m(v, u) s(u)``: the mass of the
        classes of :meth:`teacher_classes`, summed without forming them.  Each
        group sums to ``R + (1 - R) = 1``; it is divided by its sum as well (in
        log space: minus its log-sum-exp), so that it is normalised to rounding
        even where ``pi``'s own conditionals are not (:attr:`token_mean_normalised`).
        """
        space = policy.space
        m = edge_marginals(demos)
        own = policy.log_conditionals()
        out = np.zeros(space.n_prefixes)  # an only child: every teacher gives it 1
        blocks = [own[children] for _, children in space.sibling_groups_by_size]
        # linear domain where pi(u | h) R(h) cannot underflow (every nonzero conditional
        # above e^-600) and e^gamma - 1 is finite: s(u) = k pi / (1 + k pi), k = e^gamma - 1
        low = min((float(np.min(b, initial=0.0, where=b != -np.inf)) for b in blocks), default=0.0)
        linear = self.gamma <= 700.0 and low > -LINEAR_RANGE
        boost = None if linear else self._log_boost(policy)
        for (_, children), block in zip(space.sibling_groups_by_size, blocks, strict=True):
            if boost is None:
                cond = np.exp(block)
                boosted = math.expm1(self.gamma) * cond
                boosted /= boosted + 1.0
            else:
                boosted = -np.expm1(-boost[children])
            boosted *= m[space.move[children]]  # m(v, u) s(u)
            rest = np.maximum(1.0 - boosted.sum(axis=0), 0.0)  # R(h)
            with np.errstate(divide="ignore"):
                if boost is None:
                    cond *= rest
                    cond += boosted  # sums to R + (1 - R) = 1: divided by its sum, to rounding
                    cond /= cond.sum(axis=0)
                    out[children] = np.log(cond, out=cond)
                else:  # normalised to rounding as well: minus each group's log-sum-exp
                    logs = np.logaddexp(block + np.log(rest), np.log(boosted))
                    out[children] = logs - column_logsumexp(logs)
        return out

    def forward_log_prob(self, policy: Policy, demos: Policy) -> FloatArray:
        space = policy.space
        support = support_of(demos)
        check_pairs(space, support.size, f"the forward mixture of the {self.describe()} model")
        weights = self._step_weights(policy)
        incidence = space.move_incidence()
        return policy.log_prob + log_mixture(weights, incidence[support], demos.log_prob[support])


def _child_values(space: RolloutSpace, m: FloatArray, log_boost: FloatArray) -> FloatArray:
    """``m(move[q]) * l(q)`` per prefix ``q`` (entry 0 is 0)."""
    out = np.zeros(space.n_prefixes)
    out[1:] = m[space.move[1:]] * log_boost[1:]
    return out


class EdgeClasses(TeacherClasses):
    """The teacher classes of ``edge(gamma)``, built per block of sibling groups.

    In a group of ``n`` siblings ``u_0 .. u_{n-1}`` there are ``n + 1`` classes:
    ``next_c(v) = u_j`` (mass ``m(v, u_j)``) and "no boosted move" (the rest).
    """

    def __init__(self, model: EdgeContext, policy: Policy, move_mass: FloatArray) -> None:
        self._model = model
        self._policy = policy
        self._move_mass = move_mass
        self._full: tuple[FloatArray, FloatArray] | None = None

    def _boosted(self, own: FloatArray) -> FloatArray:
        """``log(e^gamma pi / (1 + (e^gamma - 1) pi))`` from ``log pi``, exact at any ``gamma``."""
        gamma = self._model.gamma
        if gamma == 0:
            return own
        with np.errstate(divide="ignore"):
            return own - np.logaddexp(-gamma, np.log1p(-math.exp(-gamma)) + own)

    def group_key(self, children: IntArray) -> FloatArray:
        """The children's own conditionals and demonstration move masses: every class of a
        group is a function of these two (and ``gamma``)."""
        return np.concatenate(
            [self._policy.log_conditionals()[children], self._move_mass[children]]
        )

    def sibling_blocks(self, children: IntArray) -> tuple[FloatArray, FloatArray]:
        own = self._policy.log_conditionals()[children]
        boost = self._model._log_boost(self._policy)[children]
        mass = self._move_mass[children]
        n = children.shape[0]
        weight = np.empty((n + 1, children.shape[1]))
        weight[:n] = mass
        weight[n] = np.maximum(1.0 - mass.sum(axis=0), 0.0)
        log_cond = np.empty((n + 1, *children.shape))
        boosted = self._boosted(own)
        for j in range(n):
            log_cond[j] = own - boost[j]
            log_cond[j, j] = boosted[j]
        log_cond[n] = own
        used = np.flatnonzero(weight.any(axis=1))
        if used.size == n + 1:
            return weight, log_cond
        return weight[used], log_cond[used]

    def _arrays(self) -> tuple[FloatArray, FloatArray]:
        if self._full is None:
            space = self._policy.space
            counts = space.child_count
            branching = int(counts.max(initial=0))
            check_classes(space, branching + 1, f"the teacher classes of {self._model.describe()}")
            weight = np.zeros((branching + 1, space.n_prefixes))
            log_cond = np.zeros((branching + 1, space.n_prefixes))
            for n in np.unique(counts[counts > 0]):
                parents = np.flatnonzero(counts == n)
                children = np.arange(n)[:, None] + space.child_start[parents]
                block_weight = np.zeros((n + 1, parents.size))
                block_weight[:n] = self._move_mass[children]
                block_weight[n] = np.maximum(1.0 - block_weight[:n].sum(axis=0), 0.0)
                own = self._policy.log_conditionals()[children]
                boost = self._model._log_boost(self._policy)[children]
                boosted = self._boosted(own)
                for j in range(n):
                    row = own - boost[j]
                    row[j] = boosted[j]
                    weight[j, children] = block_weight[j]
                    log_cond[j, children] = row
                weight[branching, children] = block_weight[n]
                log_cond[branching, children] = own
            self._full = (weight, log_cond)
        return self._full
