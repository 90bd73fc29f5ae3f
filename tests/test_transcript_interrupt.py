"""Real ceremonies through ``invoke``: killed mid-way, restarted, and refused at sign-in.

A ceremony killed with SIGKILL inside a step (a test driver patches the recorder to kill its own
process there) must leave a transcript that verifies as *incomplete* and no output file; a later
run must refuse to start until the interruption is acknowledged, and then record it as an
exception in a new transcript. A separation-of-duties violation must stop the ceremony before any
file or token object exists.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, tree

from ceremony.definition.model import load_definition
from ceremony.hsm.session import open_session, pin_source_for
from ceremony.transcript.audit import verify
from ceremony.transcript.report import write_reports

pytestmark = pytest.mark.hsm

DRIVER = """
import contextlib, os, signal, sys
from ceremony.transcript import chain as transcript

_step = transcript.TranscriptRecorder.step
KILL_AT = os.environ.get("KILL_AT_STEP")


@contextlib.contextmanager
def step(self, step_id, description):
    with _step(self, step_id, description):
        if step_id == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)
        yield


transcript.TranscriptRecorder.step = step
from invoke.main import program
program.run(["invoke", *sys.argv[1:]])
"""

PEOPLE = [
    {"name": "Awa Traoré", "roles": ["administrator"], "id_document": "passport A1", "id_checked_by": "Binta Keïta"},
    {"name": "Binta Keïta", "roles": ["internal-witness"], "id_document": "passport B2", "id_checked_by": "Awa Traoré"},
    {"name": "Cheick Diallo", "roles": ["crypto-officer"], "id_document": "NINA C3", "id_checked_by": "Awa Traoré"},
    {"name": "Drissa Coulibaly", "roles": ["crypto-officer"], "id_document": "NINA D4",
     "id_checked_by": "Awa Traoré"},
]


def answers(path: Path, people: list[dict[str, Any]] = PEOPLE, **extra: Any) -> Path:
    data = {"participants": people, "bags": {"open": {"hsm": "ML-0001", "workstation": "ML-0002"},
                                             "reseal": {"hsm": "ML-0003", "workstation": "ML-0004"}},
            "confirm": True, **extra}
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def run_root(tmp_path: Path, defn: Path, out: Path, answers_path: Path, kill_at: str | None = None) \
        -> subprocess.CompletedProcess[str]:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    env = dict(os.environ)
    env.pop("KILL_AT_STEP", None)
    if kill_at:
        env["KILL_AT_STEP"] = kill_at
    return subprocess.run([sys.executable, str(driver), "ceremony.root", "--definition", str(defn), "--out", str(out),
                           "--rehearsal", "--answers", str(answers_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=180)


def audit_cli(path: Path) -> subprocess.CompletedProcess[str]:
    """The auditor's command, anchored in the rehearsal's root when the ceremony got as far as publishing it."""
    root = path.parent.parent / "root.crt.pem"
    trust = ["--trust", str(root), "--rehearsal"] if root.is_file() else []
    return subprocess.run([str(REPO / ".venv/bin/invoke"), "audit.verify", str(path), *trust], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def token_objects(defn_path: Path) -> list[Any]:
    defn = load_definition(defn_path)
    hsm = defn.model.cas["root"].hsm
    with open_session(hsm, pin_source_for(hsm, interactive=False)) as session:
        return list(session.get_objects())


def test_killed_ceremony_leaves_incomplete_transcript_and_no_output(tmp_path: Path,
                                                                   definition_on_tokens: Any) -> None:
    defn, _ = definition_on_tokens()
    out = tmp_path / "out"
    ans = answers(tmp_path / "answers.yml")
    run = run_root(tmp_path, defn, out, ans, kill_at="certificate-verify")
    assert run.returncode == -signal.SIGKILL, run.stdout + run.stderr
    files = tree(out)
    # No output file and no manifest: the transcript, and the run's journal naming the key it made.
    assert len(files) == 2, files
    transcript = out / next(f for f in files if f.startswith("transcripts/root-key-generation-"))
    journal = json.loads((out / next(f for f in files if f.endswith("/journal.json"))).read_text())
    made = journal["objects"][0]
    assert made["label"] == "root-2026" and len(made["id_hex"]) == 32 and len(made["spki_sha256"]) == 64
    result = verify(transcript)
    assert result.status == "incomplete" and not result.problems
    cli = audit_cli(transcript)
    assert cli.returncode == 2 and "INCOMPLETE" in cli.stdout
    # the last complete record is the start of the step the process died in
    assert result.records[-1]["type"] == "step-start" and result.records[-1]["step"] == "certificate-verify"
    report = write_reports(transcript, tmp_path / "reports", ["en"], pdf=False)[0].read_text(encoding="utf-8")
    assert "INCOMPLETE" in report and "Sign-off" in report

    # The key the killed run generated is still on the token: the pre-flight finds it before anyone signs
    # in, names the interrupted transcript, and gives the command to remove the orphans.
    again = run_root(tmp_path, defn, out, ans)
    assert again.returncode == 13, again.stdout + again.stderr
    assert "objects labelled 'root-2026' exist on the token already (private key, public key)" in again.stderr
    assert "--delete-object --type privkey --label root-2026" in again.stderr
    assert f"{transcript.name} has no closing record" in again.stdout
    # ... and the run's journal names the orphan exactly: CKA_ID, SPKI SHA-256, and the removal by CKA_ID.
    assert f"CKA_ID {made['id_hex']}, SPKI SHA-256 {made['spki_sha256']}" in again.stdout
    assert f"--delete-object --type privkey --id {made['id_hex']}" in again.stdout
    assert tree(out) == files, "a refused restart writes nothing"


def test_restart_after_interruption_is_explicit_and_recorded(tmp_path: Path, definition_on_tokens: Any) -> None:
    defn, _ = definition_on_tokens()
    out = tmp_path / "out"
    run = run_root(tmp_path, defn, out, answers(tmp_path / "a1.yml"), kill_at="key-generate")
    assert run.returncode == -signal.SIGKILL
    first = next((out / "transcripts").glob("*.jsonl"))
    assert token_objects(defn) == [], "killed before the key was generated"
    ack = answers(tmp_path / "a2.yml", acknowledge_interrupted=[first.name])
    done = run_root(tmp_path, defn, out, ack)
    assert done.returncode == 0, done.stdout + done.stderr
    second = next(p for p in (out / "transcripts").glob("*.jsonl") if p != first)
    result = verify(second)
    assert result.status == "intact", [str(p) for p in result.problems]
    resume = [r for r in result.records if r["type"] == "exception" and r["kind"] == "resume"]
    assert len(resume) == 1 and first.name in resume[0]["what"] and resume[0]["approved_by"] == "Awa Traoré"
    assert result.header["resumes"][0]["file"] == first.name
    assert verify(first).status == "incomplete", "the interrupted transcript is never continued or changed"
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    listed = {(a["kind"], a["format"], a.get("lang")) for a in manifest["artifacts"]
              if a["path"].startswith("transcripts/" + second.stem)}
    assert listed == {("transcript", "jsonl", None), ("transcript-report", "html", "fr"),
                      ("transcript-report", "pdf", "fr"), ("transcript-report", "html", "en"),
                      ("transcript-report", "pdf", "en")}


@pytest.mark.parametrize("people, message", [
    ([{**PEOPLE[0], "roles": ["administrator", "internal-witness"], "id_checked_by": "Cheick Diallo"},
      *PEOPLE[2:]], "both the Ceremony Administrator and the Internal Witness"),
    ([*PEOPLE[:2], {**PEOPLE[2], "roles": ["crypto-officer", "internal-witness"]}, PEOPLE[3]],
     "Internal Witness and a Crypto Officer"),
    (PEOPLE[:3], "Crypto Officer quorum is 2"),
], ids=["admin-is-witness", "witness-is-officer", "quorum-alone"])
def test_separation_violation_stops_before_anything(tmp_path: Path, definition_on_tokens: Any,
                                                    people: list[dict[str, Any]], message: str) -> None:
    defn, _ = definition_on_tokens()
    out = tmp_path / "out"
    run = run_root(tmp_path, defn, out, answers(tmp_path / "bad.yml", people))
    assert run.returncode == 12, run.stdout + run.stderr
    assert message in run.stderr and run.stderr.count("\n") == 1, run.stderr
    assert not out.exists(), "no transcript, no output"
    assert token_objects(defn) == [], "no key on the token"
