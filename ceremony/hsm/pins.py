"""Where PINs come from: an environment variable, a 0600 file, an interactive prompt, or parts (split knowledge).

A caller that has the PIN in hand (an Ansible task, the rehearsal) gives it with :func:`hold`
under the variable's name: it is read as if it were that variable, but never exported, so no
child process can inherit it (``child_process`` builds every child's environment anyway).

A PIN never comes from YAML or the command line (both end up in shell history, process
listings or version control), and never goes into a message: errors here name the *source*
(variable name, file path), not the value.
"""

from __future__ import annotations

import getpass
import hmac
import os
import stat
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ceremony.common.errors import PinError
from ceremony.common.terminal_text import say


@dataclass(frozen=True)
class PinSource:
    """Describes where to read a PIN; holds no secret itself, so it is safe to log."""

    env: str | None = None
    file: str | None = None
    prompt: str | None = None
    interactive: bool = True
    signed_in: tuple[str, ...] = ()
    """Who signed in with the role that holds the parts of a split PIN (names only; empty without a sign-in, as
    in the CRL job: then the token's record alone says whose parts are asked for)."""
    lang: str = "en"
    """The room's language: the prompts are asked in it (a ceremony sets its terminal's; a job keeps English)."""
    so: bool = False
    """The Security Officer's PIN rather than the user PIN (only the prompt's words depend on it)."""

    def describe(self) -> str:
        parts = []
        if self.file:
            parts.append(f"file {self.file}")
        if self.env:
            parts.append(f"environment variable {self.env}")
        if self.interactive and self.prompt:
            parts.append("prompt")
        return " or ".join(parts) or "nowhere"


def read_pin_file(path: str | Path) -> str:
    """Read a PIN from a file that only its owner can read or write (mode 0600 or stricter)."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise PinError(f"{p}: PIN file not found") from None
    if not stat.S_ISREG(st.st_mode):
        raise PinError(f"{p}: PIN file is not a regular file")
    if st.st_mode & 0o077:
        raise PinError(f"{p}: PIN file has mode {stat.S_IMODE(st.st_mode):04o}; it must be 0600 "
                       "(readable by its owner only)")
    if st.st_uid != os.geteuid():
        raise PinError(f"{p}: PIN file is owned by uid {st.st_uid}, not by the user running the ceremony")
    value = p.read_text(encoding="utf-8").strip("\r\n")
    if not value:
        raise PinError(f"{p}: PIN file is empty")
    return value


#: PINs handed to this process by its caller (an Ansible task's option, a rehearsal's generated
#: PINs), under the variable name the definition gives. They stay in this process's memory: never
#: in ``os.environ``, where every child process would inherit them.
_HELD: dict[str, str] = {}


def hold(name: str, value: str) -> None:
    """Give this process the PIN the definition reads from variable ``name``, without exporting it."""
    if not value:
        raise PinError(f"{name}: an empty PIN was handed over")
    _HELD[name] = value


def release(name: str) -> None:
    """Forget a PIN handed over with :func:`hold` (a rehearsal's tokens are gone)."""
    _HELD.pop(name, None)


def held(name: str | None) -> str | None:
    """The PIN held for variable ``name``, or one the environment gives (an operator's ``export``)."""
    if not name:
        return None
    return _HELD.get(name) or os.environ.get(name) or None


def pin_origin(source: PinSource) -> str:
    """Where :func:`get_pin` will take the PIN from: ``file``, ``env``, ``prompt`` or ``none``."""
    if source.file:
        return "file"
    if held(source.env):
        return "env"
    if source.interactive and source.prompt and sys.stdin is not None and sys.stdin.isatty():
        return "prompt"
    return "none"


def origin_text(source: PinSource, origin: str) -> str:
    """``environment variable X``, ``file F`` or ``the prompt``: said to the room, never the value."""
    return {"file": f"file {source.file}", "env": f"environment variable {source.env}",
            "prompt": "the prompt"}.get(origin, "nowhere")


def get_pin(source: PinSource) -> str:
    """Return the PIN from the first source that provides one."""
    if source.file:
        return read_pin_file(source.file)
    value = held(source.env)
    if value:
        return value
    if source.interactive and source.prompt and sys.stdin is not None and sys.stdin.isatty():
        value = getpass.getpass(say(source.lang, "pin_so_q" if source.so else "pin_user_q", token=source.prompt)
                                + ": ")
        if not value:
            raise PinError(f"no PIN entered for {source.prompt}")
        return value
    raise PinError(f"no PIN available: set {source.describe()}"
                   + ("" if source.env else " (no environment variable configured)"))


# --- split knowledge: a PIN combined from parts that distinct officers enter -----------------------------------
#
# Where the definition sets a quorum (``ceremony.crypto_officer_quorum`` for the user PIN,
# ``ceremony.security_officer_quorum`` for the Security Officer PIN), the token initialisation ceremony sets a PIN
# that nobody knows: each officer of the quorum enters a part of their own choosing, never echoed, and the PIN is a
# one-way derivation of all the parts. A part alone, or any k-1 of them, says nothing about the PIN (HKDF over
# every part), so no one person can activate the token. The token carries, as a public data object, whose parts
# make its PIN (names only): later ceremonies ask those officers again (:mod:`ceremony.hsm.session`).

#: The shortest part an officer may enter: a part is a secret of its own, not a PIN of four digits.
PART_MIN_LENGTH = 8


#: HKDF's ``info``, followed by ``user`` or ``so``: a user PIN and an SO PIN from the same parts differ.
PART_DERIVATION_INFO = b"ceremony-suite token PIN v1 "


#: How the combined PIN is made, as the token's record and the transcript state it (never a part).
PART_DERIVATION = ("HKDF-SHA256 (RFC 5869): input the parts in the listed officers' order, each as UTF-8 preceded "
                   "by its length (4 bytes, big-endian); salt the token label (UTF-8); info 'ceremony-suite token "
                   "PIN v1 user' or '... so'; 16 bytes, written as 32 lower-case hexadecimal digits")


#: The roles whose members hold the parts of each PIN.
PART_ROLES = {"user": "crypto-officer", "so": "security-officer"}


#: The roles as the room reads them (the ``ceremony.transcript.participants`` names: this package sits below it).
PART_ROLE_NAMES = {"user": "Crypto Officer", "so": "HSM Security Officer"}


@dataclass(frozen=True)
class SplitPin:
    """Which PIN of which token is split, and among whom (in the order their parts are combined). No secret."""

    pin: str  # "user" or "so"
    label: str  # the token's label: HKDF's salt
    officers: tuple[str, ...] = ()  # empty while the token is being initialised: the entries name them

    @property
    def role(self) -> str:
        return PART_ROLES[self.pin]

    def describe(self) -> str:
        return f"the {'user' if self.pin == 'user' else 'Security Officer'} PIN of token {self.label!r}"


@dataclass(frozen=True)
class PartEntry:
    """One officer's part as entered. The part is never shown (``repr`` leaves it out) and never stored."""

    officer: str
    part: str = field(repr=False)


def combine_parts(parts: Sequence[str], label: str, pin: str) -> str:
    """The PIN made of ``parts`` (in order) for the token ``label``: see :data:`PART_DERIVATION`.

    Length-prefixing keeps ``("ab", "c")`` and ``("a", "bc")`` apart; the label as salt makes the same parts give
    another PIN on another token; 128 bits in hexadecimal are characters every PKCS#11 module accepts in a PIN
    (SoftHSM takes 4 to 255 bytes; hardware modules commonly 4 or 8 to 64).
    """
    material = b"".join(len(raw).to_bytes(4, "big") + raw for raw in (p.encode("utf-8") for p in parts))
    derived = HKDF(algorithm=hashes.SHA256(), length=16, salt=label.encode("utf-8"),
                   info=PART_DERIVATION_INFO + pin.encode("ascii")).derive(material)
    return derived.hex()


#: Parts handed to this process by its caller (a test, a rehearsal), under the PIN variable's name, as :func:`hold`
#: does for a whole PIN: never in ``os.environ``.
_HELD_PARTS: dict[str, list[PartEntry]] = {}


def hold_parts(name: str, entries: Sequence[tuple[str, str]]) -> None:
    """Give this process the parts of the PIN the definition reads from variable ``name``: (officer, part) pairs
    in the order the officers enter them."""
    _HELD_PARTS[name] = [PartEntry(officer, part) for officer, part in entries]


def release_parts(name: str) -> None:
    _HELD_PARTS.pop(name, None)


def part_variable(name: str, n: int) -> str:
    """The environment variable of the ``n``-th part (1-based) of the PIN read from ``name``: ``NAME_PART_n``."""
    return f"{name}_PART_{n}"


def _person(name: str) -> str:
    """One person whatever the case, accents or spacing of their name (as the sign-in compares names)."""
    text = unicodedata.normalize("NFKD", name)
    return " ".join("".join(c for c in text if not unicodedata.combining(c)).casefold().split())


def same_person(a: str, b: str) -> bool:
    """Whether two names are one person, compared as the sign-in compares them (case, accents and spacing aside):
    a part handed over to a "new" officer who already holds one would leave one person with two parts."""
    return _person(a) == _person(b)


def parts_origin(source: PinSource) -> str:
    """Where the parts come from: ``held`` (this process), ``env`` (``<VAR>_PART_<n>``), ``prompt`` or ``none``."""
    if source.env and source.env in _HELD_PARTS:
        return "held"
    if source.env and os.environ.get(part_variable(source.env, 1)):
        return "env"
    if source.interactive and sys.stdin is not None and sys.stdin.isatty():
        return "prompt"
    return "none"


def _entries(split: SplitPin, source: PinSource, candidates: Sequence[str], quorum: int,
             confirm: bool) -> list[PartEntry]:
    """The entries as given: from this process, the environment, or typed at the prompt (never echoed)."""
    origin = parts_origin(source)
    role = say(source.lang, f"role_{split.pin}")
    if origin == "held":
        return list(_HELD_PARTS[source.env or ""])
    if origin == "env":
        assert source.env is not None
        found = []
        for n, officer in enumerate(candidates[:quorum] if not split.officers else split.officers, start=1):
            value = os.environ.get(part_variable(source.env, n))
            if value:
                found.append(PartEntry(officer, value))
        return found
    if origin == "prompt":
        entries = []
        for n in range(1, quorum + 1):
            if split.officers:
                officer = split.officers[n - 1]
            else:
                pin = say(source.lang, f"pin_{split.pin}", token=repr(split.label))
                officer = input(say(source.lang, "part_who_q", role=role, n=n, k=quorum, pin=pin) + ": ")
            part = getpass.getpass(say(source.lang, "part_q", name=officer.strip(), role=role) + ": ")
            if confirm and part and getpass.getpass(say(source.lang, "part_again_q", name=officer.strip()) + ": ") \
                    != part:
                raise PinError(f"{officer.strip()}: the two entries of the part differ; nothing was done, start the "
                               "step again")
            entries.append(PartEntry(officer.strip(), part))
        return entries
    raise PinError(f"no parts of {split.describe()} available: each {role} types their part at the prompt (a "
                   f"terminal), or the caller hands them over ({part_variable(source.env or 'PIN_VARIABLE', 1)}, "
                   f"{part_variable(source.env or 'PIN_VARIABLE', 2)}, …)")


def split_pin(split: SplitPin, source: PinSource, signed_in: Sequence[str], quorum: int = 0,
              confirm: bool = False) -> tuple[str, tuple[str, ...]]:
    """The PIN combined from the parts of ``split.officers`` (a token already initialised), or, while the token is
    being initialised (no officers yet), from ``quorum`` parts entered by distinct officers among ``signed_in``.

    Returns the PIN and who entered a part, in the order the parts were combined (the sign-in order at the
    initialisation, the token's record afterwards). Every refusal names people, never a part, and comes before
    anything is done with the token: a part entered twice by one officer, by someone not signed in with the role,
    too few parts, a part shorter than :data:`PART_MIN_LENGTH`, two officers with the same part.
    """
    role = PART_ROLE_NAMES[split.pin]
    known = {_person(name): name for name in signed_in}
    if split.officers:
        quorum = len(split.officers)
        absent = [o for o in split.officers if signed_in and _person(o) not in known]
        if absent:
            raise PinError(f"{split.describe()} is made of the parts of {', '.join(split.officers)} (token "
                           f"initialisation); not signed in as {role}: {', '.join(absent)}. The same officers enter "
                           "their parts at every ceremony on this token")
        candidates: Sequence[str] = split.officers
    else:
        candidates = list(signed_in)
    entries = _entries(split, source, candidates, quorum, confirm)
    allowed = {_person(name): name for name in candidates}
    seen: dict[str, PartEntry] = {}
    for entry in entries:
        who = _person(entry.officer)
        if who not in allowed:
            holders = "the token's record names " + ", ".join(split.officers) if split.officers else \
                "signed in as " + role + ": " + (", ".join(candidates) or "nobody")
            raise PinError(f"{entry.officer!r} entered a part of {split.describe()} but is not one of its "
                           f"{role}s ({holders}); nothing was done")
        if who in seen:
            raise PinError(f"{allowed[who]!r} entered a part of {split.describe()} twice: each of the {quorum} "
                           f"{role}s enters one part, their own; nothing was done")
        if len(entry.part) < PART_MIN_LENGTH:
            raise PinError(f"the part {allowed[who]!r} entered for {split.describe()} is shorter than "
                           f"{PART_MIN_LENGTH} characters (allowed: {PART_MIN_LENGTH} or more); nothing was done")
        for other, earlier in seen.items():
            if hmac.compare_digest(earlier.part.encode("utf-8"), entry.part.encode("utf-8")):
                raise PinError(f"{allowed[other]!r} and {allowed[who]!r} entered the same part of "
                               f"{split.describe()}: each officer chooses a part of their own; nothing was done")
        seen[who] = entry
    if len(seen) < quorum:
        by = ", ".join(allowed[w] for w in seen) or "nobody"
        raise PinError(f"{split.describe()} needs {quorum} parts, one from each of {quorum} distinct {role}s; "
                       f"{len(seen)} entered (by {by}); nothing was done")
    if len(seen) > quorum:
        raise PinError(f"{split.describe()} is made of {quorum} parts; {len(seen)} were entered "
                       f"({', '.join(allowed[w] for w in seen)}); nothing was done")
    order = [_person(name) for name in candidates]
    chosen = sorted(seen, key=order.index)
    pin = combine_parts([seen[w].part for w in chosen], split.label, split.pin)
    return pin, tuple(allowed[w] for w in chosen)
