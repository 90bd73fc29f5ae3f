"""Key-backup ceremony: wrap a CA key under a trusted AES-256 key whose secret is split M-of-N.

Dual control, in the order of the ceremony script ``key-backup``:

0. ``offline-check``: as at the root key ceremony, first, before anything else: in production a network
   interface other than loopback that is up stops the ceremony (the wrapping key's secret and the shares
   pass through this workstation); a rehearsal records it and goes on.
1. ``definition-check``: the CA's backup policy is ``wrapped``, every custodian has a bag serial,
   the CA certificate is at hand, no output exists. Which key: the CA's only key, or, once the CA has been
   re-keyed, the key generation the operator names (``--key-generation N``, the choice the key destruction makes
   too, :func:`ceremony.ca.generations.chosen_key`): the key labelled ``<key_label>.g<N>``, its files
   ``backup/<ca>.g<N>.key-backup.json`` and ``backup/<ca>.g<N>.share-…``.
2. ``token-open``: the Crypto Officer logs in; the CA key must be the certificate's key and must
   have been generated extractable *only under a trusted key* (CKA_WRAP_WITH_TRUSTED).
3. ``wrapping-key-generate``: the token's random generator gives the 32 bytes of the AES-256
   wrapping key. They are held in host memory: they must be split.
4. ``wrapping-key-trust``: the Crypto Officer logs out, the Security Officer logs in and creates the
   key on the token with CKA_TRUSTED (only the SO can set it; SoftHSM accepts it only when the object
   is created), usable to wrap and unwrap only, sensitive, not extractable.
5. ``key-wrap``: the Crypto Officer wraps the CA key with CKM_AES_KEY_WRAP_PAD (RFC 5649), proves the
   wrapped blob good by unwrapping it into a *session* object and checking a test signature against
   the certificate, and destroys the wrapping key: from now on only a quorum of custodians can
   reconstruct it.
6. ``shares-split``: Shamir M-of-N over GF(2^8), random coefficients from the token.
7. ``shares-distribute``: one 0600 page per custodian; the record says who holds which share in which
   bag, with its checksum, never its value.
8. ``outputs-write``: the backup file: wrapped key, public key, SPKI SHA-256, a key check value, the
   custody list, an HMAC under a key derived from the wrapping key (tampering) and a SHA-256 checksum
   (corruption, checked before any share is asked for).

The CA private key is never in host memory: only the *wrapped* key leaves the token. The
wrapping key's secret is, briefly (see docs/key-backup.md for what real HSMs do instead).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pkcs11 import Attribute, Mechanism, ObjectClass
from pkcs11 import exceptions as p11e

from ceremony.backup import shamir
from ceremony.backup.format import (
    BACKUP_DIR,
    BACKUP_FORMAT,
    SHAMIR_SCHEME,
    WRAP_MECHANISM,
    BackupError,
    key_check_value,
    load_ca_certificate,
    seal_backup_body,
    verify_test_signature,
)
from ceremony.backup.shares import Share, slug
from ceremony.ca.generations import certificate_generations, chosen_key, generation_stem, key_label_for
from ceremony.ceremonies.runner import CeremonyRun
from ceremony.ceremonies.steps import (
    certificate_file_evidence,
    key_flag_lines,
    lang_of,
    login,
    offline_check_step,
    say_definition,
    say_key_hash,
    say_outputs,
    sealing_key,
    short_sha,
    tell,
)
from ceremony.common.errors import DefinitionError, HsmError, OutputError
from ceremony.common.fileio import sha256_file
from ceremony.common.manifest import Manifest
from ceremony.common.terminal_text import say as words
from ceremony.definition.model import CA, Hsm, LoadedDefinition
from ceremony.hsm.keys import key_evidence, spki_sha256
from ceremony.hsm.nss import NO_WRAPPED_BACKUP, softokn_token
from ceremony.hsm.session import (
    find_private_key,
    find_token,
    load_module,
    mechanisms,
    objects_with_label,
    open_session,
    pin_source_for,
    random_bytes,
    token_evidence,
)
from ceremony.hsm.signers import signing_key
from ceremony.hsm.wrapping import (
    RFC5649,
    UNKNOWN_WRAP,
    WRAP_ALGORITHM_FOUND_BY,
    WRAP_LABEL_PREFIX,
    destroy_label,
    destroy_stale_wrapping_keys,
    import_wrapping_key,
    key_type_of,
    sign_with,
    unwrap_private,
    wrap_algorithm,
    zero,
)
from ceremony.transcript.evidence import share_handover
from ceremony.transcript.recorder import Recorder, scripted_step


@dataclass(frozen=True)
class BackupResult:
    ca_name: str
    backup_id: str
    backup_file: Path
    share_files: dict[str, Path]   # custodian -> share page
    bags: dict[str, str]           # custodian -> bag serial
    key_spki_sha256: str


def wrapped_ca(defn: LoadedDefinition, ca_name: str) -> CA:
    """The CA, refusing one whose definition has no wrapped-backup policy."""
    ca = defn.model.ca(ca_name)
    if ca.backup.mode != "wrapped":
        raise DefinitionError(str(defn.path), f"cas.{ca_name}.backup.mode",
                              f"{ca.backup.mode!r}: this CA has no backup policy, its key cannot be backed up",
                              "wrapped (with threshold and custodians), set before the key is generated")
    for i, name in enumerate(ca.backup.custodians):
        # The name is printed on the custodian's share page and read back from it.
        if not name.strip() or name != name.strip() or len(name) > 64 or any(c in name for c in "\r\n\t"):
            raise DefinitionError(str(defn.path), f"cas.{ca_name}.backup.custodians[{i}]",
                                  f"{name!r} cannot be printed on a share page",
                                  "a name on one line, 1 to 64 characters, no surrounding spaces")
    return ca


def resolve_bags(ca_name: str, custodians: list[str], bags: Mapping[str, str] | None, rehearsal: bool,
                 randhex: Any = None) -> dict[str, str]:
    """Bag serial per custodian: given by the operator; generated ``REHEARSAL-…`` in a rehearsal."""
    given = dict(bags or {})
    unknown = [name for name in given if name not in custodians]
    if unknown:
        raise DefinitionError("--bag", unknown[0], f"is not a custodian of cas.{ca_name}.backup",
                              ", ".join(custodians))
    result: dict[str, str] = {}
    for name in custodians:
        serial = given.get(name)
        if serial is None:
            if not rehearsal:
                raise DefinitionError("--bag", name, "no tamper-evident bag serial given for this custodian",
                                      "--bag 'NAME=SERIAL' once per custodian")
            serial = "REHEARSAL-" + (randhex or secrets.token_hex)(4).upper()
        serial = serial.strip()
        if not serial or len(serial) > 64 or any(c in serial for c in "\n\r:"):
            raise DefinitionError("--bag", name, f"bag serial {serial!r} is not usable",
                                  "1 to 64 characters, no colon or line break")
        if rehearsal != serial.startswith("REHEARSAL-"):
            raise DefinitionError("--bag", name, f"bag serial {serial!r}",
                                  "REHEARSAL-… in a rehearsal only" if not rehearsal else "REHEARSAL-… in a rehearsal")
        result[name] = serial
    if len(set(result.values())) != len(result):
        raise DefinitionError("--bag", "", "two custodians have the same bag serial", "one bag per share")
    return result


def chosen_certificate(out_dir: Path, ca_name: str, key_generation: int | None, certificate: str | Path | None,
                       verb: str) -> tuple[int, Path, x509.Certificate]:
    """(key generation, certificate file, certificate) of the key a backup or a restore handles.

    Where the CA's certificates are in the output directory, the key is chosen as the key destruction chooses it
    (:func:`ceremony.ca.generations.chosen_key`: a re-keyed CA needs ``--key-generation``); the certificate is then
    that key generation's own (``<ca>.crt.pem``, ``<ca>.g<N>.crt.pem``), or ``certificate`` when given, which must
    certify that very key. Without certificates there, ``certificate`` (default ``<ca>.crt.pem``, whose absence is
    reported) names the key, of key generation ``key_generation`` (default 1)."""
    given = Path(certificate) if certificate else None
    if not certificate_generations(out_dir, ca_name):
        path = given or out_dir / f"{ca_name}.crt.pem"
        return key_generation or 1, path, load_ca_certificate(path, ca_name)
    generation, digest, certs = chosen_key(out_dir, ca_name, key_generation, verb)
    if given is None:
        return generation, certs[0][0], certs[0][1]
    cert = load_ca_certificate(given, ca_name)
    if spki_sha256(cert.public_key()) != digest:
        raise BackupError(f"{given}: certifies key {spki_sha256(cert.public_key())}, but key generation {generation} "
                          f"of {ca_name!r} is key {digest} ({', '.join(p.name for p, _ in certs)}); pass that key's "
                          "certificate, or name its key generation with --key-generation; nothing was done")
    return generation, given, cert


def token_step(recorder: Recorder, hsm: Hsm) -> dict[str, Any]:
    lib = load_module(hsm.module)
    token = find_token(lib, hsm.token)
    evidence: dict[str, Any] = token_evidence(hsm.module, lib, token).as_dict()
    evidence["mechanisms"] = mechanisms(token)
    recorder.evidence("token", evidence)
    tell(recorder, "w_token", label=repr(evidence["label"]), serial=evidence["serial"],
         manufacturer=evidence["manufacturer"], model=evidence["model"], firmware=evidence["firmware_version"])
    return evidence


def backup_ceremony(defn: LoadedDefinition, ca_name: str, out: str | Path, recorder: Recorder, *,
                    rehearsal: bool, certificate: str | Path | None = None, bags: Mapping[str, str] | None = None,
                    pin_file: str | None = None, so_pin_file: str | None = None,
                    interactive: bool = True, key_generation: int | None = None) -> BackupResult:
    """Back up the key of ``ca_name`` under M-of-N custody; outputs under ``out/backup/``. ``key_generation``
    names which key of a re-keyed CA (:func:`chosen_certificate`)."""
    offline_check_step(recorder, rehearsal)
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: the output directory is a file")
    manifest = Manifest(out_dir, rehearsal)
    secret = bytearray()
    with CeremonyRun(out_dir, manifest, recorder, "key-backup") as run:
        stack = run.stack
        with scripted_step(recorder, "definition-check"):
            ca = wrapped_ca(defn, ca_name)
            custodians = list(ca.backup.custodians)
            threshold = ca.backup.threshold or 2
            bag_of = resolve_bags(ca_name, custodians, bags, rehearsal)
            generation, cert_path, cert = chosen_certificate(out_dir, ca_name, key_generation, certificate,
                                                             "back up")
            key_label = key_label_for(ca.hsm.key_label, generation)
            stem = generation_stem(ca_name, generation)
            backup_id = secrets.token_hex(16)
            wrap_label = f"{WRAP_LABEL_PREFIX}{backup_id[:16]}"
            backup_rel = f"{BACKUP_DIR}/{stem}.key-backup.json"
            later = {"key_generation": generation} if generation > 1 else {}  # listed as before for the first key
            run.plan(backup_rel, "key-backup", "json", **later)
            share_rel = {name: f"{BACKUP_DIR}/{stem}.share-{i}-{slug(name)}.txt"
                         for i, name in enumerate(custodians, 1)}
            for rel in share_rel.values():
                run.plan(rel, "key-backup-share", "text", _mode=0o600, **later)
            run.check()
            recorder.evidence("definition", {"path": str(defn.path), "sha256": defn.sha256, "ca": ca_name,
                                             "threshold": threshold, "custodians": custodians,
                                             "key_generation": generation, "key_label": key_label})
            cert_evidence = certificate_file_evidence(cert, cert_path)
            recorder.evidence("certificate", cert_evidence)
            say_definition(recorder, defn, ca_name)
            tell(recorder, "w_certificate", path=cert_path, sha=short_sha(cert_evidence["sha256"]),
                 subject=cert.subject.rfc4514_string())
            say_key_hash(recorder, words(lang_of(recorder), "w_backup_key", ca=repr(ca_name)), cert.public_key())
            tell(recorder, "w_backup_quorum", id=backup_id, ca=repr(ca_name), threshold=threshold,
                 count=len(custodians))
            for i, name in enumerate(custodians, 1):
                tell(recorder, "w_backup_share", i=i, name=name, bag=bag_of[name])
            say_outputs(recorder, out_dir, run.planned)
        with scripted_step(recorder, "token-open"):
            source = token_step(recorder, ca.hsm)
            if softokn_token(source["manufacturer"], source["model"]):
                raise HsmError(f"{NO_WRAPPED_BACKUP}: the key of {ca_name!r} on {ca.hsm.token.describe()} cannot be "
                               "backed up (nothing was done; docs/hsm.md, Implementations)")
            co_session = login(recorder, stack, ca.hsm, pin_file, interactive)
            key = signing_key(co_session, key_label)
            public = key.public_key()
            evidence = key_evidence(key.p11_object, public, ca.key.describe())
            recorder.evidence("key", evidence.as_dict())
            if evidence.spki_sha256 != spki_sha256(cert.public_key()):
                raise HsmError(f"the key {key_label!r} on the token is not the key of {cert_path}")
            if not (evidence.extractable and evidence.wrap_with_trusted and evidence.sensitive):
                raise HsmError(f"the key {key_label!r} was not generated for a wrapped backup "
                               "(extractable only under a trusted key); it cannot be backed up")
            tell(recorder, "w_backup_key_is", label=repr(evidence.label),
                 id=evidence.id_hex or words(lang_of(recorder), "none"), algorithm=evidence.algorithm,
                 sha=evidence.spki_sha256)
            for line in key_flag_lines(evidence, lang_of(recorder)):
                recorder.say(line)
            _, seal_cert_path = sealing_key(recorder, co_session, ca_name, ca, out_dir, cert_path.parent)
            if objects_with_label(co_session, wrap_label):
                raise HsmError(f"an object labelled {wrap_label!r} already exists on the token")
            stale = destroy_stale_wrapping_keys(co_session)
            if stale:
                recorder.evidence("stale-wrapping-keys-destroyed", {"labels": stale})
                tell(recorder, "w_stale", n=len(stale), labels=", ".join(stale))
        with scripted_step(recorder, "wrapping-key-generate"):
            secret = bytearray(random_bytes(co_session, 32))
            kcv = key_check_value(bytes(secret))
            recorder.evidence("wrapping-key", {"label": wrap_label, "algorithm": "AES-256",
                                               "source": "token random generator (C_GenerateRandom)",
                                               "key_check_value": kcv})
            tell(recorder, "w_wrap_key", label=repr(wrap_label), kcv=kcv)
            co_session.close()  # the Security Officer logs in next: one login per token at a time
        # From here the token may hold a wrapping key: whatever happens, it is destroyed again.
        state = {"on_token": False}

        def cleanup() -> None:
            if state["on_token"]:
                _cleanup_wrapping_key(ca.hsm, wrap_label, pin_file, so_pin_file, interactive, recorder)

        stack.callback(cleanup)
        with scripted_step(recorder, "wrapping-key-trust"):
            so_source = pin_source_for(ca.hsm, so_pin_file, interactive, so=True)
            with open_session(ca.hsm, so_source, so=True) as so_session:
                state["on_token"] = True
                wk = import_wrapping_key(so_session, bytes(secret), wrap_label, token=True, trusted=True)
                trust = {"label": wrap_label, "trusted": bool(wk[Attribute.TRUSTED]),
                         "wrap": bool(wk[Attribute.WRAP]), "unwrap": bool(wk[Attribute.UNWRAP]),
                         "encrypt": bool(wk[Attribute.ENCRYPT]), "sensitive": bool(wk[Attribute.SENSITIVE]),
                         "extractable": bool(wk[Attribute.EXTRACTABLE]), "set_by": "security-officer"}
                recorder.evidence("wrapping-key-trust", trust)
                if not trust["trusted"]:
                    raise HsmError("the token did not mark the wrapping key trusted")
                tell(recorder, "w_wrap_trust", label=repr(wrap_label), trusted=trust["trusted"],
                     sensitive=trust["sensitive"], extractable=trust["extractable"])
        with scripted_step(recorder, "key-wrap"):
            session = login(recorder, stack, ca.hsm, pin_file, interactive)
            wrap_objs = [o for o in objects_with_label(session, wrap_label)
                         if o.object_class == ObjectClass.SECRET_KEY]
            if len(wrap_objs) != 1:
                raise HsmError(f"the wrapping key {wrap_label!r} is not on the token")
            wk = wrap_objs[0]
            priv = find_private_key(session, key_label)
            # What this module's CKM_AES_KEY_WRAP_PAD really is, by known answer: the file names it, and a restore
            # onto a module where the same name means another algorithm is refused.
            algorithm = wrap_algorithm(session)
            if algorithm == UNKNOWN_WRAP:
                raise HsmError(f"the token's CKM_AES_KEY_WRAP_PAD is {algorithm}: a backup must name its algorithm; "
                               "nothing was wrapped")
            try:
                wrapped = bytes(wk.wrap_key(priv, mechanism=Mechanism.AES_KEY_WRAP_PAD))
            except p11e.PKCS11Error as exc:
                raise HsmError(f"the token refused to wrap the CA key: {type(exc).__name__}") from None
            # Prove the blob before the wrapping key is gone: unwrap into a session object and sign.
            message = f"key-backup {backup_id} check".encode()
            try:
                probe = unwrap_private(wk, wrapped, key_type_of(public), store=False)
            except p11e.PKCS11Error as exc:
                raise HsmError(f"the wrapped key does not unwrap again: {type(exc).__name__}") from None
            try:
                verify_test_signature(cert.public_key(), message, sign_with(probe, public, message))
            finally:
                with contextlib.suppress(p11e.PKCS11Error):
                    probe.destroy()
            destroyed = destroy_label(session, wrap_label)
            if objects_with_label(session, wrap_label):
                raise HsmError(f"the wrapping key {wrap_label!r} could not be destroyed")
            state["on_token"] = False
            recorder.evidence("key-wrap", {"mechanism": WRAP_MECHANISM, "standard": algorithm,
                                           "wrapped_length": len(wrapped),
                                           "wrapped_sha256": hashlib.sha256(wrapped).hexdigest(),
                                           "verified_by_test_unwrap_and_signature": True,
                                           "wrapping_key_destroyed": destroyed == 1})
            tell(recorder, "w_wrapped", label=repr(key_label), mechanism=WRAP_MECHANISM, size=len(wrapped),
                 sha=short_sha(hashlib.sha256(wrapped).hexdigest()))
            tell(recorder, "w_proven")
            tell(recorder, "w_wrap_destroyed", label=repr(wrap_label), threshold=threshold)
        with scripted_step(recorder, "shares-split"):
            raw = shamir.split(bytes(secret), threshold, len(custodians), randbytes=lambda n: random_bytes(session, n))
            share_of = {name: Share(ca=ca_name, backup_id=backup_id, key_spki_sha256=evidence.spki_sha256,
                                    custodian=name, bag=bag_of[name], index=r.index, threshold=threshold,
                                    count=len(custodians), rehearsal=rehearsal, value=r.value)
                        for name, r in zip(custodians, raw, strict=True)}
            check = shamir.combine([shamir.RawShare(s.index, s.value) for s in share_of.values()], threshold)
            if key_check_value(check) != kcv:
                raise BackupError("the shares do not recombine to the wrapping key")
            tell(recorder, "w_shares", scheme=SHAMIR_SCHEME, count=len(custodians), threshold=threshold, kcv=kcv)
            recorder.evidence("shares", {"scheme": SHAMIR_SCHEME, "threshold": threshold, "count": len(custodians),
                                         "checksums": {n: s.checksum for n, s in share_of.items()}})
        with scripted_step(recorder, "shares-distribute"):
            share_files: dict[str, Path] = {}
            for name, share in share_of.items():
                run.stage(share_rel[name], share.render().encode("utf-8"))
                share_files[name] = out_dir / share_rel[name]
                recorder.evidence("share-custody", share_handover(name, share.index, share.bag, share.checksum,
                                                                  share_rel[name]))
                tell(recorder, "w_share_to", index=share.index, count=share.count, name=name, bag=share.bag,
                     checksum=share.checksum)
        with scripted_step(recorder, "outputs-write"):
            body = {
                "format": BACKUP_FORMAT, "rehearsal": rehearsal, "backup_id": backup_id, "ca": ca_name,
                "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
                "definition_sha256": defn.sha256,
                "certificate": {"subject": cert_evidence["subject"], "sha256": cert_evidence["sha256"]},
                "key": {"label": key_label, "generation": generation, "id_hex": evidence.id_hex,
                        "algorithm": ca.key.describe(),
                        "public_key_pem": public.public_bytes(serialization.Encoding.PEM,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
                        "spki_sha256": evidence.spki_sha256},
                "source_token": {k: source[k] for k in ("label", "serial", "manufacturer", "model")},
                "wrapping": {"mechanism": WRAP_MECHANISM, "mechanism_code": f"{int(Mechanism.AES_KEY_WRAP_PAD):#010x}",
                             "algorithm": algorithm, "algorithm_found_by": WRAP_ALGORITHM_FOUND_BY,
                             "standard": "RFC 5649" if algorithm == RFC5649 else algorithm,
                             "module": {k: source[k] for k in ("library_description", "library_manufacturer",
                                                              "module_path", "module_sha256")},
                             "key": "AES-256", "key_check_value": kcv,
                             "wrapped_key_b64": base64.b64encode(wrapped).decode()},
                "quorum": {"scheme": SHAMIR_SCHEME, "threshold": threshold, "count": len(custodians),
                           "custodians": [{"name": n, "index": s.index, "bag": s.bag, "share_checksum": s.checksum}
                                          for n, s in share_of.items()]},
            }
            staged = run.stage(backup_rel, seal_backup_body(bytes(secret), body))
            backup_file = out_dir / backup_rel
            zero(secret)
            run.record()
            tell(recorder, "w_backup_file", path=backup_file, sha=sha256_file(staged))
        run.seal(signing_key(session, ca.hsm.sealing_label), seal_cert_path, "certificate")
    zero(secret)
    return BackupResult(ca_name, backup_id, backup_file, share_files, bag_of, evidence.spki_sha256)


def _cleanup_wrapping_key(hsm: Hsm, label: str, pin_file: str | None, so_pin_file: str | None,
                          interactive: bool, recorder: Recorder) -> None:
    """After a failed ceremony: no wrapping key may stay on the token. Tried as Crypto Officer, then as
    Security Officer; what happened is said to the room and recorded, and a key that stays is never
    passed over in silence (the next backup ceremony also removes stale wrapping keys first)."""
    failures = []
    for so, pf in ((False, pin_file), (True, so_pin_file)):
        role = "Security Officer" if so else "Crypto Officer"
        try:
            with open_session(hsm, pin_source_for(hsm, pf, interactive, so=so), so=so) as session:
                destroy_label(session, label)
                if not objects_with_label(session, label):
                    recorder.evidence("wrapping-key-removed", {"label": label, "by": role})
                    return
        except Exception as exc:  # each attempt is reported; the ceremony's own error is not masked
            failures.append(f"as {role}: {type(exc).__name__}: {exc}")
    recorder.evidence("wrapping-key-left", {"label": label, "attempts": failures})
    recorder.say(f"WARNING: the wrapping key {label!r} could not be removed from {hsm.token.describe()} "
                 f"({'; '.join(failures) or 'still present'}); the Security Officer must destroy it before the "
                 "token leaves the room, and the next backup ceremony removes it first")
