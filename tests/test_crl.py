"""The CRL encoder without an HSM: DER details (RFC 5280), both encoders agree, cryptography and openssl parse."""

from __future__ import annotations

import datetime as dt
import random
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ceremony.ca.registry import CRL_ENTRY, NO_DATE
from ceremony.common.errors import VerificationError
from ceremony.crl import encoding as crlenc
from ceremony.crl.checks import entry_serials

ISSUER = x509.Name.from_rfc4514_string("CN=Test CA,O=SCSE,C=ML")
T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def header(number: int = 1, **kw: object) -> crlenc.CrlHeader:
    return crlenc.CrlHeader(ISSUER, b"\x07" * 20, number, T0, T0 + dt.timedelta(days=7), **kw)  # type: ignore[arg-type]


def random_rows(n: int, seed: int = 1) -> list[crlenc.RevokedRow]:
    rnd = random.Random(seed)
    serials = {rnd.getrandbits(rnd.choice([8, 64, 152, 159])) or 1 for _ in range(n)}
    serials |= {1, 0x7F, 0x80, 0xFF, 1 << 152, (1 << 159) - 1, 0x00FF << 144}
    rows = []
    for s in sorted(serials):
        revoked = rnd.choice([1_700_000_000 + rnd.randrange(10**8), 2_600_000_000])  # 2052: GeneralizedTime
        reason = rnd.choice([None, 1, 3, 4, 5, 9])
        inv = revoked - rnd.randrange(10**6) if rnd.random() < 0.3 else None
        rows.append((s, revoked, reason, inv, 2_000_000_000))
    return rows


def packed(rows: list[crlenc.RevokedRow], chunk: int = 7) -> list[bytes]:
    recs = [CRL_ENTRY.pack(s.to_bytes(20, "big"), r, c or 0, NO_DATE if i is None else i, n) for s, r, c, i, n in rows]
    return [b"".join(recs[k:k + chunk]) for k in range(0, len(recs), chunk)]


def test_both_encoders_write_the_same_bytes_and_cryptography_reads_every_field() -> None:
    rows = random_rows(500)
    a = bytearray()
    assert crlenc.encode_revoked(rows, a) == len(rows)
    b = bytearray()
    count, sample, latest = crlenc.encode_revoked_packed(packed(rows), b, CRL_ENTRY, NO_DATE)
    assert latest == max(r[1] for r in rows)
    assert count == len(rows) and bytes(a) == bytes(b)
    assert sample[0] == rows[0] and sample[-1] == rows[-1] and all(r in rows for r in sample)
    key = ec.generate_private_key(ec.SECP384R1())
    der, tbs, n = crlenc.build_crl(header(), rows, key)
    crl = crlenc.verify_crl(der, tbs, key.public_key(), header(), n, [r[0] for r in rows[::50]])
    assert list(entry_serials(der)) == [r[0] for r in rows]
    for (serial, revoked, reason, inv, _), entry in zip(rows, crl, strict=True):
        assert entry.serial_number == serial
        assert entry.revocation_date_utc == crlenc.from_epoch(revoked)
        exts = {e.oid: e.value for e in entry.extensions}
        if reason is None:
            assert x509.CRLReason.oid not in exts  # unspecified: no reasonCode (RFC 5280 5.3.1)
        else:
            assert exts[x509.CRLReason.oid].reason.name == {1: "key_compromise", 3: "affiliation_changed",
                                                            4: "superseded", 5: "cessation_of_operation",
                                                            9: "privilege_withdrawn"}[reason]
        if inv is None:
            assert x509.InvalidityDate.oid not in exts
        else:
            assert exts[x509.InvalidityDate.oid].invalidity_date_utc == crlenc.from_epoch(inv)


def test_time_encoding_follows_rfc5280() -> None:
    assert crlenc.encode_time(crlenc.epoch(dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=dt.UTC))) == \
        b"\x17\x0d491231235959Z"
    assert crlenc.encode_time(crlenc.epoch(dt.datetime(2050, 1, 1, tzinfo=dt.UTC))) == b"\x18\x0f20500101000000Z"
    assert crlenc.encode_time(0, generalized=True) == b"\x18\x0f19700101000000Z"
    with pytest.raises(ValueError, match="before 1950"):
        crlenc.encode_time(crlenc.epoch(dt.datetime(1949, 1, 1, tzinfo=dt.UTC)))


def test_serial_integers_are_minimal_and_positive() -> None:
    assert crlenc.der_integer(0x7F) == b"\x02\x01\x7f"
    assert crlenc.der_integer(0x80) == b"\x02\x02\x00\x80"
    assert crlenc.der_integer(1 << 152) == b"\x02\x14\x01" + b"\x00" * 19
    out = bytearray()
    crlenc.encode_revoked_packed(packed([(0x80, 1_700_000_000, None, None, 0)]), out, CRL_ENTRY, NO_DATE)
    assert bytes(out).startswith(b"\x30\x13\x02\x02\x00\x80")


def test_empty_crl_has_no_revoked_certificates_and_lints_clean() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    der, tbs, _ = crlenc.build_crl(header(), [], key)
    crl = crlenc.verify_crl(der, tbs, key.public_key(), header(), 0)
    assert len(crl) == 0 and list(entry_serials(der)) == []
    assert b"\x30\x00" not in tbs[:60]  # the empty SEQUENCE is absent, not present-and-empty (RFC 5280 5.1.2.6)
    assert not [f for f in crlenc.lint_crl(der) if f.blocking]


def test_rsa_key_and_arl_idp(tmp_path: Path) -> None:
    key = rsa.generate_private_key(65537, 3072)
    h = header(only_ca_certs=True)
    der, tbs, n = crlenc.build_crl(h, random_rows(20), key)
    crl = crlenc.verify_crl(der, tbs, key.public_key(), h, n)
    assert crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value.only_contains_ca_certs
    (tmp_path / "a.crl").write_bytes(crlenc.pem_from_der(der))
    run = subprocess.run(["openssl", "crl", "-in", str(tmp_path / "a.crl"), "-noout", "-text"], capture_output=True,
                         text=True)
    assert run.returncode == 0 and "Only CA Certificates" in run.stdout


def test_pem_lines_are_64_characters() -> None:
    der = bytes(range(256)) * 1000
    pem = crlenc.pem_from_der(der).decode().splitlines()
    assert pem[0] == "-----BEGIN X509 CRL-----" and pem[-1] == "-----END X509 CRL-----"
    assert all(len(line) == 64 for line in pem[1:-2]) and 0 < len(pem[-2]) <= 64
    import base64

    assert base64.b64decode("".join(pem[1:-1])) == der


def test_verification_catches_a_wrong_key_and_a_tampered_crl() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    der, tbs, n = crlenc.build_crl(header(), random_rows(10), key)
    other = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(VerificationError, match="does not verify"):
        crlenc.verify_crl(der, tbs, other.public_key(), header(), n)
    with pytest.raises(VerificationError, match="differs"):
        crlenc.verify_crl(der, tbs, key.public_key(), header(number=2), n)
    with pytest.raises(VerificationError, match="serials"):
        crlenc.verify_crl(der, tbs, key.public_key(), header(), n, [12345678901234567])


def test_lint_flags_a_reason_the_baseline_requirements_forbid() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    der, _, _ = crlenc.build_crl(header(), [(5, 1_700_000_000, 6, None, 2_000_000_000)], key)  # certificateHold
    assert [f for f in crlenc.lint_crl(der) if f.blocking]


def test_dropped_entries_fast_path_and_fallback() -> None:
    from ceremony.crl.checks import _dropped_by_serial, dropped_serials

    key = ec.generate_private_key(ec.SECP256R1())
    rows = random_rows(300, seed=5)
    added = [(r[0] + 1, 1_750_000_000, 1, None, 2_000_000_000) for r in rows[::37] if r[0] + 1 not in
             {x[0] for x in rows}]

    def der(entries: list[crlenc.RevokedRow]) -> bytes:
        return crlenc.build_crl(header(), sorted(entries), key)[0]

    prev = der(rows)
    assert list(dropped_serials(prev, prev)) == []
    assert list(dropped_serials(prev, der(rows + added))) == []          # insertions only: fast path
    changed = [(s, r, 4 if c == 1 else c, i, n) for s, r, c, i, n in rows]  # same serials, other bytes
    assert list(dropped_serials(prev, der(changed + added))) == []       # falls back to serials
    missing = rows[:100] + rows[101:]
    assert list(dropped_serials(prev, der(missing + added))) == [rows[100][0]]
    assert list(_dropped_by_serial(prev, der(missing))) == [rows[100][0]]
    assert list(dropped_serials(prev, der([]))) == [r[0] for r in rows]


def test_this_update_covers_the_latest_revocation() -> None:
    """thisUpdate is set back by the clock skew, but never before an entry's revocationDate (whole seconds)."""
    skewed = dt.datetime(2026, 6, 1, 11, 55, 0, 700_000, tzinfo=dt.UTC)
    revoked = crlenc.epoch(dt.datetime(2026, 6, 1, 11, 59, 59, tzinfo=dt.UTC))
    assert crlenc.this_update_covering(skewed, revoked) == crlenc.from_epoch(revoked)
    assert crlenc.this_update_covering(skewed, revoked - 3600) == skewed.replace(microsecond=0)
    assert crlenc.this_update_covering(skewed, None) == skewed.replace(microsecond=0)
    rows = random_rows(50)
    sampler = crlenc.RowSample(rows)
    crlenc.encode_revoked(sampler, bytearray())
    assert sampler.latest == max(r[1] for r in rows)
    empty = crlenc.RowSample([])
    crlenc.encode_revoked(empty, bytearray())
    assert empty.latest is None
    assert crlenc.encode_revoked_packed([], bytearray(), CRL_ENTRY, NO_DATE)[2] is None
