"""Root CRL batches: the offline root pre-signs a series of CRLs at one ceremony.

The root key leaves its safe rarely. At a root CRL ceremony it signs ``batch_count`` CRLs (the
definition's ``crl.batch_count``, e.g. 4: one a quarter for a year) with consecutive CRL numbers;
CRL *i* has thisUpdate = start + i·interval − clock_skew and nextUpdate = thisUpdate + lifetime,
so consecutive CRLs overlap by ``lifetime − interval``. The publication server publishes, at any
time, the highest-numbered CRL whose thisUpdate has passed.

The same ceremony can revoke a subordinate CA certificate (its certificate file is given, and it
must have been signed by this root). Root revocations live in the root's own registry
(``<out>/<root>-registry.sqlite3``, the same format as a subordinate CA's); the revocation is
committed only once the CRLs carrying it are written, so a failed ceremony changes nothing. A
batch that revokes supersedes the pre-signed CRLs not yet in force: its numbers are higher.

Root CRLs are ARLs: an IssuingDistributionPoint (critical) says they cover CA certificates
only, and pkilint lints them with the CA/Browser Forum ARL profile (nextUpdate within 12 months).

Step ids (the ``root-crl-batch`` script): offline-check, definition-check, token-open, then
crl-lint, crl-sign, crl-verify for every CRL, outputs-write, fingerprint-read-aloud.

**The successor's CRLs** (root rollover, ``successor=True``; ``invoke crl.root-batch --successor``). The successor
root the definition names (``cas.<root>.successor``) is a CA of its own once its key ceremony has run: what it
issues (the reverse cross-certificate, later the subordinates it certifies) needs its own ARL, signed by its own key
at its own ``publication.crl_url``, with its own CRL numbers (RFC 5280 5.2.3: numbers increase within one issuer's
scope). Its files carry the stem of its other files, ``crl/<root>.g<n>-<number>.crl``, its number reservations
``.state/<root>.g<n>.crlnumber``, its revocations ``<root>.g<n>-registry.sqlite3``; the run is
sealed by the successor's sealing key. A flag rather than ``--generation N``: the definition names one successor,
with its generation, and a number typed on the command line could only disagree with it.

**The root's final CRL** (``final=True``; ``invoke crl.root-batch --final``, script ``root-termination``). A root
that stops signs one last CRL with nextUpdate 99991231235959Z (GeneralizedTime; RFC 5280 5.1.2.6: no CRL follows),
only when the definition records the decision (``cas.<root>.termination``, as a subordinate's) and every CA
certificate the root issued is revoked or expired, so that the last word the root leaves on each is final. Then the
root's archive is written with the subordinate termination's format and verified by the same verifier
(:mod:`ceremony.transcript.archive`; ``invoke audit.verify-archive ARCHIVE --trust <root>.crt.pem``) before anything
is published. Every later batch of that root is refused: a final CRL exists.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from ceremony.backup.format import BACKUP_DIR
from ceremony.ca.registry import CertRecord, Registry, parse_reason
from ceremony.ceremonies.runner import CeremonyRun
from ceremony.ceremonies.steps import (
    issuer_key,
    keep_definition,
    lang_of,
    offline_check_step,
    prepare_out,
    say_definition,
    say_key_hash,
    say_lint,
    say_outputs,
    sealing_key,
    short_sha,
    tell,
    when,
)
from ceremony.ceremonies.termination import FINAL_CRL_ALLOWANCE, archive_members, archive_name
from ceremony.common.errors import DefinitionError, OutputError, RegistryError, VerificationError
from ceremony.common.fileio import replace_atomically, sha256_file
from ceremony.common.fingerprints import announce, announce_digest, sha256_hex
from ceremony.common.terminal_text import say as words
from ceremony.crl import encoding as crlenc
from ceremony.crl.checks import check_against_previous, summarise
from ceremony.crl.job import publication_names
from ceremony.crl.state import last_reserved, reserve, state_path
from ceremony.definition.model import CA, OCSP_CERT_ID_HASHES, LintAllowance, LoadedDefinition
from ceremony.hsm.signers import verify_signature
from ceremony.ocsp.encoding import ResponderContext, Status, lint_response, verify_response
from ceremony.ocsp.store import ResponseStore, Row
from ceremony.transcript.archive import verify_archive, write_archive
from ceremony.transcript.recorder import Recorder, scripted_step
from ceremony.x509.files import load_issuer_certificate, read_certificate
from ceremony.x509.lint import enforce, throwaway_key_like

CRL_DIR = "crl"


@dataclass(frozen=True)
class Revocation:
    """A CA certificate the root revokes at this ceremony."""

    certificate: str | Path
    reason: str = "keyCompromise"
    invalidity_date: dt.datetime | None = None


@dataclass(frozen=True)
class RootCrl:
    number: int
    this_update: dt.datetime
    next_update: dt.datetime
    entries: int
    der_path: Path
    pem_path: Path
    sha256: str


@dataclass(frozen=True)
class RootCrlBatch:
    crls: list[RootCrl]
    revoked: list[int]
    registry: Path
    ocsp_stores: list[Path] | None = None
    archive: Path | None = None
    """The root's archive (``termination/<root>.termination-archive.tar``), written with the final CRL only."""


#: Manifest kinds of the certificates the root issues: the root answers OCSP for each of them (a cross-certificate
#: only where this root signed it: the forward one for the old root, the reverse one for the successor).
ROOT_ISSUED_KINDS = ("subordinate-certificate", "sealing-certificate", "cross-certificate")

#: The script of the root's final CRL ceremony (``crl.root-batch --final``): a root CRL ceremony with the archive's
#: steps, archive-write and archive-verify, before outputs-write.
ROOT_TERMINATION = "root-termination"

#: The pkilint finding the root's final CRL must make (CA/Browser Forum BR 7.2: an ARL's nextUpdate within 12
#: months), accepted for that CRL only, as the subordinate's 10-day one is for its final CRL
#: (:data:`~ceremony.ceremonies.termination.FINAL_CRL_ALLOWANCE`).
FINAL_ARL_ALLOWANCE = LintAllowance(
    validation="cabf.arl_invalid_validity_period",
    reason="the root's last CRL: RFC 5280 5.1.2.6 sets nextUpdate 99991231235959Z for a CA that will issue no more "
           "CRLs; the 12-month limit is for ARLs that another follows")


def ocsp_store_name(stem: str, number: int) -> str:
    """``crl/<stem>-<number>.ocsp.sqlite3``: the root's pre-signed responses for the period of CRL ``number``."""
    return f"{CRL_DIR}/{stem}-{number}.ocsp.sqlite3"


def root_issued_certificates(out_dir: Path, manifest: Any, root_cert: x509.Certificate) -> list[x509.Certificate]:
    """Every certificate the root issued that the output directory holds (subordinate CA certificates of every
    generation, transcript-sealing certificates, the cross-certificate it signed), by the manifest, each checked to
    be signed by the root."""
    found: dict[int, x509.Certificate] = {}
    for entry in manifest.artifacts:
        if entry.get("kind") not in ROOT_ISSUED_KINDS or entry.get("format") != "pem":
            continue
        cert = read_certificate(out_dir / str(entry["path"]))
        try:
            cert.verify_directly_issued_by(root_cert)
        except (ValueError, TypeError, InvalidSignature):
            continue  # a sealing certificate of a restored root token, say: not this root key's
        found[cert.serial_number] = cert
    return [found[s] for s in sorted(found)]


def root_registry_path(out: Path, root_name: str) -> Path:
    return out / f"{root_name}-registry.sqlite3"


def crl_file_stem(defn: LoadedDefinition) -> str:
    """The stem of the root in service's batch files (``crl/<stem>-<number>.crl``): its crl_url's file name."""
    name = publication_names(defn.model.cas[defn.model.root_name])[0]
    return name[:-4] if name.endswith(".crl") else name


@dataclass(frozen=True)
class RootSigner:
    """Which root a root CRL ceremony signs for: the root in service, or its successor (root rollover)."""

    name: str  # ``<root>`` or ``<root>.g<n>``: its certificate file, registry and CRL number sequence
    ca: CA  # the successor as a root CA of its own (Successor.as_ca) when ``successor``
    file_stem: str  # of its batch files, ``crl/<file_stem>-<number>.crl``
    field: str  # where the definition describes it: ``cas.<root>`` or ``cas.<root>.successor``
    successor: bool


def root_signer(defn: LoadedDefinition, successor: bool = False) -> RootSigner:
    """The root in service, or with ``successor`` the successor the definition names. The successor's batch files
    carry the stem of its other files (``<root>.g<n>``), never its URL's file name, so that they can never be taken
    for the old root's (the old root's files are found by ``<stem>-*.crl``); its ``publication.crl_url`` must be its
    own, since its CRLs are another issuer's and would replace the old root's at one URL."""
    model = defn.model
    name = model.root_name
    if not successor:
        return RootSigner(name, model.cas[name], crl_file_stem(defn), f"cas.{name}", False)
    root = model.cas[name]
    found = model.successor_root()
    field = f"cas.{name}.successor"
    if root.successor is None or found is None:
        raise DefinitionError(str(defn.path), field, "not set: the definition names no successor root whose CRLs "
                              "--successor would sign", "successor: {generation, subject, key, validity, hsm, "
                              "publication, ...} under the root (docs/lifecycle.md), or run without --successor")
    stem, ca = found
    own = root.successor.publication
    if own is None or publication_names(ca)[0] == publication_names(root)[0]:
        said = ("not set, so the root's is used" if own is None
                else f"{own.crl_url!r} has the file name of the root's own CRL ({root.publication.crl_url!r})")
        raise DefinitionError(str(defn.path), f"{field}.publication.crl_url", f"{said}: the successor's CRLs are "
                              "another issuer's and must be published at a URL of their own",
                              "a URL whose file name differs from the root's, e.g. http://pki.example/crl/root-g2.crl")
    return RootSigner(stem, ca, stem, field, True)


def latest_in_force(crl_dir: Path, stem: str, at: dt.datetime) -> bytes | None:
    """The highest-numbered CRL already written whose thisUpdate is not after ``at``."""
    best: tuple[int, bytes] | None = None
    for path in crl_dir.glob(f"{stem}-*.crl"):
        der = path.read_bytes()
        s = summarise(x509.load_der_x509_crl(der))
        if s.this_update <= at and (best is None or s.number > best[0]):
            best = (s.number, der)
    return best[1] if best else None


def final_crl_path(crl_dir: Path, stem: str) -> Path | None:
    """The final CRL (nextUpdate 99991231235959Z) among a root's batch files, if one was signed: nothing follows it."""
    if not crl_dir.is_dir():
        return None
    for path in sorted(crl_dir.glob(f"{stem}-*.crl")):
        if x509.load_der_x509_crl(path.read_bytes()).next_update_utc == crlenc.FINAL_NEXT_UPDATE:
            return path
    return None


def _check_revocation(rev: Revocation, root_cert: x509.Certificate) -> tuple[x509.Certificate, int]:

    cert = load_issuer_certificate(Path(rev.certificate), "the certificate to revoke")
    code = parse_reason(rev.reason)
    if cert.issuer != root_cert.subject:
        raise VerificationError(f"{rev.certificate}: not issued by this root (issuer {cert.issuer.rfc4514_string()})")
    try:
        verify_signature(root_cert.public_key(), cert.signature, cert.tbs_certificate_bytes,
                         cert.signature_hash_algorithm)
    except TypeError:
        raise VerificationError(f"{rev.certificate}: signed with an algorithm the suite does not use") from None
    except InvalidSignature:
        raise VerificationError(f"{rev.certificate}: its signature does not verify with the root key") from None
    return cert, code


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def check_root_termination(defn: LoadedDefinition, signer: RootSigner, out_dir: Path, issued: list[x509.Certificate],
                           revoked: set[int], now: dt.datetime) -> None:
    """What the root's final CRL needs before a token is opened (each refused with one message, nothing changed):
    the root in service, not the successor; the decision recorded (``cas.<root>.termination``, dated today or
    earlier); no share file left to archive; and every CA certificate the root issued (subordinate certificates of
    every generation, cross-certificates) revoked (``revoked``, this run's revocations included) or expired, so that
    the last word the root leaves on each of them is final. Sealing certificates are not CA certificates: a root CRL
    (an ARL, onlyContainsCACerts) does not cover them."""
    path = str(defn.path)
    if signer.successor:
        raise DefinitionError(path, signer.field, "--final with --successor: the successor's last CRL is signed "
                              "once it is the root in service (docs/lifecycle.md, 'Root rollover')",
                              "--final for the root in service, without --successor")
    decision = signer.ca.termination
    if decision is None:
        raise DefinitionError(path, f"{signer.field}.termination", "not set: the root's final CRL says that no root "
                              "CRL follows it, which cannot be undone", "termination: {decided: YYYY-MM-DD, "
                              "reference: '<the decision, who took it>', successor_body: '<who keeps the archive and "
                              "the last CRL>'}")
    if decision.decided > now.date():
        raise DefinitionError(path, f"{signer.field}.termination.decided", f"{decision.decided} is in the future: "
                              "the decision must be taken before the root's final CRL is signed",
                              f"a date on or before {now.date()}")
    shares = sorted(p.relative_to(out_dir).as_posix() for p in (out_dir / BACKUP_DIR).glob("*.share-*")
                    if p.is_file())
    if shares:
        raise OutputError(f"{out_dir / BACKUP_DIR}: share files are still there ({', '.join(shares)}); the archive "
                          "never holds a secret, and the key-backup transcript verifies only once each page is handed "
                          "over and its file shredded (docs/key-backup.md); nothing was changed")
    live = [c for c in issued if _is_ca(c) and c.serial_number not in revoked and c.not_valid_after_utc > now]
    if live:
        listed = "; ".join(f"{c.subject.rfc4514_string()} (serial {c.serial_number:x}, valid until "
                           f"{when(c.not_valid_after_utc)})" for c in live)
        raise RegistryError(f"{path}: {signer.field}.termination: the root's final CRL needs every CA certificate the "
                            f"root issued revoked or expired; still valid and not revoked: {listed}. Revoke each at a "
                            "root CRL ceremony first (invoke crl.root-batch --revoke FILE); nothing was changed")


def refuse_after_final(crl_dir: Path, signer: RootSigner) -> None:
    """No root CRL ceremony after the root's final CRL: one message naming it."""
    done = final_crl_path(crl_dir, signer.file_stem)
    if done is not None:
        raise OutputError(f"{done}: the final CRL of {signer.name!r} (nextUpdate 99991231235959Z) was signed: the "
                          "root was terminated and no root CRL follows it; nothing was changed")


def check_root_batch(defn: LoadedDefinition, out: str | Path, *, rehearsal: bool, successor: bool = False,
                     final: bool = False, revoke: Sequence[Revocation] = (),
                     issuer_cert_path: str | Path | None = None, now: dt.datetime | None = None) -> None:
    """The refusals of a root CRL ceremony that need neither a token nor a person, for the task to make before the
    pre-flight and the sign-in (so that a refused run leaves not even a transcript); the ceremony makes them again
    in definition-check. The root certificate is read, no batch follows a final CRL, and with ``final`` the
    termination's conditions (:func:`check_root_termination`, this run's revocations counted)."""
    signer = root_signer(defn, successor)
    out_dir, manifest = prepare_out(out, rehearsal)
    cert_path = Path(issuer_cert_path) if issuer_cert_path else out_dir / f"{signer.name}.crt.pem"
    root_cert = load_issuer_certificate(cert_path, signer.name)
    refuse_after_final(out_dir / CRL_DIR, signer)
    if not final:
        return
    revoked = {_check_revocation(rev, root_cert)[0].serial_number for rev in revoke}
    registry_path = root_registry_path(out_dir, signer.name)
    if registry_path.exists():
        with Registry.open(registry_path) as registry:
            revoked |= {r[0] for r in registry.iter_revoked_rows()}
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    check_root_termination(defn, signer, out_dir, root_issued_certificates(out_dir, manifest, root_cert), revoked,
                           moment)


def root_crl_batch_ceremony(defn: LoadedDefinition, out: str | Path, recorder: Recorder, *, rehearsal: bool,
                            pin_file: str | None = None, interactive: bool = True,
                            start: dt.datetime | None = None, count: int | None = None,
                            revoke: Sequence[Revocation] = (),
                            issuer_cert_path: str | Path | None = None, successor: bool = False,
                            final: bool = False) -> RootCrlBatch:
    """Pre-sign ``count`` root CRLs (default ``crl.batch_count``), optionally revoking CA certificates.

    ``successor``: for the successor root the definition names (its key, URL, numbers, files, sealing key).
    ``final``: the root's last CRL and its archive (script ``root-termination``; see the module's docstring)."""
    lang = lang_of(recorder)

    signer = root_signer(defn, successor)
    model = defn.model
    name, ca = signer.name, signer.ca
    offline_check_step(recorder, rehearsal)
    out_dir, manifest = prepare_out(out, rehearsal)
    n = 1 if final else count if count is not None else (ca.crl.batch_count or 1)
    start_at = (start or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(microsecond=0)
    stem = signer.file_stem
    crl_dir = out_dir / CRL_DIR
    registry_path = root_registry_path(out_dir, name)
    kind = "final-crl" if final else "root-crl"
    allowances = [*ca.lint, FINAL_CRL_ALLOWANCE, FINAL_ARL_ALLOWANCE] if final else list(ca.lint)
    with CeremonyRun(out_dir, manifest, recorder, ROOT_TERMINATION if final else "root-crl-batch") as run:
        with scripted_step(recorder, "definition-check"):
            if final and (count not in (None, 1) or start is not None):
                raise VerificationError("--final signs one CRL, now: it takes neither --count nor --start")
            if not 1 <= n <= 40:
                raise VerificationError(f"a root CRL batch holds 1 to 40 CRLs, not {n}")
            cert_path = Path(issuer_cert_path) if issuer_cert_path else out_dir / f"{name}.crt.pem"
            root_cert = load_issuer_certificate(cert_path, name)
            refuse_after_final(crl_dir, signer)
            ski = root_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
            pending: list[tuple[x509.Certificate, int, Revocation]] = []
            for rev in revoke:
                cert, code = _check_revocation(rev, root_cert)
                pending.append((cert, code, rev))
            rows: dict[int, crlenc.RevokedRow] = {}
            if registry_path.exists():  # created only when the first revocation is recorded
                with Registry.open(registry_path) as registry:
                    rows = {r[0]: r for r in registry.iter_revoked_rows()}
            revoked_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
            now_epoch = crlenc.epoch(revoked_at)
            for cert, code, rev in pending:
                serial = cert.serial_number
                if serial in rows:
                    raise RegistryError(f"{rev.certificate}: serial {serial:x} is revoked already; nothing to do")
                inv = None if rev.invalidity_date is None else crlenc.epoch(rev.invalidity_date)
                if inv is not None and inv > now_epoch:
                    raise RegistryError(f"{rev.certificate}: the invalidity date is in the future")
                rows[serial] = (serial, now_epoch, code or None, inv,
                                crlenc.epoch(cert.not_valid_after_utc))
            ocsp_url = ca.publication.ocsp_url
            issued = root_issued_certificates(out_dir, manifest, root_cert) if ocsp_url or final else []
            if final:
                check_root_termination(defn, signer, out_dir, issued, set(rows), revoked_at)
            entries = [rows[s] for s in sorted(rows)]
            # Set back by the clock skew, but never before a revocation the CRLs list.
            first_this_update = crlenc.this_update_covering(start_at - ca.crl.clock_skew_td,
                                                            max((e[1] for e in entries), default=None))
            previous = latest_in_force(crl_dir, stem, first_this_update) if crl_dir.is_dir() else None
            state = state_path(out_dir, name)
            prev_number = summarise(x509.load_der_x509_crl(previous)).number if previous else 0
            first = max(last_reserved(state), prev_number) + 1

            def next_update_of(this_update: dt.datetime) -> dt.datetime:
                return crlenc.FINAL_NEXT_UPDATE if final else this_update + ca.crl.lifetime_td

            for i in range(n):
                this_update = first_this_update + i * ca.crl.interval_td
                times = {"number": first + i, "this_update": this_update.isoformat(),
                         "next_update": next_update_of(this_update).isoformat()}
                extra = {"ca": name, "final": True} if final else {}
                run.plan(f"{CRL_DIR}/{stem}-{first + i}.crl", kind, "der", **times, **extra)
                run.plan(f"{CRL_DIR}/{stem}-{first + i}.crl.pem", kind, "pem", **times, **extra)
            issued_ocsp = issued if ocsp_url else []
            if ocsp_url:
                for i in range(n):
                    run.plan(ocsp_store_name(stem, first + i), "root-ocsp-store", "sqlite3", number=first + i,
                             responses=len(issued_ocsp) * len(OCSP_CERT_ID_HASHES))
            registry_name = registry_path.relative_to(out_dir).as_posix()
            if pending or registry_path.exists():
                run.plan(registry_name, "registry", "sqlite3", ca=name, _replace=True)
            if final:
                run.plan(archive_name(name), "termination-archive", "tar", ca=name)
            run.check()
            say_definition(recorder, defn, model.root_name)
            if signer.successor:
                recorder.say(f"For the successor root {name} ({signer.field}): its own key, CRL numbers and URL "
                             f"{ca.publication.crl_url}")
            tell(recorder, "w_root_cert_file", path=cert_path, sha=short_sha(sha256_file(cert_path)))
            tell(recorder, "w_crl_issuer", subject=root_cert.subject.rfc4514_string())
            tell(recorder, "w_key_type", kind=ca.key.describe())
            say_key_hash(recorder, words(lang, "w_root_key"), root_cert.public_key())
            if final:
                decision = ca.termination
                assert decision is not None
                recorder.say(f"Termination of the root {name!r} decided on {decision.decided.isoformat()}: "
                             f"{decision.reference}")
                recorder.say(f"The archive and the last CRL go to: {decision.successor_body}")
                recorder.say(f"Final CRL {first}: thisUpdate {when(first_this_update)}, nextUpdate "
                             "9999-12-31 23:59:59Z (no root CRL follows)")
                for cert in issued:
                    if _is_ca(cert):
                        state_of = "revoked" if cert.serial_number in rows else "expired"
                        recorder.say(f"  CA certificate serial {cert.serial_number:x}, {state_of}: "
                                     f"{cert.subject.rfc4514_string()}")
                recorder.evidence("termination-decision", {
                    "ca": name, "decided": decision.decided.isoformat(), "reference": decision.reference,
                    "successor_body": decision.successor_body, "reason": decision.reason})
            else:
                tell(recorder, "w_crl_plan", n=n, first=first, last=first + n - 1, interval=ca.crl.interval,
                     lifetime=ca.crl.lifetime, previous=(words(lang, "w_crl_in_force", n=prev_number) if prev_number
                                                         else words(lang, "w_crl_first")))
                for i in range(n):
                    this_update = first_this_update + i * ca.crl.interval_td
                    tell(recorder, "w_crl_line", n=first + i, this_update=when(this_update),
                         next_update=when(this_update + ca.crl.lifetime_td))
            tell(recorder, "w_crl_entries", n=len(entries))
            for cert, _code, rev in pending:
                tell(recorder, "w_revoke_now", serial=f"{cert.serial_number:x}", subject=cert.subject.rfc4514_string(),
                     reason=rev.reason, invalidity=(words(lang, "w_invalidity", when=when(rev.invalidity_date))
                                                    if rev.invalidity_date else ""))
            say_outputs(recorder, out_dir, [p for p in run.planned if p != registry_name])
            recorder.evidence("definition", {"path": str(defn.path), "sha256": defn.sha256, "ca": name,
                                             "batch": n, "interval": ca.crl.interval, "lifetime": ca.crl.lifetime,
                                             "final": final, "successor": signer.successor,
                                             "revocations": [{"serial": format(c.serial_number, "x"),
                                                              "reason": r.reason} for c, _, r in pending]})
        with scripted_step(recorder, "token-open"):
            session, key = issuer_key(recorder, run, ca, root_cert, cert_path, pin_file, interactive)
            seal_key, seal_cert_path = sealing_key(recorder, session, name, ca, out_dir, cert_path.parent)
        alg_id, _ = crlenc.signature_algorithm(root_cert.public_key())
        signed: list[tuple[crlenc.CrlHeader, bytes]] = []
        responses: list[list[Row]] = []
        rows_now = {e[0]: e for e in entries}
        reserved = False
        for i in range(n):
            this_update = first_this_update + i * ca.crl.interval_td
            header = crlenc.CrlHeader(root_cert.subject, ski, first + i, this_update, next_update_of(this_update),
                                      only_ca_certs=True)
            what = f"{'final ' if final else ''}root CRL {first + i}"  # the record's words; the room sees its own
            shown = what if final else words(lang, "w_root_crl", n=first + i)
            with scripted_step(recorder, "crl-lint"):
                buf = bytearray()
                cnt = crlenc.encode_revoked(entries, buf)
                tbs = bytes(crlenc.encode_tbs(header, alg_id, buf, cnt))
                with recorder.busy(words(lang, "w_crl_lint_busy", what=shown)):
                    findings = crlenc.lint_crl(crlenc.sign_tbs(tbs, alg_id, throwaway_key_like(key.public_key())),
                                               True)
                enforce(findings, allowances, what)
                recorder.evidence("lint", {"stage": "before-signing", "crl": first + i,
                                           "findings": [f.as_dict() for f in findings]})
                say_lint(recorder, findings, allowances, shown)
            with scripted_step(recorder, "crl-sign"):
                if not reserved:
                    reserve(state, prev_number, n)  # durable before the first signature
                    reserved = True
                der = crlenc.sign_tbs(tbs, alg_id, key)
                tell(recorder, "w_crl_signed", what=shown, this_update=when(header.this_update),
                     next_update=when(header.next_update),
                     entries=words(lang, "w_entry_one" if cnt == 1 else "w_entry_many", n=cnt))
            with scripted_step(recorder, "crl-verify"):
                crlenc.verify_crl(der, tbs, root_cert.public_key(), header, cnt, [e[0] for e in entries])
                with recorder.busy(words(lang, "w_crl_after_busy", what=shown)):
                    after = crlenc.lint_crl(der, True)
                enforce(after, allowances, what + " (after signing)")
                before = signed[-1][1] if signed else previous
                follows = check_against_previous(before, der, lambda s: None) if before is not None else []
                tell(recorder, "w_crl_verified", what=shown)
                say_lint(recorder, after, allowances, words(lang, "w_crl_after", what=shown))
                if before is not None:
                    tell(recorder, "w_crl_against", n=summarise(x509.load_der_x509_crl(before)).number,
                         follows=", ".join(follows))
                recorder.evidence("crl", {"number": first + i, "this_update": this_update.isoformat(),
                                          "next_update": header.next_update.isoformat(), "entries": cnt,
                                          "final": final, "sha256": sha256_hex(der)})
            signed.append((header, der))
            with scripted_step(recorder, "ocsp-sign"):
                # The final period's responses last until the root certificate ends: a response never outlives
                # its signer, and no ceremony follows to sign others.
                period = replace(header, next_update=root_cert.not_valid_after_utc) if final else header
                responses.append(_sign_root_responses(recorder, key, root_cert, issued_ocsp, rows_now, period,
                                                      ocsp_url, allowances))

        def stage_outputs() -> tuple[list[RootCrl], list[Path]]:
            crls = []
            for header, der in signed:
                base = f"{CRL_DIR}/{stem}-{header.number}.crl"
                run.stage(base, der)
                run.stage(base + ".pem", crlenc.pem_from_der(der))
                crls.append(RootCrl(header.number, header.this_update, header.next_update, len(entries),
                                    out_dir / base, out_dir / (base + ".pem"), sha256_hex(der)))
            stores = []
            if ocsp_url:
                root_sha = sha256_hex(root_cert.public_bytes(Encoding.DER))
                for (header, _der), rows_of_period in zip(signed, responses, strict=True):
                    staged = run.stage_file(ocsp_store_name(stem, header.number))
                    with ResponseStore.create(staged, name, root_sha) as store:
                        store.replace_all(rows_of_period)
                        store.conn.execute("PRAGMA journal_mode=DELETE")  # one self-contained file to publish
                    stores.append(out_dir / ocsp_store_name(stem, header.number))
            if pending:  # the revocations go into a copy of the registry, published with the CRLs
                staged_registry = run.stage_file(registry_name)
                if registry_path.exists():
                    copy_registry(registry_path, staged_registry)
                with Registry.open(staged_registry, create=True) as registry:
                    for cert, _code, rev in pending:
                        _register_and_revoke(registry, cert, rev, revoked_at, CertRecord)
            keep_definition(defn, run)
            return crls, stores

        archive: Path | None = None
        archive_sha = ""
        if final:
            with scripted_step(recorder, "archive-write"):
                crls, stores = stage_outputs()
                archive = _write_root_archive(recorder, run, manifest, out_dir, name, ca, rehearsal, cert_path,
                                              crls[0], stores, registry_path, bool(pending), revoked_at)
                archive_sha = sha256_file(archive)
            with scripted_step(recorder, "archive-verify"):
                check = verify_archive(archive, str(cert_path), rehearsal=rehearsal)
                recorder.evidence("archive-verified", {"sha256": archive_sha, "trust": str(cert_path),
                                                       "exit_code": check.exit_code,
                                                       "transcripts": check.transcripts, "problems": check.problems})
                for line in check.lines():
                    recorder.say(line)
                if check.exit_code != 0:
                    raise VerificationError("the root's archive does not verify, so the final CRL ceremony does not "
                                            "finish (nothing was published): " + "; ".join(check.problems
                                                                                            or check.notes))
            with scripted_step(recorder, "outputs-write"):
                run.record()
        else:
            with scripted_step(recorder, "outputs-write"):
                crls, stores = stage_outputs()
                run.record()
        with scripted_step(recorder, "fingerprint-read-aloud"):
            for header, der in signed:
                if final:
                    recorder.say(announce(f"Final CRL {header.number} of {name} (nextUpdate 99991231235959Z)", der))
                else:
                    recorder.say(announce(words(lang, "w_crl_title", n=header.number,
                                                this_update=f"{header.this_update:%Y-%m-%d %H:%M:%SZ}",
                                                next_update=f"{header.next_update:%Y-%m-%d %H:%M:%SZ}"), der))
            if final:
                recorder.say(announce_digest(f"Root archive {archive_name(name)}", archive_sha))
        run.seal(seal_key, seal_cert_path, "certificate")
    return RootCrlBatch(crls, [c.serial_number for c, _, _ in pending], registry_path, stores,
                        out_dir / archive_name(name) if final else None)


def _write_root_archive(recorder: Recorder, run: CeremonyRun, manifest: Any, out_dir: Path, name: str, ca: CA,
                        rehearsal: bool, cert_path: Path, final: RootCrl, stores: list[Path], registry_path: Path,
                        registry_staged: bool, moment: dt.datetime) -> Path:
    """The step archive-write of the root's final CRL ceremony: the termination archive's format and members
    (:func:`~ceremony.ceremonies.termination.archive_members`), with the root's facts; returns the staged file."""
    decision = ca.termination
    assert decision is not None
    members = archive_members(out_dir, run, manifest, recorder)
    staged = run.stage_file(archive_name(name))
    rel = final.der_path.relative_to(out_dir).as_posix()
    registry = registry_path.relative_to(out_dir).as_posix()
    facts = {"ca": name, "root": True, "rehearsal": rehearsal, "decided": decision.decided.isoformat(),
             "reference": decision.reference, "successor_body": decision.successor_body,
             "final_crl": f"out/{rel}", "ca_certificate": f"out/{cert_path.name}",
             "ocsp_store": f"out/{stores[0].relative_to(out_dir).as_posix()}" if stores else None,
             "registry": f"out/{registry}" if registry_staged or registry_path.exists() else None}
    body = write_archive(staged, members, facts, moment)
    digest = sha256_file(staged)
    recorder.evidence("termination-archive", {"path": archive_name(name), "sha256": digest,
                                              "members": len(body["members"]),
                                              "transcripts": [m["path"] for m in body["members"]
                                                              if m["kind"] == "transcript"]})
    recorder.say(f"Archive {archive_name(name)}: {len(body['members'])} members, SHA-256 {short_sha(digest)}")
    return staged


def _sign_root_responses(recorder: Recorder, key: Any, root_cert: x509.Certificate, issued: list[x509.Certificate],
                         revoked: dict[int, crlenc.RevokedRow], header: crlenc.CrlHeader, ocsp_url: str | None,
                         allowances: Any) -> list[Row]:
    """The step ocsp-sign of one period: a response signed by the root key for every certificate the root issued
    and every CertID hash, with the CRL's thisUpdate and nextUpdate (the root's status changes only at a ceremony),
    each parsed back and its signature verified; one good and one revoked response linted (pkilint, RFC 6960) with
    a throwaway key first. Without ``publication.ocsp_url`` the root serves no OCSP: the step says so."""
    if not ocsp_url:
        recorder.say("OCSP: the root serves none (publication.ocsp_url is not set); no responses signed")
        return []
    context = ResponderContext(root_cert, root_cert, OCSP_CERT_ID_HASHES)
    this_update, next_update = crlenc.epoch(header.this_update), crlenc.epoch(header.next_update)
    produced = crlenc.epoch(dt.datetime.now(dt.UTC).replace(microsecond=0))
    times = (produced, this_update, next_update)
    stand_in = throwaway_key_like(key.public_key())
    for sample in (Status(), Status(this_update, 1)):
        trial = context.sign(context.response_data(1, OCSP_CERT_ID_HASHES[0], sample, *times), stand_in)
        enforce(lint_response(trial), allowances, f"the root's {sample.name} OCSP response")
    rows: list[Row] = []
    for cert in issued:
        entry = revoked.get(cert.serial_number)
        status = Status() if entry is None else Status(entry[1], entry[2])
        for h in OCSP_CERT_ID_HASHES:
            tbs = context.response_data(cert.serial_number, h, status, *times)
            der = context.sign(tbs, key)
            verify_response(der, tbs, root_cert.public_key(), cert.serial_number, status, this_update, next_update)
            rows.append((cert.serial_number, h, status.name, der, this_update, next_update, status.fingerprint))
        recorder.say(f"OCSP response for {cert.subject.rfc4514_string()} (serial {cert.serial_number:x}): "
                     f"{status.name}, {when(header.this_update)} to {when(header.next_update)}")
    recorder.evidence("ocsp", {"crl": header.number, "responses": len(rows), "url": ocsp_url,
                               "this_update": header.this_update.isoformat(),
                               "next_update": header.next_update.isoformat(),
                               "certificates": [{"serial": format(c.serial_number, "x"),
                                                 "status": "good" if c.serial_number not in revoked else "revoked"}
                                                for c in issued]})
    return rows


def copy_registry(source: Path, target: Path) -> None:
    """A consistent copy of the registry (SQLite's online backup), to be changed and published by a run."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def _register_and_revoke(registry: Any, cert: x509.Certificate, rev: Revocation, when: dt.datetime,
                         record: Any) -> None:
    if registry.get(cert.serial_number) is None:
        registry.add(record(serial=cert.serial_number, subject=cert.subject.rfc4514_string(), profile="ca",
                            not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                            sha256=sha256_hex(cert.public_bytes(Encoding.DER)), status="good"))
    if not registry.revoke(cert.serial_number, rev.reason, invalidity_date=rev.invalidity_date, now=when):
        raise OutputError(f"serial {cert.serial_number:x} was revoked meanwhile")


@dataclass(frozen=True)
class RootPublication:
    number: int
    this_update: dt.datetime
    next_update: dt.datetime | None
    der_path: Path
    changed: bool
    entries: int = 0


def root_ocsp_store(pub_dir: str | Path, root_name: str) -> Path:
    """``<pub_dir>/ocsp/<root>.sqlite3``: the store the root's responder serves (``CEREMONY_OCSP_STORE``); the
    successor's is ``ocsp/<root>.g<n>.sqlite3``."""
    return Path(pub_dir) / "ocsp" / f"{root_name}.sqlite3"


def successor_crls_exist(defn: LoadedDefinition, batch_dir: str | Path) -> bool:
    """Whether the successor the definition names has batch files in ``batch_dir`` (``crl.publish-root`` publishes
    them beside the old root's once it has: before its first root CRL ceremony there is nothing to publish)."""
    found = defn.model.successor_root()
    return found is not None and any((Path(batch_dir) / CRL_DIR).glob(f"{found[0]}-*.crl"))


def publish_root_crl(defn: LoadedDefinition, batch_dir: str | Path, pub_dir: str | Path,
                     now: dt.datetime | None = None, successor: bool = False) -> RootPublication:
    """Publish the pre-signed root CRL in force: the highest-numbered one whose thisUpdate has passed.

    Copies it to ``<pub_dir>/<basename of the root's crl_url>`` (DER) and ``.pem`` next to it, each
    replaced atomically, after checking it against the CRL published there now (a lower number, or
    another issuer, is refused). Run it from cron on the publication side; nothing changes when the
    published CRL is already the one in force. ``successor``: the successor root's CRLs, at its own URL's file
    name. A final CRL (nextUpdate 99991231235959Z) stays in force for good once published.
    """

    signer = root_signer(defn, successor)
    der_name, pem_name = publication_names(signer.ca)
    at = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    crl_dir = Path(batch_dir) / CRL_DIR
    der = latest_in_force(crl_dir, signer.file_stem, at) if crl_dir.is_dir() else None
    if der is None:
        raise OutputError(f"{crl_dir}: no root CRL in force at {at:%Y-%m-%dT%H:%M:%SZ} (of {signer.name!r}: its "
                          f"files {signer.file_stem}-<number>.crl; run a root CRL ceremony)")
    summary = summarise(x509.load_der_x509_crl(der))
    if summary.next_update is not None and summary.next_update <= at:
        raise VerificationError(f"the newest root CRL in force ({summary.number}) expired at "
                                f"{summary.next_update:%Y-%m-%dT%H:%M:%SZ}: a root CRL ceremony is overdue")
    target = Path(pub_dir) / der_name
    current = target.read_bytes() if target.exists() else None
    if current == der:
        return RootPublication(summary.number, summary.this_update, summary.next_update, target, False,
                               summary.entries)
    if current is not None:
        check_against_previous(current, der, lambda s: None)
    store = crl_dir / Path(ocsp_store_name(signer.file_stem, summary.number)).name
    if store.is_file():  # the root's responses for the same period, where the root responder reads them
        published = root_ocsp_store(pub_dir, signer.name)
        published.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(published, store.read_bytes())
    replace_atomically(Path(pub_dir) / pem_name, crlenc.pem_from_der(der))
    replace_atomically(target, der)
    return RootPublication(summary.number, summary.this_update, summary.next_update, target, True, summary.entries)
