"""OCSP per key on the test hosts after a subordinate re-key (docs/ocsp.md, "After a subordinate re-key").

The re-key as docs/provisioning.md "After a re-key" walks it: the key ceremony on the CA host (the engine's
``rekey_key_ceremony``, as ``invoke ceremony.rekey-subordinate`` runs it, with its transcript), its CSR carried to the
offline root and certified there (``certify_rekey_ceremony``, as ``invoke ceremony.certify-rekey``), the certificate
carried back to the exchange directory, then ``subordinate_ca.yml``, ``crl.yml`` and ``publish.yml``. Afterwards
the CA host runs one signer, store, job and timers per key (role ocsp_signer) and each publisher one responder per
key behind nginx (role ocsp_responder): ``openssl ocsp`` from the client namespace gets "Response verify OK" for a
certificate of the first key at the first URL and for one of the new key at the ``.g2`` URL, good, then revoked
after a revocation and each key's job run, each response signed by its own key's delegated signer.

The hosts keep the second key afterwards: this module runs after every other one (``conftest.LAST_MODULES``).
Measured 2026-12-07 on the shared 2-CPU machine (7 min 38 s for the module alone, the hosts' start and converge
308 s of it): the re-key walk 112 s (issuance, key ceremony and certification 5.7 s, subordinate_ca.yml 19.1 s,
crl.yml 34.7 s, publish.yml 53.0 s), the OCSP checks 29.4 s.
The carrying of the CSR and certificate (the media) is done by copying files between the hosts' trees, and the two
ceremonies run as scripts on the hosts: root_ceremony.yml does not certify a re-key on this branch.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import cast

import pytest
from cryptography import x509
from cryptography.x509 import ocsp

from .conftest import Lab, PlaybookRun
from .test_ocsp_hosts import CA_USER, PUBLISHERS, SUITE_PYTHON, as_ca, run_script, signed, status_of
from .test_publication import run_unit

pytestmark = pytest.mark.infra

CA = "qualified"
CA_DIR = f"/var/lib/ceremony/{CA}"
ROOT_OUT = "/srv/ceremony/out"
OCSP_HOST = "ocsp.test.scse.ml"
PATHS = {1: "/qualified", 2: "/qualified.g2"}
STEMS = {1: CA, 2: f"{CA}.g2"}
UNIT_STEMS = {1: CA, 2: f"{CA}-g2"}

_PRELUDE = '''
import os, sys
from pathlib import Path
from cryptography import x509
from ceremony.common.display import make_console
from ceremony.definition.model import load_definition
from ceremony.transcript import chain as transcript
from ceremony.x509.profiles import subject_name
'''

REKEY = _PRELUDE + '''
from ceremony.ceremonies.rekey import REKEY_KEY, rekey_key_ceremony
out = Path("/var/lib/ceremony/qualified")
defn = load_definition("/etc/ceremony/pki.yml")
rehearsal = x509.load_pem_x509_certificate((out / "qualified.crt.pem").read_bytes()).subject == \\
    subject_name(defn.model.cas["qualified"].subject, True)
with transcript.open_transcript(out / "transcripts", REKEY_KEY, defn, rehearsal=rehearsal,
                                console=make_console(file=open(os.devnull, "w"))) as rec:
    rekey_key_ceremony(defn, "qualified", out, rec, rehearsal=rehearsal, pin_file="/etc/ceremony/qualified.pin",
                       interactive=False)
print("REKEYED", rec.path)
'''

CERTIFY = _PRELUDE + '''
from ceremony.ceremonies.rekey import REKEY_CERTIFY, certify_rekey_ceremony
out = Path("/srv/ceremony/out")
defn = load_definition("/srv/ceremony/pki.yml")
rehearsal = x509.load_pem_x509_certificate((out / "root.crt.pem").read_bytes()).subject == \\
    subject_name(defn.model.cas["root"].subject, True)
with transcript.open_transcript(out / "transcripts", REKEY_CERTIFY, defn, rehearsal=rehearsal,
                                console=make_console(file=open(os.devnull, "w"))) as rec:
    certify_rekey_ceremony(defn, "qualified", out, rec, rehearsal=rehearsal, csr_path=out / "qualified.g2.csr.pem",
                           pin_file=sys.argv[1], interactive=False)
print("CERTIFIED", rec.path)
'''

ISSUE_CURRENT = '''
import sys
from pathlib import Path
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ceremony.ca.generations import current_certificate_path
from ceremony.ca.registry import Registry
from ceremony.ceremonies.issuance import issue_certificate
from ceremony.definition.model import load_definition
from ceremony.transcript.recorder import ConsoleRecorder
from ceremony.x509.profiles import subject_name

out = Path(sys.argv[1])
defn = load_definition("/etc/ceremony/pki.yml")
issuer = current_certificate_path(Path("/var/lib/ceremony/qualified"), "qualified")
rehearsal = x509.load_pem_x509_certificate(issuer.read_bytes()).subject == \\
    subject_name(defn.model.cas["qualified"].subject, True)
subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "ML"), x509.NameAttribute(NameOID.GIVEN_NAME, "Awa"),
                     x509.NameAttribute(NameOID.SURNAME, "Traore"),
                     x509.NameAttribute(NameOID.SERIAL_NUMBER, "IDCML-777001"),
                     x509.NameAttribute(NameOID.COMMON_NAME, "Awa Traore")])
csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(ec.generate_private_key(ec.SECP256R1()),
                                                                         hashes.SHA256())
(out / "ee.csr.pem").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
with Registry.open("/var/lib/ceremony/registry/registry.sqlite3") as registry:
    issued = issue_certificate(defn, "qualified", "qes-natural-person", out / "ee.csr.pem", out, registry,
                               ConsoleRecorder(rehearsal=rehearsal), issuer_cert_path=issuer, rehearsal=rehearsal,
                               pin_file="/etc/ceremony/qualified.pin", interactive=False)
print(f"ISSUED {issued.serial:x} {issued.pem_path} {issuer.name}")
'''

REVOKE = '''
import sys
from ceremony.ca.registry import Registry
with Registry.open("/var/lib/ceremony/registry/registry.sqlite3") as registry:
    for serial in sys.argv[2:]:
        assert registry.revoke(int(serial, 16), "keyCompromise")
'''


def failures(output: str) -> str:
    """The failed tasks of a playbook's output, each with its header (pytest cuts a long message short)."""
    lines = output.splitlines()
    picked = [i for i, line in enumerate(lines) if line.startswith(("fatal:", "failed:", "ERROR!", "[ERROR]"))]
    return "\n".join("\n".join(lines[max(0, i - 3):i + 25]) for i in picked) or output[-3000:]


def issue_one(lab: Lab, tmp: Path, name: str) -> tuple[str, Path, str]:
    """One certificate issued on the CA host under its current certificate: (serial, local copy, issuer file)."""
    result = run_script(lab, ISSUE_CURRENT)
    assert result.rc == 0, result.stdout[-3000:] + result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("ISSUED "))
    serial, pem, issuer = line.split()[1:]
    local = tmp / f"{name}.pem"
    local.write_text(lab.host("subca").file(pem).content_string)
    return serial, local, issuer


def job(lab: Lab, m: int) -> str:
    """Key generation m's OCSP job, as its cron entry runs it (sign, then snapshot its store)."""
    cron = lab.host("subca").file(f"/etc/cron.d/ceremony-ocsp-sign-{UNIT_STEMS[m]}").content_string
    command = cron.strip().splitlines()[-1].split(f" {CA_USER} ", 1)[1]
    result = as_ca(lab, command)
    assert result.rc == 0, result.stdout + result.stderr
    return result.stdout


def pull(lab: Lab, m: int) -> None:
    """Key generation m's pull unit on each publisher, then its reload unit (the path unit would start it)."""
    for name in PUBLISHERS:
        host = lab.host(name)
        results = run_unit(host, f"ceremony-ocsp-pull-{UNIT_STEMS[m]}.service")
        assert [r.rc for r in results] == [0, 0], (name, m, [r.stderr for r in results])
        reload = run_unit(host, f"ceremony-ocsp-reload-{UNIT_STEMS[m]}.service")
        assert all(r.rc == 0 for r in reload), (name, m, [r.stderr for r in reload])


def ask(lab: Lab, publisher: str, m: int, cert: Path, tmp: Path) -> tuple[str, ocsp.OCSPResponse]:
    """``openssl ocsp`` from the client namespace at key generation m's URL, with that key's CA certificate."""
    respout = tmp / f"{publisher}-{m}-{cert.stem}.der"
    proc = subprocess.run(["ip", "netns", "exec", lab.th.CLIENT_NS, "openssl", "ocsp", "-issuer",
                           str(lab.exchange / f"{STEMS[m]}.crt.pem"), "-cert", str(cert), "-url",
                           f"http://{lab.th.PUBLISHERS_FROM_CLIENT[publisher]}{PATHS[m]}", "-header",
                           f"Host={OCSP_HOST}", "-CAfile", str(lab.exchange / "root.crt.pem"), "-no_nonce",
                           "-respout", str(respout)], capture_output=True, text=True, check=False, timeout=30)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Response verify OK" in out, (publisher, m, out)
    return out, ocsp.load_der_ocsp_response(respout.read_bytes())


def ask_until(lab: Lab, publisher: str, m: int, cert: Path, tmp: Path, status: str) -> tuple[str, ocsp.OCSPResponse]:
    """``ask`` until the answer is ``status`` (gunicorn's old workers finish their requests after the reload)."""
    deadline = time.monotonic() + 15
    while True:
        out, response = ask(lab, publisher, m, cert, tmp)
        if status_of(out, cert) == status or time.monotonic() > deadline:
            return out, response
        time.sleep(0.5)


@pytest.fixture(scope="module")
def rekeyed(converged: PlaybookRun, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A certificate of the first key, then the re-key walked through, then a certificate of the new key."""
    tmp = tmp_path_factory.mktemp("ocsp-rekey")
    started = time.monotonic()
    before = issue_one(lab, tmp, "before")
    assert before[2] == f"{CA}.crt.pem"
    # 1. the key ceremony on the CA host
    rekey = run_script(lab, REKEY)
    assert rekey.rc == 0, rekey.stdout[-3000:] + rekey.stderr[-3000:]
    subca_dir = lab.th.host_root("subca") / CA_DIR.lstrip("/")
    root_out = lab.th.host_root("offline-root") / ROOT_OUT.lstrip("/")
    # 2. its CSR on the media to the offline root, certified there; the certificate carried back
    shutil.copy(subca_dir / f"{CA}.g2.csr.pem", root_out / f"{CA}.g2.csr.pem")
    pin = root_out.parent / ".rekey-test.pin"
    pin.write_text(lab.env["CEREMONY_ROOT_PIN"])
    pin.chmod(0o600)
    try:
        root = lab.host("offline-root")
        script = root_out.parent / "certify-rekey.py"
        script.write_text(CERTIFY)
        certify = root.run("SOFTHSM2_CONF=/etc/softhsm/softhsm2.conf %s /srv/ceremony/certify-rekey.py %s",
                           SUITE_PYTHON, "/srv/ceremony/.rekey-test.pin")
        assert certify.rc == 0, certify.stdout[-3000:] + certify.stderr[-3000:]
    finally:
        pin.unlink()
        (root_out.parent / "certify-rekey.py").unlink(missing_ok=True)
    shutil.copy(root_out / f"{CA}.g2.crt.pem", lab.exchange / f"{CA}.g2.crt.pem")
    carried = time.monotonic()
    # 3. the playbooks after a re-key (docs/provisioning.md): the CA host, its jobs, the publishers
    runs = {}
    for playbook in ("subordinate_ca.yml", "crl.yml", "publish.yml"):
        t = time.monotonic()
        run = lab.playbook(playbook)
        (tmp / f"{playbook}.log").write_text(run.output)
        assert run.returncode == 0, (playbook, tmp / f"{playbook}.log", failures(run.output))
        runs[playbook] = round(time.monotonic() - t, 1)
    after = issue_one(lab, tmp, "after")
    assert after[2] == f"{CA}.g2.crt.pem"
    return {"tmp": tmp, "before": before, "after": after,
            "seconds": {"issue+rekey+certify": round(carried - started, 1), **runs}}


def test_each_key_answers_at_its_own_url_with_its_own_signer(rekeyed: dict[str, object], lab: Lab) -> None:
    t0 = time.monotonic()
    tmp = rekeyed["tmp"]
    assert isinstance(tmp, Path)
    certs = cast(dict[int, tuple[str, Path, str]], {1: rekeyed["before"], 2: rekeyed["after"]})
    subca = lab.host("subca")
    # the CA host: one store, signer, job and timers per key; the first key's as before
    for m in (1, 2):
        assert subca.file(f"/var/lib/ceremony/ocsp/{STEMS[m]}.sqlite3").is_file
        assert subca.file(f"{CA_DIR}/{STEMS[m]}.ocsp.crt.pem").is_file
        for unit in (f"ceremony-ocsp-sign@{UNIT_STEMS[m]}.service", f"ceremony-ocsp-signer@{UNIT_STEMS[m]}.timer"):
            assert subca.file(f"/etc/systemd/system/{unit}").is_file, unit
    service = subca.file(f"/etc/systemd/system/ceremony-ocsp-sign@{UNIT_STEMS[2]}.service").content_string
    assert f"--ca-cert {CA_DIR}/{CA}.g2.crt.pem" in service and f"--store /var/lib/ceremony/ocsp/{CA}.g2" in service
    signers = {m: x509.load_pem_x509_certificate(subca.file(f"{CA_DIR}/{STEMS[m]}.ocsp.crt.pem").content)
               for m in (1, 2)}
    issuers = {m: x509.load_pem_x509_certificate((lab.exchange / f"{STEMS[m]}.crt.pem").read_bytes()) for m in (1, 2)}
    for m in (1, 2):
        assert signed(job(lab, m)) >= 2  # its own certificate (two CertID hashes); the other key's are not its
        pull(lab, m)
    for m in (1, 2):
        cert = certs[m][1]
        for publisher in PUBLISHERS:
            out, response = ask_until(lab, publisher, m, cert, tmp, "good")
            assert status_of(out, cert) == "good", out
            # signed by the key's own delegated signer, which that key certified
            assert response.certificates[0] == signers[m]
            response.certificates[0].verify_directly_issued_by(issuers[m])
        # the other key's URL does not answer for it
        other = subprocess.run(["ip", "netns", "exec", lab.th.CLIENT_NS, "openssl", "ocsp", "-issuer",
                                str(lab.exchange / f"{STEMS[m]}.crt.pem"), "-cert", str(cert), "-url",
                                f"http://{lab.th.PUBLISHERS_FROM_CLIENT[PUBLISHERS[0]]}{PATHS[3 - m]}", "-header",
                                f"Host={OCSP_HOST}", "-no_nonce"], capture_output=True, text=True, check=False,
                               timeout=30)
        assert "unauthorized" in (other.stdout + other.stderr).lower(), other.stdout + other.stderr
    # the probe's cron command as installed, with one certificate of each key (monitoring_crl_probe_ocsp_cert and
    # monitoring_crl_probe_ocsp_certs add these): each asked at its key's URL through both publishers
    for m in (1, 2):
        copy = lab.th.host_root("subca") / "tmp" / f"ocsp-probe-{m}.crt.pem"
        copy.write_bytes(certs[m][1].read_bytes())
        copy.chmod(0o644)
    line = subca.file(f"/etc/cron.d/ceremony-crl-probe-{CA}").content_string.strip().splitlines()[-1]
    user, command = line.split(None, 6)[5:]
    url = f"http://{OCSP_HOST}{PATHS[1]}"
    probe = subca.run("su -s /bin/sh %s -c %s", user, f"{command} --ocsp-url {url} --ocsp-cert "
                      "/tmp/ocsp-probe-1.crt.pem --ocsp-cert /tmp/ocsp-probe-2.crt.pem")
    # (its CRL part may report the new key's CRL as not yet pulled: only the OCSP answers are this test's)
    assert not [x for x in probe.stderr.splitlines() if x.startswith("error: OCSP")], probe.stdout + probe.stderr
    text = subca.file(f"/var/lib/prometheus/node-exporter/ceremony_crl_probe_{CA}.prom").content_string
    for m in (1, 2):
        answers = [x for x in probe.stdout.splitlines() if x.startswith(f"OCSP http://{OCSP_HOST}{PATHS[m]} from ")]
        assert len(answers) == 2 and all(f"serial {int(certs[m][0], 16):x} " in x for x in answers), probe.stdout
        for address in ("203.0.113.14", "203.0.113.18"):
            assert (f'x509_ocsp_probe_success{{ca="{CA}",url="http://{OCSP_HOST}{PATHS[m]}",publisher="{address}"}} 1'
                    in text), text
    # a revocation of each, each key's job, each key's pull: revoked at each URL
    revoke = run_script(lab, REVOKE, certs[1][0], certs[2][0])
    assert revoke.rc == 0, revoke.stdout + revoke.stderr
    for m in (1, 2):
        assert signed(job(lab, m)) >= 2
        pull(lab, m)
    for m in (1, 2):
        cert = certs[m][1]
        for publisher in PUBLISHERS:
            out, response = ask_until(lab, publisher, m, cert, tmp, "revoked")
            assert status_of(out, cert) == "revoked" and "Reason: keyCompromise" in out, out
            assert response.certificates[0] == signers[m]
    print(f"\nOCSP per key on the hosts: {rekeyed['seconds']}, checks {round(time.monotonic() - t0, 1)} s")
