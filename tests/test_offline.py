"""The offline check against the real kernel, in network namespaces these tests create.

The check must see the interfaces of the namespace it runs in. ``/sys/class/net`` does not: under
``unshare -n`` it still lists the host's interfaces (the bug this file pins down). The namespaces get
unique names, so parallel workers do not collide, and are deleted even when a test fails. Children get
an explicit minimal environment, never this process's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ceremony.common.errors import OfflineCheckError

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
IF_NAME = "cerveth0"  # the interface a test brings up inside its own namespace
PEER_NAME = "cerveth1"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="network namespaces need root, unshare(1) and ip(8)")

# What the child prints: the check's record, the refusal if enforced, the other method's view, and
# what /sys/class/net lists from inside the namespace.
PROBE = """
import json, os
from ceremony.common.errors import OfflineCheckError
from ceremony.ceremonies.offline import check_offline, read_with_ip
out = {"check": check_offline(enforce=False).as_dict(), "sysfs": sorted(os.listdir("/sys/class/net")),
       "ip": sorted(read_with_ip())}
try:
    check_offline(enforce=True)
    out["refusal"] = None
except OfflineCheckError as exc:
    out["refusal"] = str(exc)
print(json.dumps(out))
"""


def _env() -> dict[str, str]:
    """The operator's environment, minimal: the virtualenv's commands first, then the system's."""
    return {"PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120,
                          check=False)


def _probe(*prefix: str) -> dict:
    proc = _run(*prefix, sys.executable, "-c", PROBE)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace with loopback up and a veth pair (both ends inside it, down)."""
    name = f"ceremony-offline-{uuid.uuid4().hex[:12]}"
    subprocess.run(["ip", "netns", "add", name], env=_env(), check=True, capture_output=True)
    try:
        for argv in (("link", "set", "lo", "up"),
                     ("link", "add", IF_NAME, "type", "veth", "peer", "name", PEER_NAME)):
            subprocess.run(["ip", "-n", name, *argv], env=_env(), check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], env=_env(), check=False, capture_output=True)
    assert name not in _run("ip", "netns", "list").stdout


def _set(ns: str, ifname: str, state: str) -> None:
    subprocess.run(["ip", "-n", ns, "link", "set", ifname, state], env=_env(), check=True, capture_output=True)


def test_unshare_sees_only_loopback_although_sysfs_lists_the_hosts_interfaces() -> None:
    host_sysfs = sorted(os.listdir("/sys/class/net"))
    if host_sysfs == ["lo"]:
        pytest.skip("this host has no interface besides loopback: nothing for sysfs to leak")
    seen = _probe("unshare", "-n")
    # the old source of truth is wrong here: it still shows the host's interfaces
    assert seen["sysfs"] == host_sysfs and set(seen["sysfs"]) - {"lo"}
    assert seen["check"]["interfaces"] == {"lo": "loopback down"}
    assert seen["check"]["offline"] is True and seen["check"]["non_loopback_up"] == []
    assert seen["check"]["method"] == "if_nameindex+SIOCGIFFLAGS"
    assert seen["refusal"] is None
    assert seen["ip"] == ["lo"]  # the fallback sees the same namespace


def test_an_interface_up_in_the_namespace_is_refused_by_name(netns: str) -> None:
    _set(netns, IF_NAME, "up")
    seen = _probe("ip", "netns", "exec", netns)
    check = seen["check"]
    assert check["interfaces"] == {"lo": "loopback up", IF_NAME: "up (no carrier)", PEER_NAME: "down"}
    assert check["non_loopback_up"] == [IF_NAME] and check["offline"] is False
    assert seen["ip"] == sorted(["lo", IF_NAME, PEER_NAME])
    refusal = seen["refusal"]
    assert refusal and IF_NAME in refusal and f"ip link set {IF_NAME} down" in refusal
    assert "docs/air-gapped.md" in refusal

    _set(netns, PEER_NAME, "up")  # with a carrier now: both ends named
    assert _probe("ip", "netns", "exec", netns)["check"]["non_loopback_up"] == [IF_NAME, PEER_NAME]


def test_invoke_offline_check_exits_non_zero_with_the_fix_then_zero_once_down(netns: str) -> None:
    _set(netns, IF_NAME, "up")
    refused = _run("ip", "netns", "exec", netns, "invoke", "ceremony.offline-check")
    assert refused.returncode == OfflineCheckError.exit_code, refused.stderr
    assert f"  {IF_NAME}: up (no carrier)\n" in refused.stdout and "  lo: loopback up\n" in refused.stdout
    assert refused.stderr.startswith("error: ") and "Traceback" not in refused.stderr
    assert f"ip link set {IF_NAME} down" in refused.stderr and "docs/air-gapped.md" in refused.stderr

    _set(netns, IF_NAME, "down")
    passed = _run("ip", "netns", "exec", netns, "invoke", "ceremony.offline-check")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert f"  {IF_NAME}: down\n" in passed.stdout
    assert "no network interface other than loopback is up" in passed.stdout and passed.stderr == ""


def test_namespace_with_loopback_only_passes_under_invoke() -> None:
    proc = _run("unshare", "-n", "invoke", "ceremony.offline-check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[1:] == ["  lo: loopback down",
                                            "offline check: no network interface other than loopback is up"]
