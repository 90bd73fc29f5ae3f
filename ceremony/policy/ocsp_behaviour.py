"""What the OCSP service does, observed on the engine itself, for sections 4.9.9 and 4.9.10 of the CPS.

The CPS used to describe the responder's answers (``unauthorized`` for a serial the CA never issued, ``tryLater``
for a stale response), its caching headers and the job's re-signing rule in hand-written sentences: a change of
the responder or of the job would have left them true-looking and false. Here the responder
(:class:`ceremony.ocsp.responder.Responder`) is run over WSGI on a throwaway store holding one current and one
stale response made by the job's encoder, and asked what a relying party would ask; the re-signing reasons are
the job's own (:data:`ceremony.ocsp.job.RESIGN_REASONS`); the schedules are those the roles install. The drift
check renders the documents again from these observations, so a change in the code is a difference in a named
section, and a reason or a schedule the text cannot state stops the build.
"""

from __future__ import annotations

import base64
import io
import re
import tempfile
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp as x509_ocsp

from ceremony.ocsp import job as ocsp_job
from ceremony.ocsp.encoding import ResponderContext, Status
from ceremony.ocsp.responder import Responder
from ceremony.ocsp.store import ResponseStore
from ceremony.policy.errors import PolicyError

REPO_DIR = Path(__file__).resolve().parent.parent.parent
OCSP_SIGNER_DEFAULTS = REPO_DIR / "roles" / "ocsp_signer" / "defaults" / "main.yml"
OCSP_RESPONDER_DEFAULTS = REPO_DIR / "roles" / "ocsp_responder" / "defaults" / "main.yml"

#: How the CPS words each reason of :data:`ceremony.ocsp.job.RESIGN_REASONS`. A reason missing here is a change of
#: the job the text does not describe yet: the build stops and names it.
RESIGN_TEXT: dict[str, dict[str, str]] = {
    "new": {"fr": "aucune réponse n'est enregistrée pour le certificat et l'empreinte",
            "en": "no response is stored for the certificate and the hash"},
    "status changed": {"fr": "l'état du certificat dans le registre diffère de celui de la réponse enregistrée",
                       "en": "the certificate's status in the registry differs from that of the stored response"},
    "refresh": {"fr": "la réponse enregistrée a atteint le délai de nouvelle signature (colonne « Signée de nouveau "
                      "après »)",
                "en": "the stored response has reached the re-signing delay (column \"Signed again after\")"},
}

#: RFC 6960 4.2.1 names of OCSPResponseStatus, as the CPS writes them.
_STATUS_NAMES = {x509_ocsp.OCSPResponseStatus.SUCCESSFUL: "successful",
                 x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST: "malformedRequest",
                 x509_ocsp.OCSPResponseStatus.INTERNAL_ERROR: "internalError",
                 x509_ocsp.OCSPResponseStatus.TRY_LATER: "tryLater",
                 x509_ocsp.OCSPResponseStatus.SIG_REQUIRED: "sigRequired",
                 x509_ocsp.OCSPResponseStatus.UNAUTHORIZED: "unauthorized"}


@dataclass(frozen=True)
class ResponderAnswers:
    """The responder's answer to each case a relying party can meet, as observed."""

    good: str  # a current stored response: its certificate status ("good")
    unknown_serial: str  # OCSPResponseStatus for a serial with no stored response
    other_issuer: str  # ... for a CertID naming another issuer
    malformed: str  # ... for bytes that are not an OCSP request
    stale: str  # ... for a stored response whose nextUpdate has passed
    methods: tuple[str, ...]  # HTTP methods answered (others: 405 with Allow)
    cache_control: str  # of a served response, max-age shown as <nextUpdate>
    max_age_is_time_to_next_update: bool
    last_modified_is_this_update: bool
    expires_is_next_update: bool
    etag: bool
    not_modified: bool  # If-None-Match with the ETag gives 304
    error_cache_control: str  # of an error status

    def cache_directives(self) -> str:
        """The Cache-Control directives besides max-age, as sent (``public, no-transform, must-revalidate``)."""
        return ", ".join(d for d in (p.strip() for p in self.cache_control.split(",")) if not d.startswith("max-age"))


@dataclass(frozen=True)
class OcspBehaviourFacts:
    """The responder's observed answers, the job's re-signing reasons and the schedules of the roles."""

    answers: ResponderAnswers
    resign_reasons: tuple[str, ...]
    sign_every_minutes: int
    pull_every_minutes: int

    def resign(self, lang: str) -> list[str]:
        """The job's re-signing conditions in this language, in the job's order."""
        return [RESIGN_TEXT[r][lang] for r in self.resign_reasons]


_EVERY_N_MINUTES = re.compile(r"^\*:0/([0-9]+)$")
_CALENDAR_MINUTES = {"minutely": 1, "hourly": 60, "daily": 1440}


def calendar_minutes(value: str, path: Path, key: str) -> int:
    """A systemd ``OnCalendar`` the CPS can state as a period: ``*:0/5`` (every 5 minutes), ``hourly``, ``daily``."""
    m = _EVERY_N_MINUTES.match(value)
    if m and 0 < int(m.group(1)) <= 60:
        return int(m.group(1))
    if value in _CALENDAR_MINUTES:
        return _CALENDAR_MINUTES[value]
    raise PolicyError(f"{path}: {key} is {value!r}; the CPS states it as a period and knows '*:0/<minutes>', "
                      f"{', '.join(_CALENDAR_MINUTES)}")


def _role_calendar(path: Path, key: str, default: str) -> int:
    value = default
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise PolicyError(f"{path}: malformed YAML: {exc}") from None
        value = str(data.get(key, default))
    return calendar_minutes(value, path, key)


def _call(app: Responder, method: str, path: str = "/", body: bytes = b"",
          headers: dict[str, str] | None = None) -> tuple[str, dict[str, str], bytes]:
    """One WSGI request: (status line, headers, body)."""
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path, "wsgi.input": io.BytesIO(body),
                               "CONTENT_LENGTH": str(len(body)), **(headers or {})}
    if method == "POST":
        environ["CONTENT_TYPE"] = "application/ocsp-request"
    got: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        got["status"], got["headers"] = status, dict(response_headers)

    data = b"".join(app(environ, start_response))
    return got["status"], got["headers"], data


def _status_name(der: bytes) -> str:
    response = x509_ocsp.load_der_ocsp_response(der)
    if response.response_status != x509_ocsp.OCSPResponseStatus.SUCCESSFUL:
        return _STATUS_NAMES[response.response_status]
    return response.certificate_status.name.lower()


def _request(name_hash: bytes, key_hash: bytes, serial: int, algorithm: str) -> bytes:
    hash_algorithm = hashes.SHA256() if algorithm == "sha256" else hashes.SHA1()  # RFC 6960 CertIDs
    builder = x509_ocsp.OCSPRequestBuilder().add_certificate_by_hash(name_hash, key_hash, serial, hash_algorithm)
    return builder.build().public_bytes(serialization.Encoding.DER)


def observe_responder(ca_cert: x509.Certificate, signer: x509.Certificate, cert_id_hashes: list[str],
                      validity_seconds: int) -> ResponderAnswers:
    """Run the responder on a throwaway store and ask it every case of 4.9.9 (see the module docs).

    The responses are made by the job's encoder and signed with a throwaway key: what is observed is what the
    responder does with them, not their signature, which it never checks (the job verifies before storing)."""
    context = ResponderContext(ca_cert, signer, cert_id_hashes)
    key = ec.generate_private_key(ec.SECP256R1())
    algorithm = cert_id_hashes[0]
    now = int(time.time())
    current, stale, unknown = 1, 2, 3
    rows = []
    for serial, this_update, next_update in ((current, now - 60, now - 60 + validity_seconds),
                                             (stale, now - 2 * validity_seconds, now - validity_seconds)):
        tbs = context.response_data(serial, algorithm, Status(), this_update, this_update, next_update)
        rows.append((serial, algorithm, "good", context.sign(tbs, key), this_update, next_update, Status().fingerprint))
    with tempfile.TemporaryDirectory(prefix="cps-ocsp-") as tmp:
        issuer_path = Path(tmp) / "ca.crt.pem"
        issuer_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        store = ResponseStore.create(Path(tmp) / "store.sqlite3", "cps", "0" * 64)
        try:
            store.replace_all(rows)
        finally:
            store.close()
        app = Responder(store.path, issuer_path)
        name_hash, key_hash = context.issuer_hashes(algorithm)

        def get(serial: int, names: tuple[bytes, bytes] = (name_hash, key_hash)) -> tuple[str, dict[str, str], bytes]:
            der = _request(*names, serial, algorithm)
            return _call(app, "GET", "/" + quote(base64.b64encode(der).decode("ascii"), safe=""))

        _, headers, body = get(current)
        good = _status_name(body)
        _, post_headers, post_body = _call(app, "POST", body=_request(name_hash, key_hash, current, algorithm))
        methods = ("GET",) + (("POST",) if _status_name(post_body) == good else ())
        other = _status_name(get(current, (b"\x01" * len(name_hash), b"\x02" * len(key_hash)))[2])
        _, error_headers, unknown_body = get(unknown)
        stale_name = _status_name(get(stale)[2])
        malformed = _status_name(_call(app, "POST", body=b"not an OCSP request")[2])
        not_modified = _call(app, "GET", "/" + quote(base64.b64encode(_request(name_hash, key_hash, current,
                                                                               algorithm)).decode("ascii"), safe=""),
                              headers={"HTTP_IF_NONE_MATCH": headers.get("ETag", "-")})[0].startswith("304")
        app.store().close()
    cache_control = headers.get("Cache-Control", "")
    m = re.search(r"max-age=([0-9]+)", cache_control)
    next_update = rows[0][5]
    max_age_ok = m is not None and abs(int(m.group(1)) - (next_update - int(time.time()))) <= 120
    return ResponderAnswers(
        good=good, unknown_serial=_status_name(unknown_body), other_issuer=other, malformed=malformed,
        stale=stale_name, methods=methods,
        cache_control=re.sub(r"max-age=[0-9]+", "max-age=<nextUpdate>", cache_control),
        max_age_is_time_to_next_update=max_age_ok,
        last_modified_is_this_update=_http_time(headers.get("Last-Modified")) == rows[0][4],
        expires_is_next_update=_http_time(headers.get("Expires")) == next_update,
        etag="ETag" in headers and "ETag" in post_headers, not_modified=not_modified,
        error_cache_control=error_headers.get("Cache-Control", ""))


def _http_time(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError):
        return None


def ocsp_behaviour(ca_cert: x509.Certificate, signer: x509.Certificate, cert_id_hashes: list[str],
                   validity_seconds: int, signer_defaults: Path = OCSP_SIGNER_DEFAULTS,
                   responder_defaults: Path = OCSP_RESPONDER_DEFAULTS) -> OcspBehaviourFacts:
    """:class:`OcspBehaviourFacts` for one CA's OCSP service; refuses a re-signing reason the text cannot state."""
    reasons = tuple(ocsp_job.RESIGN_REASONS)
    unknown = [r for r in reasons if r not in RESIGN_TEXT]
    if unknown:
        raise PolicyError(f"{Path(__file__).name}: the OCSP job (ceremony/ocsp/job.py, RESIGN_REASONS) signs again "
                          f"for {', '.join(map(repr, unknown))}, which the CPS does not describe: add its wording to "
                          "RESIGN_TEXT")
    return OcspBehaviourFacts(
        answers=observe_responder(ca_cert, signer, cert_id_hashes, validity_seconds),
        resign_reasons=reasons,
        sign_every_minutes=_role_calendar(signer_defaults, "ocsp_signer_on_calendar", "*:0/5"),
        pull_every_minutes=_role_calendar(responder_defaults, "ocsp_responder_pull_on_calendar", "*:0/5"))
