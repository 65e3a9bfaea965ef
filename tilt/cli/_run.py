"""Running a command: one-line errors, exit statuses, signals, broken pipes."""

from __future__ import annotations

import contextlib
import gc
import io
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

import numpy as np

__all__ = [
    "SPACE_HINT",
    "end_process",
    "run_main",
    "silence_stdout",
    "reuse_freed_memory",
    "Terminated",
]


def reuse_freed_memory() -> None:
    """Ask glibc to serve large arrays from its heap and keep freed memory for reuse.

    By default every array above 32 MiB gets fresh pages from the kernel and gives
    them back when freed, so a pipeline that makes many 150 MB arrays (grid6)
    spends seconds in page faults.  With ``M_MMAP_MAX = 0`` and a high trim
    threshold, freed arrays are reused: ``python -m tilt.compare --graph grid6``
    went from 16.1 s to 13.0 s here (docs/performance.md).  A no-op where glibc
    is absent.
    """
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        libc.mallopt(m_trim_threshold, 2**31 - 1)
        libc.mallopt(m_mmap_max, 0)
    except (OSError, AttributeError):
        return
    # heap pages are reused now: transparent huge pages would only add zeroing work
    with contextlib.suppress(AttributeError):
        np._core.multiarray._set_madvise_hugepage(False)  # type: ignore[attr-defined]


def end_process(status: int) -> NoReturn:
    """Leave a command's process with ``status`` (``python -m tilt.NAME``'s last line).

    The cyclic collector is told that nothing left needs it (``gc.freeze``): the
    interpreter's final collections would otherwise walk every object of the run once more
    (numba's some hundred thousand: 0.17 s of a lattice run here, ``docs/performance.md``).
    The atexit handlers and the deallocation of every object still run; only cycles left
    at exit go uncollected, and the process's memory goes with it.
    """
    gc.freeze()
    raise SystemExit(status)


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM or SIGHUP, so that ``finally`` blocks and
    :func:`write_atomic`'s clean-up run as they do on SIGINT."""


_CAUGHT_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def silence_stdout() -> None:
    """Point standard output at ``/dev/null`` after a broken pipe.

    The reader went away (``| head -1``): what is left to print is dropped, and
    Python's flush at exit no longer reports a ``BrokenPipeError``.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass  # stdout is not a file descriptor (captured in tests): nothing to flush at exit


SPACE_HINT = "use a horizon (--horizon), a smaller graph or a lower --max-rollouts"
"""What to do when a command with the instance options runs out of memory."""


def run_main(prog: str, body: Callable[[], int], memory_hint: str = "use a smaller input") -> int:
    """Run ``body``; turn errors, signals and broken pipes into one line and a status.

    ``ValueError``/``TypeError`` -> status 2 (bad input); ``MemoryError`` -> 2 with
    ``memory_hint`` (it names only options the command has); SIGINT -> 130, SIGTERM ->
    143, SIGHUP -> 129 (after the clean-up of ``finally`` blocks: no temporary file is
    left); a closed output pipe -> 0, quietly.
    """
    reuse_freed_memory()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in _CAUGHT_SIGNALS:
            previous[sig] = signal.signal(sig, _raise_terminated)
    try:
        return body()
    except (ValueError, TypeError) as exc:
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(
            f"{prog}: error: out of memory: {memory_hint} (docs/guide.md, 'Memory')",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Terminated as exc:
        signum = int(exc.args[0]) if exc.args else int(signal.SIGTERM)
        print(f"{prog}: terminated by signal {signum}", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:
        silence_stdout()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (a parser may quote a multi-line input)."""
    return " ".join(str(exc).split()) or type(exc).__name__
