"""``python -m tilt.neural``: the commands, and bad input as one line, status 2, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from tilt.cli.neural import main  # noqa: E402
from tilt.neural import NetworkTask, load_network, save_network  # noqa: E402


def _error(capsys, argv):
    status = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 2
    assert len(lines) == 1, captured.err
    assert captured.out == ""
    return lines[0]


def test_compare_prints_tilt_compare_table(network_dir, capsys):
    assert main(["compare", "--model", str(network_dir), "--sd", "jsd=0.5", "--k", "1", "8"]) == 0
    out = capsys.readouterr().out
    for row in ("base", "RL @ SD acc", "SD sequence", "SD token", "SD jsd=0.5"):
        assert row in out
    assert "context network(12 demonstrations, float32)" in out


def test_compare_json(network_dir, capsys):
    assert main(["compare", "--model", str(network_dir), "--json", "--dtype", "float64"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["instance"]["context"] == "network"
    keys = [m["key"] for m in data["methods"]]
    assert keys == ["base", "rl", "rl_matched", "sd", "sd_token", "sd_forward"]
    assert all(not m["skipped"] for m in data["methods"])


def test_a_missing_model_directory(tmp_path, capsys):
    line = _error(capsys, ["compare", "--model", str(tmp_path / "none")])
    assert "does not exist" in line


def test_a_vocabulary_too_small_for_the_task(tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    small = GPT2LMHeadModel(GPT2Config(vocab_size=6, n_positions=32, n_embd=8, n_layer=1, n_head=2))
    save_network(tmp_path / "small", small, NetworkTask("grid3"))
    line = _error(capsys, ["compare", "--model", str(tmp_path / "small")])
    assert "vocabulary has 6 tokens" in line


def test_a_space_too_large_for_the_table(network_dir, capsys):
    line = _error(capsys, ["compare", "--model", str(network_dir), "--table-limit", "100"])
    assert "table limit 100" in line


def test_pretrain_refuses_before_writing(tmp_path, capsys):
    out = tmp_path / "net"
    line = _error(capsys, ["pretrain", "--graph", "grid3", "--out", str(out), "--table-limit", "5"])
    assert "table limit 5" in line
    assert not out.exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    line = _error(capsys, ["pretrain", "--graph", "grid3", "--out", str(tmp_path / "full")])
    assert "not an empty folder" in line
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["x"]


def test_train_refuses_a_bad_objective_before_writing(network_dir, tmp_path, capsys):
    out = tmp_path / "trained"
    line = _error(
        capsys, ["train", "--model", str(network_dir), "--objective", "nope", "--out", str(out)]
    )
    assert "unknown objective" in line
    assert not out.exists()


def test_pretrain_then_train_write_loadable_networks(tmp_path, capsys):
    net, trained = tmp_path / "net", tmp_path / "trained"
    argv = ["pretrain", "--graph", "grid3", "--out", str(net), "--steps", "20", "--batch", "16"]
    argv += ["--layers", "1", "--width", "16", "--heads", "2", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0 <= report["base_tv"] <= 1
    assert 0 <= report["teacher_tv"] <= 1
    argv = ["train", "--model", str(net), "--steps", "4", "--batch", "16", "--eval-every", "2"]
    argv += ["--out", str(trained), "--json", "--checkpoints", str(tmp_path / "ckpt")]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [c["step"] for c in summary["history"]] == [0, 2, 4]
    model, task, space = load_network(trained)
    assert task.context == "edge"
    assert space.n_rollouts == 18
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "step-000000",
        "step-000002",
        "step-000004",
    ]


@pytest.mark.slow
def test_the_module_runs(network_dir):
    # a new interpreter imports torch and transformers: several seconds on a shared machine
    done = subprocess.run(
        [sys.executable, "-m", "tilt.neural", "compare", "--model", str(network_dir), "--k", "1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "SD sequence" in done.stdout
    assert done.stderr == ""
