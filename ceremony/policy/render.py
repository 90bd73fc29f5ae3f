"""Rendering the CP and CPS: Markdown (the reviewable source), HTML with stable anchors, PDF.

Each section of a document is the generated text of its template (``templates/policy/<lang>/<n>.md.j2``,
values from :mod:`ceremony.policy.facts`) followed by the organisation's prose fragment for it
(``inventory/<env>/policy/<lang>/*.md``). A fragment file holds any number of sections, each started
by a line ``## 4.9.1`` (``## 4.9.1 [cp]`` or ``[cps]`` for text of one document only, placed after
the common text); fragments are Jinja templates too, so they may say ``{{ f.organisation.email }}``.

Everything is rendered in memory first; a missing fragment, a fragment for a section RFC 3647 does
not have, or a value a template cannot render (StrictUndefined) stops the build with one message
naming the section and the file, before any file is written.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jinja2
from markdown_it import MarkdownIt
from markupsafe import Markup

from ceremony.common import child_process
from ceremony.common.manifest import Manifest
from ceremony.common.outputs import OutputSet
from ceremony.common.pdf import render_pdf as html_to_pdf
from ceremony.definition.model import documents_value
from ceremony.policy import catalogue
from ceremony.policy.facts import Facts, PolicyError, date_text, derive_facts, duration_text
from ceremony.policy.outline import BY_NUMBER, DOCUMENTS, LANGS, OUTLINE, has_children, no_stipulation

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "policy"


_FRAGMENT_HEAD = re.compile(r"^## +([0-9][0-9.]*?)\.?(?: +\[(cp|cps)\])?(?: +.*)?$")


NUMBERED_HEADING = re.compile(r"^(#{1,6}) +([0-9]+(?:\.[0-9]+)*)\.? +(.+?)\s*$")


LABELS: dict[str, dict[str, str]] = {
    "fr": {"cp": "Politique de certification", "cps": "Déclaration des pratiques de certification",
           "field": "Champ", "value": "Valeur", "oid": "Identifiant d'objet (OID)", "version": "Version",
           "date": "Date", "organisation": "Organisme", "approved": "Organe d'approbation",
           "environment": "Environnement", "history": "Historique des versions",
           "changes": "Modifications", "toc": "Table des matières", "source": "Source Markdown (SHA-256)",
           "page": "Page", "effective": "Date d'effet", "decision": "Décision d'approbation",
           "pending": "en attente d'approbation", "authoritative": "Version faisant foi", "fr_name": "française",
           "en_name": "anglaise", "review": "Revue", "review_text": "au moins tous les {n} mois",
           "rehearsal": "RÉPÉTITION — document issu d'une répétition sur des jetons SoftHSM "
           "jetables ; il ne vaut pas pour la production.", "yes": "oui", "no": "non"},
    "en": {"cp": "Certificate Policy", "cps": "Certification Practice Statement", "field": "Field",
           "value": "Value", "oid": "Object identifier (OID)", "version": "Version", "date": "Date",
           "organisation": "Organisation", "approved": "Approving body", "environment": "Environment",
           "history": "Version history", "changes": "Changes", "toc": "Contents",
           "source": "Markdown source (SHA-256)", "page": "Page", "effective": "Effective date",
           "decision": "Approval decision", "pending": "awaiting approval", "authoritative": "Authoritative version",
           "fr_name": "French", "en_name": "English (this text is a translation)", "review": "Review",
           "review_text": "at least every {n} months",
           "rehearsal": "REHEARSAL — document produced by a rehearsal on throwaway SoftHSM tokens; it is not "
           "valid for production.", "yes": "yes", "no": "no"},
}


@dataclasses.dataclass(frozen=True)
class Fragment:
    section: str
    scope: str | None  # None: both documents; "cp" or "cps": that document only
    text: str
    file: Path
    line: int


def load_fragments(policy_dir: Path, lang: str) -> dict[tuple[str, str | None], Fragment]:
    """Every prose fragment of one language, keyed by (section, scope); refuses unknown sections."""
    directory = policy_dir / lang
    if not directory.is_dir():
        raise PolicyError(f"{directory}: no prose fragments for language {lang!r} (one Markdown file or more "
                          "with '## <section>' lines)")
    result: dict[tuple[str, str | None], Fragment] = {}
    for path in sorted(directory.glob("*.md")):
        for number, scope, line, text in _split_fragment_file(path):
            if not text:
                raise PolicyError(f"{path}:{line}: section {number}: the fragment is empty (write the text, or "
                                  f"'{no_stipulation(lang)}' where there is nothing to say)")
            key = (number, scope)
            if key in result:
                other = result[key]
                raise PolicyError(f"{path}:{line}: section {number}: a second fragment for this section "
                                  f"(the first is {other.file}:{other.line})")
            result[key] = Fragment(number, scope, text, path, line)
    return result


def _split_fragment_file(path: Path) -> list[tuple[str, str | None, int, str]]:
    """(section, scope, line, text) of each '## <section>' block of one fragment file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{path}: not UTF-8 (byte {exc.start})") from None
    blocks: list[tuple[str, str | None, int, list[str]]] = []
    for i, raw in enumerate(lines, start=1):
        if raw.startswith("## "):
            m = _FRAGMENT_HEAD.match(raw.rstrip())
            if not m:
                raise PolicyError(f"{path}:{i}: {raw.strip()!r} is not a section line (allowed: '## 4.9.1', "
                                  "'## 4.9.1 [cp]', '## 4.9.1 [cps]', optionally followed by the title)")
            if m.group(1) not in BY_NUMBER:
                raise PolicyError(f"{path}:{i}: section {m.group(1)} does not exist in the RFC 3647 outline "
                                  "(see ceremony/policy/outline.py)")
            blocks.append((m.group(1), m.group(2), i, []))
        elif re.match(r"^#{1,6} ", raw):
            raise PolicyError(f"{path}:{i}: headings inside a fragment are not allowed (the document's "
                              "headings come from the RFC 3647 outline); use bold text or a list")
        elif not blocks:
            if raw.strip() and not raw.lstrip().startswith("<!--"):
                raise PolicyError(f"{path}:{i}: text before the first '## <section>' line")
        else:
            blocks[-1][3].append(raw)
    return [(n, scope, line, "\n".join(body).strip()) for n, scope, line, body in blocks]


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


@jinja2.pass_context
def _dur(ctx: Any, value: Any) -> str:
    return duration_text(value, ctx["lang"])


@jinja2.pass_context
def _date(ctx: Any, value: Any) -> str:
    return date_text(value, ctx["lang"])


@jinja2.pass_context
def _yesno(ctx: Any, value: Any) -> str:
    return LABELS[ctx["lang"]].get(str(value), str(value))


# Fixed English phrases of ceremony.policy.facts that appear in the extension tables, in French.
_FRENCH_VALUES = {
    "issuer's subjectKeyIdentifier": "subjectKeyIdentifier de l'émetteur",
    "monotonically increasing integer": "entier strictement croissant",
    "SHA-1 of the subject public key (RFC 5280 4.2.1.2 method 1), per certificate":
        "SHA-1 de la clé publique du sujet (RFC 5280 4.2.1.2, méthode 1), propre à chaque certificat",
    "= subjectKeyIdentifier of the issuing CA": "= subjectKeyIdentifier de l'AC émettrice",
    "only contains ca certs": "uniquement des certificats d'AC",
    "entries kept after expiry, since ": "entrées conservées après expiration, depuis le ",
    "(notBefore of the CA certificate)": "(notBefore du certificat de l'AC)",
    "undecodable date": "date illisible",
    "only contains user certs": "uniquement des certificats d'abonnés",
    "token pkcs11:": "jeton pkcs11:",
    "token label": "jeton de libellé",
    "token serial": "jeton de numéro de série",
    "CA=True": "CA=vrai",
    "CA=False": "CA=faux",
    "content_commitment": "nonRepudiation (contentCommitment)",
    "digital_signature": "digitalSignature",
    "key_cert_sign": "keyCertSign",
    "crl_sign": "cRLSign",
    "pathLen=": "longueur de chemin=",
}


# The engine's identifiers as an English reader of RFC 5280 and EN 319 412 names them.
_ENGLISH_VALUES = {
    "content_commitment": "nonRepudiation (contentCommitment)",
    "digital_signature": "digitalSignature",
    "key_encipherment": "keyEncipherment",
    "data_encipherment": "dataEncipherment",
    "key_agreement": "keyAgreement",
    "key_cert_sign": "keyCertSign",
    "crl_sign": "cRLSign",
    "qualified-signature": "qualified signature (natural person)",
    "qualified-seal": "qualified seal (legal person)",
}


@jinja2.pass_context
def _tr(ctx: Any, value: Any) -> str:
    text = str(value)
    for source, target in (_FRENCH_VALUES if ctx["lang"] == "fr" else _ENGLISH_VALUES).items():
        text = text.replace(source, target)
    return text


@jinja2.pass_context
def _val(ctx: Any, value: Any) -> str:
    """An identifier of the definition or the engine (``crypto-officer``, ``content_commitment``,
    ``required``) as a French table shows it, from the glossary's ``values``; English keeps it as is, except
    key usages and profile kinds, which take their RFC 5280 / EN 319 412 names."""
    if isinstance(value, (list, tuple)):
        return ", ".join(_val(ctx, v) for v in value)
    text = str(value)
    if ctx["lang"] != "fr":
        return _ENGLISH_VALUES.get(text, text)
    return catalogue.glossary().values.get(text, text)


def _no_none(value: Any) -> Any:
    """StrictUndefined catches a missing name; this catches a definition field left empty (None)."""
    if value is None:
        raise ValueError("an expression has no value: the definition leaves that field empty (null)")
    return value


def jinja_env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False, autoescape=False,
                             finalize=_no_none)
    env.filters.update(dur=_dur, date=_date, cell=_cell, yesno=_yesno, tr=_tr, val=_val)
    return env


def _render_or_fail(render: Any, where: str, number: str, lang: str) -> str:
    title = BY_NUMBER[number].title(lang) if number in BY_NUMBER else number
    try:
        return str(render()).strip()
    except jinja2.TemplateSyntaxError as exc:
        raise PolicyError(f"{where}:{exc.lineno}: section {number} ({title}): template syntax error: "
                          f"{exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise PolicyError(f"{where}: section {number} ({title}): cannot render: {exc.message} (the facts "
                          "offered to templates are listed in ceremony/policy/facts.py)") from None
    except (jinja2.TemplateError, ValueError, TypeError, AttributeError, KeyError) as exc:
        raise PolicyError(f"{where}: section {number} ({title}): cannot render: {exc}") from None


def _context(facts: Facts, doc: str, lang: str) -> dict[str, Any]:
    docs = facts.documents
    this, other = (docs.cp, docs.cps) if doc == "cp" else (docs.cps, docs.cp)
    return {"f": facts, "doc": doc, "lang": lang, "this": this, "other": other,
            "date": version_date(facts, doc), "no_stipulation": no_stipulation(lang)}


def version_date(facts: Facts, doc: str) -> Any:
    """The date of this document's version: its line in the version history (the latest if several)."""
    version = (facts.documents.cp if doc == "cp" else facts.documents.cps).version
    return [h for h in facts.documents.history if h.version == version][-1].date


def front_matter(facts: Facts, doc: str, lang: str) -> str:
    """Title, identification and version history: everything before section 1."""
    lab = LABELS[lang]
    ident = facts.documents.cp if doc == "cp" else facts.documents.cps
    title = ident.title_fr if lang == "fr" else ident.title_en
    lines = [f"# {title}", ""]
    if facts.rehearsal:
        lines += [f"**{lab['rehearsal']}**", ""]
    current = [h for h in facts.documents.history if h.version == ident.version][-1]
    legal = facts.documents.legal
    rows = [(lab["oid"], ident.oid), (lab["version"], ident.version),
            (lab["date"], date_text(version_date(facts, doc), lang)),
            (lab["effective"], current.effective.isoformat() if current.effective else lab["pending"]),
            (lab["decision"], current.decision or lab["pending"]),
            (lab["organisation"], f"{facts.organisation.name} ({facts.organisation.short_name})"),
            (lab["approved"], facts.documents.approving_body),
            (lab["authoritative"], lab[f"{legal.authoritative_language}_name"]),
            (lab["review"], lab["review_text"].format(n=legal.review_months)),
            (lab["environment"], facts.environment)]
    lines += [f"| {lab['field']} | {lab['value']} |", "| --- | --- |"]
    lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in rows]
    lines += ["", *approval_block(facts, lang)]
    lines += ["", f"## {lab['history']}", "", f"| {lab['date']} | {lab['version']} | {lab['changes']} | "
              f"{lab['approved']} | {lab['effective']} |", "| --- | --- | --- | --- | --- |"]
    for h in facts.documents.history:
        changes = h.changes_fr if lang == "fr" else h.changes_en
        effective = h.effective.isoformat() if h.effective else lab["pending"]
        lines.append(f"| {h.date.isoformat()} | {_cell(h.version)} | {_cell(changes)} | {_cell(h.approved_by)} | "
                     f"{effective} |")
    return "\n".join(lines) + "\n"


APPROVAL = {
    "fr": {"title": "Approbation", "status": "Statut", "draft": "projet, non soumis au Comité",
           "submitted": "soumis au Comité, non encore approuvé", "approved": "approuvé",
           "intro": "Les valeurs suivantes attendent la confirmation du service juridique du {org} au regard des "
                    "textes promulgués. Elles sont reproduites telles que la définition de l'IGC les donne ; le "
                    "document ne peut pas être marqué approuvé tant qu'une seule reste sur cette liste.",
           "none": "Aucune valeur de la définition n'est marquée en attente de confirmation par le service "
                   "juridique du {org} (`documents.awaiting_confirmation` est vide).",
           "path": "Champ de la définition", "current": "Valeur actuelle (à confirmer)"},
    "en": {"title": "Approval", "status": "Status", "draft": "draft, not submitted to the Comité",
           "submitted": "submitted to the Comité, not yet approved", "approved": "approved",
           "intro": "The following values await confirmation by the {org}'s legal service against the promulgated "
                    "texts. They are reproduced as the PKI definition gives them; the document cannot be marked "
                    "approved while any one remains on this list.",
           "none": "No value of the definition is marked as awaiting confirmation by the {org}'s legal service "
                   "(`documents.awaiting_confirmation` is empty).",
           "path": "Definition field", "current": "Current value (to be confirmed)"},
}


def _confirmation_value(value: Any, lang: str) -> str:
    """A value awaiting confirmation as the reader sees it: a bilingual text in this language, an amount
    with its digits grouped, a mapping of articles as ``name: article``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:,}".replace(",", " ") if lang == "fr" else f"{value:,}"
    if hasattr(value, "fr") and hasattr(value, "en"):
        return str(getattr(value, lang))
    if isinstance(value, dict):
        return "; ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def approval_block(facts: Facts, lang: str) -> list[str]:
    """The front matter's approval block: the status, and each value the legal service has yet to confirm
    (``documents.awaiting_confirmation``) with its current value, so that neither the Comité nor a reader
    mistakes a placeholder article number or amount for the law."""
    lab, docs = APPROVAL[lang], facts.documents
    org = facts.organisation.short_name
    lines = [f"## {lab['title']}", "", f"| {LABELS[lang]['field']} | {LABELS[lang]['value']} |", "| --- | --- |",
             f"| {lab['status']} | {lab[docs.status]} |", ""]
    if not docs.awaiting_confirmation:
        return [*lines, lab["none"].format(org=org)]
    lines += [lab["intro"].format(org=org), "", f"| {lab['path']} | {lab['current']} |", "| --- | --- |"]
    for path in docs.awaiting_confirmation:
        value = _confirmation_value(documents_value(docs, path), lang)
        if path == "legal.liability_cap":
            value += f" {docs.legal.currency}"
        lines.append(f"| `documents.{path}` | {_cell(value)} |")
    return lines


def render_markdown(facts: Facts, fragments: dict[tuple[str, str | None], Fragment], doc: str, lang: str,
                    policy_dir: Path, env: jinja2.Environment | None = None) -> str:
    """One complete document; raises :class:`PolicyError` naming the section and file on any gap.

    The CP is the requirement catalogue (``cp-requirements.yml``), its own templates (``<lang>/cp/``) and the
    fragments marked ``[cp]``: requirements only, no deployment fact. The CPS is the generated practice
    (``<lang>/<n>.md.j2``), the answer to each requirement of the section, then the common and ``[cps]``
    fragments. A leaf section of the CP with nothing in it says "Aucune stipulation." (the policy imposes
    nothing there); the CPS must have text everywhere.
    """
    env = env or jinja_env()
    ctx = _context(facts, doc, lang)
    by_section: dict[str, list[catalogue.Requirement]] = {}
    for req in catalogue.requirements():
        by_section.setdefault(req.section, []).append(req)
    parts = [front_matter(facts, doc, lang)]
    for section in OUTLINE:
        n = section.number
        body: list[str] = []
        if n == "1.6":
            body.append(glossary_table(lang))
        template_name = f"{lang}/cp/{n}.md.j2" if doc == "cp" else f"{lang}/{n}.md.j2"
        if (TEMPLATES / template_name).is_file():
            where = str(TEMPLATES / template_name)

            def render_template(name: str = template_name) -> str:
                return env.get_template(name).render(ctx)

            generated = _render_or_fail(render_template, where, n, lang)
            if generated:
                body.append(generated)
        lines = []
        for req in by_section.get(n, []):
            wording = req.text[lang] if doc == "cp" else req.answer.get(lang)
            if wording is None:
                continue  # the CPS answers in a fragment citing the identifier, or the check says it does not
            requirement_text: str = wording

            def render_requirement(text: str = requirement_text) -> str:
                # One-line YAML strings: their "\n" after a tag is meant, so blocks are not trimmed here.
                return env.overlay(trim_blocks=False, lstrip_blocks=False).from_string(text).render(ctx)

            rendered = _render_or_fail(render_requirement, f"{catalogue.REQUIREMENTS_FILE} ({req.id})", n, lang)
            first, *rest = rendered.split("\n")
            lines.append("\n".join([f"- **[{req.id}]** {first}", *(f"  {line}" if line else "" for line in rest)]))
        if lines:
            body.append("\n".join(lines))
        scopes = ("cp",) if doc == "cp" else (None, "cps")  # common text is practice: the CPS's
        for fragment in (fragments.get((n, scope)) for scope in scopes):
            if fragment is None:
                continue
            where = f"{fragment.file}:{fragment.line}"
            source = fragment.text

            def render_fragment(text: str = source) -> str:
                return env.from_string(text).render(ctx)

            body.append(_render_or_fail(render_fragment, where, n, lang))
        if not body and not has_children(n):
            if doc == "cp":
                body.append(no_stipulation(lang))
            else:
                raise PolicyError(f"{policy_dir / lang}: section {n} ({section.title(lang)}): no prose fragment for "
                                  f"the CPS in any file; add a '## {n}' paragraph (or '{no_stipulation(lang)}' where "
                                  "nothing is practised)")
        parts.append(section.heading(lang) + "\n")
        if body:
            parts.append("\n\n".join(body) + "\n")
    if doc == "cps":
        parts.append(etsi_annex(lang, facts))
    return "\n".join(parts)


GLOSSARY_HEADINGS = {"fr": ("Terme", "Sigle", "Équivalent anglais", "Définition"),
                     "en": ("Term", "Abbreviation", "French term (authoritative)", "Definition")}


def glossary_table(lang: str) -> str:
    """Section 1.6: the glossary of ``glossary.yml``, the same in the CP and the CPS."""
    head = GLOSSARY_HEADINGS[lang]
    lines = [f"| {' | '.join(head)} |", "| --- | --- | --- | --- |"]
    for t in catalogue.glossary().terms:
        term, abbr, other = (t.fr, t.fr_abbr, t.en) if lang == "fr" else (t.en, t.en_abbr, t.fr)
        lines.append(f"| {_cell(term)} | {_cell(abbr)} | {_cell(other)} | {_cell(t.definition[lang])} |")
    return "\n".join(lines)


ANNEX_TITLE = {"fr": "Annexe A — Correspondance avec les exigences ETSI",
               "en": "Annex A — Mapping to ETSI requirements"}
_ANNEX_HEAD = {"fr": ("Norme", "Exigence", "Objet (paraphrase)", "Section de la DPC"),
               "en": ("Standard", "Requirement", "Subject (paraphrase)", "CPS section")}


def etsi_annex(lang: str, facts: Facts | None = None) -> str:
    """The CPS's annex: each ETSI requirement claimed, paraphrased, with the section addressing it.

    The heading is not numbered, so the RFC 3647 outline check leaves it alone; the drift check sees it
    as part of section 9.17's text. A claim that holds only with a capability the definition lacks (``requires:
    ocsp`` without a CA offering OCSP) is left out."""
    m = catalogue.etsi_map()
    editions = ", ".join(f"ETSI {k} {v}" for k, v in m.editions.items())
    intro = (f"Éditions : {editions}. Les objets sont des paraphrases du Service ; le texte des exigences est "
             "celui des normes." if lang == "fr" else
             f"Editions: {editions}. The subjects are the Service's paraphrases; the requirements' text is "
             "that of the standards.")
    head = _ANNEX_HEAD[lang]
    lines = [f"# {ANNEX_TITLE[lang]}", "", intro, "", f"| {' | '.join(head)} |", "| --- | --- | --- | --- |"]
    for c in m.claims:
        if not c.applies(facts):
            continue
        title = BY_NUMBER[c.section].title(lang) if c.section in BY_NUMBER else ""
        lines.append(f"| ETSI {_cell(c.standard)} | {_cell(c.id)} | {_cell(c.text[lang])} | "
                     f"{_cell(c.section)} {_cell(title)} |")
    return "\n".join(lines) + "\n"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def split_front(md: str) -> tuple[str, str]:
    """The front matter (title, identification, history) and the body (section 1 onwards)."""
    m = re.search(r"^# 1\. ", md, flags=re.MULTILINE)
    return (md[:m.start()], md[m.start():]) if m else (md, "")


def markdown_to_html(md: str) -> str:
    """CommonMark with tables; raw HTML is escaped; each numbered heading gets its id ``s-4-9-7``."""
    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = parser.parse(md)
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open":
            text = tokens[i + 1].content
            m = re.match(r"^([0-9]+(?:\.[0-9]+)*)\.? ", text)
            tok.attrSet("id", "s-" + m.group(1).replace(".", "-") if m else _slug(text))
    return parser.renderer.render(tokens, parser.options, {})


def toc_entries(md: str) -> list[tuple[int, str, str, str]]:
    """(level, number, title, anchor) of each numbered heading, in document order."""
    entries = []
    in_fence = False
    for line in md.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        if in_fence:
            continue
        m = NUMBERED_HEADING.match(line)
        if m:
            entries.append((len(m.group(1)), m.group(2), m.group(3), "s-" + m.group(2).replace(".", "-")))
    return entries


def render_html(md: str, facts_meta: dict[str, Any], lang: str) -> str:
    """A standalone HTML page: cover, identification and history, table of contents, sections."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    front, body = split_front(md)
    page = env.get_template("page.html.j2").render(
        lang=lang, lab=LABELS[lang], meta=facts_meta, front=_markup(markdown_to_html(front)),
        body=_markup(markdown_to_html(body)), toc=toc_entries(md),
        css=_markup((TEMPLATES / "policy.css").read_text(encoding="utf-8")),
        source_sha256=hashlib.sha256(md.encode("utf-8")).hexdigest())
    return page


def _markup(text: str) -> Any:
    """Our own HTML (markdown-it output, the stylesheet): inserted as is in the autoescaped page."""
    return Markup(text)


def document_meta(facts: Facts, doc: str, lang: str) -> dict[str, Any]:
    ident = facts.documents.cp if doc == "cp" else facts.documents.cps
    return {"kind": LABELS[lang][doc], "title": ident.title_fr if lang == "fr" else ident.title_en,
            "oid": ident.oid, "version": ident.version, "date": date_text(version_date(facts, doc), lang),
            "organisation": facts.organisation.name, "short_name": facts.organisation.short_name,
            "approved_by": facts.documents.approving_body, "environment": facts.environment,
            "rehearsal": facts.rehearsal}


def render_pdf(html_text: str) -> bytes:
    """The CP/CPS's PDF (``ceremony.common.pdf``), its stylesheets resolved from the policy templates."""
    return html_to_pdf(html_text, TEMPLATES)


def split_sections(md: str) -> dict[str, str]:
    """The text of each numbered section (heading included), plus ``front`` for what precedes section 1."""
    sections: dict[str, list[str]] = {"front": []}
    current = "front"
    in_fence = False
    for line in md.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        m = None if in_fence else NUMBERED_HEADING.match(line)
        if m:
            current = m.group(2)
            sections.setdefault(current, [])
        sections[current].append(line)
    return {k: "\n".join(v).strip() for k, v in sections.items()}


MAX_CHANGES_PER_SECTION = 5


def _clip(text: str, limit: int = 240) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def section_differences(label: str, actual: str, expected: str, lang: str) -> list[str]:
    """One line per section whose text differs, quoting the first differing line of each side."""
    got, want = split_sections(actual), split_sections(expected)
    problems = []
    for key in list(want) + [k for k in got if k not in want]:
        a, b = got.get(key), want.get(key)
        if a == b:
            continue
        name = "front matter (identification, version history)" if key == "front" else (
            f"section {key} ({BY_NUMBER[key].title(lang)})" if key in BY_NUMBER else f"section {key}")
        if a is None:
            problems.append(f"{label}: {name} is missing from the document")
            continue
        if b is None:
            problems.append(f"{label}: {name} should not be in the document")
            continue
        a_lines, b_lines = a.splitlines(), b.splitlines()
        changes = [op for op in difflib.SequenceMatcher(a=a_lines, b=b_lines, autojunk=False).get_opcodes()
                   if op[0] != "equal"]
        for _, i1, i2, j1, j2 in changes[:MAX_CHANGES_PER_SECTION]:
            x = " / ".join(a_lines[i1:i2]) or "(nothing)"
            y = " / ".join(b_lines[j1:j2]) or "(nothing)"
            problems.append(f"{label}: {name}: the document says {_clip(x)!r} but the definition, the "
                            f"certificates and the fragments now give {_clip(y)!r}")
        if len(changes) > MAX_CHANGES_PER_SECTION:
            problems.append(f"{label}: {name}: {len(changes) - MAX_CHANGES_PER_SECTION} more difference(s)")
    return problems


REPO = Path(__file__).resolve().parent.parent.parent


DOCS_DIR = "docs"


def default_policy_dir(defn: Any) -> Path:
    """The prose fragments beside the definition, else those of its environment in the repository."""
    beside = Path(defn.path).parent / "policy"
    if beside.is_dir():
        return beside
    repo = REPO / "inventory" / defn.model.environment / "policy"
    if repo.is_dir():
        return repo
    raise PolicyError(f"{beside}: no prose fragments for the CP/CPS (expected a 'policy/fr' and 'policy/en' "
                      f"directory beside the definition, or {repo})")


@dataclasses.dataclass
class BuildResult:
    written: list[Path]
    unchanged: list[Path]
    pdf_seconds: dict[str, float]


@dataclasses.dataclass(frozen=True)
class RenderedDocument:
    doc: str
    lang: str
    version: str
    markdown: str
    html: str

    @property
    def stem(self) -> str:
        return f"{self.doc}-{self.version}.{self.lang}"


def render_all(defn: Any, out: Path, policy_dir: Path | None = None) -> tuple[Facts, list[RenderedDocument]]:
    """Both documents in both languages, Markdown and HTML, in memory (no file is touched)."""

    facts = derive_facts(defn, out)
    policy_dir = policy_dir or default_policy_dir(defn)
    env = jinja_env()
    result = []
    for lang in LANGS:
        fragments = load_fragments(policy_dir, lang)
        for doc in DOCUMENTS:
            md = render_markdown(facts, fragments, doc, lang, policy_dir, env)
            ident = facts.documents.cp if doc == "cp" else facts.documents.cps
            result.append(RenderedDocument(doc, lang, ident.version, md,
                                           render_html(md, document_meta(facts, doc, lang), lang)))
    return facts, result


def _timed_pdf(html_text: str) -> tuple[bytes, float]:
    start = time.perf_counter()
    pdf = render_pdf(html_text)
    return pdf, time.perf_counter() - start


_PDF_CHILD = "from ceremony.policy.render import pdf_filter; pdf_filter()"


def pdf_filter() -> None:
    """Child process: HTML on standard input, PDF on standard output."""
    sys.stdout.buffer.write(render_pdf(sys.stdin.buffer.read().decode("utf-8")))
    sys.stdout.buffer.flush()


def _pdf_in_child(html_text: str) -> tuple[bytes, float]:
    # The child needs no secret: it gets the minimal environment, whatever names the PIN variables have.
    start = time.perf_counter()
    result = child_process.run([sys.executable, "-c", _PDF_CHILD], input=html_text.encode("utf-8"),
                               capture_output=True, cwd=REPO, timeout=600)
    if result.returncode != 0:
        raise PolicyError("PDF rendering failed: " + result.stderr.decode("utf-8", "replace").strip()[-500:])
    return result.stdout, time.perf_counter() - start


def render_pdfs(htmls: dict[str, str], workers: int | None = None) -> dict[str, tuple[bytes, float]]:
    """PDFs rendered in parallel, one child process each (WeasyPrint is CPU-bound, single-threaded).

    Children are fresh interpreters (``python -c``), never forks: a ceremony process holds a loaded
    PKCS#11 module and open sessions that a forked child must not inherit. One worker renders in this
    process. The times include each child's start-up (about half a second).
    """
    if not htmls:
        return {}
    workers = workers or max(1, min(len(htmls), os.cpu_count() or 1))
    if workers == 1:
        return {k: _timed_pdf(v) for k, v in htmls.items()}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {k: pool.submit(_pdf_in_child, v) for k, v in htmls.items()}
        return {k: f.result() for k, f in futures.items()}


def build_documents(defn: Any, out: str | Path, policy_dir: Path | None = None,
                    workers: int | None = None) -> BuildResult:
    """Write ``out/docs/{cp,cps}-<version>.{fr,en}.{md,html,pdf}`` and list them in the manifest.

    Everything is rendered before anything is written. An existing document is never overwritten:
    identical content is left as it is; different content is an error naming the differing sections
    (a new text needs a new version number in the definition).
    """
    out_dir = Path(out)
    facts, docs = render_all(defn, out_dir, policy_dir)
    target = out_dir / DOCS_DIR
    planned: dict[Path, bytes] = {}
    unchanged: list[Path] = []
    pdf_needed: dict[str, str] = {}
    problems: list[str] = []
    for d in docs:
        md_path, html_path, pdf_path = (target / f"{d.stem}.{ext}" for ext in ("md", "html", "pdf"))
        md_bytes, html_bytes = d.markdown.encode("utf-8"), d.html.encode("utf-8")
        for path, data in ((md_path, md_bytes), (html_path, html_bytes)):
            if path.exists():
                existing = path.read_bytes()
                if existing == data:
                    unchanged.append(path)
                elif path.suffix == ".md":
                    problems += section_differences(str(path), existing.decode("utf-8", "replace"), d.markdown,
                                                    d.lang)
                else:
                    problems.append(f"{path}: exists and is not the rendering of the current Markdown")
            else:
                planned[path] = data
        if pdf_path.exists():
            if md_path in planned:
                problems.append(f"{pdf_path}: exists although its Markdown source does not")
            else:
                unchanged.append(pdf_path)
        else:
            pdf_needed[str(pdf_path)] = d.html
    if problems:
        raise PolicyError("documents exist with another content; they are never overwritten (give the documents a "
                          "new version in the definition's 'documents' section, or build into another --out):\n  "
                          + "\n  ".join(problems))
    pdfs = render_pdfs(pdf_needed, workers)
    for key, (pdf, _) in pdfs.items():
        planned[Path(key)] = pdf
    manifest = Manifest(out_dir, rehearsal=facts.rehearsal)
    with OutputSet(target, manifest, "policy-documents") as run:
        for d in docs:
            source = hashlib.sha256(d.markdown.encode("utf-8")).hexdigest()
            for ext in ("md", "html", "pdf"):
                path = target / f"{d.stem}.{ext}"
                if path in planned:
                    extra = {"source_sha256": source} if ext != "md" else {}
                    run.plan(path.name, d.doc, ext, lang=d.lang, version=d.version, **extra)
        run.check()
        for path in sorted(planned):
            run.stage(path.name, planned[path])
        if run.planned:
            run.commit()
    written = sorted(planned)
    return BuildResult(written=written, unchanged=unchanged,
                       pdf_seconds={Path(k).name: t for k, (_, t) in pdfs.items()})
