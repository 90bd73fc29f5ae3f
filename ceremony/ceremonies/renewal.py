"""Subordinate renewal with the same key: the offline root re-certifies a subordinate CA's existing key.

The new certificate has a new serial and the validity the definition now gives the CA; subject, key and
extensions are the profile's, as at the signing ceremony. Generations are numbered: the signing ceremony's
``<ca>.crt.pem`` is generation 1, a renewal writes ``<ca>.g<n>.crt.pem``/``.der`` (manifest kind
``subordinate-certificate`` with ``"generation": n, "key": "same"``), never over an earlier generation, so
every certificate the CA ever had stays in the output directory the auditor is given.

Where the key comes from: the subordinate's public key as the key ceremony wrote it (``<ca>.pub.pem``), which
must be the key of the current generation's certificate (and of the definition's ``spki_sha256`` pin when
set). No new CSR is asked for: the key's proof of possession was checked, recorded and sealed at the signing
ceremony, and nothing about the key changes; a fresh CSR would need the subordinate's HSM at the offline root
(or one more ceremony at the subordinate's host) and would prove only what the first CRL the subordinate signs
with its new certificate proves anyway. Because the key and the subject are the same, the certificates and CRLs
the CA signed verify under either generation (same issuer name, same authority key identifier).

Re-key (a new key on the token, its own certificate, the old key signing CRLs for what it issued) is a
different ceremony (:mod:`ceremony.ceremonies.rekey`). A renewal after a re-key re-certifies the re-key's key, as its
key ceremony wrote it (``<ca>.g<m>.pub.pem``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ceremony.ca.generations import certificate_generations, generation_stem, key_of
from ceremony.ceremonies.runner import CeremonyRun
from ceremony.ceremonies.steps import (
    PEM,
    certificate_evidence,
    der_of,
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
    when,
)
from ceremony.common.errors import RequestError, VerificationError
from ceremony.common.fileio import sha256_file
from ceremony.common.fingerprints import announce, colon_form
from ceremony.common.terminal_text import say as words
from ceremony.definition.model import LoadedDefinition
from ceremony.hsm.keys import spki_sha256
from ceremony.transcript.recorder import Recorder, scripted_step
from ceremony.x509.certificates import subordinate_builder
from ceremony.x509.files import load_issuer_certificate, read_certificate, read_public_key
from ceremony.x509.lint import lint_before_signing


@dataclass(frozen=True)
class RenewalResult:
    ca_name: str
    generation: int
    files: dict[str, Path]
    fingerprint_sha256: str
    key_spki_sha256: str


def generations(out_dir: Path, ca_name: str) -> dict[int, Path]:
    """The CA's certificates in ``out_dir`` by generation: ``<ca>.crt.pem`` is 1, ``<ca>.g<n>.crt.pem`` is n
    (:func:`ceremony.ca.generations.certificate_generations`)."""
    return certificate_generations(out_dir, ca_name)


def current_generation(out_dir: Path, ca_name: str) -> tuple[int, Path]:
    """The latest generation of the CA's certificate; refused when the signing ceremony never issued one here."""
    found = generations(out_dir, ca_name)
    if not found:
        raise RequestError(f"{out_dir / f'{ca_name}.crt.pem'}: no certificate of {ca_name!r} here; a renewal "
                           "re-certifies a key the root certified at the subordinate signing ceremony (run it into "
                           "this --out first)")
    n = max(found)
    if sorted(found) != list(range(1, n + 1)):
        raise RequestError(f"{out_dir}: the certificates of {ca_name!r} skip a generation "
                           f"({', '.join(p.name for p in found.values())}); restore the missing file first")
    return n, found[n]


def check_same_key(ca_name: str, pin: str | None, current: x509.Certificate, current_path: Path,
                   pub_path: Path) -> str:
    """The key to re-certify: ``<ca>.pub.pem`` of the key ceremony, the current certificate's key, and the pin."""
    if not pub_path.is_file():
        raise RequestError(f"{pub_path}: not there; the renewal re-certifies the key the subordinate key ceremony "
                           "wrote (bring that file to the offline root, at this path)")
    try:
        digest = spki_sha256(read_public_key(pub_path))
    except ValueError:
        raise RequestError(f"{pub_path}: not a public key") from None
    certified = spki_sha256(current.public_key())
    if digest != certified:
        raise RequestError(f"the key of {pub_path} ({digest}) is not the key of {current_path} ({certified}): the "
                           "CA's key is not the one its certificate holds; a new key is a re-key, not a renewal")
    if pin is not None and pin != digest:
        raise RequestError(f"cas.{ca_name}.spki_sha256 pins {pin}, the CA's key is {digest}")
    return digest


def renewal_inputs(defn: LoadedDefinition, ca_name: str, out_dir: Path) -> tuple[int, Path, x509.Certificate, str]:
    """Everything a renewal needs from the disk and the definition, checked without the HSM (the task runs it
    before the sign-in, the ceremony again in its first steps): (current generation, its file, its certificate,
    the key's SPKI SHA-256)."""
    ca = defn.model.ca(ca_name)
    previous, current_path = current_generation(out_dir, ca_name)
    current = read_certificate(current_path, f"the certificate of {ca_name!r}")
    if current.not_valid_after_utc >= ca.validity.not_after:
        raise RequestError(f"{defn.path}: cas.{ca_name}.validity.not_after ({when(ca.validity.not_after)}) does not "
                           f"extend {current_path} (valid until {when(current.not_valid_after_utc)}); a renewal gives "
                           "a later end: change the definition first")
    pub_path, pin = key_ceremony_public_key(out_dir, ca_name, current, ca.spki_sha256)
    digest = check_same_key(ca_name, pin, current, current_path, pub_path)
    return previous, current_path, current, digest


def key_ceremony_public_key(out_dir: Path, ca_name: str, current: x509.Certificate,
                            pin: str | None) -> tuple[Path, str | None]:
    """The public key the current key's ceremony wrote, and the pin that applies to it: ``<ca>.pub.pem`` and
    ``cas.<ca>.spki_sha256`` for the first key; after a re-key at generation m, ``<ca>.g<m>.pub.pem`` (the re-key's
    key ceremony, :mod:`ceremony.ceremonies.rekey`) and no pin (the definition's pin names the first key)."""
    key_generation, _ = key_of(out_dir, ca_name, current)
    return out_dir / f"{generation_stem(ca_name, key_generation)}.pub.pem", pin if key_generation == 1 else None


def renewal_ceremony(defn: LoadedDefinition, ca_name: str, out: str | Path, recorder: Recorder, *, rehearsal: bool,
                     issuer_cert_path: str | Path | None = None, pin_file: str | None = None,
                     interactive: bool = True) -> RenewalResult:
    """At the offline root: issue the next generation of a subordinate's certificate for its existing key."""
    lang = lang_of(recorder)
    model = defn.model
    ca = model.ca(ca_name)
    if ca.role != "subordinate" or ca.issuer is None:
        raise VerificationError(f"cas.{ca_name} is not a subordinate CA; the root is renewed by a rollover")
    issuer = model.cas[ca.issuer]
    offline_check_step(recorder, rehearsal)
    out_dir, manifest = prepare_out(out, rehearsal)
    issuer_path = Path(issuer_cert_path) if issuer_cert_path else out_dir / f"{ca.issuer}.crt.pem"
    with CeremonyRun(out_dir, manifest, recorder, "subordinate-renewal") as run:
        with scripted_step(recorder, "definition-check"):
            previous, current_path, current, _ = renewal_inputs(defn, ca_name, out_dir)
            generation = previous + 1
            pem, der = f"{ca_name}.g{generation}.crt.pem", f"{ca_name}.g{generation}.crt.der"
            run.plan(pem, "subordinate-certificate", "pem", generation=generation, key="same")
            run.plan(der, "subordinate-certificate", "der", generation=generation, key="same")
            run.check()
            issuer_cert = load_issuer_certificate(issuer_path, ca.issuer)
            say_definition(recorder, defn, ca_name)
            tell(recorder, "w_issuer_cert", path=issuer_path, sha=short_sha(sha256_file(issuer_path)))
            tell(recorder, "l_renew_from", path=current_path, generation=previous, generation_next=generation,
                 end=when(current.not_valid_after_utc))
            say_certificate_plan(recorder, ca, rehearsal, subordinate_path_length(ca),
                                 issuer=issuer_cert.subject.rfc4514_string())
            say_outputs(recorder, out_dir, run.planned)
            recorder.evidence("definition", {"path": str(defn.path), "sha256": defn.sha256, "ca": ca_name})
        with scripted_step(recorder, "key-verify"):
            try:
                current.verify_directly_issued_by(issuer_cert)
            except (ValueError, TypeError, InvalidSignature) as exc:
                raise RequestError(f"{current_path}: not issued by {issuer_path} ({exc or type(exc).__name__})") \
                    from None
            pub_path, pin = key_ceremony_public_key(out_dir, ca_name, current, ca.spki_sha256)
            digest = check_same_key(ca_name, pin, current, current_path, pub_path)
            recorder.evidence("certificate", {**certificate_evidence(current), "path": current_path.name,
                                              "generation": previous, "role": "current"})
            recorder.evidence("public-key", {"path": pub_path.name, "sha256": sha256_file(pub_path),
                                             "spki_sha256": digest, "same_as": current_path.name})
            say_key_hash(recorder, words(lang, "w_csr_key", ca=repr(ca_name)), current.public_key())
            tell(recorder, "l_same_key", pub=pub_path, cert=current_path, fingerprint=colon_form(digest))

            def builder_for(serial: int) -> x509.CertificateBuilder:
                return subordinate_builder(ca, issuer, issuer_cert, current.public_key(), serial, rehearsal)

            with recorder.busy(words(lang, "w_lint_busy")):
                profile_lint = lint_before_signing(builder_for(1), issuer_cert.public_key(), ca.lint,
                                                   f"the certificate profile of {ca_name!r}")
            say_lint(recorder, profile_lint.findings, ca.lint, words(lang, "w_stage_profile"))
        with scripted_step(recorder, "token-open"):
            session, key = issuer_key(recorder, run, issuer, issuer_cert, issuer_path, pin_file, interactive)
            seal_key, seal_cert_path = sealing_key(recorder, session, ca.issuer, issuer, out_dir, issuer_path.parent)
        cert = lint_sign_verify(recorder, session, builder_for, key, issuer.hsm.key_label, ca.lint,
                                f"generation {generation} of the certificate of {ca_name!r}",
                                {"generation": generation, "key": "same"})
        with scripted_step(recorder, "outputs-write"):
            run.stage(pem, cert.public_bytes(PEM))
            run.stage(der, der_of(cert))
            keep_definition(defn, run)
            run.record()
        with scripted_step(recorder, "fingerprint-read-aloud"):
            recorder.say(announce(words(lang, "l_renewed_cert", ca=repr(ca_name), generation=generation,
                                        subject=cert.subject.rfc4514_string()), der_of(cert)))
        run.seal(seal_key, seal_cert_path, "certificate")
    return RenewalResult(ca_name, generation, outputs_of(run), sha256_file(out_dir / der), digest)
