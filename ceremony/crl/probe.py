"""The published CRL as a relying party gets it: fetched over HTTP, checked, reported as metrics.

The CRL job's metrics say what the signer *signed*; only a fetch from the publication servers says
what relying parties *get*. :func:`probe_crl` fetches the CRL URL (optionally from one given
publication server, with the URL's host name as ``Host``), and checks: HTTP status 200,
``Content-Type: application/pkix-crl``, a DER CRL, its issuer is the CA certificate's subject, its
signature verifies with the CA certificate's key, nextUpdate not passed. The metrics
(``x509_crl_probe_*``, :class:`ceremony.crl.metrics.ProbeMetrics`) carry the fetched CRL's number,
thisUpdate and nextUpdate, so an alert can compare them with the signer's ``x509_crl_number``.
"""

from __future__ import annotations

import datetime as dt
import http.client
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509

from ceremony.common.errors import DefinitionError, OutputError
from ceremony.crl.job import find_ca_certificate
from ceremony.crl.metrics import ProbeMetrics, ProbeResult, write_probe_metrics
from ceremony.definition.model import load_definition
from ceremony.x509.files import read_certificate

CRL_CONTENT_TYPE = "application/pkix-crl"


#: A national CRL with a million entries is about 48 MB; anything far larger is not a CRL of this suite.
MAX_CRL_BYTES = 512 * 1024 * 1024


def load_ca_certificate(path: str | Path) -> x509.Certificate:
    return read_certificate(path, "the CA certificate")


def _split_address(address: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return host, int(port) if port.isdigit() else default_port
    if address.count(":") == 1:
        host, port = address.split(":")
        if port.isdigit():
            return host, int(port)
    return address, default_port


def _fetch(url: str, publisher: str | None, timeout: float) -> tuple[int, str, bytes]:
    """``(status, content type, body)``; OSError/HTTPException for no answer."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    default_port = parts.port or (443 if parts.scheme == "https" else 80)
    host, port = (parts.hostname, default_port) if publisher is None else _split_address(publisher, default_port)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(host, port, timeout=timeout)
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", parts.netloc)
        conn.putheader("User-Agent", "ceremony-crl-probe")
        conn.putheader("Accept", CRL_CONTENT_TYPE)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read(MAX_CRL_BYTES + 1)
        content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
        return response.status, content_type, body
    finally:
        conn.close()


def probe_crl(ca: str, url: str, ca_cert: x509.Certificate, *, publisher: str | None = None, timeout: float = 10.0,
              now: dt.datetime | None = None) -> ProbeResult:
    """Fetch and check one CRL; never raises for what the server returns (it is reported in the result)."""
    start = time.monotonic()
    where = f"{url}" + (f" from {publisher}" if publisher else "")
    label = publisher or "dns"

    def result(success: bool, message: str, **kw: object) -> ProbeResult:
        prefix = "" if success else "error: "
        return ProbeResult(ca, url, label, success, message=prefix + message,
                           duration_seconds=round(time.monotonic() - start, 3), **kw)  # type: ignore[arg-type]

    try:
        status, content_type, body = _fetch(url, publisher, timeout)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        if isinstance(exc, socket.timeout | TimeoutError):
            text = f"no answer within {timeout:g} s"
        return result(False, f"{where}: cannot fetch the CRL: {text}", failure_reason="connect")
    if status != 200:
        return result(False, f"{where}: HTTP status {status}", failure_reason="http_status", http_status=status)
    if len(body) > MAX_CRL_BYTES:
        return result(False, f"{where}: more than {MAX_CRL_BYTES} bytes; not read", failure_reason="parse",
                      http_status=status)
    try:
        crl = x509.load_der_x509_crl(body)
    except ValueError:
        return result(False, f"{where}: the body ({len(body)} bytes) is not a DER CRL", failure_reason="parse",
                      http_status=status, size_bytes=len(body))
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    next_update = crl.next_update_utc
    facts = {"http_status": status, "number": number, "size_bytes": len(body),
             "this_update": crl.last_update_utc.timestamp(),
             "next_update": next_update.timestamp() if next_update else None}
    if crl.issuer != ca_cert.subject:
        return result(False, f"{where}: CRL issued by {crl.issuer.rfc4514_string()}, not by "
                             f"{ca_cert.subject.rfc4514_string()}", failure_reason="issuer", signature_ok=False,
                      **facts)
    try:
        signature_ok = crl.is_signature_valid(ca_cert.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        signature_ok = False
    if not signature_ok:
        return result(False, f"{where}: CRL {number}: the signature does not verify with the CA certificate",
                      failure_reason="signature", signature_ok=False, **facts)
    now = now or dt.datetime.now(dt.UTC)
    if next_update is not None and next_update <= now:
        return result(False, f"{where}: CRL {number} expired at {next_update:%Y-%m-%dT%H:%M:%SZ}",
                      failure_reason="expired", signature_ok=True, **facts)
    if content_type != CRL_CONTENT_TYPE:
        return result(False, f"{where}: CRL {number} served as {content_type or 'no Content-Type'!r}, not "
                             f"{CRL_CONTENT_TYPE}", failure_reason="content_type", signature_ok=True, **facts)
    return result(True, f"{where}: CRL {number} of {ca!r}, thisUpdate {crl.last_update_utc:%Y-%m-%dT%H:%M:%SZ}, "
                        f"nextUpdate {next_update:%Y-%m-%dT%H:%M:%SZ}, signature OK"
                  if next_update else f"{where}: CRL {number} of {ca!r}, signature OK", signature_ok=True, **facts)


def probe_all(ca: str, *, definition: str | Path | None = None, url: str | None = None,
              publishers: list[str] | None = None, ca_cert: str | Path | None = None,
              metrics_dir: str | Path | None = None, timeout: float = 10.0) -> list[ProbeResult]:
    """Probe the CA's CRL URL through each publisher (or through DNS) and write the metrics file."""
    cert_path: Path
    if definition is not None:

        defn = load_definition(definition)
        if ca not in defn.model.cas:
            raise DefinitionError(str(definition), f"cas.{ca}", "no such CA",
                                  ", ".join(sorted(defn.model.cas)))
        url = url or defn.model.cas[ca].publication.crl_url
        cert_path = find_ca_certificate(defn, ca, ca_cert)
    else:
        assert url is not None and ca_cert is not None
        cert_path = Path(ca_cert)
    cert = load_ca_certificate(cert_path)
    through: list[str | None] = list(publishers) if publishers else [None]  # None: the URL's own host (DNS)
    results = [probe_crl(ca, url, cert, publisher=p, timeout=timeout) for p in through]
    if metrics_dir is not None:
        try:
            Path(metrics_dir).mkdir(parents=True, exist_ok=True)
            write_probe_metrics(Path(metrics_dir), ProbeMetrics(ca, results))
        except OSError as exc:
            raise OutputError(f"{metrics_dir}: cannot write the probe metrics: {exc.strerror}") from None
    return results
