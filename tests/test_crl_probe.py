"""ceremony-crl-probe: the published CRL fetched over real HTTP (a local server) as a relying party does.

The CRLs are signed by the real job on SoftHSM; the server answers like a publisher would, or like a
broken one: wrong status, wrong content type, not a CRL, another issuer, a bad signature, an expired
CRL. Each time the probe's exit status, its one line and its metrics say which.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from test_crl_health import parse_metrics
from test_crl_job import Pki, build_pki

from ceremony.crl.job import run_crl_job

pytestmark = pytest.mark.hsm
CA = "qualified"
URL = "http://pki.test.scse.ml/crl/qualified.crl"
PROBE = str(Path(sys.executable).parent / "ceremony-crl-probe")


class Site:
    """What the fake publisher serves: path → (status, content type, body); and the Host headers it saw."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, str, bytes]] = {}
        self.hosts: list[str] = []


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return build_pki(tmp_path_factory.mktemp("probe-pki"))


@pytest.fixture(scope="module")
def crls(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A good CRL, an expired one (both signed through the HSM), one of another issuer, one badly signed."""
    base = tmp_path_factory.mktemp("probe-crls")
    good = run_crl_job(pki.definition, CA, pki.copy_registry(base / "r1"), base / "good")
    old = run_crl_job(pki.definition, CA, pki.copy_registry(base / "r2"), base / "old",
                      now=dt.datetime.now(dt.UTC) - dt.timedelta(days=30))
    ca = x509.load_pem_x509_certificate((pki.dir / "qualified.crt.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)

    def forged(issuer: x509.Name) -> bytes:
        return (x509.CertificateRevocationListBuilder().issuer_name(issuer).last_update(now)
                .next_update(now + dt.timedelta(days=7))
                .add_extension(x509.CRLNumber(99), False)
                .sign(key, hashes.SHA384()).public_bytes(serialization.Encoding.DER))

    return {"good": good.der_path.read_bytes(), "expired": old.der_path.read_bytes(),
            "other-issuer": forged(x509.Name.from_rfc4514_string("CN=Someone Else,C=ML")),
            "bad-signature": forged(ca.subject), "good-number": str(good.number).encode()}


@pytest.fixture
def site() -> Iterator[tuple[Site, str]]:
    state = Site()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hosts.append(self.headers.get("Host", ""))
            status, ctype, body = state.routes.get(self.path, (404, "text/html", b"not found"))
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def probe(pki: Pki, publisher: str, metrics: Path, url: str = URL, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROBE, "--ca", CA, "--url", url, "--publisher", publisher, "--ca-cert",
                           str(pki.dir / "qualified.crt.pem"), "--metrics-dir", str(metrics), "--timeout", "5",
                           *extra], capture_output=True, text=True, timeout=60)


def sample(metrics: Path, name: str, **labels: str) -> float | None:
    key = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    return parse_metrics(metrics / f"ceremony_crl_probe_{CA}.prom").get(key)


def test_a_good_crl_through_each_publisher(pki: Pki, crls: dict[str, bytes], site: tuple[Site, str],
                                           tmp_path: Path) -> None:
    state, address = site
    state.routes["/crl/qualified.crl"] = (200, "application/pkix-crl", crls["good"])
    run = probe(pki, address, tmp_path, URL, "--publisher", address)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count(f"CRL {crls['good-number'].decode()} of 'qualified'") == 2 and "signature OK" in run.stdout
    assert state.hosts == ["pki.test.scse.ml", "pki.test.scse.ml"]  # the URL's host, not the address
    labels = {"ca": CA, "url": URL, "publisher": address}
    crl = x509.load_der_x509_crl(crls["good"])
    assert sample(tmp_path, "x509_crl_probe_success", **labels) == 1
    assert sample(tmp_path, "x509_crl_probe_http_status", **labels) == 200
    assert sample(tmp_path, "x509_crl_probe_signature_ok", **labels) == 1
    assert sample(tmp_path, "x509_crl_probe_number", **labels) == int(crls["good-number"])
    assert sample(tmp_path, "x509_crl_probe_this_update_seconds", **labels) == crl.last_update_utc.timestamp()
    assert sample(tmp_path, "x509_crl_probe_next_update_seconds", **labels) == crl.next_update_utc.timestamp()
    assert sample(tmp_path, "x509_crl_probe_size_bytes", **labels) == len(crls["good"])
    assert not [k for k in parse_metrics(tmp_path / f"ceremony_crl_probe_{CA}.prom") if "probe_failure" in k]


@pytest.mark.parametrize(("route", "reason", "message"), [
    ((404, "text/html", b"not found"), "http_status", "HTTP status 404"),
    ((200, "application/octet-stream", "good"), "content_type", "served as 'application/octet-stream'"),
    ((200, "application/pkix-crl", b"<html>maintenance</html>"), "parse", "is not a DER CRL"),
    ((200, "application/pkix-crl", "other-issuer"), "issuer", "CRL issued by CN=Someone Else,C=ML"),
    ((200, "application/pkix-crl", "bad-signature"), "signature", "the signature does not verify"),
    ((200, "application/pkix-crl", "expired"), "expired", "expired at"),
])
def test_what_a_relying_party_would_get_wrong_is_named(pki: Pki, crls: dict[str, bytes], site: tuple[Site, str],
                                                       tmp_path: Path, route: tuple[int, str, object], reason: str,
                                                       message: str) -> None:
    state, address = site
    status, ctype, body = route
    state.routes["/crl/qualified.crl"] = (status, ctype, crls[body] if isinstance(body, str) else body)
    run = probe(pki, address, tmp_path)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.startswith("error: ") and len(run.stderr.splitlines()) == 1 and message in run.stderr, run.stderr
    labels = {"ca": CA, "url": URL, "publisher": address}
    assert sample(tmp_path, "x509_crl_probe_success", **labels) == 0
    assert sample(tmp_path, "x509_crl_probe_failure", **labels, reason=reason) == 1
    assert sample(tmp_path, "x509_crl_probe_http_status", **labels) == status
    if reason in ("signature", "issuer"):
        assert sample(tmp_path, "x509_crl_probe_signature_ok", **labels) == 0


def test_no_server_is_a_connect_failure(pki: Pki, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = probe(pki, f"127.0.0.1:{port}", tmp_path)
    assert run.returncode == 1 and "cannot fetch the CRL" in run.stderr
    labels = {"ca": CA, "url": URL, "publisher": f"127.0.0.1:{port}"}
    assert sample(tmp_path, "x509_crl_probe_failure", **labels, reason="connect") == 1
    assert sample(tmp_path, "x509_crl_probe_http_status", **labels) == 0


def test_the_definition_gives_the_url_and_the_certificate(pki: Pki, crls: dict[str, bytes], site: tuple[Site, str],
                                                          tmp_path: Path) -> None:
    state, address = site
    state.routes["/crl/qualified.crl"] = (200, "application/pkix-crl", crls["good"])
    run = subprocess.run([PROBE, "--ca", CA, "--definition", str(pki.definition), "--publisher", address,
                          "--metrics-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert sample(tmp_path, "x509_crl_probe_success", ca=CA, url=URL, publisher=address) == 1
    bad = subprocess.run([PROBE, "--ca", CA, "--url", URL], capture_output=True, text=True)
    assert bad.returncode == 2 and "give --definition, or both --url and --ca-cert" in bad.stderr
