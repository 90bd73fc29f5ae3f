"""An unexpected error: one line at the terminal naming the file that holds the whole traceback.

A defect is injected into a real ceremony run the way an operator runs it (``invoke ceremony.root``
in a process of its own): a ``sitecustomize`` on PYTHONPATH makes the root certificate builder raise
once the key exists. The operator sees one line and exit 70; the traceback is in a 0600 file next to
the ceremony's transcript, which is closed as failed; the key made by the run is gone from the token.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from ceremony.common import crash_log
from ceremony.definition.model import load_definition
from ceremony.hsm.session import open_session, pin_source_for

pytestmark = pytest.mark.hsm
INVOKE = str(REPO / ".venv" / "bin" / "invoke")

DEFECT = """
import ceremony.x509.certificates as certificates

_real = certificates.root_builder
_calls = []


def root_builder(*args, **kwargs):
    _calls.append(1)
    if len(_calls) == 2:  # the first call lints with a stand-in key; the second has the HSM's key
        raise ZeroDivisionError("injected defect in the certificate builder")
    return _real(*args, **kwargs)


certificates.root_builder = root_builder
"""


def test_a_defect_in_a_ceremony_is_one_line_and_a_traceback_file(tmp_path: Path, definition_on_tokens: Any) -> None:
    defn, _ = definition_on_tokens()
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(DEFECT)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(inject)}
    proc = subprocess.run([INVOKE, "ceremony.root", "--definition", str(defn), "--out", str(out), "--rehearsal"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == crash_log.EXIT_CODE, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: unexpected ZeroDivisionError: injected defect"), errors
    logged = Path(errors[0].split("the traceback is in ", 1)[1].split(":", 1)[0])
    assert logged.parent == out / "transcripts"
    assert stat.S_IMODE(logged.stat().st_mode) == 0o600
    body = logged.read_text()
    assert "Traceback (most recent call last)" in body and "root_ceremony" in body and "injected defect" in body
    transcripts = sorted((out / "transcripts").glob("root-key-generation-*.jsonl"))
    assert len(transcripts) == 1
    last = json.loads(transcripts[0].read_text().splitlines()[-1])
    assert (last["type"], last["status"]) == ("close", "failed"), last  # the transcript is closed as failed
    assert "injected defect" in last["error"]
    hsm = load_definition(defn).model.cas["root"].hsm
    with open_session(hsm, pin_source_for(hsm, interactive=False)) as session:
        assert list(session.get_objects()) == []  # the key made before the defect is destroyed


def test_a_file_that_cannot_be_written_leaves_the_traceback_on_stderr(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the log directory should be\n")
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        line = crash_log.report(exc, "job", blocked)
    assert "could not be written" in line
    assert "RuntimeError: boom" in capsys.readouterr().err


def test_an_outer_handler_names_the_same_file(tmp_path: Path) -> None:
    try:
        raise ValueError("once")
    except ValueError as exc:
        first = crash_log.write(exc, "inner", tmp_path)
        second = crash_log.write(exc, "outer", tmp_path / "elsewhere")
    assert first == second and first is not None and len(list(tmp_path.iterdir())) == 1


def test_a_defect_in_the_crl_job_is_one_line_for_the_scheduler(tmp_path: Path) -> None:
    """ceremony-crl-sign under systemd or cron: one line naming the traceback's file in the job's state
    directory, exit 70, and the failure in the metrics (the monitoring alerts on it)."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(
        "import ceremony.crl.job as job\n"
        "def broken(*args, **kwargs):\n"
        "    raise KeyError('injected defect in the CRL job')\n"
        "job.run_crl_job = broken\n")
    out, metrics = tmp_path / "crl", tmp_path / "metrics"
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "ceremony-crl-sign"), "--definition",
                           str(REPO / "inventory" / "testing" / "pki.yml"), "--ca", "qualified", "--registry",
                           str(tmp_path / "registry.sqlite3"), "--out", str(out), "--metrics-dir", str(metrics)],
                          env={**os.environ, "PYTHONPATH": str(inject)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == crash_log.EXIT_CODE, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "unexpected KeyError" in errors[0] and "Traceback" not in proc.stderr, errors
    logged = Path(errors[0].split("the traceback is in ", 1)[1].split(":", 1)[0])
    assert logged.parent == out / ".state" and "injected defect in the CRL job" in logged.read_text()
    assert 'x509_crl_last_run_success{ca="qualified"} 0' in "".join(p.read_text() for p in metrics.iterdir())
