"""``invoke docs.check``: the CP/CPS follow RFC 3647, say something everywhere, and still tell the truth.

Checks, for each document (CP, CPS) and language (fr, en):

1. **outline** — the numbered headings are exactly those of RFC 3647, numbered and titled as in
   :mod:`ceremony.policy.outline`, in order, at the right level;
2. **no empty section** — every section without subsections has text ("Aucune stipulation." /
   "No stipulation." counts as text, a blank does not);
3. **no vague wording** — words such as "periodically" / "périodiquement" where a number belongs
   (the list is configurable: ``<policy dir>/vague-wording.yml`` with ``fr:`` and ``en:`` lists);
4. **drift** — the documents are rendered again from the current definition, certificates, CRLs and
   fragments; any section that differs is named with the old and the new text (a re-issued
   certificate, a changed CRL interval, a moved URL);
5. **CP and CPS** — every requirement ``[PC-…]`` of the CP has an answer with the same identifier in the
   same section of the CPS, and the CP holds no deployment fact (no certificate fingerprint or serial);
6. **ETSI map** — every claimed requirement names a section of RFC 3647 that the CPS fills with a practice
   (not "Aucune stipulation." / "Sans objet."), and every identifier the requirements cite is claimed;
7. **practice against the definition and the code** — what the text says of the maximum revocation delay,
   of revoked entries after expiry, of the online CA's activation and of the OCSP responses' validity agrees with
   ``documents.revocation``, the CRL code, the ``crl_signer`` role and ``cas.*.ocsp``, and a production CPS never
   says that it does not meet a requirement of the CP (the catalogue's conditional answers say so when the
   definition or the code falls short) (:func:`claim_problems`);
8. **French** — no spelling the glossary refuses, and no English identifier as a value in a French table;
9. the HTML is the rendering of the Markdown, the PDF's text layer carries the Markdown's SHA-256,
   and the manifest lists each file with its hash.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import yaml

from ceremony.common.pdf import pdf_text
from ceremony.policy import catalogue
from ceremony.policy.facts import Facts, PolicyError, read_manifest
from ceremony.policy.outline import BY_NUMBER, LANGS, OUTLINE, has_children
from ceremony.policy.render import (
    ANNEX_TITLE,
    DOCS_DIR,
    NUMBERED_HEADING,
    default_policy_dir,
    document_meta,
    render_all,
    render_html,
    section_differences,
    split_sections,
)

# Words that promise nothing checkable. Mozilla Root Store Policy 3.3 asks for numbers instead.
DEFAULT_VAGUE: dict[str, list[str]] = {
    "fr": ["périodiquement", "régulièrement", "de temps en temps", "en temps utile", "dans les meilleurs délais",
           "dès que possible", "si nécessaire", "au besoin", "raisonnablement", "dans un délai raisonnable",
           "fréquemment"],
    "en": ["periodically", "regularly", "from time to time", "in a timely manner", "as soon as possible",
           "as soon as practicable", "when necessary", "as needed", "reasonably", "within a reasonable time",
           "promptly", "frequently"],
}


VAGUE_FILE = "vague-wording.yml"


def vague_wording(policy_dir: Path | None) -> dict[str, list[str]]:
    """The default list, replaced per language by ``vague-wording.yml`` when the policy directory has one."""
    words = {k: list(v) for k, v in DEFAULT_VAGUE.items()}
    if policy_dir is None or not (policy_dir / VAGUE_FILE).is_file():
        return words
    path = policy_dir / VAGUE_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: malformed YAML: {exc}") from None
    if not isinstance(data, dict) or set(data) - set(LANGS):
        raise PolicyError(f"{path}: must map languages to lists of words (allowed keys: {', '.join(LANGS)})")
    for lang, items in data.items():
        if not isinstance(items, list) or not all(isinstance(w, str) and w.strip() for w in items):
            raise PolicyError(f"{path}: {lang}: must be a list of non-empty strings")
        words[lang] = [w.strip() for w in items]
    return words


def outline_problems(label: str, md: str, lang: str) -> list[str]:
    """Headings against RFC 3647: same numbers, titles, levels and order; no leaf section left empty."""
    problems: list[str] = []
    headings: list[tuple[int, int, str, str]] = []  # (line index, level, number, title)
    lines = md.splitlines()
    in_fence = False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            in_fence = not in_fence
        m = None if in_fence else NUMBERED_HEADING.match(line)
        if m:
            headings.append((i, len(m.group(1)), m.group(2), m.group(3)))
    for pos, section in enumerate(OUTLINE):
        if pos >= len(headings):
            problems.append(f"{label}: section {section.number} ({section.title(lang)}) is missing "
                            f"(the document ends after {headings[-1][2] if headings else 'no section'})")
            return problems
        _, level, number, title = headings[pos]
        expected_title = section.title(lang)
        if number != section.number:
            problems.append(f"{label}: heading {pos + 1} is {number} {title!r}; RFC 3647 puts section "
                            f"{section.number} ({expected_title}) here")
            return problems
        if title != expected_title:
            problems.append(f"{label}: section {number} is titled {title!r}; RFC 3647 calls it {expected_title!r}")
        if level != section.level:
            problems.append(f"{label}: section {number} is a level-{level} heading; it must be level {section.level}")
    for _, _, number, title in headings[len(OUTLINE):]:
        problems.append(f"{label}: section {number} ({title}) is not in the RFC 3647 outline")
    for k, (i, _, number, _) in enumerate(headings):
        end = headings[k + 1][0] if k + 1 < len(headings) else len(lines)
        if not has_children(number) and not "\n".join(lines[i + 1:end]).strip():
            problems.append(f"{label}: section {number} is empty (write the text, or 'Aucune stipulation.' / "
                            "'No stipulation.' where nothing is required)")
    return problems


def vague_problems(label: str, md: str, words: list[str]) -> list[str]:
    problems = []
    section = "front matter"
    for line in md.splitlines():
        m = NUMBERED_HEADING.match(line)
        if m:
            section = f"section {m.group(2)}"
            continue
        for w in words:
            if re.search(r"(?<!\w)" + re.escape(w) + r"(?!\w)", line, flags=re.IGNORECASE):
                problems.append(f"{label}: {section}: vague wording {w!r}: state a number or a date instead")
    return problems


def _sections(md: str) -> dict[str, str]:
    """Section texts without their heading line, the ETSI annex cut off from section 9.17."""
    result = {}
    for key, text in split_sections(md).items():
        body = text.split("\n", 1)[1] if key != "front" and "\n" in text else ("" if key != "front" else text)
        result[key] = body
    for title in ANNEX_TITLE.values():
        if "9.17" in result and f"# {title}" in result["9.17"]:
            result["9.17"] = result["9.17"].split(f"# {title}")[0]
    return result


def requirement_problems(cp_label: str, cp_md: str, cps_label: str, cps_md: str) -> list[str]:
    """Every requirement of the CP answered in the same section of the CPS; the CP without deployment facts."""
    problems = []
    cp, cps = _sections(cp_md), _sections(cps_md)
    answered = {(n, rid) for n, text in cps.items() for rid in catalogue.REQUIREMENT_TAG.findall(text)}
    for n, text in cp.items():
        for rid in catalogue.REQUIREMENT_TAG.findall(text):
            if (n, rid) not in answered:
                problems.append(f"{cps_label}: section {n}: requirement {rid} of the CP ({cp_label}) has no answer "
                                f"here (the CPS must say how the CA meets it, citing **[{rid}]**)")
    for n, text in cp.items():
        if re.search(r"`[0-9A-F]{2}(?::[0-9A-F]{2}){31}`", text) or "SHA-256 `" in text:
            problems.append(f"{cp_label}: section {n}: a certificate fingerprint is a deployment fact; it belongs in "
                            "the CPS, not the CP")
    if cp_md.split("# 1.", 1)[-1] == cps_md.split("# 1.", 1)[-1]:
        problems.append(f"{cp_label}: the CP's body is the CPS's: RFC 3647 separates requirements from practices")
    return problems


_EMPTY_PRACTICE = re.compile(r"^\s*(Aucune stipulation|Sans objet|No stipulation|Not applicable)\b[^\n]*\s*$")


def etsi_problems(cps_label: str, cps_md: str, lang: str, facts: Facts | None = None) -> list[str]:
    """Each claimed ETSI requirement points at a section the CPS fills with a practice (a claim that needs a
    capability the definition lacks, OCSP, is not made and not checked)."""
    problems = []
    cps = _sections(cps_md)
    m = catalogue.etsi_map()
    claimed = {c.id for c in m.claims}
    for c in m.claims:
        if not c.applies(facts):
            continue
        if not c.section:
            problems.append(f"{catalogue.ETSI_MAP_FILE}: {c.id} ({c.standard}) is claimed without a CPS section")
        elif c.section not in BY_NUMBER:
            problems.append(f"{catalogue.ETSI_MAP_FILE}: {c.id} ({c.standard}): section {c.section} is not in the "
                            "RFC 3647 outline")
        elif has_children(c.section):
            problems.append(f"{catalogue.ETSI_MAP_FILE}: {c.id} ({c.standard}): section {c.section} has subsections; "
                            "name the one that addresses it")
        elif not cps.get(c.section, "").strip() or _EMPTY_PRACTICE.match(cps.get(c.section, "")):
            problems.append(f"{cps_label}: section {c.section}: empty, yet the ETSI map claims {c.id} "
                            f"({c.standard}) there")
    if lang == "fr":
        for req in catalogue.requirements():
            for cid in req.etsi:
                if cid not in claimed:
                    problems.append(f"{catalogue.REQUIREMENTS_FILE}: {req.id} cites {cid}, which "
                                    f"{catalogue.ETSI_MAP_FILE.name} does not claim")
    return problems


_DURATION = {"fr": r"(\d+)\s*(minutes?|heures?|jours?)", "en": r"(\d+)\s*(minutes?|hours?|days?)"}
_UNIT_HOURS = {"minute": 1 / 60, "heure": 1, "hour": 1, "jour": 24, "day": 24}
_MAX_DELAY = {"fr": r"(?:délai maximal de révocation|latence maximale)",
              "en": r"(?:maximum revocation delay|maximum latency)"}
_KEPT_UNTIL_EXPIRY = {
    "fr": re.compile(r"(?:reste|restent|demeure|demeurent|conservée?s?|figure|figurent)\b[^.|]*\bjusqu'à\b"
                     r"[^.|]*expir"
                     r"|(?<!jamais )(?<!n'est )(?<!ne sont )(?:retiré|retirée|retirés|retirées|supprimée?s?|ôtée?s?)\b"
                     r"[^.|]*(?:après|dès|à) l'expiration", re.IGNORECASE),
    "en": re.compile(r"(?:stays?|remains?|kept|listed)\b[^.|]*\buntil\b[^.|]*expir"
                     r"|(?<!never )(?:leaves?|removed|dropped|deleted)\b[^.|]*(?:when|after|once)\b[^.|]*expir",
                     re.IGNORECASE),
}
_ONLINE_NEEDS_PEOPLE = {
    "fr": re.compile(r"(?:signature des LCR|LCR)[^.|]*(?:AC en ligne|en ligne)[^.]*?\|?[^.|]*(?:\d+|deux|trois) "
                     r"(?:opérateurs? cryptographiques?|porteurs? de secret)|en ligne[^.|]*(?:requiert|exige)[^.|]*"
                     r"(?:opérateurs? cryptographiques?|porteurs? de secret|témoin)", re.IGNORECASE),
    "en": re.compile(r"(?:CRL signing|signing (?:an online CA's |the )?CRLs?)[^.|]*(?:requires?|takes?|needs?)[^.|]*"
                     r"(?:Crypto Officers?|witness)|online[^.|]*(?:requires?|takes?|needs?)[^.|]*(?:Crypto Officers?|"
                     r"witness)", re.IGNORECASE),
}
_PIN_NEVER_IN_FILE = {
    "fr": re.compile(r"code PIN[^.]*jamais[^.]*\bfichier\b(?! de configuration)", re.IGNORECASE),
    "en": re.compile(r"PIN[^.]*never[^.]*\bfile\b(?! configuration)(?<!configuration file)", re.IGNORECASE),
}


_NO_OCSP = {
    "fr": re.compile(r"aucun service (?:de vérification en ligne[^.|]*?|OCSP )n'est (?:encore )?(?:proposé|offert)",
                     re.IGNORECASE),
    "en": re.compile(r"no (?:online status checking \(OCSP\) |on-line status checking \(OCSP\) |OCSP )service is "
                     r"(?:yet )?offered", re.IGNORECASE),
}
#: A CA token's PIN described as generated whole and handed over, or known to each officer, while the definition's
#: quorum splits it into parts (token initialisation, docs/lifecycle.md); "non partagé" / "not split" is the
#: qualifier that makes such a sentence true of the tokens that keep a whole PIN (the online CA's).
_WHOLE_PIN = {
    "fr": re.compile(r"codes? PIN des jetons(?! non partagés)[^.|]*\bsont générés aléatoirement"
                     r"|code PIN unique est connu de chacun", re.IGNORECASE),
    "en": re.compile(r"\btoken PINs are generated at random|single PIN is known to each", re.IGNORECASE),
}


#: A stated validity of the OCSP responses ("réponses pré-signées valides 4 jours", "OCSP responses valid for 4 days"):
#: it must be the ``ocsp.validity`` of a CA of the definition.
_OCSP_VALIDITY = {
    "fr": re.compile(r"réponses?\b[^.|]*?(?:OCSP|pré-signées?)[^.|]*?\bvalides?\s+(?:pendant\s+)?" + _DURATION["fr"],
                     re.IGNORECASE),
    "en": re.compile(r"(?:OCSP|pre-signed) responses?\b[^.|]*?\bvalid\s+(?:for\s+)?" + _DURATION["en"], re.IGNORECASE),
}


#: What a conditional answer of the catalogue says when the definition does not meet its requirement.
_NOT_MET = {"fr": re.compile(r"[^.]*ne satisfait pas à cette exigence"),
            "en": re.compile(r"[^.]*does not meet this requirement")}


def claim_problems(label: str, md: str, lang: str, facts: Facts, doc: str) -> list[str]:
    """What the text states of revocation latency, retention after expiry, online activation, the OCSP service and
    the PINs, held to the definition (``documents.revocation``, ``cas.*.ocsp``, ``ceremony.crypto_officer_quorum``),
    the CRL code (entries kept after expiry) and the ``crl_signer`` role (an hourly job with a 0600 PIN file). Each
    finding names the section and the sentence."""
    problems = []
    limit = facts.documents.revocation.max_hours
    online = facts.online
    sections = _sections(md)
    for n, text in sections.items():
        for m in re.finditer(_MAX_DELAY[lang] + r"[^.|]*?" + _DURATION[lang], text, flags=re.IGNORECASE):
            hours = int(m.group(1)) * _UNIT_HOURS[m.group(2).rstrip("s")]
            if hours > limit:
                problems.append(f"{label}: section {n}: {m.group(0)!r} exceeds the maximum revocation delay of the "
                                f"definition (documents.revocation.max_hours: {limit} hours)")
        if n.startswith(("4.9", "4.10", "7.2")) and online is not None and online.expired_entries_kept:
            for m in _KEPT_UNTIL_EXPIRY[lang].finditer(text):
                problems.append(f"{label}: section {n}: {m.group(0)!r} says revoked entries leave the CRL at expiry; "
                                "the CRL job keeps every revoked entry after expiry (ceremony/crl, docs/crl.md)")
        if n in ("5.2.2", "6.2.2", "6.2.8") and online is not None:
            for rx in (_ONLINE_NEEDS_PEOPLE[lang], _PIN_NEVER_IN_FILE[lang]):
                for m in rx.finditer(text):
                    problems.append(f"{label}: section {n}: {m.group(0)!r} contradicts the online CA's activation: "
                                    f"the CRL job runs unattended {online.period('en')} with the PIN file "
                                    f"{online.pin_file} (mode {online.pin_file_mode}, role crl_signer)")
    ocsp = [f"cas.{c.name}.ocsp ({c.ocsp.url})" for c in facts.ocsp_cas]
    validities = {c.ocsp.validity_td.total_seconds() / 3600: f"cas.{c.name}.ocsp.validity: {c.ocsp.validity}"
                  for c in facts.ocsp_cas} if doc == "cps" else {}  # the CP states the limits, not the value
    for n, text in sections.items():
        for m in _OCSP_VALIDITY[lang].finditer(text) if validities else ():
            hours = int(m.group(1)) * _UNIT_HOURS[m.group(2).rstrip("s")]
            if hours not in validities:
                problems.append(f"{label}: section {n}: {m.group(0)!r} states a validity of the OCSP responses that "
                                f"no CA of the definition gives them ({'; '.join(validities.values())})")
    for n, text in sections.items():
        if ocsp:
            for m in _NO_OCSP[lang].finditer(text):
                problems.append(f"{label}: section {n}: {m.group(0)!r} says no OCSP service is offered, but the "
                                f"definition sets {', '.join(ocsp)}")
        if facts.ceremony.crypto_officer_quorum > 1 and n.startswith(("5.2", "6.2", "6.4")):
            for m in _WHOLE_PIN[lang].finditer(text):
                quorum = facts.ceremony.crypto_officer_quorum
                problems.append(f"{label}: section {n}: {m.group(0)!r} describes a whole PIN known to or handed to "
                                f"each officer, but ceremony.crypto_officer_quorum is {quorum}: the token "
                                "initialisation splits the user PIN into one part per Crypto Officer "
                                "(say which tokens keep a whole PIN: 'non partagé' / 'not split')")
    if doc == "cps" and not facts.rehearsal:
        for n, text in sections.items():
            for m in _NOT_MET[lang].finditer(text):
                problems.append(f"{label}: section {n}: the CPS says it does not meet a requirement of the CP "
                                f"({m.group(0)!r}); a production CPS must meet every requirement (change the practice "
                                "or the definition, or the CP by a new version)")
    if doc == "cps" and online is not None:
        practice = sections.get("6.2.8", "")
        if online.pin_file not in practice or online.pin_file_mode not in practice:
            problems.append(f"{label}: section 6.2.8: does not state the online CA's PIN file {online.pin_file} and "
                            f"its mode {online.pin_file_mode}, which the crl_signer role provisions")
        delay = re.search(_MAX_DELAY[lang] + r"[^.|]*?" + _DURATION[lang], sections.get("4.9.5", ""), re.IGNORECASE)
        if delay is None:
            problems.append(f"{label}: section 4.9.5: does not state the maximum revocation delay ({limit} hours)")
    return problems


_CODE = re.compile(r"`[^`]*`")
_URL = re.compile(r"\b[a-z]+://\S+")


def french_problems(label: str, md: str, lang: str) -> list[str]:
    """Refused spellings of the glossary (outside code spans), and English values in French tables."""
    problems = []
    g = catalogue.glossary()
    section = "front matter"
    for line in md.splitlines():
        m = NUMBERED_HEADING.match(line)
        if m:
            section = f"section {m.group(2)}"
        text = _CODE.sub("", line)
        for term in g.terms:
            for wrong in term.avoid[lang]:
                if re.search(r"(?<!\w)" + re.escape(wrong) + r"(?!\w)", text):
                    problems.append(f"{label}: {section}: {wrong!r}: the glossary's term is "
                                    f"{term.fr if lang == 'fr' else term.en!r}")
        # The glossary (1.6) has an English column by design.
        if lang == "fr" and section != "section 1.6" and text.startswith("|") and not re.match(r"^\|\s*-", text):
            for cell in text.strip().strip("|").split("|"):
                words = re.split(r"[\s,;()]+", _URL.sub("", cell).strip())
                bad = sorted({w for w in words if w in g.english_in_french})
                if bad:
                    problems.append(f"{label}: {section}: French table cell {cell.strip()!r} holds English "
                                    f"value(s) {', '.join(bad)} (translate through the glossary's 'values')")
    return problems


def _manifest_problems(out: Path, paths: list[Path]) -> list[str]:
    manifest = read_manifest(out)
    listed = {a["path"]: a for a in manifest.get("artifacts", [])}
    problems = []
    for path in paths:
        if not path.exists():
            continue
        rel = path.resolve().relative_to(out.resolve()).as_posix()
        entry = listed.get(rel)
        if entry is None:
            problems.append(f"{path}: not listed in {out / 'manifest.json'}")
        elif entry.get("sha256") != hashlib.sha256(path.read_bytes()).hexdigest():
            problems.append(f"{path}: its SHA-256 differs from the manifest's (changed after it was built)")
    return problems


def check_documents(defn: Any, out: str | Path, policy_dir: Path | None = None) -> list[Path]:
    """Run every check; return the files checked or raise :class:`PolicyError` listing every problem."""
    out_dir = Path(out)
    policy_dir = policy_dir or default_policy_dir(defn)
    words = vague_wording(policy_dir)
    facts, expected = render_all(defn, out_dir, policy_dir)
    problems: list[str] = []
    checked: list[Path] = []
    texts: dict[tuple[str, str], tuple[str, str]] = {}
    for d in expected:
        base = out_dir / DOCS_DIR / d.stem
        md_path, html_path, pdf_path = (Path(f"{base}.{ext}") for ext in ("md", "html", "pdf"))
        if not md_path.is_file():
            problems.append(f"{md_path}: missing (run invoke docs.build)")
            continue
        md = md_path.read_text(encoding="utf-8")
        checked.append(md_path)
        problems += outline_problems(str(md_path), md, d.lang)
        problems += vague_problems(str(md_path), md, words[d.lang])
        problems += section_differences(str(md_path), md, d.markdown, d.lang)
        problems += claim_problems(str(md_path), md, d.lang, facts, d.doc)
        problems += french_problems(str(md_path), md, d.lang)
        texts[(d.doc, d.lang)] = (str(md_path), md)
        source = hashlib.sha256(md.encode("utf-8")).hexdigest()
        if not html_path.is_file():
            problems.append(f"{html_path}: missing (run invoke docs.build)")
        else:
            checked.append(html_path)
            if html_path.read_text(encoding="utf-8") != render_html(md, document_meta(facts, d.doc, d.lang), d.lang):
                problems.append(f"{html_path}: is not the rendering of {md_path.name}")
        if not pdf_path.is_file():
            problems.append(f"{pdf_path}: missing (run invoke docs.build)")
        else:
            checked.append(pdf_path)
            text = re.sub(r"\s+", "", pdf_text(pdf_path))
            if source not in text:
                problems.append(f"{pdf_path}: its text layer does not carry the SHA-256 of {md_path.name} "
                                f"({source}): it was rendered from another text")
        problems += _manifest_problems(out_dir, [md_path, html_path, pdf_path])
    for lang in LANGS:
        if ("cp", lang) in texts and ("cps", lang) in texts:
            problems += requirement_problems(*texts[("cp", lang)], *texts[("cps", lang)])
            problems += etsi_problems(*texts[("cps", lang)], lang, facts)
    if problems:
        raise PolicyError(f"the CP/CPS under {out_dir / DOCS_DIR} fail {len(problems)} check(s):\n  "
                          + "\n  ".join(problems))
    return checked
