"""The rehearsal's transcripts, as an auditor receives them: every one verifies, every one has its reports.

Uses the session's one ``invoke rehearse`` (conftest.full_rehearsal, a subprocess as the operator
runs it), then ``invoke audit.verify`` on every transcript its manifest lists, and reads the French
PDFs' text layer with ``pdftotext``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import REHEARSAL_GROUP, REPO

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group(REHEARSAL_GROUP)]
INVOKE = str(REPO / ".venv" / "bin" / "invoke")


@pytest.fixture(scope="module")
def rehearsal(full_rehearsal: tuple[Path, subprocess.CompletedProcess[str]]) -> tuple[Path, Any]:
    """The session's one rehearsal (conftest.full_rehearsal), shared with test_rehearsal."""
    out, run = full_rehearsal
    assert (out / "manifest.json").is_file(), run.stdout[-3000:] + run.stderr[-3000:]
    return out, run


def artifacts(out: Path, kind: str) -> list[dict[str, Any]]:
    return [a for a in json.loads((out / "manifest.json").read_text())["artifacts"] if a["kind"] == kind]


def test_every_rehearsal_transcript_verifies(rehearsal: tuple[Path, Any]) -> None:
    out, run = rehearsal
    transcripts = artifacts(out, "transcript")
    ceremonies = {t["ceremony"] for t in transcripts}
    assert {"root-key-generation", "subordinate-key-generation", "subordinate-signing"} <= ceremonies
    for t in transcripts:
        assert t["format"] == "jsonl"
        result = subprocess.run([INVOKE, "audit.verify", str(out / t["path"]), "--trust", str(out / "root.crt.pem"),
                                 "--rehearsal"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "INTACT" in result.stdout and "REHEARSAL" in result.stdout
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]


def test_every_transcript_has_html_and_pdf_reports_in_both_languages(rehearsal: tuple[Path, Any]) -> None:
    out, _ = rehearsal
    reports = artifacts(out, "transcript-report")
    for t in artifacts(out, "transcript"):
        mine = {(r["format"], r["lang"]) for r in reports if r["path"].startswith(t["path"][:-len(".jsonl")] + ".")}
        assert mine == {("html", "fr"), ("html", "en"), ("pdf", "fr"), ("pdf", "en")}, t["path"]


def test_french_pdf_text_layer_keeps_diacritics(rehearsal: tuple[Path, Any]) -> None:
    out, _ = rehearsal
    pdf = next(r for r in artifacts(out, "transcript-report")
               if r["format"] == "pdf" and r["lang"] == "fr" and r["ceremony"] == "root-key-generation")
    text = subprocess.run(["pdftotext", str(out / pdf["path"]), "-"], capture_output=True, text=True,
                          check=True).stdout
    for phrase in ("Procès-verbal de cérémonie", "RÉPÉTITION", "Émargement", "Génération de la clé",
                   "Aïssata Sangaré (rehearsal)", "INTÈGRE"):
        assert phrase in text, phrase
    english = next(r for r in artifacts(out, "transcript-report")
                   if r["format"] == "pdf" and r["lang"] == "en" and r["ceremony"] == "root-key-generation")
    text_en = subprocess.run(["pdftotext", str(out / english["path"]), "-"], capture_output=True, text=True,
                             check=True).stdout
    assert "Ceremony transcript" in text_en and "REHEARSAL" in text_en and "Sign-off" in text_en


def test_rehearsal_follows_every_script_without_exceptions(rehearsal: tuple[Path, Any]) -> None:
    """Every ceremony the rehearsal runs reports exactly its script's steps: no deviation to approve."""
    out, _ = rehearsal
    for t in artifacts(out, "transcript"):
        recs = [json.loads(line) for line in (out / t["path"]).read_text(encoding="utf-8").splitlines()]
        assert recs[0]["rehearsal"] is True and recs[-2]["status"] == "sealed" and recs[-1]["type"] == "seal", t["path"]
        exceptions = [r["what"] for r in recs if r["type"] == "exception"]
        assert not exceptions, (t["path"], exceptions)
