"""``python -m tilt.sample``: an audit log (JSON Lines) sampled from one of tilt's instances.

Writes the format that ``python -m tilt.audit`` reads (``docs/audit.md``), one
rollout a line, as a self-distillation trainer of the SDPO kind would log it:

* each prompt draws a group of ``--rollouts`` rollouts from the base ``pi0``;
* each rollout is scored by the teacher with ``--demos-per-rollout`` of the
  group's *other* correct rollouts in context (SDPO's successful sibling,
  itself excluded), drawn uniformly without replacement; a rollout with no
  correct sibling gets no teacher score;
* the teacher's log-probability is the context model's ``log T_c(y)``
  (:meth:`tilt.context.ContextModel.teacher_log_prob`), the student's is
  ``log pi0(y)``; with ``--tokens`` both also per move, from the conditionals.

Prompts are replicated draws of one instance, or (``--instances K`` with
``--base random``) cycle over ``K`` instances whose random bases use the seeds
``seed, seed + 1, ..., seed + K - 1``.  A seed fixes every byte of the file.

Example::

    python -m tilt.sample --graph grid4 --context edge --strength 2 \\
        --prompts 64 --rollouts 8 --tokens --out run.jsonl
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from tilt._numerics import FloatArray, IntArray
from tilt.context import ContextModel, reference_rollout
from tilt.objectives import parse_objective
from tilt.policy import Policy, as_generator
from tilt.space import RolloutSpace

__all__ = ["SampleOptions", "sample_records", "sample_jsonl"]


@dataclass(frozen=True)
class SampleOptions:
    """What to sample.

    Attributes
    ----------
    prompts : int
        Number of prompts (groups).
    rollouts : int
        Rollouts per prompt (SDPO's group size; default 8).
    demos_per_rollout : int or None
        Demonstrations scored with each rollout, drawn without replacement from
        the group's other correct rollouts (fewer when fewer exist); ``None``:
        all of them.
    tokens : bool
        Also write per-move log-probabilities of student and teacher.
    paths : bool
        Also write each rollout's path (node labels joined by ``>``).
    top : int or None
        Also write, per position, the student's and each teacher's ``top`` most
        probable next moves with their log-probabilities (``tokens`` implied);
        ``None``: no top-k lists.  A move's token id is its head node's index.
    demos : str
        ``own`` (each group's other correct rollouts, as SDPO) or ``reference``
        (every rollout scored with one fixed correct rollout, as OPSD and SDFT).
    reference : str or None
        With ``demos='reference'``: the reference path (node labels joined by
        ``>``); ``None``: the base's likeliest correct rollout.
    objective : str or None
        Written on every line as the spec the run trained with (``None``: not written).
    """

    prompts: int = 64
    rollouts: int = 8
    demos_per_rollout: int | None = 1
    tokens: bool = False
    paths: bool = False
    top: int | None = None
    demos: str = "own"
    reference: str | None = None
    objective: str | None = None

    def __post_init__(self) -> None:
        for name in ("prompts", "rollouts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        m = self.demos_per_rollout
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1):
            raise ValueError(f"demos_per_rollout must be a positive integer or None, got {m!r}")
        k = self.top
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
            raise ValueError(f"top must be a positive integer or None, got {k!r}")
        if self.demos not in ("own", "reference"):
            raise ValueError(f"demos must be 'own' or 'reference', got {self.demos!r}")
        if self.reference is not None and self.demos != "reference":
            raise ValueError("reference needs demos='reference'")
        if self.objective is not None:
            parse_objective(self.objective)  # raises ValueError naming the accepted forms

    @property
    def per_token(self) -> bool:
        """Whether per-move values are written (``tokens`` or ``top``)."""
        return self.tokens or self.top is not None


def _path_prefixes(space: RolloutSpace, rollout: int) -> IntArray:
    """Prefixes along ``rollout`` after the root, in order (one per move)."""
    out = []
    p = int(space.rollout_prefix[rollout])
    while p > 0:
        out.append(p)
        p = int(space.parent[p])
    return np.array(out[::-1], dtype=np.int64)


def _conditionals(space: RolloutSpace, log_prob: FloatArray) -> FloatArray:
    """``log q(node[p] | parent[p])`` per prefix of the distribution ``log_prob`` over rollouts."""
    mass = space.subtree_logsumexp(log_prob)
    out = np.zeros(space.n_prefixes)
    with np.errstate(invalid="ignore"):
        out[1:] = mass[1:] - mass[space.parent[1:]]
    return out


def _token_values(values: FloatArray) -> list[float]:
    """Per-move log-probabilities as plain floats, rounding above 0 clipped to 0."""
    return [min(float(v), 0.0) for v in values]


def _draw(cumulative: FloatArray, n: int, rng: np.random.Generator) -> IntArray:
    """``n`` independent rollouts from the distribution with cumulative sums ``cumulative``."""
    index = np.searchsorted(cumulative, rng.random(n) * cumulative[-1], side="right")
    return np.minimum(index, cumulative.size - 1).astype(np.int64)


def sample_records(
    bases: Sequence[Policy],
    model: ContextModel,
    options: SampleOptions,
    seed: int | np.random.Generator | None = None,
) -> Iterator[dict[str, object]]:
    """Yield one audit record (a JSON-ready dict) per sampled rollout, prompt after prompt.

    Prompt ``p`` uses the base ``bases[p % len(bases)]``.  Record fields follow
    ``docs/audit.md``: ``prompt``, ``rollout`` (index within the prompt),
    ``correct``, ``logp`` (``log pi0(y)``), ``teacher`` (list of ``{demo, logp}``
    with ``logp = log T_c(y)``), and ``token_logp`` per move with
    ``options.tokens``.

    Notes
    -----
    Cost per prompt: one teacher row (``n_rollouts`` values) per distinct
    demonstration, and with ``tokens`` one pass over the prefix tree per
    distinct demonstration.  Memory does not grow with the number of prompts.
    """
    if not bases:
        raise ValueError("sample_records needs at least one base policy")
    space = bases[0].space
    if any(b.space is not space for b in bases):
        raise ValueError("every base policy must live on the same rollout space")
    rng = as_generator(seed)
    cumulative = [np.cumsum(b.prob) for b in bases]
    labels = space.path_labels() if options.paths else None
    references = None
    if options.demos == "reference":
        references = [reference_rollout(b, options.reference) for b in bases]
    block = max(1, _BLOCK_ENTRIES // (space.n_rollouts * options.rollouts))
    for first in range(0, options.prompts, block):
        groups = [
            _draw_group(space, cumulative[p % len(bases)], options, rng)
            for p in range(first, min(first + block, options.prompts))
        ]
        if references is not None:
            groups = [
                (drawn, [np.array([-1 - references[(first + i) % len(bases)]])] * drawn.size)
                for i, (drawn, _) in enumerate(groups)
            ]
        teachers = _teacher_rows(bases, model, first, groups, options.per_token)
        for offset, (drawn, demos) in enumerate(groups):
            prompt = first + offset
            which = prompt % len(bases)
            yield from _group_records(
                bases[which], which, prompt, drawn, demos, teachers, options, labels
            )


_BLOCK_ENTRIES = 1 << 23
"""Most teacher values (demonstrations x rollouts) computed at once: a block of prompts shares
one call of ``teacher_log_prob`` per base."""


def _draw_group(
    space: RolloutSpace, cumulative: FloatArray, options: SampleOptions, rng: np.random.Generator
) -> tuple[IntArray, list[IntArray]]:
    """One prompt's rollouts, and for each the positions of its demonstrations in the group."""
    drawn = _draw(cumulative, options.rollouts, rng)
    correct_positions = np.flatnonzero(space.correct[drawn])
    demos: list[IntArray] = []
    for j in range(options.rollouts):
        others = correct_positions[correct_positions != j]
        if others.size == 0:
            demos.append(np.zeros(0, dtype=np.int64))
            continue
        m = others.size if options.demos_per_rollout is None else options.demos_per_rollout
        demos.append(rng.choice(others, size=min(m, others.size), replace=False))
    return drawn, demos


@dataclass(frozen=True)
class _Teachers:
    """Teacher rows ``log T_c`` of a block, per base, keyed by demonstration rollout."""

    log_prob: dict[tuple[int, int], FloatArray]
    log_cond: dict[tuple[int, int], FloatArray]


def _teacher_rows(
    bases: Sequence[Policy],
    model: ContextModel,
    first: int,
    groups: list[tuple[IntArray, list[IntArray]]],
    tokens: bool,
) -> _Teachers:
    wanted: dict[int, set[int]] = {}
    for offset, (drawn, demos) in enumerate(groups):
        which = (first + offset) % len(bases)
        for d in demos:
            wanted.setdefault(which, set()).update(_demo_rollout(drawn, int(c)) for c in d)
    log_prob: dict[tuple[int, int], FloatArray] = {}
    log_cond: dict[tuple[int, int], FloatArray] = {}
    for which in sorted(wanted):
        used = np.array(sorted(wanted[which]), dtype=np.int64)
        rows = model.teacher_log_prob(bases[which], used)
        for c, row in zip(used, rows, strict=True):
            log_prob[which, int(c)] = row
            if tokens:
                log_cond[which, int(c)] = _conditionals(bases[which].space, row)
    return _Teachers(log_prob, log_cond)


def _demo_rollout(drawn: IntArray, position: int) -> int:
    """The rollout index of a demonstration: a group position, or ``-1 - index`` (a reference)."""
    return int(drawn[position]) if position >= 0 else -1 - position


def _top(
    log_cond: FloatArray,
    space: RolloutSpace,
    prefixes: IntArray,
    k: int,
    cache: dict[tuple[int, int], dict[str, float]],
    key: int,
) -> list[object]:
    """Per move of a rollout, the ``k`` most probable next moves ``{node index: log q}``
    (ties to the smaller node index); ``cache`` holds each ``(key, prefix)`` once."""
    out: list[object] = []
    for p in prefixes:
        h = int(space.parent[p])
        listed = cache.get((key, h))
        if listed is None:
            start = int(space.child_start[h])
            children = np.arange(start, start + int(space.child_count[h]))
            values = log_cond[children]
            order = np.lexsort((space.node[children], -values))[:k]
            listed = {
                str(int(space.node[children[i]])): min(float(values[i]), 0.0)
                for i in order
                if np.isfinite(values[i])
            }
            cache[key, h] = listed
        out.append(listed)
    return out


def _group_records(
    base: Policy,
    which: int,
    prompt: int,
    drawn: IntArray,
    demos: list[IntArray],
    teachers: _Teachers,
    options: SampleOptions,
    labels: list[str] | None,
) -> Iterator[dict[str, object]]:
    space = base.space
    student_cond = base.log_conditionals() if options.per_token else None
    reference_id = None
    cache: dict[tuple[int, int], dict[str, float]] = {}
    for j, y in enumerate(int(v) for v in drawn):
        record: dict[str, object] = {
            "prompt": prompt,
            "rollout": j,
            "correct": bool(space.correct[y]),
            "logp": min(float(base.log_prob[y]), 0.0),
        }
        if options.objective is not None:
            record["objective"] = options.objective
        prefixes = _path_prefixes(space, y) if options.per_token else None
        if student_cond is not None and prefixes is not None:
            record["token_logp"] = _token_values(student_cond[prefixes])
            if options.top is not None:
                record["tokens"] = [int(space.node[p]) for p in prefixes]
                record["top"] = _top(student_cond, space, prefixes, options.top, cache, -1)
        scores = []
        for d in demos[j]:
            c = _demo_rollout(drawn, int(d))
            key = (which, c)
            if d < 0:
                if reference_id is None:
                    reference_id = space.path_labels(np.array([c]))[0]
                record["reference"] = reference_id
            score: dict[str, object] = {
                "demo": int(d) if d >= 0 else reference_id,
                "logp": min(float(teachers.log_prob[key][y]), 0.0),
            }
            if prefixes is not None:
                score["token_logp"] = _token_values(teachers.log_cond[key][prefixes])
                if options.top is not None:
                    score["top"] = _top(
                        teachers.log_cond[key], space, prefixes, options.top, cache, c
                    )
            scores.append(score)
        record["teacher"] = scores
        if labels is not None:
            record["path"] = labels[y]
        yield record


def sample_jsonl(
    bases: Sequence[Policy],
    model: ContextModel,
    options: SampleOptions,
    seed: int | np.random.Generator | None = None,
) -> str:
    """The records of :func:`sample_records` as JSON Lines text (one compact object a line)."""
    return "".join(
        json.dumps(r, separators=(",", ":"), allow_nan=False) + "\n"
        for r in sample_records(bases, model, options, seed)
    )
