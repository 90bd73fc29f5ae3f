"""Fingerprints people can read aloud and compare across a room.

A SHA-256 fingerprint is 64 hex digits. Read as one string it is misheard; read in numbered
lines of four groups of four it is compared reliably (the witness reads back line by line).
The colon form is what ``openssl x509 -fingerprint -sha256`` prints, for cross-checking.
"""

from __future__ import annotations

import hashlib


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def colon_form(hex_digest: str) -> str:
    """``AB:CD:...`` as OpenSSL prints it."""
    h = hex_digest.upper()
    return ":".join(h[i:i + 2] for i in range(0, len(h), 2))


def read_aloud(hex_digest: str, groups_per_line: int = 4) -> list[str]:
    """Numbered lines of 4-digit groups: ``1: 3F2A 91C0 77DE 0011``."""
    h = hex_digest.upper()
    if len(h) % 4 or any(c not in "0123456789ABCDEF" for c in h):
        raise ValueError("a fingerprint is a hex string whose length is a multiple of 4")
    groups = [h[i:i + 4] for i in range(0, len(h), 4)]
    lines = [groups[i:i + groups_per_line] for i in range(0, len(groups), groups_per_line)]
    return [f"{n}: {' '.join(line)}" for n, line in enumerate(lines, start=1)]


def announce(title: str, der: bytes) -> str:
    """The block shown at the fingerprint step of a ceremony."""
    return announce_digest(title, sha256_hex(der))


def announce_digest(title: str, digest: str) -> str:
    """:func:`announce` for a SHA-256 computed already (a file too large to hold in memory: an archive)."""
    body = "\n".join("    " + line for line in read_aloud(digest))
    return f"{title}\n  SHA-256 (read aloud, line by line):\n{body}\n  OpenSSL form: {colon_form(digest)}"
