"""The firewall of the role host_baseline against the CPS: the flows, the filter that writes them, the text.

The role's flows (``roles/host_baseline/vars/main.yml``) are what the CPS's section 6.7 lists: the
same ports, inbound and outbound, in both languages and both inventories' prose, so the document a
relying party reads and the rules a host loads cannot drift apart unnoticed. The filter that turns
the flows into nftables rules is exercised directly (it refuses names and bad ports, splits IPv4 and
IPv6), and its output is checked by nft itself when the test hosts converge (tests/infra/test_baseline.py).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from conftest import REPO

ROLE = REPO / "roles" / "host_baseline"


def filters() -> ModuleType:
    spec = importlib.util.spec_from_file_location("host_baseline_filters", ROLE / "filter_plugins" / "host_baseline.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def role_flows() -> dict[str, list[int]]:
    """Ports of the role's flows by direction, read from vars/main.yml (literal ports and the defaults')."""
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    text = (ROLE / "vars" / "main.yml").read_text()
    out: dict[str, list[int]] = {}
    for direction, key in (("inbound", "host_baseline_inbound_flows"), ("outbound", "host_baseline_outbound_flows")):
        block = yaml.safe_load(text)[key]
        ports: set[int] = set()
        for value in re.findall(r"'ports': (\[[^\]]*\]|\w+)", block):
            if value.startswith("["):
                for item in value.strip("[]").split(","):
                    item = item.strip()
                    ports.update([int(item)] if item.isdigit() else list(_as_list(defaults[item])))
            else:
                ports.update(_as_list(defaults[value]))
        out[direction] = sorted(ports)
    return out


def _as_list(value: object) -> list[int]:
    return [int(v) for v in (value if isinstance(value, list) else [value])]


def cps_section(path: Path, number: str) -> str:
    found = re.search(rf"^## {re.escape(number)}\n(.*?)(?=^## |\Z)", path.read_text(), flags=re.MULTILINE | re.DOTALL)
    assert found, (path, number)
    return found.group(1)


@pytest.mark.parametrize("env", ["testing", "production.example"])
@pytest.mark.parametrize(("lang", "file", "inbound", "outbound"), [
    ("en", "6-technical.md", "Inbound", "Outbound"),
    ("fr", "6-securite-technique.md", "Entrant", "Sortant"),
])
def test_the_cps_names_every_port_the_firewall_opens_and_no_other(env: str, lang: str, file: str, inbound: str,
                                                                   outbound: str) -> None:
    text = cps_section(REPO / "inventory" / env / "policy" / lang / file, "6.7")
    flows = role_flows()
    for direction, word in (("inbound", inbound), ("outbound", outbound)):
        lines = [line for line in text.splitlines() if line.startswith(f"- {word}")]
        named = sorted({int(p) for line in lines for p in re.findall(r"(?:TCP|UDP)(?: et| and)? (\d+)", line)}
                       | {int(p) for line in lines for p in re.findall(r"\b(?:et|and) (\d+)\)", line)})
        assert named == flows[direction], (env, lang, direction, named, flows[direction])


def test_the_flows_become_rules_per_address_family() -> None:
    f = filters()
    rules = f.host_baseline_nft_rules([
        {"why": "SSH from the administration networks", "proto": "tcp", "ports": [22],
         "networks": ["10.10.0.5", "10.10.1.0/24", "2001:db8::/64"]},
        {"why": "nothing allowed", "proto": "tcp", "ports": [9100], "networks": []},
    ], "input")
    assert rules == [
        'ip saddr { 10.10.0.5/32, 10.10.1.0/24 } tcp dport 22 accept comment "SSH from the administration networks"',
        'ip6 saddr 2001:db8::/64 tcp dport 22 accept comment "SSH from the administration networks"',
    ]
    out = f.host_baseline_nft_rules([{"why": "NTP", "proto": "udp", "ports": 123, "networks": ["0.0.0.0/0"]}],
                                    "output")
    assert out == ['ip daddr 0.0.0.0/0 udp dport 123 accept comment "NTP"']
    # What the service sends back, to those sources only: keeps a connection older than the rules
    # (Ansible's own) alive when they are first loaded (conntrack would see its next packet as new).
    replies = f.host_baseline_nft_rules([{"why": "SSH", "proto": "tcp", "ports": [22], "networks": ["10.10.0.5"]}],
                                        "reply")
    assert replies == ['ip daddr 10.10.0.5/32 tcp sport 22 accept comment "reply: SSH"']


@pytest.mark.parametrize(("flow", "needle"), [
    ({"why": "w", "proto": "tcp", "ports": [22], "networks": ["admin.example.org"]}, "names are not allowed"),
    ({"why": "w", "proto": "tcp", "ports": [22], "networks": "10.0.0.0/8"}, "must be a list"),
    ({"why": "w", "proto": "tcp", "ports": [0], "networks": []}, "ports must be a list of port numbers"),
    ({"why": "w", "proto": "sctp", "ports": [22], "networks": []}, "proto 'sctp'"),
    ({"proto": "tcp", "ports": [22], "networks": []}, "has no 'why'"),
])
def test_a_bad_flow_stops_the_run_naming_it(flow: dict, needle: str) -> None:
    from ansible.errors import AnsibleFilterError

    with pytest.raises(AnsibleFilterError, match=re.escape(needle)):
        filters().host_baseline_nft_rules([flow], "input")


def test_the_ssh_source_check_and_the_local_resolver() -> None:
    f = filters()
    flows = [{"why": "SSH", "proto": "tcp", "ports": [22], "networks": ["203.0.113.0/29"]},
             {"why": "web", "proto": "tcp", "ports": [80, 443], "networks": ["0.0.0.0/0"]}]
    assert f.host_baseline_allowed("203.0.113.5", flows, 22)
    assert not f.host_baseline_allowed("203.0.113.9", flows, 22)
    assert not f.host_baseline_allowed("2001:db8::1", flows, 22)
    assert f.host_baseline_not_loopback(["127.0.0.53", "::1", "192.0.2.53"]) == ["192.0.2.53"]
