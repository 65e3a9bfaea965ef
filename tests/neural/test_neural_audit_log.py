"""An audit log from the network's own samples, read by tilt.audit, near the exact answer."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from tilt.audit import audit_lines  # noqa: E402
from tilt.cli.neural import main  # noqa: E402
from tilt.measures import weighted_gap_slope  # noqa: E402
from tilt.neural import AuditLogOptions, NetworkContext, TaskTokens, audit_jsonl  # noqa: E402
from tilt.objectives import sd_optimum, sd_sequence  # noqa: E402


@pytest.fixture(scope="module")
def log_text(tiny, space):
    options = AuditLogOptions(prompts=200, rollouts=8, demos_per_rollout=4)
    return audit_jsonl(tiny, TaskTokens(space), options, seed=0)


def test_the_audit_lands_on_the_exact_amplification(log_text, tables32):
    # the estimand is the pi-weighted gap slope of the sequence-SD optimum minus 1 (tilt.audit);
    # the exact value comes from the network's tables; the tolerance is the audit's own 95%
    # percentile-bootstrap interval over the 200 prompts (seed 0)
    exact = weighted_gap_slope(sd_sequence(tables32.base, NetworkContext(tables32)), tables32.base)
    result = audit_lines(log_text.splitlines())
    assert result.n_prompts == 200
    assert result.amplification.low <= exact - 1.0 <= result.amplification.high
    assert result.amplification.high - result.amplification.low < 0.3


def test_the_log_holds_the_network_s_own_log_probabilities(log_text, tables32, space):
    records = [json.loads(line) for line in log_text.splitlines()]
    labels = space.path_labels()
    for record in records[:40]:
        y = labels.index(record["path"])
        assert record["logp"] == pytest.approx(tables32.base.log_prob[y], abs=1e-5)
        assert sum(record["token_logp"]) == pytest.approx(record["logp"], abs=1e-9)
        for score in record["teacher"]:
            demo = records[(record["prompt"] * 8) + score["demo"]]
            assert demo["correct"]
            assert score["demo"] != record["rollout"]
            c = labels.index(demo["path"])
            row = tables32.rows_of(np.array([c]))[0]
            assert score["logp"] == pytest.approx(tables32.teacher_rows[row, y], abs=1e-5)


def test_a_seed_fixes_the_log(tiny, space, log_text):
    options = AuditLogOptions(prompts=200, rollouts=8, demos_per_rollout=4)
    assert audit_jsonl(tiny, TaskTokens(space), options, seed=0) == log_text


def test_the_command_writes_the_log(network_dir, tmp_path, capsys):
    out = tmp_path / "run.jsonl"
    argv = ["audit-log", "--model", str(network_dir), "--prompts", "5", "--out", str(out)]
    assert main(argv) == 0
    assert len(out.read_text().splitlines()) == 40
    assert "wrote 40 rollouts" in capsys.readouterr().out


@pytest.fixture(scope="module")
def token_log(tiny, space):
    # every other rollout of the group scored (7 of 8) and the whole next-move distributions
    options = AuditLogOptions(
        prompts=200, rollouts=8, demos_per_rollout=7, top=True, objective="jsd=0.5"
    )
    return audit_jsonl(tiny, TaskTokens(space), options, seed=0)


def test_the_per_token_fields_are_whole_distributions(token_log, space):
    records = [json.loads(line) for line in token_log.splitlines()[:40]]
    for record in records:
        assert record["objective"] == "jsd=0.5"
        assert len(record["tokens"]) == len(record["token_logp"]) == len(record["top"])
        for token, logp, listed in zip(
            record["tokens"], record["token_logp"], record["top"], strict=True
        ):
            assert listed[str(token)] == pytest.approx(logp, abs=1e-12)
            assert sum(np.exp(list(listed.values()))) == pytest.approx(1.0, abs=1e-9)
        for score in record["teacher"]:
            assert len(score["top"]) == len(record["tokens"])


@pytest.mark.parametrize(("spec", "how"), [("jsd=0.5", {"preset": "sdpo"}), ("token-forward", {})])
def test_the_per_token_audit_lands_on_the_network_s_exact_fixed_point(
    token_log, tables32, spec, how
):
    # the estimand of the audit of a per-token objective is the pi-weighted gap slope of that
    # objective's fixed point minus 1; the exact value is read off the network's own tables;
    # the tolerance is the audit's 95% bootstrap interval (seed 0; docs/neural.md reports
    # the seeds 0 to 4)
    base = tables32.base
    exact = weighted_gap_slope(sd_optimum(base, NetworkContext(tables32), spec), base) - 1.0
    result = audit_lines(token_log.splitlines(), **(how or {"objective": spec}))
    amplification = result.objective_amplification
    assert amplification is not None
    assert amplification.low <= exact <= amplification.high
    assert spec in result.verdict()
