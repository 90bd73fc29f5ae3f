"""OCSP tasks: pre-sign the responses now (``ocsp.sign``, the job the scheduler runs as ``ceremony-ocsp-sign``), and
issue or renew the delegated OCSP signer certificate (``ocsp.signer``, a recorded ceremony).

Thin: the engine is :mod:`ceremony.ocsp.job` and :mod:`ceremony.ceremonies.ocsp_signer`.
"""

from __future__ import annotations

from pathlib import Path

from invoke import Collection, Context, task

from ._cli import operator_errors
from .ceremony_tasks import ANSWERS_HELP, HELP, LANG_HELP, _definition, _load, _out, _record


@task(help={"ca": "name of the online CA", "env": HELP["env"], "definition": HELP["definition"],
            "out": "the ceremonies' output directory: the CA and signer certificates (default out/ENV)",
            "registry": "the CA's certificate registry (default OUT/<ca>-registry.sqlite3)",
            "store": "the CA's OCSP response store (default OUT/ocsp/<ca>.sqlite3)", "pin_file": HELP["pin_file"],
            "workers": "parallel PKCS#11 sessions (default: one per CPU)",
            "metrics_dir": "also write ceremony_ocsp_<ca>.prom here",
            "create_store": "make the empty response store first (once, at setup)",
            "verify_all": "verify every response's signature (default: each session's first, every revocation and "
                          "one in eight of the rest; every response is parsed back either way)",
            "ca_cert": "the CA certificate of the key whose responses are signed (default OUT/<ca>.crt.pem, the "
                       "first key; after a re-key each key has its own store: docs/ocsp.md)"})
@operator_errors
def sign(c: Context, ca: str, env: str = "production", definition: str | None = None, out: str | None = None,
         registry: str | None = None, store: str | None = None, pin_file: str | None = None, workers: int = 0,
         metrics_dir: str | None = None, create_store: bool = False, verify_all: bool = False,
         ca_cert: str | None = None) -> None:
    """Pre-sign the OCSP responses that are missing, due for refresh or whose status changed."""
    import time

    from ceremony.ca.registry import default_path
    from ceremony.ocsp.cli import create_store as make_store
    from ceremony.ocsp.job import VERIFY_RATE, metrics_for, run_ocsp_job
    from ceremony.ocsp.metrics import write_ocsp_metrics

    base = Path(out or f"out/{env}")
    store_path = Path(store) if store else base / "ocsp" / f"{ca}.sqlite3"
    if create_store:
        made = make_store(_definition(env, definition), ca, store_path, base, ca_cert)
        print(f"OCSP store of {ca!r} created: {made}")
    start = time.monotonic()
    result = None
    error: BaseException | None = None
    try:
        result = run_ocsp_job(_definition(env, definition), ca, registry or default_path(base, ca), store_path,
                              ceremony_out=base, ca_cert=ca_cert, pin_file=pin_file, interactive=True,
                              workers=workers or None,
                              verify_rate=1.0 if verify_all else VERIFY_RATE)
        print(result.summary())
    except BaseException as exc:
        error = exc
        raise
    finally:
        if metrics_dir:
            write_ocsp_metrics(metrics_dir, metrics_for(result, ca, time.monotonic() - start, error=error,
                                                        store_path=store_path))


@task(help={**HELP, "ca": "the online CA whose OCSP signer is certified",
            "force": "renew now even when the signer certificate is not within its renewal margin",
            "metrics_dir": "also write ceremony_ocsp_signer_<ca>.prom (the signer certificate's expiry) here "
                           "(<ca>.g<m> for a re-key's key m, labelled key_generation)",
            "ca_cert": "the CA certificate whose key certifies the signer (default: the current generation, "
                       "OUT/<ca>.g<n>.crt.pem of the highest n, else OUT/<ca>.crt.pem)",
            "answers": ANSWERS_HELP, "lang": LANG_HELP})
@operator_errors
def signer(c: Context, ca: str, env: str | None = None, definition: str | None = None, out: str | None = None,
           pin_file: str | None = None, rehearsal: bool = False, force: bool = False, metrics_dir: str | None = None,
           answers: str | None = None, lang: str | None = None, ca_cert: str | None = None) -> None:
    """Issue the delegated OCSP signer certificate of an online CA, or renew it when it is due (a ceremony)."""
    import datetime as dt

    from ceremony.ca.generations import generation_stem
    from ceremony.ceremonies.ocsp_signer import SCRIPT, ocsp_signer_ceremony, signer_key_generation, signer_plan
    from ceremony.ocsp.metrics import write_signer_metrics

    defn = _load(env, definition, rehearsal)
    out_dir = _out(env, out, defn)
    cert = Path(ca_cert) if ca_cert else None
    key_generation = signer_key_generation(out_dir, ca, cert)  # type: ignore[arg-type]
    plan = signer_plan(defn, ca, out_dir, dt.datetime.now(dt.UTC), force,  # type: ignore[arg-type]
                       generation_stem(ca, key_generation))
    if not plan.due:
        print(f"{ca}: {plan.reason}; nothing to do")
        if metrics_dir and plan.current_not_after is not None:
            write_signer_metrics(metrics_dir, ca, plan.current_not_after.timestamp(), key_generation)
        return
    with _record(SCRIPT, defn, out_dir, rehearsal, answers, None, lang) as rec:
        result = ocsp_signer_ceremony(defn, ca, out_dir, rec, rehearsal=rehearsal, pin_file=pin_file,  # type: ignore
                                      force=force, ca_cert_path=cert)
    print(f"{ca}: OCSP signer certificate generation {result.generation} valid until "
          f"{result.not_after:%Y-%m-%dT%H:%M:%SZ}: {', '.join(str(p) for p in result.files.values())}")
    if metrics_dir:
        print(f"metrics: {write_signer_metrics(metrics_dir, ca, result.not_after.timestamp(), key_generation)}")


ns = Collection()
ns.add_task(sign)
ns.add_task(signer)
