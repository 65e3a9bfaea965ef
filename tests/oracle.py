"""A plain brute-force oracle for tilt, written independently of its vectorised engine.

Everything here follows ``/work/shared/THEORY.md`` literally, with Python
dicts and loops and no numpy:

* rollouts: recursive DFS over maximal simple paths (stop at the target, at a
  dead end, or after ``H`` moves);
* the base policy: the product, along the path, of explicit softmaxes over the
  available next nodes;
* teachers ``T_c`` of the copy / edge / kernel context models as explicit
  dicts over rollouts;
* the tilt score ``S`` by direct averaging over demonstrations, the RL and SD
  optima by their defining formulas, token SD by an explicit per-prefix
  average of the teachers' conditionals;
* measures by direct loops.

Rollouts are tuples of node *labels* (``str(node)``); a policy is a dict
``{rollout: probability}``.  Nothing here imports ``tilt``.
"""

from __future__ import annotations

import math
from collections import defaultdict

__all__ = [
    "OracleSpace",
    "oracle_space",
    "maximal_paths",
    "graph_logits",
    "edge_softmax",
    "prefix_masses",
    "conditional",
    "demonstrations",
    "copy_teacher",
    "edge_teacher",
    "kernel_teacher",
    "teachers",
    "tilt_score",
    "rl_optimum",
    "sd_sequence",
    "sd_token",
    "sd_forward",
    "accuracy",
    "pass_at_k",
    "distinct_at_k",
    "correct_entropy",
    "gap_slope",
    "ratio_distortion",
    "ood_pass_at_k",
]


class OracleSpace:
    """Rollouts of ``(G, s, t, H)`` found by DFS, on node labels.

    Attributes
    ----------
    succ : dict label -> list of labels
        Out-neighbours (neighbours, for an undirected graph), self-loops dropped.
    rollouts : list of label tuples, in DFS order
    correct : dict rollout -> bool
    """

    def __init__(self, succ, source, target, horizon):
        self.succ = succ
        self.source = source
        self.target = target
        self.horizon = horizon
        self.rollouts = maximal_paths(succ, source, target, horizon)
        self.correct = {y: y[-1] == target for y in self.rollouts}

    def avail(self, h):
        """Next nodes available after prefix ``h`` (empty at a stopped prefix)."""
        if h[-1] == self.target:
            return []
        if self.horizon is not None and len(h) - 1 >= self.horizon:
            return []
        return [u for u in self.succ[h[-1]] if u not in h]


def _label_successors(graph):
    succ = {}
    for v in graph.nodes:
        succ[str(v)] = [str(u) for u in graph.adj[v] if u != v]
    return succ


def oracle_space(graph, source, target, horizon=None):
    """Build an :class:`OracleSpace` from a networkx graph (directed or not)."""
    return OracleSpace(_label_successors(graph), str(source), str(target), horizon)


def maximal_paths(succ, source, target, horizon):
    """Every maximal simple path from ``source``, by recursive DFS."""
    out = []

    def dfs(path):
        v = path[-1]
        if v == target or (horizon is not None and len(path) - 1 >= horizon):
            out.append(tuple(path))
            return
        nxt = [u for u in succ[v] if u not in path]
        if not nxt:
            out.append(tuple(path))
            return
        for u in nxt:
            path.append(u)
            dfs(path)
            path.pop()

    dfs([source])
    return out


def graph_logits(graph):
    """``{(v, u): theta(v, u)}`` from the edge attribute ``logit`` (default 0), on labels.

    An undirected edge gives both directions the same logit.
    """
    theta = {}
    for v in graph.nodes:
        for u, data in graph.adj[v].items():
            theta[(str(v), str(u))] = float(data.get("logit", 0.0))
    return theta


def edge_softmax(space, theta):
    """``pi(y) = prod_t exp(theta(v_t, u_t)) / sum_{u' in avail(h_t)} exp(theta(v_t, u'))``."""
    policy = {}
    for y in space.rollouts:
        log_p = 0.0
        for t in range(len(y) - 1):
            h, u = y[: t + 1], y[t + 1]
            options = space.avail(h)
            peak = max(theta.get((h[-1], w), 0.0) for w in options)
            norm = peak + math.log(
                sum(math.exp(theta.get((h[-1], w), 0.0) - peak) for w in options)
            )
            log_p += theta.get((h[-1], u), 0.0) - norm
        policy[y] = math.exp(log_p)
    return policy


def prefix_masses(policy):
    """``{h: pi(h)}``: mass of the rollouts through every prefix ``h`` (rollouts included)."""
    mass = defaultdict(float)
    for y, p in policy.items():
        for t in range(1, len(y) + 1):
            mass[y[:t]] += p
    return dict(mass)


def conditional(masses, h, u):
    """``pi(u | h) = pi(h u) / pi(h)``."""
    return masses.get(h + (u,), 0.0) / masses[h]


def demonstrations(policy, space, kind="own", alpha=1.0):
    """``D(c)``: own ``pi(c) r(c) / pi(C)``, uniform ``r(c) / |C|``, tempered ``pi^alpha r``."""
    if kind == "own":
        weight = {c: policy[c] for c in space.rollouts if space.correct[c]}
    elif kind == "uniform":
        weight = {c: 1.0 for c in space.rollouts if space.correct[c]}
    elif kind == "tempered":
        weight = {
            c: policy[c] ** alpha for c in space.rollouts if space.correct[c] and policy[c] > 0
        }
    else:
        raise ValueError(kind)
    total = sum(weight.values())
    return {c: w / total for c, w in weight.items() if w > 0}


def copy_teacher(policy, space, c, lam):
    """``T_c(y) = (1 - lam) pi(y) + lam [y = c]``."""
    return {y: (1 - lam) * policy[y] + (lam if y == c else 0.0) for y in space.rollouts}


def edge_teacher(policy, space, c, gamma, masses=None):
    """``T_c(y) = prod_t pi(u_t | h_t) e^{gamma [u_t = next_c(v_t)]} / Z_t``.

    ``Z_t`` is the explicit sum over the available next nodes (no closed form).
    """
    masses = prefix_masses(policy) if masses is None else masses
    next_c = {c[i]: c[i + 1] for i in range(len(c) - 1)}
    out = {}
    for y in space.rollouts:
        if policy[y] == 0:
            out[y] = (
                0.0  # a zero-mass rollout passes through a zero-mass prefix: no conditional there
            )
            continue
        p = 1.0
        for t in range(len(y) - 1):
            h, u = y[: t + 1], y[t + 1]
            boosted = next_c.get(h[-1])

            def weight(w, h=h, boosted=boosted):
                return conditional(masses, h, w) * (math.exp(gamma) if w == boosted else 1.0)

            p *= weight(u) / sum(weight(w) for w in space.avail(h))
        out[y] = p
    return out


def _moves(y):
    return {(y[i], y[i + 1]) for i in range(len(y) - 1)}


def kernel_teacher(policy, space, c, gamma):
    """``T_c(y) ∝ pi(y) exp(gamma |E(y) ∩ E(c)|)``."""
    edges_c = _moves(c)
    raw = {y: policy[y] * math.exp(gamma * len(_moves(y) & edges_c)) for y in space.rollouts}
    total = sum(raw.values())
    return {y: w / total for y, w in raw.items()}


def teachers(policy, space, demos, name, strength):
    """``{c: T_c}`` for every demonstration ``c`` with ``D(c) > 0``."""
    if name == "copy":
        return {c: copy_teacher(policy, space, c, strength) for c in demos}
    if name == "edge":
        masses = prefix_masses(policy)
        return {c: edge_teacher(policy, space, c, strength, masses) for c in demos}
    if name == "kernel":
        return {c: kernel_teacher(policy, space, c, strength) for c in demos}
    raise ValueError(name)


def _log(x):
    return math.log(x) if x > 0 else -math.inf


def tilt_score(policy, demos, teacher_of):
    """``S(y) = sum_c D(c) (log T_c(y) - log pi(y))`` by direct averaging.

    ``-inf`` where ``pi(y) = 0``.
    """
    return {
        y: sum(d * (_log(teacher_of[c][y]) - _log(p)) for c, d in demos.items())
        if p > 0
        else -math.inf
        for y, p in policy.items()
    }


def _normalise(weights):
    total = sum(weights.values())
    return {y: w / total for y, w in weights.items()}


def rl_optimum(policy, space, beta):
    """``pi(y) exp(r(y) / beta) / Z``; ``beta = 0``: ``pi(y) r(y) / pi(C)``."""
    if beta == 0:
        return _normalise({y: (p if space.correct[y] else 0.0) for y, p in policy.items()})
    # divide by exp(1 / beta) (the correct weight) to stay finite for tiny beta
    return _normalise(
        {y: p * (1.0 if space.correct[y] else math.exp(-1.0 / beta)) for y, p in policy.items()}
    )


def sd_sequence(policy, score, anchor=0.0):
    """``q*(y) ∝ pi(y) exp(S(y) / (1 + b))``."""
    peak = max(score.values())
    return _normalise(
        {y: p * math.exp((score[y] - peak) / (1 + anchor)) for y, p in policy.items()}
    )


def sd_token(policy, space, demos, teacher_of, anchor=0.0):
    """Token-SD fixed point, by an explicit per-prefix computation.

    At each prefix ``h`` with children: ``q(u | h) ∝ exp((E_c[log T_c(u | h) | T_c(h) > 0]
    + b log pi(u | h)) / (1 + b))``; no demonstration reaching ``h``: ``q(. | h) = pi(. | h)``.
    """
    own = prefix_masses(policy)
    teacher_masses = {c: prefix_masses(t) for c, t in teacher_of.items()}
    q_cond = {}
    prefixes = {y[:t] for y in space.rollouts for t in range(1, len(y) + 1)}
    for h in prefixes:
        children = space.avail(h)
        if not children:
            continue
        numerator = dict.fromkeys(children, 0.0)
        denominator = 0.0
        for c, d in demos.items():
            m = teacher_masses[c]
            if m.get(h, 0.0) <= 0:
                continue
            denominator += d
            for u in children:
                numerator[u] += d * _log(m.get(h + (u,), 0.0) / m[h])
        if denominator == 0:
            for u in children:
                # no signal: keep pi(u | h); at a zero-mass h (never reached by q either) any choice
                q_cond[h + (u,)] = (
                    conditional(own, h, u) if own.get(h, 0.0) > 0 else 1 / len(children)
                )
            continue
        logits = {
            u: (
                numerator[u] / denominator
                + (anchor * _log(conditional(own, h, u)) if anchor else 0.0)
            )
            / (1 + anchor)
            for u in children
        }
        peak = max(logits.values())
        total = sum(math.exp(v - peak) for v in logits.values())
        for u in children:
            q_cond[h + (u,)] = math.exp(logits[u] - peak) / total
    return _product(space, q_cond)


def sd_forward(policy, demos, teacher_of):
    """``q(y) = sum_c D(c) T_c(y)``."""
    return {y: sum(d * teacher_of[c][y] for c, d in demos.items()) for y in policy}


# ------------------------------------------------------------------ measures


def accuracy(policy, space):
    return sum(p for y, p in policy.items() if space.correct[y])


def pass_at_k(policy, space, k):
    return 1.0 - (1.0 - accuracy(policy, space)) ** k


def distinct_at_k(policy, space, k):
    return sum(1.0 - (1.0 - p) ** k for y, p in policy.items() if space.correct[y])


def correct_entropy(policy, space):
    total = accuracy(policy, space)
    h = 0.0
    for y, p in policy.items():
        if space.correct[y] and p > 0:
            h -= p / total * math.log(p / total)
    return h


def gap_slope(policy, base, space):
    """Least-squares slope of ``log q`` on ``log pi0`` over correct ``y`` with ``q(y) > 0``."""
    pts = [
        (math.log(base[y]), math.log(p)) for y, p in policy.items() if space.correct[y] and p > 0
    ]
    n = len(pts)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    sxy = sum((x - mx) * (y - my) for x, y in pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sxy / sxx


def ratio_distortion(policy, base, space):
    diffs = [math.log(p) - math.log(base[y]) for y, p in policy.items() if space.correct[y]]
    return max(diffs) - min(diffs)


def ood_pass_at_k(policy, space, k):
    """``{e: 1 - (1 - q(C without e))^k}`` for every move ``e`` some correct rollout makes.

    Blocking ``e`` makes every rollout through ``e`` fail: ``q(C without e)`` is
    recomputed by a loop over the correct rollouts that avoid ``e``.
    """
    used = sorted({e for y in space.rollouts if space.correct[y] for e in _moves(y)})
    values = {}
    for e in used:
        survive = sum(p for y, p in policy.items() if space.correct[y] and e not in _moves(y))
        values[e] = 1.0 - (1.0 - survive) ** k
    return values


# ------------------------------------------------------------------ bridging


def label_rollouts(rollout_space):
    """The rollouts of a ``tilt`` space as label tuples, in its order (duck-typed)."""
    labels = rollout_space.labels
    return [tuple(labels[i] for i in row if i >= 0) for row in rollout_space.paths()]


def aligned(rollout_space, mapping):
    """``[mapping[y] for y in the space's rollouts]``, as a list of floats."""
    return [float(mapping[y]) for y in label_rollouts(rollout_space)]


def random_instances():
    """A Hypothesis strategy of small random instances ``(graph, source, target, horizon)``.

    3 to 6 nodes, directed or undirected, random edge subsets (an occasional
    self-loop), most with a planted path from source to target, logits in [-3, 3],
    horizon ``None`` or 0..n.  Source 0, target n-1.
    """
    import networkx as nx
    from hypothesis import strategies as st

    @st.composite
    def instances(draw):
        n = draw(st.integers(3, 6))
        directed = draw(st.booleans())
        pairs = [(i, j) for i in range(n) for j in range(n) if i != j and (directed or i < j)]
        chosen = draw(
            st.lists(st.sampled_from(pairs), unique=True, min_size=1, max_size=len(pairs))
        )
        graph = nx.DiGraph() if directed else nx.Graph()
        graph.add_nodes_from(range(n))
        for i, j in chosen:
            graph.add_edge(i, j, logit=draw(st.floats(-3, 3, allow_nan=False)))
        if draw(st.booleans()):
            loop = draw(st.integers(0, n - 1))
            graph.add_edge(loop, loop, logit=5.0)
        if draw(st.sampled_from([True, True, True, False])):
            # most instances get a path 0 -> ... -> n-1 through some of the other nodes
            middle = draw(st.permutations(list(range(1, n - 1))))[: draw(st.integers(0, n - 2))]
            chain = [0, *middle, n - 1]
            for i, j in zip(chain, chain[1:], strict=False):
                if not graph.has_edge(i, j):
                    graph.add_edge(i, j, logit=draw(st.floats(-3, 3, allow_nan=False)))
        horizon = draw(st.none() | st.none() | st.integers(0, n))
        return graph, 0, n - 1, horizon

    return instances()


# ------------------------------------------------- per-prefix objectives (practitioners')


def _bisect(f, lo, hi, iters=200):
    """Root of an increasing ``f`` in ``[lo, hi]`` by plain bisection (``f(lo) <= 0 <= f(hi)``)."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _teacher_rows(policy, space, h, demos, teacher_masses):
    """``[(D(c), {u: T_c(u | h)})]`` over the demonstrations whose teacher reaches ``h``."""
    rows = []
    for c, d in demos.items():
        m = teacher_masses[c]
        if m.get(h, 0.0) <= 0 or d <= 0:
            continue
        rows.append((d, {u: m.get(h + (u,), 0.0) / m[h] for u in space.avail(h)}))
    return rows


def _jsd_rule(a):
    """``q(. | h)`` from ``E_c log(1 - a + a T_c(u) / q(u)) = kappa`` by nested bisection."""

    def rule(rows, children):
        total = sum(d for d, _ in rows)
        live = [u for u in children if any(t[u] > 0 for _, t in rows)]

        def phi(u, t):
            return sum(d * math.log(1 - a + a * r[u] * math.exp(-t)) for d, r in rows) / total

        def q_of(kappa):
            # phi(u, .) decreases from +inf to log(1 - a): solve phi(u, t) = kappa for t
            return {
                u: math.exp(_bisect(lambda t, u=u: kappa - phi(u, t), -800.0, 50.0, 100))
                for u in live
            }

        kappa = _bisect(lambda k: 1.0 - sum(q_of(k).values()), math.log(1 - a) + 1e-300, 0.0, 80)
        q = q_of(kappa)
        s = sum(q.values())
        return {u: q.get(u, 0.0) / s for u in children}

    return rule


def _forward_rule(rows, children):
    total = sum(d for d, _ in rows)
    return {u: sum(d * r[u] for d, r in rows) / total for u in children}


def _per_prefix(policy, space, demos, teacher_of, rule):
    """The per-prefix fixed point ``q(. | h) = rule(rows at h)``, as a dict over rollouts."""
    own = prefix_masses(policy)
    teacher_masses = {c: prefix_masses(t) for c, t in teacher_of.items()}
    prefixes = {y[:t] for y in space.rollouts for t in range(1, len(y) + 1)}
    q_cond = {}
    for h in prefixes:
        children = space.avail(h)
        if not children:
            continue
        rows = _teacher_rows(policy, space, h, demos, teacher_masses)
        if not rows:
            for u in children:
                p = conditional(own, h, u) if own.get(h, 0) > 0 else 1 / len(children)
                q_cond[h + (u,)] = p
            continue
        for u, value in rule(rows, children).items():
            q_cond[h + (u,)] = value
    return _product(space, q_cond)


def _product(space, q_cond):
    out = {}
    for y in space.rollouts:
        p = 1.0
        for t in range(1, len(y)):
            p *= q_cond[y[: t + 1]]
        out[y] = p
    return out


def sd_token_forward(policy, space, demos, teacher_of):
    """``q(u | h) = sum_c D(c) T_c(u | h) / sum_c D(c)`` over the teachers reaching ``h``."""
    return _per_prefix(policy, space, demos, teacher_of, _forward_rule)


def sd_jsd(policy, space, demos, teacher_of, a):
    """Per-token generalised JSD fixed point, by nested bisection at every prefix."""
    return _per_prefix(policy, space, demos, teacher_of, _jsd_rule(a))


def _log_target(policy, space, demos, teacher_of):
    """``{hu: E_c log T_c(u | h)}`` (``log pi(u | h)`` where no teacher reaches ``h``)."""
    own = prefix_masses(policy)
    teacher_masses = {c: prefix_masses(t) for c, t in teacher_of.items()}
    prefixes = {y[:t] for y in space.rollouts for t in range(1, len(y) + 1)}
    out = {}
    for h in prefixes:
        children = space.avail(h)
        rows = _teacher_rows(policy, space, h, demos, teacher_masses) if children else []
        total = sum(d for d, _ in rows)
        for u in children:
            if rows:
                out[h + (u,)] = sum(d * _log(r[u]) for d, r in rows) / total
            else:
                p = conditional(own, h, u) if own.get(h, 0) > 0 else 1 / len(children)
                out[h + (u,)] = _log(p)
    return out


def sd_discount(policy, space, demos, teacher_of, g):
    """``q(u | h) ∝ G(u | h) exp(g V(hu))`` with ``V`` by recursion from the leaves."""
    target = _log_target(policy, space, demos, teacher_of)
    memo = {}

    def value(h):
        if h not in memo:
            children = space.avail(h)
            if not children:
                memo[h] = 0.0
            else:
                terms = [target[h + (u,)] + g * value(h + (u,)) for u in children]
                peak = max(terms)
                memo[h] = (
                    -math.inf
                    if peak == -math.inf
                    else peak + math.log(sum(math.exp(x - peak) for x in terms))
                )
        return memo[h]

    q_cond = {}
    for y in space.rollouts:
        for t in range(1, len(y)):
            h, u = y[:t], y[t]
            q_cond[h + (u,)] = math.exp(target[h + (u,)] + g * value(h + (u,)) - value(h))
    return _product(space, q_cond)


def sd_length_weighted(policy, space, demos, teacher_of):
    """``rho(hu) (log q(u | h) - g(u | h)) = kappa_h``, ``rho(hu) = E_q[1/|y| | hu]``.

    Solved recursively from the leaves, one bisection per prefix.
    """
    target = _log_target(policy, space, demos, teacher_of)
    q_cond = {}
    rho = {}

    def solve(h):
        children = space.avail(h)
        if not children:
            rho[h] = 1.0 / max(len(h) - 1, 1)
            return
        for u in children:
            solve(h + (u,))
        r = {u: rho[h + (u,)] for u in children}
        gl = {u: target[h + (u,)] for u in children}

        def excess(kappa):
            terms = [gl[u] + kappa / r[u] for u in children]
            peak = max(terms)
            return peak + math.log(sum(math.exp(x - peak) for x in terms))

        kappa = _bisect(excess, -1e4, 1e4, 300)
        q = {u: math.exp(gl[u] + kappa / r[u]) for u in children}
        s = sum(q.values())
        for u in children:
            q_cond[h + (u,)] = q[u] / s
        rho[h] = sum(q_cond[h + (u,)] * r[u] for u in children)

    solve((space.source,))
    return _product(space, q_cond)
