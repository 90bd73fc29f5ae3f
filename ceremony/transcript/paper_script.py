"""The paper script: a ceremony script printed for the Internal Witness to follow and write on.

At a ceremony the Internal Witness holds a printed copy of the script (``ceremony/scripts/*.yml``)
and writes on it as the ceremony goes: who signed in, the serials of the tamper-evident bags, the
initials of the performer and of the witness at each step with the time, and, at the end of every
act, the chain head the transcript shows (64 hex digits and 32 PGP words). The paper and the
transcript are then two independent records of the same ceremony.

The document is rendered in French or English from the script's own titles: HTML through a Jinja2
template, PDF from that HTML through WeasyPrint, the same way as the transcript reports
(:mod:`ceremony.transcript.report`). It carries no date and nothing of the machine that printed it,
so the same script, definition, language and rehearsal flag always give the same HTML bytes (and,
with WeasyPrint's metadata taken from the HTML only, the same PDF bytes).

Printed copies live in ``OUT/scripts/<name>.<lang>.{html,pdf}``; :func:`printed_script_files` lists
them so that a ceremony can record in its transcript which printed script the witnesses held.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from ceremony.common.errors import CeremonyError, OutputError
from ceremony.common.fileio import sha256_file
from ceremony.common.outputs import OutputSet
from ceremony.common.pdf import render_pdf as html_to_pdf
from ceremony.transcript import scriptbook
from ceremony.transcript.participants import ROLES, rules_for
from ceremony.transcript.scriptbook import Act, Script

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "script"


#: The paper script prints with the transcript reports' stylesheet and fonts.
TRANSCRIPT_TEMPLATES = TEMPLATES.parent / "transcript"


LANGS = ("fr", "en")


FORMATS = ("pdf", "html")


SCRIPTS_SUBDIR = "scripts"


MANIFEST_KIND = "paper-script"


SPARE_ROWS = 2  # blank sign-in and signature rows beyond the roles the ceremony needs


DEFAULT_ROUNDS = 4  # rounds printed for a repeated block when the definition gives no CRL batch size


HEAD_HEX_LINES = 2  # the transcript shows a chain head as two lines of 32 hex digits ...


HEAD_HEX_PER_LINE = 32


HEAD_WORD_LINES = 4  # ... and 32 PGP words, numbered lines of 8 (pgpwords.lines)


HEAD_WORDS_PER_LINE = 8


class PaperScriptError(CeremonyError):
    """A paper script was asked for with a language or ceremony that does not exist."""

    exit_code = 2


TEXT: dict[str, dict[str, str]] = {
    "en": {
        "title": "Ceremony script", "subtitle": "Paper copy followed and annotated by the Internal Witness",
        "rehearsal": "REHEARSAL — not a production ceremony", "production": "Production ceremony",
        "script": "Script", "version": "version", "script_sha": "SHA-256 of the script",
        "definition": "PKI definition", "definition_sha": "SHA-256 of the definition", "environment": "Environment",
        "language": "Language", "language_name": "English",
        "date": "Date", "place": "Place", "transcript": "Transcript file",
        "instructions": "Write in ink. Never erase: cross out, write the correction beside it and initial it. "
                        "Times are hours and minutes, UTC.",
        "act": "Act {n} of {m}: {title}",
        "number": "No.", "role": "Role", "name": "Name", "identity": "Identity document", "checked_by": "Checked by",
        "initials": "Initials", "if_present": "(if present)",
        "step": "Step", "witnessed": "Witnessed", "yes": "yes", "no": "no",
        "performer_initials": "Performer's initials", "witness_initials": "Witness's initials", "time": "Time (UTC)",
        "round": "Round {r} of {k}",
        "repeat_note": "Steps {first} to {last} are repeated once per round, in this order.",
        "bag": "Bag", "opened": "Serial when opened", "resealed": "Serial when resealed",
        "bags_open_note": "Check that each bag is intact and that its serial is the one recorded when it was "
                          "last sealed.",
        "bags_reseal_note": "Write the serial of the new bag each item is sealed in.",
        "head": "Chain head at the end of act {n}, as the transcript shows it",
        "seal_head": "Final chain head, signed in the HSM (the seal)",
        "hex": "SHA-256 (hex)", "line": "Line", "words": "PGP words",
        "words_note": "Words 1, 3, 5… have two syllables, words 2, 4, 6… three: a missing or repeated word "
                      "breaks the rhythm.",
        "copied_by": "Copied by (initials)", "checked_screen": "Checked against the screen by (initials)",
        "signatures": "Signatures",
        "signatures_text": "We, the undersigned, attest that the ceremony followed this script as annotated above.",
        "signature": "Signature",
    },
    "fr": {
        "title": "Script de cérémonie", "subtitle": "Exemplaire papier suivi et annoté par le Témoin interne",
        "rehearsal": "RÉPÉTITION — cérémonie sans valeur de production", "production": "Cérémonie de production",
        "script": "Script", "version": "version", "script_sha": "SHA-256 du script",
        "definition": "Définition de l'ICP", "definition_sha": "SHA-256 de la définition",
        "environment": "Environnement", "language": "Langue", "language_name": "français",
        "date": "Date", "place": "Lieu", "transcript": "Fichier du procès-verbal",
        "instructions": "Écrire à l'encre. Ne jamais effacer : barrer, écrire la correction à côté et la "
                        "parapher. Les heures s'écrivent en heures et minutes, UTC.",
        "act": "Acte {n} sur {m}\u00a0: {title}",
        "number": "N°", "role": "Rôle", "name": "Nom", "identity": "Pièce d'identité", "checked_by": "Contrôlée par",
        "initials": "Paraphe", "if_present": "(le cas échéant)",
        "step": "Étape", "witnessed": "Témoin requis", "yes": "oui", "no": "non",
        "performer_initials": "Paraphe de l'exécutant", "witness_initials": "Paraphe du témoin",
        "time": "Heure (UTC)",
        "round": "Tour {r} sur {k}",
        "repeat_note": "Les étapes {first} à {last} se répètent à chaque tour, dans cet ordre.",
        "bag": "Sac", "opened": "Numéro à l'ouverture", "resealed": "Numéro à la fermeture",
        "bags_open_note": "Vérifier que chaque sac est intact et que son numéro est celui relevé lors de sa "
                          "dernière fermeture.",
        "bags_reseal_note": "Relever le numéro du nouveau sac dans lequel chaque élément est scellé.",
        "head": "Tête de chaîne à la fin de l'acte {n}, telle que le procès-verbal l'affiche",
        "seal_head": "Tête de chaîne finale, signée dans le HSM (le scellement)",
        "hex": "SHA-256 (hexadécimal)", "line": "Ligne", "words": "Mots PGP",
        "words_note": "Les mots 1, 3, 5… ont deux syllabes, les mots 2, 4, 6… trois : un mot manquant ou répété "
                      "rompt le rythme.",
        "copied_by": "Recopiée par (paraphe)", "checked_screen": "Vérifiée à l'écran par (paraphe)",
        "signatures": "Signatures",
        "signatures_text": "Nous, soussignés, attestons que la cérémonie a suivi ce script tel qu'il est annoté "
                           "ci-dessus.",
        "signature": "Signature",
    },
}


@dataclass(frozen=True)
class Printed:
    """One written paper script file and its manifest entry."""

    path: Path
    lang: str
    format: str
    sha256: str


def check_lang(lang: str) -> tuple[str, ...]:
    """``fr``, ``en`` or ``both`` → the languages to print; anything else is refused."""
    if lang == "both":
        return LANGS
    if lang in LANGS:
        return (lang,)
    raise PaperScriptError(f"--lang {lang!r}: no such language (allowed: {', '.join(LANGS)}, both)")


def find_script(name: str) -> Script:
    """The shipped script ``name``; an unknown name gets one line listing the scripts there are."""
    names = scriptbook.available()
    if name not in names:
        raise PaperScriptError(f"--ceremony {name!r}: no such ceremony script (allowed: {', '.join(names)})")
    return scriptbook.load_script(name)


def _people(script: Script, definition: Any, rehearsal: bool, lang: str) -> list[str]:
    """One role label per person the ceremony needs, in the order of ``ROLES``, then blank rows."""
    rules = rules_for(script, definition, rehearsal)
    counts = {role: 1 for role in rules.required_roles}
    if "crypto-officer" in counts:
        counts["crypto-officer"] = max(1, rules.crypto_officer_quorum)
    if "security-officer" in counts:  # more than one where their parts make the SO PIN (token initialisation)
        counts["security-officer"] = max(1, rules.security_officer_quorum)
    if "custodian" in counts:
        named = max((len(ca.backup.custodians) for ca in definition.model.cas.values()), default=0)
        counts["custodian"] = max(1, rules.custodian_quorum, named)
    rows: list[str] = []
    for role, label in ROLES.items():
        if role in counts:
            rows += [label[lang]] * counts[role]
        elif role == "independent-witness":  # optional here (subordinate ceremony, rehearsal): a row if present
            rows.append(f"{label[lang]} {TEXT[lang]['if_present']}")
    return rows + [""] * SPARE_ROWS


def _rounds(definition: Any) -> int:
    """Rounds printed for a repeated block: the only one the scripts have is a root CRL batch."""
    counts = [ca.crl.batch_count for ca in definition.model.cas.values() if ca.crl and ca.crl.batch_count]
    return max(counts, default=DEFAULT_ROUNDS)


def _step_groups(act: Act, n: int, lang: str, rounds: int) -> tuple[list[dict[str, Any]], str]:
    """An act's step table as groups of rows; a block of repeated steps is printed once per round,
    each round a group of its own (kept on one page)."""
    t = TEXT[lang]

    def row(index: int) -> dict[str, Any]:
        s = act.steps[index]
        return {"number": f"{n}.{index + 1}", "id": s.id, "title": s.title[lang], "role": ROLES[s.role][lang],
                "witnessed": t["yes"] if s.witness else t["no"], "witness": s.witness}

    groups: list[dict[str, Any]] = []
    note = ""
    i = 0
    while i < len(act.steps):
        if not act.steps[i].repeat:
            if not groups or groups[-1]["title"]:
                groups.append({"title": "", "rows": []})
            groups[-1]["rows"].append(row(i))
            i += 1
            continue
        block = [i]
        while block[-1] + 1 < len(act.steps) and act.steps[block[-1] + 1].repeat:
            block.append(block[-1] + 1)
        note = t["repeat_note"].format(first=f"{n}.{block[0] + 1}", last=f"{n}.{block[-1] + 1}")
        groups += [{"title": t["round"].format(r=r, k=rounds), "rows": [row(j) for j in block]}
                   for r in range(1, rounds + 1)]
        i = block[-1] + 1
    return groups, note


def view(script: Script, definition: Any, lang: str, *, rehearsal: bool = False) -> dict[str, Any]:
    """Everything the template shows, in ``lang``; nothing that changes between two renderings."""
    if lang not in LANGS:
        raise PaperScriptError(f"language {lang!r} is not available (allowed: {', '.join(LANGS)})")
    t = TEXT[lang]
    m = len(script.acts)
    rounds = _rounds(definition)
    acts = []
    for n, act in enumerate(script.acts, 1):
        groups, note = _step_groups(act, n, lang, rounds) if act.kind == "ceremony" else ([], "")
        acts.append({"n": n, "id": act.id, "kind": act.kind, "groups": groups, "note": note,
                     "heading": t["act"].format(n=n, m=m, title=act.title[lang]),
                     "head_title": t["seal_head"] if act.id == "sign-out" else t["head"].format(n=n)})
    return {
        "lang": lang, "t": t, "rehearsal": rehearsal, "ceremony": script.title[lang],
        "script": {"name": script.name, "version": script.version, "sha256": script.sha256},
        "definition": {"path": Path(definition.path).as_posix(), "sha256": definition.sha256,
                       "environment": definition.model.environment},
        "people": _people(script, definition, rehearsal, lang),
        "bags": [b.title[lang] for b in script.bags], "acts": acts,
        "hex_lines": [[(i * HEAD_HEX_PER_LINE + j + 1) for j in range(HEAD_HEX_PER_LINE)]
                      for i in range(HEAD_HEX_LINES)],
        "word_lines": [[[line * HEAD_WORDS_PER_LINE + half * HEAD_WORDS_PER_LINE // 2 + j + 1
                         for j in range(HEAD_WORDS_PER_LINE // 2)] for half in (0, 1)]
                       for line in range(HEAD_WORD_LINES)],
    }


def _environment() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]),
                       trim_blocks=True, lstrip_blocks=True, undefined=StrictUndefined, keep_trailing_newline=True)


def render_html(script: Script, definition: Any, lang: str, *, rehearsal: bool = False) -> str:
    """The paper script as one self-contained HTML page (the stylesheet is inlined)."""
    css = (TEMPLATES / "script.css").read_text(encoding="utf-8")
    return _environment().get_template("script.html.j2").render(css=css, **view(script, definition, lang,
                                                                                  rehearsal=rehearsal))


def render_pdf(html: str) -> bytes:
    """A paper script's PDF (``ceremony.common.pdf``), its stylesheet resolved from the transcript templates."""
    return html_to_pdf(html, TRANSCRIPT_TEMPLATES)


def output_path(out_dir: str | Path, script_name: str, lang: str, fmt: str) -> Path:
    return Path(out_dir) / SCRIPTS_SUBDIR / f"{script_name}.{lang}.{fmt}"


def write_paper_scripts(definition: Any, script_name: str, out_dir: str | Path,
                        langs: tuple[str, ...] | list[str] = LANGS, *, rehearsal: bool = False,
                        manifest: Any = None) -> list[Printed]:
    """Write ``OUT/scripts/<name>.<lang>.pdf`` and ``.html`` for each language and list them in ``manifest``.

    Nothing is overwritten: every target is checked before anything is rendered, so a second run
    refuses without touching a file; a failure while writing removes what this run wrote.
    """
    for lang in langs:
        check_lang(lang)
    script = find_script(script_name)
    directory = output_path(out_dir, script_name, langs[0], FORMATS[0]).parent
    with OutputSet(directory, manifest, "paper-script") as run:
        for lang in langs:
            for fmt in FORMATS:
                run.plan(output_path(out_dir, script_name, lang, fmt).name, MANIFEST_KIND, fmt, lang=lang,
                         ceremony=script_name)
        run.check()
        for lang in langs:
            html = render_html(script, definition, lang, rehearsal=rehearsal)
            run.stage(output_path(out_dir, script_name, lang, "pdf").name, render_pdf(html))
            run.stage(output_path(out_dir, script_name, lang, "html").name, html.encode("utf-8"))
        run.commit()
    return [Printed(output_path(out_dir, script_name, lang, fmt), lang, fmt,
                    sha256_file(output_path(out_dir, script_name, lang, fmt))) for lang in langs for fmt in FORMATS]


_PRINTED = re.compile(r"^(?P<name>.+)\.(?P<lang>[a-z]{2})\.(?P<fmt>html|pdf)$")


def printed_script_files(out_dir: Path, script_name: str) -> list[dict]:
    """The printed scripts of ``script_name`` under ``OUT/scripts/``, for the transcript to record.

    Each is ``{"path": <relative to out_dir, POSIX>, "lang": "fr"|"en", "format": "pdf"|"html",
    "sha256": <hex>}``, sorted by path. Only regular files named ``<script_name>.<lang>.<format>`` with a
    known language and format count (not the temporary files of an interrupted write, not symbolic links).
    """
    directory = Path(out_dir) / SCRIPTS_SUBDIR
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.iterdir()):
        m = _PRINTED.match(path.name)
        if (m is None or m["name"] != script_name or m["lang"] not in LANGS or path.is_symlink()
                or not path.is_file()):
            continue
        try:
            digest = sha256_file(path)
        except OSError as exc:
            raise OutputError(f"{path}: printed script unreadable: {exc.strerror}") from None
        found.append({"path": path.relative_to(out_dir).as_posix(), "lang": m["lang"], "format": m["fmt"],
                      "sha256": digest})
    return found
