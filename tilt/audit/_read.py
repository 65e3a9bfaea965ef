"""Reading an audit log: JSON Lines, one rollout a line, validated and grouped by prompt.

The schema is documented in ``docs/audit.md``.  :func:`read_prompts` streams:
it holds one prompt's rollouts at a time, so memory does not grow with the
length of the file.  Every problem raises :class:`AuditInputError` (a
``ValueError``) whose message starts with the line number and names the field.
Lines are read with a length cap, JSON with bounds on nesting and number size
(:mod:`tilt._read_limits`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from tilt import _read_limits
from tilt._numerics import FloatArray
from tilt._read_limits import bounded_lines, load_json

__all__ = ["AuditInputError", "Score", "Rollout", "Prompt", "read_prompts", "LOGP_TOLERANCE"]

LOGP_TOLERANCE = 1e-6
"""A log-probability may exceed 0 by this much (rounding of a log-softmax); more is an error."""

TOKEN_SUM_TOLERANCE = 1e-4
"""Per-token log-probabilities must sum to ``logp`` within this, relative to ``max(1, |logp|)``."""


class AuditInputError(ValueError):
    """A line of the audit log is wrong; the message names the line and the reason."""


@dataclass(frozen=True)
class Score:
    """The teacher's log-probability of a rollout with one demonstration in context."""

    demo: str
    logp: float
    token_logp: FloatArray | None


@dataclass(frozen=True)
class Rollout:
    """One line of the log."""

    line: int
    rollout: str
    correct: bool
    logp: float
    token_logp: FloatArray | None
    teacher: tuple[Score, ...]


@dataclass(frozen=True)
class Prompt:
    """The rollouts of one prompt, in file order."""

    prompt: str
    line: int
    rollouts: tuple[Rollout, ...]

    @property
    def n_correct(self) -> int:
        return sum(r.correct for r in self.rollouts)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows (log-probabilities must be finite)")


def _identifier(value: object, field: str, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{where}{field!r} must be a string or an integer, got {value!r}")
    return str(value)


def _log_prob(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{field!r} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{field!r} must be finite, got {value!r}")
    if number > LOGP_TOLERANCE:
        raise ValueError(
            f"{field!r} is {number!r}, a positive log-probability (a log-probability is <= 0)"
        )
    return min(number, 0.0)


def _tokens(value: object, field: str, total: float) -> FloatArray:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{field!r} must be a non-empty list of numbers")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        i, bad = next(
            (i, v)
            for i, v in enumerate(value)
            if isinstance(v, bool) or not isinstance(v, (int, float))
        )
        raise ValueError(f"'{field}[{i}]' must be a number, got {bad!r}")
    out = np.array(value, dtype=np.float64)
    bad_index = np.flatnonzero(~np.isfinite(out) | (out > LOGP_TOLERANCE))
    if bad_index.size:
        i = int(bad_index[0])
        _log_prob(value[i], f"{field}[{i}]")  # raises with the reason
    np.minimum(out, 0.0, out=out)
    if abs(float(out.sum()) - total) > TOKEN_SUM_TOLERANCE * max(1.0, abs(total)):
        raise ValueError(
            f"{field!r} sums to {float(out.sum())!r} but the sequence log-probability is "
            f"{total!r}: the per-token values must add up to it"
        )
    return out


def _parse(text: str, threshold: float) -> tuple[str, Rollout]:
    """Parse one line into ``(prompt id, rollout)``; raise ``ValueError`` with the reason."""
    record = load_json(
        text, "", parse_constant=_reject_constant, lines=False
    )  # bounded depth and numbers
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    for field in ("prompt", "rollout", "logp"):
        if field not in record:
            raise ValueError(f"missing field {field!r}")
    prompt = _identifier(record["prompt"], "prompt", "")
    rollout = _identifier(record["rollout"], "rollout", "")
    correct = _correctness(record, threshold)
    logp = _log_prob(record["logp"], "logp")
    token_logp = None
    if record.get("token_logp") is not None:
        token_logp = _tokens(record["token_logp"], "token_logp", logp)
    teacher = record.get("teacher", [])
    if not isinstance(teacher, list):
        raise ValueError(f"'teacher' must be a list of {{demo, logp}} objects, got {teacher!r}")
    scores: list[Score] = []
    seen: set[str] = set()
    for i, entry in enumerate(teacher):
        where = f"teacher[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be an object with 'demo' and 'logp', got {entry!r}")
        for field in ("demo", "logp"):
            if field not in entry:
                raise ValueError(f"missing field {field!r} in {where}")
        demo = _identifier(entry["demo"], "demo", f"{where}: ")
        if demo == rollout:
            raise ValueError(
                f"{where}: rollout {rollout!r} is its own demonstration (SDPO excludes itself)"
            )
        if demo in seen:
            raise ValueError(f"{where}: demonstration {demo!r} is scored twice")
        seen.add(demo)
        t_logp = _log_prob(entry["logp"], f"{where}.logp")
        t_tokens = None
        if entry.get("token_logp") is not None:
            if token_logp is None:
                raise ValueError(f"{where} has 'token_logp' but the rollout has none")
            t_tokens = _tokens(entry["token_logp"], f"{where}.token_logp", t_logp)
            if t_tokens.size != token_logp.size:
                raise ValueError(
                    f"{where}.token_logp has {t_tokens.size} values but the rollout has "
                    f"{token_logp.size} tokens"
                )
        elif token_logp is not None:
            raise ValueError(f"{where} has no 'token_logp' but the rollout has per-token values")
        scores.append(Score(demo, t_logp, t_tokens))
    return prompt, Rollout(0, rollout, correct, logp, token_logp, tuple(scores))


def _correctness(record: dict[str, object], threshold: float) -> bool:
    has_correct, has_reward = "correct" in record, "reward" in record
    if not (has_correct or has_reward):
        raise ValueError("missing field 'correct' (or 'reward')")
    correct = None
    if has_correct:
        value = record["correct"]
        if not isinstance(value, bool):
            raise ValueError(f"'correct' must be true or false, got {value!r}")
        correct = value
    if has_reward:
        reward = record["reward"]
        if isinstance(reward, bool) or not isinstance(reward, (int, float)):
            raise ValueError(f"'reward' must be a number, got {reward!r}")
        if not math.isfinite(float(reward)):
            raise ValueError(f"'reward' must be finite, got {reward!r}")
        from_reward = float(reward) >= threshold
        if correct is not None and correct != from_reward:
            raise ValueError(
                f"'correct' is {str(correct).lower()} but 'reward' {reward!r} says "
                f"{'correct' if from_reward else 'incorrect'} (success threshold {threshold:g})"
            )
        correct = from_reward
    assert correct is not None
    return correct


def _check_prompt(prompt: Prompt) -> None:
    """Demonstrations must be correct rollouts of the prompt; scored where SDPO would score."""
    correct = {r.rollout for r in prompt.rollouts if r.correct}
    known = {r.rollout for r in prompt.rollouts}
    for r in prompt.rollouts:
        for s in r.teacher:
            if s.demo not in known:
                raise AuditInputError(
                    f"line {r.line}: demonstration {s.demo!r} is not a rollout of prompt "
                    f"{prompt.prompt!r}"
                )
            if s.demo not in correct:
                raise AuditInputError(
                    f"line {r.line}: demonstration {s.demo!r} is not a correct rollout of prompt "
                    f"{prompt.prompt!r} (demonstrations are correct siblings)"
                )
        if r.correct and len(correct) >= 2 and not r.teacher:
            raise AuditInputError(
                f"line {r.line}: correct rollout {r.rollout!r} of prompt {prompt.prompt!r} has no "
                f"teacher score, but the prompt has {len(correct)} correct rollouts (score each "
                "rollout with at least one correct sibling in context)"
            )


def _numbered(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """``(number, line)``, each line at most ``MAX_LINE_CHARS`` long (read capped from a file)."""
    numbered = (
        bounded_lines(lines, "")  # type: ignore[arg-type]
        if hasattr(lines, "readline")
        else enumerate(lines, start=1)
    )
    try:
        for n, line in numbered:
            limit = _read_limits.MAX_LINE_CHARS
            if len(line) > limit + 1:
                raise ValueError(f"line {n} is longer than {limit:,} characters")
            yield n, line
    except UnicodeDecodeError:
        raise  # the caller knows the file and says it is not UTF-8
    except ValueError as exc:
        raise AuditInputError(str(exc)) from None


def read_prompts(lines: Iterable[str], threshold: float = 0.5) -> Iterator[Prompt]:
    """Yield the prompts of an audit log one at a time, each validated.

    Parameters
    ----------
    lines : iterable of str, or a text file
        The lines of the file (blank lines are skipped).  A file (anything with
        ``readline``) is read with a cap of :data:`~tilt._read_limits.MAX_LINE_CHARS`
        characters per line: a longer line is refused after reading that much of it.
    threshold : float
        A ``reward`` at or above it makes the rollout correct (SDPO's
        ``success_reward_threshold``, 0.5).

    Raises
    ------
    AuditInputError
        ``line N: reason`` for the first problem found: malformed JSON, a missing
        or ill-typed field, a ``nan``/infinite/positive log-probability, per-token
        values that do not sum to the sequence value, a duplicate rollout id, a
        prompt whose lines are not contiguous, a demonstration that is not a
        correct rollout of the same prompt, per-token values on some lines only,
        or an empty file.
    """
    done: set[str] = set()
    current: list[Rollout] = []
    current_prompt: str | None = None
    first_line = 0
    ids: set[str] = set()
    tokens: bool | None = None
    n = 0
    for n, raw in _numbered(lines):
        text = raw.strip()
        if not text:
            continue
        try:
            prompt, rollout = _parse(text, threshold)
        except ValueError as exc:
            raise AuditInputError(f"line {n}: {exc}") from None
        has_tokens = rollout.token_logp is not None
        if tokens is None:
            tokens = has_tokens
        elif tokens != has_tokens:
            raise AuditInputError(
                f"line {n}: {'has' if has_tokens else 'has no'} 'token_logp' but earlier lines "
                f"{'do not' if has_tokens else 'do'}: give per-token values on every line or none"
            )
        rollout = replace(rollout, line=n)
        if prompt != current_prompt:
            if current_prompt is not None:
                finished = Prompt(current_prompt, first_line, tuple(current))
                _check_prompt(finished)
                yield finished
                done.add(current_prompt)
            if prompt in done:
                raise AuditInputError(
                    f"line {n}: prompt {prompt!r} appears again after other prompts: the lines of "
                    "one prompt must be contiguous (sort the file by prompt)"
                )
            current_prompt, current, ids, first_line = prompt, [], set(), n
        if rollout.rollout in ids:
            raise AuditInputError(
                f"line {n}: rollout {rollout.rollout!r} of prompt {prompt!r} appears twice"
            )
        ids.add(rollout.rollout)
        current.append(rollout)
    if current_prompt is None:
        raise AuditInputError("the file has no rollouts: it is empty or blank")
    finished = Prompt(current_prompt, first_line, tuple(current))
    _check_prompt(finished)
    yield finished
