"""The offline check: a root ceremony refuses to start while a network interface is up.

Reads the kernel's own view (``/sys/class/net/<if>/flags``, IFF_UP) rather than parsing tool
output. Loopback is allowed. A rehearsal records the result but does not refuse, since rehearsal
machines are usually online. The result is printed and recorded either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import OfflineCheckError

IFF_UP = 0x1
IFF_LOOPBACK = 0x8


@dataclass(frozen=True)
class OfflineCheck:
    interfaces: dict[str, str]
    up: list[str] = field(default_factory=list)
    enforced: bool = True

    @property
    def offline(self) -> bool:
        return not self.up

    def as_dict(self) -> dict[str, Any]:
        return {"interfaces": self.interfaces, "non_loopback_up": self.up, "offline": self.offline,
                "enforced": self.enforced}

    def summary(self) -> str:
        if self.offline:
            return "offline check: no network interface other than loopback is up"
        return "offline check: interfaces up: " + ", ".join(self.up)


def check_offline(enforce: bool, sysfs: Path = Path("/sys/class/net")) -> OfflineCheck:
    """Inspect every interface; raise :class:`OfflineCheckError` when enforcing and one is up."""
    states: dict[str, str] = {}
    up: list[str] = []
    for dev in sorted(sysfs.iterdir()) if sysfs.is_dir() else []:
        try:
            flags = int((dev / "flags").read_text().strip(), 16)
        except (OSError, ValueError):
            states[dev.name] = "unknown"
            up.append(dev.name)
            continue
        loopback = bool(flags & IFF_LOOPBACK)
        is_up = bool(flags & IFF_UP)
        states[dev.name] = ("loopback " if loopback else "") + ("up" if is_up else "down")
        if is_up and not loopback:
            up.append(dev.name)
    result = OfflineCheck(interfaces=states, up=up, enforced=enforce)
    if enforce and up:
        raise OfflineCheckError(
            f"refusing to start: network interface(s) {', '.join(up)} are up on this workstation. "
            "A root ceremony runs air-gapped: bring every interface except loopback down "
            "(ip link set <if> down) and start again")
    return result
