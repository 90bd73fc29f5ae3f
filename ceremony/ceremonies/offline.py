"""The offline check: a ceremony held at the air-gapped workstation (the root ceremonies, key backup and
key restore) refuses to start while a network interface is up.

The interfaces are those of the *current network namespace*, as the kernel reports them: the names
from ``if_nameindex(3)`` (a netlink RTM_GETLINK dump in glibc) and the flags of each from the
``SIOCGIFFLAGS`` ioctl on an AF_INET datagram socket, which answers for the namespace the socket
lives in. Should that be unavailable, ``ip -j link`` (also netlink) is read instead, with a minimal
environment. ``/sys/class/net`` is deliberately not read: under ``unshare -n`` it still lists the
host's interfaces unless sysfs is remounted, so it reports neither the namespace nor the truth.

Loopback is allowed. An interface that is administratively up counts as up whether or not it has a
carrier (a cable can be plugged in at any time). A rehearsal records the result but does not refuse,
since rehearsal machines are usually online. The result is printed and recorded either way, with
the method used, so the transcript says how the check was made.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import shutil
import socket
import struct
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ceremony.common import child_process
from ceremony.common.errors import OfflineCheckError
from ceremony.common.terminal_text import say

IFF_UP = 0x1


IFF_LOOPBACK = 0x8


IFF_RUNNING = 0x40


SIOCGIFFLAGS = 0x8913


IFNAMSIZ = 16


_IFREQ = struct.Struct(f"{IFNAMSIZ}sH22x")  # struct ifreq: name, then ifr_flags in the union (40 bytes)


METHOD_IOCTL = "if_nameindex+SIOCGIFFLAGS"


METHOD_IP = "ip -j link"


METHOD_NONE = "unavailable"


GUIDE = "docs/air-gapped.md"


# ``ip`` is looked up here only, and runs with this environment and nothing else from ours.
_IP_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


_IP_ENV = {"PATH": _IP_PATH, "LC_ALL": "C"}


@dataclass(frozen=True)
class OfflineCheck:
    """What the check saw: each interface's state, the non-loopback ones that are up, and how it looked."""

    interfaces: dict[str, str]
    up: list[str] = field(default_factory=list)
    enforced: bool = True
    method: str = METHOD_IOCTL
    problem: str | None = None  # set when the interfaces could not be listed at all

    @property
    def offline(self) -> bool:
        return not self.up and self.problem is None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"interfaces": self.interfaces, "non_loopback_up": self.up,
                                "offline": self.offline, "enforced": self.enforced, "method": self.method}
        if self.problem is not None:
            data["problem"] = self.problem
        return data

    def summary(self, lang: str = "en") -> str:
        """One line for the room, in its language (English unless told)."""

        if self.problem is not None:
            return say(lang, "off_problem", problem=self.problem)
        if self.offline:
            return say(lang, "off_ok")
        return say(lang, "off_up", names=", ".join(self.up))

    def refusal(self) -> OfflineCheckError:
        """The error to raise when this result is not offline: what is wrong and how to fix it."""
        if self.problem is not None:
            return OfflineCheckError(
                f"cannot prove this workstation is offline: the network interfaces could not be listed "
                f"({self.problem}). Run the ceremony in a network namespace that has only loopback "
                f"(see {GUIDE}) on a host where 'ip link' works, and start again")
        commands = "; ".join(f"ip link set {shlex.quote(name)} down" for name in self.up)
        return OfflineCheckError(
            f"network interface(s) {', '.join(self.up)} up in this network namespace: this ceremony runs "
            f"air-gapped. Bring them down ({commands}) or run the ceremony in a network namespace that "
            f"has only loopback (see {GUIDE}), then start again")


def assess(flags: Mapping[str, int | None], enforce: bool, method: str = METHOD_IOCTL) -> OfflineCheck:
    """Judge interface flags (``None``: unreadable, counted as up). Pure: the kernel is read elsewhere."""
    states: dict[str, str] = {}
    up: list[str] = []
    for name in sorted(flags):
        value = flags[name]
        if value is None:
            states[name] = "unknown"
            up.append(name)
            continue
        is_up = bool(value & IFF_UP)
        if value & IFF_LOOPBACK:
            states[name] = "loopback up" if is_up else "loopback down"
            continue
        if not is_up:
            states[name] = "down"
            continue
        states[name] = "up" if value & IFF_RUNNING else "up (no carrier)"
        up.append(name)
    return OfflineCheck(interfaces=states, up=up, enforced=enforce, method=method)


def read_with_ioctl() -> dict[str, int | None]:
    """Names from ``if_nameindex``, flags from ``SIOCGIFFLAGS``: the current namespace's interfaces."""
    names = [name for _index, name in socket.if_nameindex()]
    flags: dict[str, int | None] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for name in names:
            raw = os.fsencode(name)
            if len(raw) >= IFNAMSIZ:
                flags[name] = None
                continue
            try:
                answer = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, _IFREQ.pack(raw, 0))
            except OSError as exc:
                if exc.errno == errno.ENODEV:  # removed between the listing and now: no longer there
                    continue
                flags[name] = None
                continue
            flags[name] = _IFREQ.unpack(answer)[1]
    return flags


_IP_FLAGS = {"UP": IFF_UP, "LOOPBACK": IFF_LOOPBACK, "LOWER_UP": IFF_RUNNING}


def read_with_ip() -> dict[str, int | None]:
    """The same facts from ``ip -j link`` (netlink), run with a minimal environment."""
    ip = shutil.which("ip", path=_IP_PATH)
    if ip is None:
        raise OSError(errno.ENOENT, "the 'ip' command (iproute2) is not installed")
    proc = child_process.run([ip, "-j", "link", "show"], extra_env=_IP_ENV, capture_output=True, text=True,
                             timeout=30)
    if proc.returncode != 0:
        raise OSError(f"'ip -j link show' exited {proc.returncode}: {proc.stderr.strip()}")
    flags: dict[str, int | None] = {}
    for link in json.loads(proc.stdout):
        named = set(link.get("flags", []))
        value = 0
        for word, bit in _IP_FLAGS.items():
            if word in named:
                value |= bit
        if "NO-CARRIER" in named:
            value &= ~IFF_RUNNING
        flags[str(link["ifname"])] = value
    return flags


def read_interfaces() -> tuple[dict[str, int | None], str, str | None]:
    """The flags of every interface, the method that read them, and the problem if none could."""
    try:
        return read_with_ioctl(), METHOD_IOCTL, None
    except OSError as first:
        try:
            return read_with_ip(), METHOD_IP, None
        except (OSError, ValueError, KeyError, subprocess.SubprocessError) as second:
            return {}, METHOD_NONE, f"{METHOD_IOCTL}: {first}; {METHOD_IP}: {second}"


def check_offline(enforce: bool) -> OfflineCheck:
    """Inspect every interface of this network namespace; raise :class:`OfflineCheckError` when
    enforcing and one other than loopback is up (or none could be listed)."""
    flags, method, problem = read_interfaces()
    result = assess(flags, enforce, method)
    if problem is not None:
        result = OfflineCheck(interfaces={}, up=[], enforced=enforce, method=method, problem=problem)
    if enforce and not result.offline:
        raise result.refusal()
    return result
