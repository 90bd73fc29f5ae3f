"""The subordinate CA's certificate signing request, and its checks at the signing ceremony.

The CSR is signed by the subordinate key inside its HSM: a signature that verifies proves the
requester holds that key. At the root, the CSR is trusted for nothing else: its key must be what
the definition says (algorithm, size and, when pinned, the SPKI SHA-256), free of known weaknesses
(badkeys: ROCA, Fermat factorisation, small factors, blocklist; a key of the right size can still be
broken), its subject must be the definition's, and any extension it requests is ignored because the
profile decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ceremony.common.errors import RequestError
from ceremony.definition.model import CA, EcKey
from ceremony.hsm.keys import spki_sha256
from ceremony.hsm.signers import hash_for
from ceremony.hsm.weak_keys import weak_key_problem
from ceremony.x509.profiles import sealing_subject, subject_name

_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384"}


def build_csr(ca: CA, key: Any, rehearsal: bool) -> x509.CertificateSigningRequest:
    """A CSR for ``ca`` signed by its HSM-backed key; it carries no extensions (the profile decides)."""
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(subject_name(ca.subject, rehearsal))
            .sign(key, hash_for(key)))


def build_sealing_csr(ca: CA, key: Any, rehearsal: bool) -> x509.CertificateSigningRequest:
    """The request for the certificate of a subordinate CA's transcript-sealing key, signed by that key (proof
    of possession); the root gives the certificate its own profile whatever the request says."""
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(subject_name(sealing_subject(ca.subject), rehearsal))
            .sign(key, hash_for(key)))


def load_csr(path: str | Path) -> x509.CertificateSigningRequest:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise RequestError(f"{p}: cannot read the CSR: {exc.strerror}") from None
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except ValueError as exc:
        raise RequestError(f"{p}: not a PKCS#10 certificate request (PEM or DER): {exc}") from None


def describe_key(public: Any) -> str:
    if isinstance(public, ec.EllipticCurvePublicKey):
        return f"ECDSA {_CURVE_NAMES.get(public.curve.name, public.curve.name)}"
    if isinstance(public, rsa.RSAPublicKey):
        return f"RSA {public.key_size}"
    return type(public).__name__


@dataclass(frozen=True)
class CsrCheck:
    """What the signing ceremony established about a CSR."""

    subject: str
    key: str
    spki_sha256: str
    ignored_extensions: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "key": self.key, "spki_sha256": self.spki_sha256,
                "signature": "valid (proof of possession)", "ignored_extensions": self.ignored_extensions}


def check_csr(csr: x509.CertificateSigningRequest, ca_name: str, ca: CA, source: str, rehearsal: bool) -> CsrCheck:
    """Refuse a CSR that does not prove possession, or whose key or subject is not the definition's."""
    if not csr.is_signature_valid:
        raise RequestError(f"{source}: the CSR signature does not verify: no proof of possession of the key")
    public = csr.public_key()
    got = describe_key(public)
    want = ca.key.describe()
    if isinstance(ca.key, EcKey):
        ok = isinstance(public, ec.EllipticCurvePublicKey) and _CURVE_NAMES.get(public.curve.name) == ca.key.curve
    else:
        ok = isinstance(public, rsa.RSAPublicKey) and public.key_size == ca.key.bits
    if not ok:
        raise RequestError(f"{source}: the CSR key is {got}; cas.{ca_name}.key in the definition requires {want}")
    weak = weak_key_problem(public)
    if weak:
        raise RequestError(f"{source}: the CSR key is {weak}; nothing was signed: the subordinate CA generates a new "
                           "key (on a token whose key generation has been checked) and a new CSR")
    digest = spki_sha256(public)
    if ca.spki_sha256 is not None and digest != ca.spki_sha256:
        raise RequestError(f"{source}: the CSR key has SPKI SHA-256 {digest}; cas.{ca_name}.spki_sha256 pins "
                           f"{ca.spki_sha256}")
    expected = subject_name(ca.subject, rehearsal)
    if csr.subject != expected:
        raise RequestError(f"{source}: the CSR subject is {csr.subject.rfc4514_string()!r}; cas.{ca_name}.subject "
                           f"gives {expected.rfc4514_string()!r}")
    ignored = []
    for attr in csr.attributes:
        ignored.append(attr.oid.dotted_string)
    try:
        ignored += [e.oid.dotted_string for e in csr.extensions]
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        ignored.append("unparseable extension request")
    return CsrCheck(subject=csr.subject.rfc4514_string(), key=got, spki_sha256=digest,
                    ignored_extensions=sorted(set(ignored)))
