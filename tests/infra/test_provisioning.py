"""The Ansible provisioning on real throwaway Debian hosts: converge, idempotence, check mode, verify.

One set of hosts (see ``conftest.lab`` and ``conftest.converged``) serves every test here, in file order:
the full flow of ``site.yml`` (offline root, subordinate key and CSR, root ceremonies, certificate
installed, CRL job, publication), a second run that must change nothing, a check-mode run that must
change nothing, then testinfra checks of the hosts and refusals that must leave the HSM unchanged.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .conftest import FIRST_CHECK, REPO, VENV_BIN, Lab, PlaybookRun, infra_unavailable, load_testhosts

pytestmark = pytest.mark.infra

CA = "qualified"
CA_USER = "ceremony-ca"
SUITE_PYTHON = "/opt/ceremony-suite/venv/bin/python"


def test_hosts_are_torn_down_even_when_bringing_them_up_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure half way through ``up`` leaves no namespace, mount, process or copied root behind."""
    reason = infra_unavailable()
    if reason:
        pytest.skip(reason)
    th = load_testhosts()

    def broken_sshd(host: object) -> None:
        raise th.TestHostError("simulated sshd failure")

    monkeypatch.setattr(th, "start_sshd", broken_sshd)
    with th.exclusive():
        with pytest.raises(th.TestHostError, match="simulated"):
            th.up(log=False)
        leftover = th.status()
        assert leftover["namespaces"] == [] and leftover["roots"] == []
        assert not [line for line in Path("/proc/self/mounts").read_text().splitlines() if str(th.STATE_DIR) in line]


def test_check_mode_on_fresh_hosts_predicts_and_changes_nothing(converged: PlaybookRun) -> None:
    check = FIRST_CHECK["run"]
    assert isinstance(check, PlaybookRun)
    assert check.returncode == 0, check.output[-6000:]
    assert all(n > 0 for n in check.changed().values()), check.changed()  # it predicts the provisioning
    assert FIRST_CHECK["ca_user"] is False and FIRST_CHECK["var_lib"] is False and FIRST_CHECK["exchange"] == []


def test_site_converges_on_every_host(converged: PlaybookRun, lab: Lab) -> None:
    recap = converged.recap()
    assert set(recap) == {"offline-root", "subca", "publisher", "publisher2"}
    assert all(counts["failed"] == 0 and counts["unreachable"] == 0 for counts in recap.values())
    # The ceremonies' outputs came out through the exchange directory ("removable media").
    assert (lab.exchange / f"{CA}.csr.pem").is_file()
    assert (lab.exchange / "root.crt.pem").is_file()
    assert (lab.exchange / f"{CA}.crt.pem").is_file()
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(lab.exchange / "root.crt.pem"),
                             str(lab.exchange / f"{CA}.crt.pem")], capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_second_run_changes_nothing(converged: PlaybookRun, lab: Lab) -> None:
    """site.yml again on the converged hosts: no task changes anything.

    Check mode is walked where a sysadmin first meets it, on hosts never provisioned (the ``converged``
    fixture's first run, FIRST_CHECK); a second full check-mode run on the converged hosts (3 minutes) was
    folded into this one to keep the suite within its 30 minutes: a real run that changes nothing is the
    stronger statement about the converged hosts."""
    again = lab.playbook("site.yml")
    assert again.returncode == 0, again.output[-6000:]
    assert again.changed() == {"offline-root": 0, "subca": 0, "publisher": 0, "publisher2": 0}, \
        again.changed_tasks()


def test_offline_root_has_only_loopback_and_no_route_out(converged: PlaybookRun, lab: Lab) -> None:
    host = lab.host("offline-root")
    assert host.check_output("hostname") == "offline-root"
    links = host.check_output("ip -o link show")
    assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
    assert host.run("ip route get 1.1.1.1").rc != 0
    assert host.run("ip route get 203.0.113.1").rc != 0
    for service in ("openssh-server", "nginx-light", "prometheus-node-exporter"):
        assert not host.package(service).is_installed
    workspace = host.file("/srv/ceremony")
    assert workspace.is_directory and workspace.mode == 0o700
    assert host.file("/media/ceremony").is_directory
    assert host.file("/srv/ceremony/out/root.crt.pem").is_file
    assert host.file("/etc/softhsm/softhsm2.conf").mode == 0o640


def test_subordinate_ca_host(converged: PlaybookRun, lab: Lab) -> None:
    host = lab.host("subca")
    assert host.check_output("hostname") == "subca"
    for pkg in ("softhsm2", "opensc", "python3-venv"):
        assert host.package(pkg).is_installed
    user = host.user(CA_USER)
    assert user.exists and "softhsm" in user.groups and user.shell == "/usr/sbin/nologin"
    tokens = host.file("/var/lib/softhsm/tokens")
    assert tokens.mode == 0o770 and tokens.group == "softhsm"
    token_dirs = host.check_output("find /var/lib/softhsm/tokens -mindepth 1 -maxdepth 1 -type d").split()
    assert len(token_dirs) == 1
    token = host.file(token_dirs[0])
    assert token.user == CA_USER and token.mode == 0o700
    ca_dir = host.file(f"/var/lib/ceremony/{CA}")
    assert ca_dir.user == CA_USER and ca_dir.mode == 0o750
    assert host.file("/var/lib/ceremony/registry").mode == 0o750
    pin = host.file(f"/etc/ceremony/{CA}.pin")
    assert pin.user == CA_USER and pin.mode == 0o600
    assert host.run(f"cd /var/lib/ceremony/{CA} && openssl verify -CAfile root.crt.pem {CA}.crt.pem").rc == 0
    # The key is on the token, sensitive and not extractable, as pkcs11-tool (OpenSC) sees it.
    objects = host.check_output(
        "SOFTHSM2_CONF=/etc/softhsm/softhsm2.conf pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so "
        "--token-label scse-test-qualified --list-objects --type privkey --login --pin \"$(cat /etc/ceremony/%s.pin)\"",
        CA)
    assert "label:      qualified-2026" in objects and "never extractable" in objects


def test_crl_timer_passes_systemd_analyze_and_cron_fallback(converged: PlaybookRun, lab: Lab) -> None:
    host = lab.host("subca")
    unit = f"/etc/systemd/system/ceremony-crl-sign@{CA}"
    timer = host.file(unit + ".timer")
    assert "Persistent=true" in timer.content_string
    service = host.file(unit + ".service").content_string
    for setting in ("ProtectSystem=strict", "NoNewPrivileges=true", f"User={CA_USER}", "CapabilityBoundingSet="):
        assert setting in service
    verify = host.run(f"systemd-analyze verify {unit}.timer {unit}.service")
    assert verify.rc == 0 and verify.stderr.strip() == "", verify.stderr
    # The job's metrics go to node-exporter's textfile collector, writable by the job's user.
    assert host.package("prometheus-node-exporter").is_installed
    textfile = host.file("/var/lib/prometheus/node-exporter")
    assert textfile.is_directory and textfile.user == CA_USER
    assert "--collector.textfile.directory=/var/lib/prometheus/node-exporter" in \
        host.file("/etc/default/prometheus-node-exporter").content_string
    # No systemd as PID 1 in the test host: the cron entry runs the same command.
    cron = host.file(f"/etc/cron.d/ceremony-crl-sign-{CA}").content_string
    assert f" {CA_USER} /usr/local/bin/ceremony-crl-sign " in cron


def test_publisher_serves_crls_with_pkix_crl_content_type_to_another_namespace(converged: PlaybookRun,
                                                                              lab: Lab) -> None:
    host = lab.host("publisher")
    assert host.package("nginx-light").is_installed
    assert host.file("/var/www/pki/crl").mode == 0o755
    # The first publication at provisioning served the CRL; fetch it from the client namespace over http.
    fetched = subprocess.run(
        ["ip", "netns", "exec", lab.th.CLIENT_NS, "curl", "-sS", "--max-time", "5", "-o", "-",
         "-w", "\n%{http_code} %{content_type}", f"http://{lab.th.PUBLISHER_FROM_CLIENT}/crl/{CA}.crl"],
        capture_output=True, check=False)
    body, _, status = fetched.stdout.rpartition(b"\n")
    assert status.decode() == "200 application/pkix-crl", fetched.stderr
    assert x509.load_der_x509_crl(body).issuer == x509.load_pem_x509_certificate(
        (lab.exchange / f"{CA}.crt.pem").read_bytes()).subject
    # Anything but a CRL or a certificate is not served over http: redirected to the https repository
    # (docs/repository.md), never a file of the host.
    missing = subprocess.run(
        ["ip", "netns", "exec", lab.th.CLIENT_NS, "curl", "-s", "--max-time", "5", "-o", "-",
         "-w", "\n%{http_code} %{redirect_url}", f"http://{lab.th.PUBLISHER_FROM_CLIENT}/etc/passwd"],
        capture_output=True, text=True, check=False)
    body, _, answer = missing.stdout.rpartition("\n")
    code, _, location = answer.partition(" ")
    assert code == "301" and location.startswith("https://") and location.endswith("/etc/passwd"), missing.stdout
    assert "root:" not in body
    # The CA certificates are published too, in DER, at the definition's certificate URLs.
    cert = subprocess.run(
        ["ip", "netns", "exec", lab.th.CLIENT_NS, "curl", "-sS", "--max-time", "5", "-o", "-",
         "-w", "\n%{http_code} %{content_type}", f"http://{lab.th.PUBLISHER_FROM_CLIENT}/certs/root.cer"],
        capture_output=True, check=False)
    der, _, status = cert.stdout.rpartition(b"\n")
    assert status.decode() == "200 application/pkix-cert"
    assert der == x509.load_pem_x509_certificate((lab.exchange / "root.crt.pem").read_bytes()).public_bytes(
        serialization.Encoding.DER)


def _token_objects(lab: Lab) -> str:
    host = lab.host("subca")
    return host.check_output(
        "SOFTHSM2_CONF=/etc/softhsm/softhsm2.conf pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so "
        "--token-label scse-test-qualified --list-objects --login --pin \"$(cat /etc/ceremony/%s.pin)\"", CA)


def test_hsm_key_with_other_parameters_fails_and_never_regenerates(converged: PlaybookRun, lab: Lab) -> None:
    before = _token_objects(lab)
    host = lab.host("subca")
    host.check_output("sed 's/curve: P-384/curve: P-256/' /etc/ceremony/pki.yml > /tmp/p256.yml && "
                      "chown root:%s /tmp/p256.yml && chmod 0640 /tmp/p256.yml", CA_USER)
    try:
        args = json.dumps({"definition": "/tmp/p256.yml", "ca": CA, "softhsm_conf": "/etc/softhsm/softhsm2.conf",
                           "user_pin": lab.env["CEREMONY_QUALIFIED_PIN"]})
        proc = lab.ansible("subca", "hsm_key", args, "-e", f"ansible_python_interpreter={SUITE_PYTHON}",
                           "--become", "--become-method", "su", "--become-user", CA_USER, "-e",
                           "ansible_become_flags='-s /bin/sh'")
        assert proc.returncode != 0
        assert "does not match the definition" in proc.stdout and "refusing to regenerate" in proc.stdout
        assert lab.env["CEREMONY_QUALIFIED_PIN"] not in proc.stdout + proc.stderr
    finally:
        host.run("rm -f /tmp/p256.yml")
    assert _token_objects(lab) == before


def test_ca_csr_refuses_to_overwrite_a_foreign_file(converged: PlaybookRun, lab: Lab) -> None:
    host = lab.host("subca")
    path = f"/var/lib/ceremony/{CA}/other.csr.pem"
    host.check_output("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -keyout /dev/null "
                      "-subj /CN=other -out %s", path)
    try:
        digest_before = host.file(path).sha256sum
        args = json.dumps({"definition": "/etc/ceremony/pki.yml", "ca": CA, "path": path,
                           "softhsm_conf": "/etc/softhsm/softhsm2.conf", "user_pin": lab.env["CEREMONY_QUALIFIED_PIN"]})
        proc = lab.ansible("subca", "ca_csr", args, "-e", f"ansible_python_interpreter={SUITE_PYTHON}")
        assert proc.returncode != 0
        assert path in proc.stdout
        assert host.file(path).sha256sum == digest_before
    finally:
        host.run("rm -f %s", path)


def test_root_ceremonies_through_ansible_leave_verifiable_transcripts(converged: PlaybookRun, lab: Lab,
                                                                      tmp_path: Path) -> None:
    """The offline root's ceremonies, run by the ca_ceremony module, each leave a sealed transcript."""
    workspace = lab.th.host_root("offline-root") / "srv" / "ceremony" / "out"
    copy = tmp_path / "out"
    shutil.copytree(workspace, copy)
    transcripts = sorted((copy / "transcripts").glob("*.jsonl"))
    assert {t.name.rsplit("-", 1)[0] for t in transcripts} >= {"root-key-generation", "subordinate-signing",
                                                              "root-crl-batch"}
    for transcript in transcripts:
        proc = subprocess.run([str(VENV_BIN / "invoke"), "audit.verify", str(transcript), "--trust",
                               str(copy / "root.crt.pem"), "--rehearsal"], cwd=REPO, capture_output=True, text=True,
                              check=False)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_the_subordinate_key_made_through_ansible_has_its_transcript(converged: PlaybookRun, lab: Lab,
                                                                     tmp_path: Path) -> None:
    """The subordinate_ca role runs the key ceremony (ca_ceremony, action subordinate-key): the key's
    generation is recorded and sealed on the CA host, listed in its manifest and carried to the controller."""
    copy = tmp_path / "out"
    shutil.copytree(lab.th.host_root("subca") / "var" / "lib" / "ceremony" / CA, copy)
    transcripts = sorted((copy / "transcripts").glob("subordinate-key-generation-*.jsonl"))
    assert len(transcripts) == 1, transcripts  # made once; the second converge made no other
    manifest = json.loads((copy / "manifest.json").read_text())
    assert f"transcripts/{transcripts[0].name}" in json.dumps(manifest)
    assert (lab.exchange / "transcripts" / transcripts[0].name).read_bytes() == transcripts[0].read_bytes()
    # Sealed by the subordinate token's transcript-sealing key: anchored in the root once the root certified
    # that key at the signing ceremony; the role installed the certificate beside the transcript.
    root_out = lab.th.host_root("offline-root") / "srv" / "ceremony" / "out"
    assert (copy / f"{CA}.seal.crt.pem").read_bytes() == (root_out / f"{CA}.seal.crt.pem").read_bytes()
    proc = subprocess.run([str(VENV_BIN / "invoke"), "audit.verify", str(transcripts[0]), "--trust",
                           str(root_out / "root.crt.pem"), "--rehearsal", "--artifacts", str(copy)], cwd=REPO,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "key-generate" in transcripts[0].read_text()


def _as_ca_user(*extra: str) -> tuple[str, ...]:
    return ("-e", f"ansible_python_interpreter={SUITE_PYTHON}", "--become", "--become-method", "su",
            "--become-user", CA_USER, "-e", "ansible_become_flags='-s /bin/sh'", *extra)


def test_hsm_key_check_mode_predicts_a_new_key_without_creating_it(converged: PlaybookRun, lab: Lab) -> None:
    before = _token_objects(lab)
    host = lab.host("subca")
    host.check_output("sed 's/key_label: qualified-2026/key_label: qualified-2027/' /etc/ceremony/pki.yml "
                      "> /tmp/next.yml && chown root:%s /tmp/next.yml && chmod 0640 /tmp/next.yml", CA_USER)
    try:
        args = json.dumps({"definition": "/tmp/next.yml", "ca": CA, "softhsm_conf": "/etc/softhsm/softhsm2.conf",
                           "user_pin": lab.env["CEREMONY_QUALIFIED_PIN"]})
        proc = lab.ansible("subca", "hsm_key", args, *_as_ca_user("--check", "--diff"))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "CHANGED" in proc.stdout and "qualified-2027" in proc.stdout
    finally:
        host.run("rm -f /tmp/next.yml")
    assert _token_objects(lab) == before


@pytest.mark.parametrize(("module", "args", "message"), [
    ("hsm_token", {"label": "no-such-token", "module": "/usr/lib/softhsm/libsofthsm2.so"},
     "a real HSM token is initialised at a ceremony"),
    ("hsm_key", {"definition": "/etc/ceremony/missing.yml", "ca": CA}, "/etc/ceremony/missing.yml"),
    ("hsm_key", {"definition": "/etc/ceremony/pki.yml", "ca": "nope"}, "cas.nope: no such CA"),
    ("ca_csr", {"definition": "/etc/ceremony/pki.yml", "ca": "root", "path": "/tmp/root.csr"},
     "a CSR is only made for a subordinate CA"),
])
def test_modules_refuse_bad_input_with_one_clear_message(converged: PlaybookRun, lab: Lab, module: str,
                                                         args: dict[str, str], message: str) -> None:
    before = _token_objects(lab)
    proc = lab.ansible("subca", module, json.dumps(args), *_as_ca_user())
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stdout
    assert _token_objects(lab) == before
    assert not lab.host("subca").file("/tmp/root.csr").exists
