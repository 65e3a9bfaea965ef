"""Generic paths of the context-model protocol, through ``teacher_log_prob`` alone.

Any :class:`~tilt.context.ContextModel` gets the tilt score, the token target
and the forward mixture from these functions, at a cost of one teacher per
demonstration (``O(|supp D| x n_rollouts)``); the built-in models override
them with structured forms, and the tests check both agree.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from tilt._numerics import FloatArray, IntArray, logsumexp_rows
from tilt.policy import Policy
from tilt.space import RolloutSpace, TooLargeError


class ContextModel(Protocol):
    """What the generic forms read of a context model (:class:`tilt.context.ContextModel`)."""

    name: str

    def teacher_log_prob(self, policy: Policy, demos: IntArray) -> FloatArray: ...

    def teacher_classes(self, policy: Policy, demos: Policy) -> TeacherClasses: ...


__all__ = [
    "GENERIC_LIMIT",
    "CLASS_LIMIT",
    "TeacherClasses",
    "generic_teacher_classes",
    "generic_token_mean_log_target",
    "generic_tilt_score",
    "generic_token_log_target",
    "generic_forward_log_prob",
    "checked_teacher",
    "checked_output",
]

GENERIC_LIMIT = 2_000_000_000
"""Most ``demonstrations x prefixes`` teacher evaluations a generic path may do."""

CLASS_LIMIT = 100_000_000
"""Most ``classes x prefixes`` entries a :class:`TeacherClasses` may hold (800 MB per array)."""

_CHUNK_ENTRIES = 1 << 23


class TeacherClasses:
    """The teachers' conditionals at every prefix, grouped into classes of demonstrations.

    At the parent ``h`` of prefix ``p = h u``, the demonstrations whose teacher
    reaches ``h`` fall into classes ``k`` that share one conditional
    ``T_k(. | h)``.  Then every per-token target is a weighted reduction over
    classes, for example ``E_c T_c(u | h) = sum_k w_k T_k(u | h) / sum_k w_k``.

    Attributes
    ----------
    weight : ndarray, shape (n_classes, n_prefixes)
        ``weight[k, p]``: the ``D``-mass of class ``k`` at the parent of ``p``
        (the same for every sibling; 0 for a class that is empty there or whose
        teacher gives the parent no mass).  Column 0 is unused.
    log_cond : ndarray, shape (n_classes, n_prefixes)
        ``log T_k(node p | parent p)`` (any finite value where the weight is 0).

    Notes
    -----
    Solvers read classes one block of sibling groups at a time
    (:meth:`sibling_blocks`), so a model can produce them without holding all
    of them (:class:`tilt.context.edge.EdgeContext` does).  The built-in
    ``edge`` and ``copy`` models have at most ``branching + 1`` classes (which
    move the demonstration makes next, or none): ``O(prefixes x branching)``.
    The generic path has one class per demonstration.
    """

    def __init__(self, weight: FloatArray, log_cond: FloatArray) -> None:
        self._dense = (weight, log_cond)

    def _arrays(self) -> tuple[FloatArray, FloatArray]:
        return self._dense

    @property
    def weight(self) -> FloatArray:
        """``(n_classes, n_prefixes)`` class masses (see the class docstring)."""
        return self._arrays()[0]

    @property
    def log_cond(self) -> FloatArray:
        """``(n_classes, n_prefixes)`` class conditionals, in log space."""
        return self._arrays()[1]

    @property
    def n_classes(self) -> int:
        """Number of classes (rows)."""
        return int(self.weight.shape[0])

    def sibling_blocks(self, children: IntArray) -> tuple[FloatArray, FloatArray]:
        """Classes of the sibling groups whose children are the columns of ``children``.

        ``children`` has shape ``(n, G)``: ``G`` groups of ``n`` siblings.  Returns
        ``weight`` of shape ``(K, G)`` and ``log_cond`` of shape ``(K, n, G)``,
        without the classes that weigh nothing in these groups.
        """
        weight = self.weight[:, children[0]]
        used = np.flatnonzero(weight.any(axis=1))
        return weight[used], self.log_cond[used[:, None, None], children[None]]

    def group_key(self, children: IntArray) -> FloatArray:
        """Rows that determine the classes of each sibling group, shape ``(R, G)``.

        Two groups with equal columns have equal :meth:`sibling_blocks` (up to classes
        that weigh nothing), so a per-group solve may run once per distinct column.
        By default the classes themselves; a model may give fewer rows.
        """
        weight, log_cond = self.sibling_blocks(children)
        return np.concatenate([weight, log_cond.reshape(-1, children.shape[1])])

    def group_key_rows(self) -> tuple[FloatArray, ...] | None:
        """Per-prefix arrays that make up :meth:`group_key`, or ``None``.

        When given, ``group_key(children)`` is ``concatenate([row[children] for row in
        rows])``: a solver may compare groups from these arrays without gathering the
        key.  ``None`` (the default) when the key is not of that form.
        """
        return None

    def group_classes(self, n: int, children: IntArray) -> tuple[IntArray, IntArray] | None:
        """``(first, inverse)``: the groups of ``n`` siblings ``children`` (all of them, as
        ``space.sibling_groups_by_size`` gives them) in classes of equal :meth:`group_key`
        columns, ``children[:, first]`` one group of each; or ``None`` (the default), and a
        solver finds them from :meth:`group_key` block by block.  A model may give them
        from a faster search, or remember them for every solver of the same policy.
        """
        return None


def check_classes(space: RolloutSpace, n_classes: int, what: str) -> None:
    """Raise :class:`TooLargeError` when ``n_classes x n_prefixes`` exceeds :data:`CLASS_LIMIT`."""
    work = n_classes * space.n_prefixes
    if work > CLASS_LIMIT:
        raise TooLargeError(
            f"{what} needs {n_classes:,} teacher classes x {space.n_prefixes:,} prefixes = "
            f"{work:,} entries (limit {CLASS_LIMIT:,}): use a horizon, a smaller graph, "
            "or the edge or copy context model"
        )


def support_of(demos: Policy) -> IntArray:
    return np.flatnonzero(np.isfinite(demos.log_prob))


def chunks(indices: IntArray, row_size: int) -> list[IntArray]:
    size = max(1, _CHUNK_ENTRIES // max(row_size, 1))
    return [indices[i : i + size] for i in range(0, indices.size, size)]


def within_generic_limit(space: RolloutSpace, n_demos: int) -> bool:
    """Whether ``n_demos x n_prefixes`` teacher evaluations fit :data:`GENERIC_LIMIT`."""
    return n_demos * space.n_prefixes <= GENERIC_LIMIT


def check_generic(space: RolloutSpace, n_demos: int, what: str) -> None:
    work = n_demos * space.n_prefixes
    if work > GENERIC_LIMIT:
        raise TooLargeError(
            f"{what} needs {n_demos:,} demonstrations x {space.n_prefixes:,} prefixes = "
            f"{work:,} teacher evaluations (limit {GENERIC_LIMIT:,}): use a horizon, a smaller "
            "graph, or a context model with a structured form"
        )


def check_pairs(space: RolloutSpace, n_demos: int, what: str) -> None:
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
# validation of a model's outputs (a user's model is checked where tilt calls it)

TEACHER_TOLERANCE = 1e-9
"""Largest ``|log sum_y T_c(y)|`` accepted from ``teacher_log_prob``."""


def _name(model: ContextModel) -> str:
    return f"context model {getattr(model, 'name', type(model).__name__)!r}"


def checked_teacher(model: ContextModel, policy: Policy, demos: IntArray) -> FloatArray:
    """``model.teacher_log_prob(policy, demos)``, refused unless it is a block of log-teachers.

    Each row must be ``log T_c`` over the rollouts: shape ``(len(demos), n_rollouts)``,
    no ``nan`` or ``+inf``, normalised within :data:`TEACHER_TOLERANCE`.

    Raises
    ------
    ValueError
        Naming what is wrong: the shape (a transposed block is named so), ``nan``,
        probabilities given instead of log-probabilities, or rows that do not sum to 1.
    """
    k, n = len(demos), policy.space.n_rollouts
    where = f"{_name(model)}: teacher_log_prob"
    raw = model.teacher_log_prob(policy, demos)
    try:
        teacher = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where} returned {type(raw).__name__}, not an array of floats") from None
    if teacher.shape != (k, n):
        hint = " (transposed? rows are demonstrations)" if teacher.shape == (n, k) else ""
        raise ValueError(
            f"{where} returned shape {teacher.shape}, expected (k demonstrations, n rollouts) = "
            f"({k}, {n}){hint}"
        )
    if np.isnan(teacher).any():
        raise ValueError(f"{where} returned nan: give log T_c(y), -inf for zero mass")
    if np.isposinf(teacher).any():
        raise ValueError(f"{where} returned +inf: give log T_c(y), -inf for zero mass")
    peak = teacher.max(axis=1)
    if not np.isfinite(peak).all():
        raise ValueError(f"{where} returned a teacher with no mass (a row of -inf)")
    totals = peak + np.log(np.exp(teacher - peak[:, None]).sum(axis=1))
    bad = np.flatnonzero(~(np.abs(totals) <= TEACHER_TOLERANCE))
    if bad.size:
        row = teacher[bad[0]]
        sums = float(row.sum())
        if (row >= 0).all() and abs(sums - 1.0) <= 1e-6:
            raise ValueError(
                f"{where} returned probabilities, not log-probabilities (the row sums to 1): "
                "return np.log of them"
            )
        total = float(np.exp(totals[bad[0]]))
        raise ValueError(
            f"{where} returned a teacher whose probabilities sum to {total:.6g}, not 1 "
            f"(demonstration {int(np.asarray(demos)[bad[0]])}): normalise each row"
        )
    return teacher


def checked_output(values: object, policy: Policy, model: ContextModel, method: str) -> FloatArray:
    """A model's ``tilt_score``, ``token_log_target`` or ``forward_log_prob``, validated.

    Shape (n_rollouts,) or, for the token targets, (n_prefixes,); no ``nan``,
    no ``+inf``.  The built-ins always pass; a user's override is named when not.
    """
    space = policy.space
    per_prefix = method in ("token_log_target", "token_mean_log_target")
    size = space.n_prefixes if per_prefix else space.n_rollouts
    what = "prefixes" if per_prefix else "rollouts"
    where = f"{_name(model)}: {method}"
    try:
        out = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"{where} returned {type(values).__name__}, not an array of floats"
        ) from None
    if out.shape != (size,):
        raise ValueError(
            f"{where} returned shape {out.shape}, expected ({size},): one value per {what[:-1]}"
        )
    if out.size and not float(out.max()) < np.inf:  # the maximum is nan if any value is
        raise ValueError(f"{where} returned nan or +inf")
    return out


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
    support = support_of(demos)
    check_generic(space, support.size, f"the tilt score of the {model.name} model")
    expected = np.zeros(space.n_rollouts)
    for chunk in chunks(support, space.n_rollouts):
        teacher = checked_teacher(model, policy, chunk)
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
    support = support_of(demos)
    check_generic(space, support.size, f"the token target of the {model.name} model")
    numerator = np.zeros(space.n_prefixes)
    weight_sum = np.zeros(space.n_prefixes)
    parent = space.parent[1:]
    for chunk in chunks(support, space.n_rollouts):
        teacher = checked_teacher(model, policy, chunk)
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


def generic_teacher_classes(model: ContextModel, policy: Policy, demos: Policy) -> TeacherClasses:
    """One class per demonstration: ``log T_c(u | h)`` from explicit teachers.

    Cost ``O(|supp D| x n_rollouts)`` time and ``O(|supp D| x n_prefixes)`` memory.
    """
    space = policy.space
    support = support_of(demos)
    check_generic(space, support.size, f"the teacher classes of the {model.name} model")
    check_classes(space, support.size, f"the teacher classes of the {model.name} model")
    weight = np.zeros((support.size, space.n_prefixes))
    log_cond = np.zeros((support.size, space.n_prefixes))
    parent = space.parent[1:]
    row_index = 0
    for chunk in chunks(support, space.n_rollouts):
        teacher = checked_teacher(model, policy, chunk)
        for row, c in zip(teacher, chunk, strict=True):
            mass = space.subtree_logsumexp(row)
            reached = np.isfinite(mass[parent])
            log_cond[row_index, 1:] = np.where(
                reached, mass[1:] - np.where(reached, mass[parent], 0.0), 0.0
            )
            weight[row_index, 1:] = np.where(reached, demos.prob[c], 0.0)
            row_index += 1
    return TeacherClasses(weight, log_cond)


def generic_token_mean_log_target(model: ContextModel, policy: Policy, demos: Policy) -> FloatArray:
    """``log E_c[T_c(u | h) | T_c(h) > 0]`` per prefix, reduced from ``model.teacher_classes``.

    The mean over the demonstrations whose teacher reaches ``h``; the policy's own
    ``log pi(u | h)`` where none does.  Entry 0 is 0.
    """
    classes = model.teacher_classes(policy, demos)
    total = classes.weight.sum(axis=0)
    log_sum = np.full(total.shape, -np.inf)
    with np.errstate(divide="ignore"):
        for weight, log_cond in zip(classes.weight, classes.log_cond, strict=True):
            term = np.where(weight > 0, np.log(weight) + log_cond, -np.inf)
            np.logaddexp(log_sum, term, out=log_sum)
        has = total > 0
        out = np.where(has, log_sum - np.log(np.where(has, total, 1.0)), policy.log_conditionals())
    out[0] = 0.0
    return out


def generic_forward_log_prob(model: ContextModel, policy: Policy, demos: Policy) -> FloatArray:
    """``log sum_c D(c) T_c(y)`` by explicit teachers, shape (n_rollouts,)."""
    space = policy.space
    support = support_of(demos)
    check_generic(space, support.size, f"the forward mixture of the {model.name} model")
    out = np.full(space.n_rollouts, -np.inf)
    for chunk in chunks(support, space.n_rollouts):
        teacher = checked_teacher(model, policy, chunk) + demos.log_prob[chunk][:, None]
        out = np.logaddexp(out, logsumexp_rows(np.ascontiguousarray(teacher.T)))
    return out
