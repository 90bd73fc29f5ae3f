"""Role ``subordinate_ca`` after a termination: the archive and the ceremony's transcript go to the admin machine.

``roles/subordinate_ca/tasks/termination.yml`` run by real ``ansible-playbook`` on this machine (local connection,
temporary directories standing in for the CA directory and the exchange directory): with ``subordinate_ca_terminated``
the archive lands in ``termination/`` and only the termination's transcripts in ``transcripts/``, byte for byte, and a
second run changes nothing; before the ceremony (no archive yet) the run passes and fetches nothing; without the
variable nothing is fetched. The infrastructure test (tests/infra/test_lifecycle_hosts.py) covers the jobs' side.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from conftest import REPO

VENV = REPO / ".venv" / "bin"
CA = "qualified"
PLAY = """- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: subordinate_ca
        tasks_from: termination.yml
"""


def run_role(tmp_path: Path, ca_dir: Path, exchange: Path, terminated: bool) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAY)
    extra = {"subordinate_ca_name": CA, "subordinate_ca_dir": str(ca_dir), "subordinate_ca_exchange_dir": str(exchange),
             "subordinate_ca_terminated": terminated, "ansible_python_interpreter": str(VENV / "python")}
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "PATH": f"{VENV}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    return subprocess.run([str(VENV / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook),
                           "-e", json.dumps(extra)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def changed(proc: subprocess.CompletedProcess[str]) -> int:
    recap = proc.stdout.split("PLAY RECAP")[-1]
    return int(recap.split("changed=")[1].split()[0])


def test_the_archive_and_the_termination_transcript_are_fetched_once(tmp_path: Path) -> None:
    ca_dir, exchange = tmp_path / "ca", tmp_path / "exchange"
    (ca_dir / "transcripts").mkdir(parents=True)
    exchange.mkdir()
    before = run_role(tmp_path, ca_dir, exchange, terminated=True)  # the ceremony has not run yet
    assert before.returncode == 0, before.stdout[-3000:] + before.stderr[-3000:]
    assert list(exchange.rglob("*")) == []

    (ca_dir / "termination").mkdir()
    archive = ca_dir / "termination" / f"{CA}.termination-archive.tar"
    archive.write_bytes(os.urandom(4096))
    recorded = ca_dir / "transcripts" / "ca-termination-20310630T101500Z.jsonl"
    recorded.write_text('{"record": 1}\n')
    (ca_dir / "transcripts" / "subordinate-key-generation-20260101T000000Z.jsonl").write_text('{"record": 1}\n')

    off = run_role(tmp_path, ca_dir, exchange, terminated=False)
    assert off.returncode == 0 and list(exchange.rglob("*")) == [], off.stdout[-3000:]

    fetched = run_role(tmp_path, ca_dir, exchange, terminated=True)
    assert fetched.returncode == 0, fetched.stdout[-3000:] + fetched.stderr[-3000:]
    assert (exchange / "termination" / archive.name).read_bytes() == archive.read_bytes()
    assert sorted(p.name for p in (exchange / "transcripts").iterdir()) == [recorded.name]
    assert (exchange / "transcripts" / recorded.name).read_bytes() == recorded.read_bytes()
    assert changed(fetched) == 2

    again = run_role(tmp_path, ca_dir, exchange, terminated=True)
    assert again.returncode == 0 and changed(again) == 0, again.stdout[-3000:]
