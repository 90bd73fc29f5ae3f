#!/usr/bin/env python3
"""Throwaway Debian 12 test hosts without a container engine.

There is no docker here, so the infrastructure tests build their own hosts:

* one debootstrap root filesystem with every package the roles declare, built once and cached
  as a tarball (``CEREMONY_TESTHOSTS_CACHE``, default ``/var/cache/ceremony-testhosts``); the
  hosts have no way to the Debian mirror, so the roles find their packages already installed;
* each host is a copy of it under ``CEREMONY_TESTHOSTS_DIR`` (default
  ``/var/tmp/ceremony-testhosts``) with its own network namespace;
* online hosts (``subca``, ``publisher``, ``publisher2``) get a veth link to the controller and
  run ``sshd`` chrooted inside their namespace; each publisher has a link to a ``client`` namespace
  that plays the relying party fetching CRLs, and a link to ``subca`` over which its timer pulls
  the new CRLs (a host route sends the signer's address, 203.0.113.2, over that link, so every
  publisher reaches the signer under the one address the inventory gives);
* the offline root host has only loopback; Ansible reaches it through the chroot connection
  with a ``chroot`` wrapper that first enters its namespace, so even its commands see no network.

Addresses come from the documentation ranges TEST-NET-3 and TEST-NET-2 (RFC 5737), on /30
links whose routes exist only between the namespaces this script created; ``up`` refuses to
start when the machine already routes one of them (some machines use TEST-NET-1 themselves).
``down`` kills every process inside the hosts, unmounts, deletes the namespaces and the copies;
it is safe to run twice and runs in ``finally`` blocks.

Usage: ``scripts/testhosts.py build|wheels|up|down|status`` (also ``invoke hosts.up`` / ``hosts.down``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SUITE = "bookworm"
MIRROR = os.environ.get("CEREMONY_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CACHE_DIR = Path(os.environ.get("CEREMONY_TESTHOSTS_CACHE", "/var/cache/ceremony-testhosts"))
STATE_DIR = Path(os.environ.get("CEREMONY_TESTHOSTS_DIR", "/var/tmp/ceremony-testhosts"))
PREFIX = "csuite-"

# Everything the roles install, so that a converge inside a namespace without a mirror finds it
# present. Changing this list changes the cache key and forces a rebuild.
IMAGE_PACKAGES = (
    "python3",
    "python3-venv",
    "python3-apt",  # Ansible's apt module
    "python3-packaging",  # Ansible's pip module
    "openssh-server",
    "iproute2",
    "procps",
    "softhsm2",
    "opensc",
    "openssl",
    "nginx-light",
    "cron",
    "systemd",  # systemd-analyze verify for the CRL timer
    "curl",
    "rsync",  # the publishers pull CRLs with rsync over SSH; the signer restricts them with rrsync -ro
    "ca-certificates",
    "acl",  # become_user to unprivileged users
    "prometheus-node-exporter",
    "chrony",  # role host_baseline configures it; never started on the test hosts (it would set this machine's clock)
    "nftables",  # role host_baseline loads its rules inside each host's own network namespace
    "libpango-1.0-0",
    "libpangoft2-1.0-0",
)
IMAGE_VERSION = "1"


@dataclass(frozen=True)
class Link:
    """A veth pair between two namespaces (``None`` is the controller's own namespace)."""

    name: str
    left_ns: str | None
    left_addr: str
    right_ns: str
    right_addr: str


@dataclass(frozen=True)
class Route:
    """A host route inside a namespace: ``destination`` through the neighbour ``via``."""

    ns: str
    destination: str
    via: str


@dataclass(frozen=True)
class Host:
    name: str
    ssh: bool
    address: str | None = None
    links: tuple[Link, ...] = field(default_factory=tuple)
    routes: tuple[Route, ...] = field(default_factory=tuple)

    @property
    def ns(self) -> str:
        return PREFIX + self.name


HOSTS: tuple[Host, ...] = (
    Host("offline-root", ssh=False),
    Host(
        "subca",
        ssh=True,
        address="203.0.113.2",
        links=(Link("csv-subca", None, "203.0.113.1/30", PREFIX + "subca", "203.0.113.2/30"),),
    ),
    Host(
        "publisher",
        ssh=True,
        address="203.0.113.6",
        links=(
            Link("csv-pub", None, "203.0.113.5/30", PREFIX + "publisher", "203.0.113.6/30"),
            Link("csv-client", PREFIX + "client", "198.51.100.1/30", PREFIX + "publisher", "198.51.100.2/30"),
            Link("csv-pull", PREFIX + "subca", "203.0.113.13/30", PREFIX + "publisher", "203.0.113.14/30"),
        ),
        routes=(Route(PREFIX + "publisher", "203.0.113.2/32", "203.0.113.13"),),
    ),
    Host(
        "publisher2",
        ssh=True,
        address="203.0.113.10",
        links=(
            Link("csv-pub2", None, "203.0.113.9/30", PREFIX + "publisher2", "203.0.113.10/30"),
            Link("csv-client2", PREFIX + "client", "198.51.100.5/30", PREFIX + "publisher2", "198.51.100.6/30"),
            Link("csv-pull2", PREFIX + "subca", "203.0.113.17/30", PREFIX + "publisher2", "203.0.113.18/30"),
        ),
        routes=(Route(PREFIX + "publisher2", "203.0.113.2/32", "203.0.113.17"),),
    ),
)
CLIENT_NS = PREFIX + "client"
PUBLISHER_FROM_CLIENT = "198.51.100.2"
#: Every publisher's address as the client namespace reaches it.
PUBLISHERS_FROM_CLIENT = {"publisher": "198.51.100.2", "publisher2": "198.51.100.6"}


class TestHostError(RuntimeError):
    """A step of building or starting the test hosts failed; the message says which."""


def run(*args: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), text=True, capture_output=True, **kw)  # type: ignore[call-overload]
    if check and proc.returncode != 0:
        raise TestHostError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc


def image_key() -> str:
    text = json.dumps([SUITE, MIRROR, IMAGE_PACKAGES, IMAGE_VERSION])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def image_path() -> Path:
    return CACHE_DIR / f"rootfs-{SUITE}-{image_key()}.tar"


REPO = Path(__file__).resolve().parent.parent


def wheelhouse(python: str | None = None) -> Path:
    """Wheels of the suite and its pinned dependencies, for hosts that cannot reach PyPI.

    The dependencies are cached per ``pyproject.toml``; the suite's own wheel is rebuilt on
    every call so the hosts run the code of the working tree.
    """
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:12]
    target = CACHE_DIR / f"wheelhouse-{key}"
    py = python or sys.executable
    if not target.exists():
        partial = CACHE_DIR / f"wheelhouse-{key}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        run(py, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(partial), str(REPO))
        partial.rename(target)
    for old in target.glob("ceremony_suite-*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory() as build:
        run(py, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(target), str(REPO),
            env=dict(os.environ, PIP_NO_CACHE_DIR="1"), cwd=build)
    return target


def host_root(host: Host | str) -> Path:
    name = host if isinstance(host, str) else host.name
    return STATE_DIR / "roots" / name


def build_image(log: bool = True) -> Path:
    """Return the cached root filesystem tarball, building it first when absent.

    Why two phases: daemons in ``--include`` would be started by their postinst inside the build
    chroot (in the machine's own network namespace). A minbase system comes first, then a
    ``policy-rc.d`` that forbids starting services, then the packages.
    """
    target = image_path()
    if target.exists():
        return target
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="build-", dir=CACHE_DIR))
    root = work / "rootfs"
    try:
        if log:
            print(f"testhosts: debootstrap {SUITE} from {MIRROR} (first run only)", flush=True)
        run("debootstrap", "--variant=minbase", SUITE, str(root), MIRROR)
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
        with mounted_proc(root):
            env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
            run("chroot", str(root), "apt-get", "update", "-qq", env=env)
            run(
                "chroot", str(root), "apt-get", "install", "-y", "-qq", "--no-install-recommends",
                *IMAGE_PACKAGES, env=env,
            )
            run("chroot", str(root), "apt-get", "clean", env=env)
        kill_inside(root)
        policy.unlink()
        (root / "etc/resolv.conf").write_text("")
        for key in (root / "etc/ssh").glob("ssh_host_*"):
            key.unlink()  # every host generates its own
        for lists in (root / "var/lib/apt/lists").glob("*_*"):
            lists.unlink()
        partial = target.with_suffix(".tar.partial")
        run("tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(partial), ".")
        partial.rename(target)
        if log:
            print(f"testhosts: image {target.name} built in {time.monotonic() - started:.0f} s", flush=True)
        return target
    finally:
        kill_inside(root)
        unmount_below(root)
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def mounted_proc(root: Path) -> Iterator[None]:
    (root / "proc").mkdir(exist_ok=True)
    run("mount", "-t", "proc", "proc", str(root / "proc"))
    try:
        yield
    finally:
        unmount_below(root)


def mounts_below(root: Path) -> list[str]:
    prefix = str(root.resolve()) if root.exists() else str(root)
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found


def unmount_below(root: Path) -> None:
    for point in sorted(mounts_below(root), key=len, reverse=True):
        if run("umount", point, check=False).returncode != 0:
            run("umount", "-l", point, check=False)
    left = mounts_below(root)
    if left:
        raise TestHostError(f"could not unmount {left}")


def pids_inside(root: Path) -> list[int]:
    """Processes whose root directory is inside ``root`` (sshd, nginx, anything a test left)."""
    want = str(root.resolve()) if root.exists() else str(root)
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            proc_root = os.readlink(entry / "root")
        except OSError:
            continue
        if proc_root == want or proc_root.startswith(want + "/"):
            pids.append(int(entry.name))
    return pids


def kill_inside(root: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = pids_inside(root)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        for _ in range(30):
            if not pids_inside(root):
                return
            time.sleep(0.1)


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """Hold the test hosts for one user at a time: the namespaces and paths are fixed names, so a
    second test run on the same machine waits instead of tearing the first one's hosts down."""
    import fcntl

    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR.parent / (STATE_DIR.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def namespaces() -> set[str]:
    out = run("ip", "netns", "list", check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def in_ns(ns: str | None, *args: str) -> tuple[str, ...]:
    return ("ip", "netns", "exec", ns, *args) if ns else args


def ssh_dir() -> Path:
    return STATE_DIR / "ssh"


def chroot_wrapper(host: Host) -> Path:
    return STATE_DIR / "bin" / f"chroot-{host.name}"


def write_ssh_material() -> Path:
    directory = ssh_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = directory / "id_ed25519"
    if not key.exists():
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ceremony-testhosts", "-f", str(key))
    config = directory / "config"
    lines = []
    for host in HOSTS:
        if host.ssh:
            lines += [
                f"Host {host.name}",
                f"  HostName {host.address}",
                "  User root",
                f"  IdentityFile {key}",
                "  IdentitiesOnly yes",
                "  StrictHostKeyChecking no",
                "  UserKnownHostsFile /dev/null",
                "  LogLevel ERROR",
                "  ConnectTimeout 10",
                "",
            ]
    config.write_text("\n".join(lines))
    return config


def up(log: bool = True) -> dict[str, object]:
    """Bring every test host up from the cached image; on any failure tear down what was made."""
    image = build_image(log=log)
    if namespaces() & ({h.ns for h in HOSTS} | {CLIENT_NS}):
        down()
    started = time.monotonic()
    try:
        config = write_ssh_material()
        pubkey = (ssh_dir() / "id_ed25519.pub").read_text()
        for host in HOSTS:
            root = host_root(host)
            root.mkdir(parents=True)
            run("tar", "--numeric-owner", "--xattrs", "-C", str(root), "-xf", str(image))
            (root / "etc/hostname").write_text(host.name + "\n")
            (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {host.name}\n")
            run("mount", "-t", "proc", "proc", str(root / "proc"))
            run("ip", "netns", "add", host.ns)
            run(*in_ns(host.ns, "ip", "link", "set", "lo", "up"))
            if host.ssh:
                dot_ssh = root / "root/.ssh"
                dot_ssh.mkdir(mode=0o700, exist_ok=True)
                (dot_ssh / "authorized_keys").write_text(pubkey)
                (dot_ssh / "authorized_keys").chmod(0o600)
            else:
                # Installed as the offline root: the marker the offline_root role's guard requires
                # (docs/provisioning.md, "Installing the offline root workstation").
                (root / "etc/ceremony").mkdir(mode=0o755, exist_ok=True)
                (root / "etc/ceremony/offline-root").write_text(host.name + "\n")
                wrapper = chroot_wrapper(host)
                wrapper.parent.mkdir(parents=True, exist_ok=True)
                # `ip netns exec` runs in a private mount namespace with /sys showing this
                # namespace's interfaces; binding it into the chroot lets the offline check see
                # them, and the bind vanishes with the command (nothing to unmount).
                wrapper.write_text(
                    "#!/bin/sh\n"
                    f"exec ip netns exec {host.ns} unshare --uts /bin/sh -c "
                    f"'hostname {host.name} && mount --bind /sys \"$0/sys\" && "
                    "exec /usr/sbin/chroot \"$0\" \"$@\"' \"$@\"\n")
                wrapper.chmod(0o755)
        check_addresses_free()
        run("ip", "netns", "add", CLIENT_NS)
        run(*in_ns(CLIENT_NS, "ip", "link", "set", "lo", "up"))
        for host in HOSTS:
            for link in host.links:
                make_link(link)
        for host in HOSTS:
            for route in host.routes:
                run(*in_ns(route.ns, "ip", "route", "add", route.destination, "via", route.via))
        for host in HOSTS:
            if host.ssh:
                start_sshd(host)
        for host in HOSTS:
            if host.ssh:
                wait_ssh(host, config)
    except BaseException:
        down()
        raise
    state = {
        "ssh_config": str(config),
        "hosts": {h.name: {"root": str(host_root(h)), "ns": h.ns, "address": h.address} for h in HOSTS},
        "client_ns": CLIENT_NS,
        "seconds": round(time.monotonic() - started, 1),
    }
    (STATE_DIR / "state.json").write_text(json.dumps(state, indent=2))
    return state


def check_addresses_free() -> None:
    """Refuse to shadow an address range the machine itself already uses."""
    routes = run("ip", "-4", "route", "show", "table", "all").stdout + run("ip", "-4", "addr").stdout
    for prefix in ("203.0.113.", "198.51.100."):
        if prefix in routes:
            raise TestHostError(f"the machine already uses {prefix}0/24; the test hosts need it for their links")


def make_link(link: Link) -> None:
    peer = link.name + "p"
    run("ip", "link", "add", link.name, "type", "veth", "peer", "name", peer)
    if link.left_ns:
        run("ip", "link", "set", link.name, "netns", link.left_ns)
    run("ip", "link", "set", peer, "netns", link.right_ns)
    run(*in_ns(link.left_ns, "ip", "addr", "add", link.left_addr, "dev", link.name))
    run(*in_ns(link.left_ns, "ip", "link", "set", link.name, "up"))
    run(*in_ns(link.right_ns, "ip", "addr", "add", link.right_addr, "dev", peer))
    run(*in_ns(link.right_ns, "ip", "link", "set", peer, "up"))


def start_sshd(host: Host) -> None:
    root = host_root(host)
    (root / "run/sshd").mkdir(parents=True, exist_ok=True)
    run(*in_ns(host.ns, "chroot", str(root), "ssh-keygen", "-A"))
    # Its own UTS namespace too, so the host answers to its own name.
    run(*in_ns(host.ns, "unshare", "--uts", "/bin/sh", "-c",
               f'hostname {host.name} && exec chroot "$0" /usr/sbin/sshd -o ListenAddress={host.address}',
               str(root)))


def wait_ssh(host: Host, config: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        proc = run("ssh", "-F", str(config), "-o", "BatchMode=yes", host.name, "true", check=False)
        if proc.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise TestHostError(f"sshd on {host.name} did not answer: {proc.stderr.strip()}")
        time.sleep(0.3)


def down() -> None:
    """Remove everything ``up`` made, whatever state it is in. Safe to call twice."""
    roots = STATE_DIR / "roots"
    errors = []
    for root in sorted(roots.iterdir()) if roots.exists() else []:
        kill_inside(root)
    for ns in sorted(namespaces()):
        if ns.startswith(PREFIX):
            for pid in run("ip", "netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            run("ip", "netns", "del", ns, check=False)
    for root in sorted(roots.iterdir()) if roots.exists() else []:
        try:
            unmount_below(root)
        except TestHostError as exc:
            errors.append(str(exc))
            continue
        # --one-file-system: never follow into a mount that somehow survived
        run("rm", "-rf", "--one-file-system", str(root), check=False)
    for stale in ("state.json",):
        with contextlib.suppress(FileNotFoundError):
            (STATE_DIR / stale).unlink()
    if errors:
        raise TestHostError("; ".join(errors))


def status() -> dict[str, object]:
    ours = sorted(ns for ns in namespaces() if ns.startswith(PREFIX))
    roots = STATE_DIR / "roots"
    return {
        "image": str(image_path()) if image_path().exists() else None,
        "namespaces": ours,
        "roots": sorted(p.name for p in roots.iterdir()) if roots.exists() else [],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["build", "wheels", "up", "down", "status"])
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("testhosts: needs root (debootstrap, mount, ip netns)", file=sys.stderr)
        return 2
    try:
        if args.action == "build":
            print(build_image())
        elif args.action == "wheels":
            print(wheelhouse())
        elif args.action == "up":
            print(json.dumps(up(), indent=2))
        elif args.action == "down":
            down()
        else:
            print(json.dumps(status(), indent=2))
    except TestHostError as exc:
        print(f"testhosts: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
