"""The terminal speaks the room's language: every text of the catalogue in French and in English, and a
French root ceremony (and its summary) shows the witness French words around the data, never English ones.
"""

from __future__ import annotations

import io
import string
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TestToken

from ceremony.ceremonies.offline import assess
from ceremony.ceremonies.root_key import root_ceremony
from ceremony.ceremonies.steps import lint_lines
from ceremony.common import terminal_text
from ceremony.common.display import make_console
from ceremony.definition.model import load_definition
from ceremony.transcript.recorder import ConsoleRecorder
from ceremony.transcript.summary import Fingerprint, NextStep, Summary, WrittenFile, render_summary

Flow = Callable[..., tuple[Path, dict[str, TestToken]]]

# English words of the witness view and of the summary that must never reach a French room.
ENGLISH = ("key type:", "signed inside the HSM", "no finding at WARNING or above", "offline check:",
           "subject (as in the certificate)", "validity:", "path length:", "output directory:",
           "files to be written", "generated on this token", "certificate serial", "signature: verified",
           "TBS: identical", "definition:", "rehearsal: not enforced", "Root certificate", "key SPKI SHA-256",
           "Files written by this run", "Fingerprints", "Transcript: ", "Next:", "Summary", "INTACT: the")


def placeholders(text: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(text) if field}


def test_every_text_exists_in_both_languages_with_the_same_placeholders() -> None:
    texts = terminal_text._TEXT
    assert set(texts) == set(terminal_text.LANGS)
    assert set(texts["fr"]) == set(texts["en"]), set(texts["fr"]) ^ set(texts["en"])
    for key, english in texts["en"].items():
        french = texts["fr"][key]
        assert placeholders(french) == placeholders(english), key
        # values are data, filled in as they are: a value that looks like a placeholder stays literal
        values = dict.fromkeys(placeholders(english), "{x}")
        assert terminal_text.say("fr", key, **values).count("{x}") == french.count("{") - french.count("{{")


def test_french_words_are_proper_french() -> None:
    fr = terminal_text._TEXT["fr"]
    assert fr["w_key_type"].startswith("  type de clé :")
    assert "signée dans le HSM" in fr["w_signed"]
    assert "aucun constat de niveau WARNING ou supérieur" in fr["w_lint_none"]
    assert fr["s_files"] == "Fichiers écrits par cette cérémonie"
    assert fr["s_next"] == "Ensuite :"


def test_offline_summary_is_english_unless_told() -> None:
    result = assess({"lo": 0x49}, enforce=True)
    assert result.summary() == "offline check: no network interface other than loopback is up"
    assert result.summary("en") == result.summary()
    assert result.summary("fr") == "contrôle hors ligne : aucune interface réseau autre que loopback n'est active"
    up = assess({"lo": 0x49, "eth0": 0x1043}, enforce=False)
    assert up.summary() == "offline check: interfaces up: eth0"
    assert up.summary("fr") == "contrôle hors ligne : interfaces actives : eth0"


def test_lint_lines_in_french() -> None:
    assert lint_lines([], [], "le profil", "fr") == ["  pkilint : aucun constat de niveau WARNING ou supérieur "
                                                     "(le profil)"]
    assert lint_lines([], []) == ["  pkilint: no finding at WARNING or above"]


def test_french_summary(tmp_path: Path) -> None:
    digest = "ab" * 32
    summary = Summary(tmp_path, rehearsal=True,
                      files=[WrittenFile(Path("out/root.crt.pem"), digest, "root-certificate")],
                      fingerprints=[Fingerprint("certificat CN=Root", digest)], transcript=Path("out/t.jsonl"),
                      status="intact", verdict="INTACT : le procès-verbal est vérifié",
                      next_steps=[NextStep("à la racine, pré-signer les CRL racine", "invoke crl.root-batch")],
                      lang="fr")
    buffer = io.StringIO()
    render_summary(summary, make_console(file=buffer, width=200))
    printed = buffer.getvalue()
    for words in ("Résumé", "RÉPÉTITION", "Fichiers écrits par cette cérémonie (1, SHA-256 tel que sha256sum "
                  "l'affiche) :", "Empreintes (SHA-256, forme OpenSSL) :", "Procès-verbal : out/t.jsonl",
                  "\nEnsuite :\n", f"  {digest}  out/root.crt.pem\n"):
        assert words in printed, (words, printed)
    assert not [p for p in ENGLISH if p in printed], printed


@pytest.mark.hsm
def test_french_root_ceremony_shows_french_witness_lines(definition_on_tokens: Flow, tmp_path: Path) -> None:
    pki, _tokens = definition_on_tokens()
    buffer = io.StringIO()
    recorder = ConsoleRecorder(rehearsal=True, console=make_console(file=buffer, width=200), lang="fr")
    assert recorder.lang == "fr"
    root_ceremony(load_definition(pki), tmp_path / "out", recorder, rehearsal=True, interactive=False)
    screen = buffer.getvalue()
    for words in ("contrôle hors ligne :", "  définition :", "  sujet (tel qu'il figurera dans le certificat) :",
                  "  émetteur : le même (auto-signé)", "  validité : du ", "  type de clé : ECDSA P-384",
                  "  longueur de chemin :", "  répertoire de sortie :", "  fichiers à écrire :",
                  "  pkilint : aucun constat de niveau WARNING ou supérieur (le profil, avec une clé de substitution)",
                  "  pkilint : aucun constat de niveau WARNING ou supérieur\n",
                  "  pkilint : aucun constat de niveau WARNING ou supérieur (après la signature)",
                  "  jeton ", "  PIN : depuis ", "  générée sur ce jeton (CKA_LOCAL) : oui",
                  "  signée dans le HSM par la clé ", "  numéro de série du certificat (hex) :",
                  "  signature : vérifiée avec la clé publique de l'émetteur", "  TBS : identique",
                  "  AC : oui, longueur de chemin :", "Certificat racine CN=", "  SPKI SHA-256 de la clé :"):
        assert words in screen, (words, screen)
    english = [p for p in ENGLISH if p in screen]
    assert not english, (english, screen)
    # the same ceremony on an English terminal keeps its words
    out_en = io.StringIO()
    pki_en, _ = definition_on_tokens(name="pki-en.yml")
    root_ceremony(load_definition(pki_en), tmp_path / "out-en",
                  ConsoleRecorder(rehearsal=True, console=make_console(file=out_en, width=200)),
                  rehearsal=True, interactive=False)
    assert "  key type: ECDSA P-384" in out_en.getvalue() and "signed inside the HSM" in out_en.getvalue()
