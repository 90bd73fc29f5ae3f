"""Key-restore ceremony on real SoftHSM tokens: exactly M shares restore a key that signs for the original
certificate; M-1 shares, a wrong share, a corrupted or tampered backup file are refused with one clear
message and NOTHING is created on the target token (checked from a fresh session and with pkcs11-tool).
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import TestToken, own_network_namespace, tree
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from test_backup import BackedUp, CapturingRecorder, der_fingerprint, labels_on, make_backup, sha256sum

from ceremony.backup.format import BackupError, file_checksum, load_backup
from ceremony.backup.shares import Share, read_share
from ceremony.ceremonies.restore import restore_ceremony
from ceremony.common.errors import CeremonyError, DefinitionError, HsmError, OfflineCheckError
from ceremony.definition.model import Hsm, TokenRef
from ceremony.hsm import session as hsm
from ceremony.hsm.signers import hash_for, signing_key
from ceremony.transcript.recorder import ConsoleRecorder

pytestmark = pytest.mark.hsm

RESTORE_STEPS = ["offline-check", "definition-check", "backup-verify", "shares-collect", "token-open", "key-unwrap",
                 "test-signature", "sealing-key", "outputs-write"]
MakeToken = Callable[[str], TestToken]


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory: pytest.TempPathFactory) -> BackedUp:
    """One backup of the testing root for the whole module; tests copy files before changing them."""
    return make_backup(tmp_path_factory)


def target_of(tok: TestToken) -> Hsm:
    return Hsm(module=tok.module, token=TokenRef(label=tok.label), key_label="root-2026", pin_env=tok.pin_env,
               so_pin_env=tok.so_pin_env)


def shares_of(b: BackedUp) -> list[Path]:
    return list(b.result.share_files.values())


def restore(b: BackedUp, tok: TestToken, shares: list[Path], out: Path, backup: Path | None = None,
            recorder: Any = None) -> Any:
    return restore_ceremony(b.definition, "root", backup or b.result.backup_file, shares, out,
                            recorder or ConsoleRecorder(rehearsal=True), rehearsal=True,
                            certificate=b.out / "root.crt.pem", target=target_of(tok), interactive=False)


@pytest.mark.parametrize("pair", list(itertools.combinations(range(3), 2)), ids=lambda p: f"shares-{p[0]+1}-{p[1]+1}")
def test_exactly_m_shares_restore_a_key_that_signs_for_the_original_certificate(
        backed_up: BackedUp, make_token: MakeToken, tmp_path: Path, pair: tuple[int, int]) -> None:
    tok = make_token("restore")
    rec = CapturingRecorder()
    result = restore(backed_up, tok, [shares_of(backed_up)[i] for i in pair], tmp_path, recorder=rec)
    assert rec.steps == [(s, "done") for s in RESTORE_STEPS]
    restored = dict(rec.evidence_log)["restored-key"]
    assert restored["local"] is False and restored["sensitive"] and restored["sign"]
    assert not restored["always_sensitive"] and not restored["never_extractable"]
    assert restored["spki_sha256"] == backed_up.result.key_spki_sha256
    presented = [d for n, d in rec.evidence_log if n == "share-presented"]
    assert [p["index"] for p in presented] == [i + 1 for i in pair]
    assert all(read_share(p).value.hex() not in rec.everything() for p in shares_of(backed_up))
    assert rec.sealed and rec.sealed[0]["verifier"]["kind"] == "certificate"
    # Independently of the ceremony: the restored key signs, and the original certificate verifies it.
    cert = x509.load_pem_x509_certificate((backed_up.out / "root.crt.pem").read_bytes())
    with hsm.open_session(target_of(tok), hsm.pin_source_for(target_of(tok), interactive=False)) as session:
        key = signing_key(session, "root-2026")
        signature = key.sign(b"independent check", ec.ECDSA(hash_for(key)))
    cert.public_key().verify(signature, b"independent check", ec.ECDSA(hash_for(key)))
    report = json.loads(result.report.read_text())
    assert report["restored_key"]["local"] is False and report["backup_id"] == backed_up.result.backup_id
    from test_hsm import pkcs11_tool_objects
    listing = pkcs11_tool_objects(tok)
    # the restored key pair, and the target token's own new sealing key pair (never restored: not extractable)
    assert listing.count("label:      root-2026\n") == 2 and listing.count("label:      root-2026-seal\n") == 2
    assert "Secret Key Object" not in listing
    sealing = [d for n, d in rec.evidence_log if n == "certificate" and d.get("purpose") == "transcript-sealing"]
    assert len(sealing) == 1 and rec.sealed[0]["verifier"]["path"].startswith("root.seal.")


def test_certificate_evidence_and_report_give_the_fingerprint_of_the_der_certificate(
        backed_up: BackedUp, make_token: MakeToken, tmp_path: Path) -> None:
    tok = make_token("restore")
    rec = CapturingRecorder()
    result = restore(backed_up, tok, shares_of(backed_up)[:2], tmp_path, recorder=rec)
    pem = backed_up.out / "root.crt.pem"
    fingerprint = der_fingerprint(pem)
    evidence = next(d for n, d in rec.evidence_log if n == "certificate")
    assert evidence["sha256"] == fingerprint and evidence["file_sha256"] == sha256sum(pem) != fingerprint
    report = json.loads(result.report.read_text())
    assert report["certificate_sha256"] == fingerprint and report["certificate_file_sha256"] == sha256sum(pem)
    assert f"certificate: {pem} (SHA-256 fingerprint {fingerprint[:16]}…)" in rec.buffer.getvalue()


def _assert_refused(b: BackedUp, tok: TestToken, out: Path, shares: list[Path], error: type[CeremonyError],
                    match: str, backup: Path | None = None) -> None:
    before_disk = tree(out) if out.exists() else set()
    with pytest.raises(error, match=match):
        restore(b, tok, shares, out, backup=backup)
    assert labels_on(tok) == [], "nothing may be created on the target token"
    assert (tree(out) if out.exists() else set()) == before_disk
    from test_hsm import pkcs11_tool_objects
    assert "Object" not in pkcs11_tool_objects(tok)


def test_m_minus_one_shares_are_refused(backed_up: BackedUp, make_token: MakeToken, tmp_path: Path) -> None:
    tok = make_token("restore")
    _assert_refused(backed_up, tok, tmp_path, shares_of(backed_up)[:1], BackupError,
                    r"1 share\(s\) presented, the backup needs 2 of 3 \(present: Aminata Diarra\); nothing was done")
    _assert_refused(backed_up, tok, tmp_path, [shares_of(backed_up)[0]] * 2, BackupError, "already presented")


def _write_share(share: Share, path: Path) -> Path:
    path.write_text(share.render(), encoding="utf-8")
    return path


def test_a_mistyped_share_is_named(backed_up: BackedUp, make_token: MakeToken, tmp_path: Path) -> None:
    tok = make_token("restore")
    first, second = shares_of(backed_up)[:2]
    typo = tmp_path / "typo.txt"
    text = second.read_text()
    line = text.split("value:")[1].splitlines()[1]
    digit = line.strip()[4]
    typo.write_text(text.replace(line, line.replace(line.strip()[4:], ("0" if digit != "0" else "1")
                                                    + line.strip()[5:], 1)))
    _assert_refused(backed_up, tok, tmp_path / "out", [first, typo], DefinitionError,
                    r"typo\.txt: checksum: does not match the share")


def test_a_forged_share_with_a_valid_checksum_is_refused(backed_up: BackedUp, make_token: MakeToken,
                                                         tmp_path: Path) -> None:
    tok = make_token("restore")
    first, second = shares_of(backed_up)[:2]
    share = read_share(second)
    forged = _write_share(replace(share, value=bytes([share.value[0] ^ 0x5A]) + share.value[1:]),
                          tmp_path / "forged.txt")
    _assert_refused(backed_up, tok, tmp_path / "out", [first, forged], BackupError,
                    "not the share the backup recorded for that index: a wrong or substituted share")


def test_a_share_of_another_backup_is_refused(backed_up: BackedUp, make_token: MakeToken, tmp_path: Path) -> None:
    tok = make_token("restore")
    first, second = shares_of(backed_up)[:2]
    other = _write_share(replace(read_share(second), backup_id="0" * 32), tmp_path / "other.txt")
    _assert_refused(backed_up, tok, tmp_path / "out", [first, other], BackupError,
                    "belongs to backup 0{32} of CA 'root', not to backup")


def test_wrong_share_behind_a_forged_custody_record_fails_the_key_check(backed_up: BackedUp,
                                                                        make_token: MakeToken,
                                                                        tmp_path: Path) -> None:
    """Even an attacker who rewrites the custody record and the checksum cannot get a wrong share accepted."""
    tok = make_token("restore")
    first, second = shares_of(backed_up)[:2]
    share = read_share(second)
    forged = replace(share, value=bytes([share.value[0] ^ 1]) + share.value[1:])
    forged_path = _write_share(forged, tmp_path / "forged.txt")
    body = json.loads(backed_up.result.backup_file.read_text())
    body["quorum"]["custodians"][1]["share_checksum"] = forged.checksum
    body["checksum_sha256"] = file_checksum(body)
    backup = tmp_path / "forged-backup.json"
    backup.write_text(json.dumps(body))
    _assert_refused(backed_up, tok, tmp_path / "out", [first, forged_path], BackupError,
                    "do not reconstruct the wrapping key of this backup", backup=backup)


def _copy_backup(b: BackedUp, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    path = tmp_path / "copy.key-backup.json"
    shutil.copyfile(b.result.backup_file, path)
    return path, json.loads(path.read_text())


def test_a_corrupted_backup_file_is_refused_before_any_share_is_read(backed_up: BackedUp, make_token: MakeToken,
                                                                     tmp_path: Path) -> None:
    tok = make_token("restore")
    path, body = _copy_backup(backed_up, tmp_path)
    wrapped = bytearray(base64.b64decode(body["wrapping"]["wrapped_key_b64"]))
    wrapped[10] ^= 0x01
    body["wrapping"]["wrapped_key_b64"] = base64.b64encode(bytes(wrapped)).decode()
    path.write_text(json.dumps(body))
    missing_share = tmp_path / "not-read.txt"  # proves the shares are not even opened
    _assert_refused(backed_up, tok, tmp_path / "out", [missing_share], BackupError,
                    "checksum_sha256 does not match the content: the backup file is corrupted", backup=path)
    path.write_bytes(backed_up.result.backup_file.read_bytes()[:-200])
    _assert_refused(backed_up, tok, tmp_path / "out", [missing_share], BackupError,
                    r"damaged \(not valid JSON\)", backup=path)


def test_a_tampered_backup_with_a_recomputed_checksum_fails_the_mac(backed_up: BackedUp, make_token: MakeToken,
                                                                    tmp_path: Path) -> None:
    tok = make_token("restore")
    path, body = _copy_backup(backed_up, tmp_path)
    wrapped = bytearray(base64.b64decode(body["wrapping"]["wrapped_key_b64"]))
    wrapped[-1] ^= 0x80
    body["wrapping"]["wrapped_key_b64"] = base64.b64encode(bytes(wrapped)).decode()
    body["checksum_sha256"] = file_checksum(body)
    path.write_text(json.dumps(body))
    _assert_refused(backed_up, tok, tmp_path / "out", shares_of(backed_up)[:2], BackupError,
                    "the MAC does not verify under the reconstructed key: the backup file was altered",
                    backup=path)


def test_backup_of_another_key_than_the_certificate_is_refused(backed_up: BackedUp, make_token: MakeToken,
                                                               tmp_path: Path) -> None:
    tok = make_token("restore")
    path, body = _copy_backup(backed_up, tmp_path)
    from cryptography.hazmat.primitives import serialization
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    body["key"]["public_key_pem"] = other.public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    from ceremony.hsm.keys import spki_sha256
    body["key"]["spki_sha256"] = spki_sha256(other)
    body["checksum_sha256"] = file_checksum(body)
    path.write_text(json.dumps(body))
    assert load_backup(path)["ca"] == "root"
    _assert_refused(backed_up, tok, tmp_path / "out", shares_of(backed_up)[:2], BackupError,
                    r"but .*root\.crt\.pem certifies key", backup=path)


def test_a_token_that_already_holds_the_label_is_refused(backed_up: BackedUp, make_token: MakeToken,
                                                         tmp_path: Path) -> None:
    tok = make_token("restore")
    restore(backed_up, tok, shares_of(backed_up)[1:], tmp_path / "first")
    objects = labels_on(tok)
    with pytest.raises(HsmError, match="already exists on token label"):
        restore(backed_up, tok, shares_of(backed_up)[:2], tmp_path / "second")
    assert labels_on(tok) == objects
    assert not (tmp_path / "second" / "backup").exists()


def test_production_restore_of_a_rehearsal_backup_is_refused(backed_up: BackedUp, make_token: MakeToken,
                                                             tmp_path: Path, air_gapped: None) -> None:
    tok = make_token("restore")
    with pytest.raises(BackupError, match="a rehearsal backup cannot be restored in a production ceremony"):
        restore_ceremony(backed_up.definition, "root", backed_up.result.backup_file, shares_of(backed_up)[:2],
                         tmp_path, ConsoleRecorder(rehearsal=False), rehearsal=False,
                         certificate=backed_up.out / "root.crt.pem", target=target_of(tok), interactive=False)
    assert labels_on(tok) == []


def test_production_restore_refuses_to_run_while_a_network_interface_is_up(backed_up: BackedUp,
                                                                           make_token: MakeToken,
                                                                           tmp_path: Path) -> None:
    """As the root key ceremony does: the offline check comes first, and in production an interface up (a veth in
    a network namespace of the test's own) stops the restore before the backup is read, a share is asked for or
    the target token is opened: nothing on the token, nothing written."""
    tok = make_token("restore")
    rec = ConsoleRecorder(rehearsal=False)
    with own_network_namespace("cerveth0"), pytest.raises(OfflineCheckError) as refused:
        restore_ceremony(backed_up.definition, "root", backed_up.result.backup_file, shares_of(backed_up)[:2],
                         tmp_path / "prod", rec, rehearsal=False, certificate=backed_up.out / "root.crt.pem",
                         target=target_of(tok), interactive=False)
    assert "network interface(s) cerveth0 up" in str(refused.value)
    assert "ip link set cerveth0 down" in str(refused.value) and "docs/air-gapped.md" in str(refused.value)
    assert rec.steps == [("offline-check", "failed")]
    assert labels_on(tok) == [] and not (tmp_path / "prod").exists()


def test_rehearsal_restore_records_the_offline_check_without_enforcing_it(backed_up: BackedUp,
                                                                          make_token: MakeToken,
                                                                          tmp_path: Path) -> None:
    tok = make_token("restore")
    rec = CapturingRecorder()
    with own_network_namespace("cerveth0"):
        restore(backed_up, tok, shares_of(backed_up)[:2], tmp_path, recorder=rec)
    assert rec.steps == [(s, "done") for s in RESTORE_STEPS]
    check = dict(rec.evidence_log)["offline-check"]
    assert check["non_loopback_up"] == ["cerveth0"] and check["offline"] is False and check["enforced"] is False


def test_rsa_root_backs_up_and_restores(definition_on_tokens: Any, make_token: MakeToken, tmp_path: Path) -> None:
    """RSA keys take the other unwrap template (modulus and exponent for the public half)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    from ceremony.ceremonies.backup import backup_ceremony
    from ceremony.ceremonies.root_key import root_ceremony
    from ceremony.definition.model import load_definition

    def rsa_root(d: dict[str, Any]) -> None:
        d["cas"]["root"]["key"] = {"algorithm": "rsa", "bits": 3072}

    pki, _ = definition_on_tokens(rsa_root)
    defn = load_definition(pki)
    out = tmp_path / "out"
    root_ceremony(defn, out, ConsoleRecorder(rehearsal=True), rehearsal=True, interactive=False)
    backup = backup_ceremony(defn, "root", out, ConsoleRecorder(rehearsal=True), rehearsal=True, interactive=False)
    tok = make_token("rsa-restore")
    result = restore_ceremony(defn, "root", backup.backup_file, list(backup.share_files.values())[1:], out,
                              ConsoleRecorder(rehearsal=True), rehearsal=True, target=target_of(tok),
                              interactive=False)
    assert result.key["local"] is False and result.key["algorithm"] == "RSA 3072"
    cert = x509.load_pem_x509_certificate((out / "root.crt.pem").read_bytes())
    with hsm.open_session(target_of(tok), hsm.pin_source_for(target_of(tok), interactive=False)) as session:
        key = signing_key(session, "root-2026")
        signature = key.sign(b"rsa check", padding.PKCS1v15(), hashes.SHA256())
    cert.public_key().verify(signature, b"rsa check", padding.PKCS1v15(), hashes.SHA256())
