"""The HSM acceptance check: does this PKCS#11 module and token do what the definition's ceremonies need?

Code that passed on one PKCS#11 implementation regularly breaks on another: a mechanism missing (SoftHSM 2.6 has
no CKM_ECDSA_SHA384), a mechanism of the same name meaning another algorithm (NSS softokn's CKM_AES_KEY_WRAP_PAD
is PKCS#7 padding + RFC 3394, SoftHSM's is RFC 5649), an attribute template one token honours and another
ignores. A buyer evaluating a vendor's module, and the operators before any ceremony, need to know that before
witnesses are in the room. So the requirements are derived from the definition (each CA's key algorithm, the
transcript-sealing key every CA token holds, the backup mode) and probed in two depths:

* **passive** (:func:`probe_capabilities`): the module's mechanism list and C_GetMechanismInfo (flags, key
  sizes) and the token's flags. Nothing is created: this is what every ceremony's pre-flight runs, also on a
  production token.
* **active** (:func:`active_probes`, ``invoke hsm.check``): throwaway objects, clearly labelled
  (:data:`THROWAWAY_LABEL`, CKA_ID prefix :data:`THROWAWAY_ID`), generated, used and always destroyed, even on
  Ctrl-C or an error; what an interrupted check could not destroy is removed by the next one, which says so.
  It generates each key type with the ceremonies' own template and code (:func:`ceremony.hsm.keys.generate_key`),
  reads the attributes back, signs the way the suite signs and verifies with cryptography, proves that a
  non-extractable key does not leave the token and that a backup key leaves it only under a trusted key, wraps a
  known key with CKM_AES_KEY_WRAP_PAD and compares the result with RFC 5649 (cryptography's
  ``aes_key_wrap_with_padding``), and draws random bytes.

Every probe says what was checked, pass or fail, what was found, and what a failure means for which ceremony.
Nothing here is specific to one module: a second implementation is probed by the same requirements.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import html
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap,
    aes_key_wrap_with_padding,
)
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11e
from pkcs11.constants import TokenFlag

from ceremony.common.errors import CeremonyError, HsmError
from ceremony.definition.model import CA, EcKey, LoadedDefinition, RsaKey
from ceremony.hsm.keys import SEALING_KEY, generate_key
from ceremony.hsm.nss import KEYS_NOT_CONFINED, NO_WRAPPED_BACKUP, softokn_token
from ceremony.hsm.session import find_token, load_module, module_sha256, open_session, pin_source_for, random_bytes
from ceremony.hsm.signers import hash_for, signing_key
from ceremony.hsm.weak_keys import blocklist_state
from ceremony.hsm.wrapping import import_wrapping_key

#: Label prefix of every object the active check creates; the next check removes any it finds.
THROWAWAY_LABEL = "HSM-CHECK-THROWAWAY"

#: CKA_ID prefix of the throwaway key pairs ("HSM-CHECK:" in ASCII).
THROWAWAY_ID = b"HSM-CHECK:"

#: Ceremony names (those of ``ceremony/scripts``, and the two online operations that sign).
ROOT_KEY, SUB_KEY, SUB_SIGN, ROOT_CRL = ("root-key-generation", "subordinate-key-generation", "subordinate-signing",
                                         "root-crl-batch")
BACKUP, RESTORE, ISSUANCE, CRL_JOB = "key-backup", "key-restore", "issuance", "crl-signing"
#: The life-cycle ceremonies: the token's initialisation generates its sealing key; the root's successor generates a
#: key as the root key ceremony does; the others sign with the root key.
TOKEN_INIT, NEW_ROOT, CROSS = "token-initialisation", "new-root-key-generation", "cross-certification"
ROOT_LIFECYCLE_SIGNS = (NEW_ROOT, CROSS, "sealing-certification", "subordinate-renewal", "root-termination")
#: A subordinate's termination signs its last CRL with the CA key.
TERMINATION = "ca-termination"
#: Re-key (ceremony/ceremonies/rekey.py): the subordinate's token generates the next generation's key and signs its
#: CSR; the root signs its certificate.
SUB_REKEY, REKEY_CERTIFY = "subordinate-rekey", "subordinate-rekey-certification"

#: ``Capability.ceremonies`` for what every ceremony on the token needs (each seals its transcript).
EVERY_CEREMONY: tuple[str, ...] = ()

_CURVE_BITS = {"P-256": 256, "P-384": 384}


def spec_name(spec: EcKey | RsaKey) -> str:
    return f"ecdsa-{spec.curve.lower().replace('-', '')}" if isinstance(spec, EcKey) else f"rsa-{spec.bits}"


def spec_bits(spec: EcKey | RsaKey) -> int:
    return _CURVE_BITS[spec.curve] if isinstance(spec, EcKey) else spec.bits


def mechanism_name(mechanism: int) -> str:
    try:
        return "CKM_" + Mechanism(mechanism).name
    except ValueError:
        return f"CKM_0x{mechanism:08x}"


@dataclass(frozen=True)
class Capability:
    """One thing a CA's token must do: a mechanism with a flag (and a key size), or the token's RNG."""

    id: str
    what: str
    mechanism: int | None  # None: the token's random number generator (CKF_RNG)
    flag: MechanismFlag
    bits: int | None
    ceremonies: tuple[str, ...]  # EVERY_CEREMONY: all of them
    why: str

    def needed_by(self, ceremony: str) -> bool:
        return self.ceremonies == EVERY_CEREMONY or ceremony in self.ceremonies

    def used_by(self) -> str:
        return "every ceremony on this token" if self.ceremonies == EVERY_CEREMONY else ", ".join(self.ceremonies)


def _keygen(spec: EcKey | RsaKey, ceremonies: tuple[str, ...], why: str) -> Capability:
    mech = Mechanism.EC_KEY_PAIR_GEN if isinstance(spec, EcKey) else Mechanism.RSA_PKCS_KEY_PAIR_GEN
    return Capability(f"mechanism.keygen.{spec_name(spec)}", f"generate {spec.describe()} key pairs "
                      f"({mechanism_name(mech)}, {spec_bits(spec)} bits)", mech, MechanismFlag.GENERATE_KEY_PAIR,
                      spec_bits(spec), ceremonies, why)


def _sign(spec: EcKey | RsaKey, ceremonies: tuple[str, ...], why: str) -> Capability:
    if isinstance(spec, EcKey):
        mech, how = Mechanism.ECDSA, "the host hashes, the token signs the digest"
    else:
        mech, how = Mechanism.SHA256_RSA_PKCS, "PKCS#1 v1.5, SHA-256 hashed in the token"
    return Capability(f"mechanism.sign.{spec_name(spec)}", f"sign with {spec.describe()} ({mechanism_name(mech)}: "
                      f"{how})", mech, MechanismFlag.SIGN, spec_bits(spec), ceremonies, why)


def _merge(caps: list[Capability]) -> list[Capability]:
    """One capability per id: the CA key and the sealing key of the same type need one mechanism once."""
    merged: dict[str, Capability] = {}
    for cap in caps:
        old = merged.get(cap.id)
        if old is None:
            merged[cap.id] = cap
            continue
        every = EVERY_CEREMONY in (old.ceremonies, cap.ceremonies)
        ceremonies = EVERY_CEREMONY if every else tuple(dict.fromkeys(old.ceremonies + cap.ceremonies))
        merged[cap.id] = Capability(old.id, old.what, old.mechanism, old.flag, old.bits, ceremonies,
                                    f"{old.why}; {cap.why}")
    return list(merged.values())


def capabilities(ca: CA) -> list[Capability]:
    """Everything the ceremonies ask of this CA's token, from the definition."""
    root = ca.role == "root"
    keygen = (ROOT_KEY, NEW_ROOT) if root else (SUB_KEY,)
    signs = ((ROOT_KEY, SUB_SIGN, ROOT_CRL, *ROOT_LIFECYCLE_SIGNS, REKEY_CERTIFY) if root
             else (SUB_KEY, SUB_REKEY, ISSUANCE, CRL_JOB, TERMINATION))
    caps = [
        _keygen(ca.key, keygen if root else (*keygen, SUB_REKEY),
                f"the CA key ({ca.key.describe()}) is generated on the token"),
        _keygen(SEALING_KEY, (*keygen, RESTORE, TOKEN_INIT),
                "the transcript-sealing key (ECDSA P-384) is generated on the token"),
        _sign(ca.key, signs, "the CA key signs " + ("the root certificate, subordinate certificates and CRLs" if root
                                                    else "its CSR, certificates and CRLs")),
        _sign(SEALING_KEY, EVERY_CEREMONY, "the transcript-sealing key seals every ceremony's transcript"),
        Capability("token.random", "generate random numbers (CKF_RNG, C_GenerateRandom)", None, MechanismFlag(0), None,
                   EVERY_CEREMONY, "key identifiers, certificate serial numbers and backup secrets come from it"),
    ]
    if ca.backup.mode == "wrapped":
        caps += [
            Capability("mechanism.wrap.aes-key-wrap-pad", "wrap a private key (CKM_AES_KEY_WRAP_PAD, RFC 5649)",
                       Mechanism.AES_KEY_WRAP_PAD, MechanismFlag.WRAP, None, (BACKUP,),
                       "the backup wraps the CA key under a trusted AES-256 key"),
            Capability("mechanism.unwrap.aes-key-wrap-pad", "unwrap a private key (CKM_AES_KEY_WRAP_PAD, RFC 5649)",
                       Mechanism.AES_KEY_WRAP_PAD, MechanismFlag.UNWRAP, None, (RESTORE,),
                       "the restore unwraps the CA key from its backup"),
        ]
    return _merge(caps)


def needed_for(caps: list[Capability], ceremony: str) -> list[Capability]:
    return [c for c in caps if c.needed_by(ceremony)]


@dataclass(frozen=True)
class Probe:
    """The result of checking one thing: ``status`` is pass, fail or info (informational, never a refusal)."""

    id: str
    what: str
    status: str
    detail: str
    impact: str  # what a failure means, for which ceremony
    ceremonies: str = ""
    required: bool = True

    @property
    def failed(self) -> bool:
        return self.status == "fail" and self.required

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "what": self.what, "result": self.status, "required": self.required,
                "detail": self.detail, "if_failed": self.impact, "needed_by": self.ceremonies}


def mechanism_list(slot: Any) -> set[int]:
    """The module's mechanism list for ``slot`` (C_GetMechanismList): the one place it is read."""
    return {int(m) for m in slot.get_mechanisms()}


def mechanism_info(slot: Any, mechanism: int) -> Any:
    """C_GetMechanismInfo for one mechanism."""
    return slot.get_mechanism_info(mechanism)


def probe_capability(token: Any, cap: Capability, offered: set[int]) -> Probe:
    """Whether the token offers ``cap`` according to its own lists; nothing is created."""
    impact = f"{cap.used_by()} cannot run on this token: {cap.why}"
    if cap.mechanism is None:
        ok = bool(token.flags & TokenFlag.RNG)
        return Probe(cap.id, cap.what, "pass" if ok else "fail",
                     "the token has a random number generator (CKF_RNG)" if ok else
                     "the token says it has no random number generator (CKF_RNG not set)", impact, cap.used_by())
    name = mechanism_name(cap.mechanism)
    if cap.mechanism not in offered:
        return Probe(cap.id, cap.what, "fail", f"the module does not list {name} for this token", impact,
                     cap.used_by())
    try:
        info = mechanism_info(token.slot, cap.mechanism)
    except p11e.PKCS11Error as exc:
        return Probe(cap.id, cap.what, "fail", f"C_GetMechanismInfo({name}) failed: {type(exc).__name__}", impact,
                     cap.used_by())
    flags = MechanismFlag(info.flags)
    if not flags & cap.flag:
        return Probe(cap.id, cap.what, "fail", f"{name} is listed without CKF_{cap.flag.name} (flags: {flags!s})",
                     impact, cap.used_by())
    lo, hi = info.min_key_length or 0, info.max_key_length or 0
    sizes = f", key sizes {lo}–{hi}" if hi else ""
    if cap.bits and hi and not lo <= cap.bits <= hi:
        return Probe(cap.id, cap.what, "fail", f"{name} takes keys of {lo} to {hi} bits, not {cap.bits}", impact,
                     cap.used_by())
    return Probe(cap.id, cap.what, "pass", f"{name} listed with CKF_{cap.flag.name}{sizes}", impact, cap.used_by())


def probe_capabilities(token: Any, caps: list[Capability]) -> list[Probe]:
    """The passive probe: mechanism list, C_GetMechanismInfo and token flags only; nothing is created."""
    try:
        offered = mechanism_list(token.slot)
    except p11e.PKCS11Error as exc:
        return [Probe("mechanism.list", "read the mechanism list (C_GetMechanismList)", "fail",
                      f"the module refused: {type(exc).__name__}", "no ceremony can be checked on this token")]
    return [probe_capability(token, cap, offered) for cap in caps]


#: What the active probe found on a module, known again from the token's identity so that the passive probe (every
#: ceremony's pre-flight, ``--passive``), which creates nothing, can say it too.
CONFINEMENT_ID = "module.keys-confined"


TRUSTED_WRAP_ID = "module.wrap-with-trusted"


@dataclass(frozen=True)
class KnownLimit:
    """A limit of a module that the active probe proved and that no mechanism list shows, for the ceremonies it
    stops (:data:`EVERY_CEREMONY`: all of them); ``rehearsal_ok``: a rehearsal, whose keys are throwaway, may run."""

    probe: Probe
    ceremonies: tuple[str, ...]
    rehearsal_ok: bool

    def stops(self, ceremony: str) -> bool:
        return self.ceremonies == EVERY_CEREMONY or ceremony in self.ceremonies


def known_limits(token: Any, ca_name: str, ca: CA) -> list[KnownLimit]:
    """The limits known of this token's module (recognised from its CK_TOKEN_INFO manufacturer and model) that matter
    for ``ca``'s ceremonies. Empty for a module with none known: the active probe is what finds new ones."""
    if not softokn_token(token.manufacturer_id, token.model):
        return []
    limits = [KnownLimit(Probe(
        CONFINEMENT_ID, "the CA key stays in the token (C_WrapKey refuses a never-extractable key)", "fail",
        f"{KEYS_NOT_CONFINED} (proved by invoke hsm.check, probe object.non-extractable.*)",
        "a CA key generated on it is not confined to the token: a production ceremony is refused on it, a rehearsal "
        "may run", "every ceremony on this token"), EVERY_CEREMONY, True)]
    if ca.backup.mode == "wrapped":
        keygen = ROOT_KEY if ca.role == "root" else SUB_KEY
        limits.append(KnownLimit(Probe(
            TRUSTED_WRAP_ID, "a key for a wrapped backup leaves the token only under a trusted key "
            "(CKA_WRAP_WITH_TRUSTED, CKA_TRUSTED set by the Security Officer)", "fail",
            f"{NO_WRAPPED_BACKUP} (proved by invoke hsm.check, probe object.backup-keygen.*)",
            f"cas.{ca_name}.backup.mode wrapped cannot be honoured: set it to none for a CA on this module",
            f"{keygen}, {BACKUP}"), (keygen, BACKUP), False))
    return limits


# --- the token's description ---------------------------------------------------------------------------------


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte)]


class _TokenInfo(ctypes.Structure):
    """CK_TOKEN_INFO (PKCS#11 2.40), read directly: python-pkcs11 does not expose the clock or the counters."""

    _fields_ = [("label", ctypes.c_char * 32), ("manufacturerID", ctypes.c_char * 32), ("model", ctypes.c_char * 16),
                ("serialNumber", ctypes.c_char * 16), ("flags", ctypes.c_ulong),
                ("ulMaxSessionCount", ctypes.c_ulong), ("ulSessionCount", ctypes.c_ulong),
                ("ulMaxRwSessionCount", ctypes.c_ulong), ("ulRwSessionCount", ctypes.c_ulong),
                ("ulMaxPinLen", ctypes.c_ulong), ("ulMinPinLen", ctypes.c_ulong),
                ("ulTotalPublicMemory", ctypes.c_ulong), ("ulFreePublicMemory", ctypes.c_ulong),
                ("ulTotalPrivateMemory", ctypes.c_ulong), ("ulFreePrivateMemory", ctypes.c_ulong),
                ("hardwareVersion", _Version), ("firmwareVersion", _Version), ("utcTime", ctypes.c_char * 16)]


_GET_TOKEN_INFO = 6  # C_GetTokenInfo's index in CK_FUNCTION_LIST, after the version


def raw_token_info(module_path: str, slot_id: int) -> dict[str, Any] | None:
    """C_GetTokenInfo through the module's function list (the module is already initialised by this process):
    the clock, PIN lengths, session counts and memory that python-pkcs11 leaves out. None if it cannot be read."""
    try:
        module = ctypes.CDLL(os.path.realpath(module_path))
        table = ctypes.c_void_p()
        if module.C_GetFunctionList(ctypes.byref(table)) != 0 or not table.value:
            return None
        pointers = ctypes.cast(table.value + ctypes.sizeof(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p))
        proto = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_ulong, ctypes.POINTER(_TokenInfo))
        info = _TokenInfo()
        if proto(pointers[_GET_TOKEN_INFO])(slot_id, ctypes.byref(info)) != 0:
            return None
    except (OSError, AttributeError, ValueError):
        return None

    def count(n: int) -> int | str:
        return "unavailable" if n == ctypes.c_ulong(-1).value else "effectively infinite" if n == 0xFFFFFFFF - 1 \
            else n

    return {"label": info.label.decode("utf-8", "replace").rstrip(" \0"),
            "utc_time": info.utcTime.decode("ascii", "replace").strip(" \0"),
            "pin_length": [info.ulMinPinLen, info.ulMaxPinLen],
            "max_sessions": count(info.ulMaxSessionCount), "max_rw_sessions": count(info.ulMaxRwSessionCount),
            "free_public_memory": count(info.ulFreePublicMemory),
            "free_private_memory": count(info.ulFreePrivateMemory)}


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).rstrip(" \0").strip()


def _flag_names(flags: Any) -> list[str]:
    return sorted("CKF_" + f.name for f in TokenFlag if f.name and f.value and flags & f.value == f.value)


def describe_token(module_path: str, lib: Any, token: Any) -> dict[str, Any]:
    """The module and token as a buyer or an auditor compares them with the vendor's datasheet."""
    raw = raw_token_info(module_path, token.slot.slot_id) or {}
    clock = "CKF_CLOCK_ON_TOKEN" in _flag_names(token.flags)
    return {
        "module": {"path": os.path.realpath(module_path), "sha256": module_sha256(module_path),
                   "library_description": _text(lib.library_description),
                   "library_manufacturer": _text(lib.manufacturer_id),
                   "library_version": "{}.{}".format(*lib.library_version),
                   "cryptoki_version": "{}.{}".format(*lib.cryptoki_version)},
        "token": {"label": _text(token.label), "manufacturer": _text(token.manufacturer_id),
                  "model": _text(token.model), "serial": _text(token.serial),
                  "hardware_version": "{}.{}".format(*token.hardware_version),
                  "firmware_version": "{}.{}".format(*token.firmware_version),
                  "slot": token.slot.slot_id, "slot_description": _text(token.slot.slot_description),
                  "flags": _flag_names(token.flags),
                  "clock": (raw.get("utc_time") or "unreadable") if clock else
                  "none (CKF_CLOCK_ON_TOKEN not set): the host clock is the only time source",
                  **{k: v for k, v in raw.items() if k not in ("label", "utc_time")}},
    }


# --- the active probe --------------------------------------------------------------------------------------------


def _throwaway_label(what: str) -> str:
    return f"{THROWAWAY_LABEL}-{what}-{secrets.token_hex(3)}"[:32]


def _label_of(obj: Any) -> str:
    try:
        return str(obj[Attribute.LABEL])
    except p11e.PKCS11Error:
        return ""


def throwaway_objects(session: Any) -> list[Any]:
    """The objects on the token (visible to ``session``) that a check created."""
    return [o for o in session.get_objects() if _label_of(o).startswith(THROWAWAY_LABEL)]


def remove_throwaways(session: Any) -> list[str]:
    """Destroy every throwaway object; returns the labels of those that could not be destroyed."""
    left = []
    for obj in throwaway_objects(session):
        try:
            obj.destroy()
        except p11e.PKCS11Error:
            left.append(_label_of(obj))
    return left


@contextlib.contextmanager
def throwaway_scope(session: Any) -> Iterator[None]:
    """Whatever happens inside (a failed probe, Ctrl-C, a defect), the throwaway objects are destroyed on the way out.
    A process killed outright leaves them labelled: the next check removes them first."""
    try:
        yield
    finally:
        remove_throwaways(session)


def _keygen_probe(session: Any, spec: EcKey | RsaKey, *, backup: bool, ceremonies: str,
                  impact: str) -> tuple[Probe, str | None]:
    """Generate a throwaway key pair through the ceremonies' own code; (probe, its label or None)."""
    kind = "backup" if backup else "key"
    label = _throwaway_label(f"{kind}-{spec_name(spec)}")
    what = (f"generate an {spec.describe()} key pair " + ("extractable only under a trusted key (CKA_WRAP_WITH_TRUSTED)"
                                                          if backup else "never extractable") +
            ", read its attributes back")
    pid = f"object.{'backup-keygen' if backup else 'keygen'}.{spec_name(spec)}"
    try:
        ev = generate_key(session, spec, label, backup=backup,
                          key_id=THROWAWAY_ID + random_bytes(session, 16 - len(THROWAWAY_ID)))
    except CeremonyError as exc:
        return Probe(pid, what, "fail", str(exc), impact, ceremonies), None
    flags = (f"CKA_SENSITIVE {ev.sensitive}, CKA_ALWAYS_SENSITIVE {ev.always_sensitive}, CKA_EXTRACTABLE "
             f"{ev.extractable}, CKA_NEVER_EXTRACTABLE {ev.never_extractable}, CKA_WRAP_WITH_TRUSTED "
             f"{ev.wrap_with_trusted}, CKA_LOCAL {ev.local}, CKA_SIGN {ev.sign}, CKA_DECRYPT {ev.decrypt}")
    return Probe(pid, what, "pass", f"the token reports {flags}; no known weakness (badkeys)", impact,
                 ceremonies), label


def _verify(public: Any, signature: bytes, message: bytes, algorithm: hashes.HashAlgorithm) -> None:
    """cryptography's verification of a signature made the way the suite makes it (InvalidSignature if not)."""
    if isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(signature, message, ec.ECDSA(algorithm))
    elif isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, message, padding.PKCS1v15(), algorithm)
    else:
        raise InvalidSignature


def _sign_probes(session: Any, spec: EcKey | RsaKey, label: str, ceremonies: str, impact: str,
                 offered: set[int]) -> list[Probe]:
    """Sign as the suite signs and verify with cryptography; try the other ways as information."""
    message = b"hsm.check " + secrets.token_bytes(16)
    key = signing_key(session, label)
    public = key.public_key()
    algorithm = hash_for(public)
    probes = []
    name = spec_name(spec)
    what = f"sign with {spec.describe()} as the suite does, verify"
    try:
        signature = key.sign(message, ec.ECDSA(algorithm)) if isinstance(key, ec.EllipticCurvePrivateKey) \
            else key.sign(message, padding.PKCS1v15(), algorithm)
        _verify(public, signature, message, algorithm)
        how = (f"CKM_ECDSA on a {algorithm.name.upper()} digest computed by the host" if isinstance(spec, EcKey)
               else "CKM_SHA256_RSA_PKCS (hashed in the token)")
        probes.append(Probe(f"object.sign.{name}", what, "pass", f"{how}: the signature verifies (cryptography)",
                            impact, ceremonies))
    except (CeremonyError, p11e.PKCS11Error) as exc:
        probes.append(Probe(f"object.sign.{name}", what, "fail", f"{type(exc).__name__}: {exc}", impact, ceremonies))
    except InvalidSignature:
        probes.append(Probe(f"object.sign.{name}", what, "fail", "the token's signature does not verify", impact,
                            ceremonies))
    digest = hashes.Hash(algorithm)
    digest.update(message)
    hashed = digest.finalize()
    if isinstance(spec, EcKey):
        alt = Mechanism.ECDSA_SHA384 if algorithm.name == "sha384" else Mechanism.ECDSA_SHA256
        alt_what, data = f"in-token hashing ({mechanism_name(alt)})", message
    else:
        alt, alt_what = Mechanism.RSA_PKCS, "host hashing (CKM_RSA_PKCS on a DigestInfo)"
        data = bytes.fromhex("3031300d060960864801650304020105000420") + hashed
    pid = f"object.sign-alternative.{name}"
    if alt not in offered:
        probes.append(Probe(pid, f"sign with {spec.describe()}, {alt_what}", "info",
                            f"{mechanism_name(alt)} not offered: the suite does not need it", "", ceremonies, False))
        return probes
    try:
        raw = bytes(key.p11_object.sign(data, mechanism=alt))
        if isinstance(spec, EcKey):
            half = len(raw) // 2
            raw = utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))
        _verify(public, raw, message, algorithm)
        probes.append(Probe(pid, f"sign with {spec.describe()}, {alt_what}", "pass",
                            "the signature verifies (another way the module can sign; the suite does not need it)",
                            "", ceremonies, False))
    except (p11e.PKCS11Error, InvalidSignature, ValueError) as exc:  # information only: reported, never refuses
        probes.append(Probe(pid, f"sign with {spec.describe()}, {alt_what}", "fail",
                            f"{type(exc).__name__}: the module lists it but it does not work", "", ceremonies, False))
    return probes


def _not_probed(pid: str, what: str, after: str, impact: str, ceremonies: str) -> Probe:
    """A probe that needs the key pair a failed probe could not make: listed, failed, and saying why it did not run."""
    return Probe(pid, what, "fail", f"not probed: it needs the key pair that {after} could not generate", impact,
                 ceremonies)


def recovered_private_key(kek_value: bytes, wrapped: bytes) -> Any | None:
    """The private key inside ``wrapped`` when the host can unwrap it with ``kek_value`` (RFC 5649, or RFC 3394 over
    PKCS#7 padding as softokn does), else None: what shows that a wrap the token should have refused let the key out.
    """
    candidates = []
    with contextlib.suppress(InvalidUnwrap, ValueError):
        candidates.append(aes_key_unwrap_with_padding(kek_value, wrapped))
    with contextlib.suppress(InvalidUnwrap, ValueError):
        raw = aes_key_unwrap(kek_value, wrapped)
        candidates += [raw, raw[:-raw[-1]]] if raw and 0 < raw[-1] <= 8 else [raw]
    for der in candidates:
        with contextlib.suppress(ValueError, TypeError):
            return serialization.load_der_private_key(der, password=None)
    return None


def _wrap_refused_probe(session: Any, label: str, pid: str, what: str, why: str, impact: str,
                        ceremonies: str) -> Probe:
    """Try to wrap the private key labelled ``label`` under an AES key this session makes (untrusted, its value known
    to the host): the token must refuse. When it does not, the host unwraps the result and compares the key it finds
    with the token's public key, so that the failure says whether the private key actually came out."""
    kek_value = secrets.token_bytes(32)
    kek = import_wrapping_key(session, kek_value, _throwaway_label("kek"), token=False, trusted=False)
    priv = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
    try:
        wrapped = bytes(kek.wrap_key(priv, mechanism=Mechanism.AES_KEY_WRAP_PAD))
    except p11e.PKCS11Error as exc:
        return Probe(pid, what, "pass", f"the token refused ({type(exc).__name__})", impact, ceremonies)
    found = recovered_private_key(kek_value, wrapped)
    public = signing_key(session, label).public_key()
    if found is not None and _public_numbers(found.public_key()) == _public_numbers(public):
        out = (f"the host unwrapped the {len(wrapped)} bytes and holds the private key in the clear (its public key "
               "is the token's)")
    else:
        out = f"{len(wrapped)} bytes came out (the host could not read a private key in them)"
    return Probe(pid, what, "fail", f"the token wrapped it under an untrusted key: {out}: {why}", impact, ceremonies)


def _public_numbers(public: Any) -> Any:
    return public.public_numbers() if isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey) else None


def _pkcs7(data: bytes, block: int = 8) -> bytes:
    n = block - len(data) % block
    return data + bytes([n]) * n


def rfc5649_probe(session: Any, required: bool, ceremonies: str) -> Probe:
    """Wrap a known AES-256 key under a known key with CKM_AES_KEY_WRAP_PAD; compare with RFC 5649."""
    what = "CKM_AES_KEY_WRAP_PAD is RFC 5649 (a known key wrapped, compared with cryptography's)"
    impact = ("key backups made on this module cannot be restored on an RFC 5649 module, nor the reverse"
              if required else "")
    kek_value, target_value = secrets.token_bytes(32), secrets.token_bytes(32)
    try:
        kek = import_wrapping_key(session, kek_value, _throwaway_label("kek"), token=False, trusted=False)
        target = session.create_object({
            Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES, Attribute.VALUE: target_value,
            Attribute.TOKEN: False, Attribute.PRIVATE: False, Attribute.LABEL: _throwaway_label("target"),
            Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True, Attribute.ENCRYPT: False,
            Attribute.DECRYPT: False, Attribute.WRAP: False, Attribute.UNWRAP: False})
        wrapped = bytes(kek.wrap_key(target, mechanism=Mechanism.AES_KEY_WRAP_PAD))
    except (CeremonyError, p11e.PKCS11Error) as exc:
        return Probe("object.wrap.rfc5649", what, "fail" if required else "info",
                     f"the token refused: {type(exc).__name__}: {exc}", impact, ceremonies, required)
    expected = aes_key_wrap_with_padding(kek_value, target_value)
    if wrapped == expected:
        return Probe("object.wrap.rfc5649", what, "pass", f"RFC 5649: {len(wrapped)} bytes, identical to "
                     "aes_key_wrap_with_padding", impact, ceremonies, required)
    if wrapped == aes_key_wrap(kek_value, _pkcs7(target_value)):
        found = (f"PKCS#7 padding + RFC 3394 key wrap ({len(wrapped)} bytes for a 32-byte key, RFC 5649 gives "
                 f"{len(expected)}), as NSS softokn does")
    else:
        found = f"an unknown algorithm ({len(wrapped)} bytes; RFC 5649 gives {len(expected)})"
    return Probe("object.wrap.rfc5649", what, "fail", f"not RFC 5649: {found}", impact, ceremonies, required)


def random_probe(session: Any) -> Probe:
    what = "draw random bytes (C_GenerateRandom)"
    impact = "every ceremony: key identifiers, serial numbers and backup secrets come from the token"
    try:
        a, b = random_bytes(session, 32), random_bytes(session, 32)
    except (CeremonyError, p11e.PKCS11Error) as exc:
        return Probe("object.random", what, "fail", f"{type(exc).__name__}: {exc}", impact, "every ceremony")
    if a == b or len(set(a)) < 8:
        return Probe("object.random", what, "fail", "two draws of 32 bytes are equal or nearly constant", impact,
                     "every ceremony")
    return Probe("object.random", what, "pass", "two draws of 32 bytes, distinct", impact, "every ceremony")


def active_probes(session: Any, ca: CA, offered: set[int]) -> list[Probe]:
    """The probes with throwaway objects on a logged-in read-write session; every object is destroyed."""
    probes: list[Probe] = []
    keygen_ceremony = ROOT_KEY if ca.role == "root" else SUB_KEY
    leftovers = [_label_of(o) for o in throwaway_objects(session)]
    if leftovers:
        stuck = remove_throwaways(session)
        probes.append(Probe("object.leftovers", "objects an interrupted check left", "fail" if stuck else "pass",
                            f"removed {len(leftovers) - len(stuck)}: {', '.join(sorted(set(leftovers)))}"
                            + (f"; could not remove {', '.join(stuck)}" if stuck else ""),
                            "the root key ceremony needs an empty token", keygen_ceremony))
    with throwaway_scope(session):
        probes.append(random_probe(session))
        specs = {spec_name(s): s for s in (ca.key, SEALING_KEY)}
        for name, spec in specs.items():
            uses = _merge([Capability(name, "", None, MechanismFlag(0), None, c.ceremonies, "")
                           for c in capabilities(ca) if c.id.endswith(f".{name}")])[0].used_by()
            impact = f"no {spec.describe()} key can be generated or used as the ceremonies need"
            probe, label = _keygen_probe(session, spec, backup=False, ceremonies=uses, impact=impact)
            probes.append(probe)
            confined = ("the CA key would not be confined to the token: anyone with the user PIN could carry it "
                        "off; a production ceremony is refused on such a module")
            if label is None:
                probes += [_not_probed(f"object.sign.{name}", f"sign with {spec.describe()} as the suite does, "
                                       "verify", probe.id, impact, uses),
                           _not_probed(f"object.non-extractable.{name}", "a never-extractable key cannot be wrapped",
                                       probe.id, confined, uses)]
                continue
            probes += _sign_probes(session, spec, label, uses, impact, offered)
            probes.append(_wrap_refused_probe(
                session, label, f"object.non-extractable.{name}", "a never-extractable key cannot be wrapped",
                "a CA key can leave the token", confined, uses))
        if ca.backup.mode == "wrapped":
            impact = "the CA key cannot be backed up under a quorum-held trusted key"
            probe, label = _keygen_probe(session, ca.key, backup=True, ceremonies=f"{keygen_ceremony}, {BACKUP}",
                                         impact=impact)
            probes.append(probe)
            what = "a CKA_WRAP_WITH_TRUSTED key cannot be wrapped under an untrusted key"
            if label is None:
                probes.append(_not_probed("object.wrap-with-trusted", what, probe.id, impact, BACKUP))
            else:
                probes.append(_wrap_refused_probe(
                    session, label, "object.wrap-with-trusted", what,
                    "one Crypto Officer could export the CA key without the quorum's trusted key", impact, BACKUP))
        probes.append(rfc5649_probe(session, ca.backup.mode == "wrapped", f"{BACKUP}, {RESTORE}"))
    left = [_label_of(o) for o in throwaway_objects(session)]
    probes.append(Probe("object.cleanup", "every throwaway object destroyed", "fail" if left else "pass",
                        f"still on the token: {', '.join(left)}" if left else
                        f"no object labelled {THROWAWAY_LABEL}* is left on the token",
                        ("the root key ceremony needs an empty token" if ca.role == "root" else
                         "the key ceremony would find objects nobody made for it")
                        + "; remove them with pkcs11-tool --delete-object", keygen_ceremony))
    return probes


# --- the report --------------------------------------------------------------------------------------------------


@dataclass
class TokenReport:
    ca: str
    description: dict[str, Any]
    mechanisms: list[str]
    probes: list[Probe] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(p.failed for p in self.probes)

    def as_dict(self) -> dict[str, Any]:
        return {"ca": self.ca, "ok": self.ok, **self.description, "mechanisms": self.mechanisms,
                "probes": [p.as_dict() for p in self.probes]}


@dataclass
class CheckReport:
    definition: str
    definition_sha256: str
    environment: str
    active: bool
    tokens: list[TokenReport] = field(default_factory=list)
    generated: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tokens)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "hsm-check", "version": 1, "generated": self.generated, "definition": self.definition,
                "definition_sha256": self.definition_sha256, "environment": self.environment,
                "mode": "active (throwaway objects)" if self.active else "passive (mechanism lists only)",
                "weak_key_checks": blocklist_state(), "ok": self.ok, "tokens": [t.as_dict() for t in self.tokens]}


def check_token(ca_name: str, ca: CA, lib: Any, token: Any, session: Any | None) -> TokenReport:
    """The report of one CA's token: its description, the passive probe and, with ``session``, the active one."""
    try:
        offered = mechanism_list(token.slot)
    except p11e.PKCS11Error:
        offered = set()
    report = TokenReport(ca_name, describe_token(ca.hsm.module, lib, token), sorted(map(mechanism_name, offered)))
    report.probes = probe_capabilities(token, capabilities(ca))
    if session is None:
        report.probes += [limit.probe for limit in known_limits(token, ca_name, ca)]
    else:
        report.probes += active_probes(session, ca, offered)
    return report


def selected_cas(defn: LoadedDefinition, ca_name: str | None) -> dict[str, CA]:
    if ca_name is None:
        return dict(defn.model.cas)
    if ca_name not in defn.model.cas:
        raise HsmError(f"{defn.path}: cas.{ca_name}: no such CA (defined: {', '.join(defn.model.cas)})")
    return {ca_name: defn.model.cas[ca_name]}


def run_check(defn: LoadedDefinition, ca_name: str | None = None, *, pin_file: str | None = None,
              interactive: bool = True, active: bool = True) -> CheckReport:
    """Check the token of each selected CA (all of them without ``ca_name``). ``active`` logs in read-write and
    uses throwaway objects; otherwise only the lists are read and nobody logs in."""
    cas = selected_cas(defn, ca_name)
    if pin_file and len(cas) > 1:
        raise HsmError(f"--pin-file holds the PIN of one token; with it, name the CA with --ca (one of: "
                       f"{', '.join(cas)})")
    report = CheckReport(str(defn.path), defn.sha256, defn.model.environment, active)
    for name, ca in cas.items():
        lib = load_module(ca.hsm.module)
        token = find_token(lib, ca.hsm.token)
        if not active:
            report.tokens.append(check_token(name, ca, lib, token, None))
            continue
        with open_session(ca.hsm, pin_source_for(ca.hsm, pin_file, interactive), rw=True) as session:
            report.tokens.append(check_token(name, ca, lib, token, session))
    return report


# --- rendering ---------------------------------------------------------------------------------------------------


def table_rows(report: CheckReport) -> Iterator[tuple[str, str, str, str, str]]:
    """(CA, probe, result, detail, if it fails) for every probe, in the order they ran."""
    for t in report.tokens:
        for p in t.probes:
            yield t.ca, p.what, p.status.upper() if p.status == "fail" and p.required else p.status, \
                p.detail, (f"{p.impact} ({p.ceremonies})" if p.impact and p.status == "fail" else p.ceremonies)


def render_html(report: CheckReport) -> str:
    """A self-contained HTML report; every value escaped (data is never markup)."""
    e = html.escape
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>HSM acceptance check — "
             f"{e(report.environment)}</title><style>body{{font-family:sans-serif}}table{{border-collapse:collapse}}"
             "td,th{border:1px solid #999;padding:4px;vertical-align:top}.fail{background:#fdd}.pass{background:#dfd}"
             "</style></head><body>",
             f"<h1>HSM acceptance check: {'PASSED' if report.ok else 'FAILED'}</h1>",
             f"<p>Definition {e(report.definition)} (SHA-256 {e(report.definition_sha256)}), environment "
             f"{e(report.environment)}, {e(report.generated)}; {'active' if report.active else 'passive'} probe.</p>",
             f"<p>Weak-key checks (every generated key, every CSR key): {e(blocklist_state())}</p>"]
    for t in report.tokens:
        tok, mod = t.description["token"], t.description["module"]
        parts.append(f"<h2>CA {e(t.ca)}: {'passed' if t.ok else 'FAILED'}</h2><table>")
        for key, value in [*(("module " + k, v) for k, v in mod.items()), *(("token " + k, v) for k, v in tok.items())]:
            parts.append(f"<tr><th>{e(key)}</th><td>{e(str(value))}</td></tr>")
        parts.append("</table><table><tr><th>probe</th><th>result</th><th>detail</th><th>if it fails</th></tr>")
        for p in t.probes:
            parts.append(f"<tr class=\"{e(p.status)}\"><td>{e(p.id)}<br>{e(p.what)}</td><td>{e(p.status)}"
                         f"{'' if p.required else ' (not required)'}</td><td>{e(p.detail)}</td>"
                         f"<td>{e(p.impact)} {e('(' + p.ceremonies + ')' if p.ceremonies else '')}</td></tr>")
        parts.append(f"</table><p>Mechanisms listed: {e(', '.join(t.mechanisms))}</p>")
    parts.append("</body></html>\n")
    return "".join(parts)
