"""``ceremony-ocsp-publish``: carry a CA's OCSP response store to the publisher hosts, consistently and checked.

The signing job writes its store in WAL mode while it runs; copying that file (or its ``-wal``) would give the
publishers a store torn between two runs. ``snapshot`` therefore takes SQLite's online backup (a consistent
image, whatever the job is doing) into a temporary file next to the destination, switches it to a rollback
journal (a read-only responder then needs no ``-shm`` file it could not create), fsyncs it and renames it over
the destination: the publishers' pull (rsync) only ever sees a whole snapshot. A snapshot is taken only when the
store changed since the last one (its mtime, or its ``-wal``'s, is newer), so an idle CA does not make every
publisher download the whole store every few minutes.

``install`` runs on a publisher: the pulled snapshot is copied next to the served file, checked (SQLite's
quick_check, the ``meta`` table names this CA and this CA certificate, a good and a revoked response, when there
are, parse and verify under a signer certificate issued by the CA with id-kp-OCSPSigning), then renamed over the
served file. A corrupt or foreign snapshot is refused with one message and the served store stays as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from ceremony.common.errors import CeremonyError
from ceremony.hsm.signers import verify_signature
from ceremony.ocsp.job import store_issuer_sha256
from ceremony.ocsp.store import ResponseStore, StoreError
from ceremony.x509.files import read_certificate


def _mtime_ns(path: Path) -> int:
    """The latest change of a WAL-mode store: the main file or its ``-wal`` (where the job's commits land first)."""
    stamps = [path.stat().st_mtime_ns]
    wal = path.with_name(path.name + "-wal")
    with contextlib.suppress(FileNotFoundError):
        stamps.append(wal.stat().st_mtime_ns)
    return max(stamps)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def snapshot(store: str | Path, dest: str | Path, *, force: bool = False) -> bool:
    """Write a consistent copy of ``store`` at ``dest`` (atomic rename); False when ``dest`` is already current."""
    store, dest = Path(store), Path(dest)
    if not store.is_file():
        raise StoreError(f"{store}: no OCSP store here; the signing job makes none (ceremony-ocsp-sign --create-store)")
    changed = _mtime_ns(store)
    if not force and dest.is_file() and dest.stat().st_mtime_ns >= changed:
        return False
    ResponseStore.open(store, read_only=True).close()  # a store of the suite, not any SQLite file
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        source = sqlite3.connect(f"file:{store.resolve()}?mode=ro", uri=True, timeout=30)
        target = sqlite3.connect(tmp)
        try:
            source.backup(target)
            target.execute("PRAGMA journal_mode=DELETE")
        finally:
            target.close()
            source.close()
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        tmp.chmod(0o644)
        # The snapshot is as new as the store was before the backup began: a commit during the backup makes the
        # store newer again, and the next run takes another snapshot.
        os.utime(tmp, ns=(changed, changed))
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except (sqlite3.Error, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"{dest}: cannot write the OCSP store snapshot: {exc}") from None
    return True


@dataclass(frozen=True)
class Checked:
    """What :func:`check_store` found: the number of responses and the statuses whose sample verified."""

    responses: int
    verified: tuple[str, ...]


def _verify_sample(der: bytes, serial: int, ca_cert: x509.Certificate, where: Path) -> None:
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        raise StoreError(f"{where}: a stored response (serial {serial:x}) does not parse: {exc}") from None
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL or response.serial_number != serial:
        raise StoreError(f"{where}: the stored response for serial {serial:x} is not a successful response for it")
    signers = [c for c in response.certificates if not c.extensions.get_extension_for_class(
        x509.BasicConstraints).value.ca] if response.certificates else []
    if not signers:
        raise StoreError(f"{where}: the stored response for serial {serial:x} carries no signer certificate")
    signer = signers[0]
    try:
        signer.verify_directly_issued_by(ca_cert)
        usages = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        raise StoreError(f"{where}: the OCSP signer certificate in the response for serial {serial:x} is not issued "
                         "by this CA") from None
    if ExtendedKeyUsageOID.OCSP_SIGNING not in usages:
        raise StoreError(f"{where}: the certificate that signed serial {serial:x}'s response is no OCSP signer")
    key = signer.public_key()
    try:
        verify_signature(key, response.signature, response.tbs_response_bytes, response.signature_hash_algorithm)
    except TypeError as exc:
        raise StoreError(f"{where}: the response for serial {serial:x} cannot be checked: {exc}") from None
    except InvalidSignature:
        raise StoreError(f"{where}: the signature of the response for serial {serial:x} does not verify") from None


def check_store(path: str | Path, ca_name: str, ca_cert: x509.Certificate) -> Checked:
    """Refuse a store that is corrupt, of another CA or CA certificate, or whose sample responses do not verify."""
    path = Path(path)
    with ResponseStore.open(path, ca=ca_name, issuer_sha256=store_issuer_sha256(ca_cert), read_only=True,
                            check=True) as store:
        verified = []
        for status in ("good", "revoked"):
            row = store.conn.execute("SELECT serial, der FROM responses WHERE status = ? LIMIT 1", (status,)).fetchone()
            if row is not None:
                _verify_sample(bytes(row[1]), int.from_bytes(row[0], "big"), ca_cert, path)
                verified.append(status)
        return Checked(store.count(), tuple(verified))


def install(incoming: str | Path, served: str | Path, ca_name: str, ca_cert_path: str | Path) -> str:
    """Check the pulled snapshot and rename it over the served store; the served one stays on any refusal."""
    incoming, served = Path(incoming), Path(served)
    ca_cert = read_certificate(ca_cert_path, f"the certificate of CA {ca_name!r}")
    if not incoming.is_file():
        raise StoreError(f"{incoming}: no pulled OCSP store snapshot here (the pull did not bring one)")
    # rsync replaces a changed file by a new one (a new inode): the same pulled file, checked for the same CA and
    # certificate, is not copied and checked again at every pull (a million certificates make a 2 GB store).
    seen = incoming.stat()
    source = f"{ca_name} {store_issuer_sha256(ca_cert)} {seen.st_dev} {seen.st_ino} {seen.st_size} {seen.st_mtime_ns}\n"
    record = served.with_name(f".{served.name}.source")
    if served.is_file() and record.is_file() and record.read_text() == source:
        return f"OCSP store of {ca_name!r} unchanged: {served}"
    tmp = served.with_name(f".{served.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            shutil.copy2(incoming, tmp)  # checked as it will be served: nothing changes it between check and rename
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        except OSError as exc:
            raise StoreError(f"{served}: cannot stage the OCSP store: {exc}") from None
        try:
            # The responder opens the served store read-only in a directory it cannot write: a rollback journal,
            # not WAL (which needs a -shm file beside it).
            with contextlib.closing(sqlite3.connect(tmp)) as conn:
                conn.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.Error as exc:
            raise StoreError(f"{incoming}: not a readable OCSP store ({exc}); refused, {served} left as it "
                             "was") from None
        try:
            checked = check_store(tmp, ca_name, ca_cert)
        except StoreError as exc:
            raise StoreError(f"{str(exc).replace(str(tmp), str(incoming))}; refused, {served} left as it "
                             "was") from None
        tmp.chmod(0o644)
        record.unlink(missing_ok=True)
        os.replace(tmp, served)
        record.write_text(source)
        _fsync_dir(served.parent)
    except OSError as exc:
        raise StoreError(f"{served}: cannot install the OCSP store: {exc}") from None
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm"),
                         tmp.with_name(tmp.name + "-journal")):
            leftover.unlink(missing_ok=True)
    samples = ", ".join(checked.verified) or "none yet"
    return (f"OCSP store of {ca_name!r} installed: {served} ({checked.responses} responses; sample signatures "
            f"verified: {samples})")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ceremony-ocsp-publish",
                                description="Snapshot a CA's OCSP response store for the publishers (on the CA "
                                            "host), or check a pulled snapshot and serve it (on a publisher).")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("snapshot", help="SQLite online backup of the store, renamed over DEST when it changed")
    s.add_argument("--store", required=True, help="the CA's response store the signing job writes")
    s.add_argument("--dest", required=True, help="the snapshot the publishers pull")
    s.add_argument("--force", action="store_true", help="take a snapshot even when the store did not change")
    i = sub.add_parser("install", help="check a pulled snapshot and rename it over the served store")
    i.add_argument("--incoming", required=True, help="the pulled snapshot")
    i.add_argument("--served", required=True, help="the store the responder reads")
    i.add_argument("--ca", required=True, help="name of the CA the store must belong to")
    i.add_argument("--ca-cert", required=True, help="the CA certificate (trust anchor installed on this host)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "snapshot":
            taken = snapshot(args.store, args.dest, force=args.force)
            print(f"OCSP store snapshot {'written' if taken else 'current'}: {args.dest}")
        else:
            print(install(args.incoming, args.served, args.ca, args.ca_cert))
    except CeremonyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
