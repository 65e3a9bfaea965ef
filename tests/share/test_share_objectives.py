"""Every objective of the shared student (tilt.share._exact): gradients, closed forms, bad input.

The suite (``_student``: grid3 from two sources, and diamonds) is the one of ``test_shared.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_shared import EDGE, _student

from tilt.objectives import rl_optimum, sd_optimum
from tilt.share import OBJECTIVES, SharedStudent, ShareObjective, train_shared
from tilt.share._exact import held_quantities, shared_value_and_grad
from tilt.train import total_variation

# one spec per family of tilt.objectives, plus the end points of the parameterised ones
SPECS = (
    "rl",
    "sequence",
    "token",
    "token-forward",
    "forward",
    "jsd=0",
    "jsd=0.5",
    "jsd=1",
    "discount=0",
    "discount=0.5",
    "discount=1",
    "length-weighted",
    "hybrid=0.5",
)


def test_specs_cover_every_family() -> None:
    assert {spec.partition("=")[0] for spec in SPECS} == set(OBJECTIVES)


def _value_and_grad_at(
    student: SharedStudent, bases: tuple, spec: str, theta: np.ndarray, train: np.ndarray
):  # type: ignore[no-untyped-def]
    """``F(.)`` with teachers and held quantities taken at ``theta`` and then fixed."""
    objective = ShareObjective(spec, bases, EDGE, beta=0.3)
    teachers = student.policies(theta, train)  # a live teacher at theta, held fixed
    losses = [objective.bind(int(i), t, t) for i, t in zip(train, teachers, strict=True)]
    held = held_quantities(student, losses, theta, train)
    return lambda x: shared_value_and_grad(student, train, losses, held, x)


@pytest.mark.parametrize("features", ["edge", "closer"])
@pytest.mark.parametrize("spec", SPECS)
def test_gradient_matches_finite_differences(features: str, spec: str) -> None:
    student, bases = _student(features)
    train = np.array([0, 2])
    rng = np.random.default_rng(0)
    theta = student.features.initial + rng.normal(0, 0.3, student.n_params)
    fun = _value_and_grad_at(student, bases, spec, theta, train)
    _, grad = fun(theta)
    assert np.abs(grad).max() > 1e-3  # away from the optimum: the check has something to check
    direction = rng.normal(size=student.n_params)
    eps = 1e-5
    slope = (fun(theta + eps * direction)[0] - fun(theta - eps * direction)[0]) / (2 * eps)
    # central difference: error O(eps^2) ~ 1e-10 times the third derivative, plus rounding
    # 1e-16 / 1e-5 of values of order 1
    assert abs(slope - float(grad @ direction)) < 1e-7


@pytest.mark.parametrize(
    ("spec", "same"),
    [("jsd=1", "token"), ("jsd=0", "token-forward"), ("discount=1", "sequence")],
)
def test_end_points_have_the_gradient_of_their_limits(spec: str, same: str) -> None:
    # THEORY: jsd=1 is token, jsd=0 is token-forward; with the return-to-go held at the
    # current student the discount=1 gradient is the sequence gradient (the policy gradient
    # with reward-to-go); the edge context gives every prefix mass, so the token targets are
    # the sequence target's steps.  Two different code paths, pulled back through shared
    # features at a point away from the optimum.
    student, bases = _student("closer")
    train = np.array([0, 1, 2])
    theta = student.features.initial + np.random.default_rng(1).normal(0, 0.3, student.n_params)
    grad = _value_and_grad_at(student, bases, spec, theta, train)(theta)[1]
    reference = _value_and_grad_at(student, bases, same, theta, train)(theta)[1]
    assert np.abs(grad).max() > 1e-3
    assert np.abs(grad - reference).max() < 1e-12


@pytest.mark.parametrize("spec", SPECS)
def test_prefix_features_reproduce_the_tabular_closed_forms(spec: str) -> None:
    # with one parameter per prefix the objective separates over prompts and prefixes, so
    # the optimum of the sum is each prompt's tabular closed form (tilt.objectives.sd_optimum);
    # L-BFGS stops at a scaled gradient of 1e-13, far below the 1e-8 asked here
    student, bases = _student("prefix")
    train = np.arange(len(bases))
    objective = ShareObjective(spec, bases, EDGE, beta=0.5)
    run = train_shared(student, objective, train, teacher="frozen", steps=2000)
    assert run.optimizer == "lbfgs"
    for q, b in zip(student.policies(run.theta), bases, strict=True):
        closed = rl_optimum(b, 0.5) if spec == "rl" else sd_optimum(b, EDGE, spec)
        assert total_variation(q, closed) < 1e-8


@pytest.mark.parametrize("spec", ["sequence", "token", "hybrid=0.5"])
def test_anchored_objectives_reproduce_their_closed_forms(spec: str) -> None:
    student, bases = _student("prefix")
    train = np.arange(len(bases))
    run = train_shared(student, ShareObjective(spec, bases, EDGE, anchor=0.5), train, steps=2000)
    for q, b in zip(student.policies(run.theta), bases, strict=True):
        assert total_variation(q, sd_optimum(b, EDGE, spec, anchor=0.5)) < 1e-8


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ("bogus", {}, "unknown objective 'bogus'"),
        ("jsd=2", {}, "out of range"),
        ("jsd", {}, "needs a number"),
        ("length-weighted", {"anchor": 1.0}, "takes no anchor"),
        ("rl", {"anchor": 1.0}, "takes no anchor"),
        ("rl", {"beta": 0.0}, "beta > 0"),
        ("discount=0.5", {"model": None}, "needs a context model"),
    ],
)
def test_bad_objectives_are_refused(spec: str, kwargs: dict, message: str) -> None:
    _, bases = _student("edge")
    options = {"model": EDGE, **kwargs}
    with pytest.raises(ValueError, match=message):
        ShareObjective(spec, bases, **options)


def test_tempered_and_reference_demonstrations_are_refused_in_exact_mode():
    # tempered would silently be own (no alpha here); reference needs a rollout per prompt
    _, initial = _student("edge")
    for demos in ("tempered", "reference"):
        with pytest.raises(ValueError, match="not built for exact shared training"):
            ShareObjective("sequence", tuple(initial), EDGE, demos)
