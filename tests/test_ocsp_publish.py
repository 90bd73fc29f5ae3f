"""``ceremony-ocsp-publish``: the CA host's consistent snapshot of the response store and the publisher's checked,
atomic installation of it. Software keys stand in for the HSM here (what is tested is the carrying and the
checks, not the signing); the infrastructure tests run the same command on the hosts against HSM-signed stores."""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ceremony.ocsp.job import store_issuer_sha256
from ceremony.ocsp.publish import install, snapshot
from ceremony.ocsp.store import ResponseStore, StoreError, serial_blob

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def _cert(subject: str, issuer: x509.Name | None, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey,
          ca: bool, ocsp_signing: bool = False) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(NOW - dt.timedelta(days=1))
         .not_valid_after(NOW + dt.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ocsp_signing:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
    return b.sign(signer, hashes.SHA384())


def _ca(name: str) -> tuple[x509.Certificate, x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_key, signer_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    ca = _cert(name, None, ca_key, ca_key, True)
    return ca, _cert(f"{name} OCSP", ca.subject, signer_key, ca_key, False, True), signer_key


def _store(path: Path, ca_name: str, ca: x509.Certificate, signer: x509.Certificate,
           signer_key: ec.EllipticCurvePrivateKey, tamper: bool = False) -> Path:
    """A store as the job leaves it (WAL mode): a good and a revoked response, signed by the delegated signer."""
    with ResponseStore.create(path, ca_name, store_issuer_sha256(ca)) as store:
        for serial, status in ((0x1234, "good"), (0x5678, "revoked")):
            leaf = _cert(f"ee {serial}", ca.subject, signer_key, signer_key, False)
            leaf = x509.load_der_x509_certificate(leaf.public_bytes(serialization.Encoding.DER))
            builder = ocsp.OCSPResponseBuilder().add_response(
                cert=leaf, issuer=ca, algorithm=hashes.SHA256(),
                cert_status=ocsp.OCSPCertStatus.GOOD if status == "good" else ocsp.OCSPCertStatus.REVOKED,
                this_update=NOW, next_update=NOW + dt.timedelta(days=4),
                revocation_time=NOW if status == "revoked" else None,
                revocation_reason=x509.ReasonFlags.key_compromise if status == "revoked" else None,
            ).responder_id(ocsp.OCSPResponderEncoding.HASH, signer).certificates([signer])
            der = builder.sign(signer_key, hashes.SHA384()).public_bytes(serialization.Encoding.DER)
            # The response is for the leaf's serial; the row says which serial it answers.
            serial = leaf.serial_number
            if tamper and status == "good":  # one bit of the signature flipped, the certificates intact
                signature = ocsp.load_der_ocsp_response(der).signature
                at = der.index(signature) + len(signature) - 1
                der = der[:at] + bytes([der[at] ^ 1]) + der[at + 1:]
            store.conn.execute("INSERT INTO responses VALUES (?, 'sha256', ?, ?, ?, ?, ?)",
                               (serial_blob(serial), status, der, int(NOW.timestamp()),
                                int(NOW.timestamp()) + 4 * 86400, status))
    return path


@pytest.fixture
def ca_files(tmp_path: Path) -> dict[str, Path]:
    ca, signer, signer_key = _ca("Test Qualified CA")
    (tmp_path / "qualified.crt.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    store = _store(tmp_path / "qualified.sqlite3", "qualified", ca, signer, signer_key)
    other, other_signer, other_key = _ca("Another CA")
    foreign = _store(tmp_path / "foreign.sqlite3", "qualified", other, other_signer, other_key)
    tampered = _store(tmp_path / "tampered.sqlite3", "qualified", ca, signer, signer_key, tamper=True)
    (tmp_path / "served").mkdir()
    return {"cert": tmp_path / "qualified.crt.pem", "store": store, "foreign": foreign, "tampered": tampered,
            "served": tmp_path / "served" / "qualified.sqlite3", "dir": tmp_path}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_snapshot_is_consistent_taken_only_on_change_and_served_after_its_checks(ca_files: dict[str, Path]) -> None:
    store, dest = ca_files["store"], ca_files["dir"] / "pull" / "qualified.ocsp.sqlite3"
    dest.parent.mkdir()
    # A writer holds an open transaction in WAL mode: the snapshot is the committed state, whole.
    writer = sqlite3.connect(store)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("DELETE FROM responses")
    assert snapshot(store, dest) is True
    writer.rollback()
    writer.close()
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]  # no temporary file left behind
    with sqlite3.connect(dest) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("SELECT count(*) FROM responses").fetchone()[0] == 2
    assert snapshot(store, dest) is False  # the store did not change
    message = install(dest, ca_files["served"], "qualified", ca_files["cert"])
    assert "installed" in message and "sample signatures verified: good, revoked" in message
    assert _digest(ca_files["served"]) == _digest(dest)
    assert "unchanged" in install(dest, ca_files["served"], "qualified", ca_files["cert"])
    # The responder's read-only open works on the served file in a directory it cannot write.
    ResponseStore.open(ca_files["served"], read_only=True, ca="qualified").close()


@pytest.mark.parametrize("bad", ["foreign", "tampered", "garbage", "other-ca-name"])
def test_a_corrupt_or_foreign_snapshot_is_refused_and_the_served_store_stays(ca_files: dict[str, Path],
                                                                               bad: str) -> None:
    served = ca_files["served"]
    install(ca_files["store"], served, "qualified", ca_files["cert"])
    before = _digest(served)
    incoming = ca_files["dir"] / "incoming.sqlite3"
    if bad == "garbage":
        incoming.write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    elif bad == "other-ca-name":
        incoming = ca_files["store"]
    else:
        incoming = ca_files[bad]
    ca_name = "other" if bad == "other-ca-name" else "qualified"
    proc = subprocess.run([str(Path(sys.executable).with_name("ceremony-ocsp-publish")), "install", "--incoming",
                           str(incoming), "--served", str(served), "--ca", ca_name, "--ca-cert",
                           str(ca_files["cert"])], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"{served} left as it was" in lines[0], proc.stderr
    expected = {"foreign": "CA certificate", "tampered": "does not verify", "garbage": "not a readable OCSP store",
                "other-ca-name": "belongs to CA"}[bad]
    assert expected in lines[0], lines[0]
    assert _digest(served) == before
    assert sorted(p.name for p in served.parent.iterdir()) == sorted([served.name, f".{served.name}.source"])


def test_snapshot_refuses_what_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no OCSP store here"):
        snapshot(tmp_path / "missing.sqlite3", tmp_path / "dest.sqlite3")
    (tmp_path / "plain.sqlite3").write_bytes(b"not a database at all, not even close" * 10)
    with pytest.raises(StoreError, match="not a readable OCSP store"):
        snapshot(tmp_path / "plain.sqlite3", tmp_path / "dest.sqlite3")
    assert not (tmp_path / "dest.sqlite3").exists()
