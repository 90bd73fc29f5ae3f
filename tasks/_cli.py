"""Shared plumbing of the tasks: one clear line for an anticipated error, never a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from ceremony.errors import CeremonyError

F = TypeVar("F", bound=Callable[..., Any])


def operator_errors(func: F) -> F:
    """Turn a :class:`CeremonyError` into ``error: <message>`` on stderr and its exit code."""

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

    return wrapper  # type: ignore[return-value]
