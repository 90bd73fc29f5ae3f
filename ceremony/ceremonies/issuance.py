"""End-entity issuance by a subordinate CA: from a CSR to a registered certificate.

The order is the engine's (see :mod:`ceremony.ceremonies.runner`), which is what makes a refusal harmless:

1. without the HSM: the CA and profile exist in the definition, the issuer certificate is the CA's,
   the CSR proves possession of an acceptable key and its subject fits the profile, and the profile
   lints clean (RFC 5280 and ETSI EN 319 412) with a stand-in key;
2. with the HSM: the token's key must be the key of the issuer certificate; the serial comes from the
   token's random generator and is checked unused in the registry; the to-be-signed certificate is
   linted once more (throwaway key), signed by the HSM, verified, compared with what was linted and
   linted again;
3. the PEM and DER files are written exclusively and atomically, and only then is the certificate
   added to the registry. If the registry refuses it (locked, corrupt), the files are removed again:
   a certificate that is not in the registry could never be revoked, so it must not exist.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ceremony.ca.generations import IssuerGeneration, ca_for_generation, generation_of, issuer_generations
from ceremony.ca.registry import CertRecord, Registry
from ceremony.ceremonies.runner import CeremonyRun
from ceremony.common.errors import DefinitionError, HsmError, OutputError, RequestError
from ceremony.common.fingerprints import announce, sha256_hex
from ceremony.common.manifest import Manifest
from ceremony.definition.model import CA, LoadedDefinition, Profile, crl_partition_for
from ceremony.hsm.keys import key_evidence, spki_sha256
from ceremony.hsm.session import find_token, load_module, open_session, pin_source_for, random_bytes, token_evidence
from ceremony.hsm.signers import hash_for, signing_key
from ceremony.transcript.recorder import Recorder
from ceremony.x509.certificates import serial_from_random
from ceremony.x509.csr import load_csr
from ceremony.x509.ee_profiles import (
    check_key,
    check_subject,
    ee_builder,
    etsi_certificate_type,
    legislation_for,
    marked_subject,
    subject_text,
    uses_qscd,
    validity_window,
)
from ceremony.x509.files import load_issuer_certificate
from ceremony.x509.lint import lint_before_signing, verify_after_signing
from ceremony.x509.profiles import subject_name

PEM = serialization.Encoding.PEM


DER = serialization.Encoding.DER


SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


ARTIFACT_KIND = "end-entity-certificate"


@dataclass(frozen=True)
class IssuedCertificate:
    serial: int
    pem_path: Path
    der_path: Path
    sha256: str
    subject: str = ""
    profile: str = ""
    not_after: dt.datetime | None = None
    crl_partition: int | None = None
    """The CRL partition its distribution point names (None: the full CRL)."""
    issuer_generation: int = 1
    """The generation of the CA certificate it was issued under (:mod:`ceremony.ca.generations`)."""

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "x")


def output_names(profile: str, serial: int) -> tuple[str, str]:
    """``<profile>-<serialhex>.crt.pem`` and ``.crt.der``."""
    stem = f"{profile}-{serial:x}.crt"
    return f"{stem}.pem", f"{stem}.der"


def _issuing_ca(defn: LoadedDefinition, ca_name: str, profile_name: str) -> tuple[CA, Profile]:
    ca = defn.model.ca(ca_name)
    file = str(defn.path)
    if ca.role != "subordinate":
        subs = [n for n, c in defn.model.cas.items() if c.role == "subordinate" and c.profiles]
        raise DefinitionError(file, f"cas.{ca_name}.role", "the root issues CA certificates only; end-entity "
                              "certificates come from a subordinate CA", ", ".join(subs) or None)
    if profile_name not in ca.profiles:
        raise DefinitionError(file, f"cas.{ca_name}.profiles", f"no end-entity profile named {profile_name!r}",
                              ", ".join(ca.profiles) or "none defined for this CA")
    return ca, ca.profiles[profile_name]


def _check_issuer_cert(cert: x509.Certificate, ca_name: str, ca: CA, path: Path, rehearsal: bool) -> None:
    expected = subject_name(ca.subject, rehearsal)
    if cert.subject != expected:
        raise OutputError(f"{path}: this certificate is {subject_text(cert.subject)!r}, not the "
                          f"{'rehearsal ' if rehearsal else ''}certificate of {ca_name!r} "
                          f"({expected.rfc4514_string()!r})")
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        raise OutputError(f"{path}: not a CA certificate with a subject key identifier") from None
    if not bc.ca:
        raise OutputError(f"{path}: not a CA certificate")


def current_generation_of(issuer_cert: x509.Certificate, path: Path, ca_name: str) -> IssuerGeneration:
    """Which generation of the CA's certificate ``issuer_cert`` is, among those beside it; refused unless it is the
    current one (issuance signs with the current generation's key: after a re-key the earlier key signs only CRLs
    and OCSP responses for what it issued). A certificate under another file name is the CA's only generation."""
    gens = issuer_generations(path.parent, ca_name)
    found = generation_of(gens, issuer_cert)
    if found is None:
        return IssuerGeneration(1, 1, path, issuer_cert, spki_sha256(issuer_cert.public_key()))
    latest = gens[-1]
    if found.generation != latest.generation:
        raise OutputError(f"{path}: generation {found.generation} of the certificate of {ca_name!r}; the current "
                          f"generation is {latest.generation} ({latest.path}): issuance signs with the current "
                          f"generation's key (allowed: --issuer-cert {latest.path}); nothing was signed")
    return found


def issue_certificate(defn: LoadedDefinition, ca_name: str, profile: str, csr_path: Path, out_dir: Path,
                      registry: Registry, recorder: Recorder, *, issuer_cert_path: Path, rehearsal: bool,
                      pin_file: str | None = None, interactive: bool = True, manifest: Manifest | None = None,
                      now: dt.datetime | None = None) -> IssuedCertificate:
    """Issue one end-entity certificate of ``profile`` from ``csr_path`` with the HSM key of ``ca_name``.

    ``manifest`` (optional) receives the two files as kind ``end-entity-certificate`` with
    ``status: good``; ``now`` fixes notBefore (tests), default the current time.
    """
    ca, prof = _issuing_ca(defn, ca_name, profile)
    out_dir = Path(out_dir)
    csr_path, issuer_cert_path = Path(csr_path), Path(issuer_cert_path)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: the output directory is a file")
    legislation = legislation_for(defn.model.organisation.country)
    etsi_type = etsi_certificate_type(prof.kind, legislation, uses_qscd(prof))
    what = f"the {profile!r} certificate"
    with recorder.step("definition-check", "Check the profile, the issuer certificate and the CSR"):
        issuer_cert = load_issuer_certificate(issuer_cert_path, ca_name)
        _check_issuer_cert(issuer_cert, ca_name, ca, issuer_cert_path, rehearsal)
        generation = current_generation_of(issuer_cert, issuer_cert_path, ca_name)
        ca = ca_for_generation(ca, generation.key_generation)  # its key label, CRL and certificate URLs
        csr = load_csr(csr_path)
        if not csr.is_signature_valid:
            raise RequestError(f"{csr_path}: the CSR signature does not verify: no proof of possession of the key")
        public = csr.public_key()
        check_key(public, str(csr_path))
        check_subject(csr.subject, prof.kind, str(csr_path))
        subject = marked_subject(csr.subject, rehearsal)
        not_before, not_after = validity_window(prof, issuer_cert, now or dt.datetime.now(dt.UTC))
        _refuse_duplicate(registry, out_dir, profile, subject, public, csr_path, not_before)

        def builder_for(serial: int) -> x509.CertificateBuilder:
            return ee_builder(prof, ca, issuer_cert, subject, public, serial, not_before, not_after, legislation)

        lint_before_signing(builder_for(1), issuer_cert.public_key(), ca.lint, f"{what} profile", etsi=True,
                            etsi_type=etsi_type)
        recorder.evidence("request", {"csr": str(csr_path), "subject": subject_text(csr.subject),
                                      "issuer_generation": generation.generation, "key_label": ca.hsm.key_label,
                                      "ignored_extensions": _requested_extensions(csr),
                                      "spki_sha256": spki_sha256(public), "profile": profile, "kind": prof.kind,
                                      "etsi_type": etsi_type.name, "signature": "valid (proof of possession)"})
        recorder.say(announce(f"Key of the requester {subject_text(csr.subject)} (SPKI)",
                              public.public_bytes(DER, SPKI)))
    if manifest is not None:
        manifest.reload()  # a rehearsal directory refuses production certificates, and the reverse
    with CeremonyRun(out_dir, manifest, recorder, "issuance") as run:
        with recorder.step("token-open", f"Open the token of {ca_name!r} and log in"):
            lib = load_module(ca.hsm.module)
            recorder.evidence("token", token_evidence(ca.hsm.module, lib, find_token(lib, ca.hsm.token)).as_dict())
            session = run.enter(open_session(ca.hsm, pin_source_for(ca.hsm, pin_file, interactive)))
            key = signing_key(session, ca.hsm.key_label)
            if spki_sha256(key.public_key()) != spki_sha256(issuer_cert.public_key()):
                raise HsmError(f"the key {ca.hsm.key_label!r} on the token is not the key of {issuer_cert_path}")
            recorder.evidence("key", key_evidence(key.p11_object, key.public_key(), ca.key.describe()).as_dict())
        with recorder.step("certificate-lint", "Lint the to-be-signed certificate"):
            serial = _fresh_serial(session, registry)
            pem_name, der_name = output_names(profile, serial)
            for name, fmt in ((pem_name, "pem"), (der_name, "der")):
                run.plan(name, ARTIFACT_KIND, fmt, status="good", serial=format(serial, "x"), profile=profile)
            run.check()
            builder = builder_for(serial)
            before = lint_before_signing(builder, key.public_key(), ca.lint, what, etsi=True, etsi_type=etsi_type)
            recorder.evidence("lint", before.evidence())
        with recorder.step("certificate-sign", f"Sign the certificate with the key of {ca_name!r} in the HSM"):
            cert = builder.sign(key, hash_for(key))
        with recorder.step("certificate-verify", "Verify the signature, compare the TBS, lint again"):
            after = verify_after_signing(cert, key.public_key(), before, ca.lint, what, etsi=True,
                                         etsi_type=etsi_type)
            recorder.evidence("lint", {"stage": "after-signing", "findings": [f.as_dict() for f in after]})
            der = cert.public_bytes(DER)
            recorder.evidence("certificate", {
                "subject": subject_text(cert.subject), "issuer": cert.issuer.rfc4514_string(),
                "serial": format(serial, "x"), "profile": profile, "not_before": not_before.isoformat(),
                "not_after": not_after.isoformat(), "sha256": sha256_hex(der)})
        with recorder.step("outputs-write", "Register the certificate, write it (PEM and DER)"):
            issued = _register_and_stage(cert, profile, out_dir, registry, run, crl_partition_for(ca, serial),
                                         generation.generation)
        with recorder.step("fingerprint-read-aloud", "Read the certificate fingerprint aloud"):
            recorder.say(announce(f"Certificate {serial:x} of {subject_text(cert.subject)}", der))
        # Issuance keeps no sealed transcript (its record is the registry and the console): the CA key signs the
        # certificate and nothing else (CPS 6.1.7), so the run commits without a seal.
        run.commit()
    return issued


def _refuse_duplicate(registry: Registry, out_dir: Path, profile: str, subject: x509.Name, public: Any,
                      csr_path: Path, at: dt.datetime) -> None:
    """A second valid certificate of the same profile for the same key is refused before the HSM.

    An operator who runs the same ``ca.issue`` again (unsure whether the first run worked) must not
    get a duplicate. The registry finds the good certificates of this profile and subject; the key of
    each is read from its file in ``out_dir`` (the registry keeps no keys), and only a file whose hash
    is the registered one counts.
    """
    spki = spki_sha256(public)
    for rec in registry.valid_for(subject_text(subject), profile, at):
        pem_name, der_name = output_names(profile, rec.serial)
        der_path = out_dir / der_name
        try:
            der = der_path.read_bytes()
        except OSError:
            continue
        if sha256_hex(der) != rec.sha256 or spki_sha256(x509.load_der_x509_certificate(der).public_key()) != spki:
            continue
        raise RequestError(f"{csr_path}: certificate {rec.serial:x} ({profile}, valid until "
                           f"{rec.not_after:%Y-%m-%d}) was issued for this key already: {out_dir / pem_name}; "
                           "nothing was signed. To replace it, revoke it first (invoke ca.revoke "
                           f"{rec.serial:x} --reason superseded)")


def _requested_extensions(csr: x509.CertificateSigningRequest) -> list[str]:
    """What the CSR asked for beyond its key and subject: recorded, never honoured (the profile decides)."""
    try:
        return sorted({e.oid.dotted_string for e in csr.extensions})
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        return ["unparseable extension request"]


def _fresh_serial(session: Any, registry: Registry) -> int:
    """20 random bytes from the token, top bit cleared; a serial the registry has seen is drawn again."""
    for _ in range(8):
        serial = serial_from_random(random_bytes(session, 20))
        if registry.get(serial) is None:
            return serial
    raise HsmError("the token's random generator keeps returning serial numbers that are registered already")


def _register_and_stage(cert: x509.Certificate, profile: str, out_dir: Path, registry: Registry,
                        run: CeremonyRun, crl_partition: int | None = None,
                        issuer_generation: int = 1) -> IssuedCertificate:
    """Register the signed certificate, then stage its files for the run's publication.

    ``crl_partition`` is the CRL partition its distribution point names (None: the full CRL), recorded with it
    so that the CRL job lists it in that partition whatever the definition says later.

    The registry comes first and is never rolled back: a certificate that was signed is revocable
    whatever happens next (a run that fails after this point publishes no file, and the registered
    certificate, never delivered, can still be put on a CRL).
    """
    serial = cert.serial_number
    pem_name, der_name = output_names(profile, serial)
    der = cert.public_bytes(DER)
    digest = sha256_hex(der)
    record = CertRecord(serial=serial, subject=subject_text(cert.subject), profile=profile,
                        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                        sha256=digest, status="good", crl_partition=crl_partition,
                        issuer_generation=issuer_generation)
    registry.add(record)
    run.stage(pem_name, cert.public_bytes(PEM))
    run.stage(der_name, der)
    run.record()
    return IssuedCertificate(serial=serial, pem_path=out_dir / pem_name, der_path=out_dir / der_name, sha256=digest,
                             subject=record.subject, profile=profile, not_after=record.not_after,
                             crl_partition=crl_partition, issuer_generation=issuer_generation)


def mark_revoked(manifest: Manifest, serial: int) -> int:
    """Turn ``status`` of the certificate's manifest entries to ``revoked``; returns how many changed."""
    manifest.reload()
    changed = 0
    for entry in manifest.artifacts:
        if entry.get("kind") == ARTIFACT_KIND and entry.get("serial") == format(serial, "x") \
                and entry.get("status") != "revoked":
            entry["status"] = "revoked"
            changed += 1
    if changed:
        manifest.save()
    return changed
