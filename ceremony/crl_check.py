"""Checks of a new CRL against the one it replaces (Let's Encrypt's open request, made real).

A CRL that goes backwards is worse than none: relying parties that cached the previous one may
keep it, and a dropped entry silently un-revokes a certificate. Before a CRL is published:

* its CRL Number is strictly greater than the previous one (RFC 5280 §5.2.3);
* its issuer (name and authority key identifier) is the previous CRL's;
* its thisUpdate is not earlier than the previous thisUpdate;
* every serial of the previous CRL is still listed, unless that certificate has expired by the
  new thisUpdate (only then may an entry leave a CRL).

Entries are compared by walking both DER encodings in serial order (both CRLs come from
:mod:`ceremony.crl`, which writes entries ordered by serial): no Python object per entry, so a
million entries are compared in about a second.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cryptography import x509

from .errors import VerificationError

#: Answers "when does the certificate with this serial expire?" (None when unknown).
NotAfterLookup = Callable[[int], dt.datetime | None]


@dataclass(frozen=True)
class CrlSummary:
    """The parts of a CRL the checks and metrics need, read without parsing every entry."""

    issuer_der: bytes
    authority_key_id: bytes | None
    number: int
    this_update: dt.datetime
    next_update: dt.datetime | None
    entries: int


def summarise(crl: x509.CertificateRevocationList) -> CrlSummary:
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        raise VerificationError("the CRL has no CRL Number") from None
    try:
        aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        aki = None
    return CrlSummary(crl.issuer.public_bytes(), aki, number, crl.last_update_utc, crl.next_update_utc, len(crl))


def _read_tl(buf: bytes | memoryview, i: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the TLV at ``i``."""
    tag = buf[i]
    first = buf[i + 1]
    if first < 0x80:
        return tag, i + 2, i + 2 + first
    n = first & 0x7F
    length = int.from_bytes(buf[i + 2:i + 2 + n], "big")
    return tag, i + 2 + n, i + 2 + n + length


def entry_serials(der: bytes) -> Iterator[int]:
    """Every userCertificate serial of a DER CRL, in encoding order, without a full parse."""
    buf = memoryview(der)
    _, start, _ = _read_tl(buf, 0)               # CertificateList
    _, i, tbs_end = _read_tl(buf, start)         # TBSCertList
    if buf[i] == 0x02:                           # version
        i = _read_tl(buf, i)[2]
    i = _read_tl(buf, i)[2]                      # signature AlgorithmIdentifier
    i = _read_tl(buf, i)[2]                      # issuer
    i = _read_tl(buf, i)[2]                      # thisUpdate
    if i < tbs_end and buf[i] in (0x17, 0x18):   # nextUpdate (optional)
        i = _read_tl(buf, i)[2]
    if i >= tbs_end or buf[i] != 0x30:           # no revokedCertificates: only [0] extensions follow
        return
    _, j, end = _read_tl(buf, i)
    frombytes = int.from_bytes
    while j < end:
        first = buf[j + 1]
        if first < 0x80:
            body, nxt = j + 2, j + 2 + first
        else:
            _, body, nxt = _read_tl(buf, j)
        sl = buf[body + 1]
        yield frombytes(buf[body + 2:body + 2 + sl], "big")
        j = nxt


def dropped_serials(previous_der: bytes, new_der: bytes) -> Iterator[int]:
    """Serials in the previous CRL and not in the new one (both in ascending serial order)."""
    new_iter = entry_serials(new_der)
    current = next(new_iter, None)
    for serial in entry_serials(previous_der):
        while current is not None and current < serial:
            current = next(new_iter, None)
        if current != serial:
            yield serial


def check_against_previous(previous_der: bytes, new_der: bytes, not_after: NotAfterLookup) -> list[str]:
    """Raise :class:`VerificationError` naming every rule the new CRL breaks; return what was checked."""
    prev = summarise(x509.load_der_x509_crl(previous_der))
    new = summarise(x509.load_der_x509_crl(new_der))
    problems: list[str] = []
    if new.number <= prev.number:
        problems.append(f"CRL Number {new.number} is not greater than the previous CRL's {prev.number}")
    if new.issuer_der != prev.issuer_der:
        problems.append("the issuer name differs from the previous CRL's")
    if new.authority_key_id != prev.authority_key_id:
        problems.append("the authority key identifier differs from the previous CRL's")
    if new.this_update < prev.this_update:
        problems.append(f"thisUpdate {new.this_update.isoformat()} is earlier than the previous CRL's "
                        f"{prev.this_update.isoformat()}")
    dropped = []
    for serial in dropped_serials(previous_der, new_der):
        expires = not_after(serial)
        if expires is None or expires > new.this_update:
            dropped.append(serial)
            if len(dropped) >= 5:
                break
    if dropped:
        listing = ", ".join(f"{s:x}" for s in dropped)
        problems.append(f"entries of unexpired certificates were dropped (serials {listing}"
                        f"{', ...' if len(dropped) >= 5 else ''})")
    if problems:
        raise VerificationError("the new CRL does not follow the previous one: " + "; ".join(problems)
                                + "; nothing was published")
    return ["number strictly greater", "same issuer and key identifier", "thisUpdate not earlier",
            "no unexpired entry dropped"]
