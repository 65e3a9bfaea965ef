"""Training the tiny network: unbiased estimators, TV falls, determinism, options."""

from __future__ import annotations

import copy

import numpy as np
import pytest

pytest.importorskip("torch")

from tilt.context import demonstrations, make_context  # noqa: E402
from tilt.neural import NetworkContext, NeuralTrainOptions, train_network  # noqa: E402
from tilt.neural.train import (  # noqa: E402
    frozen_conditionals,
    predicted_optimum,
    sampled_gradient,
)
from tilt.train._objectives import ExactObjective, parse_train_objective  # noqa: E402


@pytest.mark.parametrize(
    "spec", ["sequence", "rl", "token", "token-forward", "jsd=0.5", "length-weighted"]
)
def test_sampled_gradients_average_to_the_exact_gradient(tables64, spec):
    # with demonstrations drawn from the frozen base (what the closed forms assume) every
    # estimator is unbiased for tilt's exact gradient at the student = the base; 600 batches
    # of 256: the mean is within 5 standard errors per prefix (plus rounding)
    base = tables64.base
    _, beta = predicted_optimum(tables64, spec)
    exact = ExactObjective(
        parse_train_objective(spec),
        base,
        NetworkContext(tables64),
        lambda p: demonstrations(p, "own"),
        0.0,
        beta or 1.0,
    ).bind(base)
    log_cond = base.log_conditionals()
    _, expected = exact.value_and_grad(log_cond, exact.held(log_cond))
    options = NeuralTrainOptions(objective=spec, demos="base", batch=256)
    rng = np.random.default_rng(0)
    draws = np.array(
        [
            sampled_gradient(
                parse_train_objective(spec),
                tables64,
                log_cond,
                lambda d, _p: frozen_conditionals(tables64, d),
                options,
                beta,
                demonstrations(base, "own"),
                rng,
            )
            for _ in range(600)
        ]
    )
    mean = draws.mean(axis=0)
    error = draws.std(axis=0) / np.sqrt(draws.shape[0])
    assert np.all(np.abs(mean - expected) <= 5 * error + 1e-12)
    assert np.abs(expected).max() > 1e-3  # the test compares something


def _run(tiny, tables, seed, **kw):
    model = copy.deepcopy(tiny)
    options = NeuralTrainOptions(**{"steps": 20, "batch": 64, "lr": 1e-2, "eval_every": 10, **kw})
    return train_network(model, tables, options, seed=seed, context=make_context("edge", 2.0))


def test_exact_gradient_steps_lower_the_tv(tiny, tables32):
    result = _run(tiny, tables32, 0, mode="exact")
    assert result.history[-1].tv < 0.5 * result.history[0].tv


def test_sampled_steps_lower_the_tv(tiny, tables32):
    result = _run(tiny, tables32, 0, objective="rl", steps=30)
    assert result.history[-1].tv < 0.7 * result.history[0].tv


def test_a_seed_fixes_every_number(tiny, tables32):
    first = _run(tiny, tables32, 3, steps=6, eval_every=3)
    again = _run(tiny, tables32, 3, steps=6, eval_every=3)
    other = _run(tiny, tables32, 4, steps=6, eval_every=3)
    assert np.array_equal(first.final.log_prob, again.final.log_prob)
    assert [c.as_dict() for c in first.history] == [c.as_dict() for c in again.history]
    assert not np.array_equal(first.final.log_prob, other.final.log_prob)


def test_a_live_teacher_is_watched(tiny, tables32):
    result = _run(tiny, tables32, 0, teacher="live", steps=4, eval_every=2, watch_teacher=True)
    start = result.history[0]
    assert start.teacher_tv_to_start == pytest.approx(0.0, abs=1e-12)  # the teacher at step 0
    assert 0.0 < start.teacher_tv_to_context < 1.0
    assert result.history[-1].teacher_tv_to_start > 0.0  # it moved with the weights


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"mode": "exact", "teacher": "live"}, "exact mode"),
        ({"teacher": "teacher"}, "teacher must be one of"),
        ({"batch": 60, "group": 8}, "multiple of group"),
        ({"objective": "nope"}, "unknown objective"),
    ],
)
def test_bad_options_are_named(kw, message):
    with pytest.raises(ValueError, match=message):
        NeuralTrainOptions(**kw)
