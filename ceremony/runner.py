"""One ceremony run: all or nothing, through one transaction for files, token objects and transcript.

The promise of the suite is that a ceremony either completes or leaves nothing behind but its
(incomplete) transcript. Every ceremony keeps it through a :class:`CeremonyRun`, in this order:

1. **Plan**: the output files are named up front and must not exist.
2. **Create**: before a key is generated the run writes its intent (token, label, CKA_ID) to a journal
   in its staging directory, and after it the key's SPKI SHA-256. Objects the run created are the
   run's: a failure destroys them.
3. **Stage**: outputs are written (exclusively, fsynced) into the staging directory
   ``<out>/.run-<ceremony>-<UTC>-<pid>/``, never into place, and recorded in the transcript.
4. **Seal**: the transcript is closed and sealed by the CA key over the staged result (the verifier is
   the staged certificate or public key, recorded under its final name).
5. **Commit**: ``publish.json`` is written and fsynced in the staging directory. This is the point of
   no return: before it, a failure or interruption (exception, Ctrl-C, a "stop" decision, an HSM
   error) destroys the objects the run created and removes the staged files; after it, nothing is ever
   deleted.
6. **Publish**: the staged files are linked into place (never over an existing file), the manifest gets
   their entries in one atomic write, and the staging directory is removed.

``kill -9`` can strike between any two of these. The pre-flight of the next ceremony shows what was
left (:func:`inspect_leftovers`, changing nothing): every token object an uncommitted run's journal
names is reported as an orphan (token, label, CKA_ID, SPKI SHA-256) with the command that removes
it, to be run under a recorded exception. The next run itself (:func:`recover`) then publishes a
committed run (rolled forward: the ceremony happened, its seal covers these files), removes an
uncommitted one's staging directory, and records both in its own transcript. No output file and no
manifest entry of an uncommitted run ever exists.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from pkcs11 import exceptions as p11e

from .errors import OutputError
from .fileio import check_absent, fsync_dir, sha256_file, write_new
from .hsm import random_bytes
from .keys import KeyEvidence, generate_key
from .manifest import Manifest
from .recorder import Recorder

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


class CeremonyRun:
    """The transaction of one ceremony run (see the module's docstring for the order it keeps)."""

    def __init__(self, out: Path | str, manifest: Manifest | None, recorder: Recorder | None, ceremony: str) -> None:
        self.out = Path(out)
        self.manifest = manifest
        self.recorder = recorder
        self.ceremony = ceremony
        self.planned: dict[str, Planned] = {}
        self.objects: list[tuple[Any, TokenObject]] = []  # (session, object) created by this run
        self.staging: Path | None = None
        self.committed = False
        self.published: list[Path] = []
        self.leftovers: list[Leftover] = []
        self.stack = contextlib.ExitStack()

    # --- the context ---------------------------------------------------------------------------------
    def __enter__(self) -> CeremonyRun:
        if self.out.exists() and not self.out.is_dir():
            raise OutputError(f"{self.out}: the output directory is a file")
        self.leftovers = recover(self.out, self.manifest)
        for leftover in self.leftovers:
            for line in leftover.lines():
                self._say(line)
            if self.recorder is not None:
                self.recorder.evidence("interrupted-run", {
                    "run": leftover.run, "committed": leftover.committed, "published": leftover.published,
                    "orphans": [vars(o) for o in leftover.orphans]})
        return self

    def _say(self, line: str) -> None:
        """To the room (the transcript) when there is one; a writer without a record says it on stderr."""
        if self.recorder is not None:
            self.recorder.say(line)
        else:
            print(line, file=sys.stderr)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc is not None and not self.committed:
                self._undo()
        finally:
            self.stack.close()  # sessions close after the run's objects are destroyed in them
        if exc is None and self.staging is not None and not self.committed:
            # A ceremony that returns without sealing has not completed: nothing of it is published.
            self._undo()
            raise OutputError(f"{self.ceremony}: the run ended without its seal; nothing was published")

    def enter(self, context: contextlib.AbstractContextManager[Any]) -> Any:
        """Keep ``context`` (an HSM session) open until the run has undone what it must."""
        return self.stack.enter_context(context)

    # --- planning and staging --------------------------------------------------------------------------
    def plan(self, filename: str, kind: str, fmt: str, **extra: Any) -> Path:
        """Name an output. ``_replace=True`` marks a file whose purpose is to be replaced at publication
        (a registry kept next to the outputs); every other output is new and never overwrites a file."""
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
            "objects": [vars(obj) for _, obj in self.objects],
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

    def record(self) -> None:
        """Tell the transcript what will be published (final names, hashes of the staged files)."""
        if self.recorder is None:
            return
        for planned in self.planned.values():
            if planned.staged is not None:
                self.recorder.artifact(planned.kind, self.out / planned.filename, sha256_file(planned.staged),
                                       format=planned.fmt,
                                       **{k: v for k, v in planned.extra.items() if not k.startswith("_")})

    # --- token objects -----------------------------------------------------------------------------------
    def creating(self, session: Any, token: str, module: str, label: str, id_hex: str) -> TokenObject:
        """Journal the intent to create a key pair before it exists (kill -9 during generation included)."""
        self._staging_dir()
        obj = TokenObject(token=token, module=module, label=label, id_hex=id_hex)
        self.objects.append((session, obj))
        self._journal()
        return obj

    def created(self, obj: TokenObject, spki_sha256: str) -> None:
        obj.spki_sha256 = spki_sha256
        self._journal()

    # --- the seal, the commit, the publication -------------------------------------------------------
    def seal(self, private_key: Any, verifier: str | Path, kind: str) -> None:
        """Seal the transcript over the staged result, then commit and publish the outputs.

        ``verifier`` names the file whose public key checks the seal: an output of this run (its
        final name; the staged file is checked) or a file already there (the issuer's certificate).
        """
        if self.recorder is None:
            raise OutputError(f"{self.ceremony}: a run without a transcript has no seal; it publishes with commit()")
        name = str(verifier)
        planned = self.planned.get(name)
        if planned is not None and planned.staged is not None:
            self.recorder.seal(private_key, {"kind": kind, "path": name, "sha256": sha256_file(planned.staged),
                                             "staged": str(planned.staged)})
        else:
            path = Path(verifier)
            try:
                rel = path.resolve().relative_to(self.out.resolve()).as_posix()
            except ValueError:  # named elsewhere (--issuer-cert): the auditor is given it with --artifacts
                rel = path.name
            self.recorder.seal(private_key, {"kind": kind, "path": rel, "sha256": sha256_file(path)})
        self.commit()

    def generate_key(self, session: Any, ca: Any) -> KeyEvidence:
        """Generate the CA's key pair on the open token as an object of this run (journalled first)."""
        key_id = random_bytes(session, 16)
        obj = self.creating(session, str(session.token.label).strip(), ca.hsm.module, ca.hsm.key_label, key_id.hex())
        evidence = generate_key(session, ca.key, ca.hsm.key_label, backup=ca.backup.mode == "wrapped", key_id=key_id)
        self.created(obj, evidence.spki_sha256)
        return evidence

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
                            **{k: v for k, v in planned.extra.items() if not k.startswith("_")}})
        _write_json(staging / COMMIT, {"ceremony": self.ceremony, "entries": entries})
        self.committed = True
        self.published = [self.out / e["file"] for e in entries]
        _publish(self.out, staging, self.manifest)

    def _undo(self) -> None:
        """Before the commit: destroy what the run created on its tokens, remove what it staged."""
        failures = []
        for session, obj in reversed(self.objects):
            try:
                _destroy(session, obj)
            except Exception as exc:  # each failure is reported, none hides another
                failures.append(f"{obj.describe()}: not destroyed ({type(exc).__name__}); remove it under a "
                                f"recorded exception: {obj.removal()}")
        if failures:
            for line in failures:
                self._say(line)
            if self.staging is not None:  # keep the journal so the next run reports the orphans again
                for planned in self.planned.values():
                    if planned.staged is not None:
                        planned.staged.unlink(missing_ok=True)
                self.objects = [(s, o) for s, o in self.objects if any(o.describe() in f for f in failures)]
                self._journal()
            return
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            fsync_dir(self.out)
            self.staging = None


def _destroy(session: Any, obj: TokenObject) -> None:
    """Destroy every object of the key pair (by CKA_ID and label) that this run created."""
    from pkcs11 import Attribute

    for found in list(session.get_objects({Attribute.ID: bytes.fromhex(obj.id_hex)})):
        if found[Attribute.LABEL] == obj.label:
            with contextlib.suppress(p11e.ObjectHandleInvalid):
                found.destroy()


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
    if manifest is not None:
        manifest.add_entries([{k: v for k, v in e.items() if k not in ("file", "staged", "replace")}
                              for e in commit["entries"]])
    shutil.rmtree(staging)
    fsync_dir(out)
    return done


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

