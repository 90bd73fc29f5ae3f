"""The summary at the end of a ceremony: what this run wrote, the fingerprints, the verdict, what comes next.

When the transcript is sealed and closed, the operator sees, in one place:

- every file this run added to the output directory's manifest, with its SHA-256, as ``sha256sum`` prints
  it (so ``sha256sum -c`` or a second person's own ``sha256sum`` compares character by character);
- the SHA-256 fingerprint of each certificate (and of each new public key) in the OpenSSL colon form;
- the transcript and the verdict of the offline verifier (:func:`ceremony.transcript.audit.verify`, the same check
  ``invoke audit.verify`` runs) on the transcript just sealed, with the output directory as artifacts;
- the command to run next, with the options this run was given.

The files are the manifest entries that are new or changed since a snapshot taken before the ceremony
(:func:`manifest_snapshot`), so nothing written by an earlier ceremony is listed as this run's. Every value
is data, printed through :func:`ceremony.common.display.make_console` (no markup, no emoji). The words around the
data are in the room's language (``lang``, :mod:`ceremony.common.terminal_text`), English unless told.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from rich.console import Console

from ceremony.common.display import make_console, text
from ceremony.common.errors import OutputError, VerificationError
from ceremony.common.fingerprints import colon_form, sha256_hex
from ceremony.common.manifest import Manifest
from ceremony.common.terminal_text import say
from ceremony.transcript.anchor import AnchorError, load_anchor
from ceremony.transcript.audit import report_lines, verify
from ceremony.x509.files import read_public_object

CEREMONIES = ("root-key-generation", "subordinate-key-generation", "subordinate-signing", "root-crl-batch",
              "key-backup", "key-restore", "recording-addendum", "subordinate-renewal", "sealing-certification",
              "key-destruction", "token-initialisation", "new-root-key-generation", "cross-certification",
              "ca-termination", "pin-change",
              "subordinate-rekey", "subordinate-rekey-certification", "root-termination")


@dataclass(frozen=True)
class WrittenFile:
    path: Path  # as the operator reaches it: the output directory they gave, joined with the manifest's path
    sha256: str
    kind: str


@dataclass(frozen=True)
class Fingerprint:
    what: str
    sha256: str


@dataclass(frozen=True)
class NextStep:
    where: str
    command: str


@dataclass
class Summary:
    out_dir: Path
    rehearsal: bool
    files: list[WrittenFile] = field(default_factory=list)
    fingerprints: list[Fingerprint] = field(default_factory=list)
    transcript: Path | None = None
    status: str = "none"  # the verifier's status (intact, invalid, incomplete, ...), "none" without a transcript
    verdict: str = ""
    problems: list[str] = field(default_factory=list)
    next_steps: list[NextStep] = field(default_factory=list)
    lang: str = "en"

    @property
    def intact(self) -> bool:
        """The transcript verifies; "not-anchored" too (a subordinate key ceremony's seal chains to the root only
        once the signing ceremony has issued its certificate: the auditor's check comes then)."""
        return self.status in ("intact", "not-anchored")


def manifest_snapshot(out_dir: str | Path, rehearsal: bool) -> list[dict[str, Any]]:
    """The manifest's entries before a ceremony (none when there is no usable manifest yet: the ceremony
    itself then reports what is wrong with the directory)."""
    try:
        return [dict(a) for a in Manifest(out_dir, rehearsal).artifacts]
    except OutputError:
        return []


def new_entries(before: Iterable[Mapping[str, Any]], after: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Entries of ``after`` that ``before`` did not hold with the same path and SHA-256, in manifest order."""
    seen = {(a.get("path"), a.get("sha256")) for a in before}
    return [dict(a) for a in after if (a.get("path"), a.get("sha256")) not in seen]


def _load(path: Path) -> Any:
    """A certificate, CSR or public key from a PEM or DER file; None for anything else or no file."""
    try:
        return read_public_object(path)
    except OSError:
        return None


def fingerprints_of(files: Sequence[WrittenFile], lang: str = "en") -> list[Fingerprint]:
    """Certificate fingerprints (SHA-256 of the DER certificate) and new public keys (SHA-256 of the DER SPKI),
    once each however many encodings of them were written."""
    found: list[Fingerprint] = []
    seen: set[tuple[str, str]] = set()
    for f in files:
        if not (f.kind.endswith("certificate") or f.kind.endswith("public-key")):
            continue
        obj = _load(f.path)
        if isinstance(obj, x509.Certificate):
            entry = ("certificate", sha256_hex(obj.public_bytes(serialization.Encoding.DER)))
            what = say(lang, "s_certificate", subject=obj.subject.rfc4514_string())
        elif obj is not None:
            entry = ("key", sha256_hex(obj.public_bytes(serialization.Encoding.DER,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo)))
            what = say(lang, "s_public_key", name=f.path.name.rsplit(".pub.", 1)[0])  # "qualified", "qualified.seal"
        else:
            continue
        if entry not in seen:
            seen.add(entry)
            found.append(Fingerprint(what, entry[1]))
    return found


def _verdict(transcript: Path, out_dir: Path, lang: str = "en", rehearsal: bool = False) -> tuple[str, str, list[str]]:
    """The offline verifier's status, its verdict line and its problems, for the transcript just sealed.

    The verifier runs as the auditor will run it, anchored in the root certificate of the output
    directory when there is one (``--trust out/root.crt.pem``, with ``--rehearsal`` for a rehearsal); the
    witnesses compare that root's fingerprint with the one read aloud. In English the verdict is the
    verifier's own line, word for word; in another language the same verdict in the room's words.
    """
    try:
        root = out_dir / "root.crt.pem"
        anchor = load_anchor(str(root), out_dir) if root.is_file() else None
    except AnchorError:
        anchor = None
    try:
        audit = verify(transcript, out_dir, trust=anchor, rehearsal=rehearsal)
        lines = report_lines(audit)
    except Exception as exc:  # the ceremony is over: say what happened, never hide it behind a traceback
        return "error", say(lang, "s_not_verified", error=f"{type(exc).__name__}: {exc}"), []
    problems = [str(p) for p in audit.problems]
    if audit.status not in ("intact", "not-anchored") and not problems:
        problems = [note for note in audit.notes if not note.startswith("the seal's signature")]
    if anchor is None and audit.status == "intact":  # no root here (a subordinate CA's host): not the auditor's
        return audit.status, say(lang, "s_sealed_unanchored"), problems
    if audit.status == "not-anchored":  # expected until the subordinate signing ceremony: not a failure
        return audit.status, say(lang, "s_not_anchored"), problems
    return audit.status, lines[-1] if lang == "en" else _verdict_words(audit, lang), problems


def _verdict_words(audit: Any, lang: str) -> str:
    """The verifier's verdict (:func:`ceremony.transcript.audit.report_lines`, last line) in ``lang``."""
    if audit.status == "intact":
        return say(lang, "s_intact")
    if audit.status == "not-anchored":
        return say(lang, "s_not_anchored")
    if audit.status == "incomplete":
        return say(lang, "s_incomplete")
    if audit.status == "invalid":
        seq = audit.problems[0].seq if audit.problems else None
        return say(lang, "s_invalid") if seq is None else say(lang, "s_invalid_at", seq=seq)
    return say(lang, "s_not_sealed", status=audit.status)


def build_summary(out_dir: str | Path, before: Iterable[Mapping[str, Any]], transcript: str | Path | None,
                  rehearsal: bool, next_steps: Sequence[NextStep] = (), lang: str = "en") -> Summary:
    """What this run wrote (manifest entries new since ``before``), fingerprints, the transcript's verdict."""
    out_dir = Path(out_dir)
    summary = Summary(out_dir, rehearsal, next_steps=list(next_steps), lang=lang)
    for entry in new_entries(before, manifest_snapshot(out_dir, rehearsal)):
        summary.files.append(WrittenFile(out_dir / str(entry["path"]), str(entry["sha256"]), str(entry["kind"])))
    summary.fingerprints = fingerprints_of(summary.files, lang)
    if transcript is not None:
        summary.transcript = Path(transcript)
        summary.status, summary.verdict, summary.problems = _verdict(summary.transcript, out_dir, lang, rehearsal)
    return summary


def render_summary(summary: Summary, console: Console | None = None) -> None:
    console = console or make_console()
    lang = summary.lang
    console.print()
    console.rule(text((say(lang, "s_title"), "bold"),
                      (say(lang, "rehearsal"), "bold yellow") if summary.rehearsal else ""))
    console.print(text((say(lang, "s_files"), "bold"), say(lang, "s_files_tail", n=len(summary.files))))
    for f in summary.files:
        console.print(f"  {f.sha256}  {f.path}")
    if summary.fingerprints:
        console.print(text((say(lang, "s_fingerprints"), "bold"), say(lang, "s_fingerprints_tail")))
        for fp in summary.fingerprints:
            console.print(f"  {fp.what}:")
            console.print(f"    {colon_form(fp.sha256)}")
    if summary.transcript is None:
        console.print(text((say(lang, "s_transcript"), "bold"), say(lang, "s_no_transcript")))
    else:
        console.print(text((say(lang, "s_transcript"), "bold"), str(summary.transcript)))
        console.print(f"  {summary.verdict}", style="green" if summary.intact else "bold red")
        for problem in summary.problems:
            console.print(f"  {problem}", style=None if summary.intact else "red")
    if summary.next_steps:
        console.print(text((say(lang, "s_next"), "bold")))
        for step in summary.next_steps:
            console.print(f"  {step.where}:")
            console.print(f"    {step.command}")


def _options(defn: Any, env: str | None, definition: str | None, out: str | Path | None, rehearsal: bool, *,
             with_out: bool = True, with_rehearsal: bool = True) -> list[str]:
    """The options this run was given, for the next command: same environment (always named: a forgotten
    ``--env`` must never mean production), same definition, same output directory."""
    opts = ["--env", env or defn.model.environment]
    if definition:
        opts += ["--definition", str(definition)]
    if out is not None and with_out:
        opts += ["--out", str(out)]
    if rehearsal and with_rehearsal:
        opts.append("--rehearsal")
    return opts


def _command(*parts: str, tail: str = "") -> str:
    return shlex.join(["invoke", *parts]) + (f" {tail}" if tail else "")


def next_steps(ceremony: str, defn: Any, out_dir: str | Path, *, ca: str | None = None, env: str | None = None,
               definition: str | None = None, out: str | Path | None = None,
               rehearsal: bool = False, lang: str = "en") -> list[NextStep]:
    """What the operator runs after ``ceremony``, with the options this run was given (``env``, ``definition``,
    ``out`` as typed, ``None`` when not given); where to run it in ``lang``."""
    out_dir = Path(out_dir)
    model = defn.model
    root = model.root_name
    opts = _options(defn, env, definition, out, rehearsal)
    if ceremony == "root-key-generation":
        subs = [n for n, c in model.cas.items() if c.role == "subordinate" and c.issuer == root]
        if not subs:
            return [NextStep(say(lang, "n_root_crls"), _command("crl.root-batch", *opts))]
        return [NextStep(say(lang, "n_sub_key", ca=repr(n)),
                         _command("ceremony.subordinate-key", "--ca", n, *opts)) for n in subs]
    if ceremony == "subordinate-key-generation":
        assert ca is not None
        csr, pub = out_dir / f"{ca}.csr.pem", out_dir / f"{ca}.pub.pem"
        return [NextStep(say(lang, "n_carry_csr", csr=csr, pub=pub),
                         _command("ceremony.sign-subordinate", "--ca", ca, "--csr", str(csr), *opts))]
    if ceremony == "subordinate-signing":
        assert ca is not None
        return [NextStep(say(lang, "n_carry_cert", cert=out_dir / f"{ca}.crt.pem", ca=repr(ca)),
                         _command("crl.root-batch", *opts))]
    if ceremony == "root-crl-batch":
        publish = _options(defn, env, definition, None, False)
        if out is not None:
            publish += ["--batch-dir", str(out)]
        return [NextStep(say(lang, "n_publish", path=out_dir / "crl"), _command("crl.publish-root", *publish))]
    if ceremony == "key-backup":
        assert ca is not None
        # the backup this run wrote: the CA's newest, <ca>.key-backup.json for its first key or
        # <ca>.g<n>.key-backup.json for a re-key's, which is restored with its key generation
        named = re.compile(rf"{re.escape(ca)}(?:\.g(?P<n>[0-9]+))?\.key-backup\.json")
        found = [p for p in (out_dir / "backup").glob(f"{ca}.*key-backup.json") if named.fullmatch(p.name)]
        backup = max(found, key=lambda p: p.stat().st_mtime_ns, default=out_dir / "backup" / f"{ca}.key-backup.json")
        match = named.fullmatch(backup.name)
        which = ["--key-generation", match["n"]] if match and match["n"] else []
        return [NextStep(say(lang, "n_shares"),
                         _command("backup.restore", "--ca", ca, *which, "--backup", str(backup), *opts,
                                  tail="--share FILE … --target-token LABEL"))]
    if ceremony == "key-restore":
        assert ca is not None
        if ca == root:
            return [NextStep(say(lang, "n_root_restored"), _command("crl.root-batch", *opts))]
        return [NextStep(say(lang, "n_restored", ca=repr(ca)),
                         _command("crl.sign", "--ca", ca, *_options(defn, env, definition, None, False)))]
    if ceremony == "recording-addendum":
        tail = "--trust ROOT" + (" --rehearsal" if rehearsal else "")
        return [NextStep(say(lang, "n_addendum"), _command("audit.verify-all", str(out_dir), tail=tail))]
    if ceremony == "subordinate-renewal":
        assert ca is not None
        latest = max(out_dir.glob(f"{ca}.g*.crt.pem"), key=lambda p: (len(p.name), p.name), default=None)
        cert = latest or out_dir / f"{ca}.crt.pem"
        return [NextStep(say(lang, "n_renewed", cert=cert, ca=repr(ca)),
                         _command("crl.sign", "--ca", ca, *_options(defn, env, definition, None, False)))]
    if ceremony == "subordinate-rekey":
        assert ca is not None
        csr = max(out_dir.glob(f"{ca}.g*.csr.pem"), key=lambda p: (len(p.name), p.name), default=out_dir)
        return [NextStep(say(lang, "n_rekey_csr", csr=csr), _command("ceremony.certify-rekey", "--ca", ca, *opts))]
    if ceremony == "subordinate-rekey-certification":
        assert ca is not None
        cert = max(out_dir.glob(f"{ca}.g*.crt.pem"), key=lambda p: (len(p.name), p.name), default=out_dir)
        return [NextStep(say(lang, "n_rekeyed", cert=cert, ca=repr(ca)),
                         _command("crl.sign", "--ca", ca, *_options(defn, env, definition, None, False)))]
    if ceremony in ("sealing-certification", "key-destruction"):
        tail = "--trust ROOT" + (" --rehearsal" if rehearsal else "")
        key = "n_sealing_certified" if ceremony == "sealing-certification" else "n_destroyed"
        return [NextStep(say(lang, key), _command("audit.verify-all", str(out_dir), tail=tail))]
    if ceremony == "root-termination":  # the final CRL is published, the auditor verifies the root's archive
        tail = "--trust ROOT" + (" --rehearsal" if rehearsal else "")
        archive = out_dir / "termination" / f"{root}.termination-archive.tar"
        publish = _options(defn, env, definition, None, False)
        if out is not None:
            publish += ["--batch-dir", str(out)]
        return [NextStep(say(lang, "n_publish", path=out_dir / "crl"), _command("crl.publish-root", *publish)),
                NextStep(say(lang, "n_terminated"), _command("audit.verify-archive", str(archive), tail=tail))]
    if ceremony == "ca-termination":  # the auditor verifies the archive before the key is destroyed
        assert ca is not None
        tail = "--trust ROOT" + (" --rehearsal" if rehearsal else "")
        archive = out_dir / "termination" / f"{ca}.termination-archive.tar"
        return [NextStep(say(lang, "n_terminated"), _command("audit.verify-archive", str(archive), tail=tail))]
    if ceremony == "pin-change":  # the next login on the token takes the new parts
        tail = "--trust ROOT" + (" --rehearsal" if rehearsal else "")
        return [NextStep(say(lang, "n_pin_changed"), _command("audit.verify-all", str(out_dir), tail=tail))]
    if ceremony == "token-initialisation":  # the CA's key ceremony on the new token, which takes its sealing key
        assert ca is not None
        if ca == root:
            return [NextStep(say(lang, "n_token_initialised"), _command("ceremony.root", *opts))]
        return [NextStep(say(lang, "n_token_initialised"), _command("ceremony.subordinate-key", "--ca", ca, *opts))]
    if ceremony == "new-root-key-generation":
        successor = model.successor_root()
        cert = out_dir / f"{successor[0] if successor else root}.crt.pem"
        return [NextStep(say(lang, "n_new_root", cert=cert), _command("ceremony.cross-certify", *opts))]
    if ceremony == "cross-certification":
        tail = "--trust ROOT" + (" --rehearsal" if rehearsal else "")
        return [NextStep(say(lang, "n_cross"), _command("audit.verify-all", str(out_dir), tail=tail))]
    raise ValueError(f"{ceremony!r} is not a ceremony (allowed: {', '.join(CEREMONIES)})")


def show_summary(ceremony: str, defn: Any, out_dir: str | Path, before: Iterable[Mapping[str, Any]],
                 transcript: str | Path | None, rehearsal: bool, *, ca: str | None = None, env: str | None = None,
                 definition: str | None = None, out: str | Path | None = None,
                 console: Console | None = None, lang: str = "en") -> Summary:
    """Print the summary of a finished ceremony (see the module documentation), in ``lang``.

    A transcript that does not verify right after it was sealed is an error (exit non-zero), after the
    summary is printed: the outputs stay where they are, listed, for the auditor.
    """
    summary = build_summary(out_dir, before, transcript, rehearsal,
                            next_steps(ceremony, defn, out_dir, ca=ca, env=env, definition=definition, out=out,
                                       rehearsal=rehearsal, lang=lang), lang)
    render_summary(summary, console)
    if summary.transcript is not None and not summary.intact:
        raise VerificationError(f"{summary.transcript}: the transcript just sealed does not verify "
                                f"({summary.status}); the files above are written and listed: keep everything as "
                                f"it is and have it examined (invoke audit.verify {shlex.quote(str(transcript))} "
                                f"--artifacts {shlex.quote(str(out_dir))} --trust ROOT)")
    return summary
