"""What a ceremony reports while it runs: steps, evidence, artifacts, and the final seal.

The engine's ceremonies talk to a :class:`Recorder` and never to a file or a terminal directly.
The console recorder shows the operator what happens; the transcript recorder
(:mod:`ceremony.transcript.chain`) also writes the hash-chained, HSM-signed record for the auditor.
Keeping this interface small is what lets the ceremony code stay the same for both.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.text import Text

from ceremony.common.display import make_console, text


class Recorder(Protocol):
    """The ceremony's view of its record keeping."""

    rehearsal: bool
    lang: str  # the language of the room: "fr" or "en" (see ceremony.terminal_text)

    def step(self, step_id: str, description: str) -> contextlib.AbstractContextManager[None]:
        """Record a scripted step: start, end, outcome. An exception inside is a failed step."""

    def evidence(self, name: str, data: Mapping[str, Any]) -> None:
        """Record facts captured automatically (token, key, offline check, lint results, ...)."""

    def artifact(self, kind: str, path: Path, sha256: str, **info: Any) -> None:
        """Record an output file and its hash."""

    def say(self, text: str) -> None:
        """Show something to the people in the room (fingerprints to read aloud, results)."""

    def busy(self, what: str) -> contextlib.AbstractContextManager[None]:
        """A spinner while something slow runs (lint, PDF rendering), so nobody thinks the terminal froze."""

    def seal(self, private_key: Any, verifier: Mapping[str, Any]) -> None:
        """Sign the record with the ceremony's CA key, inside the HSM, while the session is open.

        ``verifier`` names what verifies that signature: ``{"kind": "certificate" | "public-key",
        "path": ..., "sha256": ...}``.
        """


def scripted_step(recorder: Recorder, step_id: str) -> contextlib.AbstractContextManager[None]:
    """Step ``step_id`` of the ceremony's script, called by the script's own words.

    The script the transcript embeds and hashes is the only source of what a step is called: the
    record and the room get its title (the transcript shows it in the room's language); a recorder
    without a script (a console in tests) shows the step's id. The code never words a step itself.
    """
    script = getattr(recorder, "script", None)
    scripted = script.step(step_id) if script is not None else None
    return recorder.step(step_id, scripted.title["en"] if scripted is not None else step_id)


@contextlib.contextmanager
def busy(console: Console, what: str) -> Iterator[None]:
    """A spinner on a terminal; on anything else (a log, a test) one line saying what runs."""
    if not console.is_terminal:
        console.print(f"  … {what}")
        yield
        return
    with console.status(Text(what), spinner="dots"):
        yield


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ConsoleRecorder:
    """Shows the ceremony on the terminal; keeps evidence and artifacts in memory for the caller."""

    def __init__(self, rehearsal: bool, console: Console | None = None, lang: str = "en") -> None:
        self.rehearsal = rehearsal
        self.lang = lang
        self.console = console or make_console()
        self.evidence_log: list[tuple[str, dict[str, Any]]] = []
        self.artifacts: list[dict[str, Any]] = []
        self.steps: list[tuple[str, str]] = []

    @contextlib.contextmanager
    def step(self, step_id: str, description: str) -> Iterator[None]:
        self.console.print(text(("▶ " + description, "bold"), (f" ({step_id})", "dim")))
        try:
            yield
        except BaseException:
            self.steps.append((step_id, "failed"))
            self.console.print(f"✗ {step_id} failed", style="red")
            raise
        self.steps.append((step_id, "done"))

    def evidence(self, name: str, data: Mapping[str, Any]) -> None:
        self.evidence_log.append((name, dict(data)))

    def artifact(self, kind: str, path: Path, sha256: str, **info: Any) -> None:
        self.artifacts.append({"kind": kind, "path": str(path), "sha256": sha256, **info})
        self.console.print(text(f"  wrote {path}", (f" ({kind})", "dim")))

    def say(self, text: str) -> None:
        self.console.print(text)

    def busy(self, what: str) -> contextlib.AbstractContextManager[None]:
        return busy(self.console, what)

    def seal(self, private_key: Any, verifier: Mapping[str, Any]) -> None:
        """Nothing to seal: the console is not a record."""
