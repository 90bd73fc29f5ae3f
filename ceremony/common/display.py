"""The one way the suite puts text on a terminal: data is shown exactly as it is.

Rich, by default, reads ``[...]`` as markup and ``:name:`` as an emoji code. A fingerprint in the
OpenSSL form (``8B:CD:80``) then prints as ``8B💿80``, and a subject holding ``[x]`` loses it: the
people in the room would read aloud something that is not in the file. Every console of the suite
is therefore made here with markup, emoji and highlighting off, and styling is given with
``style=`` or :class:`rich.text.Text` objects, never by mixing markup into strings that hold data.
Prompts take :class:`Text` for the same reason (``Prompt.ask`` parses a plain ``str`` as markup).
"""

from __future__ import annotations

from typing import IO, Any

from rich.console import Console
from rich.text import Text


def make_console(file: IO[str] | None = None, **options: Any) -> Console:
    """A console that never interprets data: no markup, no emoji codes, no highlighting, and no line
    breaks of its own inside a value."""
    options.setdefault("soft_wrap", True)  # never break a fingerprint or a path across lines: the terminal wraps
    return Console(file=file, markup=False, emoji=False, highlight=False, **options)


def text(*parts: str | tuple[str, str]) -> Text:
    """A styled line from plain pieces: ``text(("▶ ", "bold"), description, (" (id)", "dim"))``.

    Each piece is taken literally: a plain ``str`` unstyled, a ``(str, style)`` pair with that style.
    """
    return Text.assemble(*parts)
