"""Time and firewall of the online hosts (role host_baseline) on the converged test hosts.

What this shows, on real hosts: the nftables rules of the CPS (6.7) are loaded in each online host's
own network namespace and nowhere else (this machine's namespace has none of them); the CA host
drops SSH and HTTP from a relying party's namespace (a temporary link from the client namespace to
the CA host, removed afterwards: the hosts have no other path between them), and its dropped-packet
counter counts them, while sshd answers the administration address and the publishers still pull
their CRLs over SSH; a publisher serves HTTP to that client but drops its SSH; the CA host may not
open SSH connections itself (outbound drop); chrony is configured with the inventory's servers,
never started, with -x; the CRL job reports the kernel's clock state in its metrics, and refuses
on the hosts' real clock when required to (the hosts share this machine's kernel clock); a second
run of the role changes nothing.

What it cannot show: chrony synchronising anything (the test hosts must never touch this machine's
clock, and nothing here serves NTP), nor rules loaded at boot by nftables.service (no systemd as
PID 1 on the test hosts): both are configuration checked here, run only on real hosts.

Measured (one run, with test_production_example.py before it): the six tests 60 s, the second run of
the role 21 s of it; the shared converge they wait for 517 s.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ceremony.common.clock import read_kernel_clock

from .conftest import Lab, PlaybookRun
from .test_publication import PULL_UNIT, run_unit, unit_commands

pytestmark = pytest.mark.infra

CA = "qualified"
CA_USER = "ceremony-ca"
ONLINE = ("subca", "publisher", "publisher2")
SUBCA = "203.0.113.2"
#: A link made for this module only, between the client namespace and the CA host (TEST-NET-2,
#: which scripts/testhosts.py already checked is free on this machine).
PROBE_LINK, CLIENT_END, SUBCA_END = "csv-fwprobe", "198.51.100.9/30", "198.51.100.10/30"
METRICS = f"/var/lib/prometheus/node-exporter/ceremony_crl_{CA}.prom"
SIGN_UNIT = f"/etc/systemd/system/ceremony-crl-sign@{CA}.service"


def sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False, timeout=60)


def connect_from(ns: str | None, address: str, port: int, timeout: float = 3.0) -> str:
    """Open a TCP connection from namespace ``ns`` (None: this machine's): 'open', 'refused' (a RST:
    nothing listens, no firewall in the way) or 'timeout' (the SYN was dropped)."""
    code = ("import socket,sys\n"
            "try:\n"
            f"    socket.create_connection(({address!r}, {port}), {timeout}).close(); print('open')\n"
            "except ConnectionRefusedError: print('refused')\n"
            "except (TimeoutError, socket.timeout): print('timeout')\n")
    proc = sh(*(("ip", "netns", "exec", ns) if ns else ()), sys.executable, "-c", code)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def dropped(lab: Lab, host: str, chain: str = "input") -> int:
    """The packets the host's input (or output) chain dropped so far (its last rule counts them)."""
    listing = lab.host(host).check_output(f"nft list chain inet ceremony_baseline {chain}")
    word = "inbound" if chain == "input" else "outbound"
    found = re.search(rf'counter packets (\d+) bytes \d+ comment "{word} dropped"', listing)
    assert found, listing
    return int(found.group(1))


def commands_inside(lab: Lab, name: str) -> list[str]:
    """The command names of the processes running in a host (its root directory)."""
    found = []
    for pid in lab.th.pids_inside(lab.th.host_root(name)):
        with contextlib.suppress(OSError):
            found.append(Path(f"/proc/{pid}/comm").read_text().strip())
    return found


@contextlib.contextmanager
def client_link_to_subca(lab: Lab) -> Iterator[None]:
    """A veth from the client namespace to the CA host, with the CA host's address routed over it."""
    client, subca = lab.th.CLIENT_NS, lab.th.PREFIX + "subca"
    lab.th.run("ip", "link", "add", PROBE_LINK, "type", "veth", "peer", "name", PROBE_LINK + "p")
    try:
        lab.th.run("ip", "link", "set", PROBE_LINK, "netns", client)
        lab.th.run("ip", "link", "set", PROBE_LINK + "p", "netns", subca)
        lab.th.run("ip", "-n", client, "addr", "add", CLIENT_END, "dev", PROBE_LINK)
        lab.th.run("ip", "-n", subca, "addr", "add", SUBCA_END, "dev", PROBE_LINK + "p")
        lab.th.run("ip", "-n", client, "link", "set", PROBE_LINK, "up")
        lab.th.run("ip", "-n", subca, "link", "set", PROBE_LINK + "p", "up")
        lab.th.run("ip", "-n", client, "route", "add", f"{SUBCA}/32", "via", SUBCA_END.split("/")[0])
        yield
    finally:
        for ns in (None, client):  # the pair (and the route over it) go with either end
            lab.th.run(*(("ip", "-n", ns) if ns else ("ip",)), "link", "del", PROBE_LINK, check=False)


def test_the_rules_are_loaded_in_each_hosts_namespace_and_nowhere_else(converged: PlaybookRun, lab: Lab) -> None:
    for name in ONLINE:
        host = lab.host(name)
        ruleset = host.check_output("nft list ruleset")
        assert "table inet ceremony_baseline" in ruleset and "policy drop" in ruleset, name
        assert 'comment "SSH from the administration networks"' in ruleset
        assert ("SSH from its publication servers" in ruleset) == (name == "subca")
        assert ("HTTP and HTTPS from anywhere" in ruleset) == (name != "subca")
        assert ("SSH to its CA host" in ruleset) == (name != "subca")
    # This machine's own namespace (the host's nft binary, run outside any host namespace): no rule of ours.
    mine = sh("chroot", str(lab.th.host_root("subca")), "/usr/sbin/nft", "list", "tables")
    assert mine.returncode == 0, mine.stderr
    assert "ceremony_baseline" not in mine.stdout
    # The offline root got nothing (no network; the role refuses it).
    assert not (lab.th.host_root("offline-root") / "etc/ceremony/clock.json").exists()


def test_the_ca_host_drops_a_relying_party_and_admits_admins_and_publishers(converged: PlaybookRun,
                                                                              lab: Lab) -> None:
    before = dropped(lab, "subca")
    with client_link_to_subca(lab):
        assert connect_from(lab.th.CLIENT_NS, SUBCA, 22) == "timeout"  # sshd listens there: the firewall dropped it
        assert connect_from(lab.th.CLIENT_NS, SUBCA, 80) == "timeout"  # nothing listens: a RST without the firewall
    assert dropped(lab, "subca") >= before + 2
    # The administration address still reaches sshd (this machine's end of the link).
    assert connect_from(None, SUBCA, 22) == "open"
    # The publishers still pull the CA's CRLs over SSH, as their timers do.
    for name in ("publisher", "publisher2"):
        results = run_unit(lab.host(name), f"{PULL_UNIT}.service")
        assert results and all(r.rc == 0 for r in results), [(r.rc, r.stderr) for r in results]
    # The CA host itself may not open an SSH connection (outbound: only the CPS's flows): its output
    # chain drops the SYN (the connect times out, or fails at once with EPERM) and counts it.
    before = dropped(lab, "subca", "output")
    refused = lab.host("subca").run(
        "python3 -c \"import socket; socket.create_connection(('203.0.113.14', 22), 3)\"")
    assert refused.rc != 0 and ("timed out" in refused.stderr or "Operation not permitted" in refused.stderr), \
        refused.stderr
    assert dropped(lab, "subca", "output") > before


def test_a_publisher_serves_http_to_the_client_and_drops_its_ssh(converged: PlaybookRun, lab: Lab) -> None:
    client = lab.th.CLIENT_NS
    for name, address in lab.th.PUBLISHERS_FROM_CLIENT.items():
        served = sh("ip", "netns", "exec", client, "curl", "-sS", "--max-time", "5", "-o", "/dev/null",
                    "-w", "%{http_code}", f"http://{address}/crl/{CA}.crl")
        assert served.stdout == "200", (name, served.stderr)
        assert connect_from(client, address, 22) == "timeout", name


def test_chrony_has_the_inventorys_servers_and_never_runs_here(converged: PlaybookRun, lab: Lab) -> None:
    for name in ONLINE:
        host = lab.host(name)
        conf = host.file("/etc/chrony/chrony.conf").content_string
        sources = [line for line in conf.splitlines() if line.startswith(("server ", "pool "))]
        assert sources == ["server 203.0.113.1 iburst"], name
        assert "makestep 1 3" in conf.splitlines()
        assert 'DAEMON_OPTS="-F 1 -x"' in host.file("/etc/default/chrony").content_string
        assert host.run("/usr/sbin/chronyd -x -p -f /etc/chrony/chrony.conf").rc == 0
        assert json.loads(host.file("/etc/ceremony/clock.json").content_string) == {
            "require_sync": False, "max_error_seconds": 1.0}
    assert [name for name in ONLINE if "chronyd" in commands_inside(lab, name)] == []


def test_the_crl_job_reports_the_shared_kernel_clock_and_refuses_when_required(converged: PlaybookRun,
                                                                              lab: Lab) -> None:
    """The hosts share this machine's kernel clock: the job on the CA host sees what this process sees."""
    host = lab.host("subca")
    settings = [line.split("=", 1) for line in host.file(SIGN_UNIT).content_string.splitlines()
                if "=" in line and not line.startswith("#")]
    user = next(v for k, v in settings if k == "User")
    command = " ".join([v for k, v in settings if k == "Environment"] + [next(v for k, v in settings
                                                                             if k == "ExecStart")])
    as_timer = host.run("su -s /bin/sh %s -c %s", user, command)
    assert as_timer.rc == 0, as_timer.stderr
    real = read_kernel_clock()
    metrics = host.file(METRICS).content_string
    assert f'x509_crl_clock_synchronised{{ca="{CA}"}} {int(real.synchronised)}' in metrics
    # Required on the command line (the inventory's clock.json does not require it here): refused.
    flags = ("--require-clock-sync" if not real.synchronised
             else f"--require-clock-sync --max-clock-error {real.max_error_seconds / 2:.9f}")
    tmp_metrics = host.check_output("mktemp -d /tmp/clock-metrics.XXXXXX")
    host.run("chown %s %s", user, tmp_metrics)
    try:
        refused = host.run("su -s /bin/sh %s -c %s", user,
                           re.sub(r"--metrics-dir \S+", f"--metrics-dir {tmp_metrics}", command) + " " + flags)
        assert refused.rc == 8 and refused.stdout == "", refused.stderr
        assert refused.stderr.startswith("error: the clock of this host ") and len(refused.stderr.splitlines()) == 1
        written = host.file(f"{tmp_metrics}/ceremony_crl_{CA}.prom").content_string
        assert f'x509_crl_last_run_failure{{ca="{CA}",reason="clock"}} 1' in written
    finally:
        host.run("rm -rf %s", tmp_metrics)
    # The publisher's job, required on its command line, refuses too and serves what it served.
    pub = lab.host("publisher")
    pub_user, lines = unit_commands(pub, f"{PULL_UNIT}.service")
    publish_line = next(line for line in lines if "ceremony-crl-publish" in line)
    served = pub.file(f"/var/www/pki/crl/{CA}.crl").sha256sum
    refused = pub.run("su -s /bin/sh %s -c %s", pub_user, f"{publish_line} {flags}")
    assert refused.rc == 8 and "nothing was published" in refused.stderr, refused.stderr
    assert pub.file(f"/var/www/pki/crl/{CA}.crl").sha256sum == served


def test_a_second_run_changes_nothing(converged: PlaybookRun, lab: Lab) -> None:
    run = lab.playbook("baseline.yml")
    assert run.returncode == 0, run.output[-4000:]
    assert all(changed == 0 for changed in run.changed().values()), run.changed_tasks()
    role_tasks = [block for block in run.output.split("TASK [")[1:] if block.startswith("host_baseline : ")]
    assert role_tasks and all("[offline-root]" not in block for block in role_tasks)  # never the offline root
    assert all(f"[{name}]" in "".join(role_tasks) for name in ONLINE)
