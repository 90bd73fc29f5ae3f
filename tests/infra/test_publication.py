"""Publication on schedule, end to end, on the converged test hosts (``conftest.converged``).

A certificate is issued and revoked on the CA host, the signer's job runs as its cron entry does,
then each publisher runs its pull unit's commands as the timer would (rsync over SSH with the
publisher's own key, restricted on the signer to ``rrsync -ro`` of the CRL directory, then
``ceremony-crl-publish``); the client namespace fetches the CRL from both publishers. The test
hosts have no systemd as PID 1: every unit is checked with ``systemd-analyze verify`` and its
``ExecStart`` lines are run directly, as its ``User=``. Last, partitioning is turned on in the CA host's definition
(as an operator would; the testing ``pki.yml`` stays without partitions, which the rehearsal and the unit tests
rely on) and a revocation in one partition is followed to both publishers and the probe.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from .conftest import Lab, PlaybookRun

pytestmark = pytest.mark.infra

CA = "qualified"
CA_USER = "ceremony-ca"
PUBLISHERS = ("publisher", "publisher2")
SUITE_PYTHON = "/opt/ceremony-suite/venv/bin/python"
SIGNED_CRL = f"/var/lib/ceremony/crl/{CA}.crl"
SERVED = "/var/www/pki/crl"
PULL_UNIT = f"ceremony-crl-pull-{CA}"
UNITS = (f"{PULL_UNIT}.service", f"{PULL_UNIT}.timer", "ceremony-crl-root.service", "ceremony-crl-root.timer",
         "ceremony-crl-etag.path", "ceremony-crl-etag.service")


@dataclass
class Fetched:
    status: int
    headers: dict[str, str]
    body: bytes


def fetch(lab: Lab, publisher: str, path: str, tmp: Path, *extra: str) -> Fetched:
    """GET from the client namespace, as a relying party does."""
    head, body = tmp / f"{publisher}.head", tmp / f"{publisher}.body"
    proc = subprocess.run(["ip", "netns", "exec", lab.th.CLIENT_NS, "curl", "-sS", "--max-time", "5", *extra,
                           "-D", str(head), "-o", str(body), f"http://{lab.th.PUBLISHERS_FROM_CLIENT[publisher]}{path}"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = head.read_text().strip().splitlines()
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return Fetched(int(lines[0].split()[1]), headers, body.read_bytes() if body.exists() else b"")


def fetch_both(lab: Lab, path: str, tmp: Path, want_etag: bool = True) -> list[Fetched]:
    """The same URL from every publisher; after a reload of nginx, until the new ETag is sent (a few seconds)."""
    deadline = time.monotonic() + 10
    while True:
        answers = [fetch(lab, p, path, tmp) for p in PUBLISHERS]
        if not want_etag or all("etag" in a.headers for a in answers) or time.monotonic() > deadline:
            return answers
        time.sleep(0.2)


def unit_commands(host, unit: str) -> tuple[str, list[str]]:  # host: testinfra.host.Host
    """The unit's User= (root when absent) and its ExecStart command lines, in order."""
    text = host.file(f"/etc/systemd/system/{unit}").content_string
    user = next((line.split("=", 1)[1] for line in text.splitlines() if line.startswith("User=")), "root")
    return user, [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ExecStart=")]


def run_unit(host, unit: str) -> list:  # -> list[testinfra CommandResult]
    """Run the unit's ExecStart lines as its timer would: in order, as its user, stopping at the first failure."""
    user, commands = unit_commands(host, unit)
    results = []
    for command in commands:
        result = host.run("su -s /bin/sh %s -c %s", user, command) if user != "root" else host.run(command)
        results.append(result)
        if result.rc != 0:
            break
    return results


def publish_everywhere(lab: Lab, unit: str = f"{PULL_UNIT}.service") -> list[list]:
    """Each publisher's pull unit, then its ETag unit (the path unit would start it: nginx reload)."""
    runs = []
    for name in PUBLISHERS:
        host = lab.host(name)
        runs.append(run_unit(host, unit))
        etag = run_unit(host, "ceremony-crl-etag.service")
        assert all(r.rc == 0 for r in etag), [r.stderr for r in etag]
    return runs


def crl_of(der: bytes) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl(der)


def number_of(der: bytes) -> int:
    return crl_of(der).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def assert_alike_and_validated(answers: list[Fetched]) -> None:
    """Every publisher sends the same bytes, Last-Modified = thisUpdate and ETag = SHA-256."""
    first = answers[0]
    assert all(a.status == 200 for a in answers), [a.status for a in answers]
    assert all(a.body == first.body for a in answers)
    assert all(a.headers["content-type"] == "application/pkix-crl" for a in answers)
    this_update = crl_of(first.body).last_update_utc
    assert {a.headers["last-modified"] for a in answers} == {email.utils.formatdate(this_update.timestamp(),
                                                                                     usegmt=True)}
    assert {a.headers.get("etag") for a in answers} == {f'"{hashlib.sha256(first.body).hexdigest()}"'}


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)


def test_units_verify_and_the_signer_key_is_read_only(converged: PlaybookRun, lab: Lab) -> None:
    for name in PUBLISHERS:
        host = lab.host(name)
        paths = " ".join(f"/etc/systemd/system/{u}" for u in UNITS)
        verify = host.run(f"systemd-analyze verify {paths}")
        assert verify.rc == 0 and verify.stderr.strip() == "", (name, verify.stderr)
        assert "Persistent=true" in host.file(f"/etc/systemd/system/{PULL_UNIT}.timer").content_string
        assert host.file("/usr/share/doc/ceremony-suite/crl.md").is_file  # the units' Documentation=
        key = host.file("/var/lib/ceremony-publish/.ssh/id_ed25519")
        assert key.user == "ceremony-publish" and key.mode == 0o600
        assert host.file(f"{SERVED}").user == "ceremony-publish"
    signer = lab.host("subca")
    keys = signer.file("/var/lib/crl-sync/.ssh/authorized_keys")
    assert keys.user == "root" and keys.mode == 0o644
    entries = [line for line in keys.content_string.splitlines() if line and not line.startswith("#")]
    assert sorted(e.split(",command=", 1)[0] for e in entries) == ['restrict,from="203.0.113.14"',
                                                                    'restrict,from="203.0.113.18"']
    assert all('command="/usr/bin/rrsync -ro /var/lib/ceremony/crl" ssh-ed25519 ' in e for e in entries)
    # The CA's other directories stay closed to the account (only --x on /var/lib/ceremony).
    assert signer.run("su -s /bin/sh crl-sync -c 'ls /var/lib/ceremony'").rc != 0
    assert signer.run("su -s /bin/sh crl-sync -c 'cat /var/lib/ceremony/registry/registry.sqlite3'").rc != 0
    # Through the key: no shell, no upload, nothing outside the CRL directory.
    publisher = lab.host("publisher")

    def as_publisher(command: str):  # -> testinfra CommandResult
        return publisher.run("su -s /bin/sh ceremony-publish -c %s", command)

    shell = as_publisher("ssh crl-source-subca id")
    assert shell.rc != 0 and "uid=" not in shell.stdout
    upload = as_publisher("rsync /etc/hostname crl-source-subca:planted")
    assert upload.rc != 0 and not signer.file("/var/lib/ceremony/crl/planted").exists
    outside = as_publisher("rsync crl-source-subca:../registry/registry.sqlite3 /tmp/stolen")
    assert outside.rc != 0 and not publisher.file("/tmp/stolen").exists
    listing = as_publisher("rsync crl-source-subca:")
    assert listing.rc == 0 and f"{CA}.crl" in listing.stdout


ISSUE_AND_REVOKE = '''
import sys
from pathlib import Path
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ceremony.definition.model import load_definition
from ceremony.ceremonies.issuance import issue_certificate
from ceremony.x509.profiles import subject_name
from ceremony.transcript.recorder import ConsoleRecorder
from ceremony.ca.registry import Registry

out = Path(sys.argv[1])
defn = load_definition("/etc/ceremony/pki.yml")
issuer = Path("/var/lib/ceremony/qualified/qualified.crt.pem")
rehearsal = x509.load_pem_x509_certificate(issuer.read_bytes()).subject == \\
    subject_name(defn.model.cas["qualified"].subject, True)
subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "ML"), x509.NameAttribute(NameOID.GIVEN_NAME, "Awa"),
                     x509.NameAttribute(NameOID.SURNAME, "Keita"),
                     x509.NameAttribute(NameOID.SERIAL_NUMBER, "IDCML-0123456789"),
                     x509.NameAttribute(NameOID.COMMON_NAME, "Awa Keita")])
csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(ec.generate_private_key(ec.SECP256R1()),
                                                                          hashes.SHA256())
(out / "ee.csr.pem").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
with Registry.open("/var/lib/ceremony/registry/registry.sqlite3") as registry:
    issued = issue_certificate(defn, "qualified", "qes-natural-person", out / "ee.csr.pem", out, registry,
                               ConsoleRecorder(rehearsal=rehearsal), issuer_cert_path=issuer, rehearsal=rehearsal,
                               pin_file="/etc/ceremony/qualified.pin", interactive=False)
    assert registry.revoke(issued.serial, "keyCompromise")
print(f"ISSUED {issued.serial:x} {issued.pem_path}")
'''


@pytest.fixture(scope="module")
def revoked(converged: PlaybookRun, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A certificate issued by the CA host's HSM key and revoked in its registry; the CRL served before."""
    tmp = tmp_path_factory.mktemp("publication")
    before = fetch_both(lab, f"/crl/{CA}.crl", tmp)
    subca = lab.host("subca")
    work = subca.check_output("mktemp -d /tmp/ee.XXXXXX")
    subca.check_output("chown %s %s", CA_USER, work)
    script = f"{work}/issue.py"
    (lab.th.host_root("subca") / script.lstrip("/")).write_text(ISSUE_AND_REVOKE)
    started = time.monotonic()
    issue = subca.run("su -s /bin/sh %s -c %s", CA_USER,
                      f"SOFTHSM2_CONF=/etc/softhsm/softhsm2.conf {SUITE_PYTHON} {script} {work}")
    assert issue.rc == 0, issue.stdout[-3000:] + issue.stderr[-3000:]
    serial_hex, pem_path = issue.stdout.strip().splitlines()[-1].split()[1:]
    ee = tmp / "ee.pem"
    ee.write_text(subca.file(pem_path).content_string)
    return {"tmp": tmp, "before": before, "serial": int(serial_hex, 16), "ee": ee, "started": started}


def test_a_revocation_reaches_both_publishers_without_a_person(revoked: dict[str, object], lab: Lab) -> None:
    tmp, serial = revoked["tmp"], revoked["serial"]
    assert isinstance(tmp, Path) and isinstance(serial, int)
    before = revoked["before"]
    assert isinstance(before, list)
    assert_alike_and_validated(before)
    # The signer's latest CRL (another module may have signed one that was not pulled yet).
    old_number = number_of((lab.th.host_root("subca") / SIGNED_CRL.lstrip("/")).read_bytes())
    assert old_number >= number_of(before[0].body)
    # The signer's job, as its cron entry / timer runs it.
    subca = lab.host("subca")
    cron = subca.file(f"/etc/cron.d/ceremony-crl-sign-{CA}").content_string.strip().splitlines()[-1]
    job = subca.run("su -s /bin/sh %s -c %s", CA_USER, cron.split(f" {CA_USER} ", 1)[1])
    assert job.rc == 0 and "signed and published" in job.stdout, job.stdout + job.stderr
    # Each publisher's timer: pull, verify, publish; then the ETag path unit reloads nginx.
    for name, results in zip(PUBLISHERS, publish_everywhere(lab), strict=True):
        assert [r.rc for r in results] == [0, 0], (name, [r.stderr for r in results])
        assert f"CRL {old_number + 1} installed" in results[1].stdout, results[1].stdout
    after = fetch_both(lab, f"/crl/{CA}.crl", tmp)
    elapsed = time.monotonic() - float(revoked["started"])  # type: ignore[arg-type]
    assert_alike_and_validated(after)
    crl = crl_of(after[0].body)
    assert number_of(after[0].body) == old_number + 1
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry is not None and entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.name == \
        "key_compromise"
    served = tmp / "served.crl"
    served.write_bytes(after[0].body)
    check = openssl("crl", "-inform", "DER", "-in", str(served), "-noout", "-CAfile",
                    str(lab.exchange / f"{CA}.crt.pem"), "-verify")
    assert check.returncode == 0 and "verify OK" in check.stdout + check.stderr
    # A relying party with the served CRLs and the chain rejects the certificate as revoked.
    root_crl = tmp / "root.crl"
    root_crl.write_bytes(fetch(lab, "publisher2", "/crl/root.crl", tmp).body)
    verdict = openssl("verify", "-crl_check_all", "-CAfile", str(lab.exchange / "root.crt.pem"), "-untrusted",
                      str(lab.exchange / f"{CA}.crt.pem"), "-CRLfile", str(root_crl), "-CRLfile", str(served),
                      str(revoked["ee"]))
    assert verdict.returncode != 0 and "certificate revoked" in verdict.stdout + verdict.stderr, verdict.stdout
    chain = openssl("verify", "-crl_check_all", "-CAfile", str(lab.exchange / "root.crt.pem"), "-CRLfile",
                    str(root_crl), "-CRLfile", str(served), str(lab.exchange / f"{CA}.crt.pem"))
    assert chain.returncode == 0, chain.stdout + chain.stderr
    # Caches revalidate: the same Last-Modified gets 304 from either publisher, with the same ETag.
    for name in PUBLISHERS:
        again = fetch(lab, name, f"/crl/{CA}.crl", tmp, "-H", f"If-Modified-Since: {after[0].headers['last-modified']}")
        assert (again.status, again.headers.get("etag")) == (304, after[0].headers["etag"])
    # A second run of the timers changes nothing.
    for results in publish_everywhere(lab):
        assert [r.rc for r in results] == [0, 0] and "already served; nothing changed" in results[1].stdout
    print(f"revocation to both publishers (issue, revoke, sign, pull and publish twice, fetch): {elapsed:.1f} s")


def test_a_tampered_crl_on_the_signer_is_refused_and_the_served_one_stays(revoked: dict[str, object],
                                                                         lab: Lab) -> None:
    tmp = revoked["tmp"]
    assert isinstance(tmp, Path)
    subca = lab.host("subca")
    good = subca.file(SIGNED_CRL).sha256sum
    served_before = [lab.host(p).file(f"{SERVED}/{CA}.crl").sha256sum for p in PUBLISHERS]
    fetched_before = fetch_both(lab, f"/crl/{CA}.crl", tmp)
    number = number_of(fetched_before[0].body)
    tamper = (f"{SUITE_PYTHON} -c \"import os,sys; p=sys.argv[1]; d=bytearray(open(p,'rb').read()); "
              f"d[-3]^=1; open(p+'.t','wb').write(d); os.chmod(p+'.t',0o644); os.replace(p+'.t',p)\" {SIGNED_CRL}")
    subca.check_output("cp -p %s /tmp/good.crl", SIGNED_CRL)
    try:
        subca.check_output(tamper)
        assert subca.file(SIGNED_CRL).sha256sum != good
        for name, results in zip(PUBLISHERS, publish_everywhere(lab), strict=True):
            pull, refusal = results
            assert pull.rc == 0, pull.stderr
            assert refusal.rc == 8, (name, refusal.stdout, refusal.stderr)
            lines = refusal.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and "refused: the signature does not verify" \
                in lines[0] and lines[0].endswith(f"CRL {number} stays served"), lines
    finally:
        subca.check_output("cp -p /tmp/good.crl %s && rm -f /tmp/good.crl", SIGNED_CRL)
    assert [lab.host(p).file(f"{SERVED}/{CA}.crl").sha256sum for p in PUBLISHERS] == served_before
    assert [a.body for a in fetch_both(lab, f"/crl/{CA}.crl", tmp)] == [a.body for a in fetched_before]
    for results in publish_everywhere(lab):  # the signer's good CRL again: nothing to change
        assert [r.rc for r in results] == [0, 0] and "already served" in results[1].stdout


def test_the_root_crl_in_force_is_served_from_both_publishers(revoked: dict[str, object], lab: Lab) -> None:
    tmp = revoked["tmp"]
    assert isinstance(tmp, Path)
    now = dt.datetime.now(dt.UTC)
    batch = {number_of(p.read_bytes()): p.read_bytes() for p in (lab.exchange / "crl").glob("root-*.crl")}
    in_force = max(n for n, der in batch.items() if crl_of(der).last_update_utc <= now)
    assert len(batch) > 1 and in_force < max(batch)  # later CRLs of the batch wait for their thisUpdate
    for name in PUBLISHERS:
        host = lab.host(name)
        results = run_unit(host, "ceremony-crl-root.service")
        assert [r.rc for r in results] == [0], [r.stderr for r in results]
        assert f"CRL {in_force} already served" in results[0].stdout
        assert len(host.file("/var/lib/ceremony-publish/root-batches").listdir()) == len(batch)
    answers = fetch_both(lab, "/crl/root.crl", tmp)
    assert_alike_and_validated(answers)
    assert answers[0].body == batch[in_force]
    root_crl = tmp / "root-served.crl"
    root_crl.write_bytes(answers[0].body)
    check = openssl("crl", "-inform", "DER", "-in", str(root_crl), "-noout", "-CAfile",
                    str(lab.exchange / "root.crt.pem"), "-verify")
    assert check.returncode == 0 and "verify OK" in check.stdout + check.stderr


DEFINITION = "/etc/ceremony/pki.yml"
PARTITIONS = 2
PROBE_PUBLISHERS = ("203.0.113.14", "203.0.113.18")  # monitoring_crl_probe_publishers of the testing inventory


def test_partition_crls_reach_both_publishers_checked_and_the_probe_sees_them(revoked: dict[str, object],
                                                                             lab: Lab) -> None:
    """An operator turns partitioning on (crl.partitions: 2 in the CA host's definition; no playbook runs after it):
    a certificate issued then names one partition CRL; revoked, the job signs the full CRL and both partitions, each
    publisher's pull unit brings every partition file (none was there before) and serves it after its checks; a
    relying party gets the partition CRL its certificate names from both publishers, alike, and openssl rejects the
    certificate with it. A damaged partition CRL and one of the other partition's scope under its name are refused,
    the served one kept. The probe's cron command, with the partition count, sees every URL on both publishers."""
    tmp = revoked["tmp"]
    assert isinstance(tmp, Path)
    subca = lab.host("subca")
    definition = lab.th.host_root("subca") / DEFINITION.lstrip("/")
    original = definition.read_text()
    assert original.count("      interval: 24h\n") == 1 and "partitions:" not in original
    signed_dir = lab.th.host_root("subca") / SIGNED_CRL.lstrip("/").rpartition("/")[0]
    saved: dict[str, bytes] = {}
    try:
        definition.write_text(original.replace("      interval: 24h\n", f"      interval: 24h\n"
                                                                         f"      partitions: {PARTITIONS}\n"))
        work = subca.check_output("mktemp -d /tmp/ee.XXXXXX")
        subca.check_output("chown %s %s", CA_USER, work)
        script = f"{work}/issue.py"
        (lab.th.host_root("subca") / script.lstrip("/")).write_text(ISSUE_AND_REVOKE)
        issue = subca.run("su -s /bin/sh %s -c %s", CA_USER,
                          f"SOFTHSM2_CONF=/etc/softhsm/softhsm2.conf {SUITE_PYTHON} {script} {work}")
        assert issue.rc == 0, issue.stdout[-3000:] + issue.stderr[-3000:]
        serial_hex, pem_path = issue.stdout.strip().splitlines()[-1].split()[1:]
        serial = int(serial_hex, 16)
        part = serial % PARTITIONS
        ee = tmp / "ee-partitioned.pem"
        ee.write_text(subca.file(pem_path).content_string)
        dp = x509.load_pem_x509_certificate(ee.read_bytes()).extensions.get_extension_for_class(
            x509.CRLDistributionPoints).value[0].full_name[0].value
        assert dp == f"http://pki.test.scse.ml/crl/{CA}-p{part}.crl"
        # The signer's job as its cron entry runs it: the full CRL and every partition, together.
        cron = subca.file(f"/etc/cron.d/ceremony-crl-sign-{CA}").content_string.strip().splitlines()[-1]
        job = subca.run("su -s /bin/sh %s -c %s", CA_USER, cron.split(f" {CA_USER} ", 1)[1])
        assert job.rc == 0 and "signed and published" in job.stdout, job.stdout + job.stderr
        names = [f"{CA}-p{i}.crl" for i in range(PARTITIONS)]
        assert all((signed_dir / n).is_file() for n in names)
        # Each publisher's timer, unchanged since provisioning: the new files come with the pull.
        for name, results in zip(PUBLISHERS, publish_everywhere(lab), strict=True):
            assert [r.rc for r in results] == [0, 0], (name, [r.stdout + r.stderr for r in results])
            lines = results[1].stdout.splitlines()
            for n in names:
                assert any(x.startswith(f"{SERVED}/{n}: CRL ") and " installed " in x for x in lines), lines
        answers = fetch_both(lab, f"/crl/{CA}-p{part}.crl", tmp)
        assert_alike_and_validated(answers)
        crl = crl_of(answers[0].body)
        assert crl.get_revoked_certificate_by_serial_number(serial) is not None
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
        assert idp.critical and [n.value for n in idp.value.full_name] == [dp]
        served = tmp / "partition.crl"
        served.write_bytes(answers[0].body)
        pem = tmp / "partition.crl.pem"
        assert openssl("crl", "-inform", "DER", "-in", str(served), "-out", str(pem)).returncode == 0
        verdict = openssl("verify", "-crl_check", "-CAfile", str(lab.exchange / "root.crt.pem"), "-untrusted",
                          str(lab.exchange / f"{CA}.crt.pem"), "-CRLfile", str(pem), str(ee))
        assert verdict.returncode != 0 and "certificate revoked" in verdict.stdout + verdict.stderr, verdict.stdout
        # The other partition's CRL does not answer for this certificate: another scope.
        other = tmp / "other.crl"
        other.write_bytes(fetch(lab, "publisher", f"/crl/{CA}-p{1 - part}.crl", tmp).body)
        other_pem = tmp / "other.crl.pem"
        assert openssl("crl", "-inform", "DER", "-in", str(other), "-out", str(other_pem)).returncode == 0
        scope = openssl("verify", "-crl_check", "-CAfile", str(lab.exchange / "root.crt.pem"), "-untrusted",
                        str(lab.exchange / f"{CA}.crt.pem"), "-CRLfile", str(other_pem), str(ee))
        assert scope.returncode != 0 and "certificate revoked" not in scope.stdout + scope.stderr
        # A damaged partition CRL, then the other partition's CRL under this one's name: refused by both, kept.
        target = signed_dir / f"{CA}-p{part}.crl"
        saved = {n: (signed_dir / n).read_bytes() for n in names}
        number = number_of(answers[0].body)
        damaged = bytearray(saved[target.name])
        damaged[-3] ^= 1
        for bad, needle in ((bytes(damaged), "the signature does not verify"),
                            (saved[f"{CA}-p{1 - part}.crl"], "its issuing distribution point names")):
            stage = target.with_name(".bad")
            stage.write_bytes(bad)
            stage.chmod(0o644)
            stage.replace(target)
            os.utime(target, (time.time() + 5, time.time() + 5))  # rsync --times: a new file to fetch
            for name, results in zip(PUBLISHERS, publish_everywhere(lab), strict=True):
                pull, refusal = results
                assert pull.rc == 0, pull.stderr
                assert refusal.rc == 8, (name, refusal.stdout, refusal.stderr)
                lines = refusal.stderr.strip().splitlines()
                assert len(lines) == 1 and f"{CA}-p{part}.crl refused: " in lines[0] and needle in lines[0] and \
                    lines[0].endswith(f"CRL {number} stays served"), lines
                assert "already served; nothing changed" in refusal.stdout  # the others are still checked
            assert [a.body for a in fetch_both(lab, f"/crl/{CA}-p{part}.crl", tmp)] == [answers[0].body] * 2
        target.write_bytes(saved[target.name])
        os.utime(target, (time.time() + 10, time.time() + 10))
        for results in publish_everywhere(lab):
            assert [r.rc for r in results] == [0, 0] and "installed" not in results[1].stdout, results[1].stdout
        # The probe's cron command as installed, with the partition count the definition now has.
        line = subca.file(f"/etc/cron.d/ceremony-crl-probe-{CA}").content_string.strip().splitlines()[-1]
        probe_user, probe = line.split(None, 6)[5:]
        prom = f"/var/lib/prometheus/node-exporter/ceremony_crl_probe_{CA}.prom"
        result = subca.run("su -s /bin/sh %s -c %s", probe_user, f"{probe} --partitions {PARTITIONS}")
        assert result.rc == 0, result.stdout + result.stderr
        text = subca.file(prom).content_string
        for publisher in PROBE_PUBLISHERS:
            for i in range(PARTITIONS):
                assert (f'x509_crl_probe_success{{ca="{CA}",url="http://pki.test.scse.ml/crl/{CA}-p{i}.crl",'
                        f'publisher="{publisher}",partition="{i}"}} 1') in text, text
            assert f'x509_crl_probe_success{{ca="{CA}",url="http://pki.test.scse.ml/crl/{CA}.crl",' \
                   f'publisher="{publisher}"}} 1' in text, text
    finally:
        definition.write_text(original)
        for n, der in saved.items():
            (signed_dir / n).write_bytes(der)
