"""The publisher's verification and atomic installation of CRLs (``ceremony-crl-publish``), without an HSM.

CRLs are made with the engine's own encoder and software keys; every refusal must leave the served
file, its modification time and the ETag map exactly as they were.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ceremony.common.errors import OutputError, VerificationError
from ceremony.crl import encoding as crlenc
from ceremony.crl import publish as crl_publish

NOW = dt.datetime(2026, 11, 25, 8, 0, tzinfo=dt.UTC)


class Ca:
    """A software CA: its key, a certificate with a subject key identifier, and CRLs it signs."""

    def __init__(self, tmp: Path, cn: str = "Test Qualified CA") -> None:
        self.key = ec.generate_private_key(ec.SECP384R1())
        self.name = x509.Name.from_rfc4514_string(f"CN={cn},O=SCSE,C=ML")
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        self.ski = ski.digest
        cert = (x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
                .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(NOW - dt.timedelta(days=30)).not_valid_after(NOW + dt.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                               critical=True)
                .add_extension(ski, critical=False)
                .sign(self.key, hashes.SHA384()))
        self.cert_path = tmp / f"{cn.replace(' ', '-')}.crt.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def crl(self, number: int, serials: tuple[int, ...] = (), this_update: dt.datetime | None = None,
            lifetime: dt.timedelta = dt.timedelta(days=7), key: ec.EllipticCurvePrivateKey | None = None,
            issuer: x509.Name | None = None, aki: bytes | None = None, only_ca: bool = False) -> bytes:
        start = this_update or NOW - dt.timedelta(minutes=5)
        header = crlenc.CrlHeader(issuer or self.name, aki or self.ski, number, start, start + lifetime,
                                  only_ca_certs=only_ca)
        rows = [(s, int((start - dt.timedelta(hours=1)).timestamp()), 1, None, 2_000_000_000) for s in serials]
        der, _, _ = crlenc.build_crl(header, rows, key or self.key)
        return der


@pytest.fixture
def ca(tmp_path: Path) -> Ca:
    return Ca(tmp_path)


@pytest.fixture
def served(tmp_path: Path) -> Path:
    directory = tmp_path / "www" / "crl"
    directory.mkdir(parents=True)
    return directory / "qualified.crl"


def state(served: Path, etag_map: Path) -> tuple[bytes, float, bytes, list[str]]:
    """Everything a refusal must leave as it was."""
    return (served.read_bytes(), served.stat().st_mtime, etag_map.read_bytes(),
            sorted(p.name for p in served.parent.iterdir()))


def publish(der: bytes, ca: Ca, served: Path, etag_map: Path, now: dt.datetime = NOW) -> crl_publish.Publication:
    return crl_publish.publish(der, "incoming/qualified.crl", ca.cert_path, served, now=now, etag_map=etag_map)


def test_a_verified_crl_is_served_with_thisupdate_as_mtime_and_its_sha256_in_the_etag_map(
        ca: Ca, served: Path, tmp_path: Path) -> None:
    etag_map = tmp_path / "etag" / "crl-etag.map"
    first = publish(ca.crl(1), ca, served, etag_map)
    assert first.changed and first.number == 1 and first.etag_map_changed
    der = ca.crl(2, serials=(0x1234,))
    result = publish(der, ca, served, etag_map)
    assert result.changed and result.number == 2
    assert served.read_bytes() == der
    this_update = x509.load_der_x509_crl(der).last_update_utc
    assert served.stat().st_mtime == this_update.timestamp()
    digest = hashlib.sha256(der).hexdigest()
    assert result.sha256 == digest
    # nginx formats Last-Modified from the mtime exactly like this.
    line = f"\"/crl/qualified.crl|{this_update:%a, %d %b %Y %H:%M:%S} GMT\" '\"{digest}\"';"
    assert line in etag_map.read_text().splitlines()
    assert [p.name for p in served.parent.iterdir()] == ["qualified.crl"]  # no temporary left behind
    again = publish(der, ca, served, etag_map)
    assert not again.changed and not again.etag_map_changed
    assert "already served; nothing changed" in again.summary()


def test_the_same_crl_gets_its_time_back_without_being_rewritten(ca: Ca, served: Path, tmp_path: Path) -> None:
    der = ca.crl(3)
    publish(der, ca, served, tmp_path / "map")
    inode = served.stat().st_ino
    os.utime(served, (0, 0))
    result = publish(der, ca, served, tmp_path / "map")
    assert not result.changed and served.stat().st_ino == inode
    assert served.stat().st_mtime == x509.load_der_x509_crl(der).last_update_utc.timestamp()


def _other_key_crl(ca: Ca) -> bytes:
    return ca.crl(9, key=ec.generate_private_key(ec.SECP384R1()))


def _tampered(ca: Ca) -> bytes:
    der = bytearray(ca.crl(9, serials=(0x42,)))
    der[-5] ^= 0x01  # inside the signature
    return bytes(der)


@pytest.mark.parametrize(("make", "needle"), [
    (lambda ca: ca.crl(4), "CRL Number 4 is lower than the served CRL's 5"),
    (lambda ca: ca.crl(5, serials=(7,)), "CRL Number 5 is already served with other content"),
    (_tampered, "the signature does not verify with the key of"),
    (_other_key_crl, "the signature does not verify with the key of"),
    (lambda ca: ca.crl(9, issuer=x509.Name.from_rfc4514_string("CN=Other,C=ML")), "is not the subject of"),
    (lambda ca: ca.crl(9, aki=b"\x01" * 20), "authority key identifier is not the subject key identifier"),
    (lambda ca: ca.crl(9, this_update=NOW - dt.timedelta(days=8)), "CRL 9 has expired at"),
    (lambda ca: ca.crl(9, this_update=NOW + dt.timedelta(hours=1)), "is in the future"),
    (lambda ca: ca.crl(9), "entries of unexpired certificates were dropped (serials 1234)"),
    (lambda ca: b"not a CRL", "not a DER CRL"),
])
def test_a_bad_crl_is_refused_and_the_served_one_stays(ca: Ca, served: Path, tmp_path: Path, make, needle: str) -> None:
    etag_map = tmp_path / "crl-etag.map"
    publish(ca.crl(5, serials=(0x1234,)), ca, served, etag_map)
    before = state(served, etag_map)
    with pytest.raises(VerificationError) as refused:
        publish(make(ca), ca, served, etag_map)
    message = str(refused.value)
    assert needle in message and "\n" not in message
    assert message.startswith("incoming/qualified.crl refused: ") and message.endswith("CRL 5 stays served")
    assert state(served, etag_map) == before


def test_the_cli_prints_one_line_and_exits_non_zero_on_refusal(ca: Ca, served: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.crl"
    good.write_bytes(ca.crl(1, this_update=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)))
    args = ["--ca-cert", str(ca.cert_path), "--served", str(served), "--etag-map", str(tmp_path / "map")]
    assert crl_publish.main(["--crl", str(good), *args]) == 0
    out = capsys.readouterr()
    assert out.out.startswith(f"{served}: CRL 1 installed") and out.err == ""
    bad = tmp_path / "bad.crl"
    bad.write_bytes(b"\x30\x03\x02\x01\x00")
    assert crl_publish.main(["--crl", str(bad), *args]) == VerificationError.exit_code
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and out.err.startswith(f"error: {bad} refused: not a DER CRL")
    assert crl_publish.main(["--crl", str(tmp_path / "missing.crl"), *args]) == OutputError.exit_code
    assert "no CRL there" in capsys.readouterr().err
    assert served.read_bytes() == good.read_bytes()


def test_the_root_crl_in_force_is_put_in_force_when_its_thisupdate_passes(tmp_path: Path) -> None:
    root = Ca(tmp_path, "Test Root CA")
    batch = tmp_path / "batch"
    batch.mkdir()
    quarter = dt.timedelta(days=91)
    start = NOW - dt.timedelta(days=1)
    for i in range(4):
        (batch / f"root-{i + 1}.crl").write_bytes(root.crl(i + 1, this_update=start + i * quarter,
                                                           lifetime=dt.timedelta(days=120), only_ca=True))
    served = tmp_path / "www" / "root.crl"
    served.parent.mkdir()
    etag_map = tmp_path / "map"
    first = crl_publish.publish_in_force(batch, root.cert_path, served, now=NOW, etag_map=etag_map)
    assert (first.number, first.changed) == (1, True)
    assert not crl_publish.publish_in_force(batch, root.cert_path, served, now=NOW + quarter / 2).changed
    later = crl_publish.publish_in_force(batch, root.cert_path, served, now=start + quarter, etag_map=etag_map)
    assert (later.number, later.changed) == (2, True)
    assert served.read_bytes() == (batch / "root-2.crl").read_bytes()
    assert served.stat().st_mtime == (start + quarter).timestamp()
    # A wrong clock never takes the served CRL back to an earlier one of the batch.
    with pytest.raises(VerificationError, match="lower than the served CRL's 2"):
        crl_publish.publish_in_force(batch, root.cert_path, served, now=NOW)
    with pytest.raises(VerificationError, match="a root CRL ceremony is overdue"):
        crl_publish.publish_in_force(batch, root.cert_path, served, now=start + 3 * quarter + dt.timedelta(days=121))
    assert served.read_bytes() == (batch / "root-2.crl").read_bytes()
    with pytest.raises(OutputError, match=r"no root-<N>\.crl in force"):
        crl_publish.publish_in_force(batch, root.cert_path, served, now=start - dt.timedelta(days=1))


def test_a_missing_ca_certificate_is_one_clear_error(ca: Ca, served: Path, tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="the CA certificate is not there"):
        crl_publish.publish(ca.crl(1), "x.crl", tmp_path / "nope.pem", served)
    assert not served.exists()
