"""The rehearsal's end-entity stage: one certificate of every profile, issued and checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ceremony.ca.registry import Registry, default_path
from ceremony.ceremonies.issuance import PEM, IssuedCertificate, issue_certificate, mark_revoked
from ceremony.common.fileio import write_new
from ceremony.transcript.recorder import ConsoleRecorder


@dataclass(frozen=True)
class EndEntityRehearsal:
    """What :func:`rehearse_end_entities` left: per issuing CA its registry, the certificates, the revoked one."""

    registries: dict[str, Path]
    issued: list[IssuedCertificate]
    revoked: list[IssuedCertificate]


def sample_subject(kind: str, country: str, organisation: str) -> x509.Name:
    """A plausible subscriber for a rehearsal: a natural person, or the organisation's own seal."""
    attr = x509.NameAttribute
    if kind == "qualified-signature":
        return x509.Name([attr(NameOID.COUNTRY_NAME, country), attr(NameOID.GIVEN_NAME, "Awa"),
                          attr(NameOID.SURNAME, "Keita"), attr(NameOID.SERIAL_NUMBER, f"IDC{country}-0000000001"),
                          attr(NameOID.COMMON_NAME, "Awa Keita")])
    return x509.Name([attr(NameOID.COUNTRY_NAME, country), attr(NameOID.ORGANIZATION_NAME, organisation[:64]),
                      attr(NameOID.ORGANIZATION_IDENTIFIER, f"NTR{country}-0000000001"),
                      attr(NameOID.COMMON_NAME, "Cachet electronique")])


def rehearse_end_entities(ctx: Any, subdir: str = "end-entities") -> EndEntityRehearsal:
    """Rehearsal stage piece: every subordinate CA with profiles issues one certificate per profile
    (subscriber keys made in software, CSRs kept next to the certificates), then revokes the first one
    (keyCompromise). The manifest lists the certificates (``end-entity-certificate`` with ``status``)
    and each registry (``registry``). ``ctx`` is a :class:`ceremony.rehearsal.context.RehearsalContext`.
    """

    model = ctx.definition.model
    out = ctx.out / subdir
    registries: dict[str, Path] = {}
    issued: list[IssuedCertificate] = []
    revoked: list[IssuedCertificate] = []
    for ca_name, ca in model.cas.items():
        if ca.role != "subordinate" or not ca.profiles:
            continue
        reg_path = default_path(ctx.out, ca_name)
        registries[ca_name] = reg_path
        with Registry.open(reg_path, create=True) as registry:
            mine: list[IssuedCertificate] = []
            for profile_name, prof in ca.profiles.items():
                key = ec.generate_private_key(ec.SECP256R1())
                subject = sample_subject(prof.kind, model.organisation.country, model.organisation.name)
                csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
                csr_path = write_new(out / f"{profile_name}.csr.pem", csr.public_bytes(PEM))
                ctx.manifest.add("end-entity-csr", csr_path, "pem")
                mine.append(issue_certificate(
                    ctx.definition, ca_name, profile_name, csr_path, out, registry,
                    ConsoleRecorder(rehearsal=True, console=ctx.console),
                    issuer_cert_path=ctx.out / f"{ca_name}.crt.pem", rehearsal=True, interactive=False,
                    manifest=ctx.manifest))
            if mine:
                registry.revoke(mine[0].serial, "keyCompromise")
                mark_revoked(ctx.manifest, mine[0].serial)
                ctx.console.print(f"revoked {mine[0].serial_hex} ({mine[0].profile}) for keyCompromise")
                revoked.append(mine[0])
            issued += mine
        ctx.manifest.add("registry", reg_path, "sqlite", ca=ca_name)
    return EndEntityRehearsal(registries=registries, issued=issued, revoked=revoked)
