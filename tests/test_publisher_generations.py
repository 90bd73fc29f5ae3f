"""The publisher's certificates after a renewal or re-key: filter ``crl_publisher_generations`` (role crl_publisher).

The exchange directory holds ``<ca>.crt.pem`` and, after the ceremonies, ``<ca>.g<n>.crt.pem``; the role installs
every one of them in its trust directory (``ceremony-crl-publish`` verifies key generation m's CRLs under it) and
serves each key's newest certificate at that key generation's certificate URL, the caIssuers issuance writes
(:func:`ceremony.ca.generations.generation_url`). The filter runs through real Ansible as the role's vars name it.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ceremony.ca.generations import generation_url

REPO = Path(__file__).resolve().parent.parent
ROLE = REPO / "roles" / "crl_publisher"
VENV = Path(sys.executable).parent
CERT_URL = "http://pki.test.scse.ml/certs/qualified.crt"


def load_filter() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crl_publisher_generations",
                                                  ROLE / "filter_plugins" / "crl_publisher_generations.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gens = load_filter()


def write_cert(path: Path, key: ec.EllipticCurvePrivateKey, days: int) -> None:
    name = x509.Name.from_rfc4514_string("CN=Test Qualified CA,O=SCSE,C=ML")
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days)).sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture
def exchange(tmp_path: Path) -> Path:
    """Generation 1 (key A), 2 (re-key: key B), 3 (renewal of key B), and a root never re-keyed."""
    directory = tmp_path / "exchange"
    directory.mkdir()
    first, second = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    write_cert(directory / "qualified.crt.pem", first, 365)
    write_cert(directory / "qualified.g2.crt.pem", second, 365)
    write_cert(directory / "qualified.g3.crt.pem", second, 730)
    write_cert(directory / "root.crt.pem", first, 3650)
    (directory / "qualified.g2.csr.pem").write_text("not a certificate, not looked at")
    (directory / "other.g2.crt.pem").write_text("another CA's name, not looked at")
    return directory


def test_every_generation_is_installed_and_each_key_served_at_its_generation_url(exchange: Path) -> None:
    certs = {"qualified": str(exchange / "qualified.crt.pem"), "root": str(exchange / "root.crt.pem")}
    names = {"qualified": "qualified.crt", "root": "root.crt"}
    got = gens.generations(certs, names)
    assert got["certificates"] == {**certs, "qualified.g2": str(exchange / "qualified.g2.crt.pem"),
                                   "qualified.g3": str(exchange / "qualified.g3.crt.pem")}
    # key 1 at the definition's URL; key 2 (generations 2 and 3) at its .g2 URL, served from its newest certificate
    assert got["names"] == {"qualified": "qualified.crt", "qualified.g3": "qualified.g2.crt", "root": "root.crt"}
    assert CERT_URL.rpartition("/")[0] + "/" + got["names"]["qualified.g3"] == generation_url(CERT_URL, 2)
    for m, name in ((1, "qualified.crt"), (2, "qualified.g2.crt"), (7, "qualified.g7.crt")):
        assert gens.generation_name("qualified.crt", m) == name == generation_url(CERT_URL, m).rpartition("/")[2]
    assert gens.generation_name("qualified", 2) == "qualified.g2"


def test_without_later_generations_the_inputs_come_back_unchanged(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    write_cert(tmp_path / "qualified.crt.pem", key, 365)
    certs = {"qualified": str(tmp_path / "qualified.crt.pem")}
    assert gens.generations(certs, {"qualified": "qualified.crt"}) == {
        "certificates": certs, "names": {"qualified": "qualified.crt"}}
    assert gens.generations({}, {}) == {"certificates": {}, "names": {}}


def test_a_missing_generation_or_unreadable_certificate_is_one_clear_error(exchange: Path) -> None:
    certs = {"qualified": str(exchange / "qualified.crt.pem")}
    (exchange / "qualified.g2.crt.pem").rename(exchange / "elsewhere.pem")
    gap = "the certificates of 'qualified' skip a generation (qualified.crt.pem, qualified.g3.crt.pem); restore"
    with pytest.raises(AnsibleFilterError, match=re.escape(gap)):
        gens.generations(certs, {"qualified": "qualified.crt"})
    (exchange / "qualified.g2.crt.pem").write_text("garbage")
    with pytest.raises(AnsibleFilterError, match=re.escape("qualified.g2.crt.pem: not a readable PEM certificate")):
        gens.generations(certs, {"qualified": "qualified.crt"})


def test_the_role_vars_evaluate_through_ansible(exchange: Path, tmp_path: Path) -> None:
    """The expression of roles/crl_publisher/vars/main.yml, with the role's filter plugins, as Ansible runs it."""
    play = [{"name": "Evaluate", "hosts": "localhost", "gather_facts": False,
             "vars_files": [str(ROLE / d / "main.yml") for d in ("defaults", "vars")],
             "tasks": [{"name": "Write", "ansible.builtin.copy": {
                 "dest": str(tmp_path / "out.json"), "mode": "0644",
                 "content": "{{ crl_publisher_generation_files | to_json }}"}}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    extra = {"crl_publisher_ca_certificates": {"qualified": str(exchange / "qualified.crt.pem")},
             "crl_publisher_certificate_names": {"qualified": "qualified.crt"}}
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FILTER_PLUGINS": str(ROLE / "filter_plugins"),
           "PATH": f"{VENV}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    proc = subprocess.run([str(VENV / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           str(tmp_path / "play.yml"), "-e", f"@{tmp_path / 'extra.json'}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = json.loads((tmp_path / "out.json").read_text())
    assert got["names"] == {"qualified": "qualified.crt", "qualified.g3": "qualified.g2.crt"}
    assert sorted(got["certificates"]) == ["qualified", "qualified.g2", "qualified.g3"]
