"""Rehearsal stage: end-entity issuance, a revocation, partitioned CRLs, the subordinate CRL job and a root CRL batch.

For each subordinate CA that has end-entity profiles: a registry under the rehearsal directory,
one certificate per profile (throwaway subject key and CSR made here), the first one revoked
(keyCompromise). Then the CA turns CRL partitioning on (``crl.partitions:`` :data:`REHEARSAL_PARTITIONS`, as an
operator would by editing the definition, unless it partitions already) and issues one more certificate per
profile, each naming one partition CRL, the first of them revoked too. The CRL job then runs exactly as the
scheduler runs it: it publishes the full CRL (the first certificates, issued before partitioning, still name it)
and every partition CRL together. Then the root CRL batch ceremony with its transcript. Finally
``openssl verify -crl_check_all`` with the CRL each certificate's distribution point names must accept the good
certificates and reject the revoked ones *as revoked*: the rehearsal fails otherwise.

Manifest kinds: ``end-entity-certificate`` (``status`` good/revoked), ``registry``,
``subordinate-crl``, ``crl-partition`` (each current partition CRL, DER and PEM, with ``partition``: its index),
``root-crl``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ceremony.ca.registry import Registry, default_path
from ceremony.ceremonies.issuance import IssuedCertificate, issue_certificate, mark_revoked
from ceremony.ceremonies.root_crl import root_crl_batch_ceremony
from ceremony.common import child_process
from ceremony.common.errors import VerificationError
from ceremony.common.fileio import write_new
from ceremony.crl.job import metrics_for, run_crl_job, write_job_metrics
from ceremony.definition.model import LoadedDefinition
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


def subscriber_csr(path: Path, kind: str) -> Path:
    """A throwaway subject key (kept nowhere) and its CSR: in real life the subscriber's device makes both."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(rehearsal_subject(kind)).sign(key, hashes.SHA256())
    return write_new(path, csr.public_bytes(serialization.Encoding.PEM))


#: The partition count the rehearsal turns on for a CA whose definition does not partition its CRL: two keep the
#: stage short and still show a certificate's status in its own partition only.
REHEARSAL_PARTITIONS = 2


def with_crl_partitions(defn: LoadedDefinition, ca_name: str, partitions: int) -> LoadedDefinition:
    """The definition as it is after an operator sets ``cas.<ca>.crl.partitions`` (the rehearsal's file is left as it
    is: the CP/CPS stage describes the definition the rehearsal was given)."""
    model = defn.model
    ca = model.cas[ca_name]
    if ca.crl.partitions is not None:
        return defn
    crl = ca.crl.model_copy(update={"partitions": partitions})
    cas = {**model.cas, ca_name: ca.model_copy(update={"crl": crl})}
    return LoadedDefinition(model.model_copy(update={"cas": cas}), defn.path, defn.sha256)


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
    # (ca, issuer, the CRL PEM the certificate's distribution point names, certificate, expected)
    checks: list[tuple[str, str, Path, Path, str]] = []
    for ca_name, ca in model.cas.items():
        if ca.role != "subordinate" or not ca.profiles:
            continue
        assert ca.issuer is not None
        reg_path = default_path(ctx.out, ca_name)
        partitioned = with_crl_partitions(defn, ca_name, REHEARSAL_PARTITIONS)
        issued = []
        revoked = []
        with Registry.open(reg_path, create=True) as registry:
            # Before partitioning (when the definition does not partition), then after: one certificate per profile
            # each time, the first revoked.
            for stage, d, suffix in ((("before partitioning", defn, ""),) if partitioned is not defn else ()) + (
                    ("partitioned", partitioned, "-partitioned"),):
                made: list[IssuedCertificate] = []
                for profile_name, profile in ca.profiles.items():
                    csr = subscriber_csr(ctx.out / EE_DIR / f"{profile_name}{suffix}.csr.pem", profile.kind)
                    made.append(issue_certificate(
                        d, ca_name, profile_name, csr, ctx.out / EE_DIR, registry, console_rec,
                        issuer_cert_path=ctx.out / f"{ca_name}.crt.pem", rehearsal=True, interactive=False,
                        manifest=ctx.manifest))
                compromised = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
                registry.revoke(made[0].serial, "keyCompromise", invalidity_date=compromised)
                mark_revoked(ctx.manifest, made[0].serial)
                names = ", ".join("the full CRL" if one.crl_partition is None else f"partition {one.crl_partition}"
                                  for one in made)
                ctx.console.print(f"  {stage}: issued {len(made)} certificates naming {names}; revoked "
                                  f"{made[0].serial_hex} (keyCompromise, invalid since {compromised:%Y-%m-%d %H:%M}Z)")
                issued += made
                revoked.append(made[0])
        ctx.manifest.add("registry", reg_path, "sqlite3", ca=ca_name)
        result = run_crl_job(partitioned, ca_name, reg_path, ctx.out / CRL_DIR,
                             ca_cert=ctx.out / f"{ca_name}.crt.pem", say=ctx.console.print)
        write_job_metrics(ctx.out / "metrics", metrics_for(result, ca_name, result.der_path, None))
        crl_of: dict[int | None, Path] = {}
        for one_crl in result.crls:
            crl_of[one_crl.partition] = one_crl.pem_path
            kind, extra = (("subordinate-crl", {}) if one_crl.partition is None
                           else ("crl-partition", {"partition": one_crl.partition, "url": one_crl.url}))
            for path, fmt in ((one_crl.der_path, "der"), (one_crl.pem_path, "pem")):
                ctx.manifest.add(kind, path, fmt, ca=ca_name, number=one_crl.number,
                                 this_update=one_crl.this_update.isoformat(),
                                 next_update=one_crl.next_update.isoformat(), **extra)
        for one in issued:
            checks.append((ca_name, ca.issuer, crl_of[one.crl_partition], one.pem_path,
                           "revoked" if one in revoked else "good"))
    with ctx.recorder("root-crl-batch") as rec:
        batch = root_crl_batch_ceremony(defn, ctx.out, rec, rehearsal=True, interactive=False)
    in_force = batch.crls[0].pem_path  # the others start later (pre-signed)
    for ca_name, issuer, sub_crl, cert, expected in checks:
        code, output = _openssl_verify(ctx, ca_name, issuer, cert, [sub_crl, in_force])
        ok = code == 0 if expected == "good" else (code != 0 and "certificate revoked" in output)
        lines = output.splitlines()
        shown = "OK" if code == 0 else next((line for line in lines if "lookup:" in line), lines[-1])
        ctx.console.print(f"  openssl verify -crl_check_all {cert.name} with {sub_crl.name}: {shown} "
                          f"(expected: {expected})")
        if not ok:
            raise VerificationError(f"openssl verify -crl_check_all does not treat {cert} as {expected}: {output}")
