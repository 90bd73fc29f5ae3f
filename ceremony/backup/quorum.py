"""The custodians' shares of a backup checked against its custody record and recombined."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any

from ceremony.backup import shamir
from ceremony.backup.format import (
    BackupError,
    file_mac,
    key_check_value,
)
from ceremony.backup.shares import Share


def check_shares(shares: Sequence[tuple[str, Share]], body: dict[str, Any], backup_source: str,
                 rehearsal: bool) -> list[Share]:
    """Match every presented share to the backup's custody record; enough distinct shares."""
    quorum = body["quorum"]
    threshold = quorum["threshold"]
    records = {c.get("index"): c for c in quorum["custodians"] if isinstance(c, dict)}
    seen: dict[int, str] = {}
    for source, share in shares:
        if share.backup_id != body["backup_id"] or share.ca != body["ca"]:
            raise BackupError(f"{source}: this share belongs to backup {share.backup_id} of CA {share.ca!r}, "
                              f"not to backup {body['backup_id']} of {body['ca']!r} ({backup_source})")
        if share.rehearsal != rehearsal:
            raise BackupError(f"{source}: a {'rehearsal' if share.rehearsal else 'production'} share cannot be "
                              f"used in a {'rehearsal' if rehearsal else 'production'} restore")
        if (share.threshold, share.count) != (threshold, quorum["count"]):
            raise BackupError(f"{source}: quorum {share.threshold} of {share.count} differs from the backup's "
                              f"{threshold} of {quorum['count']}")
        record = records.get(share.index)
        if record is None or (record.get("name"), record.get("bag"), record.get("share_checksum")) != \
                (share.custodian, share.bag, share.checksum):
            raise BackupError(f"{source}: share {share.index} of {share.custodian!r} (bag {share.bag}, checksum "
                              f"{share.checksum}) is not the share the backup recorded for that index: a wrong "
                              "or substituted share")
        if share.index in seen:
            raise BackupError(f"{source}: share {share.index} was already presented ({seen[share.index]})")
        seen[share.index] = source
    if len(seen) < threshold:
        present = ", ".join(s.custodian for _, s in shares) or "nobody"
        raise BackupError(f"{len(seen)} share(s) presented, the backup needs {threshold} of {quorum['count']} "
                          f"(present: {present}); nothing was done")
    return [s for _, s in shares]


def recombine(shares: Sequence[Share], body: dict[str, Any], backup_source: str) -> bytearray:
    """The wrapping key from the shares, proven by the key check value and the file's MAC."""
    try:
        secret = bytearray(shamir.combine([shamir.RawShare(s.index, s.value) for s in shares],
                                          body["quorum"]["threshold"]))
    except ValueError as exc:
        raise BackupError(f"the shares do not recombine: {exc}; a share is wrong") from None
    if not hmac.compare_digest(key_check_value(bytes(secret)), body["wrapping"]["key_check_value"]):
        raise BackupError("the shares do not reconstruct the wrapping key of this backup (key check value "
                          "differs): a share is wrong or was altered; nothing was done")
    if not hmac.compare_digest(file_mac(bytes(secret), body), str(body["mac"].get("value", ""))):
        raise BackupError(f"{backup_source}: the MAC does not verify under the reconstructed key: the backup file "
                          "was altered; use another copy")
    return secret
