"""``ceremony-ocsp-sign``: the scheduled OCSP pre-signing job of an online CA (beside ``ceremony-crl-sign``).

A scheduler needs an exit code and one line: 0 on success (the responses that were due signed and stored, or none
due), non-zero and ``error: <message>`` on stderr otherwise, never a traceback for an anticipated failure. The
metrics (``--metrics-dir``) are written on every run, failures included, with the reason. The PIN comes from
``--pin-file`` (mode 0600) or the variable the definition names; the job never prompts. ``--create-store`` makes
the CA's response store once, at setup (the job never makes one itself: a missing store is an error).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ceremony.ca.generations import key_of
from ceremony.common import crash_log
from ceremony.common.errors import CeremonyError
from ceremony.crl.job import find_ca_certificate
from ceremony.definition.model import load_definition
from ceremony.ocsp.job import VERIFY_RATE, metrics_for, ocsp_ca, run_ocsp_job, store_issuer_sha256
from ceremony.ocsp.metrics import write_ocsp_metrics
from ceremony.ocsp.store import ResponseStore
from ceremony.x509.files import load_issuer_certificate


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ceremony-ocsp-sign",
                                description="Pre-sign the OCSP responses of an online CA that are missing, due for "
                                            "refresh or whose certificate's status changed, with the delegated OCSP "
                                            "signer key in the HSM, and store them for the responder.")
    p.add_argument("--definition", required=True, help="the PKI definition (pki.yml)")
    p.add_argument("--ca", required=True, help="name of the online CA in the definition")
    p.add_argument("--registry", required=True, help="the CA's certificate registry (SQLite)")
    p.add_argument("--store", required=True, help="the CA's OCSP response store (SQLite), read by the responder")
    p.add_argument("--out", help="the ceremonies' output directory: <ca>.crt.pem and the signer certificates "
                   "<ca>.ocsp[.g<n>].crt.pem (default: the definition's directory)")
    p.add_argument("--ca-cert", help="the CA certificate (default: OUT/<ca>.crt.pem, then next to the definition, "
                   "then /var/lib/ceremony/<ca>/<ca>.crt.pem)")
    p.add_argument("--signer-cert", help="the OCSP signer certificate (default: the latest generation in OUT)")
    p.add_argument("--pin-file", help="file (mode 0600) holding the user PIN of the CA's token")
    p.add_argument("--workers", type=int, default=0, help="parallel PKCS#11 sessions (default: one per CPU)")
    p.add_argument("--metrics-dir", help="write ceremony_ocsp_<ca>.prom here (node-exporter textfile collector)")
    p.add_argument("--timings", action="store_true", help="also print the time of each step and the peak memory")
    p.add_argument("--latch-dir", help="where the PIN latch lives, <dir>/.state/<ca>.pin-failed (default: the "
                   "store's directory; give the CRL job's --out to share its latch: the same token, the same PIN)")
    p.add_argument("--check-store", action="store_true", help="run SQLite's quick_check on the store first (reads "
                   "the whole file; for an operator's check after a disk problem)")
    p.add_argument("--verify-all", action="store_true", help="verify the signature of every response (default: "
                   "each session's first, every revocation and one in eight of the rest, drawn at random; every "
                   "response is parsed back and compared either way). Costs about half a P-384 signature each")
    p.add_argument("--create-store", action="store_true", help="make the empty response store (once, at setup); "
                   "signs nothing")
    return p


def create_store(definition: str | Path, ca_name: str, store: str | Path, out: str | Path | None = None,
                 ca_cert: str | Path | None = None) -> Path:
    """Make the CA's empty response store, bound to the CA's name and certificate."""
    defn = load_definition(definition)
    ocsp_ca(defn, ca_name)
    issuer = load_issuer_certificate(find_ca_certificate(defn, ca_name, ca_cert, out), ca_name)
    ResponseStore.create(store, ca_name, store_issuer_sha256(issuer)).close()
    return Path(store)


def metrics_key_generation(definition: str | Path, ca_name: str, ca_cert: str | Path | None,
                           out: str | Path | None) -> int:
    """The key generation a run signs for, which names its metrics file and labels its series: after a re-key each
    key's job (``--ca-cert`` its certificate) writes its own (:mod:`ceremony.ocsp.metrics`). Taken before the run, so
    that a failed run is reported under its key too: from the certificate when it can be read, else from the name
    ``<ca>.g<m>.crt.pem`` given (the role's units name each key's first certificate), else the first key."""
    try:
        path = find_ca_certificate(load_definition(definition), ca_name, ca_cert, out)
        return key_of(path.parent, ca_name, load_issuer_certificate(path, ca_name))[0]
    except (CeremonyError, OSError, ValueError):
        match = re.search(rf"(?:^|/){re.escape(ca_name)}\.g([0-9]+)\.crt\.pem$", str(ca_cert or ""))
        return int(match[1]) if match else 1


def ocsp_sign_main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.create_store:
        try:
            print(f"OCSP store of {args.ca!r} created: "
                  f"{create_store(args.definition, args.ca, args.store, args.out, args.ca_cert)}")
            return 0
        except CeremonyError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
    start = time.monotonic()
    key_generation = metrics_key_generation(args.definition, args.ca, args.ca_cert, args.out) if args.metrics_dir \
        else 1
    result = None
    error: BaseException | None = None
    code = 0
    try:
        result = run_ocsp_job(args.definition, args.ca, args.registry, args.store, ceremony_out=args.out,
                              ca_cert=args.ca_cert, signer_cert=args.signer_cert, pin_file=args.pin_file,
                              workers=args.workers or None, check_store=args.check_store,
                              latch_dir=args.latch_dir, verify_rate=1.0 if args.verify_all else VERIFY_RATE)
        print(result.summary())
        if args.timings:
            print(json.dumps({"seconds": {k: round(v, 3) for k, v in result.timings.items()},
                              "peak_mb": round(result.peak_mb), "workers": result.workers}))
    except CeremonyError as exc:
        error = exc
        print(f"error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except Exception as exc:  # one line naming the traceback's file; the metrics say a run failed
        error = exc
        print("error: " + crash_log.report(exc, f"ocsp-sign-{args.ca}", Path(args.store).parent), file=sys.stderr)
        code = crash_log.EXIT_CODE
    if args.metrics_dir:
        try:
            write_ocsp_metrics(args.metrics_dir, metrics_for(result, args.ca, time.monotonic() - start, error=error,
                                                             store_path=Path(args.store),
                                                             key_generation=key_generation))
        except OSError as exc:
            print(f"error: {args.metrics_dir}: cannot write the OCSP metrics: {exc.strerror}", file=sys.stderr)
            code = code or 1
    return code
