"""The compiled ``edge`` token-forward target (``tilt.context._compiled``) agrees with the
numpy blocks of :meth:`tilt.context.EdgeContext.token_mean_log_target`.

Computed with ``TILT_JIT_MIN_SIZE=0`` (the kernel serves every input) and with
``TILT_NO_JIT=1`` (numpy): the same sums in the same order, but numba's ``exp`` and
``log`` are not numpy's, so the two agree to rounding, 1e-12 (exact enumeration's
tolerance).  Groups whose ``1 - sum m`` lost its digits take numpy's path in both.
"""

from __future__ import annotations

import pytest
from _compiled_paths import assert_close, kernels_on_and_off

from tilt.context import EdgeContext, demonstrations
from tilt.objectives import sd_optimum
from tilt.policy import Policy, base_policy
from tilt.space import enumerate_rollouts
from tilt.tasks.graphs import named_task

pytest.importorskip("numba")


@pytest.fixture(scope="module", params=["grid3", "grid4", "routes", "diamonds"])
def space(request):
    return enumerate_rollouts(named_task(request.param))


@pytest.mark.parametrize("gamma", [0.0, 2.0, 50.0, 699.0, 800.0])
@pytest.mark.parametrize(("demos", "alpha"), [("own", 1.0), ("uniform", 1.0), ("tempered", 0.3)])
def test_token_forward_target(space, monkeypatch, gamma, demos, alpha):
    model = EdgeContext(gamma)
    bases = [
        base_policy(space, "default"),
        base_policy(space, "random", seed=3),
        base_policy(space, "random", seed=8, scale=40.0),  # conditionals down to e^-200
    ]
    for base in bases:

        def target(base=base):
            fresh = Policy(space, base.log_prob.copy())  # nothing remembered from the other path
            given = demonstrations(fresh, demos, alpha)
            optimum = sd_optimum(fresh, model, "token-forward", given)
            return model.token_mean_log_target(fresh, given), optimum.log_prob

        compiled, plain = kernels_on_and_off(monkeypatch, target)
        for a, b in zip(compiled, plain, strict=True):
            assert_close(a, b)


def test_near_groups_take_the_demonstrations(monkeypatch):
    """A group whose ``1 - sum m`` is below 1e-6 is summed from the demonstrations, with the
    kernel as without (routes with uniform demonstrations has such groups)."""
    from tilt.context import edge as edge_module

    seen = []
    original = edge_module._log_none

    def spy(*args):
        seen.append(1)
        return original(*args)

    monkeypatch.setattr(edge_module, "_log_none", spy)
    for name in ("routes", "diamonds", "grid3", "grid4"):
        space = enumerate_rollouts(named_task(name))
        base = base_policy(space, "random", seed=1, scale=3.0)
        model = EdgeContext(2.0)

        def target(base=base, space=space, model=model):
            fresh = Policy(space, base.log_prob.copy())
            return model.token_mean_log_target(fresh, demonstrations(fresh, "own"))

        compiled, plain = kernels_on_and_off(monkeypatch, target)
        assert_close(compiled, plain)
    assert seen  # the fallback ran on at least one of them
