"""Root rollover: the successor root's key ceremony, and the cross-certificates between the two roots (issue 18).

A root is replaced long before it expires (a stronger key, a new name, a compromise plan), and relying parties
move from one trust anchor to the other over years. The definition describes the successor under
``cas.<root>.successor`` (:class:`~ceremony.definition.model.Successor`): its subject, key, validity and token --
another token, or the root's token under labels of its own; a label that exists on the token is refused, never a
reason to generate another key.

1. **Successor root key ceremony** (script ``new-root-key-generation``): the root key ceremony's own steps
   (:func:`~ceremony.ceremonies.root_key.root_key_steps`) for the successor as a root of its own. Its files are the
   root's next generation, as a subordinate renewal's are: ``<root>.g<n>.crt.pem/.der`` (manifest kind
   ``new-root-certificate``, ``"generation": n, "key": "new"``), ``<root>.g<n>.pub.pem/.der`` and its sealing key's
   certificate ``<root>.g<n>.seal.crt.pem``, which the successor issues itself (its transcripts are anchored by the
   successor's certificate, the new trust anchor).
2. **Cross-certification** (script ``cross-certification``), at the offline root, as Boulder's cross-certificate
   ceremony: the old root certifies the successor's key (``<root>.g<n>.by-g<n-1>.crt.pem``), and with ``--reverse``,
   when the definition asks for it, the successor certifies the old root's key (``<root>.g<n-1>.by-g<n>.crt.pem``).
   A cross-certificate carries the subject root's name and key exactly as its self-signed certificate does (BR
   7.1.2.2.2) and its subject key identifier (7.1.2.2.3), so that whatever that root issued chains through it; the
   issuer's AKI, CRL distribution point and caIssuers; CA true with the subject root's path length unless the
   definition says otherwise; the definition's policies (anyPolicy by default) and name constraints. Before the HSM
   is used the subject key is checked to be the subject root's (its self-signed certificate verifies, the key
   ceremony's ``<stem>.pub.pem`` holds the same key); after signing, the cross-certificate's key, subject and SKI
   are compared with the subject root's again. Lint before and after signing, as every certificate.

Each direction is one ceremony on one token, sealed by that token's transcript-sealing key: the forward one by the
old root's (it verifies with ``--trust <root>.crt.pem``), the reverse one by the successor's (``--trust
<root>.g<n>.crt.pem``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ceremony.ceremonies.root_key import RootKeyPlan, root_key_steps
from ceremony.ceremonies.runner import CeremonyRun
from ceremony.ceremonies.steps import (
    PEM,
    CeremonyResult,
    certificate_evidence,
    der_of,
    issuer_key,
    keep_definition,
    lang_of,
    lint_sign_verify,
    offline_check_step,
    outputs_of,
    path_length_text,
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
from ceremony.common.errors import DefinitionError, RequestError, VerificationError
from ceremony.common.fileio import sha256_file
from ceremony.common.fingerprints import announce, colon_form
from ceremony.common.terminal_text import say as words
from ceremony.definition.model import CA, LoadedDefinition, Successor
from ceremony.hsm.keys import spki_sha256
from ceremony.transcript.recorder import Recorder, scripted_step
from ceremony.x509.certificates import cross_builder
from ceremony.x509.csr import describe_key
from ceremony.x509.files import read_certificate, read_public_key
from ceremony.x509.lint import lint_before_signing
from ceremony.x509.profiles import subject_name

#: The scripts (ceremony/scripts/*.yml) of the two ceremonies.
NEW_ROOT, CROSS = "new-root-key-generation", "cross-certification"


@dataclass(frozen=True)
class Rollover:
    """The two roots of a rollover as the definition and the output directory name them."""

    root_name: str  # cas.<root_name>
    root: CA  # the root in service
    successor: Successor  # cas.<root>.successor, as written
    new: CA  # the successor as a root CA of its own
    new_stem: str  # <root>.g<n>: the successor's files
    old_stem: str  # <root> (generation 1) or <root>.g<n-1>: the root it succeeds
    generation: int

    @property
    def old_label(self) -> str:
        return f"g{self.generation - 1}"

    @property
    def new_label(self) -> str:
        return f"g{self.generation}"


def rollover_of(defn: LoadedDefinition) -> Rollover:
    """The rollover the definition describes; refused when ``cas.<root>.successor`` is not there."""
    model = defn.model
    name = model.root_name
    root = model.cas[name]
    found = model.successor_root()
    if root.successor is None or found is None:
        raise DefinitionError(str(defn.path), f"cas.{name}.successor", "not set: the definition names no successor "
                              "root", "successor: {generation, subject, key, validity, hsm, cross_certificate} under "
                              "the root; docs/lifecycle.md")
    n = root.successor.generation
    old_stem = name if n == 2 else f"{name}.g{n - 1}"
    return Rollover(name, root, root.successor, found[1], found[0], old_stem, n)


def new_root_inputs(defn: LoadedDefinition, out_dir: Path) -> Rollover:
    """What the successor's key ceremony needs from the disk and the definition, checked without the HSM (the task
    runs it before the sign-in, the ceremony again in definition-check): the root it succeeds is certified in this
    directory, and the successor's files are not there yet."""
    roll = rollover_of(defn)
    old = out_dir / f"{roll.old_stem}.crt.pem"
    read_certificate(old, f"the certificate of the root that {roll.new_stem} succeeds",
                     "a rollover happens in the root's own output directory (give it with --out)")
    existing = sorted(p.name for p in out_dir.glob(f"{roll.new_stem}.*") if p.is_file())
    if existing:
        raise RequestError(f"{out_dir}: {', '.join(existing)} exist already: the successor root of generation "
                           f"{roll.generation} has had its key ceremony (allowed: cross-certify it, or raise "
                           f"cas.{roll.root_name}.successor.generation for another successor)")
    return roll


def new_root_ceremony(defn: LoadedDefinition, out: str | Path, recorder: Recorder, *, rehearsal: bool,
                      pin_file: str | None = None, interactive: bool = True) -> CeremonyResult:
    """The successor root's key pair on its token and its self-signed certificate: the root key ceremony's steps
    under the successor's stem, after this module's own checks."""
    out_dir = Path(out)
    roll = new_root_inputs(defn, out_dir)

    def checks(run: CeremonyRun) -> None:
        new_root_inputs(defn, run.out)
        old_path = run.out / f"{roll.old_stem}.crt.pem"
        old = read_certificate(old_path, "the root certificate")
        tell(recorder, "r_successor", generation=roll.generation, old=old.subject.rfc4514_string(),
             path=old_path.name, token=roll.new.hsm.token.describe(), label=repr(roll.new.hsm.key_label))

    plan = RootKeyPlan(roll.new_stem, NEW_ROOT, "new-root-certificate", "new-root-public-key",
                       {"generation": roll.generation, "key": "new"}, f"cas.{roll.root_name}.successor.hsm", checks)
    return root_key_steps(defn, roll.new, plan, out, recorder, rehearsal=rehearsal, pin_file=pin_file,
                          interactive=interactive)


# --- cross-certification --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CrossPlan:
    """One cross-certificate to issue: who certifies whose key, into which files, for how long."""

    reverse: bool
    issuer_stem: str
    issuer: CA
    issuer_path: Path
    subject_stem: str
    subject_path: Path
    subject_pub: Path
    stem: str  # of the output files
    not_before: dt.datetime
    not_after: dt.datetime
    path_length: int | None
    manifest: dict[str, Any]


def cross_plan(defn: LoadedDefinition, out_dir: Path, reverse: bool) -> CrossPlan:
    """Which cross-certificate the run issues; ``--reverse`` is refused unless the definition asks for it."""
    roll = rollover_of(defn)
    cross = roll.successor.cross_certificate
    base = f"cas.{roll.root_name}.successor.cross_certificate"
    if reverse and not cross.reverse:
        raise DefinitionError(str(defn.path), f"{base}.reverse", "false: the definition does not ask for the "
                              "reverse cross-certificate (the successor certifying the old root's key)",
                              "set reverse: true first, or run without --reverse")
    old, new = out_dir / f"{roll.old_stem}.crt.pem", out_dir / f"{roll.new_stem}.crt.pem"
    old_ca, new_ca = roll.root, roll.new
    if cross.validity is not None:
        start, end = cross.validity.not_before, cross.validity.not_after
    else:
        start, end = new_ca.validity.not_before, min(old_ca.validity.not_after, new_ca.validity.not_after)
    if reverse:
        return CrossPlan(True, roll.new_stem, new_ca, new, roll.old_stem, old, out_dir / f"{roll.old_stem}.pub.pem",
                         f"{roll.root_name}.{roll.old_label}.by-{roll.new_label}", start, end,
                         old_ca.path_length if cross.path_length is None else cross.path_length,
                         {"subject": "root", "issuer": "new-root", "generation": roll.generation - 1})
    return CrossPlan(False, roll.old_stem, old_ca, old, roll.new_stem, new, out_dir / f"{roll.new_stem}.pub.pem",
                     f"{roll.new_stem}.by-{roll.old_label}", start, end,
                     new_ca.path_length if cross.path_length is None else cross.path_length,
                     {"subject": "new-root", "issuer": "root", "generation": roll.generation})


def _self_signed(path: Path, what: str) -> x509.Certificate:
    cert = read_certificate(path, what, "run the successor root's key ceremony into this --out first")
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        raise RequestError(f"{path}: {what} is not a self-signed root certificate whose signature verifies with its "
                           "own key") from None
    return cert


def check_subject_key(defn: LoadedDefinition, plan: CrossPlan, rehearsal: bool) -> tuple[x509.Certificate, str]:
    """The key the cross-certificate certifies is the subject root's: its certificate is self-signed under that
    key with the name the definition gives it, and its key ceremony's ``<stem>.pub.pem`` holds the same key.
    Returns (the subject root's certificate, the key's SPKI SHA-256)."""
    roll = rollover_of(defn)
    subject_ca = roll.root if plan.reverse else roll.new
    role = "the old root" if plan.reverse else "the new root"
    cert = _self_signed(plan.subject_path, f"the certificate of {role}")
    field = f"cas.{roll.root_name}" + ("" if plan.reverse else ".successor")
    expected = subject_name(subject_ca.subject, rehearsal)
    if cert.subject.public_bytes() != expected.public_bytes():
        raise RequestError(f"{plan.subject_path}: subject {cert.subject.rfc4514_string()!r} is not {role}'s as "
                           f"{defn.path} gives it in {field}.subject ({expected.rfc4514_string()!r})")
    digest = spki_sha256(cert.public_key())
    if describe_key(cert.public_key()) != subject_ca.key.describe():
        raise RequestError(f"{plan.subject_path}: the key is {describe_key(cert.public_key())}, {field}.key says "
                           f"{subject_ca.key.describe()}: the cross-certificate's subject key does not match {role}")
    if not plan.subject_pub.is_file():
        raise RequestError(f"{plan.subject_pub}: not there; the cross-certificate certifies the key {role}'s key "
                           "ceremony wrote (keep that file in the root's output directory)")
    try:
        recorded = spki_sha256(read_public_key(plan.subject_pub))
    except ValueError:
        raise RequestError(f"{plan.subject_pub}: not a public key") from None
    if recorded != digest:
        raise RequestError(f"the cross-certificate's subject key does not match {role}: {plan.subject_path} holds "
                           f"{digest}, {plan.subject_pub} (written at its key ceremony) holds {recorded}")
    return cert, digest


def cross_inputs(defn: LoadedDefinition, out_dir: Path, reverse: bool,
                 rehearsal: bool) -> tuple[CrossPlan, x509.Certificate, x509.Certificate, str]:
    """Everything the cross-certification needs from the disk and the definition, checked without the HSM (the
    task runs it before the sign-in, the ceremony again in its first steps): (plan, issuer's certificate, subject
    root's certificate, the subject key's SPKI SHA-256)."""
    plan = cross_plan(defn, out_dir, reverse)
    issuer_cert = _self_signed(plan.issuer_path, "the issuing root's certificate")
    subject_cert, digest = check_subject_key(defn, plan, rehearsal)
    existing = [n for n in (f"{plan.stem}.crt.pem", f"{plan.stem}.crt.der") if (out_dir / n).exists()]
    if existing:
        raise RequestError(f"{out_dir / existing[0]}: exists already; outputs are never overwritten (this "
                           "cross-certificate was issued: check the manifest)")
    if plan.not_before < issuer_cert.not_valid_before_utc or plan.not_after > issuer_cert.not_valid_after_utc:
        raise RequestError(f"{defn.path}: cas.{defn.model.root_name}.successor.cross_certificate.validity: "
                           f"{when(plan.not_before)} to {when(plan.not_after)} is not within the issuing root's "
                           f"validity ({when(issuer_cert.not_valid_before_utc)} to "
                           f"{when(issuer_cert.not_valid_after_utc)})")
    if plan.not_before < subject_cert.not_valid_before_utc:
        raise RequestError(f"{defn.path}: cas.{defn.model.root_name}.successor.cross_certificate.validity.not_before "
                           f"({when(plan.not_before)}) is before {plan.subject_path.name} begins "
                           f"({when(subject_cert.not_valid_before_utc)}; BR 7.1.2.2.1)")
    return plan, issuer_cert, subject_cert, digest


def check_cross_certificate(cert: x509.Certificate, subject_cert: x509.Certificate,
                            issuer_cert: x509.Certificate) -> None:
    """After signing: the cross-certificate names and certifies exactly the subject root's key (subject bytes,
    SPKI, subject key identifier) under the issuing root's name and key identifier, and its signature verifies."""
    problems = []
    if spki_sha256(cert.public_key()) != spki_sha256(subject_cert.public_key()):
        problems.append("its subject key does not match the subject root's")
    if cert.subject.public_bytes() != subject_cert.subject.public_bytes():
        problems.append("its subject is not the subject root's, byte for byte")
    ski = x509.SubjectKeyIdentifier
    if cert.extensions.get_extension_for_class(ski).value != subject_cert.extensions.get_extension_for_class(ski).value:
        problems.append("its subject key identifier is not the subject root's")
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    if aki != issuer_cert.extensions.get_extension_for_class(ski).value.digest:
        problems.append("its authority key identifier is not the issuing root's key identifier")
    try:
        cert.verify_directly_issued_by(issuer_cert)
    except (ValueError, TypeError, InvalidSignature):
        problems.append("it is not issued by the issuing root (name or signature)")
    if problems:
        raise VerificationError("the cross-certificate the HSM signed is refused: " + "; ".join(problems))


@dataclass(frozen=True)
class CrossResult:
    certificate: Path
    reverse: bool
    files: dict[str, Path]
    fingerprint_sha256: str
    subject_spki_sha256: str


def cross_certification_ceremony(defn: LoadedDefinition, out: str | Path, recorder: Recorder, *, rehearsal: bool,
                                 reverse: bool = False, pin_file: str | None = None,
                                 interactive: bool = True) -> CrossResult:
    """At the offline root: the old root certifies the successor's key (``reverse``: the successor certifies the old
    root's key), sealed by the issuing root token's sealing key."""
    lang = lang_of(recorder)
    roll = rollover_of(defn)
    cross = roll.successor.cross_certificate
    offline_check_step(recorder, rehearsal)
    out_dir, manifest = prepare_out(out, rehearsal)
    with CeremonyRun(out_dir, manifest, recorder, CROSS) as run:
        with scripted_step(recorder, "definition-check"):
            plan, issuer_cert, subject_cert, digest = cross_inputs(defn, out_dir, reverse, rehearsal)
            pem, der = f"{plan.stem}.crt.pem", f"{plan.stem}.crt.der"
            run.plan(pem, "cross-certificate", "pem", **plan.manifest)
            run.plan(der, "cross-certificate", "der", **plan.manifest)
            run.check()
            say_definition(recorder, defn, roll.root_name)
            tell(recorder, "w_issuer_cert", path=plan.issuer_path, sha=short_sha(sha256_file(plan.issuer_path)))
            tell(recorder, "r_cross_plan", subject=subject_cert.subject.rfc4514_string(),
                 issuer=issuer_cert.subject.rfc4514_string(), subject_role=plan.manifest["subject"],
                 issuer_role=plan.manifest["issuer"])
            tell(recorder, "r_cross_terms", start=when(plan.not_before), end=when(plan.not_after),
                 length=path_length_text(plan.path_length, lang), policies=", ".join(cross.policy_oids),
                 constraints=words(lang, "yes" if cross.name_constraints else "none"))
            say_outputs(recorder, out_dir, run.planned)
            recorder.evidence("definition", {"path": str(defn.path), "sha256": defn.sha256, "ca": roll.root_name,
                                             "direction": "reverse" if reverse else "forward"})
        with scripted_step(recorder, "key-verify"):
            check_subject_key(defn, plan, rehearsal)
            recorder.evidence("certificate", {**certificate_evidence(subject_cert), "path": plan.subject_path.name,
                                              "role": "subject-root"})
            recorder.evidence("public-key", {"path": plan.subject_pub.name, "sha256": sha256_file(plan.subject_pub),
                                             "spki_sha256": digest, "same_as": plan.subject_path.name})
            say_key_hash(recorder, words(lang, "r_subject_key_title", subject=subject_cert.subject.rfc4514_string()),
                         subject_cert.public_key())
            tell(recorder, "r_subject_key", cert=plan.subject_path.name, pub=plan.subject_pub.name,
                 fingerprint=colon_form(digest))

            def builder_for(serial: int) -> x509.CertificateBuilder:
                return cross_builder(plan.issuer, issuer_cert, subject_cert, serial, plan.not_before, plan.not_after,
                                     plan.path_length, cross.policy_oids, cross.name_constraints)

            with recorder.busy(words(lang, "w_lint_busy")):
                profile_lint = lint_before_signing(builder_for(1), issuer_cert.public_key(), cross.lint,
                                                   f"the cross-certificate profile {plan.stem!r}")
            say_lint(recorder, profile_lint.findings, cross.lint, words(lang, "w_stage_profile"))
        with scripted_step(recorder, "token-open"):
            session, key = issuer_key(recorder, run, plan.issuer, issuer_cert, plan.issuer_path, pin_file,
                                      interactive)
            seal_key, seal_cert_path = sealing_key(recorder, session, plan.issuer_stem, plan.issuer, out_dir)
        cert = lint_sign_verify(recorder, session, builder_for, key, plan.issuer.hsm.key_label, cross.lint,
                                f"the cross-certificate {plan.stem!r}", plan.manifest)
        with scripted_step(recorder, "cross-verify"):
            check_cross_certificate(cert, subject_cert, issuer_cert)
            recorder.evidence("cross-certificate", {"subject_spki_sha256": digest, "subject_matches": True,
                                                    "subject_certificate": plan.subject_path.name,
                                                    "issuer_certificate": plan.issuer_path.name, **plan.manifest})
            tell(recorder, "r_cross_checked", cert=plan.subject_path.name, issuer=plan.issuer_path.name,
                 fingerprint=colon_form(digest))
        with scripted_step(recorder, "outputs-write"):
            run.stage(pem, cert.public_bytes(PEM))
            run.stage(der, der_of(cert))
            keep_definition(defn, run)
            run.record()
        with scripted_step(recorder, "fingerprint-read-aloud"):
            recorder.say(announce(words(lang, "r_cross_fp", subject=cert.subject.rfc4514_string(),
                                        issuer=cert.issuer.rfc4514_string()), der_of(cert)))
        run.seal(seal_key, seal_cert_path, "certificate")
    return CrossResult(out_dir / pem, reverse, outputs_of(run), sha256_file(out_dir / der), digest)
