"""The registry on the converged CA host (``conftest.converged``): revoked with the installed command, backed
up as the timer would, moved away, refused by a re-run of the playbook, restored with the command the
refusal gives, and its revocation in the next CRL the scheduled job signs.

The test hosts have no systemd as PID 1: the backup units are checked with ``systemd-analyze verify`` and
the service's ``ExecStart`` is run directly as its ``User=``; the CRL job runs as its cron entry does.
Whatever happens, the registry is back in place at the end (the other modules share the hosts).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import subprocess
import time

import pytest
from cryptography import x509

from .conftest import Lab, PlaybookRun

pytestmark = pytest.mark.infra

CA = "qualified"
CA_USER = "ceremony-ca"
SUITE_PYTHON = "/opt/ceremony-suite/venv/bin/python"
REGISTRY_DIR = "/var/lib/ceremony/registry"
REGISTRY = f"{REGISTRY_DIR}/registry.sqlite3"
BACKUPS = "/var/lib/ceremony/registry-backups"
UNIT = "/etc/systemd/system/ceremony-registry-backup"
SIGNED_CRL = f"/var/lib/ceremony/crl/{CA}.crl"
MOVED = "/root/registry-moved-away.sqlite3"

# A certificate as issuance registers it (the HSM signature is not what this test is about).
REGISTER = f'''
import hashlib, sys
from datetime import UTC, datetime, timedelta
from ceremony.ca.registry import CertRecord, Registry
serial = int(sys.argv[1], 16)
now = datetime.now(UTC).replace(microsecond=0)
with Registry.open("{REGISTRY}") as reg:
    reg.add(CertRecord(serial, "CN=Registry Test,C=ML", "qes-natural-person", now - timedelta(days=1),
                       now + timedelta(days=365), hashlib.sha256(sys.argv[1].encode()).hexdigest(), "good"))
'''


def unit_exec(host, unit: str) -> tuple[str, str]:  # host: testinfra.host.Host
    """The unit's User= and its one ExecStart command line."""
    text = host.file(unit).content_string
    user = next(line.split("=", 1)[1] for line in text.splitlines() if line.startswith("User="))
    return user, next(line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ExecStart="))


def test_revoke_backup_refuse_restore_and_the_crl(converged: PlaybookRun, lab: Lab) -> None:
    started = time.monotonic()
    subca = lab.host("subca")
    # What the role installed: units that verify, a private backup directory, the host's CA configuration,
    # the commands on the PATH, the cron entry (no systemd here) and the marker naming the backup directory.
    verify = subca.run(f"systemd-analyze verify {UNIT}.service {UNIT}.timer")
    assert verify.rc == 0 and verify.stderr.strip() == "", verify.stderr
    backups = subca.file(BACKUPS)
    assert backups.is_directory and backups.user == CA_USER and backups.mode == 0o700
    conf = subca.file(f"/etc/ceremony/{CA}.conf")
    assert conf.user == "root" and conf.group == CA_USER and conf.mode == 0o640
    assert f"path = {REGISTRY}" in conf.content_string
    cron = subca.file("/etc/cron.d/ceremony-registry-backup").content_string
    assert f"{CA_USER} /usr/local/bin/ceremony-registry backup --config /etc/ceremony/{CA}.conf --syslog" in cron
    marker = json.loads(subca.file(f"{REGISTRY}.provisioned.json").content_string)
    assert marker["registry"] == REGISTRY and marker["backup_dir"] == BACKUPS and marker["created"]

    serial = secrets.randbits(62) | (1 << 62)
    registered = subca.run("su -s /bin/sh %s -c %s", CA_USER, f"{SUITE_PYTHON} -c '{REGISTER}' {serial:x}")
    assert registered.rc == 0, registered.stderr
    # Revocation on the CA host, as docs/registry.md says: the installed command, as the CA user.
    revoke = subca.run(f"runuser -u {CA_USER} -- ceremony-revoke {serial:x} --reason keyCompromise "
                       "--invalidity-date 2026-01-02T03:04:05Z")
    assert revoke.rc == 0, revoke.stderr
    assert revoke.stdout.startswith(f"revoked {serial:x} CN=Registry Test,C=ML at ")
    assert f"in {REGISTRY}" in revoke.stdout and f"systemctl start ceremony-crl-sign@{CA}.service" in revoke.stdout
    bad = subca.run(f"runuser -u {CA_USER} -- ceremony-revoke {serial:x} --reason lost")
    lines = bad.stderr.strip().splitlines()
    assert bad.rc != 0 and len(lines) == 1 and "'lost' is not allowed" in lines[0], bad.stderr

    # The backup, as its timer runs it.
    user, command = unit_exec(subca, f"{UNIT}.service")
    assert user == CA_USER
    backup = subca.run("su -s /bin/sh %s -c %s", user, command)
    assert backup.rc == 0, backup.stderr
    made = re.match(r"^backup (\S+): verified \((schema v\d+, \d+ certificates? \(\d+ revoked\), newest revocation "
                    r"(\S+) .*); integrity ok\)$", backup.stdout.strip())
    assert made is not None and made.group(3) == f"{serial:x}", backup.stdout
    backup_file = subca.file(made.group(1))
    assert backup_file.user == CA_USER and backup_file.mode == 0o600 and made.group(1).startswith(f"{BACKUPS}/")

    subca.check_output(f"mv {REGISTRY} {MOVED}")
    try:
        listing = sorted(subca.file(REGISTRY_DIR).listdir())
        rerun = lab.playbook("subordinate_ca.yml", "--limit", "subca")
        assert rerun.returncode != 0
        said = " ".join(rerun.output.split())  # the YAML result format may fold a long message
        assert f"{REGISTRY}: the certificate registry is missing, but it was created on this host at " \
            f"{marker['created']}" in said, rerun.output[-4000:]
        command_given = re.search(r"as root: (runuser -u \S+ -- ceremony-registry restore (\S+) --registry "
                                  r"/\S+?\.sqlite3)", said)
        assert command_given is not None and command_given.group(2) == made.group(1), rerun.output[-3000:]
        assert not subca.file(REGISTRY).exists and sorted(subca.file(REGISTRY_DIR).listdir()) == listing
        # The restore, exactly as the refusal says.
        restore = subca.run(command_given.group(1))
        assert restore.rc == 0, restore.stderr
        assert f"restored {REGISTRY} from {made.group(1)}: {made.group(2)}\n" in restore.stdout, restore.stdout
        restored = subca.file(REGISTRY)
        assert restored.user == CA_USER and restored.mode == 0o640
    finally:
        if not subca.file(REGISTRY).exists:
            subca.check_output(f"mv {MOVED} {REGISTRY}")

    # The CRL job, as its cron entry runs it: the restored registry's revocation is in the new CRL.
    line = subca.file(f"/etc/cron.d/ceremony-crl-sign-{CA}").content_string.strip().splitlines()[-1]
    job = subca.run("su -s /bin/sh %s -c %s", CA_USER, line.split(f" {CA_USER} ", 1)[1])
    assert job.rc == 0 and "signed and published" in job.stdout, job.stdout + job.stderr
    der = (lab.th.host_root("subca") / SIGNED_CRL.lstrip("/")).read_bytes()
    entry = x509.load_der_x509_crl(der).get_revoked_certificate_by_serial_number(serial)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    assert entry.extensions.get_extension_for_class(x509.InvalidityDate).value.invalidity_date_utc == \
        dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    ca_cert = str(lab.exchange / f"{CA}.crt.pem")
    check = subprocess.run(["openssl", "crl", "-inform", "DER", "-noout", "-CAfile", ca_cert, "-verify"], input=der,
                           capture_output=True, check=False)
    assert check.returncode == 0 and b"verify OK" in check.stdout + check.stderr
    print(f"registry: revoke, backup, refused re-run, restore, CRL: {time.monotonic() - started:.1f} s")
