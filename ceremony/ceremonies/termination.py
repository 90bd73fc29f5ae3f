"""CA termination: the last revocations, the last CRL, the last OCSP responses and one verifiable archive.

RFC 3647 5.8 and ETSI EN 319 401 7.12 ask that a CA that stops leaves its relying parties a final answer about every
certificate it issued, and its records with a body that keeps them. The ceremony (script ``ca-termination``) does
that for a subordinate CA, on the one ceremony runner (all or nothing), in this order:

1. ``offline-check``; ``definition-check``: the definition records the decision (``cas.<ca>.termination``: when,
   its reference, the body that takes over, the revocation reason), dated today or earlier; the CA is a
   subordinate (the root's last CRL comes from a root CRL ceremony, docs/lifecycle.md); its CRL is not partitioned;
   its certificate, registry and published CRL are read; the certificates to revoke are listed (every unexpired
   one still good). Every refusal comes here, before a token is opened: disk, tokens and registry unchanged.
2. ``token-open``: the CA key (the key of its certificate), the transcript-sealing key and, where the CA runs OCSP,
   the delegated signer's key (the key of its latest signer certificate).
3. ``registry-revoke``: the revocations go into a copy of the registry taken with SQLite's online backup, in the
   staging directory; the registry itself is replaced by that copy only at publication, after the seal.
4. ``crl-lint``, ``crl-sign``, ``crl-verify``: the last CRL holds every revocation of the registry, expired
   certificates included; nextUpdate 99991231235959Z as GeneralizedTime (RFC 5280 5.1.2.6: a CA that will issue
   no more CRLs). pkilint (the CRL job's validators) lints it before the HSM signs, with a throwaway key, and again
   after; the one finding it must make, the CA/Browser Forum's 10-day validity limit
   (``cabf.crl_invalid_validity_period``), is accepted here and only here, since it is the very point of a final
   CRL. The signature, the TBS, the entries and the previous published CRL are checked as by the CRL job.
5. ``ocsp-sign``: where the CA has ``ocsp``, a final response by the delegated signer for every certificate of
   the registry and every CertID hash, thisUpdate now, nextUpdate the signer certificate's notAfter (a response
   never outlives its signer; no refresh follows), each parsed back and verified.
6. ``archive-write``: one tar file (:mod:`ceremony.transcript.archive`) with the output directory (transcripts,
   certificates, definitions, CRLs, OCSP stores, backups, reports), the registry's copy, the final CRL and OCSP
   store, and a manifest with the SHA-256 of each member.
7. ``archive-verify``: the archive is verified as an auditor would (every hash, the final CRL under the CA
   certificate, every transcript against the root certificate): the ceremony does not finish, and publishes
   nothing, until it verifies.
8. ``outputs-write``, ``fingerprint-read-aloud``: the final CRL and the archive, read aloud.

The key is not destroyed here. Destruction cannot be undone, and until the final CRL is seen at its URL and the
auditor has verified the archive with the anchor they bring, the CA key is the only key that could sign a
corrected last CRL. It is destroyed afterwards at the key-destruction ceremony (``invoke ceremony.destroy-key``),
with the people that ceremony needs (the share custodians, and the root token when the sealing key goes too).

The transcript is sealed by the CA token's transcript-sealing key, never by the CA key.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ceremony.backup.format import BACKUP_DIR
from ceremony.ca.generations import issuer_generations
from ceremony.ca.registry import Registry, default_path, parse_reason
from ceremony.ceremonies.runner import CeremonyRun
from ceremony.ceremonies.steps import (
    issuer_key,
    keep_definition,
    offline_check_step,
    prepare_out,
    say_definition,
    say_lint,
    say_outputs,
    sealing_key,
    short_sha,
    when,
)
from ceremony.common.errors import DefinitionError, HsmError, OutputError, RegistryError, VerificationError
from ceremony.common.fileio import sha256_file
from ceremony.common.fingerprints import announce, announce_digest, sha256_hex
from ceremony.crl import encoding as crlenc
from ceremony.crl.checks import check_against_previous
from ceremony.crl.job import load_issuer, publication_names, read_published
from ceremony.crl.state import check_not_ahead, last_reserved, reserve, state_path
from ceremony.definition.model import CA, LintAllowance, LoadedDefinition
from ceremony.hsm.keys import spki_sha256
from ceremony.hsm.signers import signing_key
from ceremony.ocsp.encoding import ResponderContext, Status, lint_response, verify_response
from ceremony.ocsp.job import store_issuer_sha256
from ceremony.ocsp.signer import SignerCertificate, current_signer
from ceremony.ocsp.store import ResponseStore, Row
from ceremony.transcript.archive import directory_members, verify_archive, write_archive
from ceremony.transcript.recorder import Recorder, scripted_step
from ceremony.x509.lint import enforce, throwaway_key_like

#: Where the termination's own outputs go: ``termination/<ca>/``.
TERMINATION_DIR = "termination"

#: The CRL publication directory the CRL job uses by default (``invoke crl.sign``: ``OUT/crl``); another one inside
#: the output directory is named with ``crl_dir``.
CRL_DIR = "crl"

#: The pkilint finding a final CRL must make (CA/Browser Forum BR 7.2: nextUpdate within 10 days), accepted for the
#: final CRL only: RFC 5280 5.1.2.6 gives a CA that will issue no more CRLs nextUpdate 99991231235959Z.
FINAL_CRL_ALLOWANCE = LintAllowance(
    validation="cabf.crl_invalid_validity_period",
    reason="the CA's last CRL: RFC 5280 5.1.2.6 sets nextUpdate 99991231235959Z for a CA that will issue no more "
           "CRLs; the 10-day limit is for CRLs that another follows")


@dataclass(frozen=True)
class TerminationResult:
    ca_name: str
    revoked: list[int]
    crl_number: int
    crl_entries: int
    crl_der: Path
    archive: Path
    archive_sha256: str
    ocsp_store: Path | None
    ocsp_responses: int


@dataclass(frozen=True)
class TerminationInputs:
    """What the ceremony reads before any token is opened (each refused with one message)."""

    ca: CA
    cert_path: Path
    cert: x509.Certificate
    registry_path: Path
    to_revoke: list[tuple[int, str]]  # (serial, subject) of every unexpired certificate still good
    published: tuple[bytes, Any]
    der_name: str
    crl_dir: str  # the publication directory, relative to the output directory
    signer: SignerCertificate | None


def termination_dir(ca_name: str) -> str:
    return f"{TERMINATION_DIR}/{ca_name}"


def archive_name(ca_name: str) -> str:
    """``termination/<ca>.termination-archive.tar``: the one file handed to the body that takes over."""
    return f"{TERMINATION_DIR}/{ca_name}.termination-archive.tar"


def termination_inputs(defn: LoadedDefinition, ca_name: str, out_dir: Path, now: dt.datetime,
                       crl_dir: str | Path | None = None) -> TerminationInputs:
    """Every check that needs no token, in the order the refusals are worth reading (see the module's docstring)."""
    model = defn.model
    ca = model.ca(ca_name)
    decision = ca.termination
    if decision is None:
        raise DefinitionError(str(defn.path), f"cas.{ca_name}.termination", "not set: terminating a CA revokes "
                              "every unexpired certificate it issued and signs its last CRL, which cannot be undone",
                              "termination: {decided: YYYY-MM-DD, reference: '<the decision, who took it>', "
                              "successor_body: '<who keeps the archive and the last CRL>'} (reason: "
                              "cessationOfOperation unless set)")
    if decision.decided > now.date():
        raise DefinitionError(str(defn.path), f"cas.{ca_name}.termination.decided", f"{decision.decided} is in the "
                              "future: the decision must be taken before the CA is terminated",
                              f"a date on or before {now.date()}")
    if ca.role != "subordinate":
        raise DefinitionError(str(defn.path), f"cas.{ca_name}", "is the root: its last CRL is signed at a root CRL "
                              "ceremony at the offline root, not by this ceremony (docs/lifecycle.md, 'CA "
                              "termination', the root)", "a subordinate CA")
    if ca.crl.partitions is not None:
        raise DefinitionError(str(defn.path), f"cas.{ca_name}.crl.partitions", "a partitioned CA's termination "
                              "(one final CRL per partition) is not supported yet", "a CA without crl.partitions")
    keys = sorted({g.key_generation for g in issuer_generations(out_dir, ca_name)})
    if len(keys) > 1:
        raise OutputError(f"{out_dir}: {ca_name!r} has been re-keyed (keys of generations "
                          f"{', '.join(map(str, keys))}): its termination needs a final CRL signed by each key, which "
                          "is not supported yet (docs/lifecycle.md, 'CA termination'); nothing was changed")
    der_name, _ = publication_names(ca)
    shares = sorted(p.relative_to(out_dir).as_posix() for p in (out_dir / BACKUP_DIR).glob("*.share-*")
                    if p.is_file())
    if shares:
        raise OutputError(f"{out_dir / BACKUP_DIR}: share files are still there ({', '.join(shares)}); the archive "
                          "never holds a secret, and the key-backup transcript verifies only once each page is handed "
                          "over and its file shredded (docs/key-backup.md). Hand them over and shred them, recording "
                          "it in the answers file's share_custody, then terminate; nothing was changed")
    cert_path = out_dir / f"{ca_name}.crt.pem"
    if not cert_path.is_file():
        raise OutputError(f"{cert_path}: the certificate of {ca_name!r} is not in the output directory; the "
                          "termination's CRL is signed under it")
    issuer = load_issuer(cert_path, ca_name)
    registry_path = default_path(out_dir, ca_name)
    if not registry_path.is_file():
        raise RegistryError(f"{registry_path}: the registry of {ca_name!r} is not there; the termination revokes "
                            "what it lists and archives it")
    for side in ("-wal", "-shm"):
        other = registry_path.with_name(registry_path.name + side)
        if other.exists() and other.stat().st_size:
            raise RegistryError(f"{other}: the registry is open in another process (issuance, the CRL or OCSP job): "
                                "stop the CA's services and timers first; nothing was changed")
    to_revoke = []
    with Registry.open(registry_path) as registry:
        for rec in registry.list():
            if rec.status == "good" and rec.not_after > now:
                to_revoke.append((rec.serial, rec.subject))
    publication = out_dir / CRL_DIR if crl_dir is None else Path(crl_dir)
    try:
        crl_rel = publication.resolve().relative_to(out_dir.resolve()).as_posix()
    except ValueError:
        raise OutputError(f"{publication}: the CRL publication directory must be inside the output directory "
                          f"{out_dir} (the final CRL takes the published one's place there, in the same output set); "
                          "copy the publication directory, its .state/ included, under it and name it with "
                          "--crl-dir") from None
    published = read_published(publication / der_name)
    if published is None:
        raise OutputError(f"{publication / der_name}: no published CRL of {ca_name!r} there; the final CRL follows the "
                          "last one published (its number, its entries). Give the CRL job's publication directory "
                          f"with --crl-dir (default {out_dir / CRL_DIR}); nothing was changed")
    if published[1].next_update == crlenc.FINAL_NEXT_UPDATE:
        raise OutputError(f"{publication / der_name}: the published CRL of {ca_name!r} is a final CRL already "
                          "(nextUpdate 99991231235959Z): the CA was terminated")
    check_not_ahead(state_path(publication, ca_name), published[1].number, publication / der_name)
    signer = None
    if ca.ocsp is not None:
        signer = current_signer(out_dir, ca_name, issuer.cert)
        if now >= signer.cert.not_valid_after_utc:
            raise VerificationError(f"{signer.path}: the OCSP signer certificate expired on "
                                    f"{when(signer.cert.not_valid_after_utc)}; renew it first (invoke ocsp.signer "
                                    f"--ca {ca_name}), so that the final responses have a signer")
    return TerminationInputs(ca, cert_path, issuer.cert, registry_path, to_revoke, published, der_name, crl_rel,
                             signer)


def terminate_ceremony(defn: LoadedDefinition, ca_name: str, out: str | Path, recorder: Recorder, *,
                       rehearsal: bool, pin_file: str | None = None, interactive: bool = True,
                       trust: str | Path | None = None, crl_dir: str | Path | None = None,
                       now: dt.datetime | None = None) -> TerminationResult:
    """Terminate subordinate CA ``ca_name`` (see the module's docstring). ``trust``: the root certificate the
    archive's transcripts are verified against (default ``OUT/<root>.crt.pem``); ``crl_dir``: the CRL job's
    publication directory, inside ``out`` (default ``OUT/crl``)."""
    offline_check_step(recorder, rehearsal)
    out_dir, manifest = prepare_out(out, rehearsal)
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(microsecond=0)
    anchor = str(trust or out_dir / f"{defn.model.root_name}.crt.pem")
    folder = termination_dir(ca_name)
    with CeremonyRun(out_dir, manifest, recorder, "ca-termination") as run:
        with scripted_step(recorder, "definition-check"):
            inputs = termination_inputs(defn, ca_name, out_dir, moment, crl_dir)
            ca, cert = inputs.ca, inputs.cert
            decision = ca.termination
            assert decision is not None
            code = parse_reason(decision.reason)
            prev_number = inputs.published[1].number
            state = state_path(out_dir / inputs.crl_dir, ca_name)
            stem = inputs.der_name[:-4] if inputs.der_name.endswith(".crl") else inputs.der_name
            crl_name = f"{folder}/{stem}-final.crl"
            ocsp_name = f"{folder}/{ca_name}-final.ocsp.sqlite3"
            registry_name = inputs.registry_path.relative_to(out_dir).as_posix()
            times = {"this_update": moment.isoformat(), "next_update": "9999-12-31T23:59:59+00:00"}
            run.plan(crl_name, "final-crl", "der", ca=ca_name, **times)
            run.plan(crl_name + ".pem", "final-crl", "pem", ca=ca_name, **times)
            run.plan(f"{inputs.crl_dir}/{inputs.der_name}", "final-crl", "der", ca=ca_name, published=True,
                     _replace=True, **times)
            run.plan(f"{inputs.crl_dir}/{inputs.der_name}.pem", "final-crl", "pem", ca=ca_name, published=True,
                     _replace=True, **times)
            if inputs.signer is not None:
                run.plan(ocsp_name, "final-ocsp-store", "sqlite3", ca=ca_name)
            run.plan(registry_name, "registry", "sqlite3", ca=ca_name, _replace=True)
            run.plan(archive_name(ca_name), "termination-archive", "tar", ca=ca_name)
            run.check()
            say_definition(recorder, defn, ca_name)
            recorder.say(f"Termination of {ca_name!r} decided on {decision.decided.isoformat()}: {decision.reference}")
            recorder.say(f"The archive and the last CRL go to: {decision.successor_body}")
            recorder.say(f"CA certificate {inputs.cert_path.name} (SHA-256 {short_sha(sha256_file(inputs.cert_path))}"
                         f"), subject {cert.subject.rfc4514_string()}")
            recorder.say(f"Certificates to revoke ({decision.reason}): {len(inputs.to_revoke)}")
            for serial, subject in inputs.to_revoke:
                recorder.say(f"  serial {serial:x}: {subject}")
            recorder.say(f"Last CRL: number after {prev_number}, nextUpdate 9999-12-31 23:59:59Z (no CRL follows)")
            if inputs.signer is not None:
                recorder.say(f"Final OCSP responses by {inputs.signer.path.name}, valid until "
                             f"{when(inputs.signer.cert.not_valid_after_utc)}")
            say_outputs(recorder, out_dir, run.planned)
            recorder.evidence("termination-decision", {
                "ca": ca_name, "decided": decision.decided.isoformat(), "reference": decision.reference,
                "successor_body": decision.successor_body, "reason": decision.reason})
            recorder.evidence("definition", {"path": str(defn.path), "sha256": defn.sha256, "ca": ca_name,
                                             "revocations": [format(s, "x") for s, _ in inputs.to_revoke],
                                             "published_crl": prev_number})
        with scripted_step(recorder, "token-open"):
            session, key = issuer_key(recorder, run, ca, cert, inputs.cert_path, pin_file, interactive)
            seal_key, seal_cert_path = sealing_key(recorder, session, ca_name, ca, out_dir)
            ocsp_key = None
            if inputs.signer is not None and ca.ocsp is not None:
                label = ca.hsm.ocsp_signer_label(ca.ocsp)
                ocsp_key = signing_key(session, label)
                if spki_sha256(ocsp_key.public_key()) != spki_sha256(inputs.signer.cert.public_key()):
                    raise HsmError(f"the key {label!r} on the token is not the key of {inputs.signer.path}; nothing "
                                   "was changed")
        with scripted_step(recorder, "registry-revoke"):
            staged_registry = run.stage_file(registry_name)
            online_copy(inputs.registry_path, staged_registry)
            with Registry.open(staged_registry) as registry:
                for serial, _ in inputs.to_revoke:
                    if not registry.revoke(serial, decision.reason, now=moment):
                        raise RegistryError(f"serial {serial:x} was revoked meanwhile; nothing was changed")
                entries = list(registry.iter_revoked_rows())
                statuses = list(registry.iter_status())
            recorder.evidence("revocations", {"ca": ca_name, "reason": decision.reason, "code": code,
                                              "revoked_at": moment.isoformat(),
                                              "serials": [format(s, "x") for s, _ in inputs.to_revoke],
                                              "registry_sha256": sha256_file(staged_registry)})
            recorder.say(f"{len(inputs.to_revoke)} certificate(s) revoked in the registry's copy; "
                         f"{len(entries)} revocation(s) in all")
        alg_id, _ = crlenc.signature_algorithm(cert.public_key())
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        number = max(prev_number, last_reserved(state)) + 1
        this_update = crlenc.this_update_covering(moment, max((e[1] for e in entries), default=None))
        header = crlenc.CrlHeader(cert.subject, ski, number, this_update, crlenc.FINAL_NEXT_UPDATE,
                                  expired_certs_on_crl=cert.not_valid_before_utc)
        allowances = [*ca.lint, FINAL_CRL_ALLOWANCE]
        what = f"the final CRL of {ca_name!r}"
        with scripted_step(recorder, "crl-lint"):
            buf = bytearray()
            count = crlenc.encode_revoked(entries, buf)
            tbs = bytes(crlenc.encode_tbs(header, alg_id, buf, count))
            with recorder.busy("pkilint: the final CRL"):
                findings = crlenc.lint_crl(crlenc.sign_tbs(tbs, alg_id, throwaway_key_like(cert.public_key())))
            enforce(findings, allowances, what)
            recorder.evidence("lint", {"stage": "before-signing", "crl": number,
                                       "findings": [f.as_dict() for f in findings]})
            say_lint(recorder, findings, allowances, what)
        with scripted_step(recorder, "crl-sign"):
            if reserve(state, prev_number) != number:
                raise OutputError(f"{state}: CRL number {number} was taken meanwhile; nothing was signed")
            der = crlenc.sign_tbs(tbs, alg_id, key)
            recorder.say(f"Final CRL {number} signed: thisUpdate {when(this_update)}, nextUpdate 99991231235959Z, "
                         f"{count} entries")
        with scripted_step(recorder, "crl-verify"):
            crlenc.verify_crl(der, tbs, cert.public_key(), header, count, [e[0] for e in entries])
            after = crlenc.lint_crl(der)
            enforce(after, allowances, what + " (after signing)")
            check_against_previous(inputs.published[0], der, lambda s: None, inputs.published[1])
            recorder.evidence("crl", {"number": number, "this_update": this_update.isoformat(),
                                      "next_update": "99991231235959Z", "entries": count, "final": True,
                                      "sha256": sha256_hex(der)})
            say_lint(recorder, after, allowances, what + " (after signing)")
        rows: list[Row] = []
        with scripted_step(recorder, "ocsp-sign"):
            if inputs.signer is not None and ocsp_key is not None and ca.ocsp is not None:
                rows = _final_responses(recorder, ocsp_key, cert, inputs.signer, statuses, moment,
                                        list(ca.ocsp.cert_id_hashes), allowances)
            else:
                recorder.say(f"OCSP: {ca_name!r} runs no OCSP service (no ocsp section); no responses signed")
        with scripted_step(recorder, "archive-write"):
            run.stage(crl_name, der)
            run.stage(crl_name + ".pem", crlenc.pem_from_der(der))
            run.stage(f"{inputs.crl_dir}/{inputs.der_name}", der)
            run.stage(f"{inputs.crl_dir}/{inputs.der_name}.pem", crlenc.pem_from_der(der))
            if inputs.signer is not None:
                staged_store = run.stage_file(ocsp_name)
                with ResponseStore.create(staged_store, ca_name, store_issuer_sha256(cert)) as store:
                    store.replace_all(rows)
                    store.conn.execute("PRAGMA journal_mode=DELETE")
            keep_definition(defn, run)
            own = getattr(recorder, "path", None)
            skip = {p.filename for p in run.planned.values() if p.staged is not None}
            if own is not None:
                with contextlib.suppress(ValueError):
                    skip.add(Path(own).resolve().relative_to(out_dir.resolve()).as_posix())
            kinds = {str(e.get("path")): str(e.get("kind")) for e in manifest.artifacts}
            members = [(rel, path, member_kind(kinds, rel)) for rel, path in directory_members(out_dir, skip)]
            members += [(p.filename, p.staged, p.kind) for p in run.planned.values()
                        if p.staged is not None and p.kind != "termination-archive"]
            members.sort(key=lambda m: m[0])
            archive_path = run.stage_file(archive_name(ca_name))
            facts = {"ca": ca_name, "rehearsal": rehearsal, "decided": decision.decided.isoformat(),
                     "reference": decision.reference, "successor_body": decision.successor_body,
                     "final_crl": f"out/{crl_name}", "ca_certificate": f"out/{inputs.cert_path.name}",
                     "ocsp_store": f"out/{ocsp_name}" if inputs.signer is not None else None,
                     "registry": f"out/{registry_name}"}
            body = write_archive(archive_path, members, facts, moment)
            archive_sha = sha256_file(archive_path)
            recorder.evidence("termination-archive", {"path": archive_name(ca_name), "sha256": archive_sha,
                                                      "members": len(body["members"]),
                                                      "transcripts": [m["path"] for m in body["members"]
                                                                      if m["kind"] == "transcript"]})
            recorder.say(f"Archive {archive_name(ca_name)}: {len(body['members'])} members, SHA-256 "
                         f"{short_sha(archive_sha)}")
        with scripted_step(recorder, "archive-verify"):
            check = verify_archive(archive_path, anchor, rehearsal=rehearsal)
            recorder.evidence("archive-verified", {"sha256": archive_sha, "trust": anchor,
                                                   "exit_code": check.exit_code, "transcripts": check.transcripts,
                                                   "problems": check.problems})
            for line in check.lines():
                recorder.say(line)
            if check.exit_code != 0:
                raise VerificationError("the termination archive does not verify, so the termination does not "
                                        "finish (nothing was published, the registry is unchanged): "
                                        + "; ".join(check.problems or check.notes))
        with scripted_step(recorder, "outputs-write"):
            run.record()
        with scripted_step(recorder, "fingerprint-read-aloud"):
            recorder.say(announce(f"Final CRL {number} of {ca_name} (nextUpdate 99991231235959Z)", der))
            recorder.say(announce_digest(f"Termination archive {archive_name(ca_name)}", archive_sha))
        run.seal(seal_key, seal_cert_path, "certificate")
    return TerminationResult(ca_name, [s for s, _ in inputs.to_revoke], number, count, out_dir / crl_name,
                             out_dir / archive_name(ca_name), archive_sha,
                             out_dir / ocsp_name if inputs.signer is not None else None, len(rows))


def online_copy(source: Path, target: Path) -> None:
    """A consistent copy of the live registry by SQLite's online backup. The source is opened read-write although
    nothing writes to it: the last connection to close then checkpoints and removes its ``-wal`` and ``-shm``
    files, where a read-only one would leave them beside the registry the run later replaces."""
    src = sqlite3.connect(source, timeout=10.0)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise RegistryError(f"{source}: cannot copy the registry ({exc}); nothing was changed") from None
    finally:
        src.close()


def archive_members(out_dir: Path, run: CeremonyRun, manifest: Any, recorder: Recorder) -> list[tuple[str, Path, str]]:
    """What a termination archive holds, ``(name under out/, file, kind)`` sorted: every file of the output directory
    the archive takes (not the run's own transcript, still open, nor a file the run replaces), then the run's staged
    outputs under their final names (not the archive itself). The root's final CRL ceremony builds its archive with
    it too (ceremony/ceremonies/root_crl.py), so that both archives hold the same things."""
    own = getattr(recorder, "path", None)
    skip = {p.filename for p in run.planned.values() if p.staged is not None}
    if own is not None:
        with contextlib.suppress(ValueError):
            skip.add(Path(own).resolve().relative_to(out_dir.resolve()).as_posix())
    kinds = {str(e.get("path")): str(e.get("kind")) for e in manifest.artifacts}
    members = [(rel, path, member_kind(kinds, rel)) for rel, path in directory_members(out_dir, skip)]
    members += [(p.filename, p.staged, p.kind) for p in run.planned.values()
                if p.staged is not None and p.kind != "termination-archive"]
    members.sort(key=lambda m: m[0])
    return members


def member_kind(kinds: dict[str, str], rel: str) -> str:
    """The kind the output directory's manifest gives a file (transcripts and unlisted files get a plain name)."""
    if rel.startswith("transcripts/") and rel.endswith(".jsonl"):
        return "transcript"
    return kinds.get(rel) or ("manifest" if rel == "manifest.json" else "file")


def _final_responses(recorder: Recorder, key: Any, ca_cert: x509.Certificate, signer: SignerCertificate,
                     statuses: list[tuple[int, int | None, int | None]], moment: dt.datetime, hashes: list[str],
                     allowances: list[LintAllowance]) -> list[Row]:
    """The step ocsp-sign: a final response for every certificate of the registry and every CertID hash, by the
    delegated signer, valid from now until the signer certificate's notAfter; each parsed back and verified."""
    context = ResponderContext(ca_cert, signer.cert, hashes)
    this_update = crlenc.epoch(moment)
    next_update = crlenc.epoch(signer.cert.not_valid_after_utc)
    times = (this_update, this_update, next_update)
    stand_in = throwaway_key_like(key.public_key())
    for sample in (Status(), Status(this_update, 5)):
        trial = context.sign(context.response_data(1, hashes[0], sample, *times), stand_in)
        enforce(lint_response(trial), allowances, f"the final {sample.name} OCSP response")
    rows: list[Row] = []
    for serial, revoked_at, reason in statuses:
        status = Status(revoked_at, reason)
        for h in hashes:
            tbs = context.response_data(serial, h, status, *times)
            der = context.sign(tbs, key)
            verify_response(der, tbs, signer.cert.public_key(), serial, status, this_update, next_update)
            rows.append((serial, h, status.name, der, this_update, next_update, status.fingerprint))
    recorder.evidence("ocsp", {"final": True, "responses": len(rows), "signer": signer.path.name,
                               "signer_sha256": sha256_hex(signer.cert.public_bytes(Encoding.DER)),
                               "this_update": moment.isoformat(),
                               "next_update": signer.cert.not_valid_after_utc.isoformat(),
                               "certificates": len(statuses)})
    recorder.say(f"{len(rows)} final OCSP response(s) signed for {len(statuses)} certificate(s), valid until "
                 f"{when(signer.cert.not_valid_after_utc)}")
    return rows
