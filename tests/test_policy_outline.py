"""RFC 3647 outline data and the structural checks of the CP/CPS (pure functions, no HSM)."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, tree
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ceremony.common.errors import DefinitionError
from ceremony.definition.model import LoadedDefinition, load_definition
from ceremony.ocsp.encoding import ResponderContext
from ceremony.policy.check import (
    DEFAULT_VAGUE,
    check_documents,
    claim_problems,
    etsi_problems,
    french_problems,
    outline_problems,
    requirement_problems,
    vague_problems,
    vague_wording,
)
from ceremony.policy.facts import PolicyError, derive_facts, duration_text
from ceremony.policy.outline import BY_NUMBER, OUTLINE, has_children, no_stipulation
from ceremony.policy.render import (
    build_documents,
    jinja_env,
    load_fragments,
    render_all,
    render_markdown,
    section_differences,
    split_sections,
)
from ceremony.x509.certificates import cross_builder, ocsp_signer_builder, root_builder, subordinate_builder

# The team's shared reference outline: beside the checkout, or where the team keeps it on this machine.
_CANDIDATES = [REPO.parent / "shared" / "reference" / "rfc3647-outline.md",
               Path("/work/shared/reference/rfc3647-outline.md")]
REFERENCE = next((c for c in _CANDIDATES if c.is_file()), _CANDIDATES[0])


def complete_markdown(lang: str) -> str:
    """A document with every heading of the outline and a sentence under each leaf."""
    parts = ["# Title", ""]
    for s in OUTLINE:
        parts += [s.heading(lang), ""]
        if not has_children(s.number):
            parts += [no_stipulation(lang), ""]
    return "\n".join(parts)


def test_outline_has_every_rfc3647_heading_in_order() -> None:
    assert len(OUTLINE) == 270
    assert len(BY_NUMBER) == 270
    assert OUTLINE[0].heading("en") == "# 1. INTRODUCTION"
    assert BY_NUMBER["4.9.7"].heading("en") == "### 4.9.7 CRL issuance frequency (if applicable)"
    assert BY_NUMBER["4.9.7"].heading("fr") == "### 4.9.7 Fréquence d'établissement des LCR (le cas échéant)"
    assert BY_NUMBER["9.17"].anchor == "s-9-17"
    for s in OUTLINE:
        parent = s.number.rpartition(".")[0]
        assert not parent or parent in BY_NUMBER, s.number
        assert s.title_fr and s.title_en


@pytest.mark.skipif(not REFERENCE.is_file(), reason="shared reference outline not beside the checkout")
def test_outline_matches_the_shared_reference_file() -> None:
    reference = [line for line in REFERENCE.read_text(encoding="utf-8").splitlines() if re.match(r"^#+ \d", line)]
    assert reference == [s.heading("en") for s in OUTLINE]


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_complete_document_passes_the_outline_check(lang: str) -> None:
    assert outline_problems("doc.md", complete_markdown(lang), lang) == []


def test_outline_check_names_missing_misplaced_retitled_and_empty_sections() -> None:
    md = complete_markdown("en")
    missing = md.replace("### 4.9.8 Maximum latency for CRLs (if applicable)\n\nNo stipulation.\n\n", "")
    assert outline_problems("d.md", missing, "en") == [
        "d.md: heading 93 is 4.9.9 'On-line revocation/status checking availability'; RFC 3647 puts section 4.9.8 "
        "(Maximum latency for CRLs (if applicable)) here"]
    retitled = md.replace("### 4.9.8 Maximum latency for CRLs (if applicable)", "### 4.9.8 CRL latency")
    assert outline_problems("d.md", retitled, "en") == [
        "d.md: section 4.9.8 is titled 'CRL latency'; RFC 3647 calls it 'Maximum latency for CRLs (if applicable)'"]
    empty = md.replace("### 6.1.5 Key sizes\n\nNo stipulation.\n", "### 6.1.5 Key sizes\n\n")
    assert any("section 6.1.5 is empty" in p for p in outline_problems("d.md", empty, "en"))
    truncated = md[:md.index("## 9.17")]
    assert outline_problems("d.md", truncated, "en")[0].startswith("d.md: section 9.17 (Other provisions) is missing")
    wrong_level = md.replace("### 6.1.5 Key sizes", "## 6.1.5 Key sizes")
    assert outline_problems("d.md", wrong_level, "en") == [
        "d.md: section 6.1.5 is a level-2 heading; it must be level 3"]
    french_title_in_english = md.replace("## 6.8 Time-stamping", "## 6.8 Horodatage")
    assert "RFC 3647 calls it 'Time-stamping'" in outline_problems("d.md", french_title_in_english, "en")[0]


def test_vague_wording_is_named_with_its_section(tmp_path: Path) -> None:
    md = "# T\n\n## 5.4.2 Frequency of processing log\n\nLogs are reviewed periodically.\n"
    assert vague_problems("d.md", md, DEFAULT_VAGUE["en"]) == [
        "d.md: section 5.4.2: vague wording 'periodically': state a number or a date instead"]
    assert vague_problems("d.md", "## 5.4.2 X\n\nLes journaux sont revus Régulièrement.\n", DEFAULT_VAGUE["fr"])
    (tmp_path / "vague-wording.yml").write_text("fr: [souvent]\n", encoding="utf-8")
    words = vague_wording(tmp_path)
    assert words["fr"] == ["souvent"] and words["en"] == DEFAULT_VAGUE["en"]
    (tmp_path / "vague-wording.yml").write_text("de: [oft]\n", encoding="utf-8")
    with pytest.raises(PolicyError, match=r"vague-wording.yml: must map languages .*allowed keys: fr, en"):
        vague_wording(tmp_path)


def test_shipped_fragments_avoid_the_vague_wording_list() -> None:
    for env in ("testing", "production.example"):
        words = vague_wording(REPO / "inventory" / env / "policy")
        for lang in ("fr", "en"):
            for path in sorted((REPO / "inventory" / env / "policy" / lang).glob("*.md")):
                assert vague_problems(str(path), path.read_text(encoding="utf-8"), words[lang]) == []


def test_durations_are_spelled_in_the_definitions_unit() -> None:
    assert duration_text("24h", "fr") == "24 heures"
    assert duration_text("1d", "en") == "1 day"
    assert duration_text("91d", "fr") == "91 jours"
    import datetime as dt

    assert duration_text(dt.timedelta(days=6), "en") == "6 days"
    assert duration_text(dt.timedelta(hours=36), "fr") == "36 heures"


@pytest.mark.parametrize("env", ["testing", "production.example"])
@pytest.mark.parametrize("lang", ["fr", "en"])
def test_shipped_fragments_cover_every_section_without_generated_text(env: str, lang: str) -> None:
    from ceremony.policy.catalogue import requirements
    from ceremony.policy.render import TEMPLATES, load_fragments

    fragments = load_fragments(REPO / "inventory" / env / "policy", lang)
    answered = {r.section for r in requirements() if lang in r.answer}
    for s in OUTLINE:
        # 1.6 is the glossary; the CP reads "Aucune stipulation." where it requires nothing.
        if has_children(s.number) or s.number == "1.6" or (TEMPLATES / lang / f"{s.number}.md.j2").is_file():
            continue
        covered = (s.number, "cps") in fragments or (s.number, None) in fragments or s.number in answered
        assert covered, (env, lang, s.number)
    texts = " ".join(f.text for f in fragments.values())
    assert "Loi n°2016-012" in texts and "Décret n°2019-0037/P-RM" in texts


PRODUCTION_EXAMPLE = REPO / "inventory" / "production.example"


def _production_certificates(defn: LoadedDefinition, out: Path) -> dict[str, tuple[x509.Certificate, Any]]:
    """The production example's CA certificates, made with software keys by the engine's own builders."""
    certs: dict[str, tuple[x509.Certificate, Any]] = {}
    for name, ca in defn.model.cas.items():
        key = ec.generate_private_key(ec.SECP384R1())
        if ca.role == "root":
            builder, signer = root_builder(ca, key.public_key(), 1000 + len(certs), rehearsal=False), key
        else:
            builder = subordinate_builder(ca, defn.model.cas[ca.issuer], certs[ca.issuer][0], key.public_key(),
                                          1000 + len(certs), rehearsal=False)
            signer = certs[ca.issuer][1]
        cert = builder.sign(signer, hashes.SHA384())
        certs[name] = (cert, key)
        (out / f"{name}.crt.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return certs


@pytest.fixture(scope="module")
def production_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("production-example")
    _production_certificates(load_definition(PRODUCTION_EXAMPLE / "pki.yml"), out)
    return out


def _production_definition(tmp_path: Path, change: Any) -> LoadedDefinition:
    data = yaml.safe_load((PRODUCTION_EXAMPLE / "pki.yml").read_text(encoding="utf-8"))
    change(data["documents"])
    path = tmp_path / "pki.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return load_definition(path)


def test_production_example_documents_render_complete(tmp_path: Path) -> None:
    """The production example (its definition and prose) gives four complete documents. The certificates
    are made here with software keys from the engine's own profiles: no HSM, no PDF, under a second."""
    defn = load_definition(PRODUCTION_EXAMPLE / "pki.yml")
    certs = _production_certificates(defn, tmp_path)
    facts, docs = render_all(defn, tmp_path, PRODUCTION_EXAMPLE / "policy")
    assert not facts.rehearsal and len(docs) == 4
    words = vague_wording(REPO / "inventory" / "production.example" / "policy")
    for d in docs:
        assert outline_problems(d.stem, d.markdown, d.lang) == []
        assert vague_problems(d.stem, d.markdown, words[d.lang]) == []
        assert "REHEARSAL" not in d.markdown and "RÉPÉTITION" not in d.markdown
        assert defn.model.documents.cp.oid in d.markdown
        fingerprint = certs["root"][0].fingerprint(hashes.SHA256()).hex(":").upper()
        assert (f"`{fingerprint}`" in d.markdown) == (d.doc == "cps")  # the CP states no deployment fact
        assert claim_problems(d.stem, d.markdown, d.lang, facts, d.doc) == []
        assert french_problems(d.stem, d.markdown, d.lang) == []
    by = {(d.doc, d.lang): d.markdown for d in docs}
    for lang in ("fr", "en"):
        assert requirement_problems("cp", by[("cp", lang)], "cps", by[("cps", lang)]) == []
        assert etsi_problems("cps", by[("cps", lang)], lang) == []
    # Issue 17: the CP states requirements in every chapter where a qualified CA has obligations, the CPS
    # never leaves a practice unstated, and the contradictions the issue lists are gone.
    cp_fr, cps_fr = by[("cp", "fr")], by[("cps", "fr")]
    # No leaf section of the policy is silent: the OCSP sections (4.9.10, 7.3) have requirements since OCSP exists.
    silent = [n for n, text in split_sections(cp_fr).items() if text.strip().endswith("\nAucune stipulation.")]
    assert silent == [] and "\nAucune stipulation.\n" not in cps_fr
    for chapter in ("4", "5", "6", "9"):
        assert len(re.findall(rf"\*\*\[PC-{chapter}\.", cp_fr)) >= 15, chapter
    assert "Autorité de Certification Racine du Mali 2026" in cps_fr and "Signature Électronique" in cps_fr
    for wrong in ("porteur de secret", "sac scellé", "la présente politique", "ou désigné par le Comité",
                  "indicatif est une exigence", "tribunaux de Bamako sont compétents"):
        assert wrong not in cps_fr, wrong
    assert "la présente politique" not in by[("cps", "fr")] and "this policy" not in by[("cps", "en")]
    fr = cps_fr
    assert "QCP-l-qscd" in fr and "QcCClegislation « ML »" in by[("cp", "fr")]
    assert "Aucune cérémonie n'a encore été tenue" in fr  # no transcript in this output directory
    # Chapter 7 comes from the engine itself: the issuance builder (QcCClegislation included), the subject
    # checks of the issuance, and the CRL encoder with the options its two callers pass.
    sections = split_sections(fr)
    assert sections["7.1.2"].count("; QcCClegislation ML |") == 2
    assert "| `eseal-legal-person` (cachet qualifié (personne morale)) | C, O, organizationIdentifier, CN |" in \
        sections["7.1.4"]
    assert "| issuingDistributionPoint | 2.5.29.28 | oui | uniquement des certificats d'AC |" in sections["7.2.2"]
    assert re.search(r"\| expiredCertsOnCRL \| 2\.5\.29\.60 \| non \| entrées conservées après expiration, depuis "
                     r"le 20\d\d-\d\d-\d\d 00:00:00 UTC", sections["7.2.2"])
    assert "la présente Politique" not in fr and "this Certificate Policy" not in by[("cps", "en")]
    # The data protection law is the definition's (documents.legal.other_texts), no longer a fragment's copy.
    assert "conformément à la Loi n°2013-015 du 21 mai 2013" in sections["9.4.1"]


def test_the_glossary_refuses_what_issue_17_corrected() -> None:
    """The spellings once tolerated in the inventories (pending) are refused now, and no fragment holds them."""
    from ceremony.policy.catalogue import GLOSSARY_FILE, glossary

    assert "pending_fr" not in GLOSSARY_FILE.read_text(encoding="utf-8")
    refused = {w for term in glossary().terms for w in term.avoid["fr"]}
    assert {"porteur de secret", "sac scellé", "Autorite de Certification", "Signature Electronique"} <= refused
    for env in ("testing", "production.example"):
        for path in sorted((REPO / "inventory" / env / "policy" / "fr").glob("*.md")):
            text = path.read_text(encoding="utf-8")
            assert [w for w in refused if re.search(r"(?<!\w)" + re.escape(w) + r"(?!\w)", text)] == [], path


def test_production_example_lists_the_values_awaiting_the_legal_service(production_out: Path) -> None:
    """The article numbers, the cap and the courts the definition marks unconfirmed are shown as such, with
    their current value, in the approval block of all four documents (never stated as settled law)."""
    defn = load_definition(PRODUCTION_EXAMPLE / "pki.yml")
    assert defn.model.documents.status == "draft"
    assert "legal.law.articles.provider_liability" in defn.model.documents.awaiting_confirmation
    _, docs = render_all(defn, production_out, PRODUCTION_EXAMPLE / "policy")
    for d in docs:
        front = split_sections(d.markdown)["front"]
        block = front.split("## Approbation" if d.lang == "fr" else "## Approval")[1]
        assert ("projet, non soumis au Comité" if d.lang == "fr" else "draft, not submitted to the Comité") in block
        assert "| `documents.legal.law.articles.provider_liability` | article 64 |" in block
        assert f"| `documents.legal.liability_cap` | {'10 000 000' if d.lang == 'fr' else '10,000,000'} XOF |" in block
        assert ("service juridique" if d.lang == "fr" else "legal service") in block


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d.update(status="approved"),
     r"documents.status is 'approved' but documents.awaiting_confirmation still lists 7 value\(s\) the legal "
     r"service has not confirmed \(documents.legal.law.articles.qualified_certificate = 'article 2'; .*"
     r"documents.legal.liability_cap = 10000000;"),
    (lambda d: d.update(status="approved", awaiting_confirmation=[], history=[
        {**d["history"][0], "decision": None}]),
     r"documents.status is 'approved' but the history line of version 1.0 \(documents.cp.version\) has no "
     r"decision"),
    (lambda d: d.update(status="approved", awaiting_confirmation=[], history=[
        {**d["history"][0], "effective": d["history"][0]["date"]}]),
     r"documents.status is 'approved' but version 1.0 takes effect on 2026-12-01 \(0 days after its date "
     r"2026-12-01\); the CP \(9.10.1, 9.12.2\) requires at least documents.legal.notice_days \(30\) days"),
], ids=["unconfirmed-values", "no-decision", "notice-period"])
def test_approved_documents_with_unconfirmed_values_fail_build_and_check(production_out: Path, tmp_path: Path,
                                                                         change: Any, expected: str) -> None:
    """docs.build and docs.check both refuse an 'approved' status while a value awaits confirmation (or the
    approving decision is missing), naming the definition and the values; nothing is written."""
    defn = _production_definition(tmp_path, change)
    out = tmp_path / "out"
    out.mkdir()
    for cert in production_out.glob("*.crt.pem"):
        (out / cert.name).write_bytes(cert.read_bytes())
    before = tree(out)
    with pytest.raises(PolicyError, match=rf"{re.escape(str(defn.path))}: {expected}"):
        check_documents(defn, out, PRODUCTION_EXAMPLE / "policy")
    with pytest.raises(PolicyError, match=expected):
        build_documents(defn, out, PRODUCTION_EXAMPLE / "policy")
    assert tree(out) == before


def test_docs_check_refuses_an_approved_production_definition_with_unconfirmed_law(production_out: Path,
                                                                                   tmp_path: Path) -> None:
    """As the operator runs it: exit 10 and one message naming the definition and what is unconfirmed."""
    defn = _production_definition(tmp_path, lambda d: d.update(status="approved"))
    result = subprocess.run([str(REPO / ".venv" / "bin" / "invoke"), "docs.check", "--definition", str(defn.path),
                             "--out", str(production_out), "--policy", str(PRODUCTION_EXAMPLE / "policy")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 10, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: {defn.path}: documents.status is 'approved' but "
                                    "documents.awaiting_confirmation still lists 7 value(s)")
    assert "documents.legal.law.articles.provider_liability = 'article 64'" in result.stderr


def test_approved_once_everything_is_confirmed(production_out: Path, tmp_path: Path) -> None:
    defn = _production_definition(tmp_path, lambda d: d.update(status="approved", awaiting_confirmation=[]))
    _, docs = render_all(defn, production_out, PRODUCTION_EXAMPLE / "policy")
    fr = next(d.markdown for d in docs if (d.doc, d.lang) == ("cps", "fr"))
    assert "| Statut | approuvé |" in fr and "`documents.awaiting_confirmation` est vide" in fr


def test_a_confirmation_path_that_names_nothing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match=r"awaiting_confirmation: 'legal.liability_capp' names no value of "
                                              r"'documents'"):
        _production_definition(tmp_path, lambda d: d.update(awaiting_confirmation=["legal.liability_capp"]))


def test_a_production_cps_that_does_not_meet_a_requirement_fails(production_out: Path, tmp_path: Path) -> None:
    """A conditional answer says plainly when the definition falls short (one Crypto Officer where the CP asks
    for two); the check refuses such a production CPS, naming the section."""
    data = yaml.safe_load((PRODUCTION_EXAMPLE / "pki.yml").read_text(encoding="utf-8"))
    data["ceremony"]["crypto_officer_quorum"] = 1
    path = tmp_path / "pki.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    facts, docs = render_all(load_definition(path), production_out, PRODUCTION_EXAMPLE / "policy")
    cps = {d.lang: d.markdown for d in docs if d.doc == "cps"}
    problems = claim_problems("cps.fr", cps["fr"], "fr", facts, "cps") + claim_problems("cps.en", cps["en"], "en",
                                                                                        facts, "cps")
    assert any(p.startswith("cps.fr: section 6.2.2: the CPS says it does not meet a requirement") for p in problems)
    assert any(p.startswith("cps.en: section 6.2.2: the CPS says it does not meet a requirement") for p in problems)


def _definition_with(tmp_path: Path, change: Any, name: str = "pki.yml") -> LoadedDefinition:
    """The production example's definition with ``change`` applied to the whole of it."""
    data = yaml.safe_load((PRODUCTION_EXAMPLE / "pki.yml").read_text(encoding="utf-8"))
    change(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return load_definition(path)


def _cps(defn: LoadedDefinition, out: Path, policy: Path = PRODUCTION_EXAMPLE / "policy",
         which: tuple[str, ...] = ("cp.fr", "cp.en", "cps.fr", "cps.en")) -> tuple[Any, dict[str, str]]:
    """The Markdown of the documents named in ``which`` (``<doc>.<lang>``), as ``render_all`` makes it, without
    the HTML (a third of the rendering time) or the documents a test does not read."""
    facts, env, docs = derive_facts(defn, out), jinja_env(), {}
    for label in which:
        doc, lang = label.split(".")
        docs[label] = render_markdown(facts, load_fragments(policy, lang), doc, lang, policy, env)
    return facts, docs


@pytest.fixture(scope="module")
def production_docs(production_out: Path) -> dict[str, str]:
    """The production example's four documents, rendered once for the module (no PDF)."""
    return _cps(load_definition(PRODUCTION_EXAMPLE / "pki.yml"), production_out)[1]


def _semantic_problems(facts: Any, docs: dict[str, str]) -> list[str]:
    problems = []
    for label, md in docs.items():
        doc, lang = label.split(".")
        problems += claim_problems(label, md, lang, facts, doc) + french_problems(label, md, lang)
        problems += outline_problems(label, md, lang)
    for lang in ("fr", "en"):
        problems += requirement_problems(f"cp.{lang}", docs[f"cp.{lang}"], f"cps.{lang}", docs[f"cps.{lang}"])
        problems += etsi_problems(f"cps.{lang}", docs[f"cps.{lang}"], lang)
    return problems


def _rollover_partitions_split_so(d: dict) -> None:
    """Every capability the production example leaves off: a successor root on the same HSM under new labels with
    both cross-certificates, 4 partition CRLs, and a Security Officer PIN split in 2."""
    d["ceremony"]["security_officer_quorum"] = 2
    d["cas"]["qualified"]["crl"]["partitions"] = 4
    root = d["cas"]["root"]
    root["successor"] = {
        "generation": 2,
        "subject": [{"C": "ML"}, {"O": "Service de Certification et de Signature Électronique"},
                    {"CN": "Autorité de Certification Racine du Mali 2036"}],
        "key": {"algorithm": "ecdsa", "curve": "P-384"},
        "validity": {"not_before": "2036-12-01T00:00:00Z", "not_after": "2056-12-01T00:00:00Z"},
        "hsm": {**root["hsm"], "key_label": "scse-root-2036"},
        "cross_certificate": {"reverse": True},
    }


def test_cps_states_what_ocsp_and_split_pins_make_true(production_docs: dict[str, str]) -> None:
    """Issue 17 item 6: the production example runs OCSP on its qualified CA and splits the Crypto Officers' PIN;
    the CPS says so where RFC 3647 asks (4.9.9, 4.9.10, 4.10, 6.3.2, 7.3, 5.2.2, 6.2.2, 6.4) with the definition's
    values, and the CP has requirements in the OCSP sections it used to leave silent."""
    docs = production_docs
    ocsp = load_definition(PRODUCTION_EXAMPLE / "pki.yml").model.cas["qualified"].ocsp
    assert ocsp is not None
    fr, en = split_sections(docs["cps.fr"]), split_sections(docs["cps.en"])
    assert f"| {ocsp.url} | 4 jours | 2 jours | SHA-1, SHA-256 |" in fr["4.9.9"]
    assert "archiveCutoff" in fr["4.9.9"] and "ne répond donc jamais « good »" in fr["4.9.9"]
    assert "never answers \"good\"" in en["4.9.9"] and "Not applicable" not in en["4.9.10"] + en["7.3.1"] + en["7.3.2"]
    assert "| `responderID` | byKey" in fr["7.3.1"] and "id-pkix-ocsp-nocheck" in fr["7.3.1"]
    assert "valide 30 jours" in fr["6.3.2"] and ocsp.url in fr["4.10.1"] and ocsp.url in fr["2.2"]
    assert f"OCSP: {ocsp.url}" in fr["7.1.2"]  # the AIA of the engine's own end-entity certificate
    for n in ("4.9.10", "7.3.1", "7.3.2"):
        assert f"**[PC-{n}-a]**" in split_sections(docs["cp.fr"])[n]
    # Split knowledge: no whole PIN handed over in sealed envelopes for a split token; 6.4.3 says how a part is
    # handed over when its holder leaves (the split-PIN change ceremony, issue 18).
    assert "fait de 2 parts, une par opérateur cryptographique" in fr["6.2.2"] and "HKDF-SHA256" in fr["6.2.2"]
    assert "nul ne le génère ni ne le remet" in fr["6.4.1"] and "au moins 8 caractères" in fr["6.4.1"]
    assert "sa part est transmise lors de cette cérémonie" in fr["6.4.3"] and "Aucune cérémonie" not in fr["6.4.3"]
    assert "their part is handed over at that ceremony" in en["6.4.3"]
    assert "| Initialisation d'un jeton d'AC" in fr["5.2.2"] and "no one holds both officer roles" in en["5.2.2"]
    assert "NSS softokn" in fr["6.2.1"] and "badkeys" in fr["6.1.1"]


def test_cps_states_what_partitions_and_a_successor_root_make_true(production_out: Path, tmp_path: Path) -> None:
    """With partitioned CRLs, a successor root and a split Security Officer PIN in the definition, the documents
    name the partition URLs, the cross-certificates and the SO parts, and pass every semantic check."""
    defn = _definition_with(tmp_path, _rollover_partitions_split_so)
    facts, docs = _cps(defn, production_out)
    assert _semantic_problems(facts, docs) == []
    fr, en = split_sections(docs["cps.fr"]), split_sections(docs["cps.en"])
    p0, p3 = "http://pki.scse.gouv.ml/crl/qualifiee-2026-p0.crl", "http://pki.scse.gouv.ml/crl/qualifiee-2026-p3.crl"
    for n in ("2.2", "4.9.7", "4.10.1"):
        assert p0 in fr[n] and p3 in fr[n], n
    assert "numéro de série mod 4" in fr["4.9.7"] and "serial mod 4" in en["7.1.2"]
    assert "issuingDistributionPoint **critique**" in fr["7.2.2"] and "own CRL number sequence" in en["7.2.2"]
    assert "Autorité de Certification Racine du Mali 2036" in fr["1.3.1"] and "dans les deux sens" in fr["1.3.1"]
    assert "sa cérémonie des clés n'a pas encore eu lieu" in fr["1.3.1"] and "on the same HSM under new labels" in \
        en["5.6"]
    assert "**Certificats croisés**" in fr["7.1.2"] and "anyPolicy (2.5.29.32.0)" in fr["7.1.2"]
    assert "aucune extKeyUsage" in fr["7.1.2"] and "[PC-5.6-b]** La racine qui succédera" in fr["5.6"]
    assert "2 parts, une par responsable de sécurité du HSM" in fr["6.2.2"]


@pytest.mark.parametrize(("change", "section", "new_text"), [
    (lambda d: d["cas"]["qualified"]["ocsp"].update(validity="3d"), "4.9.9", "3 jours"),
    (lambda d: d["cas"]["qualified"]["ocsp"].update(url="http://ocsp.example.ml/q"), "7.1.2", "http://ocsp.example.ml/q"),
    (lambda d: d["cas"]["qualified"]["ocsp"].update(signer_validity="20d"), "6.3.2", "20 jours"),
    (lambda d: d["cas"]["qualified"].pop("ocsp"), "4.9.9", "Aucun service de vérification en ligne"),
    (lambda d: d["cas"]["qualified"]["crl"].update(partitions=2), "2.2", "qualifiee-2026-p0.crl"),
    (lambda d: d["ceremony"].update(security_officer_quorum=3), "5.2.2", "3 responsables de sécurité du HSM"),
    (lambda d: d["ceremony"].update(crypto_officer_quorum=1), "6.4.1", "remis sous pli scellé"),
    (_rollover_partitions_split_so, "1.3.1", "Racine du Mali 2036"),
], ids=["ocsp-validity", "ocsp-url", "ocsp-signer-validity", "ocsp-removed", "partitions", "so-quorum",
        "co-quorum-1", "successor"])
def test_drift_names_the_section_of_each_capability_fact(production_out: Path, production_docs: dict[str, str],
                                                         tmp_path: Path, change: Any, section: str,
                                                         new_text: str) -> None:
    """Each fact a capability adds comes from the definition: changing it makes the drift check (the documents
    rendered again, compared section by section) name the section with the new value."""
    before = production_docs
    _, after = _cps(_definition_with(tmp_path, change), production_out, which=("cps.fr",))
    lines = [line for line in section_differences("cps-1.0.fr.md", before["cps.fr"], after["cps.fr"], "fr")
             if f"section {section} " in line]
    assert lines and any(new_text in line for line in lines), lines


@pytest.mark.parametrize(("fragment", "expected"), [
    ("## 4.9.11 [cps]\nAucun service OCSP n'est offert.\n",
     r"cps\.fr: section 4\.9\.11: .*says no OCSP service is offered, but the definition sets cas\.qualified\.ocsp"),
    ("## 6.4.1 [cps]\nLes codes PIN des jetons d'AC sont générés aléatoirement et remis sous pli scellé.\n",
     r"cps\.fr: section 6\.4\.1: .*describes a whole PIN .* ceremony\.crypto_officer_quorum is 2"),
    ("## 5.2.2 [cps]\nUn code PIN unique est connu de chacun des opérateurs.\n",
     r"cps\.fr: section 5\.2\.2: .*describes a whole PIN"),
], ids=["ocsp-said-absent", "pin-generated-whole", "pin-known-to-each"])
def test_check_fails_on_text_contradicting_ocsp_or_split_pins(production_out: Path, tmp_path: Path, fragment: str,
                                                              expected: str) -> None:
    policy = tmp_path / "policy"
    shutil.copytree(PRODUCTION_EXAMPLE / "policy", policy)
    (policy / "fr" / "zz-test.md").write_text(fragment, encoding="utf-8")
    facts, docs = _cps(load_definition(PRODUCTION_EXAMPLE / "pki.yml"), production_out, policy, ("cps.fr",))
    problems = claim_problems("cps.fr", docs["cps.fr"], "fr", facts, "cps")
    assert any(re.search(expected, p) for p in problems), problems


def test_cps_lists_the_successor_and_the_cross_certificates_once_issued(tmp_path: Path) -> None:
    """After the successor's key ceremony and the cross-certification, 1.3.1 gives the successor's and the
    cross-certificate's fingerprints and 7.1.2 the cross-certificate's extensions as issued (here made with software
    keys by the ceremony's own builders); a re-issued cross-certificate is then drift in 1.3.1 (serial,
    fingerprint)."""
    defn = _definition_with(tmp_path, _rollover_partitions_split_so)
    out = tmp_path / "out"
    out.mkdir()
    certs = _production_certificates(defn, out)
    root_ca, (root_cert, root_key) = defn.model.cas["root"], certs["root"]
    succ = root_ca.successor
    assert succ is not None
    key2 = ec.generate_private_key(ec.SECP384R1())
    succ_cert = root_builder(succ.as_ca(root_ca), key2.public_key(), 2000, rehearsal=False).sign(key2, hashes.SHA384())
    (out / "root.g2.crt.pem").write_bytes(succ_cert.public_bytes(serialization.Encoding.PEM))

    def cross(serial: int) -> x509.Certificate:
        cert = cross_builder(root_ca, root_cert, succ_cert, serial, succ.validity.not_before,
                             root_ca.validity.not_after, None, ["2.5.29.32.0"], None).sign(root_key, hashes.SHA384())
        (out / "root.g2.by-g1.crt.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert

    first = cross(2001)
    facts, docs = _cps(defn, out, which=("cps.fr", "cps.en"))
    fr = split_sections(docs["cps.fr"])
    assert f"`{succ_cert.fingerprint(hashes.SHA256()).hex(':').upper()}`" in fr["1.3.1"]
    assert f"`{first.fingerprint(hashes.SHA256()).hex(':').upper()}`" in fr["1.3.1"]
    assert "- `root.g2.by-g1.crt.pem` : direct (l'ancienne racine certifie la nouvelle), numéro de série `7d1`" in \
        fr["1.3.1"]
    assert "Extensions du certificat croisé direct `root.g2.by-g1.crt.pem`, tel que délivré" in fr["7.1.2"]
    assert "| certificatePolicies | 2.5.29.32 | non | 2.5.29.32.0 |" in fr["7.1.2"]
    assert "sa cérémonie des clés n'a pas encore eu lieu" not in fr["1.3.1"]
    assert claim_problems("cps.fr", docs["cps.fr"], "fr", facts, "cps") == []
    assert french_problems("cps.fr", docs["cps.fr"], "fr") == []
    cross(2002)
    _, again = _cps(defn, out, which=("cps.fr",))
    changed = {line.split(" (")[0] for line in section_differences("cps", docs["cps.fr"], again["cps.fr"], "fr")}
    assert changed == {"cps: section 1.3.1"}, changed


def test_ocsp_profile_comes_from_the_signer_certificate_and_the_encoder(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """7.3.1 describes the signer certificate the signer ceremony issued once it exists (here made by the
    ceremony's own builder, signed by the CA key), and 7.3.2 the extensions of a response the job's encoder makes:
    an encoder that stopped writing archiveCutoff is drift in 7.3.2 and a CPS that says it misses PC-7.3.2-a."""
    defn = load_definition(PRODUCTION_EXAMPLE / "pki.yml")
    out = tmp_path / "out"
    out.mkdir()
    certs = _production_certificates(defn, out)
    ca, (ca_cert, ca_key) = defn.model.cas["qualified"], certs["qualified"]
    signer_key = ec.generate_private_key(ec.SECP256R1())
    start = ca_cert.not_valid_before_utc
    signer = ocsp_signer_builder(ca, ca_cert, signer_key.public_key(), 3000, start, start + dt.timedelta(days=30),
                                 rehearsal=False).sign(ca_key, hashes.SHA384())
    (out / "qualified.ocsp.crt.pem").write_bytes(signer.public_bytes(serialization.Encoding.PEM))
    facts, docs = _cps(defn, out, which=("cps.fr",))
    fr = split_sections(docs["cps.fr"])
    assert "(tel que délivré : `qualified.ocsp.crt.pem`)" in fr["7.3.1"]
    assert "| extendedKeyUsage | 2.5.29.37 | non | id-kp-OCSPSigning |" in fr["7.3.1"]
    assert "| id-pkix-ocsp-nocheck | 1.3.6.1.5.5.7.48.1.5 | non | NULL |" in fr["7.3.1"]
    assert "archiveCutoff (1.3.6.1.5.5.7.48.1.6, non critique)" in fr["7.3.2"]
    assert claim_problems("cps.fr", docs["cps.fr"], "fr", facts, "cps") == []

    class WithoutCutoff(ResponderContext):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self._archive_cutoff = b""

    monkeypatch.setattr("ceremony.policy.facts.ResponderContext", WithoutCutoff)
    facts, after = _cps(defn, out, which=("cps.fr",))
    changed = section_differences("cps", docs["cps.fr"], after["cps.fr"], "fr")
    assert any(line.startswith("cps: section 7.3.2 ") and "aucune" in line for line in changed), changed
    assert any("section 7.3.2: the CPS says it does not meet a requirement" in p
               for p in claim_problems("cps.fr", after["cps.fr"], "fr", facts, "cps"))


#: The answers that only introduced the fragment after them ("Les mesures sont décrites ci-dessous.") until
#: issue 17's last item: each now states the practice itself, from the facts where the facts hold it.
FORMER_POINTER_ANSWERS = (
    "1.4.2-a", "2.4-a", "3.2.2-a", "3.2.3-a", "3.2.5-a", "3.4-a", "4.1.1-a", "4.2.2-a", "4.2.3-a", "4.3.2-a",
    "4.4.1-a", "4.7.1-a", "4.9.3-a", "5.1.1-a", "5.1.2-a", "5.1.3-a", "5.1.4-a", "5.1.5-a", "5.1.7-a", "5.1.8-a",
    "5.2.1-a", "5.3.1-a", "5.3.2-a", "5.3.3-a", "5.3.4-a", "5.3.6-a", "5.3.7-a", "5.4.2-a", "5.4.5-a", "5.4.8-a",
    "5.5.1-a", "5.5.2-a", "5.5.5-a", "5.6-a", "5.7.2-a", "6.1.3-a", "6.2.10-a", "6.2.7-a", "6.2.9-a", "6.4.2-a",
    "6.5.1-a", "6.6.2-a", "6.6.3-a", "6.7-a", "8.1-a", "8.3-a", "8.4-a", "8.5-a", "8.6-a", "9.1.5-a", "9.11-a",
    "9.16.2-a", "9.3.1-a", "9.4.1-a", "9.4.2-a", "9.4.4-a", "9.4.5-a", "9.4.6-a", "9.6.2-a",
)
_POINTER = re.compile(r"ci-dessous|indiqu[ée]e?s? ci-après|\b(?:described|given|listed|detailed|specified|stated|"
                      r"named|is|are) below\b|\(below\)|\bSee below\b", re.IGNORECASE)


def test_no_cps_answer_only_points_at_the_text_below(production_docs: dict[str, str]) -> None:
    """Issue 17: a CPS answer states the practice; it never just announces the fragment that follows. The 59
    answers that did now say, in both languages, something an assessor can check (at least 12 words each)."""
    from ceremony.policy.catalogue import requirements

    for req in requirements():
        for lang, text in req.answer.items():
            assert not _POINTER.search(text), (req.id, lang, text)
    assert len(FORMER_POINTER_ANSWERS) == 59
    for lang in ("fr", "en"):
        md = production_docs[f"cps.{lang}"]
        for rid in FORMER_POINTER_ANSWERS:
            m = re.search(rf"^- \*\*\[PC-{re.escape(rid)}\]\*\* (.+)$", md, flags=re.MULTILINE)
            assert m, (rid, lang)
            words = re.findall(r"\w+", m.group(1))
            assert len(words) >= 12, (rid, lang, m.group(1))


def test_cps_answers_carry_the_facts_they_name(production_docs: dict[str, str]) -> None:
    """Answers built from the facts: the registry backups of the subordinate_ca role, the clock bound of the CRL
    job, the CA keys' PKCS#11 attributes by backup mode, the scripts' versions."""
    from ceremony.common.clock import DEFAULT_MAX_ERROR_SECONDS
    from ceremony.policy.facts import registry_backup_facts

    fr, en = split_sections(production_docs["cps.fr"]), split_sections(production_docs["cps.en"])
    backup = registry_backup_facts()
    assert f"les {backup.keep} dernières y sont gardées" in fr["5.1.8"]
    assert f"the last {backup.keep} are kept there" in en["5.1.8"]
    assert f"dépasse {DEFAULT_MAX_ERROR_SECONDS:g} s" in fr["5.5.5"]
    assert "CKA_WRAP_WITH_TRUSTED" in en["6.2.7"] and "Autorité de Certification Racine du Mali 2026" in en["6.2.7"]
    assert "`root-key-generation` 2" in fr["5.3.4"]
    assert "/etc/ceremony/<ca>.pin" in en["6.4.2"] and "0600" in en["6.4.2"]


def test_registry_backup_facts_refuse_a_bad_keep(tmp_path: Path) -> None:
    from ceremony.policy.facts import registry_backup_facts

    defaults = tmp_path / "main.yml"
    defaults.write_text("subordinate_ca_registry_backup_keep: many\n", encoding="utf-8")
    with pytest.raises(PolicyError, match=r"subordinate_ca_registry_backup_keep is 'many'.*positive integer"):
        registry_backup_facts(defaults)
    defaults.write_text("subordinate_ca_registry_backup_keep: 12\nsubordinate_ca_registry_backup_on_calendar: daily\n",
                        encoding="utf-8")
    assert registry_backup_facts(defaults).keep == 12


def test_ocsp_behaviour_is_what_the_responder_and_the_job_do(production_docs: dict[str, str]) -> None:
    """4.9.9 and 4.9.10 state the responder's answers, its caching headers and the job's re-signing rule as the
    engine shows them: the responder run on a throwaway store, the job's RESIGN_REASONS, the roles' timers."""
    fr, en = split_sections(production_docs["cps.fr"]), split_sections(production_docs["cps.en"])
    assert "| numéro de série sans réponse enregistrée (jamais délivré par l'AC) | `unauthorized` |" in fr["4.9.9"]
    assert "| stored response past its nextUpdate (signing job late) | `tryLater` |" in en["4.9.9"]
    assert "| unreadable request | `malformedRequest` |" in en["4.9.9"]
    assert ("`Cache-Control: max-age=<seconds left until nextUpdate>, public, no-transform, must-revalidate`, "
            "`Last-Modified` (its thisUpdate), `Expires` (its nextUpdate) and an `ETag`") in en["4.9.9"]
    assert "An error response carries `Cache-Control: no-store`." in en["4.9.9"]
    assert "run every 5 minutes" in en["4.9.9"] and "the certificate's status in the registry differs" in en["4.9.9"]
    assert "never answers \"good\" for a certificate whose status the CA has not signed" in en["4.9.9"]
    assert "seulement une réponse d'état `unauthorized`, `tryLater` ou `malformedRequest`" in fr["4.9.10"]


def test_drift_names_4_9_9_when_the_responder_changes(production_out: Path, production_docs: dict[str, str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A responder that answers a stale response otherwise (here internalError instead of tryLater) makes the
    documents built before it wrong: the drift check names 4.9.9 and 4.9.10 with the new answer."""
    from ceremony.ocsp import encoding, responder

    monkeypatch.setattr(responder, "TRY_LATER", encoding.INTERNAL_ERROR)
    _, after = _cps(load_definition(PRODUCTION_EXAMPLE / "pki.yml"), production_out, which=("cps.en",))
    lines = section_differences("cps-1.0.en.md", production_docs["cps.en"], after["cps.en"], "en")
    assert any("section 4.9.9 " in line and "internalError" in line for line in lines), lines
    assert any("section 4.9.10 " in line for line in lines), lines


def test_a_responder_saying_good_for_an_unknown_serial_fails_the_production_check(
        production_out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store lookup that answers the first stored response for any serial (a responder bug): the observed answer
    for a serial never issued is then "good", PC-4.9.9-b's answer says the CPS does not meet it, and a production
    check fails naming section 4.9.9."""
    from ceremony.ocsp.store import ResponseStore

    original = ResponseStore.get
    monkeypatch.setattr(ResponseStore, "get", lambda self, serial, name: original(self, 1, name))
    facts, docs = _cps(load_definition(PRODUCTION_EXAMPLE / "pki.yml"), production_out, which=("cps.fr",))
    assert facts.ocsp_cas[0].ocsp_profile.behaviour.answers.unknown_serial == "good"
    assert "jamais « good »" not in split_sections(docs["cps.fr"])["4.9.9"]
    problems = claim_problems("cps.fr", docs["cps.fr"], "fr", facts, "cps")
    assert any(re.search(r"section 4\.9\.9: the CPS says it does not meet a requirement", p) for p in problems), \
        problems


def test_a_resigning_reason_the_cps_does_not_describe_stops_the_build(production_out: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from ceremony.ocsp import job

    monkeypatch.setattr(job, "RESIGN_REASONS", (*job.RESIGN_REASONS, "signer renewed"))
    with pytest.raises(PolicyError, match=r"RESIGN_REASONS\) signs again for 'signer renewed', which the CPS does "
                                          r"not describe: add its wording to RESIGN_TEXT"):
        derive_facts(load_definition(PRODUCTION_EXAMPLE / "pki.yml"), production_out)


def test_a_schedule_the_cps_cannot_state_is_refused(tmp_path: Path) -> None:
    from ceremony.policy.ocsp_behaviour import calendar_minutes

    assert calendar_minutes("*:0/5", tmp_path, "k") == 5 and calendar_minutes("hourly", tmp_path, "k") == 60
    with pytest.raises(PolicyError, match=r"ocsp_signer_on_calendar is 'Mon \*-\*-\* 00:00'; the CPS states it as a"):
        calendar_minutes("Mon *-*-* 00:00", tmp_path, "ocsp_signer_on_calendar")


@pytest.mark.parametrize(("fragment", "expected"), [
    ("## 4.9.11 [cps]\nLes réponses OCSP pré-signées sont valides 7 jours.\n",
     r"cps\.fr: section 4\.9\.11: .*states a validity of the OCSP responses that no CA of the definition gives them "
     r"\(cas\.qualified\.ocsp\.validity: 4d\)"),
], ids=["ocsp-validity-stated-wrong"])
def test_check_fails_on_a_stated_ocsp_validity_the_definition_does_not_give(production_out: Path, tmp_path: Path,
                                                                            fragment: str, expected: str) -> None:
    policy = tmp_path / "policy"
    shutil.copytree(PRODUCTION_EXAMPLE / "policy", policy)
    (policy / "fr" / "zz-test.md").write_text(fragment, encoding="utf-8")
    facts, docs = _cps(load_definition(PRODUCTION_EXAMPLE / "pki.yml"), production_out, policy, ("cps.fr",))
    problems = claim_problems("cps.fr", docs["cps.fr"], "fr", facts, "cps")
    assert any(re.search(expected, p) for p in problems), problems
    # The shipped text states the definition's validity and passes.
    facts, docs = _cps(load_definition(PRODUCTION_EXAMPLE / "pki.yml"), production_out, which=("cps.fr",))
    assert "réponses pré-signées valides 4 jours" in docs["cps.fr"]
    assert claim_problems("cps.fr", docs["cps.fr"], "fr", facts, "cps") == []


def test_etsi_annex_claims_the_ocsp_clauses_only_with_ocsp(production_out: Path, production_docs: dict[str, str],
                                                           tmp_path: Path) -> None:
    """Issue 17: the EN 319 411-1 clauses of the status services (CSS-6.3.10-03, -06, -08, -09, -09A, -10) are claimed,
    each with the CPS section that addresses it; a definition without OCSP makes none of the OCSP-only claims."""
    from ceremony.policy import catalogue

    annex = production_docs["cps.en"].split("# Annex A")[1]
    for cid, section in (("CSS-6.3.10-03", "2.4"), ("CSS-6.3.10-06", "4.9.9"), ("CSS-6.3.10-08", "4.9.9"),
                         ("CSS-6.3.10-09", "4.9.10"), ("CSS-6.3.10-09A", "4.9.10"), ("CSS-6.3.10-10", "4.10.3")):
        assert re.search(rf"\| ETSI EN 319 411-1 \| {re.escape(cid)} \| [^|]+ \| {re.escape(section)} ", annex), cid
    # Both parts number a CSS-6.3.10-08: each is claimed for its own standard.
    assert "| ETSI EN 319 411-2 | CSS-6.3.10-08 |" in annex
    ocsp_only = [c.id for c in catalogue.etsi_map().claims if c.requires == "ocsp"]
    assert ocsp_only
    facts, docs = _cps(_definition_with(tmp_path, lambda d: d["cas"]["qualified"].pop("ocsp")), production_out,
                       which=("cps.fr", "cps.en"))
    annex = docs["cps.en"].split("# Annex A")[1]
    assert not any(f"| {cid} |" in annex for cid in ocsp_only)
    assert "| CSS-6.3.10-03 |" in annex  # integrity of status information: the CRLs are signed too
    assert etsi_problems("cps.en", docs["cps.en"], "en", facts) == []


def test_check_fails_on_an_ocsp_claim_without_a_section(production_out: Path, production_docs: dict[str, str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from ceremony.policy import catalogue

    m = catalogue.etsi_map()
    claims = (*m.claims, catalogue.EtsiClaim("CSS-6.3.10-07", "EN 319 411-1", "", {"fr": "x", "en": "x"}, "ocsp"),
              catalogue.EtsiClaim("CSS-6.3.10-11", "EN 319 411-1", "4.9", {"fr": "x", "en": "x"}, "ocsp"))
    monkeypatch.setattr(catalogue, "etsi_map", lambda: catalogue.EtsiMap(m.editions, claims))
    problems = etsi_problems("cps.fr", production_docs["cps.fr"], "fr")
    assert any("CSS-6.3.10-07 (EN 319 411-1) is claimed without a CPS section" in p for p in problems), problems
    assert any("CSS-6.3.10-11 (EN 319 411-1): section 4.9 has subsections" in p for p in problems), problems


@pytest.mark.parametrize(("claims", "message"), [
    ([{"id": "CSS-6.3.10-06", "standard": "EN 319 411-1", "section": "4.9.9", "requires": "crl", "fr": "x", "en": "x"}],
     r"etsi-map\.yml: claims\[0\] \(CSS-6\.3\.10-06\): requires 'crl'; allowed: ocsp"),
    ([{"id": "CSS-6.3.10-08", "standard": "EN 319 411-1", "section": "4.9.9", "fr": "x", "en": "x"},
      {"id": "CSS-6.3.10-08", "standard": "EN 319 411-1", "section": "4.9.9", "fr": "y", "en": "y"}],
     r"etsi-map\.yml: claims\[1\] \(CSS-6\.3\.10-08\): claimed twice for EN 319 411-1"),
], ids=["unknown-capability", "same-standard-twice"])
def test_etsi_map_refuses_a_bad_claim(claims: list[dict[str, str]], message: str) -> None:
    from ceremony.policy import catalogue

    with pytest.raises(PolicyError, match=message):
        catalogue.parse_etsi_map({"editions": {}, "claims": claims})
    same_id_two_standards = [{**claims[0], "requires": ""}, {**claims[0], "standard": "EN 319 411-2", "requires": ""}]
    assert len(catalogue.parse_etsi_map({"claims": same_id_two_standards}).claims) == 2


def test_the_cps_states_how_the_issuance_enforces_no_pseudonym(production_docs: dict[str, str],
                                                               production_out: Path) -> None:
    """PC-3.1.3-a (no pseudonym) is enforced by the issuance's subject check (ceremony.x509.ee_profiles), and the CPS
    says so from the same constant: were the software to admit pseudonyms, the answer would say the CPS does not meet
    the requirement and a production check would fail."""
    fr = split_sections(production_docs["cps.fr"])
    assert "refuse, avant toute signature, une demande dont le sujet porte l'attribut pseudonym" in fr["3.1.3"]
    row = next(line for line in fr["7.1.4"].splitlines() if line.startswith("| `qes-natural-person`"))
    assert "le logiciel refuse un pseudonyme" in fr["7.1.4"] and "givenName, surname" in row and "pseudonym" not in row
    facts = derive_facts(load_definition(PRODUCTION_EXAMPLE / "pki.yml"), production_out)
    facts.pseudonym_allowed = True
    policy = PRODUCTION_EXAMPLE / "policy"
    md = render_markdown(facts, load_fragments(policy, "fr"), "cps", "fr", policy, jinja_env())
    problems = claim_problems("cps.fr", md, "fr", facts, "cps")
    assert any("section 3.1.3: the CPS says it does not meet a requirement" in p for p in problems), problems


def test_check_fails_on_a_cp_that_is_the_cps_or_carries_a_deployment_fact(production_docs: dict[str, str]) -> None:
    """RFC 3647 keeps the policy (what is required) apart from the practice (how this CA meets it): a CP whose body
    is the CPS's, or a CP carrying a certificate fingerprint, fails; the production example's pair passes."""
    cp, cps = production_docs["cp.en"], production_docs["cps.en"]
    assert requirement_problems("cp", cp, "cps", cps) == []
    same = requirement_problems("cp", cps, "cps", cps)
    assert any("the CP's body is the CPS's: RFC 3647 separates requirements from practices" in p for p in same), same
    fingerprint = ":".join(["AB"] * 32)
    heading = "### 1.3.1 Certification authorities\n"
    leaked = cp.replace(heading, f"{heading}\n`{fingerprint}`\n")
    problems = requirement_problems("cp", leaked, "cps", cps)
    assert any("cp: section 1.3.1: a certificate fingerprint is a deployment fact" in p for p in problems), problems
