"""Output files: checked before any work, written atomically, never over an input."""

from __future__ import annotations

import os
import signal
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from tilt.cli._run import _CAUGHT_SIGNALS

__all__ = ["check_output_file", "write_atomic"]


def check_output_file(
    path: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None] = ()
) -> Path:
    """Check, before any work, that ``path`` can be written as a regular file.

    ``inputs`` are the command's input files (``None`` and names that are not
    files, like a catalogue name or ``-``, are skipped): an output that is one
    of them, by name or through a link, is refused, so no command writes over
    its own input.

    Returns the file to replace: ``path`` itself, or the file a symbolic link
    points to (the link is written through and kept).  A file that does not
    exist yet is fine when its folder exists and is writable (checked by
    creating and removing a temporary file there).

    Raises
    ------
    ValueError
        If ``path`` is a folder, a device, a FIFO, a socket or a dangling link;
        if it is one of ``inputs``; if it is read-only; or if its folder is
        missing or not writable.
    """
    given = Path(path)
    if str(path) == "":
        raise ValueError("the output file name is empty")
    if str(path) == "-":
        raise ValueError("cannot write '-': give a file name (standard output is not a file here)")
    for source in inputs:
        if source is not None and str(source) != "-" and _same_file(path, source):
            raise ValueError(
                f"cannot write {str(path)!r}: it is also an input ({str(source)!r}); give "
                "another file name"
            )
    target = Path(os.path.realpath(given)) if given.is_symlink() else given
    if given.is_symlink() and not target.exists():
        raise ValueError(
            f"cannot write {str(path)!r}: it is a link to {str(target)!r}, which does not exist"
        )
    if target.exists():
        mode = target.stat().st_mode
        if stat.S_ISDIR(mode):
            raise ValueError(f"cannot write {str(path)!r}: it is a folder; give a file name")
        if not stat.S_ISREG(mode):
            kind = (
                "a FIFO"
                if stat.S_ISFIFO(mode)
                else "a character device"
                if stat.S_ISCHR(mode)
                else "a block device"
                if stat.S_ISBLK(mode)
                else "a socket"
                if stat.S_ISSOCK(mode)
                else "not a regular file"
            )
            raise ValueError(
                f"cannot write {str(path)!r}: it is {kind}, and tilt writes only regular files "
                "(atomically, through a temporary file): give a file path"
            )
        if not os.access(target, os.W_OK):
            raise ValueError(f"cannot write {str(path)!r}: the file is read-only")
    folder = target.parent
    if not folder.is_dir():
        raise ValueError(f"cannot write {str(path)!r}: folder {str(folder)!r} does not exist")
    blocked = _block_signals()  # a signal between creating and removing the probe waits
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(
            f"cannot write {str(path)!r}: folder {str(folder)!r} is not writable ({exc.strerror})"
        ) from None
    finally:
        _unblock_signals(blocked)
    return target


def _same_file(first: str | os.PathLike[str], second: str | os.PathLike[str]) -> bool:
    """Whether two names are the same existing file (through links), or the same path."""
    try:
        return os.path.samefile(first, second)
    except OSError:
        return os.path.realpath(first) == os.path.realpath(second)


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    A reader never sees a half-written file, and an interrupted write (an
    exception, SIGINT, or SIGTERM/SIGHUP under :func:`run_main`) removes the
    temporary file and leaves the old file (if any) in place.  A symbolic link is
    written through (its target is replaced, the link kept).  The file gets the
    usual permissions (``0666`` less the umask), not ``mkstemp``'s ``0600``.

    Raises
    ------
    ValueError
        If the destination is not a regular file or cannot be written
        (:func:`check_output_file`).
    """
    target = check_output_file(path)
    tmp: str | None = None
    blocked = _block_signals()
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        _unblock_signals(blocked)
        blocked = None
        if isinstance(data, bytes):
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        else:
            with os.fdopen(fd, "w", newline="") as handle:
                handle.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        _unblock_signals(blocked)


def _block_signals() -> set[int | signal.Signals] | None:
    """Hold SIGINT/SIGTERM/SIGHUP while a temporary file is created and named."""
    if not hasattr(signal, "pthread_sigmask"):
        return None
    held = {signal.SIGINT, *_CAUGHT_SIGNALS}
    return signal.pthread_sigmask(signal.SIG_BLOCK, held)


def _unblock_signals(previous: set[int | signal.Signals] | None) -> None:
    if previous is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
