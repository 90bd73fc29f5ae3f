"""End-entity certificate profiles of a subordinate CA (ETSI EN 319 412-2, -3 and -5), as pure functions.

Two kinds, named in the definition's ``profiles:`` of a subordinate CA:

``qualified-signature``
    A natural person's qualified certificate for electronic signatures (EN 319 412-2): the subject
    has countryName, commonName and givenName/surname or a pseudonym; keyUsage nonRepudiation
    (contentCommitment) only, critical (NAT-4.3.2 "type A"); qcStatements QcCompliance, QcType esign,
    QcSSCD (left out when the profile's policies are only QCP-n / QCP-l) and QcPDS.
``qualified-seal``
    A legal person's certificate for electronic seals (EN 319 412-3): the subject has countryName,
    organizationName, organizationIdentifier (from the CSR; EN 319 412-1 form such as ``NTRML-...``)
    and commonName; keyUsage nonRepudiation, critical; qcStatements QcCompliance, QcType eseal, QcSSCD
    (same rule) and QcPDS.

Both carry the profile's certificatePolicies, the issuing CA's CRL distribution point and AIA
caIssuers from the definition, AKI (the issuer's SKI) and SKI. Neither has an extendedKeyUsage:
EN 319 412-2 does not require one for signing or sealing certificates, and a restrictive EKU only
narrows what relying parties accept.

cryptography has no type for qcStatements (RFC 3739 / EN 319 412-5), so :func:`qc_statements` encodes
the extension's DER itself, with the few DER primitives below, and it is added as an
``UnrecognizedExtension``.

The CSR is trusted for its key and its subject name only: the subject is checked against the kind's
required and allowed attributes; the key must be one the definition would accept for a CA (ECDSA P-256
or P-384, RSA 3072 or 4096 with exponent 65537) and pass badkeys' weak-key checks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from pkilint.etsi.etsi_constants import CertificateType

from ceremony.common.errors import RequestError
from ceremony.definition.model import ALLOWED_RSA_BITS, CA, Profile, crl_partition_for, crl_url_for
from ceremony.hsm.weak_keys import weak_key_problem
from ceremony.x509.profiles import REHEARSAL_MARKER, Extension


def der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def der_tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + der_length(len(content)) + content


def der_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] > 39):
        raise ValueError(f"{dotted!r} is not a valid object identifier")
    out = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return der_tlv(0x06, bytes(out))


def der_sequence(*items: bytes) -> bytes:
    return der_tlv(0x30, b"".join(items))


def der_ia5(text: str) -> bytes:
    return der_tlv(0x16, text.encode("ascii"))


def der_printable(text: str) -> bytes:
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?")
    if not set(text) <= allowed:
        raise ValueError(f"{text!r} is not a PrintableString")
    return der_tlv(0x13, text.encode("ascii"))


QC_STATEMENTS_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.3")


QC_COMPLIANCE = "0.4.0.1862.1.1"


QC_SSCD = "0.4.0.1862.1.4"


QC_PDS = "0.4.0.1862.1.5"


QC_TYPE = "0.4.0.1862.1.6"


QC_TYPE_ESIGN = "0.4.0.1862.1.6.1"


QC_TYPE_ESEAL = "0.4.0.1862.1.6.2"


QC_CC_LEGISLATION = "0.4.0.1862.1.7"


KINDS = ("qualified-signature", "qualified-seal")


_QC_TYPE_OF_KIND = {"qualified-signature": QC_TYPE_ESIGN, "qualified-seal": QC_TYPE_ESEAL}


def qc_statements_der(kind: str, pds_url: str, pds_lang: str, legislation: Sequence[str] = (),
                      qscd: bool = True, more_pds: Sequence[tuple[str, str]] = ()) -> bytes:
    """The DER of the qcStatements extension value for ``kind``.

    ``qscd``: the private key is in a qualified signature/seal creation device (QcSSCD).

    ``legislation`` (QcCClegislation, EN 319 412-5 §4.2.4) names the countries whose law makes the
    certificate qualified, for a service outside the EU; empty means the statement is left out.
    """
    if kind not in _QC_TYPE_OF_KIND:
        raise ValueError(f"unknown end-entity profile kind {kind!r} (allowed: {', '.join(KINDS)})")
    statements = [
        der_sequence(der_oid(QC_COMPLIANCE)),
        der_sequence(der_oid(QC_TYPE), der_sequence(der_oid(_QC_TYPE_OF_KIND[kind]))),
        *([der_sequence(der_oid(QC_SSCD))] if qscd else []),
        der_sequence(der_oid(QC_PDS), der_sequence(*(der_sequence(der_ia5(url), der_printable(lang))
                                                     for url, lang in ((pds_url, pds_lang), *more_pds)))),
    ]
    if legislation:
        statements.append(der_sequence(der_oid(QC_CC_LEGISLATION),
                                       der_sequence(*(der_printable(c) for c in legislation))))
    return der_sequence(*statements)


def qc_statements(kind: str, pds_url: str, pds_lang: str, legislation: Sequence[str] = (),
                  qscd: bool = True, more_pds: Sequence[tuple[str, str]] = ()) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(QC_STATEMENTS_OID,
                                      qc_statements_der(kind, pds_url, pds_lang, legislation, qscd, more_pds))


#: EN 319 411-2 policies: QCP-n and QCP-l say the key is *not* required to be in a QSCD; QCP-n-qscd and
#: QCP-l-qscd say it is.
QCP_WITHOUT_QSCD = frozenset({"0.4.0.194112.1.0", "0.4.0.194112.1.1"})


QCP_WITH_QSCD = frozenset({"0.4.0.194112.1.2", "0.4.0.194112.1.3"})


def uses_qscd(profile: Profile) -> bool:
    """QcSSCD unless the profile names only non-QSCD qualified policies (QCP-n, QCP-l)."""
    policies = set(profile.policy_oids)
    return bool(policies & QCP_WITH_QSCD) or not (policies & QCP_WITHOUT_QSCD)


_GIVEN, _SURNAME, _PSEUDONYM = NameOID.GIVEN_NAME, NameOID.SURNAME, NameOID.PSEUDONYM


#: Whether a natural person's subject may carry a pseudonym in place of givenName/surname. EN 319 412-2 (NAT-4.2.4-1)
#: would allow one; the suite's Certificate Policy does not (PC-3.1.3-a: qualified certificates carry no pseudonym),
#: so the issuance refuses it before anything is signed, and the CPS (3.1.3, 7.1.4) states the rule from here.
PSEUDONYM_ALLOWED = False


_ATTRIBUTE_NAMES: dict[x509.ObjectIdentifier, str] = {
    NameOID.COUNTRY_NAME: "C", NameOID.COMMON_NAME: "CN", _GIVEN: "givenName", _SURNAME: "surname",
    _PSEUDONYM: "pseudonym", NameOID.SERIAL_NUMBER: "serialNumber", NameOID.TITLE: "title",
    NameOID.ORGANIZATION_NAME: "O", NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier", NameOID.LOCALITY_NAME: "L",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
}


_ALLOWED: dict[str, tuple[x509.ObjectIdentifier, ...]] = {
    # EN 319 412-2 §4.2.4 (natural person) and §5 of EN 319 412-1 (identifiers in serialNumber).
    "qualified-signature": (NameOID.COUNTRY_NAME, _GIVEN, _SURNAME, *((_PSEUDONYM,) if PSEUDONYM_ALLOWED else ()),
                            NameOID.SERIAL_NUMBER, NameOID.COMMON_NAME, NameOID.TITLE, NameOID.ORGANIZATION_NAME,
                            NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.ORGANIZATION_IDENTIFIER,
                            NameOID.LOCALITY_NAME, NameOID.STATE_OR_PROVINCE_NAME),
    # EN 319 412-3 §4.2.1 (legal person).
    "qualified-seal": (NameOID.COUNTRY_NAME, NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATION_IDENTIFIER,
                       NameOID.COMMON_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.SERIAL_NUMBER,
                       NameOID.LOCALITY_NAME, NameOID.STATE_OR_PROVINCE_NAME),
}


_REQUIRED: dict[str, tuple[x509.ObjectIdentifier, ...]] = {
    "qualified-signature": (NameOID.COUNTRY_NAME, NameOID.COMMON_NAME),
    "qualified-seal": (NameOID.COUNTRY_NAME, NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATION_IDENTIFIER,
                       NameOID.COMMON_NAME),
}


_SINGLE = (NameOID.COUNTRY_NAME, NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME,
           NameOID.ORGANIZATION_IDENTIFIER, _PSEUDONYM)


def _names(oids: Iterable[x509.ObjectIdentifier]) -> str:
    return ", ".join(_ATTRIBUTE_NAMES[o] for o in oids)


def subject_attributes(kind: str) -> tuple[list[str], list[str]]:
    """(required, allowed) subject attribute names of ``kind``, as :func:`check_subject` enforces them: the
    CPS states these name forms (7.1.4) from here, so that the text cannot drift from the check."""
    return [_ATTRIBUTE_NAMES[o] for o in _REQUIRED[kind]], [_ATTRIBUTE_NAMES[o] for o in _ALLOWED[kind]]


def check_subject(subject: x509.Name, kind: str, source: str) -> None:
    """Refuse a CSR subject that the kind's ETSI profile does not allow, naming what is allowed."""
    allowed, required = _ALLOWED[kind], _REQUIRED[kind]
    counts: dict[x509.ObjectIdentifier, int] = {}
    for rdn in subject.rdns:
        if len(rdn) != 1:
            raise RequestError(f"{source}: the CSR subject has a multi-valued RDN; one attribute per RDN is "
                               "allowed")
        attr = next(iter(rdn))
        if attr.oid == _PSEUDONYM and kind == "qualified-signature" and not PSEUDONYM_ALLOWED:
            raise RequestError(f"{source}: the CSR subject carries a pseudonym, which the Certificate Policy forbids "
                               "in qualified certificates (PC-3.1.3-a); the subject names the person by givenName "
                               "and/or surname as on the identity document (allowed: "
                               f"{_names(allowed)})")
        if attr.oid not in allowed:
            raise RequestError(f"{source}: the CSR subject has attribute {attr.oid.dotted_string} "
                               f"({getattr(attr.oid, '_name', '?')}), not allowed in a {kind} certificate "
                               f"(allowed: {_names(allowed)})")
        value = attr.value if isinstance(attr.value, str) else ""
        if not value.strip():
            raise RequestError(f"{source}: the CSR subject has an empty {_ATTRIBUTE_NAMES[attr.oid]}")
        if attr.oid == NameOID.COUNTRY_NAME and not (len(value) == 2 and value.isascii() and value.isupper()):
            raise RequestError(f"{source}: the CSR subject's C is {value!r} (allowed: a two-letter ISO 3166 code "
                               "in capitals, e.g. ML)")
        counts[attr.oid] = counts.get(attr.oid, 0) + 1
    missing = [o for o in required if o not in counts]
    if missing:
        raise RequestError(f"{source}: the CSR subject lacks {_names(missing)}, required in a {kind} certificate "
                           f"(required: {_names(required)})")
    dupes = [o for o in _SINGLE if counts.get(o, 0) > 1]
    if dupes:
        raise RequestError(f"{source}: the CSR subject repeats {_names(dupes)} (allowed: one of each)")
    if kind == "qualified-signature":
        names = _GIVEN in counts or _SURNAME in counts
        if not names and _PSEUDONYM not in counts:
            raise RequestError(f"{source}: a natural person's subject needs givenName and/or surname"
                               f"{', or a pseudonym' if PSEUDONYM_ALLOWED else ''} (EN 319 412-2 NAT-4.2.4-1)")
        if names and _PSEUDONYM in counts:
            raise RequestError(f"{source}: a pseudonym is not allowed together with givenName/surname "
                               "(EN 319 412-2 NAT-4.2.4-4)")
        if NameOID.ORGANIZATION_IDENTIFIER in counts and NameOID.ORGANIZATION_NAME not in counts:
            raise RequestError(f"{source}: organizationIdentifier is only allowed with organizationName")
    if kind == "qualified-seal":
        org = subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
        org_id = subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER)[0].value
        if org == org_id:
            raise RequestError(f"{source}: organizationIdentifier must identify the organisation, not repeat "
                               "its name (EN 319 412-3 LEG-4.2.1-6)")


_RFC4514_NAMES = {NameOID.SERIAL_NUMBER: "serialNumber", _SURNAME: "SN", _GIVEN: "GN", _PSEUDONYM: "pseudonym",
                  NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier", NameOID.TITLE: "title"}


def subject_text(name: x509.Name) -> str:
    """RFC 4514 text with readable names for the ETSI attributes (not ``2.5.4.5=...``)."""
    return name.rfc4514_string(_RFC4514_NAMES)


def marked_subject(subject: x509.Name, rehearsal: bool) -> x509.Name:
    """The CSR subject, with ``(REHEARSAL)`` appended to the CN of a rehearsal certificate."""
    if not rehearsal:
        return subject
    rdns = []
    for rdn in subject.rdns:
        attr = next(iter(rdn))
        if attr.oid == NameOID.COMMON_NAME:
            value = str(attr.value) + REHEARSAL_MARKER
            if len(value) > 64:
                raise RequestError(f"CN {value!r} exceeds 64 characters with the rehearsal marker")
            attr = x509.NameAttribute(NameOID.COMMON_NAME, value)
        rdns.append(x509.RelativeDistinguishedName([attr]))
    return x509.Name(rdns)


def check_key(public: Any, source: str) -> None:
    """Refuse a weak or unusual subject key: ECDSA P-256/P-384 or RSA 3072/4096 with e = 65537 only, and none
    that badkeys knows to be weak (the right size does not make a key safe: close primes, ROCA, blocklist)."""
    if isinstance(public, ec.EllipticCurvePublicKey):
        if public.curve.name not in ("secp256r1", "secp384r1"):
            raise RequestError(f"{source}: the CSR key uses curve {public.curve.name} "
                               "(allowed: ECDSA P-256, P-384; RSA 3072, 4096)")
    elif isinstance(public, rsa.RSAPublicKey):
        if public.key_size not in ALLOWED_RSA_BITS:
            raise RequestError(f"{source}: the CSR key is RSA {public.key_size} "
                               "(allowed: ECDSA P-256, P-384; RSA 3072, 4096)")
        if public.public_numbers().e != 65537:
            raise RequestError(f"{source}: the CSR's RSA public exponent is not 65537")
    else:
        raise RequestError(f"{source}: the CSR key is {type(public).__name__} (allowed: ECDSA P-256, P-384; "
                           "RSA 3072, 4096)")
    weak = weak_key_problem(public)
    if weak:
        raise RequestError(f"{source}: the CSR key is {weak}; nothing was signed: the requester generates a new key "
                           "and a new CSR")


EE_KEY_USAGE = x509.KeyUsage(
    digital_signature=False, content_commitment=True, key_encipherment=False, data_encipherment=False,
    key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False)


def ee_extensions(profile: Profile, issuing_ca: CA, issuer_cert: x509.Certificate, public_key: Any,
                  legislation: Sequence[str] = (), crl_partition: int | None = None) -> list[Extension]:
    """The extensions of an end-entity certificate; its CRL distribution point is the full CRL, or partition
    ``crl_partition`` (:func:`ceremony.definition.model.crl_partition_for`)."""
    ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return [
        Extension(x509.BasicConstraints(ca=False, path_length=None), True),
        Extension(EE_KEY_USAGE, True),
        Extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False),
        Extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False),
        Extension(x509.CertificatePolicies(
            [x509.PolicyInformation(x509.ObjectIdentifier(oid), None) for oid in profile.policy_oids]), False),
        Extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(crl_url_for(issuing_ca, crl_partition))],
            relative_name=None, reasons=None, crl_issuer=None)]), False),
        Extension(authority_information_access(issuing_ca), False),
        Extension(qc_statements(profile.kind, profile.qc_pds_url, profile.qc_pds_lang, legislation,
                                uses_qscd(profile), profile.pds_locations[1:]), False),
    ]


def authority_information_access(issuing_ca: CA) -> x509.AuthorityInformationAccess:
    """id-ad-ocsp with the issuing CA's OCSP URL when it has an OCSP service (``cas.<ca>.ocsp``), then caIssuers.

    A certificate keeps what it was issued with: changing the definition changes only later certificates.
    """
    found = []
    if issuing_ca.ocsp is not None:
        found.append(x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.OCSP,
                                            x509.UniformResourceIdentifier(issuing_ca.ocsp.url)))
    found.append(x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                                        x509.UniformResourceIdentifier(issuing_ca.publication.certificate_url)))
    return x509.AuthorityInformationAccess(found)


def validity_window(profile: Profile, issuer_cert: x509.Certificate, now: dt.datetime) -> tuple[dt.datetime,
                                                                                                   dt.datetime]:
    """``validity_days`` from now (to the second), never beyond the issuing CA's notAfter."""
    start = now.astimezone(dt.UTC).replace(microsecond=0)
    end = min(start + dt.timedelta(days=profile.validity_days), issuer_cert.not_valid_after_utc)
    if end <= start:
        raise RequestError(f"the issuing CA's certificate expired on {issuer_cert.not_valid_after_utc:%Y-%m-%d}; "
                           "it cannot issue")
    if start < issuer_cert.not_valid_before_utc:
        raise RequestError(f"the issuing CA's certificate is valid only from "
                           f"{issuer_cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S}Z")
    return start, end


def ee_builder(profile: Profile, issuing_ca: CA, issuer_cert: x509.Certificate, subject: x509.Name,
               public_key: Any, serial: int, not_before: dt.datetime, not_after: dt.datetime,
               legislation: Sequence[str] = ()) -> x509.CertificateBuilder:
    b = (x509.CertificateBuilder()
         .subject_name(subject)
         .issuer_name(issuer_cert.subject)
         .public_key(public_key)
         .serial_number(serial)
         .not_valid_before(not_before)
         .not_valid_after(not_after))
    partition = crl_partition_for(issuing_ca, serial)
    for ext in ee_extensions(profile, issuing_ca, issuer_cert, public_key, legislation, partition):
        b = b.add_extension(ext.value, critical=ext.critical)
    return b


#: Countries where eIDAS applies (EU member states and the EEA). A service elsewhere states the law that
#: makes its certificates qualified with QcCClegislation (EN 319 412-5 §4.2.4) instead of claiming EU status.
EIDAS_COUNTRIES = frozenset({
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT", "LV", "LT", "LU",
    "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "IS", "LI", "NO"})


def legislation_for(country: str) -> tuple[str, ...]:
    """QcCClegislation countries for a service established in ``country``: none inside the EU/EEA."""
    return () if country in EIDAS_COUNTRIES else (country,)


def etsi_certificate_type(kind: str, legislation: Sequence[str], qscd: bool = True) -> Any:
    """The pkilint ETSI certificate type a certificate of ``kind`` must lint clean as.

    A natural person's qualified signature certificate on a QSCD is QCP-n-qscd (EU or non-EU as the
    legislation says). pkilint has no qualified legal-person type outside web authentication, so a
    seal certificate is linted as NCP legal person, with the qcStatement rules applied to it as well.
    """
    if kind == "qualified-signature":
        if not qscd:
            return CertificateType.NCP_NATURAL_PERSON_CERTIFICATE  # pkilint has no QCP-n type
        return (CertificateType.QCP_N_QSCD_NON_EIDAS_FINAL_CERTIFICATE if legislation
                else CertificateType.QCP_N_QSCD_EIDAS_FINAL_CERTIFICATE)
    if kind == "qualified-seal":
        return CertificateType.NCP_LEGAL_PERSON_CERTIFICATE
    raise ValueError(f"unknown end-entity profile kind {kind!r} (allowed: {', '.join(KINDS)})")
