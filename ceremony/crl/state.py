"""Crash-safe CRL numbering: a number, once possibly used, is never used again.

RFC 5280 §5.2.3 and BR §7.2 require CRL numbers to increase strictly. The job reserves the next
number *before* it asks the HSM to sign: the reservation is written to a small state file
(temporary file, fsync, rename, directory fsync). A crash or kill at any later point (during
signing, between signing and publishing, during publishing) leaves the reservation on disk, so
the next run takes a higher number; a crash before the reservation leaves nothing signed. The
next number is also never lower than the published CRL's number + 1, so losing the state file
(or restoring an old copy) cannot lower it either.

Where it lives: ``<publication dir>/.state/<ca>.crlnumber`` for the subordinate job (written by
the same user, on the same file system as the publication), and ``<ca>-p<i>.crlnumber`` beside it for
each CRL partition (each partition CRL has its own sequence), ``<out>/.state/<ca>.crlnumber`` for
the root batches. The web server is configured not to serve dot-directories (docs/crl.md).
"""

from __future__ import annotations

import json
from pathlib import Path

from ceremony.common.errors import OutputError
from ceremony.common.fileio import replace_atomically

STATE_DIR = ".state"


#: How many numbers a state file may have reserved beyond the published CRL's. Each run killed between the
#: reservation and the publication leaves one number unpublished; far more than that is no trace of crashes but a
#: state file that belongs to another CRL (another CA, partition or host), and the job refuses it.
MAX_UNPUBLISHED = 100


def state_path(directory: Path, ca_name: str, partition: int | None = None) -> Path:
    """``<dir>/.state/<ca>.crlnumber`` for the full CRL, ``<ca>-p<i>.crlnumber`` for partition ``i``: every
    partition CRL has its own number sequence (RFC 5280 5.2.3: numbers increase within one CRL's scope)."""
    stem = ca_name if partition is None else f"{ca_name}-p{partition}"
    return Path(directory) / STATE_DIR / f"{stem}.crlnumber"


def check_not_ahead(path: Path, published_number: int, published_path: Path) -> int:
    """The state's last reservation, refused when it is more than :data:`MAX_UNPUBLISHED` ahead of the
    published CRL (``published_number`` 0: none published). A state that is behind is harmless (the next
    number is above both)."""
    last = last_reserved(path)
    if last - published_number > MAX_UNPUBLISHED:
        published = f"number {published_number}" if published_number else "not there yet"
        raise OutputError(f"{path}: the CRL number state has reserved up to {last}, but the published CRL "
                          f"{published_path} is {published}: more than {MAX_UNPUBLISHED} numbers reserved and never "
                          "published is not the trace of crashed runs, so this state file is not this CRL's (another "
                          "CA's, partition's or host's?); nothing was signed. Restore the right file, or remove it "
                          f"(allowed: at most {MAX_UNPUBLISHED} ahead; without it the next number is the published "
                          "CRL's + 1)")
    return last


def last_reserved(path: Path) -> int:
    """The highest number ever reserved (0 when the state file does not exist yet)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise OutputError(f"{path}: cannot read the CRL number state: {exc.strerror}") from None
    try:
        value = json.loads(text)["last_reserved"]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise OutputError(f"{path}: the CRL number state is corrupt (expected {{\"last_reserved\": N}}); nothing "
                          "was signed; restore it, or remove it: the next number is then the published CRL's + 1") \
            from None
    return value


def reserve(path: Path, published_number: int = 0, count: int = 1) -> int:
    """Reserve ``count`` consecutive numbers, durably; return the first.

    The first is greater than both the last reservation and ``published_number``.
    """
    first = max(last_reserved(path), published_number) + 1
    last = first + count - 1
    if last >= 1 << 159:
        raise OutputError(f"{path}: CRL numbers exhausted (at most 20 octets, RFC 5280 5.2.3)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(path, (json.dumps({"last_reserved": last}) + "\n").encode(), mode=0o640)
    except OSError as exc:
        raise OutputError(f"{path}: cannot record the CRL number before signing: {exc.strerror}") from None
    return first
