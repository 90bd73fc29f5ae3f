"""``invoke rehearse`` end to end, as the operator runs it (a subprocess), and the CLI's error handling."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import REHEARSAL_GROUP, REPO
from cryptography import x509

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group(REHEARSAL_GROUP)]
INVOKE = str(REPO / ".venv" / "bin" / "invoke")


def invoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CEREMONY_", "SOFTHSM2_CONF"))}
    return subprocess.run([INVOKE, *args], cwd=REPO, capture_output=True, text=True, env={**clean, **(env or {})},
                          timeout=900)


@pytest.fixture(scope="module")
def rehearsal(full_rehearsal: tuple[Path, subprocess.CompletedProcess[str]]) -> Path:
    """The session's one rehearsal (conftest.full_rehearsal: one PIN given by the operator, the others generated)."""
    out, result = full_rehearsal
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def test_rehearsal_manifest_and_chain(rehearsal: Path) -> None:
    manifest = json.loads((rehearsal / "manifest.json").read_text())
    assert manifest["rehearsal"] is True
    kinds = {a["kind"] for a in manifest["artifacts"]}
    assert {"pki-definition", "root-certificate", "root-public-key", "subordinate-public-key", "subordinate-csr",
            "subordinate-certificate", "hsm-config", "rehearsal-pins", "subordinate-crl", "crl-partition"} <= kinds
    partitions = [a for a in manifest["artifacts"] if a["kind"] == "crl-partition"]
    assert sorted({a["partition"] for a in partitions}) == [0, 1]  # each current partition CRL, with its index
    for a in manifest["artifacts"]:
        assert not Path(a["path"]).is_absolute()
        assert hashlib.sha256((rehearsal / a["path"]).read_bytes()).hexdigest() == a["sha256"], a["path"]
    verify = subprocess.run(["openssl", "verify", "-x509_strict", "-CAfile", str(rehearsal / "root.crt.pem"),
                             str(rehearsal / "qualified.crt.pem")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr


def test_rehearsal_summary_counts_what_the_manifest_lists(rehearsal: Path) -> None:
    manifest = json.loads((rehearsal / "manifest.json").read_text())
    stdout = (rehearsal.parent / "stdout.txt").read_text()
    assert f"({len(manifest['artifacts'])} artifacts)" in " ".join(stdout.split())


def test_every_rehearsal_certificate_is_marked(rehearsal: Path) -> None:
    certs = sorted(rehearsal.glob("*.crt.pem"))
    assert len(certs) >= 2
    for path in certs:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
        assert cn.endswith("(REHEARSAL)"), path


def test_rehearsal_pins_file(rehearsal: Path) -> None:
    pins = rehearsal / "hsm" / "rehearsal-pins.env"
    assert stat.S_IMODE(pins.stat().st_mode) == 0o600
    values = dict(line.split("=", 1) for line in pins.read_text().splitlines())
    assert values["CEREMONY_ROOT_PIN"] == "given-root-pin-4711", "a PIN from the environment is used"
    for name in ("CEREMONY_ROOT_SO_PIN", "CEREMONY_QUALIFIED_PIN", "CEREMONY_QUALIFIED_SO_PIN"):
        assert len(values[name]) >= 16, "generated at random"
    # No PIN anywhere else in the outputs.
    for path in rehearsal.rglob("*"):
        if path.is_file() and path != pins and "tokens" not in path.parts:
            data = path.read_bytes()
            assert all(v.encode() not in data for v in values.values()), path


def test_second_rehearsal_into_the_same_directory_is_refused(rehearsal: Path) -> None:
    before = sorted(p.as_posix() for p in rehearsal.rglob("*"))
    result = invoke("rehearse", "--out", str(rehearsal))
    assert result.returncode != 0
    assert result.stderr.startswith("error: ") and "never overwritten" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, "one clear message, no traceback"
    assert sorted(p.as_posix() for p in rehearsal.rglob("*")) == before


def test_bad_definition_gets_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "pki.yml"
    bad.write_text("version: 1\ncas: {root: {role: root, colour: blue}}\n")
    result = invoke("ceremony.root", "--definition", str(bad), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {bad}:") and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_docs_playbook_on_the_rehearsal_changes_nothing(rehearsal: Path) -> None:
    """playbooks/docs.yml rebuilds the rehearsal's CP/CPS identically (changed=0) and checks them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEREMONY_")}
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), "playbooks/docs.yml", "-e",
                           "docs_env=testing", "-e", f"docs_out={rehearsal}"], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env={**env, "ANSIBLE_NOCOLOR": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "changed=0" in proc.stdout and "failed=0" in proc.stdout


def test_production_ceremony_on_an_unprepared_machine_stops_before_sign_in(tmp_path: Path) -> None:
    """The shipped example on this (online, HSM-less) machine: the pre-flight names every problem with its fix,
    before anyone signs in; one error, no traceback, nothing written."""
    out = tmp_path / "prod"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CEREMONY_", "SOFTHSM2_CONF"))}
    proc = subprocess.run([INVOKE, "ceremony.root", "--definition", "inventory/production.example/pki.yml", "--out",
                           str(out)], cwd=REPO, capture_output=True, text=True, env=clean, stdin=subprocess.DEVNULL,
                          timeout=120)
    assert proc.returncode == 13, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.count("error:") == 1 and "nobody has signed in" in proc.stderr
    # The production example's terminal speaks French (ceremony.language: fr).
    assert "offline: contrôle hors ligne : interfaces actives" in proc.stderr and "docs/air-gapped.md" in proc.stderr
    assert "PKCS#11 module not found: /opt/hsm/lib/libCryptoki2_64.so" in proc.stderr
    assert "Sign-in" not in proc.stdout
    assert not out.exists()
