"""Key destruction: a CA key destroyed on the tokens that hold it, with evidence before and after.

WebTrust and ETSI EN 319 411-1 ask that the end of a CA key be as provable as its birth. The ceremony, in the
order of the script ``key-destruction``:

1. ``offline-check``: the ceremony is held offline (the root's workstation, or a subordinate's host
   disconnected for it): after it nothing the key could sign leaves the room.
2. ``definition-check``: the CA's certificates in the output directory (every generation) name the key (its SPKI
   SHA-256). A certificate of that key still valid now is refused unless the definition records the decision
   (``cas.<ca>.destruction``: who decided, when, and that very key's SPKI SHA-256). The backup of that key
   (``backup/<ca>.key-backup.json``, ``backup/<ca>.g<N>.key-backup.json`` for a re-key's) and that backup's share
   files still in the directory are listed.
3. ``token-open``: each token is opened and logged in; its object listing is recorded (``token-objects``,
   stage ``before``); the key under the CA's label must be there and be the certificates' key. The key that will
   seal this transcript is found now, before anything is destroyed: the token's own sealing key, or, when that
   one is destroyed too (``destroy_sealing_key``), the root token's sealing key, certified by the root.
4. ``key-destroy``: the key pair's objects (label and CKA_ID) are destroyed, and the sealing key pair's when asked.
5. ``destruction-verify``: a fresh session on each token lists its objects again (stage ``after``); nothing with
   the key's label, CKA_ID or SPKI SHA-256 may remain (``key-absent``).
6. ``backup-destroy``: each share file still in the directory is overwritten and unlinked, recorded as
   ``share-custody`` action ``shredded`` (by the Crypto Officer, witnessed), which the verifier reads as the
   procedure followed; the paper share pages the custodians bring are shredded in the room and listed in the
   answers file's ``share_custody``. The wrapped backup file stays in the output directory as the archive's record
   of what was destroyed (its transcript and the manifest name it): it is inert, since its wrapping key existed
   only as those shares; its copies on removable media are destroyed with the media (``backup-destroyed``).
7. ``outputs-write``: a destruction report (JSON) repeating the facts for whoever reads the directory, and the
   definition used (its ``destruction`` decision) kept as ``pki.<hash>.yml`` when it is not ``pki.yml``.

The transcript is sealed by a transcript-sealing key, never by a CA key. The seal comes after the destruction, so
it cannot be made by a sealing key destroyed in step 4: then the root token's sealing key seals (the root token
is in the room, which is why the ceremony is held at the offline root's workstation in that case); for the root's
own sealing key, a second root token (a restored one, with its ``root.seal.<hex>.crt.pem``) is named with
``seal_token``. Nothing is destroyed before every refusal has had its chance: a refused ceremony leaves disk,
tokens and registry unchanged.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11e

from ceremony.backup.format import BACKUP_DIR, load_backup
from ceremony.ca.generations import chosen_key, key_label_for
from ceremony.ceremonies.runner import CeremonyRun
from ceremony.ceremonies.steps import (
    certificate_evidence,
    keep_definition,
    lang_of,
    login,
    offline_check_step,
    prepare_out,
    say_definition,
    say_outputs,
    sealing_key,
    tell,
    token_step,
    when,
)
from ceremony.common.errors import HsmError, RequestError
from ceremony.common.fileio import sha256_file
from ceremony.common.fingerprints import colon_form
from ceremony.common.terminal_text import say as words
from ceremony.definition.model import CA, LoadedDefinition, TokenRef
from ceremony.hsm.keys import spki_sha256
from ceremony.hsm.session import find_token, load_module
from ceremony.hsm.signers import public_key_from_token
from ceremony.transcript.recorder import Recorder, scripted_step

#: Where the destruction reports are written.
DESTRUCTION_DIR = "destruction"


@dataclass(frozen=True)
class DestructionResult:
    ca_name: str
    spki_sha256: str
    tokens: list[str]
    report: Path
    shredded: list[str]
    sealed_by: str


def on_token(ca: CA, label: str | None) -> CA:
    """The CA as held on the token ``label`` (the definition's token when None)."""
    if label is None:
        return ca
    return ca.model_copy(update={"hsm": ca.hsm.model_copy(update={"token": TokenRef(label=label)})})


def key_certificates(out_dir: Path, ca_name: str,
                     key_generation: int | None = None) -> tuple[str, list[tuple[Path, x509.Certificate]]]:
    """The key to destroy (its SPKI SHA-256) and every certificate of that key here (see :func:`destruction_key`)."""
    _, digest, certs = destruction_key(out_dir, ca_name, key_generation)
    return digest, certs


def destruction_key(out_dir: Path, ca_name: str,
                    key_generation: int | None = None) -> tuple[int, str, list[tuple[Path, x509.Certificate]]]:
    """(key generation, SPKI SHA-256, the certificates of that key here) of the key to destroy: the choice the key
    backup and restore make too (:func:`ceremony.ca.generations.chosen_key`). A re-keyed CA needs
    ``--key-generation``: destroying the wrong key cannot be undone."""
    return chosen_key(out_dir, ca_name, key_generation, "destroy")


def refuse_valid_certificates(defn: LoadedDefinition, ca_name: str, digest: str,
                              certs: list[tuple[Path, x509.Certificate]], now: dt.datetime) -> dict[str, Any] | None:
    """Refuse to destroy a key one of whose certificates is still valid, unless the definition records the
    decision for this key. Returns the decision recorded (None when every certificate has expired)."""
    valid = [(p, c) for p, c in certs if c.not_valid_after_utc > now]
    if not valid:
        return None
    decision = defn.model.cas[ca_name].destruction
    names = ", ".join(f"{p.name} (valid until {when(c.not_valid_after_utc)})" for p, c in valid)
    if decision is None:
        raise RequestError(f"{defn.path}: cas.{ca_name}.destruction: not set, and certificates of the key are still "
                           f"valid: {names}; destroying it ends the CRLs for what it issued. Record the decision in "
                           f"the definition (allowed: destruction: {{decision: '<reference, who decided>', date: "
                           f"YYYY-MM-DD, spki_sha256: {digest}}}) or wait until they expire")
    if decision.spki_sha256 != digest:
        raise RequestError(f"{defn.path}: cas.{ca_name}.destruction.spki_sha256 is {decision.spki_sha256}, but the "
                           f"key of {ca_name!r} is {digest}: the decision recorded is about another key")
    return {"decision": decision.decision, "date": decision.date.isoformat(), "spki_sha256": decision.spki_sha256,
            "certificates_still_valid": [p.name for p, _ in valid]}


def backup_files(out_dir: Path, ca_name: str, digest: str) -> tuple[list[Path], list[Path]]:
    """The wrapped backups of this key in ``OUT/backup`` and the share files still there: ``<ca>.key-backup.json``
    and its ``<ca>.share-…`` for the first key, ``<ca>.g<N>.key-backup.json`` and ``<ca>.g<N>.share-…`` for a
    re-key's (ceremony.ceremonies.backup); only the backups of this very key (SPKI SHA-256) count."""
    folder = out_dir / BACKUP_DIR
    backups = []
    candidates = sorted({*folder.glob(f"{ca_name}.key-backup*.json"), *folder.glob(f"{ca_name}.g*.key-backup*.json")})
    for path in candidates:
        body = load_backup(path)
        if body["key"]["spki_sha256"] == digest:
            backups.append(path)
    stems = {path.name.split(".key-backup", 1)[0] for path in backups}
    shares = sorted(p for stem in stems for p in folder.glob(f"{stem}.share-*.txt"))
    return backups, shares


def object_listing(session: Any) -> list[dict[str, Any]]:
    """Every object the session sees: class, label, CKA_ID and, for a public key, its SPKI SHA-256."""
    rows = []
    for obj in session.get_objects():
        row: dict[str, Any] = {"class": ObjectClass(obj[Attribute.CLASS]).name.lower()}
        for name, attribute in (("label", Attribute.LABEL), ("id_hex", Attribute.ID)):
            try:
                value = obj[attribute]
            except p11e.PKCS11Error:
                continue
            row[name] = bytes(value).hex() if name == "id_hex" else str(value)
        if obj[Attribute.CLASS] == ObjectClass.PUBLIC_KEY:
            with contextlib.suppress(p11e.PKCS11Error, ValueError):
                row["spki_sha256"] = spki_sha256(public_key_from_token(obj))
        rows.append(row)
    return sorted(rows, key=lambda r: (r.get("label", ""), r["class"], r.get("id_hex", "")))


def key_pair(session: Any, label: str, token: str) -> tuple[list[Any], str, str]:
    """The objects of the key pair labelled ``label``: (objects, CKA_ID hex, SPKI SHA-256 of its public half)."""
    objects = list(session.get_objects({Attribute.LABEL: label}))
    public = [o for o in objects if o[Attribute.CLASS] == ObjectClass.PUBLIC_KEY]
    private = [o for o in objects if o[Attribute.CLASS] == ObjectClass.PRIVATE_KEY]
    if len(public) != 1 or len(private) != 1:
        raise HsmError(f"{token}: {len(private)} private and {len(public)} public key(s) labelled {label!r}; a key "
                       "destruction needs exactly the key pair (nothing was destroyed)")
    return objects, bytes(public[0][Attribute.ID]).hex(), spki_sha256(public_key_from_token(public[0]))


def shred(path: Path) -> int:
    """Overwrite the file with zeros, flush it to the disk, and unlink it; returns its size."""
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.write(b"\0" * size)
        handle.flush()
        os.fsync(handle.fileno())
    path.unlink()
    return size


def people(recorder: Recorder) -> tuple[str, str]:
    """Who shreds (the first Crypto Officer) and who witnesses (the Internal Witness), as signed in."""
    performers = getattr(recorder, "performers", None)
    holder = getattr(recorder, "holder", None)
    if performers is None or holder is None:  # a console without a transcript (no sign-in)
        return "the Crypto Officer", "the Internal Witness"
    return (performers("crypto-officer") or ["the Crypto Officer"])[0], holder("internal-witness").name


def destroy_key_ceremony(defn: LoadedDefinition, ca_name: str, out: str | Path, recorder: Recorder, *,
                         rehearsal: bool, tokens: Sequence[str] = (), destroy_sealing_key: bool = False,
                         seal_token: str | None = None, pin_file: str | None = None, interactive: bool = True,
                         now: dt.datetime | None = None, key_generation: int | None = None) -> DestructionResult:
    """Destroy the key of ``ca_name`` on ``tokens`` (default: the token the definition names); ``key_generation``
    names which key of a re-keyed CA (:func:`destruction_key`)."""
    lang = lang_of(recorder)
    model = defn.model
    ca = model.ca(ca_name)
    root_name = model.root_name
    labels: list[str | None] = list(dict.fromkeys(tokens)) or [None]
    holders = [on_token(ca, label) for label in labels]
    names = [h.hsm.token.describe() for h in holders]
    offline_check_step(recorder, rehearsal)
    out_dir, manifest = prepare_out(out, rehearsal)
    moment = now or dt.datetime.now(dt.UTC)
    with CeremonyRun(out_dir, manifest, recorder, "key-destruction") as run:
        with scripted_step(recorder, "definition-check"):
            generation, digest, certs = destruction_key(out_dir, ca_name, key_generation)
            key_label = key_label_for(ca.hsm.key_label, generation)
            decision = refuse_valid_certificates(defn, ca_name, digest, certs, moment)
            sealer = on_token(model.cas[root_name], seal_token) if destroy_sealing_key else holders[0]
            sealer_name = root_name if destroy_sealing_key else ca_name
            if destroy_sealing_key and ca_name == root_name and \
                    sealer.hsm.token.describe() in names:
                raise RequestError(f"the root's sealing key on {sealer.hsm.token.describe()} is destroyed too, so it "
                                   "cannot seal this transcript: name with --seal-token another root token whose "
                                   "sealing key the root certified (a restored root token)")
            backups, shares = backup_files(out_dir, ca_name, digest)
            on = "+".join(h.hsm.token.label or "token" for h in holders)
            report = f"{DESTRUCTION_DIR}/{ca_name}.{digest[:16]}.{on}.json"
            run.plan(report, "key-destruction-report", "json")
            run.check()
            say_definition(recorder, defn, ca_name)
            tell(recorder, "l_destroy_key", ca=repr(ca_name), fingerprint=colon_form(digest), tokens=", ".join(names))
            for path, cert in certs:
                recorder.evidence("certificate", {**certificate_evidence(cert), "path": path.name})
                tell(recorder, "l_destroy_cert", path=path.name, end=when(cert.not_valid_after_utc))
            if decision is not None:
                recorder.evidence("destruction-decision", decision)
                tell(recorder, "l_destroy_decision", decision=decision["decision"], date=decision["date"])
            tell(recorder, "l_destroy_backups",
                 files=", ".join(p.name for p in backups + shares) or words(lang, "none"))
            tell(recorder, "l_destroy_sealer", ca=repr(sealer_name), token=sealer.hsm.token.describe())
            say_outputs(recorder, out_dir, run.planned)
            recorder.evidence("definition", {"path": str(defn.path), "sha256": defn.sha256, "ca": ca_name,
                                             "tokens": names, "destroy_sealing_key": destroy_sealing_key,
                                             "key_generation": generation, "key_label": key_label})
        with scripted_step(recorder, "token-open"):
            sessions = []
            found: list[tuple[str, list[Any], str]] = []  # (token, objects to destroy, what)
            for holder in holders:
                token_step(recorder, holder)
                session = login(recorder, run.stack, holder.hsm, pin_file, interactive)
                sessions.append(session)
                listing = object_listing(session)
                recorder.evidence("token-objects", {"token": holder.hsm.token.describe(), "stage": "before",
                                                    "objects": listing})
                tell(recorder, "l_listing", token=holder.hsm.token.describe(), n=len(listing))
                objects, id_hex, on_token_digest = key_pair(session, key_label, holder.hsm.token.describe())
                if on_token_digest != digest:
                    raise HsmError(f"{holder.hsm.token.describe()}: the key labelled {key_label!r} is "
                                   f"{on_token_digest}, not the key of {certs[-1][0].name} ({digest}); nothing was "
                                   "destroyed")
                found.append((holder.hsm.token.describe(), objects, "ca-key"))
                tell(recorder, "l_key_present", label=repr(key_label), id=id_hex,
                     token=holder.hsm.token.describe())
                if destroy_sealing_key:
                    seal_objects, _, seal_digest = key_pair(session, ca.hsm.sealing_label,
                                                            holder.hsm.token.describe())
                    found.append((holder.hsm.token.describe(), seal_objects, "transcript-sealing"))
                    tell(recorder, "l_key_present", label=repr(ca.hsm.sealing_label), id=seal_digest[:16] + "…",
                         token=holder.hsm.token.describe())
            if destroy_sealing_key and sealer.hsm.token.describe() not in names:
                token_step(recorder, sealer)
                seal_session = login(recorder, run.stack, sealer.hsm, pin_file, interactive)
            else:
                seal_session = sessions[names.index(sealer.hsm.token.describe())]
            seal_key, seal_cert = sealing_key(recorder, seal_session, sealer_name, sealer, out_dir)
        with scripted_step(recorder, "key-destroy"):
            destroyed: list[dict[str, Any]] = []
            for token, objects, purpose in found:
                rows = [{"class": ObjectClass(o[Attribute.CLASS]).name.lower(), "label": str(o[Attribute.LABEL]),
                         "id_hex": bytes(o[Attribute.ID]).hex()} for o in objects]
                entry: dict[str, Any] = {"token": token, "purpose": purpose, "objects": rows}
                for obj in objects:
                    obj.destroy()
                recorder.evidence("key-destroyed", {**entry, "time": dt.datetime.now(dt.UTC).isoformat()})
                tell(recorder, "l_destroyed", n=len(objects), label=repr(rows[0]["label"]), token=token)
                destroyed.append(entry)
        with scripted_step(recorder, "destruction-verify"):
            gone_ids = {(e["token"], o["id_hex"]) for e in destroyed for o in e["objects"]}
            gone_labels = {(e["token"], o["label"]) for e in destroyed for o in e["objects"]}
            after: dict[str, list[dict[str, Any]]] = {}
            for holder in holders:
                token = holder.hsm.token.describe()
                # A new session: what the token holds now, not what the destroying session remembers.
                with find_token(load_module(holder.hsm.module), holder.hsm.token).open(rw=False) as fresh:
                    listing = object_listing(fresh)
                left = [r for r in listing if r.get("spki_sha256") == digest or (token, r.get("id_hex")) in gone_ids
                        or (token, r.get("label")) in gone_labels]
                recorder.evidence("token-objects", {"token": token, "stage": "after", "session": "fresh",
                                                    "objects": listing})
                if left:
                    raise HsmError(f"{token}: objects of the destroyed key are still there after destruction: "
                                   f"{left}")
                recorder.evidence("key-absent", {"token": token, "spki_sha256": digest, "checked": "fresh session, "
                                                 "every object listed", "objects_left": len(listing)})
                tell(recorder, "l_key_absent", token=token, fingerprint=colon_form(digest), n=len(listing))
                after[token] = listing
        with scripted_step(recorder, "backup-destroy"):
            by, witness = people(recorder)
            shredded = []
            for path in shares:
                rel = path.relative_to(out_dir).as_posix()
                facts: dict[str, Any] = {"sha256": sha256_file(path)}
                facts["size"] = shred(path)
                recorder.evidence("share-custody", {"file": rel, "action": "shredded", "by": by, "witness": witness,
                                                    "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                                                    "how": "overwritten with zeros and unlinked by the ceremony",
                                                    **facts})
                tell(recorder, "l_shredded", file=rel)
                shredded.append(rel)
            for path in backups:
                body = load_backup(path)
                recorder.evidence("backup-destroyed", {
                    "file": path.relative_to(out_dir).as_posix(), "sha256": sha256_file(path),
                    "backup_id": body["backup_id"], "key_spki_sha256": digest,
                    "share_files_shredded": shredded,
                    "kept": "the output directory's copy is the archive's record of what was destroyed; its wrapping "
                            "key existed only as the shares"})
                tell(recorder, "l_backup_inert", file=path.name, id=body["backup_id"])
            if not backups:
                tell(recorder, "l_no_backup")
        with scripted_step(recorder, "outputs-write"):
            body = {"format": "ceremony-key-destruction/1", "rehearsal": rehearsal, "ca": ca_name,
                    "key_spki_sha256": digest, "key_generation": generation, "key_label": key_label,
                    "time": moment.isoformat(), "decision": decision,
                    "certificates": [p.name for p, _ in certs], "destroyed": destroyed,
                    "after": {t: len(rows) for t, rows in after.items()},
                    "backups": [p.relative_to(out_dir).as_posix() for p in backups], "shares_shredded": shredded,
                    "sealed_by": {"ca": sealer_name, "token": sealer.hsm.token.describe(),
                                  "certificate": seal_cert.name}}
            run.stage(report, (json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode())
            # The definition that allowed it (its ``destruction`` decision) stays beside pki.yml as pki.<hash>.yml.
            keep_definition(defn, run)
            run.record()
        run.seal(seal_key, seal_cert, "certificate")
    return DestructionResult(ca_name, digest, names, out_dir / report, shredded, seal_cert.name)
