"""The network as a tilt model: its base policy and its in-context teacher as a context model.

With the tables of :mod:`tilt.neural.tables`, the network's base is a
:class:`~tilt.policy.Policy` and its teacher ``T_c(y) = p(y | c)`` a
:class:`~tilt.context.ContextModel`, so every objective of
:mod:`tilt.objectives` and every measure of :mod:`tilt.measures` predicts
what training the network does (``docs/neural.md``).
"""

from __future__ import annotations

import numpy as np

from tilt._numerics import FloatArray, IntArray
from tilt.context import ContextModel, TeacherClasses
from tilt.neural.tables import NetworkTables
from tilt.policy import Policy

__all__ = ["NetworkContext"]


class NetworkContext(ContextModel):
    """The network's own in-context behaviour, read from its tables.

    ``teacher_log_prob(policy, demos)`` is ``log p(y | c)`` of the network at
    the weights its tables were read at.  The teacher is *fixed*: it is defined
    for the network's base only.  Any other policy -- an iterated SD round, a
    trained student, a tabular "live" teacher -- is refused with a
    ``ValueError``, because no table says how the network's in-context
    behaviour would change with its weights (read new tables from the trained
    network instead).  Demonstrations must be rollouts the tables hold (by
    default every correct rollout, which covers tilt's ``own``, ``uniform``,
    ``tempered`` and ``reference`` demonstrations).

    ``token_log_target`` and ``teacher_classes`` are read from the per-prefix
    conditionals directly (every teacher is a softmax over the available
    moves, so it reaches every prefix); they equal the generic forms through
    ``teacher_log_prob`` to rounding (``tests/neural``).

    Parameters
    ----------
    tables : NetworkTables
    """

    name = "network"

    def __init__(self, tables: NetworkTables) -> None:
        if not isinstance(tables, NetworkTables):
            raise TypeError(f"tables must be NetworkTables, got {type(tables).__name__}")
        self.tables = tables

    def describe(self) -> str:
        """``network(k demonstrations, float32)``."""
        return f"network({self.tables.demos.size} demonstrations, {self.tables.dtype})"

    def _check_policy(self, policy: Policy) -> None:
        base = self.tables.base
        if policy is base:
            return
        if policy.space is not base.space or not np.array_equal(policy.log_prob, base.log_prob):
            raise ValueError(
                "the network's teacher is fixed: its tables hold p(y | c) at the weights they "
                "were read at, for the network's base only; a teacher of another policy "
                "(iterated SD rounds, a live teacher) needs new tables read from the network "
                "at new weights (tilt.neural.network_tables)"
            )

    def _support(self, demos: Policy) -> tuple[IntArray, FloatArray]:
        support = np.flatnonzero(demos.prob > 0)
        return self.tables.rows_of(support), demos.prob[support]

    def teacher_log_prob(self, policy: Policy, demos: IntArray) -> FloatArray:
        """``log T_c(y)`` of each demonstration (rows) over the rollouts, from the tables."""
        self._check_policy(policy)
        return self.tables.teacher_rows[self.tables.rows_of(np.asarray(demos))]

    def token_log_target(self, policy: Policy, demos: Policy) -> FloatArray:
        """``E_c log T_c(u | h)`` per prefix, from the per-prefix conditionals."""
        self._check_policy(policy)
        rows, weight = self._support(demos)
        out = (weight @ self.tables.teacher_log_cond[rows]) / weight.sum()
        out[0] = 0.0
        return out

    def teacher_classes(self, policy: Policy, demos: Policy) -> TeacherClasses:
        """One class per demonstration, its conditionals straight from the tables."""
        self._check_policy(policy)
        rows, weight = self._support(demos)
        weights = np.repeat(weight[:, None], self.tables.space.n_prefixes, axis=1)
        weights[:, 0] = 0.0
        return TeacherClasses(weights, self.tables.teacher_log_cond[rows].copy())
