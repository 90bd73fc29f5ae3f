"""The delegated OCSP signer's certificates on disk, and when one is due for renewal.

The signer ceremony (:mod:`ceremony.ceremonies.ocsp_signer`) writes ``<ca>.ocsp.crt.pem`` the first time and
``<ca>.ocsp.g<n>.crt.pem`` at each renewal: outputs are never overwritten, so every signer certificate the CA
ever issued stays in the output directory the auditor is given. The job signs with the key of the latest
generation whose key is the one on the token.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ceremony.common.errors import VerificationError
from ceremony.definition.model import Ocsp
from ceremony.x509.files import read_certificate

#: ``<ca>`` or, for the signer of a re-keyed CA's key generation m (:mod:`ceremony.ca.generations`), ``<ca>.g<m>``.
_GENERATION = re.compile(r"^(?P<ca>[a-z][a-z0-9-]*(?:\.g[0-9]+)?)\.ocsp(?:\.g(?P<n>[0-9]+))?\.crt\.pem$")


def signer_file_name(ca_name: str, generation: int) -> str:
    """``<ca>.ocsp.crt.pem`` for generation 1, ``<ca>.ocsp.g<n>.crt.pem`` after."""
    return f"{ca_name}.ocsp.crt.pem" if generation == 1 else f"{ca_name}.ocsp.g{generation}.crt.pem"


def signer_generations(out_dir: Path, ca_name: str) -> dict[int, Path]:
    """The signer certificates of ``ca_name`` in ``out_dir`` by generation."""
    found: dict[int, Path] = {}
    for path in out_dir.glob(f"{ca_name}.ocsp*.crt.pem"):
        m = _GENERATION.match(path.name)
        if m and m["ca"] == ca_name:
            n = int(m["n"]) if m["n"] else 1
            if path.name == signer_file_name(ca_name, n):
                found[n] = path
    return dict(sorted(found.items()))


def renewal_margin(ocsp: Ocsp) -> dt.timedelta:
    """A signer certificate is renewed when less than this is left: two response validities, so that the job
    (which refuses a signer with less than one validity left) always has a current one."""
    return 2 * ocsp.validity_td


@dataclass(frozen=True)
class SignerCertificate:
    path: Path
    cert: x509.Certificate
    generation: int


def current_signer(out_dir: Path, ca_name: str, ca_cert: x509.Certificate,
                   given: str | Path | None = None) -> SignerCertificate:
    """The signer certificate to use: ``given``, else the latest generation in ``out_dir``; it must be issued by
    the CA certificate and be a delegated OCSP signer (EKU id-kp-OCSPSigning)."""
    if given is not None:
        path, generation = Path(given), 0
    else:
        found = signer_generations(out_dir, ca_name)
        if not found:
            raise VerificationError(f"{out_dir / signer_file_name(ca_name, 1)}: no OCSP signer certificate of "
                                    f"{ca_name!r}; issue it first: invoke ocsp.signer --ca {ca_name} --env ENV")
        generation = max(found)
        path = found[generation]
    cert = read_certificate(path, f"the OCSP signer certificate of {ca_name!r}")
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise VerificationError(f"{path}: not issued by the certificate of CA {ca_name!r}") from None
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is None or list(eku) != [x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING]:
        raise VerificationError(f"{path}: not a delegated OCSP signer certificate (EKU id-kp-OCSPSigning only)")
    return SignerCertificate(path, cert, generation)
