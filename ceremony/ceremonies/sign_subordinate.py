"""The subordinate signing ceremony: the root signs a subordinate CA's CSR.

The root also certifies the subordinate token's transcript-sealing key from its CSR (``<ca>.seal.csr.pem``,
next to the CA's CSR), and seals this transcript with its own sealing key.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from ceremony.ceremonies.runner import CeremonyRun
from ceremony.ceremonies.steps import (
    PEM,
    CeremonyResult,
    der_of,
    issue_sealing_certificate,
    issuer_key,
    keep_definition,
    lang_of,
    lint_sign_verify,
    offline_check_step,
    outputs_of,
    prepare_out,
    say_certificate_plan,
    say_definition,
    say_key_hash,
    say_lint,
    say_outputs,
    sealing_key,
    short_sha,
    subordinate_path_length,
    tell,
)
from ceremony.common.errors import RequestError, VerificationError
from ceremony.common.fileio import sha256_file
from ceremony.common.fingerprints import announce, colon_form
from ceremony.common.terminal_text import say as words
from ceremony.definition.model import CA, LoadedDefinition
from ceremony.hsm.keys import SEALING_KEY, spki_sha256
from ceremony.transcript.recorder import Recorder, scripted_step
from ceremony.x509.certificates import subordinate_builder
from ceremony.x509.csr import check_csr, describe_key, load_csr
from ceremony.x509.files import load_issuer_certificate, read_public_key
from ceremony.x509.lint import lint_before_signing


def csr_key_match(ca_name: str, ca: CA, digest: str, out_dir: Path, lang: str = "en") -> str:
    """Where the CSR key hash is checked against: the pin, the key ceremony's public key, or the witness
    (in ``lang``; the evidence records the English text).

    A ``<ca>.pub.pem`` in the output directory that holds another key is refused: it was written at the
    subordinate key ceremony, so this CSR is not that ceremony's.
    """

    if ca.spki_sha256 is not None:  # check_csr refused any other key already
        return words(lang, "w_csr_pinned", ca=ca_name)
    pub = out_dir / f"{ca_name}.pub.pem"
    if pub.is_file():
        try:
            recorded = spki_sha256(read_public_key(pub))
        except ValueError:
            raise RequestError(f"{pub}: not a public key; the CSR key cannot be compared with the key written at "
                               "the subordinate key ceremony") from None
        if recorded != digest:
            raise RequestError(f"the CSR key ({digest}) is not the key of {pub} ({recorded}), written at the "
                               "subordinate key ceremony: this CSR is not the one that ceremony wrote")
        return words(lang, "w_csr_pub", path=pub, fingerprint=colon_form(recorded))
    return words(lang, "w_csr_unchecked", ca=ca_name, path=pub)


def sealing_csr_path(csr_path: Path, ca_name: str) -> Path:
    """Where the sealing key's CSR is: beside the CA's CSR, as the subordinate key ceremony wrote both."""
    name = csr_path.name
    if name.endswith(".csr.pem"):
        return csr_path.with_name(name[: -len(".csr.pem")] + ".seal.csr.pem")
    return csr_path.with_name(f"{ca_name}.seal.csr.pem")


def check_sealing_csr(path: Path, ca_name: str, out_dir: Path) -> x509.CertificateSigningRequest:
    """The sealing key's CSR: a valid proof of possession, the sealing key type, and, when the subordinate key
    ceremony's ``<ca>.seal.pub.pem`` is here, the same key."""
    csr = load_csr(path)
    if not csr.is_signature_valid:
        raise RequestError(f"{path}: the CSR's signature does not verify (no proof of possession)")
    kind = describe_key(csr.public_key())
    if kind != SEALING_KEY.describe():
        raise RequestError(f"{path}: the sealing key is {kind}; a transcript-sealing key is {SEALING_KEY.describe()}")
    pub = out_dir / f"{ca_name}.seal.pub.pem"
    if pub.is_file():
        try:
            recorded = spki_sha256(read_public_key(pub))
        except ValueError:
            raise RequestError(f"{pub}: not a public key") from None
        if recorded != spki_sha256(csr.public_key()):
            raise RequestError(f"{path}: the key is not the one in {pub}, written at the subordinate key ceremony")
    return csr


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
    offline_check_step(recorder, rehearsal)
    out_dir, manifest = prepare_out(out, rehearsal)
    issuer_path = Path(issuer_cert_path) if issuer_cert_path else out_dir / f"{ca.issuer}.crt.pem"
    seal_csr_path = sealing_csr_path(Path(csr_path), ca_name)
    with CeremonyRun(out_dir, manifest, recorder, "subordinate-signing") as run:
        with scripted_step(recorder, "definition-check"):
            run.plan(f"{ca_name}.crt.pem", "subordinate-certificate", "pem")
            run.plan(f"{ca_name}.crt.der", "subordinate-certificate", "der")
            run.plan(f"{ca_name}.seal.crt.pem", "sealing-certificate", "pem")
            run.plan(f"{ca_name}.seal.crt.der", "sealing-certificate", "der")
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
            seal_csr = check_sealing_csr(seal_csr_path, ca_name, out_dir)
            recorder.evidence("csr", {"path": str(seal_csr_path), "purpose": "transcript-sealing",
                                      "spki_sha256": spki_sha256(seal_csr.public_key()),
                                      "signature": "valid (proof of possession)"})
            say_key_hash(recorder, words(lang, "w_sealing_key", label=repr(ca.hsm.sealing_label)),
                         seal_csr.public_key())
            builder_for = lambda serial: subordinate_builder(  # noqa: E731 - small local factory
                ca, issuer, issuer_cert, csr.public_key(), serial, rehearsal)
            with recorder.busy(words(lang, "w_lint_busy")):
                profile_lint = lint_before_signing(builder_for(1), issuer_cert.public_key(), ca.lint,
                                                   f"the certificate profile of {ca_name!r}")
            say_lint(recorder, profile_lint.findings, ca.lint, words(lang, "w_stage_profile"))
        with scripted_step(recorder, "token-open"):
            session, key = issuer_key(recorder, run, issuer, issuer_cert, issuer_path, pin_file, interactive)
            seal_key, seal_cert_path = sealing_key(recorder, session, ca.issuer, issuer, out_dir, issuer_path.parent)
        cert = lint_sign_verify(recorder, session, builder_for, key, issuer.hsm.key_label, ca.lint,
                                f"the certificate of {ca_name!r}")
        with scripted_step(recorder, "sealing-certificate"):
            sealing_cert = issue_sealing_certificate(recorder, session, ca_name, ca, seal_csr.public_key(), issuer,
                                                     key, issuer_cert, model.ceremony.sealing_eku, rehearsal)
        with scripted_step(recorder, "outputs-write"):
            run.stage(f"{ca_name}.crt.pem", cert.public_bytes(PEM))
            run.stage(f"{ca_name}.crt.der", der_of(cert))
            run.stage(f"{ca_name}.seal.crt.pem", sealing_cert.public_bytes(PEM))
            run.stage(f"{ca_name}.seal.crt.der", der_of(sealing_cert))
            keep_definition(defn, run)
            run.record()
        with scripted_step(recorder, "fingerprint-read-aloud"):
            recorder.say(announce(words(lang, "w_sub_cert", ca=repr(ca_name), subject=cert.subject.rfc4514_string()),
                                  der_of(cert)))
            recorder.say(announce(words(lang, "w_sealing_fp", ca=repr(ca_name)), der_of(sealing_cert)))
        run.seal(seal_key, seal_cert_path, "certificate")
    return CeremonyResult(ca_name, outputs_of(run), sha256_file(out_dir / f"{ca_name}.crt.der"),
                          checked.spki_sha256)
