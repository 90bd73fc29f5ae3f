"""Console commands for schedulers: ``ceremony-crl-sign`` (the subordinate CA's CRL job).

A scheduler needs an exit code and one line: 0 on success (a CRL signed, or the published one
still current), non-zero and ``error: <message>`` on stderr otherwise, never a traceback for an
anticipated failure. The Prometheus metrics are written on every run, failures included, so the
monitoring sees a failed run at once. The PIN comes from ``--pin-file`` (mode 0600) or from the
environment variable the definition names; the job never prompts.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .errors import CeremonyError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ceremony-crl-sign",
                                description="Sign and publish the CRL of a subordinate CA when one is due.")
    p.add_argument("--definition", required=True, help="the PKI definition (pki.yml)")
    p.add_argument("--ca", required=True, help="name of the subordinate CA in the definition")
    p.add_argument("--registry", required=True, help="the CA's certificate registry (SQLite)")
    p.add_argument("--out", required=True, help="publication directory: <basename of crl_url> (DER) and .pem")
    p.add_argument("--pin-file", help="file (mode 0600) holding the user PIN of the CA's token")
    p.add_argument("--metrics-dir", help="write ceremony_crl_<ca>.prom here (node-exporter textfile collector)")
    p.add_argument("--ca-cert", help="the CA certificate (default: <definition dir>/<ca>.crt.pem, then "
                   "/var/lib/ceremony/<ca>/<ca>.crt.pem)")
    p.add_argument("--force", action="store_true", help="sign a new CRL even if the published one is current")
    p.add_argument("--timings", action="store_true", help="also print the time and peak memory of each step (JSON)")
    p.add_argument("--registry-timeout", type=float, default=10.0,
                   help="seconds to wait for a locked registry (default 10)")
    return p


def crl_sign_main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .crl_job import metrics_for, publication_names, run_crl_job, write_job_metrics
    from .definition import load_definition

    start = time.monotonic()
    result = None
    der_path: Path | None = None
    code = 0
    try:
        defn = load_definition(args.definition)
        if args.ca in defn.model.cas:
            der_path = Path(args.out) / publication_names(defn.model.cas[args.ca])[0]
        result = run_crl_job(defn, args.ca, args.registry, args.out, pin_file=args.pin_file, ca_cert=args.ca_cert,
                             force=args.force, registry_timeout=args.registry_timeout)
        print(result.summary())
        if args.timings:
            import json

            print(json.dumps({"seconds": {k: round(v, 3) for k, v in result.timings.items()},
                              "peak_mb": {k: round(v) for k, v in result.peak_mb.items()}}))
    except CeremonyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except Exception as exc:  # the scheduler still gets one line and the metrics a failure
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    if args.metrics_dir:
        try:
            write_job_metrics(args.metrics_dir, metrics_for(result, args.ca, der_path, time.monotonic() - start))
        except CeremonyError as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = code or exc.exit_code
    return code


if __name__ == "__main__":
    sys.exit(crl_sign_main())
