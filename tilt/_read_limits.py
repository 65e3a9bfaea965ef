"""Bounded reading of user files: nesting depth, number size, line length and file size.

Every reader of a user's file (graph files, suite files, audit logs) goes through these,
so that a hostile or broken file gives one ``ValueError`` naming the file, the line and
the field, never a ``RecursionError``, an ``OverflowError`` or a read of gigabytes:

* :func:`check_file_size` before reading a whole file (:data:`MAX_FILE_BYTES`);
* :func:`bounded_lines` reads lines of at most :data:`MAX_LINE_CHARS` characters, never
  more than that into memory for one line;
* :func:`load_json` checks the nesting depth (:data:`MAX_DEPTH`) by a scan that does not
  recurse, and parses numbers through hooks that refuse literals longer than
  :data:`MAX_NUMBER_CHARS` and numbers that overflow float64.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_LINE_CHARS",
    "MAX_DEPTH",
    "MAX_NUMBER_CHARS",
    "check_file_size",
    "bounded_lines",
    "check_nesting",
    "load_json",
]

MAX_FILE_BYTES = 256 * 2**20
"""Largest graph or suite file read whole (256 MiB; an audit log is streamed instead)."""

MAX_LINE_CHARS = 16 * 2**20
"""Longest line of an audit log or edge list (16 Mi characters: a rollout with per-token
log-probabilities and tens of demonstrations fits many times over)."""

MAX_DEPTH = 64
"""Deepest nesting of JSON arrays and objects (a node-link graph needs 3, an audit line 3)."""

MAX_NUMBER_CHARS = 64
"""Longest number literal (``-1.2345678901234567e-308`` has 24 characters): longer ones,
such as a 401-digit integer, are refused rather than converted."""


def check_file_size(path: Path, what: str, limit: int | None = None) -> None:
    """``ValueError`` when the file at ``path`` is larger than ``limit`` bytes (default
    :data:`MAX_FILE_BYTES`)."""
    limit = MAX_FILE_BYTES if limit is None else limit
    size = path.stat().st_size
    if size > limit:
        raise ValueError(
            f"{what} {str(path)!r} is {size:,} bytes, above the {limit:,} bytes tilt reads "
            "(split it, or check that it is the right file)"
        )


def bounded_lines(
    handle: IO[str], where: str, limit: int | None = None
) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a text file, each line read with a cap of ``limit`` chars
    (default :data:`MAX_LINE_CHARS`).

    Raises ``ValueError`` naming ``where`` and the line as soon as a line exceeds the cap,
    having read at most ``limit + 1`` characters of it.
    """
    limit = MAX_LINE_CHARS if limit is None else limit
    number = 0
    while True:
        line = handle.readline(limit + 1)
        if not line:
            return
        number += 1
        if len(line) > limit and not line.endswith("\n"):
            raise ValueError(
                f"{where}line {number} is longer than {limit:,} characters: not a line of "
                "this format (a missing line break?)"
            )
        yield number, line


_STRUCTURE = re.compile(r'[\[\]{}"\\]')


def check_nesting(text: str, where: str, limit: int = MAX_DEPTH, *, lines: bool = True) -> None:
    """``ValueError`` when JSON ``text`` nests arrays/objects deeper than ``limit``.

    A linear scan over brackets and string quotes (escapes skipped): no recursion, so a
    file nested 100,000 deep is refused before :func:`json.loads` recurses into it.
    """
    depth = 0
    in_string = False
    skip = -1
    for match in _STRUCTURE.finditer(text):
        position = match.start()
        if position == skip:
            continue
        char = match.group()
        if in_string:
            if char == "\\":
                skip = position + 1
            elif char == '"':
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                line = text.count("\n", 0, position) + 1
                at = f"line {line}: " if lines else ""
                raise ValueError(
                    f"{where}{at}nested deeper than {limit} levels "
                    "(arrays and objects within each other)"
                )
        elif char in "]}":
            depth -= 1


class _NumberError(ValueError):
    def __init__(self, literal: str, reason: str) -> None:
        super().__init__(reason)
        self.literal = literal
        self.reason = reason


def _parse_int(literal: str) -> int:
    if len(literal) > MAX_NUMBER_CHARS:
        raise _NumberError(literal, f"a number of {len(literal)} characters")
    value = int(literal)
    if abs(value) > 2**1023:  # would overflow float64 wherever it is used as a number
        raise _NumberError(literal, f"the integer {literal} overflows float64")
    return value


def _parse_float(literal: str) -> float:
    if len(literal) > MAX_NUMBER_CHARS:
        raise _NumberError(literal, f"a number of {len(literal)} characters")
    value = float(literal)
    if math.isinf(value):
        raise _NumberError(literal, f"{literal} overflows float64")
    return value


def _field_before(text: str, position: int) -> str:
    """The last ``"key":`` before ``position`` (the field a number belongs to), or ``''``."""
    keys = re.findall(r'"((?:[^"\\]|\\.){0,200})"\s*:', text[max(0, position - 4096) : position])
    return f", field {keys[-1]!r}" if keys else ""


def load_json(
    text: str,
    where: str,
    *,
    parse_constant: Callable[[str], Any] | None = None,
    lines: bool = True,
) -> Any:
    """:func:`json.loads` with the nesting and number bounds; one ``ValueError`` naming
    ``where`` (``"file 'x': "``), the line and the field.

    ``parse_constant`` is :func:`json.loads`'s hook for ``NaN`` and ``Infinity`` (kept
    as floats by default).  ``lines=False`` leaves the line number out of messages (one
    line of a file whose caller numbers the lines).
    """
    check_nesting(text, where, lines=lines)
    try:
        return json.loads(
            text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=parse_constant
        )
    except _NumberError as exc:
        position = text.find(exc.literal)
        at = ""
        if position >= 0:
            field = _field_before(text, position)
            at = f"line {text.count(chr(10), 0, position) + 1}{field}: "
            if not lines:
                at = f"{field[2:]}: " if field else ""
        raise ValueError(
            f"{where}{at}{exc.reason}: numbers must be at most {MAX_NUMBER_CHARS} characters "
            "and within float64"
        ) from None
    except json.JSONDecodeError as exc:
        at = f"line {exc.lineno}: " if lines else ""
        raise ValueError(f"{where}{at}not valid JSON ({exc.msg} at column {exc.colno})") from None
