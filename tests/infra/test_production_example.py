"""The production path: ``inventory/production.example`` as shipped, and the offline root's guard.

Two parts, both marker ``infra`` (root):

* **The guard on the test machine itself.** ``site.yml`` against a throwaway inventory that lists the
  test machine as the offline root (``localhost``, local connection, the accident an admin machine
  could suffer) must stop at the guard, the very first task, in check mode and for real, with no task
  changed and no other task run; so must the offline root's own inventory used on a machine that
  is not the workstation. Those runs are made as ``nobody`` inside a network namespace of their own
  (``unshare --net``): even a broken guard could neither purge a package nor bring an interface of
  the test machine down. The misspelt-variable, unquoted-PIN and vault checks need no host either:
  they stop the run before any connection.
* **production.example provisions real hosts as shipped.** Fresh test hosts (``th.up()``) are
  provisioned from a copy of ``inventory/production.example`` with only the edits docs/provisioning.md
  lists (module path in pki.yml, host addresses and account, the vault files made with
  ``ansible-vault create``, the vendor's group for the CA user, where the wheels and the media are),
  in the order it gives, machine by machine: install the workstation (its marker) and the HSM
  vendor's part (SoftHSM tokens made with ``softhsm2-util``, no ``softhsm`` group on the CA host),
  ``offline_root.yml`` and ``root_ceremony.yml`` with ``offline-root.yml``, ``subordinate_ca.yml``
  and ``site.yml`` with ``hosts.yml``. The only test-only edit: the workstation is driven through
  the chroot connection from the test machine instead of running its own playbooks.

The test hosts are shared with the other infrastructure modules (``conftest.lab``): this module
brings them up fresh for itself and leaves them fresh. The conftest runs it before any module
converges them (``FRESH_HOSTS_FIRST``); in any other order it leaves them converged again afterwards
(``site.yml`` on the testing inventory, about 4 minutes), so the order of the modules does not matter.
Measured alone on a loaded machine: the production flow 240 s (hosts up 12 s, offline_root.yml 45 s,
subordinate_ca.yml 37 s, root_ceremony.yml 11 s, site.yml 133 s), the other tests 20 s.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from . import conftest
from .conftest import REPO, VENV_BIN, Lab, PlaybookRun, infra_unavailable

pytestmark = pytest.mark.infra

EXAMPLE = REPO / "inventory" / "production.example"
MARKER = Path("/etc/ceremony/offline-root")
NOBODY = "65534"
FIRST_GUARD_TASK = "offline_root : Guard | the offline root is not reached through a local connection"
MARKER_GUARD_TASK = "offline_root : Guard | the host declares itself the offline root"
SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
VENDOR_GROUP = "hsmusers"  # the group "the vendor's client" (here SoftHSM) gives access to its tokens
CA = "qualified"
CA_USER = "ceremony-ca"
CHECKS_TASK = "Every variable is one the suite reads, PINs are strings, vault files are encrypted"


def task_headers(output: str) -> list[str]:
    return re.findall(r"^TASK \[(.*)\] \**$", output, flags=re.MULTILINE)


def play_headers(output: str) -> list[str]:
    return re.findall(r"^PLAY \[(.*)\] \**$", output, flags=re.MULTILINE)


def require_root() -> None:
    reason = infra_unavailable()
    if reason:
        pytest.skip(reason)


# --------------------------------------------------------------------------------------------
# The guard, on the test machine itself


@pytest.fixture
def sandbox() -> Iterator[Path]:
    """A directory ``nobody`` can use (HOME, temporary files, the throwaway inventory)."""
    require_root()
    if MARKER.exists():  # never run the guard's tests on a machine that declares itself the offline root
        pytest.fail(f"{MARKER} exists on the test machine: it declares itself an offline root; refusing to test "
                    "the guard here")
    path = Path(tempfile.mkdtemp(prefix="guard-", dir="/tmp"))
    try:
        os.chown(path, int(NOBODY), int(NOBODY))
        shutil.copytree(EXAMPLE, path / "production")
        for entry in [path, *path.rglob("*")]:
            os.chown(entry, int(NOBODY), int(NOBODY), follow_symlinks=False)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_nobody_offline(sandbox: Path, *args: str) -> PlaybookRun:
    """ansible-playbook as nobody, in a new network namespace (loopback only, down): it can change nothing."""
    env = {"PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(sandbox), "LANG": "C.UTF-8",
           "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_LOCAL_TEMP": str(sandbox / ".ansible-tmp"),
           "ANSIBLE_REMOTE_TEMP": str(sandbox / ".ansible-tmp"), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    proc = subprocess.run(["unshare", "--net", "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           "--", str(VENV_BIN / "ansible-playbook"), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=300)
    return PlaybookRun(proc.returncode, proc.stdout + proc.stderr)


def test_the_guard_is_the_first_task_of_every_play_on_the_offline_root() -> None:
    """site.yml, offline_root.yml and root_ceremony.yml list the guard before anything; so does the role."""
    for playbook in ("site.yml", "offline_root.yml", "root_ceremony.yml"):
        proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "--list-tasks", f"playbooks/{playbook}"],
                              cwd=REPO, capture_output=True, text=True, check=False,
                              env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg")))
        assert proc.returncode == 0, proc.stderr
        plays = re.split(r"^\s+play #\d+ ", proc.stdout, flags=re.MULTILINE)[1:]
        assert plays[0].startswith("(offline_root): Offline root guard"), plays[0]
        first_task = plays[0].split("tasks:")[1].strip().splitlines()[0].split("\t")[0].strip()
        assert first_task == FIRST_GUARD_TASK
        assert "any_errors_fatal" in (REPO / "playbooks/checks.yml").read_text()
    role_tasks = yaml.safe_load((REPO / "roles/offline_root/tasks/main.yml").read_text())
    assert role_tasks[0]["ansible.builtin.import_tasks"] == "guard.yml"
    assert all(t.get("when") == "offline_root_guard_passed | default(false) | bool" for t in role_tasks[1:])


@pytest.mark.parametrize("mode", ["check", "real"])
def test_site_refuses_the_test_machine_listed_as_the_offline_root(sandbox: Path, mode: str) -> None:
    """The accident of the old example: the offline root, as localhost with a local connection, in the
    same inventory as the online hosts. site.yml stops at its first task, on every host, changing nothing."""
    production = sandbox / "production"
    hosts = yaml.safe_load((production / "hosts.yml").read_text())
    hosts["all"]["children"]["offline_root"] = {"hosts": {"localhost": {"ansible_connection": "local"}}}
    (production / "hosts.yml").write_text(yaml.safe_dump(hosts))
    run = as_nobody_offline(sandbox, "-i", str(production / "hosts.yml"), "playbooks/site.yml",
                            *(["--check", "--diff"] if mode == "check" else []))
    assert run.returncode != 0, run.output[-3000:]
    assert task_headers(run.output) == [FIRST_GUARD_TASK], run.output[-3000:]
    assert play_headers(run.output) == ["Offline root guard"], run.output[-3000:]
    assert "REFUSED, nothing was changed: localhost is in the offline_root group and is reached through a " \
           "local connection" in run.output
    recap = run.recap()
    assert set(recap) == {"localhost"}, recap  # the online hosts were never reached: the whole run stopped
    assert recap["localhost"]["failed"] == 1 and recap["localhost"]["changed"] == 0 and recap["localhost"]["ok"] == 0
    assert run.changed_tasks() == [] and not re.search(r"^(ok|changed):", run.output, flags=re.MULTILINE)


@pytest.mark.parametrize("mode", ["check", "real"])
def test_the_offline_roots_own_inventory_is_refused_on_another_machine(sandbox: Path, mode: str) -> None:
    """offline-root.yml, as shipped (local connection allowed), run on a machine without the marker:
    refused at the marker, after reading it and before anything else."""
    run = as_nobody_offline(sandbox, "-i", str(sandbox / "production" / "offline-root.yml"), "playbooks/site.yml",
                            *(["--check"] if mode == "check" else []))
    assert run.returncode != 0, run.output[-3000:]
    headers = task_headers(run.output)
    assert headers[-1] == MARKER_GUARD_TASK and all(h.startswith("offline_root : Guard | ") for h in headers), headers
    assert "REFUSED, nothing was changed: root-workstation does not declare itself the offline root. " \
           "/etc/ceremony/offline-root must exist on it" in run.output
    assert run.recap() == {"root-workstation": {"ok": 2, "changed": 0, "unreachable": 0, "failed": 1, "skipped": 0,
                                                "rescued": 0, "ignored": 0}}


def test_the_guard_refuses_the_machine_running_ansible_even_with_its_marker(tmp_path: Path) -> None:
    """Reached through a connection that is not 'local' (chroot into /) and with a marker naming it,
    the test machine is still refused: same machine-id. Only the guard's tasks are in this playbook."""
    require_root()
    marker = tmp_path / "marker"
    marker.write_text("root-workstation\n")
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {"offline_root": {"hosts": {
        "root-workstation": {"ansible_connection": "community.general.chroot", "ansible_host": "/"}}}}}}))
    (tmp_path / "guard.yml").write_text(yaml.safe_dump([{
        "name": "Guard only", "hosts": "offline_root", "gather_facts": False,
        "tasks": [{"name": "Guard",
                   "ansible.builtin.import_role": {"name": "offline_root", "tasks_from": "guard.yml"}}],
    }]))
    proc = subprocess.run(["unshare", "--net", str(VENV_BIN / "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"),
                           "-e", f"offline_root_marker={marker}", str(tmp_path / "guard.yml")], cwd=REPO,
                          env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
                                   ANSIBLE_ROLES_PATH=str(REPO / "roles"), ANSIBLE_NOCOLOR="1"),
                          capture_output=True, text=True, check=False, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "REFUSED, nothing was changed: root-workstation is the machine running Ansible (same machine-id)" in out
    assert task_headers(out)[-1] == "offline_root : Guard | the host is not the machine running Ansible"


def test_the_commands_hosts_up_suggests_parse() -> None:
    """`invoke hosts.up` ends with what to run next: every invoke command it prints is one invoke accepts."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_hosts_tasks", REPO / "tasks" / "hosts_tasks.py")
    assert spec and spec.loader
    hosts_tasks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hosts_tasks)
    lines = hosts_tasks.next_steps(Path("/var/tmp/ceremony-testhosts/env.sh"))
    commands = [m.group(1).strip() for line in lines for m in re.finditer(r"\.venv/bin/invoke ([^,)]+)", line)]
    assert "hosts.play --playbook site.yml" in commands, lines
    for command in commands:
        proc = subprocess.run([str(VENV_BIN / "invoke"), *command.split(), "--help"], cwd=REPO, capture_output=True,
                              text=True, check=False)
        assert proc.returncode == 0, f"{command}: {proc.stdout}{proc.stderr}"
    broken = subprocess.run([str(VENV_BIN / "invoke"), "hosts.play", "site.yml", "--help"], cwd=REPO,
                            capture_output=True, text=True, check=False)
    assert broken.returncode != 0  # what it used to suggest


# --------------------------------------------------------------------------------------------
# The inventory's variables: reported before any host is reached


def checks_run(production: Path, *extra: str) -> PlaybookRun:
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(production / "hosts.yml"),
                           "playbooks/site.yml", *extra], cwd=REPO, capture_output=True, text=True, check=False,
                          env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1"),
                          timeout=300)
    return PlaybookRun(proc.returncode, proc.stdout + proc.stderr)


def vault_create(path: Path, content: str, password_file: Path) -> None:
    """`ansible-vault create PATH`, the editor typing ``content`` (as docs/provisioning.md says; no terminal here)."""
    typed = path.parent / ".typed"
    typed.write_text(content)
    try:
        proc = subprocess.run([str(VENV_BIN / "ansible-vault"), "create", "--skip-tty-check", "--vault-password-file",
                               str(password_file), str(path)], env=dict(os.environ, EDITOR=f"cp {typed}"),
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
    finally:
        typed.unlink()
    assert path.read_text().startswith("$ANSIBLE_VAULT;")


@pytest.fixture
def example_copy(tmp_path: Path) -> Path:
    require_root()
    production = tmp_path / "inventory" / "production"
    shutil.copytree(EXAMPLE, production)
    (tmp_path / "vault-password").write_text(secrets.token_hex(16) + "\n")
    return production


def test_the_shipped_example_says_which_vault_file_to_create(example_copy: Path) -> None:
    run = checks_run(example_copy)
    assert run.returncode != 0
    assert task_headers(run.output) == [CHECKS_TASK], task_headers(run.output)
    assert "subordinate_ca_user_pin (ca-qualified-01.pki.internal) cannot be resolved: 'vault_qualified_user_pin' " \
           "is undefined" in re.sub(r"\s+", " ", run.output)
    assert "ansible-vault create" in run.output


def test_misspelt_variables_in_the_inventory_or_with_e_are_reported_with_a_suggestion(example_copy: Path) -> None:
    password = example_copy.parents[1] / "vault-password"
    (example_copy / "group_vars/subordinate_ca/vault.yml").unlink()
    vault_create(example_copy / "group_vars/subordinate_ca/vault.yml", 'vault_qualified_user_pin: "0123456"\n',
                 password)
    main = example_copy / "group_vars/subordinate_ca/main.yml"
    main.write_text(main.read_text() + "subordinate_ca_hsm_group: [hsmusers]\n")
    run = checks_run(example_copy, "--vault-password-file", str(password), "-e", "crl_signer_on_calender=daily",
                     "-e", "softhsm_pkcs11_module=/opt/hsm/lib/libCryptoki2_64.so")
    text = re.sub(r"\s+", " ", run.output)
    assert run.returncode != 0
    assert task_headers(run.output) == [CHECKS_TASK]
    assert "subordinate_ca_hsm_group (set for ca-qualified-01.pki.internal) is not a variable of this suite, " \
           "nothing would read it; did you mean subordinate_ca_hsm_groups?" in text
    assert "crl_signer_on_calender (given with -e) is not a variable of this suite, nothing would read it; did you " \
           "mean crl_signer_on_calendar?" in text
    assert "softhsm_pkcs11_module (given with -e) is no longer used: the PKCS#11 module path is given once, in the " \
           "PKI definition" in text
    assert "0123456" not in run.output
    assert run.changed() == {"ca-qualified-01.pki.internal": 0}


def test_ansible_become_false_on_the_ca_host_is_refused(example_copy: Path) -> None:
    """It would override the roles' become to the CA's user: the key and the CRL job would run as root."""
    edit(example_copy / "host_vars/ca-qualified-01.pki.internal.yml", "ansible_become: true", "ansible_become: false",
         [])
    run = checks_run(example_copy)
    assert run.returncode != 0
    assert "ansible_become: false (ca-qualified-01.pki.internal) turns off the roles' own become" in \
        re.sub(r"\s+", " ", run.output)


def test_an_unquoted_pin_is_refused_by_name_never_by_value(example_copy: Path) -> None:
    password = example_copy.parents[1] / "vault-password"
    (example_copy / "group_vars/subordinate_ca/vault.yml").unlink()
    vault_create(example_copy / "group_vars/subordinate_ca/vault.yml", "vault_qualified_user_pin: 4711983\n", password)
    run = checks_run(example_copy, "--vault-password-file", str(password))
    text = re.sub(r"\s+", " ", run.output)
    assert run.returncode != 0
    assert "subordinate_ca_user_pin (ca-qualified-01.pki.internal) is a number, not a string: write a PIN in " \
           "quotes in YAML" in text
    assert "4711983" not in run.output and "_AnsibleTaggedInt" not in run.output


def test_a_vault_file_in_clear_is_refused(example_copy: Path) -> None:
    vault = example_copy / "group_vars/subordinate_ca/vault.yml"
    vault.write_text('---\nvault_qualified_user_pin: "8731"\n')
    run = checks_run(example_copy)
    text = re.sub(r"\s+", " ", run.output)
    assert run.returncode != 0
    assert f"{vault} defines variables in clear: a vault file is encrypted" in text
    assert "8731" not in run.output


# --------------------------------------------------------------------------------------------
# production.example provisions the test hosts, with the documented edits only


@dataclass
class Production:
    lab: Lab
    production: Path          # the sysadmin's inventory/production (a copy of production.example, edited)
    media: Path               # the removable media, as the machine running Ansible sees them
    password: Path            # the vault password file (--ask-vault-pass, for the test)
    pins: dict[str, str]
    edits: list[str]
    runs: dict[str, PlaybookRun] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def play(self, key: str, playbook: str, inventory: str, *extra: str) -> PlaybookRun:
        started = time.monotonic()
        # The workstation runs its playbooks in its own environment: not the test process's SOFTHSM2_CONF
        # (the chroot connection would hand it to the modules on the offline root).
        lab = dataclasses.replace(self.lab, env={k: v for k, v in self.lab.env.items() if k != "SOFTHSM2_CONF"})
        run = lab.playbook(playbook, "-i", str(self.production / inventory), "--vault-password-file",
                                str(self.password), *extra)
        self.seconds[key] = round(time.monotonic() - started, 1)
        self.runs[key] = run
        return run

    def crl_name(self, ca: str) -> str:
        return Path(self.definition()["cas"][ca]["publication"]["crl_url"]).name

    def definition(self) -> dict:
        return yaml.safe_load((self.production / "pki.yml").read_text())


def edit(path: Path, old: str, new: str, edits: list[str], count: int = 1) -> None:
    """Replace ``old`` by ``new`` in ``path``, exactly ``count`` times (the example changed otherwise)."""
    text = path.read_text()
    assert text.count(old) == count, f"{path.name}: expected {count} x {old!r}"
    path.write_text(text.replace(old, new))
    edits.append(f"{path.name}: {old.strip()} -> {new.strip()}")


def adapt_example(lab: Lab, production: Path, media: Path, password: Path, pins: dict[str, str]) -> list[str]:
    """The edits docs/provisioning.md ("Preparing the inventory") tells a sysadmin to make, and nothing else."""
    edits: list[str] = []
    th = lab.th
    # 1. pki.yml: the HSM vendor's PKCS#11 module (SoftHSM plays the vendor); the token URIs as shipped.
    edit(production / "pki.yml", "module: /opt/hsm/lib/libCryptoki2_64.so", f"module: {SOFTHSM_MODULE}", edits, 2)
    # 2. host_vars: how the admin machine reaches each host (address, account, key).
    # The test hosts take root over SSH (no sudo there): no ansible_become; the roles' own become to the
    # CA user (su) still applies.
    reach = ("ansible_user: root\n"
             f"ansible_ssh_private_key_file: {th.STATE_DIR}/ssh/id_ed25519\n"
             "ansible_ssh_common_args: >-\n"
             "  -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes\n")
    addresses = {h.name: h.address for h in th.HOSTS if h.ssh}
    publishers = sorted(name for name in addresses if name.startswith("publisher"))
    targets = {"ca-qualified-01.pki.internal": addresses["subca"], "pki-web-01.dmz.internal": addresses[publishers[0]]}
    if len(publishers) > 1:
        targets["pki-web-02.dmz.internal"] = addresses[publishers[1]]
    else:  # the test hosts have one publication server: list yours
        edit(production / "hosts.yml", "        pki-web-02.dmz.internal:\n", "", edits)
        (production / "host_vars/pki-web-02.dmz.internal.yml").unlink()
    for host, address in targets.items():
        path = production / "host_vars" / f"{host}.yml"
        text = path.read_text()
        old_address = re.search(r"^ansible_host: (\S+)$", text, flags=re.MULTILINE)
        assert old_address, path
        edit(path, f"ansible_host: {old_address.group(1)}\nansible_user: deploy\nansible_become: true\n",
             f"ansible_host: {address}\n{reach}", edits)
    # Test only: the workstation is a chroot on the test machine, driven from it, instead of running
    # its own playbooks (local connection).
    edit(production / "offline-root.yml", "          ansible_connection: local\n",
         "          ansible_connection: community.general.chroot\n"
         f"          ansible_host: {th.host_root('offline-root')}\n"
         f"          ansible_chroot_exe: {th.STATE_DIR}/bin/chroot-offline-root\n", edits)
    # 3. The PINs, in vault files made with ansible-vault create (the placeholders removed).
    for group, variable in (("subordinate_ca", "vault_qualified_user_pin"), ("offline_root", "vault_root_user_pin")):
        vault = production / "group_vars" / group / "vault.yml"
        vault.unlink()
        vault_create(vault, f'---\n{variable}: "{pins[variable]}"\n', password)
        edits.append(f"group_vars/{group}/vault.yml: ansible-vault create ({variable})")
    # 4. The group the vendor's client requires of the CA user.
    edit(production / "group_vars/subordinate_ca/main.yml", "subordinate_ca_hsm_groups: []",
         f"subordinate_ca_hsm_groups: [{VENDOR_GROUP}]", edits)
    # 5. Where the suite comes from (no package index on the hosts), where the media are on the machine
    #    running Ansible; no systemd as PID 1 on the test hosts.
    wheels = lab.env["CEREMONY_WHEELHOUSE"]
    edit(production / "group_vars/all.yml", 'ceremony_exchange_dir: "{{ playbook_dir }}/../out/exchange"',
         f"ceremony_exchange_dir: {media}", edits)
    edit(production / "group_vars/all.yml", 'ceremony_suite_wheelhouse: ""', f"ceremony_suite_wheelhouse: {wheels}",
         edits)
    edit(production / "group_vars/offline_root/main.yml", "ceremony_exchange_dir: /media/ceremony\n",
         f"ceremony_exchange_dir: {media}\n", edits)
    edit(production / "group_vars/offline_root/main.yml", "ceremony_suite_wheelhouse: /media/ceremony/wheelhouse",
         f"ceremony_suite_wheelhouse: {wheels}", edits)
    main = production / "group_vars/subordinate_ca/main.yml"
    main.write_text(main.read_text() + "crl_signer_cron_fallback: true\n")
    edits.append("group_vars/subordinate_ca/main.yml: + crl_signer_cron_fallback: true (no systemd as PID 1)")
    # Time and firewall: the admin machine's network (the test machine's ends of the links, and the
    # publishers' pull addresses, are all in 203.0.113.0/24).
    edit(production / "group_vars/all.yml", "host_baseline_admin_networks: [10.10.0.0/24]",
         "host_baseline_admin_networks: [203.0.113.0/24]", edits)
    # Test only: the test hosts share this machine's kernel clock, which nothing synchronises here; the
    # CRL jobs would (rightly) refuse to sign and publish on it.
    every = production / "group_vars/all.yml"
    every.write_text(every.read_text() + "host_baseline_require_clock_sync: false\n")
    edits.append("group_vars/all.yml: + host_baseline_require_clock_sync: false (test only: unsynchronised clock)")
    # 6. The repository's TLS certificate and key in tls/ (docs/repository.md), the key vault-encrypted.
    edits += place_tls_certificate(production, password)
    return edits


def place_tls_certificate(production: Path, password: Path) -> list[str]:
    """What the sysadmin's web PKI provider hands over, for the definition's repository host name (here
    a self-signed stand-in), put in tls/ with the key encrypted by `ansible-vault encrypt`."""
    import datetime as dt
    from urllib.parse import urlsplit

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    host = urlsplit(yaml.safe_load((production / "pki.yml").read_text())["documents"]["repository_url"]).hostname
    assert host
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256()))
    tls = production / "tls"
    tls.mkdir(mode=0o700)
    (tls / "repository.crt.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tls / "repository.key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                               serialization.PrivateFormat.PKCS8,
                                                               serialization.NoEncryption()))
    proc = subprocess.run([str(VENV_BIN / "ansible-vault"), "encrypt", "--vault-password-file", str(password),
                           str(tls / "repository.key.pem")], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return [f"tls/repository.crt.pem, tls/repository.key.pem (ansible-vault encrypt): the TLS certificate for {host}"]


ANSWERS = {
    "participants": [
        {"name": "Awa Traoré", "roles": ["administrator"], "id_document": "passport AA123456",
         "id_checked_by": "Binta Keïta"},
        {"name": "Binta Keïta", "roles": ["internal-witness"], "id_document": "NINA 1234567890",
         "id_checked_by": "Awa Traoré"},
        {"name": "Cheick Diallo", "roles": ["crypto-officer"], "id_document": "NINA 2345678901",
         "id_checked_by": "Awa Traoré"},
        {"name": "Drissa Coulibaly", "roles": ["crypto-officer"], "id_document": "passport BB234567",
         "id_checked_by": "Awa Traoré"},
        {"name": "Fatim Sissoko", "roles": ["independent-witness"], "id_document": "passport CC345678",
         "id_checked_by": "Awa Traoré"},
    ],
    # the root's HSM and workstation at the root ceremonies, the subordinate's HSM at its key ceremony
    "bags": {"open": {"hsm": "ML-TE-000101", "workstation": "ML-TE-000102", "subordinate-hsm": "ML-TE-000201"},
             "reseal": {"hsm": "ML-TE-000103", "workstation": "ML-TE-000104", "subordinate-hsm": "ML-TE-000202"}},
    "confirm": True,
    "exceptions": "stop",
}


def in_offline_root(lab: Lab, *command: str) -> subprocess.CompletedProcess[str]:
    """A command inside the offline root host (its namespace and chroot), as its installer types it."""
    wrapper = lab.th.STATE_DIR / "bin" / "chroot-offline-root"
    return subprocess.run([str(wrapper), str(lab.th.host_root("offline-root")), *command],
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
                          capture_output=True, text=True, check=False, timeout=120)


def install_vendor_parts(lab: Lab, pins: dict[str, str]) -> None:
    """What the HSM vendor's procedure does before Ansible: the tokens (SoftHSM's tool plays the vendor's),
    and on the CA host the vendor's access group; SoftHSM's own group is removed, as on a host that never
    had SoftHSM."""
    definition = yaml.safe_load((EXAMPLE / "pki.yml").read_text())
    labels = {ca: c["hsm"]["token"]["uri"].removeprefix("pkcs11:token=") for ca, c in definition["cas"].items()}
    assert all("=" not in label and ";" not in label for label in labels.values()), labels
    proc = in_offline_root(lab, "softhsm2-util", "--init-token", "--free", "--label", labels["root"], "--pin",
                           pins["vault_root_user_pin"], "--so-pin", secrets.token_hex(8))
    assert proc.returncode == 0, proc.stderr
    subca = lab.host("subca")
    script = (f"set -e; groupadd --system {VENDOR_GROUP}; "
              f"softhsm2-util --init-token --free --label {labels[CA]} --pin {pins['vault_qualified_user_pin']} "
              f"--so-pin {secrets.token_hex(8)} >/dev/null; "
              f"chgrp -R {VENDOR_GROUP} /etc/softhsm/softhsm2.conf /var/lib/softhsm/tokens; "
              "chmod -R g+rwX /var/lib/softhsm/tokens; groupdel softhsm")
    result = subca.run(script)
    assert result.rc == 0, result.stderr


def install_workstation(lab: Lab, name: str) -> None:
    """docs/provisioning.md, step 0: the declaration, by hand, that this machine is the offline root."""
    proc = in_offline_root(lab, "/bin/sh", "-c", f"install -d -m 0755 /etc/ceremony && echo {name} > {MARKER}")
    assert proc.returncode == 0, proc.stderr


def restore_converged_hosts(lab: Lab) -> None:
    """Fresh hosts converged with the testing inventory, as conftest.converged left them for later modules."""
    for entry in lab.exchange.iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    lab.th.up(log=False)
    run = lab.playbook("site.yml")
    assert run.returncode == 0, run.output[-6000:]


@pytest.fixture(scope="module")
def prod(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Production]:
    first_check = getattr(conftest, "FIRST_CHECK", None)
    converged_before = bool(first_check)
    started = time.monotonic()
    lab.th.up(log=False)  # fresh hosts: another module may have provisioned them with the testing inventory
    base = tmp_path_factory.mktemp("operator")
    production = base / "inventory" / "production"
    shutil.copytree(EXAMPLE, production)
    media = base / "media"
    media.mkdir()
    password = base / "vault-password"
    password.write_text(secrets.token_hex(16) + "\n")
    password.chmod(0o600)
    # PINs of digits with a leading zero: quoted in the vault files, as the docs say.
    pins = {"vault_qualified_user_pin": "0" + "".join(secrets.choice("0123456789") for _ in range(9)),
            "vault_root_user_pin": "0" + "".join(secrets.choice("0123456789") for _ in range(9))}
    try:
        edits = adapt_example(lab, production, media, password, pins)
        p = Production(lab=lab, production=production, media=media, password=password, pins=pins, edits=edits)
        p.seconds["hosts up"] = round(time.monotonic() - started, 1)
        install_vendor_parts(lab, pins)
        # Before the workstation declares itself the offline root (its marker names another host): refused.
        p.play("offline root, not declared", "offline_root.yml", "offline-root.yml")
        install_workstation(lab, "root-workstation")
        # The production order: workstation, CA host (CSR out), root ceremonies (media in, certificates and
        # CRLs out), then every online host.
        p.play("offline root", "offline_root.yml", "offline-root.yml")
        assert p.runs["offline root"].returncode == 0, p.runs["offline root"].output[-6000:]
        # The key ceremony's sign-in sheet, where the example's subordinate_ca_ceremony_answers says.
        (media / f"{CA}-key-ceremony-answers.yml").write_text(yaml.safe_dump(ANSWERS, allow_unicode=True))
        p.play("subordinate CA key and CSR", "subordinate_ca.yml", "hosts.yml")
        assert p.runs["subordinate CA key and CSR"].returncode == 0, p.runs["subordinate CA key and CSR"].output[-6000:]
        answers = lab.th.host_root("offline-root") / "media" / "ceremony" / "answers.yml"
        answers.write_text(yaml.safe_dump(ANSWERS, allow_unicode=True))
        p.play("root ceremonies", "root_ceremony.yml", "offline-root.yml")
        assert p.runs["root ceremonies"].returncode == 0, p.runs["root ceremonies"].output[-6000:]
        p.play("online hosts", "site.yml", "hosts.yml")
        assert p.runs["online hosts"].returncode == 0, p.runs["online hosts"].output[-6000:]
        p.seconds["total"] = round(time.monotonic() - started, 1)
        print(f"\nproduction.example on the test hosts: {p.seconds}")
        yield p
    finally:
        # Later modules get fresh hosts, converged again if they already had been.
        if converged_before:
            restore_converged_hosts(lab)
        else:
            lab.th.up(log=False)


def test_the_edits_are_the_documented_ones(prod: Production) -> None:
    """Every edit the test made is one docs/provisioning.md lists (or the chroot stand-in for the workstation)."""
    docs = (REPO / "docs/provisioning.md").read_text()
    for needle in ("cas.<ca>.hsm.module", "ansible_host", "ansible_user", "ansible-vault create",
                   "subordinate_ca_hsm_groups", "ceremony_suite_wheelhouse", "crl_signer_cron_fallback",
                   "ceremony_exchange_dir", "host_baseline_admin_networks"):
        assert needle in docs, needle
    assert len([e for e in prod.edits if "module:" in e]) == 1  # two occurrences, one edit: the module path


def test_a_workstation_that_does_not_declare_itself_is_refused(prod: Production) -> None:
    run = prod.runs["offline root, not declared"]
    assert run.returncode != 0
    assert "REFUSED, nothing was changed: root-workstation does not declare itself the offline root" in run.output
    assert 'it holds "offline-root"' in run.output  # the testing host's name, not this inventory's
    assert run.changed() == {"root-workstation": 0}
    assert task_headers(run.output)[-1] == MARKER_GUARD_TASK


def test_every_run_of_the_production_order_passes_and_leaks_no_pin(prod: Production) -> None:
    for key in ("offline root", "subordinate CA key and CSR", "root ceremonies", "online hosts"):
        run = prod.runs[key]
        assert run.returncode == 0, f"{key}: {run.output[-4000:]}"
        for pin in prod.pins.values():
            assert pin not in run.output and pin.lstrip("0") not in run.output, key
    listed = yaml.safe_load((prod.production / "hosts.yml").read_text())["all"]["children"]
    online = {host for group in listed.values() for host in (group.get("hosts") or {})}
    assert set(prod.runs["online hosts"].recap()) == online  # the offline root's plays matched no host


def test_the_certificates_chain_and_carry_the_production_names(prod: Production) -> None:
    root, sub = prod.media / "root.crt.pem", prod.media / f"{CA}.crt.pem"
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(root), str(sub)], capture_output=True, text=True,
                            check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    cert = x509.load_pem_x509_certificate(sub.read_bytes())
    assert cert.subject.rfc4514_string().startswith("CN=SCSE Autorité de Certification Qualifiée 2026")
    assert sorted(p.name for p in (prod.media / "crl").iterdir())  # the root CRL batch came out on the media


def test_the_ca_host_has_a_real_hsm_setup_without_softhsm(prod: Production) -> None:
    host = prod.lab.host("subca")
    user = host.user(CA_USER)
    assert set(user.groups) == {CA_USER, VENDOR_GROUP}, user.groups
    assert host.run("getent group softhsm").rc != 0  # softhsm_enabled: false created no group
    conf = host.file("/etc/softhsm/softhsm2.conf")
    assert conf.group == VENDOR_GROUP and "Ansible" not in conf.content_string  # the vendor's file, untouched
    unit = host.file(f"/etc/systemd/system/ceremony-crl-sign@{CA}.service").content_string
    assert "softhsm" not in unit.lower(), unit
    # The key is on the token the definition's URI names, as pkcs11-tool (OpenSC) sees it.
    label = prod.definition()["cas"][CA]["hsm"]["token"]["uri"].removeprefix("pkcs11:token=")
    objects = host.run("pkcs11-tool --module %s --token-label %s --list-objects --type privkey --login --pin %s",
                       SOFTHSM_MODULE, label, prod.pins["vault_qualified_user_pin"])
    assert objects.rc == 0, objects.stderr
    assert f"label:      {prod.definition()['cas'][CA]['hsm']['key_label']}" in objects.stdout
    assert host.file(f"/var/lib/ceremony/{CA}/{CA}.crt.pem").exists


def test_the_offline_root_ceremonies_left_production_transcripts_that_verify(prod: Production,
                                                                               tmp_path: Path) -> None:
    out = prod.lab.th.host_root("offline-root") / "srv" / "ceremony" / "out"
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    transcripts = sorted((copy / "transcripts").glob("*.jsonl"))
    assert {t.name.rsplit("-", 1)[0] for t in transcripts} >= {"root-key-generation", "subordinate-signing",
                                                              "root-crl-batch"}
    trust = ["--trust", str(prod.media / "root.crt.pem")]  # the root carried out on the media: the auditor's anchor
    for transcript in transcripts:
        proc = subprocess.run([str(VENV_BIN / "invoke"), "audit.verify", str(transcript), *trust], cwd=REPO,
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        header = json.loads(transcript.read_text().splitlines()[0])
        assert _find_key(header, "rehearsal") is False, header  # production ceremonies, never a rehearsal
    host = prod.lab.host("offline-root")
    assert [line.split(":")[1].strip() for line in host.check_output("ip -o link show").splitlines()] == ["lo"]
    assert not host.package("openssh-server").is_installed


def test_the_subordinate_key_ceremony_left_a_production_transcript_that_verifies(prod: Production,
                                                                                  tmp_path: Path) -> None:
    """The key made through Ansible on the CA host has its sealed transcript, like `invoke ceremony.subordinate-key`."""
    copy = tmp_path / "out"
    shutil.copytree(prod.lab.th.host_root("subca") / "var" / "lib" / "ceremony" / CA, copy)
    transcripts = sorted((copy / "transcripts").glob("subordinate-key-generation-*.jsonl"))
    assert len(transcripts) == 1, transcripts
    fetched = prod.media / "transcripts" / transcripts[0].name  # carried to the controller for the auditors
    assert fetched.read_bytes() == transcripts[0].read_bytes()
    # Sealed by the subordinate token's transcript-sealing key: anchored in the root once the root has
    # certified that key at the signing ceremony; its certificate was carried out on the media and the role
    # installed it beside the transcript.
    certificate = prod.media / f"{CA}.seal.crt.pem"
    assert (copy / certificate.name).read_bytes() == certificate.read_bytes()
    proc = subprocess.run([str(VENV_BIN / "invoke"), "audit.verify", str(transcripts[0]), "--trust",
                           str(prod.media / "root.crt.pem"), "--artifacts", str(copy)], cwd=REPO,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    header = json.loads(transcripts[0].read_text().splitlines()[0])
    assert _find_key(header, "rehearsal") is False, header
    assert "Awa Traoré" in transcripts[0].read_text()  # the sign-in sheet's participants, not generated ones


def _find_key(data: object, key: str) -> object:
    if isinstance(data, dict):
        if key in data:
            return data[key]
        for value in data.values():
            found = _find_key(value, key)
            if found is not None:
                return found
    return None


def test_the_publishers_serve_the_production_crls(prod: Production) -> None:
    th = prod.lab.th
    addresses = getattr(th, "PUBLISHERS_FROM_CLIENT", {"publisher": th.PUBLISHER_FROM_CLIENT})
    for name in (prod.crl_name(CA), prod.crl_name("root")):
        for publisher, address in addresses.items():
            fetched = subprocess.run(["ip", "netns", "exec", th.CLIENT_NS, "curl", "-sS", "--max-time", "5", "-o",
                                      "/dev/null", "-w", "%{http_code} %{content_type}", f"http://{address}/crl/{name}"],
                                     capture_output=True, text=True, check=False)
            assert fetched.stdout == "200 application/pkix-crl", (publisher, name, fetched.stdout, fetched.stderr)
