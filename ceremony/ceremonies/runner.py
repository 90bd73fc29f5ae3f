"""One ceremony run: all or nothing, through one transaction for files, token objects and transcript.

The promise of the suite is that a ceremony either completes or leaves nothing behind but its
(incomplete) transcript. Every ceremony keeps it through a :class:`CeremonyRun`, in this order:

1. **Plan**: the output files are named up front and must not exist.
2. **Create**: before a key is generated the run writes its intent (token, label, CKA_ID) to a journal
   in its staging directory, and after it the key's SPKI SHA-256. Objects the run created are the
   run's: a failure destroys them.
3. **Stage**: outputs are written (exclusively, fsynced) into the staging directory
   ``<out>/.run-<ceremony>-<UTC>-<pid>/``, never into place, and recorded in the transcript.
4. **Seal**: the transcript is closed and sealed by the transcript-sealing key of the HSM the ceremony
   uses (never the CA key) over the staged result; the verifier is the sealing certificate or, before
   the root has certified the key, its staged public key, recorded under its final name.
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
from pathlib import Path
from types import TracebackType
from typing import Any

from pkcs11 import Attribute
from pkcs11 import exceptions as p11e

from ceremony.common.errors import OutputError
from ceremony.common.fileio import sha256_file
from ceremony.common.manifest import Manifest
from ceremony.common.outputs import OutputSet, TokenObject
from ceremony.hsm.keys import SEALING_KEY, KeyEvidence, generate_key
from ceremony.hsm.session import key_id
from ceremony.transcript.recorder import Recorder


class CeremonyRun(OutputSet):
    """The transaction of one ceremony run (see the module's docstring for the order it keeps)."""

    def __init__(self, out: Path | str, manifest: Manifest | None, recorder: Recorder | None, ceremony: str) -> None:
        super().__init__(out, manifest, ceremony)
        self.recorder = recorder
        self.objects: list[tuple[Any, TokenObject]] = []  # (session, object) created by this run
        self.stack = contextlib.ExitStack()

    # --- the context ---------------------------------------------------------------------------------
    def __enter__(self) -> CeremonyRun:
        super().__enter__()
        if self.recorder is not None:
            for leftover in self.leftovers:
                self.recorder.evidence("interrupted-run", {
                    "run": leftover.run, "committed": leftover.committed, "published": leftover.published,
                    "orphans": [vars(o) for o in leftover.orphans]})
        return self

    def _say(self, line: str) -> None:
        """To the room (the transcript) when there is one; a writer without a record says it on stderr."""
        if self.recorder is not None:
            self.recorder.say(line)
        else:
            super()._say(line)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            super().__exit__(exc_type, exc, tb)
        finally:
            self.stack.close()  # sessions close after the run's objects are destroyed in them

    def enter(self, context: contextlib.AbstractContextManager[Any]) -> Any:
        """Keep ``context`` (an HSM session) open until the run has undone what it must."""
        return self.stack.enter_context(context)

    @property
    def rehearsal(self) -> bool:
        """Whether this run rehearses: its key pairs then carry the rehearsal CKA_ID prefix."""
        if self.recorder is not None:
            return bool(self.recorder.rehearsal)
        return bool(self.manifest is not None and self.manifest.rehearsal)

    def journal_objects(self) -> list[dict[str, str]]:
        return [vars(obj) for _, obj in self.objects]

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
        ident = key_id(session, self.rehearsal)
        obj = self.creating(session, str(session.token.label).strip(), ca.hsm.module, ca.hsm.key_label, ident.hex())
        evidence = generate_key(session, ca.key, ca.hsm.key_label, backup=ca.backup.mode == "wrapped", key_id=ident)
        self.created(obj, evidence.spki_sha256)
        return evidence

    def generate_sealing_key(self, session: Any, ca: Any) -> KeyEvidence:
        """Generate the transcript-sealing key pair beside the CA's key, as an object of this run: never
        extractable (it is not backed up; a restored CA gets a new one, certified anew by the root)."""
        ident = key_id(session, self.rehearsal)
        label = ca.hsm.sealing_label
        obj = self.creating(session, str(session.token.label).strip(), ca.hsm.module, label, ident.hex())
        evidence = generate_key(session, SEALING_KEY, label, backup=False, key_id=ident)
        self.created(obj, evidence.spki_sha256)
        return evidence

    def _undo(self) -> None:
        """Before the commit: destroy what the run created on its tokens, remove what it staged."""
        failures = []
        for session, obj in reversed(self.objects):
            try:
                _destroy(session, obj)
            except Exception as exc:  # each failure is reported, none hides another
                failures.append(f"{obj.describe()}: not destroyed ({type(exc).__name__}); remove it under a "
                                f"recorded exception: {obj.removal()}")
        if not failures:
            super()._undo()
            return
        for line in failures:
            self._say(line)
        if self.staging is not None:  # keep the journal so the next run reports the orphans again
            self.objects = [(s, o) for s, o in self.objects if any(o.describe() in f for f in failures)]
            self._remove_staged_files()


def _destroy(session: Any, obj: TokenObject) -> None:
    """Destroy every object of the key pair (by CKA_ID and label) that this run created."""
    for found in list(session.get_objects({Attribute.ID: bytes.fromhex(obj.id_hex)})):
        if found[Attribute.LABEL] == obj.label:
            with contextlib.suppress(p11e.ObjectHandleInvalid):
                found.destroy()
