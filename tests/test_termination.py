"""CA termination (issue 18, item 5) on real SoftHSM tokens: the last revocations, the final CRL (nextUpdate
99991231235959Z, RFC 5280 5.1.2.6), the final OCSP responses and the archive, verified offline.

One module-scoped setup runs the CA ceremonies once with transcripts (root key, subordinate key and signing, the
OCSP signer), issues three end-entity certificates, revokes one and publishes a CRL with the CRL job; each test works
on its own copy of that output directory (the termination changes no token object, so the tokens are shared).
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, SOFTHSM_CONF, TestToken, base_definition_data, softhsm_token, tree, write_definition
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute

from ceremony.ca.registry import Registry, default_path
from ceremony.ceremonies import termination
from ceremony.ceremonies.issuance import issue_certificate
from ceremony.ceremonies.ocsp_signer import ocsp_signer_ceremony
from ceremony.ceremonies.rekey import REKEY_CERTIFY, REKEY_KEY, certify_rekey_ceremony, rekey_key_ceremony
from ceremony.ceremonies.root_key import root_ceremony
from ceremony.ceremonies.sign_subordinate import sign_subordinate_ceremony
from ceremony.ceremonies.subordinate_key import subordinate_key_ceremony
from ceremony.ceremonies.termination import terminate_ceremony
from ceremony.common import outputs
from ceremony.common.display import make_console
from ceremony.common.errors import DefinitionError, HsmError, OutputError, RegistryError, VerificationError
from ceremony.crl.job import run_crl_job
from ceremony.definition.model import Hsm, LoadedDefinition, TokenRef, load_definition
from ceremony.hsm.session import open_session, pin_source_for
from ceremony.ocsp.job import run_ocsp_job, store_issuer_sha256
from ceremony.ocsp.store import ResponseStore
from ceremony.transcript import chain as transcript
from ceremony.transcript.anchor import load_anchor
from ceremony.transcript.archive import MANIFEST_MEMBER, verify_archive
from ceremony.transcript.audit import verify
from ceremony.transcript.ledger import table_lines, verify_directory
from ceremony.transcript.recorder import ConsoleRecorder

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("termination")]
CA = "qualified"
INVOKE = str(REPO / ".venv" / "bin" / "invoke")
DECISION = {"decided": dt.date(2026, 1, 15), "reference": "Décision n°12 du Comité de Certification et de Signature",
            "successor_body": "Archives nationales du Mali"}


@dataclass
class Setup:
    data: dict[str, Any]
    definition: Path  # without a termination decision
    decided: Path  # with one
    out: Path
    tokens: dict[str, TestToken]
    serials: list[int]  # issued, in order; the first is revoked (keyCompromise) before the termination


def quiet() -> Any:
    return make_console(file=open(os.devnull, "w"))


def console() -> ConsoleRecorder:
    return ConsoleRecorder(rehearsal=True, console=quiet())


def recorded(defn: LoadedDefinition, script: str, out: Path) -> Any:
    return transcript.open_transcript(out / "transcripts", script, defn, rehearsal=True, console=quiet())



def _csr(path: Path, cn: str) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    given, surname = cn.split(" ", 1)
    path.write_bytes(x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "ML"), x509.NameAttribute(NameOID.GIVEN_NAME, given),
        x509.NameAttribute(NameOID.SURNAME, surname), x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])).sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return path


def _hierarchy(tmp: Path, mp: pytest.MonkeyPatch, prefix: str) \
        -> tuple[dict[str, Any], dict[str, TestToken], Path, Path, LoadedDefinition, Path]:
    """A root and the subordinate on tokens of their own (PIN variables set through ``mp``), the definition and a copy
    that records the termination decision, the CA ceremonies and the subordinate's OCSP signer, in ``tmp/out``.
    Returns ``(data, tokens, definition, decided, defn, out)``."""
    data = copy.deepcopy(base_definition_data())
    tokens = {name: softhsm_token(mp, f"{prefix}{name}") for name in ("root", CA)}
    for name, ca in data["cas"].items():
        tok = tokens[name]
        ca["hsm"].update(module=tok.module, token={"label": tok.label}, pin_env=tok.pin_env,
                         so_pin_env=tok.so_pin_env)
        ca["backup"] = {"mode": "none"}
    definition = write_definition(tmp / "pki.yml", data)
    decided_data = copy.deepcopy(data)
    decided_data["cas"][CA]["termination"] = dict(DECISION)
    decided = write_definition(tmp / "pki-decided.yml", decided_data)
    defn = load_definition(definition)
    out = tmp / "out"
    with recorded(defn, "root-key-generation", out) as rec:
        root_ceremony(defn, out, rec, rehearsal=True, interactive=False)
    with recorded(defn, "subordinate-key-generation", out) as rec:
        subordinate_key_ceremony(defn, CA, out, rec, rehearsal=True, interactive=False)
    with recorded(defn, "subordinate-signing", out) as rec:
        sign_subordinate_ceremony(defn, CA, out / f"{CA}.csr.pem", out, rec, rehearsal=True, interactive=False)
    with recorded(defn, "ocsp-signer-certification", out) as rec:
        ocsp_signer_ceremony(defn, CA, out, rec, rehearsal=True, interactive=False)
    return data, tokens, definition, decided, defn, out


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("termination")
    with pytest.MonkeyPatch.context() as mp:
        data, tokens, definition, decided, defn, out = _hierarchy(tmp, mp, "tm-")
        serials = []
        with Registry.open(default_path(out, CA), create=True) as reg:
            for i, cn in enumerate(("Awa Traoré", "Moussa Keita", "Kadiatou Sangaré")):
                issued = issue_certificate(defn, CA, "qes-natural-person", _csr(tmp / f"ee{i}.csr.pem", cn),
                                           out / "end-entity", reg, console(), issuer_cert_path=out / f"{CA}.crt.pem",
                                           rehearsal=True, interactive=False)
                serials.append(issued.serial)
            reg.revoke(serials[0], "keyCompromise")
        run_crl_job(defn, CA, default_path(out, CA), out / "crl", ceremony_out=out, force=True)
        yield Setup(data, definition, decided, out, tokens, serials)


def copy_of(setup: Setup, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(setup.out, out)
    return out


def objects(tok: TestToken) -> set[tuple[str, str]]:
    hsm = Hsm(module=tok.module, token=TokenRef(label=tok.label), key_label="x", pin_env=tok.pin_env)
    with open_session(hsm, pin_source_for(hsm, interactive=False), rw=False) as session:
        return {(str(o.label), type(o).__name__) for o in session.get_objects()}


def registry_rows(out: Path) -> list[tuple[Any, ...]]:
    with Registry.open(default_path(out, CA)) as reg:
        return [(r.serial, r.status, r.revoked_at, r.reason) for r in reg.list()]


def state(setup: Setup, out: Path) -> tuple[Any, ...]:
    """Everything a refused or interrupted termination must leave as it was."""
    files = {p: (out / p).read_bytes() for p in sorted(tree(out)) if not p.startswith("transcripts/")}
    return files, registry_rows(out), {n: objects(t) for n, t in setup.tokens.items()}


def invoke(*args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CEREMONY_")}
    return subprocess.run([INVOKE, *args], cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env={**clean, "SOFTHSM2_CONF": str(SOFTHSM_CONF)}, timeout=300)


def result_time(transcript_path: Path) -> str:
    """The ceremony's time as the transcript's revocations evidence records it."""
    records = [json.loads(line) for line in transcript_path.read_text().splitlines()]
    return next(r["data"]["revoked_at"] for r in records if r.get("type") == "evidence"
                and r.get("name") == "revocations")


def test_termination_revokes_signs_the_final_crl_and_archives(setup: Setup, tmp_path: Path) -> None:
    out = copy_of(setup, tmp_path)
    defn = load_definition(setup.decided)
    published_before = x509.load_der_x509_crl((out / "crl" / "qualified.crl").read_bytes())
    with recorded(defn, "ca-termination", out) as rec:
        result = terminate_ceremony(defn, CA, out, rec, rehearsal=True, interactive=False)
    # the two certificates still good are revoked (cessationOfOperation); the one revoked before keeps its reason
    assert sorted(result.revoked) == sorted(setup.serials[1:])
    with Registry.open(default_path(out, CA)) as reg:
        records = {r.serial: r for r in reg.list()}
    assert {s: records[s].reason for s in setup.serials} == {
        setup.serials[0]: "keyCompromise", setup.serials[1]: "cessationOfOperation",
        setup.serials[2]: "cessationOfOperation"}
    # the final CRL: every certificate, nextUpdate 99991231235959Z as GeneralizedTime, after the published one
    der = result.crl_der.read_bytes()
    crl = x509.load_der_x509_crl(der)
    assert sorted(r.serial_number for r in crl) == sorted(setup.serials)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    before = published_before.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number == result.crl_number == before + 1
    text = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", str(result.crl_der), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "Next Update: Dec 31 23:59:59 9999 GMT" in text
    asn1 = subprocess.run(["openssl", "asn1parse", "-inform", "DER", "-in", str(result.crl_der)],
                          capture_output=True, text=True, check=True).stdout
    assert "GENERALIZEDTIME   :99991231235959Z" in asn1
    ca_cert = x509.load_pem_x509_certificate((out / f"{CA}.crt.pem").read_bytes())
    assert crl.is_signature_valid(ca_cert.public_key())
    subprocess.run(["openssl", "crl", "-inform", "DER", "-in", str(result.crl_der), "-noout", "-CAfile",
                    str(out / f"{CA}.crt.pem")], capture_output=True, text=True, check=True)
    # the CRL job's publication directory now holds the final CRL
    assert (out / "crl" / "qualified.crl").read_bytes() == der
    # the final OCSP responses: every certificate, both CertID hashes, until the signer certificate's end
    assert result.ocsp_store is not None and result.ocsp_responses == 3 * 2
    signer = x509.load_pem_x509_certificate((out / f"{CA}.ocsp.crt.pem").read_bytes())
    with ResponseStore.open(result.ocsp_store, read_only=True) as store:
        assert store.count() == 6
        stored = [store.get(serial, "sha256") for serial in setup.serials]
    for serial, response in zip(setup.serials, stored, strict=True):
        assert response is not None and response.status == "revoked"
        parsed = ocsp.load_der_ocsp_response(response.der)
        assert parsed.serial_number == serial and parsed.certificate_status == ocsp.OCSPCertStatus.REVOKED
        assert parsed.next_update_utc == signer.not_valid_after_utc
        assert parsed.revocation_reason == (x509.ReasonFlags.key_compromise if serial == setup.serials[0]
                                            else x509.ReasonFlags.cessation_of_operation)
    # the archive verifies, through the task too; the termination's own transcript verifies and names it
    check = verify_archive(result.archive, str(out / "root.crt.pem"), rehearsal=True)
    assert check.exit_code == 0, check.lines()
    names = [n for n, _ in check.transcripts]
    assert len(names) == 4 and all("subordinate-signing" not in n or s == "intact, anchored"
                                   for n, s in check.transcripts)
    with tarfile.open(result.archive) as tar:
        members = tar.getnames()
    assert members[0] == MANIFEST_MEMBER
    assert {f"out/{CA}-registry.sqlite3", "out/termination/qualified/qualified-final.crl", f"out/{CA}.crt.pem",
            "out/root.crt.pem", "out/termination/qualified/qualified-final.ocsp.sqlite3",
            "out/crl/qualified.crl"} <= set(members)
    assert not any(".state" in m or m.endswith("-wal") for m in members)
    task = invoke("audit.verify-archive", str(result.archive), "--trust", str(out / "root.crt.pem"), "--rehearsal")
    assert task.returncode == 0, task.stdout + task.stderr
    assert verify(rec.path, out, trust=load_anchor(str(out / "root.crt.pem"), out), rehearsal=True).exit_code == 0
    records = [json.loads(line) for line in rec.path.read_text().splitlines()]
    artifacts = {r["path"]: r for r in records if r["type"] == "artifact"}
    assert artifacts["termination/qualified.termination-archive.tar"]["kind"] == "termination-archive"
    assert records[-1]["verifier"]["path"] == f"{CA}.seal.crt.pem"  # the sealing key seals, never the CA key
    manifest = json.loads((out / "manifest.json").read_text())
    kinds = {e["kind"] for e in manifest["artifacts"]}
    assert {"final-crl", "termination-archive", "final-ocsp-store"} <= kinds
    # no CRL follows the final one: the CRL job refuses, even forced
    with pytest.raises(VerificationError, match="final CRL"):
        run_crl_job(defn, CA, default_path(out, CA), out / "crl", ceremony_out=out, force=True)
    assert (out / "crl" / "qualified.crl").read_bytes() == der
    # nor does the OCSP job write into the final store once it is installed as the responder's: one message, before
    # the HSM, the store unchanged (through the task, as the timer's command line does)
    assert result.ocsp_stores == (result.ocsp_store,)
    with ResponseStore.open(result.ocsp_store, read_only=True) as store:
        assert store.final == result_time(rec.path)
    store_bytes = result.ocsp_store.read_bytes()
    with pytest.raises(VerificationError, match="the OCSP store holds the final responses of 'qualified'"):
        run_ocsp_job(defn, CA, default_path(out, CA), result.ocsp_store, ceremony_out=out)
    task = invoke("ocsp.sign", "--ca", CA, "--definition", str(setup.decided), "--out", str(out), "--store",
                  str(result.ocsp_store))
    errors = [line for line in task.stderr.splitlines() if line.startswith("error:")]
    assert task.returncode != 0 and len(errors) == 1, task.stdout + task.stderr
    assert "final responses of 'qualified'" in errors[0] and "disable this job's timer" in errors[0]
    assert result.ocsp_store.read_bytes() == store_bytes
    # a second termination is refused: the published CRL is final already
    with pytest.raises(OutputError, match="final CRL already"):
        terminate_ceremony(defn, CA, out, console(), rehearsal=True, interactive=False)


def test_a_byte_changed_in_the_archive_names_the_member(setup: Setup, tmp_path: Path) -> None:
    out = copy_of(setup, tmp_path)
    defn = load_definition(setup.decided)
    with recorded(defn, "ca-termination", out) as rec:
        result = terminate_ceremony(defn, CA, out, rec, rehearsal=True, interactive=False)
    tampered = tmp_path / "tampered.tar"
    shutil.copy(result.archive, tampered)
    with tarfile.open(tampered) as tar:
        member = tar.getmember(f"out/{CA}.crt.pem")
    with open(tampered, "r+b") as handle:
        handle.seek(member.offset_data + 100)
        byte = handle.read(1)
        handle.seek(member.offset_data + 100)
        handle.write(bytes([byte[0] ^ 0x01]))
    check = verify_archive(tampered, str(out / "root.crt.pem"), rehearsal=True)
    assert check.exit_code == 1
    assert any(p.startswith(f"member out/{CA}.crt.pem: SHA-256") for p in check.problems), check.problems
    task = invoke("audit.verify-archive", str(tampered), "--trust", str(out / "root.crt.pem"), "--rehearsal")
    assert task.returncode == 1 and f"member out/{CA}.crt.pem: SHA-256" in task.stdout
    # without an anchor nothing passes
    assert verify_archive(result.archive, None, rehearsal=True).exit_code == 64
    # a member rewritten with its manifest line passes the archive's own check, not the termination's transcript,
    # which recorded the archive's SHA-256
    rewritten = tmp_path / "rewritten.tar"
    with tarfile.open(result.archive) as src, tarfile.open(rewritten, "w", format=tarfile.PAX_FORMAT) as dst:
        manifest = json.loads(src.extractfile(MANIFEST_MEMBER).read())  # type: ignore[union-attr]
        changed, target = b"a note added after the ceremony\n", "out/crl/qualified.crl.pem"  # no transcript's artifact
        for entry in manifest["members"]:
            if entry["path"] == target:
                data = src.extractfile(entry["path"]).read() + changed  # type: ignore[union-attr]
                entry["sha256"], entry["size"] = hashlib.sha256(data).hexdigest(), len(data)
        for member in src.getmembers():
            body = json.dumps(manifest).encode() if member.name == MANIFEST_MEMBER else \
                src.extractfile(member).read() + (changed if member.name == target else b"")  # type: ignore
            member.size = len(body)
            dst.addfile(member, io.BytesIO(body))
    passed = verify_archive(rewritten, str(out / "root.crt.pem"), rehearsal=True)
    assert passed.exit_code == 0, passed.problems
    anchor = load_anchor(str(out / "root.crt.pem"), out)
    assert verify(rec.path, out, trust=anchor, rehearsal=True).exit_code == 0
    shutil.copy(rewritten, result.archive)
    audit = verify(rec.path, out, trust=anchor, rehearsal=True)
    assert audit.exit_code == 1 and any("termination-archive.tar changed after the ceremony" in str(p)
                                        for p in audit.problems)


def test_refused_without_a_decision_nothing_changes(setup: Setup, tmp_path: Path) -> None:
    out = copy_of(setup, tmp_path)
    before = state(setup, out)
    refused = invoke("ceremony.terminate", "--ca", CA, "--definition", str(setup.definition), "--out", str(out),
                     "--rehearsal")
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode != 0 and len(errors) == 1, refused.stdout + refused.stderr
    assert f"cas.{CA}.termination" in errors[0] and "decided: YYYY-MM-DD" in errors[0]
    assert "Sign-in" not in refused.stdout
    with pytest.raises(DefinitionError, match=f"cas.{CA}.termination"):
        terminate_ceremony(load_definition(setup.definition), CA, out, console(), rehearsal=True, interactive=False)
    # a decision dated in the future, the root, an unknown reason: each refused by name
    future = copy.deepcopy(setup.data)
    future["cas"][CA]["termination"] = {**DECISION, "decided": dt.date.today() + dt.timedelta(days=2)}
    with pytest.raises(DefinitionError, match=r"termination\.decided"):
        terminate_ceremony(load_definition(write_definition(tmp_path / "future.yml", future)), CA, out, console(),
                           rehearsal=True, interactive=False)
    root = copy.deepcopy(setup.data)
    root["cas"]["root"]["termination"] = dict(DECISION)
    with pytest.raises(DefinitionError, match="is the root"):
        terminate_ceremony(load_definition(write_definition(tmp_path / "root.yml", root)), "root", out, console(),
                           rehearsal=True, interactive=False)
    # share files left in the output directory: the archive never holds a secret
    share = out / "backup" / f"{CA}.share-1-awa.txt"
    share.parent.mkdir()
    share.write_text("a share page")
    with pytest.raises(OutputError, match="share files are still there"):
        terminate_ceremony(load_definition(setup.decided), CA, out, console(), rehearsal=True, interactive=False)
    shutil.rmtree(share.parent)
    # a key generation whose CRL was never published (a generation-2 certificate of another key, no qualified.g2.crl)
    rekeyed = out / f"{CA}.g2.crt.pem"
    shutil.copyfile(out / "root.crt.pem", rekeyed)
    with pytest.raises(OutputError, match=r"qualified\.g2\.crl: no published CRL .*key generation 2"):
        terminate_ceremony(load_definition(setup.decided), CA, out, console(), rehearsal=True, interactive=False)
    rekeyed.unlink()
    # no published CRL where the CRL job publishes (inside the output directory or not)
    for elsewhere in (out / "elsewhere", tmp_path / "published"):
        with pytest.raises(OutputError, match="no published CRL"):
            terminate_ceremony(load_definition(setup.decided), CA, out, console(), rehearsal=True, interactive=False,
                               crl_dir=elsewhere)
    # a registry that is not where --registry says, through the task: one message naming the option
    missing = invoke("ceremony.terminate", "--ca", CA, "--definition", str(setup.decided), "--out", str(out),
                     "--rehearsal", "--registry", str(tmp_path / "registry.sqlite3"))
    errors = [line for line in missing.stderr.splitlines() if line.startswith("error:")]
    assert missing.returncode != 0 and len(errors) == 1, missing.stdout + missing.stderr
    assert f"{tmp_path / 'registry.sqlite3'}: the registry of 'qualified' is not there" in errors[0]
    assert "--registry PATH" in errors[0]
    reason = copy.deepcopy(setup.data)
    reason["cas"][CA]["termination"] = {**DECISION, "reason": "certificateHold"}
    with pytest.raises(DefinitionError, match=r"termination\.reason"):
        load_definition(write_definition(tmp_path / "reason.yml", reason))
    assert state(setup, out) == before


def test_ctrl_c_in_a_step_leaves_nothing_half_written(setup: Setup, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C once the CRL is signed and the registry's copy revoked: nothing is published, the registry is as it
    was, no staging directory is left."""
    out = copy_of(setup, tmp_path)
    before = state(setup, out)

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(termination, "write_archive", interrupted)
    with pytest.raises(KeyboardInterrupt):
        terminate_ceremony(load_definition(setup.decided), CA, out, console(), rehearsal=True, interactive=False)
    after = state(setup, out)
    number_state = "crl/.state/qualified.crlnumber"  # a reserved CRL number is never reused (crl/state.py)
    assert {k: v for k, v in after[0].items() if k != number_state} == \
        {k: v for k, v in before[0].items() if k != number_state}
    assert after[1:] == before[1:]
    assert not [p for p in out.iterdir() if p.name.startswith(".run-")]
    # the termination then runs to the end through the task, with the next CRL number; the whole directory verifies
    monkeypatch.undo()
    done = invoke("ceremony.terminate", "--ca", CA, "--definition", str(setup.decided), "--out", str(out),
                  "--rehearsal")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "audit.verify-archive" in done.stdout  # the next step the summary names
    archive = out / "termination" / f"{CA}.termination-archive.tar"
    assert verify_archive(archive, str(out / "root.crt.pem"), rehearsal=True).exit_code == 0
    crl = x509.load_der_x509_crl((out / "crl" / "qualified.crl").read_bytes())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 3  # 1 published, 2 burned
    directory = verify_directory(out, load_anchor(str(out / "root.crt.pem"), out), rehearsal=True)
    assert directory.exit_code == 0, table_lines(directory)


def assert_final(crl_path: Path, ca_cert_path: Path, number: int) -> x509.CertificateRevocationList:
    """A final CRL as a relying party's tools see it: nextUpdate 9999 as GeneralizedTime, the number, the signature
    under ``ca_cert_path`` (cryptography and openssl)."""
    crl = x509.load_der_x509_crl(crl_path.read_bytes())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == number
    asn1 = subprocess.run(["openssl", "asn1parse", "-inform", "DER", "-in", str(crl_path)], capture_output=True,
                          text=True, check=True).stdout
    assert "GENERALIZEDTIME   :99991231235959Z" in asn1
    text = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", str(crl_path), "-noout", "-text", "-CAfile",
                           str(ca_cert_path)], capture_output=True, text=True, check=True)
    assert "Next Update: Dec 31 23:59:59 9999 GMT" in text.stdout and "verify OK" in text.stderr + text.stdout
    assert crl.is_signature_valid(x509.load_pem_x509_certificate(ca_cert_path.read_bytes()).public_key())
    return crl


def published_number(path: Path) -> int:
    crl = x509.load_der_x509_crl(path.read_bytes())
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_a_partitioned_ca_gets_a_final_crl_per_partition_and_its_full_crl(setup: Setup, tmp_path: Path) -> None:
    """crl.partitions: 2 set after three certificates named the full CRL: the CRL job publishes the full CRL (still
    named) and both partitions; the termination signs a final CRL for each, after each one's own number."""
    out = copy_of(setup, tmp_path)
    data = copy.deepcopy(setup.data)
    data["cas"][CA]["crl"]["partitions"] = 2
    parts = load_definition(write_definition(tmp_path / "pki-parts.yml", data))
    data["cas"][CA]["termination"] = dict(DECISION)
    decided = load_definition(write_definition(tmp_path / "pki-parts-decided.yml", data))
    with Registry.open(default_path(out, CA)) as reg:
        for i, cn in enumerate(("Fatoumata Diarra", "Ibrahim Coulibaly", "Mariam Touré", "Oumar Cissé")):
            issue_certificate(parts, CA, "qes-natural-person", _csr(tmp_path / f"p{i}.csr.pem", cn), out / "end-entity",
                              reg, console(), issuer_cert_path=out / f"{CA}.crt.pem", rehearsal=True,
                              interactive=False)
        run_crl_job(parts, CA, reg.path, out / "crl", ceremony_out=out, force=True)
        named = {r.serial: r.crl_partition for r in reg.list()}
    published = {p.name: published_number(p) for p in (out / "crl").glob("*.crl")}
    assert len(published) == 3, published  # the full CRL and two partitions
    with recorded(decided, "ca-termination", out) as rec:
        result = terminate_ceremony(decided, CA, out, rec, rehearsal=True, interactive=False)
    assert [c.partition for c in result.crls] == [None, 0, 1]
    assert len(result.revoked) == 2 + 4
    for final in result.crls:
        live = out / "crl" / final.path.name.replace("-final.crl", ".crl")
        crl = assert_final(final.path, out / f"{CA}.crt.pem", published[live.name] + 1)
        assert live.read_bytes() == final.path.read_bytes()  # it took the published one's place
        serials = sorted(r.serial_number for r in crl)
        if final.partition is None:  # the full CRL lists every revocation
            assert serials == sorted(named) and len(serials) == 7
        else:
            assert serials == sorted(s for s, p in named.items() if p == final.partition)
            idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
            assert idp.critical and idp.value.only_contains_user_certs
    check = verify_archive(result.archive, str(out / "root.crt.pem"), rehearsal=True)
    assert check.exit_code == 0, check.lines()
    assert sorted(c["path"] for c in check.final_crls) == sorted(f"out/termination/{CA}/{c.path.name}"
                                                                 for c in result.crls)
    task = invoke("audit.verify-archive", str(result.archive), "--trust", str(out / "root.crt.pem"), "--rehearsal")
    assert task.returncode == 0 and task.stdout.count("final CRL out/termination/") == 3, task.stdout
    # one partition's final CRL swapped for another's in the archive (members and manifest rewritten): refused
    assert verify(rec.path, out, trust=load_anchor(str(out / "root.crt.pem"), out), rehearsal=True).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert {e.get("partition") for e in manifest["artifacts"] if e["kind"] == "final-crl"} == {None, 0, 1}


def host_layout(setup: Setup, tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """A copy of the output directory laid out as on the CA host: the registry at the path the host's configuration
    names, the CRL job's publication directory beside the CA's directory. Returns (out, var, etc, registry)."""
    out = copy_of(setup, tmp_path)
    var = tmp_path / "var"
    (var / "registry").mkdir(parents=True)
    live_registry = var / "registry" / "registry.sqlite3"
    shutil.move(default_path(out, CA), live_registry)
    shutil.move(out / "crl", var / "crl")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / f"{CA}.conf").write_text(f"[registry]\nca = {CA}\npath = {live_registry}\n")
    return out, var, etc, live_registry


def test_the_ca_hosts_layout_registry_and_crl_directory_beside_the_ca_directory(setup: Setup, tmp_path: Path) -> None:
    """As installed (roles subordinate_ca, crl_signer): the CA's directory holds its certificates and transcripts,
    the registry is the one /etc/ceremony/<ca>.conf names and the CRL job publishes in a directory of its own. The
    final CRL and the revoked registry are outputs under termination/<ca>/ and replace the live files after the
    seal."""
    out, var, etc, live_registry = host_layout(setup, tmp_path)
    rows_before = registry_rows_at(live_registry)
    defn = load_definition(setup.decided)
    live_store = var / "ocsp" / f"{CA}.sqlite3"  # the OCSP job's store (role ocsp_signer), made and filled by the job
    cert = x509.load_pem_x509_certificate((out / f"{CA}.crt.pem").read_bytes())
    ResponseStore.create(live_store, CA, store_issuer_sha256(cert)).close()
    run_ocsp_job(defn, CA, live_registry, live_store, ceremony_out=out, workers=1)
    # a store of another CA, or one open in the job (a -wal beside it): refused before anything happens
    other = var / "ocsp" / "other.sqlite3"
    ResponseStore.create(other, "another-ca", store_issuer_sha256(cert)).close()
    with pytest.raises(OutputError, match="belongs to CA 'another-ca'"):
        terminate_ceremony(defn, CA, out, console(), rehearsal=True, interactive=False, crl_dir=var / "crl",
                           config_dir=etc, ocsp_store=other)
    wal = live_store.with_name(live_store.name + "-wal")
    wal.write_bytes(b"frames")
    with pytest.raises(RegistryError, match="the OCSP store is open in another process"):
        terminate_ceremony(defn, CA, out, console(), rehearsal=True, interactive=False, crl_dir=var / "crl",
                           config_dir=etc, ocsp_store=live_store)
    wal.unlink()
    with recorded(defn, "ca-termination", out) as rec:
        result = terminate_ceremony(defn, CA, out, rec, rehearsal=True, interactive=False, crl_dir=var / "crl",
                                    config_dir=etc, ocsp_store=live_store)
    assert result.ocsp_store is not None and live_store.read_bytes() == result.ocsp_store.read_bytes()
    with pytest.raises(VerificationError, match="the OCSP store holds the final responses"):
        run_ocsp_job(defn, CA, live_registry, live_store, ceremony_out=out, workers=1)
    assert live_store.read_bytes() == result.ocsp_store.read_bytes()
    assert sorted(p.name for p in live_store.parent.iterdir()) == ["other.sqlite3", f"{CA}.sqlite3"]  # no side file
    assert result.crl_der == out / "termination" / CA / "qualified-final.crl"
    assert (var / "crl" / "qualified.crl").read_bytes() == result.crl_der.read_bytes()
    assert (var / "crl" / "qualified.crl.pem").read_bytes() == (out / "termination" / CA /
                                                                "qualified-final.crl.pem").read_bytes()
    kept = out / "termination" / CA / f"{CA}-registry.sqlite3"
    assert live_registry.read_bytes() == kept.read_bytes()
    after = {r[0]: r[1:] for r in registry_rows_at(live_registry)}
    assert {s: after[s][0] for s in setup.serials} == dict.fromkeys(setup.serials, "revoked")
    assert after[setup.serials[0]][2] == "keyCompromise" and len(rows_before) == len(after)
    assert not (out / "crl").exists() and not default_path(out, CA).exists()
    check = verify_archive(result.archive, str(out / "root.crt.pem"), rehearsal=True)
    assert check.exit_code == 0, check.lines()
    with tarfile.open(result.archive) as tar:
        names = set(tar.getnames())
    assert {f"out/termination/{CA}/{CA}-registry.sqlite3", f"out/termination/{CA}/qualified-final.crl"} <= names
    assert verify(rec.path, out, trust=load_anchor(str(out / "root.crt.pem"), out), rehearsal=True).exit_code == 0
    # the CRL job, run as the timer runs it on the host, refuses after the final CRL
    with pytest.raises(VerificationError, match="final CRL"):
        run_crl_job(defn, CA, live_registry, var / "crl", ceremony_out=out, force=True)


def registry_rows_at(path: Path) -> list[tuple[Any, ...]]:
    with Registry.open(path) as reg:
        return [(r.serial, r.status, r.revoked_at, r.reason) for r in reg.list()]


@pytest.fixture(scope="module")
def rekeyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """A CA re-keyed once, with OCSP: two certificates under the first key (one revoked), the re-key, the second
    key's OCSP signer, one certificate under the second key; the CRL job publishes both keys' CRLs."""
    tmp = tmp_path_factory.mktemp("termination-rekey")
    with pytest.MonkeyPatch.context() as mp:
        data, tokens, definition, decided, defn, out = _hierarchy(tmp, mp, "tm-rk")
        serials = []
        with Registry.open(default_path(out, CA), create=True) as reg:
            for i, cn in enumerate(("Awa Traoré", "Moussa Keita")):
                serials.append(issue_certificate(defn, CA, "qes-natural-person", _csr(tmp / f"a{i}.csr.pem", cn),
                                                 out / "end-entity", reg, console(),
                                                 issuer_cert_path=out / f"{CA}.crt.pem", rehearsal=True,
                                                 interactive=False).serial)
            reg.revoke(serials[0], "keyCompromise")
        with recorded(defn, REKEY_KEY, out) as rec:
            rekey_key_ceremony(defn, CA, out, rec, rehearsal=True, interactive=False)
        with recorded(defn, REKEY_CERTIFY, out) as rec:
            certify_rekey_ceremony(defn, CA, out, rec, rehearsal=True, interactive=False)
        with recorded(defn, "ocsp-signer-certification", out) as rec:
            ocsp_signer_ceremony(defn, CA, out, rec, rehearsal=True, interactive=False,
                                 ca_cert_path=out / f"{CA}.g2.crt.pem")
        with Registry.open(default_path(out, CA)) as reg:
            serials.append(issue_certificate(defn, CA, "qes-natural-person",
                                             _csr(tmp / "b.csr.pem", "Kadiatou Sangaré"),
                                             out / "end-entity", reg, console(),
                                             issuer_cert_path=out / f"{CA}.g2.crt.pem", rehearsal=True,
                                             interactive=False).serial)
        run_crl_job(defn, CA, default_path(out, CA), out / "crl", ceremony_out=out, force=True)
        yield Setup(data, definition, decided, out, tokens, serials)


def test_a_rekeyed_ca_gets_a_final_crl_set_per_key_each_signed_by_its_own_key(rekeyed: Setup, tmp_path: Path) -> None:
    out = copy_of(rekeyed, tmp_path)
    defn = load_definition(rekeyed.decided)
    first, second = out / f"{CA}.crt.pem", out / f"{CA}.g2.crt.pem"
    before = {n: published_number(out / "crl" / n) for n in ("qualified.crl", "qualified.g2.crl")}
    with recorded(defn, "ca-termination", out) as rec:
        result = terminate_ceremony(defn, CA, out, rec, rehearsal=True, interactive=False)
    assert [(c.key_generation, c.path.name) for c in result.crls] == [(2, "qualified.g2-final.crl"),
                                                                       (1, "qualified-final.crl")]
    by_key = {c.key_generation: c for c in result.crls}
    crl2 = assert_final(by_key[2].path, second, before["qualified.g2.crl"] + 1)
    crl1 = assert_final(by_key[1].path, first, before["qualified.crl"] + 1)
    assert [r.serial_number for r in crl1] == sorted(rekeyed.serials[:2])  # what the first key signed
    assert [r.serial_number for r in crl2] == rekeyed.serials[2:]
    # each under its own key only: the other generation's certificate does not verify it
    for path, other in ((by_key[1].path, second), (by_key[2].path, first)):
        wrong = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", str(path), "-noout", "-CAfile", str(other)],
                               capture_output=True, text=True)
        assert "verify OK" not in wrong.stdout + wrong.stderr
    assert (out / "crl" / "qualified.crl").read_bytes() == by_key[1].path.read_bytes()
    assert (out / "crl" / "qualified.g2.crl").read_bytes() == by_key[2].path.read_bytes()
    # final OCSP responses per key, by each key's signer, in a store of its own
    assert [p.name for p in result.ocsp_stores] == ["qualified.g2-final.ocsp.sqlite3", "qualified-final.ocsp.sqlite3"]
    for store_path, serials, signer_name in ((result.ocsp_stores[0], rekeyed.serials[2:], f"{CA}.g2.ocsp.crt.pem"),
                                             (result.ocsp_stores[1], rekeyed.serials[:2], f"{CA}.ocsp.crt.pem")):
        signer = x509.load_pem_x509_certificate((out / signer_name).read_bytes())
        with ResponseStore.open(store_path, read_only=True) as store:
            assert store.count() == 2 * len(serials) and store.final is not None
            for serial in serials:
                response = store.get(serial, "sha256")
                assert response is not None and response.status == "revoked"
                parsed = ocsp.load_der_ocsp_response(response.der)
                assert parsed.serial_number == serial and parsed.next_update_utc == signer.not_valid_after_utc
                signer.public_key().verify(parsed.signature, parsed.tbs_response_bytes,  # type: ignore[union-attr,call-arg]
                                           ec.ECDSA(parsed.signature_hash_algorithm))  # type: ignore[arg-type]
    check = verify_archive(result.archive, str(out / "root.crt.pem"), rehearsal=True)
    assert check.exit_code == 0, check.lines()
    assert {(c["path"], c["ca_certificate"]) for c in check.final_crls} == {
        (f"out/termination/{CA}/qualified-final.crl", f"out/{CA}.crt.pem"),
        (f"out/termination/{CA}/qualified.g2-final.crl", f"out/{CA}.g2.crt.pem")}
    task = invoke("audit.verify-archive", str(result.archive), "--trust", str(out / "root.crt.pem"), "--rehearsal")
    assert task.returncode == 0, task.stdout + task.stderr
    assert verify(rec.path, out, trust=load_anchor(str(out / "root.crt.pem"), out), rehearsal=True).exit_code == 0
    # an archive whose manifest pairs a final CRL with the other key's certificate does not verify
    bad = tmp_path / "swapped.tar"
    with tarfile.open(result.archive) as src, tarfile.open(bad, "w", format=tarfile.PAX_FORMAT) as dst:
        manifest = json.loads(src.extractfile(MANIFEST_MEMBER).read())  # type: ignore[union-attr]
        for entry in manifest["final_crls"]:
            entry["ca_certificate"] = f"out/{CA}.crt.pem"
        for member in src.getmembers():
            body = json.dumps(manifest).encode() if member.name == MANIFEST_MEMBER else \
                src.extractfile(member).read()  # type: ignore[union-attr]
            member.size = len(body)
            dst.addfile(member, io.BytesIO(body))
    swapped = verify_archive(bad, str(out / "root.crt.pem"), rehearsal=True)
    assert swapped.exit_code == 1
    assert any(p.startswith(f"member out/termination/{CA}/qualified.g2-final.crl: the final CRL's signature")
               for p in swapped.problems), swapped.problems


def test_a_key_gone_from_the_token_is_refused_by_generation(rekeyed: Setup, tmp_path: Path) -> None:
    """The first key is no longer on the token (its label moved away here, as a destroyed key would be missing):
    its unexpired certificates could never get a final CRL, so nothing is signed, revoked or published."""
    out = copy_of(rekeyed, tmp_path)
    tok = rekeyed.tokens[CA]
    label = rekeyed.data["cas"][CA]["hsm"]["key_label"]
    hsm = Hsm(module=tok.module, token=TokenRef(label=tok.label), key_label="x", pin_env=tok.pin_env)
    before = state(rekeyed, out)
    moved = f"{label}-moved"

    def relabel(old: str, new: str) -> None:
        with open_session(hsm, pin_source_for(hsm, interactive=False)) as session:
            for obj in list(session.get_objects({Attribute.LABEL: old})):
                obj[Attribute.LABEL] = new

    relabel(label, moved)
    try:
        token_objects = {n: objects(t) for n, t in rekeyed.tokens.items()}
        with pytest.raises(HsmError) as refused:
            terminate_ceremony(load_definition(rekeyed.decided), CA, out, console(), rehearsal=True,
                               interactive=False)
        message = str(refused.value)
        assert f"the key of key generation 1 of 'qualified' ({CA}.crt.pem)" in message
        assert "2 certificate(s) it signed have not expired and could then never get a final CRL" in message
        assert "qualified.crl" in message and "nothing was changed" in message
        assert {n: objects(t) for n, t in rekeyed.tokens.items()} == token_objects
    finally:
        relabel(moved, label)
    assert state(rekeyed, out) == before
    assert not [p for p in out.iterdir() if p.name.startswith(".run-")]


def test_interrupted_after_the_seal_the_next_ceremony_replaces_the_live_files(setup: Setup, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the commit, before the live registry and CRL are replaced (the first copy outside the output
    directory): the ceremony happened, so the next ceremony in the directory rolls the publication forward, copies
    included, before anything else (here a second termination, then refused: the CRL is final)."""
    out, var, etc, live_registry = host_layout(setup, tmp_path)
    registry_before, crl_before = live_registry.read_bytes(), (var / "crl" / "qualified.crl").read_bytes()
    defn = load_definition(setup.decided)

    def killed(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs, "_copy_over", killed)
    with pytest.raises(KeyboardInterrupt):
        terminate_ceremony(defn, CA, out, console(), rehearsal=True, interactive=False, crl_dir=var / "crl",
                           config_dir=etc)
    assert live_registry.read_bytes() == registry_before
    assert (var / "crl" / "qualified.crl").read_bytes() == crl_before
    assert [p for p in out.iterdir() if p.name.startswith(".run-")]  # committed, not yet fully published
    final = out / "termination" / CA / "qualified-final.crl"
    assert final.is_file()
    monkeypatch.undo()
    with pytest.raises(OutputError, match="final CRL already"):
        terminate_ceremony(defn, CA, out, console(), rehearsal=True, interactive=False, crl_dir=var / "crl",
                           config_dir=etc)
    assert (var / "crl" / "qualified.crl").read_bytes() == final.read_bytes()
    assert live_registry.read_bytes() == (out / "termination" / CA / f"{CA}-registry.sqlite3").read_bytes()
    assert not [p for p in out.iterdir() if p.name.startswith(".run-")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(1 for e in manifest["artifacts"] if e["kind"] == "termination-archive") == 1
