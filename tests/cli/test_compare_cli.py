"""``python -m tilt.compare``: output formats, and bad input as one line with exit status 2."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys

import networkx as nx
import numpy as np
import oracle
import pytest
from _commands import assert_one_line_error as _assert_one_line_error
from _commands import run_command as _run
from _repo import ROOT as REPO

from tilt.cli.compare import main
from tilt.context import CopyContext, EdgeContext, KernelContext, demonstrations, make_context
from tilt.measures import pass_at_k
from tilt.objectives import rl_matched, rl_optimum, sd_forward, sd_sequence, sd_token, tilt_score
from tilt.policy import base_policy
from tilt.space import TooLargeError, enumerate_rollouts
from tilt.tasks.graphs import catalogue, load_graph, named_task, resolve_task

METHOD_KEYS = ["base", "rl", "rl_matched", "sd", "sd_token", "sd_forward"]
CSV_HEAD = ["path", "correct", "base", "rl", "sd", "sd_token", "sd_forward", "tilt"]


def _subprocess(*argv):
    """``python -m tilt.compare ...`` from the repository root (tilt need not be installed)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, "-m", "tilt.compare", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=env,
    )


# ------------------------------------------------------------- bad input files


@pytest.fixture
def files(tmp_path):
    """Small bad (and one good) graph files."""
    good = nx.DiGraph()
    good.add_edge("s", "a", logit=1.0)
    good.add_edge("a", "t")
    good.add_edge("s", "t")
    nx.write_graphml(good, tmp_path / "no_attrs.graphml")
    bad_logit = good.copy()
    bad_logit.edges["s", "a"]["logit"] = math.inf
    bad_logit.graph.update(source="s", target="t")
    nx.write_graphml(bad_logit, tmp_path / "inf.graphml")
    (tmp_path / "garbage.json").write_text("{not json")
    return tmp_path


# (id, argv, fragments expected on stderr, library call raising the same ValueError)
BAD = [
    (
        "unknown-graph",
        ["--graph", "nope"],
        ["unknown graph 'nope'", "grid2", "routes"],
        lambda d: resolve_task("nope"),
    ),
    (
        "source-not-in-graph",
        ["--graph", "grid3", "--source", "zz"],
        ["source 'zz' is not a node"],
        lambda d: resolve_task("grid3", source="zz"),
    ),
    (
        "target-not-in-graph",
        ["--graph", "grid3", "--target", "(9, 9)"],
        ["target '(9, 9)' is not a node"],
        lambda d: resolve_task("grid3", target="(9, 9)"),
    ),
    (
        "source-is-target",
        ["--graph", "grid3", "--source", "(1, 1)", "--target", "(1, 1)"],
        ["same node"],
        lambda d: resolve_task("grid3", source="(1, 1)", target="(1, 1)"),
    ),
    (
        "no-path",
        ["--graph", "grid3", "--horizon", "3"],
        ["no path", "horizon of 3"],
        lambda d: enumerate_rollouts(resolve_task("grid3", horizon=3)),
    ),
    (
        "negative-horizon",
        ["--graph", "grid3", "--horizon", "-1"],
        ["--horizon", "non-negative integer"],
        lambda d: resolve_task("grid3", horizon=-1),
    ),
    (
        "non-integer-horizon",
        ["--graph", "grid3", "--horizon", "1.5"],
        ["--horizon", "non-negative integer"],
        lambda d: resolve_task("grid3", horizon=1.5),
    ),
    (
        "unparseable-file",
        ["--graph", "{d}/garbage.json", "--source", "s", "--target", "t"],
        ["cannot read graph file"],
        lambda d: load_graph(d / "garbage.json", "s", "t"),
    ),
    (
        "file-without-source",
        ["--graph", "{d}/no_attrs.graphml"],
        ["names no source/target"],
        lambda d: load_graph(d / "no_attrs.graphml"),
    ),
    (
        "file-source-missing",
        ["--graph", "{d}/no_attrs.graphml", "--source", "x", "--target", "t"],
        ["source 'x' is not a node"],
        lambda d: load_graph(d / "no_attrs.graphml", "x", "t"),
    ),
    (
        "non-finite-logit",
        ["--graph", "{d}/inf.graphml"],
        ["non-finite logit"],
        lambda d: load_graph(d / "inf.graphml"),
    ),
    (
        "too-large",
        ["--graph", "grid5", "--max-rollouts", "1000"],
        ["too large", "more than", "--horizon"],
        lambda d: enumerate_rollouts(named_task("grid5"), 1000),
    ),
    (
        "lam-one",
        ["--graph", "grid3", "--context", "copy", "--strength", "1"],
        ["lam must be < 1"],
        lambda d: CopyContext(1.0),
    ),
    (
        "lam-negative",
        ["--graph", "grid3", "--context", "copy", "--strength", "-0.5"],
        ["lam must be finite and >= 0"],
        lambda d: CopyContext(-0.5),
    ),
    (
        "gamma-negative-edge",
        ["--graph", "grid3", "--context", "edge", "--strength", "-1"],
        ["gamma"],
        lambda d: EdgeContext(-1.0),
    ),
    (
        "gamma-negative-kernel",
        ["--graph", "grid3", "--context", "kernel", "--strength", "-1"],
        ["gamma"],
        lambda d: KernelContext(-1.0),
    ),
    (
        "beta-negative",
        ["--graph", "grid3", "--beta", "-1"],
        ["beta must be >= 0"],
        lambda d: rl_optimum(base_policy(enumerate_rollouts(named_task("grid3"))), -1.0),
    ),
    (
        "k-zero",
        ["--graph", "grid3", "--k", "0"],
        ["--k", "positive integer"],
        lambda d: pass_at_k(base_policy(enumerate_rollouts(named_task("grid3"))), 0),
    ),
    (
        "k-negative",
        ["--graph", "grid3", "--k", "1", "-4"],
        ["--k"],
        lambda d: pass_at_k(base_policy(enumerate_rollouts(named_task("grid3"))), -4),
    ),
    (
        "unknown-context",
        ["--graph", "grid3", "--context", "nope"],
        ["--context", "invalid choice: 'nope'"],
        lambda d: make_context("nope", 1.0),
    ),
    (
        "unknown-demos",
        ["--graph", "grid3", "--demos", "nope"],
        ["--demos", "invalid choice: 'nope'"],
        lambda d: demonstrations(base_policy(enumerate_rollouts(named_task("grid3"))), "nope"),
    ),
    (
        "unknown-base",
        ["--graph", "grid3", "--base", "nope"],
        ["--base", "invalid choice: 'nope'"],
        lambda d: base_policy(enumerate_rollouts(named_task("grid3")), "nope"),
    ),
    (
        "nan-strength",
        ["--graph", "grid3", "--strength", "nan"],
        ["--strength", "expected a number"],
        lambda d: EdgeContext(math.nan),
    ),
    (
        "negative-seed",
        ["--graph", "grid3", "--base", "random", "--seed", "-1"],
        ["--seed", "non-negative integer"],
        lambda d: base_policy(enumerate_rollouts(named_task("grid3")), "random", seed=-1),
    ),
    (
        "anchor-negative",
        ["--graph", "grid3", "--anchor", "-1"],
        ["anchor"],
        lambda d: sd_sequence(
            base_policy(enumerate_rollouts(named_task("grid3"))), EdgeContext(1.0), anchor=-1
        ),
    ),
    (
        "alpha-negative",
        ["--graph", "grid3", "--demos", "tempered", "--alpha", "-1"],
        ["alpha"],
        lambda d: demonstrations(
            base_policy(enumerate_rollouts(named_task("grid3"))), "tempered", -1.0
        ),
    ),
    (
        "max-rollouts-zero",
        ["--graph", "grid3", "--max-rollouts", "0"],
        ["--max-rollouts", "positive integer"],
        lambda d: enumerate_rollouts(named_task("grid3"), 0),
    ),
    (
        "rollouts-missing-folder",
        ["--graph", "grid3", "--rollouts", "{d}/missing/out.csv"],
        ["does not exist"],
        None,
    ),
]


@pytest.mark.parametrize(
    ("argv", "fragments", "library"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_input_is_one_line_and_status_2(files, capsys, argv, fragments, library):
    argv = [a.replace("{d}", str(files)) for a in argv]
    _assert_one_line_error(*_run(argv, capsys), *fragments)
    if library is not None:
        with pytest.raises(ValueError):  # noqa: PT011 - the message is checked through the CLI above
            library(files)


def test_too_large_is_a_value_error_subclass():
    assert issubclass(TooLargeError, ValueError)


def test_failed_run_writes_no_file(tmp_path, capsys):
    out = tmp_path / "out.csv"
    code, _, _ = _run(["--graph", "nope", "--rollouts", str(out)], capsys)
    assert code == 2
    assert not out.exists()


def test_subprocess_error_has_no_traceback():
    proc = _subprocess("--graph", "nope")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr
    assert "unknown graph 'nope'" in proc.stderr


# ------------------------------------------------------------------- outputs


def test_json_subprocess_parses_with_expected_keys():
    proc = _subprocess("--graph", "grid3", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) == {"instance", "methods"}
    inst = data["instance"]
    assert {
        "graph",
        "source",
        "target",
        "horizon",
        "rollouts",
        "correct",
        "base",
        "context",
        "strength",
        "demos",
        "beta",
        "k",
    } <= set(inst)
    assert (inst["graph"], inst["rollouts"], inst["correct"], inst["horizon"]) == (
        "grid3",
        18,
        12,
        None,
    )
    assert (inst["context"], inst["strength"], inst["k"]) == ("edge", 2.0, [1, 8, 64])
    assert [m["key"] for m in data["methods"]] == METHOD_KEYS
    for m in data["methods"]:
        assert {"key", "label", "beta", "skipped", "note", "measures"} <= set(m)
        assert not m["skipped"]
        assert {
            "accuracy",
            "correct_entropy",
            "effective_correct",
            "gap_slope",
            "ratio_distortion",
            "pass_at_k",
            "distinct_at_k",
            "ood_pass_at_k_mean",
            "ood_pass_at_k_worst",
        } <= set(m["measures"])
        assert set(m["measures"]["pass_at_k"]) == {"1", "8", "64"}
    # numbers from the library
    space = enumerate_rollouts(named_task("grid3"))
    base = base_policy(space)
    by_key = {m["key"]: m for m in data["methods"]}
    assert by_key["base"]["measures"]["accuracy"] == pytest.approx(base.accuracy, abs=1e-15)
    assert by_key["rl"]["measures"]["accuracy"] == pytest.approx(1.0, abs=1e-15)
    assert by_key["rl"]["measures"]["gap_slope"] == pytest.approx(1.0, abs=1e-12)
    sd = sd_sequence(base, EdgeContext(2.0))
    assert by_key["sd"]["measures"]["accuracy"] == pytest.approx(sd.accuracy, abs=1e-15)
    # RL matched to SD's accuracy reaches it
    assert by_key["rl_matched"]["measures"]["accuracy"] == pytest.approx(sd.accuracy, abs=1e-12)


def _read_csv(path):
    rows = list(csv.reader(io.StringIO(path.read_text())))
    return rows[0], rows[1:]


@pytest.mark.parametrize(
    ("argv", "model", "demos", "alpha", "kind"),
    [
        ([], EdgeContext(2.0), "own", 0.5, "default"),
        (
            [
                "--context",
                "copy",
                "--strength",
                "0.3",
                "--demos",
                "tempered",
                "--alpha",
                "0.7",
                "--base",
                "random",
                "--seed",
                "5",
            ],
            CopyContext(0.3),
            "tempered",
            0.7,
            "random",
        ),
        (
            ["--context", "kernel", "--demos", "uniform", "--base", "uniform"],
            KernelContext(0.5),
            "uniform",
            0.5,
            "uniform",
        ),
    ],
)
def test_rollouts_csv_matches_the_library(tmp_path, capsys, argv, model, demos, alpha, kind):
    out = tmp_path / "out.csv"
    code, stdout, err = _run(["--graph", "grid3", "--json", "--rollouts", str(out), *argv], capsys)
    assert code == 0, err
    json.loads(stdout)
    header, rows = _read_csv(out)
    assert header[: len(CSV_HEAD)] == CSV_HEAD
    task = named_task("grid3")
    space = enumerate_rollouts(task)
    base = base_policy(space, kind, seed=5 if kind == "random" else None)
    sd = sd_sequence(base, model, demos, alpha)
    expected = {
        "base": base.prob,
        "rl": rl_optimum(base, 0.0).prob,
        "sd": sd.prob,
        "sd_token": sd_token(base, model, demos, alpha).prob,
        "sd_forward": sd_forward(base, model, demos, alpha).prob,
        "tilt": tilt_score(base, model, demos, alpha),
    }
    if "rl_matched" in header:
        expected["rl_matched"] = rl_matched(base, sd.accuracy).policy.prob
    truth = oracle.oracle_space(task.graph, task.source, task.target)
    assert len(rows) == space.n_rollouts
    assert sorted(r[0] for r in rows) == sorted(">".join(y) for y in truth.rollouts)
    assert [r[0] for r in rows] == space.path_labels()
    assert [int(r[1]) for r in rows] == space.correct.astype(int).tolist()
    for column, values in expected.items():
        got = np.array([float(r[header.index(column)]) for r in rows])
        np.testing.assert_allclose(got, values, rtol=0, atol=1e-15, err_msg=column)
    for column in ("base", "rl", "sd", "sd_token", "sd_forward"):
        assert abs(sum(float(r[header.index(column)]) for r in rows) - 1) <= 1e-12


def test_table_output(capsys):
    code, out, err = _run(["--graph", "routes", "--k", "1", "4"], capsys)
    assert code == 0
    assert err == ""
    lines = out.splitlines()
    assert lines[0].startswith("routes: 14 rollouts, 8 correct")
    for label in ("base", "RL beta->0", "RL @ SD acc", "SD sequence", "SD token", "SD forward"):
        assert any(line.startswith(label) for line in lines), label
    assert "pass@4" in out
    # the OOD block shows the smallest k by default, every k with --ood-detail
    assert "fail worst@1" in out
    assert "reroute worst@1" in out
    assert "fail worst@4" not in out
    assert "RL @ SD acc: RL at the beta where its accuracy equals SD sequence's" in out
    assert "(--explain: what each column means)" in out
    code, detail, _ = _run(["--graph", "routes", "--k", "1", "4", "--ood-detail"], capsys)
    assert code == 0
    assert "fail worst@4" in detail
    assert "reroute worst@4" in detail


def test_explain_names_every_column(capsys):
    from tilt.compare._report import LEGEND

    code, out, _ = _run(["--graph", "grid3", "--explain"], capsys)
    assert code == 0
    legend = out.split("\ncolumns:\n", 1)[1]
    for name, text in LEGEND:
        assert f"  {name}" in legend
        assert text in legend
    header = next(line for line in out.splitlines() if line.startswith("method") and "beta" in line)
    for column in ("accuracy", "gap slope", "w. slope", "widening", "distortion"):
        assert column in header
        assert any(column == name for name, _ in LEGEND)


def test_every_n_a_says_why(capsys):
    # the DP engine computes no widening: the table says so in a line of its own
    code, out, _ = _run(["--graph", "lattice:V=3,L=4", "--engine", "dp"], capsys)
    assert code == 0
    assert "n/a" in out
    assert "widening n/a: the DP engine does not compute it" in out
    # a base that gives every correct rollout the same probability: no slope, and why
    code, out, _ = _run(["--graph", "diamonds", "--base", "uniform"], capsys)
    assert code == 0
    assert "n/a" in out
    assert "gap slopes and widening n/a: every correct rollout has the same base probability" in out


def test_lattice_strategy_labels_are_tokens(capsys):
    code, out, _ = _run(
        ["--graph", "lattice:V=3,L=4", "--engine", "dp", "--strategy", "first-move"], capsys
    )
    assert code == 0
    assert "share token 0" in out
    assert "1:0/0" not in out


def test_rounds_iterate_each_method(capsys):
    code, out, _ = _run(["--graph", "grid3", "--json", "--rounds", "2", "--beta", "0.5"], capsys)
    assert code == 0
    data = json.loads(out)
    base = base_policy(enumerate_rollouts(named_task("grid3")))
    twice = rl_optimum(rl_optimum(base, 0.5), 0.5)
    rl = next(m for m in data["methods"] if m["key"] == "rl")
    assert rl["measures"]["accuracy"] == pytest.approx(twice.accuracy, abs=1e-14)
    sd2 = sd_sequence(sd_sequence(base, EdgeContext(2.0)), EdgeContext(2.0))
    sd = next(m for m in data["methods"] if m["key"] == "sd")
    assert sd["measures"]["accuracy"] == pytest.approx(sd2.accuracy, abs=1e-14)


def test_graph_file_through_the_cli(tmp_path, capsys):
    path = tmp_path / "chain.txt"
    path.write_text("s a {'logit': 1.0}\na t\ns t\n")
    code, out, err = _run(
        ["--graph", str(path), "--source", "s", "--target", "t", "--directed", "--json"], capsys
    )
    assert code == 0, err
    inst = json.loads(out)["instance"]
    assert (inst["rollouts"], inst["correct"], inst["source"], inst["target"]) == (2, 2, "s", "t")


def test_infinite_beta_is_the_base(capsys):
    # beta = inf is legal (RL returns the base); JSON has no inf, so it is written as null
    code, out, err = _run(["--graph", "grid3", "--beta", "inf", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["instance"]["beta"] is None
    by_key = {m["key"]: m for m in data["methods"]}
    assert by_key["rl"]["measures"] == by_key["base"]["measures"]


def test_method_over_a_size_limit_is_skipped_with_a_note(monkeypatch, tmp_path, capsys):
    # kernel's token target goes through the generic path (one teacher per demonstration); with a
    # tiny limit it raises TooLargeError, and compare keeps the row, skipped, with the reason
    monkeypatch.setattr("tilt.context.generic.GENERIC_LIMIT", 10)
    out = tmp_path / "out.csv"
    argv = ["--graph", "grid3", "--context", "kernel", "--json", "--rollouts", str(out)]
    code, stdout, err = _run(argv, capsys)
    assert code == 0, err
    by_key = {m["key"]: m for m in json.loads(stdout)["methods"]}
    assert by_key["sd_token"]["skipped"] is True
    assert by_key["sd_token"]["measures"] is None
    assert "skipped" in by_key["sd_token"]["note"]
    assert "limit" in by_key["sd_token"]["note"]
    assert by_key["sd"]["skipped"] is False
    header, rows = _read_csv(out)
    assert {r[header.index("sd_token")] for r in rows} == {""}
    assert all(float(r[header.index("sd")]) >= 0 for r in rows)


def test_list_graphs_prints_every_named_graph(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--list-graphs"])
    assert stop.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [*catalogue(), "lattice:V=..,L=.."]
    assert all("default base" in line for line in lines[:-1])
    assert "token lattice" in lines[-1]
    # one column of names, as wide as the longest
    columns = {len(line) - len(line[len(line.split()[0]) :].lstrip()) for line in lines}
    assert len(columns) == 1
