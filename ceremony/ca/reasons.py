"""Revocation reasons (RFC 5280 §5.3.1): the names operators type, the codes CRLs carry.

Kept apart from the registry so that the registry's backups (which name the reasons of what they
hold) and the registry itself (which takes a verified backup before a migration) do not need each
other.
"""

from __future__ import annotations

#: RFC 5280 §5.3.1 CRLReason values, named as in the ASN.1 module.
REASONS: dict[str, int] = {
    "unspecified": 0,
    "keyCompromise": 1,
    "cACompromise": 2,
    "affiliationChanged": 3,
    "superseded": 4,
    "cessationOfOperation": 5,
    "certificateHold": 6,
    "removeFromCRL": 8,
    "privilegeWithdrawn": 9,
    "aACompromise": 10,
}


REASON_NAMES: dict[int, str] = {code: name for name, code in REASONS.items()}


#: Reasons an operator may give when revoking. ``removeFromCRL`` only exists in delta CRLs
#: (RFC 5280 §5.3.1), which this CA does not publish, so it is not a revocation reason here.
REVOCATION_REASONS: tuple[str, ...] = tuple(r for r in REASONS if r != "removeFromCRL")
