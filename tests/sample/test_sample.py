"""``tilt.sample``: audit logs sampled from tilt's instances, checked against the instance.

Every number in a sampled log is recomputed here from the exact objects: the
student's log-probability and per-move conditionals from the base policy, the
teacher's from the context model (per move by brute force over the rollouts
sharing each prefix), and the demonstrations are checked to be correct
siblings other than the rollout itself.  A seed fixes the bytes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from _repo import ROOT as REPO_ROOT

from tilt.cli.sample import main
from tilt.context import make_context
from tilt.policy import Policy, base_policy
from tilt.sample import SampleOptions, sample_jsonl, sample_records
from tilt.space import enumerate_rollouts
from tilt.tasks.graphs import named_task


@pytest.fixture(scope="module")
def grid3() -> Policy:
    return base_policy(enumerate_rollouts(named_task("grid3")))


def _records(pi0: Policy, context: str, strength: float, **options: object) -> list[dict]:
    opts = SampleOptions(**options)  # type: ignore[arg-type]
    return list(sample_records([pi0], make_context(context, strength), opts, seed=3))


def _brute_conditional(pi: np.ndarray, paths: list[str], path: str, t: int) -> float:
    """``log q(u_t | h_t)`` from the probabilities of the rollouts, by string prefixes."""
    nodes = path.split(">")
    head, step = nodes[: t + 1], nodes[: t + 2]

    def mass(prefix: list[str]) -> float:
        return sum(
            p for p, q in zip(pi, paths, strict=True) if q.split(">")[: len(prefix)] == prefix
        )

    return math.log(mass(step)) - math.log(mass(head))


@pytest.mark.parametrize(("context", "strength"), [("copy", 0.5), ("edge", 2.0), ("kernel", 0.5)])
def test_every_number_is_the_instance_s(grid3: Policy, context: str, strength: float) -> None:
    space = grid3.space
    model = make_context(context, strength)
    paths = space.path_labels()
    index = {p: i for i, p in enumerate(paths)}
    records = _records(grid3, context, strength, prompts=6, rollouts=5, tokens=True, paths=True)
    assert len(records) == 30
    for prompt in range(6):
        group = [r for r in records if r["prompt"] == prompt]
        assert [r["rollout"] for r in group] == list(range(5))
        correct = {r["rollout"] for r in group if r["correct"]}
        for r in group:
            y = index[r["path"]]
            assert r["correct"] == bool(space.correct[y])
            assert r["logp"] == pytest.approx(grid3.log_prob[y], abs=1e-12)
            assert sum(r["token_logp"]) == pytest.approx(r["logp"], abs=1e-12)
            for t, v in enumerate(r["token_logp"]):
                brute = _brute_conditional(grid3.prob, paths, r["path"], t)
                assert v == pytest.approx(brute, abs=1e-12)
            others = correct - {r["rollout"]}
            assert len(r["teacher"]) == (1 if others else 0)
            for s in r["teacher"]:
                assert s["demo"] in others  # a correct sibling, never itself
                c = index[group[s["demo"]]["path"]]
                row = model.teacher_log_prob(grid3, np.array([c]))[0]
                assert s["logp"] == pytest.approx(row[y], abs=1e-12)
                teacher = np.exp(row)
                for t, v in enumerate(s["token_logp"]):
                    brute = _brute_conditional(teacher, paths, r["path"], t)
                    assert v == pytest.approx(brute, abs=1e-10)


def test_all_demonstrations_are_every_other_correct_sibling(grid3: Policy) -> None:
    records = _records(grid3, "edge", 2.0, prompts=5, rollouts=6, demos_per_rollout=None)
    for prompt in range(5):
        group = [r for r in records if r["prompt"] == prompt]
        correct = {r["rollout"] for r in group if r["correct"]}
        for r in group:
            assert sorted(s["demo"] for s in r["teacher"]) == sorted(correct - {r["rollout"]})


def test_rollouts_follow_the_base_policy() -> None:
    # 20,000 draws on routes (14 rollouts): every frequency within 5 binomial standard errors
    pi0 = base_policy(enumerate_rollouts(named_task("routes")))
    labels = pi0.space.path_labels()
    index = {p: i for i, p in enumerate(labels)}
    records = _records(pi0, "copy", 0.5, prompts=2500, rollouts=8, paths=True)
    counts = np.bincount([index[r["path"]] for r in records], minlength=len(labels))
    n = counts.sum()
    se = np.sqrt(n * pi0.prob * (1 - pi0.prob))
    assert np.all(np.abs(counts - n * pi0.prob) <= 5 * se + 1e-9)


def test_a_seed_fixes_the_bytes(grid3: Policy) -> None:
    model = make_context("kernel", 0.5)
    options = SampleOptions(20, 8, 2, True)
    first = sample_jsonl([grid3], model, options, seed=11)
    assert first == sample_jsonl([grid3], model, options, seed=11)
    assert first != sample_jsonl([grid3], model, options, seed=12)
    for line in first.splitlines():
        json.loads(line)


def test_instances_cycle_over_random_bases(tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    argv = ["--graph", "grid3", "--base", "random", "--instances", "2", "--prompts", "4"]
    assert main([*argv, "--rollouts", "1", "--out", str(out)]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    space = enumerate_rollouts(named_task("grid3"))
    bases = [base_policy(space, "random", seed=s) for s in (0, 1)]
    for r in lines:
        base = bases[r["prompt"] % 2]
        assert np.isclose(base.log_prob, r["logp"], atol=1e-12).any()


def _run(argv: list[str]) -> int:
    """``main(argv)``'s status, also when argparse exits (status 2 on a bad option)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--demos", "uniform"], "own correct rollouts"),
        (["--instances", "2"], "needs --base random"),
        (["--prompts", "0"], "positive integer"),
        (["--demos-per-rollout", "none"], "positive integer or 'all'"),
        (["--context", "copy", "--strength", "1"], "lam must be < 1"),
    ],
)
def test_bad_options_are_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    out = tmp_path / "run.jsonl"
    assert _run(["--graph", "grid3", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_output_destination_is_checked_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--graph", "grid3", "--out", str(tmp_path / "missing" / "x.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["--graph", "grid3", "--out", str(tmp_path)]) == 2
    assert "it is a folder" in capsys.readouterr().err


def test_the_documented_example_log_is_what_the_command_writes(tmp_path: Path) -> None:
    # docs/audit.md shows the command that wrote docs/examples/audit_grid4.jsonl
    out = tmp_path / "audit_grid4.jsonl"
    argv = ["--graph", "grid4", "--context", "edge", "--strength", "2", "--prompts", "50"]
    assert main([*argv, "--rollouts", "8", "--tokens", "--out", str(out)]) == 0
    root = REPO_ROOT
    written = out.read_text().splitlines()
    shown = (root / "docs" / "examples" / "audit_grid4.jsonl").read_text().splitlines()
    assert len(written) == len(shown)
    # the same records; numbers to 1e-12: numpy's vectorised log and exp may differ in the last
    # bit between CPUs (SIMD paths), which changes the shortest repr of a few token log-probs
    for mine, theirs in zip(written, shown, strict=True):
        _assert_close(json.loads(mine), json.loads(theirs))


def _assert_close(mine: object, theirs: object) -> None:
    if isinstance(theirs, float):
        assert mine == pytest.approx(theirs, rel=1e-12, abs=1e-12)
    elif isinstance(theirs, dict):
        assert isinstance(mine, dict)
        assert mine.keys() == theirs.keys()
        for key in theirs:
            _assert_close(mine[key], theirs[key])
    elif isinstance(theirs, list):
        assert isinstance(mine, list)
        assert len(mine) == len(theirs)
        for a, b in zip(mine, theirs, strict=True):
            _assert_close(a, b)
    else:
        assert mine == theirs


# --------------------------------------------------------------------------
# per-token audits: top-k lists, reference demonstrations, the objective


def _teacher_conditionals(pi0: Policy, model_name: str, strength: float, demo: int) -> np.ndarray:
    """``log T_c(node[p] | parent[p])`` per prefix, from the teacher's rollout probabilities."""
    space = pi0.space
    row = make_context(model_name, strength).teacher_log_prob(pi0, np.array([demo]))[0]
    mass = space.subtree_logsumexp(row)
    out = np.zeros(space.n_prefixes)
    out[1:] = mass[1:] - mass[space.parent[1:]]
    return out


@pytest.mark.parametrize("k", [1, 2, 4])
def test_top_lists_are_the_k_most_probable_moves(grid3: Policy, k: int) -> None:
    # every listed value is the exact conditional of that move at that position, the list holds
    # the min(k, available) most probable moves, and the sampled move's value is token_logp's
    space = grid3.space
    paths = space.path_labels()
    index = {p: i for i, p in enumerate(paths)}
    student = grid3.log_conditionals()
    records = _records(grid3, "edge", 2.0, prompts=6, rollouts=5, paths=True, top=k)
    checked = 0
    for r in records:
        y = index[r["path"]]
        prefixes = []
        p = int(space.rollout_prefix[y])
        while p > 0:
            prefixes.append(p)
            p = int(space.parent[p])
        prefixes.reverse()
        assert r["tokens"] == [int(space.node[p]) for p in prefixes]
        group = [g for g in records if g["prompt"] == r["prompt"]]
        lists = [(r["top"], student)] + [
            (
                s["top"],
                _teacher_conditionals(grid3, "edge", 2.0, index[group[s["demo"]]["path"]]),
            )
            for s in r["teacher"]
        ]
        for top, conditionals in lists:
            assert len(top) == len(prefixes)
            for t, p in enumerate(prefixes):
                h = int(space.parent[p])
                children = range(
                    int(space.child_start[h]), int(space.child_start[h] + space.child_count[h])
                )
                exact = {str(int(space.node[c])): float(conditionals[c]) for c in children}
                assert len(top[t]) == min(k, len(exact))
                for token, value in top[t].items():
                    assert value == pytest.approx(min(exact[token], 0.0), abs=1e-12)
                    assert (
                        value >= max(exact.values()) - 1e-12
                        or len(top[t]) == len(exact)
                        or (sorted(exact.values(), reverse=True)[len(top[t]) - 1] <= value + 1e-12)
                    )
                checked += 1
    assert checked > 100


def test_reference_demonstrations_and_the_objective_are_written(grid3: Policy) -> None:
    # OPSD/SDFT: every rollout, correct or not, is scored with the one fixed reference, which is
    # the base's likeliest correct rollout unless a path is given
    records = _records(
        grid3,
        "edge",
        2.0,
        prompts=4,
        rollouts=6,
        top=2,
        demos="reference",
        objective="token-forward",
    )
    space = grid3.space
    # the likeliest correct rollout, ties (1e-12 in log space) to the smallest path string
    top = np.where(space.correct, grid3.log_prob, -np.inf)
    best = min(p for p, v in zip(space.path_labels(), top, strict=True) if v >= top.max() - 1e-12)
    for r in records:
        assert r["reference"] == best
        assert [s["demo"] for s in r["teacher"]] == [best]
        assert r["objective"] == "token-forward"
    path = "(0, 0)>(1, 0)>(2, 0)>(2, 1)>(2, 2)"
    other = _records(grid3, "edge", 2.0, prompts=1, rollouts=3, demos="reference", reference=path)
    assert {r["reference"] for r in other} == {path}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"top": 0}, "top must be a positive integer"),
        ({"demos": "uniform"}, "demos must be 'own' or 'reference'"),
        ({"reference": "(0, 0)"}, "reference needs demos='reference'"),
        ({"objective": "jsd=2"}, "out of range"),
    ],
)
def test_bad_sample_options_name_the_argument(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SampleOptions(**options)
