"""Unexpected errors: the whole traceback in a file, one line for the person at the terminal.

An anticipated error (a bad input, a refused token) is one clear line and nothing more. An
unexpected one is a defect of the suite: the operator in a ceremony room, or systemd running the
CRL job, must not get a screen of Python, but the maintainers need every frame of it, and an
auditor needs to find it next to the ceremony's transcript. So the traceback goes to a file
(mode 0600, never overwritten), next to the transcript when a ceremony was running, and the one
line names that file. A traceback holds code and messages, not local variables: no PIN is in it.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import traceback
from pathlib import Path

#: Exit status of an unexpected error (sysexits.h EX_SOFTWARE: an internal software error).
EXIT_CODE = 70


_NOTE = "traceback written to "


def default_directory() -> Path:
    """Where a traceback goes when no ceremony names a place: ``$XDG_STATE_HOME/ceremony-suite``."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "ceremony-suite"


def write(exc: BaseException, what: str, directory: Path | None = None) -> Path | None:
    """Write ``exc``'s traceback to ``<directory>/<what>-<UTC>-<pid>.traceback.txt``; its path, or None.

    The path is also noted on the exception, so that an outer handler names the same file instead of
    writing a second one. Writing never raises: a full disk must not hide the error being reported.
    """
    known = written_for(exc)
    if known is not None:
        return known
    target = Path(directory) if directory is not None else default_directory()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = target / f"{what}-{stamp}-{os.getpid()}.traceback.txt"
    body = (f"{what}: unexpected {type(exc).__name__} at {stamp}\n"
            f"command: {' '.join(sys.argv)}\n\n" + "".join(traceback.format_exception(exc)))
    try:
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(body)
    except OSError:
        return None
    exc.add_note(_NOTE + str(path))
    return path


def written_for(exc: BaseException) -> Path | None:
    """The traceback file already written for ``exc`` (by an inner handler), if any."""
    for note in getattr(exc, "__notes__", ()):
        if note.startswith(_NOTE):
            return Path(note.removeprefix(_NOTE))
    return None


def one_line(exc: BaseException, path: Path | None) -> str:
    """What the operator reads: what happened, that it is a defect, and where the traceback is."""
    where = f"the traceback is in {path}" if path else "the traceback could not be written to a file (below)"
    return (f"unexpected {type(exc).__name__}: {exc} (a defect of the suite, not of what you typed; {where}: "
            "give it to the suite's maintainers)")


def report(exc: BaseException, what: str, directory: Path | None = None) -> str:
    """Write the traceback (or print it to stderr when no file can be written) and return the one line."""
    path = write(exc, what, directory)
    if path is None:
        traceback.print_exception(exc, file=sys.stderr)
    return one_line(exc, path)
