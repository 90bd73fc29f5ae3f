"""CP/CPS end to end: built from real ceremony outputs (SoftHSM), checked, and caught drifting.

The CA ceremonies of the rehearsal run once per module on throwaway tokens; ``invoke docs.build`` and
``invoke docs.check`` run as the operator runs them (subprocesses). Drift is provoked the two ways
the issue names: a re-issued certificate and a changed CRL interval.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import REPO, tree
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ceremony.common.pdf import pdf_text
from ceremony.definition.model import load_definition
from ceremony.policy.check import outline_problems
from ceremony.policy.facts import PolicyError
from ceremony.policy.outline import BY_NUMBER, OUTLINE
from ceremony.policy.render import build_documents

# One worker for the module: its fixtures (a rehearsal's CA ceremonies, the documents built) are module-scoped, and
# split across the two xdist workers each built them once more (about 50 s each).
pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("policy")]
INVOKE = str(REPO / ".venv" / "bin" / "invoke")
TESTING_POLICY = REPO / "inventory" / "testing" / "policy"
DOCS = [f"{doc}-1.0.{lang}.{ext}" for doc in ("cp", "cps") for lang in ("fr", "en") for ext in ("md", "html", "pdf")]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("CEREMONY_", "SOFTHSM2_CONF"))}


def invoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INVOKE, *args], cwd=REPO, capture_output=True, text=True, env=_clean_env(), timeout=600)


@pytest.fixture(scope="module")
def ceremonies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root and subordinate ceremonies of a rehearsal, on fresh SoftHSM tokens, in a child process."""
    out = tmp_path_factory.mktemp("policy") / "ceremonies"
    code = ("import sys; from ceremony.rehearsal.context import prepare; "
            "from ceremony.rehearsal.ca import ca_ceremonies; ca_ceremonies(prepare(sys.argv[1]))")
    result = subprocess.run([sys.executable, "-c", code, str(out)], cwd=REPO, capture_output=True, text=True,
                            env=_clean_env(), timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def built(ceremonies: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("policy-built") / "out"
    shutil.copytree(ceremonies, out)
    start = time.perf_counter()
    result = invoke("docs.build", "--env", "testing", "--out", str(out))
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (out.parent / "build-stdout.txt").write_text(f"{result.stdout}\ntotal {elapsed:.1f} s\n")
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_build_writes_every_document_and_lists_it_in_the_manifest(built: Path) -> None:
    assert sorted(p.name for p in (built / "docs").iterdir()) == sorted(DOCS)
    manifest = json.loads((built / "manifest.json").read_text())
    entries = {a["path"]: a for a in manifest["artifacts"] if a["kind"] in ("cp", "cps")}
    assert sorted(entries) == sorted(f"docs/{name}" for name in DOCS)
    for path, entry in entries.items():
        doc, _, lang, ext = re.match(r"docs/(cps?)-(1\.0)\.(fr|en)\.(md|html|pdf)$", path).groups()
        assert (entry["kind"], entry["lang"], entry["format"], entry["version"]) == (doc, lang, ext, "1.0")
        assert entry["sha256"] == hashlib.sha256((built / path).read_bytes()).hexdigest()
        if ext != "md":
            md = built / f"docs/{doc}-1.0.{lang}.md"
            assert entry["source_sha256"] == hashlib.sha256(md.read_bytes()).hexdigest()
    stdout = (built.parent / "build-stdout.txt").read_text()
    assert stdout.count("pdf ") == 4, stdout


def test_docs_check_passes_on_the_built_documents(built: Path) -> None:
    result = invoke("docs.check", "--env", "testing", "--out", str(built))
    assert result.returncode == 0, result.stderr
    assert "CP/CPS check passed: 12 files" in result.stdout


def test_building_again_changes_nothing(built: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in (built / "docs").iterdir()}
    result = invoke("docs.build", "--env", "testing", "--out", str(built))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("unchanged") == 12 and "written" not in result.stdout
    assert {p: p.stat().st_mtime_ns for p in (built / "docs").iterdir()} == before


@pytest.mark.parametrize("name", [n for n in DOCS if n.endswith(".md")])
def test_markdown_headings_follow_rfc3647(built: Path, name: str) -> None:
    lang = name.split(".")[-2]
    md = (built / "docs" / name).read_text(encoding="utf-8")
    assert outline_problems(name, md, lang) == []
    stipulation = "Aucune stipulation." if lang == "fr" else "No stipulation."
    # The CP would say "no stipulation" where the policy imposes nothing: since the OCSP sections have requirements,
    # it imposes something everywhere; the CPS states a practice everywhere, or "Sans objet." / "Not applicable."
    # where the practice does not exist.
    assert stipulation not in md
    html = (built / "docs" / name.replace(".md", ".html")).read_text(encoding="utf-8")
    for s in OUTLINE:
        assert f'id="{s.anchor}"' in html and f'href="#{s.anchor}"' in html, s.number


@pytest.mark.parametrize("name", [n for n in DOCS if n.endswith(".pdf")])
def test_pdf_text_layer_has_every_heading_in_order_with_diacritics(built: Path, name: str) -> None:
    lang = name.split(".")[-2]
    text = " ".join(pdf_text(built / "docs" / name).split())
    body = text[text.index("9.17 " + BY_NUMBER["9.17"].title(lang)) + 10:]  # after the table of contents
    pos = 0
    for s in OUTLINE:
        heading = f"{s.number}{'.' if s.level == 1 else ''} {s.title(lang)}"
        found = body.find(heading, pos)
        assert found >= 0, f"{name}: heading {heading!r} missing from the text layer after position {pos}"
        pos = found + len(heading)
    if lang == "fr":
        for phrase in ("Déclaration des pratiques de certification" if name.startswith("cps") else
                       "Politique de certification", "Fréquence d'établissement des LCR (le cas échéant)",
                       "MESURES DE SÉCURITÉ TECHNIQUES", "Comité de Certification et de Signature Électronique",
                       "Loi n°2016-012 du 6 mai 2016", "Décret n°2019-0037/P-RM", "Loi n°2013-015",
                       "Sans objet", "RÉPÉTITION"):
            assert phrase in text, phrase


def test_values_come_from_the_certificates_and_the_definition(built: Path) -> None:
    md = (built / "docs" / "cps-1.0.fr.md").read_text(encoding="utf-8")
    for ca in ("root", "qualified"):
        fp = subprocess.run(["openssl", "x509", "-in", str(built / f"{ca}.crt.pem"), "-noout", "-fingerprint",
                             "-sha256"], capture_output=True, text=True, check=True).stdout.strip().split("=")[1]
        assert f"`{fp}`" in md
    section = md[md.index("### 4.9.7"):md.index("### 4.9.8")]
    assert "| 24 heures | 7 jours | 5 minutes |" in section and "| 91 jours | 120 jours |" in section
    assert "| 6 jours |" in md[md.index("### 4.9.8"):md.index("### 4.9.9")]  # 7d lifetime - 24h interval
    assert "2 opérateurs cryptographiques" in md[md.index("### 5.2.2"):md.index("### 5.2.3")]
    assert "2 des 3 dépositaires" in md[md.index("### 5.2.2"):md.index("### 5.2.3")]
    assert "http://pki.test.scse.ml/crl/qualified.crl" in md[md.index("## 2.2"):md.index("## 2.3")]
    en = (built / "docs" / "cp-1.0.en.md").read_text(encoding="utf-8")
    assert "| Object identifier (OID) | 2.16.466.1.99.1.1.1 |" in en
    assert "| 24 hours | 7 days | 5 minutes |" in (built / "docs" / "cps-1.0.en.md").read_text(encoding="utf-8")
    # The CP states requirements, not the deployment: no fingerprint, no serial, no script hash.
    assert fp not in en and "SHA-256 `" not in en


def _reissue(path: Path) -> str:
    """Replace a CA certificate by one with the same names and a new key: what a re-issuance looks like."""
    old = x509.load_pem_x509_certificate(path.read_bytes())
    key = ec.generate_private_key(ec.SECP384R1())
    builder = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(old.issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(old.not_valid_before_utc)
               .not_valid_after(old.not_valid_after_utc))
    for ext in old.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    cert = builder.sign(key, hashes.SHA384())
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def test_check_fails_after_a_certificate_is_reissued(built: Path, tmp_path: Path) -> None:
    out = _copy(built, tmp_path / "out")
    fingerprint = _reissue(out / "qualified.crt.pem")
    result = invoke("docs.check", "--env", "testing", "--out", str(out))
    assert result.returncode == 10, result.stdout + result.stderr
    assert "section 1.3.1 (Autorités de certification)" in result.stderr
    assert fingerprint in result.stderr
    assert "cps-1.0.en.md: section 1.3.1 (Certification authorities)" in result.stderr
    # docs.build refuses to overwrite: the documents stay as they were.
    before = {p: p.read_bytes() for p in (out / "docs").iterdir()}
    result = invoke("docs.build", "--env", "testing", "--out", str(out))
    assert result.returncode == 10 and "never overwritten" in result.stderr
    assert {p: p.read_bytes() for p in (out / "docs").iterdir()} == before


def _changed_definition(built: Path, tmp_path: Path, change: Callable[[dict], None]) -> Path:
    data = yaml.safe_load((built / "pki.yml").read_text(encoding="utf-8"))
    change(data)
    definition = tmp_path / "pki.yml"
    definition.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return definition


def test_check_fails_after_the_crl_interval_changes(built: Path, tmp_path: Path) -> None:
    definition = _changed_definition(built, tmp_path,
                                     lambda d: d["cas"]["qualified"]["crl"].update(interval="12h"))
    result = invoke("docs.check", "--definition", str(definition), "--out", str(built))
    assert result.returncode == 10, result.stdout + result.stderr
    assert re.search(r"cps-1\.0\.fr\.md: section 4\.9\.7 \(Fréquence d'établissement des LCR \(le cas échéant\)\): "
                     r"the document says '.*24 heures.*' but .* now give '.*12 heures.*'", result.stderr)
    assert "cps-1.0.en.md: section 4.9.7" in result.stderr and "12 hours" in result.stderr
    assert "section 4.9.8" in result.stderr and "section 2.3" in result.stderr


@pytest.mark.parametrize(("change", "section", "new_text"), [
    (lambda d: d["cas"]["qualified"]["publication"].update(crl_url="http://crl.example.ml/q.crl"), "2.2",
     "http://crl.example.ml/q.crl"),
    (lambda d: d["documents"].update(repository_url="http://depot.example.ml/"), "2.1", "http://depot.example.ml/"),
    (lambda d: d["ceremony"].update(crypto_officer_quorum=3), "5.2.2", "3 opérateurs cryptographiques"),
    (lambda d: d["cas"]["root"]["backup"].update(threshold=3), "6.2.2", "3 de ses 3 dépositaires"),
    (lambda d: d["cas"]["qualified"]["profiles"]["qes-natural-person"].update(qc_pds_url="https://pds.example.ml/p.pdf"),
     "7.1.8", "https://pds.example.ml/p.pdf"),
], ids=["crl-url-moved", "repository-moved", "quorum", "backup-threshold", "profile-pds-moved"])
def test_check_names_the_section_of_each_changed_value(built: Path, tmp_path: Path, change: Callable[[dict], None],
                                                        section: str, new_text: str) -> None:
    definition = _changed_definition(built, tmp_path, change)
    result = invoke("docs.check", "--definition", str(definition), "--out", str(built))
    assert result.returncode == 10, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if f"cps-1.0.fr.md: section {section} " in line]
    assert lines and any(new_text in line for line in lines), result.stderr


def test_production_without_certificates_fails_naming_the_certificate(tmp_path: Path) -> None:
    out = tmp_path / "production"
    out.mkdir()
    result = invoke("docs.build", "--definition", "inventory/production.example/pki.yml", "--out", str(out))
    assert result.returncode == 10
    assert result.stderr.startswith(f"error: {out}/root.crt.pem: the certificate of CA 'root' is missing")
    assert list(out.iterdir()) == []


# ------------------------------------------------------------------------------------- bad prose fragments

@pytest.fixture
def policy_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(TESTING_POLICY, tmp_path / "policy"))


def _build_fails(ceremonies: Path, tmp_path: Path, policy: Path, pattern: str) -> None:
    out = _copy(ceremonies, tmp_path / "out")
    before = tree(out)
    manifest = (out / "manifest.json").read_bytes()
    with pytest.raises(PolicyError, match=pattern):
        build_documents(load_definition(out / "pki.yml"), out, policy)
    assert tree(out) == before and (out / "manifest.json").read_bytes() == manifest
    assert not (out / "docs").exists()


def test_missing_fragment_names_the_section_and_directory(ceremonies: Path, tmp_path: Path,
                                                          policy_copy: Path) -> None:
    # 4.8.3: no requirement of the CP answers it and no template generates it; the CPS needs its fragment.
    path = policy_copy / "en" / "4-life-cycle.md"
    text = path.read_text(encoding="utf-8")
    path.write_text(re.sub(r"## 4\.8\.3\n[^#]*", "", text), encoding="utf-8")
    _build_fails(ceremonies, tmp_path, policy_copy,
                 rf"{re.escape(str(policy_copy / 'en'))}: section 4.8.3 \(Processing certificate modification "
                 r"requests\): no prose fragment for the CPS")


def test_fragment_for_a_section_rfc3647_lacks(ceremonies: Path, tmp_path: Path, policy_copy: Path) -> None:
    path = policy_copy / "fr" / "4-cycle-de-vie.md"
    path.write_text(path.read_text(encoding="utf-8") + "\n## 4.13\nTexte.\n", encoding="utf-8")
    lines = path.read_text(encoding="utf-8").count("\n")
    _build_fails(ceremonies, tmp_path, policy_copy,
                 rf"{re.escape(str(path))}:{lines - 1}: section 4.13 does not exist in the RFC 3647 outline")


def test_value_a_fragment_cannot_render(ceremonies: Path, tmp_path: Path, policy_copy: Path) -> None:
    path = policy_copy / "fr" / "9-dispositions-juridiques.md"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("## 9.11\n", "## 9.11\nTélécopie : {{ f.organisation.fax }}.\n"), encoding="utf-8")
    _build_fails(ceremonies, tmp_path, policy_copy,
                 rf"{re.escape(str(path))}:\d+: section 9.11 \({re.escape(BY_NUMBER['9.11'].title('fr'))}\): "
                 r"cannot render: .*'fax'")


@pytest.mark.parametrize(("addition", "pattern"), [
    ("## 9.16.5\nEncore.\n", r"section 9.16.5: a second fragment for this section \(the first is .*:\d+\)"),
    ("## 9.16.5 [cp]\n\n", r"section 9.16.5: the fragment is empty"),
    ("## 9.17\n### Sous-titre\n", r"headings inside a fragment are not allowed"),
])
def test_malformed_fragments(ceremonies: Path, tmp_path: Path, policy_copy: Path, addition: str,
                             pattern: str) -> None:
    path = policy_copy / "fr" / "9-dispositions-juridiques.md"
    path.write_text(path.read_text(encoding="utf-8") + "\n" + addition, encoding="utf-8")
    _build_fails(ceremonies, tmp_path, policy_copy, pattern)


def test_documents_record_a_rehearsal_and_its_date(built: Path) -> None:
    md = (built / "docs" / "cp-1.0.en.md").read_text(encoding="utf-8")
    assert md.startswith("# Certificate Policy of the testing infrastructure\n\n**REHEARSAL")
    assert "| 2026-11-24 | 1.0 | First version, generated for the rehearsal. |" in md
    assert dt.date(2026, 11, 24).isoformat() in md


def test_definition_field_left_empty_is_named_with_the_section(ceremonies: Path, tmp_path: Path) -> None:
    """The 9.11 fragment quotes the organisation's e-mail: without one, the build names section and file."""
    out = _copy(ceremonies, tmp_path / "out")
    data = yaml.safe_load((out / "pki.yml").read_text(encoding="utf-8"))
    del data["organisation"]["email"]
    definition = tmp_path / "pki.yml"
    definition.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    before = tree(out)
    with pytest.raises(PolicyError, match=r"policy/fr/9-dispositions-juridiques.md:\d+: section 9.11 .*: cannot "
                                          r"render: an expression has no value"):
        build_documents(load_definition(definition), out)
    assert tree(out) == before


def test_pdf_rendering_time_is_measured_and_bounded(built: Path) -> None:
    """docs.build reports each PDF's rendering time; a layout regression (e.g. CSS leaders) shows here."""
    stdout = (built.parent / "build-stdout.txt").read_text()
    times = {m.group(1): float(m.group(2)) for m in re.finditer(r"^pdf +(\S+\.pdf): ([0-9.]+) s$", stdout, re.M)}
    assert sorted(times) == sorted(n for n in DOCS if n.endswith(".pdf"))
    assert all(t < 60 for t in times.values()), times


def test_generated_template_that_cannot_render_names_section_and_template(ceremonies: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import ceremony.policy.render as render

    templates = Path(shutil.copytree(render.TEMPLATES, tmp_path / "templates"))
    broken = templates / "en" / "4.9.7.md.j2"
    broken.write_text(broken.read_text(encoding="utf-8") + "\n{{ f.root.crl.interval_in_weeks }}\n", encoding="utf-8")
    monkeypatch.setattr(render, "TEMPLATES", templates)
    _build_fails(ceremonies, tmp_path, TESTING_POLICY,
                 rf"{re.escape(str(broken))}: section 4.9.7 \(CRL issuance frequency \(if applicable\)\): cannot "
                 r"render: .*'interval_in_weeks'")


def test_document_version_without_history_line_is_refused(ceremonies: Path, tmp_path: Path) -> None:
    out = _copy(ceremonies, tmp_path / "out")
    definition = _changed_definition(ceremonies, tmp_path, lambda d: d["documents"]["cps"].update(version="1.1"))
    before = tree(out)
    with pytest.raises(PolicyError, match=r"pki.yml: documents.history: no entry for version 1.1 "
                                          r"\(documents.cps.version\)"):
        build_documents(load_definition(definition), out)
    assert tree(out) == before


# ------------------------------------------------------------------ CP/CPS split, ETSI map, practice, French
# These call the functions docs.check runs on documents rendered in memory (render_all: no PDF), so that
# each case costs well under a second; one case goes through check_documents on the built files.

from ceremony.policy import catalogue  # noqa: E402
from ceremony.policy.check import (  # noqa: E402
    check_documents,
    claim_problems,
    etsi_problems,
    french_problems,
    requirement_problems,
)
from ceremony.policy.render import render_all  # noqa: E402


def _render(ceremonies: Path, policy: Path = TESTING_POLICY) -> tuple[object, dict[tuple[str, str], str]]:
    facts, docs = render_all(load_definition(ceremonies / "pki.yml"), ceremonies, policy)
    return facts, {(d.doc, d.lang): d.markdown for d in docs}


@pytest.fixture(scope="module")
def rendered(ceremonies: Path) -> tuple[object, dict[tuple[str, str], str]]:
    """The four documents of the testing inventory, rendered once for the module (no PDF)."""
    return _render(ceremonies)


def _all_problems(facts: object, docs: dict[tuple[str, str], str]) -> list[str]:
    problems = []
    for (doc, lang), md in docs.items():
        problems += claim_problems(f"{doc}.{lang}", md, lang, facts, doc) + french_problems(f"{doc}.{lang}", md, lang)
    for lang in ("fr", "en"):
        problems += requirement_problems(f"cp.{lang}", docs[("cp", lang)], f"cps.{lang}", docs[("cps", lang)])
        problems += etsi_problems(f"cps.{lang}", docs[("cps", lang)], lang)
    return problems


def test_cp_and_cps_differ_as_rfc3647_intends_and_every_requirement_is_answered(built: Path) -> None:
    for lang in ("fr", "en"):
        cp = (built / "docs" / f"cp-1.0.{lang}.md").read_text(encoding="utf-8")
        cps = (built / "docs" / f"cps-1.0.{lang}.md").read_text(encoding="utf-8")
        ids = catalogue.REQUIREMENT_TAG.findall(cp)
        assert len(ids) == len(catalogue.requirements()) and set(ids) <= set(catalogue.REQUIREMENT_TAG.findall(cps))
        assert requirement_problems("cp", cp, "cps", cps) == []
    cps_fr = (built / "docs" / "cps-1.0.fr.md").read_text(encoding="utf-8")
    assert "# Annexe A — Correspondance avec les exigences ETSI" in cps_fr and "| REV-6.2.4-03A |" in cps_fr


def test_cps_lists_the_final_head_of_each_ceremony_held(built: Path) -> None:
    cps = (built / "docs" / "cps-1.0.fr.md").read_text(encoding="utf-8")
    transcripts = sorted((built / "transcripts").glob("*.jsonl"))
    assert transcripts
    for path in transcripts:
        last = json.loads(path.read_text(encoding="utf-8").splitlines()[-1])
        assert f"`transcripts/{path.name}`" in cps and f"`{last['head']}`" in cps


def test_check_fails_on_a_cp_requirement_without_a_cps_answer(ceremonies: Path, built: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    reqs = catalogue.requirements()
    unanswered = tuple(dataclasses.replace(r, answer={}) if r.id == "PC-4.9.5-a" else r for r in reqs)
    monkeypatch.setattr(catalogue, "requirements", lambda: unanswered)
    problems = _all_problems(*_render(ceremonies))
    assert any("section 4.9.5: requirement PC-4.9.5-a of the CP" in p and "has no answer" in p for p in problems)
    monkeypatch.undo()
    # docs.check on the built files: an answer removed from the published CPS is named too.
    out = _copy(built, tmp_path / "out")
    path = out / "docs" / "cps-1.0.fr.md"
    path.write_text(re.sub(r"^- \*\*\[PC-6\.2\.8-a\]\*\*.*$", "", path.read_text(encoding="utf-8"), flags=re.M),
                    encoding="utf-8")
    with pytest.raises(PolicyError, match=r"cps-1.0.fr.md: section 6.2.8: requirement PC-6.2.8-a of the CP"):
        check_documents(load_definition(out / "pki.yml"), out)


def test_rendered_testing_documents_pass_every_semantic_check(rendered: tuple[object, dict]) -> None:
    assert _all_problems(*rendered) == []


def test_check_fails_on_an_etsi_claim_without_a_section(rendered: tuple[object, dict],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    m = catalogue.etsi_map()
    claims = (*m.claims, catalogue.EtsiClaim("REQ-7.13-01", "EN 319 401", "", {"fr": "x", "en": "x"}),
              catalogue.EtsiClaim("REQ-7.14-01", "EN 319 401", "4.6.2", {"fr": "x", "en": "x"}))
    monkeypatch.setattr(catalogue, "etsi_map", lambda: catalogue.EtsiMap(m.editions, claims))
    problems = _all_problems(*rendered)
    assert any("REQ-7.13-01 (EN 319 401) is claimed without a CPS section" in p for p in problems)
    assert any("section 4.6.2: empty, yet the ETSI map claims REQ-7.14-01" in p for p in problems)


@pytest.mark.parametrize(("text", "expected"), [
    ("## 4.9.8 [cps]\nLa latence maximale de révocation est de 6 jours.\n",
     r"section 4\.9\.8: 'latence maximale de révocation est de 6 jours' exceeds the maximum revocation delay"),
    ("## 4.10.1 [cps]\nUn certificat révoqué reste dans la LCR jusqu'à son expiration.\n",
     r"section 4\.10\.1: .* says revoked entries leave the CRL at expiry"),
    ("## 6.2.8 [cps]\nLa signature des LCR de l'AC en ligne requiert 2 opérateurs cryptographiques.\n",
     r"section 6\.2\.8: .* contradicts the online CA's activation"),
    ("## 6.2.8 [cps]\nLe code PIN n'est jamais écrit dans un fichier.\n",
     r"section 6\.2\.8: .* contradicts the online CA's activation"),
    ("## 5.2.4 [cps]\n| Rôle | Tâche |\n| --- | --- |\n| crypto-officer | activation |\n",
     r"section 5\.2\.4: French table cell 'crypto-officer' holds English value\(s\) crypto-officer"),
], ids=["revocation-latency", "retention-after-expiry", "activation-quorum", "activation-pin-file",
        "english-in-french-table"])
def test_check_fails_on_a_practice_contradicting_the_definition(ceremonies: Path, policy_copy: Path, text: str,
                                                                 expected: str) -> None:
    (policy_copy / "fr" / "zz-test.md").write_text(text, encoding="utf-8")
    problems = _all_problems(*_render(ceremonies, policy_copy))
    assert any(re.search(expected, p) for p in problems), problems


def test_check_fails_when_the_issuance_code_changes_a_name_form(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chapter 7's subscriber name forms are read from the issuance checks themselves: if the code admitted
    another attribute, docs.check would name the sections that state the old forms (7.1.4, 3.2.4)."""
    import ceremony.policy.facts as facts

    original = facts.subject_attributes
    monkeypatch.setattr(facts, "subject_attributes",
                        lambda kind: (original(kind)[0], [*original(kind)[1], "emailAddress"]))
    with pytest.raises(PolicyError) as failure:
        check_documents(load_definition(built / "pki.yml"), built)
    message = str(failure.value)
    assert "cps-1.0.fr.md: section 7.1.4 (Formes de noms)" in message and "emailAddress" in message
    assert "cps-1.0.en.md: section 3.2.4" in message


def test_docs_check_fails_when_the_ocsp_responder_or_job_changes(built: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The built documents state what the responder answers and when the job signs again; a responder that answered
    a stale response otherwise, or a job with one more reason to sign, makes docs.check fail naming 4.9.9."""
    from ceremony.ocsp import encoding, job, responder

    out = _copy(built, tmp_path / "out")
    with monkeypatch.context() as m:
        m.setattr(responder, "TRY_LATER", encoding.INTERNAL_ERROR)
        with pytest.raises(PolicyError, match=r"cps-1\.0\.en\.md: section 4\.9\.9 \(.*\): the document says .*tryLater"
                                              r".* but the definition, the certificates and the fragments now give "
                                              r".*internalError"):
            check_documents(load_definition(out / "pki.yml"), out)
    with monkeypatch.context() as m:
        m.setattr(job, "RESIGN_REASONS", (*job.RESIGN_REASONS, "signer renewed"))
        with pytest.raises(PolicyError, match=r"signs again for 'signer renewed', which the CPS does not describe"):
            check_documents(load_definition(out / "pki.yml"), out)
    check_documents(load_definition(out / "pki.yml"), out)  # the code as it is: the documents are true
