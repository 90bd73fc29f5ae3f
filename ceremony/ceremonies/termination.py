"""CA termination: the last revocations, the last CRLs, the last OCSP responses and one verifiable archive.

RFC 3647 5.8 and ETSI EN 319 401 7.12 ask that a CA that stops leaves its relying parties a final answer about every
certificate it issued, and its records with a body that keeps them. The ceremony (script ``ca-termination``) does
that for a subordinate CA, on the one ceremony runner (all or nothing), in this order:

1. ``offline-check``; ``definition-check``: the definition records the decision (``cas.<ca>.termination``: when,
   its reference, the body that takes over, the revocation reason), dated today or earlier; the CA is a
   subordinate (the root's last CRL comes from a root CRL ceremony, docs/lifecycle.md); its certificates, registry
   and published CRLs are read; the certificates to revoke are listed (every unexpired one still good). The final
   CRLs are those the CRL job publishes (:func:`ceremony.crl.job.crl_targets`): the full CRL while the CA publishes
   one, one per partition (``crl.partitions``), and after a re-key the same set for every key that still has
   unexpired certificates, each following its own last published CRL. Every refusal comes here, before a token is
   opened: disk, tokens and registry unchanged.
2. ``token-open``: the key of every key generation that signs a final CRL (a key no longer on the token is refused
   by generation: the certificates it signed could never get a final CRL), the transcript-sealing key and, where
   the CA runs OCSP, each key's delegated signer (the key of its latest signer certificate).
3. ``registry-revoke``: the revocations go into a copy of the registry taken with SQLite's online backup, in the
   staging directory; the registry itself is replaced by that copy only at publication, after the seal.
4. ``crl-lint``, ``crl-sign``, ``crl-verify``: each final CRL holds every revocation of its scope (partition, key),
   expired certificates included; nextUpdate 99991231235959Z as GeneralizedTime (RFC 5280 5.1.2.6: a CA that will
   issue no more CRLs). pkilint (the CRL job's validators) lints it before the HSM signs, with a throwaway key, and
   again after; the one finding it must make, the CA/Browser Forum's 10-day validity limit
   (``cabf.crl_invalid_validity_period``), is accepted here and only here, since it is the very point of a final
   CRL. The signature, the TBS, every entry and the previous published CRL are checked as by the CRL job.
5. ``ocsp-sign``: where the CA has ``ocsp``, a final response by each key's delegated signer for every certificate
   that key issued and every CertID hash, thisUpdate now, nextUpdate the signer certificate's notAfter (a response
   never outlives its signer; no refresh follows), each parsed back and verified; the store is marked final, and
   the OCSP job refuses to write into it (:func:`ceremony.ocsp.job.refuse_final_store`).
6. ``archive-write``: one tar file (:mod:`ceremony.transcript.archive`) with the output directory (transcripts,
   certificates, definitions, CRLs, OCSP stores, backups, reports), the registry's copy, the final CRLs and OCSP
   stores, and a manifest with the SHA-256 of each member and which certificate each final CRL verifies under.
7. ``archive-verify``: the archive is verified as an auditor would (every hash, each final CRL under its key's CA
   certificate, every transcript against the root certificate): the ceremony does not finish, and publishes
   nothing, until it verifies.
8. ``outputs-write``, ``fingerprint-read-aloud``: the final CRLs and the archive, read aloud.

Where the files live. The output directory holds the CA's certificates and transcripts; the registry and the CRL
job's publication directory are found there (``OUT/<ca>-registry.sqlite3``, ``OUT/crl``) or named (``registry``,
``crl_dir``): on the CA host they sit beside the CA's directory (role ``subordinate_ca``: the registry at the path
``/etc/ceremony/<ca>.conf`` gives, ``/var/lib/ceremony/registry/registry.sqlite3`` by default; role ``crl_signer``:
``/var/lib/ceremony/crl``). Outside the output directory the registry's revoked copy and the final CRLs are outputs
under ``termination/<ca>/`` that replace the live files at publication (the output set's ``_also``), after the seal;
so does the current key's final OCSP store over the OCSP job's store when ``ocsp_store`` names it (role
``ocsp_signer``: ``/var/lib/ceremony/ocsp/<ca>.sqlite3``), after which the job refuses to run.

The key is not destroyed here. Destruction cannot be undone, and until the final CRLs are seen at their URLs and the
auditor has verified the archive with the anchor they bring, the CA keys are the only keys that could sign a
corrected last CRL. They are destroyed afterwards at the key-destruction ceremony (``invoke ceremony.destroy-key``),
with the people that ceremony needs (the share custodians, and the root token when the sealing key goes too).

The transcript is sealed by the CA token's transcript-sealing key, never by a CA key.
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
from ceremony.ca.cli import CONFIG_DIR, load_host_config
from ceremony.ca.generations import ca_for_generation, generation_stem
from ceremony.ca.registry import CRL_ENTRY, NO_DATE, Registry, default_path, parse_reason
from ceremony.ceremonies.runner import CeremonyRun
from ceremony.ceremonies.steps import (
    keep_definition,
    login,
    offline_check_step,
    prepare_out,
    say_definition,
    say_lint,
    say_outputs,
    sealing_key,
    short_sha,
    token_step,
    when,
)
from ceremony.common.errors import DefinitionError, HsmError, OutputError, RegistryError, VerificationError
from ceremony.common.fileio import sha256_file
from ceremony.common.fingerprints import announce, announce_digest, sha256_hex
from ceremony.crl import encoding as crlenc
from ceremony.crl.checks import CrlSummary, check_against_previous
from ceremony.crl.job import CrlTarget, crl_targets, job_generations, load_issuer, read_published
from ceremony.crl.state import check_not_ahead, last_reserved, reserve
from ceremony.definition.model import CA, LintAllowance, LoadedDefinition
from ceremony.hsm.keys import key_evidence, spki_sha256
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

#: The CRL publication directory the CRL job uses by default (``invoke crl.sign``: ``OUT/crl``); another one is
#: named with ``crl_dir`` (on the CA host, role ``crl_signer``: ``/var/lib/ceremony/crl``).
CRL_DIR = "crl"

#: The pkilint finding a final CRL must make (CA/Browser Forum BR 7.2: nextUpdate within 10 days), accepted for the
#: final CRL only: RFC 5280 5.1.2.6 gives a CA that will issue no more CRLs nextUpdate 99991231235959Z.
FINAL_CRL_ALLOWANCE = LintAllowance(
    validation="cabf.crl_invalid_validity_period",
    reason="the CA's last CRL: RFC 5280 5.1.2.6 sets nextUpdate 99991231235959Z for a CA that will issue no more "
           "CRLs; the 10-day limit is for CRLs that another follows")


@dataclass(frozen=True)
class FinalCrl:
    """One final CRL: a CRL the CRL job publishes (the full CRL or a partition, of one key), and what it follows."""

    target: CrlTarget
    published: tuple[bytes, CrlSummary]
    name: str
    """Its output under ``termination/<ca>/`` (``<published stem>-final.crl``)."""
    number: int = 0
    entries: int = 0
    der: bytes = b""

    @property
    def label(self) -> str:
        return self.target.label


@dataclass(frozen=True)
class FinalKey:
    """One key generation that signs final CRLs (:mod:`ceremony.ca.generations`): its CA certificate (the first
    that held the key), the CA as that key acts, the issuer generations it answers for, its OCSP signer."""

    generation: int
    cert_path: Path
    cert: x509.Certificate
    ca: CA
    generations: tuple[int, ...] | None
    """The issuer generations whose certificates its CRLs list (None: the CA has one key, every certificate)."""
    unexpired: int
    signer: SignerCertificate | None
    crls: tuple[FinalCrl, ...]


@dataclass(frozen=True)
class FinalCrlResult:
    """A final CRL as signed and published."""

    path: Path
    key_generation: int
    partition: int | None
    number: int
    entries: int
    ca_certificate: Path


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
    crls: tuple[FinalCrlResult, ...] = ()
    """Every final CRL, the current key's first (full CRL, then partitions), then earlier keys'."""
    ocsp_stores: tuple[Path, ...] = ()


@dataclass(frozen=True)
class TerminationInputs:
    """What the ceremony reads before any token is opened (each refused with one message)."""

    ca: CA
    cert_path: Path
    cert: x509.Certificate
    registry_path: Path
    to_revoke: list[tuple[int, str]]  # (serial, subject) of every unexpired certificate still good
    publication: Path
    """The CRL job's publication directory."""
    crl_rel: str | None
    """The publication directory relative to the output directory; None: outside it (the CA host's layout)."""
    registry_rel: str | None
    """The registry relative to the output directory; None: outside it."""
    keys: tuple[FinalKey, ...]
    """Every key that signs final CRLs, the current key first."""
    ocsp_store: Path | None = None
    """The OCSP job's live store (the CA host's, role ``ocsp_signer``), replaced by the current key's final store
    after the seal; None: the final store is only written under ``termination/<ca>/``."""

    @property
    def signer(self) -> SignerCertificate | None:
        """The current key's OCSP signer."""
        return self.keys[0].signer

    @property
    def published(self) -> tuple[bytes, Any]:
        """The current key's first published CRL (the full CRL, else partition 0)."""
        return self.keys[0].crls[0].published

    @property
    def der_name(self) -> str:
        return self.keys[0].crls[0].target.der_path.name


def termination_dir(ca_name: str) -> str:
    return f"{TERMINATION_DIR}/{ca_name}"


def archive_name(ca_name: str) -> str:
    """``termination/<ca>.termination-archive.tar``: the one file handed to the body that takes over."""
    return f"{TERMINATION_DIR}/{ca_name}.termination-archive.tar"


def registry_location(out_dir: Path, ca_name: str, given: str | Path | None = None,
                      config_dir: Path = CONFIG_DIR) -> Path:
    """The CA's registry: ``given`` (``--registry``), else ``OUT/<ca>-registry.sqlite3`` where the ceremonies keep
    it, else the path the CA host's configuration names (``/etc/ceremony/<ca>.conf``, role ``subordinate_ca``)."""
    if given is not None:
        return Path(given)
    kept = default_path(out_dir, ca_name)
    host = config_dir / f"{ca_name}.conf"
    if kept.is_file() or not host.is_file():
        return kept
    return load_host_config(str(host), ca_name, None).registry


def _inside(path: Path, out_dir: Path) -> str | None:
    try:
        return path.resolve().relative_to(out_dir.resolve()).as_posix()
    except ValueError:
        return None


def termination_inputs(defn: LoadedDefinition, ca_name: str, out_dir: Path, now: dt.datetime,
                       crl_dir: str | Path | None = None, registry: str | Path | None = None,
                       config_dir: Path = CONFIG_DIR, ocsp_store: str | Path | None = None) -> TerminationInputs:
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
                          "termination's CRLs are signed under it and the certificates of its later generations")
    issuer = load_issuer(cert_path, ca_name)
    registry_path = registry_location(out_dir, ca_name, registry, config_dir)
    if not registry_path.is_file():
        raise RegistryError(f"{registry_path}: the registry of {ca_name!r} is not there; the termination revokes "
                            "what it lists and archives it. Give it with --registry PATH (on the CA host: the path "
                            f"in {config_dir / (ca_name + '.conf')}, /var/lib/ceremony/registry/registry.sqlite3 by "
                            "default); nothing was changed")
    _refuse_open(registry_path, "the registry", "issuance, the CRL or OCSP job")
    live_store = None if ocsp_store is None else _live_store(defn, ca, ca_name, Path(ocsp_store))
    publication = out_dir / CRL_DIR if crl_dir is None else Path(crl_dir)
    to_revoke = []
    with Registry.open(registry_path) as reg:
        records = reg.list()
        for rec in records:
            if rec.status == "good" and rec.not_after > now:
                to_revoke.append((rec.serial, rec.subject))
        gens = job_generations(issuer, ca_name, reg)
        targets = crl_targets(ca, ca_name, publication, reg, now, gens)
    multi = len({g.key_generation for g in gens}) > 1
    folder = termination_dir(ca_name)
    keys: list[FinalKey] = []
    for m in dict.fromkeys(t.generation for t in targets):
        first = next(g for g in gens if g.key_generation == m)
        members = tuple(g.generation for g in gens if g.key_generation == m) if multi else None
        view = ca_for_generation(ca, m)
        crls = []
        for target in (t for t in targets if t.generation == m):
            crls.append(_final_crl(target, ca_name, folder))
        unexpired = sum(1 for r in records if r.not_after > now and (members is None or r.issuer_generation in members))
        signer = None
        if view.ocsp is not None:
            signer = current_signer(out_dir, generation_stem(ca_name, m), first.cert)
            if now >= signer.cert.not_valid_after_utc:
                raise VerificationError(f"{signer.path}: the OCSP signer certificate expired on "
                                        f"{when(signer.cert.not_valid_after_utc)}; renew it first (invoke ocsp.signer "
                                        f"--ca {ca_name}" + ("" if m == 1 else f" --ca-cert {first.path.name}")
                                        + "), so that the final responses have a signer")
        keys.append(FinalKey(m, first.path, first.cert, view, members, unexpired, signer, tuple(crls)))
    return TerminationInputs(ca, cert_path, issuer.cert, registry_path, to_revoke, publication,
                             _inside(publication, out_dir), _inside(registry_path, out_dir), tuple(keys), live_store)


def _refuse_open(path: Path, what: str, users: str) -> None:
    """Refuse a database another process has open (a non-empty ``-wal`` or ``-shm`` beside it): its copy would miss
    what that process writes, and a file replaced under an open WAL would be corrupted by it."""
    for side in ("-wal", "-shm"):
        other = path.with_name(path.name + side)
        if other.exists() and other.stat().st_size:
            raise RegistryError(f"{other}: {what} is open in another process ({users}): stop the CA's services and "
                                "timers first; nothing was changed")


def _live_store(defn: LoadedDefinition, ca: CA, ca_name: str, path: Path) -> Path:
    """The OCSP job's store named with ``--ocsp-store``: this CA's, closed, not final already."""
    if ca.ocsp is None:
        raise DefinitionError(str(defn.path), f"cas.{ca_name}.ocsp", f"not set, but an OCSP store was given ({path})"
                              ": a CA without an OCSP service has no store to replace", "no --ocsp-store")
    _refuse_open(path, "the OCSP store", "the OCSP job")
    # Opened read-write although nothing is written, as the registry's copy is (online_copy): the last connection
    # to close removes the -wal and -shm files, where a read-only one would leave them beside the file replaced.
    with ResponseStore.open(path, ca=ca_name) as store:
        final = store.final
    if final is not None:
        raise OutputError(f"{path}: the OCSP store of {ca_name!r} holds final responses already (written {final}): "
                          "the CA was terminated")
    return path


def _final_crl(target: CrlTarget, ca_name: str, folder: str) -> FinalCrl:
    """A CRL the job publishes, refused unless it has a published CRL to follow that is not final already."""
    published = read_published(target.der_path)
    if published is None:
        raise OutputError(f"{target.der_path}: no published CRL of {ca_name!r} ({target.label}) there; a final CRL "
                          "follows the last one published (its number, its entries). Give the CRL job's publication "
                          "directory with --crl-dir (default OUT/crl; on the CA host /var/lib/ceremony/crl), or let "
                          "the CRL job publish this CRL first; nothing was changed")
    if published[1].next_update == crlenc.FINAL_NEXT_UPDATE:
        raise OutputError(f"{target.der_path}: the published CRL of {ca_name!r} ({target.label}) is a final CRL "
                          "already (nextUpdate 99991231235959Z): the CA was terminated")
    check_not_ahead(target.state, published[1].number, target.der_path)
    stem = target.der_path.name.removesuffix(".crl")
    return FinalCrl(target, published, f"{folder}/{stem}-final.crl")


def terminate_ceremony(defn: LoadedDefinition, ca_name: str, out: str | Path, recorder: Recorder, *,
                       rehearsal: bool, pin_file: str | None = None, interactive: bool = True,
                       trust: str | Path | None = None, crl_dir: str | Path | None = None,
                       registry: str | Path | None = None, now: dt.datetime | None = None,
                       config_dir: Path = CONFIG_DIR, ocsp_store: str | Path | None = None) -> TerminationResult:
    """Terminate subordinate CA ``ca_name`` (see the module's docstring). ``trust``: the root certificate the
    archive's transcripts are verified against (default ``OUT/<root>.crt.pem``); ``crl_dir``: the CRL job's
    publication directory (default ``OUT/crl``); ``registry``: the CA's registry (default
    :func:`registry_location`); ``ocsp_store``: the OCSP job's store, replaced by the current key's final store after
    the seal (the CA host: role ``ocsp_signer``, ``/var/lib/ceremony/ocsp/<ca>.sqlite3``)."""
    offline_check_step(recorder, rehearsal)
    out_dir, manifest = prepare_out(out, rehearsal)
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(microsecond=0)
    anchor = str(trust or out_dir / f"{defn.model.root_name}.crt.pem")
    folder = termination_dir(ca_name)
    with CeremonyRun(out_dir, manifest, recorder, "ca-termination") as run:
        with scripted_step(recorder, "definition-check"):
            inputs = termination_inputs(defn, ca_name, out_dir, moment, crl_dir, registry, config_dir, ocsp_store)
            ca = inputs.ca
            decision = ca.termination
            assert decision is not None
            code = parse_reason(decision.reason)
            multi = len(inputs.keys) > 1 or inputs.keys[0].generations is not None
            times = {"this_update": moment.isoformat(), "next_update": "9999-12-31T23:59:59+00:00"}
            for fk in inputs.keys:
                for fc in fk.crls:
                    tg = fc.target
                    extra: dict[str, Any] = {"ca": ca_name, **times}
                    if tg.partition is not None:
                        extra["partition"] = tg.partition
                    if multi:
                        extra["generation"] = fk.generation
                    if inputs.crl_rel is None:  # the CA host: the live publication directory is replaced after
                        run.plan(fc.name, "final-crl", "der", _also=[tg.der_path], **extra)
                        run.plan(fc.name + ".pem", "final-crl", "pem", _also=[tg.pem_path], **extra)
                        continue
                    run.plan(fc.name, "final-crl", "der", **extra)
                    run.plan(fc.name + ".pem", "final-crl", "pem", **extra)
                    run.plan(_under(inputs.crl_rel, tg.der_path.name), "final-crl", "der", published=True,
                             _replace=True, **extra)
                    run.plan(_under(inputs.crl_rel, tg.pem_path.name), "final-crl", "pem", published=True,
                             _replace=True, **extra)
                if fk.signer is not None:
                    live = [inputs.ocsp_store] if inputs.ocsp_store is not None and fk is inputs.keys[0] else []
                    run.plan(_ocsp_name(folder, ca_name, fk.generation), "final-ocsp-store", "sqlite3", ca=ca_name,
                             _also=live, **({"generation": fk.generation} if multi else {}))
            if inputs.registry_rel is None:
                registry_name = f"{folder}/{ca_name}-registry.sqlite3"
                run.plan(registry_name, "registry", "sqlite3", ca=ca_name, _also=[inputs.registry_path])
            else:
                registry_name = inputs.registry_rel
                run.plan(registry_name, "registry", "sqlite3", ca=ca_name, _replace=True)
            run.plan(archive_name(ca_name), "termination-archive", "tar", ca=ca_name)
            run.check()
            say_definition(recorder, defn, ca_name)
            recorder.say(f"Termination of {ca_name!r} decided on {decision.decided.isoformat()}: {decision.reference}")
            recorder.say(f"The archive and the last CRLs go to: {decision.successor_body}")
            recorder.say(f"CA certificate {inputs.cert_path.name} (SHA-256 {short_sha(sha256_file(inputs.cert_path))}"
                         f"), subject {inputs.cert.subject.rfc4514_string()}")
            recorder.say(f"Registry: {inputs.registry_path}; CRL publication directory: {inputs.publication}")
            recorder.say(f"Certificates to revoke ({decision.reason}): {len(inputs.to_revoke)}")
            for serial, subject in inputs.to_revoke:
                recorder.say(f"  serial {serial:x}: {subject}")
            for fk in inputs.keys:
                owner = f"key generation {fk.generation} ({fk.cert_path.name}, {fk.unexpired} unexpired " \
                        "certificate(s))" if multi else f"the CA key ({fk.cert_path.name})"
                for fc in fk.crls:
                    recorder.say(f"Final CRL, {fc.label}, by {owner}: number after {fc.published[1].number}, "
                                 "nextUpdate 9999-12-31 23:59:59Z (no CRL follows)")
                if fk.signer is not None:
                    recorder.say(f"Final OCSP responses by {fk.signer.path.name}, valid until "
                                 f"{when(fk.signer.cert.not_valid_after_utc)}")
            say_outputs(recorder, out_dir, run.planned)
            recorder.evidence("termination-decision", {
                "ca": ca_name, "decided": decision.decided.isoformat(), "reference": decision.reference,
                "successor_body": decision.successor_body, "reason": decision.reason})
            recorder.evidence("definition", {"path": str(defn.path), "sha256": defn.sha256, "ca": ca_name,
                                             "revocations": [format(s, "x") for s, _ in inputs.to_revoke],
                                             "published_crl": inputs.published[1].number,
                                             "final_crls": [{"crl": fc.target.der_path.name, "label": fc.label,
                                                             "key_generation": fk.generation,
                                                             "published": fc.published[1].number}
                                                            for fk in inputs.keys for fc in fk.crls]})
        with scripted_step(recorder, "token-open"):
            signers, ocsp_keys, seal_key, seal_cert_path = _open_keys(recorder, run, inputs, ca_name, pin_file,
                                                                     interactive)
        with scripted_step(recorder, "registry-revoke"):
            staged_registry = run.stage_file(registry_name)
            online_copy(inputs.registry_path, staged_registry)
            with Registry.open(staged_registry) as reg:
                for serial, _ in inputs.to_revoke:
                    if not reg.revoke(serial, decision.reason, now=moment):
                        raise RegistryError(f"serial {serial:x} was revoked meanwhile; nothing was changed")
                total = reg.count("revoked")
                statuses = {fk.generation: list(reg.iter_status(generations=fk.generations)) for fk in inputs.keys
                            if fk.signer is not None}
            recorder.evidence("revocations", {"ca": ca_name, "reason": decision.reason, "code": code,
                                              "revoked_at": moment.isoformat(),
                                              "serials": [format(s, "x") for s, _ in inputs.to_revoke],
                                              "registry_sha256": sha256_file(staged_registry)})
            recorder.say(f"{len(inputs.to_revoke)} certificate(s) revoked in the registry's copy; "
                         f"{total} revocation(s) in all")
        allowances = [*ca.lint, FINAL_CRL_ALLOWANCE]
        signed: list[tuple[FinalKey, FinalCrl]] = []
        with Registry.open(staged_registry) as reg:
            prepared = []
            with scripted_step(recorder, "crl-lint"):
                for fk in inputs.keys:
                    for fc in fk.crls:
                        prepared.append((fk, fc, *_prepare(recorder, reg, fk, fc, moment, allowances, ca_name)))
            with scripted_step(recorder, "crl-sign"):
                for fk, fc, header, tbs, alg_id, count, _serials in prepared:
                    number = header.number
                    if reserve(fc.target.state, fc.published[1].number) != number:
                        raise OutputError(f"{fc.target.state}: CRL number {number} was taken meanwhile; nothing was "
                                          "signed")
                    der = crlenc.sign_tbs(tbs, alg_id, signers[fk.generation])
                    recorder.say(f"Final CRL {number} ({fc.label}) signed: thisUpdate {when(header.this_update)}, "
                                 f"nextUpdate 99991231235959Z, {count} entries")
                    signed.append((fk, FinalCrl(fc.target, fc.published, fc.name, number, count, der)))
            with scripted_step(recorder, "crl-verify"):
                for (fk, fc), (_, _, header, tbs, _, count, serials) in zip(signed, prepared, strict=True):
                    _verify_final(recorder, fk, fc, header, tbs, count, serials, allowances, ca_name)
        rows: dict[int, list[Row]] = {}
        with scripted_step(recorder, "ocsp-sign"):
            for fk in inputs.keys:
                if fk.signer is not None and fk.ca.ocsp is not None:
                    rows[fk.generation] = _final_responses(recorder, ocsp_keys[fk.generation], fk.cert, fk.signer,
                                                           statuses[fk.generation], moment,
                                                           list(fk.ca.ocsp.cert_id_hashes), allowances)
            if not rows:
                recorder.say(f"OCSP: {ca_name!r} runs no OCSP service (no ocsp section); no responses signed")
        with scripted_step(recorder, "archive-write"):
            for _, fc in signed:
                run.stage(fc.name, fc.der)
                run.stage(fc.name + ".pem", crlenc.pem_from_der(fc.der))
                if inputs.crl_rel is not None:
                    run.stage(_under(inputs.crl_rel, fc.target.der_path.name), fc.der)
                    run.stage(_under(inputs.crl_rel, fc.target.pem_path.name), crlenc.pem_from_der(fc.der))
            for fk in inputs.keys:
                if fk.generation in rows:
                    staged_store = run.stage_file(_ocsp_name(folder, ca_name, fk.generation))
                    with ResponseStore.create(staged_store, ca_name, store_issuer_sha256(fk.cert)) as store:
                        store.replace_all(rows[fk.generation])
                        store.mark_final(moment.isoformat())
                        store.conn.execute("PRAGMA journal_mode=DELETE")
            keep_definition(defn, run)
            members = archive_members(out_dir, run, manifest, recorder)
            archive_path = run.stage_file(archive_name(ca_name))
            finals = [{"path": f"out/{fc.name}", "ca_certificate": f"out/{fk.cert_path.name}",
                       "key_generation": fk.generation, "partition": fc.target.partition, "number": fc.number}
                      for fk, fc in signed]
            stores = [f"out/{_ocsp_name(folder, ca_name, g)}" for g in rows]
            facts = {"ca": ca_name, "rehearsal": rehearsal, "decided": decision.decided.isoformat(),
                     "reference": decision.reference, "successor_body": decision.successor_body,
                     "final_crl": finals[0]["path"], "ca_certificate": f"out/{inputs.cert_path.name}",
                     "final_crls": finals, "ocsp_store": stores[0] if stores else None, "ocsp_stores": stores,
                     "registry": f"out/{registry_name}"}
            body = write_archive(archive_path, members, facts, moment)
            archive_sha = sha256_file(archive_path)
            recorder.evidence("termination-archive", {"path": archive_name(ca_name), "sha256": archive_sha,
                                                      "members": len(body["members"]),
                                                      "final_crls": [f["path"] for f in finals],
                                                      "transcripts": [m["path"] for m in body["members"]
                                                                      if m["kind"] == "transcript"]})
            recorder.say(f"Archive {archive_name(ca_name)}: {len(body['members'])} members, {len(finals)} final "
                         f"CRL(s), SHA-256 {short_sha(archive_sha)}")
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
            for fk, fc in signed:
                where = f" key generation {fk.generation}," if multi else ""
                recorder.say(announce(f"Final CRL {fc.number} of {ca_name} ({fc.label},{where} nextUpdate "
                                      "99991231235959Z)", fc.der))
            recorder.say(announce_digest(f"Termination archive {archive_name(ca_name)}", archive_sha))
        run.seal(seal_key, seal_cert_path, "certificate")
    results = tuple(FinalCrlResult(out_dir / fc.name, fk.generation, fc.target.partition, fc.number, fc.entries,
                                   fk.cert_path) for fk, fc in signed)
    stores_out = tuple(out_dir / _ocsp_name(folder, ca_name, g) for g in rows)
    head = results[0]
    return TerminationResult(ca_name, [s for s, _ in inputs.to_revoke], head.number, head.entries, head.path,
                             out_dir / archive_name(ca_name), archive_sha, stores_out[0] if stores_out else None,
                             sum(len(r) for r in rows.values()), results, stores_out)


def _under(folder: str, name: str) -> str:
    """``name`` in ``folder`` (relative to the output directory; ``.``: the output directory itself), as the output
    set and the archive name it: no ``./`` in a member's name."""
    return name if folder in ("", ".") else f"{folder}/{name}"


def _ocsp_name(folder: str, ca_name: str, key_generation: int) -> str:
    """``termination/<ca>/<ca>-final.ocsp.sqlite3``, ``<ca>.g<m>-final.ocsp.sqlite3`` for a later key's."""
    return f"{folder}/{generation_stem(ca_name, key_generation)}-final.ocsp.sqlite3"


def _open_keys(recorder: Recorder, run: CeremonyRun, inputs: TerminationInputs, ca_name: str, pin_file: str | None,
               interactive: bool) -> tuple[dict[int, Any], dict[int, Any], Any, Path]:
    """The step token-open: the key of every key generation that signs final CRLs, each the key of its
    certificate, its OCSP signer's key, and the sealing key. A key no longer on the token is refused by generation:
    the certificates it signed could never get a final CRL (docs/lifecycle.md, 'CA termination')."""
    ca = inputs.ca
    token_step(recorder, ca)
    session = login(recorder, run.stack, ca.hsm, pin_file, interactive)
    where = ca.hsm.token.describe()
    signers: dict[int, Any] = {}
    ocsp_keys: dict[int, Any] = {}
    for fk in inputs.keys:
        label = fk.ca.hsm.key_label
        try:
            key = signing_key(session, label)
        except HsmError:
            raise HsmError(f"{where} holds no key {label!r}, the key of key generation {fk.generation} of {ca_name!r} "
                           f"({fk.cert_path.name}): it was destroyed or never restored. {fk.unexpired} certificate(s) "
                           f"it signed have not expired and could then never get a final CRL "
                           f"({', '.join(c.target.der_path.name for c in fk.crls)}), so the termination is refused; "
                           "restore the key from its backup (invoke ceremony.restore), or terminate once every "
                           "certificate it signed has expired (it then signs no final CRL); nothing was changed") \
                from None
        if spki_sha256(key.public_key()) != spki_sha256(fk.cert.public_key()):
            raise HsmError(f"the key {label!r} on {where} is not the key of {fk.cert_path} (key generation "
                           f"{fk.generation}); nothing was changed")
        recorder.evidence("key", {**key_evidence(key.p11_object, key.public_key(), ca.key.describe()).as_dict(),
                                  "key_generation": fk.generation, "certificate": fk.cert_path.name})
        signers[fk.generation] = key
        if fk.signer is not None and fk.ca.ocsp is not None:
            ocsp_label = fk.ca.hsm.ocsp_signer_label(fk.ca.ocsp)
            ocsp_key = signing_key(session, ocsp_label)
            if spki_sha256(ocsp_key.public_key()) != spki_sha256(fk.signer.cert.public_key()):
                raise HsmError(f"the key {ocsp_label!r} on the token is not the key of {fk.signer.path}; nothing "
                               "was changed")
            ocsp_keys[fk.generation] = ocsp_key
    seal_key, seal_cert_path = sealing_key(recorder, session, ca_name, ca, run.out)
    return signers, ocsp_keys, seal_key, seal_cert_path


def _prepare(recorder: Recorder, reg: Registry, fk: FinalKey, fc: FinalCrl, moment: dt.datetime,
             allowances: list[LintAllowance], ca_name: str
             ) -> tuple[crlenc.CrlHeader, bytes, bytes, int, list[int]]:
    """Encode one final CRL from the revoked registry's copy (its scope: partition, key) and lint it, signed with a
    throwaway key, before the HSM signs. Returns the header, the TBS, the algorithm, the count and every serial."""
    tg = fc.target
    alg_id, _ = crlenc.signature_algorithm(fk.cert.public_key())
    ski = fk.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    number = max(fc.published[1].number, last_reserved(tg.state)) + 1
    chunks = list(reg.iter_revoked_packed(partition=tg.partition, generations=tg.generations))
    serials = [int.from_bytes(entry[0], "big") for chunk in chunks for entry in CRL_ENTRY.iter_unpack(chunk)]
    buf = bytearray()
    count, _, latest = crlenc.encode_revoked_packed(chunks, buf, CRL_ENTRY, NO_DATE)
    this_update = crlenc.this_update_covering(moment, latest)
    header = crlenc.CrlHeader(fk.cert.subject, ski, number, this_update, crlenc.FINAL_NEXT_UPDATE,
                              expired_certs_on_crl=fk.cert.not_valid_before_utc,
                              partition_url=tg.url if tg.partition is not None else None)
    tbs = bytes(crlenc.encode_tbs(header, alg_id, buf, count))
    what = f"the final CRL of {ca_name!r} ({fc.label})"
    with recorder.busy(f"pkilint: {what}"):
        findings = crlenc.lint_crl(crlenc.sign_tbs(tbs, alg_id, throwaway_key_like(fk.cert.public_key())))
    enforce(findings, allowances, what)
    recorder.evidence("lint", {"stage": "before-signing", "crl": number, "scope": fc.label,
                               "key_generation": fk.generation, "findings": [f.as_dict() for f in findings]})
    say_lint(recorder, findings, allowances, what)
    return header, tbs, alg_id, count, serials


def _verify_final(recorder: Recorder, fk: FinalKey, fc: FinalCrl, header: crlenc.CrlHeader, tbs: bytes, count: int,
                  serials: list[int], allowances: list[LintAllowance], ca_name: str) -> None:
    """After signing: the signature under the key's certificate, the TBS, every serial, pkilint again, and the
    published CRL it follows (higher number, no entry dropped)."""
    what = f"the final CRL of {ca_name!r} ({fc.label})"
    parsed = crlenc.verify_crl(fc.der, tbs, fk.cert.public_key(), header, count, serials[:1] + serials[-1:])
    if sorted(r.serial_number for r in parsed) != sorted(serials):  # every entry, once
        raise VerificationError(f"{what}: its entries are not the revocations of its scope in the registry")
    after = crlenc.lint_crl(fc.der)
    enforce(after, allowances, what + " (after signing)")
    try:
        check_against_previous(fc.published[0], fc.der, lambda s: None, fc.published[1])
    except VerificationError as exc:
        raise VerificationError(f"{fc.target.der_path} ({fc.label}): {exc}") from None
    recorder.evidence("crl", {"number": fc.number, "this_update": header.this_update.isoformat(),
                              "next_update": "99991231235959Z", "entries": count, "final": True,
                              "scope": fc.label, "partition": fc.target.partition, "key_generation": fk.generation,
                              "sha256": sha256_hex(fc.der)})
    say_lint(recorder, after, allowances, what + " (after signing)")


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
