"""Progress on the terminal: a ``tqdm`` bar on standard error, silent when it is not a terminal.

One helper for every command that can run longer than a few seconds, so that a
redirected or piped run prints nothing extra and a terminal shows how far it is.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

__all__ = ["Progress", "progress_bar"]


def progress_bar(description: str, total: int | None = None, unit: str = "step") -> Any:
    """A ``tqdm`` bar on stderr (disabled, and printing nothing, unless stderr is a terminal)."""
    return tqdm(
        total=total,
        desc=description,
        unit=unit,
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        leave=False,
        dynamic_ncols=True,
    )


class Progress:
    """``progress(done, total, *what)``: one bar per ``total``, closed when ``done == total``
    or by :meth:`close` (a run that stops early, such as L-BFGS at its tolerance).

    ``what`` (an optional name, such as a prompt's or an objective's) is shown after the bar.
    """

    def __init__(self, description: str, unit: str = "step") -> None:
        self.description = description
        self.unit = unit
        self._bar: Any = None
        self._total: int | None = None

    def __call__(self, done: int, total: int, *what: object) -> None:
        if self._bar is None or total != self._total:
            self.close()
            self._bar = progress_bar(self.description, total, self.unit)
            self._total = total
        label = " ".join(str(w) for w in what if w is not None)
        self._bar.n = done
        if label:
            self._bar.set_postfix_str(label, refresh=False)
        self._bar.refresh()
        if done >= total:
            self.close()

    def close(self) -> None:
        """Clear the bar from the terminal."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
