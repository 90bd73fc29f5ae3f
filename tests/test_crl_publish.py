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
            issuer: x509.Name | None = None, aki: bytes | None = None, only_ca: bool = False,
            partition_url: str | None = None) -> bytes:
        start = this_update or NOW - dt.timedelta(minutes=5)
        header = crlenc.CrlHeader(issuer or self.name, aki or self.ski, number, start, start + lifetime,
                                  only_ca_certs=only_ca, partition_url=partition_url)
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


CRL_URL = "http://pki.test.scse.ml/crl/qualified.crl"


def part_url(index: int) -> str:
    return f"http://pki.test.scse.ml/crl/qualified-p{index}.crl"


def pull(incoming: Path, files: dict[str, bytes]) -> None:
    """What the pull's rsync leaves in the incoming directory."""
    incoming.mkdir(exist_ok=True)
    for name, der in files.items():
        (incoming / name).write_bytes(der)


def served_state(directory: Path) -> dict[str, tuple[bytes, float]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime) for p in sorted(directory.iterdir())}


def test_every_partition_pulled_is_verified_and_served_beside_the_full_crl(ca: Ca, served: Path,
                                                                        tmp_path: Path) -> None:
    incoming, etag_map = tmp_path / "incoming", tmp_path / "crl-etag.map"
    pull(incoming, {"qualified.crl": ca.crl(4, serials=(6, 7)),
                    "qualified-p0.crl": ca.crl(1, serials=(6,), partition_url=part_url(0)),
                    "qualified-p1.crl": ca.crl(1, serials=(7,), partition_url=part_url(1)),
                    "other-p0.crl": ca.crl(1, partition_url="http://pki.test.scse.ml/crl/other-p0.crl"),
                    "qualified-p01.crl": b"not ours", ".qualified-p2.crl.tmp": b"temporary"})
    outcomes = crl_publish.publish_partitioned(incoming / "qualified.crl", CRL_URL, ca.cert_path, served, now=NOW,
                                               etag_map=etag_map)
    assert [o.error for o in outcomes] == [None, None, None]
    assert [(o.publication.path.name, o.publication.number, o.publication.changed)  # type: ignore[union-attr]
            for o in outcomes] == [("qualified.crl", 4, True), ("qualified-p0.crl", 1, True),
                                   ("qualified-p1.crl", 1, True)]
    assert sorted(p.name for p in served.parent.iterdir()) == ["qualified-p0.crl", "qualified-p1.crl",
                                                                "qualified.crl"]
    for name in ("qualified-p0.crl", "qualified-p1.crl"):
        der = (served.parent / name).read_bytes()
        assert der == (incoming / name).read_bytes()
        assert (served.parent / name).stat().st_mtime == x509.load_der_x509_crl(der).last_update_utc.timestamp()
        assert f"/crl/{name}|" in etag_map.read_text()
    # A partition that appears later (a certificate issued after the count was raised names it) is served by
    # the next pull, and the others are "nothing to do".
    pull(incoming, {"qualified-p2.crl": ca.crl(1, partition_url=part_url(2))})
    again = crl_publish.publish_partitioned(incoming / "qualified.crl", CRL_URL, ca.cert_path, served, now=NOW,
                                            etag_map=etag_map)
    assert [(o.publication.path.name, o.publication.changed) for o in again] == [  # type: ignore[union-attr]
        ("qualified.crl", False), ("qualified-p0.crl", False), ("qualified-p1.crl", False),
        ("qualified-p2.crl", True)]


def test_without_a_full_crl_on_the_signer_the_partitions_are_still_served(ca: Ca, served: Path,
                                                                         tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    pull(incoming, {"qualified-p0.crl": ca.crl(1, partition_url=part_url(0))})
    outcomes = crl_publish.publish_partitioned(incoming / "qualified.crl", CRL_URL, ca.cert_path, served, now=NOW)
    assert [(o.source.name, o.error) for o in outcomes] == [("qualified-p0.crl", None)]
    assert not served.exists()
    nothing = crl_publish.publish_partitioned(tmp_path / "empty" / "qualified.crl", CRL_URL, ca.cert_path, served,
                                              now=NOW)
    assert len(nothing) == 1 and isinstance(nothing[0].error, OutputError) and "no CRL there" in str(nothing[0].error)


@pytest.mark.parametrize(("name", "make", "needle"), [
    # another partition's CRL under this partition's name: its scope is not this URL
    ("qualified-p1.crl", lambda ca: ca.crl(2, partition_url=part_url(0)),
     f"its issuing distribution point names {part_url(0)}, not {part_url(1)} where it would be served (partition 1)"),
    # the full CRL served as a partition
    ("qualified-p1.crl", lambda ca: ca.crl(2), f"it has no issuing distribution point (a full CRL), but {part_url(1)} "
                                               "is the URL of partition 1"),
    # a partition CRL served as the full CRL
    ("qualified.crl", lambda ca: ca.crl(9, serials=(6, 7), partition_url=part_url(0)),
     f"it has an issuing distribution point naming {part_url(0)} (a partition CRL), but {CRL_URL} is the full CRL's"),
    ("qualified-p1.crl", lambda ca: _tampered_partition(ca), "the signature does not verify"),
    ("qualified-p1.crl", lambda ca: ca.crl(1, partition_url=part_url(1)), "CRL Number 1 is lower than the served "
                                                                          "CRL's 2"),
    ("qualified-p1.crl", lambda ca: ca.crl(2, serials=(8,), partition_url=part_url(1)),
     "CRL Number 2 is already served with other content"),
])
def test_a_wrong_scope_or_bad_partition_is_refused_and_the_rest_is_served(ca: Ca, served: Path, tmp_path: Path,
                                                                        name: str, make, needle: str) -> None:
    incoming, etag_map = tmp_path / "incoming", tmp_path / "crl-etag.map"
    pull(incoming, {"qualified.crl": ca.crl(4, serials=(6, 7)),
                    "qualified-p0.crl": ca.crl(1, serials=(6,), partition_url=part_url(0)),
                    "qualified-p1.crl": ca.crl(2, serials=(7,), partition_url=part_url(1))})
    crl_publish.publish_partitioned(incoming / "qualified.crl", CRL_URL, ca.cert_path, served, now=NOW,
                                    etag_map=etag_map)
    before = served_state(served.parent)
    map_before = etag_map.read_bytes()
    # The next pull brings the bad file and a new CRL for partition 0.
    new_p0 = ca.crl(2, serials=(6, 10), partition_url=part_url(0))
    pull(incoming, {name: make(ca), "qualified-p0.crl": new_p0})
    outcomes = crl_publish.publish_partitioned(incoming / "qualified.crl", CRL_URL, ca.cert_path, served, now=NOW,
                                               etag_map=etag_map)
    refused = [o for o in outcomes if o.error is not None]
    assert len(refused) == 1 and refused[0].source.name == name
    message = str(refused[0].error)
    assert needle in message and "\n" not in message, message
    kept = {"qualified.crl": 4, "qualified-p1.crl": 2}[name]
    assert message.startswith(f"{incoming / name} refused: ") and message.endswith(f"CRL {kept} stays served")
    after = served_state(served.parent)
    assert after[name] == before[name]  # the served one stays, with its time
    assert after["qualified-p0.crl"][0] == new_p0  # the good one of the same pull is served all the same
    assert etag_map.read_bytes() != map_before


def _tampered_partition(ca: Ca) -> bytes:
    der = bytearray(ca.crl(3, serials=(7,), partition_url=part_url(1)))
    der[-5] ^= 0x01
    return bytes(der)


def test_the_cli_publishes_partitions_with_crl_url_one_line_each(ca: Ca, served: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    incoming = tmp_path / "incoming"
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    pull(incoming, {"qualified.crl": ca.crl(1, this_update=now),
                    "qualified-p0.crl": ca.crl(1, this_update=now, partition_url=part_url(0)),
                    "qualified-p1.crl": ca.crl(1, this_update=now, partition_url=part_url(0))})
    args = ["--crl", str(incoming / "qualified.crl"), "--crl-url", CRL_URL, "--ca-cert", str(ca.cert_path),
            "--served", str(served), "--etag-map", str(tmp_path / "map")]
    assert crl_publish.main(args) == VerificationError.exit_code
    out = capsys.readouterr()
    assert out.out.splitlines() == [line for line in out.out.splitlines() if " CRL 1 installed " in line]
    assert len(out.out.splitlines()) == 2 and out.err.count("\n") == 1
    assert out.err.startswith(f"error: {incoming / 'qualified-p1.crl'} refused: its issuing distribution point "
                              f"names {part_url(0)}")
    assert out.err.endswith("nothing is served\n") and not (served.parent / "qualified-p1.crl").exists()
    # The served name must be the URL's: a mismatch is one clear error before anything is read.
    assert crl_publish.main([*args[:-4], "--served", str(served.parent / "other.crl")]) == OutputError.exit_code
    assert "must be named as the last segment of --crl-url" in capsys.readouterr().err
    assert crl_publish.main(["--batch-dir", str(tmp_path), "--crl-url", CRL_URL, "--ca-cert", str(ca.cert_path),
                             "--served", str(served)]) == OutputError.exit_code
    assert "--crl-url goes with --crl" in capsys.readouterr().err
