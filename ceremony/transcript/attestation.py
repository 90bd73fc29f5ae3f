"""The auditor's attestation: the independent witness or auditor signs a transcript's final head with a key of
their own, so that the record does not rest on the CA's keys and the workstation alone.

The seal says the HSM signed what the workstation wrote; it cannot say that someone independent of the CA
looked at it. The attestation can: after verifying the transcript, the auditor signs a short message naming
the transcript file, its SHA-256 and its final chain head, with an OpenSSH key (``ssh-keygen -Y sign``,
namespace :data:`NAMESPACE`). OpenSSH is on every auditor's laptop, its signature format (SSHSIG) is
documented, and its ``allowed_signers`` file is exactly the statement "these are the keys I accept, and
whose they are" that the verifier needs: a signature by any other key is a finding, never accepted because
the files say so. The message and the signature sit next to the transcript (``<transcript>.attestation``,
``<transcript>.attestation.sig``), are listed in the manifest (kind ``auditor-attestation``) and are named,
with their SHA-256, by the next ceremony's ledger link.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ceremony.common import child_process, pgpwords
from ceremony.common.errors import CeremonyError
from ceremony.common.fileio import sha256_file, write_new
from ceremony.common.manifest import MANIFEST_NAME, Manifest

#: The SSHSIG namespace of an attestation: a signature made for anything else does not verify as one.
NAMESPACE = "ceremony-transcript"

#: First line of the message file.
FORMAT = "ceremony-transcript-attestation/1"

#: The message's fields, in order, one ``name: value`` per line.
FIELDS = ("transcript", "sha256", "final-head", "final-words", "signer", "time")

#: Exit code of ``audit.verify`` / ``audit.verify-all`` when an attestation does not verify (docs/transcripts.md).
ATTESTATION_EXIT = 6

KIND = "auditor-attestation"


class AttestationError(CeremonyError):
    """An attestation cannot be made or checked as asked (bad key, transcript not sealed, file exists...)."""

    exit_code = 64


def files_of(transcript: Path) -> tuple[Path, Path]:
    """The message and signature files of ``transcript``'s attestation."""
    return (transcript.with_name(transcript.name + ".attestation"),
            transcript.with_name(transcript.name + ".attestation.sig"))


def final_head(transcript: Path) -> tuple[str, dict[str, Any]] | None:
    """(final head, last record) when ``transcript`` ends with a seal after its last newline; else None."""
    lines = transcript.read_bytes().split(b"\n")
    if len(lines) < 2 or lines[-1]:
        return None
    try:
        last = json.loads(lines[-2])
    except ValueError:
        return None
    if not isinstance(last, dict) or last.get("type") != "seal":
        return None
    return hashlib.sha256(lines[-2]).hexdigest(), last


def message(transcript: Path, signer: str, when: dt.datetime) -> bytes:
    """The text the auditor signs: small, readable, and naming the transcript three ways (its file name, its
    SHA-256, its final chain head, also as the PGP words the witnesses copied)."""
    found = final_head(transcript)
    if found is None:
        raise AttestationError(f"{transcript}: does not end with a seal: only a sealed transcript can be attested "
                               "(verify it first with invoke audit.verify)")
    head = found[0]
    values = {"transcript": transcript.name, "sha256": sha256_file(transcript), "final-head": head,
              "final-words": " ".join(pgpwords.hex_to_words(head)), "signer": signer,
              "time": when.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")}
    return (FORMAT + "\n" + "".join(f"{k}: {values[k]}\n" for k in FIELDS)).encode("utf-8")


def parse_message(data: bytes) -> dict[str, str] | None:
    """The fields of an attestation message, or None when it is not one."""
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        return None
    if not lines or lines[0] != FORMAT or lines[-1] != "":
        return None
    values = {}
    for line in lines[1:-1]:
        name, sep, value = line.partition(": ")
        if not sep or name not in FIELDS or name in values:
            return None
        values[name] = value
    return values if set(values) == set(FIELDS) else None


def _ssh_keygen() -> str:
    found = shutil.which("ssh-keygen", path=child_process.DEFAULT_PATH)
    if found is None:
        raise AttestationError("ssh-keygen is not installed (Debian package openssh-client; scripts/bootstrap.sh "
                               "installs it)")
    return found


def _signer_ok(signer: str) -> bool:
    return bool(signer.strip()) and signer == signer.strip() and len(signer) <= 128 and not re.search(r"[\r\n]",
                                                                                                       signer)


def attest(transcript: str | Path, key: str | Path, signer: str, *, when: dt.datetime | None = None,
           manifest: Manifest | None = None) -> tuple[Path, Path]:
    """Sign ``transcript``'s final head with the OpenSSH private key ``key`` as ``signer``; write the message
    and the signature next to the transcript (never over a file) and list both in the output directory's
    manifest. Every refusal happens before anything is written."""
    transcript, key = Path(transcript), Path(key)
    if not _signer_ok(signer):
        raise AttestationError(f"--signer: {signer!r} is not usable (allowed: a name on one line, 1 to 128 "
                               "characters, no surrounding spaces)")
    if not transcript.is_file():
        raise AttestationError(f"{transcript}: no such transcript")
    if not key.is_file():
        raise AttestationError(f"--key: {key}: no such private key file (an OpenSSH private key, e.g. "
                               "~/.ssh/id_ed25519)")
    msg_path, sig_path = files_of(transcript)
    for path in (msg_path, sig_path):
        if path.exists():
            raise AttestationError(f"{path}: an attestation exists already; attestations are never replaced")
    body = message(transcript, signer, when or dt.datetime.now(dt.UTC))
    try:
        run = child_process.run([_ssh_keygen(), "-Y", "sign", "-q", "-f", str(key), "-n", NAMESPACE], input=body,
                                capture_output=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        raise AttestationError(f"ssh-keygen could not sign with {key}: {exc}") from None
    if run.returncode != 0 or b"BEGIN SSH SIGNATURE" not in run.stdout:
        why = run.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AttestationError(f"--key: {key}: ssh-keygen could not sign with it ({why[-1] if why else 'no reason'})"
                               "; give an OpenSSH private key")
    write_new(msg_path, body)
    try:
        write_new(sig_path, run.stdout)
    except BaseException:
        with contextlib.suppress(OSError):
            msg_path.unlink()
        raise
    out = manifest.directory if manifest is not None else _output_directory(transcript)
    if manifest is None and (out / MANIFEST_NAME).is_file():
        manifest = Manifest(out, _is_rehearsal(transcript))
    if manifest is not None:
        manifest.add(KIND, msg_path, "text", transcript=transcript.name, signer=signer)
        manifest.add(KIND, sig_path, "sshsig", transcript=transcript.name, signer=signer, namespace=NAMESPACE)
    return msg_path, sig_path


def _header(transcript: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError), open(transcript, "rb") as handle:
        header = json.loads(handle.readline())
        if isinstance(header, dict):
            return header
    return {}


def _output_directory(transcript: Path) -> Path:
    return (transcript.parent / str(_header(transcript).get("artifacts_base", ".."))).resolve()


def _is_rehearsal(transcript: Path) -> bool:
    return bool(_header(transcript).get("rehearsal"))


def entries(transcript: Path) -> list[dict[str, str]]:
    """The attestation files of ``transcript`` that exist now (file name and SHA-256), for the ledger."""
    return [{"file": p.name, "sha256": sha256_file(p)} for p in files_of(transcript) if p.is_file()]


@dataclass
class AttestationCheck:
    """What the verifier found about one transcript's attestation."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    signed_by: list[str] = field(default_factory=list)


def check_allowed_signers(path: str | Path) -> Path:
    """The auditor's allowed-signers file, refused with one message when it cannot be one."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AttestationError(f"--allowed-signers: {path}: cannot be read "
                               f"({getattr(exc, 'strerror', None) or exc})") from None
    if not any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines()):
        raise AttestationError(f"--allowed-signers: {path}: no key in it (allowed: OpenSSH allowed_signers lines, "
                               "'PRINCIPAL namespaces=\"ceremony-transcript\" KEYTYPE KEY')")
    return path


def check(transcript: Path, allowed_signers: Path) -> AttestationCheck:
    """Does ``transcript`` carry an attestation by a key of ``allowed_signers`` over exactly this file?"""
    result = AttestationCheck()
    msg_path, sig_path = files_of(transcript)
    if not msg_path.is_file() or not sig_path.is_file():
        result.problems.append(f"no auditor attestation ({msg_path.name} and {sig_path.name} are expected next "
                               "to it)")
        return result
    body = msg_path.read_bytes()
    values = parse_message(body)
    if values is None:
        result.problems.append(f"{msg_path.name}: not an attestation message ({FORMAT})")
        return result
    found = final_head(transcript)
    if values["transcript"] != transcript.name or values["sha256"] != sha256_file(transcript) \
            or found is None or values["final-head"] != found[0]:
        result.problems.append(f"{msg_path.name}: attests {values['transcript']} with SHA-256 {values['sha256']} "
                               f"and final head {values['final-head']}, not this file: the transcript changed "
                               "after it was attested, or the attestation is another transcript's")
        return result
    tool = _ssh_keygen()
    try:
        principals = child_process.run([tool, "-Y", "find-principals", "-s", str(sig_path), "-f",
                                        str(allowed_signers)], capture_output=True, text=True, timeout=60)
        if principals.returncode != 0:
            seen = child_process.run([tool, "-Y", "check-novalidate", "-n", NAMESPACE, "-s", str(sig_path)],
                                     input=body.decode("utf-8"), capture_output=True, text=True, timeout=60)
            key = re.search(r"with (\S+ key \S+)", seen.stdout)
            result.problems.append(
                f"{msg_path.name}: signed by a key that is not in the auditor's allowed-signers file "
                f"{allowed_signers} ({key.group(1) if key else 'not a valid SSH signature of this message'})"
                f"; the attestation says {values['signer']!r}")
            return result
        for principal in [p for p in principals.stdout.splitlines() if p.strip()]:
            verified = child_process.run([tool, "-Y", "verify", "-f", str(allowed_signers), "-I", principal, "-n",
                                          NAMESPACE, "-s", str(sig_path)], input=body.decode("utf-8"),
                                         capture_output=True, text=True, timeout=60)
            if verified.returncode == 0:
                result.signed_by.append(principal)
    except (OSError, subprocess.SubprocessError) as exc:
        result.problems.append(f"{sig_path.name}: ssh-keygen could not check it: {exc}")
        return result
    if not result.signed_by:
        result.problems.append(f"{sig_path.name}: the signature does not verify over {msg_path.name} in namespace "
                               f"{NAMESPACE} with the allowed key: the message was changed after it was signed")
    else:
        result.notes.append(f"attested by {', '.join(result.signed_by)} (allowed-signers {allowed_signers}), "
                            f"signer named in the message: {values['signer']}, at {values['time']}")
    return result
