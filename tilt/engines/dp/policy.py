"""Markov policies on an acyclic space: one conditional per state edge.

A :class:`MarkovPolicy` is ``log q(u | s)`` for every state edge; the mass of
a rollout is the product along its path.  Reach probabilities, the probability
of ending correct from each state, and edge flows are one pass each
(:mod:`tilt.engines.dp.passes`).  The base policy is the edge softmax of
``docs/theory.md``; demonstrations (``own``, ``uniform``, ``tempered``) are
Markov too: the path measure ``pi(y)^alpha r(y)`` has the conditionals of a
backward pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar

import numpy as np

from tilt._numerics import FloatArray
from tilt.context.demos import DEMOS
from tilt.engines.dp.passes import (
    LinearWeights,
    backward_logsumexp,
    forward_logsumexp,
    kernels,
    linear_weights,
    softmax_conditionals,
    tilted_conditionals,
)
from tilt.engines.dp.space import AcyclicSpace
from tilt.policy import as_generator

_T = TypeVar("_T")

__all__ = [
    "MarkovPolicy",
    "edge_softmax",
    "with_prob",
    "base_policy",
    "demonstrations",
    "Demos",
    "reference_edges",
    "point_mass",
    "edge_marginals",
    "log_rollout_count",
    "log_rollout_counts",
]


@dataclass(frozen=True, eq=False)
class MarkovPolicy:
    """A distribution over the rollouts of an acyclic space, by its conditionals.

    Attributes
    ----------
    space : AcyclicSpace
    log_cond : ndarray of float64, shape (n_edges,)
        ``log q(head | tail)``, a distribution over the edges of every state.
    """

    space: AcyclicSpace
    log_cond: FloatArray
    _memo: dict[str, object] = field(default_factory=dict, init=False, repr=False)

    @cached_property
    def prob(self) -> FloatArray:
        """``q(head | tail)`` per edge (the one exponential of the conditionals)."""
        return np.exp(self.log_cond)

    @cached_property
    def linear(self) -> LinearWeights:
        """The conditionals ready for the linear-domain passes (:mod:`tilt.engines.dp.passes`)."""
        return linear_weights(self.space, self.log_cond, self.prob)

    @cached_property
    def log_reach(self) -> FloatArray:
        """``log q(reach s)`` per state (forward pass)."""
        return forward_logsumexp(self.space, self.linear, compiled=True)

    @cached_property
    def log_correct_below(self) -> FloatArray:
        """``log q(correct | s)`` per state (backward pass)."""
        leaf = np.where(self.space.correct, 0.0, -np.inf)
        return backward_logsumexp(self.space, self.linear, leaf)

    @cached_property
    def log_incorrect_below(self) -> FloatArray:
        """``log q(incorrect | s)`` per state, summed directly (no ``1 - x``)."""
        leaf = np.where(self.space.leaf & ~self.space.correct, 0.0, -np.inf)
        return backward_logsumexp(self.space, self.linear, leaf)

    @property
    def accuracy(self) -> float:
        """``q(C)``."""
        return math.exp(self.log_correct_below[0])

    @property
    def incorrect_mass(self) -> float:
        """``q(Y without C)``."""
        return math.exp(self.log_incorrect_below[0])

    @cached_property
    def correct_cond(self) -> FloatArray:
        """Conditionals of ``q(. | C)``: ``log q(e) + B(head) - B(tail)``, ``B = log q(C | s)``.

        ``B(tail)`` is the ``log sum exp`` of the numerators over the state's edges,
        so no pass and no renormalisation is needed; a state with no correct mass
        below keeps ``q``'s conditionals.
        """
        space = self.space
        below = self.log_correct_below
        compiled = kernels(space)
        if compiled is not None:  # the same operations: the same bits
            out: FloatArray = compiled.correct_cond(
                space.out_start, space.edge_head, self.log_cond, below
            )
            return out
        norm = below[space.edge_tail]
        with np.errstate(invalid="ignore"):
            out = self.log_cond + below[space.edge_head] - norm
        dead = np.isneginf(norm)
        out[dead] = self.log_cond[dead]
        out[np.isnan(out)] = -np.inf
        return out

    @cached_property
    def correct_prob(self) -> FloatArray:
        """``exp(correct_cond)``: the conditionals of ``q(. | C)`` themselves."""
        return np.exp(self.correct_cond)

    @cached_property
    def log_correct_reach(self) -> FloatArray:
        """``log q(reach s | C) = log q(reach s) + B(s) - B(source)`` per state."""
        with np.errstate(invalid="ignore"):
            out = self.log_reach + self.log_correct_below - self.log_correct_below[0]
        out[np.isnan(out)] = -np.inf
        return out

    @cached_property
    def exact_correct_reach(self) -> FloatArray:
        """:attr:`log_correct_reach` with numpy's digits (:attr:`log_reach` may come from the
        compiled pass): the reach of the demonstrations drawn from this policy, which feeds
        the edge marginals and so SD's conditionals and the beta matched to SD's accuracy."""
        if kernels(self.space) is None:
            return self.log_correct_reach
        reach = forward_logsumexp(self.space, self.linear)
        with np.errstate(invalid="ignore"):
            out = reach + self.log_correct_below - self.log_correct_below[0]
        out[np.isnan(out)] = -np.inf
        return out

    @cached_property
    def log_edge_flow(self) -> FloatArray:
        """``log q(paths through e)`` per state edge."""
        return self.log_reach[self.space.edge_tail] + self.log_cond

    @cached_property
    def log_correct_flow(self) -> FloatArray:
        """``log q(correct paths through e)`` per state edge."""
        space = self.space
        with np.errstate(invalid="ignore"):
            out = self.log_edge_flow + self.log_correct_below[space.edge_head]
        return np.where(np.isnan(out), -np.inf, out)

    def release(self, *names: str) -> None:
        """Drop remembered quantities (cached properties or memo keys; all when none is
        named) to free their memory; they are recomputed on demand."""
        for name in names or (*self.__dict__.keys(), *self._memo.keys()):
            if name in ("space", "log_cond", "_memo"):
                continue
            self.__dict__.pop(name, None)
            self._memo.pop(name, None)

    def memo(self, key: str, compute: Callable[[], _T]) -> _T:
        """``compute()`` remembered under ``key`` for this policy."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]  # type: ignore[return-value]


def edge_softmax(space: AcyclicSpace, move_logit: FloatArray) -> MarkovPolicy:
    """``pi(u | s) = exp(theta(v, u)) / sum over the moves of v of exp(theta)``."""
    move_logit = np.asarray(move_logit, dtype=np.float64)
    if move_logit.shape != (space.n_moves,):
        raise ValueError(f"expected {space.n_moves} move logits, got shape {move_logit.shape}")
    if not np.isfinite(move_logit).all():
        raise ValueError("move logits must be finite")
    cond, prob = softmax_conditionals(space, move_logit, index=space.edge_move)
    return with_prob(MarkovPolicy(space, cond), prob)


def with_prob(policy: MarkovPolicy, prob: FloatArray | None) -> MarkovPolicy:
    """``policy`` with ``prob`` (``exp`` of its conditionals, when computed) remembered."""
    if prob is not None:
        policy.__dict__["prob"] = prob  # the cached_property's slot
    return policy


def base_policy(
    space: AcyclicSpace,
    kind: str = "default",
    seed: int | np.random.Generator | None = None,
    scale: float = 1.0,
) -> MarkovPolicy:
    """The base ``pi0`` of :func:`tilt.policy.base_policy` (same names, same random draws)."""
    if kind == "default":
        return edge_softmax(space, space.moves.move_logit)
    if kind == "uniform":
        return edge_softmax(space, np.zeros(space.n_moves))
    if kind == "random":
        if not np.isfinite(scale) or scale < 0:
            raise ValueError(f"random base scale must be finite and >= 0, got {scale!r}")
        rng = as_generator(seed)
        return edge_softmax(space, rng.normal(0.0, scale, size=space.n_moves))
    raise ValueError(f"unknown base {kind!r}: choose one of default, uniform, random")


Demos = str | MarkovPolicy
"""A demonstration kind (``own``, ``uniform``, ``tempered``) or a fixed :func:`point_mass`."""

_TIE = 1e-12
"""Log-probabilities this close count as a tie when picking the reference (as
:func:`tilt.context.reference_rollout`)."""


def reference_edges(base: MarkovPolicy, path: str | None = None) -> np.ndarray:
    """The state edges of the reference demonstration: ``path`` (node labels joined by
    ``>``) or the base's likeliest correct rollout, ties within ``1e-12`` in log space
    going to the smallest path string (:func:`tilt.context.reference_rollout`'s rule).

    The likeliest rollouts are followed greedily: from each state, the moves that can
    still end within the tie of the best correct rollout (a max-plus pass), the one
    whose label (with ``>`` unless it ends the path) is smallest.

    Raises
    ------
    ValueError
        If ``path`` is not a correct rollout, or the base gives ``C`` no mass.
    """
    from tilt.engines.dp.passes import backward_max

    space = base.space
    labels = space.moves.labels
    heads = space.moves.move_head[space.edge_move]
    edges: list[int] = []
    state = 0
    if path is not None:
        if not isinstance(path, str) or not path:
            raise ValueError(f"a reference path must be a non-empty string, got {path!r}")
        wanted = path.split(">")
        ok = wanted[0] == labels[space.moves.source]
        for label in wanted[1:] if ok else []:
            lo, hi = int(space.out_start[state]), int(space.out_start[state + 1])
            hit = [e for e in range(lo, hi) if labels[heads[e]] == label]
            if not hit:
                ok = False
                break
            edges.append(hit[0])
            state = int(space.edge_head[hit[0]])
        if not ok or not space.correct[state]:
            raise ValueError(
                f"reference {path!r} is not a correct rollout of this instance: write its "
                "node labels joined by '>' from the source to the target, as in the "
                "--rollouts CSV"
            )
        return np.asarray(edges, dtype=np.int64)
    best = backward_max(space, base.log_cond, np.where(space.correct, 0.0, -np.inf))
    top = float(best[0])
    if not math.isfinite(top):
        raise ValueError("the base puts no mass on correct rollouts: there is no reference")
    done = 0.0
    while not space.correct[state]:
        lo, hi = int(space.out_start[state]), int(space.out_start[state + 1])
        choices = []
        for e in range(lo, hi):
            total = done + base.log_cond[e] + best[space.edge_head[e]]
            if math.isfinite(total) and total >= top - _TIE:
                head = int(space.edge_head[e])
                key = labels[heads[e]] + ("" if space.correct[head] else ">")
                choices.append((key, e))
        _, e = min(choices)
        edges.append(e)
        done += float(base.log_cond[e])
        state = int(space.edge_head[e])
    return np.asarray(edges, dtype=np.int64)


def point_mass(space: AcyclicSpace, edges: np.ndarray) -> MarkovPolicy:
    """``D = delta_c``, the rollout whose state edges are ``edges``, as a Markov policy
    (probability 1 along ``c``; uniform where ``c`` never goes)."""
    cond = -np.log(space.out_count[space.edge_tail].astype(np.float64))
    tails = space.edge_tail[edges]
    for s, e in zip(tails.tolist(), edges.tolist(), strict=True):
        cond[space.out_start[s] : space.out_start[s + 1]] = -np.inf
        cond[e] = 0.0
    demos = MarkovPolicy(space, cond)
    reach = np.full(space.n_states, -np.inf)
    reach[0] = 0.0
    reach[space.edge_head[edges]] = 0.0
    demos.__dict__["log_reach"] = reach  # the cached_property's slot
    return demos


def demonstrations(
    policy: MarkovPolicy, kind: str | MarkovPolicy = "own", alpha: float = 1.0
) -> MarkovPolicy:
    """The demonstration distribution ``D`` as a Markov policy (all its mass on ``C``).

    ``own``: ``D ∝ pi r``; ``uniform``: ``D ∝ r``; ``tempered``: ``D ∝ pi^alpha r``
    (rollouts with ``pi(y) = 0`` excluded), as :func:`tilt.context.demonstrations`;
    a :class:`MarkovPolicy` (a fixed reference, :func:`point_mass`) is returned as is.
    """
    if isinstance(kind, MarkovPolicy):
        return kind
    if kind not in DEMOS:
        raise ValueError(f"unknown demonstrations {kind!r}: choose one of {', '.join(DEMOS)}")
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"tempering alpha must be finite and >= 0, got {alpha!r}")

    def compute() -> MarkovPolicy:
        space = policy.space
        if not np.isfinite(policy.log_correct_below[0]):
            raise ValueError(
                "the policy puts no mass on correct rollouts: it has no demonstrations"
            )
        lc = policy.log_cond
        if kind == "own" or (kind == "tempered" and alpha == 1.0):
            # D = q(. | C): the conditioned chain, whose reach is known without a pass
            demos = MarkovPolicy(space, policy.correct_cond)
            demos.__dict__["log_reach"] = policy.exact_correct_reach  # the cached_property's slot
            return demos
        if kind == "own":
            weight = lc
        elif kind == "uniform":
            weight = np.zeros_like(lc)
        else:
            weight = np.where(np.isfinite(lc), alpha * lc, -np.inf)
        leaf = np.where(space.correct, 0.0, -np.inf)
        cond, _ = tilted_conditionals(space, weight, leaf)
        demos = MarkovPolicy(space, cond)
        # numpy's digits (not the compiled pass): the reach feeds SD's conditionals
        demos.__dict__["log_reach"] = forward_logsumexp(space, demos.linear)
        return demos

    return policy.memo(f"demos:{kind}:{alpha!r}", compute)


def edge_marginals(demos: MarkovPolicy) -> FloatArray:
    """``m(e) = P_{c ~ D}(e in E(c))`` per graph move (a path makes each move at most once)."""

    def compute() -> FloatArray:
        space = demos.space
        compiled = kernels(space)
        if compiled is not None and compiled.NUMPY_LOOPS is not None:  # numpy's bits
            flow = np.empty(space.n_edges)
            out = flow if space.edges_are_moves else np.zeros(space.n_moves)
            compiled.move_marginals(
                space.out_start,
                space.edge_move,
                demos.log_reach,
                demos.log_cond,
                compiled.NUMPY_LOOPS,
                flow,
                out,
                not space.edges_are_moves,
            )
            return out
        flow = np.exp(demos.log_edge_flow)
        return np.bincount(
            demos.space.edge_move, weights=flow, minlength=demos.space.n_moves
        ).astype(np.float64, copy=False)

    return demos.memo("edge_marginals", compute)


def log_rollout_count(space: AcyclicSpace, correct_only: bool = False) -> float:
    """``log |Y|`` (or ``log |C|``): rollouts counted by one backward pass, as a log."""
    return float(log_rollout_counts(space, correct_only)[0])


def log_rollout_counts(space: AcyclicSpace, correct_only: bool = False) -> FloatArray:
    """``log`` of the number of rollouts (correct ones) below every state (cached)."""

    def compute() -> tuple[FloatArray, FloatArray]:
        # both counts by one set of unit weights (two edge-sized arrays, made once)
        counting = linear_weights(space, np.zeros(space.n_edges))
        every, correct = (
            backward_logsumexp(space, counting, np.where(leaf, 0.0, -np.inf), compiled=True)
            for leaf in (space.leaf, space.correct)
        )
        return every, correct

    return space.memo("log_rollout_counts", compute)[1 if correct_only else 0]
