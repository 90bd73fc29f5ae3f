"""The systemd units and cron entries of roles crl_signer and monitoring, rendered by real Ansible from
the roles' own templates and defaults, checked with ``systemd-analyze verify``.

With SoftHSM (the default) and with a real HSM (``softhsm_enabled: false``): the CRL job's unit has
SoftHSM's group and token directory only in the first case; ``Documentation=`` names the files the
roles install; the cron entries send the result to syslog (``--syslog``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

VENV = Path(sys.executable).parent


def render(tmp_path: Path, extra: dict[str, object], ca: dict[str, object] | None = None) -> Path:
    """Render both roles' unit templates with their defaults (and ``extra``) into ``tmp_path/units``; ``ca``: more
    of the CA's definition (crl, ocsp)."""
    out = tmp_path / "units"
    out.mkdir()
    templates = [("crl_signer", "ceremony-crl-sign.service.j2", "ceremony-crl-sign@qualified.service"),
                 ("crl_signer", "ceremony-crl-sign.timer.j2", "ceremony-crl-sign@qualified.timer"),
                 ("monitoring", "ceremony-crl-probe.service.j2", "ceremony-crl-probe@qualified.service"),
                 ("monitoring", "ceremony-crl-probe.timer.j2", "ceremony-crl-probe@qualified.timer")]
    play = [{
        "name": "Render the units", "hosts": "localhost", "gather_facts": False,
        "vars_files": [str(REPO / "roles" / role / "defaults" / "main.yml") for role in ("crl_signer", "monitoring")],
        "tasks": [{"name": f"Render {dest}", "ansible.builtin.template": {
            "src": str(REPO / "roles" / role / "templates" / src), "dest": str(out / dest), "mode": "0644"}}
            for role, src, dest in templates] + [{
                "name": "The cron jobs", "ansible.builtin.copy": {
                    "dest": str(out / "cron.json"), "mode": "0644",
                    "content": "{{ {'sign': (crl_signer_command_line ~ ' --syslog'), "
                               "'probe': (monitoring_crl_probe_command_line ~ ' --syslog')} | to_json }}"}}],
    }]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    crl_url = yaml.safe_load((REPO / "inventory/testing/pki.yml").read_text())["cas"]["qualified"]["publication"][
        "crl_url"]
    pki = {"cas": {"qualified": {"publication": {"crl_url": crl_url}, **(ca or {})}}}  # what the roles read
    (tmp_path / "extra.json").write_text(json.dumps({"crl_signer_ca": "qualified", "pki": pki, **extra}))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "PATH": f"{VENV}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    proc = subprocess.run([str(VENV / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           str(tmp_path / "play.yml"), "-e", f"@{tmp_path / 'extra.json'}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def verify(units: Path) -> subprocess.CompletedProcess[str]:
    files = sorted(str(p) for p in units.glob("*.service")) + sorted(str(p) for p in units.glob("*.timer"))
    return subprocess.run(["systemd-analyze", "verify", *files], capture_output=True, text=True, timeout=60)


def directives(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


EXECUTABLES = {"crl_signer_command": str(VENV / "ceremony-crl-sign"), "ceremony_suite_venv": str(VENV.parent)}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_units_with_softhsm(tmp_path: Path) -> None:
    units = render(tmp_path, EXECUTABLES)
    check = verify(units)
    assert check.returncode == 0 and check.stderr.strip() == "", check.stderr
    sign = directives(units / "ceremony-crl-sign@qualified.service")
    assert sign["SupplementaryGroups"] == ["softhsm"]
    assert "/var/lib/softhsm/tokens" in sign["ReadWritePaths"][0].split()
    assert sign["Documentation"] == ["file:///usr/share/doc/ceremony-suite/crl.md "
                                     "file:///usr/share/doc/ceremony-suite/monitoring.md"]
    assert sign["SyslogIdentifier"] == ["ceremony-crl-sign@qualified"]
    probe = directives(units / "ceremony-crl-probe@qualified.service")
    assert probe["User"] == ["ceremony-probe"] and probe["Group"] == ["ceremony-metrics"]
    assert probe["ReadWritePaths"] == ["/var/lib/prometheus/node-exporter"]
    assert probe["Documentation"] == ["file:///usr/share/doc/ceremony-suite/monitoring.md"]
    assert probe["ExecStart"][0].split()[1:] == [
        "--ca", "qualified", "--url", "http://pki.test.scse.ml/crl/qualified.crl", "--ca-cert",
        "/var/lib/ceremony-probe/qualified.crt.pem", "--metrics-dir", "/var/lib/prometheus/node-exporter"]
    # The documentation the units point at is what the roles install (docs/crl.md, docs/monitoring.md).
    for role in ("crl_signer", "monitoring"):
        tasks = (REPO / "roles" / role / "tasks" / "main.yml").read_text()
        assert "docs/" in tasks and "monitoring.md" in tasks
    cron = json.loads((units / "cron.json").read_text())
    assert cron["sign"].endswith(" --syslog") and cron["sign"].startswith(str(VENV / "ceremony-crl-sign") + " ")
    assert cron["probe"].endswith(" --syslog")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_units_on_a_real_hsm_have_no_softhsm_group_or_path(tmp_path: Path) -> None:
    units = render(tmp_path, {**EXECUTABLES, "softhsm_enabled": False,
                              "monitoring_crl_probe_publishers": ["203.0.113.6", "203.0.113.10:8080"]})
    check = verify(units)
    assert check.returncode == 0 and check.stderr.strip() == "", check.stderr
    text = (units / "ceremony-crl-sign@qualified.service").read_text()
    assert "SupplementaryGroups" not in text and "softhsm" not in text.lower()
    sign = directives(units / "ceremony-crl-sign@qualified.service")
    assert sign["ReadWritePaths"] == ["/var/lib/ceremony/crl /var/lib/ceremony/qualified /var/lib/ceremony/registry "
                                      "/var/lib/prometheus/node-exporter"]
    probe = directives(units / "ceremony-crl-probe@qualified.service")
    assert probe["ExecStart"][0].endswith("--publisher 203.0.113.6 --publisher 203.0.113.10:8080")
    # A vendor's client that needs a group and a path: the sysadmin names them.
    other = tmp_path / "vendor"
    other.mkdir()
    units = render(other, {**EXECUTABLES, "softhsm_enabled": False, "crl_signer_supplementary_groups": ["hsmusers"],
                           "crl_signer_hsm_read_write_paths": ["/var/lib/vendor-hsm"]})
    sign = directives(units / "ceremony-crl-sign@qualified.service")
    assert sign["SupplementaryGroups"] == ["hsmusers"] and "/var/lib/vendor-hsm" in sign["ReadWritePaths"][0]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_the_probe_follows_the_partition_count_and_the_ocsp_url_of_the_definition(tmp_path: Path) -> None:
    ca = {"crl": {"interval": "24h", "lifetime": "7d", "partitions": 16},
          "ocsp": {"url": "http://ocsp.test.scse.ml/qualified"}}
    units = render(tmp_path, {**EXECUTABLES, "monitoring_crl_probe_publishers": ["203.0.113.14", "203.0.113.18"],
                              "monitoring_crl_probe_ocsp_cert": "/var/lib/ceremony/qualified/probe.crt.pem"}, ca)
    check = verify(units)
    assert check.returncode == 0 and check.stderr.strip() == "", check.stderr
    probe = directives(units / "ceremony-crl-probe@qualified.service")["ExecStart"][0]
    assert probe.endswith(" --metrics-dir /var/lib/prometheus/node-exporter --publisher 203.0.113.14 --publisher "
                          "203.0.113.18 --partitions 16 --ocsp-url http://ocsp.test.scse.ml/qualified --ocsp-cert "
                          "/var/lib/ceremony-probe/qualified.ocsp-probe.crt.pem"), probe
    cron = json.loads((units / "cron.json").read_text())["probe"]
    assert cron == probe + " --syslog"
    # After a re-key, one certificate of each key: each asked about at its key's responder (docs/ocsp.md)
    rekeyed = tmp_path / "rekeyed"
    rekeyed.mkdir()
    both = directives(render(rekeyed, {**EXECUTABLES, "monitoring_crl_probe_ocsp_cert": "/var/lib/x/probe.crt.pem",
                                       "monitoring_crl_probe_ocsp_certs": ["/var/lib/x/probe-g2.crt.pem"]}, ca) /
                      "ceremony-crl-probe@qualified.service")["ExecStart"][0]
    assert both.endswith(" --ocsp-url http://ocsp.test.scse.ml/qualified --ocsp-cert "
                         "/var/lib/ceremony-probe/qualified.ocsp-probe.crt.pem --ocsp-cert "
                         "/var/lib/ceremony-probe/qualified.ocsp-probe-1.crt.pem"), both
    # Without a certificate to ask about, the OCSP responder is left out; without partitions, the count.
    other = tmp_path / "plain"
    other.mkdir()
    plain = directives(render(other, EXECUTABLES, {"ocsp": {"url": "http://ocsp.test.scse.ml/qualified"}}) /
                       "ceremony-crl-probe@qualified.service")["ExecStart"][0]
    assert plain.endswith(" --metrics-dir /var/lib/prometheus/node-exporter"), plain


def test_the_pull_takes_the_crl_and_every_partition_crl_through_rrsync_and_nothing_else(tmp_path: Path) -> None:
    """The pull unit's rsync command line as the role renders it, run against ``rrsync -ro`` (what the signer's
    forced command is) over a stand-in for ssh: the full CRL and every ``<stem>-p<i>.crl`` arrive, a partition file
    added later comes with the next pull, so do a later key generation's ``<stem>.g<m>.crl`` and
    ``<stem>.g<m>-p<i>.crl`` after a re-key (the signer's job writes them there), and nothing else of the signer's
    directory does."""
    rrsync = shutil.which("rrsync")
    if rrsync is None:
        pytest.skip("rrsync missing (Debian's rsync package ships it)")
    play = [{
        "name": "Render the pull unit", "hosts": "localhost", "gather_facts": False,
        "vars_files": [str(REPO / "roles/crl_publisher" / d / "main.yml") for d in ("defaults", "vars")],
        "tasks": [{"name": "Render", "ansible.builtin.template": {
            "src": str(REPO / "roles/crl_publisher/templates/ceremony-crl-pull.service.j2"),
            "dest": str(tmp_path / "pull.service"), "mode": "0644"}}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    source = {"ca": "qualified", "crl": "qualified.crl", "url": "http://pki.test.scse.ml/crl/qualified.crl",
              "host": "subca", "address": "203.0.113.2", "user": "crl-sync"}
    (tmp_path / "extra.json").write_text(json.dumps({"source": source, "crl_publisher_incoming": str(tmp_path / "in")}))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "PATH": f"{VENV}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    proc = subprocess.run([str(VENV / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           str(tmp_path / "play.yml"), "-e", f"@{tmp_path / 'extra.json'}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pull, publish = directives(tmp_path / "pull.service")["ExecStart"]
    assert "--crl-url http://pki.test.scse.ml/crl/qualified.crl" in publish
    signer = tmp_path / "signer"
    (signer / ".state").mkdir(parents=True)
    for name in ("qualified.crl", "qualified-p0.crl", "qualified-p1.crl", "qualified.crl.pem", "other.crl",
                 "qualified.ocsp.sqlite3", ".state/qualified.crlnumber", ".qualified-p2.crl.tmp"):
        (signer / name).write_text(name)
    ssh = tmp_path / "ssh"
    ssh.write_text(f"#!/bin/sh\nshift\nSSH_ORIGINAL_COMMAND=\"$*\" exec {rrsync} -ro {signer}\n")
    ssh.chmod(0o755)
    (tmp_path / "in").mkdir()
    argv = pull.split()
    assert argv[0] == "/usr/bin/rsync"

    def run_pull() -> list[str]:
        done = subprocess.run([argv[0], "-e", str(ssh), *argv[1:]], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return sorted(p.name for p in (tmp_path / "in").iterdir())

    assert run_pull() == ["qualified-p0.crl", "qualified-p1.crl", "qualified.crl"]
    (signer / "qualified-p7.crl").write_text("a partition named later")
    assert run_pull() == ["qualified-p0.crl", "qualified-p1.crl", "qualified-p7.crl", "qualified.crl"]
    # After a re-key: the second key's CRLs come, not its PEM copies, certificates, states or another CA's.
    for name in ("qualified.g2.crl", "qualified.g2-p0.crl", "qualified.g2-p3.crl", "qualified.g2.crl.pem",
                 "qualified.g2.crt.pem", ".state/qualified.g2.crlnumber", "other.g2.crl", ".qualified.g2.crl.tmp"):
        (signer / name).write_text(name)
    assert run_pull() == ["qualified-p0.crl", "qualified-p1.crl", "qualified-p7.crl", "qualified.crl",
                          "qualified.g2-p0.crl", "qualified.g2-p3.crl", "qualified.g2.crl"]
