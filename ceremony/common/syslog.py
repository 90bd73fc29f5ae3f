"""Lines to the system log, for the scheduled jobs and the command-line tools run under systemd."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Sequence

from ceremony.common import child_process


def send_to_syslog(tag: str, priority: str, lines: Sequence[str]) -> None:
    """Lines to syslog through ``logger`` (util-linux), facility daemon; silently nothing without it.

    The child gets a minimal environment (``child_process``): nothing of the job's environment, where
    a PIN variable may be, reaches it.
    """
    logger = shutil.which("logger")
    if logger is None or not lines:
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        child_process.run([logger, "-t", tag, "-p", f"daemon.{priority}", f"--id={os.getpid()}"],
                          input="".join(line + "\n" for line in lines), text=True, capture_output=True, timeout=10)
