"""Prompt suites (``tilt.suite``): shared matched beta, mean pass@k, workers, bad input."""

from __future__ import annotations

import json
import math
import sys

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilt.cli.suite import main
from tilt.context import make_context
from tilt.measures import pass_at_k
from tilt.objectives import rl_optimum, sd_optimum
from tilt.policy import base_policy
from tilt.space import enumerate_rollouts
from tilt.suite import (
    SCHEMA,
    SuiteConfig,
    builtin_suite,
    load_suite,
    run_suite,
    shared_beta,
    solve_prompt,
    summarise,
)

TOL = 1e-12


def _small(name="grid-pairs", n=6, seed=0):
    suite = builtin_suite(name, seed)
    from tilt.suite import select_prompts

    return select_prompts(suite, n, seed)


@settings(max_examples=100, deadline=None)
@given(
    acc=st.lists(st.floats(1e-6, 1 - 1e-6), min_size=1, max_size=30),
    where=st.floats(0.0, 1.0),
)
def test_shared_beta_matches_the_mean_accuracy(acc, where):
    p = np.array(acc)
    target = p.mean() + where * (1 - p.mean()) * 0.999
    beta = shared_beta(p, 1 - p, target)
    assert beta is not None
    if math.isinf(beta):
        assert abs(target - p.mean()) <= 1e-12
        return
    assert beta > 0
    rl = p * np.exp(1 / beta) / (p * np.exp(1 / beta) + 1 - p)
    assert rl.mean() == pytest.approx(target, abs=TOL)


def test_shared_beta_edges():
    p = np.array([0.2, 0.5])
    assert shared_beta(p, 1 - p, 0.3) is None  # below the base: RL never lowers accuracy
    assert shared_beta(p, 1 - p, p.mean()) == math.inf
    assert shared_beta(p, 1 - p, 1.0) == 0.0


@pytest.fixture(scope="module")
def grid_result():
    suite = _small("grid-pairs", 6)
    config = SuiteConfig("kernel", 2.0)
    return suite, config, run_suite(suite, config, (1, 2, 8, 64))


def test_suite_numbers_agree_with_the_optima(grid_result):
    suite, config, result = grid_result
    model = make_context(config.context, config.strength)
    assert len(result.prompts) == 6
    for v in result.variants:
        policies, rls = [], []
        for prompt in suite.prompts:
            pi0 = base_policy(enumerate_rollouts(prompt.task), prompt.base, seed=prompt.seed)
            policies.append(sd_optimum(pi0, model, v.method))
            assert v.rl_shared_beta is not None
            rls.append(rl_optimum(pi0, v.rl_shared_beta))
        # RL's accuracy at the shared beta, from the closed form over prompts, equals the optimum's
        assert v.rl_shared_accuracy is not None
        for rl, acc in zip(rls, v.rl_shared_accuracy, strict=True):
            assert rl.accuracy == pytest.approx(acc, abs=TOL)
        # matched: the mean accuracies agree to 1e-12
        assert np.mean([rl.accuracy for rl in rls]) == pytest.approx(v.mean_accuracy, abs=TOL)
        for k in result.ks:
            sd_mean = np.mean([pass_at_k(q, k) for q in policies])
            rl_mean = np.mean([pass_at_k(q, k) for q in rls])
            assert v.sd_curve[k] == pytest.approx(sd_mean, abs=TOL)
            assert v.rl_shared_curve is not None
            assert v.rl_shared_curve[k] == pytest.approx(rl_mean, abs=TOL)
        # at matched mean pass@1, mean pass@2 differs by the difference of the variances
        diff = v.difference()
        assert diff is not None
        assert diff[1] == pytest.approx(0.0, abs=TOL)
        assert diff[2] == pytest.approx(v.rl_shared_spread**2 - v.accuracy_spread**2, abs=1e-12)


def test_kernel_lowers_some_chain_traps_and_copy_none():
    suite = builtin_suite("chain-traps")
    kernel = run_suite(suite, SuiteConfig("kernel", 2.0), (1, 4))
    copy = run_suite(suite, SuiteConfig("copy", 0.5), (1, 4))
    seq = {v.method: v for v in kernel.variants}["sequence"]
    assert seq.worse_count > 0
    # where SD lowers accuracy, RL per prompt stays at the base
    for i, p in enumerate(kernel.prompts):
        base, sd = dict(p.accuracy)["base"], dict(p.accuracy)["sequence"]
        if sd < base - 1e-12:
            assert seq.rl_per_prompt_accuracy[i] == base
    assert all(v.worse_count == 0 for v in copy.variants)  # copy only adds mass to C


def test_json_schema_and_table(capsys):
    argv = ["--suite", "chain-traps", "--prompts", "5", "--context", "edge", "--k", "1", "8"]
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema"] == SCHEMA
    assert data["suite"]["prompts"] == 5
    assert set(data["settings"]) == {"context", "strength", "demos", "alpha", "anchor", "k"}
    assert [v["sd"] for v in data["variants"]] == ["sequence", "token", "forward"]
    for v in data["variants"]:
        assert set(v["mean_pass_at_k"]) == {"sd", "rl_shared", "rl_per_prompt"}
        assert set(v["mean_pass_at_k"]["sd"]) == {"1", "8"}
        assert v["sd_minus_rl_shared"]["1"] == pytest.approx(0.0, abs=TOL)
    prompt = data["prompts"][0]
    assert {"base", "sd_sequence", "rl_shared@sequence", "rl_per_prompt@sequence"} <= set(
        prompt["accuracy"]
    )
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "SD - RL shared" in captured.out
    assert "prompts where SD sequence and RL shared differ most" in captured.out
    assert captured.err == ""  # no progress line when stderr is not a terminal


def test_progress_bar_on_a_terminal_only(capsys, monkeypatch):
    argv = ["--suite", "chain-traps", "--prompts", "3", "--k", "1"]
    assert main(argv) == 0
    assert capsys.readouterr().err == ""  # not a terminal: nothing but the report
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "prompts" in err
    assert "3/3" in err


def test_process_pool_gives_the_same_bytes(capsys):
    argv = ["--suite", "random-graphs", "--prompts", "4", "--k", "1", "16", "--json"]
    assert main(argv) == 0
    serial = capsys.readouterr().out
    assert main([*argv, "--jobs", "2"]) == 0
    assert capsys.readouterr().out == serial


def test_dask_local_cluster_gives_the_same_bytes(capsys):
    distributed = pytest.importorskip("distributed")
    argv = ["--suite", "chain-traps", "--prompts", "4", "--k", "1", "16", "--json"]
    assert main(argv) == 0
    serial = capsys.readouterr().out
    # threads in this process: no worker start-up cost, the scheduler protocol is still exercised
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        assert main([*argv, "--scheduler", cluster.scheduler_address]) == 0
    assert capsys.readouterr().out == serial


def test_user_suite_file(tmp_path):
    inline = nx.node_link_data(nx.path_graph(3), edges="links")
    nx.write_graphml(nx.cycle_graph(5), tmp_path / "ring.graphml")
    (tmp_path / "suite.json").write_text(
        json.dumps(
            [
                {"graph": "routes"},
                {"graph": "grid3", "target": "(1, 1)", "horizon": 4, "base": "uniform"},
                {"graph": inline, "source": 0, "target": 2, "name": "path3"},
                {"graph": "ring.graphml", "source": "0", "target": "2", "base": "random"},
                {"graph": "grid3", "target": "(2, 2)", "horizon": 2},  # no correct rollout
            ]
        )
    )
    suite = load_suite(tmp_path / "suite.json")
    assert len(suite.prompts) == 5
    result = run_suite(suite, SuiteConfig(), (1, 4))
    assert len(result.prompts) == 4
    assert [s.index for s in result.skipped] == [4]
    assert "no rollout is correct" in result.skipped[0].skipped
    assert result.prompts[2].name == "path3"


def test_a_prompt_without_a_correct_rollout_is_counted(tmp_path, capsys):
    (tmp_path / "s.json").write_text(
        json.dumps([{"graph": "grid3"}, {"graph": "grid3", "horizon": 2}])
    )
    assert main(["--suite", str(tmp_path / "s.json"), "--k", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 prompts (1 skipped, listed below)" in out
    # each skipped prompt with its own reason, after the tables
    assert (
        out.rstrip()
        .splitlines()[-1]
        .endswith("no rollout is correct (check the source, target, edge directions or horizon)")
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "suite file .* does not exist"),
        ("{not json", "cannot read suite file"),
        ("[]", "must hold a non-empty JSON list"),
        ('[{"source": 1}]', "prompt 0 has no 'graph'"),
        ('[{"graph": "grid9"}]', "prompt 0: unknown graph 'grid9'"),
        ('[{"graph": "grid3", "base": "fancy"}]', "prompt 0: unknown base 'fancy'"),
        ('[{"graph": "grid3", "horizon": 2.5}]', "horizon must be an integer"),
        ('[{"graph": "grid3", "colour": 1}]', "unknown keys colour"),
        ('[{"graph": {"nodes": 3}}]', "prompt 0: cannot read the inline graph"),
        ('[{"graph": "grid3", "horizon": 2}]', "every prompt of suite 's.json' was skipped"),
    ],
)
def test_bad_suite_files_are_one_line_and_status_2(tmp_path, capsys, content, message):
    path = tmp_path / "s.json"
    if content is not None:
        path.write_text(content)
    assert main(["--suite", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("python -m tilt.suite: error: ")
    assert __import__("re").search(message, err), err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--suite", "grid-triples"], "unknown suite 'grid-triples'"),
        (["--context", "copy", "--strength", "1.5"], "lam"),
        (["--jobs", "2", "--scheduler", "tcp://x:1"], "give --jobs or --scheduler, not both"),
    ],
)
def test_bad_options_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert message in err


def test_solve_prompt_refuses_a_too_large_prompt():
    suite = builtin_suite("grid-pairs")
    config = SuiteConfig(max_rollouts=5)
    with pytest.raises(ValueError, match="prompt 0 .*too large"):
        solve_prompt(0, suite.prompts[0], config)


def test_summarise_refuses_an_empty_suite():
    suite = builtin_suite("chain-traps")
    with pytest.raises(ValueError, match="every prompt"):
        summarise(suite, SuiteConfig(), [])


def test_sd_specs_choose_the_variants(capsys):
    argv = ["--suite", "chain-traps", "--prompts", "3", "--k", "1", "4", "--json"]
    assert main([*argv, "--sd", "jsd=0.5", "--sd", "sequence", "--sd", "jsd=0.5"]) == 0
    data = json.loads(capsys.readouterr().out)
    # as in tilt.compare: the three default variants, then each --sd once
    assert [v["sd"] for v in data["variants"]] == ["sequence", "token", "forward", "jsd=0.5"]
    assert "sd_jsd=0.5" in data["prompts"][0]["accuracy"]
    with pytest.raises(SystemExit) as info:  # an argparse error, as in tilt.compare
        main([*argv, "--sd", "bogus"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown SD objective 'bogus'" in err
    assert len(err.strip().splitlines()) == 1


def test_reference_demonstrations_per_prompt(capsys):
    argv = ["--suite", "chain-traps", "--prompts", "3", "--k", "1", "--json"]
    assert main([*argv, "--demos", "reference"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["settings"]["demos"] == "reference"
    assert main([*argv, "--demos", "reference", "--reference", "s>t"]) == 2
    assert "--reference names a rollout of one graph" in capsys.readouterr().err


def test_the_suite_runs_on_either_engine():
    # chain-traps prompts are acyclic: the DP engine's per-prompt optima are the enumerated
    # ones (exact sums both ways: rounding only, a few ulps of an accuracy)
    suite = builtin_suite("chain-traps", 0)
    methods = ("sequence", "token", "token-forward", "preset[sdpo]")
    results = {
        engine: run_suite(suite, SuiteConfig(methods=methods, engine=engine), [1, 4])
        for engine in ("enumerate", "dp")
    }
    for mine, theirs in zip(results["dp"].prompts, results["enumerate"].prompts, strict=True):
        assert dict(mine.accuracy).keys() == dict(theirs.accuracy).keys()
        for key, value in dict(theirs.accuracy).items():
            assert dict(mine.accuracy)[key] == pytest.approx(value, abs=1e-12)


def test_presets_are_suite_methods(capsys):
    argv = ["--suite", "chain-traps", "--prompts", "5", "--k", "1", "--preset", "opsd", "--json"]
    assert main(argv) == 0
    variants = {v["sd"] for v in json.loads(capsys.readouterr().out)["variants"]}
    assert "preset[opsd]" in variants
