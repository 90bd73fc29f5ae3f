"""The three CA ceremonies: root key and certificate, subordinate key and CSR, subordinate signing.

Each ceremony follows the same order, which is what makes failures harmless:

1. everything that can be checked without the HSM is checked first (definition, offline state,
   absent outputs, the profile linted with a stand-in key), so bad input changes nothing;
2. the HSM work happens in one session; if a step fails after a key was generated, the new key
   objects are destroyed before the error is reported;
3. outputs are written last, each exclusively and atomically; if one fails, the files written by
   this run are removed again.

The ceremonies report to a :class:`~ceremony.recorder.Recorder` with the step ids of the ceremony
scripts (``ceremony/scripts/*.yml``), and seal the record with the CA key before the session ends.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .certificates import root_builder, serial_from_random, subordinate_builder
from .csr import build_csr, check_csr, load_csr
from .definition import CA, EcKey, LoadedDefinition
from .errors import HsmError, OutputError, RequestError, VerificationError
from .fileio import sha256_file
from .fingerprints import announce, colon_form, sha256_hex
from .hsm import (
    find_token,
    load_module,
    mechanisms,
    open_session,
    pin_source_for,
    random_bytes,
    token_evidence,
)
from .hsm_keys import hash_for, signing_key
from .keys import key_evidence, spki_sha256
from .lint import Finding, lint_before_signing, verify_after_signing
from .manifest import Manifest
from .offline import check_offline
from .pins import origin_text, pin_origin
from .profiles import subject_name
from .recorder import Recorder, scripted_step
from .runner import CeremonyRun
from .terminal_text import say as words
from .x509_files import load_issuer_certificate

PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


def definition_copy_name(sha256: str) -> str:
    """Where a later version of the definition is kept next to the outputs: ``pki.<first 16 hex>.yml``."""
    return f"pki.{sha256[:16]}.yml"


def open_token_and_generate_key(recorder: Recorder, run: CeremonyRun, ca: CA, pin_file: str | None,
                                interactive: bool) -> tuple[Any, Any, Any]:
    """The key ceremonies' steps token-open and key-generate: the CA's token opened for the run, its key
    pair generated as the run's object and shown to the room; (session, signing key, public key)."""
    with scripted_step(recorder, "token-open"):
        token_step(recorder, ca)
        session = login(recorder, run.stack, ca.hsm, pin_file, interactive)
    with scripted_step(recorder, "key-generate"):
        evidence = run.generate_key(session, ca)
        recorder.evidence("key", evidence.as_dict())
        key = signing_key(session, ca.hsm.key_label)
        public = key.public_key()
        say_new_key(recorder, evidence, public)
    return session, key, public


def keep_definition(defn: LoadedDefinition, run: CeremonyRun) -> None:
    """Publish, with the run's outputs, a copy of the definition it used (kind ``pki-definition``).

    The first definition used in a directory is ``pki.yml``. A definition changed between ceremonies (an
    ``spki_sha256`` pin filled in after the subordinate key ceremony, say) is kept beside it as
    ``pki.<hash>.yml``: every version stays in the one directory the auditor is given, each transcript
    names the hash of its own, and nothing is overwritten. The pre-flight shows the witness what changed.
    """
    target = run.out / "pki.yml"
    name = "pki.yml"
    if target.exists() and target.resolve() != defn.path.resolve() and sha256_file(target) != defn.sha256:
        name = definition_copy_name(defn.sha256)
    run.keep_definition(defn.path, defn.sha256, name)


def outputs_of(run: CeremonyRun) -> dict[str, Path]:
    """The files a completed run published, by name (the definition's copy aside)."""
    return {p.filename: run.out / p.filename for p in run.planned.values() if p.kind != "pki-definition"}


@dataclass(frozen=True)
class CeremonyResult:
    ca_name: str
    files: dict[str, Path]
    fingerprint_sha256: str
    key_spki_sha256: str


def prepare_out(out: str | Path, rehearsal: bool) -> tuple[Path, Manifest]:
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: the output directory is a file")
    return path, Manifest(path, rehearsal)


def token_step(recorder: Recorder, ca: CA) -> None:
    lib = load_module(ca.hsm.module)
    token = find_token(lib, ca.hsm.token)
    evidence: dict[str, Any] = token_evidence(ca.hsm.module, lib, token).as_dict()
    evidence["mechanisms"] = mechanisms(token)
    recorder.evidence("token", evidence)
    tell(recorder, "w_token", label=repr(evidence["label"]), serial=evidence["serial"],
         manufacturer=evidence["manufacturer"], model=evidence["model"], firmware=evidence["firmware_version"])


def login(recorder: Recorder, stack: contextlib.ExitStack, hsm: Any, pin_file: str | None,
          interactive: bool) -> Any:
    """Log in for the ceremony, saying to the room where the PIN comes from (never the PIN): a variable, a
    file, or typed at the prompt by a Crypto Officer; a mistyped PIN is asked again with the token's
    remaining-attempts warnings."""
    source = pin_source_for(hsm, pin_file, interactive)
    where = origin_text(source, pin_origin(source))
    if where == "the prompt":
        tell(recorder, "w_pin_prompt")
    else:
        tell(recorder, "w_pin_from", where=where)
    recorder.evidence("pin-source", {"origin": pin_origin(source), "described": where})
    return stack.enter_context(open_session(hsm, source, notice=recorder.say))


def _der(obj: Any) -> bytes:
    return obj.public_bytes(DER)


# --- what the witness sees ----------------------------------------------------------------------------
# At each witnessed step the Internal Witness is asked "did you witness step X?": the step first shows,
# through ``recorder.say`` (so the transcript records exactly what was shown), the facts to check. Every
# value is data: these are plain strings, never Rich markup (the consoles print them literally).

LINT_BUSY = "pkilint: checking the to-be-signed certificate"
LINT_AFTER_BUSY = "pkilint: checking the signed certificate"


def lang_of(recorder: Recorder) -> str:
    """The language of the room the recorder shows things to (English for a recorder that has none)."""
    return getattr(recorder, "lang", "en")


def tell(recorder: Recorder, key: str, **values: Any) -> None:
    """Show the catalogue's text ``key`` (:mod:`ceremony.terminal_text`) in the room's language."""
    recorder.say(words(lang_of(recorder), key, **values))


def when(moment: Any) -> str:
    """A time as the witness reads it: ``2026-01-01 00:00:00 UTC``."""
    import datetime as dt

    return f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC"


def short_sha(digest: str) -> str:
    return digest[:16] + "…"


def say_definition(recorder: Recorder, defn: LoadedDefinition, ca_name: str) -> None:
    tell(recorder, "w_definition", path=defn.path, sha=short_sha(defn.sha256), ca=repr(ca_name))


def say_outputs(recorder: Recorder, out_dir: Path, files: Any) -> None:
    tell(recorder, "w_out_dir", path=out_dir)
    tell(recorder, "w_files", files=", ".join(str(f) for f in files))


def path_length_text(value: int | None, lang: str = "en") -> str:
    return words(lang, "w_no_limit") if value is None else str(value)


def say_certificate_plan(recorder: Recorder, ca: CA, rehearsal: bool, path_length: int | None,
                         issuer: str | None = None) -> None:
    """The CA certificate as it will be: subject, issuer, validity, key type, path length."""
    tell(recorder, "w_plan_subject", subject=subject_name(ca.subject, rehearsal).rfc4514_string())
    if issuer is not None:
        tell(recorder, "w_issuer", issuer=issuer)
    tell(recorder, "w_validity", start=when(ca.validity.not_before), end=when(ca.validity.not_after))
    tell(recorder, "w_key_type", kind=ca.key.describe())
    tell(recorder, "w_path_length", value=path_length_text(path_length, lang_of(recorder)))


def subordinate_path_length(ca: CA) -> int:
    """The pathLenConstraint :func:`~ceremony.profiles.subordinate_extensions` gives a subordinate CA."""
    return 0 if ca.path_length is None else ca.path_length


def lint_lines(findings: list[Finding], allowances: Any, stage: str = "", lang: str = "en") -> list[str]:
    """The lint result as the witness reads it: no blocking finding, or each allowed one with its reason."""
    reasons = {a.validation: a.reason for a in allowances}
    blocking = [f for f in findings if f.blocking]
    where = f" ({stage})" if stage else ""
    if not blocking:
        lines = [words(lang, "w_lint_none", where=where)]
    else:
        lines = [words(lang, "w_lint_some", n=len(blocking), where=where)]
        lines += [words(lang, "w_lint_allowed", finding=f,
                        reason=reasons.get(f.validation, words(lang, "w_no_reason"))) for f in blocking]
    lower = len(findings) - len(blocking)
    if lower:
        lines.append(words(lang, "w_lint_lower", n=lower))
    return lines


def say_lint(recorder: Recorder, findings: list[Finding], allowances: Any, stage: str = "") -> None:
    """``stage`` is shown as it is: callers give it in the room's language."""
    for line in lint_lines(findings, allowances, stage, lang_of(recorder)):
        recorder.say(line)


def say_key_hash(recorder: Recorder, title: str, public: Any) -> None:
    """A public key's SPKI SHA-256, read aloud line by line, and its OpenSSL form."""
    recorder.say(announce(title, public.public_bytes(DER, SPKI)))


def yes_no(flag: bool, lang: str = "en") -> str:
    return words(lang, "yes" if flag else "NO")


def key_flag_lines(evidence: Any, lang: str = "en") -> list[str]:
    """CKA_LOCAL, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE as the token reports them, in words."""
    def yes(flag: bool) -> str:
        return yes_no(flag, lang)

    lines = [words(lang, "w_flag_local", v=yes(evidence.local)),
             words(lang, "w_flag_sensitive", v=yes(evidence.always_sensitive)),
             words(lang, "w_flag_never", v=yes(evidence.never_extractable))]
    if evidence.extractable:
        lines.append(words(lang, "w_flag_wrap", v=yes(evidence.wrap_with_trusted)))
    return lines


def say_new_key(recorder: Recorder, evidence: Any, public: Any) -> None:
    lang = lang_of(recorder)
    tell(recorder, "w_key_type", kind=evidence.algorithm)
    tell(recorder, "w_label", label=repr(evidence.label), id=evidence.id_hex or words(lang, "none"))
    say_key_hash(recorder, words(lang, "w_new_key"), public)
    for line in key_flag_lines(evidence, lang):
        recorder.say(line)


def say_signed(recorder: Recorder, cert: x509.Certificate, label: str, signer: Any) -> None:
    """The HSM signature just made: by which key, over which certificate."""
    oid = cert.signature_algorithm_oid
    algorithm = getattr(oid, "_name", oid.dotted_string)  # e.g. ecdsa-with-SHA384
    tell(recorder, "w_signed", label=repr(label), sha=short_sha(spki_sha256(signer)), algorithm=algorithm,
         size=len(cert.signature))
    tell(recorder, "w_cert_serial", serial=format(cert.serial_number, "x"))


def say_certificate(recorder: Recorder, cert: x509.Certificate) -> None:
    """What a signed certificate holds: the witness compares it with what definition-check showed."""
    lang = lang_of(recorder)
    tell(recorder, "w_subject", subject=cert.subject.rfc4514_string())
    tell(recorder, "w_issuer", issuer=cert.issuer.rfc4514_string())
    tell(recorder, "w_serial", serial=format(cert.serial_number, "x"))
    tell(recorder, "w_not_before", when=when(cert.not_valid_before_utc))
    tell(recorder, "w_not_after", when=when(cert.not_valid_after_utc))
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        tell(recorder, "w_ca_flag", ca=yes_no(constraints.ca, lang),
             length=path_length_text(constraints.path_length, lang))
    except x509.ExtensionNotFound:
        tell(recorder, "w_bc_absent")


def say_verified(recorder: Recorder, findings: list[Finding], allowances: Any) -> None:
    tell(recorder, "w_sig_verified")
    tell(recorder, "w_tbs_same")
    say_lint(recorder, findings, allowances, words(lang_of(recorder), "w_stage_after"))


def csr_key_match(ca_name: str, ca: CA, digest: str, out_dir: Path, lang: str = "en") -> str:
    """Where the CSR key hash is checked against: the pin, the key ceremony's public key, or the witness
    (in ``lang``; the evidence records the English text).

    A ``<ca>.pub.pem`` in the output directory that holds another key is refused: it was written at the
    subordinate key ceremony, so this CSR is not that ceremony's.
    """
    from cryptography.hazmat.primitives.serialization import load_pem_public_key


    if ca.spki_sha256 is not None:  # check_csr refused any other key already
        return words(lang, "w_csr_pinned", ca=ca_name)
    pub = out_dir / f"{ca_name}.pub.pem"
    if pub.is_file():
        try:
            recorded = spki_sha256(load_pem_public_key(pub.read_bytes()))
        except ValueError:
            raise RequestError(f"{pub}: not a public key; the CSR key cannot be compared with the key written at "
                               "the subordinate key ceremony") from None
        if recorded != digest:
            raise RequestError(f"the CSR key ({digest}) is not the key of {pub} ({recorded}), written at the "
                               "subordinate key ceremony: this CSR is not the one that ceremony wrote")
        return words(lang, "w_csr_pub", path=pub, fingerprint=colon_form(recorded))
    return words(lang, "w_csr_unchecked", ca=ca_name, path=pub)


def root_ceremony(defn: LoadedDefinition, out: str | Path, recorder: Recorder, *, rehearsal: bool,
                  pin_file: str | None = None, interactive: bool = True) -> CeremonyResult:
    """Generate the root key on its token and issue the self-signed root certificate."""
    lang = lang_of(recorder)
    model = defn.model
    name = model.root_name
    ca = model.cas[name]
    with scripted_step(recorder, "offline-check"):
        result = check_offline(enforce=not rehearsal)
        recorder.evidence("offline-check", result.as_dict())
        recorder.say(result.summary(lang) + ("" if result.offline or not rehearsal else words(lang, "not_enforced")))
    out_dir, manifest = prepare_out(out, rehearsal)
    with CeremonyRun(out_dir, manifest, recorder, "root-key-generation") as run:
        with scripted_step(recorder, "definition-check"):
            for suffix, kind in ((".crt", "root-certificate"), (".pub", "root-public-key")):
                run.plan(f"{name}{suffix}.pem", kind, "pem")
                run.plan(f"{name}{suffix}.der", kind, "der")
            run.check()
            say_definition(recorder, defn, name)
            # The profile linted with a stand-in key: a lint finding stops us before any key exists.
            stand_in = _public_key_for_spec(ca)
            profile = root_builder(ca, stand_in, 1, rehearsal)
            say_certificate_plan(recorder, ca, rehearsal, ca.path_length, issuer=words(lang, "w_self_signed"))
            say_outputs(recorder, out_dir, run.planned)
            with recorder.busy(words(lang, "w_lint_busy")):
                profile_lint = lint_before_signing(profile, stand_in, ca.lint,
                                                   f"the root certificate profile of {name!r}")
            say_lint(recorder, profile_lint.findings, ca.lint, words(lang, "w_stage_stand_in"))
            recorder.evidence("definition", {"path": str(defn.path), "sha256": defn.sha256, "ca": name})
        session, key, public = open_token_and_generate_key(recorder, run, ca, pin_file, interactive)
        with scripted_step(recorder, "certificate-lint"):
            serial = serial_from_random(random_bytes(session, 20))
            builder = root_builder(ca, public, serial, rehearsal)
            with recorder.busy(words(lang, "w_lint_busy")):
                before = lint_before_signing(builder, public, ca.lint, f"the root certificate of {name!r}")
            recorder.evidence("lint", before.evidence())
            say_lint(recorder, before.findings, ca.lint)
        with scripted_step(recorder, "certificate-sign"):
            cert = builder.sign(key, hash_for(key))
            say_signed(recorder, cert, ca.hsm.key_label, public)
        with scripted_step(recorder, "certificate-verify"):
            with recorder.busy(words(lang, "w_lint_after_busy")):
                after = verify_after_signing(cert, public, before, ca.lint, f"the root certificate of {name!r}")
            recorder.evidence("lint", {"stage": "after-signing", "findings": [f.as_dict() for f in after]})
            recorder.evidence("certificate", _cert_evidence(cert))
            say_verified(recorder, after, ca.lint)
            say_certificate(recorder, cert)
        with scripted_step(recorder, "outputs-write"):
            run.stage(f"{name}.crt.pem", cert.public_bytes(PEM))
            run.stage(f"{name}.crt.der", _der(cert))
            run.stage(f"{name}.pub.pem", public.public_bytes(PEM, SPKI))
            run.stage(f"{name}.pub.der", public.public_bytes(DER, SPKI))
            keep_definition(defn, run)
            run.record()
        with scripted_step(recorder, "fingerprint-read-aloud"):
            recorder.say(announce(words(lang, "w_root_cert", subject=cert.subject.rfc4514_string()), _der(cert)))
            tell(recorder, "w_key_spki", sha=spki_sha256(public))
        run.seal(key, f"{name}.crt.pem", "certificate")
    return CeremonyResult(name, outputs_of(run), sha256_file(out_dir / f"{name}.crt.der"), spki_sha256(public))


def _public_key_for_spec(ca: CA) -> Any:
    """A public key of the definition's algorithm and size, to lint a profile before any real key exists."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa


    if isinstance(ca.key, EcKey):
        curve = ec.SECP384R1() if ca.key.curve == "P-384" else ec.SECP256R1()
        return ec.generate_private_key(curve).public_key()
    return rsa.generate_private_key(65537, ca.key.bits).public_key()


def _cert_evidence(cert: x509.Certificate) -> dict[str, Any]:

    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
            "serial": format(cert.serial_number, "x"), "not_before": cert.not_valid_before_utc.isoformat(),
            "not_after": cert.not_valid_after_utc.isoformat(), "sha256": sha256_hex(_der(cert)),
            "spki_sha256": spki_sha256(cert.public_key())}


def subordinate_key_ceremony(defn: LoadedDefinition, ca_name: str, out: str | Path, recorder: Recorder, *,
                             rehearsal: bool, pin_file: str | None = None,
                             interactive: bool = True) -> CeremonyResult:
    """Generate a subordinate CA key on its own token and write the CSR it signs."""
    lang = lang_of(recorder)
    ca = defn.model.ca(ca_name)
    if ca.role != "subordinate":
        raise VerificationError(f"cas.{ca_name} is the root; use the root ceremony")
    out_dir, manifest = prepare_out(out, rehearsal)
    with CeremonyRun(out_dir, manifest, recorder, "subordinate-key-generation") as run:
        with scripted_step(recorder, "definition-check"):
            run.plan(f"{ca_name}.csr.pem", "subordinate-csr", "pem")
            run.plan(f"{ca_name}.csr.der", "subordinate-csr", "der")
            run.plan(f"{ca_name}.pub.pem", "subordinate-public-key", "pem")
            run.plan(f"{ca_name}.pub.der", "subordinate-public-key", "der")
            run.check()
            say_definition(recorder, defn, ca_name)
            # The certificate is made at the signing ceremony, from this definition: its subject is the CSR's.
            say_certificate_plan(recorder, ca, rehearsal, subordinate_path_length(ca),
                                 issuer=words(lang, "w_issuer_later", issuer=repr(ca.issuer)))
            say_outputs(recorder, out_dir, run.planned)
            recorder.evidence("definition", {"path": str(defn.path), "sha256": defn.sha256, "ca": ca_name})
        _session, key, public = open_token_and_generate_key(recorder, run, ca, pin_file, interactive)
        with scripted_step(recorder, "csr-sign"):
            csr = build_csr(ca, key, rehearsal)
            if not csr.is_signature_valid:
                raise VerificationError("the CSR signed by the HSM does not verify")
            recorder.evidence("csr", {"subject": csr.subject.rfc4514_string(),
                                      "spki_sha256": spki_sha256(public)})
            tell(recorder, "w_csr_subject", subject=csr.subject.rfc4514_string())
            tell(recorder, "w_csr_pop")
        with scripted_step(recorder, "outputs-write"):
            run.stage(f"{ca_name}.csr.pem", csr.public_bytes(PEM))
            run.stage(f"{ca_name}.csr.der", csr.public_bytes(DER))
            run.stage(f"{ca_name}.pub.pem", public.public_bytes(PEM, SPKI))
            run.stage(f"{ca_name}.pub.der", public.public_bytes(DER, SPKI))
            keep_definition(defn, run)
            run.record()
        with scripted_step(recorder, "fingerprint-read-aloud"):
            recorder.say(announce(words(lang, "w_public_key", ca=repr(ca_name)), public.public_bytes(DER, SPKI)))
        run.seal(key, f"{ca_name}.pub.pem", "public-key")
    return CeremonyResult(ca_name, outputs_of(run), "", spki_sha256(public))


def sign_subordinate_ceremony(defn: LoadedDefinition, ca_name: str, csr_path: str | Path, out: str | Path,
                              recorder: Recorder, *, rehearsal: bool, issuer_cert_path: str | Path | None = None,
                              pin_file: str | None = None, interactive: bool = True) -> CeremonyResult:
    """At the offline root: check the subordinate's CSR and issue its CA certificate."""
    lang = lang_of(recorder)
    model = defn.model
    ca = model.ca(ca_name)
    if ca.role != "subordinate" or ca.issuer is None:
        raise VerificationError(f"cas.{ca_name} is not a subordinate CA")
    issuer = model.cas[ca.issuer]
    with scripted_step(recorder, "offline-check"):
        result = check_offline(enforce=not rehearsal)
        recorder.evidence("offline-check", result.as_dict())
        recorder.say(result.summary(lang))
    out_dir, manifest = prepare_out(out, rehearsal)
    issuer_path = Path(issuer_cert_path) if issuer_cert_path else out_dir / f"{ca.issuer}.crt.pem"
    with CeremonyRun(out_dir, manifest, recorder, "subordinate-signing") as run:
        with scripted_step(recorder, "definition-check"):
            run.plan(f"{ca_name}.crt.pem", "subordinate-certificate", "pem")
            run.plan(f"{ca_name}.crt.der", "subordinate-certificate", "der")
            run.check()
            issuer_cert = load_issuer_certificate(issuer_path, ca.issuer)
            say_definition(recorder, defn, ca_name)
            tell(recorder, "w_issuer_cert", path=issuer_path, sha=short_sha(sha256_file(issuer_path)))
            say_certificate_plan(recorder, ca, rehearsal, subordinate_path_length(ca),
                                 issuer=issuer_cert.subject.rfc4514_string())
            say_outputs(recorder, out_dir, run.planned)
            recorder.evidence("definition", {"path": str(defn.path), "sha256": defn.sha256, "ca": ca_name})
        with scripted_step(recorder, "csr-verify"):
            csr = load_csr(csr_path)
            checked = check_csr(csr, ca_name, ca, str(csr_path), rehearsal)
            tell(recorder, "w_csr", path=csr_path)
            tell(recorder, "w_csr_sig")
            tell(recorder, "w_csr_subject_def", subject=checked.subject)
            tell(recorder, "w_key_type", kind=checked.key)
            say_key_hash(recorder, words(lang, "w_csr_key", ca=repr(ca_name)), csr.public_key())
            match = csr_key_match(ca_name, ca, checked.spki_sha256, out_dir)  # the record's words: English
            recorder.say(match if lang == "en" else csr_key_match(ca_name, ca, checked.spki_sha256, out_dir, lang))
            recorder.evidence("csr", {**checked.as_dict(), "key_checked_against": match.strip()})
            builder_for = lambda serial: subordinate_builder(  # noqa: E731 - small local factory
                ca, issuer, issuer_cert, csr.public_key(), serial, rehearsal)
            with recorder.busy(words(lang, "w_lint_busy")):
                profile_lint = lint_before_signing(builder_for(1), issuer_cert.public_key(), ca.lint,
                                                   f"the certificate profile of {ca_name!r}")
            say_lint(recorder, profile_lint.findings, ca.lint, words(lang, "w_stage_profile"))
        with scripted_step(recorder, "token-open"):
            token_step(recorder, issuer)
            session = login(recorder, run.stack, issuer.hsm, pin_file, interactive)
        key = signing_key(session, issuer.hsm.key_label)
        if spki_sha256(key.public_key()) != spki_sha256(issuer_cert.public_key()):
            raise HsmError(f"the key {issuer.hsm.key_label!r} on the token is not the key of {issuer_path}")
        recorder.evidence("key", key_evidence(key.p11_object, key.public_key(), issuer.key.describe()).as_dict())
        with scripted_step(recorder, "certificate-lint"):
            builder = builder_for(serial_from_random(random_bytes(session, 20)))
            what = f"the certificate of {ca_name!r}"
            with recorder.busy(words(lang, "w_lint_busy")):
                before = lint_before_signing(builder, key.public_key(), ca.lint, what)
            recorder.evidence("lint", before.evidence())
            say_lint(recorder, before.findings, ca.lint)
        with scripted_step(recorder, "certificate-sign"):
            cert = builder.sign(key, hash_for(key))
            say_signed(recorder, cert, issuer.hsm.key_label, key.public_key())
        with scripted_step(recorder, "certificate-verify"):
            with recorder.busy(words(lang, "w_lint_after_busy")):
                after = verify_after_signing(cert, key.public_key(), before, ca.lint, what)
            recorder.evidence("lint", {"stage": "after-signing", "findings": [f.as_dict() for f in after]})
            recorder.evidence("certificate", _cert_evidence(cert))
            say_verified(recorder, after, ca.lint)
            say_certificate(recorder, cert)
        with scripted_step(recorder, "outputs-write"):
            run.stage(f"{ca_name}.crt.pem", cert.public_bytes(PEM))
            run.stage(f"{ca_name}.crt.der", _der(cert))
            keep_definition(defn, run)
            run.record()
        with scripted_step(recorder, "fingerprint-read-aloud"):
            recorder.say(announce(words(lang, "w_sub_cert", ca=repr(ca_name), subject=cert.subject.rfc4514_string()),
                                  _der(cert)))
        run.seal(key, issuer_path, "certificate")
    return CeremonyResult(ca_name, outputs_of(run), sha256_file(out_dir / f"{ca_name}.crt.der"),
                          checked.spki_sha256)
