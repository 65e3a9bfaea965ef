"""Which SD objectives widen every gap among correct rollouts, with ``copy`` and own demonstrations.

The precise statement (``docs/objectives.md``), for ``copy(lam)``, own
demonstrations and any base:

* RL's optimum keeps every ratio among correct rollouts (every ``beta``);
* sequence SD and ``hybrid=beta`` widen every gap: ``S(y) = log(1 - lam) +
  D(y) log(1 + lam / ((1 - lam) pi(y)))`` with ``D(y) = pi(y) / pi(C)`` on ``C``
  is increasing in ``pi(y)``, since ``d/dp [p log(1 + c / p)] = log(1 + c / p) -
  c / (p + c) > 0``;
* forward SD keeps every ratio (``(1 - lam) pi + lam pi / pi(C)`` on ``C``);
* the per-token objectives (``token``, ``token-forward``, ``jsd=a``,
  ``discount=g < 1``, ``length-weighted``) do *not* widen every gap: a move
  that leads to a likely correct rollout is lifted at its prefix, and with it
  every rollout below, likely or not.  ``test_per_token_objectives_can_narrow_a_gap``
  is a four-node counterexample.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tilt.context import make_context
from tilt.objectives import rl_optimum, sd_optimum
from tilt.policy import base_policy
from tilt.space import enumerate_rollouts
from tilt.tasks.graphs import make_task
from tilt.testing import instances

TOL = 1e-9  # log-probabilities are exact to ~1e-13; gaps below this are ties


def _worst_narrowing(base, q):
    """Largest ``d(y') - d(y)`` over correct ``pi0(y) > pi0(y')``, ``d = log q - log pi0``."""
    correct = base.space.correct
    x = base.log_prob[correct]
    d = q.log_prob[correct] - x
    above = x[:, None] > x[None, :] + TOL
    return float(np.max(np.where(above, d[None, :] - d[:, None], -np.inf), initial=-np.inf))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    instance=instances(max_rollouts=120, min_correct=2),
    lam=st.floats(0.01, 0.99),
    beta=st.floats(0.05, 20.0),
)
def test_copy_with_own_demonstrations(instance, lam, beta):
    base, model = instance.base, make_context("copy", lam)
    correct = base.space.correct
    rl = rl_optimum(base, beta)
    kept = rl.log_prob[correct] - base.log_prob[correct]
    assert kept.max() - kept.min() <= 1e-12
    for spec in ("sequence", f"hybrid={beta!r}"):
        assert _worst_narrowing(base, sd_optimum(base, model, spec)) <= TOL, spec
    forward = sd_optimum(base, model, "forward").log_prob[correct] - base.log_prob[correct]
    assert forward.max() - forward.min() <= 1e-12


COUNTER = nx.DiGraph(
    [(0, 2), (0, 3), (1, 3), (2, 0), (2, 3), (2, 4), (3, 2), (3, 1), (3, 0), (3, 4), (4, 2), (4, 3)]
)


@pytest.mark.parametrize(
    "spec", ["token", "token-forward", "jsd=0.5", "discount=0.5", "length-weighted"]
)
def test_per_token_objectives_can_narrow_a_gap(spec):
    # uniform base from 0 to 1: correct rollouts 0>3>1 (1/6), 0>2>3>1 (1/8), 0>2>4>3>1 (1/4).
    # The move 0>2 leads to the likeliest correct rollout, so per-token SD lifts it at the root,
    # and with it 0>2>3>1, which gains on the likelier 0>3>1: their gap narrows.
    space = enumerate_rollouts(make_task(COUNTER, 0, 1, None, name="counterexample"))
    base = base_policy(space, "uniform")
    labels = space.path_labels()
    likely, unlikely = labels.index("0>3>1"), labels.index("0>2>3>1")
    assert base.prob[likely] == pytest.approx(1 / 6)
    assert base.prob[unlikely] == pytest.approx(1 / 8)
    q = sd_optimum(base, make_context("copy", 0.5), spec)
    gap_before = base.log_prob[likely] - base.log_prob[unlikely]
    gap_after = q.log_prob[likely] - q.log_prob[unlikely]
    assert gap_after < gap_before - 1e-3
    # sequence SD on the same instance widens it, as the theorem says
    seq = sd_optimum(base, make_context("copy", 0.5), "sequence")
    assert seq.log_prob[likely] - seq.log_prob[unlikely] > gap_before + 1e-3
