"""Policies: distributions over the rollouts of a space, and base policies.

A :class:`Policy` is the log-probability of every rollout; its conditionals on
the prefix tree, ``pi(u | h)``, are derived from it (and back) exactly, in log
space.  The base policy ``pi0`` is the edge softmax of ``docs/theory.md``:
``pi0(u | h) = exp(theta(v, u)) / sum over u' in avail(h) of exp(theta(v, u'))``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from tilt._checks import check_instance, check_real
from tilt._numerics import FloatArray, shifted_logsumexp
from tilt.space import RolloutSpace

_T = TypeVar("_T")

NORMALISED = 1e-10
"""Largest ``|log sum_y pi(y)|`` a :class:`Policy` accepts (its probabilities sum to 1
within about this): far above the rounding of a normalisation (``n_rollouts`` ulps),
far below any real error."""

__all__ = [
    "Policy",
    "BASES",
    "base_policy",
    "edge_softmax",
    "as_generator",
]

BASES = ("default", "uniform", "random")
"""Names accepted by :func:`base_policy`."""


def as_generator(seed: int | np.random.Generator | None) -> np.random.Generator:
    """Normalise a seed (int, Generator or None) into a ``numpy.random.Generator``."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(
            f"seed must be an int, a numpy Generator or None, got {type(seed).__name__}"
        )
    return np.random.default_rng(seed)


@dataclass(frozen=True, eq=False)
class Policy:
    """A probability distribution over the rollouts of ``space``.

    Attributes
    ----------
    space : RolloutSpace
    log_prob : ndarray of float64, shape (n_rollouts,)
        ``log pi(y)``; ``-inf`` for zero mass.  Normalised: ``logsumexp == 0``.
    """

    space: RolloutSpace
    log_prob: FloatArray
    _memo: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.space, RolloutSpace):
            raise TypeError(f"space must be a RolloutSpace, got {type(self.space).__name__}")
        log_prob = np.asarray(self.log_prob)
        if log_prob.dtype.kind not in "fiu":
            raise TypeError(f"log_prob must be an array of floats, got dtype {log_prob.dtype}")
        log_prob = log_prob.astype(np.float64, copy=False)
        if log_prob.shape != (self.space.n_rollouts,):
            raise ValueError(
                f"log_prob must have shape ({self.space.n_rollouts},), one entry per rollout, "
                f"got {log_prob.shape}"
            )
        top = float(log_prob.max()) if log_prob.size else -np.inf  # nan if any is nan
        if not top < np.inf:
            raise ValueError("log_prob contains nan or +inf: give log-probabilities (-inf for 0)")
        total = shifted_logsumexp(log_prob, top)
        if not abs(total) <= NORMALISED:
            raise ValueError(
                f"log_prob is not normalised: the probabilities sum to {np.exp(total)!r}, not 1 "
                f"within {NORMALISED:g} (are these probabilities, not log-probabilities? "
                "use Policy.from_log_weights to normalise)"
            )
        object.__setattr__(self, "log_prob", log_prob)

    def memo(self, key: str, compute: Callable[[], _T]) -> _T:
        """``compute()``, remembered on this policy under ``key``.

        Per-prefix arrays that several optima of one policy need (a context
        model's boosts, its per-step tilt) are computed once.  Keys of the form
        ``'group@detail'`` keep only the latest ``detail`` of each group (for
        example one set of demonstrations at a time), so the memo stays small.
        Arrays are stored read-only.
        """
        if key not in self._memo:
            if "@" in key:
                group = key.split("@")[0] + "@"
                for old in [k for k in self._memo if k.startswith(group)]:
                    del self._memo[old]
            value = compute()
            if isinstance(value, np.ndarray):
                value.flags.writeable = False
            self._memo[key] = value
        return self._memo[key]

    def release(self) -> None:
        """Forget every per-prefix array remembered on this policy (its memo, its prefix
        masses): they are recomputed on demand.  Frees ``O(prefixes)`` memory once a
        caller is done with the policy's structure but keeps its ``log_prob``."""
        self._memo.clear()
        self.__dict__.pop("_prefix_log_mass", None)

    def remembered(self, key: str) -> Any:
        """What :meth:`memo` holds under ``key``, or ``None``."""
        return self._memo.get(key)

    @classmethod
    def from_log_weights(cls, space: RolloutSpace, log_weight: FloatArray) -> Policy:
        """Normalise unnormalised log-weights ``w`` into ``pi(y) = exp(w(y)) / Z``.

        Raises
        ------
        ValueError
            If the weights contain ``nan`` or ``+inf``, or all are ``-inf``.
        """
        log_weight = np.asarray(log_weight, dtype=np.float64)
        if log_weight.shape != (space.n_rollouts,):
            raise ValueError(
                f"expected {space.n_rollouts} log-weights, got shape {log_weight.shape}"
            )
        return cls._from_own_log_weights(space, log_weight, copy=True)

    @classmethod
    def _from_own_log_weights(
        cls, space: RolloutSpace, log_weight: FloatArray, *, copy: bool = False
    ) -> Policy:
        """:meth:`from_log_weights` of a float64 array of the right shape, normalised in place
        unless ``copy`` (the caller's array is then left alone)."""
        top = float(log_weight.max()) if log_weight.size else -np.inf  # nan if any is nan
        if not top < np.inf:
            raise ValueError("log-weights contain nan or +inf: cannot normalise")
        if top == -np.inf:
            raise ValueError("every rollout has zero weight: cannot normalise")
        # shift by the maximum first: ``w - logsumexp(w)`` would round the normaliser to the ulp
        # of a large ``w`` (1e-6 at w = 1e10), and every probability with it
        if copy:
            shifted = log_weight - top
        else:
            shifted = log_weight
            shifted -= top
        # shifted_logsumexp(shifted, 0.0), without its two temporaries (``x - 0.0`` is ``x``)
        shifted -= 0.0 + float(np.log(np.exp(shifted).sum()))
        return cls._normalised(space, shifted)

    @classmethod
    def _normalised(cls, space: RolloutSpace, log_prob: FloatArray) -> Policy:
        """A policy of ``log_prob`` that :meth:`from_log_weights` has just checked and
        normalised: ``__post_init__``'s checks would repeat that work (two passes)."""
        policy = object.__new__(cls)
        object.__setattr__(policy, "space", space)
        object.__setattr__(policy, "log_prob", log_prob)
        object.__setattr__(policy, "_memo", {})
        return policy

    @classmethod
    def from_log_conditionals(
        cls,
        space: RolloutSpace,
        log_cond: FloatArray,
        *,
        softmax: bool = False,
        copy: bool = True,
    ) -> Policy:
        """Build the policy whose conditionals are ``log pi(node[p] | parent[p])``.

        ``log_cond`` has shape (n_prefixes,); entry 0 is ignored.  Each sibling
        group must be normalised (within rounding); the result is renormalised.
        With ``softmax=True`` the caller vouches that every group is a softmax
        (normalised to rounding): the values become the policy's
        :meth:`log_conditionals` as given (uniform below a prefix of zero mass),
        instead of being recomputed from the rollouts' masses.  With
        ``copy=False`` the caller hands ``log_cond`` (a float64 array) over: it
        is changed in place and may become the policy's conditionals.
        """
        if copy:
            values = np.array(log_cond, dtype=np.float64, copy=True)
        else:
            values = np.asarray(log_cond, dtype=np.float64)
        values[0] = 0.0
        log_prefix = space.path_sum(values)
        policy = cls._from_own_log_weights(space, log_prefix[space.rollout_prefix])
        if softmax:
            # below a zero conditional: uniform, as recomputed (a nan would have reached a
            # rollout through the path sums, which from_log_weights refuses); a -inf
            # conditional makes every rollout below it -inf, so the rollouts (5.3 M on grid6)
            # are scanned first and the conditionals (18.5 M) only when some rollout is -inf
            if float(policy.log_prob.min()) == -np.inf and float(values.min()) == -np.inf:
                unreachable = np.flatnonzero(np.isneginf(log_prefix[space.parent[1:]])) + 1
                values[unreachable] = -np.log(space.child_count[space.parent[unreachable]])
            policy.memo("log-conditionals", lambda: values)
        return policy

    # ------------------------------------------------------------- views
    @property
    def prob(self) -> FloatArray:
        """``pi(y)`` for every rollout."""
        return np.exp(self.log_prob)

    def mass(self, where: NDArray[np.bool_]) -> float:
        """``pi(A)`` for a boolean mask ``A`` over rollouts."""
        if not where.any():
            return 0.0
        # a sum of masses may round a few ulps above 1: a probability is never reported above 1
        return min(1.0, float(np.exp(_logsumexp_in_place(self.log_prob[where]))))

    @property
    def accuracy(self) -> float:
        """``pi(C)`` (computed once per policy)."""
        return self._correct_masses[0]

    @property
    def incorrect_mass(self) -> float:
        """``pi(Y without C) = 1 - pi(C)``, summed directly (no cancellation near 1)."""
        return self._correct_masses[1]

    @cached_property
    def _correct_masses(self) -> tuple[float, float]:
        correct = self.space.correct
        return self.mass(correct), self.mass(~correct)

    def correct_log_prob(self) -> FloatArray:
        """``log pi(y)`` for the correct rollouts, in rollout order (remembered; read-only)."""
        # the correct rollouts' indices, not the mask: the same values, a take of 1.3 M
        # instead of a scan of 5.3 M on grid6
        return self.memo("correct-log-prob", lambda: self.log_prob[self.space.correct_rollouts])

    def prefix_log_mass(self) -> FloatArray:
        """``log pi(h)`` for every prefix ``h``: the mass of the rollouts through it.

        Computed once per policy; the returned array is read-only.
        """
        return self._prefix_log_mass

    def log_conditionals(self) -> FloatArray:
        """``log pi(node[p] | parent[p])`` for every prefix ``p`` (entry 0 is 0).

        Where the parent prefix has zero mass the conditional is undefined; it is
        set to the uniform ``-log(number of siblings)`` so every sibling group
        stays a distribution.  Computed once per policy; the array is read-only.
        """
        return self._log_conditionals

    @cached_property
    def _prefix_log_mass(self) -> FloatArray:
        out = self.space.subtree_logsumexp(self.log_prob)
        out.flags.writeable = False
        return out

    @property
    def _log_conditionals(self) -> FloatArray:
        return self.memo("log-conditionals", self._conditionals_from_masses)

    def _conditionals_from_masses(self) -> FloatArray:
        space = self.space
        mass = self.prefix_log_mass()
        parent = space.parent[1:]
        out = np.empty(space.n_prefixes)
        out[0] = 0.0
        parent_mass = mass[parent]
        with np.errstate(invalid="ignore"):  # -inf - -inf below an unreachable parent
            np.subtract(mass[1:], parent_mass, out=out[1:])
        unreachable = np.flatnonzero(np.isneginf(parent_mass))
        if unreachable.size:
            out[1 + unreachable] = -np.log(space.child_count[parent[unreachable]])
        return out

    def conditional_probs(self) -> FloatArray:
        """``pi(node[p] | parent[p])`` for every prefix (entry 0 is 1)."""
        return np.exp(self.log_conditionals())

    def check(self, atol: float = 1e-12) -> None:
        """Raise ``ValueError`` unless the probabilities are finite, >= 0 and sum to 1."""
        p = self.prob
        if np.isnan(self.log_prob).any():
            raise ValueError("policy has nan log-probabilities")
        if abs(p.sum() - 1.0) > atol:
            raise ValueError(f"policy sums to {p.sum()!r}, not 1 within {atol}")


def _logsumexp_in_place(values: FloatArray) -> float:
    """:func:`tilt._numerics.logsumexp` of a float64 array that is overwritten (the same
    operations in the same order, without its two temporaries: 4 M values on grid6)."""
    if values.size == 0:
        return -np.inf
    peak = float(values.max())
    if not np.isfinite(peak):
        return peak
    values -= peak
    np.exp(values, out=values)
    return peak + float(np.log(values.sum()))


def edge_softmax(space: RolloutSpace, move_logit: FloatArray) -> Policy:
    """The edge-softmax policy of per-move logits ``theta``.

    ``pi(u | h) = exp(theta(v, u)) / sum over u' in avail(h) of exp(theta(v, u'))``
    and ``pi(y)`` is the product along the path.

    Parameters
    ----------
    move_logit : ndarray, shape (n_moves,)
        Finite logit of every directed move.
    """
    move_logit = np.asarray(move_logit, dtype=np.float64)
    if move_logit.shape != (space.n_moves,):
        raise ValueError(f"expected {space.n_moves} move logits, got shape {move_logit.shape}")
    if not np.isfinite(move_logit).all():
        raise ValueError("move logits must be finite")
    logits = np.zeros(space.n_prefixes)
    logits[1:] = move_logit[space.move[1:]]
    log_cond = space.sibling_log_softmax(logits)
    return Policy.from_log_conditionals(space, log_cond, softmax=True, copy=False)


def base_policy(
    space: RolloutSpace,
    kind: str = "default",
    seed: int | np.random.Generator | None = None,
    scale: float = 1.0,
) -> Policy:
    """The base policy ``pi0`` of a space.

    Parameters
    ----------
    kind : {'default', 'uniform', 'random'}
        ``default``: the edge softmax of the graph's ``logit`` attributes (each
        named graph documents its own); ``uniform``: all logits 0, so every
        available next node is equally likely; ``random``: logits drawn
        ``Normal(0, scale)`` per directed move from ``seed``.
    seed : int, Generator or None
        Used by ``random`` only.

    Raises
    ------
    ValueError
        On an unknown ``kind`` or a negative ``scale``.
    """
    check_instance("space", space, RolloutSpace)
    if kind == "default":
        return edge_softmax(space, space.move_logit)
    if kind == "uniform":
        return edge_softmax(space, np.zeros(space.n_moves))
    if kind == "random":
        scale = check_real("scale", scale)
        if not np.isfinite(scale) or scale < 0:
            raise ValueError(f"random base scale must be finite and >= 0, got {scale!r}")
        rng = as_generator(seed)
        return edge_softmax(space, rng.normal(0.0, scale, size=space.n_moves))
    raise ValueError(f"unknown base {kind!r}: choose one of {', '.join(BASES)}")
