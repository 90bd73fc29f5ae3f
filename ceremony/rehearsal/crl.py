"""Rehearsal stage: end-entity issuance, a revocation, the subordinate CRL job and a root CRL batch.

For each subordinate CA that has end-entity profiles: a registry under the rehearsal directory,
one certificate per profile (throwaway subject key and CSR made here), the first one revoked
(keyCompromise), then the CRL job exactly as the scheduler runs it. Then the root CRL batch
ceremony with its transcript. Finally ``openssl verify -crl_check_all`` must accept the good
certificate and reject the revoked one *as revoked*, with the published CRLs: the rehearsal
fails otherwise.

Manifest kinds: ``end-entity-certificate`` (``status`` good/revoked), ``registry``,
``subordinate-crl``, ``root-crl``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ceremony.ca.registry import Registry, default_path
from ceremony.ceremonies.issuance import issue_certificate, mark_revoked
from ceremony.ceremonies.root_crl import root_crl_batch_ceremony
from ceremony.common import child_process
from ceremony.common.errors import VerificationError
from ceremony.common.fileio import write_new
from ceremony.crl.job import run_crl_job, write_job_metrics
from ceremony.crl.metrics import CrlMetrics
from ceremony.rehearsal.context import RehearsalContext
from ceremony.transcript.recorder import ConsoleRecorder

EE_DIR = "end-entities"


CRL_DIR = "crl"


def rehearsal_subject(kind: str) -> x509.Name:
    """A plausible, obviously fictitious subject for each end-entity profile kind."""
    if kind == "qualified-signature":
        attrs = [(NameOID.COUNTRY_NAME, "ML"), (NameOID.GIVEN_NAME, "Awa"), (NameOID.SURNAME, "Keita"),
                 (NameOID.SERIAL_NUMBER, "IDCML-0000000001"), (NameOID.COMMON_NAME, "Awa Keita")]
    else:
        attrs = [(NameOID.COUNTRY_NAME, "ML"), (NameOID.ORGANIZATION_NAME, "Direction Generale des Impots"),
                 (NameOID.ORGANIZATION_IDENTIFIER, "NTRML-0000001"),
                 (NameOID.COMMON_NAME, "DGI cachet electronique")]
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attrs])


def _csr(path: Path, kind: str) -> Path:
    """A throwaway subject key (kept nowhere) and its CSR: in real life the subscriber's device makes both."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(rehearsal_subject(kind)).sign(key, hashes.SHA256())
    return write_new(path, csr.public_bytes(serialization.Encoding.PEM))


def _openssl_verify(ctx: RehearsalContext, ca_name: str, issuer: str, cert: Path, crls: list[Path]) -> tuple[int, str]:
    args = ["openssl", "verify", "-crl_check_all", "-CAfile", str(ctx.out / f"{issuer}.crt.pem"),
            "-untrusted", str(ctx.out / f"{ca_name}.crt.pem")]
    for crl in crls:
        args += ["-CRLfile", str(crl)]
    run = child_process.run([*args, str(cert)], capture_output=True, text=True)
    return run.returncode, (run.stdout + run.stderr).strip()


def rehearse(ctx: RehearsalContext) -> None:

    defn = ctx.definition
    model = defn.model
    console_rec = ConsoleRecorder(rehearsal=True, console=ctx.console)
    checks: list[tuple[str, str, Path, Path, str]] = []  # (ca, issuer, sub CRL PEM, certificate, expected)
    for ca_name, ca in model.cas.items():
        if ca.role != "subordinate" or not ca.profiles:
            continue
        assert ca.issuer is not None
        reg_path = default_path(ctx.out, ca_name)
        issued = []
        with Registry.open(reg_path, create=True) as registry:
            for profile_name, profile in ca.profiles.items():
                csr = _csr(ctx.out / EE_DIR / f"{profile_name}.csr.pem", profile.kind)
                issued.append(issue_certificate(
                    defn, ca_name, profile_name, csr, ctx.out / EE_DIR, registry, console_rec,
                    issuer_cert_path=ctx.out / f"{ca_name}.crt.pem", rehearsal=True, interactive=False,
                    manifest=ctx.manifest))
            revoked = issued[0]
            compromised = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
            registry.revoke(revoked.serial, "keyCompromise", invalidity_date=compromised)
        mark_revoked(ctx.manifest, revoked.serial)
        ctx.console.print(f"  revoked {revoked.serial_hex} (keyCompromise, invalid since "
                          f"{compromised:%Y-%m-%d %H:%M}Z)")
        ctx.manifest.add("registry", reg_path, "sqlite3", ca=ca_name)
        result = run_crl_job(defn, ca_name, reg_path, ctx.out / CRL_DIR, ca_cert=ctx.out / f"{ca_name}.crt.pem",
                             say=ctx.console.print)
        write_job_metrics(ctx.out / "metrics", CrlMetrics(ca_name, True, result.number, result.entries,
                                                          result.next_update.timestamp()))
        for path, fmt in ((result.der_path, "der"), (result.pem_path, "pem")):
            ctx.manifest.add("subordinate-crl", path, fmt, ca=ca_name, number=result.number,
                             this_update=result.this_update.isoformat(), next_update=result.next_update.isoformat())
        for one in issued:
            checks.append((ca_name, ca.issuer, result.pem_path, one.pem_path,
                           "revoked" if one is revoked else "good"))
    with ctx.recorder("root-crl-batch") as rec:
        batch = root_crl_batch_ceremony(defn, ctx.out, rec, rehearsal=True, interactive=False)
    in_force = batch.crls[0].pem_path  # the others start later (pre-signed)
    for ca_name, issuer, sub_crl, cert, expected in checks:
        code, output = _openssl_verify(ctx, ca_name, issuer, cert, [sub_crl, in_force])
        ok = code == 0 if expected == "good" else (code != 0 and "certificate revoked" in output)
        lines = output.splitlines()
        shown = "OK" if code == 0 else next((line for line in lines if "lookup:" in line), lines[-1])
        ctx.console.print(f"  openssl verify -crl_check_all {cert.name}: {shown} (expected: {expected})")
        if not ok:
            raise VerificationError(f"openssl verify -crl_check_all does not treat {cert} as {expected}: {output}")
