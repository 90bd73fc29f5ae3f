"""Prometheus textfile metrics of the OCSP job and of the signer certificate (node-exporter's textfile collector).

Written atomically like the CRL job's (:mod:`ceremony.crl.metrics`), on failure too, so that an alert fires on the
first failed run and long before the stored responses or the signer certificate expire:
``ocsp_last_run_success``, ``ocsp_last_run_failure{reason}``, ``ocsp_responses_signed`` (this run),
``ocsp_responses_stored``, ``ocsp_oldest_response_age_seconds`` (now minus the oldest stored thisUpdate: the
responder serves nothing older), ``ocsp_signer_not_after_seconds`` and ``ocsp_signer_expired``.

After a re-key each key has its own job, store and signer (docs/ocsp.md, "After a subordinate re-key"): the metrics of
key generation m >= 2 go to files of their own (``ceremony_ocsp_<ca>.g<m>.prom``,
``ceremony_ocsp_signer_<ca>.g<m>.prom``) with the label ``key_generation="<m>"`` besides ``ca``. Without it two jobs of
one CA would replace each other's file, and two files with the same series would make the textfile collector refuse
both. The first key's keep their names and labels: a CA never re-keyed has the same files and series as before.
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
    key_generation: int = 1

    def render(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        label = f'{{{_labels(self.ca, self.key_generation)}}}'
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
                  f'{{{_labels(self.ca, self.key_generation)},reason="{reason}"}}')
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


def _labels(ca: str, key_generation: int) -> str:
    """``ca="<ca>"``, and ``key_generation="<m>"`` for a key a re-key brought (module docs)."""
    return f'ca="{_escape(ca)}"' + ("" if key_generation == 1 else f',key_generation="{key_generation}"')


def _stem(ca: str, key_generation: int) -> str:
    return ca if key_generation == 1 else f"{ca}.g{key_generation}"


def metrics_path(directory: Path, ca: str, key_generation: int = 1) -> Path:
    return directory / f"ceremony_ocsp_{_stem(ca, key_generation)}.prom"


def write_ocsp_metrics(directory: str | Path, metrics: OcspMetrics) -> Path:
    """Write the metrics file atomically (temporary file, fsync, rename), 0644 for the collector."""
    path = metrics_path(Path(directory), metrics.ca, metrics.key_generation)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, metrics.render().encode(), mode=0o644)
    return path


def signer_metrics_path(directory: Path, ca: str, key_generation: int = 1) -> Path:
    return directory / f"ceremony_ocsp_signer_{_stem(ca, key_generation)}.prom"


def write_signer_metrics(directory: str | Path, ca: str, not_after: float, key_generation: int = 1) -> Path:
    """``ocsp_signer_certificate_not_after_seconds{ca}`` after the signer ceremony (or its "nothing to do" run):
    the alert on the signer's expiry does not depend on the job running. Key generation m >= 2: its own file and
    the ``key_generation`` label (module docs)."""
    path = signer_metrics_path(Path(directory), ca, key_generation)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = "ocsp_signer_certificate_not_after_seconds"
    text = (f"# HELP {name} notAfter of the latest OCSP signer certificate (epoch seconds).\n# TYPE {name} gauge\n"
            f'{name}{{{_labels(ca, key_generation)}}} {int(not_after)}\n')
    replace_atomically(path, text.encode(), mode=0o644)
    return path
