"""Prometheus textfile metrics of the CRL job, for node-exporter's textfile collector.

Written atomically (temporary file, fsync, rename) so the collector never reads half a file, and
written on failure too (``x509_crl_last_run_success 0``) so that an alert fires on the first
failed run, long before the published CRL expires.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .fileio import replace_atomically


@dataclass(frozen=True)
class CrlMetrics:
    ca: str
    success: bool
    number: int | None = None
    entries: int | None = None
    next_update: float | None = None  # epoch seconds
    duration_seconds: float | None = None

    def render(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        label = f'{{ca="{self.ca}"}}'
        lines: list[str] = []

        def gauge(name: str, help_text: str, value: float | int | None) -> None:
            if value is None:
                return
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} gauge")
            lines.append(f"{name}{label} {value}")

        gauge("x509_crl_last_run_success", "1 if the last CRL job run succeeded, else 0.", int(self.success))
        gauge("x509_crl_last_run_timestamp_seconds", "When the last CRL job run ended (epoch seconds).",
              round(now, 3))
        if self.success:
            gauge("x509_crl_last_success_timestamp_seconds", "When a CRL job run last succeeded.", round(now, 3))
        gauge("x509_crl_next_update_seconds", "nextUpdate of the published CRL (epoch seconds).", self.next_update)
        gauge("x509_crl_number", "CRL Number of the published CRL.", self.number)
        gauge("x509_crl_entries", "Revoked entries in the published CRL.", self.entries)
        gauge("x509_crl_run_duration_seconds", "Duration of the last CRL job run.", self.duration_seconds)
        return "\n".join(lines) + "\n"


def metrics_path(directory: Path, ca: str) -> Path:
    return Path(directory) / f"ceremony_crl_{ca}.prom"


def write_metrics(directory: Path, metrics: CrlMetrics) -> Path:
    return replace_atomically(metrics_path(directory, metrics.ca), metrics.render().encode(), mode=0o644)
