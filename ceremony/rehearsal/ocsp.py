"""Rehearsal stage: OCSP for every online CA with an ``ocsp`` section, after the CRL stage issued and revoked.

The signer ceremony (transcript) certifies the delegated signer key, the response store is made, the job signs a
response for every certificate of the registry, then the responder runs under gunicorn on a loopback port for the
length of one check: ``openssl ocsp`` must say good for each good end-entity certificate and revoked for the
revoked one; the rehearsal fails otherwise. The store sits at ``ocsp/<ca>.sqlite3``.

Manifest kinds: ``ocsp-signer-certificate`` (by the ceremony), ``ocsp-store``, ``ocsp-response`` (a sample: one
good and one revoked response per CA, format ``der``, with ``status``, ``serial`` (hex) and ``issuer``).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from ceremony.ca.registry import default_path
from ceremony.ceremonies.ocsp_signer import ocsp_signer_ceremony
from ceremony.common import child_process
from ceremony.common.errors import VerificationError
from ceremony.common.fileio import write_new
from ceremony.ocsp.cli import create_store
from ceremony.ocsp.job import metrics_for, run_ocsp_job
from ceremony.ocsp.metrics import write_ocsp_metrics
from ceremony.ocsp.responder import ISSUER_ENV, STORE_ENV
from ceremony.ocsp.store import ResponseStore
from ceremony.rehearsal.context import RehearsalContext

OCSP_DIR = "ocsp"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gunicorn_command(port: int, workers: int = 2) -> list[str]:
    """The responder's command line, as docs/ocsp.md gives it (gunicorn of this virtualenv)."""
    return [str(Path(sys.executable).with_name("gunicorn")), "--bind", f"127.0.0.1:{port}", "--workers",
            str(workers), "ceremony.ocsp.responder:create_app()"]


@contextlib.contextmanager
def responder(store: Path, issuer: Path, workers: int = 2, timeout: float = 20.0) -> Iterator[str]:
    """The responder under gunicorn on a free loopback port, for the length of the block; yields its URL."""
    port = free_port()
    env = {STORE_ENV: str(store), ISSUER_ENV: str(issuer), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(gunicorn_command(port, workers), env=child_process.minimal_env(env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise VerificationError(f"the OCSP responder did not start on 127.0.0.1:{port}: {err[-2000:]}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def openssl_ocsp(url: str, issuer: Path, cert: Path, root: Path) -> tuple[int, str]:
    """``openssl ocsp -issuer … -cert … -url … -CAfile root``: exit code and output."""
    run = child_process.run(["openssl", "ocsp", "-issuer", str(issuer), "-cert", str(cert), "-url", url,
                             "-CAfile", str(root), "-no_nonce"], capture_output=True, text=True, timeout=30)
    return run.returncode, (run.stdout + run.stderr).strip()


def rehearse(ctx: RehearsalContext) -> None:
    defn = ctx.definition
    model = defn.model
    ctx.manifest.reload()
    for ca_name, ca in model.cas.items():
        if ca.ocsp is None:
            continue
        with ctx.recorder("ocsp-signer-certification") as rec:
            signer = ocsp_signer_ceremony(defn, ca_name, ctx.out, rec, rehearsal=True, interactive=False)
        ctx.console.print(f"  OCSP signer of {ca_name!r}: generation {signer.generation}, valid until "
                          f"{signer.not_after:%Y-%m-%d %H:%M}Z")
        store = create_store(defn.path, ca_name, ctx.out / OCSP_DIR / f"{ca_name}.sqlite3", ctx.out)
        result = run_ocsp_job(defn, ca_name, default_path(ctx.out, ca_name), store, ceremony_out=ctx.out,
                              say=ctx.console.print)
        write_ocsp_metrics(ctx.out / "metrics", metrics_for(result, ca_name, result.timings.get("total", 0.0)))
        ctx.manifest.reload()
        ctx.manifest.add("ocsp-store", store, "sqlite3", ca=ca_name)
        certs = [a for a in ctx.manifest.artifacts
                 if a.get("kind") == "end-entity-certificate" and a.get("format") == "pem"]
        sample: dict[str, str] = {}
        with ResponseStore.open(store, read_only=True) as reader:
            for entry in certs:
                status = str(entry.get("status"))
                if status in sample:
                    continue
                found = reader.get(int(str(entry["serial"]), 16), "sha256")
                if found is None:
                    raise VerificationError(f"no OCSP response stored for certificate {entry['serial']}")
                path = write_new(ctx.out / OCSP_DIR / f"{ca_name}-{entry['serial']}.{status}.ocsp.der", found.der)
                ctx.manifest.add("ocsp-response", path, "der", status=status, serial=str(entry["serial"]),
                                 issuer=ca_name)
                sample[status] = str(entry["serial"])
        issuer = ctx.out / f"{ca_name}.crt.pem"
        root = ctx.out / f"{ca.issuer}.crt.pem"
        with responder(store, issuer, workers=1) as url:
            for entry in certs:
                code, output = openssl_ocsp(url, issuer, ctx.out / str(entry["path"]), root)
                expected = f": {entry.get('status')}"
                line = next((x for x in output.splitlines() if x.strip().endswith(str(entry.get("status")))
                             or ": good" in x or ": revoked" in x), output)
                ctx.console.print(f"  openssl ocsp {Path(str(entry['path'])).name}: {line.strip()} (expected: "
                                  f"{entry.get('status')})")
                if code != 0 or expected not in output or "Response verify OK" not in output:
                    raise VerificationError(f"openssl ocsp does not report {entry['path']} as {entry.get('status')}: "
                                            f"{output}")
