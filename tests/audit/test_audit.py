"""``tilt.audit``: the estimators against exact answers, hostile files, determinism.

The exactness tests enumerate every group of three correct rollouts drawn from
``pi0(. | C)`` and every choice of demonstrations (a uniformly drawn other
correct sibling, as SDPO and ``tilt.sample`` do), weight each by its
probability, and check that the per-prompt numerator and denominator have
exactly the expectations the estimator claims (``docs/audit.md``): this is
where the estimator is exact, so the tolerance is rounding (1e-10).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from _repo import ROOT

from tilt.audit import audit_lines, estimate_prompt, token_slope
from tilt.audit._read import Prompt, Rollout, Score
from tilt.cli.audit import main
from tilt.context import demonstrations, make_context
from tilt.measures import correct_entropy, least_squares_slope, weighted_gap_slope
from tilt.objectives import sd_sequence, tilt_score
from tilt.policy import Policy, base_policy
from tilt.sample import SampleOptions, sample_jsonl
from tilt.space import enumerate_rollouts
from tilt.tasks.graphs import make_task, named_task


def _two_diamonds() -> Policy:
    """s -> {a, b} -> m -> {c, d} -> t, plus a dead end from s: 4 correct rollouts of length 4."""
    graph = nx.DiGraph()
    graph.add_edges_from(
        [("s", "a"), ("s", "b"), ("a", "m"), ("b", "m"), ("m", "c"), ("m", "d")]
        + [("c", "t"), ("d", "t"), ("s", "x")]
    )
    space = enumerate_rollouts(make_task(graph, "s", "t", name="two-diamonds"))
    return base_policy(space, "random", seed=5)


def _path_prefixes(space, y: int) -> list[int]:  # type: ignore[no-untyped-def]
    out, p = [], int(space.rollout_prefix[y])
    while p > 0:
        out.append(p)
        p = int(space.parent[p])
    return out[::-1]


def _conditionals(space, log_prob: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    mass = space.subtree_logsumexp(log_prob)
    out = np.zeros(space.n_prefixes)
    out[1:] = mass[1:] - mass[space.parent[1:]]
    return out


@functools.lru_cache(maxsize=4)
def _group_expectations(pi0: Policy, context: str, strength: float, tokens: bool):  # type: ignore[no-untyped-def]
    """Exact expectations over every group of 3 correct rollouts and every demonstration choice."""
    space = pi0.space
    model = make_context(context, strength)
    correct = np.flatnonzero(space.correct)
    p = pi0.prob[correct] / pi0.prob[correct].sum()
    teacher = model.teacher_log_prob(pi0, correct)  # row per correct demonstration
    student_cond = pi0.log_conditionals()
    teacher_cond = [_conditionals(space, row) for row in teacher]
    paths = {int(y): _path_prefixes(space, int(y)) for y in correct}
    totals = dict.fromkeys(("num", "den", "tnum", "tden", "naive"), 0.0)
    for triple in itertools.product(range(correct.size), repeat=3):
        weight = float(np.prod(p[list(triple)]))
        for choice in itertools.product((0, 1), repeat=3):
            rollouts = []
            for j, a in enumerate(triple):
                others = [i for i in range(3) if i != j]
                d = others[choice[j]]
                y = int(correct[a])
                prefixes = paths[y]
                score = Score(
                    str(d),
                    float(teacher[triple[d], y]),
                    teacher_cond[triple[d]][prefixes] if tokens else None,
                )
                rollouts.append(
                    Rollout(
                        j + 1,
                        str(j),
                        True,
                        float(pi0.log_prob[y]),
                        student_cond[prefixes] if tokens else None,
                        (score,),
                    )
                )
            estimate, _ = estimate_prompt(Prompt("p", 1, tuple(rollouts)))
            w = weight / 8
            totals["num"] += w * estimate.slope_num
            totals["den"] += w * estimate.slope_den
            x = np.array([r.logp for r in rollouts])
            s = np.array([r.teacher[0].logp - r.logp for r in rollouts])
            totals["naive"] += w * float((x - x.mean()) @ s)
            if tokens:
                totals["tnum"] += w * estimate.token_num
                totals["tden"] += w * estimate.token_den
    return totals, p, correct


@functools.lru_cache(maxsize=1)
def _routes() -> Policy:
    return base_policy(enumerate_rollouts(named_task("routes")))


@pytest.mark.parametrize(("context", "strength"), [("edge", 2.0), ("kernel", 0.5), ("copy", 0.5)])
def test_slope_terms_are_unbiased_exactly(context: str, strength: float) -> None:
    # E[num] = (k - 1) cov_w(S, log pi0), E[den] = (k - 1) var_w(log pi0), w = pi0(. | C), k = 3
    pi0 = _routes()
    totals, p, correct = _group_expectations(pi0, context, strength, tokens=False)
    x = pi0.log_prob[correct]
    score = tilt_score(pi0, make_context(context, strength))[correct]
    cov = float(p @ ((x - p @ x) * (score - p @ score)))
    var = float(p @ (x - p @ x) ** 2)
    assert totals["num"] == pytest.approx(2 * cov, abs=1e-10)
    assert totals["den"] == pytest.approx(2 * var, abs=1e-10)
    # so the ratio's estimand is the pi0-weighted gap slope of sequence SD, minus 1
    q = sd_sequence(pi0, make_context(context, strength))
    assert cov / var == pytest.approx(weighted_gap_slope(q, pi0) - 1, abs=1e-10)


def test_the_plain_within_prompt_fit_would_be_biased() -> None:
    # the demonstration is one of the regression points: centring on a mean that contains it
    # shifts E[num] by -cov(log pi0(c), E_y i(y; c)); the estimator removes it (test above)
    totals, _, _ = _group_expectations(_routes(), "edge", 2.0, tokens=False)
    assert abs(totals["naive"] - totals["num"]) > 1e-3


def test_token_terms_are_unbiased_exactly_when_lengths_are_equal() -> None:
    # every correct rollout of the two-diamond graph makes 4 moves, so token means are plain
    # means and the split-half and leave-two-out centrings are exactly unbiased
    pi0 = _two_diamonds()
    space = pi0.space
    assert set(space.length[space.correct]) == {4}
    model = make_context("edge", 1.5)
    totals, _, _ = _group_expectations(pi0, "edge", 1.5, tokens=True)
    flow = space.subtree_sum(np.where(space.correct, pi0.prob, 0.0))[1:] / pi0.accuracy
    x = pi0.log_conditionals()[1:]
    s = model.token_log_target(pi0, demonstrations(pi0))[1:] - x
    mu = float(flow @ x) / float(flow.sum())
    assert totals["tnum"] == pytest.approx(3 * float(flow @ ((x - mu) * s)), abs=1e-10)
    assert totals["tden"] == pytest.approx(3 * float(flow @ ((x - mu) ** 2)), abs=1e-10)
    target = model.token_log_target(pi0, demonstrations(pi0))
    assert totals["tnum"] / totals["tden"] == pytest.approx(token_slope(pi0, target), abs=1e-10)
    assert token_slope(pi0, target) == pytest.approx(least_squares_slope(x, s, flow), abs=1e-12)


def test_a_teacher_equal_to_the_student_predicts_nothing_exactly() -> None:
    # edge(0): pi(y | c) = pi(y), so i(y; c) = 0 for every pair
    pi0 = base_policy(enumerate_rollouts(named_task("grid3")))
    text = sample_jsonl([pi0], make_context("edge", 0.0), SampleOptions(40, 8, 2, True), seed=1)
    result = audit_lines(text.splitlines(), bootstrap=200)
    assert result.amplification.estimate == 0.0
    assert abs(result.delta_entropy.estimate) < 1e-12
    assert result.token_amplification is not None
    assert abs(result.token_amplification.estimate) < 1e-12
    assert result.median_ess_fraction == 1.0


def test_intervals_cover_the_exact_answers_on_a_large_log() -> None:
    # seeded, so deterministic: 400 prompts of 8 on routes, every demonstration scored
    pi0 = base_policy(enumerate_rollouts(named_task("routes")))
    model = make_context("edge", 2.0)
    text = sample_jsonl([pi0], model, SampleOptions(400, 8, None, True), seed=2)
    result = audit_lines(text.splitlines(), bootstrap=500, seed=2)
    q = sd_sequence(pi0, model)
    assert result.amplification.contains(weighted_gap_slope(q, pi0) - 1)
    assert result.token_amplification is not None
    assert result.token_amplification.contains(
        token_slope(pi0, model.token_log_target(pi0, demonstrations(pi0)))
    )
    assert abs(result.delta_entropy.estimate - (correct_entropy(q) - correct_entropy(pi0))) < 0.1


# --------------------------------------------------------------------------
# the command line


def _log(tmp_path: Path, prompts: int = 60, name: str = "run.jsonl", **kw: object) -> Path:
    pi0 = base_policy(enumerate_rollouts(named_task("grid3")))
    options = SampleOptions(prompts, 8, kw.pop("demos", 1), bool(kw.pop("tokens", True)))  # type: ignore[arg-type]
    path = tmp_path / name
    path.write_text(sample_jsonl([pi0], make_context("edge", 2.0), options, seed=4))
    return path


def test_report_json_and_per_prompt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _log(tmp_path)
    assert main([str(path), "--per-prompt"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1] == "objective: sequence (default)"
    assert out.splitlines()[2].startswith("verdict: sequence (default): SD will widen the gaps")
    assert "amplification (token)" in out
    assert sum(1 for line in out.splitlines() if line.split()[:1] == ["17"]) == 1
    assert main([str(path), "--json", "--per-prompt"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["prompts"] == 60
    assert len(data["per_prompt"]) == 60
    a = data["amplification"]
    assert a["low"] <= a["estimate"] <= a["high"]
    assert data["gap_slope"]["estimate"] == pytest.approx(1 + a["estimate"])


def test_a_seed_fixes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _log(tmp_path)
    outputs = []
    for seed in ("1", "1", "2"):
        assert main([str(path), "--json", "--seed", seed]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] != outputs[2]


def test_rollouts_csv_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    path = _log(tmp_path)
    plot, table = tmp_path / "fit.png", tmp_path / "scores.csv"
    assert main([str(path), "--plot", str(plot), "--rollouts", str(table)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = plot.read_bytes()
    assert main([str(path), "--plot", str(plot)]) == 0
    assert plot.read_bytes() == first  # deterministic bytes
    rows = table.read_text().splitlines()
    assert rows[0] == "prompt,rollout,correct,logp,tilt_score,tilt_score_centred"
    assert len(rows) == 1 + 60 * 8
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_stdin(tmp_path: Path) -> None:
    path = _log(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "tilt.audit", "-", "--json"],
        input=path.read_text(),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["file"] == "stdin"


def test_the_library_never_imports_matplotlib() -> None:
    code = "import sys, tilt.audit, tilt.sample; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# --------------------------------------------------------------------------
# hostile files

GOOD = {"prompt": "p", "rollout": 0, "correct": True, "logp": -1.0, "teacher": []}


def _lines(*records: object) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def _prompt(k: int = 3, prompt: str = "p", **change: object) -> list[dict]:
    """``k`` correct rollouts, each scored with the next one in context."""
    out = []
    for j in range(k):
        out.append(
            {
                "prompt": prompt,
                "rollout": j,
                "correct": True,
                "logp": -1.0 - j,
                "teacher": [{"demo": (j + 1) % k, "logp": -0.5 - j}],
            }
        )
    out[0].update(change)
    return out


HOSTILE = [
    ("{not json\n", "line 1: not valid JSON"),
    (_lines([1, 2]), "line 1: expected a JSON object"),
    (_lines({k: v for k, v in GOOD.items() if k != "prompt"}), "line 1: missing field 'prompt'"),
    (_lines({k: v for k, v in GOOD.items() if k != "logp"}), "line 1: missing field 'logp'"),
    (_lines({k: v for k, v in GOOD.items() if k != "correct"}), "missing field 'correct'"),
    (_lines({**GOOD, "logp": "x"}), "line 1: 'logp' must be a number"),
    ('{"prompt": "p", "rollout": 0, "correct": true, "logp": NaN}\n', "line 1: NaN is not"),
    ('{"prompt": "p", "rollout": 0, "correct": true, "logp": -Infinity}\n', "line 1: -Infinity"),
    (_lines({**GOOD, "logp": 0.5}), "line 1: 'logp' is 0.5, a positive log-probability"),
    (_lines({**GOOD, "correct": "yes"}), "'correct' must be true or false"),
    (_lines({**GOOD, "prompt": True}), "'prompt' must be a string or an integer"),
    (_lines({**GOOD, "reward": 0.0}), "'correct' is true but 'reward' 0.0 says incorrect"),
    (_lines({**GOOD, "token_logp": [-0.5, -0.2]}), "'token_logp' sums to -0.7"),
    (_lines({**GOOD, "token_logp": [-0.5, 0.1, -0.6]}), "'token_logp[1]' is 0.1, a positive"),
    (_lines({**GOOD, "teacher": [{"demo": 0, "logp": -1}]}), "is its own demonstration"),
    (_lines({**GOOD, "teacher": [{"logp": -1}]}), "missing field 'demo' in teacher[0]"),
    (_lines({**GOOD, "teacher": [{"demo": 1, "logp": 2.0}]}), "'teacher[0].logp' is 2.0"),
    (_lines(*_prompt(teacher=[{"demo": 7, "logp": -1.0}])), "line 1: demonstration '7' is not a"),
    (
        _lines(
            *_prompt(),
            {**GOOD, "rollout": 9, "correct": False},
            {**GOOD, "rollout": 10, "teacher": [{"demo": 9, "logp": -1.0}]},
        ),
        "line 5: demonstration '9' is not a correct rollout",
    ),
    (_lines(*_prompt(), *_prompt(prompt="q"), *_prompt()[:1]), "line 7: prompt 'p' appears again"),
    (_lines(*_prompt(), _prompt()[1]), "line 4: rollout '1' of prompt 'p' appears twice"),
    (_lines(*_prompt(teacher=[])), "line 1: correct rollout '0' of prompt 'p' has no teacher"),
    (
        _lines(
            *_prompt()[:1],
            {
                **_prompt()[1],
                "token_logp": [-2.0],
                "teacher": [{"demo": 2, "logp": -1.5, "token_logp": [-1.5]}],
            },
        ),
        "line 2: has 'token_logp' but earlier lines do not",
    ),
    ("", "the file has no rollouts"),
    ("\n \n", "the file has no rollouts"),
    (_lines({**GOOD, "correct": False}, {**GOOD, "rollout": 1}), "no prompt has two correct"),
    (_lines(*_prompt(2)), "no prompt has three correct rollouts"),
]


@pytest.mark.parametrize(("text", "message"), HOSTILE)
def test_hostile_files_are_one_line_status_2_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    table = tmp_path / "scores.csv"
    table.write_text("old\n")
    assert main([str(path), "--rollouts", str(table)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("python -m tilt.audit: error: ")
    assert message in err, err
    assert "Traceback" not in err
    assert table.read_text() == "old\n"  # the earlier file is left as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "scores.csv"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{missing}"], "no such file"),
        (["{folder}"], "is a folder"),
        (["{log}", "--plot", "{folder}/no/such.png"], "does not exist"),
        (["{log}", "--rollouts", "{folder}"], "it is a folder"),
        (["{log}", "--confidence", "1.5"], "--confidence must lie in (0, 1)"),
        (["{latin}"], "not UTF-8 text"),
    ],
)
def test_bad_paths_and_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    log = _log(tmp_path, prompts=5)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"prompt": "\xe9"}\n')
    names = {"missing": tmp_path / "nope.jsonl", "folder": tmp_path, "log": log, "latin": latin}
    assert main([a.format(**names) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert message in err, err


def test_big_files_stream_prompt_by_prompt(tmp_path: Path) -> None:
    # the reader yields a prompt as soon as the next one starts: feeding it lines lazily from a
    # generator that fails after the first prompt shows nothing beyond one prompt is read ahead
    from tilt.audit._read import read_prompts

    lines = _lines(*_prompt(prompt="a"), *_prompt(prompt="b")).splitlines()

    def feed():  # type: ignore[no-untyped-def]
        yield from lines[:4]
        raise AssertionError("read past the second prompt's first line")

    first = next(read_prompts(feed()))
    assert first.prompt == "a"
    assert len(first.rollouts) == 3
    assert math.isfinite(estimate_prompt(first)[0].slope)
