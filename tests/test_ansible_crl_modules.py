"""The ``ca_registry`` and ``crl_sign`` Ansible modules, run by real ``ansible`` on this machine.

The infrastructure tests run them on throwaway hosts as part of the whole site; here each
behaviour (check mode, idempotence, diff, refusals) is shown on its own, on SoftHSM tokens, in a
few seconds. The modules run with the suite's interpreter, like on a provisioned host, and take
their PINs from the environment variables the definition names, never from the command line.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, tree

from ceremony.ceremonies.root_key import root_ceremony
from ceremony.ceremonies.sign_subordinate import sign_subordinate_ceremony
from ceremony.ceremonies.subordinate_key import subordinate_key_ceremony
from ceremony.definition.model import load_definition
from ceremony.transcript.recorder import ConsoleRecorder

pytestmark = pytest.mark.hsm
VENV = REPO / ".venv" / "bin"


def ansible(module: str, args: dict[str, object], *extra: str) -> tuple[int, dict[str, object], str]:
    """Run one module on localhost; returns the exit code, the module's JSON result and the raw output."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
           "PATH": f"{VENV}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    proc = subprocess.run([str(VENV / "ansible"), "localhost", "-i", "localhost,", "-c", "local", "-m", module,
                           "-a", json.dumps(args), "-e", f"ansible_python_interpreter={VENV / 'python'}", *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    try:
        result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        result = {}
    return proc.returncode, result, proc.stdout + proc.stderr


@pytest.fixture
def subordinate(tmp_path: Path, definition_on_tokens) -> tuple[Path, Path]:
    """A root and the qualified CA on fresh tokens; returns (definition, directory of the certificates)."""
    path, _ = definition_on_tokens()
    defn = load_definition(path)
    out = tmp_path / "out"
    rec = ConsoleRecorder(rehearsal=True)
    root_ceremony(defn, out, rec, rehearsal=True, interactive=False)
    subordinate_key_ceremony(defn, "qualified", out, rec, rehearsal=True, interactive=False)
    sign_subordinate_ceremony(defn, "qualified", out / "qualified.csr.pem", out, rec, rehearsal=True,
                              issuer_cert_path=out / "root.crt.pem", interactive=False)
    return path, out


def test_ca_registry_check_mode_then_create_then_nothing(tmp_path: Path) -> None:
    path = tmp_path / "registry" / "registry.sqlite3"
    path.parent.mkdir()
    code, result, out = ansible("ca_registry", {"path": str(path)}, "--check", "--diff")
    assert code == 0 and result["changed"] is True and result["created"] is True, out
    assert not path.exists()
    code, result, out = ansible("ca_registry", {"path": str(path)})
    assert code == 0 and result["changed"] is True and result["certificates"] == 0, out
    assert path.stat().st_mode & 0o777 == 0o640
    code, result, out = ansible("ca_registry", {"path": str(path)}, "--check")
    assert code == 0 and result["changed"] is False, out
    code, result, out = ansible("ca_registry", {"path": str(path)})
    assert code == 0 and result["changed"] is False, out


def test_ca_registry_refuses_a_corrupt_file_and_leaves_it(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    path.write_bytes(b"this is not a database, it is a note someone left here\n" * 100)
    before = path.read_bytes()
    code, result, out = ansible("ca_registry", {"path": str(path)})
    assert code != 0
    assert str(path) in str(result.get("msg")) and "Traceback" not in out
    assert path.read_bytes() == before


def test_crl_sign_check_mode_sign_then_not_due(subordinate: tuple[Path, Path], tmp_path: Path) -> None:
    definition, certs = subordinate
    registry = tmp_path / "registry.sqlite3"
    assert ansible("ca_registry", {"path": str(registry)})[0] == 0
    pub = tmp_path / "crl"
    args = {"definition": str(definition), "ca": "qualified", "registry": str(registry), "out": str(pub),
            "ca_cert": str(certs / "qualified.crt.pem"), "softhsm_conf": os.environ["SOFTHSM2_CONF"]}

    code, result, out = ansible("crl_sign", args, "--check", "--diff")
    assert code == 0 and result["changed"] is True and result["reason"] == "no CRL published yet", out
    assert result["number"] == 1 and not (pub / "qualified.crl").exists()

    code, result, out = ansible("crl_sign", args, "--diff")
    assert code == 0 and result["signed"] is True and result["number"] == 1 and result["entries"] == 0, out
    crl = pub / "qualified.crl"
    check = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", str(crl), "-noout", "-CAfile",
                            str(certs / "qualified.crt.pem"), "-verify"], capture_output=True, text=True)
    assert "verify OK" in check.stdout + check.stderr
    published = crl.read_bytes()

    code, result, out = ansible("crl_sign", args)
    assert code == 0 and result["changed"] is False and result["reason"] == "not due", out
    assert crl.read_bytes() == published

    code, result, out = ansible("crl_sign", {**args, "force": True})
    assert code == 0 and result["changed"] is True and result["number"] == 2, out


def test_crl_sign_refuses_bad_input_and_publishes_nothing(subordinate: tuple[Path, Path], tmp_path: Path) -> None:
    definition, certs = subordinate
    pub = tmp_path / "crl"
    pub.mkdir()
    base = {"definition": str(definition), "ca": "qualified", "registry": str(tmp_path / "missing.sqlite3"),
            "out": str(pub), "ca_cert": str(certs / "qualified.crt.pem")}
    cases = [
        (base, "missing.sqlite3: certificate registry not found"),
        ({**base, "ca": "root"}, "cas.root is the root"),
        ({**base, "ca": "nope"}, "cas.nope: no such CA"),
    ]
    for args, message in cases:
        code, result, out = ansible("crl_sign", args)
        assert code != 0, out
        assert message in str(result.get("msg")), out
        assert "Traceback" not in out
    assert tree(pub) == set()


def _metrics(directory: Path) -> dict[str, float]:
    from test_crl_health import parse_metrics

    return parse_metrics(directory / "ceremony_crl_qualified.prom")


def test_crl_sign_at_provisioning_writes_the_jobs_metrics_and_checks_the_token_when_not_due(
        subordinate: tuple[Path, Path], tmp_path: Path) -> None:
    """The first CRL through the module writes the same metrics as the timer's job; later runs, with no CRL
    due, still check the PIN source and report a broken one (module failure, metrics with the reason)."""
    import yaml

    definition, certs = subordinate
    registry = tmp_path / "registry.sqlite3"
    assert ansible("ca_registry", {"path": str(registry)})[0] == 0
    pin_env = yaml.safe_load(definition.read_text())["cas"]["qualified"]["hsm"]["pin_env"]
    pin_file = tmp_path / "qualified.pin"
    pin_file.write_text(os.environ[pin_env] + "\n")
    pin_file.chmod(0o600)
    metrics = tmp_path / "metrics"
    args = {"definition": str(definition), "ca": "qualified", "registry": str(registry), "out": str(tmp_path / "crl"),
            "ca_cert": str(certs / "qualified.crt.pem"), "softhsm_conf": os.environ["SOFTHSM2_CONF"],
            "pin_file": str(pin_file), "metrics_dir": str(metrics)}
    code, result, out = ansible("crl_sign", args, "--check")
    assert code == 0 and not metrics.exists(), out  # check mode writes nothing
    code, result, out = ansible("crl_sign", args)
    assert code == 0 and result["signed"] is True, out
    first = _metrics(metrics)
    assert first['x509_crl_last_run_success{ca="qualified"}'] == 1 and first['x509_crl_number{ca="qualified"}'] == 1
    assert first['x509_crl_pin_latch{ca="qualified"}'] == 0
    success = first['x509_crl_last_success_timestamp_seconds{ca="qualified"}']
    pin_file.chmod(0o644)
    code, result, out = ansible("crl_sign", args)
    assert code != 0 and "PIN file has mode 0644; it must be 0600" in str(result.get("msg")), out
    assert os.environ[pin_env] not in out
    failed = _metrics(metrics)
    assert failed['x509_crl_last_run_success{ca="qualified"}'] == 0
    assert failed['x509_crl_last_run_failure{ca="qualified",reason="pin_source"}'] == 1
    assert failed['x509_crl_last_success_timestamp_seconds{ca="qualified"}'] == success
    assert failed['x509_crl_number{ca="qualified"}'] == 1
    pin_file.chmod(0o600)
    code, result, out = ansible("crl_sign", args)
    assert code == 0 and result["changed"] is False and result["reason"] == "not due", out
    assert _metrics(metrics)['x509_crl_last_run_success{ca="qualified"}'] == 1
