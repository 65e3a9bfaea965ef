"""Strategy maps and their measures (``tilt.measures.strategies``), and ``--strategy``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilt.cli.compare import main
from tilt.context import make_context
from tilt.measures.strategies import (
    Strategies,
    load_function,
    strategy_labels,
    strategy_mass,
    strategy_measures,
)
from tilt.objectives import rl_optimum, sd_optimum
from tilt.policy import base_policy
from tilt.space import enumerate_rollouts
from tilt.tasks.graphs import named_task
from tilt.testing import betas, instances

TOL = 1e-12


def _space(name):
    return enumerate_rollouts(named_task(name))


def test_first_move_on_routes():
    space = _space("routes")
    strategies = strategy_labels(space, "first-move")
    assert strategies.names == ("a0", "b0")
    assert (strategies.label[~space.correct] == -1).all()
    pi0 = base_policy(space)
    # fork logits 2 and 0: the share of route a among correct rollouts is the correct mass
    # through a0 over the correct mass
    paths = space.path_labels()
    through_a = sum(
        p
        for p, y, c in zip(pi0.prob, paths, space.correct, strict=True)
        if c and y.startswith("s>a0")
    )
    measures = strategy_measures(pi0, strategies, (1, 4))
    assert measures.shares["a0"] == pytest.approx(through_a / pi0.accuracy, abs=TOL)
    assert sum(measures.shares.values()) == pytest.approx(1.0, abs=TOL)
    mass = strategy_mass(pi0, strategies)
    assert measures.distinct_at_k[1] == pytest.approx(pi0.accuracy, abs=TOL)
    assert measures.distinct_at_k[4] == pytest.approx(sum(1 - (1 - m) ** 4 for m in mass), abs=TOL)
    shares = np.array(list(measures.shares.values()))
    assert measures.entropy == pytest.approx(-(shares * np.log(shares)).sum(), abs=TOL)
    assert measures.effective == pytest.approx(math.exp(measures.entropy), rel=1e-15)


def _crossings(points, hole):
    """Parity of crossings of the ray from ``hole`` toward +x by the closed polygon ``points``."""
    hx, hy = hole
    inside = False
    for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1], strict=True):
        if (y0 > hy) != (y1 > hy):
            x = x0 + (hy - y0) * (x1 - x0) / (y1 - y0)
            inside ^= x > hx
    return inside


def test_side_agrees_with_a_point_in_polygon_test():
    # close each correct path back to the source along the boundary through (4, 0): the hole is
    # inside the closed curve exactly for the paths on the other side
    space = _space("holed5")
    strategies = strategy_labels(space, "side")
    assert strategies.names == ("ccw", "cw")
    back = [(4, 3), (4, 2), (4, 1), (4, 0), (3, 0), (2, 0), (1, 0)]
    correct = np.flatnonzero(space.correct)
    nodes = list(space.task.graph.nodes)
    sides = {}
    for i, row in zip(correct, space.paths(correct), strict=True):
        points = [nodes[j] for j in row[row >= 0]] + back
        sides.setdefault(_crossings(points, (2, 2)), set()).add(
            strategies.names[strategies.label[i]]
        )
    assert sorted(map(sorted, sides.values())) == [["ccw"], ["cw"]]


def test_side_needs_holes():
    with pytest.raises(ValueError, match="strategy 'side' needs a graph with holes"):
        strategy_labels(_space("grid3"), "side")


def test_landmarks_on_a_grid():
    space = _space("grid3")
    strategies = strategy_labels(space, "landmarks", ["(1, 1)", "(0, 2)"])
    assert set(strategies.names) <= {"none", "(1, 1)", "(0, 2)", "(1, 1)+(0, 2)"}
    paths = space.path_labels()
    for i in np.flatnonzero(space.correct):
        label = strategies.names[strategies.label[i]]
        assert ("(1, 1)" in label) == ("(1, 1)" in paths[i].split(">"))
        assert ("(0, 2)" in label) == ("(0, 2)" in paths[i].split(">"))
    with pytest.raises(ValueError, match="needs designated nodes"):
        strategy_labels(space, "landmarks")
    with pytest.raises(ValueError, match="landmark zz is not a node of grid3"):
        strategy_labels(space, "landmarks", ["zz"])


def test_user_function_from_a_file(tmp_path):
    (tmp_path / "strat.py").write_text(
        "def length(path):\n    return len(path)\n\ndef boom(path):\n    return 1 / 0\n"
        "\nnot_callable = 3\n"
    )
    space = _space("grid3")
    strategies = strategy_labels(space, f"{tmp_path / 'strat.py'}:length")
    assert strategies.names == ("5", "7", "9")  # correct rollouts of grid3 have 4, 6 or 8 moves
    with pytest.raises(ValueError, match=r"failed on path \(0, 0\)>.*ZeroDivisionError"):
        strategy_labels(space, f"{tmp_path / 'strat.py'}:boom")
    with pytest.raises(ValueError, match="has no function 'not_callable'"):
        strategy_labels(space, f"{tmp_path / 'strat.py'}:not_callable")
    with pytest.raises(ValueError, match="cannot load strategy function 'no_such_module_x:f'"):
        load_function("no_such_module_x:f")
    with pytest.raises(ValueError, match="unknown strategy map 'sides'"):
        strategy_labels(space, "sides")


@settings(max_examples=60, deadline=None)
@given(instance=instances(min_correct=2), beta=betas(), seed=st.integers(0, 2**16))
def test_rl_keeps_every_strategy_share(instance, beta, seed):
    space = instance.space
    labels = np.random.default_rng(seed).integers(0, 3, space.n_rollouts)
    random_map = Strategies("random", ("0", "1", "2"), np.where(space.correct, labels, -1))
    rl = rl_optimum(instance.base, beta)
    for strategies in (strategy_labels(space, "first-move"), random_map):
        before = strategy_measures(instance.base, strategies).shares
        after = strategy_measures(rl, strategies).shares
        for name in strategies.names:
            if math.isnan(before[name]):
                continue  # no correct mass under the base (cannot happen with min_correct)
            assert after[name] == pytest.approx(before[name], abs=TOL)


def test_sd_moves_the_shares_on_routes():
    pi0 = base_policy(_space("routes"))
    strategies = strategy_labels(pi0.space, "first-move")
    sd = sd_optimum(pi0, make_context("kernel", 2.0), "sequence")
    assert (
        strategy_measures(sd, strategies).shares["b0"]
        < 0.01
        < 0.1
        < (strategy_measures(pi0, strategies).shares["b0"])
    )


def test_compare_reports_strategies(capsys):
    assert main(["--graph", "routes", "--strategy", "first-move", "--k", "1", "4"]) == 0
    out = capsys.readouterr().out
    assert "strategies (first-move): 2 among the correct rollouts" in out
    assert "share a0" in out
    assert main(["--graph", "routes", "--strategy", "first-move", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["strategy_map"] == {"name": "first-move", "strategies": ["a0", "b0"]}
    rl = next(m for m in data["methods"] if m["key"] == "rl_matched")
    base = next(m for m in data["methods"] if m["key"] == "base")
    assert rl["strategies"]["shares"]["a0"] == pytest.approx(
        base["strategies"]["shares"]["a0"], abs=TOL
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--strategy", "sides"], "unknown strategy map 'sides'"),
        (["--graph", "grid3", "--strategy", "side"], "needs a graph with holes"),
        (["--strategy", "nope_mod_zz:f"], "cannot load strategy function 'nope_mod_zz:f'"),
        (["--landmarks", "a"], "--landmarks needs --strategy landmarks"),
    ],
)
def test_bad_strategy_is_one_line_and_status_2(argv, message, capsys):
    assert main(["--graph", "routes", *argv] if "--graph" not in argv else argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_a_raising_function_is_one_line_and_status_2(tmp_path, capsys):
    (tmp_path / "odd.py").write_text(
        "def label(path):\n"
        "    if len(path) > 3:\n"
        "        raise KeyError('too long')\n"
        "    return 0\n"
    )
    assert main(["--graph", "routes", "--strategy", f"{tmp_path / 'odd.py'}:label"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "failed on path s>" in err
    assert "KeyError" in err
