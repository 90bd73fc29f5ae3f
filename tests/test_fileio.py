"""Output files: created exclusively and atomically; the manifest never mixes rehearsal and production."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from ceremony.common.errors import OutputError
from ceremony.common.fileio import replace_atomically, sha256_file, write_new
from ceremony.common.manifest import Manifest


def test_write_new_never_overwrites_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = write_new(tmp_path / "a.pem", b"first", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    with pytest.raises(OutputError, match="never overwritten"):
        write_new(tmp_path / "a.pem", b"second")
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pem"], "no temporary file left behind"


def test_failed_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "I/O error")
    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        write_new(tmp_path / "b.der", b"x" * 4096)
    assert list(tmp_path.iterdir()) == []


def test_replace_atomically(tmp_path: Path) -> None:
    p = replace_atomically(tmp_path / "m.json", b"1")
    replace_atomically(p, b"2")
    assert p.read_bytes() == b"2" and len(list(tmp_path.iterdir())) == 1


def test_manifest_paths_hashes_and_no_mixing(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    f = write_new(tmp_path / "sub" / "x.pem", b"pem")
    m = Manifest(tmp_path, rehearsal=True)
    entry = m.add("root-certificate", f, "pem")
    assert entry == {"kind": "root-certificate", "path": "sub/x.pem", "sha256": sha256_file(f), "format": "pem"}
    # A second writer extends, it does not clobber.
    Manifest(tmp_path, rehearsal=True).add("root-public-key", write_new(tmp_path / "k.pem", b"k"), "pem")
    m.add("hsm-config", write_new(tmp_path / "c.conf", b"c"), "softhsm2-conf")
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["rehearsal"] is True and [a["kind"] for a in data["artifacts"]] == [
        "root-certificate", "root-public-key", "hsm-config"]
    with pytest.raises(OutputError, match="never mix"):
        Manifest(tmp_path, rehearsal=False)
