"""Console commands of the CA host: ``ceremony-revoke`` and ``ceremony-registry`` (backup, restore, verify, list).

They are installed with the wheel, so a provisioned subordinate CA host needs no checkout: the
registry's path, its backup directory and the CRL job's name come from the host's configuration
file, ``/etc/ceremony/<ca>.conf``, written by the ``subordinate_ca`` role (``--config`` names another;
``--registry`` and ``--backup-dir`` override it). Never a default under ``out/``: on the CA host a
wrong path must be an error, not a new empty registry.

Revocation is the engine's (:meth:`ceremony.registry.Registry.revoke`, the one ``invoke ca.revoke``
calls); the serial and the reason are checked before the registry is even opened. Every anticipated
failure is one line ``error: <message>`` on stderr naming the file or option and what is allowed, a
non-zero exit status, and nothing changed.
"""

from __future__ import annotations

import argparse
import configparser
import os
import pwd
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ceremony.ca import registry_backup as rb
from ceremony.ca.registry import (
    REVOCATION_REASONS,
    SCHEMA_VERSION,
    Registry,
    parse_invalidity_date,
    parse_reason,
    parse_serial_text,
)
from ceremony.common.errors import CeremonyError, DefinitionError, RegistryError
from ceremony.common.syslog import send_to_syslog

CONFIG_DIR = Path("/etc/ceremony")


CONFIG_SECTION = "registry"


@dataclass(frozen=True)
class HostConfig:
    """One CA's registry settings on its host, as the role wrote them."""

    file: Path | None
    ca: str
    registry: Path
    backup_dir: Path | None
    keep: int | None
    crl_service: str | None
    crl_timer_schedule: str | None
    user: str | None


def _read_config(path: Path) -> HostConfig:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise DefinitionError(str(path), "", f"cannot read the host's CA configuration ({exc.strerror})",
                              "a file written by the subordinate_ca role, readable by the CA user; or give "
                              "--registry") from None
    except configparser.Error as exc:
        raise DefinitionError(str(path), "", f"not an INI file ({str(exc).splitlines()[0]})",
                              f"a [{CONFIG_SECTION}] section with ca, path, backup_dir, keep") from None
    if not parser.has_section(CONFIG_SECTION):
        raise DefinitionError(str(path), f"[{CONFIG_SECTION}]", "section missing",
                              "the file the subordinate_ca role writes")
    section = parser[CONFIG_SECTION]
    for key in ("ca", "path"):
        if not section.get(key, "").strip():
            raise DefinitionError(str(path), f"{CONFIG_SECTION}.{key}", "missing or empty",
                                  "the CA's name" if key == "ca" else "the registry file's absolute path")
    registry = Path(section["path"].strip())
    if not registry.is_absolute():
        raise DefinitionError(str(path), f"{CONFIG_SECTION}.path", f"{registry} is not an absolute path",
                              "an absolute path such as /var/lib/ceremony/registry/registry.sqlite3")
    keep_text = section.get("keep", "").strip()
    keep = None
    if keep_text:
        if not keep_text.isdigit() or int(keep_text) < 1:
            raise DefinitionError(str(path), f"{CONFIG_SECTION}.keep", f"{keep_text!r} is not a number of backups",
                                  "an integer, 1 or more")
        keep = int(keep_text)
    backup_dir = section.get("backup_dir", "").strip()
    return HostConfig(path, section["ca"].strip(), registry, Path(backup_dir) if backup_dir else None, keep,
                      section.get("crl_service", "").strip() or None,
                      section.get("crl_schedule", "").strip() or None, section.get("user", "").strip() or None)


def load_host_config(config: str | None, ca: str | None, registry: str | None,
                     config_dir: Path = CONFIG_DIR) -> HostConfig:
    """The settings for this run: ``--config`` or ``/etc/ceremony/<ca>.conf`` (the only one there when
    ``--ca`` is not given), then ``--registry`` over it; a registry path alone needs no file."""
    if config is None and registry is not None and ca is None:
        return HostConfig(None, "", Path(registry), None, None, None, None, None)
    if config is not None:
        path = Path(config)
    elif ca is not None:
        path = config_dir / f"{ca}.conf"
    else:
        found = sorted(config_dir.glob("*.conf")) if config_dir.is_dir() else []
        if len(found) != 1:
            listed = ", ".join(p.stem for p in found) or "none"
            raise RegistryError(f"{config_dir}: {'no' if not found else 'more than one'} CA configuration "
                                f"(<ca>.conf, written by the subordinate_ca role; found: {listed}); give --ca CA, "
                                "--config FILE or --registry PATH")
        path = found[0]
    if not path.exists():
        raise DefinitionError(str(path), "", "no such file",
                              "the CA configuration the subordinate_ca role writes (/etc/ceremony/<ca>.conf); "
                              "or give --registry PATH")
    loaded = _read_config(path)
    if ca is not None and loaded.ca != ca:
        raise DefinitionError(str(path), f"{CONFIG_SECTION}.ca", f"names CA {loaded.ca!r}, not {ca!r}",
                              f"the configuration of CA {ca!r}")
    if registry is not None:
        loaded = HostConfig(loaded.file, loaded.ca, Path(registry), loaded.backup_dir, loaded.keep,
                            loaded.crl_service, loaded.crl_timer_schedule, loaded.user)
    return loaded


def _refuse_root_on_a_ca_file(path: Path) -> None:
    """Root writing in the registry's directory would leave files (the copy, -wal, -shm) the CA user cannot
    use: the CRL job would then fail. Run as the file's owner (the CA user), as the docs say."""
    if os.geteuid() != 0:
        return
    target = path if path.exists() else path.parent
    try:
        owner = target.stat().st_uid
    except OSError:
        return
    if owner != 0:
        try:
            name = pwd.getpwuid(owner).pw_name
        except KeyError:
            name = str(owner)
        raise RegistryError(f"{target}: belongs to {name}; run this command as that user (runuser -u {name} -- "
                            f"{Path(sys.argv[0]).name} ...), never as root: files root creates there would be "
                            "unusable to the CRL job; nothing was changed")


def _fail(exc: CeremonyError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return exc.exit_code


def _revoke_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ceremony-revoke",
        description="Revoke a certificate in the CA's registry on this host; the CRL job publishes it "
                    "(a CRL is due as soon as the number of revocations changes).")
    p.add_argument("serial", help="serial number in hexadecimal (as openssl x509 -serial prints it; 0x and colons "
                                  "allowed)")
    p.add_argument("--reason", required=True, metavar="REASON",
                   help=f"RFC 5280 reason: {', '.join(REVOCATION_REASONS)}")
    p.add_argument("--invalidity-date", metavar="DATE",
                   help="when the key is known or suspected to have become unusable (ISO 8601, UTC without a zone; "
                        "not in the future)")
    p.add_argument("--ca", help="the CA, by its name in the definition: reads /etc/ceremony/<ca>.conf (default: the "
                                "only configuration there)")
    p.add_argument("--config", help="the CA configuration file (default /etc/ceremony/<ca>.conf)")
    p.add_argument("--registry", help="the registry file (default: path in the CA configuration)")
    return p


def revoke_main(argv: Sequence[str] | None = None) -> int:
    """``ceremony-revoke SERIAL --reason R [--invalidity-date D]``: one revocation, then the next step."""
    args = _revoke_parser().parse_args(argv)
    try:
        number = parse_serial_text(args.serial)
        parse_reason(args.reason)
        invalid = parse_invalidity_date(args.invalidity_date) if args.invalidity_date else None
        conf = load_host_config(args.config, args.ca, args.registry)
        _refuse_root_on_a_ca_file(conf.registry)
        with Registry.open(conf.registry) as reg:
            changed = reg.revoke(number, args.reason, invalidity_date=invalid)
            record = reg.get(number)
    except CeremonyError as exc:
        return _fail(exc)
    assert record is not None and record.revoked_at is not None
    if not changed:
        print(f"already revoked: {number:x} {record.subject} since {record.revoked_at:%Y-%m-%dT%H:%M:%SZ} "
              f"({record.reason}); nothing changed")
        return 0
    extra = f", invalid since {record.invalidity_date:%Y-%m-%dT%H:%M:%SZ}" if record.invalidity_date else ""
    print(f"revoked {number:x} {record.subject} at {record.revoked_at:%Y-%m-%dT%H:%M:%SZ} ({args.reason}{extra}) "
          f"in {conf.registry}")
    print(next_step(conf))
    return 0


def next_step(conf: HostConfig) -> str:
    """What happens next, and how to make it happen now (BR 4.9.7: a CRL within 24 hours)."""
    if conf.crl_service:
        schedule = f" ({conf.crl_timer_schedule})" if conf.crl_timer_schedule else ""
        unit = conf.crl_service.removesuffix(".service")
        return (f"next: the CRL job{schedule} signs a CRL with it at its next run, and the publishers pull it "
                f"within minutes; to sign now, as root: systemctl start {conf.crl_service} (without systemd: the "
                f"command in /etc/cron.d/{unit.replace('@', '-')}, as the CA user); then check: journalctl -u "
                f"{conf.crl_service}")
    return ("next: the CRL job signs a CRL with it at its next run (ceremony-crl-sign, on its timer); sign one now "
            "with the job's command line (docs/crl.md)")


def _registry_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ceremony-registry",
        description="Back up, verify, list and restore the CA's certificate registry on this host (docs/registry.md).")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--ca", help="the CA: reads /etc/ceremony/<ca>.conf (default: the only configuration there)")
    common.add_argument("--config", help="the CA configuration file (default /etc/ceremony/<ca>.conf)")
    common.add_argument("--registry", help="the registry file (default: path in the CA configuration)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    b = sub.add_parser("backup", parents=[common], help="take a verified online backup, then apply the retention")
    b.add_argument("--backup-dir", help="where backups go (default: backup_dir in the CA configuration)")
    b.add_argument("--keep", type=int, help="keep this many newest backups (default: keep in the CA configuration; "
                                            "none removed when neither says)")
    b.add_argument("--syslog", action="store_true",
                   help="also send the result line to syslog, tag ceremony-registry-backup (for cron)")
    v = sub.add_parser("verify", help="check a backup or registry file: integrity, schema version, counts")
    v.add_argument("file", help="the backup (or registry) file")
    ls = sub.add_parser("list", parents=[common], help="the registry's backups, newest first")
    ls.add_argument("--backup-dir", help="where backups are (default: backup_dir in the CA configuration)")
    r = sub.add_parser("restore", parents=[common],
                       help="restore the registry from a verified backup; the current file is kept aside")
    r.add_argument("backup", help="the backup file (see: ceremony-registry list)")
    return p


def _backup(args: argparse.Namespace, conf: HostConfig) -> int:
    """One verified backup and the retention; under cron (``--syslog``) the line also goes to syslog."""
    try:
        backup_dir = Path(args.backup_dir) if args.backup_dir else conf.backup_dir
        if backup_dir is None:
            raise RegistryError("no backup directory: give --backup-dir DIR (or backup_dir in the CA configuration)")
        keep = args.keep if args.keep is not None else conf.keep
        _refuse_root_on_a_ca_file(backup_dir)
        line = rb.backup_registry(conf.registry, backup_dir, keep=keep).describe()
    except CeremonyError as exc:
        if args.syslog:
            send_to_syslog("ceremony-registry-backup", "err", [f"error: {exc}"])
        return _fail(exc)
    print(line)
    if args.syslog:
        send_to_syslog("ceremony-registry-backup", "info", [line])
    return 0


def registry_main(argv: Sequence[str] | None = None) -> int:
    args = _registry_parser().parse_args(argv)

    try:
        if args.command == "verify":
            if Path(args.file).is_file() and rb.is_wal(Path(args.file)):  # a live registry: SQLite may write -shm
                _refuse_root_on_a_ca_file(Path(args.file))
            facts = rb.inspect(args.file)
            print(f"{args.file}: integrity ok, {facts.describe()}")
            return 0
        conf = load_host_config(args.config, args.ca, args.registry)
        if args.command == "backup":
            return _backup(args, conf)
        if args.command == "list":
            dirs = [Path(args.backup_dir)] if args.backup_dir else ([conf.backup_dir] if conf.backup_dir else [])
            found = rb.list_backups(conf.registry, dirs)
            if not found:
                print(f"no backup of {conf.registry} in {', '.join(map(str, [conf.registry.parent, *dirs]))}")
            for item in found:
                kind = (f"before the migration v{item.schema_version} -> v{item.pre_migration_to}"
                        if item.pre_migration_to else f"schema v{item.schema_version}")
                print(f"{item.taken:%Y-%m-%dT%H:%M:%SZ}  {item.path}  ({kind}, {item.path.stat().st_size} bytes)")
            return 0
        _refuse_root_on_a_ca_file(conf.registry)
        result = rb.restore_registry(args.backup, conf.registry, schema_version=SCHEMA_VERSION)
        for line in result.lines():
            print(line)
        print("next: run the CRL job once and read its line (docs/registry.md, 'Restore'); it refuses a CRL that "
              "would drop an unexpired revocation")
        return 0
    except CeremonyError as exc:
        return _fail(exc)
    except OSError as exc:
        print(f"error: {exc.filename or args.command}: {exc.strerror}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(registry_main())
