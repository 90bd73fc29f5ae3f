"""OCSP responses (RFC 6960) encoded directly in DER, signed through the HSM-backed signer key.

Why not cryptography's ``ocsp.OCSPResponseBuilder``: it cannot write singleExtensions, and ETSI EN 319 411-2
(CSS-6.3.10-08) wants archiveCutoff in every response for a qualified certificate (set to the CA certificate's
notBefore: the status of every certificate the CA ever issued stays available after it expires). The structure is
small and fixed, so it is written here with the DER helpers of :mod:`ceremony.crl.encoding`:

``OCSPResponse { successful, ResponseBytes { id-pkix-ocsp-basic, BasicOCSPResponse } }`` where the
BasicOCSPResponse holds ``ResponseData { responderID byKey, producedAt, responses: one SingleResponse }``, the
signature algorithm, the signature made in the HSM, and the delegated signer's certificate in ``certs``.

One response is made per certificate and per CertID hash (SHA-1 for RFC 5019 clients, SHA-256 for RFC 9919):
a client asks with one CertID and must find a SingleResponse with that very CertID. Every response is parsed
back with cryptography and compared with what was encoded, and its signature's form checked, before it is stored
(:func:`check_response`); the signature itself is verified with the signer's public key (:func:`verify_response`,
as costly on the host as a P-384 signature in SoftHSM) for every response of the offline root and, in the
scheduled job, for the responses :mod:`ceremony.ocsp.job` says (docs/ocsp.md, "What is verified").
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509 import ocsp
from pkilint import loader, pkix
from pkilint.pkix import extension, name
from pkilint.pkix import ocsp as pk_ocsp

from ceremony.common.errors import VerificationError
from ceremony.crl.encoding import der_integer, encode_time, epoch, signature_algorithm, tlv
from ceremony.hsm.signers import verify_signature
from ceremony.x509.lint import Finding, findings_from_results

#: CertID hash algorithms: AlgorithmIdentifier DER (parameters NULL, as OpenSSL and GnuTLS send them) by name.
HASH_ALGORITHMS: dict[str, bytes] = {
    "sha1": bytes.fromhex("300906052b0e03021a0500"),
    "sha256": bytes.fromhex("300d06096086480165030402010500"),
}


#: The same algorithms by OID (dotted), as a request names them (with or without NULL parameters).
HASH_BY_OID = {"1.3.14.3.2.26": "sha1", "2.16.840.1.101.3.4.2.1": "sha256"}


OID_PKIX_OCSP_BASIC = bytes.fromhex("06092b0601050507300101")


OID_ARCHIVE_CUTOFF = bytes.fromhex("06092b0601050507300106")


#: OCSPResponseStatus values (RFC 6960 4.2.1).
SUCCESSFUL, MALFORMED_REQUEST, INTERNAL_ERROR, TRY_LATER, SIG_REQUIRED, UNAUTHORIZED = 0, 1, 2, 3, 5, 6


def error_response(status: int) -> bytes:
    """An OCSPResponse without responseBytes: ``malformedRequest``, ``unauthorized``, ``tryLater``..."""
    if status == SUCCESSFUL:
        raise ValueError("a successful response carries responseBytes")
    return tlv(0x30, b"\x0a\x01" + bytes([status]))


def issuer_hashes(issuer: x509.Certificate, algorithm: str) -> tuple[bytes, bytes]:
    """``(issuerNameHash, issuerKeyHash)`` of the CertID for ``algorithm`` (RFC 6960 4.1.1): the hash of the
    issuer's DER name and of the value of its subjectPublicKey BIT STRING (without tag, length, unused bits)."""
    spki = issuer.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    key = public_key_bits(spki)
    return hashlib.new(algorithm, issuer.subject.public_bytes()).digest(), hashlib.new(algorithm, key).digest()


def public_key_bits(spki: bytes) -> bytes:
    """The subjectPublicKey BIT STRING's value bytes (unused-bits octet removed) of a DER SubjectPublicKeyInfo."""
    i = _content_start(spki, 0)
    algorithm_end = _content_start(spki, i) + _length(spki, i)
    bits_start = _content_start(spki, algorithm_end)
    return spki[bits_start + 1: bits_start + _length(spki, algorithm_end)]


def _length(der: bytes, i: int) -> int:
    first = der[i + 1]
    if first < 0x80:
        return first
    n = first & 0x7F
    return int.from_bytes(der[i + 2: i + 2 + n], "big")


def _content_start(der: bytes, i: int) -> int:
    first = der[i + 1]
    return i + 2 + (0 if first < 0x80 else first & 0x7F)


def responder_key_hash(signer: x509.Certificate) -> bytes:
    """ResponderID byKey: SHA-1 of the signer's subjectPublicKey value (RFC 6960 4.2.1; pkilint insists on SHA-1)."""
    spki = signer.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha1(public_key_bits(spki)).digest()  # RFC 6960 names SHA-1 here


@dataclass(frozen=True)
class Status:
    """A certificate's status as a response states it. Times are epoch seconds (UTC)."""

    revoked_at: int | None = None
    reason: int | None = None
    """RFC 5280 CRLReason code; None or 0 (unspecified) is left out of the response, as on the CRL."""

    @property
    def name(self) -> str:
        return "good" if self.revoked_at is None else "revoked"

    @property
    def fingerprint(self) -> str:
        """What the store keeps to notice a change: ``good`` or ``revoked:<time>:<reason>``."""
        if self.revoked_at is None:
            return "good"
        return f"revoked:{self.revoked_at}:{self.reason or 0}"

    def der(self) -> bytes:
        """CertStatus: ``good [0] IMPLICIT NULL`` or ``revoked [1] IMPLICIT RevokedInfo``."""
        if self.revoked_at is None:
            return b"\x80\x00"
        body = encode_time(self.revoked_at, generalized=True)
        if self.reason:
            body += tlv(0xA0, b"\x0a\x01" + bytes([self.reason]))
        return tlv(0xA1, body)


class ResponderContext:
    """What every response of one CA and one signer shares, encoded once: the CertID prefixes, the responderID,
    archiveCutoff, the signature algorithm and the ``certs`` field holding the signer's certificate."""

    def __init__(self, issuer: x509.Certificate, signer: x509.Certificate, hashes: Sequence[str]) -> None:
        """``signer`` is the delegated signer's certificate, or ``issuer`` itself when the CA key signs (the offline
        root's responses): then ``certs`` is left out, the relying party has the CA certificate already."""
        self.issuer, self.signer, self.hashes = issuer, signer, tuple(hashes)
        self._cert_ids = {h: (HASH_ALGORITHMS[h], *issuer_hashes(issuer, h)) for h in self.hashes}
        self._responder_id = tlv(0xA2, tlv(0x04, responder_key_hash(signer)))
        self._certs = b"" if signer == issuer else tlv(0xA0, tlv(0x30, signer.public_bytes(serialization.Encoding.DER)))
        cutoff = encode_time(epoch(issuer.not_valid_before_utc), generalized=True)
        self._archive_cutoff = tlv(0xA1, tlv(0x30, tlv(0x30, OID_ARCHIVE_CUTOFF + tlv(0x04, cutoff))))
        self._alg_id, self._digest = signature_algorithm(signer.public_key())

    def cert_id(self, serial: int, algorithm: str) -> bytes:
        alg, name_hash, key_hash = self._cert_ids[algorithm]
        return tlv(0x30, alg + tlv(0x04, name_hash) + tlv(0x04, key_hash) + der_integer(serial))

    def issuer_hashes(self, algorithm: str) -> tuple[bytes, bytes]:
        _, name_hash, key_hash = self._cert_ids[algorithm]
        return name_hash, key_hash

    def response_data(self, serial: int, algorithm: str, status: Status, produced_at: int, this_update: int,
                      next_update: int) -> bytes:
        """The ResponseData (the signed part) of one response."""
        single = tlv(0x30, self.cert_id(serial, algorithm) + status.der() + encode_time(this_update, True)
                     + tlv(0xA0, encode_time(next_update, True)) + self._archive_cutoff)
        return tlv(0x30, self._responder_id + encode_time(produced_at, True)
                   + tlv(0x30, single))

    def sign(self, tbs: bytes, key: Any) -> bytes:
        """Sign the ResponseData with ``key`` (HSM-backed, or a throwaway key for lint) and wrap the OCSPResponse."""
        public = key.public_key()
        digest = self._digest
        if isinstance(public, ec.EllipticCurvePublicKey):
            sig = key.sign(tbs, ec.ECDSA(digest))
        else:
            sig = key.sign(tbs, padding.PKCS1v15(), digest)
        basic = tlv(0x30, tbs + self._alg_id + tlv(0x03, b"\x00" + sig) + self._certs)
        return tlv(0x30, b"\x0a\x01\x00" + tlv(0xA0, tlv(0x30, OID_PKIX_OCSP_BASIC + tlv(0x04, basic))))


def check_response(der: bytes, tbs: bytes, signer_public_key: Any, serial: int, status: Status,
                   this_update: int, next_update: int) -> ocsp.OCSPResponse:
    """Parse the signed response back with cryptography and check it says what was encoded, and that the signature
    has the form the signer's key makes (ECDSA: a DER ``(r, s)`` with both in 1..2^bits-1; RSA: exactly the
    modulus's length, below the modulus). About 10 microseconds: every response of every run goes through it. It
    catches an encoder or parser disagreement and an HSM that answers with nothing, zeros or a truncated value;
    not a well-formed signature made by a wrong key or a faulty computation (:func:`verify_response` does)."""
    try:
        parsed = ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        raise VerificationError(f"the signed OCSP response does not parse: {exc}") from None
    if parsed.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL or parsed.tbs_response_bytes != tbs:
        raise VerificationError("the signed OCSP response does not carry the ResponseData that was encoded")
    expected = ocsp.OCSPCertStatus.GOOD if status.revoked_at is None else ocsp.OCSPCertStatus.REVOKED
    if parsed.serial_number != serial or parsed.certificate_status != expected or \
            epoch(parsed.this_update_utc) != this_update or parsed.next_update_utc is None or \
            epoch(parsed.next_update_utc) != next_update:
        raise VerificationError(f"the signed OCSP response for {serial:x}, parsed back, differs from what was encoded")
    if not signature_well_formed(signer_public_key, parsed.signature):
        raise VerificationError(f"the signature the HSM returned for the OCSP response of {serial:x} is not a "
                                "well-formed signature of the signer's key")
    return parsed


def signature_well_formed(public_key: Any, signature: bytes) -> bool:
    """Whether ``signature`` has the shape ``public_key`` makes (see :func:`check_response`); says nothing of whether
    it verifies."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        try:
            r, s = utils.decode_dss_signature(signature)
        except ValueError:
            return False
        bits = public_key.curve.key_size
        return r > 0 and s > 0 and r.bit_length() <= bits and s.bit_length() <= bits
    if isinstance(public_key, rsa.RSAPublicKey):
        n = public_key.public_numbers().n
        return len(signature) == (n.bit_length() + 7) // 8 and 0 < int.from_bytes(signature, "big") < n
    return False


def ecdsa_r(signature: bytes) -> int | None:
    """The ``r`` of a DER ECDSA signature (the x coordinate of the nonce's point), None for anything else: two
    signatures of one key with the same ``r`` used the same nonce, which gives the private key away."""
    try:
        return utils.decode_dss_signature(signature)[0]
    except ValueError:
        return None


def verify_response(der: bytes, tbs: bytes, signer_public_key: Any, serial: int, status: Status,
                    this_update: int, next_update: int) -> ocsp.OCSPResponse:
    """:func:`check_response`, then the signature verified with the signer's public key: a wrong key or a faulty
    signing computation in the HSM is caught here."""
    parsed = check_response(der, tbs, signer_public_key, serial, status, this_update, next_update)
    _, digest = signature_algorithm(signer_public_key)
    try:
        verify_signature(signer_public_key, parsed.signature, tbs, digest)
    except (InvalidSignature, TypeError):
        raise VerificationError(f"the signature of the OCSP response for {serial:x} made by the HSM does not "
                                "verify with the signer certificate's key") from None
    return parsed


def lint_response(der: bytes) -> list[Finding]:
    """pkilint's RFC 6960 OCSP response linter (the ``lint_ocsp_response`` command's validators)."""
    validator = pk_ocsp.create_pkix_ocsp_response_validator_container(
        [pk_ocsp.create_response_decoder(), pkix.create_attribute_decoder(name.ATTRIBUTE_TYPE_MAPPINGS),
         pkix.create_extension_decoder(extension.EXTENSION_MAPPINGS)], [])
    try:
        doc = loader.RFC6960OCSPResponseDocumentLoader().load_der_document(der, "ocsp-response")
    except ValueError as exc:
        raise VerificationError(f"pkilint cannot decode the OCSP response: {exc}") from None
    return findings_from_results(validator.validate(doc.root))


def hash_name(algorithm: hashes.HashAlgorithm) -> str | None:
    """``sha1``/``sha256`` for a CertID hash this suite stores responses under, else None."""
    return algorithm.name if algorithm.name in HASH_ALGORITHMS else None


def to_epoch(value: dt.datetime) -> int:
    return epoch(value.replace(microsecond=0))
