"""Subordinate re-key with issuer generations (issue 18) on real SoftHSM tokens.

One module-scoped hierarchy (root, qualified CA on tokens of their own); each test works on its own copy of the
output directory. The re-key runs as the operator runs it (key ceremony at the subordinate's host, certification at
the root, each with its transcript); certificates are issued before and after it, one of each generation revoked,
and the CRL job signs one CRL per generation: ``openssl verify -crl_check`` and GnuTLS ``certtool`` check every
certificate against its own generation's chain and CRL. Bad input (a label that exists, the same key again, an old
generation's certificate at issuance, a generation the CRL job cannot find) is refused with one message and disk,
tokens and registry unchanged.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, SOFTHSM_CONF, TestToken, base_definition_data, softhsm_token, tree, write_definition
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID as AIA
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, ObjectClass

import ceremony.ca.registry as registry_module
import ceremony.ca.registry_backup as rb
from ceremony.ca.generations import (
    ca_for_generation,
    current_certificate_path,
    generation_url,
    issuer_generations,
    key_label_for,
    keys_of_ca,
)
from ceremony.ca.registry import CertRecord, Registry
from ceremony.ceremonies.destroy_key import destroy_key_ceremony
from ceremony.ceremonies.issuance import IssuedCertificate, issue_certificate
from ceremony.ceremonies.ocsp_signer import ocsp_signer_ceremony
from ceremony.ceremonies.rekey import REKEY_CERTIFY, REKEY_KEY, certify_rekey_ceremony, rekey_key_ceremony
from ceremony.ceremonies.renewal import renewal_ceremony
from ceremony.ceremonies.root_key import root_ceremony
from ceremony.ceremonies.sign_subordinate import sign_subordinate_ceremony
from ceremony.ceremonies.subordinate_key import subordinate_key_ceremony
from ceremony.common.display import make_console
from ceremony.common.errors import CeremonyError, HsmError, OutputError, RegistryError, RequestError
from ceremony.crl import publish as crl_publish
from ceremony.crl.checks import summarise
from ceremony.crl.job import crl_targets, due_reason, run_crl_job
from ceremony.definition.model import Hsm, LoadedDefinition, TokenRef, load_definition
from ceremony.hsm.keys import spki_sha256
from ceremony.hsm.session import open_session, pin_source_for
from ceremony.ocsp.job import run_ocsp_job, store_issuer_sha256
from ceremony.ocsp.store import ResponseStore
from ceremony.rehearsal.ocsp import openssl_ocsp, responder
from ceremony.transcript import chain as transcript
from ceremony.transcript.anchor import load_anchor
from ceremony.transcript.audit import verify
from ceremony.transcript.recorder import ConsoleRecorder

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("rekey")]
CA = "qualified"
INVOKE = str(REPO / ".venv" / "bin" / "invoke")


@dataclass
class Hierarchy:
    data: dict[str, Any]
    definition: Path
    out: Path
    tokens: dict[str, TestToken]


def quiet() -> Any:
    return make_console(file=open(os.devnull, "w"))


def console() -> ConsoleRecorder:
    return ConsoleRecorder(rehearsal=True, console=quiet())


def recorded(defn: LoadedDefinition, script: str, out: Path) -> Any:
    return transcript.open_transcript(out / "transcripts", script, defn, rehearsal=True, console=quiet())



@pytest.fixture(scope="module")
def hierarchy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hierarchy]:
    tmp = tmp_path_factory.mktemp("rekey")
    data = copy.deepcopy(base_definition_data())
    with pytest.MonkeyPatch.context() as mp:
        tokens = {name: softhsm_token(mp, f"rk-{name}") for name in ("root", CA)}
        for name, ca in data["cas"].items():
            tok = tokens[name]
            ca["hsm"].update(module=tok.module, token={"label": tok.label}, pin_env=tok.pin_env,
                             so_pin_env=tok.so_pin_env)
            ca["backup"] = {"mode": "none"}
        definition = write_definition(tmp / "pki.yml", data)
        defn = load_definition(definition)
        out = tmp / "out"
        root_ceremony(defn, out, console(), rehearsal=True, interactive=False)
        subordinate_key_ceremony(defn, CA, out, console(), rehearsal=True, interactive=False)
        sign_subordinate_ceremony(defn, CA, out / f"{CA}.csr.pem", out, console(), rehearsal=True, interactive=False)
        yield Hierarchy(data, definition, out, tokens)


@pytest.fixture(autouse=True)
def no_later_keys(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test works on a copy of the output directory but on the module's token: the keys a test's re-key made
    (``<key_label>.g<n>``) are destroyed after it, so that the next test's generation 2 finds its label free."""
    yield
    if "hierarchy" not in request.fixturenames:
        return
    h: Hierarchy = request.getfixturevalue("hierarchy")
    tok = h.tokens[CA]
    base = h.data["cas"][CA]["hsm"]["key_label"]
    hsm = Hsm(module=tok.module, token=TokenRef(label=tok.label), key_label="x", pin_env=tok.pin_env)
    with open_session(hsm, pin_source_for(hsm, interactive=False)) as session:
        for obj in list(session.get_objects()):
            if str(obj[Attribute.LABEL]).startswith(f"{base}.g") or str(obj[Attribute.LABEL]) == f"{base}-ocsp":
                obj.destroy()


def copy_of(h: Hierarchy, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(h.out, out)
    return out


def objects(tok: TestToken) -> set[tuple[str, str]]:
    hsm = Hsm(module=tok.module, token=TokenRef(label=tok.label), key_label="x", pin_env=tok.pin_env)
    with open_session(hsm, pin_source_for(hsm, interactive=False), rw=False) as session:
        return {(str(o[Attribute.LABEL]), type(o).__name__) for o in session.get_objects()}


def state(h: Hierarchy, out: Path) -> tuple[set[str], bytes, dict[str, set[tuple[str, str]]]]:
    return tree(out), (out / "manifest.json").read_bytes(), {n: objects(t) for n, t in h.tokens.items()}


def invoke(*args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CEREMONY_")}
    return subprocess.run([INVOKE, *args], cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env={**clean, "SOFTHSM2_CONF": str(SOFTHSM_CONF)}, timeout=300)


def errors_of(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def _csr(path: Path, cn: str) -> Path:
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "ML"), x509.NameAttribute(NameOID.GIVEN_NAME, "Awa"),
                         x509.NameAttribute(NameOID.SURNAME, "Keita"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(ec.generate_private_key(ec.SECP256R1()),
                                                                             hashes.SHA256())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path


def issue(defn: LoadedDefinition, out: Path, registry: Path, cn: str, issuer: Path | None = None) -> IssuedCertificate:
    with Registry.open(registry, create=True) as reg:
        return issue_certificate(defn, CA, "qes-natural-person", _csr(out / "csr" / f"{cn}.pem", cn), out / "ee", reg,
                                 console(), issuer_cert_path=issuer or current_certificate_path(out, CA),
                                 rehearsal=True, interactive=False)


def rekey(defn: LoadedDefinition, out: Path) -> tuple[Path, Path]:
    """Both ceremonies of the re-key, each with its transcript; returns the transcripts' paths."""
    with recorded(defn, REKEY_KEY, out) as rec:
        rekey_key_ceremony(defn, CA, out, rec, rehearsal=True, interactive=False)
    with recorded(defn, REKEY_CERTIFY, out) as rec2:
        certify_rekey_ceremony(defn, CA, out, rec2, rehearsal=True, interactive=False)
    return rec.path, rec2.path


def dp_urls(cert_path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    dps = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    return [n.value for dp in dps for n in dp.full_name or []]


def openssl_verify(out: Path, sub: Path, crl: Path, cert: Path) -> subprocess.CompletedProcess[str]:
    """openssl verify -crl_check: the chain to the root, the leaf's status from the one CRL given."""
    return subprocess.run(["openssl", "verify", "-crl_check", "-CAfile", str(out / "root.crt.pem"), "-untrusted",
                           str(sub), "-CRLfile", str(crl), str(cert)], capture_output=True, text=True)


def certtool_verify(tmp: Path, out: Path, sub: Path, crl: Path, cert: Path) -> tuple[int, int]:
    """GnuTLS: ``--verify-chain`` on leaf + CA + root, and ``--verify`` of leaf + CA against the root with the CRL
    loaded. Returns both exit codes."""
    chain = tmp / f"chain-{cert.stem}.pem"
    chain.write_bytes(cert.read_bytes() + sub.read_bytes() + (out / "root.crt.pem").read_bytes())
    whole = subprocess.run(["certtool", "--verify-chain", "--infile", str(chain)], capture_output=True, text=True)
    pair = tmp / f"pair-{cert.stem}.pem"
    pair.write_bytes(cert.read_bytes() + sub.read_bytes())
    status = subprocess.run(["certtool", "--verify", "--load-ca-certificate", str(out / "root.crt.pem"),
                             "--load-crl", str(crl), "--infile", str(pair)], capture_output=True, text=True)
    return whole.returncode, status.returncode


def audit_exit(path: Path, out: Path) -> int:
    return verify(path, out, trust=load_anchor(str(out / "root.crt.pem"), out), rehearsal=True).exit_code


# --- the re-key, issuance before and after it, one CRL per generation ---------------------------------------------
def test_rekey_then_each_generation_verifies_with_its_own_crl(hierarchy: Hierarchy, tmp_path: Path) -> None:
    out = copy_of(hierarchy, tmp_path)
    defn = load_definition(hierarchy.definition)
    registry = out / f"{CA}-registry.sqlite3"
    old = [issue(defn, out, registry, f"Before Rekey {i}") for i in range(2)]
    assert {c.issuer_generation for c in old} == {1}

    key_transcript, cert_transcript = rekey(defn, out)
    g1 = x509.load_pem_x509_certificate((out / f"{CA}.crt.pem").read_bytes())
    g2 = x509.load_pem_x509_certificate((out / f"{CA}.g2.crt.pem").read_bytes())
    assert g2.public_key() != g1.public_key() and g2.subject == g1.subject and g2.issuer == g1.issuer
    ski = x509.SubjectKeyIdentifier
    assert g2.extensions.get_extension_for_class(ski).value != g1.extensions.get_extension_for_class(ski).value
    assert g2.public_key() == x509.load_pem_x509_csr((out / f"{CA}.g2.csr.pem").read_bytes()).public_key()
    # the token holds both keys under their own labels
    labels = {label for label, _ in objects(hierarchy.tokens[CA])}
    base = defn.model.cas[CA].hsm.key_label
    assert {base, f"{base}.g2"} <= labels
    manifest = json.loads((out / "manifest.json").read_text())["artifacts"]
    g2_entries = {(a["kind"], a["path"], a.get("generation"), a.get("key")) for a in manifest
                  if a["path"].startswith(f"{CA}.g2.")}
    assert g2_entries == {("subordinate-csr", f"{CA}.g2.csr.pem", 2, "new"),
                          ("subordinate-csr", f"{CA}.g2.csr.der", 2, "new"),
                          ("subordinate-public-key", f"{CA}.g2.pub.pem", 2, "new"),
                          ("subordinate-public-key", f"{CA}.g2.pub.der", 2, "new"),
                          ("subordinate-certificate", f"{CA}.g2.crt.pem", 2, "new"),
                          ("subordinate-certificate", f"{CA}.g2.crt.der", 2, "new")}
    assert audit_exit(key_transcript, out) == 0 and audit_exit(cert_transcript, out) == 0
    assert [(g.generation, g.key_generation, g.key) for g in issuer_generations(out, CA)] == [(1, 1, "same"),
                                                                                             (2, 2, "new")]

    # issuance now signs with the key of generation 2; the certificate of generation 1 is refused for it
    snapshot = (tree(out), registry.read_bytes())
    with pytest.raises(OutputError, match="the current generation is 2"):
        issue(defn, out, registry, "Old Issuer", issuer=out / f"{CA}.crt.pem")
    assert (tree(out) - {"csr/Old Issuer.pem"}, registry.read_bytes()) == snapshot
    new = [issue(defn, out, registry, f"After Rekey {i}") for i in range(2)]
    assert {c.issuer_generation for c in new} == {2}
    url = defn.model.cas[CA].publication.crl_url
    assert dp_urls(old[0].pem_path) == [url] and dp_urls(new[0].pem_path) == [generation_url(url, 2)]
    aia = {(a.access_method.dotted_string, a.access_location.value) for a in x509.load_pem_x509_certificate(
        new[0].pem_path.read_bytes()).extensions.get_extension_for_class(x509.AuthorityInformationAccess).value}
    publication, ocsp = defn.model.cas[CA].publication, defn.model.cas[CA].ocsp
    assert ocsp is not None and aia == {(AIA.CA_ISSUERS.dotted_string, generation_url(publication.certificate_url, 2)),
                                        (AIA.OCSP.dotted_string, generation_url(ocsp.url, 2))}
    for c in new:
        leaf = x509.load_pem_x509_certificate(c.pem_path.read_bytes())
        leaf.verify_directly_issued_by(g2)
    with Registry.open(registry) as reg:
        assert {r.serial: r.issuer_generation for r in reg} == {**{c.serial: 1 for c in old},
                                                                **{c.serial: 2 for c in new}}
        reg.revoke(old[0].serial, "keyCompromise")
        reg.revoke(new[0].serial, "superseded")

    pub = tmp_path / "pub"
    result = run_crl_job(defn, CA, registry, pub, ceremony_out=out)
    assert result.signed
    names = sorted(p.name for p in pub.iterdir() if p.is_file())
    assert names == [f"{CA}.crl", f"{CA}.crl.pem", f"{CA}.g2.crl", f"{CA}.g2.crl.pem"]
    crl1 = x509.load_der_x509_crl((pub / f"{CA}.crl").read_bytes())
    crl2 = x509.load_der_x509_crl((pub / f"{CA}.g2.crl").read_bytes())
    assert crl1.is_signature_valid(g1.public_key()) and crl2.is_signature_valid(g2.public_key())
    assert not crl1.is_signature_valid(g2.public_key())
    assert [r.serial_number for r in crl1] == [old[0].serial] and [r.serial_number for r in crl2] == [new[0].serial]
    aki = x509.AuthorityKeyIdentifier
    assert crl2.extensions.get_extension_for_class(aki).value.key_identifier == \
        g2.extensions.get_extension_for_class(ski).value.digest
    assert result.full is not None and result.full.generation == 2 and result.full.der_path.name == f"{CA}.g2.crl"
    assert [(c.generation, c.number) for c in result.earlier] == [(1, 1)]

    for certs, sub, crl in ((old, out / f"{CA}.crt.pem", pub / f"{CA}.crl.pem"),
                            (new, out / f"{CA}.g2.crt.pem", pub / f"{CA}.g2.crl.pem")):
        revoked, good = certs
        ok = openssl_verify(out, sub, crl, good.pem_path)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        bad = openssl_verify(out, sub, crl, revoked.pem_path)
        assert bad.returncode != 0 and "certificate revoked" in bad.stdout + bad.stderr
        assert certtool_verify(tmp_path, out, sub, crl, good.pem_path) == (0, 0)
        whole, status = certtool_verify(tmp_path, out, sub, crl, revoked.pem_path)
        assert whole == 0 and status != 0  # the chain is sound; the CRL says revoked
    # the other generation's CRL does not vouch for a certificate: its signer is another key
    cross = openssl_verify(out, out / f"{CA}.g2.crt.pem", pub / f"{CA}.crl.pem", new[1].pem_path)
    assert cross.returncode != 0

    # each generation has its own number sequence and previous-CRL check
    assert run_crl_job(defn, CA, registry, pub, ceremony_out=out).signed is False
    assert due_reason(defn, CA, registry, pub, ceremony_out=out) == (None, summarise(crl2))
    with Registry.open(registry) as reg:
        reg.revoke(old[1].serial, "cessationOfOperation")
    # the Ansible module's check mode says which CRL is due (the first key's, one revocation more)
    assert due_reason(defn, CA, registry, pub, ceremony_out=out)[0] == \
        "the full CRL of key generation 1: revocations changed (1 → 2)"
    again = run_crl_job(defn, CA, registry, pub, ceremony_out=out)
    assert again.signed and [(c.generation, c.number, c.entries) for c in again.crls] == [(2, 2, 1), (1, 2, 2)]
    assert (pub / ".state" / f"{CA}.crlnumber").is_file() and (pub / ".state" / f"{CA}.g2.crlnumber").is_file()


def test_generation_one_crls_stop_when_its_certificates_expire(hierarchy: Hierarchy, tmp_path: Path) -> None:
    """Once the last certificate of the first key has expired, only the current key's CRLs are signed."""
    out = copy_of(hierarchy, tmp_path)
    defn = load_definition(hierarchy.definition)
    registry = out / f"{CA}-registry.sqlite3"
    first = issue(defn, out, registry, "Soon Expired")
    rekey(defn, out)
    with Registry.open(registry) as reg:
        gens = issuer_generations(out, CA)
        assert first.not_after is not None
        before = [(t.generation, t.partition) for t in crl_targets(defn.model.cas[CA], CA, out, reg,
                                                                     dt.datetime.now(dt.UTC), gens)]
        after = [(t.generation, t.partition) for t in crl_targets(defn.model.cas[CA], CA, out, reg,
                                                                    first.not_after + dt.timedelta(seconds=1), gens)]
    assert before == [(2, None), (1, None)] and after == [(2, None)]


def test_a_renewal_after_the_rekey_recertifies_the_new_key(hierarchy: Hierarchy, tmp_path: Path) -> None:
    """Generation 3 renews generation 2's key: issuance signs with it, its certificates are on generation 2's CRL."""
    out = copy_of(hierarchy, tmp_path)
    defn = load_definition(hierarchy.definition)
    registry = out / f"{CA}-registry.sqlite3"
    first = issue(defn, out, registry, "First Key")
    rekey(defn, out)
    data = copy.deepcopy(hierarchy.data)
    data["cas"][CA]["validity"]["not_after"] = "2040-01-01T00:00:00Z"
    later = load_definition(write_definition(tmp_path / "pki-later.yml", data))
    with recorded(later, "subordinate-renewal", out) as rec:
        renewed = renewal_ceremony(later, CA, out, rec, rehearsal=True, interactive=False)
    assert renewed.generation == 3 and audit_exit(rec.path, out) == 0
    assert [(g.generation, g.key_generation, g.key) for g in issuer_generations(out, CA)] == [
        (1, 1, "same"), (2, 2, "new"), (3, 2, "same")]
    # per key, as the hosts run OCSP (role ocsp_signer): the store stays bound to the key's first certificate, the
    # signer is certified under its newest (whose validity bounds the signer's)
    assert [(k.key_generation, k.stem, k.first.name, k.newest.name) for k in keys_of_ca(out, CA)] == [
        (1, CA, f"{CA}.crt.pem", f"{CA}.crt.pem"), (2, f"{CA}.g2", f"{CA}.g2.crt.pem", f"{CA}.g3.crt.pem")]
    third = issue(later, out, registry, "Renewed Key")
    assert third.issuer_generation == 3
    x509.load_pem_x509_certificate(third.pem_path.read_bytes()).verify_directly_issued_by(
        x509.load_pem_x509_certificate((out / f"{CA}.g3.crt.pem").read_bytes()))
    with Registry.open(registry) as reg:
        reg.revoke(third.serial, "superseded")
        reg.revoke(first.serial, "superseded")
    pub = tmp_path / "pub"
    result = run_crl_job(later, CA, registry, pub, ceremony_out=out)
    assert [(c.generation, c.der_path.name, c.entries) for c in result.crls] == [(2, f"{CA}.g2.crl", 1),
                                                                                 (1, f"{CA}.crl", 1)]
    for sub in (out / f"{CA}.g2.crt.pem", out / f"{CA}.g3.crt.pem"):  # same key and name: either chain
        bad = openssl_verify(out, sub, pub / f"{CA}.g2.crl.pem", third.pem_path)
        assert bad.returncode != 0 and "certificate revoked" in bad.stdout + bad.stderr


def test_partitions_compose_per_generation(hierarchy: Hierarchy, tmp_path: Path) -> None:
    """With crl.partitions each key has its own partition CRLs, at its own URLs (``<stem>.g<n>-p<i>.crl``)."""
    out = copy_of(hierarchy, tmp_path)
    data = copy.deepcopy(hierarchy.data)
    data["cas"][CA]["crl"]["partitions"] = 2
    defn = load_definition(write_definition(tmp_path / "pki-partitioned.yml", data))
    registry = out / f"{CA}-registry.sqlite3"
    one = issue(defn, out, registry, "Partitioned Before")
    rekey(load_definition(hierarchy.definition), out)
    two = issue(defn, out, registry, "Partitioned After")
    url = defn.model.cas[CA].publication.crl_url
    assert dp_urls(two.pem_path) == [generation_url(url, 2).replace(".g2.crl", f".g2-p{two.crl_partition}.crl")]
    with Registry.open(registry) as reg:
        reg.revoke(one.serial, "superseded")
        reg.revoke(two.serial, "superseded")
    pub = tmp_path / "pub"
    result = run_crl_job(defn, CA, registry, pub, ceremony_out=out)
    got = {(c.generation, c.partition, c.der_path.name) for c in result.crls}
    assert got == {(2, 0, f"{CA}.g2-p0.crl"), (2, 1, f"{CA}.g2-p1.crl"),
                   (1, one.crl_partition, f"{CA}-p{one.crl_partition}.crl")}
    for cert, sub, crl in ((one, out / f"{CA}.crt.pem", pub / f"{CA}-p{one.crl_partition}.crl.pem"),
                           (two, out / f"{CA}.g2.crt.pem", pub / f"{CA}.g2-p{two.crl_partition}.crl.pem")):
        bad = openssl_verify(out, sub, crl, cert.pem_path)
        assert bad.returncode != 0 and "certificate revoked" in bad.stdout + bad.stderr


def _publisher_tree(pub: Path, files: dict[str, str]) -> Path:
    """A publisher's pulled directory with ``files`` (name there → name in the signer's ``pub``)."""
    incoming = pub.parent / "incoming"
    incoming.mkdir(exist_ok=True)
    for name, signed in files.items():
        shutil.copyfile(pub / signed, incoming / name)
    return incoming


def test_the_publisher_verifies_each_generation_crl_under_its_own_certificate(hierarchy: Hierarchy,
                                                                             tmp_path: Path) -> None:
    """``ceremony-crl-publish --crl-url`` serves every key generation's CRLs and partitions the signer's job made,
    each verified under the certificate of its key installed in the trust directory; a generation CRL signed by
    another key, or one whose certificate is not installed, is refused and everything served stays as it was."""
    out = copy_of(hierarchy, tmp_path)
    data = copy.deepcopy(hierarchy.data)
    data["cas"][CA]["crl"]["partitions"] = 2
    defn = load_definition(write_definition(tmp_path / "pki-partitioned.yml", data))
    registry = out / f"{CA}-registry.sqlite3"
    one = issue(defn, out, registry, "Published Before")
    rekey(load_definition(hierarchy.definition), out)
    two = issue(defn, out, registry, "Published After")
    with Registry.open(registry) as reg:
        reg.revoke(one.serial, "superseded")
        reg.revoke(two.serial, "superseded")
    pub = tmp_path / "pub"
    run_crl_job(defn, CA, registry, pub, ceremony_out=out)
    signed = sorted(p.name for p in pub.iterdir() if p.name.endswith(".crl"))
    p1 = f"{CA}-p{one.crl_partition}.crl"
    assert signed == sorted([p1, f"{CA}.g2-p0.crl", f"{CA}.g2-p1.crl"])
    trust = tmp_path / "trust"
    trust.mkdir()
    shutil.copyfile(out / f"{CA}.crt.pem", trust / f"{CA}.crt.pem")
    served = tmp_path / "www" / "crl"
    served.mkdir(parents=True)
    url = defn.model.cas[CA].publication.crl_url
    incoming = _publisher_tree(pub, {name: name for name in signed})
    etag = tmp_path / "etag.map"

    def run() -> list[crl_publish.Outcome]:
        return crl_publish.publish_partitioned(incoming / f"{CA}.crl", url, trust / f"{CA}.crt.pem",
                                               served / f"{CA}.crl", etag_map=etag)

    # The second key's certificate is not installed yet: the first key's partition is served, the others refused.
    outcomes = run()
    assert sorted(p.name for p in served.iterdir()) == [p1]
    refused = [str(o.error) for o in outcomes if o.error is not None]
    assert len(refused) == 2 and all(f"no certificate of key generation 2 is installed beside {trust}" in e
                                     for e in refused), refused

    shutil.copyfile(out / f"{CA}.g2.crt.pem", trust / f"{CA}.g2.crt.pem")
    outcomes = run()
    assert [o.error for o in outcomes] == [None, None, None]
    assert sorted(p.name for p in served.iterdir()) == signed
    for name in signed:
        assert (served / name).read_bytes() == (pub / name).read_bytes()
    assert f"/crl/{CA}.g2-p0.crl|" in etag.read_text()

    # A generation-2 name carrying a CRL the first key signed (with the right scope URL it could not have): refused
    # by the signature under generation 2's certificate; what is served stays.
    before = {p.name: (p.read_bytes(), p.stat().st_mtime) for p in served.iterdir()}
    (incoming / f"{CA}.g2-p0.crl").write_bytes((pub / p1).read_bytes())
    outcomes = run()
    errors = [str(o.error) for o in outcomes if o.error is not None]
    assert len(errors) == 1 and f"{CA}.g2-p0.crl refused: the signature does not verify with the key of " \
        f"{trust / f'{CA}.g2.crt.pem'}" in errors[0], errors
    assert {p.name: (p.read_bytes(), p.stat().st_mtime) for p in served.iterdir()} == before
    # and the first key's name carrying the second key's CRL: refused under the first key's certificate
    shutil.copyfile(pub / f"{CA}.g2-p0.crl", incoming / f"{CA}.g2-p0.crl")
    (incoming / p1).write_bytes((pub / f"{CA}.g2-p1.crl").read_bytes())
    errors = [str(o.error) for o in run() if o.error is not None]
    assert len(errors) == 1 and f"{p1} refused: the signature does not verify with the key of " \
        f"{trust / f'{CA}.crt.pem'}" in errors[0], errors
    assert {p.name: (p.read_bytes(), p.stat().st_mtime) for p in served.iterdir()} == before


def test_ocsp_answers_each_generation_with_the_signer_its_key_certified(hierarchy: Hierarchy,
                                                                        tmp_path: Path) -> None:
    out = copy_of(hierarchy, tmp_path)
    defn = load_definition(hierarchy.definition)
    registry = out / f"{CA}-registry.sqlite3"
    before = issue(defn, out, registry, "Ocsp Before")
    rekey(defn, out)
    after = issue(defn, out, registry, "Ocsp After")
    with Registry.open(registry) as reg:
        reg.revoke(after.serial, "keyCompromise")
    g1, g2 = out / f"{CA}.crt.pem", out / f"{CA}.g2.crt.pem"
    # the current generation's signer by default, the first key's when its certificate is named
    with recorded(defn, "ocsp-signer-certification", out) as rec:
        new_signer = ocsp_signer_ceremony(defn, CA, out, rec, rehearsal=True, interactive=False)
    assert sorted(new_signer.files) == [f"{CA}.g2.ocsp.crt.der", f"{CA}.g2.ocsp.crt.pem"]
    # the first key's signer through the task, as an operator certifies it after the re-key
    task = ["ocsp.signer", "--ca", CA, "--definition", str(hierarchy.definition), "--out", str(out), "--rehearsal"]
    old_signer = invoke(*task, "--ca-cert", str(g1))
    assert old_signer.returncode == 0, old_signer.stdout[-3000:] + old_signer.stderr[-3000:]
    assert (out / f"{CA}.ocsp.crt.pem").is_file() and (out / f"{CA}.ocsp.crt.der").is_file()
    current = invoke(*task)  # the current key's signer was just certified: nothing to do
    assert current.returncode == 0 and "nothing to do" in current.stdout and CA + ".g2.ocsp.crt.pem" in current.stdout
    base = defn.model.cas[CA].hsm.key_label
    assert {f"{base}-ocsp", f"{base}.g2-ocsp"} <= {label for label, _ in objects(hierarchy.tokens[CA])}
    x509.load_pem_x509_certificate((out / f"{CA}.g2.ocsp.crt.pem").read_bytes()).verify_directly_issued_by(
        x509.load_pem_x509_certificate(g2.read_bytes()))
    stores = {}
    for cert in (g1, g2):
        stores[cert] = tmp_path / f"{cert.stem}.sqlite3"
        ResponseStore.create(stores[cert], CA, store_issuer_sha256(x509.load_pem_x509_certificate(cert.read_bytes())))
        job = run_ocsp_job(defn, CA, registry, stores[cert], ceremony_out=out, ca_cert=cert)
        assert job.stored == len(defn.model.cas[CA].ocsp.cert_id_hashes)  # its own generation's certificate only
    assert run_ocsp_job(defn, CA, registry, stores[g2], ceremony_out=out, ca_cert=g2).signer.name == \
        f"{CA}.g2.ocsp.crt.pem"
    for cert, issuer, status in ((after, g2, "revoked"), (before, g1, "good")):
        with responder(stores[issuer], issuer, workers=1) as url:
            code, output = openssl_ocsp(url, issuer, cert.pem_path, out / "root.crt.pem")
        assert code == 0 and "Response verify OK" in output and f"{cert.pem_path}: {status}" in output, output
    # the first key's store refuses the second key's certificate (a store is bound to its issuer certificate)
    with pytest.raises(CeremonyError, match="made for the CA certificate with SHA-256"):
        run_ocsp_job(defn, CA, registry, stores[g1], ceremony_out=out, ca_cert=g2)
    # the commands the CA host's units run per key (role ocsp_signer): the keys listed from the installed
    # certificates, and each key's job and signer renewal writing metrics of their own (one file each, the
    # key_generation label after a re-key), never replacing the other key's
    listed = command("ceremony-ocsp-signer", "--definition", str(hierarchy.definition), "--ca", CA, "--out", str(out),
                     "--key-generations")
    assert listed.returncode == 0, listed.stderr
    assert [(k["key_generation"], k["stem"], Path(k["certificate"]).name, Path(k["newest"]).name)
            for k in json.loads(listed.stdout)["keys"]] == [(1, CA, g1.name, g1.name),
                                                            (2, f"{CA}.g2", g2.name, g2.name)]
    metrics = tmp_path / "metrics"
    for cert in (g1, g2):
        job_run = command("ceremony-ocsp-sign", "--definition", str(hierarchy.definition), "--ca", CA, "--registry",
                          str(registry), "--store", str(stores[cert]), "--out", str(out), "--ca-cert", str(cert),
                          "--metrics-dir", str(metrics))
        assert job_run.returncode == 0, job_run.stderr
        renewal = command("ceremony-ocsp-signer", "--definition", str(hierarchy.definition), "--ca", CA, "--out",
                          str(out), "--ca-cert", str(cert), "--metrics-dir", str(metrics))
        assert renewal.returncode == 0 and "nothing to do" in renewal.stdout, renewal.stderr
    assert sorted(p.name for p in metrics.iterdir()) == sorted([
        f"ceremony_ocsp_signer_{CA}.g2.prom", f"ceremony_ocsp_signer_{CA}.prom", f"ceremony_ocsp_{CA}.g2.prom",
        f"ceremony_ocsp_{CA}.prom"])
    first, second = ((metrics / f"ceremony_ocsp_{s}.prom").read_text() for s in (CA, f"{CA}.g2"))
    assert f'ocsp_last_run_success{{ca="{CA}"}} 1' in first and "key_generation" not in first
    assert f'ocsp_last_run_success{{ca="{CA}",key_generation="2"}} 1' in second
    assert f'ocsp_signer_certificate_not_after_seconds{{ca="{CA}",key_generation="2"}}' in \
        (metrics / f"ceremony_ocsp_signer_{CA}.g2.prom").read_text()
    # a failed run of the second key (its store gone) is reported in its own file
    gone = command("ceremony-ocsp-sign", "--definition", str(hierarchy.definition), "--ca", CA, "--registry",
                   str(registry), "--store", str(tmp_path / "missing.sqlite3"), "--out", str(out), "--ca-cert", str(g2),
                   "--metrics-dir", str(metrics))
    assert gone.returncode != 0 and 'ocsp_last_run_success{ca="qualified"} 1' in \
        (metrics / f"ceremony_ocsp_{CA}.prom").read_text()
    assert f'ocsp_last_run_success{{ca="{CA}",key_generation="2"}} 0' in \
        (metrics / f"ceremony_ocsp_{CA}.g2.prom").read_text()


def command(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """One of the suite's console scripts, as a unit on the CA host runs it (the token's PIN from the environment)."""
    return subprocess.run([str(REPO / ".venv" / "bin" / name), *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300,
                          env={**os.environ, "SOFTHSM2_CONF": str(SOFTHSM_CONF)})


def test_key_generations_with_a_gap_is_refused(hierarchy: Hierarchy, tmp_path: Path) -> None:
    """A lost certificate between two generations: one message naming the files, nothing listed, nothing written."""
    out = copy_of(hierarchy, tmp_path)
    shutil.copy(out / f"{CA}.crt.pem", out / f"{CA}.g3.crt.pem")  # generation 2 missing
    before = tree(out)
    listed = command("ceremony-ocsp-signer", "--definition", str(hierarchy.definition), "--ca", CA, "--out", str(out),
                     "--key-generations")
    assert listed.returncode != 0 and listed.stdout == ""
    assert errors_of(listed) == [f"error: {out}: the certificates of {CA!r} skip a generation ({CA}.crt.pem, "
                                 f"{CA}.g3.crt.pem); restore the missing file first"]
    assert tree(out) == before


# --- bad input: one message, nothing changed -----------------------------------------------------------------------
def test_rekey_onto_a_label_that_exists_is_refused(hierarchy: Hierarchy, tmp_path: Path) -> None:
    out = copy_of(hierarchy, tmp_path)
    defn = load_definition(hierarchy.definition)
    registry = out / f"{CA}-registry.sqlite3"
    issue(defn, out, registry, "Holder")
    tok = hierarchy.tokens[CA]
    label = key_label_for(defn.model.cas[CA].hsm.key_label, 2)
    hsm = Hsm(module=tok.module, token=TokenRef(label=tok.label), key_label="x", pin_env=tok.pin_env)
    with open_session(hsm, pin_source_for(hsm, interactive=False)) as session:
        session.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: label, Attribute.TOKEN: True,
                               Attribute.PRIVATE: False, Attribute.VALUE: b"taken"})
    try:
        snapshot = (state(hierarchy, out), registry.read_bytes())
        refused = invoke("ceremony.rekey-subordinate", "--ca", CA, "--definition", str(hierarchy.definition),
                         "--out", str(out), "--rehearsal")
        assert refused.returncode != 0 and len(errors_of(refused)) == 1, refused.stderr
        assert label in refused.stderr and "exist on the token already" in refused.stderr
        assert "Sign-in" not in refused.stdout
        assert (state(hierarchy, out), registry.read_bytes()) == snapshot
        # the ceremony itself refuses it at token-open, before anything is generated
        with pytest.raises(HsmError, match=f"{label!r} already exists on"):
            rekey_key_ceremony(defn, CA, out, console(), rehearsal=True, interactive=False)
        assert (state(hierarchy, out), registry.read_bytes()) == snapshot
    finally:
        with open_session(hsm, pin_source_for(hsm, interactive=False)) as session:
            for obj in list(session.get_objects({Attribute.LABEL: label})):
                obj.destroy()


def test_certifying_the_same_key_again_is_refused(hierarchy: Hierarchy, tmp_path: Path) -> None:
    out = copy_of(hierarchy, tmp_path)
    defn = load_definition(hierarchy.definition)
    shutil.copyfile(out / f"{CA}.csr.pem", out / f"{CA}.g2.csr.pem")  # generation 1's key as a "new" one
    snapshot = state(hierarchy, out)
    refused = invoke("ceremony.certify-rekey", "--ca", CA, "--definition", str(hierarchy.definition), "--out",
                     str(out), "--rehearsal")
    assert refused.returncode != 0 and len(errors_of(refused)) == 1, refused.stderr
    assert "a re-key certifies a new key" in errors_of(refused)[0] and "Sign-in" not in refused.stdout
    with pytest.raises(RequestError, match=f"is the key of {CA}.crt.pem"):
        certify_rekey_ceremony(defn, CA, out, console(), rehearsal=True, interactive=False)
    assert state(hierarchy, out) == snapshot
    (out / f"{CA}.g2.csr.pem").unlink()
    with pytest.raises(RequestError, match="no CSR of generation 2"):
        certify_rekey_ceremony(defn, CA, out, console(), rehearsal=True, interactive=False)


def test_the_crl_job_refuses_a_generation_it_cannot_find(hierarchy: Hierarchy, tmp_path: Path) -> None:
    out = copy_of(hierarchy, tmp_path)
    defn = load_definition(hierarchy.definition)
    registry = out / f"{CA}-registry.sqlite3"
    rekey(defn, out)
    issue(defn, out, registry, "Second Generation")
    lonely = tmp_path / "only-g1"
    lonely.mkdir()
    shutil.copyfile(out / f"{CA}.crt.pem", lonely / f"{CA}.crt.pem")
    pub = tmp_path / "pub"
    before = registry.read_bytes()
    with pytest.raises(OutputError, match=rf"generation\(s\) 2 of 'qualified'.*{CA}\.g2\.crt\.pem"):
        run_crl_job(defn, CA, registry, pub, ca_cert=lonely / f"{CA}.crt.pem")
    assert not pub.exists() or tree(pub) <= {f".state/{CA}.lock"}
    assert registry.read_bytes() == before


# --- the registry: schema v3 -----------------------------------------------------------------------------------
def test_a_v2_registry_migrates_to_v3_after_a_verified_backup(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    # a registry as the suite of schema v2 wrote it (its two migrations, its columns)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript("CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (2);"
                       + registry_module.MIGRATIONS[0] + ";" + registry_module.MIGRATIONS[1])
    for serial, sha, part in ((7, "0" * 64, None), (8, "1" * 64, 1)):
        conn.execute("INSERT INTO certificates (serial, subject, profile, not_before, not_after, sha256, status, "
                     "crl_partition) VALUES (?, ?, 'p', ?, ?, ?, 'good', ?)",
                     (serial.to_bytes(20, "big"), f"CN={serial}", int(now.timestamp()) - 86400,
                      int(now.timestamp()) + 9 * 86400, sha, part))
    conn.commit()
    v2_rows = conn.execute("SELECT * FROM certificates ORDER BY serial").fetchall()
    conn.close()
    with Registry.open(path) as reg:
        assert reg.schema_version == 3 and reg.migration_backup is not None
        backup = reg.migration_backup
        reg.revoke(7, "superseded", now=now)
        assert [(r.serial, r.issuer_generation, r.crl_partition) for r in reg] == [(7, 1, None), (8, 1, 1)]
        assert reg.crl_scopes_by_generation(now) == {1: (True, [1])} and reg.issuer_generations() == [1]
        assert reg.count_revoked_of([1]) == 1 and reg.count_revoked_of([2]) == 0
        assert len(b"".join(reg.iter_revoked_packed(generations=[1]))) == 45
        assert b"".join(reg.iter_revoked_packed(generations=[2])) == b""
    assert backup.name.startswith("registry-pre-migration-v2-to-v3-")
    assert rb.inspect(backup).schema_version == 2
    conn = sqlite3.connect(backup)
    assert conn.execute("SELECT * FROM certificates ORDER BY serial").fetchall() == v2_rows
    conn.close()
    # a generation that is not one is refused, the registry unchanged
    before = path.read_bytes()
    with Registry.open(path) as reg:
        for bad in (0, -1, True, "2"):
            with pytest.raises(RegistryError, match=r"issuer generation .* is not allowed"):
                reg.add(CertRecord(9, "CN=c", "p", now, now + dt.timedelta(days=1), "2" * 64, "good",
                                   issuer_generation=bad))  # type: ignore[arg-type]
        assert reg.count() == 2
    assert path.read_bytes() == before


# --- names ---------------------------------------------------------------------------------------------------------
def test_generation_names(tmp_path: Path) -> None:
    assert generation_url("http://pki.example/crl/qualified.crl", 1) == "http://pki.example/crl/qualified.crl"
    assert generation_url("http://pki.example/crl/qualified.crl", 3) == "http://pki.example/crl/qualified.g3.crl"
    assert generation_url("http://pki.example/crl/q", 2) == "http://pki.example/crl/q.g2"
    with pytest.raises(OutputError, match="must end with a file name"):
        generation_url("http://pki.example/crl/", 2)
    assert key_label_for("qualified-ca", 1) == "qualified-ca" and key_label_for("qualified-ca", 2) == "qualified-ca.g2"
    defn = load_definition(write_definition(tmp_path / "pki.yml", base_definition_data()))
    ca = defn.model.cas[CA]
    view = ca_for_generation(ca, 2)
    assert view.hsm.key_label == f"{ca.hsm.key_label}.g2" and view.hsm.sealing_label == ca.hsm.sealing_label
    assert view.publication.certificate_url == generation_url(ca.publication.certificate_url, 2)
    assert view.ocsp is not None and ca.ocsp is not None and view.ocsp.url == generation_url(ca.ocsp.url, 2)
    assert view.hsm.ocsp_signer_label(view.ocsp) == f"{ca.hsm.key_label}.g2-ocsp"
    assert ca_for_generation(ca, 1) is ca


def test_destroying_a_key_of_a_rekeyed_ca_names_its_key_generation(hierarchy: Hierarchy, tmp_path: Path) -> None:
    """A re-keyed CA holds two keys: ``ceremony.destroy-key`` destroys none of them without ``--key-generation``
    (one message, nothing changed), refuses a number that names no key, and destroys exactly the key named (here
    the re-key's, so that the module's first key stays for the other tests); the other key stays on the token."""
    out = copy_of(hierarchy, tmp_path)
    defn = load_definition(hierarchy.definition)
    rekey(defn, out)
    g2_digest = spki_sha256(x509.load_pem_x509_certificate((out / f"{CA}.g2.crt.pem").read_bytes()).public_key())
    data = copy.deepcopy(hierarchy.data)
    data["cas"][CA]["destruction"] = {"decision": "Décision n°9 du Comité", "date": dt.date(2030, 1, 1),
                                      "spki_sha256": g2_digest}
    decided = write_definition(tmp_path / "decided.yml", data)
    snapshot = state(hierarchy, out)
    base = defn.model.cas[CA].hsm.key_label
    for extra, message in (((), "has had 2 keys (key generations 1, 2, re-keyed): name the one to destroy with "
                                "--key-generation (allowed: 1, 2)"),
                           (("--key-generation", "3"), "--key-generation 3: not a key generation of 'qualified' "
                                                       "('qualified' has no certificate of generation 3"),
                           (("--key-generation", "two"), "--key-generation 'two': not a key generation (allowed: a "
                                                         "whole number from 1")):
        refused = invoke("ceremony.destroy-key", "--ca", CA, "--definition", str(decided), "--out", str(out),
                         "--rehearsal", *extra)
        assert refused.returncode != 0 and len(errors_of(refused)) == 1, refused.stderr
        assert message in errors_of(refused)[0] and "Sign-in" not in refused.stdout
        assert state(hierarchy, out) == snapshot
    with pytest.raises(RequestError, match="name the one to destroy with --key-generation"):
        destroy_key_ceremony(load_definition(decided), CA, out, console(), rehearsal=True, interactive=False)
    assert state(hierarchy, out) == snapshot
    with recorded(load_definition(decided), "key-destruction", out) as rec:
        result = destroy_key_ceremony(load_definition(decided), CA, out, rec, rehearsal=True, interactive=False,
                                      key_generation=2)
    assert result.spki_sha256 == g2_digest
    labels = {label for label, _ in objects(hierarchy.tokens[CA])}
    assert base in labels and f"{base}.g2" not in labels
    report = json.loads(result.report.read_text())
    assert (report["key_generation"], report["key_label"], report["certificates"]) == (2, f"{base}.g2",
                                                                                      [f"{CA}.g2.crt.pem"])
    assert audit_exit(rec.path, out) == 0
