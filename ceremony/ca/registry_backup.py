"""Backups of the certificate registry: taken online, verified before they are kept, restored verified.

The registry (:mod:`ceremony.ca.registry`) is the only record of which certificates a CA issued and
which it revoked: a lost revocation silently un-revokes a certificate at the next CRL (the CRL job
refuses that, :mod:`ceremony.crl.checks`, but cannot bring the entry back). So:

* **Backup** (:func:`backup_registry`) uses SQLite's online backup API from a read transaction:
  the copy is the registry as it was at one instant, even while the CRL job reads or an operator
  revokes (WAL mode: readers never block the writer). The copy is written under a temporary name,
  switched to a self-contained rollback-journal file, fsynced, then *verified* — ``PRAGMA
  integrity_check``, the schema version and the row counts equal to the source's at that instant —
  and only then linked into place as ``<stem>-<UTC timestamp>-v<schema>.sqlite3``. The newest
  ``keep`` of those are kept; other files in the directory are never touched.
* **Before a migration** :meth:`ceremony.ca.registry.Registry.open` calls :func:`backup_before_migration`:
  ``<stem>-pre-migration-v<old>-to-v<new>-<UTC timestamp>.sqlite3`` next to the registry, never
  pruned. The way back is to reinstall the previous suite and restore that file (docs/registry.md).
* **Restore** (:func:`restore_registry`) verifies the backup (integrity, a schema this suite knows),
  copies it under a temporary name in the registry's directory, verifies the copy, keeps whatever
  is at the registry's path aside (``.replaced-<UTC timestamp>``, with any ``-wal``/``-shm`` files, so
  a stale write-ahead log can never be replayed into the restored file), and links the copy into
  place. Nothing is deleted. It reports what was restored and which revocations of the file kept
  aside the backup does not hold (to be revoked again).
* **The provisioning marker** (:func:`write_marker`) records that a registry was created on this
  host; when the marker is there and the registry is not, :func:`missing_registry_message` is the
  refusal (where the newest backup is and the exact restore command), never a new empty registry.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ceremony.ca.reasons import REASON_NAMES
from ceremony.common.errors import RegistryError
from ceremony.common.fileio import replace_atomically

TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"


#: ``registry-20261206T203000Z-v1.sqlite3``: a scheduled (or manual) backup.
_SCHEDULED = re.compile(r"^(?P<stem>.+)-(?P<ts>\d{8}T\d{6}Z)-v(?P<version>\d+)\.sqlite3$")


#: ``registry-pre-migration-v1-to-v2-20261206T203000Z.sqlite3``: taken by Registry.open before a migration.
_PRE_MIGRATION = re.compile(
    r"^(?P<stem>.+)-pre-migration-v(?P<version>\d+)-to-v(?P<new>\d+)-(?P<ts>\d{8}T\d{6}Z)\.sqlite3$")


MARKER_SUFFIX = ".provisioned.json"


#: The command installed with the wheel (a link in /usr/local/bin on the CA host).
REGISTRY_COMMAND = "ceremony-registry"


_SIDE_FILES = ("-wal", "-shm", "-journal")


@dataclass(frozen=True)
class RegistryFacts:
    """What a registry file holds, read in one transaction: enough to recognise it and compare it."""

    path: Path
    schema_version: int
    certificates: int
    revoked: int
    newest_revocation: tuple[int, datetime, str] | None  # serial, revocation time, reason name

    def describe(self) -> str:
        """One line for an operator: schema, counts and the newest revocation (serials in hex)."""
        text = (f"schema v{self.schema_version}, {self.certificates} certificate"
                f"{'s' if self.certificates != 1 else ''} ({self.revoked} revoked)")
        if self.newest_revocation is not None:
            serial, when, reason = self.newest_revocation
            text += f", newest revocation {serial:x} at {when:%Y-%m-%dT%H:%M:%SZ} ({reason})"
        else:
            text += ", no revocation"
        return text

    def same_content_as(self, other: RegistryFacts) -> bool:
        return (self.schema_version, self.certificates, self.revoked, self.newest_revocation) == (
            other.schema_version, other.certificates, other.revoked, other.newest_revocation)


@dataclass(frozen=True)
class BackupFile:
    """A backup found on disk, recognised by its name (its content is only read by :func:`inspect`)."""

    path: Path
    taken: datetime
    schema_version: int
    pre_migration_to: int | None = None


@dataclass
class BackupResult:
    backup: Path
    facts: RegistryFacts
    removed: list[Path] = field(default_factory=list)

    def describe(self) -> str:
        line = f"backup {self.backup}: verified ({self.facts.describe()}; integrity ok)"
        if self.removed:
            line += f"; older backups removed (retention): {', '.join(p.name for p in self.removed)}"
        return line


@dataclass
class RestoreResult:
    registry: Path
    backup: Path
    facts: RegistryFacts
    kept_aside: list[Path] = field(default_factory=list)
    replaced: RegistryFacts | None = None
    lost_revocations: list[int] = field(default_factory=list)

    def lines(self) -> list[str]:
        """What was restored, what was kept aside, and what an operator must do about lost revocations."""
        out = [f"restored {self.registry} from {self.backup}: {self.facts.describe()}"]
        if self.kept_aside:
            out.append(f"kept aside (not deleted): {', '.join(str(p) for p in self.kept_aside)}")
        if self.replaced is not None:
            out.append(f"the file kept aside held: {self.replaced.describe()}")
        if self.lost_revocations:
            shown = ", ".join(f"{s:x}" for s in self.lost_revocations[:10])
            more = f" and {len(self.lost_revocations) - 10} more" if len(self.lost_revocations) > 10 else ""
            out.append(f"warning: {len(self.lost_revocations)} revocation(s) of the file kept aside are not in the "
                       f"backup: {shown}{more}; revoke them again (ceremony-revoke) before the next CRL")
        return out


def utc_stamp(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, (os.O_RDONLY | os.O_DIRECTORY) if directory else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _facts(conn: sqlite3.Connection, path: Path) -> RegistryFacts:
    """The facts of an open registry, inside the caller's transaction (so they match a copy made in it)."""
    has_version = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone()
    has_table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'certificates'").fetchone()
    if not has_version or not has_table:
        raise RegistryError(f"{path}: not a certificate registry (no schema_version or certificates table)")
    version = int(conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0)
    total, revoked = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE status = 'revoked') FROM certificates").fetchone()
    row = conn.execute("SELECT serial, revoked_at, reason FROM certificates WHERE status = 'revoked' "
                       "ORDER BY revoked_at DESC, serial DESC LIMIT 1").fetchone()
    newest = None
    if row is not None:
        newest = (int.from_bytes(row[0], "big"), datetime.fromtimestamp(row[1], UTC),
                  REASON_NAMES.get(row[2], str(row[2])))
    return RegistryFacts(path, version, int(total), int(revoked), newest)


def _check_size(path: Path) -> None:
    """A truncated file is refused by its header: page size × page count must be the file's size."""
    with open(path, "rb") as handle:
        header = handle.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        raise RegistryError(f"{path}: not an SQLite database (header missing); it is not a usable registry backup")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    size = path.stat().st_size
    if pages and page_size * pages != size:
        raise RegistryError(f"{path}: truncated or padded ({size} bytes, the header says {pages} pages of "
                            f"{page_size} bytes = {pages * page_size}); it is not a usable registry backup")


def is_wal(path: Path) -> bool:
    """Whether the file is in WAL mode (a live registry), from its header."""
    with open(path, "rb") as handle:
        header = handle.read(20)
    return len(header) == 20 and header[18] == 2


def _connect_read(path: Path, timeout: float = 10.0) -> sqlite3.Connection:
    """A connection that only reads and leaves no side file behind.

    A file in rollback-journal mode (every backup) is opened read-only: nothing is created. A WAL
    file (a live registry) is opened read-write with ``query_only``: a read-only connection would
    create ``-wal``/``-shm`` files it cannot remove, owned by whoever ran the command.
    """
    if not is_wal(path):
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=timeout)
    conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None, timeout=timeout)
    conn.execute("PRAGMA query_only = ON")
    return conn


def inspect(path: Path | str, *, integrity: bool = True) -> RegistryFacts:
    """Check a registry file (or backup) read-only: size, ``integrity_check``, schema, and return its facts.

    Every problem is one :class:`RegistryError` naming the file; the file is never changed (a backup in
    rollback-journal mode is opened read-only and leaves no side file).
    """
    path = Path(path)
    if not path.is_file():
        raise RegistryError(f"{path}: no such file (give a registry backup: '{REGISTRY_COMMAND} list' shows them)")
    _check_size(path)
    try:
        conn = _connect_read(path)
    except sqlite3.Error as exc:
        raise RegistryError(f"{path}: cannot open ({exc})") from None
    try:
        conn.execute("BEGIN")
        if integrity:
            problems = [r[0] for r in conn.execute("PRAGMA integrity_check(5)").fetchall()]
            if problems != ["ok"]:
                raise RegistryError(f"{path}: integrity check failed ({'; '.join(problems)}); not a usable backup")
        facts = _facts(conn, path)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise RegistryError(f"{path}: integrity check failed ({exc}); not a usable registry backup") from None
    finally:
        conn.close()
    if facts.schema_version < 1:
        raise RegistryError(f"{path}: schema version {facts.schema_version} is not a registry's (allowed: 1 or more)")
    return facts


def list_backups(registry: Path | str, backup_dirs: Iterable[Path | str]) -> list[BackupFile]:
    """The backups of ``registry`` in ``backup_dirs`` and next to it, newest first (by the name's UTC time)."""
    stem = Path(registry).stem
    found: dict[Path, BackupFile] = {}
    for directory in [Path(registry).parent, *(Path(d) for d in backup_dirs)]:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            for pattern in (_SCHEDULED, _PRE_MIGRATION):
                m = pattern.match(name)
                if m and m.group("stem") == stem:
                    taken = datetime.strptime(m.group("ts"), TIMESTAMP_FORMAT).replace(tzinfo=UTC)
                    new = int(m.group("new")) if "new" in m.groupdict() else None
                    path = (directory / name).resolve()
                    found[path] = BackupFile(directory / name, taken, int(m.group("version")), new)
    return sorted(found.values(), key=lambda b: (b.taken, b.path.name), reverse=True)


def _copy_online(source: Path, directory: Path, name_for: Callable[[RegistryFacts], str], *,
                 timeout: float) -> tuple[Path, RegistryFacts]:
    """Copy ``source`` into ``directory`` through SQLite's backup API, verified; never replaces a file.

    The facts and the copy come from one read transaction (one snapshot), so the copy must match
    them exactly. ``name_for`` names the backup from the copy's facts (its schema version).
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{source.stem}.backup.", suffix=".tmp", dir=directory)
    os.fchmod(fd, 0o600)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            conn = sqlite3.connect(f"file:{source}?mode=rw", uri=True, isolation_level=None, timeout=timeout)
            conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            conn.execute("PRAGMA query_only = ON")  # a backup never changes the registry
        except sqlite3.Error as exc:
            raise RegistryError(f"{source}: cannot open the registry for a backup ({exc}); nothing written") from None
        try:
            conn.execute("BEGIN")  # the snapshot starts at the first read below and covers the copy
            expected = _facts(conn, source)
            dest = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.backup(dest)
                # Self-contained: a backup in rollback-journal mode opens read-only with no side file.
                dest.execute("PRAGMA journal_mode = DELETE")
            finally:
                dest.close()
        except sqlite3.Error as exc:
            raise RegistryError(f"{source}: backup failed ({exc}); nothing written") from None
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            conn.close()
        _fsync_path(tmp)
        got = inspect(tmp)
        final = directory / name_for(got)
        if not got.same_content_as(expected):
            raise RegistryError(f"{final}: the copy does not match the registry at the backup instant "
                                f"(copy: {got.describe()}; registry: {expected.describe()}); nothing kept")
        try:
            os.link(tmp, final)
        except FileExistsError:
            raise RegistryError(f"{final}: exists already; a backup is never overwritten") from None
        _fsync_path(directory, directory=True)
        return final, RegistryFacts(final, got.schema_version, got.certificates, got.revoked, got.newest_revocation)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def backup_registry(registry: Path | str, backup_dir: Path | str, *, keep: int | None = None,
                    now: datetime | None = None, timeout: float = 10.0) -> BackupResult:
    """Take a verified online backup of ``registry`` into ``backup_dir``, then keep the ``keep`` newest."""
    registry, backup_dir = Path(registry), Path(backup_dir)
    if keep is not None and keep < 1:
        raise RegistryError(f"keep: {keep} is not allowed (allowed: 1 or more backups to keep)")
    if not registry.is_file():
        raise RegistryError(f"{registry}: certificate registry not found; nothing to back up (check the path, "
                            f"or restore it: {REGISTRY_COMMAND} list)")
    if not backup_dir.is_dir():
        raise RegistryError(f"{backup_dir}: backup directory does not exist (the subordinate_ca role creates it, "
                            "mode 0700, owned by the CA user)")
    stamp = utc_stamp(now)
    final, facts = _copy_online(registry, backup_dir, lambda f: f"{registry.stem}-{stamp}-v{f.schema_version}.sqlite3",
                                timeout=timeout)
    removed = prune(registry, backup_dir, keep) if keep is not None else []
    return BackupResult(final, facts, removed)


def prune(registry: Path | str, backup_dir: Path | str, keep: int) -> list[Path]:
    """Remove the scheduled backups of ``registry`` in ``backup_dir`` beyond the ``keep`` newest.

    Only files named as :func:`backup_registry` names them are counted or removed; pre-migration
    backups and anything else in the directory are never touched.
    """
    stem = Path(registry).stem
    mine = []
    for name in os.listdir(backup_dir):
        m = _SCHEDULED.match(name)
        if m and m.group("stem") == stem:
            mine.append((m.group("ts"), name))
    mine.sort(reverse=True)
    removed = []
    for _ts, name in mine[keep:]:
        path = Path(backup_dir) / name
        path.unlink()
        removed.append(path)
    if removed:
        _fsync_path(Path(backup_dir), directory=True)
    return removed


def pre_migration_name(registry: Path, old: int, new: int, now: datetime | None = None) -> str:
    return f"{registry.stem}-pre-migration-v{old}-to-v{new}-{utc_stamp(now)}.sqlite3"


def backup_before_migration(registry: Path, old: int, new: int, now: datetime | None = None) -> Path:
    """Copy the registry next to it while :meth:`ceremony.ca.registry.Registry.open` holds the write lock.

    The copy is read through a second connection (SQLite refuses a backup through the connection
    that holds the write lock): with the lock held and nothing written yet, its snapshot is exactly
    the registry the migration is about to change, and no revocation can slip in between.
    """
    return _copy_online(registry, registry.parent, lambda _f: pre_migration_name(registry, old, new, now),
                        timeout=10.0)[0]


def _revoked_serials(path: Path) -> set[int] | None:
    """Serials revoked in the file at ``path``, or None when it cannot be read as a registry."""
    try:
        conn = _connect_read(path, timeout=5)
        try:
            rows = conn.execute("SELECT serial FROM certificates WHERE status = 'revoked'").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return {int.from_bytes(r[0], "big") for r in rows}


def _set_journal_mode(path: Path, mode: str) -> None:
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            got = conn.execute(f"PRAGMA journal_mode = {mode}").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise RegistryError(f"{path}: cannot prepare the restored copy ({exc}); nothing was changed") from None
    if str(got).lower() != mode.lower():
        raise RegistryError(f"{path}: cannot switch the restored copy to {mode} mode (got {got}); nothing was changed")


def restore_registry(backup: Path | str, registry: Path | str, *, schema_version: int,
                     now: datetime | None = None) -> RestoreResult:
    """Restore ``registry`` from ``backup``, verified; whatever is at the registry's path is kept aside.

    ``schema_version`` is the registry schema this suite knows (``registry.SCHEMA_VERSION``): a backup
    written by a newer suite is refused."""
    backup, registry = Path(backup), Path(registry)
    facts = inspect(backup)
    known = schema_version
    if facts.schema_version > known:
        raise RegistryError(f"{backup}: schema version {facts.schema_version} is newer than this suite knows "
                            f"(allowed: at most {known}); restore it with the suite version that wrote it; "
                            "nothing was changed")
    directory = registry.parent
    if not directory.is_dir():
        raise RegistryError(f"{directory}: the registry's directory does not exist; nothing was changed")
    stamp = utc_stamp(now)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{registry.name}.restore.", suffix=".tmp", dir=directory)
    os.fchmod(fd, 0o640)  # as Registry.open creates it: the CA's group (the CRL job) reads it
    os.close(fd)
    tmp = Path(tmp_name)
    kept: list[Path] = []
    replaced: RegistryFacts | None = None
    lost: list[int] = []
    try:
        shutil.copyfile(backup, tmp)
        _set_journal_mode(tmp, "DELETE")  # checked read-only without leaving a side file
        copy = inspect(tmp)
        if not copy.same_content_as(facts):
            raise RegistryError(f"{tmp}: the copy differs from {backup}; nothing was changed")
        restored_revoked = _revoked_serials(tmp) or set()
        # The registry's own mode (the CRL job reads while an operator revokes); the last connection
        # to close removes its -wal and -shm, so the copy is one file again.
        _set_journal_mode(tmp, "WAL")
        _fsync_path(tmp)
        if registry.exists():
            try:
                replaced = inspect(registry, integrity=False)
            except RegistryError:
                replaced = None
            before = _revoked_serials(registry)
            if before is not None:
                lost = sorted(before - restored_revoked)
        for suffix in ("", *_SIDE_FILES):
            current = Path(f"{registry}{suffix}")
            if os.path.lexists(current):
                aside = current.with_name(f"{current.name}.replaced-{stamp}")
                if os.path.lexists(aside):
                    raise RegistryError(f"{aside}: exists already; nothing was changed (try again in a second)")
                os.rename(current, aside)
                kept.append(aside)
        try:
            os.link(tmp, registry)
        except FileExistsError:
            raise RegistryError(f"{registry}: appeared while restoring (is a process still using it?); the "
                                f"restored copy was not put in place; kept aside: "
                                f"{', '.join(map(str, kept)) or 'nothing'}") from None
        _fsync_path(directory, directory=True)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return RestoreResult(registry, backup, RegistryFacts(registry, facts.schema_version, facts.certificates,
                                                         facts.revoked, facts.newest_revocation),
                         kept, replaced, lost)


def marker_path(registry: Path | str) -> Path:
    """``registry.sqlite3.provisioned.json``: beside the registry, written when it was created."""
    registry = Path(registry)
    return registry.with_name(registry.name + MARKER_SUFFIX)


def read_marker(registry: Path | str) -> dict | None:
    path = marker_path(registry)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{path}: unreadable provisioning marker ({exc}); it is never rewritten by a playbook: "
                            "fix or remove it by hand once you know where the registry is") from None
    if not isinstance(data, dict):
        raise RegistryError(f"{path}: the provisioning marker is not a JSON object")
    return data


def marker_content(registry: Path, schema_version: int, created: datetime,
                   backup_dir: str | None = None) -> dict:
    return {"registry": str(registry), "created": created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "schema_version": schema_version, "backup_dir": backup_dir,
            "note": "This host's certificate registry was created at this time. If the registry is missing, "
                    "nothing creates an empty one: restore it (docs/registry.md)."}


def write_marker(registry: Path | str, content: dict) -> Path:
    """Write (or update) the marker atomically; mode 0640 like the registry."""
    return replace_atomically(marker_path(registry), (json.dumps(content, indent=2) + "\n").encode(), mode=0o640)


def missing_registry_message(registry: Path | str, marker: dict, backup_dirs: Sequence[Path | str],
                             user: str) -> str:
    """The refusal when a registry that was created on this host is missing: where, newest backup, command."""
    registry = Path(registry)
    dirs = [str(d) for d in backup_dirs]
    backups = list_backups(registry, dirs)
    where = ", ".join([str(registry.parent), *dirs])
    if marker:
        created = marker.get("created") or "a time before the marker existed"
        why = f"it was created on this host at {created} (marker {marker_path(registry)})"
    else:
        why = "backups of it exist on this host"
    text = (f"{registry}: the certificate registry is missing, but {why}; an empty registry would silently forget "
            "every certificate and revocation, so none is created. ")
    if backups:
        newest = backups[0].path
        command = shlex.join(["runuser", "-u", user, "--", REGISTRY_COMMAND, "restore", str(newest),
                              "--registry", str(registry)])
        text += (f"If it was moved, put it back; otherwise restore the newest backup ({newest}, taken "
                 f"{backups[0].taken:%Y-%m-%dT%H:%M:%SZ}) as root: {command}")
    else:
        text += (f"No backup found in {where}: put the registry back, or restore a copy carried off the host "
                 f"(runuser -u {user} -- {REGISTRY_COMMAND} restore BACKUP --registry {registry}); docs/registry.md")
    return text
