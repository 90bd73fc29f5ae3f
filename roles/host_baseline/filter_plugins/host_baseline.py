"""Filters of the role host_baseline: the firewall's flows, checked and written as nftables rules.

Why a filter and not Jinja: every address of every flow is parsed (Python's ``ipaddress``) before a
rule is written, so a typo in the inventory stops the run with the flow and the value named, instead
of a rule set that nft refuses half-way or, worse, one that accepts something else; and IPv4 and
IPv6 sources must go to ``ip saddr`` and ``ip6 saddr`` rules separately. The controller needs no
extra package (``ansible.utils.ipaddr`` would need netaddr).

A flow is ``{why, proto, ports, networks}``: ``why`` is the sentence of the CPS (section 6.7) that
allows it, written into the rule's comment so that ``nft list ruleset`` on a host reads like the CPS.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

PROTOCOLS = ("tcp", "udp")


def _networks(flow: Mapping[str, Any], direction: str) -> tuple[list[str], list[str]]:
    """The flow's networks split by family, normalised (``10.0.0.1`` → ``10.0.0.1/32``)."""
    v4: list[str] = []
    v6: list[str] = []
    networks = flow.get("networks")
    if isinstance(networks, str) or not isinstance(networks, Iterable):
        raise AnsibleFilterError(f"host_baseline: {direction} flow {flow.get('why')!r}: networks must be a list "
                                 f"of addresses or networks, not {networks!r}")
    for value in networks:
        try:
            net = ipaddress.ip_network(str(value).strip(), strict=False)
        except ValueError:
            raise AnsibleFilterError(f"host_baseline: {direction} flow {flow.get('why')!r}: {value!r} is not an "
                                     "IPv4 or IPv6 address or network (names are not allowed: a firewall "
                                     "resolves nothing)") from None
        (v4 if net.version == 4 else v6).append(str(net))
    return sorted(set(v4)), sorted(set(v6))


def _ports(flow: Mapping[str, Any], direction: str) -> str:
    ports = flow.get("ports")
    if isinstance(ports, int | str):
        ports = [ports]
    try:
        numbers = sorted({int(p) for p in ports or []})
    except (TypeError, ValueError):
        numbers = []
    if not numbers or any(not 0 < p < 65536 for p in numbers):
        raise AnsibleFilterError(f"host_baseline: {direction} flow {flow.get('why')!r}: ports must be a list of "
                                 f"port numbers, not {flow.get('ports')!r}")
    return str(numbers[0]) if len(numbers) == 1 else "{ " + ", ".join(map(str, numbers)) + " }"


def _comment(text: str) -> str:
    return '"' + text.replace('"', "'").replace("\\", "/")[:120] + '"'


def host_baseline_nft_rules(flows: Iterable[Mapping[str, Any]], direction: str) -> list[str]:
    """nftables rules (one line each) accepting the flows; ``direction``: ``input`` (sources),
    ``output`` (destinations) or ``reply``: output rules for the packets the host's services send
    back to an inbound flow's sources, from its ports.

    Why ``reply`` and not conntrack alone: when the rules are first loaded, the connection Ansible
    itself runs over is not in the connection tracking table yet; the host's next packet on it
    (the task's result) is then "new" in the output chain and would be dropped, while the
    controller, waiting for that result, sends nothing that would make it "established": the run
    hangs. A reply rule keeps such connections (SSH, a download in progress) alive.
    A flow with no network yields no rule: nothing is allowed by an empty list."""
    if direction not in ("input", "output", "reply"):
        raise AnsibleFilterError(f"host_baseline: direction {direction!r} is neither input, output nor reply")
    match = "saddr" if direction == "input" else "daddr"
    port_match = "sport" if direction == "reply" else "dport"
    rules = []
    for flow in flows:
        if not isinstance(flow, Mapping) or not flow.get("why"):
            raise AnsibleFilterError(f"host_baseline: {direction} flow {flow!r} has no 'why' (the CPS sentence)")
        proto = flow.get("proto", "tcp")
        if proto not in PROTOCOLS:
            raise AnsibleFilterError(f"host_baseline: {direction} flow {flow['why']!r}: proto {proto!r} is not "
                                     f"one of {', '.join(PROTOCOLS)}")
        ports = _ports(flow, direction)
        v4, v6 = _networks(flow, direction)
        for family, nets in (("ip", v4), ("ip6", v6)):
            if nets:
                addresses = nets[0] if len(nets) == 1 else "{ " + ", ".join(nets) + " }"
                why = ("reply: " if direction == "reply" else "") + flow["why"]
                rules.append(f"{family} {match} {addresses} {proto} {port_match} {ports} accept comment "
                             f"{_comment(why)}")
    return rules


def host_baseline_allowed(address: str, flows: Iterable[Mapping[str, Any]], port: int, proto: str = "tcp") -> bool:
    """Whether a connection from ``address`` to ``port`` is accepted by one of the inbound ``flows``."""
    try:
        source = ipaddress.ip_address(str(address).strip())
    except ValueError:
        raise AnsibleFilterError(f"host_baseline: {address!r} is not an IP address") from None
    for flow in flows:
        ports = flow.get("ports")
        ports = [ports] if isinstance(ports, int | str) else ports or []
        if flow.get("proto", "tcp") != proto or int(port) not in {int(p) for p in ports}:
            continue
        v4, v6 = _networks(flow, "input")
        if any(source in ipaddress.ip_network(n) for n in (v4 if source.version == 4 else v6)):
            return True
    return False


def host_baseline_not_loopback(addresses: Iterable[str]) -> list[str]:
    """Addresses that are not loopback (a local resolver is reached over lo, which is always allowed)."""
    kept = []
    for value in addresses or []:
        try:
            if ipaddress.ip_address(str(value).split("%")[0]).is_loopback:
                continue
        except ValueError:
            pass
        kept.append(str(value))
    return kept


class FilterModule:
    """The role's filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "host_baseline_nft_rules": host_baseline_nft_rules,
            "host_baseline_allowed": host_baseline_allowed,
            "host_baseline_not_loopback": host_baseline_not_loopback,
        }
