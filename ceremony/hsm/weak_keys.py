"""Known weaknesses of a public key, checked with badkeys before the suite signs anything for it.

The size and curve rules (the definition's, the CSR checks') say which kind of key is acceptable; they cannot
see a key of the right size that is broken all the same: an RSA modulus whose primes are close (Fermat
factorisation), one made by an Infineon chip with the ROCA flaw, one with a small factor or a prime shared with
a published key, one from Debian's broken OpenSSL of 2006–2008 or published somewhere (badkeys' blocklist). A
certificate for such a key, or a CA key that is one, is worthless the day it is signed. So every key the suite
generates (:mod:`ceremony.hsm.keys`, before its first signature) and every key in a CSR it signs
(:mod:`ceremony.x509.csr`, :mod:`ceremony.x509.ee_profiles`) goes through :func:`weak_key_problem`.

It lives in ``hsm/`` because key generation is the lowest layer that needs it (``x509`` may use ``hsm``, never
the reverse).

The blocklist is data that badkeys downloads (``.venv/bin/badkeys --update-bl``) into its cache
(``$XDG_CACHE_HOME/badkeys`` or ``~/.cache/badkeys``); the suite vendors none of it. When the data is installed
it is checked; when it is not, the checks that need no data still run, and :func:`blocklist_state` says what is
missing so that the pre-flight and ``invoke hsm.check`` can show it. badkeys ends the process (``sys.exit``)
when asked for a blocklist it does not have, so that check is only asked for when its files are there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import badkeys  # type: ignore[import-untyped]  # ships no type information
from badkeys.checks import checkall, defaultchecks  # type: ignore[import-untyped]
from cryptography.hazmat.primitives.asymmetric import ec, rsa

#: The command that installs or refreshes badkeys' blocklist (run on a connected machine; copy the cache
#: directory to an air-gapped one).
UPDATE_COMMAND = ".venv/bin/badkeys --update-bl"

_BLOCKLIST_FILES = ("badkeysdata.json", "blocklist.dat")


def blocklist_dir() -> Path:
    """Where badkeys keeps its downloaded blocklist (the rule of badkeys.utils, read from the environment)."""
    cache = os.environ.get("XDG_CACHE_HOME")
    return Path(cache) / "badkeys" if cache else Path.home() / ".cache" / "badkeys"


def blocklist_installed() -> bool:
    return all((blocklist_dir() / name).is_file() for name in _BLOCKLIST_FILES)


def blocklist_state() -> str:
    """One line for the operator: whether the blocklist is checked, and how to install it when it is not."""
    if blocklist_installed():
        return (f"badkeys {badkeys.__version__}: blocklist of known-compromised and Debian weak keys in "
                f"{blocklist_dir()}")
    return (f"badkeys {badkeys.__version__}: blocklist of known-compromised and Debian weak keys NOT installed "
            f"(no {' / '.join(_BLOCKLIST_FILES)} in {blocklist_dir()}): install it with {UPDATE_COMMAND} "
            "on a connected machine and copy that directory; the checks needing no data ran")


def checks_run() -> tuple[str, ...]:
    """The badkeys checks applied to every key: its default checks for RSA and for any key (the suite has no DSA),
    the blocklist only when installed."""
    return tuple(name for name, check in defaultchecks.items() if check["type"] in ("rsa", "all")
                 and (name != "blocklist" or blocklist_installed()))


@dataclass(frozen=True)
class WeakKey:
    """One badkeys check that found the key weak."""

    check: str
    description: str
    subtest: str = ""

    def text(self) -> str:
        return f"badkeys check {self.check!r} ({self.description}{': ' + self.subtest if self.subtest else ''})"


def weak_key_findings(public: Any) -> list[WeakKey]:
    """Every badkeys check that finds ``public`` weak (empty for a key with no known weakness)."""
    checks = checks_run()
    try:
        if isinstance(public, rsa.RSAPublicKey):
            numbers = public.public_numbers()
            results = badkeys.checkrsa(numbers.n, e=numbers.e, checks=checks)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            results = checkall(public.public_numbers().x, checks=checks)
        else:
            results = {}
    except SystemExit:  # badkeys' own exit on unreadable blocklist data
        return [WeakKey("blocklist", f"badkeys could not read its blocklist in {blocklist_dir()}; reinstall it "
                        f"with {UPDATE_COMMAND}")]
    return [WeakKey(name, str(defaultchecks[name]["desc"]), str(found.get("subtest", "") or ""))
            for name, found in results.items()]


def weak_key_problem(public: Any) -> str | None:
    """``None`` for a key with no known weakness, else what the checks found, to go into one refusal."""
    found = weak_key_findings(public)
    if not found:
        return None
    return "a known-weak key: " + "; ".join(w.text() for w in found)
