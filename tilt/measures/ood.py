"""Out-of-distribution success when one edge is blocked: two readings.

Block one edge ``e`` that some correct rollout uses (``docs/theory.md``,
"Observables of the paper").  On an undirected graph (stored as a symmetric
directed graph: every move ``v -> w`` has its reverse) an edge is both moves
``v -> w`` and ``w -> v``; on a directed graph it is the single move.

* **blocked = fail**: the rollouts that traverse ``e`` now fail; the policy is
  not allowed to adapt.  Success is the correct mass avoiding ``e``,
  ``q(C without e)``.
* **re-route**: the same policy run on the graph without ``e``: wherever ``e``
  was available at a prefix ``h`` ending in ``v``,
  ``q_e(u | h) = q(u | h) / (1 - q(w | h))``; a prefix whose only move was
  ``e`` (``q(w | h) = 1``) becomes a failed dead end.  Success is the accuracy
  ``q_e(C_e)`` of the re-routed policy on the new task.

``ood_pass@k(e) = 1 - (1 - success(e))^k``; :func:`ood_pass_at_k` reports its
mean and worst case over every blocked edge.

Both readings for *every* edge come from one pass over the prefix tree.  For
re-route, a simple path visits ``v`` and ``w`` at most once each, and once it
has visited one end of the edge, the move back to it is never available again:
a correct rollout avoiding ``e`` meets at most one prefix where ``e`` was
available, so its re-routed probability is ``q(y) / (1 - q(w | h))`` for that
one prefix ``h`` (or ``q(y)``).  Summing by prefix:

    q_e(C_e) = q(C without e) + sum over prefixes h where a move m of e is available of
               M(h without m) * q(m | h) / (1 - q(m | h))

where ``M(h without m)`` is the correct mass below ``h`` through its other
children.  Both sums are computed without cancellation (the other children's
masses are added, not subtracted).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from tilt._checks import check_k
from tilt._numerics import (
    FloatArray,
    IntArray,
    jit,
    linear_shift,
    others_sum,
    tree_reroute_kept,
    tree_subtree_sum,
)
from tilt.policy import Policy
from tilt.space import RolloutSpace

__all__ = [
    "READINGS",
    "READING_LABELS",
    "BlockedEdges",
    "OODPass",
    "blocked_edges",
    "ood_success",
    "ood_pass_at_k",
    "ood_pass_at_ks",
]

READINGS = ("fail", "reroute")
"""Names of the two readings."""

READING_LABELS = {"fail": "blocked = fail", "reroute": "re-route"}
"""How each reading is labelled in tables and figures."""


@dataclass(frozen=True, eq=False)
class BlockedEdges:
    """The edges blocked in turn, and the moves each one removes.

    Attributes
    ----------
    move_unit : ndarray of int64, shape (n_moves,)
        Index of the blocked edge each move belongs to, ``-1`` for moves of
        edges no correct rollout uses.
    labels : tuple of str
        ``'v>w'`` for a directed move, ``'v-w'`` for an undirected edge.
    undirected : bool
        Whether both directions of each edge are blocked together.
    """

    move_unit: IntArray
    labels: tuple[str, ...]
    undirected: bool
    _prefix_units: NDArray[np.int32] | None = field(default=None, repr=False)
    _group_units: tuple[NDArray[np.int32], ...] | None = field(default=None, repr=False)
    _correct_tree: _CorrectTree | None = field(default=None, repr=False)
    _narrow_units: NDArray[np.int16] | None = field(default=None, repr=False)

    @property
    def n_edges(self) -> int:
        """How many edges are blocked in turn."""
        return len(self.labels)

    def prefix_units(self, space: RolloutSpace) -> NDArray[np.int32]:
        """Per prefix ``p > 0`` of ``space`` (the space these edges were built for), the
        blocked edge its last move belongs to, or ``n_edges`` (a sink bin) for none;
        remembered."""
        if self._prefix_units is None:
            object.__setattr__(self, "_prefix_units", self._with_sink(space.move[1:]))
        assert self._prefix_units is not None
        return self._prefix_units

    def group_units(self, space: RolloutSpace) -> tuple[NDArray[np.int32], ...]:
        """Per block of ``space.sibling_groups_by_size``, as :meth:`prefix_units` for each
        child, same shape; remembered."""
        if self._group_units is None:
            units = tuple(
                self._with_sink(space.move[children])
                for _, children in space.sibling_groups_by_size
            )
            object.__setattr__(self, "_group_units", units)
        assert self._group_units is not None
        return self._group_units

    def correct_tree(self, space: RolloutSpace) -> _CorrectTree:
        """The part of ``space``'s prefix tree that the compiled OOD pass reads
        (:class:`_CorrectTree`); built once, shared by every policy."""
        if self._correct_tree is None:
            has_correct = space.subtree_sum(space.correct.astype(np.float64)) > 0
            object.__setattr__(self, "_correct_tree", _correct_tree(space, has_correct))
        assert self._correct_tree is not None
        return self._correct_tree

    def _with_sink(self, moves: NDArray[np.int32]) -> NDArray[np.int32]:
        unit = self.move_unit.astype(np.int32)[moves]  # an edge per move: far below 2^31
        unit[unit < 0] = self.n_edges
        return unit

    def narrow_prefix_units(self, space: RolloutSpace) -> NDArray[np.int16] | NDArray[np.int32]:
        """:meth:`prefix_units` in 16 bits when the edges fit (half the memory: 37 MB on
        grid6); for the compiled pass, which holds it beside its per-prefix arrays."""
        if self.n_edges >= np.iinfo(np.int16).max:
            return self.prefix_units(space)
        if self._narrow_units is None:
            if self._prefix_units is not None:
                narrow = self._prefix_units.astype(np.int16)
            else:
                narrow = self.move_unit.astype(np.int16)[space.move[1:]]
                narrow[narrow < 0] = self.n_edges
            object.__setattr__(self, "_narrow_units", narrow)
        assert self._narrow_units is not None
        return self._narrow_units

    def per_edge(self, units: NDArray[np.int32], weights: FloatArray) -> FloatArray:
        """Sum ``weights`` by blocked edge (``units`` from :meth:`prefix_units` or
        :meth:`group_units`), shape (n_edges,)."""
        total = np.bincount(units.ravel(), weights.ravel(), minlength=self.n_edges + 1)
        return total[:-1].astype(np.float64, copy=False)


@dataclass(frozen=True, eq=False)
class _CorrectTree:
    """The prefixes whose parent has correct rollouts below it, and the root.

    The OOD pass needs nothing else (but the weights of the kept prefixes): a prefix
    with no correct rollout below has correct mass 0, so its children add nothing to
    the flows, and a sibling group whose parent has no correct mass below gains
    nothing (every ``M(h without m)`` is 0).  On grid6 these are 6.7 M of the 18.5 M
    prefixes.  The kept prefixes, in prefix order, form a tree of their own (a kept
    prefix with correct mass below keeps all its children, which are contiguous);
    every other kept prefix is one of its leaves.  The pass over it adds the same
    numbers in the same order as the pass over the whole tree, less its zeros.

    The kept prefixes' children blocks follow each other in the order of their parents
    from the second kept prefix on, so the tree is stored as its child counts alone.

    Attributes
    ----------
    prefixes : ndarray of int32
        The kept prefixes (original indices), increasing; ``prefixes[0] = 0``.
    child_count : ndarray of uint8 (int64 past 255 children)
        Per kept prefix, its number of children (0 also for a prefix with no correct
        rollout below: a leaf of this tree).
    leaf_of_correct : ndarray of int32
        Per correct rollout (in ``space.correct_rollouts`` order), its place among the
        leaves of this tree.
    n_leaves : int
    """

    prefixes: NDArray[np.int32]
    child_count: NDArray[np.uint8] | IntArray
    leaf_of_correct: NDArray[np.int32]
    n_leaves: int


def _correct_tree(space: RolloutSpace, has_correct: NDArray[np.bool_]) -> _CorrectTree:
    keep = np.empty(space.n_prefixes, dtype=bool)
    keep[0] = True
    np.take(has_correct, space.parent[1:], out=keep[1:])
    prefixes = np.flatnonzero(keep).astype(np.int32)  # prefixes: far below 2^31
    del keep
    count = space.child_count[prefixes]
    count[~has_correct[prefixes]] = 0
    correct_end = np.zeros(space.n_prefixes, dtype=bool)
    correct_end[space.rollout_prefix[space.correct_rollouts]] = True
    leaves = prefixes[count == 0]
    leaf_of_correct = np.flatnonzero(correct_end[leaves]).astype(np.int32)  # both in prefix order
    counts: NDArray[np.uint8] | IntArray = count
    if space.child_count.max() <= np.iinfo(np.uint8).max:
        counts = count.astype(np.uint8)
    return _CorrectTree(prefixes, counts, leaf_of_correct, leaves.size)


_BLOCKED: weakref.WeakKeyDictionary[RolloutSpace, BlockedEdges] = weakref.WeakKeyDictionary()


def _is_symmetric(space: RolloutSpace) -> bool:
    forward = set(zip(space.move_tail.tolist(), space.move_head.tolist(), strict=True))
    return all((w, v) in forward for v, w in forward)


def blocked_edges(space: RolloutSpace) -> BlockedEdges:
    """The edges that some correct rollout uses, each blocked in turn.

    Both directions of an edge are one unit when the graph is symmetric (every
    move has its reverse: an undirected graph); otherwise each move is one unit.
    Computed once per space.
    """
    cached = _BLOCKED.get(space)
    if cached is not None:
        return cached
    used_flow = space.subtree_sum(space.correct.astype(np.float64))
    used = np.zeros(space.n_moves, dtype=bool)
    used[space.move[1:][used_flow[1:] > 0]] = True
    undirected = _is_symmetric(space)
    unit = np.full(space.n_moves, -1, dtype=np.int64)
    labels: list[str] = []
    if undirected:
        index = {
            (int(v), int(w)): m
            for m, (v, w) in enumerate(zip(space.move_tail, space.move_head, strict=True))
        }
        for m in np.flatnonzero(used):
            if unit[m] >= 0:
                continue
            v, w = int(space.move_tail[m]), int(space.move_head[m])
            a, b = (v, w) if v < w else (w, v)
            unit[index[(a, b)]] = unit[index[(b, a)]] = len(labels)
            labels.append(f"{space.labels[a]}-{space.labels[b]}")
    else:
        for m in np.flatnonzero(used):
            unit[m] = len(labels)
            labels.append(space.move_label(int(m)))
    out = BlockedEdges(unit, tuple(labels), undirected)
    if jit(space.n_prefixes):  # the OOD pass's tree, while the correct prefixes are at hand
        has_correct = used_flow > 0
        del used_flow
        object.__setattr__(out, "_correct_tree", _correct_tree(space, has_correct))
    _BLOCKED[space] = out
    return out


def _failure_and_success(policy: Policy, reading: str) -> tuple[FloatArray, FloatArray]:
    """``(1 - success(e), success(e))`` for every blocked edge, shape (n_edges,) each.

    Asking for ``reroute`` remembers ``fail`` too (it is a term of it): one pass
    over the prefix tree serves both readings.
    """
    if reading not in READINGS:
        raise ValueError(f"unknown OOD reading {reading!r}: choose one of {', '.join(READINGS)}")
    known = policy.remembered(f"ood-{reading}")
    if known is not None:
        return known
    space = policy.space
    edges = blocked_edges(space)
    if jit(space.n_prefixes):  # both readings in one compiled pass
        flow, bonus = _compiled_pass(policy, edges)
    else:
        correct_mass = space.subtree_sum(np.exp(policy.correct_log_prob()), space.correct_rollouts)
        flow = edges.per_edge(edges.prefix_units(space), correct_mass[1:])
    fail = np.minimum(policy.incorrect_mass + flow, 1.0)
    success = np.maximum(policy.accuracy - flow, 0.0)
    policy.memo("ood-fail", lambda: (fail, success))
    if reading == "fail":
        return fail, success
    if jit(space.n_prefixes):
        rerouted = (np.clip(fail - bonus, 0.0, 1.0), np.clip(success + bonus, 0.0, 1.0))
        return policy.memo("ood-reroute", lambda: rerouted)
    # only a prefix with siblings gains: an only child's move leaves its parent a dead end
    log_cond = policy.log_conditionals()
    bonus = np.zeros(edges.n_edges)
    blocks = zip(space.sibling_groups_by_size, edges.group_units(space), strict=True)
    for (_, children), units in blocks:
        cond = np.exp(log_cond[children])
        others = others_sum(cond)  # 1 - q(m | h), without cancellation
        gain = others_sum(correct_mass[children])  # M(h without m)
        gain *= cond
        dead = others <= 0  # every other move has q = 0: no mass to re-route
        np.divide(gain, others, out=gain, where=~dead)
        gain[dead] = 0.0
        bonus += edges.per_edge(units, gain)
    rerouted = (np.clip(fail - bonus, 0.0, 1.0), np.clip(success + bonus, 0.0, 1.0))
    return policy.memo("ood-reroute", lambda: rerouted)


def _compiled_pass(policy: Policy, edges: BlockedEdges) -> tuple[FloatArray, FloatArray]:
    """``(flow, bonus)`` per blocked edge from one compiled bottom-up pass.

    The pass runs over the prefixes below correct mass and their children
    (:class:`_CorrectTree`).  The moves of a sibling group weigh their conditionals where
    the policy keeps them (a softmax), else the masses below them (one compiled subtree
    sum over the whole tree first), summed in the linear domain when every rollout's
    log-probability lies within ``LINEAR_RANGE`` of the largest (no term underflows), else
    the conditionals recomputed in log space.
    """
    space = policy.space
    tree = edges.correct_tree(space)
    correct_leaf = np.zeros(tree.n_leaves)
    correct_leaf[tree.leaf_of_correct] = np.exp(policy.correct_log_prob())
    log_cond = policy.remembered("log-conditionals")
    by_prefix = False
    if log_cond is not None:
        weight = log_cond[tree.prefixes]
        np.exp(weight, out=weight)
    else:
        top = linear_shift(policy.log_prob)
        if top is None:
            weight = np.exp(policy.log_conditionals()[tree.prefixes])
        else:  # the total mass below every prefix
            total_leaf = np.exp(policy.log_prob - top)
            weight = tree_subtree_sum(space.child_start, space.child_count, total_leaf)
            del total_leaf
            by_prefix = True
    flow, bonus = tree_reroute_kept(
        tree.child_count,
        tree.prefixes,
        correct_leaf,
        edges.narrow_prefix_units(space),
        edges.n_edges + 1,  # the last unit: the sink of moves no correct rollout uses
        weight,
        by_prefix,
    )
    return flow[:-1], bonus[:-1]


def ood_success(policy: Policy, reading: str = "reroute") -> FloatArray:
    """Success probability with each blocked edge removed, one value per edge.

    ``reading='fail'``: ``q(C without e)``; ``reading='reroute'``: the accuracy
    of the re-routed policy (module docstring).  Order as
    ``blocked_edges(policy.space).labels``.

    Notes
    -----
    One pass over the prefix tree for every edge at once: ``O(n_prefixes x
    max out-degree)`` time, no re-enumeration.  Agrees with rebuilding the
    graph without ``e`` and enumerating it (``tests/test_ood.py``) to 1e-12.
    """
    return _failure_and_success(policy, reading)[1].copy()


@dataclass(frozen=True)
class OODPass:
    """Out-of-distribution ``pass@k`` over single blocked edges, in one reading.

    Attributes
    ----------
    k : int
    reading : str
        ``'fail'`` or ``'reroute'``.
    mean, worst : float
        Mean and minimum of ``1 - (1 - success(e))^k`` over the blocked edges.
    worst_move : str
        The edge of the worst case (``'v>w'`` directed, ``'v-w'`` undirected).
    n_moves : int
        How many edges were blocked in turn.
    """

    k: int
    mean: float
    worst: float
    worst_move: str
    n_moves: int
    reading: str = "fail"


WORST_TIE = 1e-12
"""Edges whose ``ood_pass@k`` lies within this of the least are tied for the worst case: the
first of them (in the order of the labels) is named, with the least value, so that the name
does not depend on rounding (on a symmetric graph mirror-image edges have equal values up to
the last bits, which differ between summation orders, with and without compiled kernels)."""


def _first_worst(values: FloatArray) -> int:
    """The first index whose value is within ``WORST_TIE`` of the least (0 when empty)."""
    if values.size == 0:
        return 0
    return int(np.argmax(values <= values.min() + WORST_TIE))


def ood_pass_at_ks(policy: Policy, ks: Sequence[int], reading: str = "fail") -> list[OODPass]:
    """:func:`ood_pass_at_k` for several ``k`` from one pass over the prefix tree."""
    ks = [check_k(k) for k in ks]
    fail, _ = _failure_and_success(policy, reading)
    labels = blocked_edges(policy.space).labels
    with np.errstate(divide="ignore"):
        log_fail = np.log(fail)
    out = []
    for k in ks:
        values: NDArray[np.float64] = 0.0 - np.expm1(k * log_fail)  # 0.0, not -0.0, at fail = 1
        worst = _first_worst(values)
        out.append(
            OODPass(
                k,
                float(values.mean()) if values.size else math.nan,
                float(values.min()) if values.size else math.nan,
                labels[worst] if values.size else "",
                int(values.size),
                reading,
            )
        )
    return out


def ood_pass_at_k(policy: Policy, k: int, reading: str = "fail") -> OODPass:
    """Mean and worst ``1 - (1 - success(e))^k`` over the edges ``e`` some correct rollout uses.

    ``reading='fail'`` (blocked = fail: rollouts through ``e`` fail) or
    ``'reroute'`` (the policy renormalised on the graph without ``e``).  On an
    undirected graph both directions of ``e`` are blocked.

    Examples
    --------
    >>> from tilt.tasks import named_task
    >>> from tilt.space import enumerate_rollouts
    >>> from tilt.policy import base_policy
    >>> pi0 = base_policy(enumerate_rollouts(named_task("routes")))
    >>> fail, reroute = ood_pass_at_k(pi0, 1), ood_pass_at_k(pi0, 1, "reroute")
    >>> fail.worst_move, round(fail.worst, 4), reroute.worst_move, round(reroute.worst, 4)
    ('s>a0', 0.0919, 'a0up>a1', 0.3483)
    """
    return ood_pass_at_ks(policy, [k], reading)[0]
