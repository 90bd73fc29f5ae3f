"""PKCS#11 access: load a module, find a token, log in, find keys, describe the equipment.

Works with any PKCS#11 module; the module path is configuration. Every failure becomes an
:class:`~ceremony.common.errors.HsmError` with one clear message. PINs are passed straight to the
library and never formatted into any message.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pkcs11
from pkcs11 import Attribute, ObjectClass, _pkcs11
from pkcs11 import exceptions as p11e
from pkcs11.constants import TokenFlag

from ceremony.common.errors import HsmError, TokenNotFoundError
from ceremony.definition.model import Hsm, TokenRef, module_config_for, parse_token_uri
from ceremony.hsm.pins import PinSource, SplitPin, get_pin, origin_text, pin_origin, split_pin

#: python-pkcs11's ``lib`` is a Cython class that type checkers see as a function: its handles are typed
#: by this alias.
P11Lib = Any


_LIBS: dict[str, P11Lib] = {}


#: CK_C_INITIALIZE_ARGS.flags: the module may use the operating system's locking (PKCS#11 v2.40 §5.4).
CKF_OS_LOCKING_OK = 0x2


CKR_ARGUMENTS_BAD = 0x7


CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191


#: Names of the return values C_Initialize gives in practice, for the message an operator reads.
_RV_NAMES = {0x5: "CKR_GENERAL_ERROR", 0x6: "CKR_FUNCTION_FAILED", 0x7: "CKR_ARGUMENTS_BAD",
             0x2: "CKR_HOST_MEMORY", 0x30: "CKR_DEVICE_ERROR", 0x191: "CKR_CRYPTOKI_ALREADY_INITIALIZED"}


class _InitializeArgs(ctypes.Structure):
    """CK_C_INITIALIZE_ARGS: no mutex callbacks, OS locking allowed, and the module's configuration string."""

    _fields_ = [("CreateMutex", ctypes.c_void_p), ("DestroyMutex", ctypes.c_void_p),
                ("LockMutex", ctypes.c_void_p), ("UnlockMutex", ctypes.c_void_p),
                ("flags", ctypes.c_ulong), ("pReserved", ctypes.c_void_p)]


class _FunctionListHead(ctypes.Structure):
    """The start of CK_FUNCTION_LIST: the version, then C_Initialize and C_Finalize."""

    _fields_ = [("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte),
                ("C_Initialize", ctypes.c_void_p), ("C_Finalize", ctypes.c_void_p)]


_CK_FUNCTION = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_void_p)


class ModuleInitError(HsmError):
    """C_Initialize refused: ``rv`` is the PKCS#11 return value."""

    def __init__(self, message: str, rv: int) -> None:
        super().__init__(message)
        self.rv = rv


class _ExplicitInit(_pkcs11.lib):
    """python-pkcs11's library handle, initialised with explicit arguments instead of ``C_Initialize(NULL)``.

    python-pkcs11 0.10.1 calls ``C_Initialize(NULL)``, which some modules refuse (NSS softokn: CKR_ARGUMENTS_BAD, it
    needs its configuration string; YubiHSM's module wants OS locking). Its ``initialize`` is a cpdef method, so
    this subclass replaces it: C_Initialize gets CKF_OS_LOCKING_OK and ``pReserved`` = the configuration string,
    through the module's own function list (the same loaded library python-pkcs11 uses).
    """

    #: The configuration string for the next instance: Cython's base ``__cinit__`` takes the constructor's arguments
    #: (the path alone), so the string comes this way (:meth:`load`).
    _pending: str | None = None

    @classmethod
    def load(cls, so: str, config: str | None) -> _ExplicitInit:
        cls._pending = config
        try:
            return cls(so)
        finally:
            cls._pending = None

    def __init__(self, so: str) -> None:
        self.config = self._pending
        self._running = False
        dll = ctypes.CDLL(so)
        head = ctypes.POINTER(_FunctionListHead)()
        rv = dll.C_GetFunctionList(ctypes.byref(head))
        if rv != 0:
            raise ModuleInitError(f"PKCS#11 module {so}: C_GetFunctionList returned {rv:#x}", rv)
        self._dll = dll
        self._initialize = _CK_FUNCTION(head.contents.C_Initialize)
        self._finalize = _CK_FUNCTION(head.contents.C_Finalize)
        super().__init__(so)

    def initialize(self) -> None:
        if self._running:
            return
        reserved = ctypes.create_string_buffer(self.config.encode("utf-8")) if self.config is not None else None
        args = _InitializeArgs(None, None, None, None, CKF_OS_LOCKING_OK,
                               ctypes.cast(reserved, ctypes.c_void_p) if reserved is not None else None)
        rv = self._initialize(ctypes.addressof(args))
        if rv == CKR_CRYPTOKI_ALREADY_INITIALIZED:
            raise ModuleInitError(f"PKCS#11 module {self.so} was already initialised in this process by other code "
                                  "(CKR_CRYPTOKI_ALREADY_INITIALIZED); load it only through the suite", rv)
        if rv != 0:
            raise ModuleInitError(f"C_Initialize of {self.so} failed: {_RV_NAMES.get(rv, 'CKR')} ({rv:#x}); for "
                                  "SoftHSM, check that SOFTHSM2_CONF names a readable configuration", rv)
        self._running = True

    def finalize(self) -> None:
        if self._running:
            self._running = False
            self._finalize(None)

    def reinitialize(self) -> None:
        self.finalize()
        self.initialize()


def load_module(path: str, config: str | None = None) -> P11Lib:
    """Load (once per process) the PKCS#11 module at ``path`` and initialise it with explicit arguments.

    ``config`` is the module's configuration string (``hsm.module_config``); when it is not given, the one the
    definition registered for this module is used (:func:`ceremony.definition.model.module_config_for`), since
    most callers know only the path. A module already loaded with another configuration string is finalised and
    initialised again with the new one (a test or rehearsal that added a token): its open sessions end.
    """
    real = os.path.realpath(path)
    wanted = config if config is not None else module_config_for(real)
    if real in _LIBS:
        lib = _LIBS[real]
        if wanted is not None and wanted != lib.config:
            lib.finalize()
            lib.config = wanted
            _initialise(lib, path)
        return lib
    if not os.path.isfile(real):
        raise HsmError(f"PKCS#11 module not found: {path}")
    try:
        lib = _ExplicitInit.load(real, wanted)
    except ModuleInitError as exc:
        raise _init_error(path, wanted, exc) from None
    except (p11e.PKCS11Error, OSError, AttributeError) as exc:
        raise HsmError(f"PKCS#11 module {path} could not be loaded: {exc}") from None
    _LIBS[real] = lib
    return lib


def _initialise(lib: P11Lib, path: str) -> None:
    try:
        lib.initialize()
    except ModuleInitError as exc:
        raise _init_error(path, lib.config, exc) from None


def _init_error(path: str, config: str | None, exc: ModuleInitError) -> HsmError:
    if exc.rv == CKR_ARGUMENTS_BAD and config is None:
        return HsmError(f"PKCS#11 module {path} refused C_Initialize without a configuration string "
                        "(CKR_ARGUMENTS_BAD): give it as hsm.module_config in the definition (NSS softokn: "
                        "\"configdir='sql:DIR' certPrefix='' keyPrefix='' secmod='secmod.db' flags=\"; docs/hsm.md)")
    if exc.rv == CKR_ARGUMENTS_BAD:
        return HsmError(f"PKCS#11 module {path} refused its configuration string (hsm.module_config) at "
                        "C_Initialize (CKR_ARGUMENTS_BAD): check it against the module's documentation (docs/hsm.md)")
    return HsmError(str(exc))


def loaded_config(path: str) -> str | None:
    """The configuration string the module at ``path`` was initialised with in this process."""
    lib = _LIBS.get(os.path.realpath(path))
    return None if lib is None else lib.config


def rescan(path: str, config: str | None = None) -> None:
    """Re-initialise a module so it sees tokens created since it was loaded (SoftHSM scans once; NSS softokn opens
    the databases its configuration string names, so a new token comes with a new string)."""
    real = os.path.realpath(path)
    if real in _LIBS:
        lib = _LIBS[real]
        lib.finalize()
        if config is not None:
            lib.config = config
        _initialise(lib, path)
    elif config is not None:
        load_module(path, config)


def module_sha256(path: str) -> str:
    return hashlib.sha256(Path(os.path.realpath(path)).read_bytes()).hexdigest()


def parse_pkcs11_uri(uri: str) -> dict[str, str]:
    """The path attributes of an RFC 7512 URI naming a token (``token``, ``serial``, ``model``, ...).

    Query attributes such as ``pin-value`` are deliberately rejected: a PIN in a URI would end up in
    the definition file. So are object attributes and attributes this suite does not match on
    (:func:`ceremony.definition.model.parse_token_uri`): ignored, they would let the URI match any token.
    """
    try:
        return parse_token_uri(uri)
    except ValueError as exc:
        raise HsmError(f"token URI: {exc}") from None


def _text(value: Any) -> str:
    """A PKCS#11 string (blank-padded, sometimes bytes) as an operator reads it."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).rstrip(" \0").strip()


def token_attributes(lib: Any, token: Any) -> dict[str, str]:
    """What each RFC 7512 token attribute is for ``token``, in the form a URI gives it."""
    values = {"token": _text(token.label), "manufacturer": _text(token.manufacturer_id),
              "model": _text(token.model), "serial": _text(token.serial)}
    slot = getattr(token, "slot", None)
    if slot is not None:
        values |= {"slot-id": str(slot.slot_id), "slot-description": _text(slot.slot_description),
                   "slot-manufacturer": _text(slot.manufacturer_id)}
    if lib is not None:
        values |= {"library-manufacturer": _text(lib.manufacturer_id),
                   "library-description": _text(lib.library_description),
                   "library-version": "{}.{}".format(*lib.library_version)}
    return values


def token_mismatches(lib: Any, token: Any, attrs: dict[str, str]) -> list[tuple[str, str, str]]:
    """``(attribute, wanted, the token's value)`` for every attribute of ``attrs`` the token does not have."""
    have = token_attributes(lib, token)
    return [(name, wanted, have.get(name, "")) for name, wanted in attrs.items() if have.get(name) != wanted]


def _token_matches(token: Any, attrs: dict[str, str], lib: Any = None) -> bool:
    return not token_mismatches(lib, token, attrs)


def _initialised(token: Any) -> bool:
    try:
        return bool(token.flags & pkcs11.TokenFlag.TOKEN_INITIALIZED)
    except (AttributeError, TypeError):
        return True


def _not_found(ref: TokenRef, lib: Any, tokens: list[Any], attrs: dict[str, str]) -> TokenNotFoundError:
    """One message: for each token present, the attributes that did not match and what it has instead."""
    present = [t for t in tokens if _initialised(t)]
    blank = len(tokens) - len(present)
    reasons = [", ".join(f"{name}: wanted {wanted!r}, token {_text(t.label)!r} has {has!r}"
                         for name, wanted, has in token_mismatches(lib, t, attrs)) for t in present]
    listing = "; ".join(reasons) if reasons else "no initialised token is present"
    if blank:
        listing += f" ({blank} uninitialised token{'s' if blank > 1 else ''} not listed)"
    module = next((path for path, loaded in _LIBS.items() if loaded is lib), "MODULE")
    if getattr(lib, "config", None) is not None:  # pkcs11-tool cannot give the module its configuration string
        where = ("through p11-kit's proxy with a module file carrying hsm.module_config (docs/hsm.md, pkcs11-tool "
                 "and softokn); the tokens this string opens are named above")
    else:
        where = f"pkcs11-tool --module {module} --list-token-slots"
    return TokenNotFoundError(f"token not found: {ref.describe()}: {listing}. Each token's label, manufacturer, "
                              f"model and serial: {where}")


def find_token(lib: P11Lib, ref: TokenRef) -> Any:
    """Exactly one initialised token matching ``ref``; for none, which attribute failed against each token."""
    tokens = list(lib.get_tokens())
    if ref.label is not None:
        attrs = {"token": ref.label}
    elif ref.serial is not None:
        attrs = {"serial": ref.serial}
    else:
        attrs = parse_pkcs11_uri(ref.uri or "")
    found = [t for t in tokens if _initialised(t) and not token_mismatches(lib, t, attrs)]
    if not found:
        raise _not_found(ref, lib, tokens, attrs)
    if len(found) > 1:
        labels = ", ".join(repr(_text(t.label)) for t in found)
        raise HsmError(f"{ref.describe()} matches {len(found)} tokens ({labels}); use the serial or a PKCS#11 URI "
                       "that tells them apart")
    return found[0]


@dataclass(frozen=True)
class TokenEvidence:
    """What an auditor needs to know about the equipment: recorded in transcripts."""

    module_path: str
    module_sha256: str
    library_description: str
    library_manufacturer: str
    label: str
    serial: str
    model: str
    manufacturer: str
    hardware_version: str
    firmware_version: str

    def as_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


def token_evidence(module_path: str, lib: P11Lib, token: Any) -> TokenEvidence:
    serial = token.serial.decode("ascii", "replace").strip() if isinstance(token.serial, bytes) \
        else str(token.serial)
    return TokenEvidence(
        module_path=os.path.realpath(module_path),
        module_sha256=module_sha256(module_path),
        library_description=lib.library_description,
        library_manufacturer=lib.manufacturer_id,
        label=token.label,
        serial=serial,
        model=token.model,
        manufacturer=token.manufacturer_id,
        hardware_version="{}.{}".format(*token.hardware_version),
        firmware_version="{}.{}".format(*token.firmware_version),
    )


def pin_source_for(hsm: Hsm, pin_file: str | None = None, interactive: bool = True,
                   so: bool = False) -> PinSource:
    env = hsm.so_pin_env if so else hsm.pin_env
    return PinSource(env=env, file=pin_file, interactive=interactive, prompt=hsm.token.describe(), so=so)


class PinRejectedError(HsmError):
    """The token refused the PIN (CKR_PIN_INCORRECT), or the PIN is locked (CKR_PIN_LOCKED): trying the same
    source again would only use up the token's attempts. ``locked`` tells the two apart."""

    def __init__(self, message: str, locked: bool = False) -> None:
        super().__init__(message)
        self.locked = locked


_PIN_FLAGS = {
    False: (("USER_PIN_LOCKED", "the user PIN is LOCKED (CKF_USER_PIN_LOCKED)"),
            ("USER_PIN_FINAL_TRY", "one attempt left: the next wrong PIN locks the token (CKF_USER_PIN_FINAL_TRY)"),
            ("USER_PIN_COUNT_LOW", "a wrong PIN was entered since the last good one (CKF_USER_PIN_COUNT_LOW)")),
    True: (("SO_PIN_LOCKED", "the Security Officer PIN is LOCKED (CKF_SO_PIN_LOCKED)"),
           ("SO_PIN_FINAL_TRY", "one attempt left: the next wrong SO PIN locks it (CKF_SO_PIN_FINAL_TRY)"),
           ("SO_PIN_COUNT_LOW", "a wrong SO PIN was entered since the last good one (CKF_SO_PIN_COUNT_LOW)")),
}


PIN_PROMPTS = 3  # tries at the prompt in one ceremony; the token's own counter is what protects the key


def pin_warnings(lib: Any, ref: TokenRef, so: bool = False) -> list[str]:
    """What the token says about its PIN's remaining attempts (read afresh: the flags change after a failure)."""
    try:
        flags = find_token(lib, ref).flags
    except (HsmError, p11e.PKCS11Error):
        return []
    return [text for name, text in _PIN_FLAGS[so] if getattr(TokenFlag, name) & flags]


@contextlib.contextmanager
def open_session(hsm: Hsm, pin: PinSource, rw: bool = True, so: bool = False,
                 notice: Callable[[str], None] | None = None) -> Iterator[Any]:
    """Open a logged-in session on the token of ``hsm`` (the user, or the Security Officer).

    A PIN typed at the prompt may be typed again after a mistake (up to :data:`PIN_PROMPTS` times), each
    time with the token's remaining-attempts flags shown through ``notice``. A PIN from a variable or a
    file is never retried: the same wrong value would only use up the token's attempts.
    """
    lib = load_module(hsm.module)
    token = find_token(lib, hsm.token)
    split = pin_split(token, "so" if so else "user")
    origin = "parts" if split is not None else pin_origin(pin)
    say = notice or (lambda text: print(text, file=sys.stderr))
    for attempt in range(1, PIN_PROMPTS + 1):
        # A split PIN is combined from its officers' parts (names checked against those signed in); it is never
        # retried: a mistyped part cannot be told from another, and each attempt uses one of the token's tries.
        secret = split_pin(split, pin, pin.signed_in)[0] if split is not None else get_pin(pin)
        try:
            session = token.open(rw=rw, so_pin=secret) if so else token.open(rw=rw, user_pin=secret)
            break
        except p11e.PinIncorrect:
            warnings = pin_warnings(lib, hsm.token, so)
            state = f" The token says: {'; '.join(warnings)}." if warnings else ""
            if origin == "parts":
                assert split is not None
                raise PinRejectedError(f"wrong PIN for {hsm.token.describe()} (combined from the parts of "
                                       f"{', '.join(split.officers)}): one of the parts is not the current one (set "
                                       f"at the token initialisation or at the last PIN change).{state} Each attempt "
                                       "uses up one of the token's tries",
                                       locked=any("LOCKED" in w for w in warnings)) from None
            if origin != "prompt" or attempt == PIN_PROMPTS or any("LOCKED" in w for w in warnings):
                raise PinRejectedError(f"wrong PIN for {hsm.token.describe()} (from {origin_text(pin, origin)}).{state}"
                                       + ("" if origin == "prompt" else " Correct it there before trying again: "
                                          "each attempt uses up one of the token's tries"),
                                       locked=any("LOCKED" in w for w in warnings)) from None
            say(f"wrong PIN for {hsm.token.describe()}.{state} Type it again "
                f"({PIN_PROMPTS - attempt} more tr{'y' if PIN_PROMPTS - attempt == 1 else 'ies'} at this prompt).")
        except p11e.PinLocked:
            raise PinRejectedError(f"the PIN of {hsm.token.describe()} is locked; the Security Officer must unlock it",
                                   locked=True) from None
        except p11e.PKCS11Error as exc:
            if so and "User type invalid" in str(exc):
                raise HsmError(f"{hsm.token.describe()} has no Security Officer login (CKR_USER_TYPE_INVALID): "
                               "NSS softokn has one only until its database has a password; nothing was done") \
                    from None
            raise HsmError(f"cannot open a session on {hsm.token.describe()}: {type(exc).__name__}") from None
        finally:
            del secret
    try:
        yield session
    finally:
        with contextlib.suppress(p11e.PKCS11Error):
            session.close()


def objects_with_label(session: Any, label: str) -> list[Any]:
    return list(session.get_objects({Attribute.LABEL: label}))


def find_private_key(session: Any, label: str) -> Any:
    keys = list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label}))
    if not keys:
        raise HsmError(f"key not found: no private key labelled {label!r} on the token")
    if len(keys) > 1:
        raise HsmError(f"more than one private key labelled {label!r} on the token; refusing to guess")
    return keys[0]


def find_public_key(session: Any, label: str) -> Any:
    keys = list(session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: label}))
    if not keys:
        raise HsmError(f"key not found: no public key labelled {label!r} on the token")
    if len(keys) > 1:
        raise HsmError(f"more than one public key labelled {label!r} on the token; refusing to guess")
    return keys[0]


def random_bytes(session: Any, n: int) -> bytes:
    """``n`` bytes from the token's random generator."""
    data = session.generate_random(n * 8)
    if len(data) != n:
        raise HsmError(f"the token returned {len(data)} random bytes instead of {n}")
    return bytes(data)


#: The CKA_ID of every key pair a rehearsal generates begins with these bytes ("REHEARSAL:" in ASCII, shown by
#: ``pkcs11-tool --list-objects`` as ``ID: 52454845415253414c3a…``): a production ceremony refuses a token that
#: holds one, so an HSM used for a rehearsal is initialised anew before it holds a real key.
REHEARSAL_ID_PREFIX = b"REHEARSAL:"


def key_id(session: Any, rehearsal: bool) -> bytes:
    """A new key pair's CKA_ID: 16 bytes from the token, marked as a rehearsal's when it is one."""
    if rehearsal:
        return REHEARSAL_ID_PREFIX + random_bytes(session, 16 - len(REHEARSAL_ID_PREFIX))
    return random_bytes(session, 16)


def rehearsal_objects(session: Any) -> list[str]:
    """The objects on the token a rehearsal made (label and CKA_ID), as the operator reads them."""
    found = []
    for obj in session.get_objects():
        try:
            ident = bytes(obj[Attribute.ID])
        except (p11e.AttributeTypeInvalid, p11e.AttributeSensitive):
            continue
        if ident.startswith(REHEARSAL_ID_PREFIX):
            try:
                label = str(obj[Attribute.LABEL])
            except (p11e.AttributeTypeInvalid, p11e.AttributeSensitive):
                label = "?"
            found.append(f"{label!r} (CKA_ID {ident.hex()})")
    return sorted(set(found))


def refuse_rehearsal_objects(session: Any, where: str) -> None:
    """A production ceremony never runs on a token a rehearsal used (its keys and PINs were rehearsal material)."""
    found = rehearsal_objects(session)
    if found:
        raise HsmError(f"{where} holds objects of a rehearsal ({', '.join(found)}): a production ceremony never runs "
                       "on a token a rehearsal used; initialise the token anew (witnessed, recorded) and run again")


def mechanisms(token: Any) -> list[str]:
    return sorted(str(m).replace("Mechanism.", "") for m in token.slot.get_mechanisms())


# --- token initialisation: C_InitToken, and the token's record of whose parts make its PINs ----------------------
#: The label of the public data object (CKO_DATA, CKA_PRIVATE false) in which a token initialised by the token
#: initialisation ceremony says whose parts make its PINs, and which transcript-sealing key it was born with. Public:
#: it is read before anyone logs in, to know whom to ask. It holds names and a key hash, never a part or a PIN; a
#: forged record can only make the ceremony ask the wrong people, whose parts then fail at the token's login.
TOKEN_RECORD_LABEL = "ceremony-token-record"


TOKEN_RECORD_APPLICATION = "ceremony-suite"


TOKEN_RECORD_FORMAT = "ceremony-token-record/1"


CKR_PIN_INCORRECT = 0xA0


CKR_PIN_LOCKED = 0xA4


CKR_SESSION_EXISTS = 0xB6


class _FunctionListToInitToken(ctypes.Structure):
    """CK_FUNCTION_LIST up to C_InitToken, the tenth function (PKCS#11 v2.40 §5.1): python-pkcs11 0.10.1 has no
    binding for it, so it is called through the module's own function list, as C_Initialize is."""

    _fields_ = [("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte),
                *((name, ctypes.c_void_p) for name in (
                    "C_Initialize", "C_Finalize", "C_GetInfo", "C_GetFunctionList", "C_GetSlotList", "C_GetSlotInfo",
                    "C_GetTokenInfo", "C_GetMechanismList", "C_GetMechanismInfo", "C_InitToken"))]


_CK_INIT_TOKEN = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)


def init_token(lib: P11Lib, slot_id: int, so_pin: str, label: str) -> None:
    """C_InitToken on slot ``slot_id``: a blank token gets ``label`` and ``so_pin``; an initialised one (its current
    SO PIN given) is erased, every object destroyed, its user PIN cleared. The PIN goes straight to the module."""
    encoded = label.encode("utf-8")
    if len(encoded) > 32:
        raise HsmError(f"token label {label!r} is longer than 32 bytes (CK_TOKEN_INFO.label)")
    head = ctypes.POINTER(_FunctionListToInitToken)()
    rv = lib._dll.C_GetFunctionList(ctypes.byref(head))
    if rv != 0:
        raise HsmError(f"PKCS#11 module {lib.so}: C_GetFunctionList returned {rv:#x}")
    call = _CK_INIT_TOKEN(head.contents.C_InitToken)
    secret = so_pin.encode("utf-8")
    rv = call(slot_id, secret, len(secret), encoded.ljust(32, b" "))
    del secret
    if rv == CKR_PIN_INCORRECT:
        raise PinRejectedError(f"slot {slot_id}: C_InitToken refused the Security Officer PIN (CKR_PIN_INCORRECT): "
                               "re-initialising a token takes its current SO PIN; the token is unchanged")
    if rv == CKR_PIN_LOCKED:
        raise PinRejectedError(f"slot {slot_id}: the Security Officer PIN is locked (CKR_PIN_LOCKED); the token is "
                               "unchanged", locked=True)
    if rv == CKR_SESSION_EXISTS:
        raise HsmError(f"slot {slot_id}: a session is open on the token (CKR_SESSION_EXISTS); close every program "
                       "using it; the token is unchanged")
    if rv != 0:
        raise HsmError(f"slot {slot_id}: C_InitToken failed ({rv:#x}); the token is unchanged")


def blank_slots(lib: P11Lib) -> list[Any]:
    """Slots whose token is present but not initialised (SoftHSM keeps one such slot free for the next token)."""
    return [s for s in lib.get_slots(token_present=True) if not _initialised(s.get_token())]


def tokens_labelled(lib: P11Lib, label: str) -> list[Any]:
    """Initialised tokens whose label is ``label``."""
    return [t for t in lib.get_tokens() if _initialised(t) and _text(t.label) == label]


def read_token_record(token: Any) -> dict[str, Any] | None:
    """The token's record (:data:`TOKEN_RECORD_LABEL`), read from a session without login; None when it has none."""
    try:
        with token.open(rw=False) as session:
            found = list(session.get_objects({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: TOKEN_RECORD_LABEL}))
            if len(found) != 1:
                return None
            value = bytes(found[0][Attribute.VALUE])
    except p11e.PKCS11Error:
        return None
    try:
        record = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format") == TOKEN_RECORD_FORMAT else None


def write_token_record(session: Any, record: dict[str, Any]) -> None:
    """Store the record as a public, unmodifiable token object (one per token: an existing one is an error)."""
    if list(session.get_objects({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: TOKEN_RECORD_LABEL})):
        raise HsmError(f"the token already holds a {TOKEN_RECORD_LABEL!r} object")
    session.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True, Attribute.PRIVATE: False,
                           Attribute.MODIFIABLE: False, Attribute.LABEL: TOKEN_RECORD_LABEL,
                           Attribute.APPLICATION: TOKEN_RECORD_APPLICATION,
                           Attribute.VALUE: json.dumps({"format": TOKEN_RECORD_FORMAT, **record},
                                                       sort_keys=True).encode("utf-8")})


def pin_split(token: Any, pin: str) -> SplitPin | None:
    """Whose parts make the ``pin`` (``user`` or ``so``) of ``token``, from its record; None for a single PIN."""
    record = read_token_record(token)
    entry = (record or {}).get(pin)
    if not isinstance(entry, dict) or not isinstance(entry.get("officers"), list) or not entry["officers"]:
        return None
    return SplitPin(pin, _text(token.label), tuple(str(o) for o in entry["officers"]))
