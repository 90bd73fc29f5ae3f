"""Life-cycle ceremonies on the converged hosts (``conftest.converged``), in the order an operator meets them.

A change of the token's user PIN (docs/provisioning.md, "Changing the CA token's user PIN"): C_SetPIN on the CA host,
the inventory's PIN changed, and ``crl.yml`` rewrites the job's 0600 PIN file and logs in with it.

A re-key: its key ceremony at the CA host's terminal (here the engine's ``rekey_key_ceremony`` as the CA user with the
job's 0600 PIN file, what ``invoke ceremony.rekey-subordinate`` runs), then the playbooks in the order of
docs/provisioning.md, "After a re-key (or a renewal)": ``subordinate_ca.yml`` carries the CSR and public key of
generation 2 to the exchange directory, ``root_ceremony.yml`` certifies it at the offline root (a recorded ceremony,
its transcript verified from the root) and carries ``qualified.g2.crt.pem`` out; with a later end in the workspace's
definition the next run renews the new key (``qualified.g3.crt.pem``), and a run after that changes nothing.
(Installing the certificates on the CA host is the role's earlier work, left out for time.)

The CA's termination (docs/provisioning.md, "Terminating a subordinate CA"): ``crl.yml`` with
``subordinate_ca_terminated`` stops the CRL and OCSP jobs for good (cron entries gone, units masked, the
``ceremony_ca_terminated`` metric for the alert rules); a final CRL signed by the CA key (nextUpdate 99991231235959Z,
what the termination ceremony writes in ``termination/<ca>/``) is then published in place of the last one, a second
run changes nothing, both publishers pull it and serve it to the relying party; a run without the variable is
refused, the jobs staying stopped. (The termination ceremony itself is not run here: it refuses a re-keyed CA, and the
CA host's layout is not its output directory; tests/test_termination.py runs it.)

After the re-key, the runs that follow it (``subordinate_ca.yml``, ``crl.yml``, ``publish.yml``) give each key its OCSP
service (docs/ocsp.md, "After a subordinate re-key"): ``openssl ocsp`` from the client namespace gets "Response verify
OK" at the first URL for a certificate of the first key and at ``.g2`` for one of the new key, good, then revoked,
each response signed by the delegated signer its own key certified; the termination then stops both keys' OCSP jobs.

This module re-keys and terminates the shared CA: it runs after every other module of the directory
(``conftest.LAST_MODULES``), its tests in file order. Each step prints its time (``-s``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from cryptography.x509 import ocsp

from ceremony.hsm.keys import spki_sha256
from ceremony.x509.files import read_certificate

from .conftest import REPO, VENV_BIN, Lab, PlaybookRun
from .test_ocsp_hosts import PUBLISHERS, as_ca, run_script, signed, status_of
from .test_publication import fetch_both, publish_everywhere, run_unit

pytestmark = pytest.mark.infra

CA = "qualified"
CA_USER = "ceremony-ca"
SUITE_PYTHON = "/opt/ceremony-suite/venv/bin/python"
CA_DIR = f"/var/lib/ceremony/{CA}"
CA_END = "not_after: 2036-01-01T00:00:00Z"  # cas.qualified.validity in inventory/testing/pki.yml
PIN_VARIABLE = "CEREMONY_QUALIFIED_PIN"  # cas.qualified.hsm.pin_env: the testing inventory's vault stand-in

def ran_changed(run: PlaybookRun, task: str) -> bool:
    """Whether the task of that name reported a change in the run."""
    return any(header.startswith(f"TASK [{task}]") for header in run.changed_tasks())


def step(started: float, what: str) -> float:
    now = time.monotonic()
    print(f"  {what}: {now - started:.1f} s")
    return now


# What `invoke ceremony.rekey-subordinate --ca qualified --out /var/lib/ceremony/qualified --pin-file …` runs (the
# task is not installed on the hosts, the engine is): a rehearsal on the testing definition, its transcript sealed.
REKEY = f'''
from pathlib import Path
from ceremony.ceremonies.rekey import REKEY_KEY, rekey_key_ceremony
from ceremony.definition.model import load_definition
from ceremony.transcript.recording import recorded
defn = load_definition("/etc/ceremony/pki.yml")
with recorded(REKEY_KEY, defn, Path("{CA_DIR}"), rehearsal=True, reports=False) as rec:
    result = rekey_key_ceremony(defn, "{CA}", "{CA_DIR}", rec, rehearsal=True,
                                pin_file="/etc/ceremony/{CA}.pin", interactive=False)
print("generation", result.generation, result.key_spki_sha256)
'''


# The PIN change at the host's terminal (C_SetPIN with the token's current PIN, as `ceremony.change-pin` ends, or the
# HSM vendor's tool for a PIN that is not split): the current PIN from the job's file, the new one from a 0600 file.
CHANGE_PIN = f'''
import sys
from pathlib import Path
from ceremony.definition.model import load_definition
from ceremony.hsm.pins import PinSource
from ceremony.hsm.session import open_session
ca = load_definition("/etc/ceremony/pki.yml").model.cas["{CA}"]
old = Path("/etc/ceremony/{CA}.pin").read_text().strip()
new = Path(sys.argv[1]).read_text().strip()
with open_session(ca.hsm, PinSource(file="/etc/ceremony/{CA}.pin", interactive=False)) as session:
    session.set_pin(old, new)
Path(sys.argv[1]).unlink()
print("changed")
'''


# OCSP per key after the re-key (docs/ocsp.md, "After a subordinate re-key"): key generation 1 answers at the first
# URL, key generation 2 (certificates qualified.g2 and its renewal qualified.g3) at ``.g2``.
OCSP_HOST = "ocsp.test.scse.ml"
PATHS = {1: "/qualified", 2: "/qualified.g2"}
STEMS = {1: CA, 2: f"{CA}.g2"}
UNIT_STEMS = {1: CA, 2: f"{CA}-g2"}
#: what the tests of this module hand to the next (they run in file order)
STATE: dict[str, object] = {}

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



def test_after_a_pin_change_the_vault_rewrites_the_jobs_pin_file_checked_by_a_login(converged: PlaybookRun,
                                                                                   lab: Lab) -> None:
    started = time.monotonic()
    subca = lab.host("subca")
    new_pin = secrets.token_hex(8)
    handover = os.open(lab.th.host_root("subca") / "tmp" / "new-pin", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(handover, "w") as stream:
        stream.write(new_pin + "\n")
    subca.check_output("chown %s /tmp/new-pin", CA_USER)
    change = subca.run("runuser -u %s -- env SOFTHSM2_CONF=/etc/softhsm/softhsm2.conf %s -c %s /tmp/new-pin",
                       CA_USER, SUITE_PYTHON, CHANGE_PIN)
    assert change.rc == 0 and "changed" in change.stdout, change.stdout + change.stderr

    lab.env[PIN_VARIABLE] = new_pin  # the vault's new value
    rewritten = lab.playbook("crl.yml", "--limit", "subca")
    assert rewritten.returncode == 0, rewritten.output[-6000:]
    assert ran_changed(rewritten, "crl_signer : PIN file of the job, readable by the CA user only")
    assert "ok: [subca]" in rewritten.output.split("TASK [crl_signer : The token accepts the PIN just written to the "
                                                   "job's file]")[1].split("TASK [")[0]
    pin = subca.file(f"/etc/ceremony/{CA}.pin")
    assert pin.mode == 0o600 and pin.user == CA_USER and pin.content_string.strip() == new_pin
    assert new_pin not in rewritten.output
    print(f"PIN change on the hosts: {time.monotonic() - started:.1f} s")


def test_a_rekey_is_certified_and_a_renewal_made_at_the_root_once(converged: PlaybookRun, lab: Lab,
                                                                   tmp_path: Path) -> None:
    started = clock = time.monotonic()
    STATE["tmp"] = tmp_path
    STATE["before"] = before = issue_one(lab, tmp_path, "before")  # a certificate of the first key, for OCSP below
    assert before[2] == f"{CA}.crt.pem"
    subca = lab.host("subca")
    rekey = subca.run("runuser -u %s -- env SOFTHSM2_CONF=/etc/softhsm/softhsm2.conf %s -c %s", CA_USER,
                      SUITE_PYTHON, REKEY)
    assert rekey.rc == 0 and "generation 2" in rekey.stdout, rekey.stdout + rekey.stderr
    new_key = rekey.stdout.split()[-1]
    clock = step(clock, "re-key ceremony on the CA host")

    carried = lab.playbook("subordinate_ca.yml", "--limit", "subca")
    assert carried.returncode == 0, carried.output[-6000:]
    for name in (f"{CA}.g2.csr.pem", f"{CA}.g2.pub.pem"):
        assert (lab.exchange / name).is_file(), name
    assert not (lab.exchange / f"{CA}.g2.crt.pem").exists()
    clock = step(clock, "subordinate_ca.yml")

    certified = lab.playbook("root_ceremony.yml")
    assert certified.returncode == 0, certified.output[-6000:]
    assert ran_changed(certified, "Certify the re-keys of the subordinate CAs"), certified.changed_tasks()
    # the definition gives the re-key's certificate its end: nothing to renew
    assert not ran_changed(certified, "Renew the subordinate CA certificates whose definition gives a later end "
                                      "(same key)"), certified.changed_tasks()
    clock = step(clock, "root_ceremony.yml")
    cert = read_certificate(lab.exchange / f"{CA}.g2.crt.pem", "generation 2")
    public = load_pem_public_key((lab.exchange / f"{CA}.g2.pub.pem").read_bytes())
    assert spki_sha256(cert.public_key()) == spki_sha256(public) == new_key
    chain = subprocess.run(["openssl", "verify", "-CAfile", str(lab.exchange / "root.crt.pem"),
                            str(lab.exchange / f"{CA}.g2.crt.pem")], capture_output=True, text=True, check=False)
    assert chain.returncode == 0, chain.stdout + chain.stderr

    # The certification is a recorded ceremony at the root: its transcript verifies from the root certificate.
    workspace = tmp_path / "out"
    shutil.copytree(lab.th.host_root("offline-root") / "srv" / "ceremony" / "out", workspace)
    recorded = sorted((workspace / "transcripts").glob("subordinate-rekey-certification-*.jsonl"))
    assert len(recorded) == 1, recorded
    verify = subprocess.run([str(VENV_BIN / "invoke"), "audit.verify", str(recorded[0]), "--trust",
                             str(workspace / "root.crt.pem"), "--rehearsal"], cwd=REPO, capture_output=True,
                            text=True, check=False)
    assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr[-2000:]
    clock = step(clock, "checks")

    # A renewal when the definition asks for one: the workspace's definition gives the CA a later end, and the next
    # run renews the re-key's key (generation 3, from qualified.g2.pub.pem the playbook brought into the workspace).
    definition = lab.th.host_root("offline-root") / "srv" / "ceremony" / "pki.yml"
    text = definition.read_text()
    assert text.count(CA_END) == 1
    definition.write_text(text.replace(CA_END, "not_after: 2040-01-01T00:00:00Z"))
    renewed = lab.playbook("root_ceremony.yml")
    assert renewed.returncode == 0, renewed.output[-6000:]
    assert ran_changed(renewed, "Renew the subordinate CA certificates whose definition gives a later end (same key)")
    assert not ran_changed(renewed, "Certify the re-keys of the subordinate CAs"), renewed.changed_tasks()
    third = read_certificate(lab.exchange / f"{CA}.g3.crt.pem", "generation 3")
    assert spki_sha256(third.public_key()) == new_key and third.not_valid_after_utc.year == 2040
    clock = step(clock, "root_ceremony.yml with a later end in the definition")

    again = lab.playbook("root_ceremony.yml")
    assert again.returncode == 0, again.output[-6000:]
    assert again.changed()["offline-root"] == 0, again.changed_tasks()
    assert not (lab.exchange / f"{CA}.g4.crt.pem").exists()
    step(clock, "root_ceremony.yml again")
    print(f"re-key and renewal on the hosts: {time.monotonic() - started:.1f} s")

def test_after_the_rekey_each_key_answers_ocsp_at_its_own_url_with_its_own_signer(converged: PlaybookRun,
                                                                                    lab: Lab) -> None:
    """The runs after a re-key (docs/provisioning.md): subordinate_ca.yml installs the new certificates on the CA host,
    crl.yml gives the new key its signer, store, job and timers, publish.yml a responder per key on each publisher;
    then ``openssl ocsp`` from the client namespace, at each key's URL, good then revoked, each response signed by
    the signer its own key certified."""
    if "before" not in STATE or not (lab.exchange / f"{CA}.g2.crt.pem").is_file():
        pytest.skip("the re-key above did not complete")
    tmp = STATE["tmp"]
    assert isinstance(tmp, Path)
    seconds = {}
    for playbook in ("subordinate_ca.yml", "crl.yml", "publish.yml"):
        t = time.monotonic()
        run = lab.playbook(playbook)
        (tmp / f"{playbook}.log").write_text(run.output)
        assert run.returncode == 0, (playbook, tmp / f"{playbook}.log", failures(run.output))
        seconds[playbook] = round(time.monotonic() - t, 1)
    after = issue_one(lab, tmp, "after")
    assert after[2] in (f"{CA}.g2.crt.pem", f"{CA}.g3.crt.pem"), after  # the re-key's key (renewed: generation 3)
    certs = cast(dict[int, tuple[str, Path, str]], {1: STATE["before"], 2: after})
    t0 = time.monotonic()
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
    print(f"\nOCSP per key on the hosts: {seconds}, checks {round(time.monotonic() - t0, 1)} s")


# A final CRL as the termination ceremony signs it (the CA key, through the HSM; the last CRL's entries and
# extensions, the next number, nextUpdate 99991231235959Z), written where the ceremony writes its copy.
FINAL_CRL = f'''
import datetime as dt
from pathlib import Path
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from ceremony.definition.model import load_definition
from ceremony.hsm.pins import PinSource
from ceremony.hsm.session import open_session
from ceremony.hsm.signers import signing_key
ca = load_definition("/etc/ceremony/pki.yml").model.cas["{CA}"]
cert = x509.load_pem_x509_certificate(Path("{CA_DIR}/{CA}.crt.pem").read_bytes())
last = x509.load_der_x509_crl(Path("/var/lib/ceremony/crl/{CA}.crl").read_bytes())
number = last.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
builder = (x509.CertificateRevocationListBuilder().issuer_name(cert.subject)
           .last_update(dt.datetime.now(dt.UTC).replace(microsecond=0))
           .next_update(dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)))
for ext in last.extensions:
    value = x509.CRLNumber(number) if isinstance(ext.value, x509.CRLNumber) else ext.value
    builder = builder.add_extension(value, ext.critical)
for entry in last:
    builder = builder.add_revoked_certificate(entry)
with open_session(ca.hsm, PinSource(file="/etc/ceremony/{CA}.pin", interactive=False), rw=False) as session:
    crl = builder.sign(signing_key(session, ca.hsm.key_label), hashes.SHA384())
folder = Path("{CA_DIR}/termination/{CA}")
folder.mkdir(parents=True, exist_ok=True)
(folder / "{CA}-final.crl").write_bytes(crl.public_bytes(serialization.Encoding.DER))
(folder / "{CA}-final.crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
print("final", number)
'''

TERMINATED = ("-e", json.dumps({"subordinate_ca_terminated": True}))
CRON_FILES = (f"/etc/cron.d/ceremony-crl-sign-{CA}", f"/etc/cron.d/ceremony-ocsp-sign-{CA}",
              f"/etc/cron.d/ceremony-ocsp-signer-{CA}",
              # the re-key's key (above): its own OCSP job and signer renewal, stopped with the first key's
              f"/etc/cron.d/ceremony-ocsp-sign-{CA}-g2", f"/etc/cron.d/ceremony-ocsp-signer-{CA}-g2")
MASKED = ("ceremony-crl-sign", "ceremony-ocsp-sign", "ceremony-ocsp-signer")


def test_a_terminated_cas_jobs_stop_for_good_and_its_final_crl_stays_served(converged: PlaybookRun, lab: Lab,
                                                                           tmp_path: Path) -> None:
    started = time.monotonic()
    subca = lab.host("subca")
    assert all(subca.file(path).exists for path in CRON_FILES)

    stopped = lab.playbook("crl.yml", "--limit", "subca", *TERMINATED)
    assert stopped.returncode == 0, stopped.output[-6000:]
    assert not any(subca.file(path).exists for path in CRON_FILES)
    for unit in MASKED:
        for kind in ("service", "timer"):
            masked = subca.file(f"/etc/systemd/system/{unit}@{CA}.{kind}")
            assert masked.is_symlink and masked.linked_to == "/dev/null", (unit, kind)
    for unit in MASKED[1:]:  # the OCSP units of the re-key's key
        for kind in ("service", "timer"):
            masked = subca.file(f"/etc/systemd/system/{unit}@{CA}-g2.{kind}")
            assert masked.is_symlink and masked.linked_to == "/dev/null", (unit, "g2", kind)
    metric = subca.file(f"/var/lib/prometheus/node-exporter/ceremony_ca_terminated_{CA}.prom").content_string
    assert f'ceremony_ca_terminated{{ca="{CA}"}} 1' in metric
    clock = step(started, "crl.yml, terminated")

    # The termination ceremony's final CRL: published in place of the last one, pulled, served.
    sign = subca.run("runuser -u %s -- env SOFTHSM2_CONF=/etc/softhsm/softhsm2.conf %s -c %s", CA_USER,
                     SUITE_PYTHON, FINAL_CRL)
    assert sign.rc == 0, sign.stdout + sign.stderr
    published = lab.playbook("crl.yml", "--limit", "subca", *TERMINATED)
    assert published.returncode == 0, published.output[-6000:]
    assert ran_changed(published, "crl_signer : The final CRL published in place of the last one (the publishers "
                                  "pull it from here)"), published.changed_tasks()
    clock = step(clock, "final CRL signed, crl.yml")
    again = lab.playbook("crl.yml", "--limit", "subca", *TERMINATED)
    assert again.returncode == 0 and again.changed()["subca"] == 0, again.changed_tasks()
    clock = step(clock, "crl.yml again")
    runs = publish_everywhere(lab)
    assert all(r.rc == 0 for run in runs for r in run), [r.stdout + r.stderr for run in runs for r in run]
    served = fetch_both(lab, f"/crl/{CA}.crl", tmp_path)
    assert all(a.status == 200 for a in served) and len({a.body for a in served}) == 1
    final = x509.load_der_x509_crl(served[0].body)
    assert final.next_update_utc is not None and final.next_update_utc.year == 9999
    assert final.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == int(sign.stdout.split()[-1])
    clock = step(clock, "pulled and served")

    # Without the variable the run stops before the job could start again.
    refused = lab.playbook("crl.yml", "--limit", "subca")
    assert refused.returncode != 0
    assert f"/var/lib/ceremony/crl/{CA}.crl is the final CRL of {CA} (nextUpdate 99991231235959Z)" in refused.output
    assert "nothing was changed" in refused.output
    assert not any(subca.file(path).exists for path in CRON_FILES)
    assert subca.file(f"/etc/systemd/system/ceremony-crl-sign@{CA}.timer").linked_to == "/dev/null"
    print(f"termination on the hosts: {time.monotonic() - started:.1f} s")
