"""The ``ca_ceremony`` module's life-cycle actions at the root, run by real ``ansible`` on this machine.

``playbooks/root_ceremony.yml`` certifies a subordinate's re-key (``certify-rekey``) and renews its certificate
when the definition gives a later end (``renew-subordinate``) through these actions, so that what the offline
root's playbook does has the same sealed transcript as ``invoke ceremony.certify-rekey`` /
``ceremony.renew-subordinate`` at a terminal. Shown on fresh SoftHSM tokens: check mode changes nothing, each
ceremony runs once and records itself, a second run changes nothing; a renewal happens only when the definition
asks for one; a CSR made for another generation than the root's next is refused before the HSM, nothing written.
The playbook's filter that finds the waiting re-key CSRs is checked on file names.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, write_definition
from test_ansible_crl_modules import ansible

from ceremony.ceremonies.rekey import rekey_key_ceremony
from ceremony.ceremonies.root_key import root_ceremony
from ceremony.ceremonies.sign_subordinate import sign_subordinate_ceremony
from ceremony.ceremonies.subordinate_key import subordinate_key_ceremony
from ceremony.definition.model import load_definition
from ceremony.hsm.keys import spki_sha256
from ceremony.transcript.recorder import ConsoleRecorder
from ceremony.x509.csr import load_csr
from ceremony.x509.files import read_certificate

pytestmark = pytest.mark.hsm
CA = "qualified"

sys.path.insert(0, str(REPO / "playbooks" / "filter_plugins"))
from root_ceremony_requests import root_ceremony_rekey_requests  # noqa: E402


def args(definition: Path, out: Path, action: str, **extra: object) -> dict[str, object]:
    return {"definition": str(definition), "action": action, "ca": CA, "out": str(out),
            "softhsm_conf": os.environ["SOFTHSM2_CONF"], **extra}


def transcripts(out: Path, script: str) -> list[str]:
    return sorted(p.name for p in (out / "transcripts").glob(f"{script}-*.jsonl"))


def openssl_verify(out: Path, cert: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", "verify", "-CAfile", str(out / "root.crt.pem"), str(out / cert)],
                          capture_output=True, text=True, check=False)


@pytest.fixture
def signed(tmp_path: Path, definition_on_tokens) -> tuple[Path, Path]:
    """A root and the qualified CA signed by it, on fresh tokens, in one output directory."""
    path, _ = definition_on_tokens()
    defn = load_definition(path)
    out = tmp_path / "out"
    rec = ConsoleRecorder(rehearsal=True)
    root_ceremony(defn, out, rec, rehearsal=True, interactive=False)
    subordinate_key_ceremony(defn, CA, out, rec, rehearsal=True, interactive=False)
    sign_subordinate_ceremony(defn, CA, out / f"{CA}.csr.pem", out, rec, rehearsal=True, interactive=False)
    return path, out


def test_a_rekey_is_certified_once_and_recorded(signed: tuple[Path, Path]) -> None:
    definition, out = signed
    rekey_key_ceremony(load_definition(definition), CA, out, ConsoleRecorder(rehearsal=True), rehearsal=True,
                       interactive=False)
    csr = out / f"{CA}.g2.csr.pem"
    code, result, text = ansible("ca_ceremony", args(definition, out, "certify-rekey", csr=str(csr)), "--check",
                                 "--diff")
    assert code == 0 and result["changed"] is True, text
    assert not (out / f"{CA}.g2.crt.pem").exists() and transcripts(out, "subordinate-rekey-certification") == []

    code, result, text = ansible("ca_ceremony", args(definition, out, "certify-rekey", csr=str(csr)))
    assert code == 0 and result["changed"] is True, text
    assert Path(str(result["transcript"])).name.startswith("subordinate-rekey-certification-")
    cert = read_certificate(out / f"{CA}.g2.crt.pem", "generation 2")
    assert spki_sha256(cert.public_key()) == spki_sha256(load_csr(csr).public_key()) == result["spki_sha256"]
    check = openssl_verify(out, f"{CA}.g2.crt.pem")
    assert check.returncode == 0, check.stdout + check.stderr

    code, again, text = ansible("ca_ceremony", args(definition, out, "certify-rekey", csr=str(csr)))
    assert code == 0 and again["changed"] is False, text
    assert again["outputs"] == {f"{CA}.g2.crt.pem": str(out / f"{CA}.g2.crt.pem")}
    assert len(transcripts(out, "subordinate-rekey-certification")) == 1
    # The re-key's certificate has the definition's validity: the definition asks for no renewal.
    code, renewal, text = ansible("ca_ceremony", args(definition, out, "renew-subordinate"))
    assert code == 0 and renewal["changed"] is False, text
    assert not (out / f"{CA}.g3.crt.pem").exists()


def test_a_renewal_runs_only_when_the_definition_gives_a_later_end(signed: tuple[Path, Path]) -> None:
    definition, out = signed
    code, result, text = ansible("ca_ceremony", args(definition, out, "renew-subordinate"))
    assert code == 0 and result["changed"] is False, text
    assert result["outputs"] == {f"{CA}.crt.pem": str(out / f"{CA}.crt.pem")}
    assert transcripts(out, "subordinate-renewal") == []

    data = yaml.safe_load(definition.read_text())
    data["cas"][CA]["validity"]["not_after"] = "2040-01-01T00:00:00Z"
    later = write_definition(definition.with_name("later.yml"), data)
    code, result, text = ansible("ca_ceremony", args(later, out, "renew-subordinate"), "--check", "--diff")
    assert code == 0 and result["changed"] is True, text
    assert not (out / f"{CA}.g2.crt.pem").exists()

    code, result, text = ansible("ca_ceremony", args(later, out, "renew-subordinate"))
    assert code == 0 and result["changed"] is True, text
    renewed = read_certificate(out / f"{CA}.g2.crt.pem", "generation 2")
    first = read_certificate(out / f"{CA}.crt.pem", "generation 1")
    assert renewed.not_valid_after_utc.year == 2040 and renewed.serial_number != first.serial_number
    assert spki_sha256(renewed.public_key()) == spki_sha256(first.public_key())
    assert openssl_verify(out, f"{CA}.g2.crt.pem").returncode == 0

    code, again, text = ansible("ca_ceremony", args(later, out, "renew-subordinate"))
    assert code == 0 and again["changed"] is False, text
    assert len(transcripts(out, "subordinate-renewal")) == 1 and not (out / f"{CA}.g3.crt.pem").exists()


def test_a_renewal_without_the_key_ceremonys_public_key_is_refused_before_the_hsm(signed: tuple[Path, Path]) -> None:
    definition, out = signed
    (out / f"{CA}.pub.pem").unlink()
    data = yaml.safe_load(definition.read_text())
    data["cas"][CA]["validity"]["not_after"] = "2040-01-01T00:00:00Z"
    later = write_definition(definition.with_name("later.yml"), data)
    before = sorted(p.name for p in out.rglob("*"))
    for extra in (("--check",), ()):
        code, result, text = ansible("ca_ceremony", args(later, out, "renew-subordinate"), *extra)
        assert code != 0, text
        assert str(result["msg"]).startswith(f"{out / f'{CA}.pub.pem'}: not there"), text
    assert sorted(p.name for p in out.rglob("*")) == before


def test_a_csr_made_for_another_generation_is_refused_and_nothing_written(signed: tuple[Path, Path]) -> None:
    definition, out = signed
    rekey_key_ceremony(load_definition(definition), CA, out, ConsoleRecorder(rehearsal=True), rehearsal=True,
                       interactive=False)
    # The CA host re-keyed as generation 3 (it believed a renewal had made generation 2): the root's next is 2.
    misnamed = out / f"{CA}.g3.csr.pem"
    shutil.copy(out / f"{CA}.g2.csr.pem", misnamed)
    before = sorted(p.name for p in out.rglob("*"))
    code, result, text = ansible("ca_ceremony", args(definition, out, "certify-rekey", csr=str(misnamed)))
    assert code != 0, text
    msg = str(result["msg"])
    assert msg.startswith(f"csr: {misnamed} is the re-key of generation 3 of 'qualified', but the root's next "
                          "generation of 'qualified' is 2"), msg
    assert msg.endswith("nothing was done")
    assert sorted(p.name for p in out.rglob("*")) == before


def test_a_missing_csr_is_named() -> None:
    code, result, text = ansible("ca_ceremony", {"definition": str(REPO / "inventory/testing/pki.yml"),
                                                 "action": "certify-rekey", "ca": CA, "out": "/nonexistent",
                                                 "csr": "/nonexistent/qualified.g2.csr.pem"})
    assert code != 0 and str(result["msg"]).startswith("csr: /nonexistent/qualified.g2.csr.pem does not exist"), text


def test_the_playbook_finds_the_rekey_csrs_without_a_certificate() -> None:
    names = ["/x/qualified.crt.pem", "/x/qualified.g2.crt.pem", "/x/qualified.g2.csr.pem", "/x/qualified.g3.csr.pem",
             "/x/qualified.g3.pub.pem", "/x/qualified.g10.csr.pem", "/x/other.g2.csr.pem", "/x/qualified.g02.csr.pem",
             "/x/qualified.seal.csr.pem", "/x/root.crt.pem"]
    assert root_ceremony_rekey_requests(names, ["qualified"]) == [
        {"ca": CA, "generation": 3, "csr": "qualified.g3.csr.pem", "pub": "qualified.g3.pub.pem"},
        {"ca": CA, "generation": 10, "csr": "qualified.g10.csr.pem", "pub": "qualified.g10.pub.pem"}]
    assert root_ceremony_rekey_requests(names, []) == []
