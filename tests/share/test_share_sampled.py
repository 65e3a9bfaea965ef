"""Sampled training of the shared student (tilt.share._sampled); ``tilt.train --share``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from _repo import ROOT

from tilt.cli.share import main as share_main
from tilt.cli.train import main as train_main
from tilt.context import make_context
from tilt.policy import base_policy
from tilt.share import SharedStudent, ShareObjective, make_features, train_shared
from tilt.share._sampled import SampledObjective, mean_total_variation, train_sampled
from tilt.space import enumerate_rollouts
from tilt.tasks.graphs import make_task, named_task
from tilt.train import OBJECTIVES, train

EDGE = make_context("edge", 2.0)
SUITE = str(ROOT / "docs" / "examples" / "grid3_suite.json")
SPECS = [s for s in OBJECTIVES if s not in ("sd", "sd_token", "sd_forward")]
SPECS = [
    {"jsd": "jsd=0.5", "discount": "discount=0.5", "hybrid": "hybrid=2"}.get(s, s) for s in SPECS
]


def _spaces_and_bases() -> tuple[list, tuple]:
    """grid3 corner to corner, grid3 from (0, 1), diamonds: three small prompts."""
    grid = named_task("grid3")
    tasks = [grid, make_task(grid.graph, (0, 1), (2, 2), name="grid3"), named_task("diamonds")]
    spaces = [enumerate_rollouts(t) for t in tasks]
    return spaces, tuple(base_policy(s) for s in spaces)


def _student(features: str, n: int = 3) -> tuple[SharedStudent, tuple]:
    spaces, bases = _spaces_and_bases()
    student = SharedStudent(spaces[:n], make_features(features, spaces[:n], bases[:n]))
    return student, tuple(student.policies(student.features.initial))


def test_every_spec_is_sampled() -> None:
    assert {s.partition("=")[0] for s in SPECS} == {
        "rl",
        "sequence",
        "token",
        "forward",
        "token-forward",
        "jsd",
        "discount",
        "length-weighted",
        "hybrid",
    }


@pytest.mark.parametrize("spec", SPECS)
def test_one_prompt_with_prefix_features_is_the_tabular_sampled_trainer(spec: str) -> None:
    # prefix features on one prompt: theta is the tabular logits, Phi^T the identity, and the
    # draws come from the same generator in the same order: the same numbers up to the
    # rounding of two code paths (one different draw would move them by far more than 1e-13)
    student, initial = _student("prefix", n=1)
    objective = SampledObjective(spec, initial, EDGE, beta=1.0)
    run = train_sampled(student, objective, np.array([0]), steps=30, seed=7)
    tabular = train(initial[0], spec, model=EDGE, beta=1.0, mode="sampled", steps=30, seed=7)
    np.testing.assert_allclose(
        student.policies(run.theta)[0].log_prob, tabular.policy.log_prob, rtol=0, atol=1e-13
    )


def test_live_teacher_on_one_prompt_is_the_tabular_live_trainer() -> None:
    student, initial = _student("prefix", n=1)
    objective = SampledObjective("token", initial, EDGE)
    run = train_sampled(student, objective, np.array([0]), teacher="live", steps=30, seed=2)
    tabular = train(
        initial[0], "token", model=EDGE, mode="sampled", teacher="live", steps=30, seed=2
    )
    np.testing.assert_allclose(
        student.policies(run.theta)[0].log_prob, tabular.policy.log_prob, rtol=0, atol=1e-13
    )


def _tv_after(
    student: SharedStudent, objective: SampledObjective, train_set: np.ndarray, reference: list
) -> list[float]:
    """Mean TV to ``reference`` after 100 and after 400 sampled steps (seed 0)."""
    return [
        mean_total_variation(
            student,
            train_sampled(student, objective, train_set, steps=n, seed=0, record_every=n).theta,
            train_set,
            reference,
        )
        for n in (100, 400)
    ]


@pytest.mark.parametrize("spec", ["rl", "sequence", "token-forward"])
def test_prefix_features_approach_the_tabular_closed_forms(spec: str) -> None:
    # measured (seed 0, batch 64, lr 2): mean TV over the three prompts from 0.13-0.20 at the
    # start to 0.043-0.056 after 100 steps and 0.017-0.025 after 400, about 1 / sqrt(samples)
    student, initial = _student("prefix")
    train_set = np.arange(3)
    objective = SampledObjective(spec, initial, EDGE, beta=1.0)
    optima = objective.tabular_optima(train_set)
    start = mean_total_variation(student, student.features.initial, train_set, optima)
    tv = _tv_after(student, objective, train_set, optima)
    assert start > 0.1
    assert tv[1] < 0.6 * tv[0]
    assert tv[1] < 0.035


@pytest.mark.parametrize("spec", ["sequence", "token"])
def test_edge_features_approach_the_exact_shared_optimum(spec: str) -> None:
    # the exact shared optimum (L-BFGS, frozen teacher) is the reference; measured mean TV to it:
    # 0.20-0.23 at the start, 0.017-0.021 after 100 sampled steps, 0.006-0.009 after 400
    student, initial = _student("edge")
    train_set = np.arange(3)
    exact = train_shared(student, ShareObjective(spec, initial, EDGE), train_set, steps=2000)
    optimum = student.policies(exact.theta, train_set)
    objective = SampledObjective(spec, initial, EDGE)
    tv = _tv_after(student, objective, train_set, optimum)
    assert tv[1] < 0.7 * tv[0]
    assert tv[1] < 0.015


def test_a_seed_fixes_every_number() -> None:
    student, initial = _student("edge")
    objective = SampledObjective("sequence", initial, EDGE)
    runs = [
        train_sampled(student, objective, np.array([0, 2]), teacher="live", steps=12, seed=s)
        for s in (5, 5, 6)
    ]
    assert np.array_equal(runs[0].thetas, runs[1].thetas)
    assert np.array_equal(runs[0].train_accuracy, runs[1].train_accuracy)
    assert not np.array_equal(runs[0].thetas, runs[2].thetas)


def test_ema_at_rate_one_is_the_live_teacher() -> None:
    student, initial = _student("edge")
    objective = SampledObjective("jsd=0.5", initial, EDGE)
    train_set = np.array([0, 1])
    live = train_sampled(student, objective, train_set, teacher="live", steps=8, seed=1)
    ema = train_sampled(student, objective, train_set, teacher="ema", steps=8, seed=1, ema_rate=1.0)
    slow = train_sampled(student, objective, train_set, teacher="ema", steps=8, seed=1)
    assert np.array_equal(live.thetas, ema.thetas)
    assert not np.array_equal(live.thetas, slow.thetas)


def test_records_and_averages() -> None:
    student, initial = _student("edge")
    objective = SampledObjective("rl", initial, beta=0.5)
    run = train_sampled(student, objective, np.array([0, 1]), steps=10, seed=0, record_every=4)
    assert run.thetas.shape == (4, student.n_params)  # steps 0, 4, 8 and 10
    assert run.optimizer == "sgd"
    assert run.teacher == "frozen"
    assert run.train_accuracy[-1] > run.train_accuracy[0]


def test_train_shared_routes_to_the_sampled_mode() -> None:
    student, initial = _student("edge")
    objective = ShareObjective("token", initial, EDGE)
    train_set = np.array([0, 2])
    routed = train_shared(student, objective, train_set, mode="sampled", steps=6, seed=3)
    direct = train_sampled(student, SampledObjective.of(objective), train_set, steps=6, seed=3)
    assert np.array_equal(routed.thetas, direct.thetas)
    with pytest.raises(ValueError, match="unknown mode"):
        train_shared(student, objective, train_set, mode="bogus")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"spec": "bogus"}, "unknown objective"),
        ({"spec": "rl", "beta": 0.0}, "beta > 0"),
        ({"spec": "sequence", "model": None}, "needs a context model"),
        ({"spec": "jsd=0.5", "anchor": 1.0}, "anchor applies"),
        ({"steps": 0}, "steps must be a positive integer"),
        ({"batch": 0}, "batch must be a positive integer"),
        ({"lr": -1.0}, "lr must be"),
        ({"teacher": "bogus"}, "unknown teacher"),
        ({"ema_rate": 0.0}, "ema_rate"),
        ({"train": []}, "no training prompt"),
        ({"demos": "bogus"}, "demonstration"),
    ],
)
def test_bad_input_is_refused(options: dict, message: str) -> None:
    student, initial = _student("edge")
    spec = options.pop("spec", "sequence")
    model = options.pop("model", EDGE)
    fields = {k: options.pop(k) for k in ("beta", "anchor", "demos") if k in options}
    train_set = np.asarray(options.pop("train", [0]), dtype=np.int64)
    steps = options.pop("steps", 2)

    def run() -> None:
        objective = SampledObjective(spec, initial, model, **fields)
        train_sampled(student, objective, train_set, steps=steps, **options)

    with pytest.raises(ValueError, match=message):
        run()


# ---------------------------------------------------------------- python -m tilt.train --share


def _train_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = train_main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_train_cli_sampled_json_is_deterministic(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--suite", SUITE, "--share", "edge", "--objective", "token", "--mode", "sampled"]
    argv += ["--steps", "6", "--batch", "16", "--teacher", "live", "--json"]
    status, first, _ = _train_cli(argv, capsys)
    assert status == 0
    assert _train_cli(argv, capsys)[1] == first
    report = json.loads(first)
    assert report["schema"] == "tilt.train.share/1"
    assert report["mode"] == "sampled"
    assert report["history"]["step"] == list(range(7))
    assert len(report["train"]) == 6  # region split: first coordinate <= 1
    assert len(report["held_out"]) == 2
    assert report["tv_to_closed_form"] is None
    _, other, _ = _train_cli([*argv, "--seed", "1"], capsys)
    assert json.loads(other)["measures"] != report["measures"]


def test_train_cli_exact_prefix_lands_on_the_closed_forms(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--suite", SUITE, "--share", "prefix", "--objective", "sd", "--json"]
    status, out, _ = _train_cli(argv, capsys)
    assert status == 0
    report = json.loads(out)
    assert report["optimizer"] == "lbfgs"
    assert report["tv_to_closed_form"]["max"] < 1e-8
    held = report["measures"]["held_out"]
    assert held["trained"] == held["base"]  # prefix features share nothing


@pytest.mark.parametrize("mode", ["exact", "sampled"])
def test_train_cli_ema_teacher(mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--suite", SUITE, "--share", "closer", "--objective", "token", "--teacher", "ema"]
    argv += ["--ema-rate", "0.5", "--mode", mode, "--steps", "3", "--batch", "8", "--json"]
    status, out, _ = _train_cli(argv, capsys)
    assert status == 0
    report = json.loads(out)
    assert (report["teacher"], report["ema_rate"], report["steps"]) == ("ema", 0.5, 3)
    trained = report["measures"]["train"]["trained"]["mean_pass_at_k"]["1"]
    assert trained != report["measures"]["train"]["base"]["mean_pass_at_k"]["1"]


def test_train_cli_table(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--suite", SUITE, "--share", "prefix", "--objective", "rl", "--beta", "0.5"]
    status, out, _ = _train_cli([*argv, "--mode", "sampled", "--steps", "20"], capsys)
    assert status == 0
    assert "distance to the tabular closed form" in out
    assert "held-out" in out


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "blocking_features.py").write_text(
        "import numpy as np\n"
        "from tilt.share import SharedFeatures, make_features\n"
        "def blocked(spaces, bases):\n"
        "    built = make_features('edge', spaces, bases)\n"
        "    allowed = tuple(np.zeros(s.n_prefixes, dtype=bool) for s in spaces)\n"
        "    return SharedFeatures(built.matrices, built.initial, built.names, allowed)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--suite", SUITE, "--share", "bogus"], "unknown feature map"),
        (["--suite", SUITE, "--share", "no_such_module:x"], "cannot load the feature map"),
        (["--suite", SUITE, "--share", "blocking_features:blocked"], "no available move"),
        (["--suite", SUITE, "--share", "edge", "--split", "bogus"], "unknown split"),
        (["--suite", SUITE, "--share", "edge", "--split", "targets"], "no held-out prompt"),
        (["--share", "edge"], "--share needs --suite"),
        (["--suite", SUITE], "--suite needs --share"),
        (["--teacher", "ema"], "--teacher ema needs weight sharing"),
        (["--suite", SUITE, "--share", "edge", "--graph", "grid3"], "--graph describes"),
        (["--suite", SUITE, "--share", "edge", "--ema-rate", "2"], "--ema-rate"),
        (["--suite", SUITE, "--share", "edge", "--objective", "rl"], "beta > 0"),
        (
            ["--suite", SUITE, "--share", "edge", "--objective", "jsd=0.5", "--anchor", "1"],
            "anchor",
        ),
        (["--suite", SUITE, "--share", "edge", "--demos", "tempered"], "--mode sampled"),
        (["--suite", "no-such-suite", "--share", "edge"], "unknown suite"),
    ],
)
def test_train_cli_bad_input_is_one_line(
    argv: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _module(tmp_path, monkeypatch)
    status, out, err = _train_cli([*argv, "--steps", "2"], capsys)
    sys.modules.pop("blocking_features", None)
    assert status == 2
    assert out == ""
    assert message in err
    assert err.count("\n") == 1


# ------------------------------------------------------- python -m tilt.share --mode sampled


def test_share_cli_sampled_is_deterministic(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--suite", SUITE, "--mode", "sampled", "--steps", "5", "--batch", "8", "--json"]
    argv += ["--objective", "rl", "--objective", "token", "--match", "0.9"]
    assert share_main(argv) == 0
    first = capsys.readouterr().out
    assert share_main(argv) == 0
    assert capsys.readouterr().out == first
    report = json.loads(first)
    assert report["settings"]["mode"] == "sampled"
    assert report["runs"]["rl"]["optimizer"] == "sgd"


def test_convergence_sweep_rows() -> None:
    from analysis.share_convergence import main, share_convergence_sweep

    rows = share_convergence_sweep(
        SUITE, ["prefix", "edge"], ["rl"], [4], batch=8, seeds=1, jobs=1, progress=False
    )
    assert [r["objective"] for r in rows] == ["prefix rl", "edge rl"]
    assert all(r["samples"] == 32 and 0 < r["tv_to_closed_form"] < 1 for r in rows)
    assert main(["--features", "bogus"]) == 2
