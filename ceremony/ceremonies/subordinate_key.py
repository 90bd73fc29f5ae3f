"""The subordinate key ceremony: a subordinate CA's key pair on its token and its CSR.

The token also gets the CA's transcript-sealing key, with a CSR of its own (``<ca>.seal.csr.pem``) that the
root certifies at the signing ceremony. Until then this transcript's seal is verified as "not anchored".
"""

from __future__ import annotations

from pathlib import Path

from ceremony.ceremonies.runner import CeremonyRun
from ceremony.ceremonies.steps import (
    DER,
    PEM,
    SPKI,
    CeremonyResult,
    check_sealing_subject,
    keep_definition,
    lang_of,
    open_token_and_generate_key,
    outputs_of,
    prepare_out,
    say_certificate_plan,
    say_definition,
    say_outputs,
    subordinate_path_length,
    tell,
)
from ceremony.common.errors import VerificationError
from ceremony.common.fingerprints import announce
from ceremony.common.terminal_text import say as words
from ceremony.definition.model import LoadedDefinition
from ceremony.hsm.keys import spki_sha256
from ceremony.transcript.recorder import Recorder, scripted_step
from ceremony.x509.csr import build_csr, build_sealing_csr


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
            run.plan(f"{ca_name}.seal.csr.pem", "sealing-csr", "pem")
            run.plan(f"{ca_name}.seal.pub.pem", "sealing-public-key", "pem")
            run.check()
            check_sealing_subject(ca_name, ca, rehearsal)
            say_definition(recorder, defn, ca_name)
            # The certificate is made at the signing ceremony, from this definition: its subject is the CSR's.
            say_certificate_plan(recorder, ca, rehearsal, subordinate_path_length(ca),
                                 issuer=words(lang, "w_issuer_later", issuer=repr(ca.issuer)))
            say_outputs(recorder, out_dir, run.planned)
            recorder.evidence("definition", {"path": str(defn.path), "sha256": defn.sha256, "ca": ca_name})
        keys = open_token_and_generate_key(recorder, run, ca, pin_file, interactive)
        key, public = keys.key, keys.public
        with scripted_step(recorder, "csr-sign"):
            csr = build_csr(ca, key, rehearsal)
            if not csr.is_signature_valid:
                raise VerificationError("the CSR signed by the HSM does not verify")
            recorder.evidence("csr", {"subject": csr.subject.rfc4514_string(),
                                      "spki_sha256": spki_sha256(public)})
            tell(recorder, "w_csr_subject", subject=csr.subject.rfc4514_string())
            tell(recorder, "w_csr_pop")
            sealing_csr = build_sealing_csr(ca, keys.sealing_key, rehearsal)
            if not sealing_csr.is_signature_valid:
                raise VerificationError("the sealing key's CSR signed by the HSM does not verify")
            recorder.evidence("csr", {"subject": sealing_csr.subject.rfc4514_string(), "purpose": "transcript-sealing",
                                      "spki_sha256": spki_sha256(keys.sealing_key.public_key())})
        with scripted_step(recorder, "outputs-write"):
            run.stage(f"{ca_name}.csr.pem", csr.public_bytes(PEM))
            run.stage(f"{ca_name}.csr.der", csr.public_bytes(DER))
            run.stage(f"{ca_name}.pub.pem", public.public_bytes(PEM, SPKI))
            run.stage(f"{ca_name}.pub.der", public.public_bytes(DER, SPKI))
            run.stage(f"{ca_name}.seal.csr.pem", sealing_csr.public_bytes(PEM))
            run.stage(f"{ca_name}.seal.pub.pem", keys.sealing_key.public_key().public_bytes(PEM, SPKI))
            keep_definition(defn, run)
            run.record()
        with scripted_step(recorder, "fingerprint-read-aloud"):
            recorder.say(announce(words(lang, "w_public_key", ca=repr(ca_name)), public.public_bytes(DER, SPKI)))
        run.seal(keys.sealing_key, f"{ca_name}.seal.pub.pem", "public-key")
    return CeremonyResult(ca_name, outputs_of(run), "", spki_sha256(public))
