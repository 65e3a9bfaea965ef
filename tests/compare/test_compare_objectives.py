"""``tilt.compare --sd SPEC``, ``--preset NAME``, ``--reference PATH`` and ``--list-presets``."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from _commands import assert_one_line_error as _one_line_error
from _commands import run_command as _run

from tilt.context import demonstrations, make_context, point_mass, reference_rollout
from tilt.objectives import PRESETS, sd_optimum
from tilt.policy import base_policy
from tilt.space import enumerate_rollouts
from tilt.tasks.graphs import named_task


def _grid3():
    pi0 = base_policy(enumerate_rollouts(named_task("grid3")))
    return pi0, make_context("edge", 2.0)


def test_sd_specs_add_rows_and_csv_columns(tmp_path, capsys):
    out = tmp_path / "r.csv"
    argv = [
        "--graph",
        "grid3",
        "--sd",
        "jsd=0.5",
        "--sd",
        "discount=0.25",
        "--json",
        "--rollouts",
        str(out),
    ]
    code, stdout, err = _run(argv, capsys)
    assert code == 0, err
    rows = {m["key"]: m for m in json.loads(stdout)["methods"]}
    assert rows["sd[jsd=0.5]"]["objective"] == "jsd=0.5"
    assert rows["sd[discount=0.25]"]["demos"] == "own"
    with out.open() as handle:
        table = list(csv.reader(handle))
    header = table[0]
    # the existing columns keep their places; the new ones follow, named by the spec verbatim
    assert header[:9] == [
        "path",
        "correct",
        "base",
        "rl",
        "sd",
        "sd_token",
        "sd_forward",
        "tilt",
        "rl_matched",
    ]
    assert header[9:] == ["sd[jsd=0.5]", "sd[discount=0.25]"]
    pi0, model = _grid3()
    expected = sd_optimum(pi0, model, "jsd=0.5").prob
    got = np.array([float(r[header.index("sd[jsd=0.5]")]) for r in table[1:]])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)
    assert rows["sd[jsd=0.5]"]["measures"]["accuracy"] == pytest.approx(
        float(expected[pi0.space.correct].sum()), abs=1e-12
    )


def test_presets_follow_their_trainers(capsys):
    code, stdout, err = _run(
        ["--graph", "grid3", "--json", "--preset", "sdpo", "--preset", "opsd"], capsys
    )
    assert code == 0, err
    rows = {m["key"]: m for m in json.loads(stdout)["methods"]}
    assert (rows["preset[sdpo]"]["objective"], rows["preset[sdpo]"]["demos"]) == ("jsd=0.5", "own")
    assert (rows["preset[opsd]"]["objective"], rows["preset[opsd]"]["demos"]) == (
        "token-forward",
        "reference",
    )
    # opsd fits the teacher of its single reference demonstration exactly
    pi0, model = _grid3()
    star = reference_rollout(pi0)
    teacher = model.teacher_log_prob(pi0, np.array([star]))[0]
    q = sd_optimum(pi0, model, "token-forward", point_mass(pi0, star))
    np.testing.assert_allclose(q.log_prob, teacher, rtol=0, atol=1e-12)
    assert rows["preset[opsd]"]["measures"]["accuracy"] == pytest.approx(q.accuracy, abs=1e-12)
    assert "reference demonstration" in rows["preset[opsd]"]["note"]


def test_list_presets_names_objective_demonstrations_and_source(capsys):
    code, stdout, _ = _run(["--list-presets"], capsys)
    assert code == 0
    for name, p in PRESETS.items():
        line = next(line for line in stdout.splitlines() if line.startswith(name + " "))
        assert p.objective in line
        assert p.demos in line
        assert p.source in line
    assert {"sdpo", "trl-sdpo", "sdft", "opsd", "tinker"} <= set(PRESETS)


def test_reference_default_is_the_most_probable_correct_rollout():
    pi0, _ = _grid3()
    star = reference_rollout(pi0)
    correct = pi0.space.correct
    assert pi0.log_prob[star] == pytest.approx(pi0.log_prob[correct].max(), abs=1e-12)
    # ties go to the smallest path string: with a uniform base every correct grid3 path of
    # length 4 ties
    uniform = base_policy(pi0.space, "uniform")
    star_u = reference_rollout(uniform)
    best = np.flatnonzero(correct & (uniform.log_prob >= uniform.log_prob[correct].max() - 1e-12))
    assert uniform.space.path_labels(np.array([star_u]))[0] == min(uniform.space.path_labels(best))


def test_reference_path_is_used_and_checked(capsys):
    path = "(0, 0)>(1, 0)>(2, 0)>(2, 1)>(2, 2)"
    code, stdout, err = _run(
        ["--graph", "grid3", "--demos", "reference", "--reference", path, "--json"], capsys
    )
    assert code == 0, err
    rows = {m["key"]: m for m in json.loads(stdout)["methods"]}
    pi0, model = _grid3()
    star = reference_rollout(pi0, path)
    q = sd_optimum(pi0, model, "sequence", point_mass(pi0, star))
    assert rows["sd"]["measures"]["accuracy"] == pytest.approx(q.accuracy, abs=1e-12)
    assert rows["sd"]["demos"] == "reference"


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--sd", "nope"], ["unknown SD objective", "jsd=A"]),
        (["--sd", "jsd=1.5"], ["out of range", "0 <= A <= 1"]),
        (["--sd", "discount=-0.1"], ["out of range"]),
        (["--sd", "hybrid=0"], ["out of range", "BETA > 0"]),
        (["--sd", "jsd"], ["needs a number"]),
        (["--preset", "nope"], ["invalid choice", "sdpo"]),
        (["--reference", "(0, 0)>(2, 2)"], ["not a correct rollout"]),
        (["--reference", "(0, 0)>(0, 1)"], ["not a correct rollout"]),
        (["--reference", ""], ["reference"]),
    ],
)
def test_bad_objective_options_are_one_line(argv, fragments, capsys):
    code, out, err = _run(["--graph", "grid3", *argv], capsys)
    _one_line_error(code, out, err, *fragments)


def test_anchor_is_noted_where_an_objective_has_none(capsys):
    code, stdout, err = _run(
        ["--graph", "grid3", "--anchor", "1", "--sd", "jsd=0.5", "--json"], capsys
    )
    assert code == 0, err
    rows = {m["key"]: m for m in json.loads(stdout)["methods"]}
    assert "no anchor" in rows["sd[jsd=0.5]"]["note"]
    pi0, model = _grid3()
    q = sd_optimum(pi0, model, "jsd=0.5", demonstrations(pi0))
    assert rows["sd[jsd=0.5]"]["measures"]["accuracy"] == pytest.approx(q.accuracy, abs=1e-12)


def test_rounds_iterate_each_spec_with_a_fixed_reference(capsys):
    code, stdout, err = _run(
        ["--graph", "grid3", "--preset", "sdft", "--rounds", "2", "--json"], capsys
    )
    assert code == 0, err
    rows = {m["key"]: m for m in json.loads(stdout)["methods"]}
    pi0, model = _grid3()
    star = reference_rollout(pi0)
    once = sd_optimum(pi0, model, "token-forward", point_mass(pi0, star))
    twice = sd_optimum(once, model, "token-forward", point_mass(once, star))
    assert rows["preset[sdft]"]["measures"]["accuracy"] == pytest.approx(twice.accuracy, abs=1e-12)
