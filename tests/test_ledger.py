"""``invoke audit.verify-all``: every transcript of a rehearsal, the ledger that links them, the manifest.

On a copy of the session's rehearsal (conftest.full_rehearsal): the untouched outputs pass with
``--trust root.crt.pem --rehearsal`` (and the rehearsal auditor's ``--allowed-signers``: every sealed
transcript is attested, the bags are continuous); without ``--rehearsal`` they do not; an old transcript
removed, or replaced by the same ceremony's transcript of another run, breaks the ledger; an edited manifest,
a file changed after it was listed and an artifact missing from the manifest are findings; shredded share
files are not; an attestation by a key the auditor did not bring is. Two production ceremonies whose bag
serials disagree each verify alone, and verify-all reports the break.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import REHEARSAL_GROUP, REPO, TESTING_DEFINITION
from test_attestation import ssh_key
from test_evidence import make_root, production_ceremony, write_answers
from test_transcript import rewrite

from ceremony.common.manifest import Manifest
from ceremony.definition.model import load_definition
from ceremony.transcript.anchor import load_anchor
from ceremony.transcript.audit import verify

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group(REHEARSAL_GROUP)]


def verify_all(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(REPO / ".venv/bin/invoke"), "audit.verify-all", str(out), *extra], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def outputs(full_rehearsal: tuple[Path, Any], tmp_path: Path) -> Path:
    out, _ = full_rehearsal
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    return copy


def headers(out: Path) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text(encoding="utf-8").splitlines()[0])
            for p in sorted((out / "transcripts").glob("*.jsonl"))}


def test_the_rehearsal_verifies_as_a_whole(outputs: Path) -> None:
    run = verify_all(outputs, "--trust", str(outputs / "root.crt.pem"), "--rehearsal", "--allowed-signers",
                     str(outputs / "auditor" / "allowed_signers"))
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert run.stdout.splitlines()[-1].startswith("ALL INTACT") and "each sealed transcript attested" in run.stdout
    # the manifest lists each sealed transcript's attestation (message and signature) and the auditor's key
    manifest = json.loads((outputs / "manifest.json").read_text(encoding="utf-8"))
    attested = {a["transcript"] for a in manifest["artifacts"] if a["kind"] == "auditor-attestation"}
    sealed = {name for name in headers(outputs)
              if json.loads((outputs / "transcripts" / name).read_text().splitlines()[-1])["type"] == "seal"}
    assert sealed and attested == sealed
    assert any(a["kind"] == "auditor-allowed-signers" for a in manifest["artifacts"])
    # each ledger link after the first names the previous transcript's attestation
    for name, h in headers(outputs).items():
        previous = h["ledger"]["previous"]
        if previous is not None and previous["file"] in sealed:
            assert [a["file"] for a in previous["attestations"]] == [f"{previous['file']}.attestation",
                                                                     f"{previous['file']}.attestation.sig"], name
    # the ledger is one chain: one beginning, and each transcript names the one finished before it
    links = {name: (h.get("ledger") or {}).get("previous") for name, h in headers(outputs).items()}
    beginnings = [name for name, prev in links.items() if prev is None]
    assert len(beginnings) == 1 and beginnings[0].startswith("root-key-generation"), links
    named = [prev["file"] for prev in links.values() if prev]
    assert len(named) == len(set(named)) == len(links) - 1


def test_without_rehearsal_a_rehearsal_never_passes(outputs: Path) -> None:
    run = verify_all(outputs, "--trust", str(outputs / "root.crt.pem"))
    assert run.returncode == 1 and "REHEARSAL" in run.stdout, run.stdout[-3000:]


def test_an_old_transcript_removed_breaks_the_ledger(outputs: Path) -> None:
    first = next(name for name, h in headers(outputs).items() if (h.get("ledger") or {}).get("previous") is None)
    (outputs / "transcripts" / first).unlink()
    run = verify_all(outputs, "--trust", str(outputs / "root.crt.pem"), "--rehearsal")
    assert run.returncode == 1 and f"the ledger names {first} before it, which is missing" in run.stdout


def test_an_old_transcript_rewritten_breaks_the_next_link(outputs: Path) -> None:
    """A bag serial changed in an old transcript and its chain recomputed: its final head changes, and the
    next transcript's ledger link no longer matches."""
    target = next(name for name in headers(outputs) if name.startswith("subordinate-signing"))
    path = outputs / "transcripts" / target
    recs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for r in recs:
        if r["type"] == "bag" and r["when"] == "reseal":
            r["serial"] = "ML-TE-999999"
    rewrite(path, recs)
    run = verify_all(outputs, "--trust", str(outputs / "root.crt.pem"), "--rehearsal")
    assert run.returncode == 1 and f"names {target} with final head" in run.stdout, run.stdout[-3000:]


def test_the_manifest_is_checked_both_ways(outputs: Path) -> None:
    manifest = json.loads((outputs / "manifest.json").read_text(encoding="utf-8"))
    cert = next(a for a in manifest["artifacts"] if a["path"] == "qualified.crt.pem")
    manifest["artifacts"].remove(cert)  # an artifact a transcript recorded, no longer listed
    (outputs / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    listed = next(a for a in manifest["artifacts"] if a["path"].endswith(".html"))
    (outputs / listed["path"]).write_text("<p>edited</p>", encoding="utf-8")  # a listed report edited
    run = verify_all(outputs, "--trust", str(outputs / "root.crt.pem"), "--rehearsal")
    assert run.returncode == 1
    assert "artifact qualified.crt.pem is not listed in manifest.json" in run.stdout, run.stdout[-3000:]
    assert f"manifest.json lists {listed['path']} with SHA-256" in run.stdout


def test_a_bad_anchor_gets_one_message(outputs: Path) -> None:
    run = verify_all(outputs, "--trust", str(outputs / "qualified.crt.pem"), "--rehearsal")
    assert run.returncode == 64 and "not a root CA certificate" in run.stderr and not run.stdout


def test_a_report_of_another_transcript_is_found(outputs: Path) -> None:
    """A report copied over another ceremony's report (and its manifest hash fixed): it names the wrong
    transcript file, in the HTML and in the PDF's text layer."""
    manifest = json.loads((outputs / "manifest.json").read_text(encoding="utf-8"))
    reports = [a for a in manifest["artifacts"] if a["kind"] == "transcript-report" and a["format"] == "pdf"]
    victim, other = reports[0], next(r for r in reports[1:] if r["lang"] == reports[0]["lang"])
    shutil.copy(outputs / other["path"], outputs / victim["path"])
    victim["sha256"] = hashlib.sha256((outputs / victim["path"]).read_bytes()).hexdigest()
    (outputs / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    run = verify_all(outputs, "--trust", str(outputs / "root.crt.pem"), "--rehearsal")
    name = Path(victim["path"]).name
    assert run.returncode == 1 and f"{name}: does not name the SHA-256 of" in run.stdout, run.stdout[-3000:]


def test_shredded_shares_pass_and_a_strangers_attestation_does_not(outputs: Path, tmp_path: Path) -> None:
    """docs/key-backup.md: the share files are shredded once their pages are bagged. Their custody records say
    so: the backup transcript and the whole directory still verify. An attestation checked against another
    auditor's allowed-signers file: a finding with its own exit code."""
    for share in (outputs / "backup").glob("*.share-*.txt"):
        share.unlink()
    root = str(outputs / "root.crt.pem")
    run = verify_all(outputs, "--trust", root, "--rehearsal", "--allowed-signers",
                     str(outputs / "auditor" / "allowed_signers"))
    assert run.returncode == 0, run.stdout[-3000:]
    assert "handed over and shredded, as its custody record says" in run.stdout
    _, strangers = ssh_key(tmp_path / "other-auditor", "other-auditor")
    run = verify_all(outputs, "--trust", root, "--rehearsal", "--allowed-signers", str(strangers))
    assert run.returncode == 6, run.stdout[-3000:]
    assert "signed by a key that is not in the auditor's allowed-signers file" in run.stdout


def test_a_bag_opened_with_another_serial_is_a_break(tmp_path: Path) -> None:
    """Two production ceremonies in one directory: the second opens the workstation's bag with a serial that is
    not the one the first resealed it with. Each transcript alone verifies (nothing in either is wrong); only the
    two together show that the bag was opened, or replaced, in between."""
    definition = load_definition(TESTING_DEFINITION)
    out = tmp_path / "out"
    key = make_root(out)
    first = production_ceremony(out, definition, write_answers(tmp_path / "first.yml"), key)
    second = production_ceremony(out, definition, write_answers(
        tmp_path / "second.yml", bags={"open": {"hsm": "ML-TE-000103", "workstation": "ML-TE-999999"},
                                       "reseal": {"hsm": "ML-TE-000105", "workstation": "ML-TE-000106"}}), key)
    manifest = Manifest(out, rehearsal=False)
    for path in (first, second):
        manifest.add("transcript", path, "jsonl")
        assert verify(path, trust=load_anchor(str(out / "root.crt.pem"), out)).exit_code == 0
    run = verify_all(out, "--trust", str(out / "root.crt.pem"))
    assert run.returncode == 7, run.stdout[-3000:]
    assert (f"FAIL {second.name}: bag 'workstation' opened with serial ML-TE-999999, but {first.name} resealed it "
            "with serial ML-TE-000104") in run.stdout
    assert "bag 'hsm'" not in run.stdout
