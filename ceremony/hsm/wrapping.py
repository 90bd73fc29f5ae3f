"""Wrapping keys and wrapped private keys on a PKCS#11 token: the trusted AES wrapping key of a
backup, unwrapping a CA key as a sign-only object, and the public-key object beside it."""

from __future__ import annotations

import contextlib
from typing import Any

from asn1crypto.core import OctetString
from asn1crypto.keys import PublicKeyInfo
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_wrap, aes_key_wrap_with_padding
from pkcs11 import DEFAULT, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11e

from ceremony.common.errors import HsmError
from ceremony.hsm.keys import spki_der
from ceremony.hsm.nss import SOFTOKN_WRAP_PAD
from ceremony.hsm.session import (
    objects_with_label,
)
from ceremony.hsm.signers import HsmEcPrivateKey, HsmRsaPrivateKey, hash_for

WRAP_LABEL_PREFIX = "backup-wrap-"


def key_type_of(public: Any) -> KeyType:
    if isinstance(public, ec.EllipticCurvePublicKey):
        return KeyType.EC
    if isinstance(public, rsa.RSAPublicKey):
        return KeyType.RSA
    raise HsmError(f"unsupported key type {type(public).__name__}")


def sign_with(p11_key: Any, public: Any, message: bytes) -> bytes:
    """A signature by a PKCS#11 private key, through the same code path the ceremonies use."""
    if isinstance(public, ec.EllipticCurvePublicKey):
        return HsmEcPrivateKey(p11_key, public).sign(message, ec.ECDSA(hash_for(public)))
    return HsmRsaPrivateKey(p11_key, public).sign(message, padding.PKCS1v15(), hash_for(public))


# Attributes python-pkcs11 would add for "all capabilities" that a private key does not take.
_NOT_FOR_PRIVATE = {Attribute.ENCRYPT: DEFAULT, Attribute.VERIFY: DEFAULT, Attribute.WRAP: DEFAULT}


def unwrap_private(wrapping_key: Any, wrapped: bytes, key_type: KeyType, *, store: bool,
                   label: str | None = None, key_id: bytes | None = None, extractable: bool = False) -> Any:
    """Unwrap a CA private key (RFC 5649) as a sign-only, sensitive key."""
    template = {**_NOT_FOR_PRIVATE, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: extractable, Attribute.WRAP_WITH_TRUSTED: extractable,
                Attribute.SIGN: True, Attribute.DECRYPT: False, Attribute.UNWRAP: False, Attribute.DERIVE: False}
    return wrapping_key.unwrap_key(ObjectClass.PRIVATE_KEY, key_type, wrapped, label=label, id=key_id, store=store,
                                   mechanism=Mechanism.AES_KEY_WRAP_PAD, template=template)


def _wrapping_key_template(secret: bytes, label: str, *, token: bool, trusted: bool) -> dict[Attribute, Any]:
    template = {
        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES, Attribute.VALUE: secret,
        Attribute.TOKEN: token, Attribute.PRIVATE: False, Attribute.LABEL: label,
        Attribute.WRAP: True, Attribute.UNWRAP: True, Attribute.ENCRYPT: False, Attribute.DECRYPT: False,
        Attribute.SIGN: False, Attribute.VERIFY: False, Attribute.DERIVE: False,
        Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
    }
    if trusted:
        template[Attribute.TRUSTED] = True
    return template


def import_wrapping_key(session: Any, secret: bytes, label: str, *, token: bool, trusted: bool) -> Any:
    try:
        return session.create_object(_wrapping_key_template(secret, label, token=token, trusted=trusted))
    except p11e.PKCS11Error as exc:
        raise HsmError(f"the token refused the wrapping key: {type(exc).__name__}") from None


def destroy_label(session: Any, label: str) -> int:
    n = 0
    for obj in objects_with_label(session, label):
        with contextlib.suppress(p11e.PKCS11Error):
            obj.destroy()
            n += 1
    return n


def destroy_stale_wrapping_keys(session: Any) -> list[str]:
    """Destroy trusted wrapping keys an interrupted backup left behind.

    While such a key exists, one Crypto Officer alone could wrap the CA key again and carry it off:
    exactly what the quorum is there to prevent. Returns the labels destroyed (for the record).
    """
    labels = []
    for obj in session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY}):
        label = obj.label or ""
        if label.startswith(WRAP_LABEL_PREFIX):
            try:
                obj.destroy()
            except p11e.PKCS11Error as exc:
                raise HsmError(f"a wrapping key left by an interrupted backup ({label!r}) cannot be destroyed: "
                               f"{type(exc).__name__}; the Security Officer must remove it first") from None
            labels.append(label)
    return labels


def zero(buf: bytearray) -> None:
    """Best effort: overwrite a secret held in a bytearray (Python may have copied it elsewhere)."""
    for i in range(len(buf)):
        buf[i] = 0


def public_key_template(public: Any, label: str, key_id: bytes) -> dict[Attribute, Any]:
    """The PKCS#11 public-key object for a restored key (so the engine finds the pair by label)."""
    template: dict[Attribute, Any] = {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.TOKEN: True,
                                      Attribute.PRIVATE: False, Attribute.LABEL: label, Attribute.ID: key_id,
                                      Attribute.VERIFY: True, Attribute.ENCRYPT: False, Attribute.WRAP: False}
    if isinstance(public, ec.EllipticCurvePublicKey):
        info = PublicKeyInfo.load(spki_der(public))
        template[Attribute.KEY_TYPE] = KeyType.EC
        template[Attribute.EC_PARAMS] = info["algorithm"]["parameters"].dump()

        template[Attribute.EC_POINT] = OctetString(public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)).dump()
    else:
        numbers = public.public_numbers()
        template[Attribute.KEY_TYPE] = KeyType.RSA
        template[Attribute.MODULUS] = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        template[Attribute.PUBLIC_EXPONENT] = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
    return template


#: What ``CKM_AES_KEY_WRAP_PAD`` computes, by its standard name. PKCS#11 v2.40 leaves it open and modules differ:
#: SoftHSM 2.6 does RFC 5649, NSS softokn pads with PKCS#7 to 8 bytes and then does RFC 3394 (SoftHSMv2 issue 726).
#: PKCS#11 3.0 names RFC 5649 ``CKM_AES_KEY_WRAP_KWP``, which SoftHSM 2.6 lacks and softokn 3.87 mis-sizes.
RFC5649 = "RFC 5649 AES key wrap with padding"


PKCS7_RFC3394 = SOFTOKN_WRAP_PAD


WRAP_ALGORITHM_FOUND_BY = ("known-answer test on the token: a fixed 32-byte key wrapped under a fixed AES-256 key, "
                           "compared with RFC 5649 and with PKCS#7 + RFC 3394 computed on the host")


UNKNOWN_WRAP = "unknown: neither RFC 5649 nor PKCS#7 + RFC 3394 on the known-answer test"


# The known-answer test: an AES-256 wrapping key and 32 bytes to wrap, both fixed and public (session objects).
_KAT_KEK = bytes(range(32))


_KAT_DATA = bytes(range(0xA0, 0xC0))


def _expected() -> dict[bytes, str]:
    return {aes_key_wrap_with_padding(_KAT_KEK, _KAT_DATA): RFC5649,
            aes_key_wrap(_KAT_KEK, _KAT_DATA + bytes([8]) * 8): PKCS7_RFC3394}


def wrap_algorithm(session: Any) -> str:
    """What the token's ``CKM_AES_KEY_WRAP_PAD`` really is, found by wrapping a fixed key under a fixed key.

    Both are session objects (never stored on the token) holding public test values, destroyed at once. The result
    is compared byte for byte with RFC 5649 and with PKCS#7 + RFC 3394 computed on the host: a backup records the
    answer, and a restore refuses a module whose answer differs (the same mechanism name, another algorithm).
    """
    common = {Attribute.TOKEN: False, Attribute.PRIVATE: False}
    made: list[Any] = []
    try:
        kek = session.create_object({**common, Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
                                     Attribute.VALUE: _KAT_KEK, Attribute.WRAP: True, Attribute.UNWRAP: False,
                                     Attribute.LABEL: "wrap-algorithm-probe-kek"})
        made.append(kek)
        data = session.create_object({**common, Attribute.CLASS: ObjectClass.SECRET_KEY,
                                      Attribute.KEY_TYPE: KeyType.GENERIC_SECRET, Attribute.VALUE: _KAT_DATA,
                                      Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False,
                                      Attribute.LABEL: "wrap-algorithm-probe-data"})
        made.append(data)
        wrapped = bytes(kek.wrap_key(data, mechanism=Mechanism.AES_KEY_WRAP_PAD))
    except p11e.PKCS11Error as exc:
        raise HsmError(f"the token cannot wrap with CKM_AES_KEY_WRAP_PAD: {type(exc).__name__}") from None
    finally:
        for obj in made:
            with contextlib.suppress(p11e.PKCS11Error):
                obj.destroy()
    return _expected().get(wrapped, UNKNOWN_WRAP)
