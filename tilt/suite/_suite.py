"""``python -m tilt.suite``: RL against self-distillation over a suite of prompts.

On one prompt ``pass@k = 1 - (1 - q(C))^k`` depends on accuracy alone, so at
matched accuracy RL and SD have the same pass@k.  Flattening is a property of a
*suite* (``docs/theory.md``, "Observables of the paper"): the mean over prompts
of ``pass@k``, with RL at **one shared beta** matched to SD's mean pass@1.

For every prompt the exact optima are computed (base, each SD variant); RL's
optimum from a base of accuracy ``p`` at ``beta`` has accuracy
``expit(logit(p) + 1 / beta)``, so the mean RL accuracy is increasing in
``u = 1 / beta`` and one scalar root (``scipy.optimize.brentq``, checked to
1e-12) gives the shared beta.  RL matched per prompt is reported too (it
equals SD's accuracy wherever RL can reach it; RL with a 0/1 reward never
lowers accuracy, so where SD lowers it RL stays at the base).

At matched mean pass@1, mean pass@2 differs by exactly the difference of the
accuracies' variances over prompts (``pass@2 = 2a - a^2``), and for every k
the more spread-out accuracies lose (``1 - (1 - a)^k`` is concave): SD's mean
pass@k falls below RL's when SD spreads the prompts' accuracies more than RL's
uniform log-odds shift ``1 / beta`` does — by lowering some prompts'
accuracy, or by raising easy prompts more than hard ones — and rises above it
when SD lifts the hard prompts more.  The table reports both spreads.

Built-in suites (:data:`SUITES`):

* ``grid-pairs`` — every ordered source-target pair of the 4x4 grid, horizon 8,
  a seeded random base per prompt (240 prompts; ``--prompts N`` samples N);
* ``random-graphs`` — 40 seeded connected G(8, 0.35) graphs, node 0 to node 7,
  a seeded random base each;
* ``chain-traps`` — designed to show the mechanism: a direct move ``s > t``
  beside a chain of ``L`` moves to ``t`` whose last node also offers ``D``
  dead ends (``L`` in 1, 2, 4, 8, ``D`` in 1, 4, 16, 64, direct logit -4, -2,
  0: 48 prompts, edge-softmax bases from the logits).  ``kernel`` SD lowers the accuracy of
  the long-chain prompts (failures share many moves with the chain's correct
  rollout) and raises it on the others;
* a JSON file: a list of prompts, each an object with ``graph`` (catalogue
  name, a graph file path relative to the suite file, or an inline node-link
  object), and optional ``source``, ``target``, ``horizon``, ``base``
  (``default``/``uniform``/``random``), ``seed``, ``name``.

A prompt with no correct rollout is **skipped and counted** (every method has
accuracy 0 there and RL cannot change it), and so is a prompt whose base accuracy
underflows float64 (its correct rollouts' mass is below 5e-324: no representable
accuracy to put into a mean); any other problem with a prompt refuses the suite
with one line.

JSON schema (``--json``), version ``tilt.suite/1``::

    {"schema": "tilt.suite/1",
     "suite": {"name", "description", "prompts": n_solved,
               "skipped": [{"index", "name", "reason"}]},
     "settings": {"context", "strength", "demos", "alpha", "anchor", "seed", "k": [...]},
     "base": {"mean_accuracy", "mean_pass_at_k": {"k": value}},
     "variants": [{"sd": method, "mean_accuracy",
                   "accuracy_spread": {"sd", "rl_shared"} (std of accuracy over prompts),
                   "rl_shared_beta": beta or null (null: SD's mean is below the base's),
                   "rl_shared_message": why null or "",
                   "worse_than_base": {"count", "fraction"} (SD below the base by > 1e-12;
                                       there RL per prompt stays at the base),
                   "mean_pass_at_k": {"sd": {...}, "rl_shared": {...}|null,
                                      "rl_per_prompt": {...}},
                   "sd_minus_rl_shared": {"k": value}|null,
                   "most_different": [{"index", "name", "base", "sd", "rl_shared"}]}],
     "prompts": [{"index", "name", "graph", "source", "target", "horizon", "base",
                  "rollouts", "correct",
                  "accuracy": {"base", "sd_<method>", "rl_shared@<method>",
                               "rl_per_prompt@<method>"}}]}

Example::

    python -m tilt.suite --suite grid-pairs --context kernel --strength 2
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import networkx as nx
import numpy as np

from tilt._checks import check_instance, check_int, check_ints, check_number, check_same_length
from tilt._read_limits import check_file_size, load_json
from tilt.engines import (
    DPInstance,
    EngineInstance,
    EnumeratedInstance,
    InstanceSpec,
    Method,
    build_instance,
)
from tilt.objectives import SD_METHODS, parse_objective, preset
from tilt.policy import BASES, Policy
from tilt.space import DEFAULT_MAX_ROLLOUTS
from tilt.tasks import Task
from tilt.tasks.graphs import load_graph, make_task, named_task, resolve_task

__all__ = [
    "MATCH_TOL",
    "SUITES",
    "SCHEMA",
    "Prompt",
    "Suite",
    "SuiteConfig",
    "PromptResult",
    "VariantSummary",
    "SuiteResult",
    "load_suite",
    "builtin_suite",
    "solve_prompt",
    "shared_beta",
    "summarise",
    "run_suite",
    "select_prompts",
    "DEFAULT_KS",
]

SCHEMA = "tilt.suite/1"
DEFAULT_KS = tuple(2**i for i in range(11))
"""1, 2, 4, ..., 1024."""
WORSE_TOL = 1e-12
"""SD's accuracy counts as below the base's when lower by more than this."""
MATCH_TOL = 1e-12
"""RL's mean accuracy at the shared beta is within this of SD's, or the match is refused."""
SUM_TOL = 1e-12
"""A prompt's accuracy and failure mass, summed separately, add to 1 within this."""


@dataclass(frozen=True)
class Prompt:
    """One prompt: a task and the base policy on it."""

    name: str
    task: Task
    base: str = "default"
    seed: int = 0


@dataclass(frozen=True)
class Suite:
    """A named list of prompts."""

    name: str
    description: str
    prompts: tuple[Prompt, ...]


# ---------------------------------------------------------------- built-ins


def _seeds(seed: int, n: int) -> list[int]:
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n)]


def _grid_pairs(seed: int) -> Suite:
    grid = named_task("grid4").graph
    nodes = list(grid.nodes)
    pairs = [(s, t) for s in nodes for t in nodes if s != t]
    prompts = tuple(
        Prompt(f"grid4 {s}->{t}", make_task(grid, s, t, 8, name="grid4"), "random", ps)
        for (s, t), ps in zip(pairs, _seeds(seed, len(pairs)), strict=True)
    )
    return Suite(
        "grid-pairs",
        "every ordered source-target pair of the 4x4 grid, horizon 8, seeded random bases",
        prompts,
    )


def _random_graphs(seed: int) -> Suite:
    prompts: list[Prompt] = []
    rng = np.random.default_rng(seed)
    while len(prompts) < 40:
        graph = nx.gnp_random_graph(8, 0.35, seed=int(rng.integers(2**31)))
        if not nx.is_connected(graph):
            continue
        index = len(prompts)
        prompts.append(
            Prompt(
                f"random-{index}",
                make_task(graph, 0, 7, name=f"gnp(8,0.35)#{index}"),
                "random",
                int(rng.integers(2**31)),
            )
        )
    return Suite(
        "random-graphs",
        "40 seeded connected G(8, 0.35) graphs, node 0 to node 7, seeded random bases",
        tuple(prompts),
    )


def _chain_trap(length: int, dead_ends: int, direct: float) -> Task:
    graph = nx.DiGraph()
    graph.add_edge("s", "t", logit=direct)
    previous = "s"
    for i in range(length):
        graph.add_edge(previous, f"a{i}", logit=0.0)
        previous = f"a{i}"
    graph.add_edge(previous, "t", logit=0.0)
    for j in range(dead_ends):
        graph.add_edge(previous, f"dead{j}", logit=0.0)
    return make_task(
        graph, "s", "t", name=f"chain-trap(L={length},D={dead_ends},direct={direct:g})"
    )


def _chain_traps(seed: int) -> Suite:
    del seed  # fully determined: no random choice
    prompts = tuple(
        Prompt(f"L={length} D={dead} direct={direct:g}", _chain_trap(length, dead, direct))
        for length in (1, 2, 4, 8)
        for dead in (1, 4, 16, 64)
        for direct in (-4.0, -2.0, 0.0)
    )
    return Suite(
        "chain-traps",
        "a direct move s>t beside a chain of L moves to t whose end offers D dead ends "
        "(L 1/2/4/8, D 1/4/16/64, direct logit -4/-2/0); default bases",
        prompts,
    )


SUITES: dict[str, Callable[[int], Suite]] = {
    "grid-pairs": _grid_pairs,
    "random-graphs": _random_graphs,
    "chain-traps": _chain_traps,
}
"""Built-in suites by name; each is built from a seed."""


def builtin_suite(name: str, seed: int = 0) -> Suite:
    """The built-in suite ``name`` (see :data:`SUITES`)."""
    if name not in SUITES:
        raise ValueError(
            f"unknown suite {name!r}: choose one of {', '.join(SUITES)}, or give a JSON file"
        )
    return SUITES[name](seed)


def _prompt_from_json(entry: object, index: int, folder: Path) -> Prompt:
    where = f"prompt {index}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} of the suite file is not a JSON object")
    unknown = set(entry) - {"graph", "source", "target", "horizon", "base", "seed", "name"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    if "graph" not in entry:
        raise ValueError(f"{where} has no 'graph' (a catalogue name, a file or a node-link object)")
    graph, source, target = entry["graph"], entry.get("source"), entry.get("target")
    horizon = entry.get("horizon")
    if horizon is not None and (isinstance(horizon, bool) or not isinstance(horizon, int)):
        raise ValueError(f"{where}: horizon must be an integer or null, got {horizon!r}")
    try:
        if isinstance(graph, dict):
            links = "links" if "links" in graph else "edges"
            g = nx.node_link_graph(graph, edges=links)
            source = g.graph.get("source") if source is None else source
            target = g.graph.get("target") if target is None else target
            if source is None or target is None:
                raise ValueError("an inline graph needs 'source' and 'target'")
            task = make_task(g, source, target, horizon, name=str(entry.get("name", where)))
        elif isinstance(graph, str):
            path = folder / graph
            if path.is_file():
                task = load_graph(path, source, target, horizon)
            else:
                task = resolve_task(graph, source, target, horizon)
        else:
            raise ValueError(f"'graph' must be a name, a path or an object, got {graph!r}")
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    except (nx.NetworkXError, KeyError, TypeError) as exc:
        raise ValueError(f"{where}: cannot read the inline graph: {exc}") from None
    base = entry.get("base", "default")
    if base not in BASES:
        raise ValueError(f"{where}: unknown base {base!r}: choose one of {', '.join(BASES)}")
    seed = entry.get("seed", index)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"{where}: seed must be a non-negative integer, got {seed!r}")
    name = str(entry.get("name", f"{task.name} {task.source}->{task.target}"))
    return Prompt(name, task, base, seed)


def load_suite(path: str | Path) -> Suite:
    """A user suite: a JSON list of prompts (module docstring).

    Raises
    ------
    ValueError
        If the file is missing, is not JSON, is not a non-empty list, or a
        prompt is invalid (the message names the prompt's index).  Files above
        256 MiB, JSON nested deeper than 64 levels and number literals above 64
        characters (or beyond float64) are refused, naming the line and field
        (:mod:`tilt._read_limits`).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"suite file {str(path)!r} does not exist")
    check_file_size(path, "suite file")
    try:
        data = load_json(path.read_text(), "")  # bounded nesting and numbers
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"cannot read suite file {str(path)!r}: {exc}") from None
    if not isinstance(data, list) or not data:
        raise ValueError(f"suite file {str(path)!r} must hold a non-empty JSON list of prompts")
    prompts = tuple(_prompt_from_json(e, i, path.parent) for i, e in enumerate(data))
    return Suite(path.name, f"{len(prompts)} prompts from {path.name}", prompts)


# ---------------------------------------------------------------- per prompt


@dataclass(frozen=True)
class SuiteConfig:
    """What every prompt is solved with (picklable, sent to the workers)."""

    context: str = "edge"
    strength: float = 2.0
    demos: str = "own"
    alpha: float = 0.5
    anchor: float = 0.0
    methods: tuple[str, ...] = SD_METHODS
    """Objective specs, and ``preset[NAME]`` for a trainer's preset."""
    max_rollouts: int = DEFAULT_MAX_ROLLOUTS
    engine: str = "enumerate"
    """``enumerate``, ``dp`` or ``auto`` (:func:`tilt.engines.build_instance`).  The DP
    engine needs acyclic prompts and methods with a Markov form (forward SD has none, so the
    command, which always solves it, enumerates)."""


@dataclass(frozen=True)
class PromptResult:
    """Exact accuracies of one prompt (``skipped`` holds the reason when it has none).

    ``incorrect`` holds ``1 - q(C)`` summed directly (no cancellation near 1).
    """

    index: int
    name: str
    graph: str
    source: str
    target: str
    horizon: int | None
    base: str
    rollouts: int = 0
    correct: int = 0
    accuracy: tuple[tuple[str, float], ...] = ()
    incorrect: tuple[tuple[str, float], ...] = ()
    skipped: str = ""


def solve_prompt(index: int, prompt: Prompt, config: SuiteConfig) -> PromptResult:
    """The exact base and SD accuracies of one prompt (run in a worker)."""
    task = prompt.task
    base_name = prompt.base + (f"(seed={prompt.seed})" if prompt.base == "random" else "")
    head = (
        index,
        prompt.name,
        task.name,
        str(task.source),
        str(task.target),
        task.horizon,
        base_name,
    )
    # reference demonstrations: each prompt's likeliest correct rollout under its base
    spec = InstanceSpec(
        graph=task.name,
        max_rollouts=config.max_rollouts,
        base=prompt.base,
        seed=prompt.seed,
        context=config.context,
        strength=config.strength,
        demos=config.demos,
        alpha=config.alpha,
        anchor=config.anchor,
    )
    asked = [_method(name, config.demos) for name in config.methods]
    try:
        instance = cast(EngineInstance, build_instance(spec, asked, config.engine, task))
    except ValueError as exc:
        if "no rollout is correct" in str(exc):
            return PromptResult(*head, skipped=str(exc))
        raise ValueError(f"prompt {index} ({prompt.name}): {exc}") from None
    pi0 = instance.base
    if pi0.accuracy == 0.0:  # correct rollouts exist, but their mass underflows float64
        rollouts, correct = _counts(instance)
        return PromptResult(
            *head,
            rollouts,
            correct,
            skipped=(
                f"the base's accuracy {_log_mass_text(pi0)}underflows float64 (below 5e-324): "
                "no representable accuracy, so it is reported here and left out of the means"
            ),
        )
    acc = [("base", pi0.accuracy)]
    inc = [("base", pi0.incorrect_mass)]
    for method, m in zip(config.methods, asked, strict=True):
        q = instance.sd_optimum(pi0, m.objective, m.demos or config.demos, config.anchor)
        acc.append((method, q.accuracy))
        inc.append((method, q.incorrect_mass))
    rollouts, correct = _counts(instance)
    return PromptResult(*head, rollouts, correct, tuple(acc), tuple(inc))


def _method(name: str, demos: str) -> Method:
    """A method of :attr:`SuiteConfig.methods`: an objective spec, or ``preset[NAME]`` (a
    trainer's objective and demonstrations, :func:`tilt.objectives.preset`)."""
    if name.startswith("preset[") and name.endswith("]"):
        p = preset(name[len("preset[") : -1])
        return Method(parse_objective(p.objective), p.demos)
    return Method(parse_objective(name), demos)


def _log_mass_text(policy: object) -> str:
    """``e^x `` for an enumerated policy's log correct mass (a Markov chain keeps none)."""
    if isinstance(policy, Policy):
        log_mass = float(np.logaddexp.reduce(policy.log_prob[policy.space.correct]))
        return f"e^{log_mass:.6g} "
    return ""


def _counts(instance: EngineInstance) -> tuple[int, int]:
    """Rollouts and correct rollouts (rounded from their logarithms on the DP engine)."""
    if isinstance(instance, EnumeratedInstance):
        return instance.space.n_rollouts, instance.space.n_correct
    assert isinstance(instance, DPInstance)
    return (
        round(math.exp(min(instance.log_rollouts, 709.0))),
        round(math.exp(min(instance.log_correct, 709.0))),
    )


# ---------------------------------------------------------------- aggregation


def _logits(accuracy: np.ndarray, incorrect: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(accuracy) - np.log(incorrect)


def _rl_incorrect(logit: np.ndarray, u: float) -> np.ndarray:
    """``1 - pi_RL(C)`` at ``1 / beta = u`` for bases of log-odds ``logit``."""
    from scipy.special import expit

    return np.asarray(expit(-(logit + u)))


def shared_beta(
    base_accuracy: Sequence[float] | np.ndarray,
    base_incorrect: Sequence[float] | np.ndarray,
    target: float,
) -> float | None:
    """The one ``beta`` at which RL's mean accuracy over prompts equals ``target``.

    RL from a base of accuracy ``p`` has accuracy ``expit(logit(p) + 1 / beta)``;
    the mean is increasing in ``u = 1 / beta``, so the root is unique.  Returns
    ``inf`` when ``target`` is the base's mean, ``0.0`` (the limit) when it is 1,
    ``None`` when it is below the base's mean (RL never lowers accuracy).
    The root is bracketed and refined by ``scipy.optimize.brentq``; the mean
    accuracy at the returned beta is within 1e-12 of ``target``.
    """
    from scipy.optimize import brentq

    p = np.asarray(base_accuracy, dtype=np.float64)
    fail = np.asarray(base_incorrect, dtype=np.float64)
    check_same_length(("base_accuracy", "base_incorrect"), (p, fail))
    target = check_number("target", target, 0.0, 1.0)
    for name, values in (("base_accuracy", p), ("base_incorrect", fail)):
        bad = np.flatnonzero(~((values >= 0) & (values <= 1)))
        if bad.size:
            raise ValueError(f"{name}[{bad[0]}] must lie in [0, 1], got {values[bad[0]]!r}")
    off = np.abs(p + fail - 1.0)
    if off.max() > SUM_TOL:
        i = int(np.argmax(off))
        raise ValueError(
            f"base_accuracy[{i}] + base_incorrect[{i}] must be 1 within {SUM_TOL:g}, "
            f"got {p[i]!r} + {fail[i]!r}"
        )
    if (p == 0).any():
        i = int(np.flatnonzero(p == 0)[0])
        raise ValueError(
            f"base_accuracy[{i}] is 0: RL cannot raise it at any beta, so no shared beta is "
            "defined; leave such prompts out (run_suite reports them as skipped)"
        )
    logit = _logits(p, fail)
    base_mean = float(p.mean())
    if abs(target - base_mean) <= WORSE_TOL:
        return math.inf
    if target < base_mean:
        return None
    if target >= 1.0 - 1e-15:
        return 0.0  # every p > 0: RL's limit has accuracy 1 on every prompt

    def excess(u: float) -> float:
        return float((1.0 - _rl_incorrect(logit, u)).mean() - target)

    # every p >= 5e-324 has log-odds >= -745: at u = 2048 every accuracy rounds to 1 > target
    high = 1.0
    while excess(high) < 0:
        high *= 2.0
        if high > 4096.0:
            raise ArithmeticError(f"shared beta: no bracket below u = {high:g} (cannot happen)")
    u = brentq(excess, 0.0, high, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500)
    if abs(excess(u)) > 1e-12:  # the derivative is at most 1/4: cannot happen; say so if it does
        raise ArithmeticError(f"shared beta root off by {excess(u):.3g}")
    return 1.0 / u if u > 0 else math.inf


@dataclass(frozen=True)
class VariantSummary:
    """One SD variant against RL over the suite."""

    method: str
    mean_accuracy: float
    accuracy_spread: float
    rl_shared_spread: float | None
    rl_shared_beta: float | None
    rl_shared_message: str
    worse_count: int
    sd_curve: dict[int, float]
    rl_shared_curve: dict[int, float] | None
    rl_per_prompt_curve: dict[int, float]
    rl_shared_accuracy: tuple[float, ...] | None
    rl_per_prompt_accuracy: tuple[float, ...]
    most_different: tuple[int, ...]

    def difference(self) -> dict[int, float] | None:
        """Mean pass@k of SD minus RL's at the shared beta, per k."""
        if self.rl_shared_curve is None:
            return None
        return {k: self.sd_curve[k] - self.rl_shared_curve[k] for k in self.sd_curve}


@dataclass(frozen=True)
class SuiteResult:
    """Every prompt's accuracies and the summary of every SD variant."""

    suite: Suite
    config: SuiteConfig
    ks: tuple[int, ...]
    prompts: tuple[PromptResult, ...]
    skipped: tuple[PromptResult, ...]
    base_curve: dict[int, float]
    variants: tuple[VariantSummary, ...]


def _mean_pass(incorrect: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    with np.errstate(divide="ignore"):
        log_fail = np.log(incorrect)
    return {k: float((0.0 - np.expm1(k * log_fail)).mean()) for k in ks}


def summarise(
    suite: Suite,
    config: SuiteConfig,
    results: Sequence[PromptResult],
    ks: Sequence[int] = DEFAULT_KS,
    top: int = 5,
) -> SuiteResult:
    """Shared and per-prompt matched RL, mean pass@k curves, and the prompts that differ most."""
    solved = tuple(r for r in results if not r.skipped)
    skipped = tuple(r for r in results if r.skipped)
    if not solved:
        reasons = sorted({r.skipped for r in skipped})
        raise ValueError(f"every prompt of suite {suite.name!r} was skipped: {'; '.join(reasons)}")
    ks = check_ints("ks", ks, minimum=1)
    top = check_int("top", top, minimum=0)
    acc = {m: np.array([dict(r.accuracy)[m] for r in solved]) for m in ("base", *config.methods)}
    inc = {m: np.array([dict(r.incorrect)[m] for r in solved]) for m in ("base", *config.methods)}
    logit = _logits(acc["base"], inc["base"])
    variants = []
    for method in config.methods:
        target = float(acc[method].mean())
        beta = shared_beta(acc["base"], inc["base"], target)
        message = ""
        if beta is None:
            message = (
                f"SD's mean accuracy {target:.6g} is below the base's {acc['base'].mean():.6g}: "
                "RL with a 0/1 reward never lowers accuracy"
            )
            rl_curve, rl_acc = None, None
        else:
            if math.isinf(beta):
                rl_inc = inc["base"]
            elif beta == 0:
                rl_inc = np.zeros_like(logit)
            else:
                rl_inc = _rl_incorrect(logit, 1.0 / beta)
            rl_curve = _mean_pass(rl_inc, ks)
            rl_acc = 1.0 - rl_inc
            missed = abs(float(rl_acc.mean()) - target)
            if missed > MATCH_TOL:  # never seen; refuse to print a difference as if matched
                message = (
                    f"RL's mean accuracy at beta = {beta:.6g} is {rl_acc.mean():.17g}, "
                    f"{missed:.3g} from SD's {target:.17g} (tolerance {MATCH_TOL:g}): not matched"
                )
                beta, rl_curve, rl_acc = None, None, None
        worse = acc[method] < acc["base"] - WORSE_TOL
        per_prompt_inc = np.where(worse, inc["base"], inc[method])
        per_prompt_acc = np.where(worse, acc["base"], acc[method])
        reference = rl_acc if rl_acc is not None else acc["base"]
        gap = np.abs(acc[method] - reference)
        order = np.lexsort((np.arange(gap.size), -gap))[:top]
        variants.append(
            VariantSummary(
                method,
                target,
                float(acc[method].std()),
                None if rl_acc is None else float(rl_acc.std()),
                beta,
                message,
                int(worse.sum()),
                _mean_pass(inc[method], ks),
                rl_curve,
                _mean_pass(per_prompt_inc, ks),
                None if rl_acc is None else tuple(float(a) for a in rl_acc),
                tuple(float(a) for a in per_prompt_acc),
                tuple(int(i) for i in order),
            )
        )
    return SuiteResult(
        suite, config, ks, solved, skipped, _mean_pass(inc["base"], ks), tuple(variants)
    )


# ---------------------------------------------------------------- running


def _run_local(suite: Suite, config: SuiteConfig, jobs: int) -> Iterator[PromptResult]:
    if jobs == 1:
        for i, prompt in enumerate(suite.prompts):
            yield solve_prompt(i, prompt, config)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    executor = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = [executor.submit(solve_prompt, i, p, config) for i, p in enumerate(suite.prompts)]
        for future in as_completed(futures):
            yield future.result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _run_dask(suite: Suite, config: SuiteConfig, address: str) -> Iterator[PromptResult]:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ValueError(
            "--scheduler needs dask.distributed: pip install 'tilt[distributed]'"
        ) from None
    try:
        client = Client(address, timeout="10s")  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError, ValueError) as exc:
        raise ValueError(f"cannot reach the Dask scheduler at {address!r}: {exc}") from None
    try:
        futures = [
            client.submit(solve_prompt, i, p, config, pure=False)
            for i, p in enumerate(suite.prompts)
        ]
        for future in as_completed(futures):  # type: ignore[no-untyped-call]
            yield future.result()
    finally:
        client.close()  # type: ignore[no-untyped-call]


def run_suite(
    suite: Suite,
    config: SuiteConfig,
    ks: Sequence[int] = DEFAULT_KS,
    jobs: int = 1,
    scheduler: str | None = None,
    top: int = 5,
    progress: Callable[[int, int, str], object] | None = None,
) -> SuiteResult:
    """Solve every prompt (in order, on ``jobs`` processes or a Dask cluster) and summarise.

    ``progress(done, total, name)`` is called as each prompt is solved.

    Raises
    ------
    TypeError, ValueError
        On arguments of a wrong type or out of range (``ks``: positive integers), before
        any prompt is solved.
    """
    check_instance("suite", suite, Suite)
    check_instance("config", config, SuiteConfig)
    ks = check_ints("ks", ks, minimum=1)
    jobs = check_int("jobs", jobs, minimum=1)
    check_int("top", top, minimum=0)
    if scheduler is not None:
        check_instance("scheduler", scheduler, str)
    total = len(suite.prompts)
    results: dict[int, PromptResult] = {}
    stream = _run_dask(suite, config, scheduler) if scheduler else _run_local(suite, config, jobs)
    for result in stream:
        results[result.index] = result
        if progress is not None:
            progress(len(results), total, result.name)
    return summarise(suite, config, [results[i] for i in range(total)], ks, top)


def select_prompts(suite: Suite, n: int | None, seed: int) -> Suite:
    if n is None or n >= len(suite.prompts):
        return suite
    chosen = np.sort(np.random.default_rng(seed).choice(len(suite.prompts), n, replace=False))
    return Suite(
        suite.name,
        f"{suite.description}; a seeded sample of {n} of {len(suite.prompts)}",
        tuple(suite.prompts[i] for i in chosen),
    )
