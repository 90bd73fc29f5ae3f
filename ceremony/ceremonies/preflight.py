"""The pre-flight: every setup problem found before anyone signs in or a bag is opened.

A ceremony costs witnesses' time and tamper-evident bags. A problem found in act 4 (token not
found, PIN file readable by others, wrong PIN, module path wrong, a CSR for another key) means a
new ceremony, new bags and a transcript that records a failure. So every ceremony starts with
the checks below, without prompting anyone but the Crypto Officer who types the PIN, and
refuses to start while any of them fails. ``invoke ceremony.preflight`` runs the same checks
alone, days before the ceremony.

Each finding says what was checked, what was found and, when it failed, how to fix it. The checks
change nothing on disk or on a token: the token session is read-only and no key is generated.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11e

from ceremony.ca.generations import certificate_generations, key_label_for
from ceremony.ceremonies.addendum import checked_recordings, recorded_transcript
from ceremony.ceremonies.offline import check_offline
from ceremony.common.errors import CeremonyError
from ceremony.common.fileio import sha256_file
from ceremony.common.manifest import MANIFEST_NAME
from ceremony.common.outputs import inspect_leftovers
from ceremony.definition.model import CA, LoadedDefinition, TokenRef
from ceremony.hsm.check import THROWAWAY_LABEL, capabilities, known_limits, needed_for, probe_capabilities
from ceremony.hsm.keys import spki_sha256
from ceremony.hsm.pins import PinSource, held, part_variable, parts_origin, read_pin_file
from ceremony.hsm.session import (
    TOKEN_RECORD_LABEL,
    find_token,
    load_module,
    open_session,
    pin_source_for,
    pin_split,
    read_token_record,
    rehearsal_objects,
)
from ceremony.hsm.signers import public_key_from_token
from ceremony.transcript.chain import interrupted_transcripts
from ceremony.transcript.paper_script import printed_script_files
from ceremony.x509.csr import check_csr, load_csr
from ceremony.x509.files import read_public_key, sealing_certificates


class PreflightError(CeremonyError):
    """At least one pre-flight check failed: the ceremony does not start."""

    exit_code = 13


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False  # passed, but someone must look (shown to the witness, recorded)

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "ok": self.ok, "detail": self.detail, "fix": self.fix, "warning": self.warning}

    def line(self) -> str:
        mark = "ok  " if self.ok and not self.warning else "note" if self.ok else "FAIL"
        text = f"[{mark}] {self.check}: {self.detail}"
        return text + (f"\n       fix: {self.fix}" if self.fix and not self.ok else "")


@dataclass
class PreflightReport:
    ceremony: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    def as_dict(self) -> dict[str, Any]:
        return {"ceremony": self.ceremony, "ok": self.ok, "findings": [f.as_dict() for f in self.findings]}

    def lines(self) -> Iterator[str]:
        for f in self.findings:
            yield f.line()

    def raise_if_failed(self) -> None:
        if self.ok:
            return
        body = "\n".join(f"  - {f.check}: {f.detail}" + (f"\n    fix: {f.fix}" if f.fix else "") for f in self.problems)
        raise PreflightError(f"pre-flight of {self.ceremony}: {len(self.problems)} problem(s); nobody has signed in "
                             f"and nothing was changed:\n{body}")


@dataclass(frozen=True)
class Need:
    """What a ceremony needs of one CA's token: its key ``absent`` (to be generated) or ``present``."""

    ca: str
    key: str  # "absent" | "present"


@dataclass(frozen=True)
class Plan:
    """What a ceremony needs, so that the pre-flight can check it."""

    offline: bool
    tokens: tuple[Need, ...]
    outputs: tuple[str, ...] = ()


def plan_for(defn: LoadedDefinition, ceremony: str, ca_name: str | None) -> Plan:
    """The needs of each scripted ceremony (the names of ``ceremony/scripts/*.yml``)."""
    root = defn.model.root_name
    if ceremony == "root-key-generation":
        return Plan(True, (Need(root, "absent"),), tuple(f"{root}{s}" for s in (
            ".crt.pem", ".crt.der", ".pub.pem", ".pub.der", ".seal.crt.pem", ".seal.crt.der")))
    if ceremony in ("subordinate-key-generation", "subordinate-signing", "key-backup"):
        if not ca_name:
            raise PreflightError(f"the {ceremony} ceremony needs --ca NAME (one of: {', '.join(defn.model.cas)})")
        if ca_name not in defn.model.cas:
            raise PreflightError(f"{defn.path}: cas.{ca_name}: no such CA (defined: {', '.join(defn.model.cas)})")
    if ceremony == "subordinate-key-generation":
        assert ca_name is not None
        return Plan(False, (Need(ca_name, "absent"),), tuple(f"{ca_name}{s}" for s in (
            ".csr.pem", ".csr.der", ".pub.pem", ".pub.der", ".seal.csr.pem", ".seal.pub.pem")))
    if ceremony == "subordinate-signing":
        assert ca_name is not None
        issuer = defn.model.cas[ca_name].issuer or root
        return Plan(True, (Need(issuer, "present"),), tuple(f"{ca_name}{s}" for s in (
            ".crt.pem", ".crt.der", ".seal.crt.pem", ".seal.crt.der")))
    if ceremony == "recording-addendum":
        return Plan(True, (Need(root, "present"),))
    # A root CRL ceremony signs with the root's key or, with --successor, the successor root's (named by the stem of
    # its files, <root>.g<n>); the root's final CRL (root-termination) with the root's.
    if ceremony in ("root-crl-batch", "root-termination"):
        next_root = defn.model.successor_root()
        allowed = [root] + ([next_root[0]] if next_root is not None and ceremony == "root-crl-batch" else [])
        if ca_name not in (None, *allowed):
            raise PreflightError(f"the {ceremony} ceremony signs with the key of {' or '.join(map(repr, allowed))}; "
                                 f"not {ca_name!r}")
        return Plan(True, (Need(ca_name or root, "present"),))
    # Key backup and restore run air-gapped whichever CA's key they handle (their offline-check step):
    # the wrapping key's secret and the shares pass through the workstation.
    if ceremony == "key-backup":
        assert ca_name is not None
        return Plan(True, (Need(ca_name, "present"),))
    if ceremony == "key-restore":
        if not ca_name or ca_name not in defn.model.cas:
            raise PreflightError(f"the key-restore ceremony needs --ca NAME (one of: {', '.join(defn.model.cas)})")
        return Plan(True, (Need(ca_name, "absent"),))
    # The life-cycle ceremonies (docs/lifecycle.md) are held offline: the renewal and the sealing-key certification
    # sign with the root key; a key destruction lets nothing the key could sign leave the room.
    if ceremony in ("subordinate-renewal", "sealing-certification", "key-destruction"):
        if not ca_name or ca_name not in defn.model.cas:
            raise PreflightError(f"the {ceremony} ceremony needs --ca NAME (one of: {', '.join(defn.model.cas)})")
        signer = defn.model.cas[ca_name].issuer or root if ceremony == "subordinate-renewal" else root
        return Plan(True, (Need(ca_name if ceremony == "key-destruction" else signer, "present"),))
    # A CA termination signs the last CRL with the CA key on the CA's token, its host disconnected for it
    # (ceremony/ceremonies/termination.py); a PIN change logs in on the CA's token (ceremony/ceremonies/pin_change.py),
    # the successor root's too, named by the stem of its files, <root>.g<n> (its token's PIN is split at its
    # initialisation like any CA's).
    if ceremony in ("ca-termination", "pin-change"):
        named = [*defn.model.cas]
        if ceremony == "pin-change":
            named += [s[0] for s in (defn.model.successor_root(),) if s is not None]
        if not ca_name or ca_name not in named:
            raise PreflightError(f"the {ceremony} ceremony needs --ca NAME (one of: {', '.join(named)})")
        return Plan(True, (Need(ca_name, "present"),))
    # Re-key (ceremony/ceremonies/rekey.py): at the subordinate's host its token with its key and certified sealing key
    # (the new generation's label is checked free by check_rekey_label); at the offline root the issuer's key.
    if ceremony in ("subordinate-rekey", "subordinate-rekey-certification"):
        if not ca_name or ca_name not in defn.model.cas:
            raise PreflightError(f"the {ceremony} ceremony needs --ca NAME (one of: {', '.join(defn.model.cas)})")
        if ceremony == "subordinate-rekey":
            return Plan(False, (Need(ca_name, "present"),))
        return Plan(True, (Need(defn.model.cas[ca_name].issuer or root, "present"),))
    # A token initialisation is held offline (the PIN parts are typed at the workstation); its token does not exist
    # yet, so the ceremony's own definition-check finds the blank slot (or refuses a label already initialised).
    # The successor root (root rollover) is named by the stem of its files, <root>.g<n>: its own token is initialised
    # before its key ceremony as any CA's.
    if ceremony == "token-initialisation":
        named = [*defn.model.cas, *[s[0] for s in (defn.model.successor_root(),) if s is not None]]
        if not ca_name or ca_name not in named:
            raise PreflightError(f"the {ceremony} ceremony needs --ca NAME (one of: {', '.join(named)})")
        return Plan(True, ())
    # Root rollover (ceremony/ceremonies/rollover.py): the successor's token needs its labels free; a
    # cross-certification needs the issuing root's key, the old root's (forward, --ca ROOT) or the successor's
    # (reverse, --ca <root>.g<n>, the stem of its files).
    successor = defn.model.successor_root()
    if ceremony in ("new-root-key-generation", "cross-certification"):
        if successor is None:
            raise PreflightError(f"{defn.path}: cas.{root}.successor: not set; the {ceremony} ceremony is for the "
                                 "successor root the definition describes there")
        stem = successor[0]
        if ceremony == "new-root-key-generation":
            return Plan(True, (Need(stem, "absent"),), tuple(f"{stem}{s}" for s in (
                ".crt.pem", ".crt.der", ".pub.pem", ".pub.der", ".seal.crt.pem", ".seal.crt.der")))
        if ca_name not in (None, root, stem):
            raise PreflightError(f"the cross-certification is signed by {root!r} or, reversed, by {stem!r}; not "
                                 f"{ca_name!r}")
        return Plan(True, (Need(ca_name or root, "present"),))
    raise PreflightError(f"{ceremony!r} is not a ceremony (allowed: root-key-generation, subordinate-key-generation, "
                         "subordinate-signing, root-crl-batch, key-backup, key-restore, recording-addendum, "
                         "subordinate-renewal, sealing-certification, key-destruction, token-initialisation, "
                         "new-root-key-generation, cross-certification, ca-termination, pin-change, "
                         "subordinate-rekey, subordinate-rekey-certification, root-termination)")


def check_output_directory(defn: LoadedDefinition, out: Path, rehearsal: bool,
                           outputs: tuple[str, ...]) -> list[Finding]:
    """Usable, of the right kind (rehearsal or production), the planned files absent, the definition known."""
    found: list[Finding] = []
    if out.exists() and not out.is_dir():
        return [Finding("output directory", False, f"{out} is a file, not a directory",
                        "give --out a directory (it is created when absent)")]
    probe = out if out.is_dir() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(probe, os.W_OK | os.X_OK):
        return [Finding("output directory", False, f"{probe} is not writable by this user",
                        f"run as the ceremony user or choose another --out (now {out})")]
    manifest = out / MANIFEST_NAME
    if manifest.is_file():
        try:
            data = yaml.safe_load(manifest.read_text(encoding="utf-8"))  # JSON is YAML
        except (OSError, yaml.YAMLError) as exc:
            return [Finding("output directory", False, f"{manifest} is unreadable: {exc}",
                            "restore the manifest from the ceremony's copies, or use another --out")]
        if bool(data.get("rehearsal")) != rehearsal:
            kind = "rehearsal" if data.get("rehearsal") else "production"
            return [Finding("output directory", False, f"{out} holds {kind} outputs; rehearsal and production never "
                            "mix", "use another --out" + ("" if rehearsal else " (production: out/ENV)"))]
    existing = [name for name in outputs if os.path.lexists(out / name)]
    if existing:
        found.append(Finding("output files", False, f"{', '.join(str(out / n) for n in existing)} exist already; "
                             "outputs are never overwritten",
                             "this ceremony was done already: check the manifest; to do it again, move these "
                             "files away or use another --out"))
    else:
        found.append(Finding("output files", True, f"{out}: {len(outputs)} new file(s) to write, none exists yet"
                             if outputs else f"{out}: usable"))
    for leftover in inspect_leftovers(out):
        found.append(Finding("interrupted run", True, " ".join(leftover.lines()) if leftover.committed else
                             " ".join(leftover.lines()) + " (the ceremony will say this again before it starts)",
                             warning=True))
    for t in interrupted_transcripts(out / "transcripts"):
        found.append(Finding("interrupted ceremony", True, f"{t['path']} has no closing record ({t['records']} "
                             "records): the ceremony will ask to acknowledge it, and its new transcript records "
                             "the restart as an exception", warning=True))
    kept = out / "pki.yml"
    kept_env = _environment_of(kept)
    if kept_env is not None and kept_env != defn.model.environment:
        found.append(Finding("definition", False, f"{out} holds the outputs of environment {kept_env!r} ({kept}); "
                             f"this definition is for {defn.model.environment!r}",
                             f"use the output directory of {defn.model.environment!r} (--out out/"
                             f"{defn.model.environment}) or check --env"))
    elif kept.is_file() and sha256_file(kept) != defn.sha256:
        found.append(Finding("definition", True, f"{kept} holds the definition of earlier ceremonies "
                             f"(SHA-256 {sha256_file(kept)[:16]}…); this ceremony uses {defn.path} "
                             f"(SHA-256 {defn.sha256[:16]}…), which differs in: "
                             f"{', '.join(definition_changes(kept, defn.path)) or 'formatting only'}. "
                             "Both versions are kept in the output directory.", warning=True))
    return found


def _environment_of(path: Path) -> str | None:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return str(data.get("environment")) if isinstance(data, dict) and data.get("environment") else None


def definition_changes(old: Path, new: Path) -> list[str]:
    """Dotted key paths whose values differ between two definitions (for the witness to read)."""
    try:
        a = yaml.safe_load(old.read_text(encoding="utf-8"))
        b = yaml.safe_load(new.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return ["(unreadable)"]
    changes: list[str] = []

    def walk(x: Any, y: Any, path: str) -> None:
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            for k in sorted(set(x) | set(y), key=str):
                walk(x.get(k), y.get(k), f"{path}.{k}" if path else str(k))
        elif x != y:
            changes.append(path or "(document)")

    walk(a, b, "")
    return changes


def check_module(ca_name: str, ca: CA) -> Finding:
    try:
        load_module(ca.hsm.module)
    except CeremonyError as exc:
        return Finding(f"PKCS#11 module of {ca_name!r}", False, str(exc),
                       f"install the HSM vendor's module or correct cas.{ca_name}.hsm.module in the definition")
    return Finding(f"PKCS#11 module of {ca_name!r}", True, f"{ca.hsm.module} loads")


def check_token(ca_name: str, ca: CA, option: str | None = None) -> Finding:
    """``option``: the command-line option that named the token, when it did not come from the definition."""
    try:
        token = find_token(load_module(ca.hsm.module), ca.hsm.token)
    except CeremonyError as exc:
        return Finding(f"token of {ca_name!r}", False, str(exc),
                       f"connect the HSM / insert the token, or correct {option or f'cas.{ca_name}.hsm.token'}")
    return Finding(f"token of {ca_name!r}", True, f"{ca.hsm.token.describe()} found: label {token.label!r}, "
                   f"model {token.model.strip()!r}")


def born_with_token(ca: CA) -> set[str]:
    """Labels of the objects a token initialisation ceremony left on the CA's token for its key ceremony: the token's
    record and the transcript-sealing key it names when that is the CA's sealing label (empty for any other token)."""
    try:
        record = read_token_record(find_token(load_module(ca.hsm.module), ca.hsm.token))
    except (CeremonyError, p11e.PKCS11Error):
        return set()
    if record is None:
        return set()
    sealing = (record.get("sealing_key") or {}).get("label")
    return {TOKEN_RECORD_LABEL} | ({sealing} if sealing == ca.hsm.sealing_label else set())


def check_parts_source(ca_name: str, ca: CA, source: PinSource) -> Finding | None:
    """For a token whose user PIN is split (its record names the officers): can each officer's part be had? None for a
    token with one PIN (:func:`check_pin_source` then)."""
    try:
        split = pin_split(find_token(load_module(ca.hsm.module), ca.hsm.token), "user")
    except (CeremonyError, p11e.PKCS11Error):
        return None
    if split is None:
        return None
    what = f"PIN parts of {ca_name!r}"
    officers = ", ".join(split.officers)
    origin = parts_origin(source)
    if origin in ("held", "env") or (origin == "prompt" and os.isatty(0)):
        where = {"held": "handed over by the caller", "env": f"variables {part_variable(source.env or '', 1)}…",
                 "prompt": "typed at the prompt, each by its officer"}[origin]
        return Finding(what, True, f"the user PIN is made of the parts of {officers} (token initialisation): {where}")
    return Finding(what, False, f"the user PIN is made of the parts of {officers}, and no part can be had here",
                   "run at a terminal, where each of these Crypto Officers types their part")


def check_pin_source(ca_name: str, source: PinSource) -> Finding:
    """Ready means: the file is there with mode 0600, or the variable is set, or someone can type it."""

    what = f"PIN source of {ca_name!r}"
    if source.file:
        try:
            read_pin_file(source.file)
        except CeremonyError as exc:
            return Finding(what, False, str(exc), f"chmod 600 {source.file} (owner only) or give another --pin-file")
        return Finding(what, True, f"file {source.file} (mode 0600)")
    if held(source.env):
        return Finding(what, True, f"environment variable {source.env} is set")
    if source.interactive and source.prompt and os.isatty(0):
        return Finding(what, True, "typed at the prompt by a Crypto Officer"
                       + (f" (variable {source.env} is not set)" if source.env else ""))
    return Finding(what, False, f"no PIN available: {source.describe()} gives none, and there is no terminal to "
                   "prompt at", f"export {source.env} or pass --pin-file FILE (mode 0600), or run at a terminal"
                   if source.env else "pass --pin-file FILE (mode 0600), or run at a terminal")


def _prompts(source: PinSource) -> bool:
    """The PIN will be typed at the ceremony (no file, no variable set): the pre-flight does not ask for it."""
    return not source.file and not held(source.env)


def _objects_with_label(ca: CA, source: PinSource, label: str) -> tuple[list[Any], str | None, bool, str]:
    """Classes of the objects labelled ``label``, the SPKI SHA-256 of its public key when there is
    exactly one, whether the session was logged in (private objects visible), and the token's label."""

    def look(session: Any) -> tuple[list[Any], str | None]:
        objects = list(session.get_objects({Attribute.LABEL: label}))
        public = [o for o in objects if o[Attribute.CLASS] == ObjectClass.PUBLIC_KEY]
        spki = spki_sha256(public_key_from_token(public[0])) if len(public) == 1 else None
        return [o[Attribute.CLASS] for o in objects], spki

    token = find_token(load_module(ca.hsm.module), ca.hsm.token)
    token_label = str(token.label).strip()
    if _prompts(source):
        with token.open(rw=False) as session:  # public objects only: the PIN is typed at the ceremony
            return (*look(session), False, token_label)
    with open_session(ca.hsm, source, rw=False) as session:
        return (*look(session), True, token_label)


def check_login_and_key(ca_name: str, ca: CA, need: str, source: PinSource,
                        sealing: tuple[str, Path] | None = None) -> list[Finding]:
    """Log in (read-only) to prove the PIN and look for the key label; nothing is created or changed.

    When the PIN is to be typed at the ceremony, only the public objects are looked at: a wrong PIN
    typed at the prompt is asked again there, with the token's remaining-attempts warnings.
    ``sealing`` = (need, output directory) checks the transcript-sealing key the same way and, when it must
    be present, that its certificate is in the output directory.
    """
    found, _ = _check_label(ca_name, ca, need, source, ca.hsm.key_label, "key_label", f"key {ca.hsm.key_label!r}")
    if sealing is None or not found or not found[0].ok:
        return found
    if sealing[0] == "absent" and ca.hsm.sealing_label in born_with_token(ca):
        # The token was born with its sealing key at the token initialisation ceremony: the key ceremony takes it.
        return [*found, Finding(f"transcript-sealing key {ca.hsm.sealing_label!r} of {ca_name!r}", True,
                                "born with the token at its initialisation (the token's record names it); the key "
                                "ceremony takes it, and the root's certificate of it anchors that ceremony's "
                                "transcript")]
    seal_need, out = sealing
    label = ca.hsm.sealing_label
    seal, digest = _check_label(ca_name, ca, seal_need, source, label, "seal_label",
                                f"transcript-sealing key {label!r}")
    seal = seal[1:]  # the login finding is there once already
    if need == seal_need == "absent" and not found[-1].ok and seal and not seal[-1].ok:
        # An interrupted key ceremony leaves both key pairs: one finding, with the commands that remove both.
        first, second = found[-1], seal[-1]
        found[-1] = Finding(first.check, False, first.detail + f"; so do objects labelled {label!r}",
                            first.fix.replace("; the next ceremony", " ; " + _removals(ca, second.fix)
                                              + "; the next ceremony", 1))
        return found
    if not found[-1].ok:
        return found + [f for f in seal if not f.ok]
    found += seal
    if seal_need == "present" and all(f.ok for f in seal):
        certs = [p for p, c in sealing_certificates(out, ca_name)
                 if digest is None or spki_sha256(c.public_key()) == digest]
        found.append(Finding(f"sealing certificate of {ca_name!r}", True, f"{certs[0]}") if certs else
                     Finding(f"sealing certificate of {ca_name!r}", False,
                             f"no certificate of the transcript-sealing key {label!r} in {out} "
                             f"({ca_name}.seal*.crt.pem)",
                             "run the ceremonies into this --out: the root certifies the sealing key at the CA's key "
                             "or signing ceremony"))
    return found


def _removals(ca: CA, fix: str) -> str:
    """The removal commands of a label-taken finding's ``fix`` (see :func:`_check_label`)."""
    return fix.split("witnessed: ", 1)[1].split("; the next ceremony", 1)[0]


def _check_label(ca_name: str, ca: CA, need: str, source: PinSource, label: str, field: str,
                 what: str) -> tuple[list[Finding], str | None]:
    """The login finding, then whether objects labelled ``label`` are absent or present as ``need`` says;
    with the SPKI SHA-256 of the public key found under the label (None when there is not exactly one)."""
    try:
        classes, spki, logged_in, token_label = _objects_with_label(ca, source, label)
    except CeremonyError as exc:
        return [Finding(f"login to {ca_name!r}", False, str(exc),
                        f"check the PIN in its source ({source.describe()}); each wrong PIN uses up one of the "
                        "token's attempts")], None
    except p11e.PKCS11Error as exc:
        return [Finding(f"token of {ca_name!r}", False, f"the token refused a read-only session: {type(exc).__name__}",
                        "check the token with pkcs11-tool --list-token-slots")], None
    found = [Finding(f"login to {ca_name!r}", True, "the PIN opens the token") if logged_in else
             Finding(f"login to {ca_name!r}", True, "the PIN is typed at the ceremony; public objects checked "
                     "without logging in", warning=True)]
    what = f"{what} of {ca_name!r}"
    kinds = ", ".join(sorted({ObjectClass(c).name.lower().replace("_", " ") for c in classes}))
    if need == "absent":
        if classes:
            found.append(Finding(what, False, f"objects labelled {label!r} exist on the token already ({kinds}); "
                                 "an existing label is never a reason to generate another key",
                                 "if an interrupted ceremony left them (its transcript has no closing record), "
                                 "a Crypto Officer removes them, witnessed: "
                                 + " ; ".join(f"pkcs11-tool --module {ca.hsm.module} "
                                              f"--token-label {shlex.quote(token_label)} --login "
                                              f"--delete-object --type {t} --label {label}"
                                              for t in ("privkey", "pubkey"))
                                 + "; the next ceremony's transcript records the interruption as an exception. "
                                 f"Otherwise choose another cas.{ca_name}.hsm.{field}"))
        else:
            found.append(Finding(what, True, "label free: the key will be generated on this token"))
    elif (ObjectClass.PRIVATE_KEY not in classes and logged_in) or ObjectClass.PUBLIC_KEY not in classes:
        found.append(Finding(what, False, f"no key labelled {label!r} on the token",
                             f"check cas.{ca_name}.hsm.token and {field}, or restore the key from its backup"))
    else:
        found.append(Finding(what, True, "present" + (f", SPKI SHA-256 {spki}" if spki else "")))
    return found, spki


def check_rekey_label(ca_name: str, ca: CA, source: PinSource, out: Path) -> list[Finding]:
    """The label of the next generation's key (``<key_label>.g<n>``, n from the CA's certificates in ``out``) is free
    on the token: a label that exists is refused before anyone signs in, as the ceremony refuses it before
    generating anything."""
    gens = certificate_generations(out, ca_name)
    if not gens:
        return [Finding(f"certificate of {ca_name!r}", False, f"no {ca_name}.crt.pem in {out}",
                        "bring the CA's certificates of every generation into this --out")]
    n = max(gens) + 1
    label = key_label_for(ca.hsm.key_label, n)
    found, spki = _check_label(ca_name, ca, "absent", source, label, "key_label", f"key of generation {n} {label!r}")
    awaiting = _rekey_awaiting_certification(out, ca_name, n, spki)
    if awaiting is not None and not found[-1].ok:
        # A completed re-key whose CSR has not come back certified: the generic advice (remove what an interrupted
        # run left) would have the Crypto Officer destroy a good key whose CSR is on its way to the root.
        found[-1] = Finding(found[-1].check, False,
                            f"generation {n}'s key exists already: an earlier re-key generated it and wrote "
                            f"{awaiting} (SPKI SHA-256 {spki}), which has no certificate {ca_name}.g{n}.crt.pem yet",
                            f"carry {awaiting.name} and {ca_name}.g{n}.pub.pem to the offline root and certify the key "
                            f"there (invoke ceremony.certify-rekey --ca {ca_name} --env ENV), then bring "
                            f"{ca_name}.g{n}.crt.pem into {out}; a second re-key is not needed and this key must not "
                            "be removed")
    return found[1:]  # the login finding is there once already


def _rekey_awaiting_certification(out: Path, ca_name: str, n: int, spki: str | None) -> Path | None:
    """The re-key CSR in ``out`` for generation ``n`` whose key is the token's key under that generation's label."""
    csr_path = out / f"{ca_name}.g{n}.csr.pem"
    if spki is None or not csr_path.is_file():
        return None
    try:
        matches = spki_sha256(load_csr(csr_path).public_key()) == spki
    except CeremonyError:
        return None
    return csr_path if matches else None


def check_no_rehearsal_objects(ca_name: str, ca: CA, source: PinSource) -> list[Finding]:
    """Production only: a token a rehearsal used (a key pair with the rehearsal CKA_ID prefix) is refused.

    With the PIN typed at the ceremony, the public objects are looked at (each rehearsal key pair has one);
    the ceremony looks again, logged in, after the Crypto Officer's login.
    """
    try:
        token = find_token(load_module(ca.hsm.module), ca.hsm.token)
        if _prompts(source):
            with token.open(rw=False) as session:
                found = rehearsal_objects(session)
        else:
            with open_session(ca.hsm, source, rw=False) as session:
                found = rehearsal_objects(session)
    except (CeremonyError, p11e.PKCS11Error):
        return []  # the login finding already says why the token cannot be read
    if not found:
        return [Finding(f"rehearsal objects on {ca_name!r}", True, "none: no key pair of a rehearsal on this token")]
    return [Finding(f"rehearsal objects on {ca_name!r}", False,
                    f"the token holds key pairs a rehearsal generated: {', '.join(found)}",
                    "a production ceremony never runs on a token a rehearsal used: initialise the token anew "
                    "(witnessed, recorded), then run the pre-flight again")]


def check_recordings(recorded: str | Path | None, recordings: Sequence[str | Path], out: Path) -> list[Finding]:
    """The recording addendum's inputs: the sealed transcript of the recorded ceremony, and the video files."""
    if recorded is None:
        return [Finding("recorded ceremony", False, "no transcript given",
                        "pass --of OUT/transcripts/<ceremony>.jsonl")]
    try:
        target = recorded_transcript(Path(recorded), out)
        files = checked_recordings(recordings)
    except CeremonyError as exc:
        return [Finding("recordings", False, str(exc), "name the sealed transcript of the recorded ceremony with --of "
                        "and each video file once with --recording")]
    return [Finding("recorded ceremony", True, f"{target['file']} ({target['ceremony']}), sealed, final head "
                    f"{target['head'][:16]}…"),
            Finding("recordings", True, ", ".join(f"{p.name} ({p.stat().st_size} bytes)" for p in files))]


def check_csr_file(defn: LoadedDefinition, ca_name: str, csr_path: Path, out: Path, rehearsal: bool) -> list[Finding]:
    """The CSR proves possession, matches the definition and any pin, and the key read at its key ceremony."""
    ca = defn.model.cas[ca_name]
    try:
        csr = load_csr(csr_path)
        checked = check_csr(csr, ca_name, ca, str(csr_path), rehearsal)
    except CeremonyError as exc:
        return [Finding("CSR", False, str(exc), "bring the CSR written by the subordinate key ceremony "
                        f"({ca_name}.csr.pem) and check the definition")]
    found = [Finding("CSR", True, f"{csr_path}: proof of possession, {checked.key}, subject as defined, "
                     f"key SPKI SHA-256 {checked.spki_sha256}")]
    pub = out / f"{ca_name}.pub.pem"
    if pub.is_file():
        try:
            recorded = spki_sha256(read_public_key(pub))
        except ValueError:
            recorded = "(unreadable)"
        if recorded != checked.spki_sha256:
            found.append(Finding("CSR key", False, f"the CSR key ({checked.spki_sha256}) is not the key of {pub} "
                                 f"({recorded}) generated at the subordinate key ceremony",
                                 "this CSR is not the one the subordinate key ceremony wrote: find the right one"))
        else:
            found.append(Finding("CSR key", True, f"same key as {pub}, written at the subordinate key ceremony"))
    elif ca.spki_sha256 is None:
        found.append(Finding("CSR key", True, f"cas.{ca_name}.spki_sha256 does not pin the key and {pub} is not "
                             "here: the witness compares the key hash above with the one read aloud at the "
                             "subordinate key ceremony before signing", warning=True))
    else:
        found.append(Finding("CSR key", True, f"pinned by cas.{ca_name}.spki_sha256"))
    return found


def check_hsm_readiness(defn: LoadedDefinition, ceremony: str, ca_name: str, ca: CA,
                        source: PinSource, rehearsal: bool = False) -> list[Finding]:
    """What ``ceremony`` needs of the token, and, before the root key ceremony, that the token is empty.

    The capabilities are the passive probe of ``invoke hsm.check`` (:mod:`ceremony.hsm.check`): the module's
    mechanism list, C_GetMechanismInfo and the token's flags, for this ceremony's key algorithms, signatures,
    wrapping and random numbers. Nothing is created (this may be a production token) and nobody logs in for it. A
    module that lacks a capability is refused here rather than in act 4 with the witnesses in the room.

    A limit the active probe proved on a module and that no mechanism list shows (NSS softokn lets a never-extractable
    key out; it cannot protect a key for a wrapped backup: :func:`ceremony.hsm.check.known_limits`) refuses the
    ceremonies it stops; one that only matters for a real key (the first) is a note in a rehearsal, whose keys are
    throwaway.
    """
    try:
        token = find_token(load_module(ca.hsm.module), ca.hsm.token)
    except CeremonyError:
        return []  # the token finding says why
    probes = probe_capabilities(token, needed_for(capabilities(ca), ceremony))
    what = f"HSM capabilities of {ca_name!r}"
    failed = [p for p in probes if p.failed]
    fix = (f"use a module and token that offer it (compare them with invoke hsm.check --env "
           f"{defn.model.environment} --ca {ca_name}), or change cas.{ca_name}.key or cas.{ca_name}.backup in "
           f"{defn.path}")
    found = [Finding(what, False, f"{p.what}: {p.detail}; {ceremony} cannot run: {p.impact}", fix) for p in failed]
    if not failed:
        found.append(Finding(what, True, f"{len(probes)} capabilities {ceremony} needs, all offered: "
                             + "; ".join(p.detail for p in probes)))
    for limit in known_limits(token, ca_name, ca):
        if not limit.stops(ceremony):
            continue
        probe, check = limit.probe, f"HSM of {ca_name!r}: {limit.probe.what}"
        if rehearsal and limit.rehearsal_ok:
            found.append(Finding(check, True, f"{probe.detail}; a rehearsal's keys are throwaway", warning=True))
        elif limit.rehearsal_ok:
            found.append(Finding(check, False, f"{probe.detail}; {ceremony} cannot run on it in production: "
                                 f"{probe.impact}", f"use an HSM that keeps the key in (invoke hsm.check --env "
                                 f"{defn.model.environment} --ca {ca_name} must pass); this module is for tests and "
                                 "rehearsals"))
        else:
            found.append(Finding(check, False, f"{probe.detail}; {ceremony} cannot run on it: {probe.impact}", fix))
    if ceremony == "root-key-generation" or (ceremony == "new-root-key-generation" and _own_token(defn, ca)):
        found.extend(check_token_empty(ca_name, ca, source))
    return found


def _own_token(defn: LoadedDefinition, successor: CA) -> bool:
    """Whether the successor root's key goes on a token of its own (which must then be empty, as the first root's),
    rather than on the root's token under labels of its own."""
    root = defn.model.cas[defn.model.root_name]
    return (successor.hsm.module, successor.hsm.token.describe()) != (root.hsm.module, root.hsm.token.describe())


def _object_names(session: Any, born: set[str] | None = None) -> list[str]:
    """Every object the session sees, as the operator reads it: label, class and CKA_ID; those labelled as the objects
    the token's initialisation left for the key ceremony (``born``) aside."""
    names = []
    for obj in session.get_objects():
        parts = []
        for attribute in (Attribute.LABEL, Attribute.CLASS, Attribute.ID):
            try:
                parts.append(obj[attribute])
            except p11e.PKCS11Error:
                parts.append(None)
        label, cls, ident = parts
        if born and label is not None and str(label) in born:
            continue
        kind = ObjectClass(cls).name.lower().replace("_", " ") if cls is not None else "object"
        names.append(f"{str(label)!r} ({kind}" + (f", CKA_ID {bytes(ident).hex()})" if ident else ")"))
    return sorted(names)


def check_token_empty(ca_name: str, ca: CA, source: PinSource) -> list[Finding]:
    """The root key ceremony starts on an empty token: nothing on it may predate the ceremony (a key put there
    earlier could be passed off as the root key, or be a copy someone kept). With the PIN typed at the ceremony only
    the public objects are seen here; the ceremony's own label checks look again after login."""
    what = f"token of {ca_name!r} empty"
    born = born_with_token(ca)  # its record and sealing key, from the token initialisation ceremony
    try:
        token = find_token(load_module(ca.hsm.module), ca.hsm.token)
        if _prompts(source):
            with token.open(rw=False) as session:
                held_objects, logged_in = _object_names(session, born), False
        else:
            with open_session(ca.hsm, source, rw=False) as session:
                held_objects, logged_in = _object_names(session, born), True
    except (CeremonyError, p11e.PKCS11Error):
        return []  # the login finding already says why the token cannot be read
    if not held_objects:
        return [Finding(what, True, "the token holds no object" if logged_in else
                        "the token holds no public object (the PIN is typed at the ceremony)", warning=not logged_in)]
    fix = ("the root key ceremony starts on a freshly initialised token: initialise it anew (witnessed, recorded), "
           "then run the pre-flight again")
    if any(THROWAWAY_LABEL in name for name in held_objects):
        fix += (f"; objects labelled {THROWAWAY_LABEL}* were left by an interrupted invoke hsm.check, which removes "
                "them when run again")
    return [Finding(what, False, f"the token holds {len(held_objects)} object(s): {', '.join(held_objects)}", fix)]


def run_preflight(defn: LoadedDefinition, ceremony: str, out: Path, *, rehearsal: bool, ca: str | None = None,
                  csr: str | Path | None = None, issuer_cert: str | Path | None = None,
                  pin_file: str | None = None, interactive: bool = True, target_token: str | None = None,
                  pin_sources: dict[str, PinSource] | None = None, lang: str = "en",
                  recorded: str | Path | None = None,
                  recordings: Sequence[str | Path] | None = None) -> PreflightReport:
    """Every check for ``ceremony``; nothing is changed. ``pin_sources`` receives the sources it logged in with."""
    plan = plan_for(defn, ceremony, ca)
    report = PreflightReport(ceremony)
    report.findings.append(Finding("definition", True, f"{defn.path} valid (SHA-256 {defn.sha256[:16]}…, "
                                   f"environment {defn.model.environment!r})"))
    if plan.offline:
        result = check_offline(enforce=False)
        if result.offline:
            report.findings.append(Finding("offline", True, result.summary(lang)))
        elif rehearsal:
            report.findings.append(Finding("offline", True, result.summary(lang) + " (rehearsal: not enforced)",
                                           warning=True))
        else:
            report.findings.append(Finding("offline", False, result.summary(lang),
                                           "unplug the network and bring every interface but loopback down, or run "
                                           "in a network namespace with loopback only (docs/air-gapped.md)"))
    report.findings.extend(check_output_directory(defn, out, rehearsal, plan.outputs))
    printed = printed_script_files(out, ceremony)
    report.findings.append(
        Finding("paper script", True, "printed: " + ", ".join(f"{p['path']} (SHA-256 {p['sha256'][:16]}…)"
                                                              for p in printed)) if printed else
        Finding("paper script", True, f"none printed under {out / 'scripts'}: print it for the Internal Witness "
                f"with invoke ceremony.script --env {defn.model.environment} --ceremony {ceremony}", warning=True))
    if ceremony in ("subordinate-signing", "root-crl-batch", "root-termination"):
        issuer = (ca if ca not in defn.model.cas else defn.model.cas[ca].issuer or defn.model.root_name) if ca \
            else defn.model.root_name
        ipath = Path(issuer_cert) if issuer_cert else out / f"{issuer}.crt.pem"
        report.findings.append(Finding("issuer certificate", True, f"{ipath}") if ipath.is_file() else
                               Finding("issuer certificate", False, f"{ipath} is not there",
                                       "run the root ceremony into this --out first, or pass --issuer-cert FILE"))
    if ceremony == "recording-addendum":
        report.findings.extend(check_recordings(recorded, recordings or [], out))
    if ceremony == "subordinate-signing":
        assert ca is not None
        if csr is None:
            report.findings.append(Finding("CSR", False, "no CSR given", "pass --csr FILE"))
        else:
            report.findings.extend(check_csr_file(defn, ca, Path(csr), out, rehearsal))
    for need in plan.tokens:
        ca_def = defn.model.ca_or_successor(need.ca)
        if ceremony == "key-restore" and target_token:  # the fresh token the key is restored onto
            hsm = ca_def.hsm.model_copy(update={"token": TokenRef(label=target_token)})
            ca_def = ca_def.model_copy(update={"hsm": hsm})
        module = check_module(need.ca, ca_def)
        report.findings.append(module)
        if not module.ok:
            continue
        token = check_token(need.ca, ca_def, "--target-token" if ceremony == "key-restore" and target_token else None)
        report.findings.append(token)
        source = pin_source_for(ca_def.hsm, pin_file, interactive)
        pin = (check_parts_source(need.ca, ca_def, source) if token.ok else None) or check_pin_source(need.ca, source)
        report.findings.append(pin)
        report.findings.extend(check_hsm_readiness(defn, ceremony, need.ca, ca_def, source, rehearsal))
        if token.ok and pin.ok:
            sealing = None if ceremony == "key-restore" else (need.key, out)
            report.findings.extend(check_login_and_key(need.ca, ca_def, need.key, source, sealing))
            if ceremony == "subordinate-rekey":
                report.findings.extend(check_rekey_label(need.ca, ca_def, source, out))
            if not rehearsal:
                report.findings.extend(check_no_rehearsal_objects(need.ca, ca_def, source))
            if pin_sources is not None:
                pin_sources[need.ca] = source
    return report
