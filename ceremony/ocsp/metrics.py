"""Prometheus textfile metrics of the OCSP job and of the signer certificate (node-exporter's textfile collector).

Written atomically like the CRL job's (:mod:`ceremony.crl.metrics`), on failure too, so that an alert fires on the
first failed run and long before the stored responses or the signer certificate expire:
``ocsp_last_run_success``, ``ocsp_last_run_failure{reason}``, ``ocsp_responses_signed`` (this run),
``ocsp_responses_stored``, ``ocsp_oldest_response_age_seconds`` (now minus the oldest stored thisUpdate: the
responder serves nothing older), ``ocsp_signer_not_after_seconds`` and ``ocsp_signer_expired``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ceremony.common.fileio import replace_atomically


@dataclass(frozen=True)
class OcspMetrics:
    ca: str
    success: bool
    signed: int | None = None
    stored: int | None = None
    oldest_this_update: float | None = None
    signer_not_after: float | None = None
    duration_seconds: float | None = None
    failure_reason: str | None = None

    def render(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        label = f'{{ca="{_escape(self.ca)}"}}'
        lines: list[str] = []

        def gauge(name: str, help_text: str, value: float | int | None, labels: str = label) -> None:
            if value is None:
                return
            shown = str(int(value)) if isinstance(value, bool | int) else repr(round(float(value), 3))
            lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name}{labels} {shown}"])

        gauge("ocsp_last_run_success", "1 if the last OCSP signing run succeeded, else 0.", self.success)
        gauge("ocsp_last_run_timestamp_seconds", "When the last OCSP signing run ended (epoch seconds).", now)
        if not self.success:
            reason = _escape(self.failure_reason or "error")
            gauge("ocsp_last_run_failure", "1 for the reason the last OCSP signing run failed.", 1,
                  f'{{ca="{_escape(self.ca)}",reason="{reason}"}}')
        gauge("ocsp_responses_signed", "Responses signed by the last run.", self.signed)
        gauge("ocsp_responses_stored", "Responses in the store (one per certificate and CertID hash).", self.stored)
        gauge("ocsp_oldest_response_age_seconds", "Age of the oldest stored response (now minus its thisUpdate).",
              None if self.oldest_this_update is None else now - self.oldest_this_update)
        gauge("ocsp_signer_not_after_seconds", "notAfter of the delegated OCSP signer certificate (epoch seconds).",
              self.signer_not_after)
        if self.signer_not_after is not None:
            gauge("ocsp_signer_expired", "1 when the OCSP signer certificate has expired.",
                  self.signer_not_after <= now)
        gauge("ocsp_run_duration_seconds", "Duration of the last OCSP signing run.", self.duration_seconds)
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_path(directory: Path, ca: str) -> Path:
    return directory / f"ceremony_ocsp_{ca}.prom"


def write_ocsp_metrics(directory: str | Path, metrics: OcspMetrics) -> Path:
    """Write the metrics file atomically (temporary file, fsync, rename), 0644 for the collector."""
    path = metrics_path(Path(directory), metrics.ca)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, metrics.render().encode(), mode=0o644)
    return path


def signer_metrics_path(directory: Path, ca: str) -> Path:
    return directory / f"ceremony_ocsp_signer_{ca}.prom"


def write_signer_metrics(directory: str | Path, ca: str, not_after: float) -> Path:
    """``ocsp_signer_certificate_not_after_seconds{ca}`` after the signer ceremony (or its "nothing to do" run):
    the alert on the signer's expiry does not depend on the job running."""
    path = signer_metrics_path(Path(directory), ca)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = "ocsp_signer_certificate_not_after_seconds"
    text = (f"# HELP {name} notAfter of the latest OCSP signer certificate (epoch seconds).\n# TYPE {name} gauge\n"
            f'{name}{{ca="{_escape(ca)}"}} {int(not_after)}\n')
    replace_atomically(path, text.encode(), mode=0o644)
    return path
