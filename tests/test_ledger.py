"""``invoke audit.verify-all``: every transcript of a rehearsal, the ledger that links them, the manifest.

On a copy of the session's rehearsal (conftest.full_rehearsal): the untouched outputs pass with
``--trust root.crt.pem --rehearsal``; without ``--rehearsal`` they do not; an old transcript removed, or
replaced by the same ceremony's transcript of another run, breaks the ledger; an edited manifest, a file
changed after it was listed and an artifact missing from the manifest are findings.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import REHEARSAL_GROUP, REPO
from test_transcript import rewrite

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
    run = verify_all(outputs, "--trust", str(outputs / "root.crt.pem"), "--rehearsal")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert run.stdout.splitlines()[-1].startswith("ALL INTACT")
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
