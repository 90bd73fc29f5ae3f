"""CRL tasks: sign the subordinate CA's CRL now, the root CRL batch ceremony, publish the root CRL in force.

Thin: the engine is :mod:`ceremony.crl.job` (the same code the scheduler runs as
``ceremony-crl-sign``) and :mod:`ceremony.ceremonies.root_crl`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from invoke import Collection, Context, task

from ._cli import operator_errors
from .ceremony_tasks import ANSWERS_HELP, HELP, LANG_HELP, _definition, _load, _out, _record, preflight_or_stop


@task(help={"ca": "name of the subordinate CA", "env": HELP["env"], "definition": HELP["definition"],
            "out": "the ceremonies' output directory, as for ca.issue and ca.revoke (default out/ENV)",
            "registry": "the CA's certificate registry (default OUT/<ca>-registry.sqlite3)",
            "crl_dir": "publication directory of the CRL (default OUT/crl)", "pin_file": HELP["pin_file"],
            "ca_cert": "the CA certificate (default OUT/<ca>.crt.pem, where the signing ceremony writes it; then "
                       "<ca>.crt.pem next to the definition, then /var/lib/ceremony/<ca>/<ca>.crt.pem)",
            "metrics_dir": "also write the Prometheus textfile metrics here",
            "force": "sign even if the published CRL is current"})
@operator_errors
def sign(c: Context, ca: str, env: str = "production", definition: str | None = None, out: str | None = None,
         registry: str | None = None, crl_dir: str | None = None, pin_file: str | None = None,
         ca_cert: str | None = None, metrics_dir: str | None = None, force: bool = False) -> None:
    """Sign and publish the CRL of a subordinate CA now (when due, or with --force)."""
    import time

    from ceremony.ca.registry import default_path
    from ceremony.crl.job import metrics_for, run_crl_job, write_job_metrics

    base = Path(out or f"out/{env}")
    start = time.monotonic()
    result = None
    error: BaseException | None = None
    try:
        result = run_crl_job(_definition(env, definition), ca, registry or default_path(base, ca),
                             crl_dir or base / "crl", pin_file=pin_file, ca_cert=ca_cert, force=force,
                             interactive=True, ceremony_out=base)
        print(result.summary())
    except BaseException as exc:  # the metrics say why, like the scheduled job's
        error = exc
        raise
    finally:
        if metrics_dir:
            write_job_metrics(metrics_dir, metrics_for(result, ca, result.der_path if result else None,
                                                       time.monotonic() - start, error=error))


@task(name="root-batch", help={**HELP, "count": "how many CRLs to pre-sign (default 0: the definition's batch_count)",
                               "start": "thisUpdate of the first CRL, ISO 8601 (default: now)",
                               "revoke": "certificate of a subordinate CA to revoke (PEM or DER)",
                               "reason": "revocation reason (default keyCompromise)",
                               "invalidity_date": "when the key is known or suspected compromised, ISO 8601",
                               "issuer_cert": "the root certificate (default OUT/<root>.crt.pem, with --successor "
                                              "OUT/<root>.g<n>.crt.pem)",
                               "successor": "sign the successor root's CRLs (cas.<root>.successor: its key, its "
                                            "crl_url, its own numbers and files crl/<root>.g<n>-<number>.crl)",
                               "final": "the root's final CRL (nextUpdate 99991231235959Z, no batch after it) and "
                                        "its archive; needs cas.<root>.termination and every CA certificate of the "
                                        "root revoked or expired (script root-termination)",
                               "answers": ANSWERS_HELP, "lang": LANG_HELP})
@operator_errors
def root_batch(c: Context, env: str | None = None, definition: str | None = None, out: str | None = None,
               count: int = 0, start: str | None = None, revoke: str | None = None,
               reason: str = "keyCompromise", invalidity_date: str | None = None, issuer_cert: str | None = None,
               pin_file: str | None = None, rehearsal: bool = False, answers: str | None = None,
               lang: str | None = None, successor: bool = False, final: bool = False) -> None:
    """Root CRL ceremony: pre-sign a batch of root CRLs, optionally revoking a subordinate CA certificate; with
    --successor for the successor root; with --final the root's last CRL and its archive."""
    from ceremony.ceremonies.root_crl import (
        ROOT_TERMINATION,
        Revocation,
        check_root_batch,
        root_crl_batch_ceremony,
        root_signer,
    )
    from ceremony.common.errors import DefinitionError
    from ceremony.transcript.summary import manifest_snapshot, show_summary

    def when(text: str | None, option: str) -> dt.datetime | None:
        if text is None:
            return None
        try:
            value = dt.datetime.fromisoformat(text)
        except ValueError:
            raise DefinitionError("command line", option, f"{text!r} is not a date",
                                  "ISO 8601, e.g. 2027-01-01T00:00:00Z") from None
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)

    defn = _load(env, definition, rehearsal)
    out_dir = _out(env, out, defn)
    revocations = [Revocation(revoke, reason, when(invalidity_date, "--invalidity-date"))] if revoke else []
    first = when(start, "--start")  # bad options are refused before the transcript opens
    if final and (successor or count or start):
        bad = "--successor" if successor else "--count" if count else "--start"
        raise DefinitionError("command line", bad, "not with --final: the final CRL is the root in service's, one "
                              "CRL signed now", "--final alone (with --revoke, --issuer-cert, --pin-file)")
    signer = root_signer(defn, successor)  # a successor without its own URL is refused here, before the sign-in
    check_root_batch(defn, out_dir, rehearsal=rehearsal, successor=successor, final=final, revoke=revocations,
                     issuer_cert_path=issuer_cert)  # as every refusal that needs no token: no transcript opened
    script = ROOT_TERMINATION if final else "root-crl-batch"
    report = preflight_or_stop(defn, script, out_dir, rehearsal, lang, issuer_cert=issuer_cert,
                               pin_file=pin_file, ca=signer.name)
    before = manifest_snapshot(out_dir, rehearsal)
    with _record(script, defn, out_dir, rehearsal, answers, report, lang) as rec:
        batch = root_crl_batch_ceremony(defn, out_dir, rec, rehearsal=rehearsal, pin_file=pin_file,
                                        count=count or None, start=first, revoke=revocations,
                                        issuer_cert_path=issuer_cert, successor=successor, final=final)
    for crl in batch.crls:
        print(f"{'final ' if final else ''}root CRL {crl.number} of {signer.name}: "
              f"{crl.this_update:%Y-%m-%d %H:%M:%SZ} → {crl.next_update:%Y-%m-%d %H:%M:%SZ} "
              f"({crl.entries} entries) {crl.der_path}")
    if batch.archive is not None:
        print(f"root archive: {batch.archive}")
    show_summary(script, defn, out_dir, before, getattr(rec, "path", None), rehearsal, env=env,
                 definition=definition, out=out, lang=getattr(rec, "lang", "en"))


@task(name="publish-root", help={"env": HELP["env"], "definition": HELP["definition"],
                                  "batch_dir": "where the root CRL ceremonies wrote their crl/ directory "
                                               "(default out/ENV)",
                                  "out": "publication directory (default out/ENV/crl-published)",
                                  "metrics_dir": "also write ceremony_crl_<root>.prom here (also on failure), and "
                                                 "ceremony_crl_<root>.g<n>.prom for the successor's"})
@operator_errors
def publish_root(c: Context, env: str = "production", definition: str | None = None, batch_dir: str | None = None,
                 out: str | None = None, metrics_dir: str | None = None) -> None:
    """Publish the pre-signed root CRL in force (highest number whose thisUpdate has passed); where the definition
    names a successor root whose CRLs were signed, the successor's CRL in force too, at its own URL's file name."""
    from ceremony.ceremonies.root_crl import publish_root_crl, root_signer, successor_crls_exist
    from ceremony.crl.job import write_job_metrics
    from ceremony.crl.metrics import CrlMetrics
    from ceremony.definition.model import load_definition

    defn = load_definition(_definition(env, definition))
    batches = batch_dir or f"out/{env}"
    for successor in (False, True):
        if successor and not successor_crls_exist(defn, batches):
            continue  # before the successor's first root CRL ceremony there is nothing of it to publish
        name = root_signer(defn, successor).name
        try:
            result = publish_root_crl(defn, batches, out or f"out/{env}/crl-published", successor=successor)
        except Exception:
            if metrics_dir:
                write_job_metrics(metrics_dir, CrlMetrics(name, False))
            raise
        if metrics_dir:
            write_job_metrics(metrics_dir, CrlMetrics(name, True, result.number, result.entries,
                                                      result.next_update.timestamp() if result.next_update else None))
        state = "published" if result.changed else "already published"
        print(f"root CRL {result.number} of {name} {state}: {result.der_path} (nextUpdate "
              f"{result.next_update:%Y-%m-%dT%H:%M:%SZ})" if result.next_update else
              f"root CRL {result.number} of {name} {state}")


ns = Collection()
ns.add_task(sign)
ns.add_task(root_batch)
ns.add_task(publish_root)
