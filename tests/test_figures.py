"""``python -m figures``: every figure from nothing, deterministic, atomic, readable.

The quick mode (small graphs) runs in the default test run; the full run is
marked slow.  Numbers written next to the figures are checked against the
library and against the theory (RL's gap slope is exactly 1, RL's flow
conditional on success is the base's).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from _repo import ROOT

from analysis.sweeps import read_csv  # noqa: E402
from figures import FIGURES  # noqa: E402
from figures.__main__ import main  # noqa: E402
from figures.pass_at_k import ks  # noqa: E402
from figures.style import DEMO_STYLES, METHODS  # noqa: E402

STEMS = {
    "ratios": "fig1_ratios",
    "tilt_score": "fig2_tilt_score",
    "pass_at_k": "fig3_ood_pass_at_k",
    "iterated": "fig4_iterated",
    "flow": "fig5_flow",
    "trainer": "fig6_trainer",
    "strength": "fig7_strength",
    "objectives": "fig8_objectives",
    "audit": "fig9_audit",
    "lattice_length": "fig10_lattice_length",
    "suite": "fig11_suite_pass_at_k",
    "strategies": "fig12_strategies",
    "sharing": "fig13_sharing",
}


def _has_trainer() -> bool:
    try:
        import tilt.train  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def quick_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("figures")
    assert main(["--quick", "--out", str(out), "--jobs", "1"]) == 0
    return out


def test_every_figure_is_listed() -> None:
    assert list(FIGURES) == list(STEMS)


def test_quick_run_writes_every_figure_and_its_numbers(quick_out: Path) -> None:
    for name, stem in STEMS.items():
        if name == "trainer" and not _has_trainer():
            continue
        for suffix in ("png", "pdf", "csv", "json"):
            path = quick_out / f"{stem}.{suffix}"
            assert path.is_file(), path
            assert path.stat().st_size > 100, path
        assert (quick_out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (quick_out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
        assert read_csv(quick_out / f"{stem}.csv"), stem
    assert not [p for p in quick_out.iterdir() if p.name.startswith(".")], (
        "temporary files left behind"
    )


def test_trainer_figure_skips_with_a_message_when_the_trainer_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(
        sys.modules, "tilt.train", None
    )  # `import tilt.train` now raises ImportError
    assert main(["--quick", "--out", str(tmp_path), "--only", "trainer"]) == 0
    assert "fig6_trainer: skipped: needs tilt.train" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no figure files
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["fig6_trainer"]["skipped"].startswith("needs tilt.train")


def test_trainer_lands_on_the_closed_form_in_exact_mode(quick_out: Path) -> None:
    if not _has_trainer():
        pytest.skip("tilt.train is not available: figure 6 is skipped")
    numbers = json.loads((quick_out / "fig6_trainer.json").read_text())
    exact = {k: v for k, v in numbers["final_tv"].items() if k.endswith("exact")}
    assert len(exact) == 4
    assert all(v < 1e-6 for v in exact.values()), exact  # L-BFGS on the exact objective
    rows = read_csv(quick_out / "fig6_trainer.csv")
    for objective in ("rl", "sd", "sd_token", "sd_forward"):
        tv = [
            r["tv_to_closed_form"]
            for r in rows
            if r["objective"] == objective and r["mode"] == "sampled"
        ]
        assert tv[-1] < tv[0]  # sampled mode moves toward the closed form


def test_rl_keeps_ratios_and_sd_steepens_them(quick_out: Path) -> None:
    numbers = json.loads((quick_out / "fig1_ratios.json").read_text())
    assert numbers["gap_slope"]["rl_matched"] == pytest.approx(1.0, abs=1e-9)
    assert numbers["gap_slope"]["sd"] > 1.0
    # the table behind the figure reproduces the slopes in the legend (to the 8 digits written)
    rows = read_csv(quick_out / "fig1_ratios.csv")
    x = np.array([r["log_base"] for r in rows])
    for key in ("rl_matched", "sd", "sd_token", "sd_forward"):
        y = np.array([r[f"log_{key}"] for r in rows])
        assert np.polyfit(x, y, 1)[0] == pytest.approx(numbers["gap_slope"][key], abs=1e-6)


def test_tilt_score_table_matches_the_gap_slope(quick_out: Path) -> None:
    # q* ∝ pi0 exp(S) on the correct set, so slope(log q*) = 1 + slope(S)
    ratios = json.loads((quick_out / "fig1_ratios.json").read_text())
    scores = json.loads((quick_out / "fig2_tilt_score.json").read_text())
    assert ratios["graph"] == scores["graph"]
    assert 1 + scores["slope_of_S_on_log_base"]["edge"] == pytest.approx(
        ratios["gap_slope"]["sd"], abs=1e-9
    )


def test_rl_flow_is_the_base_flow(quick_out: Path) -> None:
    rows = read_csv(quick_out / "fig5_flow.csv")
    base = np.array([r["base"] for r in rows])
    assert np.allclose([r["rl"] for r in rows], base, atol=1e-12)
    assert not np.allclose([r["sd"] for r in rows], base, atol=1e-3)
    numbers = json.loads((quick_out / "fig5_flow.json").read_text())
    assert numbers["max_abs_rl_minus_base"] < 1e-12
    assert numbers["effective_edges"]["rl"] == pytest.approx(
        numbers["effective_edges"]["base"], abs=1e-9
    )
    assert numbers["effective_edges"]["sd"] < numbers["effective_edges"]["base"]
    for key, shares in numbers["first_move_share"].items():
        assert sum(shares.values()) == pytest.approx(1.0, abs=1e-12), (
            key
        )  # every correct rollout leaves s


def test_ood_pass_at_k_is_monotone_in_k(quick_out: Path) -> None:
    rows = read_csv(quick_out / "fig3_ood_pass_at_k.csv")
    assert {r["reading"] for r in rows} == {"fail", "reroute"}

    def of(key: tuple[str, str, str], column: str) -> list[float]:
        return [r[column] for r in rows if (r["graph"], r["method"], r["reading"]) == key]

    for key in {(r["graph"], r["method"], r["reading"]) for r in rows}:
        for column in ("ood_pass_at_k_mean", "ood_pass_at_k_worst"):
            values = of(key, column)
            assert np.all(np.diff(values) >= -1e-12)
            assert 0 <= values[0] <= values[-1] <= 1
        worst, mean = of(key, "ood_pass_at_k_worst"), of(key, "ood_pass_at_k_mean")
        assert all(w <= m + 1e-12 for w, m in zip(worst, mean, strict=True))
        if key[2] == "reroute":  # re-routing never does worse than failing, edge by edge
            fail = of((key[0], key[1], "fail"), "ood_pass_at_k_mean")
            assert all(r >= f - 1e-12 for r, f in zip(mean, fail, strict=True))


def test_iterated_rl_keeps_entropy(quick_out: Path) -> None:
    rows = read_csv(quick_out / "fig4_iterated.csv")
    for graph in {r["graph"] for r in rows}:
        rl = [r["correct_entropy"] for r in rows if r["graph"] == graph and r["method"] == "rl"]
        sd = [r["correct_entropy"] for r in rows if r["graph"] == graph and r["method"] == "sd"]
        assert np.allclose(rl, rl[0], atol=1e-9)
        assert sd[-1] < sd[0]


def test_strength_zero_changes_nothing(quick_out: Path) -> None:
    rows = read_csv(quick_out / "fig7_strength.csv")
    zero = [r for r in rows if r["strength"] == 0]
    assert len(zero) == 9  # 3 contexts x 3 demonstration distributions
    assert all(r["gap_slope"] == pytest.approx(1.0, abs=1e-9) for r in zero)


def test_only_merges_into_the_summary_of_the_same_kind_of_run(tmp_path: Path) -> None:
    assert main(["--quick", "--only", "ratios", "--out", str(tmp_path)]) == 0
    assert main(["--quick", "--only", "flow", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {"fig1_ratios", "fig5_flow"} <= set(summary)
    assert main(["--quick", "--seed", "1", "--only", "flow", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "fig1_ratios" not in summary  # another seed: the old numbers are not mixed in


def test_summary_collects_every_figure(quick_out: Path) -> None:
    summary = json.loads((quick_out / "summary.json").read_text())
    assert summary["quick"] is True
    assert summary["seed"] == 0
    assert set(summary) == {"quick", "seed", *STEMS.values()}


def test_same_seed_same_bytes_and_atomic_replacement(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    only = ["--only", "ratios", "flow"]  # worker processes are checked in tests/test_analysis.py
    assert main(["--quick", "--out", str(a), "--jobs", "1", *only]) == 0
    assert main(["--quick", "--out", str(b), "--jobs", "1", *only]) == 0
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert len(names) == 9  # 2 figures x (png, pdf, csv, json) + summary.json
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    # regenerate into an existing folder: files replaced (new inode), no temporary left,
    # usual permissions
    before = {p.name: p.stat().st_ino for p in a.iterdir()}
    assert main(["--quick", "--out", str(a), "--jobs", "1", *only]) == 0
    after = {p.name: p.stat().st_ino for p in a.iterdir()}
    assert set(after) == set(before)
    assert all(after[n] != before[n] for n in before)
    mask = os.umask(0)
    os.umask(mask)
    assert all((p.stat().st_mode & 0o777) == (0o666 & ~mask) for p in a.iterdir())


def test_styles_differ_in_more_than_hue() -> None:
    for styles in (METHODS, DEMO_STYLES):
        keys = list(styles)
        assert len({styles[k].marker for k in keys}) == len(keys)
        assert len({styles[k].color for k in keys}) == len(keys)
        assert len({(styles[k].marker, str(styles[k].linestyle)) for k in keys}) == len(keys)
    # RL is drawn solid, every SD variant and the base with a broken line (greyscale)
    assert all(METHODS[k].linestyle == "-" for k in ("rl", "rl_matched"))
    assert all(METHODS[k].linestyle != "-" for k in ("base", "sd", "sd_token", "sd_forward"))
    assert len({str(DEMO_STYLES[k].linestyle) for k in DEMO_STYLES}) == len(DEMO_STYLES)


def test_ks_cover_1_to_1024_on_a_log_grid() -> None:
    grid = ks(1024, 12)
    assert grid[0] == 1
    assert grid[-1] == 1024
    assert all(b > a for a, b in zip(grid, grid[1:], strict=False))
    assert {1, 16, 64, 1024} <= set(grid)  # the k the JSON reports
    assert set(ks(1024, 4)) >= {2**i for i in range(11)}


def test_bad_option_is_one_line_and_status_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "figures", "--only", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1


def test_output_folder_that_is_a_file_is_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["--quick", "--out", str(blocker / "out"), "--only", "ratios"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "cannot create output folder" in err[0]


def test_missing_matplotlib_is_one_line_with_the_pip_command(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from figures.__main__ import main\n"
        f"raise SystemExit(main(['--quick', '--out', {str(tmp_path)!r}]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "pip install" in lines[0]
    assert "matplotlib" in lines[0]
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.heavy
def test_full_run(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "figures", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    ratios = summary["fig1_ratios"]
    assert ratios["graph"] == "grid5"
    assert ratios["n_correct"] == 8512
    assert ratios["gap_slope"]["rl_matched"] == pytest.approx(1.0, abs=1e-9)
    assert ratios["gap_slope"]["sd"] > 1.0
    if _has_trainer():
        finals = summary["fig6_trainer"]["final_tv"]
        assert finals
        assert all(v is not None and math.isfinite(v) for v in finals.values())
        # exact mode lands on the closed form; sampled mode within Monte-Carlo noise
        assert all(v < 1e-6 for k, v in finals.items() if k.endswith("exact"))
        assert all(v < 0.05 for k, v in finals.items() if k.endswith("sampled"))


def test_seed_fixes_the_sampled_trainer(tmp_path: Path) -> None:
    if not _has_trainer():
        pytest.skip("tilt.train is not available: figure 6 is skipped")
    runs = {}
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        out = tmp_path / name
        argv = ["--quick", "--only", "trainer", "--seed", seed, "--jobs", "1", "--out", str(out)]
        assert main(argv) == 0
        runs[name] = (out / "fig6_trainer.csv").read_bytes()
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]
