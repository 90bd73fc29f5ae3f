"""The auditor's offline verifier of ceremony transcripts: no HSM, no network, no trust in the workstation.

What it establishes, in order, stopping the chain check at the first bad record:

1. the chain: every line is canonical JSON, carries its position (``seq``) and the SHA-256 of the
   previous line (``prev``); a modified, removed, reordered, duplicated or inserted record breaks it;
2. completeness: a closing record, after the seal; a file cut short (crash, ``kill -9``) verifies up
   to its last complete record and is reported *incomplete*, never as passing;
3. the seal: the final chain head's signature verifies with the public key named by the seal, that
   key is the key the ceremony's evidence describes, and the named certificate or public key file is
   there with its recorded hash;
4. the script: the embedded script matches its recorded hash, every deviation from it (unscripted,
   skipped, repeated, out-of-order step), every failure and every unconfirmed witnessed step has a
   numbered exception approved by a signed-in Ceremony Administrator;
5. the people: sign-in before anything else, separation of duties (same rules as at sign-in);
6. the artifacts: each file exists with its recorded SHA-256; certificates, CSRs and public keys carry
   the keys the evidence recorded.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from ceremony.common import pgpwords
from ceremony.common.fileio import sha256_file
from ceremony.definition.model import load_definition
from ceremony.hsm.keys import spki_sha256
from ceremony.hsm.nss import softokn_token
from ceremony.transcript import attestation as attestations
from ceremony.transcript import evidence as facts
from ceremony.transcript.anchor import (
    Anchoring,
    TrustAnchor,
    anchor_seal,
    certificates_in,
    is_rehearsal_certificate,
)
from ceremony.transcript.attestation import ATTESTATION_EXIT
from ceremony.transcript.chain import (
    FORMAT,
    GENESIS,
    StepTracker,
    canonical,
    line_hash,
    seal_message,
    verify_seal_signature,
)
from ceremony.transcript.participants import Participant, ParticipantError, Rules, check_separation, rules_for
from ceremony.transcript.scriptbook import Script, parse_script
from ceremony.x509.files import public_key_of, read_public_object

#: Exit codes of ``invoke audit.verify`` (documented in docs/transcripts.md). 0 only for an intact transcript
#: whose seal is anchored in the auditor's root, and for a rehearsal only when the auditor said --rehearsal.
STATUS_EXIT = {"intact": 0, "invalid": 1, "incomplete": 2, "failed": 3, "unsealed": 3, "interrupted": 3,
               "not-anchored": 4, "rehearsal": 5, "attestation": ATTESTATION_EXIT}
#: Without a trust anchor (or with one that cannot be used) nothing passes: the usage error of sysexits.
NO_ANCHOR_EXIT = 64
#: Artifacts that hold other files (a terminated CA's archive, ceremony/transcript/archive.py): their hash is checked
#: here, their members by ``audit.verify-archive``; the PEM certificates inside are not the artifact's own key.
ARCHIVE_KINDS = ("termination-archive",)


@dataclass
class Problem:
    seq: int | None
    message: str

    def __str__(self) -> str:
        return (f"record {self.seq}: " if self.seq is not None else "") + self.message


@dataclass
class Audit:
    """The verifier's findings on one transcript; ``records`` are the records the chain vouches for."""

    path: Path
    base: Path
    status: str = "invalid"
    records: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    script: Script | None = None
    participants: list[Participant] = field(default_factory=list)
    truncated: bool = False
    trust: TrustAnchor | None = None
    anchoring: Anchoring | None = None
    attestation: attestations.AttestationCheck | None = None

    @property
    def ok(self) -> bool:
        return self.status == "intact"

    @property
    def exit_code(self) -> int:
        code = STATUS_EXIT.get(self.status, 1)
        return NO_ANCHOR_EXIT if code == 0 and self.trust is None else code

    @property
    def header(self) -> dict[str, Any]:
        return self.records[0] if self.records and self.records[0].get("type") == "header" else {}

    def of_type(self, *types: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("type") in types]

    def fail(self, seq: int | None, message: str) -> None:
        self.problems.append(Problem(seq, message))


def read_chain(audit: Audit) -> bool:
    """Check the hash chain; keep the records it vouches for. False at the first broken link."""
    try:
        data = audit.path.read_bytes()
    except OSError as exc:
        audit.fail(None, f"cannot read {audit.path}: {exc.strerror}")
        return False
    parts = data.split(b"\n")
    lines, tail = parts[:-1], parts[-1]
    if tail:
        audit.truncated = True
        audit.notes.append(f"the file ends with {len(tail)} bytes of a record cut short (record {len(lines)}): "
                           "written when the ceremony was interrupted")
    prev = GENESIS
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line, parse_constant=_not_json)
        except ValueError:
            audit.fail(i, "not valid JSON: the record was modified or damaged")
            return False
        if not isinstance(rec, dict):
            audit.fail(i, "not a record (a JSON object): modified")
            return False
        if not is_canonical(rec, line):
            audit.fail(i, "not in canonical form (its bytes are not canonical(json.loads(line)), docs/transcripts.md): "
                       "the record was modified after it was written")
            return False
        if type(rec.get("seq")) is not int:
            audit.fail(i, f"its sequence number {rec.get('seq')!r} is not an integer: modified")
            return False
        if rec.get("seq") != i:
            audit.fail(i, f"carries sequence number {rec.get('seq')!r} at position {i}: records were removed, "
                       "reordered, duplicated or inserted")
            return False
        if rec.get("prev") != prev:
            what = "the first record must start the chain" if i == 0 else (
                f"does not chain to record {i - 1}: record {i - 1} or this record was modified, or records were "
                "removed, reordered or inserted")
            audit.fail(i, what)
            return False
        audit.records.append(rec)
        prev = line_hash(line)
    if not lines:
        audit.fail(None, "empty transcript: not even a header")
        return False
    return True


def _not_json(constant: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity`` are not JSON (RFC 8259): a line holding one is refused."""
    raise ValueError(f"{constant} is not JSON")


def is_canonical(record: dict[str, Any], line: bytes) -> bool:
    """Is ``line`` byte for byte the canonical form of the record it parses to? (A string holding a lone
    surrogate has no UTF-8 form at all: not canonical either.)"""
    try:
        return canonical(record) == line
    except (UnicodeEncodeError, ValueError):
        return False


def _load_public(path: Path) -> Any:
    return read_public_object(path)


def _spki_sha256(obj: Any) -> str:
    return spki_sha256(public_key_of(obj))


def check_header(audit: Audit) -> None:
    header = audit.header
    if not header:
        audit.fail(0, "the first record is not the header")
        return
    if header.get("format") != FORMAT:
        audit.fail(0, f"unknown transcript format {header.get('format')!r} (this verifier reads {FORMAT})")
    if not isinstance(header.get("rehearsal"), bool):
        audit.fail(0, "the header does not say whether this was a rehearsal")
    script = header.get("script") or {}
    source = script.get("source")
    if not isinstance(source, str):
        audit.fail(0, "the header does not embed the ceremony script")
        return
    try:
        parsed = parse_script(source, f"{audit.path}: embedded script")
    except Exception as exc:
        audit.fail(0, f"the embedded script does not parse: {exc}")
        return
    if parsed.sha256 != script.get("sha256") or parsed.name != script.get("name"):
        audit.fail(0, "the embedded script does not match its recorded name and SHA-256")
    audit.script = parsed
    definition = header.get("definition") or {}
    if not definition.get("sha256"):
        audit.fail(0, "the header does not record the PKI definition's SHA-256")


def check_people(audit: Audit) -> Rules | None:
    header = audit.header
    try:
        rules = Rules.from_dict(header.get("rules") or {})
    except (KeyError, TypeError, ValueError):
        audit.fail(0, "the header does not record the ceremony's role rules")
        return None
    if audit.script and not audit.script.roles() <= rules.required_roles:
        missing = sorted(audit.script.roles() - rules.required_roles)
        audit.fail(0, f"the recorded rules leave out roles the script needs: {', '.join(missing)}")
    recorded = header.get("definition") or {}
    defn_path = audit.base / Path(str(recorded.get("path", "pki.yml"))).name
    later = audit.base / f"pki.{str(recorded.get('sha256', ''))[:16]}.yml"  # a later version kept beside pki.yml
    if later.is_file() and (not defn_path.is_file() or sha256_file(defn_path) != recorded.get("sha256")):
        defn_path = later
    if defn_path.is_file() and sha256_file(defn_path) != (header.get("definition") or {}).get("sha256"):
        audit.notes.append(f"{defn_path} is not the definition this ceremony used (SHA-256 differs)")
    elif audit.script and defn_path.is_file():
        try:
            expected = rules_for(audit.script, load_definition(defn_path), bool(header.get("rehearsal")))
        except Exception as exc:
            audit.notes.append(f"{defn_path}: could not recompute the role rules: {exc}")
        else:
            if expected.as_dict() != rules.as_dict():
                audit.fail(0, f"the recorded role rules differ from those of the definition {defn_path.name}")
            else:
                audit.notes.append(f"role rules recomputed from {defn_path.name} (SHA-256 matches the header)")
    first_other = next((r["seq"] for r in audit.records[1:] if r["type"] not in ("sign-in", "act-start")), None)
    people = []
    for r in audit.of_type("sign-in"):
        if first_other is not None and r["seq"] > first_other:
            audit.fail(r["seq"], "sign-in after the ceremony started")
        p = r.get("participant") or {}
        people.append(Participant(str(p.get("name", "")), tuple(p.get("roles") or ()), str(p.get("id_document", "")),
                                  str(p.get("id_checked_by", "")), str(p.get("signed_in_at", ""))))
    audit.participants = people
    try:
        check_separation(people, rules)
    except ParticipantError as exc:
        first = audit.of_type("sign-in")
        audit.fail(first[0]["seq"] if first else None, f"separation of duties: {exc}")
    return rules


def _names(people: Iterable[Participant], role: str) -> set[str]:
    return {p.name for p in people if p.has(role)}


def check_script(audit: Audit, sealed: bool) -> None:
    script = audit.script
    if script is None:
        return
    people = audit.participants
    admins = _names(people, "administrator")
    witnesses = _names(people, "internal-witness")
    exceptions = audit.of_type("exception")
    for n, e in enumerate(exceptions, start=1):
        if e.get("number") != n:
            audit.fail(e["seq"], f"exception numbered {e.get('number')!r}, expected {n}")
        if e.get("approved_by") not in admins:
            audit.fail(e["seq"], f"exception {e.get('number')} approved by {e.get('approved_by')!r}, who is not a "
                       "signed-in Ceremony Administrator")
        if not str(e.get("decision") or "").strip():
            audit.fail(e["seq"], f"exception {e.get('number')} has no decision")

    def excused(step: str | None, kind: str, before: int | None = None) -> bool:
        return any(e.get("step") == step and e.get("kind") == kind and (before is None or e["seq"] < before)
                   for e in exceptions)

    tracker = StepTracker(script)
    for r in audit.of_type("step-start", "step-end"):
        step_id = r.get("step")
        scripted = script.step(str(step_id))
        if r["type"] == "step-start":
            deviation = tracker.advance(str(step_id))
            if deviation and not excused(step_id, "deviation", r["seq"]):
                audit.fail(r["seq"], f"{deviation}, and no exception records it")
            role = scripted.role if scripted else "administrator"
            holders = _names(people, role)
            for name in r.get("performed_by") or []:
                if name not in holders:
                    audit.fail(r["seq"], f"step {step_id!r} performed by {name!r}, who did not sign in as {role}")
            if not r.get("performed_by"):
                audit.fail(r["seq"], f"step {step_id!r} names nobody who performed it")
        else:
            if r.get("outcome") == "failed" and not excused(step_id, "failure"):
                audit.fail(r["seq"], f"step {step_id!r} failed and no exception records it")
            if r.get("outcome") == "done" and scripted is not None and scripted.witness:
                w = r.get("witness") or {}
                if w.get("name") not in witnesses:
                    audit.fail(r["seq"], f"witnessed step {step_id!r} has no confirmation by the Internal Witness")
                elif w.get("confirmed") is not True and not excused(step_id, "witness"):
                    audit.fail(r["seq"], f"the Internal Witness did not confirm step {step_id!r} and no exception "
                               "records it")
    if sealed:
        missing = tracker.missing()
        noted = " ".join(str(e.get("what", "")) for e in exceptions if e.get("kind") == "deviation")
        for step_id in missing:
            if step_id not in noted:
                audit.fail(None, f"scripted step {step_id!r} was not performed and no exception records it")
        bags = {(r.get("bag"), r.get("when")) for r in audit.of_type("bag") if str(r.get("serial") or "").strip()}
        for bag in script.bags:
            for when in ("open", "reseal"):
                if (bag.id, when) not in bags:
                    audit.fail(None, f"no serial recorded for bag {bag.id!r} at {when}")
        out = {r.get("name") for r in audit.of_type("sign-out")}
        for p in people:
            if p.name not in out:
                audit.fail(None, f"{p.name!r} did not sign out")
    for r in audit.of_type("act-end"):
        if r.get("head") != r.get("prev") or r.get("words") != pgpwords.hex_to_words(str(r.get("head"))):
            audit.fail(r["seq"], "the chain head shown at the end of the act is not the chain's")


KEY_GENERATION_FLAGS = {"local": True, "sensitive": True, "always_sensitive": True, "sign": True, "decrypt": False,
                        "unwrap": False, "derive": False}


def check_evidence(audit: Audit) -> None:
    """What the evidence itself must show: a key generated in the HSM that cannot leave it (unless
    wrapped under a trusted key, for backup), and an offline workstation at a production root ceremony."""
    # NSS softokn never sets CKA_LOCAL: on its tokens a never-extractable, always-sensitive key is the proof instead.
    softokn = any(softokn_token((r.get("data") or {}).get("manufacturer"), (r.get("data") or {}).get("model"))
                  for r in audit.of_type("evidence") if r.get("name") == "token")
    for r in audit.of_type("evidence"):
        data = r.get("data") or {}
        if r.get("name") == "key" and r.get("step") == "key-generate":
            wrong = [f"{k}={data.get(k)}" for k, v in KEY_GENERATION_FLAGS.items() if data.get(k) is not v
                     and not (k == "local" and softokn and data.get("never_extractable") is True)]
            if not (data.get("never_extractable") is True or data.get("wrap_with_trusted") is True):
                wrong.append("extractable without CKA_WRAP_WITH_TRUSTED")
            if wrong:
                audit.fail(r["seq"], f"the key evidence does not show a key generated inside the HSM that cannot "
                           f"leave it: {', '.join(wrong)}")
        if r.get("name") == "offline-check" and not audit.header.get("rehearsal") and data.get("offline") is not True:
            audit.fail(r["seq"], "a production ceremony ran with a network interface up: "
                       + ", ".join(data.get("non_loopback_up") or ["?"]))
        if r.get("name") in facts.KINDS:
            for problem in facts.shape_problems(str(r.get("name")), r.get("data"), audit.header):
                audit.fail(r["seq"], f"{r.get('name')} evidence: {problem}")
    software = (audit.header.get("environment") or {}).get("software")
    if software is None:
        audit.notes.append("the header records no OS software hashes (environment.software): written before they "
                           "were recorded")
    else:
        for problem in facts.software_problems(software):
            audit.fail(0, problem)
    named = {str(r.get("name")) for r in audit.of_type("evidence")}
    for kind, what in (("script-approval", "who approved the script"), ("equipment", "the equipment's serials"),
                       ("machine-logs", "the host's logs")):
        if kind not in named:
            audit.notes.append(f"no {kind} evidence: the transcript does not record {what}")


def check_artifacts(audit: Audit, published: bool = True) -> tuple[set[str], set[str]]:
    """Files exist with their hashes; keys match the evidence. Returns (key SPKIs, subject SPKIs).

    A ceremony that did not complete (``published`` false: no seal) recorded what it staged, and the
    ceremony runner published none of it: a missing file is then what is expected, not a problem.
    """
    key_spkis = {str((r.get("data") or {}).get("spki_sha256")) for r in audit.of_type("evidence")
                 if r.get("name") == "key"}
    subject_spkis = {str((r.get("data") or {}).get("spki_sha256")) for r in audit.of_type("evidence")
                     if r.get("name") in ("csr", "certificate")}
    cert_hashes = {str((r.get("data") or {}).get("sha256")) for r in audit.of_type("evidence")
                   if r.get("name") == "certificate"}
    handed_over = facts.handed_over_files(audit.records)
    for r in audit.of_type("artifact"):
        rel = str(r.get("path"))
        target = audit.base / rel
        if not target.is_file() and rel in handed_over and r.get("kind") == "key-backup-share":
            custody = handed_over[rel]
            audit.notes.append(f"share file {rel} is not there: its page was handed over to "
                               f"{custody.get('handed_to') or custody.get('custodian')} in bag {custody.get('bag')} "
                               "and the file shredded, as the custody record says (docs/key-backup.md)")
            continue
        if not target.is_file():
            if published:
                audit.fail(r["seq"], f"artifact {rel} is missing (looked in {audit.base})")
            else:
                audit.notes.append(f"artifact {rel} was staged but never published: the ceremony did not complete")
            continue
        actual = sha256_file(target)
        if actual != r.get("sha256"):
            audit.fail(r["seq"], f"artifact {rel} changed after the ceremony: SHA-256 {actual}, recorded "
                       f"{r.get('sha256')}")
            continue
        if r.get("kind") in ARCHIVE_KINDS:  # its certificates are members, checked by audit.verify-archive
            continue
        obj = _load_public(target)
        if obj is None:
            continue
        digest = _spki_sha256(obj)
        if digest not in key_spkis | subject_spkis:
            audit.fail(r["seq"], f"artifact {rel} carries a key (SPKI SHA-256 {digest}) that the recorded key "
                       "evidence does not describe")
        if isinstance(obj, x509.Certificate):
            der = hashlib.sha256(obj.public_bytes(serialization.Encoding.DER)).hexdigest()
            if der not in cert_hashes:
                audit.fail(r["seq"], f"certificate {rel} does not match the certificate evidence of the ceremony")
    return key_spkis, subject_spkis


def check_seal(audit: Audit, key_spkis: set[str]) -> Any:
    """The seal: the last record, after the closing record, its signature over the whole file up to
    itself. Returns the sealing public key when the signature verifies (None otherwise)."""
    seals = audit.of_type("seal")
    if not seals:
        return None
    seal = seals[0]
    if len(seals) > 1 or seal is not audit.records[-1]:
        audit.fail(seals[-1]["seq"] if len(seals) > 1 else seal["seq"] + 1,
                   "records after the seal: the seal ends a transcript, nothing may follow it")
        return None
    close = audit.records[-2] if len(audit.records) >= 2 else {}
    if close.get("type") != "close" or close.get("status") != "sealed":
        audit.fail(seal["seq"], "the seal does not follow a closing record that says sealed")
        return None
    head = seal.get("head")
    if head != seal.get("prev") or seal.get("words") != pgpwords.hex_to_words(str(head)):
        audit.fail(seal["seq"], "the sealed chain head (hex or words) is not the head of the records before the seal")
        return None
    verifier = seal.get("verifier") or {}
    try:
        public = serialization.load_der_public_key(base64.b64decode(str(verifier.get("public_key"))))
        signature = base64.b64decode(str(seal.get("signature")))
        verify_seal_signature(public, str(seal.get("algorithm")), signature, seal_message(seal))
    except (InvalidSignature, ValueError, KeyError, TypeError):
        audit.fail(seal["seq"], "the seal's signature does not verify with the seal's public key over the "
                   "transcript and the seal's own fields")
        return None
    digest = _spki_sha256(public)
    if verifier.get("spki_sha256") != digest:
        audit.fail(seal["seq"], "the seal names another key than the one whose signature it carries")
        return None
    if key_spkis and digest not in key_spkis:
        audit.notes.append(f"the transcript is sealed by a key (SPKI SHA-256 {digest}) that this ceremony did not "
                           "generate; whether it may seal is decided by the trust anchor alone")
    rel = str(verifier.get("path"))
    target = audit.base / rel
    if target.is_file() and sha256_file(target) == verifier.get("sha256"):
        obj = _load_public(target)
        if obj is None or _spki_sha256(obj) != digest:
            audit.fail(seal["seq"], f"{rel} does not hold the key that sealed the transcript")
            return None
    audit.notes.append(f"the seal's signature ({seal.get('algorithm')}) verifies with the key it names "
                       f"(SPKI SHA-256 {digest}); what that key is worth is the trust anchor's question")
    return public


def _seal_time(audit: Audit) -> dt.datetime:
    seal = audit.records[-1]
    try:
        return dt.datetime.fromisoformat(str(seal.get("time")).replace("Z", "+00:00"))
    except ValueError:
        return dt.datetime.now(dt.UTC)


def check_anchor(audit: Audit, public: Any, anchor: TrustAnchor) -> bool:
    """Is the sealing key anchored? Also refuses a mixture of rehearsal and production."""
    candidates = certificates_in(audit.base)
    anchoring = anchor_seal(public, anchor, candidates, _seal_time(audit), audit.base)
    audit.anchoring = anchoring
    rehearsal = bool(audit.header.get("rehearsal"))
    if anchor.rehearsal != rehearsal:
        audit.fail(0, f"the header says {'a rehearsal' if rehearsal else 'production'}, the trust anchor "
                   f"{anchor.source} is a {'rehearsal' if anchor.rehearsal else 'production'} root: a rehearsal "
                   "can never pass for production, nor the reverse")
        return False
    if anchoring.certificate is not None and is_rehearsal_certificate(anchoring.certificate) != rehearsal:
        audit.fail(0, "the sealing key's certificate and the header disagree on whether this was a rehearsal")
        return False
    for path, cert in candidates:
        if is_rehearsal_certificate(cert) != rehearsal and anchor.spki_sha256 == spki_sha256(cert.public_key()):
            audit.fail(0, f"{path.name}: a certificate of the anchor's key that disagrees with the header on "
                       "rehearsal")
            return False
    audit.notes.append(anchoring.how)
    return anchoring.anchored


def artifacts_base(path: Path, artifacts: Path | None) -> Path:
    """Where the artifacts are: ``artifacts``, else where the transcript's header says (relative to it)."""
    if artifacts is not None:
        return artifacts
    try:
        with open(path, "rb") as handle:
            header = json.loads(handle.readline())
        return path.parent / str(header.get("artifacts_base", "."))
    except (OSError, ValueError, AttributeError):
        return path.parent


def head_matches(seal: dict[str, Any], expected: str) -> bool:
    """Is ``expected`` (hex, any case, colons or spaces allowed; or the 32 PGP words, any case) the seal's head?"""
    compact = "".join(ch for ch in expected if ch not in ": \t\n").lower()
    if len(compact) == 64 and all(ch in "0123456789abcdef" for ch in compact):
        return compact == str(seal.get("head"))
    words = [w.lower() for w in expected.split()]
    return words == [str(w).lower() for w in seal.get("words") or []]


def verify(path: str | Path, artifacts: str | Path | None = None, *, trust: TrustAnchor | None = None,
           rehearsal: bool = False, expect_head: str | None = None, allowed_signers: Path | None = None) -> Audit:
    """Verify one transcript; artifacts are looked up under ``artifacts`` or where the header says.

    With ``trust`` the seal must be anchored (status ``not-anchored`` otherwise) and a rehearsal
    transcript passes only with ``rehearsal`` (status ``rehearsal`` otherwise). Without ``trust`` the
    verdict is about the file alone, and :attr:`Audit.exit_code` never says it passed.
    """
    path = Path(path)
    audit = Audit(path=path, base=Path(artifacts) if artifacts else path.parent, trust=trust)
    chain_ok = read_chain(audit)
    if audit.header and artifacts is None:
        audit.base = path.parent / str(audit.header.get("artifacts_base", "."))
    if not chain_ok:
        audit.status = "invalid"
        return audit
    check_header(audit)
    check_people(audit)
    last = audit.records[-1]
    sealed_file = last.get("type") == "seal"
    close = audit.records[-2] if sealed_file and len(audit.records) >= 2 else last if last.get("type") == "close" \
        else None
    if audit.truncated and close is not None and close.get("status") == "sealed" and not sealed_file:
        audit.status = "incomplete"
        audit.notes.append("the seal itself is cut short after the closing record: the file was truncated; "
                           "the transcript does not pass")
        return audit
    if audit.truncated and close is not None:
        audit.fail(len(audit.records), "bytes after the last record of a closed transcript (after the "
                   + ("seal" if sealed_file else "closing record") + "): added after the ceremony")
    for r in audit.of_type("close"):
        if r is not close:
            audit.fail(r["seq"] + 1, "records after the " + ("seal" if audit.of_type("seal") else "closing record")
                       + ": added after the ceremony")
            audit.status = "invalid"
            return audit
    sealed_close = close is not None and close.get("status") == "sealed"
    check_script(audit, sealed_close)
    check_evidence(audit)
    key_spkis, _ = check_artifacts(audit, published=sealed_close)
    public = check_seal(audit, key_spkis)
    if close is None:
        if not audit.problems:
            audit.status = "incomplete"
        audit.notes.append(f"no closing record: the chain verifies up to record {len(audit.records) - 1}, the "
                           "ceremony did not finish")
        return audit
    if close.get("records") != len(audit.records):
        audit.fail(close["seq"], "the closing record miscounts the records")
    if close.get("status") not in ("sealed", "failed", "unsealed", "interrupted"):
        audit.fail(close["seq"], f"unknown closing status {close.get('status')!r}")
    if sealed_close and public is None and not audit.problems:
        audit.fail(close["seq"], "closed as sealed, but no valid seal follows the closing record")
    elif not sealed_close and audit.of_type("seal"):
        audit.fail(close["seq"], "a seal is present but the closing record does not say sealed")
    if expect_head is not None and public is not None and not head_matches(audit.records[-1], expect_head):
        audit.fail(audit.records[-1]["seq"], "the final chain head is not the one the witnesses copied on paper "
                   f"({expect_head.strip()[:80]}): this is not the transcript of that ceremony, or it was rewritten")
    if audit.problems:
        audit.status = "invalid"
    elif not sealed_close:
        audit.status = str(close.get("status"))
    elif trust is None:
        audit.status = "intact"
    elif not check_anchor(audit, public, trust):
        audit.status = "invalid" if audit.problems else "not-anchored"
    elif audit.header.get("rehearsal") and not rehearsal:
        audit.status = "rehearsal"
    else:
        audit.status = "intact"
    if allowed_signers is not None and public is not None:
        audit.attestation = attestations.check(path, allowed_signers)
        audit.notes += audit.attestation.notes
        if audit.attestation.problems and audit.status == "intact":
            audit.status = "attestation"
    return audit


def report_lines(audit: Audit) -> list[str]:
    """A readable summary for the terminal: who, what, which equipment, the outcome."""
    out: list[str] = [f"transcript: {audit.path}"]
    h = audit.header
    if h:
        s = h.get("script", {})
        out.append(f"ceremony: {s.get('name')} (script v{s.get('version')}, SHA-256 {s.get('sha256')})"
                   + ("  — REHEARSAL" if h.get("rehearsal") else ""))
        d = h.get("definition", {})
        out.append(f"definition: {d.get('path')} (SHA-256 {d.get('sha256')})")
        env = h.get("environment", {})
        out.append(f"host: {env.get('hostname')}, {env.get('kernel')}; suite {env.get('suite_version')}, sources "
                   f"SHA-256 {(env.get('sources') or {}).get('sha256')}")
        out.append(f"started: {h.get('time')}")
    if audit.participants:
        out.append("participants:")
        for p in audit.participants:
            out.append(f"  {p.name}: {', '.join(p.roles)} (identity {p.id_document}, checked by {p.id_checked_by})")
    for r in audit.of_type("evidence"):
        if r.get("name") == "token":
            t = r.get("data") or {}
            out.append(f"token: {t.get('label')} serial {t.get('serial')} ({t.get('manufacturer')} {t.get('model')}, "
                       f"firmware {t.get('firmware_version')}); module {t.get('module_path')} "
                       f"SHA-256 {t.get('module_sha256')}")
    steps = audit.of_type("step-end")
    out.append(f"steps: {sum(1 for r in steps if r.get('outcome') == 'done')} done, "
               f"{sum(1 for r in steps if r.get('outcome') == 'failed')} failed")
    for e in audit.of_type("exception"):
        out.append(f"exception {e.get('number')}: {e.get('what')} — {e.get('decision')} ({e.get('approved_by')})")
    for r in audit.of_type("artifact"):
        out.append(f"artifact: {r.get('path')} ({r.get('kind')}) SHA-256 {r.get('sha256')}")
    for r in audit.of_type("act-end"):
        out.append(f"act {r.get('act')}: chain head {r.get('head')}")
    for note in audit.notes:
        out.append(f"note: {note}")
    for problem in audit.problems:
        out.append(f"FAIL {problem}")
    for finding in audit.attestation.problems if audit.attestation is not None else []:
        out.append(f"FAIL attestation: {finding}")
    out.append(verdict_of(audit))
    return [verdict_of(audit), *out]


def verdict_of(audit: Audit) -> str:
    """The verdict in one line: the first line and the last of the report."""
    verdict = {"intact": ("INTACT: the transcript verifies, sealed by a key anchored in the trust anchor"
                          + (" (a REHEARSAL, accepted with --rehearsal)" if audit.header.get("rehearsal") else "")
                          if audit.trust is not None else
                          "NOT VERIFIED: chain, records and seal are consistent, but no trust anchor was given "
                          "(--trust ROOT): nothing says who sealed it"),
               "not-anchored": "NOT ANCHORED: the seal verifies, but its key has no certification path to the trust "
                               "anchor among the artifacts; the transcript does not pass",
               "rehearsal": "REHEARSAL: this is a rehearsal transcript, never a production ceremony; it passes only "
                            "with --rehearsal",
               "incomplete": "INCOMPLETE: the ceremony did not finish; the transcript does not pass",
               "attestation": "ATTESTATION NOT VERIFIED: the transcript verifies, but "
                              + (audit.attestation.problems[0] if audit.attestation and audit.attestation.problems
                                 else "its attestation does not"),
               "invalid": "INVALID" + (f": first bad record {audit.problems[0].seq}"
                                       if audit.problems and audit.problems[0].seq is not None else ""),
               }.get(audit.status, f"NOT SEALED: the ceremony ended {audit.status}; the transcript does not pass")
    return verdict
