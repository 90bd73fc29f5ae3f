"""Lint before the HSM signs, verify and lint again after (DESIGN principle 4).

Before the real key is used, the to-be-signed certificate is signed with a *throwaway* key of
the same algorithm and size (so the TBS bytes, including the signature algorithm, are exactly
those the HSM will sign) and linted with pkilint: the RFC 5280 linter always, the ETSI linter for
ETSI-governed end-entity profiles. A finding at WARNING or above stops the ceremony unless the
PKI definition accepts that validation *by name* with a written reason. After the HSM signs, the
signature is verified against the issuer's public key, the TBS bytes are compared with the linted
ones, and the certificate is linted again.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from pkilint import etsi as pk_etsi
from pkilint import finding_filter, loader
from pkilint.pkix import certificate as pkix_certificate
from pkilint.pkix import extension, name
from pkilint.validation import ValidationFindingSeverity

from ceremony.common.errors import LintError, VerificationError
from ceremony.definition.model import LintAllowance
from ceremony.hsm.signers import hash_for

_DER = Encoding.DER


BLOCKING = (ValidationFindingSeverity.FATAL, ValidationFindingSeverity.ERROR, ValidationFindingSeverity.WARNING)


@dataclass(frozen=True)
class Finding:
    """One pkilint finding, in a form that can be printed, recorded and compared."""

    validation: str
    severity: str
    message: str
    node_path: str

    @property
    def blocking(self) -> bool:
        return self.severity in {s.name for s in BLOCKING}

    def __str__(self) -> str:
        extra = f": {self.message}" if self.message else ""
        return f"{self.validation} ({self.severity}) at {self.node_path}{extra}"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def findings_from_results(results: Iterable[Any]) -> list[Finding]:
    """Flatten pkilint's validation results into :class:`Finding` records."""
    out = []
    for result in results:
        for fd in result.finding_descriptions:
            out.append(Finding(validation=fd.finding.code, severity=fd.finding.severity.name,
                               message=fd.message or "", node_path=str(result.node.path)))
    return out


@functools.cache
def _rfc5280_validator() -> Any:
    return pkix_certificate.create_pkix_certificate_validator_container(
        pkix_certificate.create_decoding_validators(name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS),
        [
            pkix_certificate.create_issuer_validator_container([]),
            pkix_certificate.create_validity_validator_container(),
            pkix_certificate.create_subject_validator_container([]),
            pkix_certificate.create_extensions_validator_container([]),
            pkix_certificate.create_spki_validator_container([]),
        ],
    )


def _load(der: bytes) -> Any:
    try:
        return loader.RFC5280CertificateDocumentLoader().load_der_document(der, "certificate")
    except ValueError as exc:
        raise LintError(f"pkilint cannot decode the certificate: {exc}") from None


def lint_certificate(der: bytes, etsi: bool = False, etsi_type: Any = None) -> list[Finding]:
    """All pkilint findings for a DER certificate (RFC 5280; plus ETSI EN 319 412 when ``etsi``).

    ``etsi_type`` (a ``pkilint.etsi.etsi_constants.CertificateType``) lints against the type the profile
    means to be instead of the one pkilint detects, so a certificate that drifted into another type
    is reported rather than silently linted by that type's rules.
    """
    findings = findings_from_results(_rfc5280_validator().validate(_load(der).root))
    if etsi:
        cert = _load(der)
        ctype = etsi_type if etsi_type is not None else pk_etsi.determine_certificate_type(cert)
        validator = pkix_certificate.create_pkix_certificate_validator_container(
            pk_etsi.create_decoding_validators(ctype), pk_etsi.create_validators(ctype))
        results, _ = finding_filter.filter_results(pk_etsi.create_etsi_finding_filters(ctype),
                                                   validator.validate(cert.root))
        seen = set(findings)
        findings += [f for f in findings_from_results(results) if f not in seen]
    return findings


def enforce(findings: Sequence[Finding], allowances: Sequence[LintAllowance], what: str) -> list[Finding]:
    """Raise :class:`LintError` for blocking findings not allowed by name; return the allowed ones."""
    allowed = {a.validation for a in allowances}
    blocking = [f for f in findings if f.blocking and f.validation not in allowed]
    if blocking:
        listing = "; ".join(str(f) for f in blocking)
        raise LintError(f"pkilint found {len(blocking)} problem(s) in {what}: {listing}. Fix the definition, "
                        "or accept a validation by name with a written reason under the CA's 'lint:' key")
    return [f for f in findings if f.blocking and f.validation in allowed]


def throwaway_key_like(public_key: Any) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    """A software key of the same algorithm and size: its signature leaves the TBS unchanged."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return ec.generate_private_key(public_key.curve)
    if isinstance(public_key, rsa.RSAPublicKey):
        return rsa.generate_private_key(65537, public_key.key_size)
    raise LintError(f"unsupported issuer key type {type(public_key).__name__}")


@dataclass(frozen=True)
class PreSignLint:
    """What was linted before the HSM signed: the TBS bytes and the findings."""

    tbs: bytes
    findings: list[Finding]
    allowed: list[Finding]

    def evidence(self) -> dict[str, Any]:
        return {"stage": "before-signing", "tbs_bytes": len(self.tbs),
                "findings": [f.as_dict() for f in self.findings],
                "allowed": [f.validation for f in self.allowed]}


def lint_before_signing(builder: x509.CertificateBuilder, issuer_public_key: Any,
                        allowances: Sequence[LintAllowance], what: str, etsi: bool = False,
                        etsi_type: Any = None) -> PreSignLint:
    """Sign ``builder`` with a throwaway key like the issuer's and lint the result."""
    throwaway = throwaway_key_like(issuer_public_key)
    trial = builder.sign(throwaway, hash_for(throwaway))
    findings = lint_certificate(trial.public_bytes(_DER), etsi=etsi, etsi_type=etsi_type)
    allowed = enforce(findings, allowances, what)
    return PreSignLint(tbs=trial.tbs_certificate_bytes, findings=findings, allowed=allowed)


def verify_signature(cert: x509.Certificate, issuer_public_key: Any) -> None:
    """Check that ``issuer_public_key`` made the certificate's signature."""
    try:
        if isinstance(issuer_public_key, ec.EllipticCurvePublicKey):
            issuer_public_key.verify(cert.signature, cert.tbs_certificate_bytes,
                                     ec.ECDSA(cert.signature_hash_algorithm))  # type: ignore[arg-type]
        else:
            issuer_public_key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                                     cert.signature_hash_algorithm)
    except InvalidSignature:
        raise VerificationError("the signature made by the HSM does not verify with the issuer's public key") \
            from None


def verify_after_signing(cert: x509.Certificate, issuer_public_key: Any, before: PreSignLint,
                         allowances: Sequence[LintAllowance], what: str, etsi: bool = False,
                         etsi_type: Any = None) -> list[Finding]:
    """Verify the HSM's signature, compare the TBS with the linted one, lint again."""
    verify_signature(cert, issuer_public_key)
    if cert.tbs_certificate_bytes != before.tbs:
        raise VerificationError(f"the TBS of {what} signed by the HSM differs from the one linted before signing")
    findings = lint_certificate(cert.public_bytes(_DER), etsi=etsi, etsi_type=etsi_type)
    enforce(findings, allowances, what + " (after signing)")
    return findings


def sign_with_lint(builder: x509.CertificateBuilder, issuer_key: Any, allowances: Sequence[LintAllowance],
                   what: str, etsi: bool = False) -> x509.Certificate:
    """Lint with a throwaway key, sign with the (HSM-backed) ``issuer_key``, verify and lint again."""
    before = lint_before_signing(builder, issuer_key.public_key(), allowances, what, etsi)
    cert = builder.sign(issuer_key, hash_for(issuer_key))
    verify_after_signing(cert, issuer_key.public_key(), before, allowances, what, etsi)
    return cert
