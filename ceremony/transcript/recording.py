"""The one lifecycle of a ceremony's transcript, for the Invoke tasks, the Ansible module and the rehearsal.

Opened in ``OUT/transcripts`` before anything happens; closed whatever happens (sealed, failed,
interrupted); listed in the manifest with its reports even when the ceremony failed, because the
record of a failed ceremony is evidence too; an unexpected error's traceback written beside it
(``crash_log``). Listing never hides the ceremony's own outcome: when the ceremony failed, a
listing failure is a warning under its error; when the ceremony succeeded, it is the error.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

from ceremony.common import crash_log
from ceremony.common.errors import CeremonyError
from ceremony.common.manifest import Manifest
from ceremony.transcript.chain import TranscriptRecorder, open_rehearsal_transcript, open_transcript
from ceremony.transcript.report import file_transcript


@contextlib.contextmanager
def recorded(script: str, definition: Any, out: Path, *, rehearsal: bool, answers: Path | None = None,
             header: Mapping[str, Any] | None = None, lang: str = "en", console: Console | None = None,
             reports: bool = True, numbered: Path | None = None,
             manifest: Manifest | None = None) -> Iterator[TranscriptRecorder]:
    """The transcript of one ceremony of ``script`` whose outputs go to ``out``.

    ``numbered`` is a rehearsal's own transcript path (``<script>-<n>.jsonl``, generated participants);
    otherwise the transcript is ``OUT/transcripts/<script>-<UTC>.jsonl`` with the sign-in at the terminal
    or from ``answers``. ``reports`` writes the French and English reports (HTML, PDF) next to it.
    """
    rec: TranscriptRecorder | None = None
    failing = False
    opened = (open_rehearsal_transcript(numbered, script, definition, console=console) if numbered is not None
              else open_transcript(out / "transcripts", script, definition, rehearsal=rehearsal, answers=answers,
                                   header=header, lang=lang, console=console))
    try:
        with opened as rec:
            yield rec
    except (CeremonyError, KeyboardInterrupt):
        failing = True
        raise
    except Exception as exc:
        failing = True
        crash_log.write(exc, script, rec.path.parent if rec is not None else out / "transcripts")
        raise
    finally:
        if rec is not None:
            try:
                file_transcript(rec.path, manifest or Manifest(out, rehearsal), script, reports=reports)
            except Exception as exc:
                if not failing:
                    raise
                print(f"warning: {rec.path}: transcript not listed in the manifest or reports not written: {exc}",
                      file=sys.stderr)
