"""Writing outputs: nothing is overwritten, nothing is half-written.

Every output goes to a temporary name in the destination directory, is fsynced, and is then
linked into place with ``os.link`` (which fails if the name exists, so an existing file is never
replaced, even by a race), and the directory is fsynced. A crash at any point leaves either no
file or the complete file, never a partial one under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from ceremony.common.errors import OutputError


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(directory: Path) -> None:
    """Make a directory's entries durable (a rename or link into it survives a power cut)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_absent(*paths: str | Path) -> None:
    """Refuse up front when any output exists, before an HSM key is touched."""
    for p in paths:
        if os.path.lexists(p):
            raise OutputError(f"{p}: output file exists already; it is never overwritten "
                              "(move it away or choose another output directory)")


def write_new(path: str | Path, data: bytes, mode: int = 0o644) -> Path:
    """Create ``path`` with ``data`` atomically; fail if it exists."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    check_absent(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, dest)
        except FileExistsError:
            raise OutputError(f"{dest}: output file exists already; it is never overwritten") from None
        fsync_dir(dest.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return dest


def replace_atomically(path: str | Path, data: bytes, mode: int = 0o644, mtime: float | None = None) -> Path:
    """Replace ``path`` atomically (temporary file, fsync, rename).

    Only for files whose *purpose* is to be replaced: the manifest, a published CRL, metrics.
    Readers see the old or the new content, never a mixture. ``mtime`` (epoch seconds) is set on
    the temporary file before the rename, so the new content never shows another time.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if mtime is not None:
                os.utime(f.fileno(), (mtime, mtime))
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return dest
