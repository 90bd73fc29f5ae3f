"""Every transcript of an output directory at once: each one, the ledger that links them, the manifest.

``invoke audit.verify-all DIR --trust ROOT`` is what an auditor runs on a copy of the ceremonies'
output directory. Each transcript is verified as ``audit.verify`` does (anchored in ROOT). Then:

- **the ledger**: each header names the transcript finished before it (file and final head, see
  :func:`ceremony.transcript.chain.ledger_tip`); every link must point to a transcript that is there with
  exactly that final head, no transcript may have two successors, and only the first may have none.
  Removing, replacing or rewriting an old transcript breaks the link of the next one;
- **the manifest**: every entry's file exists with its recorded SHA-256, and every artifact a sealed
  transcript recorded is listed in the manifest with the same hash;
- **the reports**: each transcript report listed (HTML, and PDF through its text layer) shows the SHA-256
  of the transcript file it belongs to;
- **the bags**: the serial a tamper-evident bag was resealed with is the serial it is opened with at the
  next ceremony, in ledger order, that uses that bag id; a break means the bag was opened (or swapped)
  between two recorded ceremonies, which no transcript alone can show;
- **the attestations**: each attestation a ledger link names is there with its SHA-256, and, with the
  auditor's allowed-signers file, every sealed transcript carries an attestation by one of its keys.

Findings have a category and each category its exit code (:data:`EXIT`), so that a script can tell a
tampered record from a broken bag seal from an attestation by a key the auditor did not bring.

A sealed transcript must verify as intact; a ceremony that failed or ended unsealed is part of the
history and is listed as such; an interrupted one must be acknowledged by a later ceremony (its
``resumes``), otherwise it is a finding.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ceremony.common.fileio import sha256_file
from ceremony.common.pdf import pdf_text
from ceremony.transcript import attestation as attestations
from ceremony.transcript import evidence as facts
from ceremony.transcript.anchor import TrustAnchor
from ceremony.transcript.audit import Audit, verdict_of, verify
from ceremony.transcript.chain import line_hash

#: A transcript in one of these states is a finding; failed and unsealed ceremonies are history.
FAILING = ("invalid", "not-anchored", "rehearsal", "incomplete", "interrupted")

#: Exit code of ``audit.verify-all`` per category of finding (docs/transcripts.md); with findings of several
#: categories, the smallest code wins (a tampered record says more than a broken bag seal).
EXIT = {"record": 1, "attestation": attestations.ATTESTATION_EXIT, "bags": 7}


@dataclass
class Row:
    transcript: str
    ceremony: str
    status: str
    head: str
    previous: str
    anchored_by: str


@dataclass
class DirectoryAudit:
    directory: Path
    rows: list[Row] = field(default_factory=list)
    audits: dict[str, Audit] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)  # one per finding: a key of EXIT
    notes: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # transcripts in ledger order

    def find(self, message: str, category: str = "record") -> None:
        self.findings.append(message)
        self.categories.append(category)

    @property
    def ok(self) -> bool:
        return not self.findings and bool(self.rows)

    @property
    def exit_code(self) -> int:
        if self.ok:
            return 0
        return min((EXIT[c] for c in self.categories), default=EXIT["record"])


def _final_head(path: Path) -> str | None:
    lines = path.read_bytes().split(b"\n")
    return line_hash(lines[-2]) if len(lines) >= 2 and not lines[-1] else None


def verify_directory(directory: Path, trust: TrustAnchor, rehearsal: bool = False,
                     allowed_signers: Path | None = None) -> DirectoryAudit:
    result = DirectoryAudit(directory)
    transcripts = sorted((directory / "transcripts").glob("*.jsonl"))
    if not transcripts:
        result.find(f"{directory / 'transcripts'}: no transcript to verify")
        return result
    acknowledged: set[str] = set()
    successors: dict[str, list[str]] = {}
    genesis: list[str] = []
    for path in transcripts:
        audit = verify(path, directory, trust=trust, rehearsal=rehearsal)
        result.audits[path.name] = audit
        header = audit.header
        acknowledged.update(str(r.get("file", "")) for r in header.get("resumes") or [])
        ledger = header.get("ledger") if isinstance(header.get("ledger"), dict) else None
        previous = ledger.get("previous") if ledger else None
        if ledger is None:
            result.find(f"{path.name}: its header has no ledger link")
        elif previous is None:
            genesis.append(path.name)
        else:
            named = directory / "transcripts" / str(previous.get("file"))
            if not named.is_file():
                result.find(f"{path.name}: the ledger names {previous.get('file')} before it, which "
                                       "is missing")
            elif _final_head(named) != previous.get("head"):
                result.find(f"{path.name}: the ledger names {named.name} with final head "
                                       f"{previous.get('head')}, but that file ends with another head: it was "
                                       "rewritten or replaced")
            _check_ledger_attestations(result, path.name, previous)
            successors.setdefault(str(previous.get("file")), []).append(path.name)
        anchored = audit.anchoring.how if audit.anchoring is not None and audit.anchoring.anchored else "-"
        result.rows.append(Row(path.name, str((header.get("script") or {}).get("name", "?")), audit.status,
                               (audit.records[-1].get("head") if audit.of_type("seal") else None)
                               or (_final_head(path) or "-"),
                               str(previous.get("file")) if previous else "-", anchored))
    for row in result.rows:
        if row.status in FAILING and not (row.status == "interrupted" and row.transcript in acknowledged) \
                and not (row.status == "incomplete" and row.transcript in acknowledged):
            audit = result.audits[row.transcript]
            result.find(f"{row.transcript}: {verdict_of(audit)}"
                                   + (f" ({audit.problems[0]})" if audit.problems else ""))
    for name, after in successors.items():
        if len(after) > 1:
            result.find(f"the ledger forks after {name}: {', '.join(after)} all name it as previous")
    if len(genesis) > 1:
        result.find(f"the ledger has {len(genesis)} beginnings ({', '.join(genesis)}): one at most")
    result.order = _ledger_order(result, genesis, successors)
    _check_bags(result)
    _check_addenda(result, directory)
    if allowed_signers is not None:
        _check_attestations(result, allowed_signers)
    _check_manifest(result)
    return result


def _ledger_order(result: DirectoryAudit, genesis: list[str], successors: dict[str, list[str]]) -> list[str]:
    """The transcripts from the ledger's beginning, each followed by the one that names it; those the links
    do not reach (a fork, a broken link: findings already) follow in the order of their header times."""
    order: list[str] = []
    current = genesis[0] if len(genesis) == 1 else None
    while current is not None and current not in order:
        order.append(current)
        after = successors.get(current, [])
        current = after[0] if len(after) == 1 else None
    rest = sorted((a for a in result.audits if a not in order),
                  key=lambda name: (str(result.audits[name].header.get("time", "")), name))
    return order + rest


def _check_addenda(result: DirectoryAudit, directory: Path) -> None:
    """A recording addendum names the transcript it completes by SHA-256 and final head: that file is in the
    directory, unchanged (the addendum would otherwise vouch for recordings of another ceremony)."""
    for name, audit in result.audits.items():
        for r in audit.of_type("evidence"):
            if r.get("name") != "recorded-ceremony":
                continue
            data = r.get("data") or {}
            target = directory / "transcripts" / str(data.get("file"))
            if not target.is_file():
                result.find(f"{name}: the addendum's recorded ceremony {data.get('file')} is not in the directory")
            elif sha256_file(target) != data.get("sha256"):
                result.find(f"{name}: the addendum's recorded ceremony {data.get('file')} has another SHA-256 than "
                            "when its recordings were bound: it was changed or replaced")


def _check_bags(result: DirectoryAudit) -> None:
    """Bag continuity: each bag id's serial at its reseal is the serial it is opened with at the next ceremony,
    in ledger order, that uses that bag id. Only records the chain vouches for are read."""
    resealed: dict[str, tuple[str, str]] = {}  # bag id -> (serial, transcript that resealed it)
    for name in result.order:
        audit = result.audits[name]
        cas = {str((r.get("data") or {}).get("ca")) for r in audit.of_type("evidence") if r.get("name") == "definition"}
        for r in audit.of_type("bag"):
            bag, serial = str(r.get("bag")), str(r.get("serial"))
            if bag == "subordinate-hsm" and len(cas) == 1:
                bag = f"subordinate-hsm of {cas.pop()}"  # each subordinate CA has an HSM of its own
            if r.get("when") == "open":
                before = resealed.pop(bag, None)
                if before is not None and before[0] != serial:
                    result.find(f"{name}: bag {bag!r} opened with serial {serial}, but {before[1]} resealed it "
                                f"with serial {before[0]}: the bag was opened or replaced between the two "
                                "ceremonies", "bags")
            elif r.get("when") == "reseal":
                resealed[bag] = (serial, name)


def _check_ledger_attestations(result: DirectoryAudit, name: str, previous: dict[str, Any]) -> None:
    """The attestations a ledger link recorded are still there, unchanged."""
    listed = previous.get("attestations") or []
    if not isinstance(listed, list):
        result.find(f"{name}: the ledger's attestations of {previous.get('file')} are not a list")
        return
    for entry in listed:
        file = str((entry or {}).get("file"))
        target = result.directory / "transcripts" / file
        if not target.is_file():
            result.find(f"{name}: the ledger names the attestation {file}, which is missing")
        elif sha256_file(target) != (entry or {}).get("sha256"):
            result.find(f"{name}: the ledger names the attestation {file} with SHA-256 {entry.get('sha256')}, the "
                        "file has another: it was replaced after the next ceremony began")


def _check_attestations(result: DirectoryAudit, allowed_signers: Path) -> None:
    """Every sealed transcript carries an attestation by a key of the auditor's allowed-signers file."""
    for name in result.order:
        audit = result.audits[name]
        if not audit.of_type("seal"):
            continue
        check = attestations.check(audit.path, allowed_signers)
        audit.attestation = check
        for problem in check.problems:
            result.find(f"{name}: {problem}", "attestation")
        result.notes += [f"{name}: {note}" for note in check.notes]


def _check_manifest(result: DirectoryAudit) -> None:
    path = result.directory / "manifest.json"
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        result.find(f"{path}: cannot be read as a manifest ({exc})")
        return
    listed: dict[str, str] = {}
    handed_over: dict[str, Any] = {}
    for audit in result.audits.values():
        handed_over.update(facts.handed_over_files(audit.records))
    for entry in manifest.get("artifacts") or []:
        rel = str(entry.get("path"))
        listed[rel] = str(entry.get("sha256"))
        target = result.directory / rel
        if not target.is_file() and entry.get("kind") == "key-backup-share" and rel in handed_over:
            result.notes.append(f"{rel}: handed over and shredded, as its custody record says")
        elif not target.is_file():
            result.find(f"manifest.json lists {rel}, which is missing")
        elif sha256_file(target) != entry.get("sha256"):
            result.find(f"manifest.json lists {rel} with SHA-256 {entry.get('sha256')}, the file has "
                                   "another: changed after it was listed")
    for entry in manifest.get("artifacts") or []:
        if entry.get("kind") == "transcript-report":
            _check_report(result, result.directory / str(entry.get("path")))
    for name, audit in result.audits.items():
        if audit.status != "intact":
            continue
        for record in audit.of_type("artifact"):
            rel = str(record.get("path"))
            if listed.get(rel) != record.get("sha256"):
                result.find(f"{name}: artifact {rel} is not listed in manifest.json with the hash the "
                                       "transcript recorded")


def _check_report(result: DirectoryAudit, report: Path) -> None:
    """A report names its transcript by the transcript file's SHA-256 (as text a reader sees, in the HTML
    and in the PDF's text layer): a report of another transcript, or of an earlier state of it, does not."""
    if not report.is_file():
        return  # said already: listed and missing
    stem = report.name.split(".")[0]
    transcript = report.parent / f"{stem}.jsonl"
    if not transcript.is_file():
        result.find(f"{report.name}: a transcript report whose transcript {transcript.name} is not there")
        return
    text = pdf_text(report) if report.suffix == ".pdf" else report.read_text(encoding="utf-8", errors="replace")
    if sha256_file(transcript) not in re.sub(r"\s+", "", text):
        result.find(f"{report.name}: does not name the SHA-256 of {transcript.name}: it is the report "
                               "of another transcript, or of another state of it")


def table_lines(result: DirectoryAudit) -> list[str]:
    """One row per transcript, then the findings and the verdict."""
    rows = [("transcript", "ceremony", "status", "final head", "previous in the ledger")]
    rows += [(r.transcript, r.ceremony, r.status, r.head[:16] + "…" if len(r.head) > 16 else r.head, r.previous)
             for r in result.rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    out += [f"note: {note}" for note in result.notes]
    out += [f"FAIL {finding}" for finding in result.findings]
    out.append(f"ALL INTACT: {len(result.rows)} transcripts, the ledger, the bags and the manifest verify"
               + (", each sealed transcript attested" if any(a.attestation for a in result.audits.values()) else "")
               if result.ok else f"NOT INTACT: {len(result.findings)} finding(s) in {result.directory}")
    return out
