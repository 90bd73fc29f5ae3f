"""Where PINs come from: an environment variable, a 0600 file, or an interactive prompt.

A caller that has the PIN in hand (an Ansible task, the rehearsal) gives it with :func:`hold`
under the variable's name: it is read as if it were that variable, but never exported, so no
child process can inherit it (``child_process`` builds every child's environment anyway).

A PIN never comes from YAML or the command line (both end up in shell history, process
listings or version control), and never goes into a message: errors here name the *source*
(variable name, file path), not the value.
"""

from __future__ import annotations

import getpass
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from ceremony.common.errors import PinError


@dataclass(frozen=True)
class PinSource:
    """Describes where to read a PIN; holds no secret itself, so it is safe to log."""

    env: str | None = None
    file: str | None = None
    prompt: str | None = None
    interactive: bool = True

    def describe(self) -> str:
        parts = []
        if self.file:
            parts.append(f"file {self.file}")
        if self.env:
            parts.append(f"environment variable {self.env}")
        if self.interactive and self.prompt:
            parts.append("prompt")
        return " or ".join(parts) or "nowhere"


def read_pin_file(path: str | Path) -> str:
    """Read a PIN from a file that only its owner can read or write (mode 0600 or stricter)."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise PinError(f"{p}: PIN file not found") from None
    if not stat.S_ISREG(st.st_mode):
        raise PinError(f"{p}: PIN file is not a regular file")
    if st.st_mode & 0o077:
        raise PinError(f"{p}: PIN file has mode {stat.S_IMODE(st.st_mode):04o}; it must be 0600 "
                       "(readable by its owner only)")
    if st.st_uid != os.geteuid():
        raise PinError(f"{p}: PIN file is owned by uid {st.st_uid}, not by the user running the ceremony")
    value = p.read_text(encoding="utf-8").strip("\r\n")
    if not value:
        raise PinError(f"{p}: PIN file is empty")
    return value


#: PINs handed to this process by its caller (an Ansible task's option, a rehearsal's generated
#: PINs), under the variable name the definition gives. They stay in this process's memory: never
#: in ``os.environ``, where every child process would inherit them.
_HELD: dict[str, str] = {}


def hold(name: str, value: str) -> None:
    """Give this process the PIN the definition reads from variable ``name``, without exporting it."""
    if not value:
        raise PinError(f"{name}: an empty PIN was handed over")
    _HELD[name] = value


def release(name: str) -> None:
    """Forget a PIN handed over with :func:`hold` (a rehearsal's tokens are gone)."""
    _HELD.pop(name, None)


def held(name: str | None) -> str | None:
    """The PIN held for variable ``name``, or one the environment gives (an operator's ``export``)."""
    if not name:
        return None
    return _HELD.get(name) or os.environ.get(name) or None


def pin_origin(source: PinSource) -> str:
    """Where :func:`get_pin` will take the PIN from: ``file``, ``env``, ``prompt`` or ``none``."""
    if source.file:
        return "file"
    if held(source.env):
        return "env"
    if source.interactive and source.prompt and sys.stdin is not None and sys.stdin.isatty():
        return "prompt"
    return "none"


def origin_text(source: PinSource, origin: str) -> str:
    """``environment variable X``, ``file F`` or ``the prompt``: said to the room, never the value."""
    return {"file": f"file {source.file}", "env": f"environment variable {source.env}",
            "prompt": "the prompt"}.get(origin, "nowhere")


def get_pin(source: PinSource) -> str:
    """Return the PIN from the first source that provides one."""
    if source.file:
        return read_pin_file(source.file)
    value = held(source.env)
    if value:
        return value
    if source.interactive and source.prompt and sys.stdin is not None and sys.stdin.isatty():
        value = getpass.getpass(f"{source.prompt}: ")
        if not value:
            raise PinError(f"no PIN entered for {source.prompt}")
        return value
    raise PinError(f"no PIN available: set {source.describe()}"
                   + ("" if source.env else " (no environment variable configured)"))
