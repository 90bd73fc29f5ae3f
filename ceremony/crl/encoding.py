"""CRLs encoded directly in DER and signed through the HSM key.

Why not cryptography's ``CertificateRevocationListBuilder``: fed one entry at a time it copies
itself on every call (quadratic), and even built in one go it allocates a Python object per
entry. A national CA may carry a million revoked certificates, and the CRL must be signed in a
few seconds with little memory. So the TBSCertList is written here byte by byte:

* every revoked entry is ``SEQUENCE { userCertificate INTEGER, revocationDate Time,
  crlEntryExtensions OPTIONAL }`` with a reasonCode extension when the reason is not
  ``unspecified`` (RFC 5280 §5.3.1: absent rather than unspecified) and an invalidityDate
  extension (always GeneralizedTime, §5.3.2) when one was given;
* times follow RFC 5280 §5.1.2.4-6: UTCTime through 2049, GeneralizedTime from 2050, always
  in seconds with ``Z``;
* the per-entry work is a few table lookups: the date part of a time is cached per day and the
  ``HHMMSSZ`` part comes from a precomputed table of the 86,400 seconds of a day, so a million
  entries take about a second of Python;
* rows are consumed from an iterator straight into one ``bytearray``, so memory is the size of
  the CRL, not of a million Python objects.

The TBS is hashed on the host and the digest signed in the HSM (:mod:`ceremony.hsm.signers`), then
the result is parsed back with cryptography and checked (:func:`verify_crl`): signature, TBS
bytes, number of entries, a sample of serials.
"""

from __future__ import annotations

import binascii
import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pkilint import loader, pkix
from pkilint.cabf import cabf_crl
from pkilint.pkix import crl as pk_crl
from pkilint.pkix import extension, name

from ceremony.common.errors import LintError, VerificationError
from ceremony.hsm.signers import hash_for, verify_signature
from ceremony.x509.lint import enforce, findings_from_results, throwaway_key_like

#: One revoked entry as the registry yields it: ``(serial, revoked_at, reason_code | None,
#: invalidity_date | None, not_after)``; times are epoch seconds (UTC), reason None = unspecified.
RevokedRow = tuple[int, int, int | None, int | None, int]


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

#: The nextUpdate of a CA's last CRL (RFC 5280 5.1.2.6: a CA that will issue no more CRLs), GeneralizedTime
#: 99991231235959Z; the CA termination ceremony signs it, and no CRL may follow it.
FINAL_NEXT_UPDATE = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)


_UTCTIME_LIMIT = dt.datetime(2050, 1, 1, tzinfo=dt.UTC)


_UTCTIME_LIMIT_EPOCH = int((_UTCTIME_LIMIT - _EPOCH).total_seconds())


_HMS: list[bytes] = [b"%02d%02d%02dZ" % (s // 3600, s // 60 % 60, s % 60) for s in range(86400)]


OID_CRL_NUMBER = bytes.fromhex("0603551d14")


OID_AKI = bytes.fromhex("0603551d23")


OID_REASON = bytes.fromhex("0603551d15")


OID_INVALIDITY = bytes.fromhex("0603551d18")


OID_IDP = bytes.fromhex("0603551d1c")
#: id-ce-expiredCertsOnCRL, 2.5.29.60 (X.509 (2019) 9.6.2.9; ETSI EN 319 411-2 CSS-6.3.10): revoked certificates
#: that expired on or after the date it gives are still listed.
OID_EXPIRED_CERTS_ON_CRL = bytes.fromhex("0603551d3c")


_SIG_ALGS: dict[str, bytes] = {
    # AlgorithmIdentifier DER: ECDSA omits parameters (RFC 5758), RSA carries NULL (RFC 4055).
    "ecdsa-sha256": bytes.fromhex("300a06082a8648ce3d040302"),
    "ecdsa-sha384": bytes.fromhex("300a06082a8648ce3d040303"),
    "ecdsa-sha512": bytes.fromhex("300a06082a8648ce3d040304"),
    "rsa-sha256": bytes.fromhex("300d06092a864886f70d01010b0500"),
    "rsa-sha384": bytes.fromhex("300d06092a864886f70d01010c0500"),
    "rsa-sha512": bytes.fromhex("300d06092a864886f70d01010d0500"),
}


# keyCompromise and friends: the whole extension is constant per reason code.
_REASON_EXT: dict[int, bytes] = {
    code: b"\x30\x0a" + OID_REASON + b"\x04\x03\x0a\x01" + bytes([code]) for code in range(11) if code != 7}


def der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, content: bytes | bytearray) -> bytes:
    return bytes([tag]) + der_length(len(content)) + bytes(content)


def der_integer(value: int) -> bytes:
    if value < 0:
        raise ValueError("negative integers are not used in CRLs")
    return tlv(0x02, value.to_bytes((value.bit_length() + 8) // 8, "big"))


def epoch(value: dt.datetime) -> int:
    if value.tzinfo is None:
        raise ValueError("CRL times must be timezone-aware")
    return int((value - _EPOCH).total_seconds())


def from_epoch(value: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(seconds=value)


def encode_time(value: int, generalized: bool = False) -> bytes:
    """RFC 5280 Time: UTCTime before 2050 (unless ``generalized``), else GeneralizedTime."""
    d = from_epoch(value)
    hms = _HMS[value % 86400]
    if generalized or value >= _UTCTIME_LIMIT_EPOCH:
        return b"\x18\x0f" + b"%04d%02d%02d" % (d.year, d.month, d.day) + hms
    if d.year < 1950:
        raise ValueError(f"time {d.isoformat()} is before 1950")
    return b"\x17\x0d" + b"%02d%02d%02d" % (d.year % 100, d.month, d.day) + hms


class _DayCache(dict[int, bytes]):
    """Tagged date prefix of a day (``17 0d YYMMDD`` or ``18 0f YYYYMMDD``), computed once per day."""

    def __init__(self, generalized: bool) -> None:
        super().__init__()
        self.generalized = generalized

    def __missing__(self, day: int) -> bytes:
        value = encode_time(day * 86400, self.generalized)[:-7]
        self[day] = value
        return value


def encode_revoked(rows: Iterable[RevokedRow], out: bytearray) -> int:
    """Append the DER of each revoked entry to ``out``; return how many there were.

    Rows must come ordered by serial (the registry does): a CRL in serial order can be compared
    with the previous one in one pass.
    """
    utc_days = _DayCache(False)
    gen_days = _DayCache(True)
    hms = _HMS
    reason_ext = _REASON_EXT
    limit = _UTCTIME_LIMIT_EPOCH
    inv_oid = b"\x06\x03\x55\x1d\x18\x04\x11"
    n = 0
    append = out.extend
    for serial, revoked_at, reason, invalidity, _not_after in rows:
        sb = serial.to_bytes((serial.bit_length() + 8) >> 3, "big")
        d, r = divmod(revoked_at, 86400)
        when = (utc_days[d] if revoked_at < limit else gen_days[d]) + hms[r]
        if reason is None and invalidity is None:
            body = b"\x02" + bytes((len(sb),)) + sb + when
        else:
            ext = reason_ext[reason] if reason is not None else b""
            if invalidity is not None:
                di, ri = divmod(invalidity, 86400)
                ext += b"\x30\x18" + inv_oid + gen_days[di] + hms[ri]
            body = b"\x02" + bytes((len(sb),)) + sb + when + b"\x30" + bytes((len(ext),)) + ext
        append(b"\x30" + bytes((len(body),)) + body)
        n += 1
    return n


_LEN: list[bytes] = [bytes((i,)) for i in range(128)]


def encode_revoked_packed(chunks: Iterable[bytes], out: bytearray, record: Any,
                          no_date: int) -> tuple[int, list[RevokedRow], int | None]:
    """Like :func:`encode_revoked`, from the registry's packed records (``Registry.iter_revoked_packed``).

    ``record`` is the registry's ``struct.Struct`` (serial as 20 big-endian bytes, revoked_at,
    reason code, invalidity date or ``no_date``, not_after). The serial bytes are used as they are
    (leading zero bytes stripped, one put back when the top bit is set: DER INTEGER), so no Python
    integer is made per entry. Returns the count, a structural sample of rows (the first row of
    every chunk, the last row, and the first row of every entry shape: reason code, invalidity date
    or not, UTCTime or GeneralizedTime — every entry is written from one of these shapes) and the
    latest revocationDate written (epoch seconds; None without entries), which thisUpdate must not
    precede (:func:`this_update_covering`).
    """
    utc_days = _DayCache(False)
    gen_days = _DayCache(True)
    hms, reason_ext, lens, limit = _HMS, _REASON_EXT, _LEN, _UTCTIME_LIMIT_EPOCH
    inv_prefix = b"\x30\x18\x06\x03\x55\x1d\x18\x04\x11"
    # The common entry (20-byte serial without a leading zero byte, UTCTime, at most a reasonCode)
    # is four constant-or-cached pieces: prefix by reason, serial, date, time + suffix by reason.
    suffix = {code: b"\x30" + lens[len(e)] + e for code, e in reason_ext.items()}
    suffix[0] = b""
    prefix = {code: b"\x30" + lens[2 + 20 + 15 + len(suf)] + b"\x02\x14" for code, suf in suffix.items()}
    append = out.extend
    frombytes = int.from_bytes
    shapes: set[int] = set()
    sample: list[RevokedRow] = []
    last: Any = None
    n = 0
    latest = -1 << 63

    def keep(t: Any) -> None:
        s_, r_, c_, i_, na_ = t
        sample.append((frombytes(s_, "big"), r_, c_ or None, None if i_ == no_date else i_, na_))

    for chunk in chunks:
        keep(record.unpack_from(chunk, 0))
        for t in record.iter_unpack(chunk):
            s, rev, reason, inv, _na = t
            if rev > latest:
                latest = rev
            d, r = divmod(rev, 86400)
            if inv == no_date and 0 < s[0] < 0x80 and rev < limit:
                append(prefix[reason] + s + utc_days[d] + hms[r] + suffix[reason])
                if reason not in shapes:
                    shapes.add(reason)
                    keep(t)
                continue
            key = 100 + reason * 2 + (inv != no_date) + (1000 if rev >= limit else 0)
            if key not in shapes:
                shapes.add(key)
                keep(t)
            sb = s.lstrip(b"\0")
            if sb[0] & 0x80:
                sb = b"\0" + sb
            when = (utc_days[d] if rev < limit else gen_days[d]) + hms[r]
            if not reason and inv == no_date:
                body = b"\x02" + lens[len(sb)] + sb + when
            else:
                ext = reason_ext[reason] if reason else b""
                if inv != no_date:
                    di, ri = divmod(inv, 86400)
                    ext += inv_prefix + gen_days[di] + hms[ri]
                body = b"\x02" + lens[len(sb)] + sb + when + b"\x30" + lens[len(ext)] + ext
            append(b"\x30" + lens[len(body)] + body)
        n += len(chunk) // record.size
        if chunk:
            last = record.unpack_from(chunk, len(chunk) - record.size)
    if last is not None:
        keep(last)
    return n, sample, (latest if n else None)


def this_update_covering(this_update: dt.datetime, latest_revocation: int | None) -> dt.datetime:
    """``this_update``, or the latest revocationDate of the entries when that is later.

    thisUpdate is set back by the clock skew allowance, and a revocation recorded within that window
    (revoke, then sign at once) would otherwise be dated after the CRL that lists it. Both are whole
    seconds (the registry keeps revocation times in epoch seconds; CRL times have no fractions).
    """
    floor = this_update.replace(microsecond=0)
    if latest_revocation is None:
        return floor
    return max(floor, from_epoch(latest_revocation))


def signature_algorithm(public_key: Any) -> tuple[bytes, hashes.HashAlgorithm]:
    """The AlgorithmIdentifier DER and hash the suite uses with this key (as for certificates)."""
    h = hash_for(public_key)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return _SIG_ALGS[f"ecdsa-{h.name}"], h
    if isinstance(public_key, rsa.RSAPublicKey):
        return _SIG_ALGS[f"rsa-{h.name}"], h
    raise VerificationError(f"unsupported CRL signing key {type(public_key).__name__}")


@dataclass(frozen=True)
class CrlHeader:
    """Everything in a CRL except its entries."""

    issuer: x509.Name
    authority_key_id: bytes
    number: int
    this_update: dt.datetime
    next_update: dt.datetime
    only_ca_certs: bool = False
    """Root CRLs: an IssuingDistributionPoint saying the CRL covers CA certificates only (an ARL)."""
    expired_certs_on_crl: dt.datetime | None = None
    """The subordinate CA's CRLs keep revoked certificates after they expire (qualified certificates' status
    outlives their validity): ExpiredCertsOnCRL says since when, the CA certificate's notBefore (every one)."""
    partition_url: str | None = None
    """A partition CRL: an IssuingDistributionPoint naming this URL (the one its certificates' CRL distribution
    point names) with onlyContainsUserCerts, critical (RFC 5280 5.2.5): the CRL's scope is that partition's
    end-entity certificates, and a relying party must not take it for the full CRL."""

    def __post_init__(self) -> None:
        if not 0 < self.number < 1 << 159:
            raise ValueError("a CRL number is a positive integer of at most 20 octets (RFC 5280 5.2.3)")
        if self.next_update <= self.this_update:
            raise ValueError("nextUpdate must be later than thisUpdate")
        if self.partition_url is not None and self.only_ca_certs:
            raise ValueError("a partition CRL covers end-entity certificates, an ARL CA certificates: not both")

    def extensions(self) -> bytes:
        aki = tlv(0x30, OID_AKI + tlv(0x04, tlv(0x30, tlv(0x80, self.authority_key_id))))
        number = tlv(0x30, OID_CRL_NUMBER + tlv(0x04, der_integer(self.number)))
        exts = aki + number
        if self.expired_certs_on_crl is not None:
            exts += tlv(0x30, OID_EXPIRED_CERTS_ON_CRL + tlv(0x04, encode_time(epoch(self.expired_certs_on_crl),
                                                                              generalized=True)))
        if self.only_ca_certs:
            # IssuingDistributionPoint { onlyContainsCACerts [2] TRUE }, critical (RFC 5280 5.2.5).
            exts += tlv(0x30, OID_IDP + b"\x01\x01\xff" + tlv(0x04, tlv(0x30, b"\x82\x01\xff")))
        if self.partition_url is not None:
            exts += tlv(0x30, OID_IDP + b"\x01\x01\xff" + tlv(0x04, partition_idp_value(self.partition_url)))
        return tlv(0xA0, tlv(0x30, exts))


def partition_idp_value(url: str) -> bytes:
    """The DER of a partition CRL's IssuingDistributionPoint (RFC 5280 5.2.5):
    ``{ distributionPoint [0] { fullName [0] { uniformResourceIdentifier [6] url } }, onlyContainsUserCerts [1]
    TRUE }``. The URL is the one the partition's certificates name, byte for byte (openssl and other relying
    parties match the CRL to the certificate's distribution point by it)."""
    try:
        uri = url.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"partition URL {url!r} is not ASCII (IA5String)") from None
    return tlv(0x30, tlv(0xA0, tlv(0xA0, tlv(0x86, uri))) + b"\x81\x01\xff")


def encode_tbs(header: CrlHeader, alg_id: bytes, revoked: bytearray, count: int, consume: bool = True) -> bytearray:
    """The TBSCertList; ``revoked`` is cleared unless ``consume`` is False (one copy of the entries in memory)."""
    head = (b"\x02\x01\x01" + alg_id + header.issuer.public_bytes()
            + encode_time(epoch(header.this_update)) + encode_time(epoch(header.next_update)))
    tail = header.extensions()
    entries_hdr = (b"\x30" + der_length(len(revoked))) if count else b""
    body_len = len(head) + len(entries_hdr) + (len(revoked) if count else 0) + len(tail)
    tbs = bytearray(b"\x30" + der_length(body_len) + head + entries_hdr)
    if count:
        tbs += revoked
    if consume:
        revoked.clear()
    tbs += tail
    return tbs


def sign_tbs(tbs: bytes | bytearray, alg_id: bytes, key: Any) -> bytes:
    """Sign through ``key`` (an HSM-backed key, or a throwaway software key) and wrap the CRL.

    ECDSA: the digest is computed on the host from ``tbs`` as it is (no copy) and the HSM signs the
    digest (:class:`~ceremony.hsm.signers.HsmEcPrivateKey`). The signed CRL is one ``bytes`` object.
    """
    public = key.public_key()
    _, h = signature_algorithm(public)
    if isinstance(public, ec.EllipticCurvePublicKey):
        sig = key.sign(tbs, ec.ECDSA(h))
    else:
        sig = key.sign(bytes(tbs), padding.PKCS1v15(), h)
    bits = tlv(0x03, b"\x00" + sig)
    body_len = len(tbs) + len(alg_id) + len(bits)
    return b"".join((b"\x30", der_length(body_len), tbs, alg_id, bits))


def tbs_of(der: bytes) -> memoryview:
    """The TBSCertList inside a signed CRL, without a copy."""
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    j = i + 2 if der[i + 1] < 0x80 else i + 2 + (der[i + 1] & 0x7F)
    length = der[i + 1] if der[i + 1] < 0x80 else int.from_bytes(der[i + 2:j], "big")
    return memoryview(der)[i:j + length]


def build_crl(header: CrlHeader, rows: Iterable[RevokedRow], key: Any) -> tuple[bytes, bytes, int]:
    """Encode and sign; returns ``(crl_der, tbs_der, entry_count)``."""
    alg_id, _ = signature_algorithm(key.public_key())
    revoked = bytearray()
    count = encode_revoked(rows, revoked)
    tbs = bytes(encode_tbs(header, alg_id, revoked, count))
    return sign_tbs(tbs, alg_id, key), tbs, count


def verify_crl(der: bytes, tbs: bytes | bytearray | memoryview, issuer_public_key: Any, header: CrlHeader, count: int,
               sample: Sequence[int] = ()) -> x509.CertificateRevocationList:
    """Check the signed CRL is exactly what was encoded, and that an independent parser agrees.

    The signature must verify over the encoded TBS with the CA's public key and the signed CRL must
    carry those TBS bytes; then cryptography parses it and must read the same issuer, CRL Number,
    times and number of entries, and find every serial of ``sample``. (cryptography's own
    ``tbs_certlist_bytes`` re-encodes a million entries in about a second, so the TBS is compared
    in place instead.)
    """
    hdr = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    if der[0] != 0x30 or memoryview(der)[hdr:hdr + len(tbs)] != memoryview(tbs):
        raise VerificationError("the signed CRL does not carry the TBS that was encoded")
    try:
        crl = x509.load_der_x509_crl(der)
    except ValueError as exc:
        raise VerificationError(f"the signed CRL does not parse: {exc}") from None
    _, h = signature_algorithm(issuer_public_key)
    try:
        verify_signature(issuer_public_key, crl.signature, bytes(tbs), h)
    except (InvalidSignature, TypeError):
        raise VerificationError("the CRL signature made by the HSM does not verify with the CA's public key") \
            from None
    problems = []
    if crl.issuer != header.issuer:
        problems.append("issuer")
    if crl.last_update_utc != header.this_update.replace(microsecond=0) or \
            crl.next_update_utc != header.next_update.replace(microsecond=0):
        problems.append("thisUpdate/nextUpdate")
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    if number != header.number:
        problems.append("CRL Number")
    if len(crl) != count:
        problems.append(f"number of entries ({len(crl)}, {count} encoded)")
    problems += _scope_problems(crl, header)
    missing = [s for s in sample if crl.get_revoked_certificate_by_serial_number(s) is None]
    if missing:
        problems.append("serials " + ", ".join(f"{s:x}" for s in missing[:5]))
    if problems:
        raise VerificationError("the signed CRL, parsed back, differs from what was encoded: " + ", ".join(problems))
    return crl


def _scope_problems(crl: x509.CertificateRevocationList, header: CrlHeader) -> list[str]:
    """A partition CRL, parsed back, must carry its critical IssuingDistributionPoint (URL, user certificates only);
    any other CRL of the job none that narrows it to user certificates."""
    try:
        ext = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
    except x509.ExtensionNotFound:
        return ["issuing distribution point (missing)"] if header.partition_url is not None else []
    idp = ext.value
    if header.partition_url is None:
        return [] if idp.only_contains_ca_certs == header.only_ca_certs else ["issuing distribution point"]
    names = [n.value for n in idp.full_name or []]
    if not ext.critical or names != [header.partition_url] or not idp.only_contains_user_certs \
            or idp.only_contains_ca_certs or idp.only_some_reasons or idp.indirect_crl:
        return [f"issuing distribution point (expected {header.partition_url}, user certificates only, critical)"]
    return []


def pem_chunks(der: bytes | bytearray | memoryview, block_lines: int = 4096) -> Iterator[bytes]:
    """The PEM armour of a CRL in pieces (64-character lines, RFC 7468), without a copy per line."""
    view = memoryview(der)
    yield b"-----BEGIN X509 CRL-----\n"
    step = 48 * block_lines
    for start in range(0, len(view), step):
        b64 = binascii.b2a_base64(view[start:start + step], newline=False)
        yield b"\n".join([b64[i:i + 64] for i in range(0, len(b64), 64)]) + b"\n"
    yield b"-----END X509 CRL-----\n"


def pem_from_der(der: bytes | bytearray | memoryview) -> bytes:
    return b"".join(pem_chunks(der))


#: Above this many entries pkilint would take longer than the whole job (it decodes every entry into
#: pyasn1 objects, about 0.3 ms each); the lint then runs on a structural sample (see lint_crl_rows).
LINT_FULL_MAX = 5000


def _crl_validator(ca_only: bool) -> Any:
    crl_type = pk_crl.CertificateRevocationListType.ARL if ca_only else pk_crl.CertificateRevocationListType.CRL
    return pk_crl.create_pkix_crl_validator_container(
        [pkix.create_attribute_decoder(name.ATTRIBUTE_TYPE_MAPPINGS),
         pkix.create_extension_decoder(extension.EXTENSION_MAPPINGS)],
        [pk_crl.create_issuer_validator_container([]),
         pk_crl.create_validity_validator_container([cabf_crl.create_validity_period_validator(crl_type)]),
         pk_crl.create_extensions_validator_container([]),
         cabf_crl.CabfCrlReasonCodeAllowlistValidator(crl_type)])


def lint_crl(der: bytes, ca_only: bool = False) -> list[Any]:
    """pkilint's CRL linter with the CA/Browser Forum profile (BR 7.2): CRL, or ARL for a root."""

    try:
        doc = loader.RFC5280CertificateListDocumentLoader().load_der_document(der, "crl")
    except ValueError as exc:
        raise LintError(f"pkilint cannot decode the CRL: {exc}") from None
    return findings_from_results(_crl_validator(ca_only).validate(doc.root))


class RowSample:
    """Passes rows through and keeps a structural sample of them for lint and verification.

    The sample holds the first and last rows, one row of every entry *shape* (reason code,
    invalidity date or not, UTCTime or GeneralizedTime, serial length) and every ``stride``-th
    row: each entry is written by the same code from these few shapes, so linting one of each is
    linting all of them.
    """

    def __init__(self, rows: Iterable[RevokedRow], stride: int = 65536) -> None:
        self._rows = rows
        self.stride = stride
        self.rows: list[RevokedRow] = []
        self._shapes: set[tuple[Any, ...]] = set()
        self.last: RevokedRow | None = None
        self.count = 0
        self.latest: int | None = None
        """The latest revocationDate that passed (epoch seconds), None before any row."""

    def __iter__(self) -> Any:
        shapes, keep, stride = self._shapes, self.rows.append, self.stride
        n = 0
        row = None
        latest = -1 << 63
        for row in self._rows:
            if row[1] > latest:
                latest = row[1]
            shape = (row[2], row[3] is None, row[1] >= _UTCTIME_LIMIT_EPOCH, row[0].bit_length() >> 3)
            if shape not in shapes:
                shapes.add(shape)
                keep(row)
            elif n % stride == 0:
                keep(row)
            n += 1
            yield row
        self.count = n
        self.latest = latest if n else None
        if row is not None and (not self.rows or self.rows[-1] is not row):
            keep(row)
        self.last = row

    @property
    def serials(self) -> list[int]:
        return sorted({r[0] for r in self.rows})


def lint_before_signing(header: CrlHeader, rows: Sequence[RevokedRow], public_key: Any, ca_only: bool,
                        allowances: Sequence[Any], what: str) -> list[Any]:
    """Sign ``rows`` under ``header`` with a throwaway key like the CA's and lint the result."""

    der, _, _ = build_crl(header, sorted(rows), throwaway_key_like(public_key))
    findings = lint_crl(der, ca_only)
    enforce(findings, allowances, what)
    return findings
