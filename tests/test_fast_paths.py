"""The fast paths of the grid6 speed work keep the behaviour of the plain ones.

Found by a sceptical review of that change: each test failed on its first version.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

import tilt.policy as policy_module
from tilt.context import EdgeContext
from tilt.objectives import sd_optimum
from tilt.objectives._common import from_prefix_logits, resolve_demos
from tilt.policy import Policy, base_policy
from tilt.space import enumerate_rollouts
from tilt.tasks.graphs import named_task


@pytest.fixture(scope="module")
def grid3():
    return enumerate_rollouts(named_task("grid3"))


def _group_sum_error(policy: Policy) -> float:
    space = policy.space
    sums = space.sibling_sum(policy.conditional_probs())[space.child_count > 0]
    return float(np.abs(sums - 1.0).max())


def test_base_policy_on_numpy_1x_copy_semantics(grid3, monkeypatch):
    """pyproject allows numpy>=1.24, whose 1.x releases reject ``np.array(..., copy=None)``
    (``ValueError: NoneType copy mode not allowed``, numpy 1.26.4): the hand-over of
    ``Policy.from_log_conditionals(copy=False)``, hence every ``base_policy``, must not use
    it.  Emulates numpy 1.x's ``np.array`` inside tilt.policy."""
    real_array = np.array

    def array_numpy1(obj, *args, copy=True, **kwargs):
        if copy is None:
            raise ValueError("NoneType copy mode not allowed.")
        return real_array(obj, *args, copy=copy, **kwargs)

    numpy1 = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    numpy1.array = array_numpy1
    monkeypatch.setattr(policy_module, "np", numpy1)
    pi0 = base_policy(grid3, "random", seed=1)
    assert abs(float(pi0.prob.sum()) - 1.0) < 1e-12


class _Tempered(EdgeContext):
    """A user's model: a tempered (unnormalised) mean target, relying on tilt's softmax."""

    def token_mean_log_target(self, policy, demos):
        return 0.5 * super().token_mean_log_target(policy, demos)


class _Cached(EdgeContext):
    """A user's model that remembers its target on the policy (a read-only array)."""

    def token_mean_log_target(self, policy, demos):
        return policy.memo(
            "user-target", lambda: super(_Cached, self).token_mean_log_target(policy, demos)
        )


def test_edge_subclass_overriding_token_mean_target_is_still_softmaxed(grid3):
    """A subclass of EdgeContext that overrides ``token_mean_log_target`` does not inherit
    ``token_mean_normalised``: its (here unnormalised) target is softmaxed, as for any
    model (the inherited flag gave q(y0) = 0.09709 instead of 0.12968, groups summing to
    1.72)."""
    pi0 = base_policy(grid3, "random", seed=1)
    model = _Tempered(2.0)
    q = sd_optimum(pi0, model, "token-forward")
    target = model.token_mean_log_target(pi0, resolve_demos(pi0, "own", 1.0))
    expected = from_prefix_logits(pi0, target)
    assert _group_sum_error(q) < 1e-12
    np.testing.assert_allclose(q.prob, expected.prob, rtol=0, atol=1e-12)


def test_edge_subclass_returning_a_remembered_target(grid3):
    """A model that returns a remembered (read-only) target: token-forward copies it rather
    than writing into it (``values[0] = 0`` raised "assignment destination is read-only")."""
    pi0 = base_policy(grid3, "random", seed=1)
    q = sd_optimum(pi0, _Cached(2.0), "token-forward")
    reference = sd_optimum(pi0, EdgeContext(2.0), "token-forward")
    np.testing.assert_allclose(q.prob, reference.prob, rtol=0, atol=1e-12)


def test_token_forward_conditionals_normalised_on_extreme_weights(grid3):
    """Edge's log-space branch normalises each group too: without it, token-forward (which
    takes the target as its conditionals) passed on the rounding of the policy's own
    conditionals (mass[c] - mass[p] at |log mass| ~ 1e6), groups summing to 1 within only
    3.0e-11."""
    rng = np.random.default_rng(11)
    n = grid3.n_rollouts
    pol = Policy.from_log_weights(grid3, -1e6 * rng.integers(0, 4, n) + rng.normal(size=n))
    q = sd_optimum(pol, EdgeContext(2.0), "token-forward")
    assert _group_sum_error(q) <= 1e-12
