"""Shared plumbing of the tasks: one clear line for every error, never a traceback on the terminal.

An anticipated error is its message; an unexpected one (a defect) is one line naming the file that
holds its traceback (``ceremony.common.crash_log``: next to the transcript when a ceremony was running).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from ceremony.common import crash_log
from ceremony.common.errors import CeremonyError

F = TypeVar("F", bound=Callable[..., Any])


def operator_errors(func: F) -> F:
    """Turn a :class:`CeremonyError` into ``error: <message>`` on stderr and its exit code, Ctrl-C into
    exit 130, and anything else into one line naming its traceback file and exit 70."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CeremonyError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            print("error: interrupted by the operator; nothing after the last completed step was done",
                  file=sys.stderr)
            sys.exit(130)
        except Exception as exc:
            print(f"error: {crash_log.report(exc, func.__name__)}", file=sys.stderr)
            sys.exit(crash_log.EXIT_CODE)

    return wrapper  # type: ignore[return-value]
