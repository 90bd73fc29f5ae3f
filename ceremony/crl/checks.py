"""Checks of a new CRL against the one it replaces (Let's Encrypt's open request, made real).

A CRL that goes backwards is worse than none: relying parties that cached the previous one may
keep it, and a dropped entry silently un-revokes a certificate. Before a CRL is published:

* its CRL Number is strictly greater than the previous one (RFC 5280 §5.2.3);
* its issuer (name and authority key identifier) is the previous CRL's;
* its thisUpdate is not earlier than the previous thisUpdate;
* every serial of the previous CRL is still listed, unless that certificate has expired by the
  new thisUpdate (only then may an entry leave a CRL).

Entries are compared by walking both DER encodings in serial order (both CRLs come from
:mod:`ceremony.crl.encoding`, which writes entries ordered by serial): no Python object per entry, so a
million entries are compared in about a second.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cryptography import x509

from ceremony.common.errors import VerificationError

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
    scope: bytes | None = None
    """The DER of the CRL's IssuingDistributionPoint (a partition's URL, an ARL's CA-only flag); None: a full CRL.
    A CRL only ever follows one of the same scope."""


def summarise(crl: x509.CertificateRevocationList) -> CrlSummary:
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        raise VerificationError("the CRL has no CRL Number") from None
    try:
        aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        aki = None
    try:
        scope: bytes | None = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value.public_bytes()
    except x509.ExtensionNotFound:
        scope = None
    return CrlSummary(crl.issuer.public_bytes(), aki, number, crl.last_update_utc, crl.next_update_utc, len(crl),
                      scope)


def _read_tl(buf: bytes | memoryview, i: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the TLV at ``i``."""
    tag = buf[i]
    first = buf[i + 1]
    if first < 0x80:
        return tag, i + 2, i + 2 + first
    n = first & 0x7F
    length = int.from_bytes(buf[i + 2:i + 2 + n], "big")
    return tag, i + 2 + n, i + 2 + n + length


def _revoked_region(buf: bytes | memoryview) -> tuple[int, int]:
    """(start, end) of the revokedCertificates content of a DER CRL; (0, 0) when it has none."""
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
        return 0, 0
    _, j, end = _read_tl(buf, i)
    return j, end


def _entries(buf: bytes | memoryview, j: int, end: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each revoked entry in ``buf[j:end]``."""
    while j < end:
        first = buf[j + 1]
        nxt = j + 2 + first if first < 0x80 else _read_tl(buf, j)[2]
        yield j, nxt
        j = nxt


def _serial_at(buf: bytes | memoryview, j: int) -> int:
    body = j + 2 if buf[j + 1] < 0x80 else _read_tl(buf, j)[1]
    return int.from_bytes(buf[body + 2:body + 2 + buf[body + 1]], "big")


def entry_serials(der: bytes) -> Iterator[int]:
    """Every userCertificate serial of a DER CRL, in encoding order, without a full parse."""
    buf = memoryview(der)
    start, end = _revoked_region(buf)
    for j, _ in _entries(buf, start, end):
        yield _serial_at(buf, j)


def _dropped_by_serial(previous_der: bytes, new_der: bytes) -> Iterator[int]:
    new_iter = entry_serials(new_der)
    current = next(new_iter, None)
    for serial in entry_serials(previous_der):
        while current is not None and current < serial:
            current = next(new_iter, None)
        if current != serial:
            yield serial


def dropped_serials(previous_der: bytes, new_der: bytes) -> Iterator[int]:
    """Serials in the previous CRL and not in the new one (both in ascending serial order).

    Fast path: an entry never changes once written (its serial, date, reason and invalidity date are
    fixed at revocation), so each previous entry is looked for *byte for byte* in the new CRL from
    where the last one was found; the entries skipped over are walked to make sure the match starts
    on an entry boundary. Anything unexpected (an entry whose bytes changed, a match off a boundary)
    falls back to comparing serial numbers entry by entry.
    """
    ps, pe = _revoked_region(previous_der)
    ns, ne = _revoked_region(new_der)
    if pe - ps == ne - ns and memoryview(previous_der)[ps:pe] == memoryview(new_der)[ns:ne]:
        return
    pos = ns
    startswith, find = new_der.startswith, new_der.find
    for a, b in _entries(previous_der, ps, pe):
        entry = previous_der[a:b]
        if startswith(entry, pos):
            pos += b - a
            continue
        found = find(entry, pos, ne)
        if found < 0:
            yield from _dropped_by_serial(previous_der, new_der)
            return
        for j, k in _entries(new_der, pos, ne):  # the entries added since: walk to the match
            if j >= found:
                break
            pos = k
        if pos != found:
            yield from _dropped_by_serial(previous_der, new_der)
            return
        pos = found + (b - a)


def check_against_previous(previous_der: bytes, new_der: bytes, not_after: NotAfterLookup,
                           previous: CrlSummary | None = None, new_summary: CrlSummary | None = None) -> list[str]:
    """Raise :class:`VerificationError` naming every rule the new CRL breaks; return what was checked.

    ``previous`` / ``new_summary`` may be given when the caller parsed the CRLs already.
    """
    prev = previous or summarise(x509.load_der_x509_crl(previous_der))
    new = new_summary or summarise(x509.load_der_x509_crl(new_der))
    problems: list[str] = []
    if new.number <= prev.number:
        problems.append(f"CRL Number {new.number} is not greater than the previous CRL's {prev.number}")
    if new.issuer_der != prev.issuer_der:
        problems.append("the issuer name differs from the previous CRL's")
    if new.authority_key_id != prev.authority_key_id:
        problems.append("the authority key identifier differs from the previous CRL's")
    if new.scope != prev.scope:
        problems.append("its issuing distribution point (the partition or scope it covers) differs from the "
                        "previous CRL's")
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
    return ["number strictly greater", "same issuer and key identifier", "same scope", "thisUpdate not earlier",
            "no unexpired entry dropped"]
