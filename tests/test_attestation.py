"""The auditor's attestation (issue 16, item 6): ``invoke audit.attest`` signs a sealed transcript's final head
with the auditor's own OpenSSH key; ``audit.verify`` and ``audit.verify-all`` check it against the
allowed-signers file the auditor brings; the next ceremony's ledger link names it.

Small production-mode ceremonies are built with the recorder (tests/test_evidence.py), sealed by a software
sealing key the test's own root certifies; the keys of the auditors are made by ``ssh-keygen`` at run time.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, TESTING_DEFINITION
from test_evidence import make_root, production_ceremony, write_answers

from ceremony.common.manifest import Manifest
from ceremony.definition.model import load_definition
from ceremony.transcript.anchor import load_anchor
from ceremony.transcript.attestation import ATTESTATION_EXIT, NAMESPACE, AttestationError, attest, files_of
from ceremony.transcript.audit import verify
from ceremony.transcript.ledger import verify_directory


@pytest.fixture(scope="module")
def definition() -> Any:
    return load_definition(TESTING_DEFINITION)


def ssh_key(directory: Path, name: str) -> tuple[Path, Path]:
    """An auditor's ed25519 key made now, and an allowed-signers file naming it."""
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    kind, blob = key.with_name(name + ".pub").read_text().split()[:2]
    allowed = directory / f"{name}.allowed_signers"
    allowed.write_text(f'"{name}" namespaces="{NAMESPACE}" {kind} {blob}\n')
    return key, allowed


SEAL_KEYS: dict[Path, Any] = {}


@pytest.fixture
def ceremony(tmp_path: Path, definition: Any) -> tuple[Path, Path]:
    """(output directory, sealed transcript listed in the output directory's manifest)."""
    out = tmp_path / "out"
    key = make_root(out)
    SEAL_KEYS[out] = key
    path = production_ceremony(out, definition, write_answers(tmp_path / "answers.yml"), key)
    Manifest(out, rehearsal=False).add("transcript", path, "jsonl")
    return out, path


def invoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(REPO / ".venv/bin/invoke"), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_attest_then_verify_with_the_auditors_keys(ceremony: tuple[Path, Path], tmp_path: Path) -> None:
    out, path = ceremony
    key, allowed = ssh_key(tmp_path / "auditor", "fatim")
    _, strangers = ssh_key(tmp_path / "other", "someone-else")
    run = invoke("audit.attest", str(path), "--key", str(key), "--signer", "Fatim Sissoko")
    assert run.returncode == 0, run.stdout + run.stderr
    message, signature = files_of(path)
    text = message.read_text(encoding="utf-8")
    assert text.startswith("ceremony-transcript-attestation/1\n") and f"transcript: {path.name}\n" in text
    assert "signer: Fatim Sissoko\n" in text and path.read_bytes().split(b"\n")[-2]
    listed = {(a["kind"], a["path"]) for a in json.loads((out / "manifest.json").read_text())["artifacts"]}
    assert {("auditor-attestation", f"transcripts/{message.name}"),
            ("auditor-attestation", f"transcripts/{signature.name}")} <= listed
    root = str(out / "root.crt.pem")
    run = invoke("audit.verify", str(path), "--trust", root, "--allowed-signers", str(allowed))
    assert run.returncode == 0, run.stdout + run.stderr
    assert '"fatim"' not in run.stdout and "attested by fatim" in run.stdout
    # signed by a key the auditor did not bring: one clear message, its own exit code
    run = invoke("audit.verify", str(path), "--trust", root, "--allowed-signers", str(strangers))
    assert run.returncode == ATTESTATION_EXIT == 6, run.stdout + run.stderr
    first = run.stdout.splitlines()[0]
    assert first.startswith("ATTESTATION NOT VERIFIED") and "not in the auditor's allowed-signers file" in first
    assert "ED25519 key SHA256:" in first
    # an unusable allowed-signers file: usage error, nothing checked
    run = invoke("audit.verify", str(path), "--trust", root, "--allowed-signers", str(tmp_path / "none"))
    assert run.returncode == 64 and "--allowed-signers" in run.stderr and not run.stdout


def test_an_edited_message_or_another_transcripts_attestation_does_not_verify(ceremony: tuple[Path, Path],
                                                                               tmp_path: Path) -> None:
    out, path = ceremony
    key, allowed = ssh_key(tmp_path / "auditor", "fatim")
    attest(path, key, "Fatim Sissoko")
    anchor = load_anchor(str(out / "root.crt.pem"), out)
    assert verify(path, trust=anchor, allowed_signers=allowed).status == "intact"
    message, _ = files_of(path)
    original = message.read_bytes()
    message.write_bytes(original.replace(b"signer: Fatim Sissoko", b"signer: Someone Else"))
    result = verify(path, trust=anchor, allowed_signers=allowed)
    assert result.status == "attestation" and result.exit_code == 6
    assert result.attestation is not None and "changed after it was signed" in result.attestation.problems[0]
    message.write_bytes(original.replace(b"sha256: ", b"sha256: 0"))
    result = verify(path, trust=anchor, allowed_signers=allowed)
    assert result.exit_code == 6 and "not this file" in result.attestation.problems[0]  # type: ignore[union-attr]
    message.unlink()
    result = verify(path, trust=anchor, allowed_signers=allowed)
    assert result.exit_code == 6 and "no auditor attestation" in result.attestation.problems[0]  # type: ignore[union-attr]


def test_bad_attestations_are_refused_before_anything_is_written(ceremony: tuple[Path, Path], tmp_path: Path,
                                                                 definition: Any) -> None:
    out, path = ceremony
    key, _ = ssh_key(tmp_path / "auditor", "fatim")
    not_a_key = tmp_path / "not-a-key"
    not_a_key.write_text("hello\n")
    manifest_before = (out / "manifest.json").read_bytes()
    cases = [(path, not_a_key, "Fatim", "ssh-keygen could not sign with it"),
             (path, tmp_path / "missing", "Fatim", "no such private key file"),
             (path, key, " Fatim\n", "--signer"),
             (out / "transcripts" / "none.jsonl", key, "Fatim", "no such transcript")]
    unsealed = out / "transcripts" / "unsealed.jsonl"
    unsealed.write_bytes(b"".join(line + b"\n" for line in path.read_bytes().split(b"\n")[:-2]))
    cases.append((unsealed, key, "Fatim", "does not end with a seal"))
    for transcript, keyfile, signer, said in cases:
        with pytest.raises(AttestationError, match=said) as raised:
            attest(transcript, keyfile, signer)
        assert raised.value.exit_code == 64 and "\n" not in str(raised.value)
        assert not any(p.exists() for p in files_of(transcript))
    assert (out / "manifest.json").read_bytes() == manifest_before
    attest(path, key, "Fatim")
    written = [p.read_bytes() for p in files_of(path)]
    with pytest.raises(AttestationError, match="never replaced"):
        attest(path, key, "Fatim again")
    assert [p.read_bytes() for p in files_of(path)] == written


def test_the_next_ceremony_records_the_attestation_in_the_ledger(ceremony: tuple[Path, Path], tmp_path: Path,
                                                                  definition: Any) -> None:
    """Attested before the next ceremony: its ledger link names both files with their SHA-256, and verify-all
    checks them; an attestation replaced afterwards (signed again by another key) is found twice."""
    out, first = ceremony
    key, allowed = ssh_key(tmp_path / "auditor", "fatim")
    attest(first, key, "Fatim")
    seal_key = SEAL_KEYS.pop(out)
    second = production_ceremony(out, definition, write_answers(tmp_path / "answers-2.yml",
                                                                bags={"open": {"hsm": "ML-TE-000103",
                                                                               "workstation": "ML-TE-000104"},
                                                                      "reseal": {"hsm": "ML-TE-000105",
                                                                                 "workstation": "ML-TE-000106"}}),
                                 seal_key)
    header = json.loads(second.read_text(encoding="utf-8").splitlines()[0])
    listed = header["ledger"]["previous"]["attestations"]
    assert [entry["file"] for entry in listed] == [p.name for p in files_of(first)]
    Manifest(out, rehearsal=False).add("transcript", second, "jsonl")
    anchor = load_anchor(str(out / "root.crt.pem"), out)
    result = verify_directory(out, anchor, allowed_signers=allowed)
    assert result.findings == [f"{second.name}: no auditor attestation ({second.name}.attestation and "
                               f"{second.name}.attestation.sig are expected next to it)"], result.findings
    assert result.exit_code == ATTESTATION_EXIT
    _, signature = files_of(first)
    other_key, _ = ssh_key(tmp_path / "forger", "forger")
    signature.unlink()
    files_of(first)[0].unlink()
    attest(first, other_key, "Fatim")
    result = verify_directory(out, anchor, allowed_signers=allowed)
    assert any("the ledger names the attestation" in f and "has another" in f for f in result.findings)
    assert any("not in the auditor's allowed-signers file" in f for f in result.findings)
    assert result.exit_code == 1  # a ledger finding weighs more than an attestation finding
