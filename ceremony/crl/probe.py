"""The published CRL as a relying party gets it: fetched over HTTP, checked, reported as metrics.

The CRL job's metrics say what the signer *signed*; only a fetch from the publication servers says
what relying parties *get*. :func:`probe_crl` fetches the CRL URL (optionally from one given
publication server, with the URL's host name as ``Host``), and checks: HTTP status 200,
``Content-Type: application/pkix-crl``, a DER CRL, its issuer is the CA certificate's subject, its
signature verifies with the CA certificate's key, nextUpdate not passed. The metrics
(``x509_crl_probe_*``, :class:`ceremony.crl.metrics.ProbeMetrics`) carry the fetched CRL's number,
thisUpdate and nextUpdate, so an alert can compare them with the signer's ``x509_crl_number``.

A CA with ``crl.partitions: N`` publishes N more CRLs; the probe fetches each partition URL too
(:func:`ceremony.definition.model.partition_crl_url`, indexes 0 … N−1) and checks, besides the above, that the CRL
at a partition URL says it covers that partition (its issuing distribution point names the URL) and that the CRL at
``crl_url`` has none. Their metrics carry ``partition="<i>"``, so an alert compares each with the signer's
``x509_crl_partition_number`` of the same partition. The full CRL of a partitioning CA is published only while an
unexpired certificate names it; a 404 there is then reported as "not published", not as a failure.

A CA with an ``ocsp`` section: :func:`probe_ocsp` POSTs an OCSP request for a certificate the CA issued and recorded
(``--ocsp-cert``; the monitoring role's ``monitoring_crl_probe_ocsp_cert``: the responders answer only for what the
registry holds, so not for the OCSP signer certificate itself) to ``ocsp.url`` through each publisher and checks the
answer as a relying party does: status successful, the single response is for the certificate asked about, its
signature verifies with the responder certificate carried in it, which the CA issued for OCSP signing (or with the
CA's own key), and it is in force. Metrics ``x509_ocsp_probe_*`` in the same file.

After a subordinate re-key (docs/lifecycle.md, "Subordinate re-key") the probe learns the CA's keys from the
certificates installed beside ``--ca-cert`` (``<ca>.crt.pem``, ``<ca>.g<n>.crt.pem``: the monitoring role copies them
from the CA's directory) and probes each key generation m's URLs (:func:`ceremony.ca.generations.generation_url`:
``<stem>.g<m>.crl`` and its partitions) under that key's certificate. Why the installed certificates and not the
signer's state: the probe runs unprivileged and reads neither the registry nor the job's state, and which keys exist
is a fact the certificates carry. The *current* key (the highest generation's) always publishes and is probed
strictly. An earlier key's CRLs are signed only while a certificate it issued is unexpired, which the probe cannot
see: for an earlier key a 404 or an expired CRL that verifies is reported as "no longer published" (success, its
metrics still carry the CRL's numbers); everything else (no answer, wrong signature, scope, Content-Type) fails as
for the current key. A job that stops signing a key too early is the job's own alert (``x509_crl_last_run_success``).
The OCSP responders are per key as well: each ``--ocsp-cert`` is asked about at the OCSP URL of the key that issued
it (``.g<m>`` after a re-key) with that key's certificate, strictly (give one certificate of each key).
"""

from __future__ import annotations

import datetime as dt
import http.client
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from ceremony.ca.generations import generation_url, issuer_generations
from ceremony.common.errors import DefinitionError, OutputError, RequestError
from ceremony.crl.job import find_ca_certificate
from ceremony.crl.metrics import ProbeMetrics, ProbeResult, write_probe_metrics
from ceremony.definition.model import load_definition, partition_crl_url
from ceremony.hsm.signers import verify_signature
from ceremony.x509.files import read_certificate

CRL_CONTENT_TYPE = "application/pkix-crl"
OCSP_REQUEST_TYPE = "application/ocsp-request"
OCSP_RESPONSE_TYPE = "application/ocsp-response"


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


def _fetch(url: str, publisher: str | None, timeout: float, body: bytes | None = None,
           accept: str = CRL_CONTENT_TYPE) -> tuple[int, str, bytes]:
    """``(status, content type, body)``: a GET, or with ``body`` an OCSP POST; OSError/HTTPException for no answer."""
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
        conn.putrequest("GET" if body is None else "POST", path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", parts.netloc)
        conn.putheader("User-Agent", "ceremony-crl-probe")
        conn.putheader("Accept", accept)
        if body is not None:
            conn.putheader("Content-Type", OCSP_REQUEST_TYPE)
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        body = response.read(MAX_CRL_BYTES + 1)
        content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
        return response.status, content_type, body
    finally:
        conn.close()


def _idp_urls(crl: x509.CertificateRevocationList) -> list[str] | None:
    """The URLs the CRL's issuing distribution point names; None without one (a full CRL)."""
    try:
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return None
    return [n.value for n in idp.full_name or () if isinstance(n, x509.UniformResourceIdentifier)]


def probe_crl(ca: str, url: str, ca_cert: x509.Certificate, *, publisher: str | None = None, timeout: float = 10.0,
              now: dt.datetime | None = None, partition: int | None = None,
              partitioned: bool = False, retired: bool = False) -> ProbeResult:
    """Fetch and check one CRL; never raises for what the server returns (it is reported in the result).

    ``partition``: the URL is that partition's (its CRL must name it in its issuing distribution point);
    ``partitioned``: the CA partitions, so its full CRL (``partition`` None) may be absent (404) and, when served,
    must have no issuing distribution point. Without either, the scope is not checked (as before partitions).
    ``retired``: the CRL of an earlier key after a re-key (module docstring): a 404, or an expired CRL that
    verifies, is "no longer published", not a failure.
    """
    start = time.monotonic()
    where = f"{url}" + (f" from {publisher}" if publisher else "")
    label = publisher or "dns"

    def result(success: bool, message: str, **kw: object) -> ProbeResult:
        prefix = "" if success else "error: "
        return ProbeResult(ca, url, label, success, message=prefix + message, partition=partition,
                           earlier_key=retired, duration_seconds=round(time.monotonic() - start, 3), **kw)  # type: ignore[arg-type]

    try:
        status, content_type, body = _fetch(url, publisher, timeout)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        if isinstance(exc, socket.timeout | TimeoutError):
            text = f"no answer within {timeout:g} s"
        return result(False, f"{where}: cannot fetch the CRL: {text}", failure_reason="connect")
    if status == 404 and retired:
        return result(True, f"{where}: not published (HTTP 404; an earlier key's CRLs are signed only while a "
                            "certificate it issued is unexpired)", http_status=status)
    if status == 404 and partitioned and partition is None:
        return result(True, f"{where}: the full CRL is not published (HTTP 404; the CA partitions, and the job "
                            "publishes the full CRL only while an unexpired certificate names it)", http_status=status)
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
    if next_update is not None and next_update <= now and retired:
        return result(True, f"{where}: CRL {number} expired at {next_update:%Y-%m-%dT%H:%M:%SZ}: no longer published "
                            "(an earlier key's CRLs are signed only while a certificate it issued is unexpired)",
                      signature_ok=True, **facts)
    if next_update is not None and next_update <= now:
        return result(False, f"{where}: CRL {number} expired at {next_update:%Y-%m-%dT%H:%M:%SZ}",
                      failure_reason="expired", signature_ok=True, **facts)
    if partition is not None or partitioned:
        named = _idp_urls(crl)
        if partition is not None and named != [url]:
            what = "no issuing distribution point (a full CRL)" if named is None else \
                f"an issuing distribution point naming {', '.join(named) or 'no URL'}"
            return result(False, f"{where}: CRL {number} has {what}, not this partition's URL",
                          failure_reason="scope", signature_ok=True, **facts)
        if partition is None and named is not None:
            return result(False, f"{where}: CRL {number} is a partition CRL (its issuing distribution point names "
                                 f"{', '.join(named) or 'no URL'}), served at the full CRL's URL",
                          failure_reason="scope", signature_ok=True, **facts)
    if content_type != CRL_CONTENT_TYPE:
        return result(False, f"{where}: CRL {number} served as {content_type or 'no Content-Type'!r}, not "
                             f"{CRL_CONTENT_TYPE}", failure_reason="content_type", signature_ok=True, **facts)
    return result(True, f"{where}: CRL {number} of {ca!r}, thisUpdate {crl.last_update_utc:%Y-%m-%dT%H:%M:%SZ}, "
                        f"nextUpdate {next_update:%Y-%m-%dT%H:%M:%SZ}, signature OK"
                  if next_update else f"{where}: CRL {number} of {ca!r}, signature OK", signature_ok=True, **facts)


def probe_ocsp(ca: str, url: str, ca_cert: x509.Certificate, subject: x509.Certificate, *,
               publisher: str | None = None, timeout: float = 10.0, now: dt.datetime | None = None,
               tolerance: dt.timedelta = dt.timedelta(minutes=5)) -> ProbeResult:
    """Ask the OCSP responder about ``subject`` (issued by the CA) and check the answer (module docstring)."""
    start = time.monotonic()
    where = f"OCSP {url}" + (f" from {publisher}" if publisher else "")
    serial = f"{subject.serial_number:x}"

    def result(success: bool, message: str, **kw: object) -> ProbeResult:
        prefix = "" if success else "error: "
        return ProbeResult(ca, url, publisher or "dns", success, message=prefix + message, kind="ocsp",
                           duration_seconds=round(time.monotonic() - start, 3), **kw)  # type: ignore[arg-type]

    request = ocsp.OCSPRequestBuilder().add_certificate(subject, ca_cert, hashes.SHA1()).build()
    try:
        status, content_type, body = _fetch(url, publisher, timeout, request.public_bytes(serialization.Encoding.DER),
                                            OCSP_RESPONSE_TYPE)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        if isinstance(exc, socket.timeout | TimeoutError):
            text = f"no answer within {timeout:g} s"
        return result(False, f"{where}: cannot reach the responder: {text}", failure_reason="connect")
    if status != 200:
        return result(False, f"{where}: HTTP status {status}", failure_reason="http_status", http_status=status)
    try:
        response = ocsp.load_der_ocsp_response(body)
    except ValueError:
        return result(False, f"{where}: the body ({len(body)} bytes) is not an OCSP response", failure_reason="parse",
                      http_status=status, size_bytes=len(body))
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return result(False, f"{where}: serial {serial}: response status {response.response_status.name.lower()}",
                      failure_reason="response_status", http_status=status, size_bytes=len(body))
    facts: dict[str, object] = {"http_status": status, "size_bytes": len(body),
                                "this_update": response.this_update_utc.timestamp(),
                                "next_update": response.next_update_utc.timestamp() if response.next_update_utc
                                else None}
    asked = (subject.serial_number, request.issuer_key_hash, request.issuer_name_hash)
    if (response.serial_number, response.issuer_key_hash, response.issuer_name_hash) != asked:
        return result(False, f"{where}: the response is for serial {response.serial_number:x}, not the serial "
                             f"{serial} asked about", failure_reason="mismatch", **facts)
    problem = _ocsp_signature_problem(response, ca_cert)
    if problem:
        return result(False, f"{where}: serial {serial}: {problem}", failure_reason="signature", signature_ok=False,
                      **facts)
    at = now or dt.datetime.now(dt.UTC)
    if response.this_update_utc > at + tolerance:
        return result(False, f"{where}: serial {serial}: thisUpdate {response.this_update_utc:%Y-%m-%dT%H:%M:%SZ} is "
                             "in the future", failure_reason="expired", signature_ok=True, **facts)
    if response.next_update_utc is None or response.next_update_utc <= at:
        return result(False, f"{where}: serial {serial}: the response has expired", failure_reason="expired",
                      signature_ok=True, **facts)
    if content_type != OCSP_RESPONSE_TYPE:
        return result(False, f"{where}: served as {content_type or 'no Content-Type'!r}, not {OCSP_RESPONSE_TYPE}",
                      failure_reason="content_type", signature_ok=True, **facts)
    return result(True, f"{where}: serial {serial} {response.certificate_status.name.lower()}, thisUpdate "
                        f"{response.this_update_utc:%Y-%m-%dT%H:%M:%SZ}, nextUpdate "
                        f"{response.next_update_utc:%Y-%m-%dT%H:%M:%SZ}, signature OK", signature_ok=True, **facts)


def _ocsp_signature_problem(response: ocsp.OCSPResponse, ca_cert: x509.Certificate) -> str | None:
    """None when the response is signed by the CA or by a responder certificate the CA issued for OCSP signing."""
    signer_key = ca_cert.public_key()
    if response.certificates:
        responder = response.certificates[0]
        if responder.issuer != ca_cert.subject:
            return f"the responder certificate is issued by {responder.issuer.rfc4514_string()}, not by the CA"
        try:
            verify_signature(ca_cert.public_key(), responder.signature, responder.tbs_certificate_bytes,
                             responder.signature_hash_algorithm)
        except (InvalidSignature, TypeError):
            return "the responder certificate's signature does not verify with the CA certificate"
        try:
            usages = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usages = None
        if usages is None or ExtendedKeyUsageOID.OCSP_SIGNING not in usages:
            return "the responder certificate is not for OCSP signing (no id-kp-OCSPSigning)"
        signer_key = responder.public_key()
    try:
        verify_signature(signer_key, response.signature, response.tbs_response_bytes,
                         response.signature_hash_algorithm)
    except (InvalidSignature, TypeError):
        return "the response's signature does not verify"
    return None


def issuing_key(keys: dict[int, x509.Certificate], subject: x509.Certificate, path: Path, ca: str) -> int:
    """The key generation whose key signed ``subject`` (the one whose responder answers for it); refused when no key
    of the CA did."""
    for m, cert in sorted(keys.items()):
        try:
            subject.verify_directly_issued_by(cert)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return m
    raise RequestError(f"{path}: not issued by any key of CA {ca!r} ({len(keys)} key(s) found beside its "
                       "certificate): give --ocsp-cert a certificate the CA issued")


def key_certificates(cert_path: Path, ca: str, cert: x509.Certificate) -> dict[int, x509.Certificate]:
    """Key generation → the certificate its CRLs verify under: the first holding each key among ``<ca>.crt.pem``
    and the ``<ca>.g<n>.crt.pem`` beside ``cert_path`` (module docstring); just ``{1: cert}`` when ``cert_path`` is
    not ``<ca>.crt.pem`` or nothing is beside it. A gap in the numbering is refused (which key signed what could
    not be told)."""
    if cert_path.name != f"{ca}.crt.pem":
        return {1: cert}
    keys: dict[int, x509.Certificate] = {}
    for g in issuer_generations(cert_path.parent, ca):
        keys.setdefault(g.key_generation, g.cert)
    return keys or {1: cert}


def probe_all(ca: str, *, definition: str | Path | None = None, url: str | None = None,
              publishers: list[str] | None = None, ca_cert: str | Path | None = None,
              metrics_dir: str | Path | None = None, timeout: float = 10.0, partitions: int | None = None,
              ocsp_url: str | None = None, ocsp_cert: str | Path | Sequence[str | Path] | None = None
              ) -> list[ProbeResult]:
    """Probe the CA's CRL URL, its partition URLs and its OCSP URL through each publisher (or DNS); write metrics.

    With ``definition``, the URL, the partition count and the OCSP URL default to the CA's; the OCSP responder is
    probed only with ``ocsp_cert`` (a certificate the CA issued, to ask about; several: one per key after a re-key).
    Each certificate is asked about at the OCSP URL of the key that issued it (``.g<m>`` for key generation m >= 2,
    :func:`~ceremony.ca.generations.generation_url`) with that key's certificate as the issuer: after a re-key each
    key has its own responder (docs/ocsp.md). A certificate no key of the CA issued is refused up front.
    """
    cert_path: Path
    if definition is not None:

        defn = load_definition(definition)
        if ca not in defn.model.cas:
            raise DefinitionError(str(definition), f"cas.{ca}", "no such CA",
                                  ", ".join(sorted(defn.model.cas)))
        model = defn.model.cas[ca]
        url = url or model.publication.crl_url
        partitions = partitions if partitions is not None else model.crl.partitions
        ocsp_url = ocsp_url or (model.ocsp.url if model.ocsp is not None else None)
        cert_path = find_ca_certificate(defn, ca, ca_cert)
    else:
        assert url is not None and ca_cert is not None
        cert_path = Path(ca_cert)
    cert = load_ca_certificate(cert_path)
    given = [] if ocsp_cert is None or not ocsp_url else \
        [ocsp_cert] if isinstance(ocsp_cert, str | Path) else list(ocsp_cert)
    subjects = [read_certificate(c, "the certificate to ask the OCSP responder about") for c in given]
    count = partitions or 0
    keys = key_certificates(cert_path, ca, cert)
    asked = [(issuing_key(keys, subject, Path(path), ca), subject) for path, subject in zip(given, subjects,
                                                                                            strict=True)]
    current = max(keys)
    # (URL, partition, the key's certificate, an earlier key's), the current key first
    targets: list[tuple[str, int | None, x509.Certificate, bool]] = []
    for m in sorted(keys, key=lambda k: (k != current, k)):
        base = generation_url(url, m)
        targets += [(base, None, keys[m], m != current)]
        targets += [(partition_crl_url(base, i), i, keys[m], m != current) for i in range(count)]
    through: list[str | None] = list(publishers) if publishers else [None]  # None: the URL's own host (DNS)
    results = [probe_crl(ca, u, c, publisher=p, timeout=timeout, partition=i, partitioned=count > 0, retired=r)
               for u, i, c, r in targets for p in through]
    if ocsp_url:
        results += [probe_ocsp(ca, generation_url(ocsp_url, m), keys[m], subject, publisher=p, timeout=timeout)
                    for m, subject in asked for p in through]
    if metrics_dir is not None:
        try:
            Path(metrics_dir).mkdir(parents=True, exist_ok=True)
            write_probe_metrics(Path(metrics_dir), ProbeMetrics(ca, results))
        except OSError as exc:
            raise OutputError(f"{metrics_dir}: cannot write the probe metrics: {exc.strerror}") from None
    return results
