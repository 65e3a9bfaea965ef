"""``edge(gamma)``: token-level copying of the demonstration's next move (an induction head)."""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np

from tilt._numerics import FloatArray, IntArray, column_logsumexp, jit, log_expm1
from tilt.context._pairwise import log_mixture
from tilt.context.base import ContextModel, MarkovForm, boost_gain, check_strength, digest
from tilt.context.demos import edge_log_marginals, edge_marginals
from tilt.context.generic import TeacherClasses, check_classes, check_pairs, support_of
from tilt.policy import Policy
from tilt.space import RolloutSpace

__all__ = ["EdgeContext"]

_MARGINAL_ROUNDING = 4 * 2.0**-52
"""Rounding of a sum of edge marginals, per term: a group's ``1 - sum m`` below it is 0."""

_NONE_DIRECT = 1e-6
"""A group's ``1 - sum m`` below this is summed from the demonstrations (:func:`_log_none`):
its relative rounding, ``n x 2^-52 / (1 - sum m)``, would exceed about 1e-9."""

_LINEAR_GAMMA = 700.0
"""Largest ``gamma`` of the linear-domain token-forward target (``e^gamma`` finite)."""

_LINEAR_FLOOR = 700.0
"""The linear token-forward target keeps every term above ``e^-700`` (float64's normal
numbers end at ``e^-708``)."""


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

    def _gain(self, policy: Policy) -> FloatArray:
        """``k(p) = gamma - l(p)`` per prefix, exact at any ``gamma`` (entry 0 is 0; cached):
        the log-factor the teacher gives the boosted move (:func:`boost_gain`)."""

        def compute() -> FloatArray:
            out = boost_gain(self.gamma, policy.log_conditionals())
            out[0] = 0.0
            return out

        return policy.memo(f"edge_gain_{self.gamma!r}", compute)

    def _step_weights(self, policy: Policy) -> FloatArray:
        """``W[y, e] = log T_c(u | h) - log pi(u | h)`` at the one prefix ``h`` of ``y`` where
        ``e`` is available: ``k`` when ``y`` takes ``e``, ``-l`` when it takes another move.

        ``log T_c(y) = log pi(y) + sum over the moves e of c of W[y, e]``.  Each entry is one
        term (a simple path passes each node once), never ``gamma - l``: no cancellation.
        """
        space = policy.space
        taken = space.move_incidence() > 0
        return np.where(
            taken,
            space.sibling_move_weights(self._gain(policy)),
            -space.sibling_move_weights(self._log_boost(policy)),
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
            # m(p) k(p) minus the other siblings' m l: the same as gamma m(p) - E_c log Z(h) in
            # exact arithmetic, without the difference of two terms near gamma
            space = policy.space
            m = np.zeros(space.n_prefixes)
            m[1:] = edge_marginals(demos)[space.move[1:]]
            step = m * self._gain(policy) - space.other_siblings_sum(m * self._log_boost(policy))
            step[0] = 0.0
            return step

        return policy.memo(f"edge_step@{self.gamma!r}_{_digest_of(demos)}", compute)

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
        return EdgeClasses(self, policy, demos)

    def token_mean_log_target(self, policy: Policy, demos: Policy) -> FloatArray:
        """``log E_c T_c(u | h) = log(pi(u | h) R(h) + m(v, u) s(u))`` in closed form.

        With ``s(u) = 1 - 1 / Z_u`` (``Z_u = 1 + (e^gamma - 1) pi(u | h)``) and
        ``R(h) = 1 - sum over available u of m(v, u) s(u)``, summed as
        ``(1 - sum m) + sum m / Z_u`` (no cancellation when ``s`` rounds to 1): the mass of the
        classes of :meth:`teacher_classes`, summed without forming them.  Each
        group sums to ``R + (1 - R) = 1``; it is divided by its sum as well (in
        log space: minus its log-sum-exp), so that it is normalised to rounding
        even where ``pi``'s own conditionals are not (:attr:`token_mean_normalised`).
        """
        space = policy.space
        log_m = edge_log_marginals(demos)  # the boosted terms: m may underflow, log m not
        own = policy.log_conditionals()
        out = np.zeros(space.n_prefixes)  # an only child: every teacher gives it 1
        compiled = _kernels(space.n_prefixes)
        # linear domain where no term underflows: pi(u | h) R(h) and m / Z_u with every
        # nonzero conditional and marginal above e^(gamma - 700) (R(h) >= e^-gamma: R is
        # (1 - M) + sum m / Z_u, Z_u <= e^gamma), and e^gamma - 1 finite
        if compiled is None:
            blocks = [own[children] for _, children in space.sibling_groups_by_size]
            low = min(
                (float(np.min(b, initial=0.0, where=b != -np.inf)) for b in blocks), default=0.0
            )
        else:  # groups with equal own conditionals and move masses (the classes' key) have
            # equal targets: one group of each class (its first) is computed, the others take
            # its values; the floor is the same over one group of each class
            classes = [
                (children, *_group_classes(compiled, policy, demos, n, children))
                for n, children in space.sibling_groups_by_size
            ]
            distincts = [own[children[:, first]] for children, first, _ in classes]
            low = min(
                (float(np.min(b, initial=0.0, where=b != -np.inf)) for b in distincts),
                default=0.0,
            )
        low = min(low, float(np.min(log_m, initial=0.0, where=log_m != -np.inf)))
        linear = self.gamma <= _LINEAR_GAMMA and low - self.gamma > -_LINEAR_FLOOR
        if compiled is not None and linear:  # group by group, as the blocks below
            for children, first, inverse in classes:
                distinct = children[:, first]
                self._mean_target_groups(compiled, space, demos, own, distinct, out)
                compiled.spread_columns(out, children, distinct, inverse)
                if space.parent[children[0, 0]] == 0:  # the root's group is its class's first
                    # and skips the test of 1 - M (exactly 0 there): the class's other groups
                    # take it on their own
                    rest = np.flatnonzero(inverse == inverse[0])[1:]
                    if rest.size:
                        self._mean_target_groups(
                            compiled, space, demos, own, children[:, rest], out
                        )
            return out
        if compiled is not None:
            blocks = [own[children] for _, children in space.sibling_groups_by_size]
        boost = None if linear else self._log_boost(policy)
        for (_, children), block in zip(space.sibling_groups_by_size, blocks, strict=True):
            out[children] = self._mean_block(space, demos, children, block, boost)
        return out

    def _mean_target_groups(
        self,
        compiled: ModuleType,
        space: RolloutSpace,
        demos: Policy,
        own: FloatArray,
        groups: IntArray,
        out: FloatArray,
    ) -> None:
        """The compiled linear-domain :meth:`token_mean_log_target` of the sibling groups
        ``groups`` (n, G), into ``out``; the groups whose ``1 - M`` lost its digits from
        numpy's blocks, summed from the demonstrations."""
        near = compiled.edge_mean_target(
            np.ascontiguousarray(groups[0]),
            groups.shape[0],
            space.move,
            own,
            edge_marginals(demos),
            math.expm1(self.gamma),
            _MARGINAL_ROUNDING,
            _NONE_DIRECT,
            space.parent,
            out,
        )
        if near.size:  # 1 - M lost its digits there: numpy's blocks
            lost = groups[:, near]
            out[lost] = self._mean_block(space, demos, lost, own[lost], None)

    def _mean_block(
        self,
        space: RolloutSpace,
        demos: Policy,
        children: IntArray,
        block: FloatArray,
        boost: FloatArray | None,
    ) -> FloatArray:
        """:meth:`token_mean_log_target` of the sibling groups ``children`` (n, G) with own
        log-conditionals ``block``: in the linear domain, or in logs given the boosts."""
        m = edge_marginals(demos)
        mass = m[space.move[children]]
        # R(h) = (1 - sum m) + sum m / Z_u: the "no boosted move" classes plus what each
        # boosting teacher leaves the other moves, summed as terms (1 - sum m s cancelled
        # to 0 once s rounded to 1, e^-50 at gamma = 50, giving log q = -inf)
        # 1 - M is the demonstrations whose next move from v is not available; M sums
        # marginals that add to 1 in exact arithmetic when every demonstration through v
        # can go on: a rounding residue (a few ulps) is 0, not a class of mass 1e-16
        # (it outweighed m / Z_u = e^-50 at gamma = 50: 13 nats off)
        none = 1.0 - mass.sum(axis=0)
        none[none <= _MARGINAL_ROUNDING * mass.shape[0]] = 0.0
        with np.errstate(divide="ignore"):
            log_none = np.log(none)
        # at the root every demonstration's first move is available: none is exactly 0
        near = np.flatnonzero((none < _NONE_DIRECT) & (space.parent[children[0]] != 0))
        if near.size:  # 1 - M has lost its digits there: sum the demonstrations instead
            log_none[near] = _log_none(space, demos, children[:, near])
            none[near] = np.exp(log_none[near])
        with np.errstate(divide="ignore"):
            if boost is None:
                cond = np.exp(block)
                lift = math.expm1(self.gamma) * cond  # Z_u - 1
                inverse_z = 1.0 / (1.0 + lift)  # 1 / Z_u
                boosted = mass * lift * inverse_z  # m(v, u) s(u), s = 1 - 1 / Z_u
                cond *= none + (mass * inverse_z).sum(axis=0)
                cond += boosted  # sums to R + (1 - R) = 1: divided by its sum, to rounding
                cond /= cond.sum(axis=0)
                return np.log(cond, out=cond)
            # all in logs (1 / Z_u = e^-1000 at gamma = 1000); minus each log-sum-exp
            log_mass = edge_log_marginals(demos)[space.move[children]]
            log_z = boost[children]
            log_rest = np.logaddexp(log_none, np.logaddexp.reduce(log_mass - log_z, axis=0))
            logs = np.logaddexp(block + log_rest, log_mass + np.log(-np.expm1(-log_z)))
            return logs - column_logsumexp(logs)

    def forward_log_prob(self, policy: Policy, demos: Policy) -> FloatArray:
        space = policy.space
        support = support_of(demos)
        check_pairs(space, support.size, f"the forward mixture of the {self.describe()} model")
        weights = self._step_weights(policy)
        incidence = space.move_incidence()
        return policy.log_prob + log_mixture(weights, incidence[support], demos.log_prob[support])


def _kernels(size: int) -> ModuleType | None:
    """:mod:`tilt.context._compiled` when the compiled kernels serve ``size`` prefixes
    (:func:`tilt._numerics.jit`), else ``None`` (the numpy paths)."""
    if not jit(size):
        return None
    import tilt.context._compiled as compiled

    return compiled


def _group_classes(
    compiled: ModuleType, policy: Policy, demos: Policy, n: int, children: IntArray
) -> tuple[IntArray, IntArray]:
    """``(first, inverse)`` of the groups of ``n`` siblings ``children`` (n, G) whose own
    conditionals and demonstration move masses are equal (the key of every teacher class of
    ``edge``, whatever ``gamma``): one compiled pass, without the gathered key, remembered
    on ``policy`` for these demonstrations (on grid6, 130 classes of two and 62 of three for
    4.84 M groups; 39 MB of ``inverse``)."""

    def search() -> tuple[IntArray, IntArray]:
        space = policy.space
        return compiled.distinct_groups(
            policy.log_conditionals(), edge_marginals(demos), space.move, children
        )

    found: tuple[IntArray, IntArray] = policy.memo(f"edge-groups-{n}@{_digest_of(demos)}", search)
    return found


def _digest_of(demos: Policy) -> str:
    """:func:`~tilt.context.base.digest` of the demonstrations' log-probabilities, remembered
    on them (each row that asks for the step would hash 5 M rollouts again on grid6)."""
    return demos.memo("digest", lambda: digest(demos.log_prob))


def _log_none(space: RolloutSpace, demos: Policy, children: IntArray) -> FloatArray:
    """``log`` of the mass of the demonstrations whose next move from ``v`` is not available
    at ``h`` (``v`` not on ``c``, or its next node visited), summed over the demonstrations
    themselves: for the groups (columns of ``children``) where ``1 - sum m`` lost its digits.

    Cost ``O(|supp D| x depth)`` per distinct node and set of available moves.
    """
    support = support_of(demos)
    paths = space.paths(support)
    log_d = demos.log_prob[support]
    rows = np.arange(support.size)
    parents = space.parent[children[0]]
    out = np.empty(children.shape[1])
    known: dict[tuple[int, ...], float] = {}
    for column, parent in enumerate(parents.tolist()):
        v = int(space.node[parent])
        avail = space.node[children[:, column]]
        key = (v, *sorted(avail.tolist()))
        if key not in known:
            here = paths == v
            on = here.any(axis=1)
            after = np.minimum(np.argmax(here, axis=1) + 1, paths.shape[1] - 1)
            nxt = np.where(on, paths[rows, after], -1)
            boosts = on & np.isin(nxt, avail) & (nxt >= 0)
            known[key] = float(np.logaddexp.reduce(log_d[~boosts], initial=-np.inf))
        out[column] = known[key]
    return out


class EdgeClasses(TeacherClasses):
    """The teacher classes of ``edge(gamma)``, built per block of sibling groups.

    In a group of ``n`` siblings ``u_0 .. u_{n-1}`` there are ``n + 1`` classes:
    ``next_c(v) = u_j`` (mass ``m(v, u_j)``) and "no boosted move" (the rest).
    """

    def __init__(self, model: EdgeContext, policy: Policy, demos: Policy) -> None:
        self._model = model
        self._policy = policy
        self._demos = demos
        self._marginal = edge_marginals(demos)  # m(v, u) per move
        self._per_prefix: FloatArray | None = None
        self._full: tuple[FloatArray, FloatArray] | None = None

    @property
    def _move_mass(self) -> FloatArray:
        """``m`` of each prefix's last move (0 at the root), per prefix: built on first use
        (148 MB and 0.1 s on grid6, which the compiled JSD path does without)."""
        if self._per_prefix is None:
            space = self._policy.space
            move_mass = np.zeros(space.n_prefixes)
            move_mass[1:] = self._marginal[space.move[1:]]
            self._per_prefix = move_mass
        return self._per_prefix

    def _boosted(self, own: FloatArray) -> FloatArray:
        """``log(e^gamma pi / (1 + (e^gamma - 1) pi))`` from ``log pi``, exact at any ``gamma``."""
        return own + boost_gain(self._model.gamma, own)

    def group_key(self, children: IntArray) -> FloatArray:
        """The children's own conditionals and demonstration move masses: every class of a
        group is a function of these two (and ``gamma``)."""
        return np.concatenate(
            [self._policy.log_conditionals()[children], self._move_mass[children]]
        )

    def group_key_rows(self) -> tuple[FloatArray, ...]:
        """The own conditionals and the demonstration move masses, per prefix."""
        return self._policy.log_conditionals(), self._move_mass

    def group_classes(self, n: int, children: IntArray) -> tuple[IntArray, IntArray] | None:
        """The classes of equal own conditionals and move masses among the groups of ``n``
        siblings (``children``, as ``space.sibling_groups_by_size`` gives them), from the
        compiled search, remembered on the policy (the token-forward target and ``jsd``
        share them); ``None`` when the kernels do not serve the space."""
        compiled = _kernels(self._policy.space.n_prefixes)
        if compiled is None:
            return None
        return _group_classes(compiled, self._policy, self._demos, n, children)

    def sibling_blocks(self, children: IntArray) -> tuple[FloatArray, FloatArray]:
        own = self._policy.log_conditionals()[children]
        boost = self._model._log_boost(self._policy)[children]
        mass = self._marginal[self._policy.space.move[children]]
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
