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

This module re-keys and terminates the shared CA: it runs after every other module of the directory
(``conftest.RUN_LAST``), its tests in file order. Each step prints its time (``-s``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from ceremony.hsm.keys import spki_sha256
from ceremony.x509.files import read_certificate

from .conftest import REPO, VENV_BIN, Lab, PlaybookRun
from .test_publication import fetch_both, publish_everywhere

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
              f"/etc/cron.d/ceremony-ocsp-signer-{CA}")
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
