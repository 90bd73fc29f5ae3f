"""Subordinate re-key: a new key on the subordinate's token and its own certificate, in two ceremonies.

A re-key happens where the keys are. **At the subordinate's host** (:func:`rekey_key_ceremony`, script
``subordinate-rekey``) the next generation's key pair is generated on the CA's token under a label of its own,
``<key_label>.g<n>`` (:func:`ceremony.ca.generations.key_label_for`), and its CSR written: ``<ca>.g<n>.csr.pem``,
``<ca>.g<n>.pub.pem``. The current key stays on the token under its label: it keeps signing the CRLs (and, where
there is no delegated signer, the OCSP responses) of what it issued until the last of those certificates expires.
The transcript is sealed by the token's transcript-sealing key, certified by the root at the signing ceremony: no
new sealing key is needed, so the transcript is anchored at once. **At the offline root**
(:func:`certify_rekey_ceremony`, script ``subordinate-rekey-certification``) the root certifies that CSR:
``<ca>.g<n>.crt.pem`` (kind ``subordinate-certificate``, ``"generation": n, "key": "new"``), with the subject and
validity the definition now gives the CA and the profile of every subordinate certificate (new subject key
identifier: the key's).

Why two ceremonies, not the renewal's single one: the renewal re-certifies a key whose proof of possession was
sealed at the signing ceremony; a new key must prove possession (its CSR), and it exists only on the subordinate's
token, which is not at the offline root. Both runs reuse the key ceremonies' steps (:mod:`ceremony.ceremonies.steps`):
the labels checked free before any key exists, the key generated as an object of the run (destroyed on failure),
the certificate linted with a stand-in key, signed, verified and linted again.

What the generations mean afterwards (issuance signs with the latest generation's key and records the generation
in the registry; the CRL job keeps one set of CRLs per key with unexpired certificates) is in
:mod:`ceremony.ca.generations` and docs/lifecycle.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ceremony.ca.generations import IssuerGeneration, ca_for_generation, issuer_generations, key_label_for
from ceremony.ceremonies.runner import CeremonyRun
from ceremony.ceremonies.steps import (
    DER,
    PEM,
    SPKI,
    certificate_evidence,
    der_of,
    issuer_key,
    keep_definition,
    lang_of,
    lint_sign_verify,
    login,
    offline_check_step,
    outputs_of,
    prepare_out,
    say_certificate_plan,
    say_definition,
    say_key_hash,
    say_lint,
    say_new_key,
    say_outputs,
    sealing_key,
    short_sha,
    subordinate_path_length,
    tell,
    token_step,
    when,
)
from ceremony.common.errors import HsmError, RequestError, VerificationError
from ceremony.common.fileio import sha256_file
from ceremony.common.fingerprints import announce, colon_form
from ceremony.common.terminal_text import say as words
from ceremony.definition.model import CA, LoadedDefinition
from ceremony.hsm.keys import spki_sha256
from ceremony.hsm.session import objects_with_label
from ceremony.hsm.signers import signing_key
from ceremony.transcript.recorder import Recorder, scripted_step
from ceremony.x509.certificates import subordinate_builder
from ceremony.x509.csr import build_csr, check_csr, load_csr
from ceremony.x509.files import load_issuer_certificate, read_public_key
from ceremony.x509.lint import lint_before_signing

REKEY_KEY = "subordinate-rekey"


REKEY_CERTIFY = "subordinate-rekey-certification"


@dataclass(frozen=True)
class RekeyPlan:
    """What the next re-key of a subordinate is, from its certificates in the output directory."""

    ca_name: str
    generation: int
    """The generation this re-key makes (the current one + 1)."""
    current: IssuerGeneration
    earlier: tuple[IssuerGeneration, ...]
    key_label: str
    """The new key's label on the CA's token: ``<key_label>.g<n>``."""

    def name(self, suffix: str) -> str:
        return f"{self.ca_name}.g{self.generation}.{suffix}"


def rekey_plan(defn: LoadedDefinition, ca_name: str, out_dir: Path) -> RekeyPlan:
    """The next generation of ``ca_name`` and the label of its key; refused (one message, nothing changed) for a CA
    that is not a subordinate, one without a certificate in ``out_dir``, or a label longer than a token allows."""
    ca = defn.model.ca(ca_name)
    if ca.role != "subordinate" or ca.issuer is None:
        raise VerificationError(f"cas.{ca_name} is not a subordinate CA; the root gets a new key by a rollover "
                                "(invoke ceremony.new-root)")
    gens = issuer_generations(out_dir, ca_name)
    if not gens:
        raise RequestError(f"{out_dir / f'{ca_name}.crt.pem'}: no certificate of {ca_name!r} here; a re-key follows "
                           "the subordinate signing ceremony (bring the CA's certificates of every generation into "
                           "this --out)")
    generation = gens[-1].generation + 1
    label = key_label_for(ca.hsm.key_label, generation)
    if len(label) > 32:
        raise RequestError(f"{defn.path}: cas.{ca_name}.hsm.key_label: the re-key's label {label!r} (key_label + "
                           f"'.g{generation}') is longer than 32 characters (allowed: a key_label of at most "
                           f"{32 - len(f'.g{generation}')} characters)")
    return RekeyPlan(ca_name, generation, gens[-1], tuple(gens[:-1]), label)


def refuse_existing_label(session: Any, ca_name: str, ca: CA, label: str) -> None:
    """A label that exists on the token is an error, never a reason to generate another key (DESIGN principle 3);
    checked before anything is generated."""
    found = objects_with_label(session, label)
    if found:
        raise HsmError(f"cas.{ca_name}.hsm.key_label: the re-key's label {label!r} already exists on "
                       f"{ca.hsm.token.describe()} ({len(found)} object(s)); nothing was generated. An interrupted "
                       "re-key left it (its transcript has no closing record: remove the objects under a recorded "
                       "exception) or the generation's key exists already (certify its CSR at the root); allowed: "
                       "a label no object on the token has")


@dataclass(frozen=True)
class RekeyKeyResult:
    ca_name: str
    generation: int
    key_label: str
    files: dict[str, Path]
    key_spki_sha256: str


def rekey_key_ceremony(defn: LoadedDefinition, ca_name: str, out: str | Path, recorder: Recorder, *,
                       rehearsal: bool, pin_file: str | None = None, interactive: bool = True) -> RekeyKeyResult:
    """At the subordinate's host: the key of the next generation on the CA's token, under its own label, and its
    CSR. The current key is not touched."""
    lang = lang_of(recorder)
    ca = defn.model.ca(ca_name)
    out_dir, manifest = prepare_out(out, rehearsal)
    with CeremonyRun(out_dir, manifest, recorder, REKEY_KEY) as run:
        with scripted_step(recorder, "definition-check"):
            plan = rekey_plan(defn, ca_name, out_dir)
            view = ca_for_generation(ca, plan.generation)
            n = plan.generation
            run.plan(plan.name("csr.pem"), "subordinate-csr", "pem", generation=n, key="new")
            run.plan(plan.name("csr.der"), "subordinate-csr", "der", generation=n, key="new")
            run.plan(plan.name("pub.pem"), "subordinate-public-key", "pem", generation=n, key="new")
            run.plan(plan.name("pub.der"), "subordinate-public-key", "der", generation=n, key="new")
            run.check()
            say_definition(recorder, defn, ca_name)
            tell(recorder, "k_rekey_plan", path=plan.current.path, generation=plan.current.generation,
                 generation_next=n, token=ca.hsm.token.describe(), label=repr(plan.key_label),
                 old_label=repr(key_label_for(ca.hsm.key_label, plan.current.key_generation)))
            say_certificate_plan(recorder, ca, rehearsal, subordinate_path_length(ca),
                                 issuer=words(lang, "w_issuer_later", issuer=repr(ca.issuer)))
            say_outputs(recorder, out_dir, run.planned)
            recorder.evidence("definition", {"path": str(defn.path), "sha256": defn.sha256, "ca": ca_name,
                                             "generation": n, "key_label": plan.key_label})
        with scripted_step(recorder, "token-open"):
            token_step(recorder, ca)
            session = login(recorder, run.stack, ca.hsm, pin_file, interactive)
            refuse_existing_label(session, ca_name, ca, plan.key_label)
            seal_key, seal_cert_path = sealing_key(recorder, session, ca_name, ca, out_dir)
        with scripted_step(recorder, "key-generate"):
            evidence = run.generate_key(session, view)
            recorder.evidence("key", {**evidence.as_dict(), "generation": n})
            key = signing_key(session, plan.key_label)
            public = key.public_key()
            say_new_key(recorder, evidence, public)
            digest = spki_sha256(public)
            if digest in {g.spki_sha256 for g in (*plan.earlier, plan.current)}:  # a token's generator repeating
                raise HsmError(f"the key generated under {plan.key_label!r} is the key of an earlier generation")
        with scripted_step(recorder, "csr-sign"):
            csr = build_csr(ca, key, rehearsal)
            if not csr.is_signature_valid:
                raise VerificationError("the CSR signed by the HSM does not verify")
            recorder.evidence("csr", {"subject": csr.subject.rfc4514_string(), "spki_sha256": digest,
                                      "generation": n})
            tell(recorder, "w_csr_subject", subject=csr.subject.rfc4514_string())
            tell(recorder, "w_csr_pop")
        with scripted_step(recorder, "outputs-write"):
            run.stage(plan.name("csr.pem"), csr.public_bytes(PEM))
            run.stage(plan.name("csr.der"), csr.public_bytes(DER))
            run.stage(plan.name("pub.pem"), public.public_bytes(PEM, SPKI))
            run.stage(plan.name("pub.der"), public.public_bytes(DER, SPKI))
            keep_definition(defn, run)
            run.record()
        with scripted_step(recorder, "fingerprint-read-aloud"):
            recorder.say(announce(words(lang, "k_rekey_key", ca=repr(ca_name), generation=n),
                                  public.public_bytes(DER, SPKI)))
        run.seal(seal_key, seal_cert_path, "certificate")
    return RekeyKeyResult(ca_name, n, plan.key_label, outputs_of(run), digest)


@dataclass(frozen=True)
class RekeyCertResult:
    ca_name: str
    generation: int
    files: dict[str, Path]
    fingerprint_sha256: str
    key_spki_sha256: str


def rekey_csr_inputs(defn: LoadedDefinition, ca_name: str, out_dir: Path, csr_path: str | Path | None,
                     rehearsal: bool) -> tuple[RekeyPlan, Path, x509.CertificateSigningRequest, str]:
    """Everything the certification checks without the HSM (the task runs it before the sign-in, the ceremony again):
    (the plan, the CSR's path, the CSR, its key's SPKI SHA-256).

    The CSR proves possession of a key of the definition's type, under the definition's subject; its key is none of
    the CA's earlier keys (that would be a renewal, which needs no CSR) and, when the key ceremony's
    ``<ca>.g<n>.pub.pem`` is here, that key. ``cas.<ca>.spki_sha256`` pins the first key only: it is not applied."""
    ca = defn.model.ca(ca_name)
    plan = rekey_plan(defn, ca_name, out_dir)
    path = Path(csr_path) if csr_path else out_dir / plan.name("csr.pem")
    if not path.is_file():
        raise RequestError(f"{path}: no CSR of generation {plan.generation} of {ca_name!r}; it is written by the "
                           "re-key at the subordinate's host (invoke ceremony.rekey-subordinate): bring it here, or "
                           "pass --csr FILE")
    csr = load_csr(path)
    checked = check_csr(csr, ca_name, ca.model_copy(update={"spki_sha256": None}), str(path), rehearsal)
    earlier = {g.spki_sha256: g for g in (*plan.earlier, plan.current)}
    if checked.spki_sha256 in earlier:
        same = earlier[checked.spki_sha256].path.name
        raise RequestError(f"{path}: the CSR key ({checked.spki_sha256}) is the key of {same}: a re-key certifies a "
                           "new key; the same key is renewed (invoke ceremony.renew-subordinate)")
    pub = out_dir / plan.name("pub.pem")
    if pub.is_file():
        try:
            other = spki_sha256(read_public_key(pub))
        except ValueError:
            raise RequestError(f"{pub}: not a public key") from None
        if other != checked.spki_sha256:
            raise RequestError(f"{path}: the CSR key ({checked.spki_sha256}) is not the key the re-key generated "
                               f"({pub}: {other})")
    return plan, path, csr, checked.spki_sha256


def certify_rekey_ceremony(defn: LoadedDefinition, ca_name: str, out: str | Path, recorder: Recorder, *,
                           rehearsal: bool, csr_path: str | Path | None = None,
                           issuer_cert_path: str | Path | None = None, pin_file: str | None = None,
                           interactive: bool = True) -> RekeyCertResult:
    """At the offline root: certify the CSR of a subordinate's re-key as the next generation of its certificate."""
    lang = lang_of(recorder)
    model = defn.model
    ca = model.ca(ca_name)
    if ca.role != "subordinate" or ca.issuer is None:
        raise VerificationError(f"cas.{ca_name} is not a subordinate CA; the root gets a new key by a rollover")
    issuer = model.cas[ca.issuer]
    offline_check_step(recorder, rehearsal)
    out_dir, manifest = prepare_out(out, rehearsal)
    issuer_path = Path(issuer_cert_path) if issuer_cert_path else out_dir / f"{ca.issuer}.crt.pem"
    with CeremonyRun(out_dir, manifest, recorder, REKEY_CERTIFY) as run:
        with scripted_step(recorder, "definition-check"):
            plan, path, csr, digest = rekey_csr_inputs(defn, ca_name, out_dir, csr_path, rehearsal)
            n = plan.generation
            run.plan(plan.name("crt.pem"), "subordinate-certificate", "pem", generation=n, key="new")
            run.plan(plan.name("crt.der"), "subordinate-certificate", "der", generation=n, key="new")
            run.check()
            issuer_cert = load_issuer_certificate(issuer_path, ca.issuer)
            say_definition(recorder, defn, ca_name)
            tell(recorder, "w_issuer_cert", path=issuer_path, sha=short_sha(sha256_file(issuer_path)))
            tell(recorder, "k_certify_plan", path=plan.current.path, generation=plan.current.generation,
                 generation_next=n, end=when(plan.current.cert.not_valid_after_utc))
            say_certificate_plan(recorder, ca, rehearsal, subordinate_path_length(ca),
                                 issuer=issuer_cert.subject.rfc4514_string())
            say_outputs(recorder, out_dir, run.planned)
            recorder.evidence("definition", {"path": str(defn.path), "sha256": defn.sha256, "ca": ca_name,
                                             "generation": n})
        with scripted_step(recorder, "csr-verify"):
            try:
                plan.current.cert.verify_directly_issued_by(issuer_cert)
            except (ValueError, TypeError, InvalidSignature) as exc:
                raise RequestError(f"{plan.current.path}: not issued by {issuer_path} ({exc or type(exc).__name__})"
                                   ) from None
            recorder.evidence("certificate", {**certificate_evidence(plan.current.cert), "path": plan.current.path.name,
                                              "generation": plan.current.generation, "role": "current"})
            recorder.evidence("csr", {"path": path.name, "sha256": sha256_file(path), "spki_sha256": digest,
                                      "generation": n, "signature": "valid (proof of possession)",
                                      "earlier_keys": sorted({g.spki_sha256 for g in (*plan.earlier, plan.current)})})
            tell(recorder, "w_csr", path=path)
            tell(recorder, "w_csr_sig")
            say_key_hash(recorder, words(lang, "w_csr_key", ca=repr(ca_name)), csr.public_key())
            tell(recorder, "k_new_key", fingerprint=colon_form(digest),
                 generations=", ".join(g.path.name for g in (*plan.earlier, plan.current)))

            def builder_for(serial: int) -> x509.CertificateBuilder:
                return subordinate_builder(ca, issuer, issuer_cert, csr.public_key(), serial, rehearsal)

            with recorder.busy(words(lang, "w_lint_busy")):
                profile_lint = lint_before_signing(builder_for(1), issuer_cert.public_key(), ca.lint,
                                                   f"the certificate profile of {ca_name!r}")
            say_lint(recorder, profile_lint.findings, ca.lint, words(lang, "w_stage_profile"))
        with scripted_step(recorder, "token-open"):
            session, key = issuer_key(recorder, run, issuer, issuer_cert, issuer_path, pin_file, interactive)
            seal_key, seal_cert_path = sealing_key(recorder, session, ca.issuer, issuer, out_dir, issuer_path.parent)
        cert = lint_sign_verify(recorder, session, builder_for, key, issuer.hsm.key_label, ca.lint,
                                f"generation {n} of the certificate of {ca_name!r}", {"generation": n, "key": "new"})
        with scripted_step(recorder, "outputs-write"):
            run.stage(plan.name("crt.pem"), cert.public_bytes(PEM))
            run.stage(plan.name("crt.der"), der_of(cert))
            keep_definition(defn, run)
            run.record()
        with scripted_step(recorder, "fingerprint-read-aloud"):
            recorder.say(announce(words(lang, "k_rekey_cert", ca=repr(ca_name), generation=n,
                                        subject=cert.subject.rfc4514_string()), der_of(cert)))
        run.seal(seal_key, seal_cert_path, "certificate")
    return RekeyCertResult(ca_name, n, outputs_of(run), sha256_file(out_dir / plan.name("crt.der")), digest)
