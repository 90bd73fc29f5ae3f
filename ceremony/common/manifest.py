"""``manifest.json``: the list of artifacts in an output directory, with their hashes.

Every run writes or extends the manifest of its output directory. Paths are relative to the
manifest. A manifest is never silently turned from production into rehearsal or back: mixing
them in one directory is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ceremony.common.errors import OutputError
from ceremony.common.fileio import replace_atomically, sha256_file

MANIFEST_NAME = "manifest.json"


class Manifest:
    def __init__(self, directory: str | Path, rehearsal: bool) -> None:
        self.directory = Path(directory)
        self.path = self.directory / MANIFEST_NAME
        self.rehearsal = rehearsal
        self.artifacts: list[dict[str, Any]] = []
        self.reload()

    def reload(self) -> None:
        """Re-read the file: several writers (ceremonies, stages) extend the same manifest in turn."""
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise OutputError(f"{self.path}: unreadable manifest: {exc}") from None
            if data.get("rehearsal") is not self.rehearsal:
                raise OutputError(f"{self.path}: this directory holds "
                                  f"{'rehearsal' if data.get('rehearsal') else 'production'} artifacts; "
                                  "never mix rehearsal and production outputs")
            self.artifacts = list(data.get("artifacts", []))

    def add(self, kind: str, path: str | Path, format: str, **extra: Any) -> dict[str, Any]:
        """Record the file at ``path`` and save the manifest.

        ``path`` is a path as the filesystem reads it: absolute, or relative to the current directory,
        exactly what a writer gets back from joining a file name onto the output directory it was given.
        It is never joined onto the manifest's directory a second time (``out/trial`` given on the command
        line must not become ``out/trial/out/trial``). The manifest stores it relative to itself.
        """
        self.reload()
        absolute = Path(path).resolve()
        try:
            rel = absolute.relative_to(self.directory.resolve()).as_posix()
        except ValueError:
            raise OutputError(f"{path}: not inside the output directory {self.directory}; the manifest lists "
                              "only files next to it") from None
        entry = {"kind": kind, "path": rel, "sha256": sha256_file(absolute), "format": format, **extra}
        self.artifacts = [a for a in self.artifacts if a["path"] != rel] + [entry]
        self.save()
        return entry

    def add_entries(self, entries: list[dict[str, Any]]) -> None:
        """Record several files at once, in one atomic write of the manifest (a ceremony's publication).

        Each entry's ``path`` is relative to the manifest and its ``sha256`` already computed by the
        caller, which has checked the file against it.
        """
        self.reload()
        paths = {e["path"] for e in entries}
        self.artifacts = [a for a in self.artifacts if a["path"] not in paths] + [dict(e) for e in entries]
        self.save()

    def find(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        self.reload()
        return [a for a in self.artifacts
                if a["kind"] == kind and all(a.get(k) == v for k, v in match.items())]

    def save(self) -> None:
        body = {"rehearsal": self.rehearsal, "artifacts": self.artifacts}
        replace_atomically(self.path, (json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode())
