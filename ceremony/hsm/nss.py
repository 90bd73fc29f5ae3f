"""NSS softokn, the second PKCS#11 implementation: what it needs at initialisation, throwaway tokens, and what it
cannot do for this suite.

Softokn (Debian's ``libnss3``) is a PKCS#11 module whose tokens are NSS databases (``cert9.db``/``key4.db`` in a
directory). It refuses ``C_Initialize(NULL)``: its configuration string, ``hsm.module_config`` in the definition,
names the databases (``configdir='sql:DIR'``, or one ``tokens=<0xID=[configdir=... tokenDescription=LABEL]>``
entry per token, the form used here so that every token has its own label). The string holds no PIN.

A database's password is the token's user PIN. A new database has none and its token is not initialised
(no CKF_TOKEN_INITIALIZED); the Security Officer logs in with an empty PIN exactly once, to set the user PIN
(C_InitPIN), which is what ``certutil -N -d sql:DIR`` does too. From then on softokn has no Security Officer:
C_Login(CKU_SO) returns CKR_USER_TYPE_INVALID. Throwaway tokens are made that way here, through PKCS#11 in this
process, so their PINs never reach a command line or a file.

What this suite needs and softokn 3.87 does not do (each found by running it; docs/hsm.md):

- it does not enforce CKA_WRAP_WITH_TRUSTED: a key marked so wraps under any AES key any user creates, so a key
  generated extractable for a wrapped backup could be carried off by one person; and it has no Security Officer
  to mark a wrapping key trusted. Key backup (``backup.mode: wrapped``) is refused on it.
- its CKM_AES_KEY_WRAP_PAD is PKCS#7 padding + RFC 3394, not RFC 5649 (a 32-byte key wraps to 48 bytes, not
  40), so a SoftHSM backup does not unwrap on it; its CKM_AES_KEY_WRAP_KWP fails with CKR_BUFFER_TOO_SMALL through
  python-pkcs11. A restore onto it is refused.
- it never sets CKA_LOCAL on a key pair it generates (CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE are right).
- it does not confine a private key to the token: C_WrapKey wraps a CKA_SENSITIVE, CKA_EXTRACTABLE=false private
  key under any AES key the logged-in user creates, and the host unwraps it (``invoke hsm.check`` shows it, probe
  ``object.non-extractable.*``). Anyone with the user PIN can carry a CA key off: softokn is for tests and
  rehearsals, and a production ceremony on it is refused (:data:`KEYS_NOT_CONFINED`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pkcs11 import exceptions as p11e

from ceremony.common.errors import HsmError
from ceremony.hsm.session import load_module, loaded_config, rescan

NSS_MODULE_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libsoftokn3.so",
    "/usr/lib/aarch64-linux-gnu/libsoftokn3.so",
    "/usr/lib64/libsoftokn3.so",
    "/usr/lib/libsoftokn3.so",
)


#: The library manufacturer and description softokn reports (CK_INFO): how the suite recognises it.
NSS_MANUFACTURER = "Mozilla Foundation"


NSS_DESCRIPTION = "NSS Internal Crypto Services"


#: The first slot ID of the token databases a configuration string lists (softokn reserves 1 to 3 for its own).
FIRST_SLOT = 0x10


#: Why softokn cannot hold a key that is to be backed up, said before anything is done.
NO_WRAPPED_BACKUP = ("NSS softokn does not enforce CKA_WRAP_WITH_TRUSTED (a key marked so wraps under any AES key "
                     "any logged-in user creates) and has no Security Officer to mark a wrapping key trusted "
                     "(C_Login as SO: CKR_USER_TYPE_INVALID once the database has a password); a key backed up "
                     "under M-of-N custody cannot be protected on it")


NO_SECURITY_OFFICER = ("NSS softokn has no Security Officer once the database has a password (C_Login as SO: "
                       "CKR_USER_TYPE_INVALID); its only role is the user's")


#: Why a production ceremony is refused on softokn, said by every pre-flight from the token's identity (the active
#: probe of ``invoke hsm.check`` proves it on the token at hand).
KEYS_NOT_CONFINED = ("NSS softokn wraps a private key marked CKA_SENSITIVE and CKA_EXTRACTABLE false under any AES key "
                     "the logged-in user creates (C_WrapKey is not refused), so the key comes out of the token in "
                     "the clear to anyone holding the user PIN")


NO_CKA_LOCAL = ("NSS softokn never sets CKA_LOCAL on a key pair it generates; CKA_ALWAYS_SENSITIVE and "
                "CKA_NEVER_EXTRACTABLE show that the key never left it")


_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")


def nss_module() -> str:
    for path in NSS_MODULE_CANDIDATES:
        if os.path.isfile(path):
            return path
    raise HsmError("NSS softokn is not installed (libsoftokn3.so not found); run scripts/bootstrap.sh (libnss3)")


def is_softokn(lib: Any) -> bool:
    """Whether a loaded module is NSS softokn (by the CK_INFO it reports, not by its file name)."""
    return str(lib.manufacturer_id).strip() == NSS_MANUFACTURER and \
        str(lib.library_description).strip().startswith(NSS_DESCRIPTION)


def config_string(databases: dict[str, Path]) -> str:
    """Softokn's configuration string opening each database of ``databases`` (label -> directory) as one token."""
    if not databases:
        raise HsmError("an NSS configuration string needs at least one token database")
    for label, directory in databases.items():
        if not _LABEL.match(label):
            raise HsmError(f"token label {label!r} cannot be an NSS token description: 1 to 32 of A-Z a-z 0-9 . _ -")
        if any(c in str(directory) for c in "'[]<> \n"):
            raise HsmError(f"{directory}: an NSS database directory without quotes, brackets or spaces in its path")
    tokens = " ".join(f"{FIRST_SLOT + i:#x}=[configdir='sql:{directory}' tokenDescription='{label}' "
                      "certPrefix='' keyPrefix='' flags=optimizeSpace]"
                      for i, (label, directory) in enumerate(databases.items()))
    first = next(iter(databases.values()))
    return (f"configdir='sql:{first}' certPrefix='' keyPrefix='' secmod='secmod.db' flags=optimizeSpace "
            f"tokens=<{tokens}>")


@dataclass
class NssTokens:
    """The throwaway softokn tokens of one process (a rehearsal, a test worker): one database directory each
    under ``directory``, all opened by one configuration string (a module is initialised once per process)."""

    directory: Path
    module: str = field(default_factory=nss_module)
    databases: dict[str, Path] = field(default_factory=dict)

    def config(self) -> str:
        return config_string(self.databases)

    initialised: set[str] = field(default_factory=set)

    def reserve(self, labels: list[str]) -> str:
        """Open databases for ``labels`` now, without a PIN (their tokens are not initialised yet), so that later
        :meth:`add` calls for them need no re-initialisation: one configuration string for the whole process, which
        every definition written meanwhile can carry. Returns that string."""
        for label in labels:
            if label in self.databases:
                raise HsmError(f"an NSS token labelled {label!r} exists already")
            db = self.directory / f"token-{len(self.databases) + 1}"
            db.mkdir(parents=True, mode=0o700)
            self.databases[label] = db.resolve()
        config = self.config()
        if loaded_config(self.module) is None:
            load_module(self.module, config)
        else:
            rescan(self.module, config)
        return config

    def add(self, label: str, user_pin: str) -> str:
        """A token labelled ``label`` with user PIN ``user_pin`` (reserved before, or opened now: then the module is
        re-initialised and open sessions end); returns the configuration string that opens it and the others."""
        if label in self.initialised:
            raise HsmError(f"an NSS token labelled {label!r} exists already")
        if label not in self.databases:
            try:
                self.reserve([label])
            except BaseException:
                self.databases.pop(label, None)
                raise
        config = self.config()
        init_user_pin(load_module(self.module, config), label, user_pin)
        self.initialised.add(label)
        return config


def init_user_pin(lib: Any, label: str, user_pin: str) -> None:
    """Set the first password of a new database (softokn's one Security Officer login, with an empty PIN)."""
    tokens = [t for t in lib.get_tokens() if str(t.label).strip() == label]
    if len(tokens) != 1:
        raise HsmError(f"softokn opened {len(tokens)} tokens labelled {label!r}, expected one")
    try:
        with tokens[0].open(rw=True, so_pin="") as so_session:
            so_session.init_pin(user_pin)
        with tokens[0].open(rw=True, user_pin=user_pin):
            pass
    except p11e.PKCS11Error as exc:
        raise HsmError(f"softokn could not set the user PIN of the new token {label!r}: {type(exc).__name__}") \
            from None


def softokn_token(manufacturer: Any, model: Any) -> bool:
    """Whether a token is one of softokn's, by its CK_TOKEN_INFO manufacturer and model (as token evidence records
    them): no login and no module handle needed, so the refusals below come before anything is done."""
    return str(manufacturer).strip() == NSS_MANUFACTURER and str(model).strip().startswith("NSS")


def softokn_session(session: Any) -> bool:
    token = session.token
    return softokn_token(token.manufacturer_id, token.model)


#: What the known-answer test of :func:`ceremony.hsm.wrapping.wrap_algorithm` finds on softokn 3.87 (repeated
#: here so that a restore is refused from the token's identity, before any login or object).
SOFTOKN_WRAP_PAD = "PKCS#7 padding to 8 bytes, then RFC 3394 AES key wrap (not RFC 5649)"
