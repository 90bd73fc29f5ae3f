"""End-entity issuance through a real subordinate CA on SoftHSM, checked with openssl and pkilint (ETSI).

One root + subordinate hierarchy is built per module (the CA ceremonies are tested elsewhere); each
test issues into its own directory and registry. Every refusal leaves no file, no registry row.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import tree
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ceremony.ca.registry import Registry
from ceremony.ceremonies.issuance import issue_certificate
from ceremony.ceremonies.root_key import root_ceremony
from ceremony.ceremonies.sign_subordinate import sign_subordinate_ceremony
from ceremony.ceremonies.subordinate_key import subordinate_key_ceremony
from ceremony.common.errors import DefinitionError, HsmError, OutputError, RegistryError, RequestError
from ceremony.common.manifest import Manifest
from ceremony.crl import job as crl_job
from ceremony.definition.model import LoadedDefinition, load_definition
from ceremony.transcript.recorder import ConsoleRecorder
from ceremony.x509.ee_profiles import (
    QC_STATEMENTS_OID,
    check_subject,
    der_oid,
    etsi_certificate_type,
    legislation_for,
    qc_statements_der,
    subject_attributes,
)
from ceremony.x509.lint import lint_certificate

pytestmark = pytest.mark.hsm


def rec() -> ConsoleRecorder:
    return ConsoleRecorder(rehearsal=True)


def natural_person(cn: str = "Awa Keita") -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "ML"),
        x509.NameAttribute(NameOID.GIVEN_NAME, "Awa"),
        x509.NameAttribute(NameOID.SURNAME, "Keita"),
        x509.NameAttribute(NameOID.SERIAL_NUMBER, "IDCML-0123456789"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


def legal_person() -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "ML"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Direction Generale des Impots"),
        x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, "NTRML-1234567"),
        x509.NameAttribute(NameOID.COMMON_NAME, "DGI cachet electronique"),
    ])


def write_csr(path: Path, subject: x509.Name, key: Any = None) -> Path:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def hierarchy(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedDefinition, Path]:
    """A rehearsal root and qualified subordinate on fresh tokens (module-scoped: built once)."""
    import copy
    import secrets

    from conftest import SOFTHSM_CONF, base_definition_data, write_definition

    from ceremony.hsm import softhsm

    base = tmp_path_factory.mktemp("hierarchy")
    data = copy.deepcopy(base_definition_data())
    data["cas"]["root"]["backup"] = {"mode": "none"}
    env = {}
    for name, ca in data["cas"].items():
        suffix = secrets.token_hex(4)
        label = f"t-iss-{name}-{suffix}"[:32]
        pin_env = f"TEST_ISS_PIN_{name.upper()}_{suffix.upper()}"
        env[pin_env] = softhsm.random_pin()
        softhsm.init_token(SOFTHSM_CONF, label, env[pin_env], softhsm.random_pin())
        ca["hsm"].update(module=softhsm.softhsm_module(), token={"label": label}, pin_env=pin_env, so_pin_env=None)
        ca["hsm"].pop("so_pin_env")
    import os
    os.environ.update(env)
    pki = write_definition(base / "pki.yml", data)
    defn = load_definition(pki)
    cas = base / "cas"
    root_ceremony(defn, cas, rec(), rehearsal=True, interactive=False)
    subordinate_key_ceremony(defn, "qualified", cas, rec(), rehearsal=True, interactive=False)
    sign_subordinate_ceremony(defn, "qualified", cas / "qualified.csr.pem", cas, rec(), rehearsal=True,
                              interactive=False)
    return defn, cas


Issue = Callable[..., Any]


@pytest.fixture
def issue(hierarchy: tuple[LoadedDefinition, Path], tmp_path: Path) -> Issue:
    defn, cas = hierarchy

    def _issue(profile: str, csr: Path, *, out: Path | None = None, registry: Path | None = None,
               **kw: Any) -> Any:
        with Registry.open(registry or tmp_path / "registry.sqlite", create=True) as reg:
            return issue_certificate(defn, kw.pop("ca", "qualified"), profile, csr, out or tmp_path / "out", reg,
                                     rec(), issuer_cert_path=kw.pop("issuer", cas / "qualified.crt.pem"),
                                     rehearsal=kw.pop("rehearsal", True), interactive=False, **kw)

    return _issue


def openssl_verify(cas: Path, cert: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", "verify", "-x509_strict", "-purpose", "any", "-CAfile", str(cas / "root.crt.pem"),
                           "-untrusted", str(cas / "qualified.crt.pem"), str(cert)], capture_output=True, text=True)


def pkilint_cli(cert: Path) -> str:
    """pkilint's own commands (ETSI with type detection, and RFC 5280): no finding at WARNING or above.
    Returns the ETSI certificate type pkilint detected."""
    from conftest import REPO

    etsi = subprocess.run([str(REPO / ".venv/bin/lint_etsi_cert"), "lint", "-d", "-o", "-s", "WARNING", str(cert)],
                          capture_output=True, text=True)
    assert etsi.stdout.strip() == "", etsi.stdout
    pkix = subprocess.run([str(REPO / ".venv/bin/lint_pkix_cert"), "lint", "-s", "WARNING", str(cert)],
                          capture_output=True, text=True)
    assert pkix.returncode == 0 and pkix.stdout.strip() == "", pkix.stdout
    return etsi.stderr.strip()


def der_of(path: Path) -> bytes:
    return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(serialization.Encoding.DER)


def test_qualified_signature_certificate(hierarchy: tuple[LoadedDefinition, Path], issue: Issue,
                                         tmp_path: Path) -> None:
    _, cas = hierarchy
    out = tmp_path / "out"
    manifest = Manifest(out, rehearsal=True)
    issued = issue("qes-natural-person", write_csr(tmp_path / "awa.csr", natural_person()), manifest=manifest)
    assert issued.pem_path == out / f"qes-natural-person-{issued.serial:x}.crt.pem"
    assert issued.der_path.read_bytes() == der_of(issued.pem_path)
    verify = openssl_verify(cas, issued.pem_path)
    assert verify.returncode == 0 and verify.stdout.strip().endswith(": OK"), verify.stdout + verify.stderr

    cert = x509.load_der_x509_certificate(issued.der_path.read_bytes())
    sub = x509.load_pem_x509_certificate((cas / "qualified.crt.pem").read_bytes())
    assert cert.issuer == sub.subject
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Awa Keita (REHEARSAL)"
    assert 0 < cert.serial_number < 2 ** 159 and cert.serial_number.bit_length() > 64
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.content_commitment and not ku.value.digital_signature
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    policies = [p.policy_identifier.dotted_string for p in cert.extensions.get_extension_for_class(
        x509.CertificatePolicies).value]
    assert policies == ["2.16.466.1.99.1.1.1", "0.4.0.194112.1.2"]
    crldp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert crldp[0].full_name[0].value == "http://pki.test.scse.ml/crl/qualified.crl"
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    # The issuing CA has an OCSP service (cas.qualified.ocsp): id-ad-ocsp first, then caIssuers.
    assert [(a.access_method, a.access_location.value) for a in aia] == [
        (x509.oid.AuthorityInformationAccessOID.OCSP, "http://ocsp.test.scse.ml/qualified"),
        (x509.oid.AuthorityInformationAccessOID.CA_ISSUERS, "http://pki.test.scse.ml/certs/qualified.cer")]
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == sub.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    qc = cert.extensions.get_extension_for_oid(QC_STATEMENTS_OID).value.value
    assert der_oid("0.4.0.1862.1.6.1") in qc and der_oid("0.4.0.1862.1.4") in qc  # esign, QcSSCD
    assert b"https://pki.test.scse.ml/pds/pds_en.pdf" in qc
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=1095)

    # pkilint: nothing at ERROR (or WARNING) under RFC 5280 and ETSI, as the profile's type and as detected.
    for etsi_type in (etsi_certificate_type("qualified-signature", ("ML",)), None):
        findings = lint_certificate(issued.der_path.read_bytes(), etsi=True, etsi_type=etsi_type)
        assert [f for f in findings if f.blocking] == [], findings
    assert pkilint_cli(issued.pem_path) == "QCP-N-QSCD-NON-EIDAS-FINAL-CERTIFICATE"

    with Registry.open(tmp_path / "registry.sqlite") as reg:
        row = reg.get(issued.serial)
    assert (row.status, row.profile, row.sha256) == ("good", "qes-natural-person", issued.sha256)
    assert row.not_after == cert.not_valid_after_utc
    entries = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert {(a["kind"], a["format"], a["status"]) for a in entries} == {
        ("end-entity-certificate", "pem", "good"), ("end-entity-certificate", "der", "good")}


def test_qualified_seal_certificate(hierarchy: tuple[LoadedDefinition, Path], issue: Issue, tmp_path: Path) -> None:
    _, cas = hierarchy
    key = rsa.generate_private_key(65537, 3072)
    issued = issue("eseal-legal-person", write_csr(tmp_path / "dgi.csr", legal_person(), key))
    verify = openssl_verify(cas, issued.pem_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    cert = x509.load_der_x509_certificate(issued.der_path.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER)[0].value == "NTRML-1234567"
    qc = cert.extensions.get_extension_for_oid(QC_STATEMENTS_OID).value.value
    assert der_oid("0.4.0.1862.1.6.2") in qc  # QcType eseal
    assert pkilint_cli(issued.pem_path) == "NCP-LEGAL-PERSON-CERTIFICATE"
    for etsi_type in (etsi_certificate_type("qualified-seal", ("ML",)), None):
        findings = lint_certificate(issued.der_path.read_bytes(), etsi=True, etsi_type=etsi_type)
        assert [f for f in findings if f.blocking] == [], findings


def test_validity_is_capped_by_the_issuing_ca(hierarchy: tuple[LoadedDefinition, Path], issue: Issue,
                                               tmp_path: Path) -> None:
    _, cas = hierarchy
    sub = x509.load_pem_x509_certificate((cas / "qualified.crt.pem").read_bytes())
    now = sub.not_valid_after_utc - dt.timedelta(days=30)
    issued = issue("qes-natural-person", write_csr(tmp_path / "a.csr", natural_person()), now=now)
    cert = x509.load_der_x509_certificate(issued.der_path.read_bytes())
    assert cert.not_valid_after_utc == sub.not_valid_after_utc


def test_two_issuances_get_distinct_serials_in_one_registry(issue: Issue, tmp_path: Path) -> None:
    a = issue("qes-natural-person", write_csr(tmp_path / "a.csr", natural_person()))
    b = issue("qes-natural-person", write_csr(tmp_path / "b.csr", natural_person("Awa Keita 2")))
    assert a.serial != b.serial
    with Registry.open(tmp_path / "registry.sqlite") as reg:
        assert [r.serial for r in reg.list()] == sorted([a.serial, b.serial])


# --- refusals: one clear message, nothing written, nothing registered -------------------------------


def _refused(tmp_path: Path, exc: type[Exception], fn: Callable[[], Any], *needles: str) -> str:
    out = tmp_path / "out"
    before = tree(out) if out.exists() else set()
    with pytest.raises(exc) as info:
        fn()
    for needle in needles:
        assert needle in str(info.value), str(info.value)
    assert (tree(out) if out.exists() else set()) == before
    reg_path = tmp_path / "registry.sqlite"
    if reg_path.exists():
        with Registry.open(reg_path) as reg:
            assert reg.list() == []
    return str(info.value)


def test_unknown_profile_lists_the_allowed(issue: Issue, tmp_path: Path) -> None:
    csr = write_csr(tmp_path / "a.csr", natural_person())
    _refused(tmp_path, DefinitionError, lambda: issue("tls-server", csr), "cas.qualified.profiles",
             "tls-server", "qes-natural-person, eseal-legal-person")


def test_root_does_not_issue_end_entities(issue: Issue, tmp_path: Path) -> None:
    csr = write_csr(tmp_path / "a.csr", natural_person())
    _refused(tmp_path, DefinitionError, lambda: issue("qes-natural-person", csr, ca="root"), "cas.root.role",
             "subordinate")


@pytest.mark.parametrize(("subject", "needles"), [
    (x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "ML"), x509.NameAttribute(NameOID.COMMON_NAME, "Awa")]),
     ("needs givenName and/or surname (EN 319 412-2",)),
    (x509.Name([x509.NameAttribute(NameOID.GIVEN_NAME, "Awa"), x509.NameAttribute(NameOID.COMMON_NAME, "Awa")]),
     ("lacks C", "required: C, CN")),
    (x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "ML"), x509.NameAttribute(NameOID.GIVEN_NAME, "A"),
                x509.NameAttribute(NameOID.COMMON_NAME, "A"), x509.NameAttribute(NameOID.EMAIL_ADDRESS, "a@b.ml")]),
     ("1.2.840.113549.1.9.1", "not allowed in a qualified-signature", "allowed: C, givenName, surname")),
])
def test_bad_natural_person_subjects(issue: Issue, tmp_path: Path, subject: x509.Name,
                                     needles: tuple[str, ...]) -> None:
    csr = write_csr(tmp_path / "a.csr", subject)
    _refused(tmp_path, RequestError, lambda: issue("qes-natural-person", csr), str(csr), *needles)


def test_seal_requires_organization_identifier(issue: Issue, tmp_path: Path) -> None:
    subject = x509.Name([a for a in legal_person() if a.oid != NameOID.ORGANIZATION_IDENTIFIER])
    csr = write_csr(tmp_path / "a.csr", subject)
    _refused(tmp_path, RequestError, lambda: issue("eseal-legal-person", csr), "lacks organizationIdentifier")


@pytest.mark.parametrize(("key", "needle"), [
    (lambda: rsa.generate_private_key(65537, 2048), "RSA 2048"),
    (lambda: ec.generate_private_key(ec.SECP521R1()), "secp521r1"),
])
def test_weak_or_unusual_keys_are_refused(issue: Issue, tmp_path: Path, key: Callable[[], Any], needle: str) -> None:
    csr = write_csr(tmp_path / "a.csr", natural_person(), key())
    _refused(tmp_path, RequestError, lambda: issue("qes-natural-person", csr), needle, "allowed: ECDSA P-256")


def test_csr_without_proof_of_possession(issue: Issue, tmp_path: Path) -> None:
    good = write_csr(tmp_path / "good.csr", natural_person())
    der = bytearray(x509.load_pem_x509_csr(good.read_bytes()).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # damage the signature
    bad = tmp_path / "bad.csr"
    bad.write_bytes(bytes(der))
    try:
        x509.load_der_x509_csr(bytes(der)).is_signature_valid  # noqa: B018 - may raise for a broken DER
    except ValueError:
        pytest.skip("damaged signature no longer parses")
    _refused(tmp_path, RequestError, lambda: issue("qes-natural-person", bad), "no proof of possession")


def test_not_a_csr(issue: Issue, tmp_path: Path) -> None:
    bad = tmp_path / "junk.csr"
    bad.write_text("hello")
    _refused(tmp_path, RequestError, lambda: issue("qes-natural-person", bad), "not a PKCS#10")


def test_wrong_issuer_certificate(hierarchy: tuple[LoadedDefinition, Path], issue: Issue, tmp_path: Path) -> None:
    _, cas = hierarchy
    csr = write_csr(tmp_path / "a.csr", natural_person())
    _refused(tmp_path, OutputError, lambda: issue("qes-natural-person", csr, issuer=cas / "root.crt.pem"),
             "not the rehearsal certificate of 'qualified'")
    _refused(tmp_path, OutputError, lambda: issue("qes-natural-person", csr, issuer=tmp_path / "none.pem"),
             "is not there")


def test_production_run_refuses_rehearsal_issuer(issue: Issue, tmp_path: Path) -> None:
    csr = write_csr(tmp_path / "a.csr", natural_person())
    _refused(tmp_path, OutputError, lambda: issue("qes-natural-person", csr, rehearsal=False),
             "not the certificate of 'qualified'")


def test_locked_registry_leaves_no_certificate(hierarchy: tuple[LoadedDefinition, Path], tmp_path: Path) -> None:
    import sqlite3

    defn, cas = hierarchy
    reg_path = tmp_path / "registry.sqlite"
    Registry.open(reg_path, create=True).close()
    csr = write_csr(tmp_path / "a.csr", natural_person())
    holder = sqlite3.connect(reg_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        # WAL: reads go on (the serial is checked unused), the write waits, then gives up after signing.
        with Registry.open(reg_path, timeout=0.2) as reg, \
                pytest.raises(RegistryError, match=r"locked by another process.*adding a certificate"):
            issue_certificate(defn, "qualified", "qes-natural-person", csr, tmp_path / "out", reg, rec(),
                              issuer_cert_path=cas / "qualified.crt.pem", rehearsal=True, interactive=False)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not (tmp_path / "out").exists() or tree(tmp_path / "out") == set()  # the signed files were removed
    with Registry.open(reg_path) as reg:
        assert reg.list() == []


def test_wrong_pin_changes_nothing(issue: Issue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   hierarchy: tuple[LoadedDefinition, Path]) -> None:
    defn, _ = hierarchy
    monkeypatch.setenv(defn.model.cas["qualified"].hsm.pin_env, "000000")
    csr = write_csr(tmp_path / "a.csr", natural_person())
    _refused(tmp_path, HsmError, lambda: issue("qes-natural-person", csr), "wrong PIN")


# --- pure pieces -------------------------------------------------------------------------------------


def test_qc_statements_der_against_openssl(tmp_path: Path) -> None:
    """openssl asn1parse reads our hand-made DER: the OIDs, the PDS URL and language in order."""
    der = qc_statements_der("qualified-seal", "https://x.ml/pds.pdf", "fr", ("ML",))
    (tmp_path / "qc.der").write_bytes(der)
    out = subprocess.run(["openssl", "asn1parse", "-inform", "DER", "-in", str(tmp_path / "qc.der")],
                         capture_output=True, text=True, check=True).stdout
    for needle in ("0.4.0.1862.1.1", "0.4.0.1862.1.6", "0.4.0.1862.1.6.2", "0.4.0.1862.1.4", "0.4.0.1862.1.5",
                   "IA5STRING         :https://x.ml/pds.pdf", "PRINTABLESTRING   :fr", "0.4.0.1862.1.7",
                   "PRINTABLESTRING   :ML"):
        assert needle in out.replace("OBJECT            :", ""), out


def test_der_oid_encodes_large_arcs() -> None:
    assert der_oid("1.2.840.113549") == bytes.fromhex("06062a864886f70d")
    assert der_oid("0.4.0.194112.1.2") == bytes.fromhex("0607" "04008bec400102")  # 194112 = 11·128² + 108·128 + 64


def test_legislation_only_outside_the_eu() -> None:
    assert legislation_for("ML") == ("ML",)
    assert legislation_for("FR") == ()


def test_pseudonym_with_names_is_refused() -> None:
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "ML"), x509.NameAttribute(NameOID.GIVEN_NAME, "A"),
                         x509.NameAttribute(NameOID.PSEUDONYM, "P"), x509.NameAttribute(NameOID.COMMON_NAME, "A")])
    with pytest.raises(RequestError, match=r"carries a pseudonym, which the Certificate Policy forbids"):
        check_subject(subject, "qualified-signature", "x.csr")


def test_a_pseudonym_is_refused_before_anything_is_signed(issue: Issue, tmp_path: Path) -> None:
    """The CP (PC-3.1.3-a) forbids pseudonyms in qualified certificates, which EN 319 412-2 would allow in place of
    givenName/surname: the issuance refuses the request, naming the requirement; nothing is written or registered."""
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "ML"), x509.NameAttribute(NameOID.PSEUDONYM, "Awa K"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "Awa K")])
    csr = write_csr(tmp_path / "a.csr", subject)
    _refused(tmp_path, RequestError, lambda: issue("qes-natural-person", csr), str(csr), "pseudonym",
             "PC-3.1.3-a", "allowed: C, givenName, surname, serialNumber")
    assert "pseudonym" not in subject_attributes("qualified-signature")[1]


def test_rehearsal_stage_piece(tmp_path: Path) -> None:
    """rehearse_end_entities on a real rehearsal (own process: the rehearsal has its own SoftHSM config)."""
    import os
    import sys

    out = tmp_path / "rehearsal"
    code = ("import sys; from ceremony.rehearsal.context import prepare; "
            "from ceremony.rehearsal.ca import ca_ceremonies; "
            "from ceremony.rehearsal.end_entities import rehearse_end_entities; "
            "ctx = prepare(sys.argv[1]); ca_ceremonies(ctx); r = rehearse_end_entities(ctx); "
            "print('REVOKED', r.revoked[0].serial_hex)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CEREMONY_", "SOFTHSM2_CONF", "TEST_"))}
    result = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    revoked_hex = result.stdout.split("REVOKED ")[1].split()[0]
    manifest = json.loads((out / "manifest.json").read_text())
    ee = [a for a in manifest["artifacts"] if a["kind"] == "end-entity-certificate"]
    assert len(ee) == 4  # two profiles, PEM and DER each
    assert {a["status"] for a in ee if a["serial"] == revoked_hex} == {"revoked"}
    assert {a["status"] for a in ee if a["serial"] != revoked_hex} == {"good"}
    assert [a["path"] for a in manifest["artifacts"] if a["kind"] == "registry"] == ["qualified-registry.sqlite3"]
    with Registry.open(out / "qualified-registry.sqlite3") as reg:
        assert [(format(r.serial, "x"), r.reason) for r in reg.list() if r.status == "revoked"] == [
            (revoked_hex, "keyCompromise")]
    for a in ee:
        if a["format"] == "pem":
            verify = subprocess.run(["openssl", "verify", "-CAfile", str(out / "root.crt.pem"), "-untrusted",
                                     str(out / "qualified.crt.pem"), str(out / a["path"])], capture_output=True,
                                    text=True)
            assert verify.returncode == 0, verify.stdout + verify.stderr


def _software_chain() -> tuple[Any, Any, Any]:
    """Root and subordinate certificates from the testing definition with software keys (pure profile tests)."""
    from conftest import TESTING_DEFINITION

    from ceremony.x509.certificates import root_builder, subordinate_builder

    model = load_definition(TESTING_DEFINITION).model
    rk, sk = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    root = root_builder(model.cas["root"], rk.public_key(), 5, True).sign(rk, hashes.SHA384())
    sub = subordinate_builder(model.cas["qualified"], model.cas["root"], root, sk.public_key(), 6, True) \
        .sign(rk, hashes.SHA384())
    return model, sub, sk


@pytest.mark.parametrize("legislation", [(), ("ML",)])
@pytest.mark.parametrize(("profile", "policies", "qscd"), [
    ("qes-natural-person", ["2.16.466.1.99.1.1.1", "0.4.0.194112.1.2"], True),
    ("qes-natural-person", ["2.16.466.1.99.1.1.1", "0.4.0.194112.1.0"], False),  # QCP-n: no QcSSCD
    ("eseal-legal-person", ["2.16.466.1.99.1.1.1", "0.4.0.194112.1.3"], True),
    ("eseal-legal-person", ["2.16.466.1.99.1.1.1", "0.4.0.194112.1.1"], False),  # QCP-l: no QcSSCD
])
def test_profiles_lint_clean_inside_and_outside_the_eu(legislation: tuple[str, ...], profile: str,
                                                        policies: list[str], qscd: bool) -> None:
    from ceremony.x509.ee_profiles import QC_SSCD, ee_builder, uses_qscd, validity_window

    model, sub, sk = _software_chain()
    prof = model.cas["qualified"].profiles[profile].model_copy(update={"policy_oids": policies})
    assert uses_qscd(prof) is qscd
    subject = natural_person() if profile.startswith("qes") else legal_person()
    nb, na = validity_window(prof, sub, dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
    cert = ee_builder(prof, model.cas["qualified"], sub, subject, ec.generate_private_key(ec.SECP256R1()).public_key(),
                      7, nb, na, legislation).sign(sk, hashes.SHA384())
    der = cert.public_bytes(serialization.Encoding.DER)
    assert (der_oid(QC_SSCD) in cert.extensions.get_extension_for_oid(QC_STATEMENTS_OID).value.value) is qscd
    for etsi_type in (etsi_certificate_type(prof.kind, legislation, qscd), None):
        findings = lint_certificate(der, etsi=True, etsi_type=etsi_type)
        assert [f for f in findings if f.blocking] == [], findings


def test_bad_country_is_refused() -> None:
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "ml", _validate=False),
                         x509.NameAttribute(NameOID.GIVEN_NAME, "A"), x509.NameAttribute(NameOID.COMMON_NAME, "A")])
    with pytest.raises(RequestError, match="two-letter ISO 3166 code"):
        check_subject(subject, "qualified-signature", "x.csr")


def test_requested_extensions_are_ignored(issue: Issue, tmp_path: Path) -> None:
    """A CSR asking for a SAN, an EKU and CA:TRUE gets the profile and nothing else."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(natural_person())
           .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("awa@example.ml")]), critical=False)
           .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
           .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
           .sign(key, hashes.SHA256()))
    path = tmp_path / "greedy.csr"
    path.write_bytes(csr.public_bytes(serialization.Encoding.DER))
    cert = x509.load_der_x509_certificate(issue("qes-natural-person", path).der_path.read_bytes())
    oids = {e.oid for e in cert.extensions}
    assert x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME not in oids
    assert x509.oid.ExtensionOID.EXTENDED_KEY_USAGE not in oids
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_issue_revoke_crl_openssl(hierarchy: tuple[LoadedDefinition, Path], issue: Issue, tmp_path: Path) -> None:
    """Across the seam with the CRL job: openssl accepts the good certificate and rejects the revoked one."""
    defn, cas = hierarchy
    good = issue("qes-natural-person", write_csr(tmp_path / "a.csr", natural_person()))
    bad = issue("eseal-legal-person", write_csr(tmp_path / "b.csr", legal_person()))
    with Registry.open(tmp_path / "registry.sqlite") as reg:
        assert reg.revoke(bad.serial, "keyCompromise")
    result = crl_job.run_crl_job(defn, "qualified", tmp_path / "registry.sqlite", tmp_path / "crl",
                                 ca_cert=cas / "qualified.crt.pem", force=True)
    assert result.entries == 1
    chain = tmp_path / "chain.pem"
    chain.write_bytes((cas / "root.crt.pem").read_bytes() + (cas / "qualified.crt.pem").read_bytes())

    def verify(cert: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["openssl", "verify", "-crl_check", "-CAfile", str(chain), "-CRLfile",
                               str(result.pem_path), str(cert)], capture_output=True, text=True)

    ok = verify(good.pem_path)
    assert ok.returncode == 0 and ok.stdout.strip().endswith(": OK"), ok.stdout + ok.stderr
    revoked = verify(bad.pem_path)
    assert revoked.returncode != 0 and "certificate revoked" in revoked.stdout + revoked.stderr


def test_the_pds_in_french_and_english_goes_into_qcpds_and_lints_clean() -> None:
    """EN 319 412-5 QcPDS lists one location per language: the authoritative French PDS and its English
    translation both reach the certificate, in that order; two PDS in one language are refused."""
    from pydantic import ValidationError

    from ceremony.definition.model import PdsLocation
    from ceremony.policy.facts import describe_qc_statements
    from ceremony.x509.ee_profiles import ee_builder, validity_window

    model, sub, sk = _software_chain()
    base = model.cas["qualified"].profiles["qes-natural-person"]
    prof = base.model_copy(update={"qc_pds_url": "https://pki.example.ml/pds/pds_fr.pdf", "qc_pds_lang": "fr",
                                   "qc_pds_translations": [PdsLocation(url="https://pki.example.ml/pds/pds_en.pdf",
                                                                       lang="en")]})
    nb, na = validity_window(prof, sub, dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    cert = ee_builder(prof, model.cas["qualified"], sub, natural_person(), key, 9, nb, na, ("ML",)).sign(
        sk, hashes.SHA384())
    qc = cert.extensions.get_extension_for_oid(QC_STATEMENTS_OID).value.value
    assert "QcPDS https://pki.example.ml/pds/pds_fr.pdf (fr) https://pki.example.ml/pds/pds_en.pdf (en)" in \
        describe_qc_statements(qc)
    findings = lint_certificate(cert.public_bytes(serialization.Encoding.DER), etsi=True)
    assert [f for f in findings if f.blocking] == [], findings
    with pytest.raises(ValidationError, match="one PDS per language"):
        type(base).model_validate({**base.model_dump(), "qc_pds_lang": "en", "qc_pds_translations": [
            {"url": "https://pki.example.ml/pds/other.pdf", "lang": "en"}]})
