"""The auditor's recipe of docs/transcripts.md ("Checking without the suite"), run as written.

The shell script between the ``recipe:begin`` and ``recipe:end`` markers is taken from the document
itself and run with bash, jq, sha256sum and openssl on the session's rehearsal (conftest.full_rehearsal):
every sealed transcript passes it against the rehearsal's root, and forged copies fail it: content
rewritten and resealed with a forger's own key, a record dropped with the old seal kept, the seal's time
edited, bytes appended after the seal, a rehearsal relabelled production.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import REHEARSAL_GROUP, REPO
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from test_transcript import rewrite

from ceremony.hsm.keys import spki_sha256

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group(REHEARSAL_GROUP)]


def recipe() -> str:
    text = (REPO / "docs" / "transcripts.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- recipe:begin -->\n```sh\n(.*?)```\n<!-- recipe:end -->", text, re.S)
    assert block, "docs/transcripts.md has no recipe between its markers"
    return block.group(1)


def run_recipe(transcript: Path, root: Path, artifacts: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "T": str(transcript), "ROOT": str(root), "ART": str(artifacts)}
    return subprocess.run(["bash", "-c", recipe()], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def outputs(full_rehearsal: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the rehearsal's outputs (the forgeries below must not touch the shared one)."""
    out, _ = full_rehearsal
    copy = tmp_path_factory.mktemp("recipe") / "out"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("hsm"))
    return copy


def sealed_transcripts(out: Path) -> list[Path]:
    found = []
    for path in sorted((out / "transcripts").glob("*.jsonl")):
        last = json.loads(path.read_text(encoding="utf-8").splitlines()[-1])
        if last.get("type") == "seal":
            found.append(path)
    return found


def test_every_sealed_rehearsal_transcript_passes_the_recipe(outputs: Path) -> None:
    transcripts = sealed_transcripts(outputs)
    assert len(transcripts) >= 5, transcripts  # root key, subordinate key, signing, root CRLs, backup, restore
    successor_seal = spki_sha256(x509.load_pem_x509_certificate(
        (outputs / "root.g2.seal.crt.pem").read_bytes()).public_key())
    for path in transcripts:
        # The recipe anchors a sealing certificate issued by the anchor itself; the successor root's ceremonies
        # (the rehearsal's rollover) are sealed by keys the successor certified, so their anchor is the successor
        # (audit.verify reaches them from the root through the forward cross-certificate: tests/test_rollover.py).
        verifier = json.loads(path.read_text(encoding="utf-8").splitlines()[-1])["verifier"]["spki_sha256"]
        anchor = "root.g2.crt.pem" if verifier == successor_seal else "root.crt.pem"
        run = run_recipe(path, outputs / anchor, outputs)
        assert run.returncode == 0, (path.name, run.stdout, run.stderr)
        assert run.stdout.splitlines()[-2:][0] == "REHEARSAL" and run.stdout.startswith("REHEARSAL\nANCHORED")


def forged_copy(outputs: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copy(next(p for p in sealed_transcripts(outputs) if p.name.startswith(name)), target)
    return target


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_forgers_reseal_is_not_anchored(outputs: Path, tmp_path: Path) -> None:
    path = forged_copy(outputs, tmp_path, "subordinate-signing")
    recs = lines_of(path)
    for r in recs:
        if r["type"] == "bag" and r["when"] == "reseal":
            r["serial"] = "ML-TE-999999"  # the bag the forger says he used
    rewrite(path, recs, ec.generate_private_key(ec.SECP384R1()))
    run = run_recipe(path, outputs / "root.crt.pem", outputs)
    assert run.returncode == 1 and "NOT ANCHORED" in run.stdout, run.stdout + run.stderr


def test_a_record_dropped_with_the_old_seal_kept_fails(outputs: Path, tmp_path: Path) -> None:
    """The chain rebuilt without one record, the original seal kept: its head is not the new chain's."""
    path = forged_copy(outputs, tmp_path, "root-key-generation")
    recs = lines_of(path)
    seal = recs[-1]
    dropped = next(i for i, r in enumerate(recs) if r["type"] == "evidence")
    rewrite(path, recs[:dropped] + recs[dropped + 1:-1] + [seal])  # re-chained, the seal as it was
    data = path.read_text(encoding="utf-8").splitlines()
    data[-1] = json.dumps(dict(json.loads(data[-1]), head=seal["head"], words=seal["words"],
                               signature=seal["signature"]), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False)
    path.write_text("\n".join(data) + "\n", encoding="utf-8")
    run = run_recipe(path, outputs / "root.crt.pem", outputs)
    assert run.returncode == 1 and "the seal's head is not the chain head" in run.stdout, run.stdout + run.stderr


def test_an_edited_seal_time_fails(outputs: Path, tmp_path: Path) -> None:
    path = forged_copy(outputs, tmp_path, "root-key-generation")
    data = path.read_text(encoding="utf-8").splitlines()
    seal = json.loads(data[-1])
    seal["time"] = "2027-01-01T00:00:00.000Z"
    data[-1] = json.dumps(seal, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    path.write_text("\n".join(data) + "\n", encoding="utf-8")
    run = run_recipe(path, outputs / "root.crt.pem", outputs)
    assert run.returncode == 1 and "signature does not verify" in run.stdout, run.stdout + run.stderr


def test_bytes_after_the_seal_fail(outputs: Path, tmp_path: Path) -> None:
    path = forged_copy(outputs, tmp_path, "root-key-generation")
    path.write_bytes(path.read_bytes() + b'{"seq":')
    run = run_recipe(path, outputs / "root.crt.pem", outputs)
    assert run.returncode == 1 and "bytes after the last record" in run.stdout, run.stdout + run.stderr


def test_a_rehearsal_relabelled_production_fails(outputs: Path, tmp_path: Path) -> None:
    """Resealed with the rehearsal root's key would need the token; even a consistent relabelling made
    with it is caught by the header and root disagreeing. Here: relabelled and left with its old seal."""
    path = forged_copy(outputs, tmp_path, "root-key-generation")
    recs = lines_of(path)
    recs[0]["rehearsal"] = False
    rewrite(path, recs)
    run = run_recipe(path, outputs / "root.crt.pem", outputs)
    assert run.returncode == 1, run.stdout + run.stderr


def test_the_recipe_reads_the_seal_as_the_suite_writes_it(outputs: Path) -> None:
    """The recipe's canonical form of the seal record (jq -cS) is the suite's: same bytes signed."""
    path = sealed_transcripts(outputs)[0]
    seal_line = path.read_text(encoding="utf-8").splitlines()[-1]
    jq = subprocess.run(["jq", "-cS", "del(.signature)"], input=seal_line, capture_output=True, text=True,
                        check=True).stdout.rstrip("\n")
    seal = json.loads(seal_line)
    del seal["signature"]
    assert jq == json.dumps(seal, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(base64.b64decode(json.loads(seal_line)["verifier"]["public_key"])).hexdigest() == \
        json.loads(seal_line)["verifier"]["spki_sha256"]
