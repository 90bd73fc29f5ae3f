"""The output set: one way for the whole engine to write its outputs, all or nothing.

Every writer (a ceremony, the end-entity issuance, the CP/CPS, the transcript report, the paper
scripts) names its outputs up front, stages them in ``<out>/.run-<name>-<UTC>-<pid>/`` (exclusively,
fsynced), and publishes them in one step: ``publish.json`` written and fsynced in the staging
directory (the point of no return), the files linked into place (never over an existing file), the
manifest extended in one atomic write, the staging directory removed. Before the commit a failure
removes what was staged; after it nothing is ever deleted, and the next writer in the directory
rolls a half-done publication forward (:func:`recover`).

The staging directory also holds the journal a ceremony keeps of the key pairs it creates on its
tokens (:class:`TokenObject`): what an interrupted run left there is what the pre-flight reports
(:func:`inspect_leftovers`). The tokens themselves are the ceremony runner's business
(``ceremony.ceremonies.runner``); this module never opens one.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from ceremony.common.errors import OutputError
from ceremony.common.fileio import check_absent, fsync_dir, sha256_file, write_new
from ceremony.common.manifest import Manifest

STAGING_PREFIX = ".run-"


JOURNAL = "journal.json"


COMMIT = "publish.json"


def _write_json(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` durably (temporary file, fsync, rename, fsync of the directory)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, ensure_ascii=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


@dataclass
class Planned:
    filename: str
    kind: str
    fmt: str
    extra: dict[str, Any] = field(default_factory=dict)
    staged: Path | None = None


@dataclass
class TokenObject:
    """A key pair the run creates on a token: enough to find it again, and to remove it by hand."""

    token: str
    module: str
    label: str
    id_hex: str
    spki_sha256: str = ""

    def removal(self) -> str:
        """The commands that remove this key pair (run under a recorded exception, never by the suite)."""
        base = f"pkcs11-tool --module {self.module} --token-label '{self.token}' --login"
        return (f"{base} --delete-object --type privkey --id {self.id_hex}; "
                f"{base} --delete-object --type pubkey --id {self.id_hex}")

    def describe(self) -> str:
        spki = self.spki_sha256 or "not known (interrupted during generation)"
        return (f"token {self.token!r}: key pair labelled {self.label!r}, CKA_ID {self.id_hex}, "
                f"SPKI SHA-256 {spki}")


@dataclass(frozen=True)
class Leftover:
    """What an earlier run left in the output directory, and what became of it."""

    run: str
    committed: bool
    published: list[str]
    orphans: list[TokenObject]

    def lines(self) -> list[str]:
        if self.committed:
            return [f"run {self.run} was interrupted after its seal: its outputs are now published "
                    f"({', '.join(self.published) or 'nothing left to do'})"]
        lines = [f"run {self.run} was interrupted before its seal: none of its outputs was published"]
        for obj in self.orphans:
            lines.append(f"orphan {obj.describe()}; it belongs to no published output. Remove it under a "
                         f"recorded exception: {obj.removal()}")
        return lines


class OutputSet:
    """The outputs of one writer: planned, staged, committed and published, or none of them."""

    def __init__(self, out: Path | str, manifest: Manifest | None, name: str) -> None:
        self.out = Path(out)
        self.manifest = manifest
        self.ceremony = name
        self.planned: dict[str, Planned] = {}
        self.staging: Path | None = None
        self.committed = False
        self.published: list[Path] = []
        self.leftovers: list[Leftover] = []

    def __enter__(self) -> OutputSet:
        if self.out.exists() and not self.out.is_dir():
            raise OutputError(f"{self.out}: the output directory is a file")
        self.leftovers = recover(self.out, self.manifest)
        for leftover in self.leftovers:
            for line in leftover.lines():
                self._say(line)
        return self

    def _say(self, line: str) -> None:
        """A writer without a record says it on stderr (a ceremony says it to the room)."""
        print(line, file=sys.stderr)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None and not self.committed:
            self._undo()
        elif exc is None and self.staging is not None and not self.committed:
            # A writer that returns without committing has not completed: nothing of it is published.
            self._undo()
            raise OutputError(f"{self.ceremony}: the run ended without its seal; nothing was published")

    # --- planning and staging --------------------------------------------------------------------------
    def plan(self, filename: str, kind: str, fmt: str, **extra: Any) -> Path:
        """Name an output. ``_replace=True`` marks a file whose purpose is to be replaced at publication
        (a registry kept next to the outputs); every other output is new and never overwrites a file.
        ``_also=[absolute paths]``: files outside the output directory that are replaced by a copy of this output
        at publication, after it is in place (a CA host's registry and CRL publication directory live beside the
        ceremonies' directory, not in it); the copy is written beside each target, fsynced and renamed over it, so
        a reader sees the old file or the new one, and a publication rolled forward after a crash copies again."""
        self.planned[filename] = Planned(filename, kind, fmt, dict(extra))
        return self.out / filename

    def check(self) -> None:
        """Refuse before anything happens when a planned output exists already."""
        check_absent(*(self.out / name for name, p in self.planned.items() if not p.extra.get("_replace")))

    def _staging_dir(self) -> Path:
        if self.staging is None:
            try:
                self.out.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(f"{self.out}: cannot create the output directory: {exc.strerror}") from None
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
            self.staging = self.out / f"{STAGING_PREFIX}{self.ceremony}-{stamp}-{os.getpid()}"
            self.staging.mkdir(mode=0o700)
            fsync_dir(self.out)
            self._journal()
        return self.staging

    def _journal(self) -> None:
        assert self.staging is not None
        _write_json(self.staging / JOURNAL, {
            "ceremony": self.ceremony,
            "objects": self.journal_objects(),
            "staged": [name for name, p in self.planned.items() if p.staged is not None],
        })

    def stage(self, filename: str, data: bytes) -> Path:
        """Write a planned output into the staging directory (exclusively, fsynced; mode ``_mode`` of its plan,
        0644 by default: a share for one custodian is 0600), where it keeps its mode when linked into place."""
        planned = self.planned.get(filename)
        if planned is None:
            raise OutputError(f"{filename}: not a planned output of this ceremony")
        if planned.staged is not None:
            raise OutputError(f"{filename}: staged twice in one run")
        planned.staged = write_new(self._staging_dir() / filename, data, planned.extra.get("_mode", 0o644))
        self._journal()
        return planned.staged

    def stage_file(self, filename: str) -> Path:
        """The staging path of a planned output the caller creates itself (a database), marked staged."""
        planned = self.planned.get(filename)
        if planned is None:
            raise OutputError(f"{filename}: not a planned output of this ceremony")
        target = self._staging_dir() / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        planned.staged = target
        self._journal()
        return target

    def staged(self, filename: str) -> Path:
        planned = self.planned.get(filename)
        if planned is None or planned.staged is None:
            raise OutputError(f"{filename}: not staged in this run")
        return planned.staged

    def keep_definition(self, path: Path, sha256: str, name: str) -> None:
        """Stage a copy of the definition under ``name`` unless that very file is in the directory already."""
        target = self.out / name
        if target.exists():
            if sha256_file(target) != sha256:
                raise OutputError(f"{target}: holds another definition than {path} under this name; the output "
                                  "directory has been tampered with")
            if self.manifest is not None and not self.manifest.find("pki-definition", path=name, sha256=sha256):
                self.plan(name, "pki-definition", "yaml", _existing=True)
            return
        self.plan(name, "pki-definition", "yaml")
        self.stage(name, path.read_bytes())

    def journal_objects(self) -> list[dict[str, str]]:
        """The token objects this run created, for the journal (a ceremony's runner has some)."""
        return []

    def commit(self) -> None:
        """The point of no return, then the publication (a writer without a transcript calls it directly)."""
        staging = self._staging_dir()
        entries = []
        for planned in self.planned.values():
            source = planned.staged if planned.staged is not None else self.out / planned.filename
            listed = self.out / planned.filename
            if self.manifest is not None:  # the manifest may list a subdirectory's files (end-entity/)
                listed = Path(os.path.relpath(listed.resolve(), self.manifest.directory.resolve()))
            entries.append({"kind": planned.kind, "file": planned.filename, "path": Path(listed).as_posix(),
                            "sha256": sha256_file(source),
                            "format": planned.fmt, "staged": planned.staged is not None,
                            "replace": bool(planned.extra.get("_replace")),
                            "also": [str(p) for p in planned.extra.get("_also", ())],
                            **{k: v for k, v in planned.extra.items() if not k.startswith("_")}})
        _write_json(staging / COMMIT, {"ceremony": self.ceremony, "entries": entries})
        self.committed = True
        self.published = [self.out / e["file"] for e in entries]
        _publish(self.out, staging, self.manifest)

    def _undo(self) -> None:
        """Before the commit: remove what was staged, and the staging directory with it."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            fsync_dir(self.out)
            self.staging = None

    def _remove_staged_files(self) -> None:
        """Remove the staged outputs but keep the journal (a ceremony whose token objects could not be
        destroyed keeps it, so that the next run reports them again)."""
        for planned in self.planned.values():
            if planned.staged is not None:
                planned.staged.unlink(missing_ok=True)
        self._journal()


def _publish(out: Path, staging: Path, manifest: Manifest | None) -> list[str]:
    """Link a committed run's staged files into place and list them in the manifest; idempotent."""
    commit = json.loads((staging / COMMIT).read_text(encoding="utf-8"))
    done = []
    for entry in commit["entries"]:
        target = out / entry["file"]
        if not entry.get("staged"):
            continue
        source = staging / entry["file"]
        if entry.get("replace"):
            if source.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, target)
                done.append(entry["file"])
            elif sha256_file(target) != entry["sha256"]:
                raise OutputError(f"{target}: not the file this run sealed, and its staged copy is gone")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            if sha256_file(target) != entry["sha256"]:
                raise OutputError(f"{target}: another file took the place of this run's output; nothing was "
                                  f"overwritten and the sealed output is kept in {staging}")
            continue
        os.link(source, target)
        done.append(entry["file"])
    for directory in sorted({(out / e["file"]).parent for e in commit["entries"]}):
        fsync_dir(directory)
    for entry in commit["entries"]:
        for other in entry.get("also") or ():
            _copy_over(out / entry["file"], Path(other), entry["sha256"])
    if manifest is not None:
        manifest.add_entries([{k: v for k, v in e.items() if k not in ("file", "staged", "replace", "also")}
                              for e in commit["entries"]])
    shutil.rmtree(staging)
    fsync_dir(out)
    return done


def _copy_over(source: Path, target: Path, sha256: str) -> None:
    """Replace ``target`` (outside the output directory) by a copy of the published ``source``: written beside it
    under a temporary name, fsynced, given the replaced file's mode, renamed over it; nothing when it holds the
    copy already (a publication rolled forward)."""
    if sha256_file(source) != sha256:
        raise OutputError(f"{source}: not the file this run sealed; {target} was not replaced")
    if target.is_file() and sha256_file(target) == sha256:
        return
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(source, "rb") as src, open(temporary, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fchmod(dst.fileno(), mode)
            os.fsync(dst.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"{target}: cannot replace it with the sealed {source} ({exc.strerror}); copy it by hand "
                          f"(the outputs are published in {source.parent})") from None
    fsync_dir(target.parent)


def leftover_runs(out: Path) -> list[Path]:
    """The staging directories earlier runs left in ``out`` (interrupted ones)."""
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.is_dir() and p.name.startswith(STAGING_PREFIX))


def _orphans(staging: Path) -> list[TokenObject]:
    try:
        journal = json.loads((staging / JOURNAL).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [TokenObject(**obj) for obj in journal.get("objects", [])]


def inspect_leftovers(out: Path) -> list[Leftover]:
    """What interrupted runs left in ``out``, without changing anything (the pre-flight's view)."""
    return [Leftover(staging.name, (staging / COMMIT).exists(), [],
                     [] if (staging / COMMIT).exists() else _orphans(staging))
            for staging in leftover_runs(out)]


def recover(out: Path, manifest: Manifest | None) -> list[Leftover]:
    """Finish what interrupted runs left: publish the committed ones, clean the others, name orphans."""
    found = []
    for staging in leftover_runs(out):
        if (staging / COMMIT).exists():
            published = _publish(out, staging, manifest)
            found.append(Leftover(staging.name, True, published, []))
            continue
        # The pre-flight has shown the orphans (inspect_leftovers) and refused while their label is taken;
        # this run says them again and records them in its own transcript, then the journal goes.
        found.append(Leftover(staging.name, False, [], _orphans(staging)))
        shutil.rmtree(staging)
    if found:
        fsync_dir(out)
    return found
