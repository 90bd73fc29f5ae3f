"""The OCSP responder: a WSGI application that holds no key and serves the pre-signed responses of one CA.

It answers RFC 6960 requests as RFC 5019/9919 profile them: ``GET <url>/<base64 of the DER request, URL-encoded>``
and ``POST`` with ``Content-Type: application/ocsp-request``; one request per message; SHA-1 or SHA-256 CertIDs.
The response is looked up in the store (:mod:`ceremony.ocsp.store`) by the CertID's hash and serial after its
issuer hashes are compared with the CA certificate's. It never signs anything, so it cannot say "good" for what
the CA did not state: another issuer, a serial the CA never issued and a hash it holds no response for are answered
``unauthorized``; what does not parse is ``malformedRequest``; a stored response past its nextUpdate is
``tryLater`` (the signing job is late: an alert is already firing, and an expired response must not be served).

Caching (RFC 5019 6.2): ``Cache-Control: max-age=<seconds to nextUpdate>, public, no-transform, must-revalidate``,
``Last-Modified`` (thisUpdate), ``Expires`` (nextUpdate) and an ``ETag`` (the response's SHA-256), with
``If-None-Match`` answered 304.

It runs under gunicorn, configured by the environment only (a systemd unit runs it unchanged; docs/ocsp.md)::

    CEREMONY_OCSP_STORE=/var/lib/ceremony/ocsp/qualified.sqlite3 \\
    CEREMONY_OCSP_ISSUER=/var/lib/ceremony/qualified/qualified.crt.pem \\
    gunicorn --bind 127.0.0.1:8080 --workers 2 'ceremony.ocsp.responder:create_app()'
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import time
from collections.abc import Callable, Iterable
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from cryptography.x509 import ocsp

from ceremony.ocsp.encoding import (
    MALFORMED_REQUEST,
    TRY_LATER,
    UNAUTHORIZED,
    error_response,
    hash_name,
    issuer_hashes,
)
from ceremony.ocsp.store import ResponseStore
from ceremony.x509.files import read_certificate

STORE_ENV = "CEREMONY_OCSP_STORE"


ISSUER_ENV = "CEREMONY_OCSP_ISSUER"


#: A request is a few hundred bytes; anything much larger is not one.
MAX_REQUEST = 16384


CONTENT_TYPE = "application/ocsp-response"


StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class Responder:
    """The WSGI application (see the module docs). The store is opened read-only on the first request of each
    worker process (after gunicorn forks), so a store replaced by the job is read as it is now."""

    def __init__(self, store_path: str | Path, issuer_path: str | Path) -> None:
        self.store_path = Path(store_path)
        issuer = read_certificate(issuer_path, "the CA certificate (CEREMONY_OCSP_ISSUER)")
        self.hashes = {name: issuer_hashes(issuer, name) for name in ("sha1", "sha256")}
        self._store: ResponseStore | None = None
        self._pid = 0

    def store(self) -> ResponseStore:
        if self._store is None or self._pid != os.getpid():
            self._store = ResponseStore.open(self.store_path, read_only=True)
            self._pid = os.getpid()
        return self._store

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method == "GET":
            request = _from_path(environ.get("PATH_INFO", ""))
        elif method == "POST":
            request = _from_body(environ)
        else:
            start_response("405 Method Not Allowed", [("Allow", "GET, POST"), ("Content-Length", "0")])
            return [b""]
        if request is None:
            return self._error(start_response, MALFORMED_REQUEST)
        algorithm = hash_name(request.hash_algorithm)
        if algorithm is None or self.hashes[algorithm] != (request.issuer_name_hash, request.issuer_key_hash):
            return self._error(start_response, UNAUTHORIZED)
        stored = self.store().get(request.serial_number, algorithm)
        if stored is None:
            return self._error(start_response, UNAUTHORIZED)
        now = int(time.time())
        if stored.next_update <= now:
            return self._error(start_response, TRY_LATER)
        etag = '"' + hashlib.sha256(stored.der).hexdigest() + '"'
        headers = [("Content-Type", CONTENT_TYPE),
                   ("Cache-Control", f"max-age={stored.next_update - now}, public, no-transform, must-revalidate"),
                   ("Last-Modified", formatdate(stored.this_update, usegmt=True)),
                   ("Expires", formatdate(stored.next_update, usegmt=True)), ("ETag", etag)]
        if etag in environ.get("HTTP_IF_NONE_MATCH", ""):
            start_response("304 Not Modified", headers)
            return [b""]
        start_response("200 OK", [*headers, ("Content-Length", str(len(stored.der)))])
        return [stored.der]

    @staticmethod
    def _error(start_response: StartResponse, status: int) -> Iterable[bytes]:
        """An OCSP error status, in an HTTP 200 as RFC 6960 A.1 has it, never cached."""
        body = error_response(status)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE), ("Cache-Control", "no-store"),
                                  ("Content-Length", str(len(body)))])
        return [body]


def parse_request(der: bytes) -> ocsp.OCSPRequest | None:
    """The request, or None for anything that is not exactly one OCSP request. cryptography refuses a request
    naming several certificates with NotImplementedError: that too is a request this responder cannot answer
    (``malformedRequest``), never a server error."""
    try:
        return ocsp.load_der_ocsp_request(der)
    except (ValueError, TypeError, NotImplementedError):
        return None


def _from_path(path: str) -> ocsp.OCSPRequest | None:
    """GET: the base64 request is the last part of the path, URL-encoded; base64 itself may hold ``/``, so every
    suffix after a ``/`` is tried, longest first (the URL's own path, ``/qualified``, is not base64 DER)."""
    text = unquote(path).lstrip("/")
    start = 0
    while start < len(text):
        candidate = text[start:]
        start = text.find("/", start) + 1 or len(text)
        try:
            der = base64.b64decode(candidate, validate=True)
        except (binascii.Error, ValueError):
            continue
        request = parse_request(der)
        if request is not None:
            return request
    return None


def _from_body(environ: dict[str, Any]) -> ocsp.OCSPRequest | None:
    if environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower() != "application/ocsp-request":
        return None
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if not 0 < length <= MAX_REQUEST:
        return None
    return parse_request(environ["wsgi.input"].read(length))


def create_app(store: str | None = None, issuer: str | None = None) -> Responder:
    """The application gunicorn loads: ``'ceremony.ocsp.responder:create_app()'``, configured by
    ``CEREMONY_OCSP_STORE`` (the CA's response store) and ``CEREMONY_OCSP_ISSUER`` (its certificate, PEM or DER)."""
    store = store or os.environ.get(STORE_ENV)
    issuer = issuer or os.environ.get(ISSUER_ENV)
    if not store or not issuer:
        raise SystemExit(f"the OCSP responder needs {STORE_ENV} (the response store) and {ISSUER_ENV} (the CA "
                         "certificate) in its environment")
    app = Responder(store, issuer)
    app.store()  # a missing or unreadable store stops the server at start, not at the first request
    return app
