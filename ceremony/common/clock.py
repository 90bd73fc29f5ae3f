"""Is this host's clock fit to date a CRL? The kernel's own answer, read on every scheduled run.

A CRL's thisUpdate and nextUpdate come from the system clock of the host that signs it, and a
publisher decides from its clock whether a CRL is in force or expired. A clock that drifted (a
dead time source, a firewall that blocks NTP, a host restored from a snapshot) would make the
scheduled jobs sign CRLs that are "not yet valid" or already stale for relying parties, silently.
So the CRL job and the publication job ask the kernel before they act, and refuse with one line
and a metric when it says the clock is not synchronised or may be further off than allowed.

Why the kernel and not chrony: ``adjtimex(2)`` with no mode bits only reads, needs no privilege
and no daemon socket (the CRL unit runs sandboxed, with no capabilities), and it is what every
NTP implementation (chrony, ntpd, systemd-timesyncd) reports into: the return value is
``TIME_ERROR`` and ``STA_UNSYNC`` is set until a daemon declares the clock synchronised, and
``maxerror`` (microseconds) is the daemon's bound on the clock's error, which the kernel grows by
500 ppm every second the daemon stays silent (it sets ``STA_UNSYNC`` itself past 16 s). chrony's
``tracking`` would say more but only to a client that can reach its socket.

The verdict is a pure function of the raw values (:func:`status_from_timex`,
:meth:`ClockPolicy.problem`), so tests feed it the values of an unsynchronised kernel without
touching this machine's clock; :func:`read_kernel_clock` is the one real system call.

The requirement of a host comes from ``/etc/ceremony/clock.json`` (role ``host_baseline``:
``{"require_sync": true, "max_error_seconds": 1.0}``), which the command-line flags override.
Without that file and without a flag the state is read and reported (metrics) but nothing is
refused: a developer's machine or the offline root workstation (no network, so never
NTP-synchronised) is not an online host of the CA.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ceremony.common.errors import DefinitionError, VerificationError

#: adjtimex return values (clock states) and the status bits that matter here (<sys/timex.h>).
TIME_OK, TIME_INS, TIME_DEL, TIME_OOP, TIME_WAIT, TIME_ERROR = range(6)


STATE_NAMES = {TIME_OK: "TIME_OK", TIME_INS: "TIME_INS", TIME_DEL: "TIME_DEL", TIME_OOP: "TIME_OOP",
               TIME_WAIT: "TIME_WAIT", TIME_ERROR: "TIME_ERROR"}


STA_UNSYNC = 0x0040


STA_CLOCKERR = 0x1000


#: The host's requirement, written by the role host_baseline.
HOST_CONFIG = Path("/etc/ceremony/clock.json")


#: The default bound on the kernel's maximum error: the CPS (5.5.5) promises UTC within one second.
DEFAULT_MAX_ERROR_SECONDS = 1.0


class ClockError(VerificationError):
    """The clock is not fit to date a CRL (or could not be read); ``reason`` labels the failure metric."""

    reason = "clock"


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """``struct timex`` of glibc on Linux (LP64: amd64, arm64), 208 bytes."""

    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
        ("time", _Timeval), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int), ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int), ("_reserved", ctypes.c_int * 11),
    ]


@dataclass(frozen=True)
class ClockStatus:
    """What the kernel says about the system clock."""

    state: int
    """The return value of adjtimex: TIME_OK ... TIME_ERROR."""
    status: int
    """The status bits (STA_UNSYNC, STA_CLOCKERR, ...)."""
    max_error_seconds: float
    """The kernel's maximum error (maxerror), the bound the time daemon gives."""
    est_error_seconds: float
    """The kernel's estimated error (esterror)."""

    @property
    def synchronised(self) -> bool:
        """What ``timedatectl``'s "System clock synchronized" and node-exporter's sync_status say."""
        return self.state != TIME_ERROR and not self.status & (STA_UNSYNC | STA_CLOCKERR)

    def describe(self) -> str:
        flags = [name for bit, name in ((STA_UNSYNC, "STA_UNSYNC"), (STA_CLOCKERR, "STA_CLOCKERR"))
                 if self.status & bit]
        state = STATE_NAMES.get(self.state, str(self.state))
        return (f"kernel state {state}{', ' + ' and '.join(flags) + ' set' if flags else ''}, "
                f"maximum error {self.max_error_seconds:.3f} s, estimated error {self.est_error_seconds:.3f} s")


def status_from_timex(state: int, status: int, maxerror_us: int, esterror_us: int) -> ClockStatus:
    """The verdict's input from the raw adjtimex values (microseconds), as the kernel returns them."""
    return ClockStatus(state, status, maxerror_us / 1e6, esterror_us / 1e6)


def read_kernel_clock() -> ClockStatus:
    """Read (never set: modes = 0) the kernel's clock state with adjtimex(2); no privilege needed."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    tx = _Timex()
    tx.modes = 0
    state = libc.adjtimex(ctypes.byref(tx))
    if state < 0:
        err = ctypes.get_errno()
        raise ClockError(f"cannot read the clock state (adjtimex: {os.strerror(err)}); a unit with ProtectClock= "
                         "or a seccomp filter denying @clock blocks even reading it")
    return status_from_timex(state, tx.status, tx.maxerror, tx.esterror)


@dataclass(frozen=True)
class ClockPolicy:
    """When a job refuses to act: unsynchronised, or a maximum error above the bound."""

    require_sync: bool = True
    max_error_seconds: float = DEFAULT_MAX_ERROR_SECONDS
    origin: str = "built-in"
    """Where the policy came from (a file, the command line), named in the refusal."""

    def problem(self, status: ClockStatus) -> str | None:
        """Why this clock is refused (None: it is fit, or the policy does not require it)."""
        if not self.require_sync:
            return None
        if not status.synchronised:
            return f"the clock of this host is not synchronised ({status.describe()})"
        if status.max_error_seconds > self.max_error_seconds:
            return (f"the clock of this host may be off by up to {status.max_error_seconds:.3f} s, more than the "
                    f"{self.max_error_seconds:g} s allowed ({status.describe()})")
        return None


def check_clock(policy: ClockPolicy | None, action: str, status: ClockStatus | None = None) -> ClockStatus | None:
    """Raise :class:`ClockError` when ``policy`` refuses the clock; the status read (None: no policy, not read).

    ``action`` completes the refusal: "nothing was signed", "nothing was published".
    """
    if policy is None or not policy.require_sync:
        return status
    status = status or read_kernel_clock()
    problem = policy.problem(status)
    if problem is not None:
        raise ClockError(f"{problem}; {action} (a CRL's dates come from this clock; required by {policy.origin}: "
                         "see chronyc tracking, and docs/provisioning.md, 'Time and firewall')")
    return status


def read_clock_or_none() -> ClockStatus | None:
    """The clock state for the metrics, or None when it cannot be read (the metrics then omit it)."""
    try:
        return read_kernel_clock()
    except (ClockError, OSError):
        return None


def host_policy(path: str | Path = HOST_CONFIG) -> ClockPolicy | None:
    """The host's requirement from ``path`` (None when the file does not exist)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DefinitionError(str(path), "", f"cannot read the clock requirement ({exc})",
                              '{"require_sync": true, "max_error_seconds": 1.0}') from None
    if not isinstance(data, dict) or not isinstance(data.get("require_sync"), bool):
        raise DefinitionError(str(path), "require_sync", "missing or not a boolean", "true or false")
    limit = data.get("max_error_seconds", DEFAULT_MAX_ERROR_SECONDS)
    if isinstance(limit, bool) or not isinstance(limit, int | float) or limit <= 0:
        raise DefinitionError(str(path), "max_error_seconds", f"{limit!r} is not a positive number of seconds",
                              "a number > 0, e.g. 1.0")
    return ClockPolicy(data["require_sync"], float(limit), str(path))


def resolve_policy(require: bool | None, max_error: float | None,
                   config: str | Path = HOST_CONFIG) -> ClockPolicy | None:
    """The policy of a command line: its flags, else the host's file, else None (report only)."""
    base = host_policy(config)
    if require is None and max_error is None:
        return base
    return ClockPolicy(
        require if require is not None else (base.require_sync if base else True),
        max_error if max_error is not None else (base.max_error_seconds if base else DEFAULT_MAX_ERROR_SECONDS),
        "the command line")


def add_clock_arguments(p: argparse.ArgumentParser, verb: str) -> None:
    """The clock requirement's flags, shared by ceremony-crl-sign and ceremony-crl-publish."""
    p.add_argument("--require-clock-sync", action=argparse.BooleanOptionalAction, default=None,
                   help=f"refuse to {verb} unless the kernel says the clock is synchronised within --max-clock-error "
                        f"(default: as {HOST_CONFIG} says, written by the role host_baseline; without it, only report)")
    p.add_argument("--max-clock-error", type=float, default=None,
                   help="largest maximum clock error accepted, in seconds (default: the file's, else 1.0)")
    p.add_argument("--clock-config", default=str(HOST_CONFIG),
                   help=f"the host's clock requirement (default {HOST_CONFIG})")
