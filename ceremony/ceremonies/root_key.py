"""The root key ceremony: the root's key pair on its token and its self-signed certificate.

The same token gets the root's transcript-sealing key, which the root certifies at once
(``<root>.seal.crt.pem``): this ceremony's transcript is the first it seals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ceremony.ceremonies.runner import CeremonyRun
from ceremony.ceremonies.steps import (
    DER,
    PEM,
    SPKI,
    CeremonyResult,
    certificate_evidence,
    check_sealing_subject,
    der_of,
    issue_sealing_certificate,
    keep_definition,
    lang_of,
    offline_check_step,
    open_token_and_generate_key,
    outputs_of,
    prepare_out,
    say_certificate,
    say_certificate_plan,
    say_definition,
    say_lint,
    say_outputs,
    say_signed,
    say_verified,
    tell,
)
from ceremony.common.fileio import sha256_file
from ceremony.common.fingerprints import announce
from ceremony.common.terminal_text import say as words
from ceremony.definition.model import CA, EcKey, LoadedDefinition
from ceremony.hsm.keys import spki_sha256
from ceremony.hsm.session import (
    random_bytes,
)
from ceremony.hsm.signers import hash_for
from ceremony.transcript.recorder import Recorder, scripted_step
from ceremony.x509.certificates import root_builder, serial_from_random
from ceremony.x509.lint import lint_before_signing, verify_after_signing


@dataclass(frozen=True)
class RootKeyPlan:
    """What one run of the root key ceremony's steps makes: the root's key, its self-signed certificate and its
    sealing key's certificate, under file names ``<stem>.crt.pem``, ``<stem>.pub.pem``, ``<stem>.seal.crt.pem``.

    The first root is ``RootKeyPlan(<root>)``; a successor root (root rollover) is the same steps with
    ``<root>.g<n>`` as stem, the manifest kind ``new-root-certificate`` and its generation, and checks of its own
    in ``definition-check`` (:mod:`ceremony.ceremonies.rollover`).
    """

    stem: str
    ceremony: str = "root-key-generation"
    certificate_kind: str = "root-certificate"
    public_kind: str = "root-public-key"
    manifest: Mapping[str, Any] = field(default_factory=dict)
    where: str = ""  # the definition's path to the CA's hsm section, for a label already taken on the token
    checks: Callable[[CeremonyRun], None] | None = None


def root_ceremony(defn: LoadedDefinition, out: str | Path, recorder: Recorder, *, rehearsal: bool,
                  pin_file: str | None = None, interactive: bool = True) -> CeremonyResult:
    """Generate the root key on its token and issue the self-signed root certificate."""
    name = defn.model.root_name
    return root_key_steps(defn, defn.model.cas[name], RootKeyPlan(name, where=f"cas.{name}.hsm"), out, recorder,
                          rehearsal=rehearsal, pin_file=pin_file, interactive=interactive)


def root_key_steps(defn: LoadedDefinition, ca: CA, plan: RootKeyPlan, out: str | Path, recorder: Recorder, *,
                   rehearsal: bool, pin_file: str | None = None, interactive: bool = True) -> CeremonyResult:
    """The root key ceremony's steps for ``ca`` (the root, or a successor root as a CA of its own)."""
    lang = lang_of(recorder)
    model = defn.model
    name = plan.stem
    offline_check_step(recorder, rehearsal)
    out_dir, manifest = prepare_out(out, rehearsal)
    with CeremonyRun(out_dir, manifest, recorder, plan.ceremony) as run:
        with scripted_step(recorder, "definition-check"):
            for suffix, kind in ((".crt", plan.certificate_kind), (".pub", plan.public_kind)):
                run.plan(f"{name}{suffix}.pem", kind, "pem", **plan.manifest)
                run.plan(f"{name}{suffix}.der", kind, "der", **plan.manifest)
            run.plan(f"{name}.seal.crt.pem", "sealing-certificate", "pem")
            run.plan(f"{name}.seal.crt.der", "sealing-certificate", "der")
            run.check()
            if plan.checks is not None:
                plan.checks(run)
            check_sealing_subject(name, ca, rehearsal)
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
        keys = open_token_and_generate_key(recorder, run, ca, pin_file, interactive, where=plan.where)
        session, key, public = keys.session, keys.key, keys.public
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
            recorder.evidence("certificate", {**certificate_evidence(cert), **plan.manifest})
            say_verified(recorder, after, ca.lint)
            say_certificate(recorder, cert)
        with scripted_step(recorder, "sealing-certificate"):
            sealing_cert = issue_sealing_certificate(recorder, session, name, ca, keys.sealing_key.public_key(), ca,
                                                     key, cert, model.ceremony.sealing_eku, rehearsal)
        with scripted_step(recorder, "outputs-write"):
            run.stage(f"{name}.crt.pem", cert.public_bytes(PEM))
            run.stage(f"{name}.crt.der", der_of(cert))
            run.stage(f"{name}.pub.pem", public.public_bytes(PEM, SPKI))
            run.stage(f"{name}.pub.der", public.public_bytes(DER, SPKI))
            run.stage(f"{name}.seal.crt.pem", sealing_cert.public_bytes(PEM))
            run.stage(f"{name}.seal.crt.der", der_of(sealing_cert))
            keep_definition(defn, run)
            run.record()
        with scripted_step(recorder, "fingerprint-read-aloud"):
            recorder.say(announce(words(lang, "w_root_cert", subject=cert.subject.rfc4514_string()), der_of(cert)))
            tell(recorder, "w_key_spki", sha=spki_sha256(public))
            recorder.say(announce(words(lang, "w_sealing_fp", ca=repr(name)), der_of(sealing_cert)))
        run.seal(keys.sealing_key, f"{name}.seal.crt.pem", "certificate")
    return CeremonyResult(name, outputs_of(run), sha256_file(out_dir / f"{name}.crt.der"), spki_sha256(public))


def _public_key_for_spec(ca: CA) -> Any:
    """A public key of the definition's algorithm and size, to lint a profile before any real key exists."""

    if isinstance(ca.key, EcKey):
        curve = ec.SECP384R1() if ca.key.curve == "P-384" else ec.SECP256R1()
        return ec.generate_private_key(curve).public_key()
    return rsa.generate_private_key(65537, ca.key.bits).public_key()
