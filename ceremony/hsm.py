"""PKCS#11 access: load a module, find a token, log in, find keys, describe the equipment.

Works with any PKCS#11 module; the module path is configuration. Every failure becomes an
:class:`~ceremony.errors.HsmError` with one clear message. PINs are passed straight to the
library and never formatted into any message.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pkcs11
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11e

from .definition import Hsm, TokenRef
from .errors import HsmError
from .pins import PinSource, get_pin

_LIBS: dict[str, pkcs11.lib] = {}


def load_module(path: str) -> pkcs11.lib:
    """Load (once per process) the PKCS#11 module at ``path``."""
    real = os.path.realpath(path)
    if real in _LIBS:
        return _LIBS[real]
    if not os.path.isfile(real):
        raise HsmError(f"PKCS#11 module not found: {path}")
    try:
        lib = pkcs11.lib(real)
    except (p11e.PKCS11Error, OSError) as exc:
        raise HsmError(f"PKCS#11 module {path} could not be loaded: {exc}") from None
    _LIBS[real] = lib
    return lib


def rescan(path: str) -> None:
    """Re-initialise a module so it sees tokens created since it was loaded (SoftHSM scans once)."""
    real = os.path.realpath(path)
    if real in _LIBS:
        _LIBS[real].reinitialize()


def module_sha256(path: str) -> str:
    return hashlib.sha256(Path(os.path.realpath(path)).read_bytes()).hexdigest()


def parse_pkcs11_uri(uri: str) -> dict[str, str]:
    """The path attributes of an RFC 7512 URI (``token``, ``serial``, ``object``, ...).

    Query attributes such as ``pin-value`` are deliberately rejected: a PIN in a URI would end
    up in the definition file.
    """
    if not uri.startswith("pkcs11:"):
        raise HsmError(f"not a PKCS#11 URI (RFC 7512): {uri!r}")
    body = uri[len("pkcs11:"):]
    path, _, query = body.partition("?")
    if "pin-value" in query:
        raise HsmError("a PKCS#11 URI must not carry pin-value; PINs come from the environment, "
                       "a 0600 file or a prompt")
    attrs: dict[str, str] = {}
    for part in filter(None, path.split(";")):
        name, sep, value = part.partition("=")
        if not sep:
            raise HsmError(f"malformed PKCS#11 URI attribute {part!r} in {uri!r}")
        attrs[name] = unquote(value)
    return attrs


def _token_matches(token: Any, attrs: dict[str, str]) -> bool:
    checks = {
        "token": token.label,
        "serial": token.serial.decode("ascii", "replace").strip() if isinstance(token.serial, bytes)
        else str(token.serial),
        "manufacturer": token.manufacturer_id,
        "model": token.model,
    }
    return all(checks[k] == v for k, v in attrs.items() if k in checks)


def find_token(lib: pkcs11.lib, ref: TokenRef) -> Any:
    """Exactly one token matching ``ref``; clear errors for none or several."""
    tokens = list(lib.get_tokens())
    if ref.label is not None:
        found = [t for t in tokens if t.label == ref.label]
    elif ref.serial is not None:
        found = [t for t in tokens if _token_matches(t, {"serial": ref.serial})]
    else:
        found = [t for t in tokens if _token_matches(t, parse_pkcs11_uri(ref.uri or ""))]
    if not found:
        present = ", ".join(repr(t.label) for t in tokens) or "none"
        raise HsmError(f"token not found: {ref.describe()} (tokens present: {present})")
    if len(found) > 1:
        raise HsmError(f"{ref.describe()} matches {len(found)} tokens; use the serial or a PKCS#11 URI")
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


def token_evidence(module_path: str, lib: pkcs11.lib, token: Any) -> TokenEvidence:
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
    who = "Security Officer PIN" if so else "user PIN"
    return PinSource(env=env, file=pin_file, interactive=interactive,
                     prompt=f"{who} for {hsm.token.describe()}")


@contextlib.contextmanager
def open_session(hsm: Hsm, pin: PinSource, rw: bool = True, so: bool = False) -> Iterator[Any]:
    """Open a logged-in session on the token of ``hsm`` (the user, or the Security Officer)."""
    lib = load_module(hsm.module)
    token = find_token(lib, hsm.token)
    secret = get_pin(pin)
    try:
        session = token.open(rw=rw, so_pin=secret) if so else token.open(rw=rw, user_pin=secret)
    except p11e.PinIncorrect:
        raise HsmError(f"wrong PIN for {hsm.token.describe()}") from None
    except p11e.PinLocked:
        raise HsmError(f"the PIN of {hsm.token.describe()} is locked; the Security Officer must unlock it") \
            from None
    except p11e.PKCS11Error as exc:
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


def mechanisms(token: Any) -> list[str]:
    return sorted(str(m).replace("Mechanism.", "") for m in token.slot.get_mechanisms())
