"""Fixtures of the infrastructure tests: real throwaway Debian hosts and real Ansible runs.

The hosts come from ``scripts/testhosts.py`` (debootstrap image cached as a tarball, one network
namespace per host). They are torn down in ``finally`` blocks, whether the tests pass or fail.
One set of hosts, provisioned once (``converged``), serves every module of this directory.
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def load_testhosts() -> ModuleType:
    spec = importlib.util.spec_from_file_location("testhosts", REPO / "scripts" / "testhosts.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["testhosts"] = module
    spec.loader.exec_module(module)
    return module


def infra_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the infrastructure tests need root (debootstrap, mount, ip netns)"
    for tool in ("debootstrap", "ip", "ssh", "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/bootstrap.sh installs it)"
    return None


@dataclass
class PlaybookRun:
    returncode: int
    output: str

    def recap(self) -> dict[str, dict[str, int]]:
        """Per host: ok, changed, failed, unreachable... from the PLAY RECAP."""
        found: dict[str, dict[str, int]] = {}
        for line in self.output.split("PLAY RECAP")[-1].splitlines():
            m = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
            if m:
                found[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
        return found

    def changed(self) -> dict[str, int]:
        return {host: counts.get("changed", 0) for host, counts in self.recap().items()}

    def changed_tasks(self) -> list[str]:
        """The task headers followed by a 'changed:' line: what broke idempotence."""
        tasks, current = [], ""
        for line in self.output.splitlines():
            if line.startswith("TASK ["):
                current = line
            elif line.startswith("changed:") and current not in tasks:
                tasks.append(current)
        return tasks


@dataclass
class Lab:
    """The running test hosts and everything needed to drive them."""

    th: ModuleType
    env: dict[str, str]
    exchange: Path
    ssh_config: Path

    def playbook(self, name: str, *extra: str) -> PlaybookRun:
        proc = subprocess.run(
            [str(VENV_BIN / "ansible-playbook"), f"playbooks/{name}", *extra],
            cwd=REPO, env=self.env, capture_output=True, text=True, check=False, timeout=900)
        return PlaybookRun(proc.returncode, proc.stdout + proc.stderr)

    def ansible(self, host: str, module: str, args: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / "ansible"), host, "-m", module, "-a", args, *extra],
            cwd=REPO, env=self.env, capture_output=True, text=True, check=False, timeout=300)

    def host(self, name: str):  # -> testinfra.host.Host
        import testinfra

        if name == "offline-root":
            return testinfra.get_host(f"ansible://{name}", ansible_inventory=str(REPO / "inventory/testing/hosts.yml"))
        return testinfra.get_host(f"ssh://{name}", ssh_config=str(self.ssh_config))


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = infra_unavailable()
    if reason:
        pytest.skip(reason)
    th = load_testhosts()
    exchange = tmp_path_factory.mktemp("exchange")
    env = dict(os.environ)
    env.update({
        "PATH": f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "CEREMONY_EXCHANGE_DIR": str(exchange),
        "CEREMONY_TESTHOSTS_DIR": str(th.STATE_DIR),
    })
    # Fresh random PINs for the hosts' tokens, exported under the names pki.yml gives.
    for name in ("CEREMONY_ROOT_PIN", "CEREMONY_ROOT_SO_PIN", "CEREMONY_QUALIFIED_PIN", "CEREMONY_QUALIFIED_SO_PIN"):
        env[name] = secrets.token_hex(8)
    # testinfra's ansible backend (the offline root) runs ansible-inventory from this process.
    saved = {k: os.environ.get(k) for k in ("PATH", "ANSIBLE_CONFIG", "CEREMONY_TESTHOSTS_DIR")}
    os.environ.update({k: env[k] for k in saved})
    try:
        with th.exclusive():
            # Under the lock: the suite's wheel is rebuilt in a wheelhouse shared by every run with
            # the same pyproject.toml, and a run holding the hosts may be copying it right now.
            env["CEREMONY_WHEELHOUSE"] = str(th.wheelhouse(str(VENV_BIN / "python")))
            try:
                state = th.up(log=True)
                yield Lab(th=th, env=env, exchange=exchange, ssh_config=Path(str(state["ssh_config"])))
            finally:
                th.down()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


#: Tests that bring hosts up and down themselves: they take the lock, which the session's ``lab``
#: holds once it is up (a second flock from this process would wait forever), so they run first.
RUN_BEFORE_THE_LAB = ("test_hosts_are_torn_down_even_when_bringing_them_up_fails",)


#: Modules that bring the hosts up fresh for themselves: they run before any module converges them
#: (afterwards they would have to converge them again for the others: test_production_example.py).
FRESH_HOSTS_FIRST = ("test_production_example.py",)


#: Modules that change the converged hosts for good (a PIN change, a re-key with OCSP per key, a termination of
#: the shared CA, which the other modules do not expect): they run after every other module.
LAST_MODULES = ("test_lifecycle_hosts.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: (getattr(item, "originalname", item.name) not in RUN_BEFORE_THE_LAB,
                                 item.path.name not in FRESH_HOSTS_FIRST, item.path.name in LAST_MODULES))


# What a sysadmin sees first: site.yml in check mode on hosts never provisioned (filled by ``converged``).
FIRST_CHECK: dict[str, object] = {}


@pytest.fixture(scope="session")
def converged(lab: Lab) -> PlaybookRun:
    """site.yml in check mode on the fresh hosts (kept in FIRST_CHECK), then for real: once per session."""
    check = lab.playbook("site.yml", "--check", "--diff")
    FIRST_CHECK.update(run=check, ca_user=lab.host("subca").user("ceremony-ca").exists,
                       var_lib=lab.host("subca").file("/var/lib/ceremony").exists,
                       exchange=sorted(p.name for p in lab.exchange.iterdir()))
    run = lab.playbook("site.yml")
    assert run.returncode == 0, run.output[-6000:]
    return run
