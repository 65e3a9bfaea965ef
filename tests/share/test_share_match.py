"""RL matched by beta at its optimum (tilt.share._rl_match) and in run_experiment.

The suite (``_student``: grid3 from two sources, and diamonds) is the one of ``test_shared.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import brentq
from test_shared import EDGE, _small_suite, _student, _suite_file

from tilt.cli.share import main
from tilt.objectives import rl_optimum
from tilt.share import mean_accuracy, run_experiment
from tilt.share._rl_match import match_rl_beta, rl_optimum_theta

TRAIN = np.array([0, 2])


def test_prefix_features_match_the_closed_form_beta() -> None:
    # one parameter per prefix: the RL optimum of each prompt is pi0 exp(r / beta) / Z, so the
    # matched beta solves mean_x pi_RL,x(C; beta) = target, found here from the closed form
    student, bases = _student("prefix")
    target = 0.8

    def closed(log_beta: float) -> float:
        beta = float(np.exp(log_beta))
        return float(np.mean([rl_optimum(bases[i], beta).accuracy for i in TRAIN])) - target

    expected = float(np.exp(brentq(closed, np.log(1e-3), np.log(1e3), xtol=1e-14)))
    match = match_rl_beta(student, bases, TRAIN, target)
    assert match is not None
    # brentq stops within xtol = 1e-12 in log beta; the solves are converged to a scaled
    # gradient of 1e-13
    assert abs(match.train_accuracy - target) < 1e-10
    assert abs(np.log(match.beta / expected)) < 1e-8
    for q, i in zip(student.policies(match.theta, TRAIN), TRAIN, strict=True):
        assert np.abs(q.prob - rl_optimum(bases[i], match.beta).prob).sum() < 1e-8


def test_shared_features_hit_the_target_at_a_converged_optimum() -> None:
    student, bases = _student("closer")
    base_accuracy = mean_accuracy(student, student.features.initial, TRAIN)
    target = base_accuracy + 0.5 * (1 - base_accuracy)
    match = match_rl_beta(student, bases, TRAIN, target, beta=1.0)
    assert match is not None
    assert abs(match.train_accuracy - target) < 1e-10
    # the warm-started solve is the optimum a cold start finds
    cold = rl_optimum_theta(student, bases, TRAIN, match.beta)
    assert abs(mean_accuracy(student, cold, TRAIN) - target) < 1e-9
    # and the accuracy of the optimum falls as beta grows (the bracket relies on it)
    accuracies = [
        mean_accuracy(student, rl_optimum_theta(student, bases, TRAIN, b), TRAIN)
        for b in (0.05, 0.2, 0.8, 3.2)
    ]
    assert all(a > b for a, b in zip(accuracies, accuracies[1:], strict=False))


def test_unreachable_targets_give_none() -> None:
    student, bases = _student("edge")
    base_accuracy = mean_accuracy(student, student.features.initial, TRAIN)
    assert match_rl_beta(student, bases, TRAIN, 0.5 * base_accuracy) is None
    with pytest.raises(ValueError, match="must lie in"):
        match_rl_beta(student, bases, TRAIN, 1.0)


def test_run_experiment_matches_rl_by_beta() -> None:
    suite = _small_suite()
    split = (TRAIN, np.array([1]))
    experiment = run_experiment(
        suite,
        "edge",
        split,
        ["rl", "jsd=0.5"],
        [0.75],  # base mean training pass@1 0.710
        model=EDGE,
        teacher="live",
        steps=60,
        lr=2.0,
        rl_match="beta",
    )
    assert experiment.rl_match == "beta"
    assert "rl" not in experiment.runs
    rl, sd = experiment.checkpoints
    assert rl.beta is not None
    assert sd.beta is None
    assert rl.train is not None
    assert rl.held_out is not None
    assert abs(np.mean(rl.train.accuracy) - 0.75) < 1e-10
    assert sd.held_out is not None
    with pytest.raises(ValueError, match="unknown rl_match"):
        run_experiment(suite, "edge", split, ["rl"], [0.6], model=EDGE, rl_match="bogus")


def test_cli_matches_rl_by_beta(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    argv = ["--suite", _suite_file(tmp_path), "--split", "random", "--steps", "30", "--json"]
    argv += ["--objective", "rl", "--objective", "jsd=0.5", "--rl-match", "beta"]
    argv += ["--match", "0.95"]  # base mean training pass@1 0.917
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["settings"]["rl_match"] == "beta"
    rl, sd = report["checkpoints"]
    assert rl["objective"] == "rl"
    assert rl["beta"] > 0
    assert sd["beta"] is None
    assert abs(np.mean(rl["train"]["accuracy"]) - 0.95) < 1e-10


def test_matched_table_shows_sd_minus_rl() -> None:
    from analysis.share_matched import Row, markdown

    rl = {1: 0.5, 4: 0.8, 16: 0.99, 64: 1.0}
    sd = {1: 0.4, 4: 0.75, 16: 0.99, 64: 1.0}
    run = {1: 0.45, 4: 0.7, 16: 0.9, 64: 1.0}
    reached = Row("c", "live", "jsd=0.5", 0.8, 0.3, rl, sd, run, 30.0, 10.0)
    missed = Row("c", "live", "token-forward", 0.9, 0.2, rl, None, run, 20.0, None)
    lines = markdown([reached, missed]).splitlines()
    assert lines[2].split(" | ")[5:11] == [
        "0.500 / 0.400",
        "-0.100",
        "-0.050",
        "+0.000",
        "+0.000",
        "-0.050",
    ]
    assert "n/r" in lines[3]


def test_matched_cli_bad_input_is_one_line(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from analysis.share_matched import main as matched_main

    # the destination is checked before anything is computed
    assert matched_main(["--json", str(tmp_path / "missing" / "m.json")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(SystemExit) as exc:
        matched_main(["--steps", "0"])
    assert exc.value.code == 2
