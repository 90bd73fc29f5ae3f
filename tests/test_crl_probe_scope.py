"""ceremony-crl-probe on a partitioning CA and on its OCSP responder, over real HTTP (a local server), without an HSM.

The CRLs are encoded by the engine and the OCSP responses built by cryptography, all signed with software keys of a
software CA; the server answers as a publisher would, or as a broken one would: a partition URL serving another
partition's CRL or the full CRL, the full CRL's URL serving a partition CRL, an OCSP answer for another serial, an
unsigned error status, a response signed by a responder certificate the CA did not issue, an expired one. Each time
the probe's line and metrics (labelled per URL, partition and publisher) say which.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ceremony.crl import encoding as crlenc
from ceremony.crl.cli import crl_probe_main
from ceremony.crl.probe import probe_all

CA = "qualified"
URL = "http://pki.test.scse.ml/crl/qualified.crl"
OCSP_URL = "http://ocsp.test.scse.ml/qualified"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def part(i: int) -> str:
    return f"http://pki.test.scse.ml/crl/qualified-p{i}.crl"


def _cert(subject: str, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey, key: ec.EllipticCurvePrivateKey,
          *, ca: bool = False, eku: list[x509.ObjectIdentifier] | None = None) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(NOW - dt.timedelta(days=1))
               .not_valid_after(NOW + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(issuer_key, hashes.SHA384())


class Pki:
    """A software CA, its OCSP signer, an end-entity certificate it issued; CRLs and OCSP responses on demand."""

    def __init__(self, tmp: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP384R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Qualified CA")])
        self.cert = _cert("Test Qualified CA", self.name, self.key, self.key, ca=True)
        self.cert_path = tmp / "qualified.crt.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.signer_key = ec.generate_private_key(ec.SECP384R1())
        self.signer = _cert("OCSP signer", self.name, self.key, self.signer_key, eku=[ExtendedKeyUsageOID.OCSP_SIGNING])
        self.ee = _cert("Awa Keita", self.name, self.key, ec.generate_private_key(ec.SECP256R1()))
        self.ee_path = tmp / "ee.crt.pem"
        self.ee_path.write_bytes(self.ee.public_bytes(serialization.Encoding.PEM))

    def crl(self, number: int, partition_url: str | None = None) -> bytes:
        start = NOW - dt.timedelta(minutes=5)
        header = crlenc.CrlHeader(self.name, x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()).digest,
                                  number, start, start + dt.timedelta(days=7), partition_url=partition_url)
        der, _, _ = crlenc.build_crl(header, [], self.key)
        return der

    def ocsp(self, cert: x509.Certificate | None = None, *,
             signer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
             next_update: dt.datetime = NOW + dt.timedelta(days=2)) -> bytes:
        """A response "good" for ``cert`` (default the end-entity certificate), signed by ``signer``."""
        responder, key = signer or (self.signer, self.signer_key)
        response = (ocsp.OCSPResponseBuilder()
                    .add_response(cert or self.ee, self.cert, hashes.SHA1(), ocsp.OCSPCertStatus.GOOD,
                                  next_update - dt.timedelta(days=4), next_update, None, None)
                    .responder_id(ocsp.OCSPResponderEncoding.HASH, responder).certificates([responder])
                    .sign(key, hashes.SHA384()))
        return response.public_bytes(serialization.Encoding.DER)


class Site:
    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, str, bytes]] = {}
        self.posted: list[tuple[str, str, bytes]] = []


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
def site() -> Iterator[tuple[Site, str]]:
    state = Site()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, ctype: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._answer(*state.routes.get(self.path, (404, "text/html", b"not found")))

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.posted.append((self.path, self.headers.get("Content-Type", ""), body))
            self._answer(*state.routes.get("POST " + self.path, (404, "text/html", b"not found")))

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


def serve_crls(state: Site, pki: Pki, *, full: bool = True) -> None:
    if full:
        state.routes["/crl/qualified.crl"] = (200, "application/pkix-crl", pki.crl(5))
    for i in range(3):
        state.routes[f"/crl/qualified-p{i}.crl"] = (200, "application/pkix-crl", pki.crl(2 + i, part(i)))


def prom(tmp: Path) -> dict[str, float]:
    """``{'name{labels}': value}`` of the probe's textfile; every line a comment of a probe metric or one sample."""
    samples: dict[str, float] = {}
    for line in (tmp / f"ceremony_crl_probe_{CA}.prom").read_text().splitlines():
        if line.startswith("#"):
            assert re.fullmatch(r"# (HELP|TYPE) x509_(crl|ocsp)_probe_\w+ .+", line), line
            continue
        name, _, value = line.rpartition(" ")
        samples[name] = float(value)
    return samples


def key(name: str, url: str, publisher: str, partition: int | None = None, **extra: str) -> str:
    labels = {"ca": CA, "url": url, "publisher": publisher, **({} if partition is None else
                                                                  {"partition": str(partition)}), **extra}
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def test_every_partition_url_is_probed_through_every_publisher(pki: Pki, site: tuple[Site, str],
                                                               tmp_path: Path) -> None:
    state, address = site
    serve_crls(state, pki)
    results = probe_all(CA, url=URL, ca_cert=pki.cert_path, publishers=[address, address], partitions=3,
                        metrics_dir=tmp_path, timeout=5)
    assert [(r.url, r.partition, r.success) for r in results] == [
        (URL, None, True), (URL, None, True), (part(0), 0, True), (part(0), 0, True), (part(1), 1, True),
        (part(1), 1, True), (part(2), 2, True), (part(2), 2, True)], [r.message for r in results]
    samples = prom(tmp_path)
    assert samples[key("x509_crl_probe_number", URL, address)] == 5
    for i in range(3):
        assert samples[key("x509_crl_probe_success", part(i), address, i)] == 1
        assert samples[key("x509_crl_probe_number", part(i), address, i)] == 2 + i


def test_a_partitioning_ca_without_a_full_crl_is_not_a_failure(pki: Pki, site: tuple[Site, str],
                                                               tmp_path: Path) -> None:
    state, address = site
    serve_crls(state, pki, full=False)
    results = probe_all(CA, url=URL, ca_cert=pki.cert_path, publishers=[address], partitions=3, timeout=5)
    assert all(r.success for r in results)
    assert "the full CRL is not published (HTTP 404" in results[0].message
    # Without partitions the same 404 is a failure, as before.
    alone = probe_all(CA, url=URL, ca_cert=pki.cert_path, publishers=[address], timeout=5)
    assert [(r.success, r.failure_reason) for r in alone] == [(False, "http_status")]


@pytest.mark.parametrize(("path", "body", "message"), [
    ("/crl/qualified-p1.crl", lambda pki: pki.crl(9, part(2)),
     f"CRL 9 has an issuing distribution point naming {part(2)}, not this partition's URL"),
    ("/crl/qualified-p1.crl", lambda pki: pki.crl(9), "CRL 9 has no issuing distribution point (a full CRL), not "
                                                      "this partition's URL"),
    ("/crl/qualified.crl", lambda pki: pki.crl(9, part(0)),
     f"CRL 9 is a partition CRL (its issuing distribution point names {part(0)}), served at the full CRL's URL"),
])
def test_a_crl_of_the_wrong_scope_at_a_url_is_named(pki: Pki, site: tuple[Site, str], tmp_path: Path, path: str,
                                                    body, message: str) -> None:
    state, address = site
    serve_crls(state, pki)
    state.routes[path] = (200, "application/pkix-crl", body(pki))
    results = probe_all(CA, url=URL, ca_cert=pki.cert_path, publishers=[address], partitions=3, metrics_dir=tmp_path,
                        timeout=5)
    failed = [r for r in results if not r.success]
    assert len(failed) == 1 and failed[0].failure_reason == "scope" and message in failed[0].message, \
        [r.message for r in results]
    url = URL if path.endswith("qualified.crl") else part(1)
    partition = None if url == URL else 1
    assert prom(tmp_path)[key("x509_crl_probe_failure", url, address, partition, reason="scope")] == 1


def test_the_ocsp_responder_is_asked_about_a_certificate_through_every_publisher(
        pki: Pki, site: tuple[Site, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state, address = site
    serve_crls(state, pki)
    state.routes["POST /qualified"] = (200, "application/ocsp-response", pki.ocsp())
    code = crl_probe_main(["--ca", CA, "--url", URL, "--ca-cert", str(pki.cert_path), "--publisher", address,
                           "--ocsp-url", OCSP_URL, "--ocsp-cert", str(pki.ee_path), "--metrics-dir", str(tmp_path),
                           "--timeout", "5"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"OCSP {OCSP_URL} from {address}: serial {pki.ee.serial_number:x} good" in out.out
    (path, ctype, body), = state.posted
    assert (path, ctype) == ("/qualified", "application/ocsp-request")
    assert ocsp.load_der_ocsp_request(body).serial_number == pki.ee.serial_number
    samples = prom(tmp_path)
    assert samples[key("x509_ocsp_probe_success", OCSP_URL, address)] == 1
    assert samples[key("x509_ocsp_probe_signature_ok", OCSP_URL, address)] == 1
    assert samples[key("x509_ocsp_probe_http_status", OCSP_URL, address)] == 200
    assert key("x509_crl_probe_success", URL, address) in samples  # one file for the CRLs and the responder
    # Without a certificate to ask about, the responder is not probed.
    probe_all(CA, url=URL, ca_cert=pki.cert_path, publishers=[address], metrics_dir=tmp_path, ocsp_url=OCSP_URL,
              timeout=5)
    assert not [k for k in prom(tmp_path) if k.startswith("x509_ocsp_probe")]


def _rogue(pki: Pki) -> bytes:
    """Signed by an OCSP signer certificate that another CA (of the same name) issued."""
    other = ec.generate_private_key(ec.SECP384R1())
    signer_key = ec.generate_private_key(ec.SECP384R1())
    signer = _cert("OCSP signer", pki.name, other, signer_key, eku=[ExtendedKeyUsageOID.OCSP_SIGNING])
    return pki.ocsp(signer=(signer, signer_key))


def _no_eku(pki: Pki) -> bytes:
    signer_key = ec.generate_private_key(ec.SECP384R1())
    return pki.ocsp(signer=(_cert("Not a signer", pki.name, pki.key, signer_key), signer_key))


@pytest.mark.parametrize(("answer", "reason", "message"), [
    (lambda pki: (200, "application/ocsp-response", pki.ocsp(pki.signer)), "mismatch",
     "not the serial"),
    (lambda pki: (200, "application/ocsp-response", ocsp.OCSPResponseBuilder.build_unsuccessful(
        ocsp.OCSPResponseStatus.UNAUTHORIZED).public_bytes(serialization.Encoding.DER)), "response_status",
     "response status unauthorized"),
    (lambda pki: (200, "application/ocsp-response", _rogue(pki)), "signature",
     "the responder certificate's signature does not verify with the CA certificate"),
    (lambda pki: (200, "application/ocsp-response", _no_eku(pki)), "signature", "not for OCSP signing"),
    (lambda pki: (200, "application/ocsp-response", pki.ocsp(next_update=NOW - dt.timedelta(minutes=1))), "expired",
     "the response has expired"),
    (lambda pki: (200, "application/ocsp-response", b"<html>busy</html>"), "parse", "is not an OCSP response"),
    (lambda pki: (502, "text/html", b"bad gateway"), "http_status", "HTTP status 502"),
    (lambda pki: (200, "application/octet-stream", pki.ocsp()), "content_type", "served as"),
])
def test_what_a_relying_party_would_get_wrong_from_the_responder_is_named(pki: Pki, site: tuple[Site, str],
                                                                          tmp_path: Path, answer, reason: str,
                                                                          message: str) -> None:
    state, address = site
    serve_crls(state, pki)
    state.routes["POST /qualified"] = answer(pki)
    results = probe_all(CA, url=URL, ca_cert=pki.cert_path, publishers=[address], metrics_dir=tmp_path,
                        ocsp_url=OCSP_URL, ocsp_cert=pki.ee_path, timeout=5)
    crl, answer_ = results
    assert crl.success and not answer_.success and answer_.kind == "ocsp"
    assert answer_.failure_reason == reason and message in answer_.message and answer_.message.startswith("error: ")
    assert "\n" not in answer_.message
    samples = prom(tmp_path)
    assert samples[key("x509_ocsp_probe_success", OCSP_URL, address)] == 0
    assert samples[key("x509_ocsp_probe_failure", OCSP_URL, address, reason=reason)] == 1


def test_partitions_out_of_range_are_refused_by_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        crl_probe_main(["--ca", CA, "--url", URL, "--ca-cert", "x.pem", "--partitions", "257"])
    assert exit_.value.code == 2 and "--partitions 257: allowed 0 to 256" in capsys.readouterr().err


def _crl_of(name: x509.Name, key: ec.EllipticCurvePrivateKey, number: int, *, expired: bool = False) -> bytes:
    start = NOW - dt.timedelta(days=10 if expired else 0, minutes=5)
    header = crlenc.CrlHeader(name, x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest, number,
                              start, start + dt.timedelta(days=7))
    der, _, _ = crlenc.build_crl(header, [], key)
    return der


def test_after_a_rekey_each_key_generation_is_probed_under_its_own_certificate(pki: Pki, site: tuple[Site, str],
                                                                               tmp_path: Path) -> None:
    """With ``qualified.g2.crt.pem`` (a new key) installed beside ``qualified.crt.pem``, the probe fetches
    ``qualified.g2.crl`` too and verifies it under generation 2's key; the current key is probed strictly, the earlier
    key's CRL may be gone or expired (its certificates have), but never signed by another key."""
    state, address = site
    key2 = ec.generate_private_key(ec.SECP384R1())
    g2 = _cert("Test Qualified CA", pki.name, pki.key, key2, ca=True)
    (tmp_path / "qualified.g2.crt.pem").write_bytes(g2.public_bytes(serialization.Encoding.PEM))
    url2 = "http://pki.test.scse.ml/crl/qualified.g2.crl"
    state.routes["/crl/qualified.crl"] = (200, "application/pkix-crl", pki.crl(5))
    state.routes["/crl/qualified.g2.crl"] = (200, "application/pkix-crl", _crl_of(pki.name, key2, 1))

    def run() -> list[tuple[str, bool, str]]:
        return [(r.url, r.success, r.message) for r in probe_all(CA, url=URL, ca_cert=pki.cert_path,
                                                                 publishers=[address], metrics_dir=tmp_path,
                                                                 timeout=5)]

    got = run()
    assert [(u, ok) for u, ok, _ in got] == [(url2, True), (URL, True)], got
    assert "CRL 1 of 'qualified'" in got[0][2] and "CRL 5 of 'qualified'" in got[1][2]
    samples = prom(tmp_path)
    # the current key's CRL unlabelled (the alerts compare it with the job's x509_crl_number), the earlier key's
    # labelled key="earlier"
    assert samples[key("x509_crl_probe_number", url2, address)] == 1
    assert samples[key("x509_crl_probe_number", URL, address, key="earlier")] == 5

    # The first key's CRL expired or gone: no longer published, not a failure; the metrics say which.
    state.routes["/crl/qualified.crl"] = (200, "application/pkix-crl", _crl_of(pki.name, pki.key, 6, expired=True))
    got = run()
    assert got[1][1] and "CRL 6 expired at" in got[1][2] and "no longer published" in got[1][2], got
    del state.routes["/crl/qualified.crl"]
    got = run()
    assert got[1][1] and "not published (HTTP 404" in got[1][2], got

    # The current key's CRL signed by the first key, or missing, or expired: failures.
    state.routes["/crl/qualified.g2.crl"] = (200, "application/pkix-crl", pki.crl(7))
    got = run()
    assert not got[0][1] and "CRL 7: the signature does not verify with the CA certificate" in got[0][2], got
    state.routes["/crl/qualified.g2.crl"] = (200, "application/pkix-crl", _crl_of(pki.name, key2, 2, expired=True))
    got = run()
    assert not got[0][1] and "CRL 2 expired at" in got[0][2], got
    del state.routes["/crl/qualified.g2.crl"]
    got = run()
    assert not got[0][1] and "HTTP status 404" in got[0][2], got
    # and the first key's CRL signed by the second key is refused too
    state.routes["/crl/qualified.crl"] = (200, "application/pkix-crl", _crl_of(pki.name, key2, 8))
    got = run()
    assert not got[1][1] and "CRL 8: the signature does not verify" in got[1][2], got


def test_after_a_rekey_each_key_responder_is_asked_about_its_own_certificate(
        pki: Pki, site: tuple[Site, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One ``--ocsp-cert`` per key: the first key's certificate at the OCSP URL, the new key's at ``<url>.g2`` with
    generation 2's certificate as the issuer, each answered by the signer its key certified; a certificate the CA
    never issued is refused before anything is asked."""
    state, address = site
    key2 = ec.generate_private_key(ec.SECP384R1())
    g2 = _cert("Test Qualified CA", pki.name, pki.key, key2, ca=True)
    (tmp_path / "qualified.g2.crt.pem").write_bytes(g2.public_bytes(serialization.Encoding.PEM))
    signer2_key = ec.generate_private_key(ec.SECP384R1())
    signer2 = _cert("OCSP signer g2", pki.name, key2, signer2_key, eku=[ExtendedKeyUsageOID.OCSP_SIGNING])
    ee2 = _cert("Awa Traore", pki.name, key2, ec.generate_private_key(ec.SECP256R1()))
    ee2_path = tmp_path / "ee2.crt.pem"
    ee2_path.write_bytes(ee2.public_bytes(serialization.Encoding.PEM))
    state.routes["/crl/qualified.crl"] = (200, "application/pkix-crl", pki.crl(5))
    state.routes["/crl/qualified.g2.crl"] = (200, "application/pkix-crl", _crl_of(pki.name, key2, 1))
    state.routes["POST /qualified"] = (200, "application/ocsp-response", pki.ocsp())
    response2 = (ocsp.OCSPResponseBuilder()
                 .add_response(ee2, g2, hashes.SHA1(), ocsp.OCSPCertStatus.GOOD, NOW - dt.timedelta(days=1),
                               NOW + dt.timedelta(days=2), None, None)
                 .responder_id(ocsp.OCSPResponderEncoding.HASH, signer2).certificates([signer2])
                 .sign(signer2_key, hashes.SHA384()))
    state.routes["POST /qualified.g2"] = (200, "application/ocsp-response",
                                          response2.public_bytes(serialization.Encoding.DER))
    metrics = tmp_path / "metrics"
    args = ["--ca", CA, "--url", URL, "--ca-cert", str(pki.cert_path), "--publisher", address, "--ocsp-url",
            OCSP_URL, "--ocsp-cert", str(pki.ee_path), "--ocsp-cert", str(ee2_path), "--metrics-dir", str(metrics),
            "--timeout", "5"]
    code = crl_probe_main(args)
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"OCSP {OCSP_URL} from {address}: serial {pki.ee.serial_number:x} good" in out.out
    assert f"OCSP {OCSP_URL}.g2 from {address}: serial {ee2.serial_number:x} good" in out.out
    assert [p for p, _, _ in state.posted] == ["/qualified", "/qualified.g2"]
    issuer_key_hash = ocsp.load_der_ocsp_request(state.posted[1][2]).issuer_key_hash
    assert issuer_key_hash == x509.SubjectKeyIdentifier.from_public_key(key2.public_key()).digest
    samples = prom(metrics)
    assert samples[key("x509_ocsp_probe_success", OCSP_URL, address)] == 1
    assert samples[key("x509_ocsp_probe_success", OCSP_URL + ".g2", address)] == 1
    # the new key's responder answering with the first key's signer: a failure of that URL only
    state.routes["POST /qualified.g2"] = (200, "application/ocsp-response", pki.ocsp(ee2))
    assert crl_probe_main(args) == 1
    samples = prom(metrics)
    assert samples[key("x509_ocsp_probe_success", OCSP_URL + ".g2", address)] == 0
    assert samples[key("x509_ocsp_probe_success", OCSP_URL, address)] == 1
    capsys.readouterr()
    # a certificate no key of the CA issued: one message, nothing asked, the metrics file as it was
    stranger = _cert("Stranger", pki.name, ec.generate_private_key(ec.SECP384R1()),
                     ec.generate_private_key(ec.SECP256R1()))
    (tmp_path / "stranger.pem").write_bytes(stranger.public_bytes(serialization.Encoding.PEM))
    posted, before = len(state.posted), (metrics / f"ceremony_crl_probe_{CA}.prom").read_bytes()
    code = crl_probe_main([*args[:-4], "--ocsp-cert", str(tmp_path / "stranger.pem"), *args[-4:]])
    err = capsys.readouterr().err
    assert code != 0 and err.strip() == (f"error: {tmp_path / 'stranger.pem'}: not issued by any key of CA {CA!r} "
                                         "(2 key(s) found beside its certificate): give --ocsp-cert a certificate "
                                         "the CA issued"), err
    assert len(state.posted) == posted and (metrics / f"ceremony_crl_probe_{CA}.prom").read_bytes() == before
