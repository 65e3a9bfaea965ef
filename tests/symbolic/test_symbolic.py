"""Symbolic derivations (tilt.symbolic): every residual simplifies to exactly 0.

The residuals are sympy expressions ``derived - claimed``; ``== 0`` is exact
structural equality with sympy's zero, so a wrong closed form cannot pass.
The numeric cross-checks substitute numbers into the derived expressions and
compare them with tilt's float computations on the same tiny spaces.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

sp = pytest.importorskip("sympy")

from tilt.objectives import matched_beta  # noqa: E402
from tilt.symbolic import _derivations as symbolic  # noqa: E402


@pytest.fixture(scope="module")
def derivations():
    return symbolic.all_derivations()


NAMES = [
    "rl",
    "matched_beta",
    "sd_sequence",
    "copy_tilt",
    "copy_monotonicity",
    "edge_token",
    "kernel_tilt",
]


@pytest.mark.parametrize("name", NAMES)
def test_every_residual_is_exactly_zero(derivations, name):
    derivation = derivations[name]
    assert derivation.residuals, "a derivation must check something"
    for label, residual in derivation.residuals.items():
        assert residual == 0, f"{name}: {label} = {residual}"


@pytest.mark.parametrize("name", NAMES)
def test_every_sign_fact_is_proved(derivations, name):
    for label, fact in derivations[name].facts.items():
        assert fact is True, f"{name}: {label} is {fact}"
    assert derivations[name].holds


def test_named_proofs_are_zero():
    assert symbolic.rl_ratio_proof() == 0
    assert symbolic.sd_stationarity_proof() == 0
    assert symbolic.copy_monotonicity_proof() == 0


def test_residual_detects_a_wrong_claim():
    """The reduction used for residuals does not turn a false identity into 0."""
    p, k = sp.symbols("p k", positive=True)
    assert symbolic._zero(sp.log(1 + k / p) - sp.log(k / p)) != 0
    assert symbolic._log_zero(p * sp.exp(k), p * sp.exp(2 * k)) != 0


def test_rl_derivation_matches_numbers(derivations):
    """q1 of the derived RL optimum, at numbers, equals p1 e^{1/beta} / Z computed by hand."""
    steps = dict(derivations["rl"].steps)
    beta, p1, p2, p3 = sp.symbols("beta p1 p2 p3", positive=True)
    values = {
        beta: sp.Rational(1, 3),
        p1: sp.Rational(1, 2),
        p2: sp.Rational(1, 4),
        p3: sp.Rational(1, 4),
    }
    q1 = float(steps["q1"].subs(values))
    z = 0.75 * math.exp(3) + 0.25
    assert q1 == pytest.approx(0.5 * math.exp(3) / z, abs=1e-15)


@pytest.mark.parametrize(("p", "a"), [(0.2, 0.5), (0.5, 0.9), (0.01, 0.99)])
def test_matched_beta_symbolic_agrees_with_tilt(derivations, p, a):
    solution = dict(derivations["matched_beta"].steps)["solve pi_RL(C) = a for beta"]
    a_sym, p_sym = sp.symbols("a p", positive=True)
    value = float(solution.subs({a_sym: a, p_sym: p}))
    assert value == pytest.approx(matched_beta(p, a), rel=1e-12)


def test_copy_monotonicity_matches_finite_differences():
    """dS/dp from the derivation against a central difference of the closed form."""
    p, a, k = sp.symbols("p A k", positive=True)
    derivative = dict(symbolic.copy_monotonicity_derivation().steps)["dS/dp"]
    for pv, av, kv in [(0.1, 0.5, 1.0), (0.3, 0.9, 0.01), (1e-3, 0.2, 10.0)]:

        def score(x, av=av, kv=kv):
            return x / av * math.log1p(kv / x)

        h = pv * 1e-5
        numeric = (score(pv + h) - score(pv - h)) / (2 * h)
        exact = float(derivative.subs({p: pv, a: av, k: kv}))
        assert exact > 0
        assert exact == pytest.approx(numeric, rel=1e-6)


def test_copy_tilt_closed_form_matches_tilt():
    """The symbolic closed form at numbers equals tilt's CopyContext.tilt_score on grid3."""
    from tilt.context import CopyContext, demonstrations
    from tilt.policy import base_policy
    from tilt.space import enumerate_rollouts
    from tilt.tasks.graphs import named_task

    policy = base_policy(enumerate_rollouts(named_task("grid3")), "random", seed=3)
    lam = 0.3
    demos = demonstrations(policy)
    score = CopyContext(lam).tilt_score(policy, demos)
    closed = dict(symbolic.copy_tilt_derivation().steps)["closed form"]
    lam_sym, p1, d1 = sp.symbols("lam p1 D1", positive=True)
    for y in np.flatnonzero(policy.space.correct)[:4]:
        value = float(closed.subs({lam_sym: lam, p1: policy.prob[y], d1: demos.prob[y]}))
        assert value == pytest.approx(score[y], abs=1e-12)


def test_main_prints_and_succeeds():
    result = subprocess.run(
        [sys.executable, "-m", "tilt.symbolic"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("holds") == len(NAMES)
    assert "DOES NOT HOLD" not in result.stdout


def test_core_does_not_import_sympy_or_hypothesis():
    code = (
        "import sys, tilt, tilt.tasks, tilt.space, tilt.policy, tilt.context, tilt.objectives, "
        "tilt.measures, tilt.engines, tilt.cli, tilt.compare; "
        "print(sorted(m for m in ('sympy', 'hypothesis') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
