"""The recording addendum: a ceremony's video recordings bound to its transcript after the fact.

Auditors ask for the video of a key ceremony (IANA's KSK ceremonies publish theirs), but a recording only
exists once the ceremony is over, when the transcript is already sealed. So the recordings get a short
ceremony of their own, at the offline workstation with the root's token: the transcript they belong to is
named by its SHA-256 and final head, each recording file by its size and SHA-256, and the addendum's
transcript is sealed by the root token's transcript-sealing key and chained to the others by the ledger
(its header names the previous transcript's final head). The videos themselves are kept wherever the
service keeps them; anyone holding a copy checks it with ``sha256sum`` against the addendum.

A small JSON file ``transcripts/<transcript>.recordings.json`` (kind ``recording-addendum``) lists the same
facts for whoever reads the output directory without the verifier.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ceremony.ceremonies.runner import CeremonyRun
from ceremony.ceremonies.steps import (
    login,
    offline_check_step,
    prepare_out,
    sealing_key,
    tell,
    token_step,
)
from ceremony.common.errors import OutputError
from ceremony.common.fileio import sha256_file
from ceremony.definition.model import LoadedDefinition
from ceremony.transcript.recorder import Recorder, scripted_step

#: Where the addendum's listing is written, beside the transcripts.
TRANSCRIPTS_DIR = "transcripts"


@dataclass(frozen=True)
class AddendumResult:
    of: str
    listing: Path
    recordings: list[dict[str, Any]]


def recorded_transcript(path: Path, out_dir: Path) -> dict[str, Any]:
    """The sealed transcript the recordings belong to: its name in the output directory, SHA-256 and final head."""
    if not path.is_file():
        raise OutputError(f"{path}: the transcript of the recorded ceremony is not there; give --of "
                          f"{out_dir / TRANSCRIPTS_DIR}/<ceremony>.jsonl")
    try:
        relative = path.resolve().relative_to((out_dir / TRANSCRIPTS_DIR).resolve())
    except ValueError:
        raise OutputError(f"{path}: not a transcript of {out_dir / TRANSCRIPTS_DIR}; the addendum is kept with the "
                          "transcript it completes") from None
    try:
        lines = path.read_bytes().splitlines()
        header, seal = json.loads(lines[0]), json.loads(lines[-1])
    except (ValueError, IndexError):
        raise OutputError(f"{path}: not a ceremony transcript (JSON Lines)") from None
    if not isinstance(seal, dict) or seal.get("type") != "seal" or not isinstance(seal.get("head"), str):
        raise OutputError(f"{path}: the transcript is not sealed; only a sealed ceremony's recordings are bound")
    script = (header.get("script") or {}) if isinstance(header, dict) else {}
    return {"file": relative.as_posix(), "sha256": sha256_file(path), "head": seal["head"],
            "ceremony": str(script.get("name", "?"))}


def checked_recordings(recordings: Sequence[str | Path]) -> list[Path]:
    """Each recording a regular, non-empty file, named once."""
    if not recordings:
        raise OutputError("no recording given: pass --recording FILE once per video file")
    found: list[Path] = []
    for given in recordings:
        path = Path(given)
        if not path.is_file():
            raise OutputError(f"{path}: the recording is not there (or is not a regular file)")
        if path.stat().st_size == 0:
            raise OutputError(f"{path}: the recording is empty")
        if any(path.resolve() == p.resolve() for p in found):
            raise OutputError(f"{path}: the recording is given twice")
        found.append(path)
    return found


def recording_addendum_ceremony(defn: LoadedDefinition, of: str | Path, recordings: Sequence[str | Path],
                                out: str | Path, recorder: Recorder, *, rehearsal: bool, pin_file: str | None = None,
                                interactive: bool = True) -> AddendumResult:
    """Hash ``recordings`` of the ceremony whose transcript is ``of`` and seal them in an addendum."""
    model = defn.model
    name = model.root_name
    ca = model.cas[name]
    offline_check_step(recorder, rehearsal)
    out_dir, manifest = prepare_out(out, rehearsal)
    with CeremonyRun(out_dir, manifest, recorder, "recording-addendum") as run:
        with scripted_step(recorder, "definition-check"):
            target = recorded_transcript(Path(of), out_dir)
            files = checked_recordings(recordings)
            listing = f"{TRANSCRIPTS_DIR}/{Path(target['file']).stem}.recordings.json"
            run.plan(listing, "recording-addendum", "json", of=target["file"])
            run.check()
            recorder.evidence("definition", {"path": str(defn.path), "sha256": defn.sha256, "ca": name})
            recorder.evidence("recorded-ceremony", target)
            tell(recorder, "w_addendum_of", file=target["file"], ceremony=target["ceremony"], sha=target["sha256"],
                 head=target["head"])
        with scripted_step(recorder, "recordings-hash"):
            hashed = []
            for path in files:
                entry = {"file": path.name, "size": path.stat().st_size, "sha256": sha256_file(path),
                         "of": target["file"], "of_sha256": target["sha256"], "of_head": target["head"]}
                recorder.evidence("recording", entry)
                tell(recorder, "w_recording", file=entry["file"], size=entry["size"], sha=entry["sha256"])
                hashed.append(entry)
            body = {"format": "ceremony-recording-addendum/1", "rehearsal": rehearsal, "of": target,
                    "recordings": [{k: e[k] for k in ("file", "size", "sha256")} for e in hashed]}
            run.stage(listing, (json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode())
            run.record()
        with scripted_step(recorder, "token-open"):
            token_step(recorder, ca)
            session = login(recorder, run.stack, ca.hsm, pin_file, interactive)
            seal_key, seal_cert = sealing_key(recorder, session, name, ca, out_dir)
        run.seal(seal_key, seal_cert, "certificate")
    return AddendumResult(target["file"], out_dir / listing, hashed)
