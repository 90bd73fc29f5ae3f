"""The three CA ceremonies: root key and certificate, subordinate key and CSR, subordinate signing.

Each ceremony follows the same order, which is what makes failures harmless:

1. everything that can be checked without the HSM is checked first (definition, offline state,
   absent outputs, the profile linted with a stand-in key), so bad input changes nothing;
2. the HSM work happens in one session; if a step fails after a key was generated, the new key
   objects are destroyed before the error is reported;
3. outputs are written last, each exclusively and atomically; if one fails, the files written by
   this run are removed again.

The ceremonies report to a :class:`~ceremony.transcript.recorder.Recorder` with the step ids of the ceremony
scripts (``ceremony/scripts/*.yml``), and seal the record before the session ends with the transcript-sealing
key of the HSM they use, never with a CA key (CA keys sign certificates and CRLs only: EN 319 411-1
GEN-6.5.3-03, CPS 6.1.7). Each CA token holds its sealing key from its key ceremony on; the root certifies
each one (:func:`issue_sealing_certificate`), and an auditor anchors a seal by that certificate alone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ceremony.ceremonies.offline import check_offline
from ceremony.ceremonies.runner import CeremonyRun
from ceremony.common.errors import HsmError, OutputError
from ceremony.common.fileio import sha256_file
from ceremony.common.fingerprints import announce, sha256_hex
from ceremony.common.manifest import Manifest
from ceremony.common.terminal_text import say as words
from ceremony.definition.model import CA, LoadedDefinition
from ceremony.hsm.keys import SEALING_KEY, KeyEvidence, key_evidence, spki_sha256
from ceremony.hsm.pins import PART_DERIVATION, origin_text, parts_origin, pin_origin
from ceremony.hsm.session import (
    find_private_key,
    find_token,
    load_module,
    mechanisms,
    objects_with_label,
    open_session,
    pin_source_for,
    pin_split,
    random_bytes,
    read_token_record,
    refuse_rehearsal_objects,
    token_evidence,
)
from ceremony.hsm.signers import hash_for, signing_key
from ceremony.transcript.recorder import Recorder, scripted_step
from ceremony.x509.certificates import sealing_builder, serial_from_random
from ceremony.x509.files import sealing_certificates
from ceremony.x509.lint import Finding, lint_before_signing, verify_after_signing
from ceremony.x509.profiles import sealing_subject, subject_name

PEM = serialization.Encoding.PEM


DER = serialization.Encoding.DER


SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


def definition_copy_name(sha256: str) -> str:
    """Where a later version of the definition is kept next to the outputs: ``pki.<first 16 hex>.yml``."""
    return f"pki.{sha256[:16]}.yml"


@dataclass(frozen=True)
class NewKeys:
    """What a key ceremony's key-generate step made on the CA's token: the CA key and the sealing key."""

    session: Any
    key: Any
    public: Any
    sealing_key: Any


def open_token_and_generate_key(recorder: Recorder, run: CeremonyRun, ca: CA, pin_file: str | None,
                                interactive: bool, where: str = "") -> NewKeys:
    """The key ceremonies' steps token-open and key-generate: the CA's token opened for the run, its key
    pair and its transcript-sealing key pair generated as the run's objects and shown to the room.

    Both labels are checked free before either key exists (``where``: the definition's path to the CA's ``hsm``
    section, named in the refusal), so that a taken sealing label never costs a CA key generated and destroyed."""
    with scripted_step(recorder, "token-open"):
        token_step(recorder, ca)
        session = login(recorder, run.stack, ca.hsm, pin_file, interactive)
        refuse_taken_labels(session, ca, where)
    with scripted_step(recorder, "key-generate"):
        evidence = run.generate_key(session, ca)
        recorder.evidence("key", evidence.as_dict())
        key = signing_key(session, ca.hsm.key_label)
        public = key.public_key()
        say_new_key(recorder, evidence, public)
        sealing = generate_sealing_key(recorder, run, session, ca)
    return NewKeys(session, key, public, sealing)


def refuse_taken_labels(session: Any, ca: CA, where: str = "") -> None:
    """A key label that exists is an error, never a reason to generate another key (DESIGN principle 3): refused
    for the CA key's label and the sealing key's, with the definition's field to change."""
    base = where or "the CA's hsm section"
    labels = [(ca.hsm.key_label, "key_label")]
    # The sealing key the token was born with (its initialisation ceremony's, named by the token's record, generated
    # on the token) is the one this ceremony takes (generate_sealing_key): its label is not "taken".
    if sealing_key_born_with_token(session, ca) is None:
        labels.append((ca.hsm.sealing_label, "seal_label"))
    for label, field in labels:
        found = objects_with_label(session, label)
        if found:
            raise HsmError(f"{base}.{field}: an object labelled {label!r} already exists on "
                           f"{ca.hsm.token.describe()} ({len(found)} found); an existing label is never a reason to "
                           "generate another key (allowed: a label no object on the token has, or another token)")


def generate_sealing_key(recorder: Recorder, run: CeremonyRun, session: Any, ca: CA) -> Any:
    """The CA token's transcript-sealing key pair, generated as the run's object and shown to the room.

    A token initialised by the token initialisation ceremony was born with its sealing key (it sealed that
    ceremony's transcript, which the key's certificate then anchors): that key is the one, taken as it is when the
    token's record names it (label and SPKI SHA-256) and the token says it generated it and never let it out.
    """
    born = sealing_key_born_with_token(session, ca)
    if born is not None:
        recorder.evidence("key", {**born.as_dict(), "purpose": "transcript-sealing",
                                  "generated_at": "token-initialisation"})
        tell(recorder, "t_sealing_reused", label=repr(ca.hsm.sealing_label))
        sealing = signing_key(session, ca.hsm.sealing_label)
        say_new_key(recorder, born, sealing.public_key())
        return sealing
    evidence = run.generate_sealing_key(session, ca)
    recorder.evidence("key", {**evidence.as_dict(), "purpose": "transcript-sealing"})
    sealing = signing_key(session, ca.hsm.sealing_label)
    tell(recorder, "w_sealing_key", label=repr(ca.hsm.sealing_label))
    say_new_key(recorder, evidence, sealing.public_key())
    return sealing


def sealing_key_born_with_token(session: Any, ca: CA) -> KeyEvidence | None:
    """The sealing key the token initialisation ceremony generated for ``ca`` on this token, or None.

    Only the key the token's record names (label and SPKI SHA-256), generated on the token (CKA_LOCAL) and never
    extractable: anything else under the sealing label is left to key generation, which refuses a label that exists.
    """
    record = read_token_record(session.token)
    named = (record or {}).get("sealing_key") or {}
    if named.get("label") != ca.hsm.sealing_label:
        return None
    try:
        private = find_private_key(session, ca.hsm.sealing_label)
        public = signing_key(session, ca.hsm.sealing_label).public_key()
    except HsmError:
        return None
    evidence = key_evidence(private, public, SEALING_KEY.describe())
    if evidence.spki_sha256 != named.get("spki_sha256") or not (evidence.local and evidence.never_extractable):
        return None
    return evidence


def sealing_key(recorder: Recorder, session: Any, ca_name: str, ca: CA, *dirs: Path) -> tuple[Any, Path]:
    """The sealing key on the CA's open token and the certificate the root gave it (in one of ``dirs``).

    A ceremony that signs with an existing CA key seals with this key; both are looked up before anything is
    signed, so a token without its sealing key, or a key the root never certified, stops the ceremony early.
    """
    label = ca.hsm.sealing_label
    try:
        key = signing_key(session, label)
    except HsmError:
        raise HsmError(f"the token of {ca_name!r} holds no transcript-sealing key {label!r}; it is generated at "
                       "the CA's key ceremony (or its key restore) and certified by the root") from None
    digest = spki_sha256(key.public_key())
    for path, cert in [found for d in dict.fromkeys(dirs) for found in sealing_certificates(d, ca_name)]:
        if spki_sha256(cert.public_key()) == digest:
            recorder.evidence("key", {**key_evidence(key.p11_object, key.public_key(), SEALING_KEY.describe())
                                      .as_dict(), "purpose": "transcript-sealing", "certificate": path.name})
            return key, path
    raise HsmError(f"no certificate of the transcript-sealing key {label!r} of {ca_name!r} (SPKI SHA-256 {digest}) "
                   f"in {', '.join(map(str, dict.fromkeys(dirs)))} ({ca_name}.seal*.crt.pem): the root issues it at "
                   "the CA's key or signing ceremony")


def issue_sealing_certificate(recorder: Recorder, session: Any, holder_name: str, holder: CA, public: Any,
                              root: CA, root_key: Any, root_cert: x509.Certificate, eku: str,
                              rehearsal: bool) -> x509.Certificate:
    """The root certifies a transcript-sealing key (its own or a subordinate's): linted with a stand-in key,
    signed in the HSM, verified and linted again, like every certificate of the suite."""
    lang = lang_of(recorder)
    what = f"the transcript-sealing certificate of {holder_name!r}"
    builder = sealing_builder(holder, root, root_cert, public, serial_from_random(random_bytes(session, 20)), eku,
                              rehearsal)
    with recorder.busy(words(lang, "w_lint_busy")):
        before = lint_before_signing(builder, root_key.public_key(), root.lint, what)
    recorder.evidence("lint", {**before.evidence(), "certificate": "transcript-sealing"})
    cert = builder.sign(root_key, hash_for(root_key))
    with recorder.busy(words(lang, "w_lint_after_busy")):
        after = verify_after_signing(cert, root_key.public_key(), before, root.lint, what)
    recorder.evidence("lint", {"stage": "after-signing", "certificate": "transcript-sealing",
                               "findings": [f.as_dict() for f in after]})
    recorder.evidence("certificate", {**certificate_evidence(cert), "purpose": "transcript-sealing", "eku": eku})
    tell(recorder, "w_sealing_cert", ca=repr(holder_name), eku=eku)
    say_certificate(recorder, cert)
    say_lint(recorder, after, root.lint, words(lang, "w_stage_after"))
    return cert


def lint_sign_verify(recorder: Recorder, session: Any, builder_for: Callable[[int], x509.CertificateBuilder],
                     key: Any, signer_label: str, allowances: Any, what: str,
                     evidence: Mapping[str, Any] | None = None) -> x509.Certificate:
    """The scripted steps certificate-lint, certificate-sign and certificate-verify of a CA certificate the
    issuer's HSM key signs (subordinate signing, renewal): a serial from the token, lint of the TBS with a
    stand-in key, the HSM's signature, then the signature verified, the TBS compared and linted again."""
    lang = lang_of(recorder)
    with scripted_step(recorder, "certificate-lint"):
        builder = builder_for(serial_from_random(random_bytes(session, 20)))
        with recorder.busy(words(lang, "w_lint_busy")):
            before = lint_before_signing(builder, key.public_key(), allowances, what)
        recorder.evidence("lint", before.evidence())
        say_lint(recorder, before.findings, allowances)
    with scripted_step(recorder, "certificate-sign"):
        cert = builder.sign(key, hash_for(key))
        say_signed(recorder, cert, signer_label, key.public_key())
    with scripted_step(recorder, "certificate-verify"):
        with recorder.busy(words(lang, "w_lint_after_busy")):
            after = verify_after_signing(cert, key.public_key(), before, allowances, what)
        recorder.evidence("lint", {"stage": "after-signing", "findings": [f.as_dict() for f in after]})
        recorder.evidence("certificate", {**certificate_evidence(cert), **(evidence or {})})
        say_verified(recorder, after, allowances)
        say_certificate(recorder, cert)
    return cert


def check_sealing_subject(ca_name: str, ca: CA, rehearsal: bool) -> None:
    """Refuse, before any key exists, a CA whose sealing certificate's common name would be too long."""
    try:
        subject_name(sealing_subject(ca.subject), rehearsal)
    except ValueError as exc:
        raise OutputError(f"cas.{ca_name}.subject: the transcript-sealing certificate's CN: {exc}") from None


def offline_check_step(recorder: Recorder, rehearsal: bool) -> None:
    """The step ``offline-check``, first of every ceremony held at the air-gapped workstation (root key,
    subordinate signing, root CRLs, key backup, key restore), before any output is planned or token opened.

    The interfaces of this network namespace are recorded and shown. In production one that is up, other than
    loopback, stops the ceremony (:class:`~ceremony.common.errors.OfflineCheckError`); a rehearsal records it
    and goes on, saying that the check was not enforced.
    """
    lang = lang_of(recorder)
    with scripted_step(recorder, "offline-check"):
        result = check_offline(enforce=not rehearsal)
        recorder.evidence("offline-check", result.as_dict())
        recorder.say(result.summary(lang) + ("" if result.offline or not rehearsal else words(lang, "not_enforced")))


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


def issuer_key(recorder: Recorder, run: CeremonyRun, issuer: CA, cert: x509.Certificate, cert_path: Path | str,
               pin_file: str | None, interactive: bool) -> tuple[Any, Any]:
    """The ``token-open`` of a ceremony that signs with an existing CA key: the token, the login, and the key,
    refused unless it is the key of the CA's certificate. Returns (session, signing key)."""
    token_step(recorder, issuer)
    session = login(recorder, run.stack, issuer.hsm, pin_file, interactive)
    key = signing_key(session, issuer.hsm.key_label)
    if spki_sha256(key.public_key()) != spki_sha256(cert.public_key()):
        raise HsmError(f"the key {issuer.hsm.key_label!r} on the token is not the key of {cert_path}")
    recorder.evidence("key", key_evidence(key.p11_object, key.public_key(), issuer.key.describe()).as_dict())
    return session, key


def login(recorder: Recorder, stack: contextlib.ExitStack, hsm: Any, pin_file: str | None,
          interactive: bool) -> Any:
    """Log in for the ceremony, saying to the room where the PIN comes from (never the PIN): a variable, a
    file, or typed at the prompt by a Crypto Officer; a mistyped PIN is asked again with the token's
    remaining-attempts warnings."""
    source = replace(pin_source_for(hsm, pin_file, interactive), signed_in=tuple(signed_in(recorder, "crypto-officer")),
                     lang=recorder.lang)
    split = pin_split(find_token(load_module(hsm.module), hsm.token), "user")
    if split is not None:  # split knowledge: the officers the token's record names enter their parts
        tell(recorder, "t_pin_parts", token=hsm.token.describe(), officers=", ".join(split.officers))
        session = stack.enter_context(open_session(hsm, source, notice=recorder.say))
        recorder.evidence("pin-parts", {"token": hsm.token.describe(), "pin": "user",
                                        "entered_by": list(split.officers), "origin": parts_origin(source),
                                        "derivation": PART_DERIVATION})
        if not recorder.rehearsal:
            refuse_rehearsal_objects(session, hsm.token.describe())
        return session
    where = origin_text(source, pin_origin(source))
    if where == "the prompt":
        tell(recorder, "w_pin_prompt")
    else:
        tell(recorder, "w_pin_from", where=where)
    recorder.evidence("pin-source", {"origin": pin_origin(source), "described": where})
    session = stack.enter_context(open_session(hsm, source, notice=recorder.say))
    if not recorder.rehearsal:
        refuse_rehearsal_objects(session, hsm.token.describe())
    return session


def signed_in(recorder: Recorder, role: str) -> list[str]:
    """Everyone signed in with ``role``, in sign-in order (nobody for a console without a sign-in)."""
    people = getattr(recorder, "participants", None) or []
    return [p.name for p in people if p.has(role)]


def der_of(obj: Any) -> bytes:
    return obj.public_bytes(DER)


# What the witness sees. At each witnessed step the Internal Witness is asked "did you witness step X?":
# the step first shows, through ``recorder.say`` (so the transcript records exactly what was shown), the
# facts to check. Every value is data: these are plain strings, never Rich markup (the consoles print them
# literally).
LINT_BUSY = "pkilint: checking the to-be-signed certificate"


LINT_AFTER_BUSY = "pkilint: checking the signed certificate"


def lang_of(recorder: Recorder) -> str:
    """The language of the room the recorder shows things to (English for a recorder that has none)."""
    return getattr(recorder, "lang", "en")


def tell(recorder: Recorder, key: str, **values: Any) -> None:
    """Show the catalogue's text ``key`` (:mod:`ceremony.common.terminal_text`) in the room's language."""
    recorder.say(words(lang_of(recorder), key, **values))


def when(moment: Any) -> str:
    """A time as the witness reads it: ``2026-01-01 00:00:00 UTC``."""
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
    """The pathLenConstraint :func:`~ceremony.x509.profiles.subordinate_extensions` gives a subordinate CA."""
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


def certificate_file_evidence(cert: x509.Certificate, path: Path) -> dict[str, Any]:
    """The ``certificate`` evidence of a ceremony that reads a CA certificate from a file (key backup, key restore).

    As :func:`certificate_evidence`: ``sha256`` is the certificate's fingerprint, the SHA-256 of its DER encoding
    (what ``openssl x509 -fingerprint -sha256`` gives, and what the verifier compares certificates with), never
    the hash of a PEM file. The file read is named, with its own SHA-256 (what ``sha256sum`` gives) under
    ``file_sha256``.
    """
    return {**certificate_evidence(cert), "path": str(path), "file_sha256": sha256_file(path)}


def certificate_evidence(cert: x509.Certificate) -> dict[str, Any]:

    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
            "serial": format(cert.serial_number, "x"), "not_before": cert.not_valid_before_utc.isoformat(),
            "not_after": cert.not_valid_after_utc.isoformat(), "sha256": sha256_hex(der_of(cert)),
            "spki_sha256": spki_sha256(cert.public_key())}
