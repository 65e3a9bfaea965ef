"""The Markov forms of the context models on an acyclic space.

On a DAG the tilt score of ``edge(gamma)`` and ``kernel(gamma)`` is a sum over
the moves of a rollout, up to a constant (``docs/theory.md``, "DP engine"):

* ``edge``: ``S(y) = sum_t step(e_t)`` with
  ``step(e) = gamma m(e) - sum_{e' out of tail(e)} m(e') log(1 + (e^gamma - 1) pi(e'))``,
  ``m`` the edge marginals of ``D``.  Its teacher at a state is one of
  ``deg + 1`` conditionals (boost the move ``next_c(v)``, or none), so every
  per-prefix objective is a per-state problem.
* ``kernel``: ``S(y) = gamma sum_t m(e_t) - E_c log Z(c)``; the constant is not
  needed by any optimum.  Its token target needs ``r_c`` per demonstration: no
  Markov form.
* ``copy``: ``S`` depends on ``pi(y)`` through ``D(y)``: no Markov form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tilt._numerics import FloatArray, log_expm1
from tilt.context import ContextModel, MarkovForm
from tilt.engines.dp.passes import kernels, segment_sum
from tilt.engines.dp.policy import MarkovPolicy, edge_marginals

__all__ = ["EdgeForm", "markov_step", "edge_form", "token_target", "FORMS", "markov_form"]

FORMS = ("next-move", "move-sum")
"""The kinds of :class:`~tilt.context.MarkovForm` the DP engine computes."""


def markov_form(model: ContextModel) -> MarkovForm:
    """The model's Markov form, of a kind this engine knows.

    Raises
    ------
    ValueError
        With the model's own reason when it has none, or when its kind is unknown here.
    """
    form = model.markov_form()
    if form is None:
        raise ValueError(model.no_markov_reason())
    if form.kind not in FORMS:
        raise ValueError(
            f"the DP engine knows the Markov forms {', '.join(FORMS)}, not {form.kind!r} of "
            f"{model.name!r}: use --engine enumerate"
        )
    return form


@dataclass(frozen=True)
class EdgeForm:
    """Per-state pieces of ``edge(gamma)`` for a policy ``pi`` and demonstrations ``D``.

    Attributes
    ----------
    gamma : float
    move_weight : ndarray, shape (n_edges,)
        ``m(e)``, the probability that ``next_c(tail) = head`` under ``D``.
    none_weight : ndarray, shape (n_states,)
        ``1 - sum over the edges of s of m(e)``: ``c`` boosts no move at ``s``.
    log_boost_norm : ndarray, shape (n_edges,)
        ``log Z_e = log(1 + (e^gamma - 1) pi(e))``, the normaliser of the teacher
        that boosts ``e``.
    step : ndarray, shape (n_edges,)
        The tilt-score increment of the edge.
    """

    gamma: float
    move_weight: FloatArray
    none_weight: FloatArray
    log_boost_norm: FloatArray
    step: FloatArray


def edge_form(policy: MarkovPolicy, gamma: float, demos: MarkovPolicy) -> EdgeForm:
    """The :class:`EdgeForm` of ``edge(gamma)`` for ``policy`` and ``demos``."""

    def compute() -> EdgeForm:
        space = policy.space
        compiled = kernels(space)
        if compiled is not None:  # numpy's bits in one pass, no edge-sized temporaries
            m, log_z, step = (np.empty(space.n_edges) for _ in range(3))
            none = np.empty(space.n_states)
            if compiled.edge_form(
                space.out_start,
                space.edge_move,
                edge_marginals(demos),
                policy.log_cond,
                log_expm1(gamma),
                gamma,
                m,
                log_z,
                step,
                none,
            ):
                return EdgeForm(gamma, m, none, log_z, step)
        m = edge_marginals(demos)[space.edge_move]
        log_z = np.logaddexp(0.0, log_expm1(gamma) + policy.log_cond)
        internal, starts = space.groups
        expected_log_z = np.zeros(space.n_states)
        expected_log_z[internal] = segment_sum(m * log_z, starts)
        none = np.ones(space.n_states)
        none[internal] = np.maximum(0.0, 1.0 - segment_sum(m, starts))
        step = gamma * m - expected_log_z[space.edge_tail]
        return EdgeForm(gamma, m, none, log_z, step)

    return policy.memo(f"edge_form:{gamma!r}:{id(demos)}", compute)


def markov_step(policy: MarkovPolicy, model: ContextModel, demos: MarkovPolicy) -> FloatArray:
    """Per-edge tilt-score increments: ``S(y) = sum of step along y + const``.

    ``const = 0`` for ``edge``; for ``kernel`` it is ``-E_c log Z(c)``, which
    no optimum needs.
    """
    form = markov_form(model)
    if form.kind == "next-move":
        return edge_form(policy, form.strength, demos).step
    return form.strength * edge_marginals(demos)[policy.space.edge_move]


def token_target(policy: MarkovPolicy, model: ContextModel, demos: MarkovPolicy) -> FloatArray:
    """``g(u | s) = E_c log T_c(u | s)`` per edge (a ``next-move`` form only).

    Raises
    ------
    ValueError
        For a form without per-state teachers (kernel) and a model with no form (copy).
    """
    form = markov_form(model)
    if form.per_prefix_reason is not None:
        raise ValueError(f"per-token SD with {model.name} {form.per_prefix_reason}")
    return policy.log_cond + edge_form(policy, form.strength, demos).step
