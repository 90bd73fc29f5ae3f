"""The pre-signed OCSP responses of one CA: one SQLite file, one row per certificate and CertID hash.

A national CA has a million certificates and two CertID hashes each: two million responses of about 1.5 kB. A
million small files would be slow to replace and to copy to the publication hosts; one SQLite file in WAL mode is
read by the responder while the signing job writes, and a run's changes are one transaction: a reader sees the
responses of the previous run or of this one, never half of it, and a run that fails leaves the store as it was.

Rows are keyed by ``(serial, hash)`` (the serial as a fixed 20-byte big-endian BLOB, as in the registry, so the
store and the registry can be walked side by side in serial order); ``status_fingerprint`` (``good`` or
``revoked:<time>:<reason>``) is how the job notices a revocation. The ``meta`` table names the CA and the SHA-256
of its certificate: a store is never used for another issuer, and a store that is missing or does not read as
one is refused, never silently made anew (a new empty store would make the responder answer ``unauthorized`` for
every certificate until the next full run). A store written at the CA's termination carries ``final`` in ``meta``
(the ceremony's time): its responses are the last, and the job refuses to write into it (docs/ocsp.md).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ceremony.common.errors import OutputError

SCHEMA_VERSION = 1


SERIAL_BYTES = 20


SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE responses (
    serial             BLOB    NOT NULL CHECK (length(serial) = 20),
    hash               TEXT    NOT NULL CHECK (hash IN ('sha1', 'sha256')),
    status             TEXT    NOT NULL CHECK (status IN ('good', 'revoked')),
    der                BLOB    NOT NULL,
    this_update        INTEGER NOT NULL,
    next_update        INTEGER NOT NULL CHECK (next_update > this_update),
    status_fingerprint TEXT    NOT NULL,
    PRIMARY KEY (serial, hash)
) WITHOUT ROWID;
"""


class StoreError(OutputError):
    """The store is missing, corrupt, of another CA, or cannot be written."""


def serial_blob(serial: int) -> bytes:
    return serial.to_bytes(SERIAL_BYTES, "big")


@dataclass(frozen=True)
class StoredResponse:
    serial: int
    hash: str
    status: str
    der: bytes
    this_update: int
    next_update: int
    status_fingerprint: str


#: A row as the job writes it: (serial, hash, status, der, this_update, next_update, status_fingerprint).
Row = tuple[int, str, str, bytes, int, int, str]


class ResponseStore:
    """One CA's responses. Open with :meth:`create` (once, explicitly) or :meth:`open` (it must exist)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

    @classmethod
    def create(cls, path: str | Path, ca: str, issuer_sha256: str) -> ResponseStore:
        """Make a new, empty store for ``ca`` (whose certificate has SHA-256 ``issuer_sha256``); refuse an existing
        file: a store is made once, at setup, never over one that exists."""
        path = Path(path)
        if path.exists():
            raise StoreError(f"{path}: exists already; a store is made once (to start again, move it away first)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in filter(str.strip, SCHEMA.split(";")):
                conn.execute(statement)
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [("schema_version", str(SCHEMA_VERSION)), ("ca", ca),
                                                                ("issuer_sha256", issuer_sha256)])
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot create the OCSP store: {exc}") from None
        return cls(path, conn)

    @classmethod
    def open(cls, path: str | Path, *, ca: str | None = None, issuer_sha256: str | None = None,
             read_only: bool = False, check: bool = False, timeout: float = 10.0) -> ResponseStore:
        """Open an existing store; refuse one that is missing, corrupt (``check``: SQLite's quick_check as well), of
        another schema, CA or issuer certificate."""
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"{path}: no OCSP store here; make it once with ceremony-ocsp-sign --create-store "
                             "(invoke ocsp.sign --create-store), never by hand")
        try:
            uri = f"file:{path.resolve()}?mode={'ro' if read_only else 'rw'}"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=timeout, check_same_thread=False)
            if not read_only:
                conn.execute("PRAGMA journal_mode=WAL")
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if check:
                result = conn.execute("PRAGMA quick_check").fetchone()[0]
                if result != "ok":
                    raise StoreError(f"{path}: the OCSP store is corrupt (SQLite quick_check: {result}); restore it "
                                     "from a copy or make a new one deliberately; nothing was signed")
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: not a readable OCSP store ({exc}); it is never made anew silently: restore "
                             "it from a copy, or move it away and run --create-store deliberately") from None
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            conn.close()
            raise StoreError(f"{path}: OCSP store schema {meta.get('schema_version')!r}; this suite reads "
                             f"{SCHEMA_VERSION}")
        if ca is not None and meta.get("ca") != ca:
            conn.close()
            raise StoreError(f"{path}: this OCSP store belongs to CA {meta.get('ca')!r}, not {ca!r}")
        if issuer_sha256 is not None and meta.get("issuer_sha256") != issuer_sha256:
            conn.close()
            raise StoreError(f"{path}: this OCSP store was made for the CA certificate with SHA-256 "
                             f"{meta.get('issuer_sha256')}, not {issuer_sha256}")
        return cls(path, conn)

    @property
    def ca(self) -> str:
        return str(self.conn.execute("SELECT value FROM meta WHERE key = 'ca'").fetchone()[0])

    @property
    def final(self) -> str | None:
        """When the CA's termination wrote this store's last responses (ISO 8601), or None for a live store."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'final'").fetchone()
        return None if row is None else str(row[0])

    def mark_final(self, at: str) -> None:
        """Record that this store holds the CA's final responses (termination): no job writes into it again."""
        try:
            self.conn.execute("INSERT INTO meta VALUES ('final', ?)", (at,))
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot mark the OCSP store final: {exc}") from None

    @property
    def issuer_sha256(self) -> str:
        return str(self.conn.execute("SELECT value FROM meta WHERE key = 'issuer_sha256'").fetchone()[0])

    def get(self, serial: int, hash_name: str) -> StoredResponse | None:
        row = self.conn.execute("SELECT status, der, this_update, next_update, status_fingerprint FROM responses "
                                "WHERE serial = ? AND hash = ?", (serial_blob(serial), hash_name)).fetchone()
        if row is None:
            return None
        return StoredResponse(serial, hash_name, row[0], bytes(row[1]), row[2], row[3], row[4])

    def states(self, batch: int = 65536) -> Iterator[tuple[int, str, str, int]]:
        """``(serial, hash, status_fingerprint, this_update)`` of every row, in serial order (no DER read)."""
        cur = self.conn.execute("SELECT serial, hash, status_fingerprint, this_update FROM responses "
                                "ORDER BY serial, hash")
        while True:
            rows = cur.fetchmany(batch)
            if not rows:
                return
            for serial, hash_name, fingerprint, this_update in rows:
                yield int.from_bytes(serial, "big"), hash_name, fingerprint, this_update

    def count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM responses").fetchone()[0])

    def oldest_this_update(self) -> int | None:
        value = self.conn.execute("SELECT min(this_update) FROM responses").fetchone()[0]
        return None if value is None else int(value)

    def replace_all(self, rows: Iterable[Row]) -> int:
        """Write ``rows`` (new or replacing responses) in one transaction: all of them, or none on any failure."""
        n = 0
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for chunk in _chunks(rows, 4096):
                    self.conn.executemany(
                        "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [(serial_blob(s), h, st, der, tu, nu, fp) for s, h, st, der, tu, nu, fp in chunk])
                    n += len(chunk)
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot write the OCSP store ({exc}); it is as it was before this run") \
                from None
        # Move the run's pages from the WAL into the database file now (readers are never blocked by this): a
        # responder then finds a response in the B-tree instead of searching a WAL of a million new pages.
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return n

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResponseStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _chunks(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
