"""Throwaway test hosts for trying the Ansible provisioning by hand (``invoke hosts.up`` ...).

Thin over ``scripts/testhosts.py``: ``up`` also builds the wheelhouse the hosts install the suite
from and writes ``env.sh`` (mode 0600) with the variables the testing inventory reads, including
fresh throwaway PINs for the test hosts' SoftHSM tokens. Those PINs protect nothing real; a
production inventory takes its PINs from a vault.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shlex
import shutil
import sys
from pathlib import Path
from types import ModuleType

from invoke import Collection, Context, task

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PIN_VARIABLES = ("CEREMONY_ROOT_PIN", "CEREMONY_ROOT_SO_PIN", "CEREMONY_QUALIFIED_PIN", "CEREMONY_QUALIFIED_SO_PIN")


def _testhosts() -> ModuleType:
    spec = importlib.util.spec_from_file_location("testhosts", REPO / "scripts" / "testhosts.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["testhosts"] = module
    spec.loader.exec_module(module)
    return module


def _env_file(th: ModuleType) -> Path:
    return Path(th.STATE_DIR) / "env.sh"


def _require_root() -> None:
    if os.geteuid() != 0:
        sys.exit("error: the test hosts need root (debootstrap, mount, ip netns)")


@task
def up(c: Context) -> None:
    """Build (first time only) and start the test hosts; write env.sh for ansible-playbook."""
    _require_root()
    th = _testhosts()
    try:
        wheels = th.wheelhouse(str(VENV_BIN / "python"))
        state = th.up()
    except th.TestHostError as exc:
        sys.exit(f"error: {exc}")
    exchange = Path(th.STATE_DIR) / "exchange"
    shutil.rmtree(exchange, ignore_errors=True)  # CSRs and certificates of earlier hosts' keys
    exchange.mkdir(parents=True)
    values = {
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "CEREMONY_TESTHOSTS_DIR": str(th.STATE_DIR),
        "CEREMONY_WHEELHOUSE": str(wheels),
        "CEREMONY_EXCHANGE_DIR": str(exchange),
        **{name: secrets.token_hex(8) for name in PIN_VARIABLES},
    }
    env_file = _env_file(th)
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("# Test hosts only: throwaway PINs of throwaway SoftHSM tokens.\n")
        handle.writelines(f"export {k}={shlex.quote(v)}\n" for k, v in values.items())
    print(f"test hosts up in {state['seconds']} s: offline-root (chroot, loopback only), "
          "subca 203.0.113.2, publisher 203.0.113.6 (ssh)")
    for line in next_steps(env_file):
        print(line)


def next_steps(env_file: Path) -> list[str]:
    """What ``up`` suggests next: each command runs as printed (the tests run the invoke ones)."""
    return [f"next:  . {env_file} && .venv/bin/ansible-playbook playbooks/site.yml",
            "       (or: .venv/bin/invoke hosts.play --playbook site.yml, or --check for check mode)",
            "       stop with: .venv/bin/invoke hosts.down"]


@task(help={"playbook": "playbook under playbooks/ (default site.yml)", "check": "check mode with --diff"})
def play(c: Context, playbook: str = "site.yml", check: bool = False) -> None:
    """Run a playbook against the test hosts with the variables of env.sh."""
    th = _testhosts()
    env_file = _env_file(th)
    if not env_file.exists():
        sys.exit("error: the test hosts are not up: run invoke hosts.up first")
    flags = " --check --diff" if check else ""
    c.run(f". {env_file} && {VENV_BIN}/ansible-playbook playbooks/{shlex.quote(playbook)}{flags}", pty=False)


@task
def down(c: Context) -> None:
    """Stop every test host: processes, mounts, namespaces, copies. Safe to run twice."""
    _require_root()
    th = _testhosts()
    try:
        th.down()
    except th.TestHostError as exc:
        sys.exit(f"error: {exc}")
    _env_file(th).unlink(missing_ok=True)
    print("test hosts down")


@task
def status(c: Context) -> None:
    """Show the cached image, the namespaces and the host copies that exist."""
    th = _testhosts()
    for key, value in th.status().items():
        print(f"{key}: {value}")


@task
def test(c: Context) -> None:
    """Only the infrastructure tests (they bring their own hosts up and down)."""
    c.run(f"{VENV_BIN}/pytest tests/infra tests/test_ansible_lint.py -q -p no:cacheprovider", pty=False)


ns = Collection(up, down, play, status, test)
