"""Private-key objects for cryptography whose ``sign()`` runs inside the HSM.

cryptography's certificate, CSR and CRL builders accept any subclass of its private-key
interfaces and call only ``sign()`` (and ``public_key()``). These classes delegate ``sign()`` to
the PKCS#11 key, so the CA private key never exists in host memory: ``private_numbers()`` and
``private_bytes()`` refuse.

ECDSA: SoftHSM 2.6 lacks ``CKM_ECDSA_SHA384``, so the digest is computed on the host and signed
with plain ``CKM_ECDSA``; the raw ``r||s`` result is encoded as DER. RSA uses PKCS#1 v1.5 with the
token's hashing mechanisms.
"""

from __future__ import annotations

from typing import Any, NoReturn

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from pkcs11 import Attribute, KeyType, Mechanism
from pkcs11 import exceptions as p11e
from pkcs11.util.ec import encode_ec_public_key

from ceremony.common.errors import HsmError
from ceremony.hsm.session import find_private_key, find_public_key

_RSA_MECHANISMS = {
    "sha256": Mechanism.SHA256_RSA_PKCS,
    "sha384": Mechanism.SHA384_RSA_PKCS,
    "sha512": Mechanism.SHA512_RSA_PKCS,
}


def _refuse() -> NoReturn:
    raise HsmError("the CA private key lives in the HSM and cannot be exported")


def _digest(data: bytes, algorithm: Any) -> tuple[bytes, hashes.HashAlgorithm]:
    if isinstance(algorithm, utils.Prehashed):
        return data, algorithm._algorithm
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize(), algorithm


def public_key_from_token(pub: Any) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    """Read a PKCS#11 public key object into a cryptography public key."""
    if pub.key_type == KeyType.EC:
        return serialization.load_der_public_key(encode_ec_public_key(pub))  # type: ignore[return-value]
    if pub.key_type == KeyType.RSA:
        n = int.from_bytes(pub[Attribute.MODULUS], "big")
        e = int.from_bytes(pub[Attribute.PUBLIC_EXPONENT], "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    raise HsmError(f"unsupported key type on the token: {pub.key_type}")


class HsmEcPrivateKey(ec.EllipticCurvePrivateKey):
    """An ECDSA key whose private half stays in the token."""

    def __init__(self, p11_key: Any, public: ec.EllipticCurvePublicKey) -> None:
        self._p11 = p11_key
        self._public = public
        self.signatures = 0

    @property
    def p11_object(self) -> Any:
        """The PKCS#11 private key object (for reading its attributes as evidence)."""
        return self._p11

    def sign(self, data: bytes, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise HsmError("only ECDSA signatures are supported")
        digest, _ = _digest(data, signature_algorithm.algorithm)
        try:
            raw = self._p11.sign(digest, mechanism=Mechanism.ECDSA)
        except p11e.PKCS11Error as exc:
            raise HsmError(f"the HSM refused to sign: {type(exc).__name__}") from None
        half = len(raw) // 2
        self.signatures += 1
        return utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.curve.key_size

    def exchange(self, algorithm: Any, peer_public_key: Any) -> bytes:
        raise HsmError("CA keys are for signing only")

    def private_numbers(self) -> NoReturn:
        _refuse()

    def private_bytes(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse()

    def __copy__(self) -> HsmEcPrivateKey:
        return self

    def __deepcopy__(self, memo: Any) -> HsmEcPrivateKey:
        return self


class HsmRsaPrivateKey(rsa.RSAPrivateKey):
    """An RSA key whose private half stays in the token (PKCS#1 v1.5 signatures)."""

    def __init__(self, p11_key: Any, public: rsa.RSAPublicKey) -> None:
        self._p11 = p11_key
        self._public = public
        self.signatures = 0

    @property
    def p11_object(self) -> Any:
        """The PKCS#11 private key object (for reading its attributes as evidence)."""
        return self._p11

    def sign(self, data: bytes, padding_: padding.AsymmetricPadding, algorithm: Any) -> bytes:
        if not isinstance(padding_, padding.PKCS1v15):
            raise HsmError("only RSA PKCS#1 v1.5 signatures are supported")
        if isinstance(algorithm, utils.Prehashed):
            raise HsmError("pre-hashed RSA signing is not supported")
        mech = _RSA_MECHANISMS.get(algorithm.name)
        if mech is None:
            raise HsmError(f"unsupported hash {algorithm.name} for RSA")
        try:
            sig = self._p11.sign(data, mechanism=mech)
        except p11e.PKCS11Error as exc:
            raise HsmError(f"the HSM refused to sign: {type(exc).__name__}") from None
        self.signatures += 1
        return bytes(sig)

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def decrypt(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise HsmError("CA keys are for signing only")

    def private_numbers(self) -> NoReturn:
        _refuse()

    def private_bytes(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse()

    def __copy__(self) -> HsmRsaPrivateKey:
        return self

    def __deepcopy__(self, memo: Any) -> HsmRsaPrivateKey:
        return self


HsmPrivateKey = HsmEcPrivateKey | HsmRsaPrivateKey


def signing_key(session: Any, label: str) -> HsmPrivateKey:
    """The HSM-backed signing key labelled ``label``, with its public half read from the token."""
    priv = find_private_key(session, label)
    public = public_key_from_token(find_public_key(session, label))
    if isinstance(public, ec.EllipticCurvePublicKey):
        return HsmEcPrivateKey(priv, public)
    return HsmRsaPrivateKey(priv, public)


def hash_for(key: Any) -> hashes.SHA256 | hashes.SHA384:
    """The signature hash the suite uses for a key: SHA-384 for P-384, else SHA-256 (RSA: SHA-256)."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def verify_signature(public_key: Any, signature: bytes, data: bytes, digest: hashes.HashAlgorithm | None) -> None:
    """Check a signature the way the suite's keys make them (ECDSA, or RSA PKCS#1 v1.5) over ``data``.

    Raises ``cryptography.exceptions.InvalidSignature`` when it does not verify, ``TypeError`` for another key type or
    no hash: every signed object the suite reads back (CRL, OCSP response, certificate) is checked through here.
    """
    if digest is None:
        raise TypeError("no signature hash algorithm")
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, data, ec.ECDSA(digest))
    elif isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, data, padding.PKCS1v15(), digest)
    else:
        raise TypeError(f"unsupported key type {type(public_key).__name__}")
