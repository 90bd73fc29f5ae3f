"""Transcript reports: HTML and PDF, French and English, from the verified records only."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, TESTING_DEFINITION
from test_transcript import ROOT_STEPS, records, rewrite, soft_transcript

from ceremony.common.errors import OutputError
from ceremony.definition.model import load_definition
from ceremony.transcript.audit import verify
from ceremony.transcript.report import render_html, write_reports


@pytest.fixture(scope="module")
def definition() -> Any:
    return load_definition(TESTING_DEFINITION)


def test_html_in_both_languages_shows_the_ceremony(tmp_path: Path, definition: Any) -> None:
    path, _ = soft_transcript(tmp_path / "out", definition, ["coffee-break", *ROOT_STEPS])
    audit = verify(path)
    fr = render_html(audit, "fr")
    en = render_html(audit, "en")
    for text in ("Procès-verbal de cérémonie", "RÉPÉTITION", "Émargement", "Officier cryptographique",
                 "Vérifier que le poste est hors ligne", "INTÈGRE", "Aïssata Sangaré (rehearsal)", "coffee-break",
                 "Ouverture des sacs inviolables", "Signatures", "Écart au script",
                 "en anglais, la langue de la suite"):
        assert text in fr, text
    for text in ("Ceremony transcript", "REHEARSAL", "Crypto Officer", "Check that the workstation is offline",
                 "INTACT", "Sign-off", "not in the script", "Deviation from the script"):
        assert text in en, text
    words = records(path)[-1]["words"]  # the seal, the last record
    assert " ".join(words[:8]) in fr, "the sealed chain head's words are in the report"


def test_a_report_is_bound_to_its_transcript_and_shows_no_path_of_the_machine(tmp_path: Path,
                                                                            definition: Any) -> None:
    """The transcript file's SHA-256 and its final head (hex and words) are in the report, in both languages;
    no absolute path of the workstation (the definition is named by its file name)."""
    path, _ = soft_transcript(tmp_path / "out", definition, ROOT_STEPS)
    seal = records(path)[-1]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    for lang in ("fr", "en"):
        html = render_html(verify(path), lang)
        assert digest in html and " ".join(seal["words"][-8:]) in html and seal["head"][:4] in html, lang
        assert str(tmp_path) not in html and str(TESTING_DEFINITION.parent) not in html, lang


def test_report_of_a_tampered_transcript_says_invalid(tmp_path: Path, definition: Any) -> None:
    path, _ = soft_transcript(tmp_path / "out", definition, ROOT_STEPS)
    recs = records(path)
    recs[12]["data"] = {"forged": True}  # re-chained but not re-sealed
    rewrite(path, recs)
    html = render_html(verify(path), "en")
    assert "INVALID" in html and "Findings of the verifier" in html and "seal" in html


def test_write_reports_fr_en_html_pdf_never_overwrites(tmp_path: Path, definition: Any) -> None:
    path, _ = soft_transcript(tmp_path / "out", definition, ROOT_STEPS)
    written = write_reports(path, tmp_path / "reports")
    assert sorted(p.name for p in written) == sorted(
        f"root-key-generation-1.{lang}.{fmt}" for lang in ("fr", "en") for fmt in ("html", "pdf"))
    text = subprocess.run(["pdftotext", str(tmp_path / "reports" / "root-key-generation-1.fr.pdf"), "-"],
                          capture_output=True, text=True, check=True).stdout
    assert "Procès-verbal" in text and "Témoin interne" in text
    before = {p: p.read_bytes() for p in written}
    with pytest.raises(OutputError, match="exists already"):
        write_reports(path, tmp_path / "reports", ["en"])
    assert {p: p.read_bytes() for p in written} == before


def test_cli_refuses_an_unknown_language(tmp_path: Path, definition: Any) -> None:
    path, _ = soft_transcript(tmp_path / "out", definition, ROOT_STEPS)
    run = subprocess.run([str(REPO / ".venv/bin/invoke"), "audit.report", str(path), "--lang", "de", "--out",
                          str(tmp_path / "r")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 4 and run.stderr.strip().startswith("error: --lang 'de'") and "fr, en" in run.stderr
    assert not (tmp_path / "r").exists()
