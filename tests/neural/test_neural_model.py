"""The network's context model: tilt's checks on its own space, and the generic forms."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from tilt.context import (  # noqa: E402
    ContextModel,
    demonstrations,
    point_mass,
    reference_rollout,
)
from tilt.context.generic import generic_teacher_classes, generic_token_log_target  # noqa: E402
from tilt.measures import measure  # noqa: E402
from tilt.neural import NetworkContext  # noqa: E402
from tilt.objectives import (  # noqa: E402
    PRESETS,
    preset,
    rl_optimum,  # noqa: E402
    sd_optimum,
)
from tilt.testing import check_context_model  # noqa: E402

SPECS = [
    "sequence",
    "token",
    "forward",
    "token-forward",
    "jsd=0.5",
    "jsd=0",
    "jsd=1",
    "discount=0.5",
    "length-weighted",
    "hybrid=0.5",
]


class _GenericNetwork(ContextModel):
    """The same tables through teacher_log_prob alone: tilt's generic paths."""

    name = "generic-network"

    def __init__(self, tables):
        self.tables = tables

    def teacher_log_prob(self, policy, demos):
        return self.tables.teacher_rows[self.tables.rows_of(np.asarray(demos))]


def test_the_network_passes_tilt_checks_on_its_own_space(tables64):
    # check_context_model's own instances (grid3, diamonds, a zero-mass policy) are other
    # policies, for which a fixed network teacher is undefined; the same checks on the
    # network's base, with own and uniform demonstrations over the correct rollouts
    check_context_model(NetworkContext(tables64), policies=[("network base", tables64.base)])


def test_the_check_fails_on_a_wrong_override(tables64):
    class Off(NetworkContext):
        def token_log_target(self, policy, demos):
            return super().token_log_target(policy, demos) + 1e-3

    with pytest.raises(ValueError, match="token_log_target differs"):
        check_context_model(Off(tables64), policies=[("network base", tables64.base)])


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("demos", ["own", "uniform"])
def test_closed_forms_equal_the_generic_ones_from_the_same_tables(tables64, spec, demos):
    base = tables64.base
    fast = sd_optimum(base, NetworkContext(tables64), spec, demos)
    generic = sd_optimum(base, _GenericNetwork(tables64), spec, demos)
    assert abs(fast.prob.sum() - 1.0) <= 1e-12
    np.testing.assert_allclose(fast.log_prob, generic.log_prob, atol=1e-10)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_predicts_for_the_network(tables64, name):
    p = preset(name)
    base = tables64.base
    demos = p.demos
    if demos == "reference":  # OPSD, SDFT: one fixed correct rollout, the base's likeliest
        demos = point_mass(base, reference_rollout(base))
    fast = sd_optimum(base, NetworkContext(tables64), p.objective, demos)
    generic = sd_optimum(base, _GenericNetwork(tables64), p.objective, demos)
    np.testing.assert_allclose(fast.log_prob, generic.log_prob, atol=1e-10)
    assert np.isfinite(measure(fast, base, (1, 8)).gap_slope)


def test_teacher_classes_and_token_target_match_the_generic_paths(tables64):
    model, base = NetworkContext(tables64), tables64.base
    d = demonstrations(base, "own")
    np.testing.assert_allclose(
        model.token_log_target(base, d), generic_token_log_target(model, base, d), atol=1e-12
    )
    fast, generic = model.teacher_classes(base, d), generic_teacher_classes(model, base, d)
    np.testing.assert_allclose(fast.weight, generic.weight, atol=1e-15)
    np.testing.assert_allclose(fast.log_cond[:, 1:], generic.log_cond[:, 1:], atol=1e-12)


def test_tilt_score_by_hand(tables64):
    # S(y) = sum_c D(c) (log T_c(y) - log pi(y)), D the base's own correct rollouts
    model, base = NetworkContext(tables64), tables64.base
    d = demonstrations(base, "own")
    weight = d.prob[tables64.demos]
    expected = weight @ tables64.teacher_rows - base.log_prob
    np.testing.assert_allclose(model.tilt_score(base, d), expected, atol=1e-12)


def test_the_fixed_teacher_refuses_another_policy(tables64):
    model = NetworkContext(tables64)
    other = rl_optimum(tables64.base, 1.0)
    with pytest.raises(ValueError, match="teacher is fixed"):
        sd_optimum(other, model)
    with pytest.raises(TypeError, match="NetworkTables"):
        NetworkContext("tables")
