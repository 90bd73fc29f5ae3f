"""Registry backups, restore, the backup before a migration, the missing-registry refusal and the CA host's
commands (``ceremony-revoke``, ``ceremony-registry``) run as installed, through subprocesses.

Every refusal is checked for its one line, its non-zero exit and an unchanged registry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ceremony.ca import registry as registry_module
from ceremony.ca import registry_backup as rb
from ceremony.ca.registry import SCHEMA_VERSION, CertRecord, Registry
from ceremony.common.errors import RegistryError

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
NB = datetime(2026, 1, 1, tzinfo=UTC)
NA = NB + timedelta(days=730)


def rec(serial: int) -> CertRecord:
    return CertRecord(serial=serial, subject=f"CN=Person {serial}", profile="qes-natural-person", not_before=NB,
                      not_after=NA, sha256=hashlib.sha256(str(serial).encode()).hexdigest(), status="good")


def rows(path: Path) -> list[tuple]:
    """The table as another process reads it (read-write open: the last close leaves no -wal/-shm behind)."""
    conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True)
    try:
        return conn.execute("SELECT * FROM certificates ORDER BY serial").fetchall()
    finally:
        conn.close()


@pytest.fixture
def host(tmp_path: Path) -> dict[str, Path]:
    """A CA host's layout: registry with 20 certificates (2 revoked), a 0700 backup directory, its .conf."""
    registry = tmp_path / "registry" / "registry.sqlite3"
    with Registry.open(registry, create=True) as reg:
        reg.add_many(rec(s) for s in range(1, 21))
        reg.revoke(3, "keyCompromise")
        reg.revoke(4, "superseded")
    backups = tmp_path / "registry-backups"
    backups.mkdir(mode=0o700)
    conf = tmp_path / "qualified.conf"
    conf.write_text(textwrap.dedent(f"""\
        [registry]
        ca = qualified
        path = {registry}
        backup_dir = {backups}
        keep = 3
        user = ceremony-ca
        crl_service = ceremony-crl-sign@qualified.service
        crl_schedule = hourly
        """))
    return {"registry": registry, "backups": backups, "conf": conf, "tmp": tmp_path}


def run(command: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / command), *args], capture_output=True, text=True, timeout=60, check=False)


def assert_one_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0, proc.stdout
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# -- backup -----------------------------------------------------------------------------------------

WRITER = textwrap.dedent("""\
    import hashlib, sys, time
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    from ceremony.ca.registry import CertRecord, Registry
    path, stop = sys.argv[1], Path(sys.argv[2])
    nb = datetime(2026, 1, 1, tzinfo=UTC)
    serial = 1000
    with Registry.open(path) as reg:
        print("started", flush=True)
        while not stop.exists():
            serial += 1
            reg.add(CertRecord(serial, f"CN=W{serial}", "p", nb, nb + timedelta(days=9),
                               hashlib.sha256(str(serial).encode()).hexdigest(), "good"))
            if serial % 3 == 0:
                reg.revoke(serial, "superseded")
    print(serial - 1000)
    """)


def test_backup_while_another_process_writes_is_consistent_and_verified(host: dict[str, Path]) -> None:
    stop = host["tmp"] / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(host["registry"]), str(stop)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "started"
        results = []
        for second in range(6):
            time.sleep(0.05)
            results.append(rb.backup_registry(host["registry"], host["backups"],
                                              now=datetime(2026, 12, 6, 20, 0, second, tzinfo=UTC)))
    finally:
        stop.touch()
        written = int(writer.communicate(timeout=30)[0].strip())
    assert writer.returncode == 0 and written > 0
    counts = [r.facts.certificates for r in results]
    assert counts == sorted(counts) and counts[-1] > counts[0], counts  # the writer went on during the backups
    for result in results:
        # Each backup is one instant of the registry: rows and packed CRL entries agree, integrity holds.
        assert result.backup.name == f"registry-{result.backup.name.split('-')[1]}-v{SCHEMA_VERSION}.sqlite3"
        assert result.backup.stat().st_mode & 0o777 == 0o600
        again = rb.inspect(result.backup)
        assert again.same_content_as(result.facts)
        conn = sqlite3.connect(f"file:{result.backup}?mode=ro", uri=True)
        try:
            revoked = conn.execute("SELECT count(*) FROM certificates WHERE status='revoked'").fetchone()[0]
            entries = conn.execute("SELECT count(crl_entry) FROM certificates").fetchone()[0]
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        finally:
            conn.close()
        assert revoked == entries == result.facts.revoked and mode == "delete"
    assert not [p for p in host["backups"].iterdir() if p.name.startswith(".")]  # no temporary left
    assert sorted(os.listdir(host["registry"].parent)) == ["registry.sqlite3"]  # no side file left behind


def test_retention_keeps_the_newest_and_touches_nothing_else(host: dict[str, Path]) -> None:
    other = host["backups"] / "notes.txt"
    other.write_text("an operator's file")
    pre = host["backups"] / "registry-pre-migration-v1-to-v2-20200101T000000Z.sqlite3"
    pre.write_bytes(b"kept")
    made = [rb.backup_registry(host["registry"], host["backups"], keep=2,
                               now=datetime(2026, 12, day, tzinfo=UTC)).backup for day in (1, 2, 3)]
    remaining = sorted(p.name for p in host["backups"].iterdir())
    assert remaining == sorted([made[1].name, made[2].name, other.name, pre.name])
    with pytest.raises(RegistryError, match=r"keep: 0 is not allowed \(allowed: 1 or more"):
        rb.backup_registry(host["registry"], host["backups"], keep=0)


def test_verify_refuses_a_truncated_and_a_corrupted_backup(host: dict[str, Path]) -> None:
    good = rb.backup_registry(host["registry"], host["backups"]).backup
    data = good.read_bytes()
    truncated = host["tmp"] / "truncated.sqlite3"
    truncated.write_bytes(data[: len(data) - 4096])
    with pytest.raises(RegistryError, match="truncated"):
        rb.inspect(truncated)
    corrupted = host["tmp"] / "corrupted.sqlite3"
    page = int.from_bytes(data[16:18], "big")
    corrupted.write_bytes(data[:page] + bytes(range(256)) * (page // 256) + data[2 * page:])
    with pytest.raises(RegistryError, match="integrity check failed"):
        rb.inspect(corrupted)
    assert rb.inspect(good).certificates == 20
    for bad in (truncated, corrupted):
        proc = run("ceremony-registry", "verify", str(bad))
        assert_one_error(proc, str(bad))
    ok = run("ceremony-registry", "verify", str(good))
    assert ok.returncode == 0 and f"integrity ok, schema v{SCHEMA_VERSION}, 20 certificates (2 revoked)" in ok.stdout


# -- restore ----------------------------------------------------------------------------------------


def test_restore_keeps_the_current_file_aside_and_reports_lost_revocations(host: dict[str, Path]) -> None:
    registry = host["registry"]
    backup = rb.backup_registry(registry, host["backups"]).backup
    with Registry.open(registry) as reg:
        reg.revoke(7, "cessationOfOperation")
    current = rows(registry)
    proc = run("ceremony-registry", "restore", str(backup), "--config", str(host["conf"]))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert (f"restored {registry} from {backup}: schema v{SCHEMA_VERSION}, 20 certificates (2 revoked), "
            "newest revocation 4") in out
    assert "revocation(s) of the file kept aside are not in the backup: 7; revoke them again" in out
    aside = [p for p in registry.parent.iterdir() if p.name.startswith("registry.sqlite3.replaced-")]
    assert len(aside) == 1 and f"kept aside (not deleted): {aside[0]}" in out
    assert rows(aside[0]) == current  # the old file, whole
    assert rows(registry) == rows(backup)
    conn = sqlite3.connect(registry)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    assert registry.stat().st_mode & 0o777 == 0o640
    with Registry.open(registry) as reg:  # usable by the engine as it is
        assert reg.count("revoked") == 2


def test_restore_into_a_missing_registry_moves_a_stale_log_aside(host: dict[str, Path]) -> None:
    registry = host["registry"]
    backup = rb.backup_registry(registry, host["backups"]).backup
    registry.rename(host["tmp"] / "moved.sqlite3")
    stale = Path(f"{registry}-wal")
    stale.write_bytes(b"a write-ahead log of another file")
    result = rb.restore_registry(backup, registry, schema_version=SCHEMA_VERSION)
    assert [p.name for p in result.kept_aside] == [f"{stale.name}.replaced-{p.name.rsplit('-', 1)[1]}"
                                                   for p in result.kept_aside]
    assert not stale.exists() and rows(registry) == rows(backup)


def test_restore_refuses_a_bad_or_newer_backup_and_changes_nothing(host: dict[str, Path]) -> None:
    registry = host["registry"]
    backup = rb.backup_registry(registry, host["backups"]).backup
    newer = host["tmp"] / "registry-20991231T000000Z-v99.sqlite3"
    newer.write_bytes(backup.read_bytes())
    conn = sqlite3.connect(newer)
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    broken = host["tmp"] / "broken.sqlite3"
    broken.write_bytes(backup.read_bytes()[:-100])
    before = sorted(os.listdir(registry.parent)), rows(registry)
    for bad, fragment in ((newer, f"schema version {SCHEMA_VERSION + 1} is newer than this suite knows"),
                          (broken, "truncated"), (host["tmp"] / "absent.sqlite3", "no such file")):
        proc = run("ceremony-registry", "restore", str(bad), "--config", str(host["conf"]))
        assert_one_error(proc, str(bad), fragment)
        assert (sorted(os.listdir(registry.parent)), rows(registry)) == before


# -- migration --------------------------------------------------------------------------------------

V2 = "ALTER TABLE certificates ADD COLUMN note TEXT"


def test_a_migration_is_preceded_by_a_verified_backup(host: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    registry = host["registry"]
    old_rows = rows(registry)
    monkeypatch.setattr(registry_module, "MIGRATIONS", (*registry_module.MIGRATIONS, V2))
    monkeypatch.setattr(registry_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with Registry.open(registry) as reg:
        assert reg.schema_version == SCHEMA_VERSION + 1
        backup = reg.migration_backup
    assert backup is not None and backup.parent == registry.parent
    assert backup.name.startswith(f"registry-pre-migration-v{SCHEMA_VERSION}-to-v{SCHEMA_VERSION + 1}-")
    facts = rb.inspect(backup)
    assert facts.schema_version == SCHEMA_VERSION and rows(backup) == old_rows
    err = capsys.readouterr().err
    assert f"backup taken first: {backup}" in err and f"restore {backup} --registry {registry}" in err
    listed = rb.list_backups(registry, [host["backups"]])
    assert [(b.path.name, b.pre_migration_to) for b in listed] == [(backup.name, SCHEMA_VERSION + 1)]
    # Opened again: already migrated, no second backup.
    with Registry.open(registry) as reg:
        assert reg.migration_backup is None
    # The way back: the previous suite (schema v1) restores the pre-migration backup.
    monkeypatch.undo()
    with pytest.raises(RegistryError, match="newer than this suite knows"):
        Registry.open(registry)
    rb.restore_registry(backup, registry, schema_version=SCHEMA_VERSION)
    with Registry.open(registry) as reg:
        assert reg.schema_version == SCHEMA_VERSION and reg.count("revoked") == 2


def test_no_migration_without_its_backup(host: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    registry = host["registry"]
    old_rows = rows(registry)

    def fail(*_args: object, **_kw: object) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(registry_module, "MIGRATIONS", (*registry_module.MIGRATIONS, V2))
    monkeypatch.setattr(registry_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setattr(registry_module, "backup_before_migration", fail)
    with pytest.raises(RegistryError, match=rf"not migrated from v{SCHEMA_VERSION} to v{SCHEMA_VERSION + 1} because "
                                            r"the backup before the migration failed \(.*No space left on device\); "
                                            r"the registry is unchanged"):
        Registry.open(registry)
    assert rb.inspect(registry).schema_version == SCHEMA_VERSION and rows(registry) == old_rows


def test_a_new_registry_needs_no_backup(tmp_path: Path) -> None:
    with Registry.open(tmp_path / "registry.sqlite3", create=True) as reg:
        assert reg.migration_backup is None
    assert sorted(os.listdir(tmp_path)) == ["registry.sqlite3"]


# -- the missing registry ---------------------------------------------------------------------------


def ansible_module(args: dict[str, object], *extra: str) -> tuple[int, dict[str, object]]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
           "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    proc = subprocess.run([str(BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local", "-m", "ca_registry",
                           "-a", json.dumps(args), "-e", f"ansible_python_interpreter={BIN / 'python'}", *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    try:
        return proc.returncode, json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        return proc.returncode, {"raw": proc.stdout + proc.stderr}


def test_the_module_creates_once_then_refuses_a_missing_registry(tmp_path: Path) -> None:
    registry = tmp_path / "registry" / "registry.sqlite3"
    registry.parent.mkdir()
    backups = tmp_path / "registry-backups"
    backups.mkdir(mode=0o700)
    code, result = ansible_module({"path": str(registry)})
    assert code == 0 and result["created"] is True, result
    marker = json.loads(rb.marker_path(registry).read_text())
    assert marker["registry"] == str(registry) and marker["schema_version"] == SCHEMA_VERSION and marker["created"]
    # The backup task records the backup directory in the marker; the next run changes nothing.
    assert ansible_module({"path": str(registry), "backup_dir": str(backups)})[1]["changed"] is True
    assert ansible_module({"path": str(registry), "backup_dir": str(backups)})[1]["changed"] is False
    backup = rb.backup_registry(registry, backups).backup
    registry.rename(tmp_path / "moved-away.sqlite3")
    for mode in (["--check"], []):
        code, result = ansible_module({"path": str(registry)}, *mode)  # as main.yml calls it: no backup_dir
        message = str(result.get("msg"))
        assert code != 0 and result.get("failed") is True, result
        assert message.startswith(f"{registry}: the certificate registry is missing, but it was created on this host "
                                  f"at {marker['created']}"), message
        assert f"restore the newest backup ({backup}, taken " in message
        assert message.endswith(f"-- ceremony-registry restore {backup} --registry {registry}"), message
        assert not registry.exists()
    assert sorted(os.listdir(registry.parent)) == [rb.marker_path(registry).name]


def test_the_module_refuses_when_only_backups_remain(tmp_path: Path) -> None:
    """The whole directory moved away (marker included): the backups still say a registry was here."""
    registry = tmp_path / "registry" / "registry.sqlite3"
    registry.parent.mkdir()
    backups = tmp_path / "registry-backups"
    backups.mkdir()
    (backups / "registry-20261201T000000Z-v1.sqlite3").write_bytes(b"x")
    code, result = ansible_module({"path": str(registry), "backup_dir": str(backups)})
    assert code != 0 and "missing, but backups of it exist on this host" in str(result.get("msg"))
    assert os.listdir(registry.parent) == []


def test_an_existing_registry_without_a_marker_gets_one(host: dict[str, Path]) -> None:
    code, result = ansible_module({"path": str(host["registry"])}, "--check")
    assert code == 0 and result["changed"] is True and not rb.marker_path(host["registry"]).exists()
    code, result = ansible_module({"path": str(host["registry"])})
    assert code == 0 and result["changed"] is True and result["certificates"] == 20
    marker = json.loads(rb.marker_path(host["registry"]).read_text())
    assert marker["created"] is None and marker["marker_written"]


# -- the commands -----------------------------------------------------------------------------------


def test_ceremony_revoke_revokes_and_says_what_comes_next(host: dict[str, Path]) -> None:
    proc = run("ceremony-revoke", "0x0A", "--reason", "keyCompromise", "--invalidity-date", "2026-03-01",
               "--config", str(host["conf"]))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("revoked a CN=Person 10 at ")
    assert "(keyCompromise, invalid since 2026-03-01T00:00:00Z)" in proc.stdout
    assert "next: the CRL job (hourly) signs a CRL with it at its next run" in proc.stdout
    assert "systemctl start ceremony-crl-sign@qualified.service" in proc.stdout
    with Registry.open(host["registry"]) as reg:
        got = reg.get(10)
        assert got is not None and got.status == "revoked" and got.reason == "keyCompromise"
    again = run("ceremony-revoke", "a", "--reason", "superseded", "--config", str(host["conf"]))
    assert again.returncode == 0 and again.stdout.startswith("already revoked: a ")
    assert "nothing changed" in again.stdout


def test_ceremony_revoke_bad_inputs_one_line_each_nothing_changed(host: dict[str, Path]) -> None:
    conf = str(host["conf"])
    no_path = host["tmp"] / "no-path.conf"
    no_path.write_text("[registry]\nca = qualified\n")
    relative = host["tmp"] / "relative.conf"
    relative.write_text("[registry]\nca = qualified\npath = out/production/qualified-registry.sqlite3\n")
    not_ini = host["tmp"] / "not-ini.conf"
    not_ini.write_text("registry=/var/lib/ceremony/registry/registry.sqlite3\n")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    before = rows(host["registry"])
    cases = [
        (["zz", "--reason", "keyCompromise", "--config", conf], ["serial 'zz' is not a hexadecimal serial", "allowed"]),
        (["0", "--reason", "keyCompromise", "--config", conf], ["serial 0", "positive integer of at most 20 octets"]),
        (["5", "--reason", "removeFromCRL", "--config", conf], ["'removeFromCRL' is not allowed", "keyCompromise"]),
        (["5", "--reason", "lost", "--config", conf], ["'lost' is not allowed"]),
        (["5", "--reason", "keyCompromise", "--invalidity-date", "yesterday", "--config", conf],
         ["invalidity date 'yesterday' is not an ISO 8601 date"]),
        (["5", "--reason", "keyCompromise", "--invalidity-date", tomorrow, "--config", conf], ["is in the future"]),
        (["ff", "--reason", "keyCompromise", "--config", conf],
         ["no certificate with serial ff", "nothing was revoked"]),
        (["5", "--reason", "keyCompromise", "--config", str(host["tmp"] / "absent.conf")],
         ["absent.conf", "no such file", "allowed: the CA configuration the subordinate_ca role writes"]),
        (["5", "--reason", "keyCompromise", "--config", str(no_path)], ["no-path.conf: registry.path: missing"]),
        (["5", "--reason", "keyCompromise", "--config", str(relative)],
         ["relative.conf: registry.path: out/production/qualified-registry.sqlite3 is not an absolute path"]),
        (["5", "--reason", "keyCompromise", "--config", str(not_ini)], ["not-ini.conf", "not an INI file"]),
        (["5", "--reason", "keyCompromise", "--ca", "other", "--config", conf],
         ["registry.ca: names CA 'qualified', not 'other'"]),
        (["5", "--reason", "keyCompromise", "--registry", str(host["tmp"] / "none.sqlite3")],
         ["none.sqlite3: certificate registry not found"]),
    ]
    for args, fragments in cases:
        proc = run("ceremony-revoke", *args)
        assert_one_error(proc, *fragments)
        assert proc.stdout == ""
        assert rows(host["registry"]) == before, args
    assert not (host["tmp"] / "none.sqlite3").exists()
    usage = run("ceremony-revoke", "5")  # argparse: the missing option named, exit 2
    assert usage.returncode == 2 and "--reason" in usage.stderr


def test_ceremony_registry_backup_list_and_bad_inputs(host: dict[str, Path]) -> None:
    conf = str(host["conf"])
    made = []
    for _ in range(4):
        proc = run("ceremony-registry", "backup", "--config", conf)
        assert proc.returncode == 0, proc.stderr
        assert f"verified (schema v{SCHEMA_VERSION}, 20 certificates (2 revoked), newest revocation 4" in proc.stdout
        made.append(proc.stdout.split()[1].rstrip(":"))
        time.sleep(1.05)  # one backup per second at most: the name carries the second
    kept = sorted(p.name for p in host["backups"].iterdir())
    assert kept == sorted(Path(m).name for m in made[1:])  # keep = 3 from the configuration
    listing = run("ceremony-registry", "list", "--config", conf)
    assert listing.returncode == 0 and [line.split()[1] for line in listing.stdout.splitlines()] == made[:0:-1]
    before = sorted(os.listdir(host["backups"]))
    for args, fragments in (
        (["backup", "--config", conf, "--keep", "0"], ["keep: 0 is not allowed"]),
        (["backup", "--config", conf, "--backup-dir", str(host["tmp"] / "nowhere")],
         ["nowhere: backup directory does not exist"]),
        (["backup", "--registry", str(host["tmp"] / "gone.sqlite3"), "--backup-dir", str(host["backups"])],
         ["gone.sqlite3: certificate registry not found; nothing to back up"]),
        (["backup", "--registry", str(host["registry"])], ["no backup directory: give --backup-dir"]),
    ):
        assert_one_error(run("ceremony-registry", *args), *fragments)
        assert sorted(os.listdir(host["backups"])) == before


# -- what the role installs -------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_the_roles_units_verify_and_its_configuration_drives_the_commands(tmp_path: Path) -> None:
    """The subordinate_ca role's templates, rendered by real Ansible with its defaults: the units pass
    ``systemd-analyze verify`` and the commands read the configuration file exactly as the role writes it."""
    home = tmp_path / "ceremony"
    (home / "registry").mkdir(parents=True)
    (home / "registry-backups").mkdir(mode=0o700)
    with Registry.open(home / "registry" / "registry.sqlite3", create=True) as reg:
        reg.add(rec(0x2A))
    out = tmp_path / "rendered"
    out.mkdir()
    conf = out / "qualified.conf"
    templates = [("ceremony-ca.conf.j2", conf.name), ("ceremony-registry-backup.service.j2",
                                                      "ceremony-registry-backup.service"),
                 ("ceremony-registry-backup.timer.j2", "ceremony-registry-backup.timer")]
    role = REPO / "roles" / "subordinate_ca"
    play = [{"name": "Render", "hosts": "localhost", "gather_facts": False,
             "vars_files": [str(role / "defaults" / "main.yml")],
             "tasks": [{"name": f"Render {dest}", "ansible.builtin.template": {
                 "src": str(role / "templates" / src), "dest": str(out / dest), "mode": "0644"}}
                 for src, dest in templates]}]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    extra = {"subordinate_ca_name": "qualified", "subordinate_ca_home": str(home),
             "subordinate_ca_registry_backup_command": f"{BIN / 'ceremony-registry'} backup --config {conf}"}
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(tmp_path / "play.yml"),
                           "-e", f"@{tmp_path / 'extra.json'}"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    check = subprocess.run(["systemd-analyze", "verify", str(out / "ceremony-registry-backup.service"),
                            str(out / "ceremony-registry-backup.timer")], capture_output=True, text=True, timeout=60,
                           check=False)
    assert check.returncode == 0 and check.stderr.strip() == "", check.stderr
    service = (out / "ceremony-registry-backup.service").read_text()
    assert "User=ceremony-ca\n" in service and f"ReadWritePaths={home}/registry {home}/registry-backups\n" in service
    assert "Documentation=file:///usr/share/doc/ceremony-suite/registry.md" in service
    assert "OnCalendar=hourly\n" in (out / "ceremony-registry-backup.timer").read_text()
    # The unit's command, with the configuration as rendered: the backup and its retention.
    command = next(line.split("=", 1)[1] for line in service.splitlines() if line.startswith("ExecStart="))
    backup = subprocess.run(command.split(), capture_output=True, text=True, timeout=60, check=False)
    assert backup.returncode == 0
    assert f"verified (schema v{SCHEMA_VERSION}, 1 certificate (0 revoked), no revocation" in backup.stdout
    revoke = run("ceremony-revoke", "2a", "--reason", "superseded", "--config", str(conf))
    assert revoke.returncode == 0 and "systemctl start ceremony-crl-sign@qualified.service" in revoke.stdout
    assert "the CRL job (hourly)" in revoke.stdout


def test_backup_under_cron_sends_its_line_to_syslog(host: dict[str, Path]) -> None:
    """``--syslog`` (the cron entry): the result line through logger, tag ceremony-registry-backup, errors at err."""
    bin_dir = host["tmp"] / "bin"
    bin_dir.mkdir()
    log = host["tmp"] / "syslog.jsonl"
    fake = bin_dir / "logger"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nwith open({str(log)!r}, 'a') as f:\n"
                    "    f.write(json.dumps({'argv': sys.argv[1:], 'stdin': sys.stdin.read()}) + '\\n')\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    ok = subprocess.run([str(BIN / "ceremony-registry"), "backup", "--config", str(host["conf"]), "--syslog"],
                        capture_output=True, text=True, env=env, timeout=60, check=False)
    host["registry"].rename(host["tmp"] / "elsewhere.sqlite3")
    failed = subprocess.run([str(BIN / "ceremony-registry"), "backup", "--config", str(host["conf"]), "--syslog"],
                            capture_output=True, text=True, env=env, timeout=60, check=False)
    assert ok.returncode == 0 and failed.returncode != 0
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["argv"][:4] for e in entries] == [["-t", "ceremony-registry-backup", "-p", "daemon.info"],
                                                ["-t", "ceremony-registry-backup", "-p", "daemon.err"]]
    assert entries[0]["stdin"] == ok.stdout and entries[1]["stdin"] == failed.stderr
    assert "certificate registry not found; nothing to back up" in failed.stderr
