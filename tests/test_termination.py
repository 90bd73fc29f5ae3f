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
import secrets
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, SOFTHSM_CONF, TestToken, base_definition_data, tree, write_definition
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from ceremony.ca.registry import Registry, default_path
from ceremony.ceremonies import termination
from ceremony.ceremonies.issuance import issue_certificate
from ceremony.ceremonies.ocsp_signer import ocsp_signer_ceremony
from ceremony.ceremonies.root_key import root_ceremony
from ceremony.ceremonies.sign_subordinate import sign_subordinate_ceremony
from ceremony.ceremonies.subordinate_key import subordinate_key_ceremony
from ceremony.ceremonies.termination import terminate_ceremony
from ceremony.common.display import make_console
from ceremony.common.errors import DefinitionError, OutputError, VerificationError
from ceremony.crl.job import run_crl_job
from ceremony.definition.model import Hsm, LoadedDefinition, TokenRef, load_definition
from ceremony.hsm import softhsm
from ceremony.hsm.session import open_session, pin_source_for
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


def _token(mp: pytest.MonkeyPatch, name: str) -> TestToken:
    suffix = secrets.token_hex(4)
    label, env = f"t-tm-{name}-{suffix}"[:32], f"TEST_PIN_TM_{name.upper()}_{suffix.upper()}"
    tok = TestToken(label=label, user_pin=softhsm.random_pin(), so_pin=softhsm.random_pin(), pin_env=env,
                    so_pin_env=env + "_SO", module=softhsm.softhsm_module(), conf=SOFTHSM_CONF)
    softhsm.init_token(SOFTHSM_CONF, label, tok.user_pin, tok.so_pin)
    mp.setenv(tok.pin_env, tok.user_pin)
    mp.setenv(tok.so_pin_env, tok.so_pin)
    return tok


def _csr(path: Path, cn: str) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    given, surname = cn.split(" ", 1)
    path.write_bytes(x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "ML"), x509.NameAttribute(NameOID.GIVEN_NAME, given),
        x509.NameAttribute(NameOID.SURNAME, surname), x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])).sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("termination")
    data = copy.deepcopy(base_definition_data())
    with pytest.MonkeyPatch.context() as mp:
        tokens = {name: _token(mp, name) for name in ("root", CA)}
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
    # a re-keyed CA (a generation-2 certificate of another key): one final CRL per key is not built, refused
    rekeyed = out / f"{CA}.g2.crt.pem"
    shutil.copyfile(out / "root.crt.pem", rekeyed)
    with pytest.raises(OutputError, match="has been re-keyed"):
        terminate_ceremony(load_definition(setup.decided), CA, out, console(), rehearsal=True, interactive=False)
    rekeyed.unlink()
    # no published CRL where the CRL job publishes, or a publication directory outside the output directory
    with pytest.raises(OutputError, match="no published CRL"):
        terminate_ceremony(load_definition(setup.decided), CA, out, console(), rehearsal=True, interactive=False,
                           crl_dir=out / "elsewhere")
    with pytest.raises(OutputError, match="inside the output directory"):
        terminate_ceremony(load_definition(setup.decided), CA, out, console(), rehearsal=True, interactive=False,
                           crl_dir=tmp_path / "published")
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
