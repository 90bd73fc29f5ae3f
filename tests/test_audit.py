"""The offline verifier on a real transcript: a root ceremony on a SoftHSM token, sealed in the HSM.

Each tampering a person with write access to the files could try must be caught, and the first
bad record named: modified, removed, reordered, duplicated, inserted and truncated records, a
wrong closing signature (even with the rest of the chain recomputed), an artifact changed after
the ceremony.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from test_transcript import records, rewrite

from ceremony.ceremonies.root_key import root_ceremony
from ceremony.definition.model import load_definition
from ceremony.transcript.audit import verify
from ceremony.transcript.chain import canonical, open_rehearsal_transcript

pytestmark = pytest.mark.hsm


@pytest.fixture
def sealed(tmp_path: Path, definition_on_tokens: Any) -> Path:
    """A root ceremony's rehearsal transcript, sealed by the root key on a fresh token."""
    defn_path, _ = definition_on_tokens()
    defn = load_definition(defn_path)
    out = tmp_path / "out"
    path = out / "transcripts" / "root-key-generation-1.jsonl"
    with open_rehearsal_transcript(path, "root-key-generation", defn) as rec:
        root_ceremony(defn, out, rec, rehearsal=True, interactive=False)
    return path


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def put(path: Path, new_lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in new_lines))


def index_of(path: Path, type_: str) -> int:
    return next(r["seq"] for r in records(path) if r["type"] == type_)


def test_intact_transcript_passes_with_evidence(sealed: Path) -> None:
    result = verify(sealed)
    assert result.status == "intact", [str(p) for p in result.problems]
    recs = records(sealed)
    token = next(r["data"] for r in recs if r["type"] == "evidence" and r["name"] == "token")
    assert token["module_sha256"] and token["serial"] and token["firmware_version"] and token["mechanisms"]
    key = next(r["data"] for r in recs if r["type"] == "evidence" and r["name"] == "key")
    seal = next(r for r in recs if r["type"] == "seal")
    assert seal["verifier"]["spki_sha256"] == key["spki_sha256"] and seal["verifier"]["path"] == "root.crt.pem"
    assert seal["algorithm"] == "ecdsa-sha384"
    assert any(r["type"] == "evidence" and r["name"] == "offline-check" for r in recs)


def test_cli_exit_codes(sealed: Path, tmp_path: Path) -> None:
    run = subprocess.run([str(REPO / ".venv/bin/invoke"), "audit.verify", str(sealed)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "INTACT" in run.stdout and "Moussa Konaté (rehearsal)" in run.stdout
    put(sealed, lines(sealed)[:-3])
    run = subprocess.run([str(REPO / ".venv/bin/invoke"), "audit.verify", str(sealed)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "INCOMPLETE" in run.stdout


def _modify(path: Path) -> int:
    """Change the recorded hash of the first artifact, re-encoding the line canonically."""
    i = index_of(path, "artifact")
    ls = lines(path)
    rec = json.loads(ls[i])
    rec["sha256"] = "0" * 64
    ls[i] = canonical(rec)
    put(path, ls)
    return i + 1


def _modify_bytes(path: Path) -> int:
    i = index_of(path, "sign-in")
    ls = lines(path)
    ls[i] = ls[i].replace(b'"roles":["administrator"]', b'"roles": ["administrator"]')
    put(path, ls)
    return i


def _remove(path: Path) -> int:
    ls = lines(path)
    i = index_of(path, "exception") if any(b'"exception"' in x for x in ls) else index_of(path, "evidence")
    put(path, ls[:i] + ls[i + 1:])
    return i


def _reorder(path: Path) -> int:
    ls = lines(path)
    i = index_of(path, "artifact")
    ls[i], ls[i + 1] = ls[i + 1], ls[i]
    put(path, ls)
    return i


def _duplicate(path: Path) -> int:
    ls = lines(path)
    i = index_of(path, "step-end")
    put(path, [*ls[:i + 1], ls[i], *ls[i + 1:]])
    return i + 1


def _insert(path: Path) -> int:
    ls = lines(path)
    i = index_of(path, "artifact")
    prev = json.loads(ls[i])
    forged = dict(prev, path="extra.pem", sha256="1" * 64)  # same seq and prev as the record it precedes
    put(path, [*ls[:i], canonical(forged), *ls[i:]])
    return i + 1


@pytest.mark.parametrize("tamper, what", [
    (_modify, "does not chain"), (_modify_bytes, "canonical form"), (_remove, "sequence number"),
    (_reorder, "sequence number"), (_duplicate, "sequence number"), (_insert, "sequence number"),
], ids=["modified", "modified-bytes", "removed", "reordered", "duplicated", "inserted"])
def test_tampered_records_are_rejected_naming_the_first_bad_record(sealed: Path, tamper: Any, what: str) -> None:
    bad = tamper(sealed)
    result = verify(sealed)
    assert result.status == "invalid" and result.exit_code == 1
    assert result.problems[0].seq == bad and what in result.problems[0].message


def test_truncated_mid_record_is_incomplete(sealed: Path) -> None:
    data = sealed.read_bytes()
    sealed.write_bytes(data[:-40])  # the close record cut short
    result = verify(sealed)
    assert result.status == "incomplete" and result.exit_code == 2 and not result.ok
    assert any("cut short" in n for n in result.notes)


def test_truncated_records_are_incomplete(sealed: Path) -> None:
    put(sealed, lines(sealed)[:20])
    result = verify(sealed)
    assert result.status == "incomplete" and not result.ok
    assert any("verifies up to record 19" in n for n in result.notes)


def test_appended_record_after_close_is_invalid(sealed: Path) -> None:
    recs = records(sealed)
    recs.append(dict(recs[-2], type="say", text="added later"))
    rewrite(sealed, recs)
    result = verify(sealed)
    assert result.status == "invalid" and "after the closing record" in str(result.problems[0])


def test_wrong_closing_signature_is_rejected(sealed: Path) -> None:
    """Replace the signature with another key's over the same head, and recompute the close record."""
    recs = records(sealed)
    seal = recs[-2]
    other = ec.generate_private_key(ec.SECP384R1())
    message = b"ceremony-transcript-seal/1:" + seal["head"].encode()
    seal["signature"] = base64.b64encode(other.sign(message, ec.ECDSA(hashes.SHA384()))).decode()
    rewrite(sealed, recs)
    result = verify(sealed)
    assert result.status == "invalid"
    assert result.problems[0].seq == seal["seq"] and "closing signature does not verify" in str(result.problems[0])


def test_seal_by_another_key_is_rejected(sealed: Path) -> None:
    """A forger's own key and signature, named in the seal: not the key of the evidence, not the certificate's."""
    recs = records(sealed)
    seal = recs[-2]
    other = ec.generate_private_key(ec.SECP384R1())
    message = b"ceremony-transcript-seal/1:" + seal["head"].encode()
    seal["signature"] = base64.b64encode(other.sign(message, ec.ECDSA(hashes.SHA384()))).decode()
    seal["verifier"]["public_key"] = base64.b64encode(other.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    rewrite(sealed, recs)
    result = verify(sealed)
    assert result.status == "invalid"
    assert "not the key the ceremony's evidence describes" in str(result.problems[0])


def test_artifact_changed_after_the_ceremony_is_rejected(sealed: Path) -> None:
    der = sealed.parent.parent / "root.pub.der"
    der.write_bytes(der.read_bytes() + b"\0")
    result = verify(sealed)
    assert result.status == "invalid"
    assert "root.pub.der changed after the ceremony" in str(result.problems[0])


def test_missing_artifact_and_artifacts_directory(sealed: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "evidence-copy"
    shutil.copytree(sealed.parent.parent, elsewhere, ignore=shutil.ignore_patterns("hsm", "transcripts"))
    (sealed.parent.parent / "root.crt.der").unlink()
    result = verify(sealed)
    assert result.status == "invalid" and "root.crt.der is missing" in str(result.problems[0])
    assert verify(sealed, elsewhere).status == "intact"


def test_certificate_swapped_for_another_is_rejected(sealed: Path, tmp_path: Path) -> None:
    """Swapping the certificate and fixing its recorded hash still fails: the key evidence and seal disagree."""
    recs = records(sealed)
    out = sealed.parent.parent
    other = ec.generate_private_key(ec.SECP384R1())
    (out / "root.pub.pem").write_bytes(other.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    import hashlib

    for r in recs:
        if r["type"] == "artifact" and r["path"] == "root.pub.pem":
            r["sha256"] = hashlib.sha256((out / "root.pub.pem").read_bytes()).hexdigest()
    rewrite(sealed, recs)
    result = verify(sealed)
    assert result.status == "invalid"
