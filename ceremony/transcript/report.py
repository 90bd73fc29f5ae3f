"""The readable transcript: HTML and PDF, in French and English, for the paper sign-off.

Built from the records the verifier vouches for (never from anything else), so the report shows
what an auditor would verify: participants, equipment, the script with each step's times and
confirmations, exceptions, artifacts with fingerprints, each act's chain head as a PGP word list,
the seal, the verification result, and signature blocks. The PDF comes from the same HTML through
WeasyPrint with the system DejaVu fonts, so accented French text is real text in the PDF.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from ceremony.common import pgpwords
from ceremony.common.errors import OutputError
from ceremony.common.fingerprints import colon_form
from ceremony.common.outputs import OutputSet
from ceremony.common.pdf import render_pdf as html_to_pdf
from ceremony.transcript.audit import Audit, verify
from ceremony.transcript.chain import line_hash
from ceremony.transcript.participants import ROLES
from ceremony.transcript.scriptbook import TRANSCRIPT_ACT_TITLES

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "transcript"


LANGS = ("fr", "en")


TEXT: dict[str, dict[str, Any]] = {
    "en": {
        "title": "Ceremony transcript", "rehearsal": "REHEARSAL — not a production ceremony",
        "production": "Production ceremony", "summary": "Summary", "ceremony": "Ceremony", "script": "Script",
        "version": "version", "definition": "PKI definition", "environment": "Environment", "started": "Started",
        "closed": "Closed", "status": "Closing status", "verification": "Offline verification",
        "participants": "Participants", "name": "Name", "roles": "Roles", "identity": "Identity document",
        "checked_by": "Checked by", "signed_in": "Signed in", "equipment": "Equipment and software",
        "host": "Host", "kernel": "Kernel", "os": "Operating system", "suite": "Ceremony suite",
        "sources": "SHA-256 of the installed sources", "token": "HSM token", "label": "Label", "serial": "Serial",
        "manufacturer": "Manufacturer", "model": "Model", "firmware": "Firmware", "module": "PKCS#11 module",
        "offline": "Offline check", "key": "Key evidence", "algorithm": "Algorithm", "bags": "Tamper-evident bags",
        "bag": "Bag", "opened": "Serial when opened", "resealed": "Serial when resealed", "witness": "Witness",
        "steps": "Script and steps", "act": "Act", "step": "Step", "role": "Role", "performed_by": "Performed by",
        "start": "Start (UTC)", "end": "End (UTC)", "outcome": "Outcome", "confirmed": "Witness confirmation",
        "done": "done", "failed": "failed", "not_run": "not run", "yes": "confirmed", "no": "NOT confirmed",
        "exceptions": "Exceptions", "none": "None.", "number": "No.", "what": "What happened",
        "decision": "Decision", "approved_by": "Approved by", "artifacts": "Artifacts", "file": "File",
        "kind": "Kind", "fingerprints": "Certificate fingerprints", "subject": "Subject",
        "heads": "Chain head at the end of each act", "head": "Chain head (SHA-256)", "words": "PGP words",
        "transcript_sha256": "Transcript file SHA-256", "final_head": "Final chain head",
        "seal": "Seal", "seal_text": "The final chain head is signed inside the HSM by the ceremony's CA key.",
        "verifier": "Verified with", "signoff": "Sign-off",
        "signoff_text": "We, the undersigned, attest that this transcript records the ceremony as it happened.",
        "signature": "Signature", "date": "Date", "generated": "Report generated", "from": "from",
        "intact": "INTACT — the transcript verifies", "incomplete": "INCOMPLETE — the ceremony did not finish",
        "invalid": "INVALID — the transcript does not verify", "failed_status": "NOT SEALED — the ceremony failed",
        "unsealed": "NOT SEALED", "interrupted": "NOT SEALED — interrupted",
        "problems": "Findings of the verifier", "yes_word": "yes", "no_word": "no",
        "close_sealed": "sealed", "close_failed": "failed", "close_unsealed": "not sealed",
        "close_interrupted": "interrupted",
        "exception_kind": "Kind", "exception_kinds": {
            "deviation": "Deviation from the script", "failure": "Failed step",
            "witness": "Witness confirmation missing", "resume": "Restart after an interruption"},
        "recorded_text": ""
    },
    "fr": {
        "title": "Procès-verbal de cérémonie", "rehearsal": "RÉPÉTITION — cérémonie sans valeur de production",
        "production": "Cérémonie de production", "summary": "Résumé", "ceremony": "Cérémonie", "script": "Script",
        "version": "version", "definition": "Définition de l'ICP", "environment": "Environnement",
        "started": "Début", "closed": "Clôture", "status": "État à la clôture", "verification":
        "Vérification hors ligne", "participants": "Participants", "name": "Nom", "roles": "Rôles",
        "identity": "Pièce d'identité", "checked_by": "Contrôlée par", "signed_in": "Émargement",
        "equipment": "Équipement et logiciels", "host": "Poste", "kernel": "Noyau", "os": "Système d'exploitation",
        "suite": "Suite de cérémonie", "sources": "SHA-256 des sources installées", "token": "Jeton du HSM",
        "label": "Libellé", "serial": "Numéro de série", "manufacturer": "Fabricant", "model": "Modèle",
        "firmware": "Micrologiciel", "module": "Module PKCS#11", "offline": "Contrôle hors ligne",
        "key": "Éléments de preuve sur la clé", "algorithm": "Algorithme", "bags": "Sacs inviolables",
        "bag": "Sac", "opened": "Numéro à l'ouverture", "resealed": "Numéro à la fermeture", "witness": "Témoin",
        "steps": "Script et étapes", "act": "Acte", "step": "Étape", "role": "Rôle", "performed_by": "Exécutée par",
        "start": "Début (UTC)", "end": "Fin (UTC)", "outcome": "Résultat", "confirmed": "Confirmation du témoin",
        "done": "effectuée", "failed": "échec", "not_run": "non exécutée", "yes": "confirmée",
        "no": "NON confirmée", "exceptions": "Exceptions", "none": "Aucune.", "number": "N°",
        "what": "Ce qui s'est produit", "decision": "Décision", "approved_by": "Approuvée par",
        "artifacts": "Artefacts", "file": "Fichier", "kind": "Nature", "fingerprints": "Empreintes des certificats",
        "subject": "Sujet", "heads": "Tête de chaîne à la fin de chaque acte", "head": "Tête de chaîne (SHA-256)",
        "transcript_sha256": "SHA-256 du fichier du procès-verbal", "final_head": "Tête de chaîne finale",
        "words": "Mots PGP", "seal": "Scellement",
        "seal_text": "La tête de chaîne finale est signée dans le HSM par la clé d'AC de la cérémonie.",
        "verifier": "Vérifiée avec", "signoff": "Signatures",
        "signoff_text": "Nous, soussignés, attestons que ce procès-verbal rend compte de la cérémonie telle "
                        "qu'elle s'est déroulée.",
        "signature": "Signature", "date": "Date", "generated": "Rapport généré le", "from": "à partir de",
        "intact": "INTÈGRE — le procès-verbal est vérifié", "incomplete": "INCOMPLET — la cérémonie n'est pas allée "
        "à son terme", "invalid": "INVALIDE — le procès-verbal ne se vérifie pas",
        "failed_status": "NON SCELLÉ — la cérémonie a échoué", "unsealed": "NON SCELLÉ",
        "interrupted": "NON SCELLÉ — interrompue", "problems": "Constats du vérificateur", "yes_word": "oui",
        "no_word": "non", "close_sealed": "scellé", "close_failed": "échec", "close_unsealed": "non scellé",
        "close_interrupted": "interrompue",
        "exception_kind": "Nature", "exception_kinds": {
            "deviation": "Écart au script", "failure": "Étape en échec",
            "witness": "Confirmation du témoin manquante", "resume": "Reprise après une interruption"},
        "recorded_text": "Les colonnes « Ce qui s'est produit » et « Décision » reproduisent le texte enregistré "
                         "dans le procès-verbal, en anglais, la langue de la suite : c'est ce texte que la "
                         "chaîne de hachage et le scellement protègent.",
    },
}


def _time(value: str | None) -> str:
    if not value:
        return ""
    return value.replace("T", " ").replace("Z", "")[:19]


def _clock(value: str | None) -> str:
    return _time(value)[11:19]


def _hex_lines(head: str) -> list[str]:
    return [" ".join(head[i + j:i + j + 4] for j in range(0, 32, 4)) for i in (0, 32)]


def view(audit: Audit, lang: str) -> dict[str, Any]:
    """Everything the template shows, in ``lang``; only from the records the chain vouches for."""
    t = TEXT[lang]
    h = audit.header
    script = audit.script
    recs = audit.records
    evidence = [r for r in recs if r["type"] == "evidence"]

    def ev(name: str) -> list[dict[str, Any]]:
        return [r.get("data") or {} for r in evidence if r.get("name") == name]

    def act_title(act_id: str | None) -> str:
        if act_id in TRANSCRIPT_ACT_TITLES:
            return TRANSCRIPT_ACT_TITLES[act_id][lang]
        act = script.act(act_id) if script and act_id else None
        return act.title[lang] if act and act.title else str(act_id or "")

    steps = []
    open_steps: dict[str, dict[str, Any]] = {}
    for r in recs:
        if r["type"] == "step-start":
            s = script.step(r["step"]) if script else None
            row = {"act": act_title(r.get("act")), "id": r["step"], "title": s.title[lang] if s else
                   r.get("description", ""), "role": ROLES.get(r.get("role", ""), {}).get(lang, r.get("role")),
                   "performed_by": ", ".join(r.get("performed_by") or []), "start": _clock(r.get("time")), "end": "",
                   "outcome": t["not_run"], "witness": "", "failed": False, "scripted": r.get("scripted", True)}
            steps.append(row)
            open_steps[r["step"]] = row
        elif r["type"] == "step-end" and r.get("step") in open_steps:
            row = open_steps.pop(r["step"])
            row["end"] = _clock(r.get("time"))
            row["outcome"] = t["done"] if r.get("outcome") == "done" else t["failed"]
            row["failed"] = r.get("outcome") != "done"
            w = r.get("witness")
            if w:
                row["witness"] = f"{w.get('name')} — {t['yes'] if w.get('confirmed') else t['no']}"
    bags: dict[str, dict[str, str]] = {}
    for r in recs:
        if r["type"] == "bag":
            b = bags.setdefault(r["bag"], {"id": r["bag"], "open": "", "reseal": "", "witness": r.get("witness", "")})
            b[r.get("when", "open")] = r.get("serial", "")
    bag_titles = {b.id: b.title[lang] for b in script.bags} if script else {}
    heads = [{"act": act_title(r.get("act")), "hex": _hex_lines(r["head"]),
              "words": pgpwords.lines(r["head"]), "copied_by": r.get("copied_by")}
             for r in recs if r["type"] == "act-end"]
    seal = next((r for r in recs if r["type"] == "seal"), None)
    close = next((r for r in reversed(recs) if r["type"] == "close"), None)
    certs = [{"subject": c.get("subject"), "sha256": colon_form(str(c.get("sha256", ""))),
              "words": pgpwords.lines(str(c.get("sha256", ""))) if len(str(c.get("sha256", ""))) == 64 else []}
             for c in ev("certificate")]
    # The report is bound to its transcript: the file's SHA-256 and its final head (the seal's, or the
    # last record's line hash when the ceremony did not seal), which audit.verify-all checks.
    raw = audit.path.read_bytes()
    last_line = raw.split(b"\n")[-2] if raw.count(b"\n") >= 1 else b""
    final_head = str(seal["head"]) if seal else line_hash(last_line)
    status_key = {"failed": "failed_status"}.get(audit.status, audit.status)
    people = [{"name": p.name, "roles": ", ".join(ROLES.get(r, {}).get(lang, r) for r in p.roles),
               "identity": p.id_document, "checked_by": p.id_checked_by, "time": _time(p.signed_in_at)}
              for p in audit.participants]
    env = h.get("environment") or {}
    return {
        "lang": lang, "t": t, "rehearsal": bool(h.get("rehearsal")),
        "ceremony": script.title[lang] if script else (h.get("script") or {}).get("name"),
        "script": h.get("script") or {}, "env": env,
        # the definition by file name only: no absolute path of the machine the ceremony ran on
        "definition": {**(h.get("definition") or {}),
                       "path": Path(str((h.get("definition") or {}).get("path", ""))).name},
        "transcript_sha256": hashlib.sha256(raw).hexdigest(), "final_head_hex": _hex_lines(final_head),
        "final_head_words": pgpwords.lines(final_head),
        "started": _time(h.get("time")), "closed": _time(close.get("time")) if close else "",
        "close_status": t.get(f"close_{close.get('status')}", str(close.get("status"))) if close else "",
        "status": audit.status,
        "status_text": t.get(status_key, audit.status), "problems": [str(p) for p in audit.problems],
        "people": people, "tokens": ev("token"), "keys": ev("key"), "offline": ev("offline-check"),
        "bags": [{**b, "title": bag_titles.get(b["id"], b["id"])} for b in bags.values()],
        "steps": steps, "exceptions": [r for r in recs if r["type"] == "exception"],
        "artifacts": [r for r in recs if r["type"] == "artifact"], "certificates": certs, "heads": heads,
        "seal": seal, "seal_hex": _hex_lines(seal["head"]) if seal else [],
        "seal_words": pgpwords.lines(seal["head"]) if seal else [], "transcript": audit.path.name,
        "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _environment() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]),
                       trim_blocks=True, lstrip_blocks=True)


def render_html(audit: Audit, lang: str) -> str:
    if lang not in LANGS:
        raise ValueError(f"language {lang!r} is not available (allowed: {', '.join(LANGS)})")
    css = (TEMPLATES / "report.css").read_text(encoding="utf-8")
    return _environment().get_template("report.html.j2").render(css=css, **view(audit, lang))


def render_pdf(html: str) -> bytes:
    """A report's PDF (``ceremony.common.pdf``), its stylesheet resolved from the transcript templates."""
    return html_to_pdf(html, TEMPLATES)


def write_reports(transcript: Path, out: Path | None = None, langs: list[str] | tuple[str, ...] = LANGS, *,
                  pdf: bool = True, artifacts: Path | None = None) -> list[Path]:
    """Write ``<transcript stem>.<lang>.html`` (and ``.pdf``) next to the transcript or in ``out``.

    Reports are created exclusively, like every output: an existing report is never replaced.
    """

    for lang in langs:
        if lang not in LANGS:
            raise OutputError(f"--lang {lang!r}: no such language (allowed: {', '.join(LANGS)})")
    if not Path(transcript).is_file():
        raise OutputError(f"{transcript}: no such transcript")
    audit = verify(transcript, artifacts)
    target = Path(out) if out else Path(transcript).parent
    stem = Path(transcript).stem
    with OutputSet(target, None, "transcript-report") as run:
        for lang in langs:
            run.plan(f"{stem}.{lang}.html", "transcript-report", "html", lang=lang)
            if pdf:
                run.plan(f"{stem}.{lang}.pdf", "transcript-report", "pdf", lang=lang)
        run.check()
        for lang in langs:
            html = render_html(audit, lang)
            run.stage(f"{stem}.{lang}.html", html.encode("utf-8"))
            if pdf:
                run.stage(f"{stem}.{lang}.pdf", render_pdf(html))
        run.commit()
    return list(run.published)


def file_transcript(path: Path, manifest: Any, ceremony: str, *, reports: bool = True) -> list[dict[str, Any]]:
    """List a closed transcript in ``manifest`` (kind ``transcript``) with its reports (``transcript-report``).

    Reports go next to the transcript, in French and English, HTML and PDF.
    """
    entries = [manifest.add("transcript", path, "jsonl", ceremony=ceremony)]
    if reports:
        for report in write_reports(path, path.parent, LANGS):
            lang, fmt = report.suffixes[-2].lstrip("."), report.suffix.lstrip(".")
            entries.append(manifest.add("transcript-report", report, fmt, lang=lang, ceremony=ceremony))
    return entries
