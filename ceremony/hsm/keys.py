"""Key generation on the token, and the evidence an auditor needs about the key.

The private key is generated inside the token: token object, private, sensitive, not
extractable (or, for a key that is to be backed up, extractable only under a trusted wrapping
key), usable for signing only. A label that exists on the token is an error, never a reason to
generate another key. After generation the public key is read back and its parameters checked, and it
goes through badkeys' weak-key checks (:mod:`ceremony.hsm.weak_keys`) before anything is signed with it: a
token whose generator is broken (ROCA, close primes) must be found at its first key, not by a relying party.
If anything is wrong the new objects are destroyed, so a failure leaves the token as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pkcs11 import Attribute, KeyType, MechanismFlag
from pkcs11 import exceptions as p11e
from pkcs11.util.ec import encode_named_curve_parameters

from ceremony.common.errors import HsmError
from ceremony.definition.model import EcKey, RsaKey
from ceremony.hsm.nss import NO_WRAPPED_BACKUP, softokn_session
from ceremony.hsm.session import objects_with_label, random_bytes
from ceremony.hsm.signers import public_key_from_token
from ceremony.hsm.weak_keys import weak_key_problem

_CURVES = {"P-256": ("secp256r1", ec.SECP256R1), "P-384": ("secp384r1", ec.SECP384R1)}

#: The transcript-sealing key every CA token holds beside the CA key: ECDSA P-384 whatever the CA key is
#: (one algorithm for every seal an auditor checks), generated on the token, never extractable, signing only.
SEALING_KEY = EcKey(algorithm="ecdsa", curve="P-384")


def spki_der(public: Any) -> bytes:
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def spki_sha256(public: Any) -> str:
    """The key's identity: SHA-256 of its DER SubjectPublicKeyInfo."""
    return hashlib.sha256(spki_der(public)).hexdigest()


@dataclass(frozen=True)
class KeyEvidence:
    label: str
    id_hex: str
    algorithm: str
    spki_sha256: str
    local: bool
    always_sensitive: bool
    never_extractable: bool
    sensitive: bool
    extractable: bool
    wrap_with_trusted: bool
    sign: bool
    decrypt: bool
    unwrap: bool
    derive: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _attr(obj: Any, attribute: Attribute, default: Any = False) -> Any:
    try:
        return obj[attribute]
    except (p11e.AttributeTypeInvalid, p11e.AttributeSensitive):
        return default


def key_evidence(priv: Any, public: Any, algorithm: str) -> KeyEvidence:
    return KeyEvidence(
        label=priv.label,
        id_hex=bytes(_attr(priv, Attribute.ID, b"")).hex(),
        algorithm=algorithm,
        spki_sha256=spki_sha256(public),
        local=bool(_attr(priv, Attribute.LOCAL)),
        always_sensitive=bool(_attr(priv, Attribute.ALWAYS_SENSITIVE)),
        never_extractable=bool(_attr(priv, Attribute.NEVER_EXTRACTABLE)),
        sensitive=bool(_attr(priv, Attribute.SENSITIVE)),
        extractable=bool(_attr(priv, Attribute.EXTRACTABLE)),
        wrap_with_trusted=bool(_attr(priv, Attribute.WRAP_WITH_TRUSTED)),
        sign=bool(_attr(priv, Attribute.SIGN)),
        decrypt=bool(_attr(priv, Attribute.DECRYPT)),
        unwrap=bool(_attr(priv, Attribute.UNWRAP)),
        derive=bool(_attr(priv, Attribute.DERIVE)),
    )


def check_public_key(public: Any, spec: EcKey | RsaKey) -> None:
    """Refuse a public key whose algorithm or size is not what the definition asks for."""
    if isinstance(spec, EcKey):
        want = _CURVES[spec.curve][1]
        if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(public.curve, want):
            got = public.curve.name if isinstance(public, ec.EllipticCurvePublicKey) else type(public).__name__
            raise HsmError(f"the key is {got}, the definition asks for ECDSA {spec.curve}")
    else:
        if not isinstance(public, rsa.RSAPublicKey) or public.key_size != spec.bits:
            got = f"RSA {public.key_size}" if isinstance(public, rsa.RSAPublicKey) else type(public).__name__
            raise HsmError(f"the key is {got}, the definition asks for RSA {spec.bits}")
        if public.public_numbers().e != 65537:
            raise HsmError("the RSA public exponent is not 65537")


def generate_key(session: Any, spec: EcKey | RsaKey, label: str, backup: bool = False,
                 key_id: bytes | None = None) -> KeyEvidence:
    """Generate a CA signing key pair labelled ``label`` on the token and return its evidence.

    ``backup=True`` makes the private key extractable *only* when wrapped by a trusted key
    (CKA_WRAP_WITH_TRUSTED), for the key-backup ceremony; otherwise it is never extractable.
    ``key_id`` (CKA_ID) is chosen by the caller when it must journal the key before it exists.
    """
    if objects_with_label(session, label):
        raise HsmError(f"an object labelled {label!r} already exists on the token; "
                       "refusing to generate another key under the same label")
    if backup and softokn_session(session):
        raise HsmError(f"{NO_WRAPPED_BACKUP}: set backup.mode none for a CA on it (nothing was generated)")
    key_id = key_id or random_bytes(session, 16)
    private_template = {
        Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: backup, Attribute.WRAP_WITH_TRUSTED: backup,
        Attribute.SIGN: True, Attribute.DECRYPT: False, Attribute.UNWRAP: False, Attribute.DERIVE: False,
    }
    public_template: dict[Attribute, Any] = {
        Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.VERIFY: True,
        Attribute.ENCRYPT: False, Attribute.WRAP: False,
    }
    try:
        if isinstance(spec, EcKey):
            params = session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(_CURVES[spec.curve][0])},
                local=True)
            pub, priv = params.generate_keypair(
                id=key_id, label=label, store=True, capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                public_template=public_template, private_template=private_template)
        else:
            public_template[Attribute.PUBLIC_EXPONENT] = (65537).to_bytes(3, "big")
            pub, priv = session.generate_keypair(
                KeyType.RSA, spec.bits, id=key_id, label=label, store=True,
                capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                public_template=public_template, private_template=private_template)
    except p11e.PKCS11Error as exc:
        raise HsmError(f"key generation on the token failed: {type(exc).__name__}") from None
    try:
        public = public_key_from_token(pub)
        check_public_key(public, spec)
        weak = weak_key_problem(public)
        if weak:
            raise HsmError(f"the key the token generated under {label!r} is {weak}; it is destroyed and nothing "
                           "was signed with it: the token's key generation cannot be trusted")
        evidence = key_evidence(priv, public, spec.describe())
        problems = [name for name, ok in (
            ("CKA_SENSITIVE", evidence.sensitive),
            ("CKA_LOCAL", evidence.local or (softokn_session(session) and evidence.never_extractable)),
            ("CKA_ALWAYS_SENSITIVE", evidence.always_sensitive), ("CKA_SIGN", evidence.sign),
            ("CKA_DECRYPT false", not evidence.decrypt), ("CKA_UNWRAP false", not evidence.unwrap),
            ("CKA_DERIVE false", not evidence.derive),
            ("CKA_NEVER_EXTRACTABLE" if not backup else "CKA_WRAP_WITH_TRUSTED",
             evidence.never_extractable if not backup else evidence.wrap_with_trusted),
        ) if not ok]
        if problems:
            raise HsmError(f"the token did not honour the key template: {', '.join(problems)}")
    except BaseException:
        for obj in (priv, pub):
            with contextlib.suppress(p11e.PKCS11Error):
                obj.destroy()
        raise
    return evidence
