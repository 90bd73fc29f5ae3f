"""Sealing-key certification: the offline root certifies a transcript-sealing key that has only a CSR.

A key restore onto a fresh token gives that token a new transcript-sealing key (sealing keys are never
backed up). For the root the restored root key certifies it on the spot; a subordinate's restored key cannot
(a subordinate never certifies a sealing key: the anchor accepts only sealing certificates the root issued),
so the restore leaves ``<ca>.seal.<first 16 hex of its SPKI SHA-256>.csr.pem`` and seals its own transcript
with that key, "not anchored" until the root certifies it. This short ceremony at the offline root does that:
the CSR's proof of possession, key type and name are checked, the certificate is linted with a stand-in key,
signed by the root key in the HSM, verified and linted again, and written as
``<ca>.seal.<16 hex>.crt.pem``/``.der`` beside the CSR. From then on the restore's transcript verifies
anchored (``invoke audit.verify … --trust root.crt.pem``): the verifier finds the certificate among the
artifacts. This transcript is sealed by the root token's own sealing key, never by the root key.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ceremony.ceremonies.runner import CeremonyRun
from ceremony.ceremonies.steps import (
    PEM,
    der_of,
    issue_sealing_certificate,
    issuer_key,
    keep_definition,
    lang_of,
    offline_check_step,
    outputs_of,
    prepare_out,
    say_definition,
    say_key_hash,
    say_outputs,
    sealing_key,
    short_sha,
    tell,
)
from ceremony.common.errors import RequestError
from ceremony.common.fileio import sha256_file
from ceremony.common.fingerprints import announce
from ceremony.common.terminal_text import say as words
from ceremony.definition.model import LoadedDefinition
from ceremony.hsm.keys import SEALING_KEY, spki_sha256
from ceremony.transcript.recorder import Recorder, scripted_step
from ceremony.x509.csr import describe_key, load_csr
from ceremony.x509.files import load_issuer_certificate, read_certificate, read_public_key

#: The name a key restore gives the CSR of a new sealing key: ``<ca>.seal.<16 hex>.csr.pem``.
SEALING_CSR = re.compile(r"^(?P<ca>[a-z0-9][a-z0-9_-]*)\.seal\.(?P<prefix>[0-9a-f]{16})\.csr\.pem$")


@dataclass(frozen=True)
class SealingCertificationResult:
    ca_name: str
    certificate: Path
    spki_sha256: str
    anchors: list[str]


def pending_sealing_csrs(out_dir: Path, ca_name: str) -> list[Path]:
    """The sealing-key CSRs of ``ca_name`` in ``out_dir`` that no certificate answers yet."""
    return [p for p in sorted(out_dir.glob(f"{ca_name}.seal.*.csr.pem"))
            if SEALING_CSR.match(p.name) and not p.with_name(p.name[: -len(".csr.pem")] + ".crt.pem").exists()]


def sealing_csr_for(out_dir: Path, ca_name: str, csr: str | Path | None) -> Path:
    """The CSR to certify: the one given, else the only pending one in the output directory."""
    if csr is not None:
        return Path(csr)
    pending = pending_sealing_csrs(out_dir, ca_name)
    if len(pending) != 1:
        found = ", ".join(p.name for p in pending) or "none"
        raise RequestError(f"{out_dir}: {len(pending)} sealing-key CSR(s) of {ca_name!r} without a certificate "
                           f"({found}); name the one to certify with --csr {out_dir}/{ca_name}.seal.<16 hex>.csr.pem")
    return pending[0]


def check_sealing_key_csr(path: Path, ca_name: str) -> tuple[Any, str, str]:
    """The CSR's proof of possession, its key (the sealing key type) and its name, which carries the key's hash.

    Returns (CSR, SPKI SHA-256, output stem ``<ca>.seal.<16 hex>``). A ``<stem>.pub.pem`` written by the restore
    beside it must hold the same key.
    """
    match = SEALING_CSR.match(path.name)
    if match is None or match["ca"] != ca_name:
        raise RequestError(f"{path}: not a sealing-key CSR of {ca_name!r}; a key restore names it "
                           f"{ca_name}.seal.<first 16 hex of the key's SPKI SHA-256>.csr.pem")
    if not path.is_file():
        raise RequestError(f"{path}: no such file; the key restore of {ca_name!r} writes it in its output directory")
    csr = load_csr(path)
    if not csr.is_signature_valid:
        raise RequestError(f"{path}: the CSR's signature does not verify (no proof of possession)")
    kind = describe_key(csr.public_key())
    if kind != SEALING_KEY.describe():
        raise RequestError(f"{path}: the key is {kind}; a transcript-sealing key is {SEALING_KEY.describe()}")
    digest = spki_sha256(csr.public_key())
    if not digest.startswith(match["prefix"]):
        raise RequestError(f"{path}: the key's SPKI SHA-256 is {digest}, the file name says {match['prefix']}…: "
                           "the file was renamed or replaced")
    stem = path.name[: -len(".csr.pem")]
    if path.with_name(f"{stem}.crt.pem").exists():
        raise RequestError(f"{path.with_name(f'{stem}.crt.pem')} exists already: the root certified this sealing key; "
                           "outputs are never overwritten")
    pub = path.with_name(f"{stem}.pub.pem")
    if pub.is_file():
        try:
            recorded = spki_sha256(read_public_key(pub))
        except ValueError:
            raise RequestError(f"{pub}: not a public key") from None
        if recorded != digest:
            raise RequestError(f"{path}: the key is not the one in {pub}, written at the key restore")
    return csr, digest, stem


def refuse_ca_key(ca_name: str, digest: str, out_dir: Path) -> None:
    """A CA key is never certified for sealing (CA keys sign certificates and CRLs only)."""
    cert = out_dir / f"{ca_name}.crt.pem"
    if cert.is_file() and spki_sha256(read_certificate(cert).public_key()) == digest:
        raise RequestError(f"the key of this CSR is the CA key of {ca_name!r} ({cert}): a CA key never seals "
                           "transcripts (EN 319 411-1 GEN-6.5.3-03)")


def transcripts_sealed_by(out_dir: Path, digest: str) -> list[str]:
    """Transcripts in ``OUT/transcripts`` whose seal was made by the key ``digest`` (those this certificate
    anchors), by file name."""
    found = []
    for path in sorted((out_dir / "transcripts").glob("*.jsonl")):
        try:
            last = path.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1]
            seal = json.loads(last)
        except (OSError, ValueError):
            continue
        if isinstance(seal, dict) and seal.get("type") == "seal" and \
                (seal.get("verifier") or {}).get("spki_sha256") == digest:
            found.append(path.name)
    return found


def sealing_certification_ceremony(defn: LoadedDefinition, ca_name: str, out: str | Path, recorder: Recorder, *,
                                   rehearsal: bool, csr: str | Path | None = None,
                                   issuer_cert_path: str | Path | None = None, pin_file: str | None = None,
                                   interactive: bool = True) -> SealingCertificationResult:
    """At the offline root: certify the transcript-sealing key of ``ca_name`` from its CSR."""
    lang = lang_of(recorder)
    model = defn.model
    ca = model.ca(ca_name)
    root_name = model.root_name
    root = model.cas[root_name]
    offline_check_step(recorder, rehearsal)
    out_dir, manifest = prepare_out(out, rehearsal)
    root_path = Path(issuer_cert_path) if issuer_cert_path else out_dir / f"{root_name}.crt.pem"
    with CeremonyRun(out_dir, manifest, recorder, "sealing-certification") as run:
        with scripted_step(recorder, "definition-check"):
            csr_path = sealing_csr_for(out_dir, ca_name, csr)
            request, digest, stem = check_sealing_key_csr(csr_path, ca_name)
            run.plan(f"{stem}.crt.pem", "sealing-certificate", "pem")
            run.plan(f"{stem}.crt.der", "sealing-certificate", "der")
            run.check()
            root_cert = load_issuer_certificate(root_path, root_name)
            refuse_ca_key(ca_name, digest, out_dir)
            anchors = transcripts_sealed_by(out_dir, digest)
            say_definition(recorder, defn, ca_name)
            tell(recorder, "w_issuer_cert", path=root_path, sha=short_sha(sha256_file(root_path)))
            say_outputs(recorder, out_dir, run.planned)
            recorder.evidence("definition", {"path": str(defn.path), "sha256": defn.sha256, "ca": ca_name})
        with scripted_step(recorder, "csr-verify"):
            recorder.evidence("csr", {"path": str(csr_path), "purpose": "transcript-sealing", "spki_sha256": digest,
                                      "signature": "valid (proof of possession)", "anchors": anchors})
            tell(recorder, "w_csr", path=csr_path)
            tell(recorder, "w_csr_sig")
            say_key_hash(recorder, words(lang, "w_sealing_key", label=repr(ca.hsm.sealing_label)),
                         request.public_key())
            tell(recorder, "l_seal_anchors", files=", ".join(anchors) or words(lang, "none"))
        with scripted_step(recorder, "token-open"):
            session, key = issuer_key(recorder, run, root, root_cert, root_path, pin_file, interactive)
            seal_key, seal_cert_path = sealing_key(recorder, session, root_name, root, out_dir, root_path.parent)
        with scripted_step(recorder, "sealing-certificate"):
            cert = issue_sealing_certificate(recorder, session, ca_name, ca, request.public_key(), root, key,
                                             root_cert, model.ceremony.sealing_eku, rehearsal)
        with scripted_step(recorder, "outputs-write"):
            run.stage(f"{stem}.crt.pem", cert.public_bytes(PEM))
            run.stage(f"{stem}.crt.der", der_of(cert))
            keep_definition(defn, run)
            run.record()
        with scripted_step(recorder, "fingerprint-read-aloud"):
            recorder.say(announce(words(lang, "w_sealing_fp", ca=repr(ca_name)), der_of(cert)))
        run.seal(seal_key, seal_cert_path, "certificate")
    return SealingCertificationResult(ca_name, outputs_of(run)[f"{stem}.crt.pem"], digest, anchors)
