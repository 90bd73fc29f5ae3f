"""The key-backup file: wrapped key, public key, custody record, key check value, MAC and
checksum, and what proves a backup (or a key restored from it) good."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ceremony.common.errors import DefinitionError, VerificationError
from ceremony.hsm.keys import spki_sha256
from ceremony.hsm.signers import hash_for
from ceremony.x509.files import read_certificate

BACKUP_FORMAT = "ceremony-key-backup/1"


BACKUP_DIR = "backup"


WRAP_MECHANISM = "CKM_AES_KEY_WRAP_PAD"


SHAMIR_SCHEME = "shamir-gf256-0x11b"


_KCV_INFO = b"ceremony key-backup key check value v1"


_MAC_INFO = b"ceremony key-backup file mac v1"


#: What a backup written before the file named its algorithm was wrapped with: every one of them was made on
#: SoftHSM, where CKM_AES_KEY_WRAP_PAD is RFC 5649 (a restore still checks the target module by known answer).
UNRECORDED_ALGORITHM = "RFC 5649 AES key wrap with padding"


def wrapping_algorithm(body: Mapping[str, Any]) -> str:
    """The wrapping algorithm a backup file names (``wrapping.algorithm``), by its standard name."""
    return str(body["wrapping"].get("algorithm") or UNRECORDED_ALGORITHM)


def wrapping_module(body: Mapping[str, Any]) -> str:
    """The module that wrapped the key, as an operator reads it (description, manufacturer, version)."""
    module = body["wrapping"].get("module") or {}
    parts = [str(module.get(k)) for k in ("library_description", "library_manufacturer") if module.get(k)]
    return " / ".join(parts) or "a module the file does not name"


class BackupError(VerificationError):
    """A backup or a share does not verify: corrupted, tampered with, from another backup, or too few."""


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def key_check_value(secret: bytes) -> str:
    """64 bits derived one-way from the wrapping key: proves the shares recombined to the right key."""
    return _hkdf(secret, _KCV_INFO)[:8].hex()


def _canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def file_mac(secret: bytes, body: Mapping[str, Any]) -> str:
    """HMAC-SHA256 over the canonical body (without ``mac`` and ``checksum_sha256``)."""
    unsigned = {k: v for k, v in body.items() if k not in ("mac", "checksum_sha256")}
    return hmac.new(_hkdf(secret, _MAC_INFO), _canonical(unsigned), hashlib.sha256).hexdigest()


def file_checksum(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in body.items() if k != "checksum_sha256"})).hexdigest()


def seal_backup_body(secret: bytes, body: dict[str, Any]) -> bytes:
    body = dict(body)
    body["mac"] = {"algorithm": "HMAC-SHA256", "key": "HKDF-SHA256(wrapping key, info='"
                   + _MAC_INFO.decode() + "')", "value": file_mac(secret, body)}
    body["checksum_sha256"] = file_checksum(body)
    return (json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def load_backup(path: str | Path) -> dict[str, Any]:
    """Read a backup file and check its structure and checksum: no share and no HSM needed yet."""
    p = Path(path)
    source = str(p)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DefinitionError(source, "", "backup file not found") from None
    except OSError as exc:
        raise DefinitionError(source, "", f"cannot read the backup file: {exc.strerror}") from None
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BackupError(f"{source}: the backup file is damaged (not valid JSON); use another copy") from None
    if not isinstance(body, dict):
        raise BackupError(f"{source}: the backup file is damaged (not a JSON object); use another copy")
    if body.get("format") != BACKUP_FORMAT:
        raise DefinitionError(source, "format", f"{body.get('format')!r} is not a backup format this suite reads",
                              BACKUP_FORMAT)
    if body.get("checksum_sha256") != file_checksum(body):
        raise BackupError(f"{source}: checksum_sha256 does not match the content: the backup file is corrupted "
                          "or was altered; use another copy")
    required = {"backup_id": str, "ca": str, "rehearsal": bool, "key": dict, "wrapping": dict, "quorum": dict,
                "mac": dict}
    for name, kind in required.items():
        if not isinstance(body.get(name), kind):
            raise DefinitionError(source, name, "missing or of the wrong type", kind.__name__)
    for name in ("label", "id_hex", "algorithm", "public_key_pem", "spki_sha256"):
        if not isinstance(body["key"].get(name), str):
            raise DefinitionError(source, f"key.{name}", "missing or not a string")
    for name in ("mechanism", "key_check_value", "wrapped_key_b64"):
        if not isinstance(body["wrapping"].get(name), str):
            raise DefinitionError(source, f"wrapping.{name}", "missing or not a string")
    for name in ("algorithm", "module"):
        if name in body["wrapping"] and not isinstance(body["wrapping"][name], dict if name == "module" else str):
            raise DefinitionError(source, f"wrapping.{name}", "of the wrong type",
                                  "an object" if name == "module" else "a string")
    if body["wrapping"]["mechanism"] != WRAP_MECHANISM:
        raise DefinitionError(source, "wrapping.mechanism", f"{body['wrapping']['mechanism']!r}", WRAP_MECHANISM)
    quorum = body["quorum"]
    if not isinstance(quorum.get("threshold"), int) or not isinstance(quorum.get("count"), int) \
            or not isinstance(quorum.get("custodians"), list):
        raise DefinitionError(source, "quorum", "needs threshold and count (numbers) and custodians (a list)")
    for i, c in enumerate(quorum["custodians"]):
        if not isinstance(c, dict) or not isinstance(c.get("index"), int) or \
                not all(isinstance(c.get(k), str) for k in ("name", "bag", "share_checksum")):
            raise DefinitionError(source, f"quorum.custodians[{i}]", "needs name, index, bag and share_checksum")
    try:
        base64.b64decode(body["wrapping"]["wrapped_key_b64"], validate=True)
        bytes.fromhex(body["key"]["id_hex"])
    except ValueError:
        raise DefinitionError(source, "wrapping.wrapped_key_b64", "not base64, or key.id_hex not hexadecimal") \
            from None
    try:
        public = serialization.load_pem_public_key(body["key"]["public_key_pem"].encode())
    except (ValueError, TypeError):
        raise DefinitionError(source, "key.public_key_pem", "not a PEM public key") from None
    if spki_sha256(public) != body["key"]["spki_sha256"]:
        raise BackupError(f"{source}: key.spki_sha256 is not the SHA-256 of key.public_key_pem")
    return body


def load_ca_certificate(path: Path, ca_name: str) -> x509.Certificate:
    """The CA's certificate (PEM or DER): the backed-up key must be its key, the restored key must sign for it."""
    return read_certificate(path, f"the certificate of {ca_name!r}",
                            "pass --certificate with the CA's certificate (PEM or DER)")


def verify_test_signature(public: Any, message: bytes, signature: bytes) -> None:
    """Raise BackupError unless ``signature`` by the (restored or test-unwrapped) key verifies."""
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, message, ec.ECDSA(hash_for(public)))
        else:
            public.verify(signature, message, padding.PKCS1v15(), hash_for(public))
    except InvalidSignature:
        raise BackupError("the test signature does not verify against the certificate's public key") from None


def public_key_of(body: Mapping[str, Any]) -> Any:
    return serialization.load_pem_public_key(body["key"]["public_key_pem"].encode())
