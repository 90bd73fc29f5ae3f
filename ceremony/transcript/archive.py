"""The termination archive: one file holding what a terminated CA leaves, and its offline verification.

When a CA terminates (docs/lifecycle.md, "CA termination"), the body that takes over its records receives one file:
an uncompressed POSIX tar (PAX headers) that any system can list and unpack without this suite. Its first member,
``manifest.json``, names every other member with its SHA-256 and size; the others are the ceremonies' output
directory under ``out/``: every transcript, certificate, definition, CRL and OCSP store, the wrapped key backups, the
reports, the registry as an SQLite online backup taken after the last revocations, and the final CRL. Share files
(``backup/*.share-*``) are never archived: they are secrets, handed over to their custodians or shredded.

Why the manifest inside and the hash outside: the manifest lets the verifier name the member that changed, and the
termination ceremony's sealed transcript records the archive's own SHA-256 (an artifact, kind
``termination-archive``), so a change anywhere in the file, a member and its manifest line rewritten together
included, fails ``audit.verify`` on that transcript.

:func:`verify_archive` (``invoke audit.verify-archive ARCHIVE --trust ROOT``), offline, without an HSM:

1. every member is a regular file with a relative name inside the archive, listed once in the manifest, with the
   SHA-256 and size the manifest gives (the first difference is named: ``member out/… : SHA-256 …``);
2. every final CRL the manifest lists (``final_crls``: one per partition and per key after a re-key, each with the
   CA certificate of the key that signed it; an archive of one final CRL names it in ``final_crl`` under
   ``ca_certificate``) verifies under that certificate, is the CA's (issuer, authority key identifier), and carries
   nextUpdate 99991231235959Z as GeneralizedTime (RFC 5280 5.1.2.6); each such CA certificate was issued by the
   trust anchor;
3. every transcript in the archive verifies against the trust anchor with the archive's files as its artifacts (the
   same verifier as ``audit.verify``); a transcript of a ceremony that did not complete (no seal: exit 2 or 3) is
   listed as such, since it is the true record of an interrupted run, and fails nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ceremony.common.errors import OutputError
from ceremony.crl.encoding import FINAL_NEXT_UPDATE
from ceremony.hsm.signers import verify_signature
from ceremony.transcript.anchor import AnchorError, load_anchor
from ceremony.transcript.audit import verify as verify_transcript

#: The archive's format name, in its manifest.
ARCHIVE_FORMAT = "ceremony-termination-archive/1"

#: The manifest member, first in the archive.
MANIFEST_MEMBER = "manifest.json"

#: The ceremonies' output directory is archived under this folder.
OUT_PREFIX = "out"

#: The DER of the final CRL's nextUpdate (:data:`ceremony.crl.encoding.FINAL_NEXT_UPDATE`), GeneralizedTime.
FINAL_NEXT_UPDATE_DER = b"\x18\x0f99991231235959Z"

#: Exit codes of ``audit.verify-archive``: 0 verified, 1 a finding, 64 no usable trust anchor.
ARCHIVE_OK, ARCHIVE_BAD, ARCHIVE_NO_ANCHOR = 0, 1, 64

#: Transcript states of a ceremony that did not complete: a true record, not a finding.
_UNFINISHED = ("incomplete", "failed", "unsealed", "interrupted")


def excluded(rel: str) -> bool:
    """What an output directory holds that the archive never takes: share files (secrets), staging directories,
    hidden state (CRL number reservations, locks), temporaries and SQLite's side files of an open database."""
    parts = PurePosixPath(rel).parts
    name = parts[-1]
    return (any(p.startswith(".") for p in parts) or (".share-" in name and parts[0] == "backup")
            or name.endswith((".tmp", ".lock", "-wal", "-shm", "-journal")))


def directory_members(out_dir: Path, skip: Iterable[str] = ()) -> list[tuple[str, Path]]:
    """``(name relative to out_dir, path)`` of every file of the output directory the archive takes, sorted."""
    skipped = set(skip)
    found = []
    for path in sorted(out_dir.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        rel = path.relative_to(out_dir).as_posix()
        if rel in skipped or excluded(rel):
            continue
        found.append((rel, path))
    return found


def _hash(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def write_archive(target: Path, members: list[tuple[str, Path, str]], facts: dict[str, Any],
                  created: dt.datetime) -> dict[str, Any]:
    """Write the archive to ``target`` (created, never replaced; fsynced): ``manifest.json`` first, then each
    ``(name under out/, source file, kind)``. Returns the manifest. Owners, modes and times are fixed, so the
    same files make the same archive."""
    names = [f"{OUT_PREFIX}/{rel}" for rel, _, _ in members]
    if len(set(names)) != len(names):
        raise OutputError(f"{target}: two archive members under one name")
    listed: list[dict[str, Any]] = []
    for (_rel, path, kind), name in zip(members, names, strict=True):
        digest, size = _hash(path)
        listed.append({"path": name, "sha256": digest, "size": size, "kind": kind})
    manifest = {"format": ARCHIVE_FORMAT, **facts, "created": created.isoformat(), "members": listed}
    body = (json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode()
    stamp = int(created.timestamp())

    def info(name: str, size: int) -> tarfile.TarInfo:
        entry = tarfile.TarInfo(name)
        entry.size, entry.mtime, entry.mode, entry.uid, entry.gid = size, stamp, 0o644, 0, 0
        entry.uname = entry.gname = ""
        return entry

    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "xb") as raw:
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(info(MANIFEST_MEMBER, len(body)), io.BytesIO(body))
            for (_rel, path, _kind), entry in zip(members, listed, strict=True):
                with open(path, "rb") as handle:
                    tar.addfile(info(str(entry["path"]), int(entry["size"])), handle)
        raw.flush()
        os.fsync(raw.fileno())
    return manifest


@dataclass
class ArchiveCheck:
    """What :func:`verify_archive` found: ``problems`` fail it, ``notes`` are said."""

    path: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    members: int = 0
    transcripts: list[tuple[str, str]] = field(default_factory=list)
    final_crl: dict[str, Any] | None = None
    """The first final CRL (the current key's full CRL, else its first partition)."""
    final_crls: list[dict[str, Any]] = field(default_factory=list)
    """Every final CRL that verified (path, number, entries, nextUpdate, the certificate it verified under)."""
    no_anchor: bool = False

    @property
    def exit_code(self) -> int:
        if self.problems:
            return ARCHIVE_BAD
        return ARCHIVE_NO_ANCHOR if self.no_anchor else ARCHIVE_OK

    def lines(self) -> list[str]:
        out = [f"archive {self.path}: {self.members} member(s) listed in its manifest"]
        for crl in self.final_crls or ([self.final_crl] if self.final_crl else []):
            out.append(f"final CRL {crl['path']}: number {crl['number']}, {crl['entries']} entries, nextUpdate "
                       f"{crl['next_update']}, under {crl.get('ca_certificate', '')}")
        out += [f"transcript {name}: {status}" for name, status in self.transcripts]
        out += [f"note: {n}" for n in self.notes]
        out += [f"problem: {p}" for p in self.problems]
        out.append("verdict: " + ("the archive verifies" if self.exit_code == ARCHIVE_OK else
                                  "no usable trust anchor" if not self.problems else "the archive does NOT verify"))
        return out


def _safe_name(name: str) -> bool:
    pure = PurePosixPath(name)
    return bool(name) and not pure.is_absolute() and ".." not in pure.parts and pure.as_posix() == name


def _read_members(path: Path, into: Path, check: ArchiveCheck) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """Unpack every regular member under ``into`` (refusing unsafe names), hashing as it goes."""
    hashes: dict[str, str] = {}
    manifest = None
    with contextlib.ExitStack() as stack:
        try:
            tar = stack.enter_context(tarfile.open(path, mode="r:"))
        except (OSError, tarfile.TarError) as exc:
            check.problems.append(f"{path}: not a readable tar archive ({exc})")
            return None, hashes
        try:
            for member in tar:
                name = member.name
                if not member.isfile() or not _safe_name(name):
                    check.problems.append(f"member {name}: not a regular file with a relative name; an archive "
                                          "holds files only")
                    continue
                if name in hashes:
                    check.problems.append(f"member {name}: twice in the archive")
                    continue
                source = tar.extractfile(member)
                assert source is not None
                data_hash = hashlib.sha256()
                dest = into / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(dest, "xb") as handle:
                    for chunk in iter(lambda: source.read(1 << 20), b""):  # noqa: B023 - read at once
                        data_hash.update(chunk)
                        handle.write(chunk)
                hashes[name] = data_hash.hexdigest()
                if name == MANIFEST_MEMBER:
                    try:
                        manifest = json.loads(dest.read_text(encoding="utf-8"))
                    except (ValueError, UnicodeDecodeError) as exc:
                        check.problems.append(f"member {MANIFEST_MEMBER}: not JSON ({exc})")
        except (OSError, tarfile.TarError) as exc:
            check.problems.append(f"{path}: the archive is damaged ({exc})")
    return manifest, hashes


def _check_hashes(manifest: dict[str, Any], hashes: dict[str, str], check: ArchiveCheck) -> None:
    listed: dict[str, dict[str, Any]] = {}
    for entry in manifest.get("members") or []:
        name = str(entry.get("path"))
        if name in listed:
            check.problems.append(f"member {name}: listed twice in the manifest")
        listed[name] = entry
    check.members = len(listed)
    for name, entry in listed.items():
        actual = hashes.get(name)
        if actual is None:
            check.problems.append(f"member {name}: listed in the manifest but not in the archive")
        elif actual != entry.get("sha256"):
            check.problems.append(f"member {name}: SHA-256 {actual}, the manifest says {entry.get('sha256')}: changed "
                                  "after the archive was made")
    for name in sorted(set(hashes) - set(listed) - {MANIFEST_MEMBER}):
        check.problems.append(f"member {name}: in the archive but not listed in the manifest")


def _load_certificate(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    return x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----") else \
        x509.load_der_x509_certificate(data)


def check_final_crl(der: bytes, ca_cert: x509.Certificate) -> tuple[x509.CertificateRevocationList | None, list[str]]:
    """The CA's last CRL: its signature under ``ca_cert``, its issuer and AKI, nextUpdate 99991231235959Z
    (GeneralizedTime, RFC 5280 5.1.2.6). Returns the parsed CRL and the problems found (empty: it is one)."""
    problems = []
    try:
        crl = x509.load_der_x509_crl(der)
    except ValueError as exc:
        return None, [f"the final CRL does not parse ({exc})"]
    try:
        verify_signature(ca_cert.public_key(), crl.signature, crl.tbs_certlist_bytes, crl.signature_hash_algorithm)
    except (InvalidSignature, TypeError):
        problems.append("the final CRL's signature does not verify under the CA certificate")
    if crl.issuer != ca_cert.subject:
        problems.append("the final CRL's issuer is not the CA certificate's subject")
    try:
        aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        if aki != ski:
            problems.append("the final CRL's authority key identifier is not the CA certificate's key identifier")
    except x509.ExtensionNotFound:
        problems.append("the final CRL or the CA certificate lacks its key identifier")
    if crl.next_update_utc != FINAL_NEXT_UPDATE or FINAL_NEXT_UPDATE_DER not in crl.tbs_certlist_bytes:
        problems.append(f"the final CRL's nextUpdate is {crl.next_update_utc}, not 99991231235959Z (GeneralizedTime, "
                        "RFC 5280 5.1.2.6: a CA that will issue no more CRLs)")
    return crl, problems


def _issuer_certificate(root: Path, name: str, hashes: dict[str, str], anchor: Any,
                        check: ArchiveCheck) -> x509.Certificate | None:
    """The CA certificate member ``name`` a final CRL verifies under, checked against the anchor (when there is
    one); None, with the problem noted, when it is missing or not a certificate."""
    if name not in hashes:
        check.problems.append(f"member {name}: the CA certificate the manifest names is not in the archive")
        return None
    try:
        ca_cert = _load_certificate(root / name)
    except ValueError:
        check.problems.append(f"member {name}: not a certificate")
        return None
    if anchor is not None:
        try:
            ca_cert.verify_directly_issued_by(anchor.certificate)
        except (ValueError, TypeError, InvalidSignature):
            check.problems.append(f"member {name}: the CA certificate was not issued by the trust anchor "
                                  f"{anchor.source}")
    return ca_cert


def verify_archive(path: str | Path, trust: str | None, *, rehearsal: bool = False) -> ArchiveCheck:
    """Verify a termination archive offline (see the module's docstring); ``trust`` as ``audit.verify --trust``."""
    check = ArchiveCheck(Path(path))
    with tempfile.TemporaryDirectory(prefix="ceremony-archive-") as tmp:
        root = Path(tmp)
        manifest, hashes = _read_members(check.path, root, check)
        if manifest is None:
            if not check.problems:
                check.problems.append(f"member {MANIFEST_MEMBER}: missing; the archive names its members there")
            return check
        if manifest.get("format") != ARCHIVE_FORMAT:
            check.problems.append(f"member {MANIFEST_MEMBER}: format {manifest.get('format')!r}, not {ARCHIVE_FORMAT}")
            return check
        _check_hashes(manifest, hashes, check)
        out = root / OUT_PREFIX
        try:
            anchor = load_anchor(trust, out)
        except AnchorError as exc:
            check.notes.append(str(exc))
            check.no_anchor = True
            anchor = None
        listed = manifest.get("final_crls")
        finals = [(str(f.get("path")), str(f.get("ca_certificate"))) for f in listed if isinstance(f, dict)] \
            if isinstance(listed, list) and listed else \
            [(str(manifest.get("final_crl")), str(manifest.get("ca_certificate")))]
        certificates: dict[str, x509.Certificate | None] = {}
        for crl_name, ca_name in finals:
            if ca_name not in certificates:
                certificates[ca_name] = _issuer_certificate(root, ca_name, hashes, anchor, check)
            ca_cert = certificates[ca_name]
            if crl_name not in hashes:
                check.problems.append(f"member {crl_name}: the final CRL the manifest names is not in the archive")
            elif ca_cert is not None:
                crl, found = check_final_crl((root / crl_name).read_bytes(), ca_cert)
                check.problems += [f"member {crl_name}: {p}" for p in found]
                if crl is not None:
                    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
                    seen = {"path": crl_name, "number": number, "entries": len(crl), "ca_certificate": ca_name,
                            "next_update": f"{crl.next_update_utc:%Y-%m-%dT%H:%M:%SZ}"}
                    check.final_crls.append(seen)
                    check.final_crl = check.final_crl or seen
        if anchor is None:
            return check
        for name in sorted(n for n in hashes if n.startswith(f"{OUT_PREFIX}/transcripts/") and n.endswith(".jsonl")):
            audit = verify_transcript(root / name, out, trust=anchor, rehearsal=rehearsal)
            if audit.exit_code == 0:
                check.transcripts.append((name, "intact, anchored"))
            elif audit.status in _UNFINISHED:
                check.transcripts.append((name, f"{audit.status}: a ceremony that did not complete (no seal)"))
            else:
                first = str(audit.problems[0]) if audit.problems else "; ".join(audit.notes[:1])
                check.transcripts.append((name, audit.status))
                check.problems.append(f"member {name}: the transcript does not verify ({audit.status}"
                                      + (f": {first}" if first else "") + ")")
    return check
