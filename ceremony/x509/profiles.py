"""Certificate profiles of the CA certificates: names and extensions, as pure functions.

The profile decides every extension; nothing a CSR asks for reaches a certificate. Root:
basicConstraints CA (critical), keyUsage keyCertSign+cRLSign (critical), SKI, AKI equal to the
SKI; no EKU, no policies.
Subordinate CA: basicConstraints CA with pathLen (0 unless the definition says otherwise),
keyUsage keyCertSign+cRLSign, AKI = issuer's SKI, SKI, certificatePolicies, CRL distribution
point and AIA caIssuers pointing at the *issuer's* publication URLs, optional name constraints.
Transcript sealing (a CA's HSM holds a second key that seals ceremony transcripts, because CA keys
sign certificates and CRLs only): issued by the root alone; basicConstraints CA false (critical),
keyUsage digitalSignature only (critical), extendedKeyUsage the service's sealing OID only, AKI,
SKI, and the root's CRL distribution point and AIA caIssuers, so the root can revoke it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from ceremony.definition.model import CA, NameConstraints

REHEARSAL_MARKER = " (REHEARSAL)"


ATTRIBUTE_OIDS: dict[str, x509.ObjectIdentifier] = {
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "CN": NameOID.COMMON_NAME,
    "organizationIdentifier": NameOID.ORGANIZATION_IDENTIFIER,
    "serialNumber": NameOID.SERIAL_NUMBER,
    "DC": NameOID.DOMAIN_COMPONENT,
}


def subject_name(subject: Sequence[dict[str, str]], rehearsal: bool) -> x509.Name:
    """The subject in the order the definition gives; a rehearsal marks its CN visibly."""
    rdns = []
    for rdn in subject:
        (attr, value), = rdn.items()
        if attr == "CN" and rehearsal:
            value = value + REHEARSAL_MARKER
            if len(value) > 64:
                raise ValueError(f"CN {value!r} exceeds 64 characters with the rehearsal marker")
        rdns.append(x509.RelativeDistinguishedName([x509.NameAttribute(ATTRIBUTE_OIDS[attr], value)]))
    return x509.Name(rdns)


@dataclass(frozen=True)
class Extension:
    value: x509.ExtensionType
    critical: bool


CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
    key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False)


def root_extensions(ca: CA, public_key: Any) -> list[Extension]:
    """AKI is optional on a self-signed certificate but recommended (BR 7.1.2.1); pkilint expects it."""
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    return [
        Extension(x509.BasicConstraints(ca=True, path_length=ca.path_length), True),
        Extension(CA_KEY_USAGE, True),
        Extension(ski, False),
        Extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False),
    ]


def _name_constraints(nc: NameConstraints) -> x509.NameConstraints:
    def subtrees(dns: list[str], email: list[str], ip: list[str],
                 dirs: list[list[dict[str, str]]] | None = None) -> list[x509.GeneralName] | None:
        out: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        out += [x509.RFC822Name(e) for e in email]
        out += [x509.IPAddress(ipaddress.ip_network(n)) for n in ip]
        out += [x509.DirectoryName(subject_name(d, rehearsal=False)) for d in dirs or []]
        return out or None

    return x509.NameConstraints(
        permitted_subtrees=subtrees(nc.permitted_dns, nc.permitted_email, nc.permitted_ip, nc.permitted_directory),
        excluded_subtrees=subtrees(nc.excluded_dns, nc.excluded_email, nc.excluded_ip))


def subordinate_extensions(ca: CA, issuer: CA, public_key: Any, issuer_cert: x509.Certificate) -> list[Extension]:
    ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    exts = [
        Extension(x509.BasicConstraints(ca=True, path_length=0 if ca.path_length is None else ca.path_length),
                  True),
        Extension(CA_KEY_USAGE, True),
        Extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False),
        Extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False),
    ]
    if ca.policy_oids:
        exts.append(Extension(x509.CertificatePolicies(
            [x509.PolicyInformation(x509.ObjectIdentifier(oid), None) for oid in ca.policy_oids]), False))
    exts.append(Extension(x509.CRLDistributionPoints([x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(issuer.publication.crl_url)],
        relative_name=None, reasons=None, crl_issuer=None)]), False))
    exts.append(Extension(x509.AuthorityInformationAccess([x509.AccessDescription(
        x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
        x509.UniformResourceIdentifier(issuer.publication.certificate_url))]), False))
    if ca.name_constraints is not None:
        exts.append(Extension(_name_constraints(ca.name_constraints), True))
    return exts


def cross_extensions(issuer: CA, issuer_cert: x509.Certificate, subject_cert: x509.Certificate,
                     path_length: int | None, policy_oids: Sequence[str],
                     name_constraints: NameConstraints | None) -> list[Extension]:
    """A cross-certificate between the old and the successor root (BR 7.1.2.2.3, RFC 5280 4.2.1): a CA certificate
    whose subject key identifier is the subject root's own, so that whatever that root issued (its AKI) finds this
    certificate as well as the self-signed one; AKI, CRL distribution point and caIssuers are the issuer's. No EKU:
    an unrestricted cross-certificate between two roots of the same service (BR 7.1.2.2.3 permits it for an
    affiliated subject; the roots issue no TLS certificates)."""
    ski = subject_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    issuer_ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    exts = [
        Extension(x509.BasicConstraints(ca=True, path_length=path_length), True),
        Extension(CA_KEY_USAGE, True),
        Extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), False),
        Extension(x509.SubjectKeyIdentifier(ski.digest), False),
        Extension(x509.CertificatePolicies(
            [x509.PolicyInformation(x509.ObjectIdentifier(oid), None) for oid in policy_oids]), False),
        Extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(issuer.publication.crl_url)],
            relative_name=None, reasons=None, crl_issuer=None)]), False),
        Extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
            x509.UniformResourceIdentifier(issuer.publication.certificate_url))]), False),
    ]
    if name_constraints is not None:
        exts.append(Extension(_name_constraints(name_constraints), True))
    return exts


def describe_extensions(cert: x509.Certificate) -> list[dict[str, str]]:
    """Each extension of a certificate with its criticality and a readable value (CP/CPS, reports)."""
    return [{"oid": e.oid.dotted_string, "name": getattr(e.oid, "_name", e.oid.dotted_string),
             "critical": "yes" if e.critical else "no", "value": _readable(e.value)}
            for e in cert.extensions]


def _readable(value: x509.ExtensionType) -> str:
    if isinstance(value, x509.BasicConstraints):
        return f"CA={value.ca}" + (f", pathLen={value.path_length}" if value.path_length is not None else "")
    if isinstance(value, x509.KeyUsage):
        names = ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                 "key_agreement", "key_cert_sign", "crl_sign"]
        return ", ".join(n for n in names if getattr(value, n))
    if isinstance(value, x509.SubjectKeyIdentifier):
        return value.digest.hex()
    if isinstance(value, x509.AuthorityKeyIdentifier):
        return (value.key_identifier or b"").hex()
    if isinstance(value, x509.CertificatePolicies):
        return ", ".join(p.policy_identifier.dotted_string for p in value)
    if isinstance(value, x509.CRLDistributionPoints):
        return ", ".join(n.value for dp in value for n in dp.full_name or [])
    if isinstance(value, x509.AuthorityInformationAccess):
        return ", ".join(f"{ad.access_method._name}: {ad.access_location.value}" for ad in value)
    return str(value)


#: What a sealing certificate's common name adds to its CA's (``<CA CN> Seal``).
SEALING_CN_SUFFIX = " Seal"


SEALING_KEY_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
    key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False)


def sealing_subject(subject: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """The sealing certificate's subject: its CA's, with `` Seal`` after the common name."""
    return [{"CN": rdn["CN"] + SEALING_CN_SUFFIX} if "CN" in rdn else dict(rdn) for rdn in subject]


def sealing_extensions(root: CA, public_key: Any, root_cert: x509.Certificate, eku: str) -> list[Extension]:
    ski = root_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return [
        Extension(x509.BasicConstraints(ca=False, path_length=None), True),
        Extension(SEALING_KEY_USAGE, True),
        Extension(x509.ExtendedKeyUsage([x509.ObjectIdentifier(eku)]), False),
        Extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False),
        Extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False),
        Extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(root.publication.crl_url)],
            relative_name=None, reasons=None, crl_issuer=None)]), False),
        Extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
            x509.UniformResourceIdentifier(root.publication.certificate_url))]), False),
    ]


#: What a delegated OCSP signer certificate's common name adds to its CA's (``<CA CN> OCSP``).
OCSP_SIGNER_CN_SUFFIX = " OCSP"


#: id-pkix-ocsp-nocheck (RFC 6960 4.2.2.2.1): a relying party does not check the signer certificate's status.
OCSP_NOCHECK = x509.OCSPNoCheck()


def ocsp_signer_subject(subject: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """The signer certificate's subject: its CA's, with `` OCSP`` after the common name."""
    return [{"CN": rdn["CN"] + OCSP_SIGNER_CN_SUFFIX} if "CN" in rdn else dict(rdn) for rdn in subject]


def ocsp_signer_extensions(public_key: Any, ca_cert: x509.Certificate) -> list[Extension]:
    """The delegated OCSP signer (RFC 6960 4.2.2.2, BR 7.1.2.8): not a CA, keyUsage digitalSignature only
    (critical), EKU id-kp-OCSPSigning only, id-pkix-ocsp-nocheck, AKI = the CA's SKI, and SKI. No CRL
    distribution point and no AIA: with nocheck nobody looks for its status, which is why it lives briefly."""
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return [
        Extension(x509.BasicConstraints(ca=False, path_length=None), True),
        Extension(SEALING_KEY_USAGE, True),
        Extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING]), False),
        Extension(OCSP_NOCHECK, False),
        Extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False),
        Extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False),
    ]
