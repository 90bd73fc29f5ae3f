"""The ceremony transcript: a hash-chained JSON Lines record, sealed inside the HSM by the CA key.

Auditors must establish what happened at a ceremony without trusting the workstation it ran on.
So the transcript is append-only JSON Lines: every record carries ``seq`` (its position) and
``prev`` (the SHA-256 of the previous record's exact line), the header carries the SHA-256 of the
ceremony script and of the PKI definition and the ``rehearsal`` flag, and at the end the chain
head is signed by the CA key the ceremony used, inside the HSM, while its session is open. Each
record is written with one ``write`` and fsynced, so a power cut or ``kill -9`` leaves a file
that verifies up to its last complete record and is reported as incomplete.

The ceremony code talks to :class:`TranscriptRecorder` through the :class:`~ceremony.transcript.recorder.Recorder`
protocol (``step``, ``evidence``, ``artifact``, ``say``, ``seal``). The transcript itself runs the
acts around the ceremony: sign-in (identity checked, roles, separation of duties, refused before
anything happens), bags opened, then after the ceremony bags resealed and sign-out. Steps are
matched against the script; anything else (an unscripted, skipped, repeated or out-of-order
step, a failure, a witness who does not confirm) becomes a numbered exception record with its
decision and who approved it. Nothing proceeds silently.

Where answers come from: a terminal (interactive, ``rich``), an answers file (YAML), or, in a
rehearsal, generated people marked "(rehearsal)" and scripted answers.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import secrets
import socket
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from rich.console import Console
from rich.panel import Panel
from rich.prompt import Confirm, InvalidResponse, Prompt
from rich.text import Text

from ceremony.common import pgpwords
from ceremony.common.display import make_console, text
from ceremony.common.errors import CeremonyError
from ceremony.common.fileio import sha256_file
from ceremony.common.terminal_text import NO, YES, say
from ceremony.hsm.keys import spki_der
from ceremony.hsm.signers import hash_for
from ceremony.transcript import evidence as facts
from ceremony.transcript.attestation import entries as attestation_entries
from ceremony.transcript.evidence import software_evidence
from ceremony.transcript.participants import (
    REHEARSAL_PEOPLE,
    ROLES,
    Participant,
    ParticipantError,
    Rules,
    check_separation,
    first_with,
    parse_participants,
    rehearsal_participants,
    rules_for,
)
from ceremony.transcript.recorder import busy
from ceremony.transcript.scriptbook import Bag, Script, Step, load_script
from ceremony.x509.files import public_key_of, read_public_object

FORMAT = "ceremony-transcript/2"


GENESIS = "0" * 64


SEAL_CONTEXT = b"ceremony-transcript-seal/2:"


class TranscriptError(CeremonyError):
    """The transcript cannot be written or continued (an interrupted one not acknowledged, ...)."""

    exit_code = 11


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def canonical(record: Mapping[str, Any]) -> bytes:
    """The exact bytes of a record's line, the ones the chain hashes: Python's ``json.dumps`` with keys sorted (by
    code point), no whitespace (``,`` and ``:``), non-ASCII characters written as themselves in UTF-8 (only
    ``"``, ``\\`` and control characters are escaped), integers in decimal, no NaN or Infinity. docs/transcripts.md
    states the form exactly; the verifier refuses a line that is not ``canonical(json.loads(line))``."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def seal_message(seal_record: Mapping[str, Any]) -> bytes:
    """What the sealing key signs: a fixed context, then the seal record's own line without its
    ``signature`` field. The record's ``prev`` is the SHA-256 of the closing record's line, which chains
    every line before it, so the signature covers every byte of the file up to the signature itself:
    all records, the closing record, and the seal's metadata (verifier, time, head, words, algorithm)."""
    return SEAL_CONTEXT + canonical({k: v for k, v in seal_record.items() if k != "signature"})


def sources_sha256() -> dict[str, Any]:
    """SHA-256 over the suite's installed sources (every file of the package, sorted by path)."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    count = 0
    for p in sorted(root.rglob("*")):
        if not p.is_file() or "__pycache__" in p.parts or p.suffix in (".pyc", ".pyo"):
            continue
        rel = p.relative_to(root).as_posix()
        h.update(hashlib.sha256(p.read_bytes()).hexdigest().encode() + b"  " + rel.encode() + b"\n")
        count += 1
    return {"package": str(root), "files": count, "sha256": h.hexdigest()}


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment_evidence(hsm_modules: Iterable[str] = ()) -> dict[str, Any]:
    """The host and the software at the start of a ceremony: the suite's sources hash, and the OS software that
    matters (python, openssl, the HSM client libraries, the compiled cryptography and PKCS#11 bindings) with
    package versions and the SHA-256 of the files actually used (:func:`evidence.software_evidence`)."""
    uname = platform.uname()
    os_release = ""
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                os_release = line.split("=", 1)[1].strip('"')
    return {
        "hostname": socket.gethostname(),
        "kernel": f"{uname.system} {uname.release} {uname.version}",
        "machine": uname.machine,
        "os": os_release,
        "python": platform.python_version(),
        "suite_version": _version("ceremony-suite"),
        "sources": sources_sha256(),
        "libraries": {d: _version(d) for d in ("cryptography", "python-pkcs11", "pkilint", "pydantic")},
        "software": software_evidence(hsm_modules),
    }


class Answers(Protocol):
    """The people in the room: who signs in, bag serials, confirmations, decisions on exceptions."""

    @property
    def source(self) -> Mapping[str, Any]:
        """Where the answers come from, for the transcript header (terminal, answers file, rehearsal)."""

    def participants(self, rules: Rules) -> list[Participant]: ...

    def bag_serial(self, bag: Bag, when: str) -> str: ...

    def confirm(self, who: Participant, question: str) -> bool: ...

    def decide(self, approver: Participant, what: str) -> tuple[bool, str]:
        """``(proceed, decision text)`` for an exception."""

    def acknowledge_interrupted(self, paths: list[Path]) -> bool: ...

    def acknowledge_failure(self, admin: Participant, what: str) -> str:
        """The Administrator's note on a failure that stopped the ceremony (``""`` for none)."""

    def evidence_facts(self, script: Script, started: dt.datetime) -> EvidenceFacts:
        """What the people say beyond the sign-in: script approval, equipment, people entering or leaving,
        which logs to hash at the close, what became of earlier backup shares (:mod:`.evidence`)."""


@dataclasses.dataclass
class EvidenceFacts:
    """People-supplied evidence for one ceremony; ``None`` or empty: not given (the verifier notes it)."""

    script_approval: dict[str, Any] | None = None
    equipment: dict[str, Any] | None = None
    facility_access: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    machine_logs: list[str] = dataclasses.field(default_factory=lambda: list(facts.DEFAULT_LOG_FILES))
    share_custody: list[dict[str, Any]] = dataclasses.field(default_factory=list)


class RehearsalAnswers:
    """Generated people (names marked "(rehearsal)") and scripted answers: no prompts."""

    source: ClassVar[dict[str, Any]] = {"kind": "rehearsal", "confirmations": "generated"}

    def __init__(self, definition: Any, directory: Path | None = None) -> None:
        self.definition = definition
        # A bag is opened with the serial it was resealed with at the previous ceremony of the directory, as in
        # a real room: the rehearsal's bags are continuous for audit.verify-all like production's must be.
        self.resealed = last_reseal_serials(directory) if directory is not None else {}

    def participants(self, rules: Rules) -> list[Participant]:
        return rehearsal_participants(rules, self.definition)

    def bag_serial(self, bag: Bag, when: str) -> str:
        if when == "open" and bag.id in self.resealed:
            return self.resealed[bag.id]
        return f"REHEARSAL-{bag.id.upper()}-{secrets.token_hex(3).upper()}"

    def evidence_facts(self, script: Script, started: dt.datetime) -> EvidenceFacts:
        """Generated and marked "(rehearsal)": the approval of this very script, the rehearsal's equipment, a
        technician who comes in and leaves again."""
        approver = f"{REHEARSAL_PEOPLE['administrator']} (rehearsal)"
        return EvidenceFacts(script_approval=facts.rehearsal_script_approval(script.version, script.sha256, approver,
                                                                             started),
                             equipment=facts.rehearsal_equipment(),
                             facility_access=facts.rehearsal_facility_access(started))

    def confirm(self, who: Participant, question: str) -> bool:
        return True

    def decide(self, approver: Participant, what: str) -> tuple[bool, str]:
        return True, "continue (rehearsal: approved by the rehearsal administrator)"

    def acknowledge_interrupted(self, paths: list[Path]) -> bool:
        return False

    def acknowledge_failure(self, admin: Participant, what: str) -> str:
        return "(rehearsal: acknowledged automatically)"


class FileAnswers:
    """Answers from a YAML file, for unattended runs and tests::

        participants: [{name, roles: [...], id_document, id_checked_by}, ...]
        bags: {open: {hsm: SERIAL, ...}, reseal: {hsm: SERIAL, ...}}
        confirm: true                 # witness confirmations given in advance (absent: asked at the terminal)
        exceptions: stop | continue   # decision on a deviation from the script (default stop)
        acknowledge_interrupted: [transcript file names]
        script_approval: {approved_by, role, version, sha256, approved_at}
        equipment: {workstation_serial, boot_medium_sha256, removable_media: [serials]}
        facility_access: [{name, role, time, direction: enter | leave, reason}]
        machine_logs: [absolute paths of log files hashed at the close]   # default /var/log/syslog, auth.log
        share_custody: [{file, action: shredded | handed-over, by, witness, time}]
    """

    _KEYS: ClassVar[set[str]] = {"participants", "bags", "confirm", "exceptions", "acknowledge_interrupted",
                                 "script_approval", "equipment", "facility_access", "machine_logs", "share_custody"}

    def __init__(self, path: Path, console: Console | None = None, lang: str = "en") -> None:
        self.path = Path(path)
        self.console = console
        self.lang = lang
        try:
            raw = self.path.read_bytes()
            data = yaml.safe_load(raw.decode("utf-8"))
        except OSError as exc:
            raise TranscriptError(f"{self.path}: cannot read the answers file: {exc.strerror}") from None
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise TranscriptError(f"{self.path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise TranscriptError(f"{self.path}: an answers file is a mapping ({', '.join(sorted(self._KEYS))})")
        unknown = set(data) - self._KEYS
        if unknown:
            raise TranscriptError(f"{self.path}: {sorted(unknown)[0]}: unknown key "
                                  f"(allowed: {', '.join(sorted(self._KEYS))})")
        self.people = parse_participants(data.get("participants"), str(self.path))
        bags = data.get("bags") or {}
        if not isinstance(bags, dict) or set(bags) - {"open", "reseal"}:
            raise TranscriptError(f"{self.path}: bags: a mapping with 'open' and 'reseal', each bag id: serial")
        self.bags = {k: dict(v or {}) for k, v in bags.items()}
        self.sha256 = hashlib.sha256(raw).hexdigest()
        # No default: a file that says nothing about confirmations leaves them to the witness at the terminal.
        self.confirmations: bool | None = data.get("confirm")
        if self.confirmations is not None and not isinstance(self.confirmations, bool):
            raise TranscriptError(f"{self.path}: confirm: true or false (or absent: asked at the terminal)")
        self.exceptions = data.get("exceptions", "stop")
        if self.exceptions not in ("stop", "continue"):
            raise TranscriptError(f"{self.path}: exceptions: {self.exceptions!r} is not allowed (allowed: stop, "
                                  "continue)")
        self.acknowledged = [str(x) for x in data.get("acknowledge_interrupted") or []]
        where = str(self.path)
        self.facts = EvidenceFacts(
            script_approval=facts.parse_script_approval(data["script_approval"], where)
            if data.get("script_approval") is not None else None,
            equipment=facts.parse_equipment(data["equipment"], where) if data.get("equipment") is not None else None,
            facility_access=facts.parse_facility_access(data.get("facility_access"), where),
            machine_logs=facts.parse_machine_logs(data.get("machine_logs"), where),
            share_custody=facts.parse_share_custody(data.get("share_custody"), where))

    def participants(self, rules: Rules) -> list[Participant]:
        return list(self.people)

    def check(self, script: Script) -> None:
        """Refuse up front (before any file exists) an answers file that lacks a bag serial the script needs,
        or whose script approval is of another version of the script."""
        for when in ("open", "reseal"):
            for bag in script.bags:
                self.bag_serial(bag, when)
        if self.facts.script_approval is not None:
            facts.check_approval(self.facts.script_approval, script.name, script.version, script.sha256,
                                 str(self.path))

    def evidence_facts(self, script: Script, started: dt.datetime) -> EvidenceFacts:
        return self.facts

    def bag_serial(self, bag: Bag, when: str) -> str:
        serial = self.bags.get(when, {}).get(bag.id)
        if not isinstance(serial, str | int) or not str(serial).strip():
            raise TranscriptError(f"{self.path}: bags.{when}.{bag.id}: the serial of the tamper-evident bag "
                                  f"{bag.title['en']!r} is required")
        return str(serial).strip()

    @property
    def source(self) -> dict[str, Any]:
        """What the transcript header says about where the answers came from."""
        return {"kind": "answers-file", "path": str(self.path), "sha256": self.sha256,
                "confirmations": "terminal" if self.confirmations is None else "in advance, from the file"}

    def confirm(self, who: Participant, question: str) -> bool:
        if self.confirmations is not None:
            return self.confirmations
        if self.console is None or sys.stdin is None or not sys.stdin.isatty():
            raise TranscriptError(f"{self.path}: confirm: not given, so {who.name} confirms at the terminal, and "
                                  "there is none; run at a terminal, or add 'confirm: true' (the transcript then "
                                  "records the confirmations as given in advance by this file)")
        return TerminalAnswers(self.console, self.lang).confirm(who, question)

    def decide(self, approver: Participant, what: str) -> tuple[bool, str]:
        if self.exceptions == "continue":
            return True, f"continue (answers file {self.path.name})"
        return False, f"stop (answers file {self.path.name})"

    def acknowledge_interrupted(self, paths: list[Path]) -> bool:
        return all(p.name in self.acknowledged for p in paths)

    def acknowledge_failure(self, admin: Participant, what: str) -> str:
        if self.console is not None and sys.stdin is not None and sys.stdin.isatty():
            return TerminalAnswers(self.console, self.lang).acknowledge_failure(admin, what)
        return f"(no one at a terminal; answers file {self.path.name})"


def _operator_input(method: Any) -> Any:
    """No one at the terminal (standard input closed) ends the ceremony with one message, not a traceback."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except EOFError:
            raise TranscriptError("standard input closed while the ceremony waited for an answer at the "
                                  "terminal: run it at a terminal, or give the sign-in and confirmations "
                                  "with --answers FILE (docs/transcripts.md)") from None

    return wrapper


class _Confirm(Confirm):
    """Rich's yes/no prompt, answered in the terminal's language (o/n in French, y/n in English)."""

    lang = "en"

    def process_response(self, value: str) -> bool:
        answer = value.strip().lower()
        if answer in YES[self.lang] or answer in YES["en"]:
            return True
        if answer in NO[self.lang]:
            return False
        raise InvalidResponse(Text(f"{'/'.join(YES[self.lang][:1] + NO[self.lang][:1])} ?"))


def _confirm_class(lang: str) -> type[_Confirm]:
    return type(f"Confirm_{lang}", (_Confirm,), {"lang": lang, "choices": [YES[lang][0], NO[lang][0]]})


class TerminalAnswers:
    """Prompts in the terminal, in the room's language; the current act and step are on screen above."""

    source: ClassVar[dict[str, Any]] = {"kind": "terminal"}

    def evidence_facts(self, script: Script, started: dt.datetime) -> EvidenceFacts:
        """At the terminal nothing beyond the sign-in is asked (the walks the operators rehearse stay as they
        are): the machine facts are collected, and approval, equipment and access come from --answers."""
        return EvidenceFacts()

    def __init__(self, console: Console, lang: str = "en") -> None:
        self.console = console
        self.lang = lang
        self._confirm = _confirm_class(lang)
        self._typed: list[dict[str, Any]] = []

    def _t(self, key: str, **values: Any) -> str:
        return say(self.lang, key, **values)

    def _ask(self, prompt: str, **options: Any) -> str:
        return Prompt.ask(Text(prompt), console=self.console, **options)

    @_operator_input
    def participants(self, rules: Rules) -> list[Participant]:
        """Sign-in at the terminal. Called again after a refusal (:meth:`refused`): what was typed is kept,
        each person's roles can be kept (Enter), changed, or the person removed (``-``), then people added."""
        self.console.print(text((self._t("sign_in"), "bold"), self._t("roles_needed", roles=", ".join(
            f"{ROLES[r][self.lang]} ({r})" for r in sorted(rules.required_roles)))))
        if rules.crypto_officer_quorum > 1:
            self.console.print(self._t("quorum", n=rules.crypto_officer_quorum))
        raw: list[dict[str, Any]] = []
        for person in self._typed:
            roles = self._ask_roles(person["name"], ", ".join(person["roles"]), removable=True)
            if roles is None:
                self.console.print(self._t("removed", name=person["name"]))
                continue
            raw.append({**person, "roles": roles})
        while True:
            name = self._ask(self._t("ask_name"), default="")
            if not name.strip():
                break
            roles = self._ask_roles(name, None, removable=False) or []
            doc = self._ask(self._t("ask_id", name=name))
            checker = self._ask(self._t("ask_checker", name=name))
            raw.append({"name": name, "roles": roles, "id_document": doc, "id_checked_by": checker})
        self._typed = raw
        return parse_participants(raw, "sign-in")

    def _ask_roles(self, name: str, current: str | None, *, removable: bool) -> list[str] | None:
        prompt = self._t("ask_roles", name=name, roles=", ".join(ROLES),
                         keep=self._t("keep_hint") if removable else "")
        while True:
            answer = self._ask(prompt, **({"default": current} if current else {}))
            if removable and answer.strip() == "-":
                return None
            roles = [r.strip() for r in answer.split(",") if r.strip()]
            unknown = [r for r in roles if r not in ROLES]
            if roles and not unknown:
                return roles
            self.console.print(self._t("not_a_role", roles=", ".join(unknown) or self._t("none_given")),
                               style="red")

    def refused(self, problem: str) -> bool:
        """Show why the sign-in was refused; the sign-in is then asked again (nothing was written yet)."""
        self.console.print(text((self._t("refused"), "bold red"), problem))
        self.console.print(self._t("refused_help"))
        return True

    @_operator_input
    def bag_serial(self, bag: Bag, when: str) -> str:
        while True:
            serial = self._ask(self._t("bag_open" if when == "open" else "bag_reseal", bag=bag.title[self.lang]))
            if serial.strip():
                return serial.strip()

    @_operator_input
    def confirm(self, who: Participant, question: str) -> bool:
        return bool(self._confirm.ask(Text(f"{who.name}: {question}"), console=self.console))

    @_operator_input
    def decide(self, approver: Participant, what: str) -> tuple[bool, str]:
        self.console.print(text((self._t("exception"), "bold yellow"), f" {what}"))
        proceed = bool(self._confirm.ask(Text(self._t("continue_q", name=approver.name)), console=self.console))
        reason = self._ask(self._t("decision_q"))
        return proceed, ("continue" if proceed else "stop") + (f": {reason}" if reason.strip() else "")

    @_operator_input
    def acknowledge_failure(self, admin: Participant, what: str) -> str:
        self.console.print(text((self._t("stopped"), "bold red"), f" {what}"))
        return self._ask(self._t("failure_note", name=admin.name), default="").strip()

    @_operator_input
    def acknowledge_interrupted(self, paths: list[Path]) -> bool:
        for p in paths:
            self.console.print(text((self._t("interrupted"), "bold red"), self._t("interrupted_line", path=p)))
        return bool(self._confirm.ask(Text(self._t("new_transcript_q")), console=self.console))


class TranscriptWriter:
    """Creates the file exclusively and appends one fsynced line per record."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        except FileExistsError:
            raise TranscriptError(f"{self.path}: a transcript exists already; transcripts are never "
                                  "overwritten or continued") from None
        except OSError as exc:
            raise TranscriptError(f"{self.path}: cannot create the transcript: {exc.strerror}") from None
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.seq = 0
        self.head = GENESIS

    def write(self, type_: str, **fields: Any) -> dict[str, Any]:
        record = {"seq": self.seq, "prev": self.head, "type": type_, "time": utc_now(), **fields}
        self.write_records([record])
        return record

    def write_records(self, records: list[dict[str, Any]]) -> None:
        """Append records composed ahead (the closing record and the seal, signed before either is
        written), in one write and one fsync."""
        data = b""
        for record in records:
            if record["seq"] != self.seq or record["prev"] != self.head:
                raise TranscriptError(f"record {record['seq']} was composed for another place in the chain")
            line = canonical(record)
            data += line + b"\n"
            self.head = line_hash(line)
            self.seq += 1
        os.write(self._fd, data)
        os.fsync(self._fd)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


class StepTracker:
    """Where the ceremony is in its script; says whether a step is as scripted or a deviation.

    Shared with the verifier, which replays the same decisions from the records.
    """

    def __init__(self, script: Script) -> None:
        self.script = script
        self.steps = script.steps
        self.done = -1  # index of the last scripted step started
        self.started: set[str] = set()

    def advance(self, step_id: str) -> str | None:
        """Move to ``step_id``; return ``None`` if scripted, else a description of the deviation."""
        j = self.script.index(step_id)
        if j is None:
            return f"step {step_id!r} is not in the script {self.script.name!r}"
        deviation = None
        if j == self.done + 1:
            pass
        elif j == self._block_start() and self.steps[j].repeat:
            pass  # the next round of a repeated block starts again at its first step
        elif j > self.done + 1:
            skipped = [s.id for s in self.steps[self.done + 1:j] if s.id not in self.started]
            if skipped:
                deviation = f"step {step_id!r} started before the scripted step(s) {', '.join(skipped)}"
        elif step_id in self.started and not self.steps[j].repeat:
            deviation = f"step {step_id!r} repeated, the script has it once"
        else:
            deviation = f"step {step_id!r} out of order (after {self.steps[self.done].id!r})"
        self.done = j
        self.started.add(step_id)
        return deviation

    def _block_start(self) -> int:
        """First step of the run of ``repeat`` steps that ends at the current step (-1 if none)."""
        k = self.done
        if k < 0 or not self.steps[k].repeat:
            return -1
        while k > 0 and self.steps[k - 1].repeat:
            k -= 1
        return k

    def missing(self) -> list[str]:
        return [s.id for s in self.steps if s.id not in self.started]


def _relative(path: Path, base: Path) -> str:
    p = Path(path)
    p = p if p.is_absolute() else Path.cwd() / p
    return Path(os.path.relpath(p.resolve(), base.resolve())).as_posix()


def _public_key_from_file(path: Path) -> Any:
    found = read_public_object(path)
    if found is None or isinstance(found, x509.CertificateSigningRequest):
        raise TranscriptError(f"{path}: neither a certificate nor a public key; cannot name it as the seal's "
                              "verifier")
    return public_key_of(found)


#: The DER SubjectPublicKeyInfo of a key (the transcript's name for keys.spki_der).
spki = spki_der


class TranscriptRecorder:
    """Writes the transcript while showing the ceremony on the console (like ConsoleRecorder)."""

    def __init__(self, writer: TranscriptWriter, script: Script, rules: Rules, people: list[Participant],
                 answers: Answers, console: Console, rehearsal: bool, base: Path, lang: str = "en") -> None:
        self.writer = writer
        self.lang = lang
        self.script = script
        self.rules = rules
        self.participants = people
        self.answers = answers
        self.console = console
        self.rehearsal = rehearsal
        self.base = base
        self.path = writer.path
        self.tracker = StepTracker(script)
        self.exceptions = 0
        self.sealed = False
        self.closed = False
        self._act: str | None = None
        self._step: str | None = None
        self._failure_recorded = False
        self._signed_out = False
        self.heads: list[tuple[str, str]] = []
        self.started = dt.datetime.now(dt.UTC)
        self.facts = EvidenceFacts(machine_logs=[])

    # people ------------------------------------------------------------------------------------------
    def holder(self, role: str) -> Participant:
        p = first_with(self.participants, role)
        if p is None:
            raise TranscriptError(f"nobody signed in as {ROLES[role]['en']}")
        return p

    def performers(self, role: str) -> list[str]:
        people = [p.name for p in self.participants if p.has(role)]
        if role in ("crypto-officer", "custodian"):
            return people
        return people[:1]

    # what the room sees, in its language ----------------------------------------------------------------
    def _t(self, key: str, **values: Any) -> str:
        return say(self.lang, key, **values)

    def _title(self, act_id: str) -> str:
        act = self.script.act(act_id)
        if act is None or not act.title:
            return act_id
        return act.title.get(self.lang) or act.title["en"]

    def _step_title(self, step_id: str, description: str) -> tuple[int, str]:
        """(number of the step in the script, its title in the room's language); unscripted: (0, description)."""
        j = self.script.index(step_id)
        if j is None:
            return 0, description
        return j + 1, self.script.steps[j].title.get(self.lang) or description

    def _show_next(self, step_id: str) -> None:
        j = self.script.index(step_id)
        if j is None:
            return
        steps, n = self.script.steps, len(self.script.steps)

        def title(k: int) -> str:
            return steps[k].title.get(self.lang) or steps[k].id

        if steps[j].repeat and (j + 1 == n or not steps[j + 1].repeat):
            # The end of a repeated block (one round per CRL of a batch): only the ceremony knows whether
            # another round follows, so both possibilities are shown, never a wrong one.
            first = j
            while first > 0 and steps[first - 1].repeat:
                first -= 1
            after = self._t("next_after", k=j + 2, n=n, title=title(j + 1)) if j + 1 < n else self._t("last_after")
            self.console.print(self._t("next_round", k=first + 1, n=n, title=title(first), after=after), style="dim")
        elif j + 1 < n:
            self.console.print(self._t("next", k=j + 2, n=n, title=title(j + 1)), style="dim")
        else:
            self.console.print(self._t("last"), style="dim")

    # acts -----------------------------------------------------------------------------------------------

    def enter_act(self, act_id: str) -> None:
        if self._act == act_id:
            return
        if self._act is not None:
            self.end_act()
        n = [a.id for a in self.script.acts].index(act_id) + 1 if self.script.act(act_id) else 0
        self._act = act_id
        self.console.rule(text((self._t("act", n=n, m=len(self.script.acts), title=self._title(act_id)), "bold"),
                               self._t("rehearsal") if self.rehearsal else ""))
        self.writer.write("act-start", act=act_id)

    def end_act(self) -> None:
        """Show the chain head as hex and PGP words; the Internal Witness copies it onto the paper script."""
        if self._act is None:
            return
        head = self.writer.head
        words = pgpwords.hex_to_words(head)
        acts = [a.id for a in self.script.acts]
        self.show_head(self._t("head_title", n=acts.index(self._act) + 1 if self._act in acts else self._act), head)
        witness = self.holder("internal-witness")
        copied = self.answers.confirm(witness, self._t("head_q"))
        self.writer.write("act-end", act=self._act, head=head, words=words, copied_by=witness.name,
                          confirmed=copied)
        self.heads.append((self._act, head))
        self._act = None

    def show_head(self, title: str, head: str) -> None:
        body = "\n".join([f"{head[i:i + 32]}" for i in (0, 32)] + pgpwords.lines(head))
        self.console.print(Panel(Text(body), title=Text(title), expand=False))

    # the Recorder protocol ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def step(self, step_id: str, description: str) -> Iterator[None]:
        if self.sealed:
            raise TranscriptError(f"step {step_id!r} after the seal: the seal must close the ceremony")
        scripted = self.script.step(step_id)
        deviation = self.tracker.advance(step_id)
        if scripted is not None:
            self.enter_act(scripted.act)
        elif self._act is None:
            self.enter_act(self.script.steps[0].act)
        role = scripted.role if scripted else "administrator"
        performers = self.performers(role)
        number, title = self._step_title(step_id, description)
        self.console.print(text((self._t("step", k=number, n=len(self.script.steps), title=title), "bold"),
                                (self._t("step_who", id=step_id, role=ROLES[role][self.lang],
                                         names=", ".join(performers)), "dim")))
        if deviation is not None:
            self.exception(deviation, step=step_id, kind="deviation")
        self.writer.write("step-start", step=step_id, act=self._act, role=role, scripted=scripted is not None,
                          description=description, performed_by=performers)
        self._step = step_id
        try:
            yield
        except BaseException as exc:
            self._step = None
            message = _describe(exc)
            self.writer.write("step-end", step=step_id, outcome="failed", error=message)
            self.console.print(self._t("failed", id=step_id), style="red")
            self.exception(f"step {step_id!r} failed: {message}", step=step_id, kind="failure",
                           decision=self._stopped(f"step {step_id!r} failed: {message}", exc))
            self._failure_recorded = True
            raise
        self._step = None
        witness_record = None
        if scripted is not None and scripted.witness:
            witness = self.holder("internal-witness")
            ok = self.answers.confirm(witness, self._t("witness_q", n=number, title=title))
            witness_record = {"name": witness.name, "confirmed": ok}
            if isinstance(self.answers, FileAnswers) and self.answers.confirmations is not None:
                witness_record["given"] = "in advance, answers file"
        self.writer.write("step-end", step=step_id, outcome="done", witness=witness_record)
        if witness_record is not None and not witness_record["confirmed"]:
            self.exception(f"the Internal Witness did not confirm step {step_id!r}", step=step_id,
                           kind="witness")
        self._show_next(step_id)

    def _stopped(self, what: str, exc: BaseException) -> str:
        """The record of a failure: it always stops the ceremony; the Administrator is asked to acknowledge it
        (with a note for the record) rather than the decision being put in her name unasked."""
        if isinstance(exc, KeyboardInterrupt):
            return "ceremony stopped: interrupted by the operator"
        try:
            note = self.answers.acknowledge_failure(self.holder("administrator"), what)
        except Exception as ack_exc:  # no one to ask (closed input): say so, never mask the failure
            return f"ceremony stopped; not acknowledged at the terminal ({_describe(ack_exc)})"
        return "ceremony stopped; acknowledged by the Ceremony Administrator" + (f": {note}" if note else "")

    def evidence(self, name: str, data: Mapping[str, Any]) -> None:
        self._check_open(f"evidence {name!r}")
        self.writer.write("evidence", name=name, step=self._step, data=_jsonable(dict(data)))

    def artifact(self, kind: str, path: Path, sha256: str, **info: Any) -> None:
        self._check_open(f"artifact {path}")
        self.writer.write("artifact", kind=kind, path=_relative(Path(path), self.base), sha256=sha256,
                          step=self._step, info=_jsonable(info))
        self.console.print(text(self._t("wrote", path=path), (f" ({kind})", "dim")))

    def say(self, text: str) -> None:
        self.console.print(text)
        if not self.sealed and not self.closed:
            self.writer.write("say", step=self._step, text=text)

    def busy(self, what: str) -> contextlib.AbstractContextManager[None]:
        return busy(self.console, what)

    def seal(self, private_key: Any, verifier: Mapping[str, Any]) -> None:
        """Close the record and sign its chain head with the CA key, inside the HSM.

        The verifier file (certificate or public key) is normally in the output directory; when the
        ceremony names one elsewhere (``--issuer-cert``), the hash the ceremony computed is recorded and
        the auditor is given that file with ``--artifacts``.
        """

        self._check_open("the seal")
        public = private_key.public_key()
        vpath = Path(str(verifier["path"]))
        vfile = vpath if vpath.is_absolute() else self.base / vpath
        staged = verifier.get("staged")
        if staged:  # sealed before publication: the staged file is checked, its final name recorded
            file_key = _public_key_from_file(Path(str(staged)))
            if spki(file_key) != spki(public):
                raise TranscriptError(f"{staged}: does not hold the public key of the key that seals the transcript")
            vhash, vrel = sha256_file(Path(str(staged))), _relative(vfile, self.base)
        elif vfile.is_file():
            try:
                file_key = _public_key_from_file(vfile)
            except OSError as exc:
                raise TranscriptError(f"{vfile}: the seal's verifier cannot be read: {exc.strerror}") from None
            if spki(file_key) != spki(public):
                raise TranscriptError(f"{vfile}: does not hold the public key of the key that seals the transcript")
            vhash, vrel = sha256_file(vfile), _relative(vfile, self.base)
        else:
            vhash, vrel = str(verifier.get("sha256") or ""), vpath.name
        missing = self.tracker.missing()
        if missing:
            self.exception(f"scripted step(s) not performed: {', '.join(missing)}", kind="deviation")
        self.end_act()
        self.close_acts()
        # The closing record and the seal are composed first and signed, then written together: the
        # signature covers the closing record and the seal's own fields, and a failure to sign leaves
        # the transcript open for the failure to be recorded and closed as failed.
        now = utc_now()
        close = {"seq": self.writer.seq, "prev": self.writer.head, "type": "close", "time": now,
                 "status": "sealed", "records": self.writer.seq + 2}
        head = line_hash(canonical(close))
        record = {"kind": verifier.get("kind", "certificate"), "path": vrel, "sha256": vhash,
                  "spki_sha256": hashlib.sha256(spki(public)).hexdigest(),
                  "public_key": base64.b64encode(spki(public)).decode()}
        algorithm = _algorithm(private_key)
        seal = {"seq": self.writer.seq + 1, "prev": head, "type": "seal", "time": now, "head": head,
                "words": pgpwords.hex_to_words(head), "algorithm": algorithm, "verifier": record}
        message = seal_message(seal)
        signature = _sign(private_key, message)
        try:
            verify_seal_signature(public, algorithm, signature, message)
        except InvalidSignature:
            raise TranscriptError("the HSM's signature over the transcript does not verify") from None
        seal["signature"] = base64.b64encode(signature).decode()
        self.writer.write_records([close, seal])
        self.sealed = True
        self.show_head(self._t("final_head"), head)

    # extras for the ceremonies ----------------------------------------------------------------------
    def exception(self, what: str, *, step: str | None = None, kind: str = "deviation",
                  decision: str | None = None) -> int:
        """A numbered exception: what happened, the decision, who approved it. Returns its number.

        Without ``decision`` the Ceremony Administrator decides (a rehearsal approves automatically);
        a decision to stop raises :class:`TranscriptError` after the record is written.
        """
        self.exceptions += 1
        admin = self.holder("administrator")
        proceed = True
        if decision is None:
            proceed, decision = self.answers.decide(admin, what)
        self.writer.write("exception", number=self.exceptions, kind=kind, step=step, what=what,
                          decision=decision, approved_by=admin.name, approver_role="administrator")
        self.console.print(self._t("exception_line", n=self.exceptions, what=what, decision=decision, who=admin.name),
                           style="yellow")
        if not proceed:
            self._failure_recorded = True
            raise TranscriptError(f"exception {self.exceptions}: {what}; the Ceremony Administrator stopped the "
                                  "ceremony")
        return self.exceptions

    def bag(self, bag_id: str, when: str, serial: str | None = None, title: str | None = None) -> str:
        """Record a tamper-evident bag opened or sealed (``when`` is ``open`` or ``reseal``)."""
        bag = next((b for b in self.script.bags if b.id == bag_id), None) or Bag(bag_id, {"en": title or bag_id,
                                                                                          "fr": title or bag_id})
        value = serial or self.answers.bag_serial(bag, when)
        witness = self.holder("internal-witness")
        self.writer.write("bag", bag=bag_id, when=when, serial=value, witness=witness.name)
        self.console.print(self._t("bag_line_open" if when == "open" else "bag_line_reseal",
                                   bag=bag.title.get(self.lang, bag.title["en"]), serial=value))
        return value

    def confirm(self, question: str, role: str = "internal-witness") -> bool:
        who = self.holder(role)
        answer = self.answers.confirm(who, question)
        self.writer.write("confirmation", question=question, by=who.name, role=role, answer=answer)
        return answer

    # opening and closing -----------------------------------------------------------------------------
    def _fact(self, name: str, data: Mapping[str, Any]) -> None:
        """An evidence record of the transcript's own acts (no step): see :mod:`ceremony.transcript.evidence`."""
        self.writer.write("evidence", name=name, step=None, data=_jsonable(dict(data)))

    def open_acts(self, resumes: list[dict[str, Any]]) -> None:
        self.facts = self.answers.evidence_facts(self.script, self.started)
        self.enter_act("sign-in")
        for p in self.participants:
            self.writer.write("sign-in", participant=p.as_dict())
            self.console.print(self._t("signed_in", name=p.name, roles=", ".join(ROLES[r][self.lang] for r in p.roles),
                                       doc=p.id_document, checker=p.id_checked_by))
        if self.facts.script_approval is not None:
            self._fact("script-approval", self.facts.script_approval)
        for r in resumes:
            self.exception(f"earlier transcript {r['file']} is incomplete ({r['records']} records, last record "
                           f"{r['last_hash'][:16]}…): the ceremony starts again in this new transcript",
                           kind="resume", decision="restart acknowledged before sign-in; the interrupted "
                           "transcript is kept unchanged")
        self.enter_act("bags-open")
        for bag in self.script.bags:
            self.bag(bag.id, "open")
        if self.facts.equipment is not None:
            self._fact("equipment", self.facts.equipment)

    def close_acts(self) -> None:
        if self._signed_out:
            return
        self._signed_out = True
        # Said by the people (answers file, or generated in a rehearsal), then the machine's own logs, hashed
        # now: whatever the host logged during the ceremony is fixed under the seal.
        for entry in self.facts.facility_access:
            self._fact("facility-access", entry)
        for entry in self.facts.share_custody:
            self._fact("share-custody", entry)
        self._fact("machine-logs", facts.machine_logs_evidence(self.facts.machine_logs, self.started))
        self.enter_act("bags-reseal")
        for bag in self.script.bags:
            self.bag(bag.id, "reseal")
        self.end_act()
        self.enter_act("sign-out")
        for p in self.participants:
            self.writer.write("sign-out", name=p.name)
        self._act = None  # the seal (or the close record) ends the sign-out act

    def finish(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        try:
            if exc is not None and not self.sealed:
                if not self._failure_recorded:
                    with contextlib.suppress(TranscriptError):
                        self.exception(f"ceremony stopped: {_describe(exc)}", kind="failure",
                                       decision="ceremony stopped")
                with contextlib.suppress(Exception):
                    self.end_act()
                    self.close_acts()
            elif not self.sealed:
                self.end_act()
                self.close_acts()
            # Once sealed the ceremony is complete and its transcript ends with the seal: an error after it is
            # its outputs' publication, which the operator is told and the next run in the directory
            # finishes (ceremony.common.outputs.recover); nothing is written after the seal.
            status = "sealed" if self.sealed else (
                "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed" if exc is not None else "unsealed")
            if not self.sealed:
                self.writer.write("close", status=status, records=self.writer.seq + 1,
                                  **({"error": _describe(exc)} if exc is not None else {}))
            colour = "green" if status == "sealed" else "red"
            self.console.print(self._t("status", path=self.path, status=self._t(
                {"failed": "failed_status", "interrupted": "interrupted_status"}.get(status, status))), style=colour)
        finally:
            self.closed = True
            self.writer.close()

    def _check_open(self, what: str) -> None:
        if self.sealed:
            raise TranscriptError(f"{what} after the seal: the seal must close the ceremony")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted by the operator"
    if isinstance(exc, CeremonyError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"[:500]


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _algorithm(key: Any) -> str:
    """The seal's algorithm name; the hash is the suite's one hash policy (certificates, CRLs and seals)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"ecdsa-{hash_for(key).name}"
    if isinstance(key, rsa.RSAPrivateKey):
        return f"rsa-pkcs1v15-{hash_for(key).name}"
    raise TranscriptError(f"cannot seal with a {type(key).__name__}")


def _sign(key: Any, message: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return bytes(key.sign(message, ec.ECDSA(hash_for(key))))
    return bytes(key.sign(message, padding.PKCS1v15(), hash_for(key)))


def verify_seal_signature(public: Any, algorithm: str, signature: bytes, message: bytes) -> None:
    """Raise ``cryptography.exceptions.InvalidSignature`` when the seal does not verify."""
    name = algorithm.rsplit("-", 1)[-1]
    h = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}[name]
    if algorithm.startswith("ecdsa-") and isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(signature, message, ec.ECDSA(h))
    elif algorithm.startswith("rsa-pkcs1v15-") and isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, message, padding.PKCS1v15(), h)
    else:
        raise ValueError(f"algorithm {algorithm} does not match the verifier's key")


def interrupted_transcripts(directory: Path) -> list[dict[str, Any]]:
    """Transcripts in ``directory`` that did not finish (no closing record, or closed as ``interrupted``)
    and that no later transcript acknowledged."""
    if not directory.is_dir():
        return []
    found: list[dict[str, Any]] = []
    acknowledged: set[str] = set()
    for p in sorted(directory.glob("*.jsonl")):
        lines = p.read_bytes().split(b"\n")
        complete = lines[:-1]  # after the last newline: nothing, or a record cut short by a crash
        records = []
        for ln in complete:
            try:
                records.append(json.loads(ln))
            except ValueError:
                break
        if records and records[0].get("type") == "header":
            acknowledged.update(r.get("file", "") for r in records[0].get("resumes", []))
        # No closing record (a crash, kill -9), or closed as interrupted (Ctrl-C): either way the ceremony did
        # not finish, and the next one must say so in its own record.
        last = records[-1] if records else {}
        finished = last.get("type") == "seal" or (last.get("type") == "close" and last.get("status") != "interrupted")
        if not finished:
            found.append({"file": p.name, "path": p, "records": len(records),
                          "last_hash": line_hash(complete[len(records) - 1]) if records else GENESIS})
    return [f for f in found if f["file"] not in acknowledged]


def _hsm_modules(definition: Any) -> list[str]:
    """The PKCS#11 modules the definition's CAs use (the HSM client libraries whose hashes are recorded)."""
    cas = getattr(getattr(definition, "model", None), "cas", None) or {}
    return sorted({str(ca.hsm.module) for ca in cas.values() if getattr(getattr(ca, "hsm", None), "module", None)})


def _finished_in_order(directory: Path, exclude: Path | None = None) -> list[tuple[str, Path, bytes]]:
    """The finished transcripts of ``directory`` as (time of the last record, path, last line), oldest first."""
    found = []
    if not directory.is_dir():
        return []
    for p in sorted(directory.glob("*.jsonl")):
        if exclude is not None and p.resolve() == exclude.resolve():
            continue
        lines = p.read_bytes().split(b"\n")
        if len(lines) < 2 or lines[-1]:
            continue
        try:
            last = json.loads(lines[-2])
        except ValueError:
            continue
        finished = last.get("type") == "seal" or (last.get("type") == "close" and last.get("status") != "interrupted")
        if finished:
            found.append((str(last.get("time", "")), p, lines[-2]))
    return sorted(found, key=lambda item: (item[0], item[1].name))


def last_reseal_serials(directory: Path) -> dict[str, str]:
    """Each bag id's serial at its last reseal in the finished transcripts of ``directory``, in ledger order."""
    serials: dict[str, str] = {}
    for _, path, _ in _finished_in_order(directory):
        for line in path.read_bytes().split(b"\n"):
            if b'"type":"bag"' not in line:
                continue
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if rec.get("type") == "bag" and rec.get("when") == "reseal" and rec.get("serial"):
                    serials[str(rec.get("bag"))] = str(rec["serial"])
    return serials


def ledger_tip(directory: Path, exclude: Path | None = None) -> dict[str, Any] | None:
    """The last finished ceremony of ``directory`` (the ledger's tip): its file and final head.

    Every transcript's header names the one before it, so the ceremonies of an output directory form one
    chain from the first on: rewriting an old transcript would mean rewriting every later one. A finished
    transcript ends with its seal or its closing record; the tip is the one whose last record is the
    latest (interrupted ones are named by ``resumes`` instead)."""
    best: tuple[str, str, str] | None = None
    if not directory.is_dir():
        return None
    for p in sorted(directory.glob("*.jsonl")):
        if exclude is not None and p.resolve() == exclude.resolve():
            continue
        lines = p.read_bytes().split(b"\n")
        if len(lines) < 2 or lines[-1]:
            continue
        try:
            last = json.loads(lines[-2])
        except ValueError:
            continue
        finished = last.get("type") == "seal" or (last.get("type") == "close" and last.get("status") != "interrupted")
        if not finished:
            continue
        candidate = (str(last.get("time", "")), p.name, line_hash(lines[-2]))
        if best is None or candidate > best:
            best = candidate
    if best is None:
        return None
    # The auditor's attestations of that transcript made by now (file and SHA-256): recorded in the ledger,
    # so that removing or replacing one later breaks this link.
    return {"file": best[1], "head": best[2], "time": best[0],
            "attestations": attestation_entries(directory / best[1])}


def _prepare(script_name: str, definition: Any, rehearsal: bool, answers: Answers) -> tuple[Script, Rules,
                                                                                          list[Participant]]:
    script = load_script(script_name)
    if isinstance(answers, FileAnswers):
        answers.check(script)
    rules = rules_for(script, definition, rehearsal)
    while True:
        try:
            people = answers.participants(rules)
            stamp = utc_now()
            people = [Participant(p.name, p.roles, p.id_document, p.id_checked_by, stamp) for p in people]
            check_separation(people, rules)  # before any file exists
            return script, rules, people
        except ParticipantError as exc:
            # At the terminal the people in the room correct the sign-in; a file is refused as it stands.
            if not isinstance(answers, TerminalAnswers) or not answers.refused(str(exc)):
                raise


@contextlib.contextmanager
def _transcript(path: Path, script: Script, definition: Any, rules: Rules, people: list[Participant],
                answers: Answers, rehearsal: bool, base: Path, console: Console,
                resumes: list[dict[str, Any]],
                header: Mapping[str, Any] | None = None, lang: str = "en") -> Iterator[TranscriptRecorder]:
    writer = TranscriptWriter(path)
    rec = TranscriptRecorder(writer, script, rules, people, answers, console, rehearsal, base, lang)
    try:
        writer.write("header", format=FORMAT, rehearsal=rehearsal,
                     script={"name": script.name, "version": script.version, "sha256": script.sha256,
                             "source": script.source},
                     definition={"path": str(definition.path), "sha256": definition.sha256,
                                 "environment": definition.model.environment},
                     rules=rules.as_dict(), artifacts_base=_relative(base, path.parent),
                     environment=environment_evidence(_hsm_modules(definition)),
                     resumes=[{k: v for k, v in r.items() if k != "path"} for r in resumes],
                     ledger={"previous": ledger_tip(path.parent, exclude=path)},
                     answers=dict(answers.source), **_jsonable(dict(header or {})))
        console.rule(text((script.title.get(lang) or script.title["en"], "bold"),
                          say(lang, "rehearsal") if rehearsal else ""))
        console.print(say(lang, "transcript", path=path))
        rec.open_acts(resumes)
    except BaseException as exc:
        rec.finish(exc)
        raise
    try:
        yield rec
    except BaseException as exc:
        rec.finish(exc)
        raise
    rec.finish(None)


@contextlib.contextmanager
def open_rehearsal_transcript(path: Path, script_name: str, definition: Any, *,
                              artifacts_base: Path | None = None,
                              console: Console | None = None) -> Iterator[TranscriptRecorder]:
    """A rehearsal's transcript at ``path``: generated people, scripted answers, ``rehearsal: true``.

    Artifacts are recorded relative to ``artifacts_base`` (default: the directory above the
    transcripts directory, i.e. the rehearsal's output directory).
    """
    path = Path(path)
    answers = RehearsalAnswers(definition, path.parent)
    script, rules, people = _prepare(script_name, definition, True, answers)
    base = Path(artifacts_base) if artifacts_base else path.parent.parent
    with _transcript(path, script, definition, rules, people, answers, True, base,
                     console or make_console(), []) as rec:
        yield rec


@contextlib.contextmanager
def open_transcript(directory: Path, script_name: str, definition: Any, *, rehearsal: bool,
                    answers: Path | None = None, console: Console | None = None,
                    artifacts_base: Path | None = None,
                    header: Mapping[str, Any] | None = None, lang: str = "en") -> Iterator[TranscriptRecorder]:
    """A new transcript ``<script>-<UTC time>.jsonl`` in ``directory``: sign-in in the terminal or from
    ``answers`` (YAML). An interrupted transcript in the directory must be acknowledged first; it is
    never continued, and the new transcript records the restart as an exception.
    """
    directory = Path(directory)
    console = console or make_console()
    source: Answers = FileAnswers(answers, console, lang) if answers else TerminalAnswers(console, lang)
    if answers is None and rehearsal:
        source = RehearsalAnswers(definition, directory)
    pending = interrupted_transcripts(directory)
    if pending and not source.acknowledge_interrupted([p["path"] for p in pending]):
        names = ", ".join(p["file"] for p in pending)
        raise TranscriptError(f"{directory}: interrupted transcript(s) {names} have no closing record; a new "
                              "ceremony never continues them silently: acknowledge them (answers file "
                              "acknowledge_interrupted, or at the prompt) to start a new transcript that "
                              "records the interruption")
    script, rules, people = _prepare(script_name, definition, rehearsal, source)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{script_name}-{stamp}.jsonl"
    n = 2
    while path.exists():
        path = directory / f"{script_name}-{stamp}-{n}.jsonl"
        n += 1
    base = Path(artifacts_base) if artifacts_base else directory.parent
    with _transcript(path, script, definition, rules, people, source, rehearsal, base, console, pending,
                     header, lang) as rec:
        yield rec


__all__ = ["FileAnswers", "ParticipantError", "RehearsalAnswers", "Step", "TranscriptError", "TranscriptRecorder",
           "open_rehearsal_transcript", "open_transcript"]
