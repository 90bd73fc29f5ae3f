"""Auditor tasks: verify a ceremony transcript offline, and render it as HTML and PDF (fr/en).

``audit.verify`` needs no HSM and no network. Exit codes: 0 intact, 1 invalid (tampered, or a rule
did not hold; the first bad record is named), 2 incomplete (no closing record: the ceremony was
interrupted), 3 complete but not sealed (the ceremony failed or never sealed its record).
"""

from __future__ import annotations

import sys
from pathlib import Path

from invoke import Collection, Context, task

from ._cli import operator_errors


@task(help={"transcript": "the transcript (.jsonl) to verify",
            "artifacts": "directory holding the artifacts (default: where the transcript's header says, "
                         "relative to the transcript)"})
@operator_errors
def verify(c: Context, transcript: str, artifacts: str | None = None) -> None:
    """Verify a ceremony transcript offline: chain, seal, script, roles, exceptions, artifacts."""
    from ceremony.transcript.audit import report_lines
    from ceremony.transcript.audit import verify as verify_transcript

    result = verify_transcript(Path(transcript), Path(artifacts) if artifacts else None)
    print("\n".join(report_lines(result)))
    if not result.ok:
        sys.exit(result.exit_code)


@task(help={"transcript": "the transcript (.jsonl) to render",
            "lang": "fr or en (default: both)",
            "out": "output directory (default: next to the transcript)",
            "artifacts": "directory holding the artifacts (as for audit.verify)",
            "pdf": "also write the PDF (default: yes; --no-pdf for HTML only)"})
@operator_errors
def report(c: Context, transcript: str, lang: str | None = None, out: str | None = None,
           artifacts: str | None = None, pdf: bool = True) -> None:
    """Render a transcript as HTML and PDF for the paper sign-off, in French and/or English."""
    from ceremony.transcript.report import write_reports

    langs = [lang] if lang else ["fr", "en"]
    for path in write_reports(Path(transcript), Path(out) if out else None, langs, pdf=pdf,
                              artifacts=Path(artifacts) if artifacts else None):
        print(f"wrote {path}")


ns = Collection()
ns.add_task(verify)
ns.add_task(report)
