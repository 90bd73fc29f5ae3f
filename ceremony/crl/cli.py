"""Console commands for schedulers: ``ceremony-crl-sign`` (the subordinate CA's CRL job) and
``ceremony-crl-probe`` (the published CRL fetched over HTTP and checked).

A scheduler needs an exit code and one line: 0 on success (a CRL signed, or the published one
still current and everything signing needs checked), non-zero and ``error: <message>`` on stderr
otherwise, never a traceback for an anticipated failure. The Prometheus metrics are written on
every run, failures included (with the reason), so the monitoring sees a failed run at once. The
PIN comes from ``--pin-file`` (mode 0600) or from the environment variable the definition names; the
job never prompts. Under cron, ``--syslog`` also sends the line to syslog (the journal on a systemd
host) under the tag ``ceremony-crl-sign@<ca>``, at priority err for a failure; the exit status is the
job's own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ceremony.common import crash_log
from ceremony.common.clock import add_clock_arguments, read_clock_or_none, resolve_policy
from ceremony.common.errors import CeremonyError
from ceremony.common.syslog import send_to_syslog
from ceremony.crl.job import (
    clear_pin_latch,
    metrics_for,
    pin_latch_path,
    publication_names,
    run_crl_job,
    write_job_metrics,
)
from ceremony.crl.probe import probe_all
from ceremony.definition.model import load_definition


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ceremony-crl-sign",
                                description="Sign and publish the CRL of a subordinate CA when one is due; every run "
                                            "also checks the PIN source, the PKCS#11 module, the token, the login and "
                                            "the CA key.")
    p.add_argument("--definition", help="the PKI definition (pki.yml)")
    p.add_argument("--ca", required=True, help="name of the subordinate CA in the definition")
    p.add_argument("--registry", help="the CA's certificate registry (SQLite)")
    p.add_argument("--out", required=True, help="publication directory: <basename of crl_url> (DER) and .pem, "
                   "and <stem>-p<i>.crl (.pem) for each CRL partition (crl.partitions)")
    p.add_argument("--pin-file", help="file (mode 0600) holding the user PIN of the CA's token")
    p.add_argument("--metrics-dir", help="write ceremony_crl_<ca>.prom here (node-exporter textfile collector)")
    p.add_argument("--ca-cert", help="the CA certificate (default: <definition dir>/<ca>.crt.pem, then "
                   "/var/lib/ceremony/<ca>/<ca>.crt.pem)")
    p.add_argument("--force", action="store_true", help="sign a new CRL even if the published one is current")
    p.add_argument("--timings", action="store_true", help="also print the time and peak memory of each step (JSON)")
    p.add_argument("--registry-timeout", type=float, default=10.0,
                   help="seconds to wait for a locked registry (default 10)")
    p.add_argument("--syslog", action="store_true",
                   help="also send the result line to syslog, tag ceremony-crl-sign@<ca> (for cron)")

    add_clock_arguments(p, "sign")
    p.add_argument("--clear-pin-latch", action="store_true",
                   help="remove the PIN latch <out>/.state/<ca>.pin-failed set when the token refused the PIN, after "
                        "correcting the PIN; needs only --ca and --out; signs nothing")
    return p


def _clear_pin_latch(args: argparse.Namespace) -> int:
    latch = clear_pin_latch(args.out, args.ca)
    if latch is None:
        line = f"no PIN latch for {args.ca!r} ({pin_latch_path(args.out, args.ca)}); nothing to clear"
    else:
        line = (f"PIN latch of {args.ca!r} cleared ({latch.describe()}); the next run tries the PIN once: run it now "
                f"(systemctl start ceremony-crl-sign@{args.ca}.service) and read its result")
    print(line)
    if args.syslog:
        send_to_syslog(f"ceremony-crl-sign@{args.ca}", "notice", [line])
    return 0


def crl_sign_main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.clear_pin_latch:
        try:
            return _clear_pin_latch(args)
        except CeremonyError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
    missing = [f"--{name}" for name in ("definition", "registry") if getattr(args, name) is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")

    start = time.monotonic()
    result = None
    error: BaseException | None = None
    der_path: Path | None = None
    code = 0
    said: list[str] = []
    errors: list[str] = []
    try:
        defn = load_definition(args.definition)
        if args.ca in defn.model.cas:
            der_path = Path(args.out) / publication_names(defn.model.cas[args.ca])[0]
        clock = resolve_policy(args.require_clock_sync, args.max_clock_error, args.clock_config)
        result = run_crl_job(defn, args.ca, args.registry, args.out, pin_file=args.pin_file, ca_cert=args.ca_cert,
                             force=args.force, registry_timeout=args.registry_timeout, clock=clock)
        said.append(result.summary())
        if args.timings:
            said.append(json.dumps({"seconds": {k: round(v, 3) for k, v in result.timings.items()},
                                    "peak_mb": {k: round(v) for k, v in result.peak_mb.items()}}))
    except CeremonyError as exc:
        error = exc
        errors.append(f"error: {exc}")
        code = exc.exit_code
    except Exception as exc:  # the scheduler gets one line naming the traceback's file; the metrics a failure
        error = exc
        errors.append("error: " + crash_log.report(exc, f"crl-sign-{args.ca}", Path(args.out) / ".state"))
        code = crash_log.EXIT_CODE
    if args.metrics_dir:
        try:
            write_job_metrics(args.metrics_dir, metrics_for(result, args.ca, der_path, time.monotonic() - start,
                                                            error=error, clock=read_clock_or_none()))
        except CeremonyError as exc:
            errors.append(f"error: {exc}")
            code = code or exc.exit_code
    for line in said:
        print(line)
    for line in errors:
        print(line, file=sys.stderr)
    if args.syslog:
        tag = f"ceremony-crl-sign@{args.ca}"
        send_to_syslog(tag, "info", said)
        send_to_syslog(tag, "err", errors)
    return code


def _probe_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ceremony-crl-probe",
                                description="Fetch a CA's published CRL over HTTP, as a relying party does, check it "
                                            "(status, content type, issuer, signature with the CA certificate, "
                                            "nextUpdate) and write Prometheus textfile metrics.")
    p.add_argument("--ca", required=True, help="name of the CA (the metrics' ca label)")
    p.add_argument("--definition", help="the PKI definition: the CA's crl_url and certificate when not given")
    p.add_argument("--url", help="the CRL's URL (default: the CA's crl_url in the definition)")
    p.add_argument("--publisher", action="append", default=[],
                   help="connect to this address (host or host:port) instead of resolving the URL's host; the URL's "
                        "host is still sent as Host. Repeat it for every publication server")
    p.add_argument("--ca-cert", help="the CA certificate (PEM or DER; default as for ceremony-crl-sign)")
    p.add_argument("--partitions", type=int, help="the CA's crl.partitions: also probe partition URLs 0 … N-1 formed "
                   "from the URL (default: the definition's; none without --definition)")
    p.add_argument("--ocsp-url", help="the CA's ocsp.url (default: the definition's)")
    p.add_argument("--ocsp-cert", action="append", default=[],
                   help="a certificate the CA issued: ask the OCSP responder of the key that issued it (the OCSP "
                   "URL, with .g<m> for a re-key's key m) about it and check the answer; repeat it for one "
                   "certificate of each key; without it the responder is not probed")
    p.add_argument("--metrics-dir", help="write ceremony_crl_probe_<ca>.prom here (node-exporter textfile collector)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds for each fetch (default 10)")
    p.add_argument("--syslog", action="store_true",
                   help="also send the result lines to syslog, tag ceremony-crl-probe@<ca> (for cron)")
    return p


def crl_probe_main(argv: Sequence[str] | None = None) -> int:
    parser = _probe_parser()
    args = parser.parse_args(argv)
    if args.definition is None and (args.url is None or args.ca_cert is None):
        parser.error("give --definition, or both --url and --ca-cert")
    if args.partitions is not None and not 0 <= args.partitions <= 256:
        parser.error(f"--partitions {args.partitions}: allowed 0 to 256 (the definition's crl.partitions)")

    said: list[str] = []
    errors: list[str] = []
    code = 0
    try:
        results = probe_all(args.ca, definition=args.definition, url=args.url, publishers=args.publisher,
                            ca_cert=args.ca_cert, metrics_dir=args.metrics_dir, timeout=args.timeout,
                            partitions=args.partitions, ocsp_url=args.ocsp_url, ocsp_cert=args.ocsp_cert or None)
        for r in results:
            (said if r.success else errors).append(r.message)
        code = 0 if all(r.success for r in results) else 1
    except CeremonyError as exc:
        errors.append(f"error: {exc}")
        code = exc.exit_code
    for line in said:
        print(line)
    for line in errors:
        print(line, file=sys.stderr)
    if args.syslog:
        send_to_syslog(f"ceremony-crl-probe@{args.ca}", "info", said)
        send_to_syslog(f"ceremony-crl-probe@{args.ca}", "err", errors)
    return code


if __name__ == "__main__":
    sys.exit(crl_sign_main())
