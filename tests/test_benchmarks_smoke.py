"""Smoke test of ``benchmarks/run.py`` on tiny graphs: it runs, writes its table, and its
brute-force reference agrees with tilt.  Nothing here is timed or compared with a timing."""

from __future__ import annotations

import csv
import importlib.util
import json
import math

import pytest
from _repo import ROOT


def _load(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("context", ["edge", "kernel", "copy"])
def test_run_writes_table_and_agrees_with_brute_force(tmp_path, context):
    run = _load("run")
    status = run.main(
        ["--graphs", "grid2", "routes", "--context", context, "--out", str(tmp_path), "--no-plot"]
    )
    assert status == 0
    data = json.loads((tmp_path / "results.json").read_text())
    rows = {r["graph"]: r for r in data["rows"]}
    assert set(rows) == {"grid2", "routes"}
    for name, row in rows.items():
        assert "error" not in row, row
        assert set(row["times"]) == set(run.STAGES)
        assert row["peak_rss_mib"] > 0
        assert row["brute_max_error"] <= 1e-10, (name, row["brute_max_error"])
        # every method's accuracy is a probability; RL at beta -> 0 is exactly correct
        assert all(0.0 <= a <= 1.0 + 1e-12 for a in row["accuracy"].values())
        assert math.isclose(row["accuracy"]["rl"], 1.0, abs_tol=1e-12)
    assert rows["routes"]["rollouts"] == 14
    with (tmp_path / "results.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [r["graph"] for r in table] == ["grid2", "routes"]
    assert not (tmp_path / "time_vs_rollouts.png").exists()


def test_brute_force_enumerates_what_tilt_does():
    brute = _load("brute")
    from tilt.space import enumerate_rollouts
    from tilt.tasks.graphs import named_task

    for name in ("grid3", "diamonds", "routes"):
        task = named_task(name)
        paths = {">".join(str(v) for v in y) for y in brute.rollouts(task)}
        assert paths == set(enumerate_rollouts(task).path_labels())


def test_brute_force_detects_a_wrong_answer():
    # the agreement check is not vacuous: perturbing one probability is caught
    run = _load("run")
    brute = _load("brute")
    from tilt.objectives import rl_optimum
    from tilt.policy import base_policy
    from tilt.space import enumerate_rollouts
    from tilt.tasks.graphs import named_task

    space = enumerate_rollouts(named_task("routes"))
    base = base_policy(space)
    policies = {"base": base, "rl": rl_optimum(base)}
    ref = brute.solve(space.task, "copy", 0.5)
    ref = {k: v for k, v in ref.items() if k in policies} | {"sd_sequence": {}, "sd_forward": {}}
    policies_only = {k: policies[k] for k in ("base", "rl")}
    assert run._agreement(space, policies_only, ref) <= 1e-12
    first = next(iter(ref["base"]))
    ref["base"][first] += 1e-6
    assert run._agreement(space, policies_only, ref) > 5e-7


def test_bad_output_folder_is_one_line(tmp_path, capsys):
    run = _load("run")
    assert run.main(["--graphs", "grid2", "--out", str(tmp_path / "missing"), "--no-plot"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_extra_rows_runs_both_commands(tmp_path):
    extra_rows = _load("extra_rows")
    argv = ["--graph", "grid3", "--repeats", "1", "--out", str(tmp_path), "--stages"]
    assert extra_rows.main(argv) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["commands"]["extra"].endswith("--sd token-forward --sd jsd=0.5 --sd discount=0.5")
    for name in ("base", "extra"):
        assert data["median"][name]["wall_s"] > 0
        assert data["median"][name]["peak_mib"] > 0
    assert data["ratio"]["wall_s"] > 0
    stages = [s["stage"] for s in data["stages"]]
    for spec in ("token-forward", "jsd=0.5", "discount=0.5"):
        assert f"fixed point SD {spec}" in stages
        assert f"measures of SD {spec}" in stages


def test_speed_bare_pass_and_labels():
    speed = _load("speed")
    speed.bare_pass("grid3")  # raises unless its log-softmax and path sum are normalised
    assert speed._label(["bare", "grid6"]) == "bare pass on grid6"
    assert set(speed.PAIRS) >= {"grid6", "grid6-extra", "lattice", "grid5-kernel"}


def test_same_digits_compares_numbers_and_names_ties():
    same = _load("same_digits")
    old = {"a": [1.0, {"b": 0.5, "ood_worst_move": {"1": "x-y"}}], "c": "s", "d": None}
    new = {"a": [1.0 + 1e-15, {"b": 0.5, "ood_worst_move": {"1": "y-z"}}], "c": "s", "d": None}
    ties: list[str] = []
    worst, _ = same.worst_difference(old, new, "", ties)
    assert worst <= 1e-14
    assert ties == [".a[1].ood_worst_move.1: x-y / y-z"]
    assert same.worst_difference({"c": "s"}, {"c": "t"})[0] == math.inf
    assert same.worst_difference({"a": 1.0}, {"a": 1.1})[0] == pytest.approx(0.1)
