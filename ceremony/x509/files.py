"""Certificates, CSRs and public keys read from files: one rule for PEM and DER, one message per failure.

Operators hand the suite certificates in both encodings (``.crt.pem`` from the ceremonies, ``.cer``
from a browser, DER from an HSM vendor's tool). A file is PEM when it holds a PEM header
(``-----BEGIN``), DER otherwise; nothing is guessed by trying loaders one after the other, so a
damaged PEM file is reported as damaged, not as "not DER".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from ceremony.common.errors import DefinitionError, OutputError

PublicObject = x509.Certificate | x509.CertificateSigningRequest | Any


def is_pem(data: bytes) -> bool:
    return b"-----BEGIN" in data


def parse_certificate(data: bytes) -> x509.Certificate:
    """A certificate from its bytes, PEM or DER; ValueError for anything else."""
    return x509.load_pem_x509_certificate(data) if is_pem(data) else x509.load_der_x509_certificate(data)


def read_certificate(path: str | Path, what: str = "the certificate", hint: str = "") -> x509.Certificate:
    """The certificate in ``path`` (PEM or DER). A missing file names ``what`` and the ``hint`` (what to do);
    a file that is not a certificate is refused as a bad input file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        reason = "" if isinstance(exc, FileNotFoundError) else f" ({exc.strerror})"
        raise OutputError(f"{p}: {what} is not there{reason}" + (f"; {hint}" if hint else "")) from None
    try:
        return parse_certificate(data)
    except ValueError as exc:
        raise DefinitionError(str(p), "", f"not a certificate (PEM or DER): {exc}") from None


def load_issuer_certificate(path: Path, issuer_name: str) -> x509.Certificate:
    """The issuing CA's certificate a ceremony or the CRL job signs under (PEM or DER)."""
    return read_certificate(path, f"the certificate of issuer {issuer_name!r}",
                            "run its ceremony first or pass --issuer-cert")


def read_public_key(path: Path) -> Any:
    """The bare public key in ``path`` (PEM or DER, as a key ceremony writes ``<ca>.pub.pem``).

    Raises ValueError for a file that holds no public key (the caller says what that means where it is)."""
    data = path.read_bytes()
    try:
        return (serialization.load_pem_public_key(data) if is_pem(data)
                else serialization.load_der_public_key(data))
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"{path}: not a public key ({exc})") from None


def read_public_object(path: Path) -> PublicObject | None:
    """A certificate, a CSR or a bare public key in ``path`` (PEM or DER); None for anything else."""
    data = path.read_bytes()
    pem = is_pem(data)
    loaders = ((x509.load_pem_x509_certificate, x509.load_pem_x509_csr, serialization.load_pem_public_key) if pem
               else (x509.load_der_x509_certificate, x509.load_der_x509_csr, serialization.load_der_public_key))
    for load in loaders:
        try:
            return load(data)
        except (ValueError, TypeError):
            continue
    return None


def public_key_of(obj: PublicObject) -> Any:
    """The public key a certificate or CSR carries, or the key itself."""
    return obj.public_key() if isinstance(obj, x509.Certificate | x509.CertificateSigningRequest) else obj


def sealing_certificates(directory: Path, ca_name: str) -> list[tuple[Path, x509.Certificate]]:
    """The transcript-sealing certificates of ``ca_name`` in an output directory (``<ca>.seal*.crt.pem``)."""
    found = []
    for path in sorted(Path(directory).glob(f"{ca_name}.seal*.crt.pem")):
        try:
            found.append((path, parse_certificate(path.read_bytes())))
        except (ValueError, OSError):
            continue
    return found
