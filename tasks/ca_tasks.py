"""Subordinate CA tasks: issue an end-entity certificate, revoke one, list the registry.

Thin: parse the arguments, open the registry, call the engine (:mod:`ceremony.ceremonies.issuance`,
:mod:`ceremony.ca.registry`), print one line per result. Serial numbers are hexadecimal everywhere,
as ``openssl x509 -serial`` prints them. PINs are never arguments.
"""

from __future__ import annotations

from pathlib import Path

from invoke import Collection, Context, task

from ._cli import operator_errors

HELP = {
    "ca": "the issuing subordinate CA, by its name in the definition (default: qualified)",
    "env": "environment: reads inventory/ENV/pki.yml (default: production)",
    "definition": "path of the PKI definition (overrides --env)",
    "out": "output directory (default: out/ENV)",
    "registry": "the CA's certificate registry (default: OUT/<ca>-registry.sqlite3)",
}


def _paths(env: str, definition: str | None, out: str | None, ca: str, registry: str | None) -> tuple[Path, Path,
                                                                                                      Path]:
    from ceremony.ca.registry import default_path

    out_dir = Path(out or f"out/{env}")
    return (Path(definition) if definition else Path("inventory") / env / "pki.yml", out_dir,
            Path(registry) if registry else default_path(out_dir, ca))


@task(help={**HELP, "profile": "end-entity profile name from the CA's 'profiles:' in the definition",
            "csr": "the subscriber's certificate signing request (PEM or DER)",
            "issuer_cert": "the issuing CA's certificate (default: its current generation, OUT/<ca>.g<n>.crt.pem "
                           "of the highest n, else OUT/<ca>.crt.pem)",
            "new_registry": "create the registry if it does not exist yet (first issuance only)",
            "pin_file": "read the PIN from this file (mode 0600) instead of the environment or a prompt",
            "rehearsal": "mark everything as a rehearsal (CN '(REHEARSAL)'; rehearsal output directory)"})
@operator_errors
def issue(c: Context, profile: str, csr: str, ca: str = "qualified", env: str = "production",
          definition: str | None = None, out: str | None = None, registry: str | None = None,
          issuer_cert: str | None = None, new_registry: bool = False, pin_file: str | None = None,
          rehearsal: bool = False) -> None:
    """Issue an end-entity certificate from a CSR, signed by the subordinate CA's HSM key, and register it."""
    from ceremony.ca.generations import current_certificate_path
    from ceremony.ca.registry import Registry
    from ceremony.ceremonies.issuance import issue_certificate
    from ceremony.common.manifest import Manifest
    from ceremony.definition.model import load_definition
    from ceremony.transcript.recorder import ConsoleRecorder

    pki, out_dir, reg_path = _paths(env, definition, out, ca, registry)
    defn = load_definition(pki)
    manifest = Manifest(out_dir, rehearsal)  # refuses to mix rehearsal and production outputs
    with Registry.open(reg_path, create=new_registry) as reg:
        issued = issue_certificate(defn, ca, profile, Path(csr), out_dir, reg, ConsoleRecorder(rehearsal=rehearsal),
                                   issuer_cert_path=Path(issuer_cert) if issuer_cert
                                   else current_certificate_path(out_dir, ca),
                                   rehearsal=rehearsal, pin_file=pin_file, manifest=manifest)
    print(f"issued {issued.serial_hex} {issued.subject} ({profile}, until {issued.not_after:%Y-%m-%d}): "
          f"{issued.pem_path} {issued.der_path}")


@task(help={**HELP, "serial": "serial number in hexadecimal, as 'invoke ca.list' prints it",
            "reason": "RFC 5280 reason: unspecified, keyCompromise, cACompromise, affiliationChanged, superseded, "
                      "cessationOfOperation, certificateHold, privilegeWithdrawn, aACompromise",
            "invalidity_date": "when the key is known or suspected to have become unusable (ISO 8601, UTC if no "
                               "zone; not in the future)",
            "rehearsal": "the output directory holds rehearsal outputs"})
@operator_errors
def revoke(c: Context, serial: str, reason: str, invalidity_date: str | None = None, ca: str = "qualified",
           env: str = "production", definition: str | None = None, out: str | None = None,
           registry: str | None = None, rehearsal: bool = False) -> None:
    """Revoke a certificate in the registry; the next CRL (invoke crl.sign --ca CA --env ENV) carries it."""
    from ceremony.ca.registry import Registry, parse_invalidity_date, parse_reason, parse_serial_text
    from ceremony.ceremonies.issuance import mark_revoked
    from ceremony.common.manifest import MANIFEST_NAME, Manifest

    _, out_dir, reg_path = _paths(env, definition, out, ca, registry)
    number = parse_serial_text(serial)
    parse_reason(reason)  # the reason is checked before the registry is even opened
    inv = parse_invalidity_date(invalidity_date) if invalidity_date else None
    # A manifest of the other kind (rehearsal/production) is refused before the registry changes.
    manifest = Manifest(out_dir, rehearsal) if (out_dir / MANIFEST_NAME).exists() else None
    with Registry.open(reg_path) as reg:
        changed = reg.revoke(number, reason, invalidity_date=inv)
        record = reg.get(number)
    assert record is not None and record.revoked_at is not None
    if not changed:
        print(f"already revoked: {number:x} {record.subject} since {record.revoked_at:%Y-%m-%dT%H:%M:%SZ} "
              f"({record.reason}); nothing changed")
        return
    if manifest is not None:
        mark_revoked(manifest, number)
    extra = f", invalid since {record.invalidity_date:%Y-%m-%dT%H:%M:%SZ}" if record.invalidity_date else ""
    print(f"revoked {number:x} {record.subject} at {record.revoked_at:%Y-%m-%dT%H:%M:%SZ} ({reason}{extra}); "
          f"publish a CRL within 24 hours: {crl_sign_command(ca, env, definition, out, registry)}")


def crl_sign_command(ca: str, env: str, definition: str | None, out: str | None, registry: str | None) -> str:
    """The ``invoke crl.sign`` line that publishes what ``ca.revoke`` just recorded, options as given."""
    import shlex

    args = ["invoke", "crl.sign", "--ca", ca, "--env", env]
    for option, value in (("--definition", definition), ("--out", out), ("--registry", registry)):
        if value is not None:
            args += [option, value]
    return shlex.join(args)


@task(name="list", help={**HELP, "status": "show only 'good' or 'revoked' certificates"})
@operator_errors
def list_(c: Context, ca: str = "qualified", env: str = "production", definition: str | None = None,
          out: str | None = None, registry: str | None = None, status: str | None = None) -> None:
    """List the certificates in the registry: serial, subject, profile, status, expiry."""
    from rich.table import Table

    from ceremony.ca.registry import STATUSES, Registry
    from ceremony.common.display import make_console
    from ceremony.common.errors import RegistryError

    if status is not None and status not in STATUSES:
        raise RegistryError(f"--status {status!r} is not allowed (allowed: {', '.join(STATUSES)})")
    _, _, reg_path = _paths(env, definition, out, ca, registry)
    with Registry.open(reg_path) as reg:
        records = [r for r in reg.list() if status is None or r.status == status]
    table = Table(title=f"{reg_path} ({len(records)} certificate{'s' if len(records) != 1 else ''})")
    for col in ("serial", "subject", "profile", "status", "not after"):
        table.add_column(col, no_wrap=col in ("serial", "status", "not after"))
    for r in records:
        state = r.status if r.status == "good" else f"revoked {r.revoked_at:%Y-%m-%d} ({r.reason})"
        table.add_row(format(r.serial, "x"), r.subject, r.profile, state, f"{r.not_after:%Y-%m-%d}")
    make_console(width=200).print(table)


ns = Collection()
ns.add_task(issue)
ns.add_task(revoke)
ns.add_task(list_, name="list")
