"""Hypothesis strategies for random tilt instances, for tilt's tests and for yours.

Import it explicitly (``import tilt.testing``); it needs ``hypothesis``, which
the core of tilt never imports.  Every strategy draws objects small enough to
enumerate in milliseconds, so a property over them runs fast:

* :func:`graphs` — random directed or undirected graphs (3 to 8 nodes by
  default) that always have a path from ``source`` to ``target``;
* :func:`logits` — finite move logits, including extreme ones up to ``±50``;
* :func:`instances` — a :class:`RandomInstance`: task, rollout space and an
  edge-softmax base policy with random logits;
* :func:`dag_instances` — random directed acyclic graphs (edges only from a
  lower to a higher node index), the spaces of the DP engine;
* :func:`diamond_instances` — chains of diamonds with random logits, where
  every correct rollout has the same length and crosses the same junctions;
* :func:`context_models` — built-in context models at random strengths
  (zero strength included);
* :func:`betas`, :func:`anchors`, :func:`demo_kinds`, :func:`alphas`,
  :func:`sd_methods`, :func:`seeds` — the scalar arguments of the optima.

:func:`check_context_model` runs a context model of your own through the
checks tilt relies on, on small instances, and says what is wrong.

:func:`sequence_objective` computes ``E_c KL(q || T_c)`` directly through
explicit teachers: a brute-force oracle for the sequence SD optimum.

Examples
--------
A property of your own context model, checked over random instances::

    from hypothesis import given
    from tilt.testing import instances

    @given(instances())
    def test_my_model_is_normalised(instance):
        teachers = MyModel().teacher_log_prob(instance.base, [0])
        ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from scipy.special import logsumexp

from tilt._numerics import FloatArray
from tilt.context import CONTEXTS, DEMOS, ContextModel, CopyContext, EdgeContext, KernelContext
from tilt.objectives import SD_METHODS
from tilt.policy import Policy, edge_softmax
from tilt.space import RolloutSpace, TooLargeError, enumerate_rollouts
from tilt.tasks import Task
from tilt.tasks.graphs import make_task

__all__ = [
    "MAX_LOGIT",
    "RandomInstance",
    "graphs",
    "logits",
    "instances",
    "diamond_instances",
    "dag_instances",
    "context_models",
    "betas",
    "anchors",
    "demo_kinds",
    "alphas",
    "sd_methods",
    "seeds",
    "sequence_objective",
    "check_context_model",
]

MAX_LOGIT = 50.0
"""Largest absolute logit drawn by :func:`logits`."""


@dataclass(frozen=True, eq=False)
class RandomInstance:
    """A random task with its rollout space and base policy.

    Attributes
    ----------
    task : Task
    space : RolloutSpace
    base : Policy
        Edge softmax of ``move_logit``.
    move_logit : ndarray, shape (n_moves,)
        The logit of every directed move of ``space``.
    directed : bool
        Whether the drawn graph was directed (an undirected one gives both
        directions of an edge the same logit).
    """

    task: Task
    space: RolloutSpace
    base: Policy
    move_logit: FloatArray
    directed: bool

    def __repr__(self) -> str:
        kind = "directed" if self.directed else "undirected"
        moves = ", ".join(
            f"{self.space.move_label(e)}:{self.move_logit[e]:.17g}"
            for e in range(self.space.n_moves)
        )
        return f"RandomInstance({kind}; {self.space.summary()}; logits {{{moves}}})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """One line in Hypothesis' falsifying examples."""
        printer.text(repr(self))


def logits(max_abs: float = MAX_LOGIT) -> st.SearchStrategy[float]:
    """Finite logits: mostly moderate (``|x| <= 3``), sometimes up to ``±max_abs``."""
    return st.one_of(
        st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False),
        st.floats(-max_abs, max_abs, allow_nan=False, allow_infinity=False),
        st.sampled_from([-max_abs, max_abs]),
    )


@st.composite
def graphs(
    draw: st.DrawFn,
    min_nodes: int = 3,
    max_nodes: int = 8,
    directed: bool | None = None,
    edge_probability: float | None = None,
) -> tuple[nx.Graph, int, int]:
    """``(graph, source, target)`` with nodes ``0 .. n-1`` and a path from source to target.

    A random simple path from ``source = 0`` to ``target`` is always present;
    each other ordered (directed) or unordered (undirected) pair is an edge
    with probability ``edge_probability`` (drawn in ``[0.2, 0.7]`` when None).
    Edges carry no logits: :func:`instances` draws them per directed move.
    """
    n = draw(st.integers(min_nodes, max_nodes))
    is_directed = draw(st.booleans()) if directed is None else directed
    graph: nx.Graph = nx.DiGraph() if is_directed else nx.Graph()
    graph.add_nodes_from(range(n))
    target = draw(st.integers(1, n - 1))
    middle = [v for v in range(1, n) if v != target]
    spine = (
        draw(st.lists(st.sampled_from(middle), unique=True, max_size=len(middle))) if middle else []
    )
    path = [0, *spine, target]
    graph.add_edges_from(zip(path[:-1], path[1:], strict=True))
    p = draw(st.floats(0.2, 0.7)) if edge_probability is None else edge_probability
    pairs = [(v, u) for v in range(n) for u in range(n) if v != u and (is_directed or v < u)]
    # one uniform draw per pair; shrinking moves it to 0, which removes the edge
    draws = draw(st.lists(st.floats(0.0, 1.0), min_size=len(pairs), max_size=len(pairs)))
    graph.add_edges_from(pair for pair, w in zip(pairs, draws, strict=True) if w > 1.0 - p)
    return graph, 0, target


def _fit(task: Task, max_rollouts: int) -> RolloutSpace:
    """Enumerate ``task``, lowering its horizon until the space has at most ``max_rollouts``."""
    shortest = nx.shortest_path_length(task.graph, task.source, task.target)
    horizon = task.graph.number_of_nodes() - 1 if task.horizon is None else task.horizon
    while True:
        try:
            return enumerate_rollouts(task, max_rollouts=max_rollouts)
        except TooLargeError:
            assume(horizon > shortest)  # reject the draw if even the shortest horizon is too large
            horizon -= 1
            task = make_task(task.graph, task.source, task.target, horizon, name=task.name)


@st.composite
def instances(
    draw: st.DrawFn,
    min_nodes: int = 3,
    max_nodes: int = 8,
    directed: bool | None = None,
    max_rollouts: int = 400,
    logit_strategy: st.SearchStrategy[float] | None = None,
    horizon: bool = True,
    min_correct: int = 1,
) -> RandomInstance:
    """A :class:`RandomInstance`: random graph, horizon, logits, enumerated space and base.

    Parameters
    ----------
    min_nodes, max_nodes, directed
        Passed to :func:`graphs`.
    max_rollouts : int
        The horizon is lowered (never below the source-target distance) until
        the space has at most this many rollouts, so properties stay fast.
    logit_strategy : strategy of float, optional
        Per-move logits; default :func:`logits` (up to ``±50``).
    horizon : bool
        Draw a horizon (``None`` or between the distance and ``n - 1``).
    min_correct : int
        Reject draws with fewer correct rollouts (2 for properties about ratios).
    """
    graph, source, target = draw(graphs(min_nodes, max_nodes, directed))
    shortest = nx.shortest_path_length(graph, source, target)
    n = graph.number_of_nodes()
    chosen = (
        draw(st.one_of(st.none(), st.integers(shortest, max(shortest, n - 1)))) if horizon else None
    )
    task = make_task(graph, source, target, chosen, name="random")
    space = _fit(task, max_rollouts)
    assume(space.n_correct >= min_correct)
    strategy = logits() if logit_strategy is None else logit_strategy
    values = draw(st.lists(strategy, min_size=space.n_moves, max_size=space.n_moves))
    move_logit = np.asarray(values, dtype=np.float64)
    if not graph.is_directed():
        # the same logit on both directions of an undirected edge
        first: dict[frozenset[int], float] = {}
        for e in range(space.n_moves):
            key = frozenset((int(space.move_tail[e]), int(space.move_head[e])))
            move_logit[e] = first.setdefault(key, move_logit[e])
    return RandomInstance(
        task=space.task,
        space=space,
        base=edge_softmax(space, move_logit),
        move_logit=move_logit,
        directed=graph.is_directed(),
    )


@st.composite
def diamond_instances(
    draw: st.DrawFn,
    max_diamonds: int = 4,
    traps: bool | None = None,
    logit_strategy: st.SearchStrategy[float] | None = None,
) -> RandomInstance:
    """A directed chain of ``k`` diamonds ``j -> {u_j, d_j} -> j + 1`` with random logits.

    Each junction may also offer a dead-end trap ``j -> x_j``.  Every correct
    rollout makes ``2 k`` moves and picks ``u_j`` or ``d_j`` at every junction,
    and the available set at a junction does not depend on the prefix: the
    family on which kernel and edge SD with uniform demonstrations keep ratios
    (``docs/theory.md``, "When SD keeps ratios").
    """
    k = draw(st.integers(1, max_diamonds))
    with_traps = draw(st.booleans()) if traps is None else traps
    strategy = logits() if logit_strategy is None else logit_strategy
    graph = nx.DiGraph()
    for j in range(k):
        graph.add_edge(f"j{j}", f"u{j}", logit=draw(strategy))
        graph.add_edge(f"j{j}", f"d{j}", logit=draw(strategy))
        if with_traps:
            graph.add_edge(f"j{j}", f"x{j}", logit=draw(strategy))
        graph.add_edge(f"u{j}", f"j{j + 1}", logit=0.0)
        graph.add_edge(f"d{j}", f"j{j + 1}", logit=0.0)
    task = make_task(graph, "j0", f"j{k}", None, name=f"diamonds{k}")
    space = enumerate_rollouts(task)
    return RandomInstance(
        task=task,
        space=space,
        base=edge_softmax(space, space.move_logit),
        move_logit=space.move_logit.copy(),
        directed=True,
    )


def context_models(
    names: tuple[str, ...] = CONTEXTS,
    max_gamma: float = 20.0,
    max_lam: float = 0.999,
    zero: bool = True,
) -> st.SearchStrategy[ContextModel]:
    """Built-in context models: ``copy(lam)``, ``lam in [0, max_lam]``; ``edge``/``kernel(gamma)``,
    ``gamma in [0, max_gamma]``.  ``zero=False`` keeps strengths strictly positive."""
    low = 1e-6 if not zero else 0.0
    classes = {"copy": CopyContext, "edge": EdgeContext, "kernel": KernelContext}
    parts = []
    for name in names:
        if name not in classes:
            raise ValueError(f"unknown context model {name!r}: choose among {', '.join(CONTEXTS)}")
        high = max_lam if name == "copy" else max_gamma
        strength = st.one_of(st.floats(low, high), st.sampled_from([low, high]))
        parts.append(st.builds(classes[name], strength))
    return st.one_of(*parts)


def betas(low: float = 1e-9, high: float = 1e3, limit: bool = True) -> st.SearchStrategy[float]:
    """RL temperatures, log-uniform in ``[low, high]``, plus ``0`` (the limit) when ``limit``."""
    exponents = st.floats(math.log10(low), math.log10(high))
    values = st.one_of(
        exponents.map(lambda x: min(high, max(low, 10.0**x))), st.sampled_from([low, high])
    )
    return st.one_of(st.just(0.0), values) if limit else values


def anchors(high: float = 10.0) -> st.SearchStrategy[float]:
    """Anchor weights ``b >= 0`` of ``b KL(q || pi)`` (0 is the plain objective)."""
    return st.one_of(st.just(0.0), st.floats(0.0, high))


def demo_kinds() -> st.SearchStrategy[str]:
    """Names of demonstration distributions (:data:`tilt.context.DEMOS`)."""
    return st.sampled_from(DEMOS)


def alphas(high: float = 3.0) -> st.SearchStrategy[float]:
    """Tempering exponents for ``tempered`` demonstrations."""
    return st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, high))


def sd_methods() -> st.SearchStrategy[str]:
    """Self-distillation variants (:data:`tilt.objectives.SD_METHODS`)."""
    return st.sampled_from(SD_METHODS)


def seeds() -> st.SearchStrategy[int]:
    """Non-negative integer seeds."""
    return st.integers(0, 2**32 - 1)


def sequence_objective(
    q_log_prob: FloatArray,
    model: ContextModel,
    policy: Policy,
    demos: Policy,
    anchor: float = 0.0,
) -> float:
    """``E_{c ~ D} KL(q || T_c) + b KL(q || pi)`` through explicit teachers (brute force).

    ``q_log_prob`` is ``log q`` over the rollouts of ``policy.space``.  Cost:
    one teacher per demonstration in the support of ``D``.  ``inf`` when ``q``
    puts mass where some teacher puts none.
    """
    q_log_prob = np.asarray(q_log_prob, dtype=np.float64)
    q = np.exp(q_log_prob)
    has = q > 0
    support = np.flatnonzero(demos.prob > 0)
    teachers = model.teacher_log_prob(policy, support)
    teachers = teachers - logsumexp(teachers, axis=1, keepdims=True)  # guard rounding
    if np.isneginf(teachers[:, has]).any():
        return math.inf
    per_demo = (q[has] * (q_log_prob[has] - teachers[:, has])).sum(axis=1)
    value = float(demos.prob[support] @ per_demo)
    if anchor:
        value += anchor * float(q[has] @ (q_log_prob[has] - policy.log_prob[has]))
    return value


def _check_instances() -> list[tuple[str, Policy]]:
    """Small policies that exercise a context model: a grid with dead ends, a directed graph
    with a trap, and a policy with zero-mass rollouts (RL's ``beta -> 0`` optimum)."""
    from tilt.objectives import rl_optimum
    from tilt.policy import base_policy
    from tilt.tasks.graphs import named_task

    out = []
    for name, kind in (("grid3", "default"), ("diamonds", "random")):
        space = enumerate_rollouts(named_task(name))
        out.append((f"{name} ({kind} base)", base_policy(space, kind, seed=0)))
    grid = out[0][1]
    out.append(("grid3, RL beta->0 (incorrect rollouts have zero mass)", rl_optimum(grid)))
    return out


def check_context_model(
    model: ContextModel,
    atol: float = 1e-9,
    policies: list[tuple[str, Policy]] | None = None,
) -> None:
    """Check a context model the way tilt uses it; raise ``ValueError`` naming the first problem.

    On three small instances (``grid3``, ``diamonds`` with a random base, and a
    policy with zero-mass rollouts), or on ``policies`` (``(label, policy)``
    pairs: a model defined for fixed policies only, such as a network's
    :class:`tilt.neural.NetworkContext`, is checked on its own), with own and
    uniform demonstrations:

    * ``teacher_log_prob(policy, demos)`` returns log-probabilities of shape
      ``(len(demos), n_rollouts)``: no ``nan``/``+inf``, each row normalised
      (probabilities or a transposed block are named as such); every rollout the
      policy can sample is a demonstration, or with ``policies`` every correct one
      (the demonstrations tilt draws);
    * ``T_c(y) = 0`` wherever ``pi(y) = 0``;
    * ``tilt_score``, ``token_log_target`` and ``forward_log_prob``, if the model
      overrides them, agree with the generic forms through ``teacher_log_prob``
      within ``atol``;
    * every SD optimum of the model is a distribution (sums to 1 within 1e-12).

    Examples
    --------
    >>> from tilt.context import make_context
    >>> check_context_model(make_context("edge", 2.0))  # silent when all is well
    """
    from tilt.context import demonstrations
    from tilt.context.generic import (
        checked_teacher,
        generic_forward_log_prob,
        generic_tilt_score,
        generic_token_log_target,
    )
    from tilt.objectives import SD_METHODS, sd_optimum

    if not isinstance(model, ContextModel):
        raise TypeError(f"expected a ContextModel, got {type(model).__name__}")
    label = f"context model {getattr(model, 'name', type(model).__name__)!r}"
    for where, policy in _check_instances() if policies is None else policies:
        every = np.flatnonzero(np.isfinite(policy.log_prob))  # demonstrations pi can sample
        if policies is not None:
            every = every[policy.space.correct[every]]
        teacher = checked_teacher(model, policy, every)
        leak = np.isfinite(teacher[:, np.isneginf(policy.log_prob)])
        if leak.any():
            raise ValueError(
                f"{label} on {where}: a teacher puts mass on a rollout the policy gives none "
                "(T_c(y) must be 0 wherever pi(y) = 0)"
            )
        for kind in ("own", "uniform"):
            demos = demonstrations(policy, kind)
            pairs = (
                ("tilt_score", model.tilt_score, generic_tilt_score),
                ("token_log_target", model.token_log_target, generic_token_log_target),
                ("forward_log_prob", model.forward_log_prob, generic_forward_log_prob),
            )
            for method, fast, generic in pairs:
                if getattr(type(model), method) is getattr(ContextModel, method):
                    continue  # not overridden: the generic form is what tilt uses
                mine = np.asarray(fast(policy, demos), dtype=np.float64)
                reference = generic(model, policy, demos)
                if method == "tilt_score" and mine.shape == reference.shape:
                    # where pi(y) = 0 tilt takes S = -inf, whatever the model says
                    zero = np.isneginf(policy.log_prob)
                    mine, reference = (
                        np.where(zero, -np.inf, mine),
                        np.where(zero, -np.inf, reference),
                    )
                if mine.shape != reference.shape:
                    raise ValueError(
                        f"{label} on {where}: {method} returned shape {mine.shape}, "
                        f"expected {reference.shape}"
                    )
                both = np.isfinite(reference) & np.isfinite(mine)
                same_inf = np.array_equal(np.isneginf(mine), np.isneginf(reference))
                gap = float(np.max(np.abs(mine[both] - reference[both]), initial=0.0))
                scale = max(1.0, float(np.abs(reference[both]).max(initial=0.0)))
                if not same_inf or not gap <= atol * scale:
                    raise ValueError(
                        f"{label} on {where}, {kind} demonstrations: {method} differs from its "
                        f"generic form through teacher_log_prob (largest gap {gap:.3g}"
                        + ("" if same_inf else ", and a different set of -inf entries")
                        + ")"
                    )
            for method in SD_METHODS:
                q = sd_optimum(policy, model, method, kind)
                total = float(q.prob.sum())
                if not abs(total - 1.0) <= 1e-12:
                    raise ValueError(
                        f"{label} on {where}: the {method} SD optimum sums to {total!r}, not 1"
                    )


@st.composite
def dag_instances(
    draw: st.DrawFn,
    min_nodes: int = 3,
    max_nodes: int = 9,
    max_rollouts: int = 400,
    logit_strategy: st.SearchStrategy[float] | None = None,
    horizon: bool = True,
) -> RandomInstance:
    """A :class:`RandomInstance` on a random DAG: edges ``v -> u`` only for ``v < u``.

    Node 0 is the source and a random later node the target; a chain from the
    source to the target is always present, other forward pairs are edges with
    a drawn probability, so there are dead ends, edges past the target and
    nodes of several depths.  The horizon (optional) is lowered as in
    :func:`instances` to keep the space small.
    """
    n = draw(st.integers(min_nodes, max_nodes))
    target = draw(st.integers(1, n - 1))
    graph = nx.DiGraph()
    graph.add_nodes_from(range(n))
    middle = draw(st.lists(st.integers(1, max(1, target - 1)), unique=True, max_size=target - 1))
    chain = [0, *sorted(v for v in middle if 0 < v < target), target]
    graph.add_edges_from(zip(chain[:-1], chain[1:], strict=True))
    p = draw(st.floats(0.2, 0.8))
    pairs = [(v, u) for v in range(n) for u in range(v + 1, n)]
    draws = draw(st.lists(st.floats(0.0, 1.0), min_size=len(pairs), max_size=len(pairs)))
    graph.add_edges_from(pair for pair, w in zip(pairs, draws, strict=True) if w > 1.0 - p)
    shortest = nx.shortest_path_length(graph, 0, target)
    chosen = (
        draw(st.one_of(st.none(), st.integers(shortest, max(shortest, n - 1)))) if horizon else None
    )
    strategy = logits() if logit_strategy is None else logit_strategy
    for v, u in graph.edges:
        graph.edges[v, u]["logit"] = draw(strategy)
    task = make_task(graph, 0, target, chosen, name="dag")
    space = _fit(task, max_rollouts)
    return RandomInstance(
        task=space.task,
        space=space,
        base=edge_softmax(space, space.move_logit),
        move_logit=space.move_logit.copy(),
        directed=True,
    )
