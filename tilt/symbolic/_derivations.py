"""Symbolic derivations (sympy) of the theory's closed forms on tiny rollout spaces.

Each function derives one claim of ``docs/theory.md`` from its definition, for
a space of two or three rollouts with symbolic probabilities, and returns a
:class:`Derivation`: the intermediate steps and the *residuals*, expressions
that sympy simplifies to exactly ``0`` when the claim holds.  ``tests/
test_symbolic.py`` asserts every residual is ``0``; ``python -m tilt.symbolic``
prints them all (the output is reproduced in ``docs/theory.md``).

* :func:`rl_derivation` — the RL optimum from its Lagrangian, the cancellation
  that keeps ratios among correct rollouts, and the ``beta -> 0`` limit;
* :func:`matched_beta_derivation` — ``beta = 1 / log(a (1 - p) / (p (1 - a)))``;
* :func:`sd_sequence_derivation` — the stationarity (KKT) conditions of
  ``E_c KL(q || T_c) + b KL(q || pi)``, their solution
  ``pi exp(S / (1 + b)) / Z``, convexity, and Gibbs' identity;
* :func:`copy_tilt_derivation` — copy's ``S`` from its teachers;
* :func:`copy_monotonicity_derivation` — ``dS/dpi(y) > 0`` on the correct set
  with the policy's own demonstrations (and ``< 0`` with uniform ones);
* :func:`edge_token_derivation` — edge's per-prefix target and token form;
* :func:`kernel_tilt_derivation` — kernel's ``S`` from edge marginals.

This module imports sympy (``pip install tilt[symbolic]``); nothing else in
``tilt`` imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

try:
    import sympy as sp
except ImportError as exc:  # pragma: no cover - exercised only without sympy
    raise ImportError("tilt.symbolic needs sympy: pip install 'tilt[symbolic]'") from exc

__all__ = [
    "derivations",
    "Derivation",
    "rl_derivation",
    "rl_ratio_proof",
    "matched_beta_derivation",
    "sd_sequence_derivation",
    "sd_stationarity_proof",
    "copy_tilt_derivation",
    "copy_monotonicity_derivation",
    "copy_monotonicity_proof",
    "edge_token_derivation",
    "kernel_tilt_derivation",
    "all_derivations",
]


@dataclass(frozen=True)
class Derivation:
    """A derived claim: the steps taken and the residuals that must vanish.

    Attributes
    ----------
    claim : str
        The statement, in the notation of ``docs/theory.md``.
    steps : tuple of (str, sympy expression)
        Labelled intermediate results, in order.
    residuals : dict of str -> sympy expression
        Each is ``simplify(derived - claimed)`` (or a difference to ``True``
        for a sign): the claim holds when every residual is ``0``.
    facts : dict of str -> bool or None
        Sign facts sympy decides from the symbols' assumptions (``True`` when
        proved; ``None`` when undecided).
    """

    claim: str
    steps: tuple[tuple[str, sp.Basic], ...]
    residuals: dict[str, sp.Basic] = field(default_factory=dict)
    facts: dict[str, bool | None] = field(default_factory=dict)

    @property
    def holds(self) -> bool:
        """Every residual is exactly ``0`` and every fact is ``True``."""
        return all(r == 0 for r in self.residuals.values()) and all(
            f is True for f in self.facts.values()
        )

    def report(self) -> str:
        """Plain-text rendering: claim, steps, residuals, facts."""
        lines = [self.claim]
        lines += [f"  {label}: {sp.sstr(expr)}" for label, expr in self.steps]
        lines += [f"  residual {label}: {sp.sstr(expr)}" for label, expr in self.residuals.items()]
        lines += [f"  fact {label}: {value}" for label, value in self.facts.items()]
        return "\n".join(lines)


def _zero(expr: sp.Basic) -> sp.Basic:
    """Reduce ``expr``: expand logs (every symbol is positive) and cancel; simplify if needed."""
    expanded = sp.expand(sp.expand_log(sp.powsimp(expr), force=True))
    if expanded == 0:
        return expanded
    return sp.simplify(sp.expand_log(sp.simplify(expr), force=True))


def _log_zero(derived: sp.Basic, claimed: sp.Basic) -> sp.Basic:
    """``log(derived) - log(claimed)`` reduced (both positive): ``0`` iff they are equal."""
    return _zero(
        sp.expand_log(sp.log(derived), force=True) - sp.expand_log(sp.log(claimed), force=True)
    )


# ----------------------------------------------------------------------------
# RL


def rl_derivation() -> Derivation:
    """RL optimum on ``Y = {y1, y2, y3}`` with ``C = {y1, y2}``, from the Lagrangian.

    Maximise ``sum_y q_y r_y - beta sum_y q_y log(q_y / p_y)`` subject to
    ``sum_y q_y = 1``.  Stationarity gives ``q_y = p_y exp((r_y - beta - mu) / beta)``;
    the constraint fixes ``mu``; the second derivative ``-beta / q_y < 0``
    makes it the maximum.  Ratios among correct rollouts: ``q1/q2 = p1/p2``.
    """
    beta, mu = sp.Symbol("beta", positive=True), sp.Symbol("mu", real=True)
    p = sp.symbols("p1:4", positive=True)
    q = sp.symbols("q1:4", positive=True)
    r = (1, 1, 0)
    lagrangian = (
        sum(qi * ri for qi, ri in zip(q, r, strict=True))
        - beta * sum(qi * sp.log(qi / pi) for qi, pi in zip(q, p, strict=True))
        - mu * (sum(q) - 1)
    )
    stationary = [sp.diff(lagrangian, qi) for qi in q]
    solved = [sp.solve(eq, qi)[0] for eq, qi in zip(stationary, q, strict=True)]
    mu_value = sp.solve(sp.Eq(sum(solved), 1), mu)[0]
    optimum = [sp.simplify(s.subs(mu, mu_value)) for s in solved]
    z = sum(pi * sp.exp(ri / beta) for pi, ri in zip(p, r, strict=True))
    gibbs = [pi * sp.exp(ri / beta) / z for pi, ri in zip(p, r, strict=True)]
    hessian = [sp.diff(lagrangian, qi, 2) for qi in q]
    limit = [sp.limit(g, beta, 0, "+") for g in gibbs]
    return Derivation(
        claim=(
            "RL: q_y = p_y exp(r_y / beta) / Z; q1/q2 = p1/p2 for correct y1, y2; "
            "beta -> 0: p r / p(C)"
        ),
        steps=(
            ("Lagrangian", lagrangian),
            ("dL/dq1 = 0", stationary[0]),
            ("dL/dq3 = 0", stationary[2]),
            ("q1 from stationarity", solved[0]),
            ("mu from sum q = 1", mu_value),
            ("q1", optimum[0]),
            ("q3", optimum[2]),
            ("d2L/dq1^2", hessian[0]),
            ("lim beta->0 q1", limit[0]),
            ("lim beta->0 q3", limit[2]),
        ),
        residuals={
            **{
                f"q{i + 1} - p{i + 1} exp(r/beta)/Z": _zero(o - g)
                for i, (o, g) in enumerate(zip(optimum, gibbs, strict=True))
            },
            "q1/q2 - p1/p2": _zero(optimum[0] / optimum[1] - p[0] / p[1]),
            "lim q1 - p1/(p1 + p2)": _zero(limit[0] - p[0] / (p[0] + p[1])),
            "lim q3": limit[2],
        },
        facts={f"d2L/dq{i + 1}^2 < 0": sp.ask(sp.Q.negative(h)) for i, h in enumerate(hessian)},
    )


def rl_ratio_proof() -> sp.Basic:
    """``simplify(q1/q2 - p1/p2)`` for the RL optimum: exactly ``0``."""
    return rl_derivation().residuals["q1/q2 - p1/p2"]


def matched_beta_derivation() -> Derivation:
    """Solve ``pi_RL(C) = a`` for ``beta``, with ``p = pi(C)``.

    ``p e^{1/beta} / (p e^{1/beta} + 1 - p) = a`` gives
    ``beta = 1 / log(a (1 - p) / (p (1 - a)))``; positive iff ``a > p``.
    """
    a, p, beta = sp.symbols("a p beta", positive=True)
    accuracy = p * sp.exp(1 / beta) / (p * sp.exp(1 / beta) + 1 - p)
    solutions = sp.solve(sp.Eq(accuracy, a), beta)
    claimed = 1 / sp.log(a * (1 - p) / (p * (1 - a)))
    return Derivation(
        claim=(
            "matched accuracy: beta = 1 / log(a (1 - p) / (p (1 - a))), "
            "a real beta > 0 iff p < a < 1"
        ),
        steps=(("pi_RL(C)", accuracy), ("solve pi_RL(C) = a for beta", solutions[0])),
        residuals={
            "solution - claimed": _zero(solutions[0] - claimed),
            "pi_RL(C) at claimed beta - a": _zero(accuracy.subs(beta, claimed) - a),
        },
    )


# ----------------------------------------------------------------------------
# sequence SD


def sd_sequence_derivation() -> Derivation:
    """Stationarity of ``J(q) = sum_c D_c KL(q || T_c) + b KL(q || pi)`` on three rollouts.

    Two demonstrations with weights ``D1, D2 = 1 - D1``, teachers ``T_cy > 0``,
    policy ``p_y > 0``.  The Lagrangian ``J + mu (sum q - 1)`` is stationary at
    ``q_y ∝ exp((sum_c D_c log T_cy + b log p_y) / (1 + b))``, which equals
    ``p_y exp(S_y / (1 + b)) / Z`` with ``S_y = sum_c D_c log(T_cy / p_y)``.
    The Hessian is diagonal with ``(1 + b) / q_y > 0``: ``J`` is strictly convex, so
    this is the unique minimum; and ``J(q) = (1 + b) KL(q || q*) - (1 + b) log Z``
    for every ``q`` (Gibbs), checked with ``q3 = 1 - q1 - q2``.
    """
    d1, b = sp.Symbol("D1", positive=True), sp.Symbol("b", nonnegative=True)
    mu = sp.Symbol("mu", real=True)
    demo_weight = (d1, 1 - d1)
    p = sp.symbols("p1:4", positive=True)
    q = sp.symbols("q1:4", positive=True)
    t = [[sp.Symbol(f"T{c + 1}{y + 1}", positive=True) for y in range(3)] for c in range(2)]

    def objective(qs: list[sp.Basic] | tuple[sp.Basic, ...]) -> sp.Basic:
        distill = sum(
            w * sum(qy * (sp.log(qy) - sp.log(t[c][y])) for y, qy in enumerate(qs))
            for c, w in enumerate(demo_weight)
        )
        return distill + b * sum(
            qy * (sp.log(qy) - sp.log(py)) for qy, py in zip(qs, p, strict=True)
        )

    lagrangian = objective(q) + mu * (sum(q) - 1)
    stationary = [sp.expand(sp.diff(lagrangian, qi)) for qi in q]
    solved = [sp.solve(eq, qi)[0] for eq, qi in zip(stationary, q, strict=True)]
    # every solution is exp(-mu / (1 + b)) K_y: sum q = 1 fixes exp(-mu / (1 + b)) = 1 / sum K
    kernel = [sp.powsimp(s.subs(mu, 0)) for s in solved]
    common = sp.exp(-mu / (1 + b))
    score = [
        sum(w * (sp.log(t[c][y]) - sp.log(p[y])) for c, w in enumerate(demo_weight))
        for y in range(3)
    ]
    weights = [p[y] * sp.exp(score[y] / (1 + b)) for y in range(3)]
    z = sum(weights)
    hessian = [sp.simplify(sp.diff(lagrangian, qi, 2)) for qi in q]
    # Gibbs' identity on the simplex q3 = 1 - q1 - q2 (log q* = log w - log Z)
    q_on_simplex = [q[0], q[1], 1 - q[0] - q[1]]
    log_claimed = [sp.log(p[y]) + score[y] / (1 + b) - sp.log(z) for y in range(3)]
    kl = sum(qy * (sp.log(qy) - lc) for qy, lc in zip(q_on_simplex, log_claimed, strict=True))
    gibbs = objective(q_on_simplex) - ((1 + b) * kl - (1 + b) * sp.log(z))
    return Derivation(
        claim="sequence SD: argmin_q E_c KL(q || T_c) + b KL(q || pi) = pi exp(S / (1 + b)) / Z",
        steps=(
            ("dL/dq1 = 0", stationary[0]),
            ("q1 from stationarity", solved[0]),
            ("K1 = q1 exp(mu / (1 + b))", kernel[0]),
            ("S(y1)", score[0]),
            ("d2L/dq1^2", hessian[0]),
        ),
        residuals={
            **{
                f"q{y + 1} / K{y + 1} - exp(-mu/(1+b))": _zero(solved[y] / kernel[y] - common)
                for y in range(3)
            },
            # K_y = e^{-1} p_y exp(S_y / (1 + b)) for every y,
            # so q = K / sum K = pi exp(S / (1 + b)) / Z
            **{
                f"log K{y + 1} - log(p{y + 1} exp(S{y + 1}/(1+b))) + 1": _log_zero(
                    kernel[y], weights[y] * sp.exp(-1)
                )
                for y in range(3)
            },
            "J(q) - [(1+b) KL(q||q*) - (1+b) log Z]": _zero(gibbs),
        },
        facts={f"d2L/dq{i + 1}^2 > 0": sp.ask(sp.Q.positive(h)) for i, h in enumerate(hessian)},
    )


def sd_stationarity_proof() -> sp.Basic:
    """Sum of the residuals ``q*_y - pi_y exp(S_y / (1 + b)) / Z``: exactly ``0``."""
    residuals = sd_sequence_derivation().residuals
    return sp.simplify(sum(v for k, v in residuals.items() if k.startswith("q")))


# ----------------------------------------------------------------------------
# copy


def copy_tilt_derivation() -> Derivation:
    """Copy's tilt score from its teachers, on three rollouts all in the support of ``D``.

    ``T_c(y) = (1 - lam) p_y + lam [y = c]``, so ``log T_c(y) - log p_y`` is
    ``log(1 - lam)`` for ``c != y`` and ``log(1 - lam + lam / p_y)`` for ``c = y``;
    averaging over ``D`` (``D1 + D2 + D3 = 1``):
    ``S(y) = log(1 - lam) + D_y log(1 + lam / ((1 - lam) p_y))``.
    """
    lam = sp.Symbol("lam", positive=True)
    p = sp.symbols("p1:4", positive=True)
    d1, d2 = sp.symbols("D1 D2", positive=True)
    demos = (d1, d2, 1 - d1 - d2)

    def teacher(c: int, y: int) -> sp.Basic:
        return (1 - lam) * p[y] + (lam if c == y else 0)

    score = [
        sum(demos[c] * (sp.log(teacher(c, y)) - sp.log(p[y])) for c in range(3)) for y in range(3)
    ]
    claimed = [sp.log(1 - lam) + demos[y] * sp.log(1 + lam / ((1 - lam) * p[y])) for y in range(3)]
    # lam < 1: substitute lam = s / (1 + s) with s > 0 so that 1 - lam > 0 is known to sympy
    s = sp.Symbol("s", positive=True)
    residuals = {
        f"S{y + 1} - closed form": _zero((score[y] - claimed[y]).subs(lam, s / (1 + s)))
        for y in range(3)
    }
    return Derivation(
        claim="copy: S(y) = log(1 - lam) + D(y) log(1 + lam / ((1 - lam) pi(y)))",
        steps=(("S(y1) by definition", score[0]), ("closed form", claimed[0])),
        residuals=residuals,
    )


def copy_monotonicity_derivation() -> Derivation:
    """With own demonstrations ``D = pi / pi(C)``, copy's ``S`` increases in ``pi(y)`` on ``C``.

    ``S(p) = log(1 - lam) + (p / A) log(1 + k / p)`` with ``k = lam / (1 - lam)``
    and ``A = pi(C)``.  ``dS/dp = g(x) / A`` with ``x = k / p`` and
    ``g(x) = log(1 + x) - x / (1 + x)``; ``g(0) = 0`` and ``g'(x) = x / (1 + x)^2 > 0``,
    so ``g(x) > 0`` for ``x > 0``: ``S`` is strictly increasing.  With uniform
    demonstrations ``D(y) = 1 / n`` instead, ``dS/dp = -k / (n p (p + k)) < 0``.
    """
    p, a, k, x, n = sp.symbols("p A k x n", positive=True)
    score_own = (p / a) * sp.log(1 + k / p)  # log(1 - lam) is constant
    derivative = sp.diff(score_own, p)
    g = sp.log(1 + x) - x / (1 + x)
    g_prime = sp.simplify(sp.diff(g, x))
    score_uniform = sp.log(1 + k / p) / n
    uniform_derivative = sp.simplify(sp.diff(score_uniform, p))
    return Derivation(
        claim="copy, own demos: dS/dpi(y) = g(k/pi(y)) / pi(C) > 0 with g(x) = log(1+x) - x/(1+x)",
        steps=(
            ("S(p) - log(1 - lam)", score_own),
            ("dS/dp", sp.simplify(derivative)),
            ("g(x)", g),
            ("g'(x)", g_prime),
            ("uniform demos: dS/dp", uniform_derivative),
        ),
        residuals={
            "dS/dp - g(k/p)/A": _zero(derivative - g.subs(x, k / p) / a),
            "g(0)": g.subs(x, 0),
            "g'(x) - x/(1+x)^2": _zero(g_prime - x / (1 + x) ** 2),
            "uniform: dS/dp + k/(n p (p+k))": _zero(uniform_derivative + k / (n * p * (p + k))),
        },
        facts={
            "g'(x) > 0 for x > 0": sp.ask(sp.Q.positive(g_prime)),
            "uniform: dS/dp < 0": sp.ask(sp.Q.negative(uniform_derivative)),
        },
    )


def copy_monotonicity_proof() -> sp.Basic:
    """``simplify(dS/dp - g(k/p)/A)``: exactly ``0`` (see :func:`copy_monotonicity_derivation`)."""
    return copy_monotonicity_derivation().residuals["dS/dp - g(k/p)/A"]


# ----------------------------------------------------------------------------
# edge and kernel


def edge_token_derivation() -> Derivation:
    """Edge's expected teacher conditional at one prefix with three available nodes.

    ``pi(u_j | h) = p_j``; a demonstration's next node after ``v`` is ``u_j`` with
    probability ``m_j`` (or none of them with ``1 - m1 - m2 - m3``).  The teacher
    for ``u_j`` is ``p_u e^{gamma [u = u_j]} / (1 + (e^gamma - 1) p_j)``; for none, ``p_u``.
    Then ``E_c log T_c(u1 | h) = log p1 + gamma m1 - L(h)`` with
    ``L(h) = sum_j m_j log(1 + (e^gamma - 1) p_j)``, and the token fixed point is
    ``q(u | h) ∝ p_u exp(gamma m_u)``.
    """
    gamma = sp.Symbol("gamma", positive=True)
    p = sp.symbols("p1:4", positive=True)  # the identity needs no p1 + p2 + p3 = 1
    m = sp.symbols("m1:4", positive=True)
    boost = sp.exp(gamma) - 1

    def teacher(u: int, j: int | None) -> sp.Basic:
        if j is None:
            return p[u]
        return p[u] * sp.exp(gamma * (1 if u == j else 0)) / (1 + boost * p[j])

    expected = [
        sum(m[j] * sp.log(teacher(u, j)) for j in range(3))
        + (1 - sum(m)) * sp.log(teacher(u, None))
        for u in range(3)
    ]
    big_l = sum(m[j] * sp.log(1 + boost * p[j]) for j in range(3))
    claimed = [sp.log(p[u]) + gamma * m[u] - big_l for u in range(3)]
    form = [sp.log(p[u]) + gamma * m[u] for u in range(3)]
    return Derivation(
        claim=(
            "edge: E_c log T_c(u|h) = log pi(u|h) + gamma m(v,u) - L(h); "
            "token q(u|h) ∝ pi(u|h) e^{gamma m(v,u)}"
        ),
        steps=(("E_c log T_c(u1|h)", expected[0]), ("L(h)", big_l)),
        residuals={
            **{
                f"E log T(u{u + 1}|h) - closed form": _zero(expected[u] - claimed[u])
                for u in range(3)
            },
            # the token fixed point q(u|h) ∝ exp(E log T(u|h)): L(h) cancels in every log-ratio
            **{
                f"log q(u1|h)/q(u{u + 1}|h) - log p1 e^(g m1)/(p{u + 1} e^(g m{u + 1}))": _zero(
                    (expected[0] - expected[u]) - (form[0] - form[u])
                )
                for u in (1, 2)
            },
        },
    )


def kernel_tilt_derivation() -> Derivation:
    """Kernel's tilt score on three rollouts with move sets ``{a, b}``, ``{a, c}``, ``{d}``.

    ``T_c(y) = p_y exp(gamma |E(y) ∩ E(c)|) / Z(c)``, so
    ``S(y) = gamma sum_{e in E(y)} m(e) - sum_c D_c log Z(c)``, ``m(e) = sum_{c : e in E(c)} D_c``.
    """
    gamma = sp.Symbol("gamma", positive=True)
    p = sp.symbols("p1:4", positive=True)
    d1, d2 = sp.symbols("D1 D2", positive=True)
    demos = (d1, d2, 1 - d1 - d2)
    moves = ({"a", "b"}, {"a", "c"}, {"d"})

    def z(c: int) -> sp.Basic:
        return sum(p[y] * sp.exp(gamma * len(moves[y] & moves[c])) for y in range(3))

    score = [
        sum(demos[c] * (gamma * len(moves[y] & moves[c]) - sp.log(z(c))) for c in range(3))
        for y in range(3)
    ]
    marginal = {e: sum(demos[c] for c in range(3) if e in moves[c]) for e in "abcd"}
    constant = sum(demos[c] * sp.log(z(c)) for c in range(3))
    claimed = [gamma * sum(marginal[e] for e in moves[y]) - constant for y in range(3)]
    return Derivation(
        claim="kernel: S(y) = gamma sum_{e in E(y)} m(e) - E_c log Z(c)",
        steps=(("S(y1) by definition", score[0]), ("m(a)", marginal["a"])),
        residuals={f"S{y + 1} - closed form": _zero(score[y] - claimed[y]) for y in range(3)},
    )


def derivations() -> dict[str, Callable[[], Derivation]]:
    return {
        "rl": rl_derivation,
        "matched_beta": matched_beta_derivation,
        "sd_sequence": sd_sequence_derivation,
        "copy_tilt": copy_tilt_derivation,
        "copy_monotonicity": copy_monotonicity_derivation,
        "edge_token": edge_token_derivation,
        "kernel_tilt": kernel_tilt_derivation,
    }


def all_derivations() -> dict[str, Derivation]:
    """Every derivation of this module, by name."""
    return {name: derive() for name, derive in derivations().items()}
