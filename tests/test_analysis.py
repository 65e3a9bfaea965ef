"""``analysis.sweeps``: the sweeps behind figures 4, 6 and 7, their tables and their CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from analysis.sweeps import (
    iterated_sweep,
    main,
    read_csv,
    rows_to_csv,
    run_tasks,
    strength_sweep,
    trainer_sweep,
)
from tilt.context import make_context
from tilt.measures import correct_entropy, gap_slope
from tilt.objectives import sd_optimum
from tilt.policy import base_policy
from tilt.space import enumerate_rollouts
from tilt.tasks.graphs import named_task


def _square(x: int) -> list[dict[str, object]]:
    return [{"x": x, "square": x * x}]


def test_run_tasks_keeps_task_order_with_workers(capsys: pytest.CaptureFixture[str]) -> None:
    tasks = [(f"square {x}", (x,)) for x in range(5)]
    inline = run_tasks(_square, tasks, jobs=1)
    pooled = run_tasks(_square, tasks, jobs=2)
    assert inline == pooled == [{"x": x, "square": x * x} for x in range(5)]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 10
    assert err[0].startswith("[1/5] square 0")
    assert err[-1].startswith("[5/5]")


def test_run_tasks_is_quiet_on_request_and_rejects_zero_jobs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_tasks(_square, [("a", (2,))], jobs=1, progress=False) == [{"x": 2, "square": 4}]
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="jobs"):
        run_tasks(_square, [("a", (2,))], jobs=0)


def test_strength_sweep_same_numbers_with_workers() -> None:
    kwargs = {
        "graph": "grid3",
        "contexts": ("copy", "edge"),
        "demos": ("own", "uniform"),
        "points": 2,
        "progress": False,
    }
    inline = strength_sweep(jobs=1, **kwargs)
    pooled = strength_sweep(jobs=2, **kwargs)
    assert rows_to_csv(inline) == rows_to_csv(pooled)  # bit-identical, order included
    assert len(inline) == 2 * 2 * 2


def test_strength_sweep_matches_the_library_and_zero_strength_is_the_base() -> None:
    rows = strength_sweep(
        "grid3",
        ("edge", "kernel"),
        ("own", "tempered"),
        points=3,
        alpha=0.5,
        jobs=1,
        progress=False,
    )
    pi0 = base_policy(enumerate_rollouts(named_task("grid3")))
    for row in rows:
        q = sd_optimum(
            pi0, make_context(row["context"], row["strength"]), "sequence", row["demos"], 0.5
        )
        assert row["gap_slope"] == pytest.approx(gap_slope(q, pi0), abs=1e-12)
        assert row["accuracy"] == pytest.approx(q.accuracy, abs=1e-12)
        if row["strength"] == 0:
            assert row["gap_slope"] == pytest.approx(1.0, abs=1e-9)
            assert row["ratio_distortion"] == pytest.approx(0.0, abs=1e-9)


def test_iterated_sweep_rl_keeps_ratios_and_round_one_is_one_sd_step() -> None:
    rows = iterated_sweep(
        "grid3", "edge", 2.0, rounds=3, methods=("rl", "sd"), jobs=1, progress=False
    )
    assert [(r["method"], r["round"]) for r in rows] == [
        (m, n) for m in ("rl", "sd") for n in range(4)
    ]
    rl = [r for r in rows if r["method"] == "rl"]
    assert all(r["gap_slope"] == pytest.approx(1.0, abs=1e-9) for r in rl)
    assert np.allclose([r["correct_entropy"] for r in rl], rl[0]["correct_entropy"], atol=1e-9)
    # RL's beta makes one RL round as accurate as one sequence-SD round
    sd = [r for r in rows if r["method"] == "sd"]
    assert rl[1]["accuracy"] == pytest.approx(sd[1]["accuracy"], abs=1e-12)
    pi0 = base_policy(enumerate_rollouts(named_task("grid3")))
    q = sd_optimum(pi0, make_context("edge", 2.0), "sequence")
    assert sd[1]["correct_entropy"] == pytest.approx(correct_entropy(q), abs=1e-12)
    assert sd[0]["correct_entropy"] == pytest.approx(correct_entropy(pi0), abs=1e-12)


def test_sweeps_reject_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown methods"):
        iterated_sweep("grid2", methods=("ppo",), jobs=1, progress=False)
    with pytest.raises(ValueError, match="unknown SD method"):
        strength_sweep("grid2", method="sequence_x", jobs=1, progress=False)


def test_csv_round_trip_keeps_full_precision_and_nan(tmp_path: Path) -> None:
    rows = [{"name": "a", "x": 1 / 3, "n": 2, "missing": math.nan}]
    path = tmp_path / "t.csv"
    path.write_text(rows_to_csv(rows))
    back = read_csv(path)
    assert back[0]["name"] == "a"
    assert back[0]["x"] == 1 / 3
    assert back[0]["n"] == 2
    assert math.isnan(back[0]["missing"])


def test_cli_writes_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "strength.csv"
    argv = [
        "strength",
        "--graph",
        "grid3",
        "--contexts",
        "edge",
        "--points",
        "2",
        "--out",
        str(out),
        "--jobs",
        "1",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"wrote 6 rows to {out}" in captured.out
    assert captured.err.count("\n") == 6  # one progress line per task
    rows = read_csv(out)
    assert {r["demos"] for r in rows} == {"own", "uniform", "tempered"}


def test_cli_bad_input_is_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["iterated", "--graph", "grid3", "--out", str(tmp_path / "missing" / "t.csv")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(SystemExit) as exc:
        main(["iterated", "--graph", "grid3", "--out", "t.csv", "--jobs", "0"])
    assert exc.value.code == 2


def test_trainer_sweep_lands_on_the_closed_form() -> None:
    pytest.importorskip("tilt.train")
    rows = trainer_sweep("grid3", ("rl", "sd"), ("exact",), steps=50, jobs=1, progress=False)
    for objective in ("rl", "sd"):
        tv = [r["tv_to_closed_form"] for r in rows if r["objective"] == objective]
        assert tv[-1] < 1e-6 < tv[0]
