"""The certificate registry: schema, revocation rules, refusal of bad input, locks and corruption."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import REPO

from ceremony.ca.registry import CRL_ENTRY, MAX_SERIAL, REASONS, SCHEMA_VERSION, CertRecord, Registry
from ceremony.common.errors import RegistryError

NB = datetime(2026, 1, 1, tzinfo=UTC)
NA = NB + timedelta(days=730)
NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


def rec(serial: int, **kw: object) -> CertRecord:
    fields: dict = dict(serial=serial, subject=f"CN=Person {serial}", profile="qualified-signature",
                        not_before=NB, not_after=NA, sha256=hashlib.sha256(str(serial).encode()).hexdigest(),
                        status="good")
    fields.update(kw)
    return CertRecord(**fields)


@pytest.fixture
def reg(tmp_path: Path):
    with Registry.open(tmp_path / "registry.sqlite", create=True) as r:
        yield r


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def snapshot(path: Path) -> list[tuple]:
    """The table as another process would read it."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT * FROM certificates ORDER BY serial").fetchall()
    finally:
        conn.close()


def test_create_is_wal_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "registry.sqlite"
    with Registry.open(path, create=True) as r:
        assert r.schema_version == SCHEMA_VERSION
    assert path.stat().st_mode & 0o777 == 0o640 & ~_umask()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    conn.close()
    with Registry.open(path) as r:  # reopening migrates nothing and loses nothing
        assert r.list() == []


def test_missing_file_is_refused_without_create(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="not found"):
        Registry.open(tmp_path / "nope.sqlite")
    assert not (tmp_path / "nope.sqlite").exists()


def test_add_get_list_round_trip(reg: Registry) -> None:
    big = MAX_SERIAL
    reg.add(rec(5))
    reg.add(rec(big, profile="qualified-seal", subject="CN=Seal,O=Org"))
    reg.add(rec(3))
    got = reg.get(big)
    assert got == rec(big, profile="qualified-seal", subject="CN=Seal,O=Org")
    assert got.not_after.tzinfo is not None
    assert [r.serial for r in reg.list()] == [3, 5, big]
    assert reg.get(4) is None
    assert reg.count() == 3 and reg.count("revoked") == 0


def test_naive_datetimes_are_utc(reg: Registry) -> None:
    reg.add(rec(7, not_before=NB.replace(tzinfo=None), not_after=NA.replace(tzinfo=None)))
    assert reg.get(7).not_before == NB


@pytest.mark.parametrize("serial", [0, -1, MAX_SERIAL + 1, 1 << 200])
def test_bad_serials_are_refused(reg: Registry, serial: int) -> None:
    with pytest.raises(RegistryError, match="20 octets"):
        reg.add(rec(serial))
    with pytest.raises(RegistryError, match="20 octets"):
        reg.revoke(serial, "keyCompromise")
    assert reg.list() == []


def test_duplicate_serial_is_refused_and_nothing_changes(reg: Registry) -> None:
    reg.add(rec(9))
    before = snapshot(reg.path)
    with pytest.raises(RegistryError, match="registered already"):
        reg.add(rec(9, subject="CN=Other"))
    with pytest.raises(RegistryError, match="registered already"):
        reg.add_many([rec(10), rec(9)])
    assert snapshot(reg.path) == before


def test_add_many_is_all_or_nothing(reg: Registry) -> None:
    with pytest.raises(RegistryError, match="sha256"):
        reg.add_many([rec(1), rec(2), rec(3, sha256="zz")])
    assert reg.list() == []
    reg.add_many(rec(i) for i in range(1, 101))
    assert reg.count() == 100


def test_bad_records_are_refused(reg: Registry) -> None:
    with pytest.raises(RegistryError, match="status 'lost'"):
        reg.add(rec(1, status="lost"))
    with pytest.raises(RegistryError, match="not_after"):
        reg.add(rec(1, not_after=NB))
    with pytest.raises(RegistryError, match="needs a revocation time"):
        reg.add(rec(1, status="revoked"))
    with pytest.raises(RegistryError, match="no revocation time"):
        reg.add(rec(1, reason="keyCompromise"))
    assert reg.list() == []


def test_revoke_then_revoke_again_changes_nothing(reg: Registry) -> None:
    reg.add(rec(0x1234))
    inv = NOW - timedelta(days=2)
    assert reg.revoke(0x1234, "keyCompromise", invalidity_date=inv, now=NOW) is True
    r = reg.get(0x1234)
    assert (r.status, r.reason, r.revoked_at, r.invalidity_date) == ("revoked", "keyCompromise", NOW, inv)
    before = snapshot(reg.path)
    assert reg.revoke(0x1234, "superseded", now=NOW + timedelta(days=1)) is False
    assert snapshot(reg.path) == before


def test_revoke_unknown_serial(reg: Registry) -> None:
    reg.add(rec(1))
    before = snapshot(reg.path)
    with pytest.raises(RegistryError, match="no certificate with serial 2a"):
        reg.revoke(0x2A, "keyCompromise")
    assert snapshot(reg.path) == before


@pytest.mark.parametrize("reason", ["compromised", "KeyCompromise", "removeFromCRL", ""])
def test_revoke_invalid_reason_lists_the_allowed(reg: Registry, reason: str) -> None:
    reg.add(rec(1))
    before = snapshot(reg.path)
    with pytest.raises(RegistryError, match=r"allowed: unspecified, keyCompromise, cACompromise") as ei:
        reg.revoke(1, reason)
    assert "removeFromCRL" not in str(ei.value).split("allowed:")[1]
    assert snapshot(reg.path) == before


def test_revoke_future_invalidity_date(reg: Registry) -> None:
    reg.add(rec(1))
    before = snapshot(reg.path)
    with pytest.raises(RegistryError, match="in the future"):
        reg.revoke(1, "keyCompromise", invalidity_date=NOW + timedelta(seconds=1), now=NOW)
    with pytest.raises(RegistryError, match="in the future"):
        reg.revoke(1, "keyCompromise", invalidity_date=datetime.now(UTC) + timedelta(hours=1))
    assert snapshot(reg.path) == before


def test_revoked_rows_fast_path(reg: Registry) -> None:
    reg.add_many([rec(s) for s in (300, 2, MAX_SERIAL, 40, 1)])
    reg.revoke(300, "unspecified", now=NOW)
    reg.revoke(MAX_SERIAL, "cessationOfOperation", now=NOW)
    reg.revoke(2, "keyCompromise", invalidity_date=NOW - timedelta(hours=5), now=NOW + timedelta(seconds=3))
    now, na = int(NOW.timestamp()), int(NA.timestamp())
    expected = [
        (2, now + 3, REASONS["keyCompromise"], now - 5 * 3600, na),
        (300, now, None, None, na),  # unspecified: no reason code in the CRL entry
        (MAX_SERIAL, now, REASONS["cessationOfOperation"], None, na),
    ]
    assert reg.revoked_rows() == expected
    assert list(reg.iter_revoked_rows(batch=1)) == expected
    packed = b"".join(reg.iter_revoked_packed(batch=2))
    assert [int.from_bytes(e[0], "big") for e in CRL_ENTRY.iter_unpack(packed)] == [2, 300, MAX_SERIAL]
    assert reg.get(300).reason == "unspecified"


def test_revoked_record_can_be_added_directly(reg: Registry) -> None:
    reg.add(rec(8, status="revoked", revoked_at=NOW, reason="superseded"))
    assert reg.revoked_rows() == [(8, int(NOW.timestamp()), 4, None, int(NA.timestamp()))]


def test_corrupt_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    path.write_bytes(b"this is not a database at all" * 200)
    before = path.read_bytes()
    with pytest.raises(RegistryError, match="corrupt"):
        Registry.open(path)
    assert path.read_bytes() == before


def test_truncated_registry_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    with Registry.open(path, create=True) as r:
        r.add_many(rec(i) for i in range(1, 2001))
    data = path.read_bytes()
    path.write_bytes(data[:100] + b"\xff" * 4000 + data[4100:])  # header intact, pages damaged
    with pytest.raises(RegistryError, match="corrupt"), Registry.open(path) as r:
        r.list()


def test_other_sqlite_file_is_not_a_registry(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(RegistryError, match="not a certificate registry"):
        Registry.open(path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    Registry.open(path, create=True).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(RegistryError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        Registry.open(path)


def test_locked_registry_gives_a_clear_error_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    with Registry.open(path, create=True) as r:
        r.add(rec(1))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with Registry.open(path, timeout=0.2) as r:
            t0 = time.monotonic()
            with pytest.raises(RegistryError, match="locked by another process"):
                r.revoke(1, "keyCompromise")
            with pytest.raises(RegistryError, match="locked by another process"):
                r.add(rec(2))
            assert time.monotonic() - t0 < 5
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with Registry.open(path) as r:
        assert [x.status for x in r.list()] == ["good"]


def test_reads_continue_while_another_process_writes(tmp_path: Path) -> None:
    """WAL: the CRL job reads a consistent snapshot while a revocation holds the write lock."""
    path = tmp_path / "registry.sqlite"
    with Registry.open(path, create=True) as r:
        r.add_many(rec(i) for i in range(1, 11))
        r.revoke(3, "keyCompromise", now=NOW)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE certificates SET subject = 'CN=changed' WHERE serial = ?", ((4).to_bytes(20, "big"),))
    try:
        with Registry.open(path, timeout=0.2) as r:
            assert [row[0] for row in r.revoked_rows()] == [3]
            assert r.get(4).subject == "CN=Person 4"
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_revoked_rows_100k_in_serial_order(tmp_path: Path) -> None:
    """100k revocations read back whole and in serial order (their speed: invoke bench.registry)."""
    path = tmp_path / "registry.sqlite"
    revoked_at = NOW
    with Registry.open(path, create=True) as r:
        r.add_many(rec((i * 7919 + 12345) << 96 | i, status="revoked", revoked_at=revoked_at,
                       reason="keyCompromise") for i in range(1, 100_001))
        rows = r.revoked_rows()
    assert len(rows) == 100_000
    assert all(rows[i][0] < rows[i + 1][0] for i in range(len(rows) - 1))


def test_migrations_run_in_order_and_keep_the_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ceremony.ca.registry as registry_module

    path = tmp_path / "registry.sqlite"
    with Registry.open(path, create=True) as r:
        r.add(rec(1))
        r.revoke(1, "superseded", now=NOW)
    v2 = "CREATE TABLE issuance_notes (serial BLOB NOT NULL, note TEXT NOT NULL)"
    monkeypatch.setattr(registry_module, "MIGRATIONS", (*registry_module.MIGRATIONS, v2))
    monkeypatch.setattr(registry_module, "SCHEMA_VERSION", len(registry_module.MIGRATIONS))
    with Registry.open(path) as r:
        assert r.schema_version == SCHEMA_VERSION + 1
        assert r.get(1).reason == "superseded"
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM issuance_notes").fetchone() == (0,)
    conn.close()


def test_a_failing_migration_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ceremony.ca.registry as registry_module

    path = tmp_path / "registry.sqlite"
    with Registry.open(path, create=True) as r:
        r.add(rec(1))
    before = snapshot(path)
    broken = "CREATE TABLE half_done (x); ALTER TABLE no_such_table ADD COLUMN y"
    monkeypatch.setattr(registry_module, "MIGRATIONS", (*registry_module.MIGRATIONS, broken))
    monkeypatch.setattr(registry_module, "SCHEMA_VERSION", len(registry_module.MIGRATIONS))
    with pytest.raises(RegistryError, match="no_such_table"):
        Registry.open(path)
    monkeypatch.undo()
    with Registry.open(path) as r:
        assert r.schema_version == SCHEMA_VERSION
    assert snapshot(path) == before
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchall() == []
    conn.close()


@pytest.mark.bench
def test_bench_registry_reads_every_revocation_back(tmp_path: Path) -> None:
    """``invoke bench.registry`` at a small size: both reads return every revocation (the timings, with the
    reference beside them, are the benchmark's to print, for 1,000,000 entries by default)."""
    import subprocess

    run = subprocess.run([str(REPO / ".venv" / "bin" / "invoke"), "bench.registry", "--entries", "5000"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "registry of 5,000 revocations" in run.stdout and "reference: whole CRL job" in run.stdout
    bad = subprocess.run([str(REPO / ".venv" / "bin" / "invoke"), "bench.registry", "--entries", "0"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "--entries" in bad.stderr and "Traceback" not in bad.stderr
