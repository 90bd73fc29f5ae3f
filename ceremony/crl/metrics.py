"""Prometheus textfile metrics of the CRL job and of the CRL probe, for node-exporter's textfile collector.

Written atomically (temporary file, fsync, rename) so the collector never reads half a file, and
written on failure too (``x509_crl_last_run_success 0`` and ``x509_crl_last_run_failure`` with the
reason) so that an alert fires on the first failed run, long before the published CRL expires.

``x509_crl_last_success_timestamp_seconds`` is the time of the last *successful* run: a failed run
carries it over from the file it replaces, so "how long since the job last worked" stays answerable
(and alertable) while the job keeps failing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ceremony.common.fileio import replace_atomically

LAST_SUCCESS = "x509_crl_last_success_timestamp_seconds"


#: Why a run failed, as the ``reason`` label of ``x509_crl_last_run_failure`` (docs/monitoring.md lists them).
FAILURE_REASONS = (
    "pin_latched",    # an earlier run's PIN was refused; the job does not try it again until cleared
    "pin_source",     # no PIN source, PIN file not 0600, not owned by the job's user, empty
    "module",         # the PKCS#11 module is missing or does not load
    "token",          # the token is not found (or more than one matches)
    "pin_incorrect",  # the token refused the PIN (CKR_PIN_INCORRECT): the latch is set
    "pin_locked",     # the token's PIN is locked (CKR_PIN_LOCKED): the latch is set
    "login",          # any other failure opening the session
    "key_missing",    # the CA key is not on the token
    "key_mismatch",   # the key on the token is not the CA certificate's key
    "definition",     # the PKI definition is invalid or unreadable
    "registry",       # the certificate registry is missing, corrupt or locked
    "output",         # the publication directory, state or metrics could not be written; another run holds the lock
    "lint",           # pkilint refused the CRL
    "verification",   # CA certificate unusable, clock behind, signature or previous-CRL check failed
    "clock",          # the kernel says the clock is not synchronised, or its maximum error is over the bound
    "hsm",            # another HSM failure (while signing)
    "error",          # another anticipated failure
    "unexpected",     # a bug: the message names the exception
)


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items()) + "}"


def _number(value: float | int) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    return repr(round(float(value), 3))


class _Text:
    """Prometheus text exposition: one HELP and TYPE per metric, then its samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def gauge(self, name: str, help_text: str, samples: Iterable[tuple[dict[str, str], float | int | None]]) -> None:
        present = [(labels, value) for labels, value in samples if value is not None]
        if not present:
            return
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        self.lines += [f"{name}{_labels(**labels)} {_number(value)}" for labels, value in present]

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


@dataclass(frozen=True)
class PartitionMetrics:
    """One published partition CRL (label ``partition``: its index)."""

    partition: int
    number: int
    entries: int
    this_update: float  # epoch seconds
    next_update: float


@dataclass(frozen=True)
class CrlMetrics:
    ca: str
    success: bool
    number: int | None = None
    entries: int | None = None
    next_update: float | None = None  # epoch seconds
    duration_seconds: float | None = None
    failure_reason: str | None = None
    """On failure: one of :data:`FAILURE_REASONS` (``error`` when not given)."""
    pin_latch_since: float | None = None
    """When the PIN latch was set (epoch seconds); None: no latch."""
    pin_latch_known: bool = False
    """Whether the writer knows the latch state (the subordinate job does; the root's publication does not)."""
    last_success: float | None = None
    """For a failed run: the last successful run's time, carried over (see :func:`write_metrics`)."""
    this_update: float | None = None  # epoch seconds
    clock_synchronised: bool | None = None
    """What the kernel said about the clock during the run (None: not read)."""
    clock_max_error_seconds: float | None = None
    partitions: tuple[PartitionMetrics, ...] = ()
    """The partition CRLs (a CA with ``crl.partitions``); the CA-level nextUpdate is then the soonest of all."""

    def render(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        ca = {"ca": self.ca}
        out = _Text()
        out.gauge("x509_crl_last_run_success", "1 if the last CRL job run succeeded, else 0.", [(ca, self.success)])
        out.gauge("x509_crl_last_run_timestamp_seconds", "When the last CRL job run ended (epoch seconds).",
                  [(ca, now)])
        out.gauge(LAST_SUCCESS, "When a CRL job run last succeeded (epoch seconds), kept across failed runs.",
                  [(ca, now if self.success else self.last_success)])
        if not self.success:
            reason = self.failure_reason or "error"
            out.gauge("x509_crl_last_run_failure", "1 for the reason the last CRL job run failed.",
                      [({**ca, "reason": reason}, 1)])
        if self.pin_latch_known:
            out.gauge("x509_crl_pin_latch", "1 while the PIN latch is set: the job will not try the PIN until an "
                      "operator clears it.", [(ca, self.pin_latch_since is not None)])
            out.gauge("x509_crl_pin_latch_timestamp_seconds", "When the PIN latch was set (epoch seconds).",
                      [(ca, self.pin_latch_since)])
        out.gauge("x509_crl_this_update_seconds", "thisUpdate of the published CRL (epoch seconds).",
                  [(ca, self.this_update)])
        out.gauge("x509_crl_next_update_seconds", "nextUpdate of the published CRL (epoch seconds).",
                  [(ca, self.next_update)])
        out.gauge("x509_crl_number", "CRL Number of the published CRL.", [(ca, self.number)])
        out.gauge("x509_crl_entries", "Revoked entries in the published CRL.", [(ca, self.entries)])
        out.gauge("x509_crl_run_duration_seconds", "Duration of the last CRL job run.", [(ca, self.duration_seconds)])
        out.gauge("x509_crl_clock_synchronised", "1 if the kernel said the clock was synchronised during the last "
                  "run (the CRL's dates come from it), else 0.", [(ca, self.clock_synchronised)])
        out.gauge("x509_crl_clock_max_error_seconds", "The kernel's maximum clock error during the last run.",
                  [(ca, self.clock_max_error_seconds)])
        parts = [({**ca, "partition": str(p.partition)}, p) for p in self.partitions]
        out.gauge("x509_crl_partition_number", "CRL Number of a published partition CRL (its own sequence).",
                  [(labels, p.number) for labels, p in parts])
        out.gauge("x509_crl_partition_entries", "Revoked entries in a published partition CRL.",
                  [(labels, p.entries) for labels, p in parts])
        out.gauge("x509_crl_partition_this_update_seconds", "thisUpdate of a published partition CRL (epoch seconds).",
                  [(labels, p.this_update) for labels, p in parts])
        out.gauge("x509_crl_partition_next_update_seconds", "nextUpdate of a published partition CRL (epoch seconds).",
                  [(labels, p.next_update) for labels, p in parts])
        return out.text()


def metrics_path(directory: Path, ca: str) -> Path:
    return Path(directory) / f"ceremony_crl_{ca}.prom"


def read_sample(path: Path, name: str, **labels: str) -> float | None:
    """The value of one sample in a textfile written by this module (None: file or sample absent)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    wanted = name + _labels(**labels) if labels else name
    for line in text.splitlines():
        m = re.fullmatch(r"(\S+)\s+(\S+)", line.strip())
        if m and m.group(1) == wanted:
            try:
                return float(m.group(2))
            except ValueError:
                return None
    return None


def write_metrics(directory: Path, metrics: CrlMetrics) -> Path:
    """Replace the CA's metrics file; a failed run keeps the previous file's last success time."""
    path = metrics_path(directory, metrics.ca)
    if not metrics.success and metrics.last_success is None:
        kept = read_sample(path, LAST_SUCCESS, ca=metrics.ca)
        if kept is not None:
            metrics = replace(metrics, last_success=kept)
    return replace_atomically(path, metrics.render().encode(), mode=0o644)


#: Why a probe failed, as the ``reason`` label of ``x509_crl_probe_failure``.
PROBE_FAILURE_REASONS = ("connect", "http_status", "content_type", "parse", "issuer", "signature", "expired",
                         "ca_certificate")


@dataclass(frozen=True)
class ProbeResult:
    """What one fetch of a published CRL showed."""

    ca: str
    url: str
    publisher: str
    """The address the probe connected to (``dns`` when it resolved the URL's host name)."""
    success: bool
    http_status: int = 0
    number: int | None = None
    this_update: float | None = None
    next_update: float | None = None
    signature_ok: bool | None = None
    failure_reason: str | None = None
    message: str = ""
    duration_seconds: float | None = None
    size_bytes: int | None = None
    partition: int | None = None
    """A partition CRL's index (label ``partition``, as on the job's ``x509_crl_partition_*``); None: the full CRL."""
    kind: str = "crl"
    """``crl``, or ``ocsp`` for an answer of the CA's OCSP responder (metrics ``x509_ocsp_probe_*``)."""
    earlier_key: bool = False
    """A CRL of an earlier key of a re-keyed CA (label ``key="earlier"``): its numbers are not the job's headline
    ``x509_crl_number`` (the current key's), so the alerts comparing the two, and the expiry warning (the job's own
    ``x509_crl_next_update_seconds`` covers every key's CRLs), leave it out."""

    def labels(self) -> dict[str, str]:
        labels = {"ca": self.ca, "url": self.url, "publisher": self.publisher}
        if self.partition is not None:
            labels["partition"] = str(self.partition)
        if self.earlier_key:
            labels["key"] = "earlier"
        return labels


@dataclass(frozen=True)
class ProbeMetrics:
    ca: str
    results: list[ProbeResult] = field(default_factory=list)

    def render(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        out = _Text()
        rs = [r for r in self.results if r.kind == "crl"]
        os_ = [r for r in self.results if r.kind == "ocsp"]
        out.gauge("x509_crl_probe_success", "1 if the published CRL was fetched, parsed, signed by the CA and "
                  "not expired.", [(r.labels(), r.success) for r in rs])
        out.gauge("x509_crl_probe_timestamp_seconds", "When the probe ran (epoch seconds).",
                  [(r.labels(), now) for r in rs])
        out.gauge("x509_crl_probe_http_status", "HTTP status of the fetch (0: no response).",
                  [(r.labels(), r.http_status) for r in rs])
        out.gauge("x509_crl_probe_failure", "1 for the reason the probe failed.",
                  [({**r.labels(), "reason": r.failure_reason or "connect"}, 1) for r in rs if not r.success])
        out.gauge("x509_crl_probe_signature_ok", "1 if the fetched CRL's signature verifies with the CA certificate.",
                  [(r.labels(), r.signature_ok) for r in rs])
        out.gauge("x509_crl_probe_number", "CRL Number of the fetched CRL.", [(r.labels(), r.number) for r in rs])
        out.gauge("x509_crl_probe_this_update_seconds", "thisUpdate of the fetched CRL (epoch seconds).",
                  [(r.labels(), r.this_update) for r in rs])
        out.gauge("x509_crl_probe_next_update_seconds", "nextUpdate of the fetched CRL (epoch seconds).",
                  [(r.labels(), r.next_update) for r in rs])
        out.gauge("x509_crl_probe_size_bytes", "Size of the fetched CRL.", [(r.labels(), r.size_bytes) for r in rs])
        out.gauge("x509_crl_probe_duration_seconds", "Duration of the fetch and checks.",
                  [(r.labels(), r.duration_seconds) for r in rs])
        if os_:
            out.gauge("x509_ocsp_probe_success", "1 if the OCSP responder answered successful with a response for the "
                      "certificate asked about, signed for the CA and in force.",
                      [(r.labels(), r.success) for r in os_])
            out.gauge("x509_ocsp_probe_timestamp_seconds", "When the probe asked (epoch seconds).",
                      [(r.labels(), now) for r in os_])
            out.gauge("x509_ocsp_probe_http_status", "HTTP status of the OCSP request (0: no response).",
                      [(r.labels(), r.http_status) for r in os_])
            out.gauge("x509_ocsp_probe_failure", "1 for the reason the OCSP probe failed.",
                      [({**r.labels(), "reason": r.failure_reason or "connect"}, 1) for r in os_ if not r.success])
            out.gauge("x509_ocsp_probe_signature_ok", "1 if the response's signature verifies for the CA.",
                      [(r.labels(), r.signature_ok) for r in os_])
            out.gauge("x509_ocsp_probe_this_update_seconds", "thisUpdate of the response (epoch seconds).",
                      [(r.labels(), r.this_update) for r in os_])
            out.gauge("x509_ocsp_probe_next_update_seconds", "nextUpdate of the response (epoch seconds).",
                      [(r.labels(), r.next_update) for r in os_])
            out.gauge("x509_ocsp_probe_duration_seconds", "Duration of the request and checks.",
                      [(r.labels(), r.duration_seconds) for r in os_])
        return out.text()


def probe_metrics_path(directory: Path, ca: str) -> Path:
    return Path(directory) / f"ceremony_crl_probe_{ca}.prom"


def write_probe_metrics(directory: Path, metrics: ProbeMetrics) -> Path:
    return replace_atomically(probe_metrics_path(directory, metrics.ca), metrics.render().encode(), mode=0o644)
