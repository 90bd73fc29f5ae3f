"""``invoke bench.ocsp --certificates N``: the OCSP pre-signing job and the responder, beside their ceilings.

One run, figures side by side (issue 13, "Speed and scale"):

* the HSM's raw signing rate: a plain python-pkcs11 loop of the job's mechanism (SHA-384 on the host, ``CKM_ECDSA``
  on the digest, P-384 SoftHSM key), in as many sessions (threads) as the job's workers;
* the job: the real ``ceremony-ocsp-sign`` in a fresh process (wall time, peak RSS) signing every response of a
  registry of N certificates (1 % revoked) for the definition's CertID hashes; responses per second and the ratio to
  the raw rate;
* the responder under gunicorn (the documented command line) against loopback with ``ab`` (apache2-utils), a bounded
  request count, beside the same gunicorn serving a static body of the same size, and nginx serving that body as a
  static file (the ceiling the issue names: nginx from the distribution, started for the run on a loopback port with
  a throwaway configuration under the run's temporary directory, stopped after it).

Setup (not timed): a root and a qualified CA on fresh SoftHSM tokens (rehearsal ceremonies), the OCSP signer
ceremony, the store. The machine's load average before and after the measurements is printed with the figures: on a
machine of two CPUs another process's work changes every figure.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from invoke import Context, task

from ._cli import operator_errors
from .bench_tasks import bench_hierarchy, measure

_STATIC_APP = ("import os\n"
               "BODY = open(os.environ['BENCH_STATIC_FILE'], 'rb').read()\n"
               "def app(environ, start_response):\n"
               "    start_response('200 OK', [('Content-Type', 'application/ocsp-response'),\n"
               "                              ('Content-Length', str(len(BODY)))])\n"
               "    return [BODY]\n")


def _cas_setup(work: Path) -> dict[str, Path]:
    """The benchmarks' hierarchy (with the testing definition's ``ocsp``) and an empty registry."""
    from ceremony.ca.registry import Registry

    pki = bench_hierarchy(work)
    Registry.open(work / "registry.sqlite3", create=True).close()
    return {"definition": pki, "registry": work / "registry.sqlite3"}


def _fill_registry(path: Path, n: int, seed: int = 2026) -> int:
    """N good certificates, 1 % of them revoked; returns how many were revoked."""
    from ceremony.ca.registry import CertRecord, Registry

    rnd = random.Random(seed)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    serials: set[int] = set()
    while len(serials) < n:
        serials.add(rnd.getrandbits(159) | 1 << 120)
    revoked = 0
    with Registry.open(path) as reg:
        reg.add_many(CertRecord(serial=s, subject="CN=bench", profile="qes-natural-person",
                                not_before=now - dt.timedelta(days=30), not_after=now + dt.timedelta(days=1000),
                                sha256="00" * 32, status="good") for s in sorted(serials))
        for s in sorted(serials)[:: 100]:
            reg.revoke(s, "keyCompromise")
            revoked += 1
    return revoked


def _raw_rate(module: str, token_label: str, pin: str, key_label: str, threads: int, seconds: float
              ) -> tuple[float, float]:
    """Signatures per second of a bare python-pkcs11 loop (digest on the host, CKM_ECDSA), ``threads`` sessions, and
    the CPU seconds one signature took (this process's CPU time over the loop: SoftHSM signs in the calling thread).
    The CPU figure hardly moves with the machine's load, the rate does."""
    import hashlib

    import pkcs11
    from pkcs11 import KeyType, Mechanism, ObjectClass

    from ceremony.hsm.session import load_module

    lib = load_module(module)
    token = next(t for t in lib.get_tokens() if t.label.strip() == token_label)
    first = token.open(user_pin=pin)
    sessions = [first] + [token.open() for _ in range(threads - 1)]
    counts = [0] * threads
    digest = hashlib.sha384(b"x" * 200).digest()
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        key = sessions[i].get_key(object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.EC, label=key_label)
        while time.perf_counter() < stop:
            key.sign(digest, mechanism=Mechanism.ECDSA)
            counts[i] += 1

    start, cpu = time.perf_counter(), time.process_time()
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    for s in reversed(sessions):
        with contextlib.suppress(pkcs11.exceptions.PKCS11Error):
            s.close()
    return sum(counts) / elapsed, cpu / max(1, sum(counts))


def _ab(url: str, requests: int, concurrency: int) -> dict[str, float]:
    run = subprocess.run(["ab", "-q", "-n", str(requests), "-c", str(concurrency), url], capture_output=True,
                         text=True, timeout=300)
    if run.returncode != 0:
        raise SystemExit(f"error: ab failed: {run.stderr.strip() or run.stdout[-500:]}")
    text = run.stdout
    failed = int(re.search(r"Failed requests:\s+(\d+)", text).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests per second:\s+([0-9.]+)", text).group(1))  # type: ignore[union-attr]
    pct = {int(m[0]): float(m[1]) for m in re.findall(r"^\s+(\d+)%\s+(\d+)", text, re.M)}
    return {"requests_per_second": rps, "p50_ms": pct.get(50, 0.0), "p99_ms": pct.get(99, 0.0), "failed": failed}


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    """Until something accepts on the loopback port; a server that exits first is an error naming it."""
    for _ in range(200):
        if proc.poll() is not None:
            raise SystemExit(f"error: {what} exited at start (code {proc.returncode})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"error: {what} does not accept connections on 127.0.0.1:{port} after 10 s")


@contextlib.contextmanager
def _gunicorn(app: str, env: dict[str, str], workers: int) -> Any:
    from ceremony.rehearsal.ocsp import free_port

    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("gunicorn")), "--bind", f"127.0.0.1:{port}",
                             "--workers", str(workers), app], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, proc, "gunicorn")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


#: nginx for one run: everything (pid, logs, temporary directories) under the run's directory, loopback only, the
#: same two workers as the responder's gunicorn, the body served as a file with the responder's Content-Type.
_NGINX_CONF = """{user}worker_processes 2;
pid "{base}/nginx.pid";
error_log "{base}/error.log" warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path "{base}/body";
    proxy_temp_path "{base}/proxy";
    fastcgi_temp_path "{base}/fastcgi";
    uwsgi_temp_path "{base}/uwsgi";
    scgi_temp_path "{base}/scgi";
    default_type application/ocsp-response;
    server {{
        listen 127.0.0.1:{port};
        root "{root}";
        location / {{ }}
    }}
}}
"""


def nginx_binary() -> str:
    """nginx's path; a clear error before any setup when it is missing (scripts/bootstrap.sh installs it)."""
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).is_file()), None)
    if found is None:
        raise SystemExit("error: nginx is not installed (the static-file ceiling of bench.ocsp): run "
                         "scripts/bootstrap.sh, which installs nginx-light")
    return found


@contextlib.contextmanager
def nginx_static(root: Path, base: Path) -> Any:
    """nginx serving ``root`` on a free loopback port for the duration of the block, with a throwaway configuration
    under ``base``; stopped (SIGTERM to the master it started) when the block ends. As root its workers run as root:
    the files are under a private temporary directory that another user cannot read."""
    from ceremony.rehearsal.ocsp import free_port

    base.mkdir(parents=True)
    port = free_port()
    user = "user root root;\n" if os.geteuid() == 0 else ""
    conf = base / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(user=user, base=base, port=port, root=root), encoding="utf-8")
    binary = nginx_binary()
    check = subprocess.run([binary, "-t", "-q", "-p", str(base), "-c", str(conf), "-e", str(base / "error.log")],
                           capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise SystemExit(f"error: nginx refuses the bench configuration {conf}: {check.stderr.strip()}")
    proc = subprocess.Popen([binary, "-p", str(base), "-c", str(conf), "-e", str(base / "error.log"), "-g",
                             "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, proc, f"nginx (log {base / 'error.log'})")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def bench_ocsp(certificates: int, base: Path, requests: int, workers: int, verify_all: bool = False
               ) -> dict[str, Any]:
    import base64
    import urllib.parse

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp

    from ceremony.ceremonies.ocsp_signer import ocsp_signer_ceremony
    from ceremony.common.display import make_console
    from ceremony.definition.model import load_definition
    from ceremony.ocsp.cli import create_store
    from ceremony.ocsp.store import ResponseStore
    from ceremony.transcript.recorder import ConsoleRecorder

    nginx_binary()
    t = time.perf_counter()
    suite = _cas_setup(base)
    defn = load_definition(suite["definition"])
    out = suite["definition"].parent
    quiet = ConsoleRecorder(rehearsal=True, console=make_console(file=open(os.devnull, "w")))  # noqa: SIM115
    ocsp_signer_ceremony(defn, "qualified", out, quiet, rehearsal=True, interactive=False)
    revoked = _fill_registry(suite["registry"], certificates)
    store = create_store(suite["definition"], "qualified", base / "ocsp.sqlite3", out)
    setup = time.perf_counter() - t
    load_before = os.getloadavg()
    ca = defn.model.cas["qualified"]
    assert ca.ocsp is not None
    raw_args = (ca.hsm.module, ca.hsm.token.label or "", os.environ[ca.hsm.pin_env or ""],
                ca.hsm.ocsp_signer_label(ca.ocsp), workers, 5.0)
    raw_before, cpu_before = _raw_rate(*raw_args)
    cmd = [str(Path(sys.executable).parent / "ceremony-ocsp-sign"), "--definition", str(suite["definition"]),
           "--ca", "qualified", "--registry", str(suite["registry"]), "--store", str(store), "--out", str(out),
           "--workers", str(workers), "--timings", *(["--verify-all"] if verify_all else [])]
    job = measure(cmd, env=dict(os.environ))
    if job["rc"] != 0:
        raise SystemExit(f"error: ceremony-ocsp-sign failed: {job['stderr'].strip()}")
    responses = certificates * len(ca.ocsp.cert_id_hashes)
    # The raw rate again right after the job: on a shared machine the load changes within a minute, and the ratio is
    # taken to the mean of the two measurements that frame the job.
    raw_after, cpu_after = _raw_rate(*raw_args)
    raw = (raw_before + raw_after) / 2
    again = measure(cmd, env=dict(os.environ))  # nothing due: the cost of a scheduled run with no change
    # The responder: one good certificate's SHA-1 request over GET, and the same gunicorn on a static body.
    issuer = x509.load_pem_x509_certificate((out / "qualified.crt.pem").read_bytes())
    with ResponseStore.open(store, read_only=True) as s:
        serial, der = s.conn.execute("SELECT serial, der FROM responses WHERE status = 'good' AND hash = 'sha1' "
                                     "LIMIT 1").fetchone()
    from ceremony.ocsp.encoding import issuer_hashes

    name_hash, key_hash = issuer_hashes(issuer, "sha1")
    req = ocsp.OCSPRequestBuilder().add_certificate_by_hash(name_hash, key_hash, int.from_bytes(serial, "big"),
                                                             hashes.SHA1()).build()
    path = "/" + urllib.parse.quote(base64.b64encode(req.public_bytes(serialization.Encoding.DER)).decode(), safe="")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CEREMONY_OCSP_STORE": str(store),
           "CEREMONY_OCSP_ISSUER": str(out / "qualified.crt.pem")}
    with _gunicorn("ceremony.ocsp.responder:create_app()", env, 2) as url:
        responder = _ab(url + path, requests, 8)
    static_dir = base / "static"
    static_dir.mkdir()
    static = static_dir / "static.der"
    static.write_bytes(bytes(der))
    (base / "bench_static_app.py").write_text(_STATIC_APP)
    with _gunicorn("bench_static_app:app", {**env, "BENCH_STATIC_FILE": str(static), "PYTHONPATH": str(base)},
                   2) as url:
        ceiling = _ab(url + "/static.der", requests, 8)
    with nginx_static(static_dir, base / "nginx") as url:
        nginx = _ab(url + "/static.der", requests, 8)

    def timings(run: dict[str, Any]) -> dict[str, Any]:
        lines = run["stdout"].strip().splitlines()
        return json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}

    return {"certificates": certificates, "revoked": revoked, "responses": responses, "workers": workers,
            "setup_seconds": setup, "raw_signatures_per_second": raw,
            "raw_before": raw_before, "raw_after": raw_after, "raw_cpu_per_signature": (cpu_before + cpu_after) / 2,
            "job": job, "job_steps": timings(job),
            "nothing_due": again, "responder": responder, "static": ceiling, "nginx": nginx, "requests": requests,
            "response_bytes": len(der), "load_before": load_before, "load": os.getloadavg(), "cpus": os.cpu_count(),
            "verify_all": verify_all, "verified": _verified(job)}


def _verified(run: dict[str, Any]) -> int | None:
    """How many signatures the job verified, from its summary line."""
    found = re.search(r"(\d+) signature\(s\) verified", run["stdout"])
    return int(found.group(1)) if found else None


@task(help={"certificates": "certificates in the registry (default 10000; at most 1,000,000, and never above "
                            "100,000 on a shared machine)",
            "requests": "requests sent to the responder and to the static ceiling (default 5000)",
            "workers": "PKCS#11 sessions of the job and of the raw loop (default: one per CPU)",
            "verify_all": "run the job with --verify-all (every signature verified; default: the job's sample)",
            "json_out": "also write the results as JSON to this file"})
@operator_errors
def ocsp(c: Context, certificates: int = 10_000, requests: int = 5000, workers: int = 0, verify_all: bool = False,
         json_out: str | None = None) -> None:
    """Pre-sign OCSP responses for N certificates beside the raw HSM rate; the responder beside a static body."""
    if not 1 <= certificates <= 1_000_000:
        raise SystemExit(f"error: --certificates {certificates}: allowed from 1 to 1,000,000")
    with tempfile.TemporaryDirectory(prefix="bench-ocsp-") as tmp:
        r = bench_ocsp(certificates, Path(tmp), requests, workers or os.cpu_count() or 1, verify_all)
    job, raw = r["job"], r["raw_signatures_per_second"]
    rate = r["responses"] / job["wall"]
    print(f"OCSP: {r['certificates']:,} certificates ({r['revoked']:,} revoked), {r['responses']:,} responses "
          f"({r['response_bytes']} bytes each); {r['workers']} PKCS#11 session(s); setup {r['setup_seconds']:.1f} s")
    print(f"load average (1, 5, 15 min) on {r['cpus']} CPUs: before {', '.join(f'{x:.2f}' for x in r['load_before'])}"
          f"; after {', '.join(f'{x:.2f}' for x in r['load'])}")
    print(f"{'raw python-pkcs11 CKM_ECDSA P-384':36}{raw:>10.0f} signatures/s  (mean of {r['raw_before']:.0f} "
          f"before and {r['raw_after']:.0f} after the job, 5 s each)")
    print(f"{'ceremony-ocsp-sign (whole run)':36}{rate:>10.0f} responses/s  {job['wall']:.1f} s, peak RSS "
          f"{job['maxrss_kb'] / 1024:.0f} MB, ratio to raw {rate / raw:.2f}")
    job_cpu = job["cpu"] / r["responses"]
    print(f"{'':36}CPU per response {job_cpu * 1e6:.0f} µs (raw: {r['raw_cpu_per_signature'] * 1e6:.0f} µs a "
          f"signature): CPU ratio {r['raw_cpu_per_signature'] / job_cpu:.2f}, the figure the load moves least")
    print(f"{'':36}signatures verified: {r['verified']} of {r['responses']:,} "
          f"({'--verify-all' if r['verify_all'] else 'sampled'}; every response parsed back)")
    print(f"{'ceremony-ocsp-sign, nothing due':36}{r['nothing_due']['wall']:>10.2f} s, peak RSS "
          f"{r['nothing_due']['maxrss_kb'] / 1024:.0f} MB")
    if r["job_steps"]:
        steps = r["job_steps"]["seconds"]
        print("job steps (s): " + ", ".join(f"{k} {v}" for k, v in steps.items()))
        if steps.get("sign+store"):
            step_rate = r["responses"] / steps["sign+store"]
            print(f"{'ceremony-ocsp-sign, sign+store step':36}{step_rate:>10.0f} responses/s  ratio to raw "
                  f"{step_rate / raw:.2f} (without the process's start and checks)")
    for label, key in (("responder (gunicorn, 2 workers)", "responder"), ("static body (same gunicorn)", "static"),
                       ("static file (nginx, 2 workers)", "nginx")):
        x = r[key]
        print(f"{label:36}{x['requests_per_second']:>10.0f} requests/s  p50 {x['p50_ms']:.0f} ms, p99 "
              f"{x['p99_ms']:.0f} ms, failed {x['failed']} (ab -n {r['requests']} -c 8)")
    if json_out:
        Path(json_out).write_text(json.dumps(r, indent=2, default=str) + "\n", encoding="utf-8")
