"""Every child process the engine starts, with an environment built for it, never inherited.

A ceremony process may hold PINs in its environment (an operator's ``export``, a cron line, a
systemd ``Environment=``) under any name the PKI definition chooses, so no rule on variable names
can tell which variables are secret. The only safe rule is the opposite one: a child gets the
few variables it needs to run (where programs are, the locale, the home and temporary directory)
and what its caller names explicitly (``SOFTHSM2_CONF`` for SoftHSM's tool, say), and nothing else.
``run`` refuses an ``env`` argument so that no call site can fall back to inheriting everything.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

#: Variables a child inherits from this process when set: none of them ever holds a secret.
PASSED_THROUGH = ("PATH", "HOME", "TMPDIR")


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def minimal_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: PATH, HOME, TMPDIR when set, a UTF-8 C locale, and ``extra``."""
    env = {name: os.environ[name] for name in PASSED_THROUGH if os.environ.get(name)}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update({"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"})
    env.update(extra or {})
    return env


def run(argv: Sequence[str], *, extra_env: Mapping[str, str] | None = None, **kwargs: Any) \
        -> subprocess.CompletedProcess[Any]:
    """``subprocess.run`` with :func:`minimal_env` (plus ``extra_env``) as the child's whole environment."""
    if "env" in kwargs:
        raise TypeError("child_process.run builds the environment itself; name what the child needs in extra_env")
    kwargs.setdefault("check", False)
    return subprocess.run(list(argv), env=minimal_env(extra_env), **kwargs)
