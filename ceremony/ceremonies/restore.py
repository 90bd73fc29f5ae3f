"""Key-restore ceremony: M custodians bring their shares, the CA key is unwrapped onto a fresh token.

Everything that can be refused is refused before the target token is touched, in the order of the
ceremony script ``key-restore``:

0. ``offline-check``: as at the root key ceremony, first, before anything else: in production a network
   interface other than loopback that is up stops the ceremony (the wrapping key is recombined on this
   workstation); a rehearsal records it and goes on.
1. ``definition-check``: the CA has a wrapped-backup policy, the original certificate is at hand,
   the restore report does not exist yet. Which key: as at the backup (``--key-generation N`` once the CA has been
   re-keyed, :func:`ceremony.ceremonies.backup.chosen_certificate`); it is restored under its own label,
   ``<key_label>.g<N>`` for a re-key's.
2. ``backup-verify``: the backup file parses, its SHA-256 checksum matches (corruption), it is the
   backup of the certificate's key and of that key generation, and rehearsal and production are not mixed.
3. ``shares-collect``: each page's checksum, backup id, CA, quorum and custody record must match the
   backup; at least M distinct shares; the recombined key must give the backup's key check value
   (a wrong share), and the file's HMAC must verify under it (tampering).
4. ``token-open``: the Crypto Officer logs in on the target token; no object with the key's label.
5. ``key-unwrap``: the wrapping key is imported as a *session* object (gone when the session
   closes), the CA key is unwrapped as a token object with the original label and CKA_ID, and its
   public half is created from the backup; the restored key's attributes are recorded
   (CKA_LOCAL false: it was not generated on this token).
6. ``test-signature``: the restored key signs a test message; it must verify against the original
   certificate's public key. Otherwise the new objects are destroyed.
7. ``sealing-key``: the target token's transcript-sealing key, which seals this transcript. A token that
   already holds one certified by the root keeps it; otherwise one is generated (never extractable: sealing
   keys are never backed up) and, for the root, certified at once by the restored root key
   (``<root>.seal.<first 16 hex of its SPKI SHA-256>.crt.pem``). A subordinate's new sealing key gets a CSR
   (``<ca>.seal.<…>.csr.pem``) for the root to certify; until then this transcript is "not anchored".
8. ``outputs-write``: a restore report (JSON) with the test message and signature.

A failure at any step leaves the target token as it was: nothing is created before step 5, and
steps 5 and 6 destroy what they created when anything fails.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pkcs11 import Attribute
from pkcs11 import exceptions as p11e

from ceremony.backup.format import (
    BACKUP_DIR,
    BackupError,
    load_backup,
    public_key_of,
    verify_test_signature,
    wrapping_algorithm,
    wrapping_module,
)
from ceremony.backup.quorum import check_shares, recombine
from ceremony.backup.shares import read_share
from ceremony.ca.generations import generation_stem, key_label_for
from ceremony.ceremonies.backup import chosen_certificate, token_step, wrapped_ca
from ceremony.ceremonies.runner import CeremonyRun
from ceremony.ceremonies.steps import (
    PEM,
    SPKI,
    certificate_file_evidence,
    der_of,
    generate_sealing_key,
    issue_sealing_certificate,
    lang_of,
    login,
    offline_check_step,
    say_definition,
    say_key_hash,
    say_outputs,
    sealing_key,
    short_sha,
    tell,
    yes_no,
)
from ceremony.common.errors import HsmError, OutputError
from ceremony.common.fileio import sha256_file
from ceremony.common.manifest import Manifest
from ceremony.common.terminal_text import say as words
from ceremony.definition.model import Hsm, LoadedDefinition
from ceremony.hsm.keys import key_evidence, spki_sha256
from ceremony.hsm.nss import SOFTOKN_WRAP_PAD, softokn_token
from ceremony.hsm.session import find_token, load_module, objects_with_label
from ceremony.hsm.signers import public_key_from_token, signing_key
from ceremony.hsm.wrapping import (
    WRAP_ALGORITHM_FOUND_BY,
    import_wrapping_key,
    key_type_of,
    public_key_template,
    sign_with,
    unwrap_private,
    wrap_algorithm,
)
from ceremony.transcript.recorder import Recorder, scripted_step
from ceremony.x509.csr import build_sealing_csr


@dataclass(frozen=True)
class RestoreResult:
    ca_name: str
    backup_id: str
    target_token: str
    report: Path
    key: dict[str, Any]


def restore_ceremony(defn: LoadedDefinition, ca_name: str, backup: str | Path, shares: Sequence[str | Path],
                     out: str | Path, recorder: Recorder, *, rehearsal: bool, certificate: str | Path | None = None,
                     target: Hsm | None = None, pin_file: str | None = None,
                     interactive: bool = True, key_generation: int | None = None) -> RestoreResult:
    """Restore the key of ``ca_name`` from ``backup`` with ``shares`` onto ``target`` (default: the CA's HSM);
    ``key_generation`` names which key of a re-keyed CA, restored under its own label."""
    lang = lang_of(recorder)
    offline_check_step(recorder, rehearsal)
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: the output directory is a file")
    manifest = Manifest(out_dir, rehearsal)
    secret = bytearray()
    with CeremonyRun(out_dir, manifest, recorder, "key-restore") as run:
        with scripted_step(recorder, "definition-check"):
            ca = wrapped_ca(defn, ca_name)
            hsm = target or ca.hsm
            generation, cert_path, cert = chosen_certificate(out_dir, ca_name, key_generation, certificate,
                                                             "restore")
            key_label = key_label_for(hsm.key_label, generation)
            token_name = hsm.token.label or hsm.token.serial or "token"
            report_rel = f"{BACKUP_DIR}/{generation_stem(ca_name, generation)}.restore-{token_name}.json"
            run.plan(report_rel, "key-restore-report", "json")
            run.check()
            cert_evidence = certificate_file_evidence(cert, cert_path)
            recorder.evidence("certificate", cert_evidence)
            say_definition(recorder, defn, ca_name)
            tell(recorder, "w_certificate", path=cert_path, sha=short_sha(cert_evidence["sha256"]),
                 subject=cert.subject.rfc4514_string())
            tell(recorder, "w_restore_onto", token=hsm.token.describe(), label=repr(key_label))
            say_outputs(recorder, out_dir, run.planned)
            recorder.evidence("definition", {"path": str(defn.path), "sha256": defn.sha256, "ca": ca_name,
                                             "target": hsm.token.describe(), "key_generation": generation,
                                             "key_label": key_label})
        with scripted_step(recorder, "backup-verify"):
            backup_path = Path(backup)
            body = load_backup(backup_path)
            if body["ca"] != ca_name:
                raise BackupError(f"{backup_path}: a backup of CA {body['ca']!r}, not of {ca_name!r}")
            if body["rehearsal"] != rehearsal:
                raise BackupError(f"{backup_path}: a {'rehearsal' if body['rehearsal'] else 'production'} backup "
                                  f"cannot be restored in a {'rehearsal' if rehearsal else 'production'} ceremony")
            public = public_key_of(body)
            backed_up = body["key"].get("generation", 1)
            if backed_up != generation:
                raise BackupError(f"{backup_path}: the backup of key generation {backed_up} of {ca_name!r}, not of key "
                                  f"generation {generation} ({cert_path.name}); restore it with --key-generation "
                                  f"{backed_up}, or bring the backup of key generation {generation}")
            if spki_sha256(public) != spki_sha256(cert.public_key()):
                raise BackupError(f"{backup_path}: holds key {body['key']['spki_sha256']}, but {cert_path} certifies "
                                  f"key {spki_sha256(cert.public_key())}")
            recorder.evidence("backup", {"path": str(backup_path), "sha256": sha256_file(backup_path),
                                         "backup_id": body["backup_id"], "created": body.get("created"),
                                         "key_spki_sha256": body["key"]["spki_sha256"],
                                         "quorum": {k: body["quorum"][k] for k in ("threshold", "count")}})
            tell(recorder, "w_backup_of", id=body["backup_id"], ca=repr(ca_name), created=body.get("created"))
            tell(recorder, "w_restore_quorum", threshold=body["quorum"]["threshold"], count=body["quorum"]["count"],
                 names=", ".join(words(lang, "w_custodian_bag", name=c.get("name"), bag=c.get("bag"))
                                 for c in body["quorum"]["custodians"] if isinstance(c, dict)))
            say_key_hash(recorder, words(lang, "w_key_in_backup"), public)
            tell(recorder, "w_same_key", path=cert_path)
            _refuse_other_algorithm(body, backup_path, hsm)
        with scripted_step(recorder, "shares-collect"):
            presented = [(str(p), read_share(p)) for p in shares]
            for _source, share in presented:
                recorder.evidence("share-presented", {"custodian": share.custodian, "index": share.index,
                                                      "bag": share.bag, "checksum": share.checksum})
                tell(recorder, "w_share_presented", index=share.index, custodian=share.custodian, bag=share.bag,
                     checksum=share.checksum)
            checked = check_shares(presented, body, str(backup_path), rehearsal)
            secret = recombine(checked, body, str(backup_path))
            recorder.evidence("wrapping-key", {"reconstructed_from": [s.index for s in checked],
                                               "key_check_value": body["wrapping"]["key_check_value"],
                                               "mac_verified": True})
        with scripted_step(recorder, "token-open"):
            token_step(recorder, hsm)
            session = login(recorder, run.stack, hsm, pin_file, interactive)
            label = body["key"]["label"]
            if label != key_label:
                raise BackupError(f"{backup_path}: the key is labelled {label!r}, the definition expects "
                                  f"{key_label!r} for key generation {generation}")
            if objects_with_label(session, label):
                raise HsmError(f"an object labelled {label!r} already exists on {hsm.token.describe()}; a restore "
                               "never adds a second key under the same label")
            target_algorithm = wrap_algorithm(session)  # session objects only, destroyed at once
            recorder.evidence("wrap-algorithm", {"backup": wrapping_algorithm(body), "target": target_algorithm,
                                                 "found_by": WRAP_ALGORITHM_FOUND_BY})
            if target_algorithm != wrapping_algorithm(body):
                raise BackupError(_algorithm_message(body, backup_path, hsm, target_algorithm))
        try:
            with scripted_step(recorder, "key-unwrap"):
                wk = import_wrapping_key(session, bytes(secret), f"restore-{body['backup_id'][:16]}", token=False,
                                         trusted=False)
                for i in range(len(secret)):
                    secret[i] = 0
                wrapped = base64.b64decode(body["wrapping"]["wrapped_key_b64"], validate=True)
                key_id = bytes.fromhex(body["key"]["id_hex"])
                made = run.creating(session, str(session.token.label).strip(), hsm.module, label, key_id.hex())
                try:
                    priv = unwrap_private(wk, wrapped, key_type_of(public), store=True, label=label, key_id=key_id,
                                          extractable=True)
                    public_object = session.create_object(public_key_template(public, label, key_id))
                    run.created(made, spki_sha256(public))
                except p11e.PKCS11Error as exc:
                    raise HsmError(f"the token refused to unwrap the key: {type(exc).__name__}") from None
                finally:
                    with contextlib.suppress(p11e.PKCS11Error):
                        wk.destroy()
                evidence = key_evidence(priv, public, body["key"]["algorithm"]).as_dict()
                evidence["trusted_wrapping_required"] = bool(priv[Attribute.WRAP_WITH_TRUSTED])
                recorder.evidence("restored-key", evidence)
                tell(recorder, "w_restored", label=repr(label), local=evidence["local"],
                     sensitive=evidence["sensitive"], sha=evidence["spki_sha256"])
                if evidence["local"] or not evidence["sensitive"] or not evidence["sign"]:
                    raise HsmError("the restored key does not have the expected attributes")
                on_token = public_key_from_token(public_object)  # the public half, read back from the target token
                if spki_sha256(on_token) != spki_sha256(cert.public_key()):
                    raise HsmError("the public key on the target token is not the certificate's key")
                say_key_hash(recorder, words(lang, "w_restored_key", label=repr(label)), on_token)
                tell(recorder, "w_same_key_id", path=cert_path, id=evidence["id_hex"] or words(lang, "none"),
                     algorithm=evidence["algorithm"])
                tell(recorder, "w_trusted_only", v=yes_no(evidence["trusted_wrapping_required"], lang))
            with scripted_step(recorder, "test-signature"):

                key = signing_key(session, label)
                message = (f"key-restore test signature: CA {ca_name}, backup {body['backup_id']}, "
                           f"token {token_name}, {dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()}").encode()
                signature = sign_with(key.p11_object, public, message)
                verify_test_signature(cert.public_key(), message, signature)
                recorder.evidence("test-signature", {"message": message.decode(),
                                                     "signature_b64": base64.b64encode(signature).decode(),
                                                     "verified_with": str(cert_path), "verified": True})
                tell(recorder, "w_test_sig")
                tell(recorder, "w_test_message", message=message.decode())
                tell(recorder, "w_restored_is", path=cert_path, sha=short_sha(spki_sha256(cert.public_key())))
            with scripted_step(recorder, "sealing-key"):
                seal_key, seal_verifier = _target_sealing_key(recorder, run, session, defn, ca_name, hsm, key, cert,
                                                              out_dir, cert_path.parent, rehearsal)
            with scripted_step(recorder, "outputs-write"):
                report = {"format": "ceremony-key-restore/1", "rehearsal": rehearsal, "ca": ca_name,
                          "backup_id": body["backup_id"], "backup_sha256": sha256_file(backup_path),
                          "certificate_sha256": cert_evidence["sha256"],
                          "certificate_file_sha256": cert_evidence["file_sha256"], "target_token": hsm.token.describe(),
                          "shares": [{"custodian": s.custodian, "index": s.index, "bag": s.bag,
                                      "checksum": s.checksum} for s in checked],
                          "restored_key": evidence, "test_message": message.decode(),
                          "test_signature_b64": base64.b64encode(signature).decode()}
                run.stage(report_rel, (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode())
                path = out_dir / report_rel
                run.record()
        finally:
            for i in range(len(secret)):
                secret[i] = 0
        run.seal(seal_key, seal_verifier, "certificate" if seal_verifier.endswith(".crt.pem") else "public-key")
    return RestoreResult(ca_name, body["backup_id"], hsm.token.describe(), path, evidence)


def _algorithm_message(body: dict[str, Any], backup_path: Path, hsm: Hsm, target: str) -> str:
    return (f"{backup_path}: the key was wrapped with {wrapping_algorithm(body)} (CKM_AES_KEY_WRAP_PAD on "
            f"{wrapping_module(body)}); on {hsm.module} the mechanism of the same name is {target}, another algorithm: "
            f"it cannot unwrap this backup. Nothing was created on {hsm.token.describe()}; restore onto a module "
            "whose CKM_AES_KEY_WRAP_PAD is the backup's algorithm (docs/hsm.md, Implementations)")


def _refuse_other_algorithm(body: dict[str, Any], backup_path: Path, hsm: Hsm) -> None:
    """Before any share is asked for and before login: a target module known to mean another algorithm by
    CKM_AES_KEY_WRAP_PAD (NSS softokn) is refused from its token's identity. Other modules are checked by known
    answer once logged in, still before anything is created."""
    token = find_token(load_module(hsm.module), hsm.token)
    if softokn_token(token.manufacturer_id, token.model) and wrapping_algorithm(body) != SOFTOKN_WRAP_PAD:
        raise BackupError(_algorithm_message(body, backup_path, hsm, SOFTOKN_WRAP_PAD))


def _target_sealing_key(recorder: Recorder, run: CeremonyRun, session: Any, defn: LoadedDefinition, ca_name: str,
                        hsm: Hsm, key: Any, cert: Any, out_dir: Path, cert_dir: Path,
                        rehearsal: bool) -> tuple[Any, str]:
    """The sealing key of the target token and the file that verifies it (see step 7 in the module's docstring)."""
    ca = defn.model.cas[ca_name]
    target_ca = ca.model_copy(update={"hsm": hsm})
    if objects_with_label(session, hsm.sealing_label):
        seal_key, seal_cert = sealing_key(recorder, session, ca_name, target_ca, out_dir, cert_dir)
        return seal_key, str(seal_cert)
    seal_key = generate_sealing_key(recorder, run, session, target_ca)
    stem = f"{ca_name}.seal.{spki_sha256(seal_key.public_key())[:16]}"
    if ca.role == "root":
        run.plan(f"{stem}.crt.pem", "sealing-certificate", "pem")
        run.plan(f"{stem}.crt.der", "sealing-certificate", "der")
        run.check()
        sealing_cert = issue_sealing_certificate(recorder, session, ca_name, ca, seal_key.public_key(), ca, key, cert,
                                                 defn.model.ceremony.sealing_eku, rehearsal)
        run.stage(f"{stem}.crt.pem", sealing_cert.public_bytes(PEM))
        run.stage(f"{stem}.crt.der", der_of(sealing_cert))
        return seal_key, f"{stem}.crt.pem"
    run.plan(f"{stem}.csr.pem", "sealing-csr", "pem")
    run.plan(f"{stem}.pub.pem", "sealing-public-key", "pem")
    run.check()
    run.stage(f"{stem}.csr.pem", build_sealing_csr(ca, seal_key, rehearsal).public_bytes(PEM))
    run.stage(f"{stem}.pub.pem", seal_key.public_key().public_bytes(PEM, SPKI))
    return seal_key, f"{stem}.pub.pem"
