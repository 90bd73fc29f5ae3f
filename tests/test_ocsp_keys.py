"""OCSP per key on the hosts after a re-key (docs/ocsp.md, "After a subordinate re-key"), without hosts.

The CA host's units (role ocsp_signer) and the publishers' (role ocsp_responder, nginx site) rendered by real Ansible
from the roles' templates, defaults and internal variables, for a CA whose certificates are generation 1 (key A),
generation 2 (a renewal: key A again) and generation 3 (a re-key: key B), as the ceremonies leave them. The CA
host's keys come from the engine (``ceremony-ocsp-signer --key-generations``'s report, the JSON the role reads), the
publishers' from playbooks/filter_plugins/ceremony_ocsp_keys.py over the same files: both must find keys 1 and 3.
Units pass ``systemd-analyze verify``, the nginx site ``nginx -t``; a CA with one key gets the units it always had.
The certificates are made in software: what is tested is which file each unit names, not a signature.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from conftest import REPO
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ceremony.ca.generations import generation_url, issuer_generations
from ceremony.ceremonies.ocsp_signer import key_generations_report
from ceremony.common.errors import OutputError

VENV = Path(sys.executable).parent
CA = "qualified"
OCSP_URL = "http://ocsp.test.scse.ml/qualified"
FILTER = REPO / "playbooks" / "filter_plugins" / "ceremony_ocsp_keys.py"


def _filter_module() -> Any:
    spec = importlib.util.spec_from_file_location("ceremony_ocsp_keys", FILTER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


keys_filter = _filter_module()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "ML"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _certificate(path: Path, key: ec.EllipticCurvePrivateKey, root: ec.EllipticCurvePrivateKey, days: int) -> None:
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name("AC Qualifiee")).issuer_name(_name("AC Racine"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(root, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture(scope="module")
def rekeyed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generation 1 (key A), 2 (renewal, key A), 3 (re-key, key B)."""
    out = tmp_path_factory.mktemp("exchange")
    root, a, b = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    _certificate(out / f"{CA}.crt.pem", a, root, 300)
    _certificate(out / f"{CA}.g2.crt.pem", a, root, 600)
    _certificate(out / f"{CA}.g3.crt.pem", b, root, 900)
    return out


def test_the_filter_and_the_engine_find_the_same_keys(rekeyed: Path, tmp_path: Path) -> None:
    assert keys_filter.key_generations(str(rekeyed), CA) == sorted({g.key_generation
                                                                    for g in issuer_generations(rekeyed, CA)}) == [1, 3]
    report = key_generations_report(rekeyed, CA)
    assert [(k["key_generation"], k["stem"], Path(k["certificate"]).name, Path(k["newest"]).name)
            for k in report["keys"]] == [(1, CA, f"{CA}.crt.pem", f"{CA}.g2.crt.pem"),  # type: ignore[index]
                                         (3, f"{CA}.g3", f"{CA}.g3.crt.pem", f"{CA}.g3.crt.pem")]
    for url in (OCSP_URL, "http://ocsp.example/a/b.der", "http://h/x.y.z", "http://h:8080/ocsp/qualifiee-2026"):
        for m in (1, 2, 17):
            assert keys_filter.generation_url(url, m) == generation_url(url, m)
    # without a later generation (or without the directory), nothing changes
    only = tmp_path / "one"
    only.mkdir()
    shutil.copy(rekeyed / f"{CA}.crt.pem", only)
    base = [{"ca": CA, "host": "subca", "url": OCSP_URL, "hostname": "ocsp.test.scse.ml", "path": "/qualified",
             "port": 8080}]
    assert keys_filter.ocsp_keys(base, str(only)) == keys_filter.ocsp_keys(base, "") == [{**base[0],
                                                                                          "key_generation": 1}]
    assert keys_filter.ocsp_keys(base, str(rekeyed)) == [
        {**base[0], "key_generation": 1},
        {**base[0], "key_generation": 3, "url": OCSP_URL + ".g3", "path": "/qualified.g3", "port": 8280}]


def test_a_gap_or_an_unreadable_certificate_is_refused_with_one_message(rekeyed: Path, tmp_path: Path) -> None:
    gap = tmp_path / "gap"
    gap.mkdir()
    shutil.copy(rekeyed / f"{CA}.crt.pem", gap)
    shutil.copy(rekeyed / f"{CA}.g3.crt.pem", gap)
    before = sorted(p.name for p in gap.iterdir())
    with pytest.raises(AnsibleFilterError) as refused:
        keys_filter.ocsp_keys([{"ca": CA, "url": OCSP_URL, "port": 8080}], str(gap))
    assert str(refused.value) == (f"{gap}: the certificates of {CA!r} skip a generation ({CA}.crt.pem, "
                                  f"{CA}.g3.crt.pem); restore the missing file first")
    with pytest.raises(OutputError, match="skip a generation"):
        key_generations_report(gap, CA)
    (gap / f"{CA}.g2.crt.pem").write_text("not a certificate\n")
    with pytest.raises(AnsibleFilterError, match=f"{CA}.g2.crt.pem: not a readable PEM certificate"):
        keys_filter.key_generations(str(gap), CA)
    assert sorted(p.name for p in gap.iterdir()) == sorted([*before, f"{CA}.g2.crt.pem"])


SIGNER_UNITS = [(name, kind) for name in ("ceremony-ocsp-sign", "ceremony-ocsp-signer")
                for kind in ("service", "timer")]
RESPONDER_UNITS = [("ceremony-ocsp-pull.service", "ceremony-ocsp-pull", "service"),
                   ("ceremony-ocsp-pull.timer", "ceremony-ocsp-pull", "timer"),
                   ("ceremony-ocsp-reload.path", "ceremony-ocsp-reload", "path"),
                   ("ceremony-ocsp-reload.service", "ceremony-ocsp-reload", "service"),
                   ("ceremony-ocsp.service", "ceremony-ocsp", "service")]


def render(tmp_path: Path, exchange: Path, listed: dict[str, object]) -> Path:
    """Both roles' templates rendered by Ansible with their defaults and vars: the CA host's per key of ``listed``
    (the JSON the role reads from ceremony-ocsp-signer --key-generations), the publisher's per item of publish.yml's
    filter over ``exchange``."""
    out = tmp_path / "units"
    out.mkdir()
    roles = REPO / "roles"
    signer_tasks = [{"name": f"{name}.{kind}", "ansible.builtin.template": {
        "src": str(roles / "ocsp_signer" / "templates" / f"{name}.{kind}.j2"),
        "dest": str(out) + f"/{name}@{{{{ ocsp_signer_key_unit_stem }}}}.{kind}", "mode": "0644"},
        "loop": "{{ ocsp_signer_keys }}", "vars": {"ocsp_key": "{{ item }}"}} for name, kind in SIGNER_UNITS]
    responder_tasks = [{"name": template, "ansible.builtin.template": {
        "src": str(roles / "ocsp_responder" / "templates" / f"{template}.j2"),
        "dest": str(out) + f"/{name}-{{{{ ocsp_responder_unit_stem }}}}.{kind}", "mode": "0644"},
        "loop": "{{ ocsp_responder_sources }}", "vars": {"source": "{{ item }}"}}
        for template, name, kind in RESPONDER_UNITS]
    play = [{
        "name": "Render", "hosts": "localhost", "gather_facts": False,
        "vars_files": [str(roles / role / part / "main.yml") for role in ("ocsp_signer", "ocsp_responder")
                       for part in ("defaults", "vars")],
        "tasks": [
            {"name": "publish.yml's items", "ansible.builtin.set_fact": {
                "ocsp_responder_sources": "{{ base_sources | ceremony_ocsp_keys(exchange) }}"}},
            *signer_tasks, *responder_tasks,
            {"name": "nginx site", "ansible.builtin.template": {
                "src": str(roles / "ocsp_responder" / "templates" / "ocsp.conf.j2"), "dest": str(out / "ocsp.conf"),
                "mode": "0644"}},
            {"name": "cron entries", "ansible.builtin.copy": {"dest": str(out / "cron.json"), "mode": "0644",
                                                              "content": "{{ cron | to_json }}"},
             "vars": {"cron": "{{ ocsp_signer_keys | map(attribute='stem') | list }}"}},
        ]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    extra = {"ocsp_signer_ca": CA, "ceremony_suite_venv": str(VENV.parent), "exchange": str(exchange),
             "ocsp_signer_listed": {"stdout": json.dumps(listed)},
             "base_sources": [{"ca": CA, "host": "subca", "url": OCSP_URL, "hostname": "ocsp.test.scse.ml",
                               "path": "/qualified", "port": 8080}]}
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FILTER_PLUGINS": str(FILTER.parent),
           "PATH": f"{VENV}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    proc = subprocess.run([str(VENV / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           str(tmp_path / "play.yml"), "-e", f"@{tmp_path / 'extra.json'}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def directives(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def option(argv: str, name: str) -> str | None:
    words = argv.split()
    return words[words.index(name) + 1] if name in words else None


@pytest.mark.skipif(shutil.which("systemd-analyze") is None or shutil.which("nginx") is None,
                    reason="systemd-analyze or nginx missing")
def test_units_and_site_per_key_after_a_rekey(rekeyed: Path, tmp_path: Path) -> None:
    d = "/var/lib/ceremony/qualified"
    listed = key_generations_report(rekeyed, CA)
    for k in listed["keys"]:  # type: ignore[attr-defined]
        k["certificate"], k["newest"] = (f"{d}/{Path(k[f]).name}" for f in ("certificate", "newest"))
    units = render(tmp_path, rekeyed, listed)
    files = sorted(p.name for p in units.glob("*@*"))
    assert files == sorted(f"{n}@{s}.{k}" for n, k in SIGNER_UNITS for s in (CA, f"{CA}-g3"))
    unit_files = sorted(str(p) for pattern in ("*.service", "*.timer", "*.path") for p in units.glob(pattern))
    check = subprocess.run(["systemd-analyze", "verify", *unit_files], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and check.stderr.strip() == "", check.stderr
    # the CA host: each key's job into its own store, bound to the key's first certificate, snapshot of its own
    for stem, cert in ((CA, f"{CA}.crt.pem"), (f"{CA}.g3", f"{CA}.g3.crt.pem")):
        job, snapshot = directives(units / f"ceremony-ocsp-sign@{stem.replace('.', '-')}.service")["ExecStart"]
        assert option(job, "--store") == f"/var/lib/ceremony/ocsp/{stem}.sqlite3"
        assert option(job, "--ca-cert") == f"{d}/{cert}" and option(job, "--ca") == CA
        assert option(snapshot, "--dest") == f"/var/lib/ceremony/crl/{stem}.ocsp.sqlite3"
    # each key's signer renewal under its newest certificate: the first key's under the renewal (generation 2)
    renew = {s: directives(units / f"ceremony-ocsp-signer@{s}.service")["ExecStart"][0] for s in (CA, f"{CA}-g3")}
    assert option(renew[CA], "--ca-cert") == f"{d}/{CA}.g2.crt.pem"
    assert option(renew[f"{CA}-g3"], "--ca-cert") == f"{d}/{CA}.g3.crt.pem"
    timer = directives(units / f"ceremony-ocsp-sign@{CA}-g3.timer")
    assert timer["Unit"] == [f"ceremony-ocsp-sign@{CA}-g3.service"]
    # the publisher: the key's snapshot pulled under its name, checked and served with its certificate
    responder = directives(units / f"ceremony-ocsp-{CA}-g3.service")
    assert responder["Environment"] == [f"CEREMONY_OCSP_STORE=/var/lib/ceremony-ocsp/{CA}.g3.sqlite3",
                                        f"CEREMONY_OCSP_ISSUER=/etc/ceremony-publish/{CA}.g3.crt.pem"]
    assert option(responder["ExecStart"][0], "--bind") == "127.0.0.1:8280"
    assert responder["RuntimeDirectory"] == [f"ceremony-ocsp-{CA}-g3"]
    assert option(directives(units / f"ceremony-ocsp-{CA}.service")["ExecStart"][0], "--bind") == "127.0.0.1:8080"
    pull, install = directives(units / f"ceremony-ocsp-pull-{CA}-g3.service")["ExecStart"]
    assert f"crl-source-subca:{CA}.g3.ocsp.sqlite3" in pull.split()
    assert option(install, "--ca") == CA and option(install, "--ca-cert") == f"/etc/ceremony-publish/{CA}.g3.crt.pem"
    assert option(install, "--served") == f"/var/lib/ceremony-ocsp/{CA}.g3.sqlite3"
    assert directives(units / f"ceremony-ocsp-reload-{CA}-g3.path")["PathChanged"] == [
        f"/var/lib/ceremony-ocsp/{CA}.g3.sqlite3"]
    # nginx: the first key's path and the new key's, each to its own responder; the configuration is valid
    site = (units / "ocsp.conf").read_text()
    assert "location = /qualified {" in site and "location = /qualified.g3 {" in site
    assert site.count("proxy_pass http://127.0.0.1:8080;") == 2 and site.count("proxy_pass http://127.0.0.1:8280;") == 2
    (tmp_path / "nginx.conf").write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
                                         f"http {{\n  access_log off;\n  include {units}/ocsp.conf;\n}}\n")
    nginx = subprocess.run(["nginx", "-t", "-q", "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "error.log")],
                           capture_output=True, text=True, timeout=60)
    assert nginx.returncode == 0, nginx.stderr
    assert json.loads((units / "cron.json").read_text()) == [CA, f"{CA}.g3"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_a_ca_never_rekeyed_keeps_its_units(rekeyed: Path, tmp_path: Path) -> None:
    """One key: the units the roles always made (the renewal follows the CA's current certificate, no --ca-cert),
    and the first key's job is the same before and after a re-key."""
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(rekeyed / f"{CA}.crt.pem", one)
    single = render(tmp_path, one, key_generations_report(one, CA))
    assert sorted(p.name for p in single.glob("*@*")) == sorted(f"{n}@{CA}.{k}" for n, k in SIGNER_UNITS)
    assert sorted(p.name for p in single.glob("ceremony-ocsp-*")) == sorted(
        [f"{n}@{CA}.{k}" for n, k in SIGNER_UNITS] + [f"{n}-{CA}.{k}" for _, n, k in RESPONDER_UNITS])
    assert option(directives(single / f"ceremony-ocsp-signer@{CA}.service")["ExecStart"][0], "--ca-cert") is None
    job = directives(single / f"ceremony-ocsp-sign@{CA}.service")["ExecStart"]
    assert option(job[0], "--ca-cert") == f"/var/lib/ceremony/{CA}/{CA}.crt.pem"
    after = tmp_path / "after"
    after.mkdir()
    both = render(after, rekeyed, key_generations_report(rekeyed, CA))
    assert directives(both / f"ceremony-ocsp-sign@{CA}.service")["ExecStart"] == job
    assert (both / f"ceremony-ocsp-{CA}.service").read_text() == (single / f"ceremony-ocsp-{CA}.service").read_text()
