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
from tilt.objectives import parse_objective

__all__ = [
    "AuditInputError",
    "Score",
    "Rollout",
    "Prompt",
    "TopK",
    "read_prompts",
    "LOGP_TOLERANCE",
]

LOGP_TOLERANCE = 1e-6
"""A log-probability may exceed 0 by this much (rounding of a log-softmax); more is an error."""

TOKEN_SUM_TOLERANCE = 1e-4
"""Per-token log-probabilities must sum to ``logp`` within this, relative to ``max(1, |logp|)``."""


TOP_SUM_TOLERANCE = 1e-6
"""A position's listed probabilities may add up to at most ``1 + this`` (rounding)."""

TopK = tuple[dict[str, float], ...]
"""Per position of a rollout, the listed next tokens and their log-probabilities (top-k)."""


class AuditInputError(ValueError):
    """A line of the audit log is wrong; the message names the line and the reason."""


@dataclass(frozen=True)
class Score:
    """The teacher's log-probability of a rollout with one demonstration in context.

    ``top``: per position, the teacher's top-k next tokens with their
    log-probabilities (the rest of the mass is the tail); ``reference``: the
    demonstration is the prompt's fixed reference (OPSD, SDFT), not a sibling.
    """

    demo: str
    logp: float
    token_logp: FloatArray | None
    top: TopK | None = None
    reference: bool = False


@dataclass(frozen=True)
class Rollout:
    """One line of the log."""

    line: int
    rollout: str
    correct: bool
    logp: float
    token_logp: FloatArray | None
    teacher: tuple[Score, ...]
    tokens: tuple[str, ...] | None = None
    top: TopK | None = None
    reference: str | None = None
    objective: str | None = None


@dataclass(frozen=True)
class Prompt:
    """The rollouts of one prompt, in file order.

    ``reference``: the id of the prompt's fixed demonstration when its
    teachers see one (OPSD, SDFT); ``None`` when they see correct siblings.
    ``objective``: the spec the run says it trained with (``None``: not said).
    """

    prompt: str
    line: int
    rollouts: tuple[Rollout, ...]
    reference: str | None = None
    objective: str | None = None

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


def _top(value: object, field: str, tokens: tuple[str, ...], token_logp: FloatArray) -> TopK:
    """Per position a ``{token: log-probability}`` object; the sampled token's value must agree."""
    if not isinstance(value, list) or len(value) != len(tokens):
        raise ValueError(
            f"{field!r} must be a list of {len(tokens)} objects (one per token), got "
            f"{_describe(value)}"
        )
    out = []
    for t, entry in enumerate(value):
        where = f"{field}[{t}]"
        if not isinstance(entry, dict) or not entry:
            raise ValueError(f"{where!r} must be a non-empty object {{token: logp}}, got {entry!r}")
        raw = list(entry.values())
        if all(type(v) is float for v in raw) and max(raw) <= 0.0:  # the common case, fast
            position = {str(k): v for k, v in entry.items()}
        else:
            position = {str(k): _log_prob(v, f"{where}.{k}") for k, v in entry.items()}
        total = math.fsum(map(math.exp, position.values()))
        if total > 1 + TOP_SUM_TOLERANCE:
            raise ValueError(
                f"{where!r} lists probabilities that add up to {total!r} > 1 (a top-k list is "
                "part of one distribution)"
            )
        sampled = position.get(tokens[t])
        if sampled is not None and abs(sampled - float(token_logp[t])) > TOKEN_SUM_TOLERANCE:
            raise ValueError(
                f"{where!r} gives the sampled token {tokens[t]!r} log-probability {sampled!r} "
                f"but the per-token value is {float(token_logp[t])!r}"
            )
        out.append(position)
    return tuple(out)


def _describe(value: object) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return repr(value)


def _token_ids(value: object, n: int | None) -> tuple[str, ...]:
    if n is None:
        raise ValueError("'tokens' needs 'token_logp' (the sampled tokens' log-probabilities)")
    if not isinstance(value, list) or len(value) != n:
        raise ValueError(f"'tokens' must be a list of {n} token ids, got {_describe(value)}")
    return tuple(_identifier(v, f"tokens[{i}]", "") for i, v in enumerate(value))


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
    tokens = None
    if record.get("tokens") is not None:
        tokens = _token_ids(record["tokens"], None if token_logp is None else token_logp.size)
    top = None
    if record.get("top") is not None:
        if tokens is None or token_logp is None:
            raise ValueError("'top' needs 'tokens' (the sampled token ids) and 'token_logp'")
        top = _top(record["top"], "top", tokens, token_logp)
    reference = None
    if record.get("reference") is not None:
        reference = _identifier(record["reference"], "reference", "")
    objective = None
    if record.get("objective") is not None:
        objective = record["objective"]
        if not isinstance(objective, str):
            raise ValueError(
                f"'objective' must be a spec string such as 'jsd=0.5', got {objective!r}"
            )
        try:
            objective = parse_objective(objective).spec.strip()
        except ValueError as exc:
            raise ValueError(f"'objective': {exc}") from None
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
        if reference is not None and demo != reference:
            raise ValueError(
                f"{where}: demonstration {demo!r} is not the prompt's reference {reference!r} (a "
                "prompt with a reference scores every rollout with it)"
            )
        if demo == rollout and reference is None:
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
        t_top = None
        if entry.get("top") is not None:
            if tokens is None or t_tokens is None:
                raise ValueError(f"{where}.top needs the rollout's 'tokens' and 'token_logp'")
            t_top = _top(entry["top"], f"{where}.top", tokens, t_tokens)
        scores.append(Score(demo, t_logp, t_tokens, t_top, reference is not None))
    if len({s.top is None for s in scores}) > 1:
        raise ValueError("'top' is given for some teacher scores of this rollout but not all")
    return prompt, Rollout(
        0, rollout, correct, logp, token_logp, tuple(scores), tokens, top, reference, objective
    )


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
    if prompt.reference is not None:
        for r in prompt.rollouts:
            if r.reference != prompt.reference:
                raise AuditInputError(
                    f"line {r.line}: reference {r.reference!r} differs from the reference "
                    f"{prompt.reference!r} of prompt {prompt.prompt!r} on line {prompt.line} (one "
                    "fixed demonstration per prompt)"
                )
            if r.correct and not r.teacher:
                raise AuditInputError(
                    f"line {r.line}: correct rollout {r.rollout!r} of prompt {prompt.prompt!r} has "
                    "no teacher score with the reference in context"
                )
        return
    for r in prompt.rollouts:
        if r.reference is not None:
            raise AuditInputError(
                f"line {r.line}: reference {r.reference!r} but the first line of prompt "
                f"{prompt.prompt!r} (line {prompt.line}) has none (give it on every line)"
            )
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
    objective: tuple[int, str] | None = None
    first_data_line = 0
    n = 0
    for n, raw in _numbered(lines):
        text = raw.strip()
        if not text:
            continue
        try:
            prompt, rollout = _parse(text, threshold)
        except ValueError as exc:
            raise AuditInputError(f"line {n}: {exc}") from None
        if first_data_line == 0:
            first_data_line = n
        has_tokens = rollout.token_logp is not None
        if tokens is None:
            tokens = has_tokens
        elif tokens != has_tokens:
            raise AuditInputError(
                f"line {n}: {'has' if has_tokens else 'has no'} 'token_logp' but earlier lines "
                f"{'do not' if has_tokens else 'do'}: give per-token values on every line or none"
            )
        if objective is None and rollout.objective is not None and n > first_data_line:
            raise AuditInputError(
                f"line {n}: has 'objective' but earlier lines do not: give it on every line or none"
            )
        if objective is not None and rollout.objective is None:
            raise AuditInputError(
                f"line {n}: has no 'objective' but line {objective[0]} does: give it on every "
                "line or none"
            )
        if rollout.objective is not None:
            if objective is None:
                objective = (n, rollout.objective)
            elif rollout.objective != objective[1]:
                raise AuditInputError(
                    f"line {n}: 'objective' is {rollout.objective!r} but line {objective[0]} says "
                    f"{objective[1]!r}: one run trains with one objective"
                )
        rollout = replace(rollout, line=n)
        if prompt != current_prompt:
            if current_prompt is not None:
                finished = _prompt(current_prompt, first_line, current, objective)
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
    finished = _prompt(current_prompt, first_line, current, objective)
    _check_prompt(finished)
    yield finished


def _prompt(
    prompt: str, line: int, rollouts: list[Rollout], objective: tuple[int, str] | None
) -> Prompt:
    reference = rollouts[0].reference
    return Prompt(
        prompt, line, tuple(rollouts), reference, None if objective is None else objective[1]
    )
