"""The custodian's share: a printable page to seal in a tamper-evident bag, and its parser.

A share is a secret. It is written once, to a file of mode 0600 for its custodian (to be printed
and sealed, then the file destroyed), and is never shown in a log or a transcript: those carry
only its *checksum*, which says which share a custodian holds without revealing it.

The page carries everything needed to match it to its backup without the backup file at hand
(CA, backup id, key SPKI SHA-256, custodian, bag serial, index, quorum) and a checksum over all of
it, so that a typing mistake or a share from another backup is named before the HSM is touched.
The value is printed in numbered lines of eight groups of four hexadecimal digits, easy to read
aloud and to type back.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from ceremony.common.errors import DefinitionError

FORMAT = "ceremony-key-share/1"


_HEADER = "=== KEY-BACKUP SHARE: SECRET — seal in a tamper-evident bag, never copy, never photograph ==="


_REHEARSAL = "*** REHEARSAL SHARE: throwaway, never production ***"


_FOOTER = "=== END OF SHARE ==="


_GROUPS_PER_LINE = 8


@dataclass(frozen=True)
class Share:
    """One custodian's share of a backup's wrapping key. ``value`` never appears in ``repr``."""

    ca: str
    backup_id: str
    key_spki_sha256: str
    custodian: str
    bag: str
    index: int
    threshold: int
    count: int
    rehearsal: bool
    value: bytes = field(repr=False)

    def _canonical(self) -> bytes:
        fields = [FORMAT, self.ca, self.backup_id, self.key_spki_sha256, self.custodian, self.bag,
                  str(self.index), str(self.threshold), str(self.count),
                  "rehearsal" if self.rehearsal else "production", self.value.hex()]
        return "\n".join(fields).encode("utf-8")

    @property
    def checksum(self) -> str:
        """First 16 hex digits of SHA-256 over every field: names the share without revealing it."""
        return hashlib.sha256(self._canonical()).hexdigest()[:16]

    def render(self) -> str:
        """The printable page."""
        groups = [self.value[i:i + 2].hex() for i in range(0, len(self.value), 2)]
        lines = [_HEADER]
        if self.rehearsal:
            lines.append(_REHEARSAL)
        lines += [
            f"format: {FORMAT}",
            f"ca: {self.ca}",
            f"backup-id: {self.backup_id}",
            f"key-spki-sha256: {self.key_spki_sha256}",
            f"custodian: {self.custodian}",
            f"bag: {self.bag}",
            f"index: {self.index}",
            f"threshold: {self.threshold}",
            f"count: {self.count}",
            f"rehearsal: {'yes' if self.rehearsal else 'no'}",
            f"(share {self.index} of {self.count}; any {self.threshold} shares recover the wrapping key)",
            "value:",
        ]
        for n, start in enumerate(range(0, len(groups), _GROUPS_PER_LINE), 1):
            lines.append(f"  {n:2d}: " + " ".join(groups[start:start + _GROUPS_PER_LINE]))
        lines += [f"checksum: {self.checksum}", _FOOTER, ""]
        return "\n".join(lines)


_FIELDS = ("format", "ca", "backup-id", "key-spki-sha256", "custodian", "bag", "index", "threshold", "count",
           "rehearsal", "checksum")


_VALUE_LINE = re.compile(r"^\s*(\d+)\s*:\s*([0-9a-fA-F\s]+)$")


def parse_share(text: str, source: str) -> Share:
    """Read a share page (as written, or typed back from paper); one clear error naming the field."""
    values: dict[str, str] = {}
    hex_lines: dict[int, str] = {}
    in_value = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("===", "***", "(")):
            continue
        if in_value:
            m = _VALUE_LINE.match(line)
            if m:
                n = int(m.group(1))
                if n in hex_lines:
                    raise DefinitionError(source, "value", f"line {n} of the value appears twice")
                hex_lines[n] = re.sub(r"\s+", "", m.group(2))
                continue
            in_value = False
        name, sep, rest = line.partition(":")
        name = name.strip().lower()
        if not sep or name not in (*_FIELDS, "value"):
            raise DefinitionError(source, name or "(line)", f"unexpected line {line[:40]!r}",
                                  ", ".join((*_FIELDS, "value")))
        if name == "value":
            in_value = True
            continue
        if name in values:
            raise DefinitionError(source, name, "given twice")
        values[name] = rest.strip()
    missing = [f for f in _FIELDS if f not in values]
    if missing:
        raise DefinitionError(source, missing[0], "required field is missing", ", ".join(_FIELDS))
    if values["format"] != FORMAT:
        raise DefinitionError(source, "format", f"{values['format']!r} is not a share format this suite reads",
                              FORMAT)
    if not hex_lines or sorted(hex_lines) != list(range(1, len(hex_lines) + 1)):
        raise DefinitionError(source, "value", "the value lines must be numbered 1, 2, 3, ... without gaps")
    try:
        value = bytes.fromhex("".join(hex_lines[n] for n in sorted(hex_lines)))
    except ValueError:
        raise DefinitionError(source, "value", "not hexadecimal", "digits 0-9 and letters a-f") from None
    ints: dict[str, int] = {}
    for f in ("index", "threshold", "count"):
        if not values[f].isdigit():
            raise DefinitionError(source, f, f"{values[f]!r} is not a whole number")
        ints[f] = int(values[f])
    if values["rehearsal"] not in ("yes", "no"):
        raise DefinitionError(source, "rehearsal", f"{values['rehearsal']!r}", "yes, no")
    share = Share(ca=values["ca"], backup_id=values["backup-id"], key_spki_sha256=values["key-spki-sha256"],
                  custodian=values["custodian"], bag=values["bag"], index=ints["index"],
                  threshold=ints["threshold"], count=ints["count"], rehearsal=values["rehearsal"] == "yes",
                  value=value)
    if share.checksum != values["checksum"].lower():
        raise DefinitionError(source, "checksum", "does not match the share: a field or the value was mistyped, "
                              "altered or damaged; compare the page with its sealed original")
    if not 1 <= share.index <= share.count or not 2 <= share.threshold <= share.count:
        raise DefinitionError(source, "index", f"share {share.index} with quorum {share.threshold} of "
                              f"{share.count} is impossible")
    return share


def read_share(path: str | Path) -> Share:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DefinitionError(str(p), "", "share file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(str(p), "", f"cannot read the share: {exc}") from None
    return parse_share(text, str(p))


def slug(name: str) -> str:
    """A file-name-safe form of a custodian's name (``Fatoumata Traoré`` -> ``fatoumata-traore``)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-") or "custodian"
