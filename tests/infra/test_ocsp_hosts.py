"""OCSP on the converged test hosts (``conftest.converged``): the signer job on the CA host, the responders behind
nginx on both publishers (issue 13 parts 5 and 7).

Certificates are issued on the CA host's HSM key; its OCSP job runs as its cron entry does (job, then the store's
snapshot); each publisher runs its pull unit's commands as the timer would and its reload unit (the path unit would
start it); ``openssl ocsp`` asks both publishers through nginx from the client namespace. The test hosts have no
systemd as PID 1: the units are checked with ``systemd-analyze verify`` and their ``ExecStart`` lines run directly,
and the responders run from their init scripts, with the units' command line.
"""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from .conftest import Lab, PlaybookRun
from .test_publication import publish_everywhere, run_unit

pytestmark = pytest.mark.infra

CA = "qualified"
CA_USER = "ceremony-ca"
PUBLISHERS = ("publisher", "publisher2")
SUITE_PYTHON = "/opt/ceremony-suite/venv/bin/python"
OCSP_HOST = "ocsp.test.scse.ml"
OCSP_PATH = "/qualified"
SERVED = f"/var/lib/ceremony-ocsp/{CA}.sqlite3"
INCOMING = f"/var/lib/ceremony-publish/incoming/{CA}.ocsp.sqlite3"
SNAPSHOT = f"/var/lib/ceremony/crl/{CA}.ocsp.sqlite3"
SIGNER_UNITS = (f"ceremony-ocsp-sign@{CA}.service", f"ceremony-ocsp-sign@{CA}.timer",
                f"ceremony-ocsp-signer@{CA}.service", f"ceremony-ocsp-signer@{CA}.timer")
PUBLISHER_UNITS = (f"ceremony-ocsp-pull-{CA}.service", f"ceremony-ocsp-pull-{CA}.timer",
                   f"ceremony-ocsp-reload-{CA}.path", f"ceremony-ocsp-reload-{CA}.service",
                   f"ceremony-ocsp-{CA}.service")

ISSUE = '''
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
with Registry.open("/var/lib/ceremony/registry/registry.sqlite3") as registry:
    for n, given in enumerate(("Oumar", "Fanta")):
        subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "ML"),
                             x509.NameAttribute(NameOID.GIVEN_NAME, given),
                             x509.NameAttribute(NameOID.SURNAME, "Diarra"),
                             x509.NameAttribute(NameOID.SERIAL_NUMBER, f"IDCML-55500{n}"),
                             x509.NameAttribute(NameOID.COMMON_NAME, f"{given} Diarra")])
        csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(
            ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
        work = out / given
        work.mkdir()
        (work / "ee.csr.pem").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
        issued = issue_certificate(defn, "qualified", "qes-natural-person", work / "ee.csr.pem", work, registry,
                                   ConsoleRecorder(rehearsal=rehearsal), issuer_cert_path=issuer,
                                   rehearsal=rehearsal, pin_file="/etc/ceremony/qualified.pin", interactive=False)
        print(f"ISSUED {issued.serial:x} {issued.pem_path}")
'''

REVOKE = '''
import sys
from ceremony.ca.registry import Registry
with Registry.open("/var/lib/ceremony/registry/registry.sqlite3") as registry:
    assert registry.revoke(int(sys.argv[2], 16), "keyCompromise")
'''


def as_ca(lab: Lab, command: str):  # -> testinfra CommandResult
    return lab.host("subca").run("su -s /bin/sh %s -c %s", CA_USER, command)


def run_script(lab: Lab, text: str, *args: str):  # -> testinfra CommandResult
    subca = lab.host("subca")
    work = subca.check_output("mktemp -d /tmp/ocsp.XXXXXX")
    subca.check_output("chown %s %s", CA_USER, work)
    (lab.th.host_root("subca") / work.lstrip("/") / "script.py").write_text(text)
    return as_ca(lab, f"SOFTHSM2_CONF=/etc/softhsm/softhsm2.conf {SUITE_PYTHON} {work}/script.py {work} "
                 + " ".join(args))


def signed(job_output: str) -> int:
    return int(re.search(r"(\d+) response\(s\) signed", job_output).group(1))  # type: ignore[union-attr]


def ocsp_job(lab: Lab) -> str:
    """The CA host's OCSP job, as its cron entry runs it (sign, then snapshot the store)."""
    cron = lab.host("subca").file(f"/etc/cron.d/ceremony-ocsp-sign-{CA}").content_string.strip().splitlines()[-1]
    job = as_ca(lab, cron.split(f" {CA_USER} ", 1)[1])
    assert job.rc == 0, job.stdout + job.stderr
    return job.stdout


def pull_everywhere(lab: Lab) -> list[str]:
    """Each publisher's pull unit, then its reload unit (the path unit would start it)."""
    said = []
    for name in PUBLISHERS:
        host = lab.host(name)
        results = run_unit(host, f"ceremony-ocsp-pull-{CA}.service")
        assert [r.rc for r in results] == [0, 0], (name, [r.stderr for r in results])
        reload = run_unit(host, f"ceremony-ocsp-reload-{CA}.service")
        assert all(r.rc == 0 for r in reload), (name, [r.stderr for r in reload])
        said.append(results[1].stdout)
    return said


def ask(lab: Lab, publisher: str, cert: Path, tmp: Path) -> str:
    """``openssl ocsp -issuer … -cert … -url http://<publisher>/<path> -CAfile root`` from the client namespace,
    with the OCSP host name of the definition (nginx's server_name) in the Host header."""
    proc = subprocess.run(["ip", "netns", "exec", lab.th.CLIENT_NS, "openssl", "ocsp", "-issuer",
                           str(lab.exchange / f"{CA}.crt.pem"), "-cert", str(cert), "-url",
                           f"http://{lab.th.PUBLISHERS_FROM_CLIENT[publisher]}{OCSP_PATH}", "-header",
                           f"Host={OCSP_HOST}", "-CAfile", str(lab.exchange / "root.crt.pem"), "-no_nonce"],
                          capture_output=True, text=True, check=False, timeout=30)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Response verify OK" in out, out
    return out


def ask_until(lab: Lab, publisher: str, cert: Path, tmp: Path, status: str) -> str:
    """``ask`` until the answer is ``status``, for a few seconds: after the reload (SIGHUP) gunicorn's old workers
    finish the requests they hold while the new ones, which read the new store, start."""
    deadline = time.monotonic() + 15
    while True:
        out = ask(lab, publisher, cert, tmp)
        if status_of(out, cert) == status or time.monotonic() > deadline:
            return out
        time.sleep(0.5)


def status_of(out: str, cert: Path) -> str:
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith(f"{cert}:"))


@pytest.fixture(scope="module")
def issued(converged: PlaybookRun, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Two certificates issued on the CA host, signed for by the job, pulled by both publishers."""
    tmp = tmp_path_factory.mktemp("ocsp-hosts")
    issue = run_script(lab, ISSUE)
    assert issue.rc == 0, issue.stdout[-3000:] + issue.stderr[-3000:]
    certs = []
    for line in [line for line in issue.stdout.splitlines() if line.startswith("ISSUED ")]:
        serial_hex, pem_path = line.split()[1:]
        path = tmp / f"{serial_hex}.pem"
        path.write_text(lab.host("subca").file(pem_path).content_string)
        certs.append((serial_hex, path))
    assert len(certs) == 2
    assert signed(ocsp_job(lab)) >= 4  # two certificates, two CertID hashes each
    said = pull_everywhere(lab)
    assert all(" installed: " in s for s in said), said
    return {"tmp": tmp, "certs": certs}


def test_units_verify_and_cron_runs_the_same_commands(converged: PlaybookRun, lab: Lab) -> None:
    subca = lab.host("subca")
    verify = subca.run("systemd-analyze verify " + " ".join(f"/etc/systemd/system/{u}" for u in SIGNER_UNITS))
    assert verify.rc == 0 and verify.stderr.strip() == "", verify.stderr
    service = subca.file(f"/etc/systemd/system/ceremony-ocsp-sign@{CA}.service").content_string
    crl_service = subca.file(f"/etc/systemd/system/ceremony-crl-sign@{CA}.service").content_string
    sandbox = [line for line in crl_service.splitlines() if line.startswith(("Protect", "Restrict", "NoNew",
                                                                             "CapabilityBoundingSet", "Private"))]
    assert all(line in service.splitlines() for line in sandbox)
    execs = [line.split("=", 1)[1] for line in service.splitlines() if line.startswith("ExecStart=")]
    assert "--latch-dir /var/lib/ceremony/crl" in execs[0] and "snapshot" in execs[1]
    cron = subca.file(f"/etc/cron.d/ceremony-ocsp-sign-{CA}").content_string
    assert all(e in cron for e in execs)
    assert subca.file(f"/etc/cron.d/ceremony-ocsp-signer-{CA}").exists
    # The signer certificate was made at provisioning through the recorded ceremony: its transcript is there.
    assert subca.file(f"/var/lib/ceremony/{CA}/{CA}.ocsp.crt.pem").is_file
    transcripts = subca.check_output(f"ls /var/lib/ceremony/{CA}/transcripts")
    assert "ocsp-signer-certification" in transcripts
    renewal = as_ca(lab, cron_command(subca, f"ceremony-ocsp-signer-{CA}"))
    assert renewal.rc == 0 and "nothing to do" in renewal.stdout, renewal.stdout + renewal.stderr
    for name in PUBLISHERS:
        host = lab.host(name)
        verify = host.run("systemd-analyze verify " + " ".join(f"/etc/systemd/system/{u}" for u in PUBLISHER_UNITS))
        assert verify.rc == 0 and verify.stderr.strip() == "", (name, verify.stderr)
        unit = host.file(f"/etc/systemd/system/ceremony-ocsp-{CA}.service").content_string
        gunicorn = next(line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart="))
        assert "--bind 127.0.0.1:8080" in gunicorn and "'ceremony.ocsp.responder:create_app()'" in gunicorn
        # The init script starts the same command line, as the same user, with the same environment.
        init = host.file(f"/etc/init.d/ceremony-ocsp-{CA}").content_string
        assert gunicorn.split(" ", 1)[1] in init and f"CEREMONY_OCSP_STORE={SERVED}" in init
        # Enabled at boot without systemd: update-rc.d's start links in the runlevels of the script's header.
        links = host.run("ls /etc/rc2.d /etc/rc3.d /etc/rc4.d /etc/rc5.d /etc/rc0.d /etc/rc6.d").stdout.split()
        assert sum(bool(re.fullmatch(rf"S\d\dceremony-ocsp-{CA}", n)) for n in links) == 4, (name, links)
        assert sum(bool(re.fullmatch(rf"K\d\dceremony-ocsp-{CA}", n)) for n in links) == 2, (name, links)
        assert host.file(f"/etc/rc2.d/{next(n for n in links if n.startswith('S') and n.endswith(CA))}").linked_to \
            == f"/etc/init.d/ceremony-ocsp-{CA}"


def cron_command(host, cron_file: str) -> str:  # host: testinfra.host.Host
    line = host.file(f"/etc/cron.d/{cron_file}").content_string.strip().splitlines()[-1]
    return line.split(f" {CA_USER} ", 1)[1]


def test_responders_hold_no_key_and_listen_on_loopback_only(issued: dict[str, object], lab: Lab) -> None:
    for name in PUBLISHERS:
        host = lab.host(name)
        assert host.run("ls /etc/ceremony/*.pin").rc != 0
        # No token (the image carries SoftHSM's package, never a token here) and no PIN variable anywhere.
        assert host.run("ls -A /var/lib/softhsm/tokens").stdout.strip() == ""
        found = host.run("grep -rl -e 'PRIVATE KEY' /var/lib/ceremony-ocsp /etc/ceremony-publish "
                         "--exclude-dir=tls")
        assert found.stdout.strip() == "", found.stdout
        pid = host.file(f"/run/ceremony-ocsp-{CA}/gunicorn.pid").content_string.strip()
        uid = next(line.split()[1] for line in host.file(f"/proc/{pid}/status").content_string.splitlines()
                   if line.startswith("Uid:"))
        assert uid == host.check_output("id -u ceremony-ocsp")
        environ = host.file(f"/proc/{pid}/environ").content_string.split("\0")
        assert not [v for v in environ if "PIN" in v.split("=", 1)[0] or v.startswith("SOFTHSM2_CONF")]
        # Listening sockets on 8080 (0x1F90): loopback only (0100007F), none on a wildcard or IPv6 address.
        sockets = host.run("cat /proc/net/tcp /proc/net/tcp6 2>/dev/null").stdout.splitlines()
        listeners = [fields[1] for fields in (line.split() for line in sockets)
                     if len(fields) > 3 and fields[3] == "0A" and fields[1].endswith(":1F90")]
        assert listeners == ["0100007F:1F90"], listeners


def test_good_then_revoked_on_both_publishers_through_nginx(issued: dict[str, object], lab: Lab) -> None:
    tmp, certs = issued["tmp"], issued["certs"]
    assert isinstance(tmp, Path) and isinstance(certs, list)
    (good_serial, good), (revoked_serial, revoked) = certs
    for name in PUBLISHERS:
        for cert in (good, revoked):
            assert status_of(ask(lab, name, cert, tmp), cert) == "good"
    # A revocation on the CA host, the job, the pull: both publishers answer revoked, with the reason.
    revoke = run_script(lab, REVOKE, revoked_serial)
    assert revoke.rc == 0, revoke.stdout + revoke.stderr
    assert signed(ocsp_job(lab)) == 2  # the revoked certificate's responses, for both CertID hashes
    assert all(" installed: " in s for s in pull_everywhere(lab))
    for name in PUBLISHERS:
        out = ask_until(lab, name, revoked, tmp, "revoked")
        assert status_of(out, revoked) == "revoked" and "Reason: keyCompromise" in out, out
        assert status_of(ask(lab, name, good, tmp), good) == "good"
    # The CRL job and the CRL pulls too, as their timers would: the hosts stay as a playbook run leaves them.
    crl = cron_command(lab.host("subca"), f"ceremony-crl-sign-{CA}")
    assert as_ca(lab, crl).rc == 0
    assert all(r.rc == 0 for results in publish_everywhere(lab) for r in results)
    # GET with the base64 request in the path, through nginx, as RFC 6960 A.1 allows.
    cert = x509.load_pem_x509_certificate(revoked.read_bytes())
    issuer = x509.load_pem_x509_certificate((lab.exchange / f"{CA}.crt.pem").read_bytes())
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256()).build()
    encoded = urllib.parse.quote(base64.b64encode(request.public_bytes(Encoding.DER)), safe="")
    body = tmp / "get.der"
    proc = subprocess.run(["ip", "netns", "exec", lab.th.CLIENT_NS, "curl", "-sS", "--max-time", "5", "-H",
                           f"Host: {OCSP_HOST}", "-o", str(body), "-w", "%{http_code} %{content_type}",
                           f"http://{lab.th.PUBLISHERS_FROM_CLIENT['publisher2']}{OCSP_PATH}/{encoded}"],
                          capture_output=True, text=True, check=False)
    assert proc.stdout == "200 application/ocsp-response", proc.stdout + proc.stderr
    answer = ocsp.load_der_ocsp_response(body.read_bytes())
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED and answer.serial_number == cert.serial_number
    assert good_serial != revoked_serial


def test_the_probe_asks_both_responders_as_a_relying_party(issued: dict[str, object], lab: Lab) -> None:
    """The probe's cron command as installed on the CA host, with the OCSP URL and a certificate the CA issued (what
    monitoring_crl_probe_ocsp_cert adds): each publisher's responder answers, signed for the CA, in force."""
    certs = issued["certs"]
    assert isinstance(certs, list)
    serial_hex, good = certs[0]
    subca = lab.host("subca")
    copy = lab.th.host_root("subca") / "tmp" / "ocsp-probe.crt.pem"
    copy.write_bytes(good.read_bytes())
    copy.chmod(0o644)
    line = subca.file(f"/etc/cron.d/ceremony-crl-probe-{CA}").content_string.strip().splitlines()[-1]
    user, command = line.split(None, 6)[5:]
    url = f"http://{OCSP_HOST}{OCSP_PATH}"
    run = subca.run("su -s /bin/sh %s -c %s", user, f"{command} --ocsp-url {url} --ocsp-cert /tmp/ocsp-probe.crt.pem")
    assert run.rc == 0, run.stdout + run.stderr
    answers = [x for x in run.stdout.splitlines() if x.startswith(f"OCSP {url} from ")]
    assert len(answers) == 2 and all(f"serial {int(serial_hex, 16):x} " in x and "signature OK" in x
                                     for x in answers), run.stdout
    text = subca.file(f"/var/lib/prometheus/node-exporter/ceremony_crl_probe_{CA}.prom").content_string
    for address in ("203.0.113.14", "203.0.113.18"):
        assert f'x509_ocsp_probe_success{{ca="{CA}",url="{url}",publisher="{address}"}} 1' in text, text
    copy.unlink()


def test_a_corrupt_or_foreign_snapshot_is_refused_and_the_served_store_stays(issued: dict[str, object],
                                                                               lab: Lab) -> None:
    tmp, certs = issued["tmp"], issued["certs"]
    assert isinstance(tmp, Path) and isinstance(certs, list)
    host = lab.host("publisher")
    served = host.file(SERVED).sha256sum
    user = "ceremony-publish"
    text = host.file(f"/etc/systemd/system/ceremony-ocsp-pull-{CA}.service").content_string
    commands = [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ExecStart=")]
    foreign = ("import sys; from ceremony.ocsp.store import ResponseStore; "
               "ResponseStore.create(sys.argv[1], 'qualified', '00' * 32).close()")
    for bad in (f"head -c 8192 /dev/urandom > {INCOMING}.new && mv {INCOMING}.new {INCOMING}",
                f"rm -f {INCOMING} && {SUITE_PYTHON} -c \"{foreign}\" {INCOMING}"):
        assert host.run("su -s /bin/sh %s -c %s", user, bad).rc == 0
        refused = host.run("su -s /bin/sh %s -c %s", user, commands[1])
        assert refused.rc != 0 and refused.stderr.startswith("error: ") and "left as it was" in refused.stderr, \
            refused.stderr
        assert host.file(SERVED).sha256sum == served
        assert status_of(ask(lab, "publisher", certs[0][1], tmp), certs[0][1]) == "good"
    # The next pull brings the signer's snapshot again, and it is served (left so: a playbook run changes nothing).
    said = pull_everywhere(lab)
    assert " installed: " in said[0] and " unchanged: " in said[1], said
    assert host.file(SERVED).sha256sum == hashlib.sha256(
        (lab.th.host_root("subca") / SNAPSHOT.lstrip("/")).read_bytes()).hexdigest()
