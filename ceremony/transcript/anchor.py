"""The auditor's trust anchor, and whether a transcript's sealing key has a certification path to it.

A seal proves something only against a key the auditor already trusts (DESIGN.md, principle 9): the
root certificate the CPS publishes, or its SHA-256 fingerprint read aloud at the root ceremony. The
transcript says which key sealed it; nothing else it says about that key is believed. The key is
*anchored* when a certificate found among the artifacts (any file, whatever the transcript names)
carries it, is a transcript-sealing certificate, and validates against the anchor with
cryptography's X.509 path validation at the time of the seal (or, for a key certified after it
sealed, when its certificate begins).

A transcript-sealing certificate is issued by the root itself (no intermediate: a subordinate CA
never certifies a sealing key, so no subscriber's certificate can seal), is not a CA certificate,
has keyUsage digitalSignature alone and an extendedKeyUsage that names a purpose (the service's
sealing OID; anyExtendedKeyUsage is refused). A seal by a CA key, the root's included, is not
anchored: CA keys sign certificates and CRLs only (EN 319 411-1 GEN-6.5.3-03, CPS 6.1.7).

After a root rollover the successor root certifies its own sealing keys. The old root's fingerprint still
anchors them, through the forward cross-certificate the old root signed for the successor's key
(:func:`successor_cross_certificates`): the path anchor -> cross-certificate -> sealing certificate is
validated like any other.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import ExtensionPolicy, PolicyBuilder, Store, VerificationError

from ceremony.common.errors import CeremonyError
from ceremony.common.fingerprints import sha256_hex
from ceremony.hsm.keys import spki_sha256
from ceremony.x509.files import parse_certificate

#: Certificate files looked at among the artifacts (the suite writes .crt.pem and .crt.der).
CERTIFICATE_SUFFIXES = (".crt.pem", ".crt.der", ".crt", ".cer", ".pem", ".der")
#: The marker every rehearsal certificate's common name carries.
REHEARSAL_MARKER = "(REHEARSAL)"
NO_ANCHOR = ("no trust anchor: give --trust ROOT, the root certificate file (PEM or DER) or its SHA-256 "
             "fingerprint as published in the CPS and read aloud at the root ceremony; a seal proves nothing "
             "without it")
_FINGERPRINT = re.compile(r"^(?:sha-?256[:=])?([0-9a-f]{2}(?::?[0-9a-f]{2}){31})$", re.I)


class AnchorError(CeremonyError):
    """The trust anchor given cannot be used: one line saying what was given and what is allowed."""

    exit_code = 64  # EX_USAGE: nothing was verified


@dataclass(frozen=True)
class TrustAnchor:
    certificate: x509.Certificate
    source: str

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER certificate, lower-case hex (as the CPS and the root ceremony give it)."""
        return sha256_hex(self.certificate.public_bytes(serialization.Encoding.DER))

    @property
    def spki_sha256(self) -> str:
        return spki_sha256(self.certificate.public_key())

    @property
    def rehearsal(self) -> bool:
        return is_rehearsal_certificate(self.certificate)


def is_rehearsal_certificate(cert: x509.Certificate) -> bool:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return any(REHEARSAL_MARKER in str(n.value) for n in names)


def certificates_in(directory: Path) -> list[tuple[Path, x509.Certificate]]:
    """Every certificate file under ``directory`` (the artifacts), parsed; other files are passed over."""
    found: list[tuple[Path, x509.Certificate]] = []
    if not directory.is_dir():
        return found
    for path in sorted(directory.rglob("*")):
        if not path.is_file() or not path.name.endswith(CERTIFICATE_SUFFIXES) or path.stat().st_size > 1 << 20:
            continue
        try:
            found.append((path, parse_certificate(path.read_bytes())))
        except (ValueError, OSError):
            continue
    return found


def load_anchor(value: str | None, artifacts: Path) -> TrustAnchor:
    """The anchor ``--trust`` names: a certificate file, or the SHA-256 fingerprint of one among the artifacts."""
    if not value:
        raise AnchorError(NO_ANCHOR)
    path = Path(value)
    if path.is_file():
        try:
            cert = parse_certificate(path.read_bytes())
        except ValueError:
            raise AnchorError(f"--trust {value}: not a certificate (PEM or DER); give the root certificate or "
                              "its SHA-256 fingerprint") from None
        return _checked(TrustAnchor(cert, str(path)))
    match = _FINGERPRINT.match(value.strip())
    if match is None:
        raise AnchorError(f"--trust {value}: neither a certificate file nor a SHA-256 fingerprint (64 hexadecimal "
                          "digits, colons allowed)")
    wanted = match.group(1).replace(":", "").lower()
    for found, cert in certificates_in(artifacts):
        if sha256_hex(cert.public_bytes(serialization.Encoding.DER)) == wanted:
            return _checked(TrustAnchor(cert, f"{found} (SHA-256 {wanted})"))
    raise AnchorError(f"--trust {value}: no certificate with this SHA-256 fingerprint among the artifacts in "
                      f"{artifacts}; give the root certificate file instead")


def _checked(anchor: TrustAnchor) -> TrustAnchor:
    try:
        constraints = anchor.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca or anchor.certificate.issuer != anchor.certificate.subject:
        raise AnchorError(f"--trust {anchor.source}: not a root CA certificate (self-issued, basicConstraints "
                          "CA); the anchor is the root certificate published in the CPS")
    return anchor


@dataclass(frozen=True)
class Anchoring:
    """Whether the sealing key is anchored, and how (for the report) or why not."""

    anchored: bool
    how: str
    certificate: x509.Certificate | None = None


def anchor_seal(seal_key: Any, anchor: TrustAnchor, candidates: list[tuple[Path, x509.Certificate]],
                at: dt.datetime, base: Path) -> Anchoring:
    """Is ``seal_key`` the anchor's key, or certified by a chain to the anchor valid at ``at``?"""
    digest = spki_sha256(seal_key)
    if digest == anchor.spki_sha256:
        return Anchoring(False, f"sealed by the root CA key itself ({anchor.source}): CA keys sign certificates "
                                "and CRLs only (CPS 6.1.7); a transcript is sealed by a transcript-sealing key the "
                                "root certified")
    holders = [(p, c) for p, c in candidates if spki_sha256(c.public_key()) == digest]
    if not holders:
        return Anchoring(False, f"no certificate among the artifacts in {base} carries the sealing key (SPKI "
                                f"SHA-256 {digest}): the transcript cannot be tied to the trust anchor yet")
    crosses = successor_cross_certificates(anchor, candidates)
    roots = [anchor.certificate.subject, *(c.subject for c in crosses)]
    reasons = []
    for path, cert in holders:
        refused = not_a_sealing_certificate(cert, roots)
        if refused:
            reasons.append(f"{_rel(path, base)}: {refused}")
            continue
        # A key may seal before it is certified (a subordinate key ceremony before its signing ceremony):
        # the path is then validated when the certificate begins, the first moment it vouches for the key.
        # A seal after the certificate expired is not anchored.
        when = max(at, cert.not_valid_before_utc)
        verifier = (PolicyBuilder().store(Store([anchor.certificate])).time(when)
                    .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(),
                                        ee_policy=ExtensionPolicy.permit_all())
                    .build_client_verifier())
        try:
            verified = verifier.verify(cert, crosses)
        except VerificationError as exc:
            reasons.append(f"{_rel(path, base)}: {exc}")
            continue
        chain = " <- ".join(c.subject.rfc4514_string() for c in reversed(verified.chain))
        return Anchoring(True, f"the sealing key's certificate {_rel(path, base)} chains to the trust anchor "
                               f"({chain})", cert)
    return Anchoring(False, "the certificate(s) carrying the sealing key do not chain to the trust anchor at "
                            f"the time of the seal: {'; '.join(reasons)}")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def successor_cross_certificates(anchor: TrustAnchor,
                                 candidates: list[tuple[Path, x509.Certificate]]) -> list[x509.Certificate]:
    """The cross-certificates by which the anchor certified a successor root's key (root rollover, issue 18).

    After a rollover the successor root certifies its own sealing keys; an auditor who trusts only the old root's
    fingerprint still verifies those transcripts, through the cross-certificate the old root signed at a witnessed
    ceremony. Only a CA certificate issued and signed by the anchor counts, and only when the key it certifies also
    has its self-signed root certificate among the artifacts (the rollover's own output): a subordinate CA's
    certificate never makes its holder a root that may certify sealing keys.
    """
    roots = {spki_sha256(c.public_key()): c for _, c in candidates if c.issuer == c.subject and _is_ca(c)}
    found = []
    for _, cert in candidates:
        if cert.issuer != anchor.certificate.subject or cert.subject == anchor.certificate.subject or not _is_ca(cert):
            continue
        successor = roots.get(spki_sha256(cert.public_key()))
        if successor is None or successor.subject != cert.subject:
            continue
        try:
            cert.verify_directly_issued_by(anchor.certificate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        found.append(cert)
    return found


def not_a_sealing_certificate(cert: x509.Certificate, roots: TrustAnchor | list[x509.Name]) -> str:
    """Why ``cert`` cannot vouch for a transcript seal ("" when it can): see the module's docstring. ``roots``: the
    anchor, or the names of the roots that may certify sealing keys (the anchor's and its cross-certified
    successors')."""
    names = [roots.certificate.subject] if isinstance(roots, TrustAnchor) else roots
    if cert.issuer not in names:
        return "not issued by the root itself (only the root certifies transcript-sealing keys)"
    if _is_ca(cert):
        return "a CA certificate: CA keys sign certificates and CRLs only (CPS 6.1.7)"
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return "no keyUsage extension"
    try:
        purposes = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "no extendedKeyUsage extension (a transcript-sealing certificate names its purpose)"
    others = [name for name in ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
                                "key_cert_sign", "crl_sign") if getattr(usage, name)]
    if not usage.digital_signature or others:
        return "keyUsage is not digitalSignature alone"
    if x509.ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in purposes or not list(purposes):
        return "extendedKeyUsage does not name the transcript-sealing purpose"
    return ""


def _rel(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)
